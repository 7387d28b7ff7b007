//! The ControlPort of a real `fors` process, driven by stem (Debian's python3-stem, the
//! library nyx is built on): cookie, SAFECOOKIE and password authentication, GETINFO,
//! GETCONF, BW, NOTICE and ORCONN events while Tor channels open and close, GETINFO
//! orconn-status / circuit-status / stream-status, SIGNAL RELOAD, and
//! SIGNAL SHUTDOWN ending the process. Loopback only; authorities are unused 127.0.0.1
//! ports. Skipped (with the reason printed) when python3-stem is not installed.

mod daemon_common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{free_port, open_channel_and_create, Fors, TempDir};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors_testkit::torrc::Torrc;

const START: Duration = Duration::from_secs(60);
const PASSWORD: &str = "fors-test-password";
/// `tor --hash-password fors-test-password` (Debian's tor 0.4.9.11).
const HASHED: &str = "16:208DBEED17D8CED360996C11C3BB158CB5326796842DDBE220BA14CC1C";

/// A Python 3 that can import stem: Debian's first (a pyenv `python3` may lack it).
fn python_with_stem() -> Option<String> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import stem"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py.to_string());
        }
    }
    None
}

const SCRIPT: &str = r#"
import json, sys, time
import stem, stem.connection
from stem import Signal
from stem.control import Controller, EventType, Listener

port, cookie, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}

c = Controller.from_port(port=port)
stem.connection.authenticate_cookie(c, cookie)
out['cookie_version'] = str(c.get_version())
c.close()

c = Controller.from_port(port=port)
stem.connection.authenticate_safecookie(c, cookie)
out['safecookie_fingerprint'] = c.get_info('fingerprint')
c.close()

c = Controller.from_port(port=port)
try:
    stem.connection.authenticate_password(c, 'not-the-password')
    out['wrong_password'] = 'accepted'
except stem.connection.AuthenticationFailure as e:
    out['wrong_password'] = 'refused'
c.close()

c = Controller.from_port(port=port)
pi = stem.connection.get_protocolinfo(c)
out['protocolinfo_methods'] = sorted(str(m) for m in pi.auth_methods)
out['protocolinfo_cookie'] = pi.cookie_path
c.close()

c = Controller.from_port(port=port)
# The generic path (PROTOCOLINFO, then the best method: the password here).
c.authenticate(password=pw)
out['version'] = str(c.get_version())
out['fingerprint'] = c.get_info('fingerprint')
out['pid'] = c.get_info('process/pid')
out['uptime'] = c.get_info('uptime')
out['conf'] = {k: c.get_conf(k) for k in
               ['Nickname', 'ORPort', 'ContactInfo', 'CookieAuthentication', 'BandwidthRate',
                'NumCPUs', 'ShutdownWaitLength']}
out['exit_policy_conf'] = c.get_conf('ExitPolicy', multiple=True)
out['pidfile_default'] = c.get_conf('PidFile', 'unset')
try:
    c.get_conf('HiddenServiceDir')
    out['unknown_conf'] = 'answered'
except stem.InvalidArguments:
    out['unknown_conf'] = 'refused'
out['exit_policy'] = str(c.get_exit_policy())
out['control_listeners'] = [list(x) for x in c.get_listeners(Listener.CONTROL)]
out['user'] = c.get_user()

bw, notices, orconn, malformed = [], [], [], []
# A non-relay peer's ORCONN target is `[scrubbed]` under SafeLogging (no `address:port`):
# stem 1.8 logs such an event as malformed instead of parsing it. Keep those lines.
import logging, stem.util.log
class Malformed(logging.Handler):
    def emit(self, r):
        m = r.getMessage()
        if 'malformed event' in m:
            malformed.append(m)
stem.util.log.get_logger().addHandler(Malformed(level=logging.ERROR))
c.add_event_listener(lambda e: bw.append([e.read, e.written]), EventType.BW)
c.add_event_listener(lambda e: notices.append(e.message), EventType.NOTICE)
# stem parses each event (it raises on a malformed target, status or reason).
c.add_event_listener(lambda e: orconn.append({
    'raw': str(e), 'status': str(e.status), 'endpoint': e.endpoint,
    'fingerprint': e.endpoint_fingerprint, 'address': e.endpoint_address,
    'port': e.endpoint_port, 'reason': e.reason and str(e.reason), 'id': e.id}),
    EventType.ORCONN)
print('READY', flush=True)
sys.stdin.readline()
time.sleep(2)
out['orconn_status'] = c.get_info('orconn-status')
out['circuit_status'] = c.get_info('circuit-status')
out['stream_status'] = c.get_info('stream-status')
out['circuits'] = len(c.get_circuits())
out['streams'] = len(c.get_streams())
print('STATUS', flush=True)
sys.stdin.readline()
time.sleep(1)
c.signal(Signal.RELOAD)
time.sleep(3)
out['bw'] = list(bw)
out['notices'] = list(notices)
out['orconn'] = list(orconn)
out['malformed'] = list(malformed)
print('RESULT ' + json.dumps(out), flush=True)
c.signal(Signal.SHUTDOWN)
time.sleep(1)
"#;

fn torrc(dir: &Path, or_port: u16, control_port: u16) -> String {
    Torrc::test_relay("ForsStem", dir)
        .or_port(or_port)
        .num_cpus(1)
        .set("ShutdownWaitLength", 0)
        .exit_policy("accept 127.0.0.1:80, reject *:*")
        .fake_authorities(1)
        .control_port(control_port)
        .cookie_authentication(true)
        .set("HashedControlPassword", HASHED)
        .render()
}

#[test]
fn stem_drives_the_control_port() {
    let Some(python) = python_with_stem() else {
        daemon_common::skip_common::skip(
            "stem_drives_the_control_port",
            "python3-stem is not installed (apt-get install python3-stem; \
             scripts/setup-debian.sh installs it)",
        );
        return;
    };
    let tmp = TempDir::new("controlport-stem");
    let (or_port, control_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    std::fs::write(&rc, torrc(tmp.path(), or_port, control_port)).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("ControlPort listening on", START);
    f.wait_for("the relay is running", START);

    let data = tmp.path().join("data");
    let cookie = data.join("control_auth_cookie");
    assert_eq!(std::fs::read(&cookie).unwrap().len(), 32);
    let fp_file = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let fp_hex = fp_file.split_whitespace().nth(1).unwrap().to_string();
    let rsa = RsaIdentity::from_hex(&fp_hex).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();

    let script = tmp.path().join("stem_check.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut py = Command::new(&python)
        .arg("-u")
        .arg(&script)
        .arg(control_port.to_string())
        .arg(&cookie)
        .arg(PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    let mut stdin = py.stdin.take().unwrap();
    let mut result = None;
    let client = tmp.path().join("client");
    let mut held: Option<TcpStream> = None;
    let mut held_port = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let Some(Ok(line)) = lines.next() else { break };
        eprintln!("stem| {line}");
        if line == "READY" {
            // Traffic: link handshakes (TLS, certificates) and a circuit, a few times over.
            let or_addr: SocketAddr = format!("127.0.0.1:{or_port}").parse().unwrap();
            for _ in 0..3 {
                let (cmd, _) = open_channel_and_create(or_addr, rsa, ed, &client);
                assert_eq!(cmd, fors::cell::ChanCmd::CREATED_FAST);
                std::thread::sleep(Duration::from_millis(700));
            }
            // A connection that never completes its handshake, held open while stem asks
            // for `orconn-status`: a NEW entry whose address must be scrubbed.
            held = Some(TcpStream::connect(or_addr).unwrap());
            held_port = held.as_ref().unwrap().local_addr().unwrap().port();
            std::thread::sleep(Duration::from_millis(300));
            writeln!(stdin, "go").unwrap();
        } else if line == "STATUS" {
            drop(held.take());
            writeln!(stdin, "go").unwrap();
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
            break;
        }
    }
    let r = result.unwrap_or_else(|| {
        let _ = py.kill();
        panic!(
            "stem script gave no result; fors log:\n{}",
            f.log.join("\n")
        )
    });

    // Versions parse as tor versions (stem would have raised otherwise).
    assert!(
        r["version"].as_str().unwrap().starts_with("0.4.9.0-fors"),
        "{r}"
    );
    assert_eq!(r["cookie_version"], r["version"]);
    assert_eq!(r["fingerprint"].as_str().unwrap(), fp_hex);
    assert_eq!(r["safecookie_fingerprint"].as_str().unwrap(), fp_hex);
    assert_eq!(r["wrong_password"], "refused");
    let methods: Vec<&str> = r["protocolinfo_methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(methods, ["Cookie", "Password", "Safecookie"], "{r}");
    assert_eq!(
        r["protocolinfo_cookie"].as_str().unwrap(),
        cookie.to_str().unwrap()
    );
    assert_eq!(r["pid"].as_str().unwrap(), f.pid().to_string());
    let conf = &r["conf"];
    assert_eq!(conf["Nickname"], "ForsStem");
    assert_eq!(conf["ORPort"], format!("127.0.0.1:{or_port}"));
    assert_eq!(conf["ContactInfo"], "test@example.invalid");
    assert_eq!(conf["CookieAuthentication"], "1");
    assert_eq!(conf["BandwidthRate"], "1073741824");
    assert_eq!(conf["NumCPUs"], "1");
    assert_eq!(conf["ShutdownWaitLength"], "0");
    assert_eq!(
        r["exit_policy_conf"],
        serde_json::json!(["accept 127.0.0.1:80", "reject *:*"])
    );
    assert_eq!(r["pidfile_default"], "unset");
    assert_eq!(r["unknown_conf"], "refused");
    assert!(
        r["exit_policy"]
            .as_str()
            .unwrap()
            .starts_with("accept 127.0.0.1:80, reject 0.0.0.0/0:*"),
        "{r}"
    );
    assert_eq!(
        r["control_listeners"],
        serde_json::json!([["127.0.0.1", control_port]])
    );

    // BW events: about one a second, and the channels' bytes show up in them.
    let bw = r["bw"].as_array().unwrap();
    assert!(bw.len() >= 4, "too few BW events: {r}");
    let read: u64 = bw.iter().map(|v| v[0].as_u64().unwrap()).sum();
    let written: u64 = bw.iter().map(|v| v[1].as_u64().unwrap()).sum();
    assert!(
        read > 1000 && written > 1000,
        "BW events show no traffic: {bw:?}"
    );
    // RELOAD reached the main thread (its notice came back as a NOTICE event).
    let notices = r["notices"].as_array().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.as_str().unwrap().contains("Received reload signal")),
        "{notices:?}"
    );

    // ORCONN (control-spec §4.1.3) as C tor sends them for accepted connections: NEW, then,
    // for each channel that proved the test's relay identity, CONNECTED and CLOSED
    // REASON=DONE named `$fingerprint`, with one ID per connection. A NEW names a peer not
    // yet known as a relay: under SafeLogging 1 its whole target is `[scrubbed]`, the port
    // too, which stem 1.8 reports as a malformed event (it wants `address:port`). No event
    // carries the client's address or port.
    let client_rsa = fors::keys::RelayKeys::load_or_create(
        &client,
        std::time::SystemTime::now(),
        fors::keys::KeyParams::default(),
    )
    .unwrap()
    .rsa_identity()
    .to_hex();
    let ev = r["orconn"].as_array().unwrap();
    let malformed: Vec<&str> = r["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for e in ev {
        assert!(!e["raw"].as_str().unwrap().contains("127.0.0.1"), "{e}");
    }
    for m in &malformed {
        assert!(!m.contains("127.0.0.1"), "{m}");
        assert!(
            !m.contains(&format!(":{held_port}")),
            "the client's port: {m}"
        );
    }
    let with = |status: &str| -> Vec<&serde_json::Value> {
        ev.iter().filter(|e| e["status"] == status).collect()
    };
    let (connected, closed) = (with("CONNECTED"), with("CLOSED"));
    // `ORCONN [scrubbed] NEW ID=n` (stem's message quotes the event without its `650 `).
    let new_ids: Vec<u64> = malformed
        .iter()
        .filter_map(|m| {
            let rest = m.split("ORCONN [scrubbed] NEW ID=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        new_ids.len() >= 4,
        "ORCONN NEW missing: {malformed:?} {ev:?}"
    );
    assert!(
        with("NEW").is_empty(),
        "a NEW stem could parse names an address: {ev:?}"
    );
    let ours = |v: &[&serde_json::Value]| -> Vec<u64> {
        v.iter()
            .filter(|e| e["fingerprint"].as_str() == Some(client_rsa.as_str()))
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (opened, gone) = (ours(&connected), ours(&closed));
    assert_eq!(opened.len(), 3, "CONNECTED per channel: {ev:?}");
    assert_eq!(
        opened, gone,
        "each channel's CLOSED has its CONNECTED's ID: {ev:?}"
    );
    for e in closed
        .iter()
        .filter(|e| e["fingerprint"] == client_rsa.as_str())
    {
        // DONE after a clean close; CONNECTRESET if our side's close became a reset.
        assert!(
            e["reason"] == "DONE" || e["reason"] == "CONNECTRESET",
            "{e}"
        );
    }
    for id in &opened {
        assert!(new_ids.contains(id), "NEW with ID {id}: {malformed:?}");
    }
    // `GETINFO orconn-status`: the held connection, scrubbed whole, in C tor's
    // `target STATE`.
    let status = r["orconn_status"].as_str().unwrap();
    assert!(
        status.lines().any(|l| l == "[scrubbed] NEW"),
        "orconn-status: {status:?}"
    );
    assert!(!status.contains("127.0.0.1"), "{status:?}");
    assert!(!status.contains(&format!(":{held_port}")), "{status:?}");
    // A relay has no origin circuits or streams (C tor answers the same).
    assert_eq!(r["circuit_status"], "");
    assert_eq!(r["stream_status"], "");
    assert_eq!(r["circuits"], 0);
    assert_eq!(r["streams"], 0);

    // SHUTDOWN (ShutdownWaitLength 0): the relay exits cleanly.
    assert_eq!(f.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(f.log.iter().any(|l| l.contains("Fors exited cleanly")));
    let _ = py.wait();
    // The port is closed.
    assert!(TcpStream::connect(("127.0.0.1", control_port)).is_err());
}
