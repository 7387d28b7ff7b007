//! The `fors` process's own behaviour, end to end on loopback (docs/operating.md): the
//! heartbeat every `HeartbeatPeriod` (live on SIGHUP), a dead shard ending the process with an
//! error, SIGINT closing the ORPort at once and exiting after `ShutdownWaitLength`, and `User`
//! switching ids after binding. Fake authorities only; every child is killed when its test
//! ends; every wait is bounded.

mod daemon_common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::{
    free_port, http_get, metric, open_channel_and_create, standalone_torrc, Fors, TempDir,
};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};

const START: Duration = Duration::from_secs(60);

/// A torrc for a 2-shard relay on loopback under TestingTorNetwork; fake authorities.
fn torrc(dir: &Path, or_port: u16, metrics_port: u16, extra: &str) -> String {
    standalone_torrc("ForsProc", dir, or_port, metrics_port)
        .metrics_port_policy("accept 127.0.0.1")
        .raw(extra)
        .render()
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
    let mut f = Fors::start_in(tmp.path());
    f.wait_for("the relay is running", START);
    let line = f.wait_for("Heartbeat: Fors has been up", Duration::from_secs(10));
    assert!(
        line.contains("[notice]")
            && line.contains("up 0:00 hours, with 0 circuits open; 0 kB sent and 0 kB received")
            && line.contains("0 connections accepted and 0 made"),
        "{line}"
    );
    f.wait_for(
        "Heartbeat: since start, nothing was refused or dropped under load.",
        Duration::from_secs(5),
    );
    f.wait_for(
        "Heartbeat: DoS mitigation since startup",
        Duration::from_secs(5),
    );
    // Periodic: a second one within another period or two.
    let end = Instant::now() + Duration::from_secs(10);
    while count(&f, "Fors has been up") < 2 && Instant::now() < end {
        f.drain(Duration::from_millis(500));
    }
    assert!(count(&f, "Fors has been up") >= 2, "{:#?}", f.log);

    // SIGHUP with HeartbeatPeriod 0: applied at once, no heartbeat afterwards.
    let ctl = free_port();
    std::fs::write(
        &rc,
        format!("{text}HeartbeatPeriod 0\nControlPort 127.0.0.1:{ctl}\nCookieAuthentication 1\n"),
    )
    .unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for("Reload: HeartbeatPeriod changed; applied.", START);
    let before = count(&f, "Fors has been up");
    f.drain(Duration::from_secs(5));
    assert_eq!(count(&f, "Fors has been up"), before, "{:#?}", f.log);
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(START), Some(0));

    // The ControlPort's SIGNAL HEARTBEAT logs one at once, even with periodic ones off.
    let mut f = Fors::start_in(tmp.path());
    f.wait_for("the relay is running", START);
    let mut c = daemon_common::private_net::TorControl::connect(ctl);
    c.command("SIGNAL HEARTBEAT")
        .expect("SIGNAL HEARTBEAT accepted");
    f.wait_for("Heartbeat: Fors has been up", Duration::from_secs(5));
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
fn the_panic_request_is_ignored_without_testing_tor_network() {
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
    let mut f = Fors::start_in(tmp.path());
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

/// The `Uid:`/`Gid:`/`Groups:` values of `/proc/PID/status`.
fn proc_ids(pid: i32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// `id -u NAME` and `id -g NAME`, if the user exists.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

#[test]
fn user_switches_ids_after_binding_and_still_serves() {
    const TEST: &str = "user_switches_ids_after_binding_and_still_serves";
    if !daemon_common::running_as_root() {
        daemon_common::skip_common::skip(TEST, "switching users needs root");
        return;
    }
    let Some((uid, gid)) = user_ids("nobody") else {
        daemon_common::skip_common::skip(TEST, "there is no user \"nobody\" here");
        return;
    };
    assert_ne!(uid, 0);
    let tmp = TempDir::new("proc-user");
    // The user must be able to reach its DataDirectory; the torrc stays root's.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let (or_port, m_port) = (free_port(), free_port());
    let extra = format!(
        "User nobody\nControlPort unix:{}/ctl.sock\nCookieAuthentication 1\n",
        data.display()
    );
    let text = torrc(tmp.path(), or_port, m_port, &extra).replace(
        &format!("PidFile {}/fors.pid", tmp.path().display()),
        &format!("PidFile {}/fors.pid", data.display()),
    );
    std::fs::write(tmp.path().join("torrc"), text).unwrap();
    let mut f = Fors::start_in(tmp.path());
    f.wait_for("Switched to user nobody", START);
    f.wait_for("the relay is running", START);

    let pid = f.pid();
    assert_eq!(proc_ids(pid, "Uid:"), vec![uid; 4]);
    assert_eq!(proc_ids(pid, "Gid:"), vec![gid; 4]);
    assert_eq!(proc_ids(pid, "Groups:"), vec![gid]);
    // Every thread switched, the shards included (glibc applies set*id to all threads).
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().file_name();
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", t.to_string_lossy()))
                .unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            line.split_whitespace()
                .skip(1)
                .all(|v| v == uid.to_string()),
            "thread {t:?}: {line}"
        );
    }
    // Files made at start-up belong to the user, the ControlPort socket bound as root too.
    use std::os::unix::fs::MetadataExt;
    for file in [
        "keys/secret_id_key",
        "fingerprint",
        "fors.pid",
        "control_auth_cookie",
        "ctl.sock",
    ] {
        let m = std::fs::metadata(data.join(file)).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{file}");
    }
    // It still serves: the MetricsPort answers, and the shards (rings opened as root) run a
    // channel handshake and answer CREATE_FAST.
    let r = http_get(SocketAddr::from(([127, 0, 0, 1], m_port)), "/metrics");
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    let or_addr = SocketAddr::from(([127, 0, 0, 1], or_port));
    let fp = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let rsa = RsaIdentity::from_hex(fp.split_whitespace().nth(1).unwrap()).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();
    let (cmd, _) = open_channel_and_create(or_addr, rsa, ed, &tmp.path().join("client"));
    assert_eq!(cmd, fors::cell::ChanCmd::CREATED_FAST);

    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(START), Some(0));
    assert!(!data.join("fors.pid").exists(), "PidFile left behind");
}

#[test]
fn user_refuses_a_data_directory_owned_by_someone_else() {
    const TEST: &str = "user_refuses_a_data_directory_owned_by_someone_else";
    if !daemon_common::running_as_root() {
        daemon_common::skip_common::skip(TEST, "switching users needs root");
        return;
    }
    if user_ids("nobody").is_none() {
        daemon_common::skip_common::skip(TEST, "there is no user \"nobody\" here");
        return;
    }
    let tmp = TempDir::new("proc-user-owner");
    std::fs::create_dir(tmp.path().join("data")).unwrap(); // root's
    std::fs::write(
        tmp.path().join("torrc"),
        torrc(tmp.path(), free_port(), free_port(), "User nobody\n"),
    )
    .unwrap();
    let mut f = Fors::start_in(tmp.path());
    assert_eq!(f.wait_exit(START), Some(1));
    assert!(
        f.log
            .iter()
            .any(|l| l.contains("[err]") && l.contains("belongs to uid 0, not to nobody")),
        "{:#?}",
        f.log
    );
}

/// DisableDebuggerAttachment (default 1, as C tor): a process of the same user cannot read
/// the relay's memory-backed /proc files (the ptrace access check); with 0 it can. Fors runs
/// as `nobody` from the start (setpriv, no `User` switch, which would make it non-dumpable
/// by itself), and the reader is another `nobody` process.
#[test]
fn debugger_attachment_is_refused_unless_allowed() {
    const TEST: &str = "debugger_attachment_is_refused_unless_allowed";
    if !daemon_common::running_as_root() {
        daemon_common::skip_common::skip(TEST, "running as another user needs root");
        return;
    }
    let Some((uid, gid)) = user_ids("nobody") else {
        daemon_common::skip_common::skip(TEST, "there is no user \"nobody\" here");
        return;
    };
    if !daemon_common::skip_common::have("setpriv", "--version") {
        daemon_common::skip_common::skip(TEST, "setpriv is not installed");
        return;
    }
    let as_nobody = |program: &str| {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            program,
        ]);
        c
    };
    for (extra, readable) in [("", false), ("DisableDebuggerAttachment 0\n", true)] {
        let tmp = TempDir::new("proc-dumpable");
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        let text = torrc(tmp.path(), free_port(), free_port(), extra).replace(
            &format!("PidFile {}/fors.pid", tmp.path().display()),
            &format!("PidFile {}/fors.pid", data.display()),
        );
        let rc = tmp.path().join("torrc");
        std::fs::write(&rc, text).unwrap();
        let mut cmd = as_nobody(env!("CARGO_BIN_EXE_fors"));
        cmd.arg("-f").arg(&rc);
        let mut f = Fors::start_command(cmd);
        f.wait_for("the relay is running", START);
        assert_eq!(proc_ids(f.pid(), "Uid:"), vec![uid; 4]);
        let read = as_nobody("cat")
            .arg(format!("/proc/{}/environ", f.pid()))
            .output()
            .unwrap();
        assert_eq!(
            read.status.success(),
            readable,
            "{extra:?}: reading /proc/PID/environ as the same user: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        f.signal(libc::SIGTERM);
        assert_eq!(f.wait_exit(START), Some(0));
    }
}

/// Every listening ORPort is served (tor-manual "ORPort": several lines, IPv4 and IPv6):
/// an IPv4 and an IPv6 loopback ORPort each take a channel and answer CREATE_FAST, on a
/// relay with 2 shards, and the ControlPort lists both listeners.
#[test]
fn every_orport_line_listens() {
    const TEST: &str = "every_orport_line_listens";
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        daemon_common::skip_common::skip(TEST, "no IPv6 loopback (::1) here");
        return;
    }
    let tmp = TempDir::new("proc-orports");
    let (v4, v6, ctl) = (free_port(), free_port(), free_port());
    let text = torrc(
        tmp.path(),
        v4,
        free_port(),
        &format!("ORPort [::1]:{v6}\nControlPort 127.0.0.1:{ctl}\nCookieAuthentication 1\n"),
    );
    std::fs::write(tmp.path().join("torrc"), text).unwrap();
    let mut f = Fors::start_in(tmp.path());
    f.wait_for(&format!("Opened ORPort on [::1]:{v6} too."), START);
    f.wait_for("the relay is running", START);
    let data = tmp.path().join("data");
    let fp = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let rsa = RsaIdentity::from_hex(fp.split_whitespace().nth(1).unwrap()).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();
    for addr in [format!("127.0.0.1:{v4}"), format!("[::1]:{v6}")] {
        let addr: SocketAddr = addr.parse().unwrap();
        let (cmd, _) = open_channel_and_create(addr, rsa, ed, &tmp.path().join("client"));
        assert_eq!(cmd, fors::cell::ChanCmd::CREATED_FAST, "{addr}");
    }
    let mut c = daemon_common::private_net::TorControl::connect(ctl);
    let l = c.command("GETINFO net/listeners/or").unwrap().join(" ");
    assert!(
        l.contains(&format!("127.0.0.1:{v4}")) && l.contains(&format!("[::1]:{v6}")),
        "{l}"
    );
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(START), Some(0));
}
