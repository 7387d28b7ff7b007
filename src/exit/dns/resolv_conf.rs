//! Reading the nameservers an exit uses from a resolv.conf file (`ServerDNSResolvConfFile`,
//! default /etc/resolv.conf). There is deliberately no built-in fallback resolver: an exit
//! must use the operator's.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where resolv.conf is read from unless `ServerDNSResolvConfFile` says otherwise.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// DNS port used when a `nameserver` line names no port.
pub const DNS_PORT: u16 = 53;
/// Most nameservers we keep; later lines are ignored with a note (glibc keeps 3).
pub const MAX_NAMESERVERS: usize = 8;
/// glibc's caps for `options timeout:` and `attempts:` (resolv.conf(5)).
const MAX_TIMEOUT_SECS: u32 = 30;
const MAX_ATTEMPTS: u32 = 5;

/// The parts of resolv.conf an exit uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// In file order.
    pub nameservers: Vec<SocketAddr>,
    /// `options timeout:N`, per try.
    pub timeout: Option<Duration>,
    /// `options attempts:N`, rounds over the nameservers.
    pub attempts: Option<u8>,
    /// Lines that were understood but deliberately not used, for the log.
    pub notes: Vec<String>,
}

/// What was wrong with a resolv.conf.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<ResolvConfError>,
    },
    #[error("line {line}: `nameserver` needs an IP address")]
    MissingAddress { line: usize },
    #[error("line {line}: `{text}` is not an IPv4/IPv6 address (optionally with :port)")]
    BadAddress { line: usize, text: String },
    #[error("line {line}: bad option `{text}` (want a whole number)")]
    BadOption { line: usize, text: String },
    #[error("no `nameserver` line: an exit needs a resolver to resolve hostnames")]
    NoNameserver,
}

impl ResolvConf {
    /// Reads and parses `path` (use [`DEFAULT_RESOLV_CONF`] when none is configured).
    pub fn load(path: &Path) -> Result<ResolvConf, ResolvConfError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResolvConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        ResolvConf::parse(&text).map_err(|e| ResolvConfError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Parses resolv.conf text. Unknown keywords and options are ignored as glibc does;
    /// `search`/`domain`/`sortlist` are noted and ignored because an exit resolves the names
    /// clients give it exactly as given.
    pub fn parse(text: &str) -> Result<ResolvConf, ResolvConfError> {
        let mut conf = ResolvConf {
            nameservers: Vec::new(),
            timeout: None,
            attempts: None,
            notes: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            // '#' or ';' start a comment anywhere on the line.
            let content = raw.split(['#', ';']).next().unwrap_or("");
            let mut words = content.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword {
                "nameserver" => {
                    let text = words
                        .next()
                        .ok_or(ResolvConfError::MissingAddress { line })?;
                    let addr =
                        parse_nameserver(text).ok_or_else(|| ResolvConfError::BadAddress {
                            line,
                            text: text.to_owned(),
                        })?;
                    if conf.nameservers.len() < MAX_NAMESERVERS {
                        conf.nameservers.push(addr);
                    } else {
                        conf.notes.push(format!(
                            "line {line}: more than {MAX_NAMESERVERS} nameservers; {text} ignored"
                        ));
                    }
                }
                "options" => {
                    for opt in words {
                        if let Some(v) = opt.strip_prefix("timeout:") {
                            let secs = parse_number(v, line, opt)?.clamp(1, MAX_TIMEOUT_SECS);
                            conf.timeout = Some(Duration::from_secs(secs.into()));
                        } else if let Some(v) = opt.strip_prefix("attempts:") {
                            let n = parse_number(v, line, opt)?.clamp(1, MAX_ATTEMPTS);
                            conf.attempts = Some(n as u8);
                        } else {
                            conf.notes
                                .push(format!("line {line}: option `{opt}` ignored"));
                        }
                    }
                }
                "search" | "domain" | "sortlist" => conf.notes.push(format!(
                    "line {line}: `{keyword}` ignored: an exit resolves names as given"
                )),
                other => conf
                    .notes
                    .push(format!("line {line}: unknown keyword `{other}` ignored")),
            }
        }
        if conf.nameservers.is_empty() {
            return Err(ResolvConfError::NoNameserver);
        }
        Ok(conf)
    }
}

fn parse_number(v: &str, line: usize, opt: &str) -> Result<u32, ResolvConfError> {
    v.parse().map_err(|_| ResolvConfError::BadOption {
        line,
        text: opt.to_owned(),
    })
}

/// `1.2.3.4`, `::1`, and, as libevent (C tor's resolver) also accepts, `1.2.3.4:5353` and
/// `[::1]:5353`. Scoped IPv6 (`fe80::1%eth0`) is not supported.
fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let sa: SocketAddr = text.parse().ok()?;
    (sa.port() != 0).then_some(sa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_file() {
        let conf = ResolvConf::parse(
            "# generated\n\
             search example.com corp.example\n\
             nameserver 192.0.2.53\n\
             nameserver 2001:db8::53 # second\n\
             nameserver [::1]:5353\n\
             nameserver 127.0.0.1:1053\n\
             options edns0 timeout:3 attempts:4 rotate\n\
             ; comment\n\
             \n",
        )
        .unwrap();
        assert_eq!(
            conf.nameservers,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "[::1]:5353".parse().unwrap(),
                "127.0.0.1:1053".parse().unwrap(),
            ]
        );
        assert_eq!(conf.timeout, Some(Duration::from_secs(3)));
        assert_eq!(conf.attempts, Some(4));
        assert_eq!(conf.notes.len(), 3, "{:?}", conf.notes);
        assert!(conf.notes[0].starts_with("line 2: `search` ignored"));
    }

    #[test]
    fn options_are_clamped_like_glibc() {
        let conf =
            ResolvConf::parse("nameserver 127.0.0.1\noptions timeout:0 attempts:99\n").unwrap();
        assert_eq!(conf.timeout, Some(Duration::from_secs(1)));
        assert_eq!(conf.attempts, Some(5));
        let conf = ResolvConf::parse("nameserver 127.0.0.1\noptions timeout:900\n").unwrap();
        assert_eq!(conf.timeout, Some(Duration::from_secs(30)));
        assert_eq!(conf.attempts, None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = ResolvConf::parse("nameserver 127.0.0.1\nnameserver dns.example\n").unwrap_err();
        assert!(
            matches!(e, ResolvConfError::BadAddress { line: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("line 2"));
        let e = ResolvConf::parse("\n\nnameserver\n").unwrap_err();
        assert!(matches!(e, ResolvConfError::MissingAddress { line: 3 }));
        let e = ResolvConf::parse("nameserver ::1\noptions timeout:x\n").unwrap_err();
        assert!(matches!(e, ResolvConfError::BadOption { line: 2, .. }));
        let e = ResolvConf::parse("nameserver 1.2.3.4:0\n").unwrap_err();
        assert!(matches!(e, ResolvConfError::BadAddress { line: 1, .. }));
    }

    #[test]
    fn no_nameserver_is_an_error_not_a_default() {
        for text in ["", "# nothing\n", "search example.com\noptions timeout:1\n"] {
            assert!(matches!(
                ResolvConf::parse(text),
                Err(ResolvConfError::NoNameserver)
            ));
        }
    }

    #[test]
    fn extra_nameservers_are_noted() {
        let text: String = (1..=10)
            .map(|i| format!("nameserver 127.0.0.{i}\n"))
            .collect();
        let conf = ResolvConf::parse(&text).unwrap();
        assert_eq!(conf.nameservers.len(), MAX_NAMESERVERS);
        assert_eq!(conf.notes.len(), 2);
    }

    #[test]
    fn load_reports_the_path() {
        let dir = std::env::temp_dir().join(format!("fors-resolvconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "options timeout:1\n").unwrap();
        let e = ResolvConf::load(&path).unwrap_err();
        assert!(e.to_string().contains("resolv.conf"), "{e}");
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        assert_eq!(ResolvConf::load(&path).unwrap().nameservers.len(), 1);
        let missing = dir.join("absent");
        assert!(matches!(
            ResolvConf::load(&missing),
            Err(ResolvConfError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
