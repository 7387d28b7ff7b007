//! Happy-family keys (proposal 321) interoperate with Debian's C tor 0.4.9 both ways:
//!
//! - a key made by `tor --keygen-family` loads in Fors with the FamilyId tor printed, and
//!   Fors's family-cert made with it verifies;
//! - a key made by `fors --keygen-family` (same files, same output format) is accepted by a C
//!   tor relay started with that FamilyId (it gets past key initialisation), while a FamilyId
//!   without a key stops C tor with the error Fors also gives.
//!
//! C tor runs with `DisableNetwork 1`: it opens no sockets. If tor is not installed the tests
//! follow `tests/skip_common`'s rule: fail under `CI=true`, else print `SKIPPED:`.

mod skip_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fors::config::FamilyId;
use fors::crypto::ids::Ed25519Identity;
use fors::keys::family::{load_family_keys, mint_family_cert, read_family_key, verify_family_cert};

const TOR: &str = "/usr/sbin/tor";
const FORS: &str = env!("CARGO_BIN_EXE_fors");

fn tor_available(test: &str) -> bool {
    if Path::new(TOR).exists() {
        return true;
    }
    skip_common::skip(
        test,
        &format!("{TOR} is not installed (apt-get install tor)"),
    );
    false
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fors-family-ctor-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `FamilyId <id>` line of a keygen's stdout.
fn family_id_line(stdout: &str) -> Ed25519Identity {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FamilyId "))
        .unwrap_or_else(|| panic!("no FamilyId line in {stdout:?}"));
    Ed25519Identity::from_base64(line.trim()).unwrap()
}

#[test]
fn ctor_made_family_key_loads_in_fors() {
    if !tor_available("ctor_made_family_key_loads_in_fors") {
        return;
    }
    let d = temp_dir();
    std::fs::write(d.join("empty.torrc"), "").unwrap();
    let out = Command::new(TOR)
        .current_dir(&d)
        .args(["--keygen-family", "cfam", "-f", "empty.torrc", "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tor: {stdout} {:?}", out.stderr);
    assert!(
        stdout.starts_with("# Generated cfam.secret_family_key\n"),
        "{stdout}"
    );
    let id = family_id_line(&stdout);
    assert_eq!(
        std::fs::read_to_string(d.join("cfam.public_family_id")).unwrap(),
        format!("{}\n", id.to_base64())
    );
    let key = read_family_key(&d.join("cfam.secret_family_key")).unwrap();
    assert_eq!(key.id(), id);
    let used = load_family_keys(&d, &[FamilyId::Key(id)]).unwrap();
    assert_eq!(used.len(), 1);
    // A cert made with C tor's key verifies as signed by the family ID tor printed.
    let relay = Ed25519Identity([9; 32]);
    let now = SystemTime::now();
    let cert = mint_family_cert(&used[0].key, &relay, now);
    assert_eq!(verify_family_cert(&cert, &relay, Some(now)).unwrap(), id);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Runs C tor as a relay with `DisableNetwork 1` and `FamilyId id`; returns whether it got past
/// key initialisation (it logs the ed25519 fingerprint only then) and its output so far.
fn ctor_accepts_family_id(d: &Path, keydir: &Path, id: &str) -> (bool, String) {
    let data = d.join("tordata");
    std::fs::create_dir_all(&data).unwrap();
    let mut child = Command::new(TOR)
        .args(["-f", d.join("empty.torrc").to_str().unwrap()])
        .args(["--DataDirectory", data.to_str().unwrap()])
        .args(["--ORPort", "127.0.0.1:9999", "--SocksPort", "0"])
        .args(["--DisableNetwork", "1", "--PublishServerDescriptor", "0"])
        .args(["--FamilyKeyDirectory", keydir.to_str().unwrap()])
        .args(["--FamilyId", id])
        .args(["--Log", "notice stdout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    let mut ok = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("identity key ed25519 fingerprint") {
                    ok = true;
                    break;
                }
                if line.contains("[err]") && line.contains("exiting") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (ok, log)
}

#[test]
fn fors_made_family_key_is_accepted_by_ctor() {
    if !tor_available("fors_made_family_key_is_accepted_by_ctor") {
        return;
    }
    let d = temp_dir();
    std::fs::write(d.join("empty.torrc"), "").unwrap();
    let keydir = d.join("famkeys");
    std::fs::create_dir_all(&keydir).unwrap();
    let out = Command::new(FORS)
        .current_dir(&keydir)
        .args(["--keygen-family", "ffam"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fors: {stdout} {:?}", out.stderr);
    let id = family_id_line(&stdout);
    // Exactly C tor's output.
    assert_eq!(
        stdout,
        format!(
            "# Generated ffam.secret_family_key\nFamilyId {}\n",
            id.to_base64()
        )
    );
    assert_eq!(
        std::fs::read_to_string(keydir.join("ffam.public_family_id")).unwrap(),
        format!("{}\n", id.to_base64())
    );

    let (ok, log) = ctor_accepts_family_id(&d, &keydir, &id.to_base64());
    assert!(ok, "C tor did not accept the Fors-made family key:\n{log}");
    assert!(
        !log.contains("was not an ed25519 secret key") && !log.contains("was not a family ID key"),
        "{log}"
    );

    // Control: an ID whose key is absent stops C tor, with the words Fors uses too.
    let other = Ed25519Identity([5; 32]).to_base64();
    let (ok, log) = ctor_accepts_family_id(&d, &keydir, &other);
    assert!(!ok, "C tor started without the family key:\n{log}");
    assert!(
        log.contains(&format!("No key was found for listed FamilyID {other}")),
        "{log}"
    );
    let fors_err = load_family_keys(&keydir, &[FamilyId::Key(Ed25519Identity([5; 32]))])
        .unwrap_err()
        .to_string();
    assert!(
        fors_err.contains(&format!("No key was found for listed FamilyID {other}")),
        "{fors_err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
