//! Issue #15, "control surfaces can't be starved": a real Prometheus keeps scraping a live
//! relay's MetricsPort, and a real stem controller keeps getting answers from its ControlPort,
//! while 100 idle sockets sit on each port (reopened as soon as Fors closes them, as an
//! attacker would). Loopback only; every loop is bounded in count and time.
//!
//! Needs Debian's `prometheus` and `python3-stem` (`scripts/setup-debian.sh`); without them
//! the test fails under `CI=true` and prints `SKIPPED:` otherwise.

mod daemon_common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::prometheus::{prom_value, start_prometheus};
use daemon_common::skip_common::{have, skip};
use daemon_common::{free_port, http_get, metric, standalone_torrc, Fors, TempDir};

const START: Duration = Duration::from_secs(60);
/// Idle sockets held on each port.
const IDLE: usize = 100;

fn torrc(dir: &Path, or_port: u16, metrics_port: u16, control_port: u16) -> String {
    standalone_torrc("ForsStarve", dir, or_port, metrics_port)
        .num_cpus(1)
        .metrics_port_policy("accept 127.0.0.1")
        .control_port(control_port)
        .render()
}

/// `n` idle connections to `addr` that never send a byte; [`IdleFlood::refill`] reopens the
/// ones the server closed.
struct IdleFlood {
    addr: SocketAddr,
    socks: Vec<TcpStream>,
    reopened: usize,
}

impl IdleFlood {
    fn open(addr: SocketAddr, n: usize) -> IdleFlood {
        let socks = (0..n)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        IdleFlood {
            addr,
            socks,
            reopened: 0,
        }
    }

    /// Replaces every socket the server closed (read returns EOF or an error) by a new one.
    fn refill(&mut self) {
        for s in &mut self.socks {
            let mut b = [0u8; 256];
            let closed = match s.read(&mut b) {
                Ok(_) => true, // EOF, or a refusal line: the server is done with it.
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if closed {
                if let Ok(n) = TcpStream::connect(self.addr) {
                    n.set_nonblocking(true).unwrap();
                    *s = n;
                    self.reopened += 1;
                }
            }
        }
    }
}

/// stem: connect, authenticate, ask the version; prints it.
const STEM: &str = r#"
import sys
from stem.control import Controller
c = Controller.from_port(address='127.0.0.1', port=int(sys.argv[1]))
c.authenticate()
print('version=' + c.get_info('version'))
c.close()
"#;

#[test]
fn prometheus_and_stem_are_served_through_idle_floods() {
    const TEST: &str = "prometheus_and_stem_are_served_through_idle_floods";
    if !have("prometheus", "--version") {
        skip(
            TEST,
            "prometheus is not installed (apt-get install prometheus)",
        );
        return;
    }
    let stem_ok = Command::new("/usr/bin/python3")
        .args(["-c", "import stem"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stem_ok {
        skip(
            TEST,
            "python3-stem is not installed (apt-get install python3-stem)",
        );
        return;
    }
    let tmp = TempDir::new("daemon-starve");
    let (or_port, m_port, c_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        tmp.path().join("torrc"),
        torrc(tmp.path(), or_port, m_port, c_port),
    )
    .unwrap();
    let rc = tmp.path().join("torrc");
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("the relay is running", START);
    let maddr: SocketAddr = format!("127.0.0.1:{m_port}").parse().unwrap();
    let caddr: SocketAddr = format!("127.0.0.1:{c_port}").parse().unwrap();

    // Both floods first; they stay (refilled) for the whole test.
    let mut mflood = IdleFlood::open(maddr, IDLE);
    let mut cflood = IdleFlood::open(caddr, IDLE);
    std::thread::sleep(Duration::from_millis(300));
    mflood.refill();
    cflood.refill();

    let (_prom, web) = start_prometheus(tmp.path(), maddr);
    // Prometheus records `up` 1 per successful scrape; wait (bounded) for 5 of them while the
    // flood is kept full, and for the relay's own count of evictions to be scraped.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut ups = 0.0;
    let mut evicted_seen = 0.0;
    while Instant::now() < deadline {
        mflood.refill();
        cflood.refill();
        ups = prom_value(web, "sum_over_time(up{job=\"fors\"}[5m])").unwrap_or(0.0);
        evicted_seen = prom_value(web, "max(fors_metricsport_evicted_total)").unwrap_or(0.0);
        if ups >= 5.0 && evicted_seen >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let failed_scrapes = prom_value(
        web,
        "count_over_time(up{job=\"fors\"}[5m]) - sum_over_time(up{job=\"fors\"}[5m])",
    );
    eprintln!(
        "prometheus: {ups} successful scrapes, {failed_scrapes:?} failed; evictions scraped: \
         {evicted_seen}; idle sockets reopened: metrics {}, control {}",
        mflood.reopened, cflood.reopened
    );
    assert!(
        ups >= 5.0,
        "Prometheus scraped only {ups} times through the flood"
    );
    assert!(evicted_seen >= 1.0, "the scrape never saw an eviction");
    assert_eq!(failed_scrapes, Some(0.0), "some scrapes failed");

    // stem, through the ControlPort flood, three times.
    for _ in 0..3 {
        cflood.refill();
        let out = Command::new("/usr/bin/python3")
            .args(["-c", STEM, &c_port.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.starts_with("version="),
            "stem failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m = http_get(maddr, "/metrics");
    let c_evicted = metric(&m, "fors_controlport_evicted_total").unwrap_or(0);
    let m_conns = metric(&m, "fors_metricsport_connections").unwrap_or(0);
    eprintln!("relay: controlport evictions {c_evicted}, metricsport connections {m_conns}");
    assert!(
        c_evicted >= 1,
        "the ControlPort flood never filled the table"
    );
    // The flood shows in the log, rate-limited.
    f.drain(Duration::from_secs(1));
    for needle in [
        "MetricsPort: connection table full",
        "ControlPort: 64 connections open",
        // The control plane's once-a-minute summary (src/relay/pressure.rs).
        "idle MetricsPort connections closed to make room",
    ] {
        assert!(
            f.log.iter().any(|l| l.contains(needle)),
            "no log line {needle:?}"
        );
    }
    let table_lines = f
        .log
        .iter()
        .filter(|l| l.contains("connection table full") || l.contains("connections open;"))
        .count();
    assert!(
        table_lines <= 2 * 16,
        "{table_lines} log lines: not rate-limited"
    );
}
