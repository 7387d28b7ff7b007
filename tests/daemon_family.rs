//! Happy families (proposal 321) on a live relay:
//!
//! 1. against real C tor 0.4.9 directory authorities on loopback (scripts/testnet.py, a
//!    private network; nothing leaves the machine): a Fors exit slot given two family keys,
//!    one made by `fors --keygen-family` and one by `tor --keygen-family`, and a `FamilyId`
//!    line for each, has its descriptor accepted by every authority (HTTP 200, "descriptor
//!    accepted" in Fors's log), and the descriptor each authority serves carries one valid
//!    `family-cert` per key, certifying the relay's Ed25519 identity, and the microdescriptor
//!    they vote on lists both family IDs (`family-ids`, made only from verified certs); after
//!    a SIGHUP that drops one `FamilyId`, the next descriptor carries only the other;
//! 2. a `FamilyId` whose key is not in `FamilyKeyDirectory` stops Fors at start-up with C
//!    tor's error, and so does a corrupt key file, which is left in place.
//!
//! The live part is skipped only with `FORS_SKIP_TESTNET`; the C-made key needs tor (else the
//! `tests/skip_common` rule). Every wait is bounded; the network is stopped on drop.

mod daemon_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use daemon_common::{
    free_port, free_port_range_base, http_get, testnet_script, wait_for_file_line, Fors, TempDir,
    TestnetGuard,
};
use fors::crypto::ids::Ed25519Identity;
use fors::keys::family::verify_family_cert;
use fors::keys::Ed25519Cert;
use fors_testkit::torrc::Torrc;

const TOR: &str = "/usr/sbin/tor";

/// Runs a keygen (`fors` or `tor`) in `dir`; the family ID from its `FamilyId` line.
fn keygen(program: &str, dir: &Path, name: &str, extra: &[&str]) -> Ed25519Identity {
    let out = Command::new(program)
        .current_dir(dir)
        .args(["--keygen-family", name])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{program}: {stdout} {:?}", out.stderr);
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FamilyId "))
        .unwrap_or_else(|| panic!("no FamilyId line: {stdout}"));
    Ed25519Identity::from_base64(id.trim()).unwrap()
}

/// The family IDs of the valid family-certs in a descriptor, checked against its
/// `master-key-ed25519` with Fors's own cert parser.
fn family_cert_ids(desc: &str) -> Vec<Ed25519Identity> {
    let master = desc
        .lines()
        .find_map(|l| l.strip_prefix("master-key-ed25519 "))
        .and_then(|b| Ed25519Identity::from_base64(b.trim()))
        .unwrap_or_else(|| panic!("no master-key-ed25519:\n{desc}"));
    let mut ids = Vec::new();
    let mut lines = desc.lines();
    while let Some(l) = lines.next() {
        if l != "family-cert" {
            continue;
        }
        assert_eq!(lines.next(), Some("-----BEGIN FAMILY CERT-----"), "{desc}");
        let b64: String = lines
            .by_ref()
            .take_while(|l| *l != "-----END FAMILY CERT-----")
            .collect();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let cert = Ed25519Cert::parse(&raw).unwrap();
        ids.push(verify_family_cert(&cert, &master, None).unwrap());
    }
    ids
}

#[test]
fn authorities_accept_a_descriptor_with_family_certs() {
    const TEST: &str = "authorities_accept_a_descriptor_with_family_certs";
    if std::env::var_os("FORS_SKIP_TESTNET").is_some() {
        daemon_common::skip_common::skip(TEST, "FORS_SKIP_TESTNET is set");
        return;
    }
    if !Path::new(TOR).exists() {
        daemon_common::skip_common::skip(TEST, &format!("{TOR} is not installed"));
        return;
    }
    let tmp = TempDir::new("daemon-family");
    // The slot's keys directory starts with the two family keys (--slot-keys copies them).
    let fam = tmp.path().join("famkeys");
    std::fs::create_dir_all(&fam).unwrap();
    let fors_id = keygen(env!("CARGO_BIN_EXE_fors"), &fam, "forsfam", &[]);
    std::fs::write(tmp.path().join("empty-torrc"), "").unwrap();
    let empty = tmp.path().join("empty-torrc");
    let ctor_id = keygen(TOR, &fam, "ctorfam", &["-f", empty.to_str().unwrap()]);
    assert_ne!(fors_id, ctor_id);

    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args([
            "up",
            "--fors",
            "exit",
            "--middles",
            "1",
            "--exits",
            "1",
            "--no-server",
            "--slot-keys",
        ])
        .arg(format!("forsexit1 {}", fam.display()))
        .arg("--slot-option")
        .arg(format!("forsexit1 FamilyId {}", fors_id.to_base64()))
        .arg("--slot-option")
        .arg(format!("forsexit1 FamilyId {}", ctor_id.to_base64()))
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");

    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("network.json")).unwrap()).unwrap();
    let exit = net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nick"] == "forsexit1")
        .expect("forsexit1 in network.json")
        .clone();
    let fp = exit["fingerprint"].as_str().unwrap().to_owned();
    let data_dir = PathBuf::from(exit["data_dir"].as_str().unwrap());
    let log = data_dir.join("stdout.log");
    let torrc = std::fs::read_to_string(exit["torrc"].as_str().unwrap()).unwrap();
    assert!(
        torrc.contains(&format!("FamilyId {}", fors_id.to_base64())),
        "{torrc}"
    );

    // Every authority answers 200 and then serves exactly our descriptor.
    let t = Duration::from_secs(240);
    wait_for_file_line(&log, "Our descriptor is stored by 3 of 3 authorities", t);
    let text = std::fs::read_to_string(&log).unwrap();
    for auth in ["auth0", "auth1", "auth2"] {
        let l = text
            .lines()
            .find(|l| l.contains(&format!("Authority {auth} (")))
            .unwrap_or_else(|| panic!("no answer from {auth}:\n{text}"));
        eprintln!("{l}");
        // `accepted (…)` is logged only for HTTP 200 (dir::upload::UploadOutcome), and only
        // once the authority serves exactly the text we uploaded (relay::dirworker).
        assert!(
            l.contains("): descriptor accepted (") && !l.contains("not new"),
            "{l}"
        );
    }
    for id in [fors_id, ctor_id] {
        assert!(
            text.contains(&format!(
                "Member of the family with FamilyId {}",
                id.to_base64()
            )),
            "{text}"
        );
    }
    assert!(
        daemon_common::unexpected_err_lines(&text).is_empty(),
        "{text}"
    );

    // The descriptor each authority stores carries both family-certs, valid for our identity.
    for auth in net["authorities"].as_array().unwrap() {
        let dirport: SocketAddr = format!("127.0.0.1:{}", auth["dirport"].as_u64().unwrap())
            .parse()
            .unwrap();
        let resp = http_get(dirport, &format!("/tor/server/fp/{fp}"));
        let (head, desc) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        let mut ids = family_cert_ids(desc);
        ids.sort_by_key(|i| i.0);
        let mut want = vec![fors_id, ctor_id];
        want.sort_by_key(|i| i.0);
        assert_eq!(ids, want, "{desc}");
        // Where C tor 0.4.9 writes them: before `contact`.
        let at = |kw: &str| desc.find(&format!("\n{kw}")).unwrap();
        assert!(at("family-cert\n") < at("contact "), "{desc}");
    }

    // The authorities derive the microdescriptor's `family-ids` line (consensus method 35)
    // from the family-certs they verified: both IDs, sorted, each as `ed25519:<id>`.
    wait_for_file_line(&log, "Fors is listed in the consensus", t);
    let auth0 = &net["authorities"][0];
    let dirport: SocketAddr = format!("127.0.0.1:{}", auth0["dirport"].as_u64().unwrap())
        .parse()
        .unwrap();
    let get = |path: &str| {
        let resp = http_get(dirport, path);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        assert!(head.starts_with("HTTP/1.0 200"), "GET {path}: {head}");
        body.to_owned()
    };
    let cons = get("/tor/status-vote/current/consensus-microdesc");
    let id_b64 = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(fors::util::hex::decode(&fp).unwrap());
    let mut lines = cons.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("r ") && l.split(' ').nth(2) == Some(id_b64.as_str()))
        .unwrap_or_else(|| panic!("forsexit1 not in the microdesc consensus:\n{cons}"));
    let digest = lines
        .take_while(|l| !l.starts_with("r "))
        .find_map(|l| l.strip_prefix("m "))
        .expect("m line")
        .to_owned();
    let md = get(&format!("/tor/micro/d/{digest}"));
    let mut want = [
        format!("ed25519:{}", fors_id.to_base64()),
        format!("ed25519:{}", ctor_id.to_base64()),
    ];
    want.sort();
    assert!(
        md.lines()
            .any(|l| l == format!("family-ids {} {}", want[0], want[1])),
        "{md}"
    );

    // SIGHUP after dropping one FamilyId line: the next descriptor, with freshly minted
    // certs, carries only the remaining family (C tor re-reads family keys on reload too).
    let torrc_path = PathBuf::from(exit["torrc"].as_str().unwrap());
    let dropped = format!("FamilyId {}", ctor_id.to_base64());
    let kept: String = torrc
        .lines()
        .filter(|l| l.trim() != dropped)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, torrc);
    std::fs::write(&torrc_path, kept).unwrap();
    let pid = exit["pid"].as_i64().unwrap() as i32;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(torrc_path.to_str().unwrap()),
        "pid {pid} is not our Fors exit"
    );
    // SAFETY: kill(2) on a pid just checked to be our relay.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let end = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let desc = get(&format!("/tor/server/fp/{fp}"));
        if family_cert_ids(&desc) == [fors_id] {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "authority still serves the old family-certs:\n{desc}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Uploading our descriptor (configuration reloaded)"),
        "{text}"
    );
    assert!(
        daemon_common::unexpected_err_lines(&text).is_empty(),
        "{text}"
    );
}

fn torrc(dir: &Path, extra: &str) -> PathBuf {
    Torrc::test_relay("ForsFamily", dir)
        .or_port(free_port())
        .num_cpus(1)
        .fake_authorities(1)
        .raw(extra)
        .write_to(dir)
}

#[test]
fn missing_or_corrupt_family_key_stops_start_up() {
    let tmp = TempDir::new("daemon-family-bad");
    let fam = tmp.path().join("fam");
    std::fs::create_dir_all(&fam).unwrap();
    let id = keygen(env!("CARGO_BIN_EXE_fors"), &fam, "good", &[]);

    // The listed key is not in FamilyKeyDirectory (the default, DataDirectory/keys).
    let missing = Ed25519Identity([0x42; 32]).to_base64();
    let rc = torrc(tmp.path(), &format!("FamilyId {missing}\n"));
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    assert_ne!(f.wait_exit(Duration::from_secs(60)), Some(0));
    let log = f.log.join("\n");
    assert!(
        log.contains(&format!("No key was found for listed FamilyID {missing}")),
        "{log}"
    );

    // With FamilyKeyDirectory pointing at the key, Fors starts and names the family; a key
    // there that no FamilyId names is reported (as C tor does) and not used.
    let extra = keygen(env!("CARGO_BIN_EXE_fors"), &fam, "extra", &[]);
    let rc = torrc(
        tmp.path(),
        &format!(
            "FamilyId {}\nFamilyKeyDirectory {}\n",
            id.to_base64(),
            fam.display()
        ),
    );
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for(
        &format!("Member of the family with FamilyId {}", id.to_base64()),
        Duration::from_secs(60),
    );
    f.wait_for(
        &format!("with unexpected FamilyID {}", extra.to_base64()),
        Duration::from_secs(10),
    );
    assert!(!f.log.iter().any(|l| l.contains(&format!(
        "Member of the family with FamilyId {}",
        extra.to_base64()
    ))));
    drop(f);

    // A corrupt key file stops it too, and is not replaced.
    let bad = fam.join("broken.secret_family_key");
    std::fs::write(&bad, b"== ed25519v1-secret: fmly-id ==\0 truncated").unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    assert_ne!(f.wait_exit(Duration::from_secs(60)), Some(0));
    let log = f.log.join("\n");
    assert!(log.contains("broken.secret_family_key"), "{log}");
    assert!(log.contains("is corrupt"), "{log}");
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b"== ed25519v1-secret: fmly-id ==\0 truncated"
    );
}
