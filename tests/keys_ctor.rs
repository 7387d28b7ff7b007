//! Interoperability with C tor's DataDirectory: keys made by Debian's tor load unchanged in
//! Fors (same fingerprint and Ed25519 identity), `fors --list-fingerprint` prints exactly what
//! `tor --list-fingerprint` prints, and C tor accepts keys made by Fors.
//!
//! Only the offline `--list-fingerprint` command of tor is run. If tor is not installed the
//! tests follow `tests/skip_common`'s rule: fail under `CI=true`, else print `SKIPPED:`.

mod skip_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use fors::keys::crosscert::{verify_ntor_onion_key_crosscert, verify_tap_onion_key_crosscert};
use fors::keys::keyfile;
use fors::keys::{CertType, KeyParams, RelayKeys};

const TOR: &str = "/usr/sbin/tor";
const NICK: &str = "ForsCtorTest";

/// Whether C tor is here; if not, applies the skip rule for `test` (panics under CI).
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
        "fors-ctor-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Args shared by tor and fors; the torrc is empty, so nothing but these options apply.
fn list_args(which: Option<&str>, data: &Path, torrc: &Path) -> Vec<String> {
    let mut v = vec!["--list-fingerprint".to_owned()];
    v.extend(which.map(str::to_owned));
    for s in [
        "--DataDirectory",
        data.to_str().unwrap(),
        "--ORPort",
        "9999",
        "--Nickname",
        NICK,
        "-f",
        torrc.to_str().unwrap(),
    ] {
        v.push(s.to_owned());
    }
    v
}

fn run_tor(which: Option<&str>, data: &Path, torrc: &Path) -> String {
    let out = Command::new(TOR)
        .arg("--quiet")
        .args(list_args(which, data, torrc))
        // Belt and braces: tor must never touch the network here.
        .args(["--DisableNetwork", "1"])
        .output()
        .expect("run tor");
    assert!(
        out.status.success(),
        "tor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_fors(which: Option<&str>, data: &Path, torrc: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fors"))
        .args(list_args(which, data, torrc))
        .output()
        .expect("run fors");
    assert!(
        out.status.success(),
        "fors failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn c_tor_keys_load_unchanged_and_fingerprints_match() {
    if !tor_available("c_tor_keys_load_unchanged_and_fingerprints_match") {
        return;
    }
    let base = temp_dir();
    let data = base.join("data");
    let torrc = base.join("torrc");
    std::fs::write(&torrc, "").unwrap();

    let tor_rsa = run_tor(None, &data, &torrc);
    let tor_ed = run_tor(Some("ed25519"), &data, &torrc);
    let fp_file = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let fp_ed_file = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let keys_before = snapshot(&data.join("keys"));

    // Fors loads C tor's keys without rewriting any of them.
    let now = SystemTime::now();
    let keys = RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap();
    assert_eq!(
        fp_file,
        format!("{NICK} {}\n", keys.rsa_identity().to_hex())
    );
    assert_eq!(
        fp_ed_file,
        format!("{NICK} {}\n", keys.ed25519_identity().to_base64())
    );
    assert_eq!(snapshot(&data.join("keys")), keys_before);

    // C tor's signing cert parses and verifies under its master key.
    let cert_file = std::fs::read(data.join("keys/ed25519_signing_cert")).unwrap();
    let cert = keyfile::parse_ed25519_cert(&cert_file, keyfile::SIGNING_TAG).unwrap();
    let master = keyfile::parse_ed25519_public_key(
        &std::fs::read(data.join("keys/ed25519_master_id_public_key")).unwrap(),
        keyfile::MASTER_TAG,
    )
    .unwrap();
    assert_eq!(master, keys.ed25519_identity().0);
    assert_eq!(cert.cert_type, CertType::IDENTITY_V_SIGNING);
    assert_eq!(cert.signing_key, Some(master));
    cert.verify(Some(&master), Some(now)).unwrap();
    assert_eq!(cert.certified_key, keys.signing_key().public().to_bytes());
    assert_eq!(&cert, keys.signing_cert());

    // Crosscerts made from C tor's onion keys verify.
    let sig = keys.tap_onion_key_crosscert().unwrap();
    verify_tap_onion_key_crosscert(
        &keys.tap_onion_key().to_public_key(),
        &keys.rsa_identity_public(),
        &keys.ed25519_identity(),
        &sig,
    )
    .unwrap();
    let (cc, sign) = keys.ntor_onion_key_crosscert(now);
    verify_ntor_onion_key_crosscert(
        &cc,
        sign,
        keys.ntor_key().public.as_bytes(),
        &keys.ed25519_identity(),
        Some(now),
    )
    .unwrap();
    let lc = keys.mint_link_certs(now).unwrap();
    lc.rsa_crosscert
        .verify(&keys.rsa_identity_public(), &keys.ed25519_identity(), now)
        .unwrap();

    // `fors --list-fingerprint` prints byte-for-byte what tor printed, and leaves the same files.
    assert_eq!(run_fors(None, &data, &torrc), tor_rsa);
    assert_eq!(run_fors(Some("rsa"), &data, &torrc), tor_rsa);
    assert_eq!(run_fors(Some("ed25519"), &data, &torrc), tor_ed);
    assert_eq!(
        std::fs::read_to_string(data.join("fingerprint")).unwrap(),
        fp_file
    );
    assert_eq!(
        std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap(),
        fp_ed_file
    );
    assert_eq!(snapshot(&data.join("keys")), keys_before);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn c_tor_accepts_keys_made_by_fors() {
    if !tor_available("c_tor_accepts_keys_made_by_fors") {
        return;
    }
    let base = temp_dir();
    let data = base.join("data");
    let torrc = base.join("torrc");
    std::fs::write(&torrc, "").unwrap();

    let fors_rsa = run_fors(None, &data, &torrc);
    let fors_ed = run_fors(Some("ed25519"), &data, &torrc);
    let keys_before = snapshot(&data.join("keys"));
    // tor loads them, reports the same identities, and sees no reason to replace anything
    // (it would regenerate the signing key if it rejected our cert).
    assert_eq!(run_tor(None, &data, &torrc), fors_rsa);
    assert_eq!(run_tor(Some("ed25519"), &data, &torrc), fors_ed);
    assert_eq!(snapshot(&data.join("keys")), keys_before);
    std::fs::remove_dir_all(&base).unwrap();
}
