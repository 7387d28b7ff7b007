//! A typed torrc builder: one method per option family, rendered to torrc text that Fors and
//! C tor both read (tor-manual "THE CONFIGURATION FILE FORMAT": one `Keyword value` a line).
//!
//! A [`Torrc`] is an ordered list of lines. Options that hold one value (`Nickname`, `Log`,
//! `NumCPUs`, ...) are *set*: setting one again replaces its line in place, so a preset can be
//! adjusted without a second, conflicting line (two `Log` lines would both take effect).
//! Options that stack (`ORPort`, `DirAuthority`, `ExitPolicy`, ...) and raw lines are *added*
//! in call order, which is the order C tor applies them in.
//!
//! Nothing here chooses a non-loopback address: the presets use 127.0.0.1 and fake
//! authorities whose ports nobody listens on.

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// A loopback port nobody listens on right now (the kernel's choice, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral 127.0.0.1 port")
        .port()
}

/// One `DirAuthority` line (tor-manual "DirAuthority [nickname] [flags] ipv4address:dirport
/// fingerprint"): the authority's nickname, its ORPort, its v3 identity and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirAuthority {
    pub nickname: String,
    pub or_port: u16,
    /// Hex of the authority's v3 signing identity (40 digits).
    pub v3ident: String,
    /// The DirPort address.
    pub dir_addr: SocketAddr,
    /// Hex of the authority's RSA identity (40 digits; C tor accepts it spaced too).
    pub fingerprint: String,
}

impl DirAuthority {
    /// Fake authority number `n` (0..16): its DirPort and ORPort are a loopback port nobody
    /// listens on, so a relay configured with it never gets a consensus and nothing leaves
    /// the machine. Distinct `n` give distinct identities.
    pub fn fake(n: u8) -> DirAuthority {
        let dead = free_port();
        DirAuthority::fake_at(n, SocketAddr::from(([127, 0, 0, 1], dead)), dead)
    }

    /// Fake authority number `n` whose DirPort is `dir_addr` (e.g. a test's own HTTP server)
    /// and whose ORPort is `or_port`.
    pub fn fake_at(n: u8, dir_addr: SocketAddr, or_port: u16) -> DirAuthority {
        assert!(n < 16, "fake authority numbers are one hex digit");
        DirAuthority {
            nickname: format!("auth{}", n + 1),
            or_port,
            v3ident: format!("{n:X}123456789ABCDEF0123456789ABCDEF01234567"),
            dir_addr,
            fingerprint: format!("{:X}9ABCDEF0123456789ABCDEF0123456789ABCDEF", (n + 8) % 16),
        }
    }
}

impl fmt::Display for DirAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} orport={} no-v2 v3ident={} {} {}",
            self.nickname, self.or_port, self.v3ident, self.dir_addr, self.fingerprint
        )
    }
}

/// A torrc under construction; [`Torrc::render`] gives its text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Torrc {
    /// (keyword, value); a raw line has the keyword "" and the whole line as its value.
    lines: Vec<(String, String)>,
}

impl Torrc {
    /// An empty torrc.
    pub fn new() -> Torrc {
        Torrc::default()
    }

    /// A relay on loopback for a test: `Nickname nick`, a test ContactInfo, `Address
    /// 127.0.0.1`, `DataDirectory dir/data`, `Log notice stdout`, `TestingTorNetwork 1` and
    /// `PublishServerDescriptor 0`. Ports, authorities and the rest are the caller's.
    pub fn test_relay(nick: &str, dir: &Path) -> Torrc {
        Torrc::new()
            .nickname(nick)
            .contact_info("test@example.invalid")
            .address("127.0.0.1")
            .data_directory(dir.join("data"))
            .log("notice")
            .testing_tor_network(true)
            .publish_server_descriptor(false)
    }

    /// Sets a single-valued option: replaces its line if there is one, else appends.
    pub fn set(mut self, key: &str, value: impl fmt::Display) -> Torrc {
        let value = value.to_string();
        match self.lines.iter_mut().find(|(k, _)| k == key) {
            Some(line) => line.1 = value,
            None => self.lines.push((key.to_string(), value)),
        }
        self
    }

    /// Appends a line of a stacking option (another `ORPort`, `ExitPolicy`, ...).
    pub fn add(mut self, key: &str, value: impl fmt::Display) -> Torrc {
        self.lines.push((key.to_string(), value.to_string()));
        self
    }

    /// Appends raw torrc text (one or more lines) as is: for options without a method.
    pub fn raw(mut self, text: &str) -> Torrc {
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            self.lines.push((String::new(), l.to_string()));
        }
        self
    }

    /// Drops every line of option `key` (e.g. a preset's `PublishServerDescriptor`).
    pub fn unset(mut self, key: &str) -> Torrc {
        self.lines.retain(|(k, _)| k != key);
        self
    }

    // --- Identity and contact ---

    pub fn nickname(self, nick: &str) -> Torrc {
        self.set("Nickname", nick)
    }

    pub fn contact_info(self, contact: &str) -> Torrc {
        self.set("ContactInfo", contact)
    }

    // --- Addresses and listeners ---

    /// `Address`: the address the relay advertises.
    pub fn address(self, addr: &str) -> Torrc {
        self.set("Address", addr)
    }

    /// Another `ORPort` line on `127.0.0.1:port`.
    pub fn or_port(self, port: u16) -> Torrc {
        self.add("ORPort", format!("127.0.0.1:{port}"))
    }

    /// Another `ORPort` line: `addr` is as the manual allows (`PORT`, `IP:PORT`, `[::1]:PORT`),
    /// `flags` e.g. `"NoAdvertise"`, `"IPv4Only"` (may be empty).
    pub fn or_port_with(self, addr: impl fmt::Display, flags: &str) -> Torrc {
        let v = format!("{addr} {flags}");
        self.add("ORPort", v.trim_end())
    }

    /// `DirPort` on `127.0.0.1:port`.
    pub fn dir_port(self, port: u16) -> Torrc {
        self.set("DirPort", format!("127.0.0.1:{port}"))
    }

    /// `SocksPort` on `127.0.0.1:port`, or `SocksPort 0` (none) for `None`.
    pub fn socks_port(self, port: Option<u16>) -> Torrc {
        match port {
            Some(p) => self.set("SocksPort", format!("127.0.0.1:{p}")),
            None => self.set("SocksPort", 0),
        }
    }

    /// `MetricsPort 127.0.0.1:port`. Without a [`Torrc::metrics_port_policy`] every client is
    /// refused (tor-manual "MetricsPortPolicy").
    pub fn metrics_port(self, port: u16) -> Torrc {
        self.set("MetricsPort", format!("127.0.0.1:{port}"))
    }

    /// `MetricsPortPolicy`, e.g. `"accept 127.0.0.1"`.
    pub fn metrics_port_policy(self, policy: &str) -> Torrc {
        self.set("MetricsPortPolicy", policy)
    }

    /// `ControlPort 127.0.0.1:port` (authentication: [`Torrc::cookie_authentication`], or
    /// none).
    pub fn control_port(self, port: u16) -> Torrc {
        self.set("ControlPort", format!("127.0.0.1:{port}"))
    }

    pub fn cookie_authentication(self, on: bool) -> Torrc {
        self.set("CookieAuthentication", u8::from(on))
    }

    // --- Files ---

    pub fn data_directory(self, dir: impl AsRef<Path>) -> Torrc {
        self.set("DataDirectory", dir.as_ref().display())
    }

    pub fn pid_file(self, path: impl AsRef<Path>) -> Torrc {
        self.set("PidFile", path.as_ref().display())
    }

    /// `Log LEVEL stdout` (the tests read the child's stdout).
    pub fn log(self, level: &str) -> Torrc {
        self.set("Log", format!("{level} stdout"))
    }

    /// `Log LEVEL file PATH`.
    pub fn log_file(self, level: &str, path: impl AsRef<Path>) -> Torrc {
        self.set("Log", format!("{level} file {}", path.as_ref().display()))
    }

    // --- Process ---

    pub fn num_cpus(self, n: usize) -> Torrc {
        self.set("NumCPUs", n)
    }

    // --- Network and directory ---

    /// `TestingTorNetwork`: the testing defaults (tor-manual "TestingTorNetwork"), which also
    /// allow private addresses in descriptors and extends.
    pub fn testing_tor_network(self, on: bool) -> Torrc {
        self.set("TestingTorNetwork", u8::from(on))
    }

    pub fn publish_server_descriptor(self, on: bool) -> Torrc {
        self.set("PublishServerDescriptor", u8::from(on))
    }

    pub fn assume_reachable(self, on: bool) -> Torrc {
        self.set("AssumeReachable", u8::from(on))
    }

    /// Another `DirAuthority` line.
    pub fn dir_authority(self, auth: &DirAuthority) -> Torrc {
        self.add("DirAuthority", auth)
    }

    /// `n` fake authorities ([`DirAuthority::fake`] 0..n): the relay runs without ever getting
    /// a consensus.
    pub fn fake_authorities(self, n: u8) -> Torrc {
        (0..n).fold(self, |t, i| t.dir_authority(&DirAuthority::fake(i)))
    }

    // --- Exit ---

    /// Another `ExitPolicy` line (e.g. `"accept 127.0.0.1:80, reject *:*"`).
    pub fn exit_policy(self, rules: &str) -> Torrc {
        self.add("ExitPolicy", rules)
    }

    pub fn exit_relay(self, on: bool) -> Torrc {
        self.set("ExitRelay", u8::from(on))
    }

    // --- Output ---

    /// The value of option `key` (its first line), if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The torrc text: one line each, newline-terminated.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.lines {
            if !k.is_empty() {
                s.push_str(k);
                s.push(' ');
            }
            s.push_str(v);
            s.push('\n');
        }
        s
    }

    /// Writes the torrc to `dir/torrc`; its path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let path = dir.join("torrc");
        std::fs::write(&path, self.render())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl fmt::Display for Torrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// An `IP:PORT` for `ip` and `port`, bracketed for IPv6 as torrc wants.
pub fn addr(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place_and_add_stacks() {
        let t = Torrc::new()
            .log("notice")
            .or_port(9001)
            .or_port_with("[::1]:9002", "")
            .log("info")
            .exit_policy("accept *:80")
            .exit_policy("reject *:*")
            .raw("Foo 1\n\nBar 2\n");
        assert_eq!(
            t.render(),
            "Log info stdout\nORPort 127.0.0.1:9001\nORPort [::1]:9002\n\
             ExitPolicy accept *:80\nExitPolicy reject *:*\nFoo 1\nBar 2\n"
        );
        assert_eq!(t.get("Log"), Some("info stdout"));
        assert_eq!(t.clone().unset("ORPort").get("ORPort"), None);
    }

    #[test]
    fn fake_authorities_are_distinct_loopback_lines() {
        let a = DirAuthority::fake_at(0, "127.0.0.1:7".parse().unwrap(), 7);
        assert_eq!(
            a.to_string(),
            "auth1 orport=7 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 \
             127.0.0.1:7 89ABCDEF0123456789ABCDEF0123456789ABCDEF"
        );
        let t = Torrc::new().fake_authorities(2).render();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_ne!(lines[0], lines[1]);
        assert!(lines.iter().all(|l| l.contains(" 127.0.0.1:")), "{t}");
    }

    #[test]
    fn test_relay_preset_parses_as_fors_config() {
        let dir = Path::new("/tmp/fors-testkit-preset");
        let text = Torrc::test_relay("KitTest", dir)
            .or_port(9001)
            .metrics_port(9035)
            .num_cpus(2)
            .fake_authorities(2)
            .render();
        let fs = fors::config::MemFs::default().with("/t/torrc", &text);
        fors::config::parse_str(&fs, "torrc", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}
