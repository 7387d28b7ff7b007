//! A real Prometheus (Debian's `prometheus`) scrapes a live two-shard Fors relay's
//! MetricsPort while Tor channels carry traffic, and the values are queried back through
//! Prometheus's own API: C tor's `tor_relay_*` families are there, with C tor's labels and
//! values that agree with Fors's own per-shard series; the per-shard CPU time parses and
//! is positive for both shards; the cell queueing delay histogram counts the relay cells
//! the relay sent (ENDs answering BEGINs on a CREATE_FAST circuit); every scrape succeeded
//! (Prometheus accepted the whole exposition).
//!
//! Loopback only (the relay's authorities are unused 127.0.0.1 ports); every wait is
//! bounded. Needs `prometheus` (`scripts/setup-debian.sh`): without it the test fails under
//! `CI=true` and prints `SKIPPED:` otherwise.

mod daemon_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use daemon_common::prometheus::{prom_query, start_prometheus};
use daemon_common::skip_common::{have, skip};
use daemon_common::{free_port, open_channel_and_create, standalone_torrc, Fors, TempDir};
use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::fast::CreateFastClient;
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer};
use fors::keys::{KeyParams, RelayKeys};
use fors::proto::channel::{
    CellQueue, Channel, ChannelConfig, ChannelEvent, ChannelSink, ExpectedPeer, LinkContext,
};

const TEST: &str = "prometheus_reads_c_tor_families_after_traffic";
const START: Duration = Duration::from_secs(60);
/// Channels opened (each with a CREATE_FAST circuit).
const CHANNELS: u64 = 4;

/// Relay cells sent to the relay whose answers (END: this relay is no exit) it sends back.
const BEGINS: u64 = 5;

#[derive(Default)]
struct Sink {
    events: Vec<ChannelEvent>,
    cells: Vec<(ChanCmd, [u8; CELL_BODY_LEN])>,
}

impl ChannelSink for Sink {
    fn cell(&mut self, _: CircId, cmd: ChanCmd, body: &mut [u8; CELL_BODY_LEN], _: &mut CellQueue) {
        self.cells.push((cmd, *body));
    }
    fn event(&mut self, e: ChannelEvent) {
        self.events.push(e);
    }
}

/// Opens a channel to the relay (as a relay with keys in `dir`), builds a CREATE_FAST
/// circuit with real keys and sends `BEGINS` BEGIN cells on it; returns the relay commands
/// of the answers (bounded: 30 s).
fn begins_answered(
    addr: SocketAddr,
    rsa: RsaIdentity,
    ed: Ed25519Identity,
    dir: &Path,
) -> Vec<RelayCmd> {
    let now = SystemTime::now();
    let keys = RelayKeys::load_or_create(dir, now, KeyParams::default()).unwrap();
    let ctx = LinkContext::new(
        keys.mint_link_certs(now).unwrap(),
        &[addr.ip()],
        ChannelConfig::default(),
    )
    .unwrap();
    let mut rng = rand::thread_rng();
    let expected = ExpectedPeer { rsa, ed: Some(ed) };
    let mut ch = Channel::new_initiator(Arc::new(ctx), expected, addr.ip(), now, &mut rng).unwrap();
    let mut sink = Sink::default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let circ_id = CircId(0x8000_0001);
    let mut fast = None;
    let mut layers = None;
    let mut answers = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 * 1024];
    while (answers.len() as u64) < BEGINS {
        assert!(Instant::now() < end, "no answers: {:?}", sink.events);
        if ch.is_open() && fast.is_none() && layers.is_none() {
            let (st, x) = CreateFastClient::start(&mut rng);
            let mut body = [0u8; CELL_BODY_LEN];
            body[..x.len()].copy_from_slice(&x);
            ch.send_cell(circ_id, ChanCmd::CREATE_FAST, &body).unwrap();
            fast = Some(st);
        }
        for (cmd, body) in std::mem::take(&mut sink.cells) {
            match cmd {
                ChanCmd::CREATED_FAST => {
                    let keys = fast.take().expect("one CREATE_FAST").finish(&body[..40]);
                    let mut c = Tor1ClientCircuit::new();
                    c.push_hop(Tor1ClientLayer::new(&keys.expect("CREATED_FAST's KH")));
                    for i in 0..BEGINS as u16 {
                        let mut b = [0u8; CELL_BODY_LEN];
                        let target = b"127.0.0.1:9\0\0\0\0\0";
                        v0::encode_with(&mut b, RelayCmd::BEGIN, i + 1, &mut rng, |o| {
                            o[..target.len()].copy_from_slice(target);
                            Ok(target.len())
                        })
                        .unwrap();
                        c.originate(0, &mut b).unwrap();
                        ch.send_cell(circ_id, ChanCmd::RELAY, &b).unwrap();
                    }
                    layers = Some(c);
                }
                ChanCmd::RELAY => {
                    let c = layers.as_mut().expect("a circuit");
                    let mut b = body;
                    assert_eq!(c.recognize(&mut b), Some(0), "our hop's cell");
                    answers.push(v0::parse(&b).unwrap().cmd);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut out = Vec::new();
        ch.write_output(&mut out);
        s.write_all(&out).unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!("relay closed the connection; events {:?}", sink.events),
            Ok(n) => {
                let _ = ch.handle_input(&buf[..n], SystemTime::now(), &mut rng, &mut sink);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    answers
}

/// The single value of `query`, if it has exactly one sample.
fn one(web: SocketAddr, query: &str) -> Option<f64> {
    match prom_query(web, query)?.as_slice() {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

#[test]
fn prometheus_reads_c_tor_families_after_traffic() {
    if !have("prometheus", "--version") {
        skip(
            TEST,
            "prometheus is not installed (apt-get install prometheus)",
        );
        return;
    }
    let tmp = TempDir::new("metrics-prometheus");
    let (or_port, m_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let text = standalone_torrc("ForsProm", tmp.path(), or_port, m_port)
        .metrics_port_policy("accept 127.0.0.1")
        .render();
    std::fs::write(&rc, text).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("the relay is running", START);
    let data = tmp.path().join("data");
    let fp_file = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let rsa = RsaIdentity::from_hex(fp_file.split_whitespace().nth(1).unwrap()).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();
    let maddr: SocketAddr = format!("127.0.0.1:{m_port}").parse().unwrap();
    let (_prom, web) = start_prometheus(tmp.path(), maddr);

    // Traffic: link handshakes and a CREATE_FAST circuit on each channel.
    let or_addr: SocketAddr = format!("127.0.0.1:{or_port}").parse().unwrap();
    let client = tmp.path().join("client");
    for _ in 0..CHANNELS {
        let (cmd, _) = open_channel_and_create(or_addr, rsa, ed, &client);
        assert_eq!(cmd, fors::cell::ChanCmd::CREATED_FAST);
    }
    // Relay cells the relay sends: ENDs answering BEGINs (it is no exit).
    let ends = begins_answered(or_addr, rsa, ed, &tmp.path().join("client2"));
    assert_eq!(ends, vec![RelayCmd::END; BEGINS as usize]);

    // Wait (bounded) until a scrape taken after the traffic is in Prometheus.
    // All over 127.0.0.1: C tor's socket-family label says ipv4.
    let created = "tor_relay_connections_total{type=\"OR\",direction=\"received\",\
                   state=\"created\",family=\"ipv4\"}";
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        if one(web, created).is_some_and(|v| v >= CHANNELS as f64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let v = one(web, created);
    assert!(
        v.is_some_and(|v| v >= CHANNELS as f64),
        "Prometheus never saw {CHANNELS} OR connections created: {v:?}"
    );

    // Traffic totals: present, non-trivial, and equal to the shards' own byte counters in
    // the same scrape (C tor's family is their relay-wide sum).
    for (dir, shard_field) in [("read", "recv_bytes"), ("written", "send_bytes")] {
        let q = format!("tor_relay_traffic_bytes{{direction=\"{dir}\"}}");
        let total = one(web, &q).unwrap_or(0.0);
        assert!(total > 4000.0, "{q} = {total}");
        // One render reads the shards' counters more than once: should a tick land in
        // between, the next scrape agrees (the traffic is over).
        let diff_q = format!("{q} - on() sum(fors_shard_{shard_field})");
        let mut diff = one(web, &diff_q);
        for _ in 0..5 {
            if diff == Some(0.0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1100));
            diff = one(web, &diff_q);
        }
        assert_eq!(
            diff,
            Some(0.0),
            "{q} is not the sum of fors_shard_{shard_field}"
        );
    }
    // Connections created agree with the handler's counter (no DoS refusals here), and
    // none is counted as IPv6 (one series: C tor's `direction="initiated"` ones exist too).
    assert_eq!(
        one(
            web,
            "tor_relay_connections_total{direction=\"received\",state=\"created\",family=\"ipv6\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        one(web, "sum(tor_relay_connections_total{state=\"rejected\"})"),
        Some(0.0)
    );
    assert_eq!(
        one(
            web,
            &format!("{created} - on() sum(fors_relay_connections_seen_total)")
        ),
        Some(0.0)
    );
    // The circuit gauge exists and is the sum of the shards' gauges.
    assert_eq!(
        one(
            web,
            "tor_relay_circuits_total{state=\"opened\"} - on() sum(fors_relay_circuits_open)"
        ),
        Some(0.0)
    );
    // Flags: C tor's nine types, all 0 (a relay that no consensus lists).
    let flags = prom_query(web, "tor_relay_flag").unwrap_or_default();
    let mut types: Vec<String> = flags
        .iter()
        .map(|(m, _)| m["type"].as_str().unwrap_or("").to_string())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "Authority",
            "Exit",
            "Fast",
            "Guard",
            "HSDir",
            "Running",
            "Stable",
            "Sybil",
            "V2Dir"
        ]
    );
    assert!(flags.iter().all(|(_, v)| *v == 0.0), "{flags:?}");
    // The other C tor families are present with their C labels.
    for (q, n) in [
        ("tor_relay_dos_total", 5),
        ("tor_relay_load_global_rate_limit_reached_total", 2),
        ("tor_relay_congestion_control_total", 2),
        ("tor_relay_exit_dns_error_total", 5),
        ("tor_relay_exit_dns_query_total", 1),
        ("tor_relay_destroy_cell_total", 1),
        ("tor_relay_circ_proto_violation_total", 1),
    ] {
        let got = prom_query(web, q).map(|v| v.len());
        assert_eq!(got, Some(n), "{q}");
    }
    // No C tor series carries a shard label, an address or a port.
    let all = prom_query(web, "{__name__=~\"tor_relay_.*\"}").unwrap_or_default();
    assert!(all.len() >= 30, "{} tor_relay_ series", all.len());
    for (m, _) in &all {
        let obj = m.as_object().unwrap();
        assert!(!obj.contains_key("shard"), "{m}");
        for (k, v) in obj {
            if k == "instance" {
                continue;
            }
            let v = v.as_str().unwrap_or("");
            assert!(!v.contains("127.0.0.1"), "{m}");
        }
    }
    // Per-shard CPU: both shards, in (float) seconds, above zero.
    let cpu = prom_query(web, "fors_shard_cpu_seconds_total").unwrap_or_default();
    assert_eq!(cpu.len(), 2, "{cpu:?}");
    let total_cpu: f64 = cpu.iter().map(|(_, v)| v).sum();
    assert!(total_cpu > 0.0, "{cpu:?}");
    // The cell queueing delay: the ENDs were counted (relay-wide and per shard, as
    // Prometheus histograms), and a quantile over them is a duration under a second (each
    // went out in the read that brought its BEGIN).
    let qd = "fors_relay_all_shards_cell_queue_delay_seconds";
    let mut count = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        count = one(web, &format!("{qd}_count"));
        if count.is_some_and(|v| v >= BEGINS as f64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        count.is_some_and(|v| v >= BEGINS as f64),
        "{qd}_count = {count:?}"
    );
    let per_shard = one(
        web,
        "sum(fors_relay_cell_queue_delay_seconds_count) - on() fors_relay_all_shards_cell_queue_delay_seconds_count",
    );
    assert_eq!(per_shard, Some(0.0), "the shards' series add up to the sum");
    let p99 = one(web, &format!("histogram_quantile(0.99, {qd}_bucket)"));
    eprintln!("cell queueing delay: {count:?} cells, p99 {p99:?} s");
    assert!(p99.is_some_and(|v| v > 0.0 && v < 1.0), "p99 {p99:?}");
    let buckets = prom_query(web, &format!("{qd}_bucket")).unwrap_or_default();
    assert_eq!(buckets.len(), 20, "19 bounds and +Inf: {buckets:?}");
    // Every scrape succeeded: Prometheus parsed every exposition it took.
    let failed = one(
        web,
        "count_over_time(up{job=\"fors\"}[5m]) - sum_over_time(up{job=\"fors\"}[5m])",
    );
    let scrapes = one(web, "count_over_time(up{job=\"fors\"}[5m])");
    eprintln!("prometheus: {scrapes:?} scrapes, {failed:?} failed; shard CPU {total_cpu} s");
    assert_eq!(failed, Some(0.0));
    f.drain(Duration::from_millis(100));
}
