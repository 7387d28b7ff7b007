//! `GETINFO dir/…` of a real `fors` process (a directory cache by default, as C tor), asked
//! by stem (python3-stem): our own descriptor by `dir/server/authority` and by our
//! fingerprint, C tor's 551 answers when the cache holds nothing (the authorities are unused
//! 127.0.0.1 ports, so no consensus arrives), the empty `dir/status/…`, and 552 for an
//! unknown `dir/` key. Skipped (with the reason printed) when python3-stem is not installed;
//! fails then when `CI=true`.

mod daemon_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{free_port, Fors, TempDir};
use fors_testkit::torrc::Torrc;

const START: Duration = Duration::from_secs(60);

/// A Python 3 that can import stem: Debian's first (a pyenv `python3` may lack it).
fn python_with_stem() -> Option<String> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import stem"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

const SCRIPT: &str = r#"
import json, sys, time
import stem
from stem.control import Controller

port, fp = int(sys.argv[1]), sys.argv[2]
out = {}
c = Controller.from_port(port=port)
c.authenticate()
# Our descriptor is built shortly after start; ask until it is there (bounded).
end = time.time() + 60
while time.time() < end:
    try:
        out['authority'] = c.get_info('dir/server/authority')
        break
    except stem.OperationFailed as e:
        out['authority_error'] = '%s %s' % (e.code, e.message)
        time.sleep(1)
def ask(k):
    try:
        return 'OK ' + c.get_info(k)
    except stem.InvalidArguments as e:
        return '%s %s' % (e.code, e.message)
    except stem.OperationFailed as e:
        return '%s %s' % (e.code, e.message)
out['fp'] = ask('dir/server/fp/' + fp)
out['consensus'] = ask('dir/status-vote/current/consensus-microdesc')
out['digest'] = ask('dir/server/d/' + '00' * 20)
out['bogus'] = ask('dir/server/bogus')
out['status'] = ask('dir/status/all')
out['unknown'] = ask('dir/nonsense')
print('RESULT ' + json.dumps(out), flush=True)
"#;

#[test]
fn stem_reads_the_directory_cache() {
    let Some(python) = python_with_stem() else {
        daemon_common::skip_common::skip(
            "stem_reads_the_directory_cache",
            "python3-stem is not installed (apt-get install python3-stem; \
             scripts/setup-debian.sh installs it)",
        );
        return;
    };
    let tmp = TempDir::new("dircache-getinfo");
    let (or_port, control_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let torrc = Torrc::test_relay("ForsDirInfo", tmp.path())
        .or_port(or_port)
        .num_cpus(1)
        .set("ShutdownWaitLength", 0)
        .fake_authorities(1)
        // Fors builds its descriptor only to publish it (C tor builds it either way): the
        // upload to the unused authority port fails, the descriptor is still ours.
        .publish_server_descriptor(true)
        .set("AssumeReachable", 1)
        .control_port(control_port)
        .render();
    assert!(!torrc.contains("DirCache"), "the default is under test");
    std::fs::write(&rc, torrc).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("ControlPort listening on", START);
    f.wait_for("the relay is running", START);
    let fp_file = std::fs::read_to_string(tmp.path().join("data/fingerprint")).unwrap();
    let fp = fp_file.split_whitespace().nth(1).unwrap().to_string();

    let script = tmp.path().join("dirinfo.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut py = Command::new(&python)
        .arg("-u")
        .arg(&script)
        .arg(control_port.to_string())
        .arg(&fp)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut result = None;
    let end = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(py.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        eprintln!("stem| {line}");
        if let Some(json) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
            break;
        }
        if Instant::now() > end {
            break;
        }
    }
    let _ = py.kill();
    let _ = py.wait();
    let r = result.expect("stem gave no result");
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    assert!(
        s("authority").starts_with("router ForsDirInfo "),
        "dir/server/authority: {r}"
    );
    assert!(s("authority").contains("\nrouter-signature\n"), "{r}");
    assert_eq!(s("fp"), format!("OK {}", s("authority")), "{r}");
    assert_eq!(
        s("consensus"),
        "551 Could not open cached consensus. Make sure FetchUselessDescriptors is set to 1.",
        "{r}"
    );
    assert_eq!(s("digest"), "551 Servers unavailable", "{r}");
    assert_eq!(s("bogus"), "551 Key not recognized", "{r}");
    assert_eq!(s("status"), "OK ", "{r}");
    assert!(s("unknown").starts_with("552 "), "{r}");
}
