//! Fors as an HSDir (issue #10, `HSDir=2`).
//!
//! 1. Descriptor lines: with the directory cache serving, the descriptor says
//!    `hidden-service-dir` and `proto … HSDir=2` and still verifies as an authority checks
//!    it; without, neither.
//! 2. Live: a private loopback network (scripts/testnet.py; nothing leaves the machine) whose
//!    authorities vote HSDir for every relay (TestingDirAuthVoteHSDir *, the script's
//!    default), with one Fors relay (`DirCache 1`) beside C tor relays. The C tor client runs
//!    a v3 onion service (ADD_ONION); its descriptor upload to the Fors HSDir succeeds (C
//!    tor's `HS_DESC UPLOADED` names Fors; Fors's MetricsPort counts a stored descriptor);
//!    the client fetches the descriptor from Fors (`HSFETCH … SERVER=` Fors, then
//!    `HS_DESC RECEIVED` naming Fors and Fors's fetch-hit counter) and connects to the
//!    service through the network (an echo round trip). On Fors's DirPort the same fetch
//!    gets C tor's 503 (not anonymous), and `/tor/server/authority` is Fors's own
//!    descriptor, with `hidden-service-dir` and `HSDir=2`. Fors is not the only HSDir: the
//!    service uploads to every HSDir of its ring, and `HSFETCH SERVER=` pins the fetch.
//!
//! The live part is skipped without `tor`, `tor-gencert` or python3, or with
//! `FORS_SKIP_TESTNET` (fails instead under `CI=true`). Every wait is bounded; the network
//! is stopped on drop.

mod daemon_common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_common::private_net::{
    client_ports, start_echo_server, testnet, PrivateNet, TorControl,
};
use daemon_common::{free_port, http_get, metric, wait_for_file_line, TempDir};
use fors::dir::{build_descriptor, check_descriptor, DescriptorParams};
use fors::keys::{KeyParams, RelayKeys};
use fors_testkit::socks::Socks5;
use rand::{RngCore, SeedableRng};

#[test]
fn descriptor_says_hidden_service_dir_only_when_the_cache_serves() {
    let tmp = TempDir::new("hsdir-desc");
    let now = UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let keys = RelayKeys::load_or_create(tmp.path(), now, KeyParams::default()).unwrap();
    let mut p = DescriptorParams::new("ForsHsDir", Ipv4Addr::LOCALHOST, 9001, now);
    let plain = build_descriptor(&keys, &p, None).unwrap();
    assert!(!plain.text.lines().any(|l| l == "hidden-service-dir"));
    let c = check_descriptor(&plain.text, Some(now)).unwrap();
    assert!(!c.proto.split(' ').any(|w| w.starts_with("HSDir=")));

    p.advertise_dir_cache();
    let d = build_descriptor(&keys, &p, None).unwrap();
    let c = check_descriptor(&d.text, Some(now)).unwrap();
    assert!(c.proto.split(' ').any(|w| w == "HSDir=2"), "{}", c.proto);
    assert!(c.proto.split(' ').any(|w| w == "DirCache=2"), "{}", c.proto);
    // router.c's order: after the ntor cross-cert, before the policy and
    // `tunnelled-dir-server`.
    let kw: Vec<&str> = c.keywords.iter().map(String::as_str).collect();
    let at = |k: &str| {
        kw.iter()
            .position(|w| *w == k)
            .unwrap_or_else(|| panic!("no {k}: {kw:?}"))
    };
    assert!(at("ntor-onion-key-crosscert") < at("hidden-service-dir"));
    assert!(at("hidden-service-dir") < at("tunnelled-dir-server"));
}

/// `650 HS_DESC <action> <addr> <auth> <hsdir> …`: the HSDir field names `fp` (hex).
fn names_hsdir(event: &str, action: &str, addr: &str, fp: &str) -> bool {
    let w: Vec<&str> = event.split(' ').collect();
    w.len() > 5
        && w[1] == "HS_DESC"
        && w[2] == action
        && w[3] == addr
        && w[5]
            .trim_start_matches('$')
            .to_ascii_uppercase()
            .starts_with(fp)
}

/// Polls Fors's MetricsPort until `series` is at least `min`, within `limit`; the last value.
fn wait_metric(addr: SocketAddr, series: &str, min: u64, limit: Duration) -> u64 {
    let end = Instant::now() + limit;
    loop {
        let v = metric(&http_get(addr, "/metrics"), series).unwrap_or(0);
        if v >= min || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn c_tor_service_publishes_to_fors_hsdir_and_a_client_fetches_there() {
    const NAME: &str = "c_tor_service_publishes_to_fors_hsdir_and_a_client_fetches_there";
    let Some(net) = PrivateNet::prepare(NAME, "dircache-hsdir", &[]) else {
        return;
    };
    let started = Instant::now();
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = net.dir();
    let m_port = free_port();
    let metrics_opt = format!("forsmiddle1 MetricsPort 127.0.0.1:{m_port}");
    let d_port = free_port();
    let dirport_opt = format!("forsmiddle1 DirPort 127.0.0.1:{d_port}");
    // The client's (and so the service's) info log, kept with FORS_KEEP_TEST_DIRS.
    let client_log_opt = format!(
        "Log info file {}",
        net.tmp().join("client-info.log").display()
    );
    net.up(&[
        "--fors",
        "middle",
        "--middles",
        "1",
        "--exits",
        "1",
        "--no-server",
        "--slot-option",
        "forsmiddle1 DirCache 1",
        "--slot-option",
        &dirport_opt,
        // Debug: the rule of any circuit Fors closes with TORPROTOCOL is logged.
        "--slot-option",
        "forsmiddle1 Log debug stdout",
        "--slot-option",
        &metrics_opt,
        "--slot-option",
        "forsmiddle1 MetricsPortPolicy accept 127.0.0.1",
        "--client-option",
        &client_log_opt,
    ]);
    testnet(dir, &["wait", "--timeout", "120"]);
    let log_path = net.log("forsmiddle1");
    wait_for_file_line(
        &log_path,
        "Fors is listed in the consensus",
        Duration::from_secs(120),
    );
    let fors = net.relay("forsmiddle1");
    let fp = fors["fingerprint"]
        .as_str()
        .unwrap()
        .replace(' ', "")
        .to_ascii_uppercase();
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));

    let echo = start_echo_server("127.0.0.1");
    let (socks, control) = client_ports(dir);
    let mut ctl = TorControl::connect(control);
    // The service puts Fors in its hash ring only once its consensus lists Fors as an HSDir
    // and it has Fors's descriptor (hs_common.c `node_has_hsdir_index`: the ed25519 key).
    let ready = (0..120).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let hsdir = ctl
            .command(&format!("GETINFO ns/id/{fp}"))
            .map(|l| {
                l.iter()
                    .any(|s| s.starts_with("s ") && s.split(' ').any(|f| f == "HSDir"))
            })
            .unwrap_or(false);
        // The client runs with UseMicrodescriptors 0: the router descriptor (else the
        // microdescriptor) carries the key.
        hsdir
            && (ctl.command(&format!("GETINFO desc/id/{fp}")).is_ok()
                || ctl.command(&format!("GETINFO md/id/{fp}")).is_ok())
    });
    assert!(
        ready,
        "the client never had Fors as an HSDir with its descriptor"
    );
    println!(
        "Fors is an HSDir for the client after {:?}",
        started.elapsed()
    );
    ctl.command("SETEVENTS HS_DESC").unwrap();
    let addr = ctl.add_onion(echo);
    // The service uploads once all its introduction points are up: seconds, now that Fors
    // serves ESTABLISH_INTRO (before, Fors dropped it and the service timed out on it).
    let seen = std::cell::RefCell::new(Vec::new());
    let uploaded = ctl
        .wait_event(Duration::from_secs(90), |e| {
            // Every event, for a failure's diagnosis (addresses are loopback).
            println!("{e}");
            seen.borrow_mut().push(e.to_string());
            names_hsdir(e, "UPLOADED", &addr, &fp) || names_hsdir(e, "FAILED", &addr, &fp)
        })
        .unwrap_or_else(|| {
            panic!(
                "no upload to the Fors HSDir within 90 s; events: {:#?}",
                seen.borrow()
            )
        });
    assert!(uploaded.contains(" UPLOADED "), "{uploaded}");
    println!("{uploaded} after {:?}", started.elapsed());
    let m = http_get(m_addr, "/metrics");
    assert!(
        metric(&m, "fors_hsdir_stored_total").unwrap_or(0) >= 1,
        "{m}"
    );
    // The service uploads its descriptors for the current and the next time period
    // (rend-spec "[TIME-PERIODS]"), and the client fetches the one of its own time period:
    // with both stored at Fors, the client's is there.
    let held = wait_metric(m_addr, "fors_hsdir_descriptors", 2, Duration::from_secs(60));
    assert!(held >= 2, "Fors holds {held} descriptors, not both");

    // At a time-period boundary (8 minutes in a test network: one shared-random run) the
    // client may already want a descriptor the service has yet to upload: Fors answers 404
    // (HS_DESC FAILED … REASON=NOT_FOUND); then wait for Fors to store the service's next
    // upload and ask again (bounded).
    let mut got = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            let stored =
                metric(&http_get(m_addr, "/metrics"), "fors_hsdir_stored_total").unwrap_or(0);
            let now = wait_metric(
                m_addr,
                "fors_hsdir_stored_total",
                stored + 1,
                Duration::from_secs(60),
            );
            assert!(now > stored, "no further upload to Fors within 60 s");
        }
        ctl.command(&format!("HSFETCH {addr} SERVER=${fp}"))
            .unwrap();
        got = ctl
            .wait_event(Duration::from_secs(60), |e| {
                names_hsdir(e, "RECEIVED", &addr, &fp) || names_hsdir(e, "FAILED", &addr, &fp)
            })
            .expect("the client's fetch from the Fors HSDir ended");
        println!("{got} after {:?}", started.elapsed());
        if !got.contains("REASON=NOT_FOUND") {
            break;
        }
    }
    assert!(got.contains(" RECEIVED "), "{got}");
    let m = http_get(m_addr, "/metrics");
    assert!(
        metric(&m, "fors_hsdir_fetches_total{result=\"hit\"}").unwrap_or(0) >= 1,
        "{m}"
    );

    // The DirPort is never anonymous: C tor's 503 for the same key. And
    // `/tor/server/authority` is our own descriptor, as the control plane built it.
    let d_addr = SocketAddr::from(([127, 0, 0, 1], d_port));
    let key = got.split(' ').nth(6).unwrap_or_default().to_string();
    let out = http_get(d_addr, &format!("/tor/hs/3/{key}"));
    assert!(
        out.starts_with("HTTP/1.0 503 Rejecting single hop HS v3 descriptor request\r\n"),
        "{out}"
    );
    let out = http_get(d_addr, "/tor/server/authority");
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert!(out.contains("\r\n\r\nrouter forsmiddle1 "), "{out}");
    assert!(out.contains("\nhidden-service-dir\n"), "{out}");
    assert!(out.contains("HSDir=2"), "{out}");

    // And the client reaches the service with the descriptor it fetched from Fors: an echo
    // round trip through a rendezvous. C tor clients pick any relay as rendezvous point
    // (HSRend=2 is a required protocol), Fors too, though it offers no HSRend yet; the
    // client notices only once that circuit is open and leaves the stream waiting
    // (hs_client.c `client_rendezvous_circ_has_opened`). In a network this small C tor's
    // paths also sometimes extend back to the previous hop, which every relay refuses. So
    // each attempt is short and a new one (new circuits) follows, bounded at 8. (Excluding
    // Fors from the client's paths instead made it fail more: a sixth of the network gone.)
    let onion = format!("{addr}.onion");
    let mut stream = (0..8)
        .find_map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            // A new SOCKS username each attempt (IsolateSOCKSAuth): new circuits, never the
            // stalled ones of an earlier attempt.
            Socks5::local(socks, Duration::from_secs(15))
                .isolated(&format!("attempt{i}"))
                .connect(&onion, 80)
                .ok()
        })
        .expect("no SOCKS stream to the onion service");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut msg = vec![0u8; 4096];
    rng.fill_bytes(&mut msg);
    stream.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);

    // No onion address, blinded key or client address in Fors's log.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains(&addr), "onion address in the log");
    assert!(
        key.is_empty() || !log.contains(&key),
        "blinded key in the log"
    );
    assert!(!log.contains("panicked"), "{log}");
    // Circuits Fors closed with TORPROTOCOL, by rule: only the onion-service requests it has
    // no role for, and C tor clients' EXTEND2 back to the previous hop (paths such as
    // auth0 -> forsmiddle1 -> auth0 in a network this small), which C tor refuses alike
    // (circuitbuild_relay.c `circuit_extend_lspec_valid_helper`).
    for l in log.lines().filter(|l| l.contains("DESTROY TORPROTOCOL")) {
        println!("fors: {l}");
        let rule = l.split("the last for: ").nth(1).unwrap_or_default();
        assert!(
            rule.starts_with("onion-service cell") || rule == "EXTEND2 back to the previous hop",
            "Fors closed a circuit for: {l}"
        );
    }
    println!("done after {:?}", started.elapsed());
}
