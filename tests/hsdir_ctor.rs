//! A descriptor from a live C tor 0.4.9 onion service goes through Fors's HSDir cache:
//! a private loopback network (scripts/testnet.py; nothing leaves the machine) whose C tor
//! client runs an ephemeral v3 service (ADD_ONION); once it has uploaded its descriptor to
//! the network's C tor HSDirs, we take the same descriptor from its ControlPort
//! (`GETINFO hs/service/desc/id/<addr>`), and Fors's decoder must verify it and find the
//! blinded key C tor named in its HS_DESC event; the HTTP adapter stores it (200) and serves
//! it back byte for byte at `/tor/hs/3/<that key>`.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET` (fails
//! instead under `CI=true`). The network is stopped by the script's `down` when the test
//! ends, pass or fail.

mod daemon_common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use daemon_common::private_net::{client_ports, testnet, testnet_skip_reason, TorControl};
use daemon_common::{free_port_range_base, testnet_script, TempDir, TestnetGuard};
use fors::dir::netdoc::base64_nopad;
use fors::dircache::hsdir::outer::HS_DESC_MAX_LEN;
use fors::dircache::hsdir::{decode_outer, handle_fetch, handle_publish, HsDirCache};

#[test]
fn c_tor_onion_service_descriptor_is_stored_and_served() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(
            "c_tor_onion_service_descriptor_is_stored_and_served",
            &why,
        );
        return;
    }
    let tmp = TempDir::new("hsdir-ctor");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--middles", "2", "--exits", "1", "--no-server"])
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "testnet.py up failed");
    testnet(&dir, &["wait", "--timeout", "240"]);

    let (_, control_port) = client_ports(&dir);
    let mut ctl = TorControl::connect(control_port);
    ctl.command("SETEVENTS HS_DESC").unwrap();
    let reply = ctl
        .command("ADD_ONION NEW:ED25519-V3 Flags=DiscardPK Port=80,127.0.0.1:9")
        .unwrap();
    let addr = reply
        .iter()
        .find_map(|l| l.strip_prefix("ServiceID="))
        .expect("ADD_ONION names the service")
        .to_string();
    // "650 HS_DESC UPLOAD <addr> UNKNOWN <hsdir> <blinded key, base64>" then UPLOADED.
    let upload = ctl
        .wait_event(Duration::from_secs(300), |e| {
            e.starts_with(&format!("650 HS_DESC UPLOAD {addr} "))
        })
        .expect("the service starts uploading its descriptor");
    let blinded_b64 = upload
        .split(' ')
        .nth(6)
        .unwrap_or_else(|| panic!("{upload}"))
        .to_string();
    ctl.wait_event(Duration::from_secs(120), |e| {
        e.starts_with(&format!("650 HS_DESC UPLOADED {addr} "))
    })
    .expect("a C tor HSDir accepted the descriptor");

    let lines = ctl
        .command(&format!("GETINFO hs/service/desc/id/{addr}"))
        .unwrap();
    assert!(lines.len() > 3, "{lines:?}");
    let text = format!("{}\n", lines[1..lines.len() - 1].join("\n"));
    assert!(text.starts_with("hs-descriptor 3\n"), "{text}");

    let now = SystemTime::now();
    let outer = decode_outer(text.as_bytes(), HS_DESC_MAX_LEN, now).unwrap();
    assert_eq!(
        base64_nopad(&outer.blinded_key),
        blinded_b64.trim_end_matches('=')
    );

    let mut cache = HsDirCache::new(64 << 20, HS_DESC_MAX_LEN);
    let answer = handle_publish(&mut cache, "/tor/hs/3/publish", text.as_bytes(), true, now);
    assert_eq!(answer.status, 200, "{}", answer.reason);
    assert_eq!(
        &*handle_fetch(&cache, &blinded_b64, true).unwrap(),
        text.as_bytes()
    );
    // The same descriptor again: C tor HSDirs refuse a revision that is not newer.
    let again = handle_publish(&mut cache, "/tor/hs/3/publish", text.as_bytes(), true, now);
    assert_eq!(again.status, 400);
    eprintln!(
        "C tor descriptor: {} bytes, revision {}, lifetime {} s",
        text.len(),
        outer.revision_counter,
        outer.lifetime_secs
    );
}
