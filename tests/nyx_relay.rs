//! Debian's real `nyx` against a live Fors relay, headless inside `tmux`: its screens show
//! the relay's nickname and fingerprint, a bandwidth graph that moves while a Tor channel
//! carries traffic, the event log (a reload's NOTICE reaches it), the connections page
//! with an inbound OR connection, and the configuration page with the relay's own options. stem's debug log of nyx's session is read back: the
//! controller calls nyx needs answer without error.
//!
//! The relay is alone on loopback (its authorities are unused 127.0.0.1 ports), with a
//! ControlPort and cookie authentication. Needs `nyx`, `tmux` and `python3-stem`
//! (`scripts/setup-debian.sh`): without them the test fails under `CI=true` and prints
//! `SKIPPED:` otherwise. Every wait is bounded; the whole test takes well under 90 s.

mod daemon_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::skip_common::{have, skip};
use daemon_common::{free_port, open_channel_and_create, Fors, TempDir};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors_testkit::torrc::Torrc;

const TEST: &str = "nyx_shows_a_live_relay";
const NICK: &str = "ForsNyx";
const START: Duration = Duration::from_secs(60);
/// The whole test's bound (the issue asks for < 90 s).
const BUDGET: Duration = Duration::from_secs(85);

fn torrc(dir: &Path, or_port: u16, control_port: u16) -> String {
    Torrc::test_relay(NICK, dir)
        .or_port(or_port)
        .num_cpus(1)
        .set("ShutdownWaitLength", 0)
        .exit_policy("reject *:*")
        .fake_authorities(1)
        .control_port(control_port)
        .cookie_authentication(true)
        .render()
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// Starts `shell_cmd` in a detached 200x50 session named `nyx`.
    fn start(socket: PathBuf, home: &Path, shell_cmd: &str) -> Tmux {
        let t = Tmux { socket };
        let ok = t
            .cmd()
            .env("HOME", home)
            .env("TERM", "xterm-256color")
            .args(["new-session", "-d", "-s", "nyx", "-x", "200", "-y", "50"])
            .arg(shell_cmd)
            .status()
            .expect("tmux runs");
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    /// The visible screen as text.
    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "nyx"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let _ = self
            .cmd()
            .args(["send-keys", "-t", "nyx"])
            .args(keys)
            .status();
    }

    /// Waits (bounded) for a screen for which `ok` holds; returns the last screen seen.
    fn wait_screen(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> (bool, String) {
        let end = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return (true, s);
            }
            if Instant::now() >= end {
                return (false, s);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs Debian's nyx. `--debug` (stem's log of every request and reply) calls
/// `platform.dist()`, which Python 3.8 removed: give it back before nyx starts.
const NYX_LAUNCHER: &str = r#"
import platform, sys
if not hasattr(platform, 'dist'):
    platform.dist = lambda: ('', '', '')
import nyx
sys.argv[0] = 'nyx'
sys.exit(nyx.main())
"#;

/// Controller requests nyx makes for the pages checked here; each must be answered.
const NYX_NEEDS: &[&str] = &[
    "GETINFO version",
    "GETINFO fingerprint",
    "GETINFO process/pid",
    "GETINFO config-file",
    "GETINFO exit-policy/full",
    "GETINFO bw-event-cache",
    "GETINFO circuit-status",
    "GETINFO process/user",
    "GETCONF Nickname",
    "GETCONF ORPort",
    "SETEVENTS",
];

/// Requests nyx makes that Fors does not answer yet (nyx copes: it shows "none",
/// "??" or leaves the field out). Lower-case prefixes.
const KNOWN_UNANSWERED: &[&str] = &[
    "getconf hiddenserviceoptions",
    "getconf __owningcontrollerprocess",
    "getconf maxadvertisedbandwidth",
    "getinfo desc/id/",
    "getinfo features/names",
    "getinfo ip-to-country/",
    "getinfo net/listeners/dir",
    "getinfo ns/all",
    "getinfo ns/id/",
    "getinfo signal/names",
    "getinfo status/clients-seen",
];

/// `(requests asked, requests refused)` from stem's debug log: one line per GETINFO or
/// GETCONF (`… (runtime: …)` or `… (failed: …)`), and the raw `Sent to tor:` lines for the
/// other commands.
fn stem_requests(log: &str) -> (Vec<String>, Vec<String>) {
    let mut asked = std::collections::BTreeSet::new();
    let mut failed = std::collections::BTreeSet::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((_, msg)) = line
            .split_once("[DEBUG] ")
            .or_else(|| line.split_once("[TRACE] "))
        else {
            continue;
        };
        if msg.starts_with("GETINFO ") || msg.starts_with("GETCONF ") {
            let req = msg.split(" (").next().unwrap_or(msg).to_string();
            if msg.contains("(failed:") {
                failed.insert(msg.to_string());
            }
            asked.insert(req);
        } else if let Some(rest) = msg.strip_prefix("Sent to tor:") {
            // The command follows on the same line (newlines escaped), or on the next.
            let cmd = match rest.trim() {
                "" => lines.peek().map_or("", |l| l.trim()),
                r => r,
            };
            let cmd = cmd.split("\\r\\n").next().unwrap_or(cmd);
            if !cmd.is_empty() && !cmd.starts_with("AUTHENTICATE") {
                asked.insert(cmd.to_string());
            }
        }
    }
    (asked.into_iter().collect(), failed.into_iter().collect())
}

/// The download and upload totals of nyx's bandwidth graph (`… total: 12.3 KB):`), bytes.
fn graph_totals(screen: &str) -> Option<(f64, f64)> {
    let line = screen.lines().find(|l| l.starts_with("Download ("))?;
    let mut totals = line.split("total: ").skip(1).map(|t| {
        let t = t.split(')').next().unwrap_or("");
        let mut w = t.split_whitespace();
        let n: f64 = w.next()?.parse().ok()?;
        let unit = match w.next()? {
            "B" => 1.0,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => return None,
        };
        Some(n * unit)
    });
    Some((totals.next()??, totals.next()??))
}

fn stem_installed() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import stem"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn nyx_shows_a_live_relay() {
    let t0 = Instant::now();
    for (tool, arg, missing) in [
        (
            "nyx",
            "--version",
            "nyx is not installed (apt-get install nyx)",
        ),
        ("tmux", "-V", "tmux is not installed (apt-get install tmux)"),
    ] {
        if !have(tool, arg) {
            skip(TEST, missing);
            return;
        }
    }
    if !stem_installed() {
        skip(
            TEST,
            "python3-stem is not installed (apt-get install python3-stem)",
        );
        return;
    }
    let tmp = TempDir::new("nyx-relay");
    let (or_port, control_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    std::fs::write(&rc, torrc(tmp.path(), or_port, control_port)).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("ControlPort listening on", START);
    f.wait_for("the relay is running", START);
    let data = tmp.path().join("data");
    let fp_file = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let fp_hex = fp_file.split_whitespace().nth(1).unwrap().to_string();
    let rsa = RsaIdentity::from_hex(&fp_hex).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();

    // nyx with its own HOME (its config and cache stay in the temp dir) and stem's debug
    // log of every controller request and reply.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let debug_log = tmp.path().join("nyx-debug.log");
    let launcher = tmp.path().join("nyx-launch.py");
    std::fs::write(&launcher, NYX_LAUNCHER).unwrap();
    let nyx = Tmux::start(
        tmp.path().join("tmux.sock"),
        &home,
        &format!(
            "/usr/bin/python3 {} -i 127.0.0.1:{control_port} --debug {} 2>{}; sleep 30",
            launcher.display(),
            debug_log.display(),
            tmp.path().join("nyx-stderr").display()
        ),
    );
    let (ok, screen) = nyx.wait_screen(Duration::from_secs(20), |s| {
        s.contains(NICK) && s.contains(&fp_hex)
    });
    eprintln!("--- nyx, first page ---\n{screen}");
    assert!(
        ok,
        "nyx never showed the nickname and fingerprint; stderr: {}",
        std::fs::read_to_string(tmp.path().join("nyx-stderr")).unwrap_or_default()
    );
    // The header: nickname, ORPort, cookie-authenticated ControlPort, fingerprint, policy.
    for needle in [
        format!("{NICK} - 127.0.0.1:{or_port}, Control Port (cookie): {control_port}"),
        format!("fingerprint: {fp_hex}"),
        "exit policy: reject *:*".to_string(),
        "Tor 0.4.9.0-fors".to_string(),
    ] {
        assert!(
            screen.contains(&needle),
            "header lacks {needle:?}:\n{screen}"
        );
    }

    // Page 1, the bandwidth graph: BW events drive it. Traffic through a Tor channel (link
    // handshake and a CREATE_FAST), a few times over, must show up in its totals.
    let idle_totals = graph_totals(&screen);
    let or_addr: SocketAddr = format!("127.0.0.1:{or_port}").parse().unwrap();
    let client = tmp.path().join("client");
    for _ in 0..3 {
        let (cmd, _) = open_channel_and_create(or_addr, rsa, ed, &client);
        assert_eq!(cmd, fors::cell::ChanCmd::CREATED_FAST);
        std::thread::sleep(Duration::from_millis(500));
    }
    let (moved, screen) = nyx.wait_screen(Duration::from_secs(10), |s| {
        graph_totals(s).is_some_and(|(down, up)| down > 1000.0 && up > 1000.0)
    });
    eprintln!("--- nyx, graph after traffic ---\n{screen}");
    assert!(
        moved,
        "the bandwidth graph did not move (before traffic: {idle_totals:?}, after: {:?})",
        graph_totals(&screen)
    );

    // The event log on the same page: a reload's NOTICE comes through as a Tor event.
    let pid = f.pid();
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let (ok, screen) = nyx.wait_screen(Duration::from_secs(10), |s| {
        s.lines()
            .any(|l| l.contains("[NOTICE]") && l.contains("Received reload signal"))
    });
    assert!(
        ok,
        "the reload NOTICE never reached nyx's event log:\n{screen}"
    );
    assert!(screen.contains("Events (TOR/NYX NOTICE-ERR)"), "{screen}");

    // Page 2, the connections: nyx lists the relay's sockets from /proc (as the user
    // `GETINFO process/user` names, sorted by `net/listeners/*`) and asks for the relay's
    // own circuits (`circuit-status`, empty for a relay). A connection held open to the
    // ORPort shows as INBOUND, nyx's own as CONTROL.
    let held = std::net::TcpStream::connect(or_addr).unwrap();
    let held_port = held.local_addr().unwrap().port();
    nyx.keys(&["Right"]);
    let (ok, screen) = nyx.wait_screen(Duration::from_secs(15), |s| {
        s.contains("page 2 / ")
            && s.lines().any(|l| {
                l.trim_end().ends_with("(INBOUND)")
                    && l.contains(&format!(":{held_port} "))
                    && l.contains(&format!("127.0.0.1:{or_port} "))
            })
            && s.lines().any(|l| l.trim_end().ends_with("(CONTROL)"))
    });
    eprintln!("--- nyx, connections page (held client port {held_port}) ---\n{screen}");
    assert!(
        ok,
        "the connections page lacks the inbound OR connection:\n{screen}"
    );
    drop(held);

    // Page 3, the configuration: the relay's options with their values, as GETCONF gives.
    nyx.keys(&["Right"]);
    let (ok, screen) = nyx.wait_screen(Duration::from_secs(10), |s| {
        s.contains("page 3 / ") && s.contains("Tor Configuration")
    });
    eprintln!("--- nyx, configuration page ---\n{screen}");
    assert!(ok, "no configuration page:\n{screen}");
    for (option, value) in [
        ("Nickname", NICK.to_string()),
        ("ORPort", format!("127.0.0.1:{or_port}")),
        ("ControlPort", format!("127.0.0.1:{control_port}")),
        ("CookieAuthentication", "True".to_string()),
        ("ExitPolicy", "reject *:*".to_string()),
        ("ContactInfo", "test@example.invalid".to_string()),
    ] {
        assert!(
            screen.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some(option) && l.contains(&value)
            }),
            "configuration page lacks {option} = {value}:\n{screen}"
        );
    }
    // Page 4, the torrc as Fors read it.
    nyx.keys(&["Right"]);
    let (ok, screen) = nyx.wait_screen(Duration::from_secs(10), |s| {
        s.contains("Tor Configuration File") && s.contains(&format!("Nickname {NICK}"))
    });
    assert!(ok, "no torrc page:\n{screen}");
    // nyx is still running (no traceback on its stderr).
    let stderr = std::fs::read_to_string(tmp.path().join("nyx-stderr")).unwrap_or_default();
    assert!(!stderr.contains("Traceback"), "nyx crashed: {stderr}");

    // stem's own calls: what nyx asked, and which requests Fors refused.
    nyx.keys(&["q"]);
    let (asked, failed) = stem_requests(&std::fs::read_to_string(&debug_log).unwrap_or_default());
    eprintln!("nyx asked {} distinct controller requests", asked.len());
    for r in &failed {
        eprintln!("refused: {r}");
    }
    assert!(
        asked.len() >= 10,
        "stem debug log shows too few requests: {asked:?}"
    );
    // stem logs GETCONF keys lower-cased.
    let lc = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    let (asked_lc, failed_lc) = (lc(&asked), lc(&failed));
    for needed in NYX_NEEDS {
        let needed = needed.to_ascii_lowercase();
        assert!(
            asked_lc.iter().any(|a| a.starts_with(&needed)),
            "nyx never asked {needed:?}: {asked:?}"
        );
        assert!(
            !failed_lc.iter().any(|r| r.starts_with(&needed)),
            "Fors refused {needed:?}, which nyx needs: {failed:?}"
        );
    }
    // Anything else Fors refuses is a known gap (docs/operating.md, "ControlPort and nyx");
    // a new refusal fails here.
    for r in &failed_lc {
        assert!(
            KNOWN_UNANSWERED.iter().any(|k| r.starts_with(k)),
            "Fors refused a request nyx makes that is not a known gap: {r}"
        );
    }
    let elapsed = t0.elapsed();
    eprintln!("nyx test took {elapsed:?}");
    assert!(elapsed < BUDGET, "took {elapsed:?}");
    f.drain(Duration::from_millis(100));
}
