//! The flags C tor 0.4.9 authorities give a Fors directory cache by their own rules (issue
//! #10, point 5): `testnet.py up --real-flags` makes the authorities vote Guard and HSDir by
//! voteflags.c, with only thresholds moved (uptime, bandwidth, time known, WFU) and no relay
//! named. A Fors middle with `DirCache 1` publishes `tunnelled-dir-server`, so it is listed
//! with V2Dir and Guard like the C tor relays beside it, and with `hidden-service-dir` (it
//! serves as an HSDir) it gets HSDir too; a Fors middle with `DirCache 0` gets none of them
//! (C tor gives Guard and HSDir only to relays that take tunnelled directory requests).
//!
//! The consensus is read twice: through the C tor client's ControlPort (`GETINFO ns/id/…`,
//! what stem and nyx read) and from an authority's own `cached-consensus`.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET` (fails under
//! `CI=true`, see `tests/skip_common`). Loopback only; every wait is bounded.

mod daemon_common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::private_net::{client_ports, relay_record, PrivateNet, TorControl};

/// nickname → flags of the newest consensus an authority keeps (its `cached-consensus`).
fn consensus_flags(auth_dir: &Path) -> HashMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(auth_dir.join("cached-consensus")).unwrap_or_default();
    let mut out = HashMap::new();
    let mut nick = None;
    for l in text.lines() {
        if let Some(r) = l.strip_prefix("r ") {
            nick = r.split(' ').next().map(str::to_owned);
        } else if let (Some(s), Some(n)) = (l.strip_prefix("s "), nick.take()) {
            out.insert(n, s.split(' ').map(str::to_owned).collect());
        }
    }
    out
}

fn has(flags: Option<&BTreeSet<String>>, f: &str) -> bool {
    flags.is_some_and(|s| s.contains(f))
}

#[test]
fn real_flags_give_a_fors_cache_v2dir_and_guard() {
    const NAME: &str = "real_flags_give_a_fors_cache_v2dir_and_guard";
    let Some(pnet) = PrivateNet::prepare(NAME, "dircache-flags", &[]) else {
        return;
    };
    pnet.up(&[
        "--real-flags",
        "--fors",
        "middle",
        "--fors",
        "middle",
        "--middles",
        "2",
        "--exits",
        "1",
        "--no-server",
        "--slot-option",
        "forsmiddle1 DirCache 1",
        "--slot-option",
        "forsmiddle2 DirCache 0",
    ]);
    pnet.wait_running(&["forsmiddle1", "forsmiddle2"], Duration::from_secs(120));
    let dir = pnet.dir();
    let net = pnet.json();
    let auth_dir = Path::new(net["authorities"][0]["data_dir"].as_str().unwrap()).to_owned();

    // Until the C tor middles hold Guard by the rules and both Fors relays are Running: the
    // flags have settled (a few voting rounds of 20 s).
    let end = Instant::now() + Duration::from_secs(300);
    let flags = loop {
        let f = consensus_flags(&auth_dir);
        let settled = ["middle1", "middle2"]
            .iter()
            .all(|n| has(f.get(*n), "Guard") && has(f.get(*n), "V2Dir"))
            && ["forsmiddle1", "forsmiddle2"]
                .iter()
                .all(|n| has(f.get(*n), "Running") && has(f.get(*n), "Valid"));
        // One round more once settled, so Fors's own Guard has had its vote.
        if settled {
            std::thread::sleep(Duration::from_secs(25));
            break consensus_flags(&auth_dir);
        }
        assert!(Instant::now() < end, "flags never settled: {f:?}");
        std::thread::sleep(Duration::from_secs(2));
    };
    println!("consensus flags: {flags:?}");
    for n in ["middle1", "middle2"] {
        for want in ["Guard", "V2Dir", "HSDir", "Stable", "Fast"] {
            assert!(has(flags.get(n), want), "C tor {n} lacks {want}: {flags:?}");
        }
    }
    let cache = flags.get("forsmiddle1");
    assert!(
        has(cache, "V2Dir"),
        "Fors DirCache 1 without V2Dir: {cache:?}"
    );
    assert!(
        has(cache, "Guard"),
        "Fors DirCache 1 without Guard: {cache:?}"
    );
    assert!(
        has(cache, "HSDir"),
        "Fors DirCache 1 without HSDir: {cache:?}"
    );
    let plain = flags.get("forsmiddle2");
    for no in ["V2Dir", "Guard", "HSDir"] {
        assert!(!has(plain, no), "Fors DirCache 0 has {no}: {plain:?}");
    }

    // The same through a controller, as stem/nyx read it.
    let mut ctl = TorControl::connect(client_ports(dir).1);
    let s_line = |ctl: &mut TorControl, nick: &str| {
        let fp = relay_record(dir, nick)["fingerprint"]
            .as_str()
            .unwrap()
            .to_string();
        let ns = ctl
            .command(&format!("GETINFO ns/id/{fp}"))
            .unwrap()
            .join("\n");
        ns.lines()
            .find(|l| l.starts_with("s "))
            .unwrap_or("")
            .to_string()
    };
    // The client may still hold the consensus before the one read above: bounded retry.
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let s = s_line(&mut ctl, "forsmiddle1");
        if s.contains(" V2Dir") && s.contains(" Guard") {
            break;
        }
        assert!(
            Instant::now() < end,
            "client's entry for the Fors cache: {s:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let s = s_line(&mut ctl, "forsmiddle2");
    assert!(s.contains(" Running"), "{s}");
    assert!(!s.contains(" V2Dir") && !s.contains(" Guard"), "{s}");
}
