//! The `fors` process speaking systemd's notification protocol (`src/relay/notify.rs`,
//! docs/operating.md "systemd"), end to end: the test binds a Unix datagram socket, passes it
//! as `NOTIFY_SOCKET` like systemd does, and reads what a real `fors` sends — `READY=1` only
//! once the ORPort accepts, `STATUS=` lines, `RELOADING=1` then `READY=1` on SIGHUP,
//! `STOPPING=1` on SIGTERM, `WATCHDOG=1` every half `WATCHDOG_USEC`, and no more pings once a
//! shard is stalled (`FORS_TESTING_STALL_SHARD`) while the other shard still ticks. Fake
//! authorities on loopback only; every child is killed when its test ends; every wait is
//! bounded.

mod daemon_common;

use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::{free_port, http_get, standalone_torrc, Fors, TempDir};

const START: Duration = Duration::from_secs(60);

/// A torrc for a 2-shard relay on loopback under TestingTorNetwork; fake authorities.
fn torrc(dir: &Path, or_port: u16, metrics_port: u16) -> String {
    standalone_torrc("ForsNotify", dir, or_port, metrics_port)
        .unset("PidFile")
        .metrics_port_policy("accept 127.0.0.1")
        .render()
}

/// One datagram the relay sent, and when it arrived.
struct Msg {
    at: Instant,
    text: String,
}

/// The service manager's end: a datagram socket, bound at a path or an abstract name.
struct Manager {
    socket: UnixDatagram,
    /// What to put in `NOTIFY_SOCKET`.
    address: String,
}

impl Manager {
    fn at_path(p: &Path) -> Manager {
        let socket = UnixDatagram::bind(p).unwrap();
        Manager {
            socket,
            address: p.display().to_string(),
        }
    }

    fn abstract_named(tag: &str) -> Manager {
        let name = format!(
            "fors-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        Manager {
            socket: UnixDatagram::bind_addr(&addr).unwrap(),
            address: format!("@{name}"),
        }
    }

    /// The next datagram within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<Msg> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        let len = self.socket.recv(&mut buf).ok()?;
        let text = String::from_utf8(buf[..len].to_vec()).expect("notification is UTF-8");
        eprintln!("notify| {}", text.trim_end().replace('\n', " | "));
        Some(Msg {
            at: Instant::now(),
            text,
        })
    }

    /// Datagrams until one contains `needle` (returned last); panics after `timeout`.
    fn until(&self, needle: &str, timeout: Duration) -> Vec<Msg> {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Some(m) = self.recv(end.saturating_duration_since(Instant::now())) {
                let hit = m.text.contains(needle);
                seen.push(m);
                if hit {
                    return seen;
                }
            }
        }
        panic!(
            "no {needle:?} within {timeout:?}; got {:?}",
            seen.iter().map(|m| &m.text).collect::<Vec<_>>()
        );
    }

    /// Everything that arrives within `d`.
    fn collect(&self, d: Duration) -> Vec<Msg> {
        let end = Instant::now() + d;
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Some(m) = self.recv(end.saturating_duration_since(Instant::now())) {
                seen.push(m);
            }
        }
        seen
    }
}

/// The value of `KEY=` in a message.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC=` carries it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, on this stack frame.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A shard's tick counter from the MetricsPort.
fn shard_ticks(metrics_port: u16, shard: usize) -> u64 {
    let text = http_get(
        format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        "/metrics",
    );
    let prefix = format!("fors_shard_ticks{{shard=\"{shard}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in the MetricsPort output"))
}

#[test]
fn ready_after_the_orport_accepts_then_reloading_and_stopping() {
    let tmp = TempDir::new("notify-ready");
    let or_port = free_port();
    let rc = tmp.path().join("torrc");
    std::fs::write(&rc, torrc(tmp.path(), or_port, free_port())).unwrap();
    let manager = Manager::at_path(&tmp.path().join("notify"));
    // A watchdog meant for another process (WATCHDOG_PID): Fors must not ping.
    let mut f = Fors::start_with_env(
        &["-f", rc.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", &manager.address),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let msgs = manager.until("READY=1", START);
    // READY=1 is the first thing sent, and by then the ORPort takes connections.
    assert_eq!(msgs.len(), 1, "something came before READY=1");
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{or_port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .expect("READY=1 was sent but the ORPort does not accept");
    let ready = &msgs[0].text;
    let status = field(ready, "STATUS").expect("READY=1 comes with a STATUS= line");
    assert!(status.starts_with("2 shards running; "), "{status}");
    assert!(status.contains("bootstrapping"), "{status}");
    f.wait_for("the relay is running", Duration::from_secs(5));

    // The fake authorities refuse connections: the failed fetch shows in a new STATUS=
    // (sent by the main loop when the line changes).
    let msgs = manager.until("fetch failed", Duration::from_secs(30));
    let last = field(&msgs.last().unwrap().text, "STATUS").unwrap();
    assert!(
        last.starts_with("2 shards running; bootstrapping: no consensus yet ("),
        "{last}"
    );

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again.
    let before = monotonic_usec();
    f.signal(libc::SIGHUP);
    let msgs = manager.until("RELOADING=1", Duration::from_secs(10));
    let reloading = &msgs.last().unwrap().text;
    let stamp: u64 = field(reloading, "MONOTONIC_USEC")
        .expect("RELOADING=1 carries MONOTONIC_USEC=")
        .parse()
        .unwrap();
    let after = monotonic_usec();
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} not within [{before}, {after}]"
    );
    let msgs = manager.until("READY=1", Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "READY=1 right after the reload");
    assert!(field(&msgs[0].text, "STATUS").is_some());
    f.wait_for("Reload: no option changed.", Duration::from_secs(5));

    // SIGTERM: STOPPING=1, clean exit.
    f.signal(libc::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(10));
    assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0));
    // No WATCHDOG=1 at any point: WATCHDOG_PID named another process.
    let rest = manager.collect(Duration::from_millis(300));
    assert!(rest.iter().all(|m| !m.text.contains("WATCHDOG")));
    assert!(
        !f.log.iter().any(|l| l.contains("watchdog")),
        "{:#?}",
        f.log
    );
}

/// WATCHDOG_USEC for the watchdog tests: pings every 500 ms.
const WATCHDOG_USEC: u64 = 1_000_000;

#[test]
fn watchdog_pings_every_half_watchdog_usec() {
    let tmp = TempDir::new("notify-watchdog");
    let rc = tmp.path().join("torrc");
    std::fs::write(&rc, torrc(tmp.path(), free_port(), free_port())).unwrap();
    let manager = Manager::abstract_named("watchdog");
    let usec = WATCHDOG_USEC.to_string();
    let mut f = Fors::start_with_env(
        &["-f", rc.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", &manager.address),
            ("WATCHDOG_USEC", &usec),
        ],
    );
    manager.until("READY=1", START);
    let pings: Vec<Instant> = manager
        .collect(Duration::from_secs(4))
        .into_iter()
        .filter(|m| m.text == "WATCHDOG=1\n")
        .map(|m| m.at)
        .collect();
    // 4 s at 500 ms: 8 pings, give or take the edges and a loaded machine.
    assert!(
        (6..=10).contains(&pings.len()),
        "{} pings in 4 s",
        pings.len()
    );
    let gaps: Vec<u128> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    eprintln!("watchdog ping gaps (ms): {gaps:?}");
    let mut sorted = gaps.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    assert!((400..=650).contains(&median), "median gap {median} ms");
    assert!(
        gaps.iter().all(|&g| g < u128::from(WATCHDOG_USEC / 1000)),
        "a gap reached WATCHDOG_USEC: {gaps:?}"
    );
    f.wait_for("Pinging the service manager's watchdog every 500 ms", START);
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn a_stalled_shard_stops_the_watchdog_pings() {
    let tmp = TempDir::new("notify-stall");
    let metrics_port = free_port();
    let rc = tmp.path().join("torrc");
    std::fs::write(&rc, torrc(tmp.path(), free_port(), metrics_port)).unwrap();
    let manager = Manager::abstract_named("stall");
    let usec = WATCHDOG_USEC.to_string();
    let mut f = Fors::start_with_env(
        &["-f", rc.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", &manager.address),
            ("WATCHDOG_USEC", &usec),
            ("FORS_TESTING_STALL_SHARD", "1"),
        ],
    );
    manager.until("READY=1", START);
    f.wait_for("Shard 1 stopped ticking", Duration::from_secs(10));
    // The main loop's STATUS= names the stall within a second or so. Before it, at most the
    // ping sent as the watchdog started (the stall is not yet visible then).
    let before = manager.until("STATUS=1 of 2 shards stalled", Duration::from_secs(5));
    let early = before
        .iter()
        .filter(|m| m.text.contains("WATCHDOG=1"))
        .count();
    assert!(early <= 2, "{early} pings before the stall was reported");
    // From then on no ping goes out, for far longer than WATCHDOG_USEC (systemd would have
    // killed the process by now).
    let later = manager.collect(Duration::from_secs(3));
    let pings = later
        .iter()
        .filter(|m| m.text.contains("WATCHDOG=1"))
        .count();
    assert_eq!(pings, 0, "pings went on with a stalled shard");
    // The other shard still runs: its tick counter advances; the stalled one's does not.
    let (a0, a1) = (shard_ticks(metrics_port, 0), shard_ticks(metrics_port, 1));
    std::thread::sleep(Duration::from_secs(1));
    let (b0, b1) = (shard_ticks(metrics_port, 0), shard_ticks(metrics_port, 1));
    assert!(b0 >= a0 + 5, "shard 0 ticks {a0} -> {b0} in 1 s");
    assert_eq!(a1, b1, "shard 1 ticked while stalled");
    // SIGTERM still ends it cleanly (the stall is released to stop the shard).
    f.signal(libc::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(10));
    assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn sigint_says_stopping_with_the_wait_and_keeps_that_status() {
    let tmp = TempDir::new("notify-sigint");
    let rc = tmp.path().join("torrc");
    let text = torrc(tmp.path(), free_port(), free_port());
    std::fs::write(&rc, format!("{text}ShutdownWaitLength 7 seconds\n")).unwrap();
    let manager = Manager::abstract_named("sigint");
    let mut f = Fors::start_with_env(
        &["-f", rc.to_str().unwrap()],
        &[("NOTIFY_SOCKET", &manager.address)],
    );
    manager.until("READY=1", START);
    f.signal(libc::SIGINT);
    let msgs = manager.until("STOPPING=1", Duration::from_secs(10));
    let stopping = &msgs.last().unwrap().text;
    assert_eq!(
        field(stopping, "STATUS"),
        Some("Shutting down in 7 s (ShutdownWaitLength); no longer accepting connections"),
        "{stopping}"
    );
    // Until the exit, no other STATUS= replaces it but the final one (7 s: longer than the
    // 5 s between consensus fetches on a test network, so the bootstrap status changes
    // meanwhile: another failed fetch).
    assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0));
    let rest = manager.collect(Duration::from_millis(300));
    let statuses: Vec<&str> = rest
        .iter()
        .filter_map(|m| field(&m.text, "STATUS"))
        .collect();
    assert_eq!(statuses, ["Shutting down"], "{statuses:?}");
}
