//! The `fors` process's own behaviour, end to end on loopback (docs/operating.md): the
//! heartbeat every `HeartbeatPeriod` (live on SIGHUP), a dead shard ending the process with an
//! error, SIGINT closing the ORPort at once and exiting after `ShutdownWaitLength`, and `User`
//! switching ids after binding. Fake authorities only; every child is killed when its test
//! ends; every wait is bounded.

mod daemon_common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::{free_port, http_get, metric, Fors, TempDir};

const START: Duration = Duration::from_secs(60);

/// A torrc for a 2-shard relay on loopback under TestingTorNetwork; fake authorities.
fn torrc(dir: &Path, or_port: u16, metrics_port: u16, extra: &str) -> String {
    let dead1 = free_port();
    let dead2 = free_port();
    format!(
        "Nickname ForsProc\n\
         ContactInfo test@example.invalid\n\
         ORPort 127.0.0.1:{or_port}\n\
         Address 127.0.0.1\n\
         DataDirectory {d}/data\n\
         PidFile {d}/fors.pid\n\
         MetricsPort 127.0.0.1:{metrics_port}\n\
         MetricsPortPolicy accept 127.0.0.1\n\
         Log notice stdout\n\
         NumCPUs 2\n\
         TestingTorNetwork 1\n\
         PublishServerDescriptor 0\n\
         DirAuthority auth1 orport={dead1} no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:{dead1} 89ABCDEF0123456789ABCDEF0123456789ABCDEF\n\
         DirAuthority auth2 orport={dead2} no-v2 v3ident=1123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:{dead2} 99ABCDEF0123456789ABCDEF0123456789ABCDEF\n\
         {extra}",
        d = dir.display()
    )
}

fn start(dir: &Path) -> Fors {
    let rc = dir.join("torrc");
    Fors::start(&["-f", rc.to_str().unwrap()])
}

/// Lines containing `needle` seen so far.
fn count(f: &Fors, needle: &str) -> usize {
    f.log.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn heartbeat_every_period_and_live_on_sighup() {
    let tmp = TempDir::new("proc-heartbeat");
    let rc = tmp.path().join("torrc");
    let text = torrc(tmp.path(), free_port(), free_port(), "");
    // TestingTorNetwork lifts C tor's 30-minute minimum, so 2 seconds is kept.
    std::fs::write(&rc, format!("{text}HeartbeatPeriod 2 seconds\n")).unwrap();
    let mut f = start(tmp.path());
    f.wait_for("the relay is running", START);
    let line = f.wait_for("Heartbeat: Fors's uptime is", Duration::from_secs(10));
    assert!(
        line.contains("[notice]")
            && line.contains("0:00 hours, with 0 circuits open")
            && line.contains("I've received 0 connections and made 0 connections"),
        "{line}"
    );
    f.wait_for(
        "Heartbeat: DoS mitigation since startup",
        Duration::from_secs(5),
    );
    // Periodic: a second one within another period or two.
    let end = Instant::now() + Duration::from_secs(10);
    while count(&f, "Fors's uptime is") < 2 && Instant::now() < end {
        f.drain(Duration::from_millis(500));
    }
    assert!(count(&f, "Fors's uptime is") >= 2, "{:#?}", f.log);

    // SIGHUP with HeartbeatPeriod 0: applied at once, no heartbeat afterwards.
    std::fs::write(&rc, format!("{text}HeartbeatPeriod 0\n")).unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for("Reload: HeartbeatPeriod changed; applied.", START);
    let before = count(&f, "Fors's uptime is");
    f.drain(Duration::from_secs(5));
    assert_eq!(count(&f, "Fors's uptime is"), before, "{:#?}", f.log);
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(START), Some(0));
}

#[test]
fn a_panicking_shard_ends_the_process_with_an_error() {
    let tmp = TempDir::new("proc-panic");
    std::fs::write(
        tmp.path().join("torrc"),
        torrc(tmp.path(), free_port(), free_port(), ""),
    )
    .unwrap();
    let rc = tmp.path().join("torrc");
    let mut f = Fors::start_with_env(
        &["-f", rc.to_str().unwrap()],
        &[("FORS_TESTING_PANIC_SHARD", "1")],
    );
    f.wait_for("the relay is running", START);
    let armed = Instant::now();
    let code = f.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(1), "{:#?}", f.log);
    // Within a few seconds: a tick is 100 ms and the main loop looks every second.
    assert!(
        armed.elapsed() < Duration::from_secs(8),
        "{:?}",
        armed.elapsed()
    );
    let err = f
        .log
        .iter()
        .find(|l| l.contains("[err] Shard 1 stopped while the relay was running"))
        .unwrap_or_else(|| panic!("no err line: {:#?}", f.log));
    assert!(
        err.contains("thread fors-shard-1 panicked at") && err.contains("FORS_TESTING_PANIC_SHARD"),
        "{err}"
    );
    assert!(!tmp.path().join("fors.pid").exists(), "PidFile left behind");
}

#[test]
fn the_panic_hook_is_ignored_without_testing_tor_network() {
    let tmp = TempDir::new("proc-panic-off");
    let text = torrc(tmp.path(), free_port(), free_port(), "")
        .replace("TestingTorNetwork 1\n", "")
        .replace("Address 127.0.0.1\n", "AssumeReachable 1\n");
    std::fs::write(tmp.path().join("torrc"), text).unwrap();
    let rc = tmp.path().join("torrc");
    let mut f = Fors::start_with_env(
        &["-f", rc.to_str().unwrap()],
        &[("FORS_TESTING_PANIC_SHARD", "0")],
    );
    f.wait_for("the relay is running", START);
    f.wait_for(
        "FORS_TESTING_PANIC_SHARD is set but TestingTorNetwork is 0",
        START,
    );
    f.drain(Duration::from_secs(2));
    assert!(f.child.try_wait().unwrap().is_none(), "{:#?}", f.log);
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(START), Some(0));
}

/// Whether a fresh TCP connect to `addr` is refused (not merely slow).
fn refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

#[test]
fn sigint_refuses_new_connections_at_once_and_exits_after_shutdown_wait_length() {
    let tmp = TempDir::new("proc-sigint");
    let (or_port, m_port) = (free_port(), free_port());
    std::fs::write(
        tmp.path().join("torrc"),
        torrc(
            tmp.path(),
            or_port,
            m_port,
            "ShutdownWaitLength 2 seconds\n",
        ),
    )
    .unwrap();
    let mut f = start(tmp.path());
    f.wait_for("the relay is running", START);
    let or_addr = SocketAddr::from(([127, 0, 0, 1], or_port));
    assert!(!refused(or_addr), "ORPort not accepting before SIGINT");
    // A connection made (and accepted: one still in the listen queue is reset with the
    // listener, as in C tor) before the SIGINT stays open through the wait.
    let mut before = TcpStream::connect_timeout(&or_addr, Duration::from_secs(5)).unwrap();
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));
    let accepted = |text: &str| -> u64 {
        (0..2)
            .filter_map(|s| metric(text, &format!("fors_shard_accepted{{shard=\"{s}\"}}")))
            .sum()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while accepted(&http_get(m_addr, "/metrics")) < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(accepted(&http_get(m_addr, "/metrics")) >= 2);

    f.signal(libc::SIGINT);
    let sent = Instant::now();
    f.wait_for(
        "Interrupt: no longer accepting connections",
        Duration::from_secs(5),
    );
    // Refused at once (well inside the 2 s wait) while the process is still alive.
    let end = Instant::now() + Duration::from_secs(1);
    while !refused(or_addr) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused(or_addr), "ORPort still accepts after SIGINT");
    assert!(
        refused(SocketAddr::from(([127, 0, 0, 1], m_port))),
        "MetricsPort still accepts after SIGINT"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        f.child.try_wait().unwrap().is_none(),
        "exited before ShutdownWaitLength"
    );
    // The old connection is still served: the relay's VERSIONS-less wait keeps it open, so
    // a read times out rather than seeing EOF.
    use std::io::Read;
    before
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    match before.read(&mut b) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("pre-SIGINT connection closed early: {other:?}"),
    }

    // Exits cleanly after ShutdownWaitLength (2 s; the main loop looks every second).
    assert_eq!(f.wait_exit(Duration::from_secs(10)), Some(0));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "exit after {took:?}"
    );
    assert!(f
        .log
        .iter()
        .any(|l| l.contains("ShutdownWaitLength is over")));
}
