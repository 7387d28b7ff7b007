//! A private network made only of Fors relays (issue #11, "A network of only Fors relays").
//!
//! `scripts/testnet.py up --fors-only --onion-service`: three C tor authorities, six Fors
//! relays (two exits, four middles; all Guard, all HSDir, and only they are HSDirs), a C tor
//! client and a C tor onion service (a `HiddenServiceDir` in front of the script's HTTP data
//! server). The client and the service exclude the authorities (`ExcludeNodes`, and
//! `StrictNodes 1` once they have bootstrapped), so every hop of their circuits — guard,
//! middle, exit, HSDir, introduction point, rendezvous point — is Fors.
//!
//! (a) The C tor client downloads and uploads through a Fors exit (`testnet.py traffic`:
//!     SHA-256 both ways, and every hop of the stream's circuit is a Fors relay).
//! (b) The client fetches from and uploads to the onion service (`traffic --onion`, SHA-256
//!     both ways), and the Fors relays' MetricsPorts prove the roles: descriptors stored and
//!     served by Fors HSDirs, intro circuits established and INTRODUCE1 forwarded at Fors,
//!     rendezvous points joined at Fors; no C tor circuit of the client or the service has a
//!     hop outside Fors (`traffic` checks `GETINFO circuit-status` of both).
//! (c) An arti 2.7 client (`ARTI_BIN`, else `target/arti/bin/arti`) bootstraps from a Fors
//!     directory cache and fetches through a Fors exit. arti picks exits by the
//!     microdescriptor's policy summary, which for the loopback-only policy is
//!     `reject 1-65535`, so this part needs the isolated network namespace (root): there
//!     `forsexit1` gets the `--policy-exit 80,443` policy and the test's own data server
//!     listens on 127.0.0.2:80. arti's onion-service client is then tried against the same
//!     service; the test says what happened and does not fail on it. (It works here because
//!     `--fors-only` sets the consensus parameter `hsdir_interval` to C tor's test-network
//!     time period; without it arti derives other blinded keys, gets 404s from the HSDirs
//!     and reports "Onion Service not found".) arti has no `ExcludeNodes`, so its hops and
//!     rendezvous point may be authorities; the test prints whether its rendezvous point
//!     was Fors.
//!
//! Shards: every relay runs `SHARDS` shards except `WIDE_RELAY`, which runs `WIDE_SHARDS`,
//! so the onion-service roles are exercised across shards (`hs_cross.rs`). The test prints
//! whether the wide relay was an intro or rendezvous point.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET`; the arti
//! part without arti; the arti exit fetch when not root (no namespace this test can enter).
//! Under `CI=true` each of those is a failure instead (`tests/skip_common`). Every wait is
//! bounded; the whole test stays well under 300 s.

mod daemon_common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::private_net::{
    arti_bin, enter_netns, have, http_down_up, start_data_server, testnet, ArtiClient,
    ArtiFallback, PrivateNet,
};
use daemon_common::{http_get, isolated_netns_for, running_as_root, skip_common};
use fors_testkit::socks::Socks5;
use rand::{RngCore, SeedableRng};

/// Shards (`NumCPUs`) of every Fors relay but the wide one.
const SHARDS: u32 = 2;
/// The one relay with more shards, and its shard count.
const WIDE_RELAY: &str = "forsmiddle4";
const WIDE_SHARDS: u32 = 3;

const NAME: &str = "c_tor_and_arti_clients_use_a_network_of_only_fors_relays";

/// The sum over every shard (every label set) of `name`'s samples whose labels contain
/// `label`, in one MetricsPort text.
fn series_sum(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            (labels.is_empty() || labels.starts_with('{')).then_some(())?;
            labels.contains(label).then(|| value.parse::<u64>().ok())?
        })
        .sum()
}

struct ForsRelay {
    nick: String,
    metrics: SocketAddr,
}

impl ForsRelay {
    fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics")
    }
}

/// One relay's onion-service role counters, for the report and the checks.
#[derive(Default, Debug, Clone, Copy)]
struct Roles {
    hsdir_stored: u64,
    hsdir_hits: u64,
    intro_established: u64,
    introduce1: u64,
    rend_established: u64,
    rend_joined: u64,
    malformed: u64,
}

fn roles(text: &str) -> Roles {
    const OK: &str = "action=\"success\"";
    Roles {
        hsdir_stored: series_sum(text, "fors_hsdir_stored_total", ""),
        hsdir_hits: series_sum(text, "fors_hsdir_fetches_total", "result=\"hit\""),
        intro_established: series_sum(text, "fors_relay_hs_establish_intro_total", OK),
        introduce1: series_sum(text, "fors_relay_hs_introduce1_total", OK),
        rend_established: series_sum(text, "fors_relay_hs_establish_rendezvous_total", OK),
        rend_joined: series_sum(text, "fors_relay_hs_rendezvous1_total", OK),
        malformed: series_sum(text, "fors_relay_hs_establish_intro_total", "\"malformed\"")
            + series_sum(text, "fors_relay_hs_rendezvous1_total", "\"malformed\""),
    }
}

/// Downloads `n` bytes and uploads `n` seeded random bytes through `socks` to `host:port`
/// (the script's data server API), SHA-256 checked both ways. `Err` says what failed.
fn fetch_both_ways(
    socks: &Socks5,
    host: &str,
    port: u16,
    n: usize,
    rng: &mut impl RngCore,
) -> Result<(), String> {
    let seed = format!("arti-{}", rng.next_u32());
    let mut up = vec![0u8; n];
    rng.fill_bytes(&mut up);
    http_down_up(socks, host, port, &seed, n, &up, Duration::from_secs(60))
}

/// arti's only fallback cache: Fors relay `cache` (its ed25519 identity from its key file).
fn fallback_of(cache: &serde_json::Value) -> ArtiFallback {
    let data_dir = Path::new(cache["data_dir"].as_str().unwrap());
    let key = std::fs::read(data_dir.join("keys/ed25519_master_id_public_key")).unwrap();
    assert_eq!(key.len(), 64, "ed25519_master_id_public_key");
    ArtiFallback {
        rsa: cache["fingerprint"].as_str().unwrap().to_string(),
        ed: fors::dir::netdoc::base64_nopad(&key[32..]),
        orport: cache["orport"].as_u64().unwrap() as u16,
    }
}

#[test]
fn c_tor_and_arti_clients_use_a_network_of_only_fors_relays() {
    let Some(pnet) = PrivateNet::prepare(NAME, "fors-only", &[]) else {
        return;
    };
    let started = Instant::now();
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // As root: the whole network in an isolated namespace (only `lo`), so that a Fors exit
    // may carry a policy arti can use. The namespace is entered by this thread, so the
    // script, the relays, arti and every socket below live in it.
    let ns = if running_as_root() {
        let Some(ns) = isolated_netns_for(NAME, &[]) else {
            return;
        };
        enter_netns(ns.pid);
        Some(ns)
    } else {
        None
    };
    let shards = SHARDS.to_string();
    let wide = format!("{WIDE_RELAY} NumCPUs {WIDE_SHARDS}");
    let mut args = vec![
        "--fors-only",
        "--onion-service",
        "--fors-shards",
        &shards,
        "--slot-option",
        &wide,
    ];
    if ns.is_some() {
        args.extend_from_slice(&["--policy-exit", "forsexit1 80,443"]);
    }
    pnet.up(&args);
    let dir = pnet.dir();
    testnet(dir, &["wait", "--timeout", "150"]);
    println!("network ready after {:?}", started.elapsed());
    let net = pnet.json();
    let relays: Vec<ForsRelay> = net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["kind"], "fors", "{r}");
            ForsRelay {
                nick: r["nick"].as_str().unwrap().to_string(),
                metrics: SocketAddr::from((
                    [127, 0, 0, 1],
                    r["metrics_port"].as_u64().unwrap() as u16,
                )),
            }
        })
        .collect();
    assert_eq!(relays.len(), 6);

    // (a) Through a Fors exit, every hop Fors (the script checks the path and SHA-256).
    testnet(
        dir,
        &[
            "traffic",
            "--down-mb",
            "2",
            "--up-mb",
            "2",
            "--io-timeout",
            "60",
        ],
    );
    println!("(a) exit fetch done after {:?}", started.elapsed());

    // (b) The onion service, reached through Fors intro and rendezvous points.
    testnet(
        dir,
        &[
            "traffic",
            "--onion",
            "--down-mb",
            "1",
            "--up-mb",
            "1",
            "--io-timeout",
            "60",
        ],
    );
    println!("(b) onion fetch done after {:?}", started.elapsed());
    let mut total = Roles::default();
    // The shards publish their counters once per tick: a short bounded poll for the join.
    let mut per = Vec::new();
    for _ in 0..12 {
        per = relays
            .iter()
            .map(|r| roles(&r.scrape()))
            .collect::<Vec<_>>();
        if per.iter().map(|r| r.rend_joined).sum::<u64>() >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (r, x) in relays.iter().zip(&per) {
        println!("{}: {x:?}", r.nick);
        total.hsdir_stored += x.hsdir_stored;
        total.hsdir_hits += x.hsdir_hits;
        total.intro_established += x.intro_established;
        total.introduce1 += x.introduce1;
        total.rend_established += x.rend_established;
        total.rend_joined += x.rend_joined;
        total.malformed += x.malformed;
    }
    let w = relays.iter().position(|r| r.nick == WIDE_RELAY).unwrap();
    println!(
        "{WIDE_RELAY} ({WIDE_SHARDS} shards): intro point {} times, rendezvous point {} times",
        per[w].intro_established, per[w].rend_joined
    );
    // Only Fors relays are HSDirs, intro points and rendezvous points here: the service's
    // descriptor went to Fors and the client fetched it there, the service's intro points
    // are at Fors and the client's INTRODUCE1 went through one, and the two circuits met at
    // a Fors rendezvous point.
    assert!(total.hsdir_stored >= 1, "{total:?}");
    assert!(total.hsdir_hits >= 1, "{total:?}");
    assert!(total.intro_established >= 1, "{total:?}");
    assert!(total.introduce1 >= 1, "{total:?}");
    assert!(total.rend_established >= 1, "{total:?}");
    assert!(total.rend_joined >= 1, "{total:?}");
    assert_eq!(total.malformed, 0, "{total:?}");
    let onion = net["onion_service"]["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    for r in &relays {
        let log = std::fs::read_to_string(pnet.log(&r.nick)).unwrap_or_default();
        assert!(!log.contains("panicked"), "{}: {log}", r.nick);
        assert!(
            !log.contains(&onion[..56]),
            "onion address in {}'s log",
            r.nick
        );
    }

    // (c) arti.
    let arti = arti_bin();
    if !have(&arti.to_string_lossy(), "--version") {
        skip_common::skip(
            NAME,
            &format!("arti is not available at {}", arti.display()),
        );
        println!("done after {:?}", started.elapsed());
        return;
    }
    let cache = &net["relays"][2]; // a Fors middle (DirCache 1 by default, as C tor)
    let mut arti_client = ArtiClient::start(
        &arti,
        &pnet.tmp().join("arti"),
        &net,
        &fallback_of(cache),
        "info",
        &[],
    );
    arti_client.wait_bootstrapped(Duration::from_secs(90));
    let arti_socks = arti_client.socks;
    let tail = || arti_client.log_tail(40);
    println!("(c) arti bootstrapped after {:?}", started.elapsed());
    let socks = Socks5::local(arti_socks, Duration::from_secs(60));
    if ns.is_some() {
        // The data server on port 80, which forsexit1's policy (and so its microdescriptor
        // summary, `accept 80,443`) opens; only in the isolated namespace.
        let _srv = start_data_server("127.0.0.2", 80);
        // A new circuit per attempt; bounded.
        let mut last = String::new();
        let ok = (0..3).any(|i| {
            let s =
                Socks5::local(arti_socks, Duration::from_secs(60)).isolated(&format!("exit{i}"));
            match fetch_both_ways(&s, "127.0.0.2", 80, 1 << 20, &mut rng) {
                Ok(()) => true,
                Err(e) => {
                    println!("arti exit attempt {i}: {e}");
                    last = e;
                    false
                }
            }
        });
        assert!(ok, "arti exit fetch failed: {last}\n{}", tail());
        println!(
            "(c) arti: 1 MiB down and up through the Fors exit, SHA-256 OK, after {:?}",
            started.elapsed()
        );
    } else {
        skip_common::skip(
            NAME,
            "arti's exit fetch needs the isolated network namespace (root): arti picks exits \
             by microdescriptor policy summary, `reject 1-65535` for a loopback-only policy",
        );
    }
    // arti's onion-service client against the same service: reported, not required.
    let before: u64 = relays.iter().map(|r| roles(&r.scrape()).rend_joined).sum();
    match fetch_both_ways(&socks.isolated("onion"), &onion, 80, 256 << 10, &mut rng) {
        Ok(()) => {
            // The shards publish their counters once per tick: a short bounded poll.
            let mut after = before;
            for _ in 0..12 {
                after = relays.iter().map(|r| roles(&r.scrape()).rend_joined).sum();
                if after > before {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            println!(
                "(c) arti onion-service client: WORKS here: 256 KiB down and up, SHA-256 OK; \
                 its rendezvous point was {} (Fors rendezvous joins {before} -> {after}; arti \
                 has no ExcludeNodes, so it may pick an authority)",
                if after > before {
                    "a Fors relay"
                } else {
                    "not a Fors relay"
                }
            );
        }
        Err(e) => {
            println!("(c) arti onion-service client: does NOT work on this network: {e}");
            for l in arti_client
                .log_text()
                .lines()
                .filter(|l| l.contains("onion") || l.contains("hs") || l.contains("HS"))
                .take(30)
            {
                println!("arti: {l}");
            }
        }
    }
    println!("done after {:?}", started.elapsed());
}
