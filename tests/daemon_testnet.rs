//! The daemon against real C tor 0.4.9 directory authorities on loopback (scripts/testnet.py,
//! a private network; nothing leaves the machine): the control plane builds, self-checks and
//! uploads the descriptor, every authority stores it (confirmed by fetching it back), their
//! reachability test opens a channel to our ORPort, and the relay fetches and verifies the
//! consensus and reports that it is listed as Running Valid; then a C tor client sends data
//! through a Fors middle and a Fors exit, checked byte for byte.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET`. The network
//! is stopped (by pid, by the script) when the test ends, pass or fail.

mod daemon_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::TempDir;

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testnet.py")
}

/// Runs `testnet.py down` on drop.
struct Network<'a> {
    dir: &'a Path,
}

impl Drop for Network<'_> {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(script())
            .arg("--dir")
            .arg(self.dir)
            .arg("down")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A base port whose next 16 ports are free right now.
fn free_base() -> u16 {
    let seed = (std::process::id() % 2000) as u16;
    for i in 0..200u16 {
        let base = 30_000 + (seed * 13 + i * 97) % 25_000;
        if (0..16).all(|p| std::net::TcpListener::bind(("127.0.0.1", base + p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        if Instant::now() > end {
            panic!(
                "timed out waiting for {needle:?} in {}:\n{text}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn publishes_to_c_tor_authorities_and_reports_its_listing() {
    if std::env::var_os("FORS_SKIP_TESTNET").is_some()
        || !have("tor", "--version")
        || !have("tor-gencert", "--help")
        || !have("python3", "--version")
    {
        eprintln!("tor / tor-gencert / python3 not available (or FORS_SKIP_TESTNET): skipping");
        return;
    }
    let tmp = TempDir::new("daemon-testnet");
    let dir = tmp.path().join("net");
    let _net = Network { dir: &dir };
    let status = Command::new("python3")
        .arg(script())
        .arg("--dir")
        .arg(&dir)
        .args([
            "up",
            "--fors",
            "middle",
            "--fors",
            "exit",
            "--middles",
            "1",
            "--exits",
            "1",
        ])
        .arg("--base-port")
        .arg(free_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    let log = dir.join("forsmiddle1/stdout.log");
    let exit_log = dir.join("forsexit1/stdout.log");
    let t = Duration::from_secs(120);
    wait_for_log(&log, "the relay is running", t);
    for auth in ["auth0", "auth1", "auth2"] {
        let l = wait_for_log(&log, &format!("Authority {auth} ("), t);
        assert!(l.contains("descriptor accepted"), "{l}");
    }
    wait_for_log(&log, "Our descriptor is stored by 3 of 3 authorities", t);
    // The authorities' reachability test opens a channel to our ORPort (TLS + link
    // handshake); once it succeeds they vote us Running, and the relay says so.
    let l = wait_for_log(
        &log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    assert!(l.contains(" Running") && l.contains(" Valid"), "{l}");
    let l = wait_for_log(
        &exit_log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    assert!(l.contains("Exit") && l.contains(" Running"), "{l}");

    // A C tor client's traffic through the Fors middle and the Fors exit to a loopback HTTP
    // server, SHA-256 checked both ways by the script.
    let run = |args: &[&str]| {
        let st = Command::new("python3")
            .arg(script())
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "testnet.py {args:?} failed");
    };
    run(&["wait", "--pluggable-only", "--timeout", "180"]);
    run(&[
        "traffic",
        "--middle",
        "forsmiddle1",
        "--exit",
        "forsexit1",
        "--down-mb",
        "4",
        "--up-mb",
        "4",
        "--io-timeout",
        "120",
    ]);
    for l in [&log, &exit_log] {
        let text = std::fs::read_to_string(l).unwrap();
        assert!(!text.contains("[err]"), "{text}");
        assert!(!text.contains("does not serve our descriptor"), "{text}");
    }
}
