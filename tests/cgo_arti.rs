//! CGO relay crypto (proposal 359) with a real arti 2.7 client (issue #12): arti negotiates
//! CGO with a Fors middle *and* a Fors exit, carries traffic SHA-256 checked both ways, and
//! both Fors relays' MetricsPorts count those CGO circuits.
//!
//! Unlike C tor 0.4.9.11 (CGO only with an exit circuit's last hop, see `cgo_ctor.rs`),
//! arti 2.7 asks every hop it extends to with ntor-v3: tor-proto 0.47
//! `client/circuit.rs` `create_firsthop`/`extend` use ntor-v3 whenever the relay lists
//! `Relay=4`, always with `HopNegotiationType::Full`, and `circuit/circhop.rs`
//! `HopSettings::from_params_and_caps` picks `RelayCryptLayerProtocol::Cgo` for a Full hop
//! when the circuit's congestion control is Vegas (`compatible_with_cgo`; tor-circmgr uses
//! the same exit parameters for every hop of a circuit, Vegas with `cc_alg=2`) and the hop
//! lists `Relay=5` and `Relay=6` (and `FlowCtrl=2`, or it falls back to fixed window). The
//! arti crate's `counter-galois-onion` feature is an empty marker: this code is not gated.
//!
//! The path of arti's exit circuits is forced, since arti has no `MiddleNodes`/`ExitNodes`:
//! the network has one C tor authority (`auth0`), one Fors middle and one Fors exit and no
//! other relay; arti may connect directly only to `auth0` (`path_rules.reachable_addrs`),
//! so its guard is `auth0`, its exit the only exit, `forsexit1`, and its middle the only
//! relay left, `forsmiddle1`. (Its build-timeout testing circuits may end at any relay, so
//! they also run `auth0 -> forsexit1 -> forsmiddle1`.) arti picks exits by the
//! microdescriptor's policy summary, so `forsexit1` carries the `--policy-exit 80,443`
//! policy, which needs the isolated network namespace (scripts/netns.py; root), and the
//! test's data server listens on 127.0.0.2:80.
//!
//! What is checked:
//! * arti's own log (trace level of `tor_proto::client::reactor::circuit::extender`): every
//!   hop it extended to at `forsmiddle1` or `forsexit1` finished its handshake with
//!   `relay_crypt_protocol: Cgo`, and the circuit of each SOCKS stream ran `forsmiddle1` as
//!   hop 2 (the middle) and `forsexit1` as hop 3, both CGO;
//! * a download and an upload of `MB` MiB over that circuit, SHA-256 checked both ways;
//! * `fors_relay_circuits_cgo_total` rose on `forsmiddle1` and on `forsexit1` by at least
//!   the number of arti's CGO hops at that relay. The C tor client of the network is stopped
//!   before arti starts (it would add CGO circuits at the exit), so they are arti's.
//!
//! The arti binary: `ARTI_BIN`, else `target/arti/bin/arti`, else `arti` on PATH. Skipped
//! without it, `tor`, `tor-gencert`, python3 or unshare, when not root, or with
//! `FORS_SKIP_TESTNET` (each a failure under `CI=true`, see `tests/skip_common`). arti is
//! killed on drop, the network stopped by pid. Every wait is bounded.

mod daemon_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use daemon_common::private_net::{
    arti_bin, enter_netns, http_down_up, metric_sum, start_data_server, stop_ctor_client, testnet,
    ArtiClient, ArtiFallback, PrivateNet,
};
use daemon_common::{http_get, isolated_netns_for, running_as_root, skip_common};
use fors_testkit::socks::Socks5;
use rand::{RngCore, SeedableRng};

const NAME: &str = "arti_client_negotiates_cgo_with_a_fors_middle_and_exit";
/// MiB downloaded and uploaded through arti.
const MB: usize = 4;
/// The data server's port: one `forsexit1`'s policy summary (`accept 80,443`) opens.
const HTTP_PORT: u16 = 80;
/// arti's console log: info, plus each hop extension with its negotiated settings and the
/// circuit each stream got.
const ARTI_LOG: &str = "info,tor_proto::client::reactor::circuit::extender=trace,\
                        arti_client::client=debug";

/// One hop arti extended a circuit to, from its log.
#[derive(Debug, Clone)]
struct Extension {
    circ: String,
    hop: u32,
    /// The ORPort in the hop's IPv4 link specifier (every relay here is on 127.0.0.1).
    orport: Option<u16>,
    /// `Some(cgo)` once arti logged the handshake complete (`relay_crypt_protocol: Cgo`).
    cgo: Option<bool>,
}

/// The text of field `key` in a tracing line (`key=value`, value up to the next ` field=`).
fn field<'a>(line: &'a str, key: &str, next: &str) -> Option<&'a str> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[at..];
    Some(rest.find(next).map_or(rest, |e| &rest[..e]).trim())
}

/// The ORPort of the first IPv4 link specifier in a Debug-printed `EncodedLinkSpec` list
/// (`body: [127, 0, 0, 1, hi, lo]`; tor-spec "EXTEND2": type 0, 4 address and 2 port bytes).
fn ipv4_linkspec_port(line: &str) -> Option<u16> {
    let at = line.find("body: [127, 0, 0, 1, ")? + "body: [127, 0, 0, 1, ".len();
    let rest = &line[at..];
    let end = rest.find(']')?;
    let b: Vec<u16> = rest[..end]
        .split(", ")
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    (b.len() == 2).then(|| (b[0] << 8) | b[1])
}

/// A circuit's id in arti's log: `Circ 0.4` of `circ_uniq_id=Circ 0.4 (Tunnel 4)` (the
/// tunnel's id is also its first circuit's, `tunnel_id=Circ 0.4`).
fn circ_id(line: &str, key: &str) -> Option<String> {
    let v = field(line, key, " forward_circ_id=")?;
    Some(v.split(" (").next().unwrap_or(v).trim().to_string())
}

/// Every hop extension in arti's log, in order (tor-proto `extender.rs`: "Extending
/// circuit" with `target_hop` and `linkspecs`, then "Handshake complete; circuit extended."
/// with the negotiated `settings`; a circuit extends one hop at a time).
fn extensions(log: &str) -> Vec<Extension> {
    let mut out: Vec<Extension> = Vec::new();
    let mut pending: BTreeMap<String, usize> = BTreeMap::new();
    for l in log.lines() {
        if l.contains("Extending circuit") {
            let (Some(circ), Some(hop)) = (
                circ_id(l, "circ_uniq_id"),
                field(l, "target_hop", " ").and_then(|h| h.parse().ok()),
            ) else {
                continue;
            };
            pending.insert(circ.clone(), out.len());
            out.push(Extension {
                circ,
                hop,
                orport: ipv4_linkspec_port(l),
                cgo: None,
            });
        } else if l.contains("Handshake complete; circuit extended.") {
            let Some(circ) = circ_id(l, "circ_uniq_id") else {
                continue;
            };
            if let Some(i) = pending.remove(&circ) {
                out[i].cgo = Some(l.contains("relay_crypt_protocol: Cgo"));
            }
        }
    }
    out
}

/// The circuits arti gave its exit streams ("Got a circuit for", `tunnel_id`).
fn stream_circuits(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("Got a circuit for"))
        .filter_map(|l| circ_id(l, "tunnel_id"))
        .collect()
}

#[test]
fn arti_client_negotiates_cgo_with_a_fors_middle_and_exit() {
    let started = Instant::now();
    let arti = arti_bin();
    let arti_s = arti.to_string_lossy().into_owned();
    let Some(pnet) = PrivateNet::prepare(NAME, "cgo-arti", &[(&arti_s, "--version")]) else {
        return;
    };
    if !running_as_root() {
        skip_common::skip(
            NAME,
            "not root: the network must run in an isolated namespace this test enters \
             (arti picks exits by microdescriptor policy summary, `reject 1-65535` for a \
             loopback-only policy)",
        );
        return;
    }
    let Some(ns) = isolated_netns_for(NAME, &[]) else {
        return;
    };
    // From here on this thread, the script, the relays, arti and every socket below live in
    // the namespace (only `lo`).
    enter_netns(ns.pid);
    let seed = fors_testkit::test_seed(NAME);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    pnet.up(&[
        "--authorities",
        "1",
        "--fors",
        "middle",
        "--fors",
        "exit",
        "--middles",
        "0",
        "--exits",
        "0",
        "--policy-exit",
        "forsexit1 80,443",
        "--no-server",
    ]);
    let dir = pnet.dir();
    testnet(dir, &["wait", "--timeout", "240"]);
    println!("network ready after {:?}", started.elapsed());
    // No C tor client circuit from now on: the CGO circuits the Fors relays count next are
    // arti's.
    stop_ctor_client(dir);

    let net = pnet.json();
    let relays = net["relays"].as_array().unwrap();
    assert_eq!(relays.len(), 2, "{relays:?}");
    let orport = |nick: &str| pnet.relay(nick)["orport"].as_u64().unwrap() as u16;
    let metrics = |nick: &str| {
        let port = pnet.relay(nick)["metrics_port"].as_u64().unwrap() as u16;
        SocketAddr::from(([127, 0, 0, 1], port))
    };
    let (mid_or, exit_or) = (orport("forsmiddle1"), orport("forsexit1"));
    let cgo_count = |nick: &str| {
        metric_sum(
            &http_get(metrics(nick), "/metrics"),
            "fors_relay_circuits_cgo_total",
        )
    };
    let before = [cgo_count("forsmiddle1"), cgo_count("forsexit1")];
    println!(
        "CGO circuits before arti: forsmiddle1 {}, forsexit1 {}",
        before[0], before[1]
    );

    // The data server on port 80 (127.0.0.2: not the relays' address).
    let _srv = start_data_server("127.0.0.2", HTTP_PORT);

    let auth = &net["authorities"][0];
    let auth_or = auth["orport"].as_u64().unwrap() as u16;
    let fallback = ArtiFallback {
        rsa: auth["fingerprint"].as_str().unwrap().to_string(),
        ed: auth["ed25519_id"].as_str().unwrap().to_string(),
        orport: auth_or,
    };
    let mut client = ArtiClient::start(
        &arti,
        &pnet.tmp().join("arti"),
        &net,
        &fallback,
        ARTI_LOG,
        &[format!("127.0.0.1:{auth_or}")],
    );
    client.wait_bootstrapped(Duration::from_secs(120));
    println!("arti bootstrapped after {:?}", started.elapsed());

    // Download and upload through arti, one isolation token: one circuit for both. A new
    // circuit per attempt; bounded.
    let mut up_data = vec![0u8; MB << 20];
    rng.fill_bytes(&mut up_data);
    let mut last = String::new();
    let ok = (0..3).any(|i| {
        let socks =
            Socks5::local(client.socks, Duration::from_secs(90)).isolated(&format!("cgo{i}"));
        let t = Instant::now();
        match http_down_up(
            &socks,
            "127.0.0.2",
            HTTP_PORT,
            &format!("cgo-arti-{seed}-{i}"),
            MB << 20,
            &up_data,
            Duration::from_secs(90),
        ) {
            Ok(()) => {
                println!(
                    "{MB} MiB down and {MB} MiB up through arti, SHA-256 OK, in {:?}",
                    t.elapsed()
                );
                true
            }
            Err(e) => {
                println!("arti attempt {i}: {e}");
                last = e;
                false
            }
        }
    });
    assert!(
        ok,
        "transfer through arti failed: {last}\n{}",
        client.log_tail(60)
    );

    // arti's side: what it negotiated with each Fors hop.
    let log = client.log_text();
    let ext = extensions(&log);
    // Completed extensions to a Fors relay; every one negotiated CGO.
    let done_at = |port: u16| -> Vec<&Extension> {
        ext.iter()
            .filter(|e| e.orport == Some(port) && e.cgo.is_some())
            .collect()
    };
    let (mids, exits) = (done_at(mid_or), done_at(exit_or));
    for e in mids.iter().chain(&exits) {
        assert_eq!(e.cgo, Some(true), "arti did not negotiate CGO: {e:?}");
    }
    // Each stream's circuit: forsmiddle1 as the middle (hop 2), forsexit1 as hop 3.
    let streams = stream_circuits(&log);
    assert!(
        !streams.is_empty(),
        "no \"Got a circuit for\" line in arti's log:\n{}",
        client.log_tail(60)
    );
    for c in &streams {
        let hop = |port: u16| {
            ext.iter()
                .find(|e| &e.circ == c && e.orport == Some(port))
                .map(|e| (e.hop, e.cgo))
        };
        assert_eq!(
            (hop(mid_or), hop(exit_or)),
            (Some((2, Some(true))), Some((3, Some(true)))),
            "stream circuit {c} did not run forsmiddle1 (hop 2) -> forsexit1 (hop 3) with CGO: \
             {ext:?}"
        );
    }
    println!(
        "arti: {} stream circuit(s) {streams:?} ran forsmiddle1 as hop 2 and forsexit1 as hop 3, \
         both CGO; CGO hops in all: forsmiddle1 {}, forsexit1 {}",
        streams.len(),
        mids.len(),
        exits.len()
    );

    // The Fors side: each relay counted at least arti's CGO circuits through it. (A shard
    // publishes its counters once per tick: a short bounded poll.)
    let want = [mids.len() as u64, exits.len() as u64];
    let end = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = [cgo_count("forsmiddle1"), cgo_count("forsexit1")];
        if (0..2).all(|i| now[i] >= before[i] + want[i]) || Instant::now() > end {
            break now;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "CGO circuits: forsmiddle1 {} -> {} (arti's CGO hops there: {}), forsexit1 {} -> {} \
         (arti's: {})",
        before[0], after[0], want[0], before[1], after[1], want[1]
    );
    assert!(
        after[0] >= before[0] + want[0],
        "forsmiddle1 counted too few CGO circuits"
    );
    assert!(
        after[1] >= before[1] + want[1],
        "forsexit1 counted too few CGO circuits"
    );
    for nick in ["forsmiddle1", "forsexit1"] {
        let text = std::fs::read_to_string(pnet.log(nick)).unwrap();
        assert!(!text.contains("panicked"), "{nick}: {text}");
        assert!(
            daemon_common::unexpected_err_lines(&text).is_empty(),
            "{nick}: {text}"
        );
    }
    println!("done after {:?}", started.elapsed());
}

/// The log readers on lines of the shape arti 2.7 writes (shortened), so that a change of
/// shape fails here rather than passing unnoticed.
#[test]
fn arti_log_lines_are_read() {
    const T: &str = "2026-12-07T07:05:12Z TRACE tor_proto::client::reactor::circuit::extender:";
    let log = format!(
        "{T} Extending circuit circ_uniq_id=Circ 0.4 (Tunnel 4) forward_circ_id=2328897606 \
         target_hop=2 linkspecs=[EncodedLinkSpec {{ lstype: LinkSpecType(ORPORT_V4), body: \
         [127, 0, 0, 1, 58, 254] }}, EncodedLinkSpec {{ lstype: LinkSpecType(RSAID), body: \
         [144, 74] }}]\n\
         {T} Extending circuit circ_uniq_id=Circ 0.5 (Tunnel 5) forward_circ_id=77 \
         target_hop=3 linkspecs=[EncodedLinkSpec {{ lstype: LinkSpecType(ORPORT_V4), body: \
         [127, 0, 0, 1, 1, 2] }}]\n\
         {T} Handshake complete; circuit extended. circ_uniq_id=Circ 0.4 (Tunnel 4) \
         forward_circ_id=2328897606 settings=HopSettings {{ n_outgoing_cells_permitted: None, \
         relay_crypt_protocol: Cgo }}\n\
         {T} Handshake complete; circuit extended. circ_uniq_id=Circ 0.5 (Tunnel 5) \
         forward_circ_id=77 settings=HopSettings {{ relay_crypt_protocol: Tor1(V0) }}\n\
         {T} Extending circuit circ_uniq_id=Circ 0.4 (Tunnel 4) forward_circ_id=2328897606 \
         target_hop=3 linkspecs=[EncodedLinkSpec {{ lstype: LinkSpecType(ORPORT_V4), body: \
         [127, 0, 0, 1, 58, 255] }}]\n\
         2026-12-07T07:05:51Z DEBUG arti_client::client: Got a circuit for [scrubbed]:80 \
         tunnel_id=Circ 0.4\n"
    );
    let e = extensions(&log);
    let got: Vec<(&str, u32, Option<u16>, Option<bool>)> = e
        .iter()
        .map(|e| (e.circ.as_str(), e.hop, e.orport, e.cgo))
        .collect();
    assert_eq!(
        got,
        [
            ("Circ 0.4", 2, Some(15102), Some(true)),
            ("Circ 0.5", 3, Some(258), Some(false)),
            // Not finished: no verdict.
            ("Circ 0.4", 3, Some(15103), None),
        ]
    );
    assert_eq!(stream_circuits(&log), ["Circ 0.4"]);
}
