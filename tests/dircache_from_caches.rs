//! The directory cache mirrors from other caches, as a C tor 0.4.9 relay does before its
//! descriptor advertises directory service (dirclient.c `directory_get_from_dirserver`,
//! node_select.c `router_pick_directory_server`): on the private loopback network of
//! scripts/testnet.py (nothing leaves the machine), a Fors relay with `DirCache 1` and
//! `PublishServerDescriptor 0` takes its first certificates and consensus from the
//! authorities (it holds no consensus yet), then fetches the microdescriptors, the server
//! descriptors and both consensus flavours from the C tor relays of the network over one-hop
//! BEGIN_DIR circuits (they have no DirPort).
//!
//! Shown three ways: Fors's log names each source, its MetricsPort counts fetches by source,
//! and the C tor caches' own info logs record the BEGIN_DIR streams they served ("Opening
//! local connection for anonymized directory exit", connection_edge.c
//! `connection_exit_connect_dir`) — at least as many, per cache, as Fors says it made there
//! (the network's C tor client adds its own). Then the cache on disk is whole and verifies,
//! and Fors serves the consensus it got over BEGIN_DIR (Fors's own one-hop client against
//! Fors's relay side).
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET` (fails under
//! `CI=true`, see `tests/skip_common`). The network is stopped by the script's recorded pids
//! when the test ends.

mod daemon_common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use daemon_common::private_net::PrivateNet;
use daemon_common::{http_get, metric, wait_for_file_line};
use fors::crypto::ids::RsaIdentity;
use fors::dircache::disk::{self, LoadReport};
use fors::dircache::mirror::Mirror;
use fors::dircache::{ConsensusFlavor, DirStore};
use fors::proto::channel::ExpectedPeer;
use rand::SeedableRng;

const CACHES: [&str; 3] = ["middle1", "middle2", "exit1"];
const BEGIN_DIR_LINE: &str = "Opening local connection for anonymized directory exit";

/// Loads `cache` the way Fors does at start-up: the report and the relays each consensus
/// lists.
fn load_cache(cache: &Path, trusted: &[RsaIdentity], seed: u64) -> (LoadReport, usize, usize) {
    let store = Arc::new(RwLock::new(DirStore::new()));
    let mut m = Mirror::new(store, trusted.to_vec());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let r = disk::load(cache, &mut m, SystemTime::now(), &mut rng);
    let n = |f| m.consensus(f).map_or(0, |c| c.relays.len());
    let (md, ns) = (n(ConsensusFlavor::Microdesc), n(ConsensusFlavor::Ns));
    (r, md, ns)
}

/// Fors's "fetched … from cache NICK" lines, per (document, cache).
fn fors_cache_fetches(log: &str) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for l in log.lines() {
        let Some(rest) = l.split("Directory cache: fetched ").nth(1) else {
            continue;
        };
        let Some((what, nick)) = rest.split_once(" from cache ") else {
            continue;
        };
        let what = if what.contains("microdescriptors") {
            "microdescs".to_owned()
        } else if what.contains("server descriptors") {
            "server descriptors".to_owned()
        } else {
            what.to_owned()
        };
        *m.entry((what, nick.trim_end_matches('.').to_owned()))
            .or_default() += 1;
    }
    m
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn a_cache_that_does_not_advertise_mirrors_from_the_c_tor_caches_over_begin_dir() {
    let Some(pnet) = PrivateNet::prepare(
        "a_cache_that_does_not_advertise_mirrors_from_the_c_tor_caches_over_begin_dir",
        "dircache-caches",
        &[],
    ) else {
        return;
    };
    let seed: u64 = rand::random();
    println!("seed {seed}");
    pnet.up(&[
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
        "forsmiddle1 PublishServerDescriptor 0",
        "--slot-option",
        "forsmiddle1 Log info stdout",
    ]);
    // The C tor caches log at info level from now on (torrc re-read on SIGHUP).
    for nick in CACHES {
        let rec = pnet.relay(nick);
        let torrc = rec["torrc"].as_str().unwrap();
        let dir = rec["data_dir"].as_str().unwrap();
        let mut text = std::fs::read_to_string(torrc).unwrap();
        text.push_str(&format!("\nLog info file {dir}/info.log\n"));
        std::fs::write(torrc, text).unwrap();
        let pid = rec["pid"].as_u64().unwrap() as i32;
        // SAFETY: kill(2) on the pid testnet.py recorded for the C tor relay it started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }
    for nick in CACHES {
        let dir = pnet.relay(nick)["data_dir"].as_str().unwrap().to_owned();
        wait_for_file_line(
            &Path::new(&dir).join("info.log"),
            "Tor",
            Duration::from_secs(30),
        );
    }
    let net = pnet.json();
    let trusted: Vec<RsaIdentity> = net["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| RsaIdentity::from_hex(a["v3ident"].as_str().unwrap()).unwrap())
        .collect();
    let rec = pnet.relay("forsmiddle1");
    let data_dir = Path::new(rec["data_dir"].as_str().unwrap()).to_owned();
    let cache = disk::cache_dir(&data_dir);
    let log = pnet.log("forsmiddle1");
    wait_for_file_line(&log, "the relay is running", Duration::from_secs(120));
    // No consensus yet: the authorities first (C: no node to pick, the fallback list).
    wait_for_file_line(
        &log,
        "fetched /tor/keys/all from authority",
        Duration::from_secs(120),
    );
    let fors_before = fors_cache_fetches(&read(&log));
    let ctor_before: HashMap<&str, usize> = CACHES
        .iter()
        .map(|n| {
            let dir = pnet.relay(n)["data_dir"].as_str().unwrap().to_owned();
            (
                *n,
                read(&Path::new(&dir).join("info.log"))
                    .matches(BEGIN_DIR_LINE)
                    .count(),
            )
        })
        .collect();

    // Both consensus flavours, microdescs and server descriptors from a cache (bounded).
    let wanted = [
        "/tor/status-vote/current/consensus-microdesc",
        "/tor/status-vote/current/consensus",
        "microdescs",
        "server descriptors",
    ];
    let end = Instant::now() + Duration::from_secs(240);
    let fors_after = loop {
        let f = fors_cache_fetches(&read(&log));
        if wanted.iter().all(|w| f.keys().any(|(what, _)| what == w)) {
            break f;
        }
        assert!(
            Instant::now() < end,
            "not everything came from a cache in time: {f:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    println!("Fors's fetches from caches: {fors_after:?}");
    // Never from ourselves, and only from relays (the authorities are not caches here).
    for (_, nick) in fors_after.keys() {
        assert!(CACHES.contains(&nick.as_str()), "{nick}");
    }

    // The C tor side: each cache served at least the BEGIN_DIR streams Fors made there since
    // its info log started.
    for nick in CACHES {
        let dir = pnet.relay(nick)["data_dir"].as_str().unwrap().to_owned();
        let served = read(&Path::new(&dir).join("info.log"))
            .matches(BEGIN_DIR_LINE)
            .count()
            - ctor_before[nick];
        let count = |m: &HashMap<(String, String), usize>| -> usize {
            m.iter()
                .filter(|((_, n), _)| n == nick)
                .map(|(_, c)| c)
                .sum()
        };
        let made = count(&fors_after) - count(&fors_before);
        println!("{nick}: Fors made {made} BEGIN_DIR fetches, C tor served {served}");
        assert!(served >= made, "{nick}: served {served} < made {made}");
    }

    // The metric.
    let mport = rec["metrics_port"].as_u64().unwrap() as u16;
    let text = http_get(
        std::net::SocketAddr::from(([127, 0, 0, 1], mport)),
        "/metrics",
    );
    let from_cache = metric(
        &text,
        "fors_dircache_source_fetches_total{source=\"cache\",result=\"answered\"}",
    )
    .unwrap();
    let from_auth = metric(
        &text,
        "fors_dircache_source_fetches_total{source=\"authority\",result=\"answered\"}",
    )
    .unwrap();
    println!("answered: {from_cache} from caches, {from_auth} from authorities");
    assert!(from_cache >= 4, "{from_cache}");
    assert!(
        from_auth >= 1,
        "the first consensus comes from an authority"
    );

    // Everything verifies on disk: both consensuses, and every descriptor they list.
    let end = Instant::now() + Duration::from_secs(120);
    let r = loop {
        let (r, md, ns) = load_cache(&cache, &trusted, seed);
        if r.consensuses == 2 && md > 0 && r.microdescs == md && r.server_descriptors == ns {
            break r;
        }
        assert!(Instant::now() < end, "cache never complete: {r:?}");
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(r.rejected, 0, "{r:?}");

    // And Fors serves what it got, over BEGIN_DIR (its identity as its keys say).
    let fp = read(&data_dir.join("fingerprint"));
    let hex = fp.split_whitespace().nth(1).unwrap();
    let or_port = rec["orport"].as_u64().unwrap() as u16;
    let valid_after = |t: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix("valid-after "))
            .map(str::to_owned)
    };
    let held = read(&cache.join("cached-microdesc-consensus"));
    let req = b"GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\n\r\n".to_vec();
    let raw = fors::relay::reach::begin_dir_get(
        std::net::SocketAddr::from(([127, 0, 0, 1], or_port)),
        ExpectedPeer {
            rsa: RsaIdentity::from_hex(hex).unwrap(),
            ed: None,
        },
        None,
        req,
        32 << 20,
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .unwrap();
    let resp = fors::dir::http::parse_response(&raw, 32 << 20).unwrap();
    assert_eq!(resp.status, 200);
    let body = String::from_utf8(resp.body).unwrap();
    assert!(body.starts_with("network-status-version 3 microdesc"));
    // The one it saved, or a newer one that arrived meanwhile (ISO times sort as text).
    let (served_va, held_va) = (valid_after(&body).unwrap(), valid_after(&held).unwrap());
    assert!(served_va >= held_va, "{served_va} < {held_va}");
    if served_va == held_va {
        assert_eq!(body, held);
    }
}

/// The other side of C tor's rule (`dirclient_fetches_from_authorities`): once the descriptor
/// Fors publishes says `tunnelled-dir-server`, it asks the authorities only.
#[test]
fn an_advertising_cache_asks_the_authorities() {
    let Some(pnet) = PrivateNet::prepare(
        "an_advertising_cache_asks_the_authorities",
        "dircache-advertised",
        &[],
    ) else {
        return;
    };
    pnet.up(&[
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
        "forsmiddle1 Log info stdout",
    ]);
    let log = pnet.log("forsmiddle1");
    let marker = "our descriptor advertises directory service";
    wait_for_file_line(&log, marker, Duration::from_secs(120));
    // A consensus fetched after that (the network votes every 20 s), from an authority.
    let end = Instant::now() + Duration::from_secs(180);
    let after = loop {
        let text = read(&log);
        let after = text.split(marker).nth(1).unwrap_or("").to_owned();
        if after.contains("fetched /tor/status-vote/current/consensus-microdesc from authority")
            && after.contains("fetched /tor/status-vote/current/consensus from authority")
        {
            break after;
        }
        assert!(
            Instant::now() < end,
            "no consensus from an authority in time"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    // The worker takes one request at a time and its source is picked when it does, so
    // only the fetch in flight when Fors began to advertise may have been to a cache: every
    // fetch after that one must be from an authority.
    let fetches: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("Directory cache: fetched "))
        .collect();
    assert!(
        !fetches.iter().skip(1).any(|l| l.contains(" from cache ")),
        "asked a cache while advertising: {fetches:#?}"
    );
}
