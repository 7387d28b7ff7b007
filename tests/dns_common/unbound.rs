//! A private `unbound` on 127.0.0.1 that serves test zones and never recurses.
//!
//! * Zone `fors.test.` comes from an auth-zone file ([`FORS_TEST_ZONE`] or your own text), so
//!   CNAME chains are answered in full and NXDOMAIN/NODATA carry an SOA.
//! * `local-zone: "." refuse` answers every other name REFUSED at once, and
//!   `outgoing-interface: 127.0.0.1` would keep any stray upstream query on loopback anyway.
//!   [`Unbound::stop`] returns unbound's own "N recursions" count so a test can assert 0.
//! * The process is killed by pid when the guard drops, also when a test panics.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Debian's unbound.
pub const UNBOUND_BIN: &str = "/usr/sbin/unbound";

/// A small zone with every kind of answer the exit tests need. SOA MINIMUM 120 s makes
/// negative answers carry a 120 s TTL.
pub const FORS_TEST_ZONE: &str = "\
$ORIGIN fors.test.
$TTL 600
@       IN SOA ns.fors.test. hostmaster.fors.test. 1 3600 600 86400 120
@       IN NS ns.fors.test.
ns      IN A 127.0.0.1
relay   IN A 127.0.0.1
relay   IN AAAA 2001:db8::1
v4only  IN A 192.0.2.5
v6only  IN AAAA 2001:db8::6
alias   IN CNAME relay.fors.test.
alias2  IN CNAME alias.fors.test.
long 86400 IN A 192.0.2.20
short 5 IN A 192.0.2.21
";

/// PTR data served from `2.0.192.in-addr.arpa.` (TEST-NET-1, so not an internal address).
const PTR_DATA: &[&str] = &["192.0.2.10 host.fors.test"];

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// A running unbound; dropping it kills the process and removes its directory.
pub struct Unbound {
    child: Child,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Unbound {
    /// Starts unbound with [`FORS_TEST_ZONE`].
    pub fn start_default() -> Unbound {
        Unbound::start(FORS_TEST_ZONE, &[])
    }

    /// Starts unbound serving `zone` as `fors.test.`; `extra` lines go in its `server:` block
    /// (e.g. more `local-zone:` / `local-data:`). Panics with a clear message on failure.
    pub fn start(zone: &str, extra: &[&str]) -> Unbound {
        assert!(
            std::path::Path::new(UNBOUND_BIN).exists(),
            "{UNBOUND_BIN} missing: apt-get install -y unbound"
        );
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fors-unbound-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create unbound dir");
        let zone_path = dir.join("fors.test.zone");
        std::fs::write(&zone_path, zone).expect("write zone");

        // The port comes from the kernel; another process could take it before unbound binds,
        // so retry a few times.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_udp_port();
            let conf = config_text(&dir, &zone_path, port, extra);
            let conf_path = dir.join("unbound.conf");
            std::fs::write(&conf_path, conf).expect("write unbound.conf");
            let log = dir.join("unbound.log");
            let stderr = File::create(&log).expect("create log");
            let child = Command::new(UNBOUND_BIN)
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn unbound");
            let mut ub = Unbound {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.clone(),
                log,
            };
            if ub.wait_ready(Duration::from_secs(10)) {
                return ub;
            }
            last_log = std::fs::read_to_string(&ub.log).unwrap_or_default();
            ub.kill();
        }
        panic!("unbound did not start; last log:\n{last_log}");
    }

    /// Polls with a SOA query for fors.test until unbound answers or it exits.
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let query =
            b"\xfe\xed\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04fors\x04test\x00\x00\x06\x00\x01";
        let start = Instant::now();
        let mut buf = [0u8; 512];
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = sock.send_to(query, self.addr);
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from == self.addr && n >= 12 && buf[..2] == query[..2] {
                    return true;
                }
            }
        }
        false
    }

    /// Stops unbound gracefully (SIGTERM) and returns its log, which ends with its statistics.
    pub fn stop(mut self) -> String {
        self.terminate();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops unbound and returns how many recursions (upstream lookups) it made in total.
    pub fn stop_and_count_recursions(self) -> u64 {
        let log = self.stop();
        let counts: Vec<u64> = log
            .lines()
            .filter_map(|l| {
                let i = l.find(" recursions")?;
                let before = &l[..i];
                before.rsplit(' ').next()?.parse().ok()
            })
            .collect();
        assert!(!counts.is_empty(), "no statistics in unbound log:\n{log}");
        counts.iter().sum()
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM by pid (our unreaped child, so the pid is still ours) lets unbound print
            // its statistics; kill(1) avoids `unsafe` for libc::kill.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    fn kill(&mut self) {
        // Child::kill signals our own child by pid (SIGKILL); wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind for a free port");
    s.local_addr().unwrap().port()
}

fn config_text(dir: &std::path::Path, zone: &std::path::Path, port: u16, extra: &[&str]) -> String {
    let mut c = String::new();
    c.push_str("server:\n");
    for line in [
        "interface: 127.0.0.1".to_string(),
        format!("port: {port}"),
        "do-daemonize: no".into(),
        "use-syslog: no".into(),
        "logfile: \"\"".into(),
        "chroot: \"\"".into(),
        "username: \"\"".into(),
        format!("directory: \"{}\"", dir.display()),
        "pidfile: \"\"".into(),
        "do-ip6: no".into(),
        "do-tcp: no".into(),
        "num-threads: 1".into(),
        // Any upstream query could only leave from loopback, i.e. go nowhere.
        "outgoing-interface: 127.0.0.1".into(),
        "access-control: 127.0.0.0/8 allow".into(),
        "module-config: \"iterator\"".into(),
        "verbosity: 1".into(),
        "statistics-cumulative: no".into(),
        // Everything outside our zones is refused: unbound never recurses.
        "local-zone: \".\" refuse".into(),
        "local-zone: \"fors.test.\" transparent".into(),
        "local-zone: \"2.0.192.in-addr.arpa.\" static".into(),
    ] {
        c.push_str("  ");
        c.push_str(&line);
        c.push('\n');
    }
    for ptr in PTR_DATA {
        c.push_str(&format!("  local-data-ptr: \"{ptr}\"\n"));
    }
    for line in extra {
        c.push_str("  ");
        c.push_str(line);
        c.push('\n');
    }
    c.push_str(&format!(
        "auth-zone:\n  name: \"fors.test.\"\n  zonefile: \"{}\"\n  for-downstream: yes\n  for-upstream: no\n  fallback-enabled: no\n",
        zone.display()
    ));
    c
}
