//! MaxMemInQueues on a live relay (issue #9 point 5): clients that stop reading make the
//! relay queue cells for them; the relay-wide cap bounds that memory, and the OOM handler
//! (C tor's `circuits_handle_oom`) closes the circuits whose oldest queued cell is oldest,
//! with DESTROY RESOURCELIMIT, while a circuit whose client reads keeps working.
//!
//! One standalone Fors on 127.0.0.1 (two shards sharing one cap, lowered to 8 MB with
//! `TestingMaxMemInQueues`, honoured only under `TestingTorNetwork`, because 256 MB is slow
//! to fill in a debug build on a shared machine). The test client builds circuits client →
//! Fors → B, where B is the test's own relay (a responder channel with fresh relay keys,
//! answering CREATE2 with a CREATED2 the client never checks). B then sends RELAY cells
//! backward on every circuit, as an exit streaming data would. One client link reads, the
//! other ("slow": a 16 KiB receive buffer) never does, so Fors must queue its cells.
//! (A client cannot fill the queues toward itself by sending requests: Fors stops reading
//! a channel whose own output is backed up.)
//!
//! Then a SIGHUP halves the cap, and the relay frees down to 90 % of it.
//!
//! No `tor` needed. Randomness (CREATE_FAST keys, cell bodies) comes from a seeded RNG
//! whose seed is printed.

mod daemon_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use daemon_common::raw_link::{fixed_cell, LinkRead, RawLink};
use daemon_common::{free_port, http_get, metric, standalone_torrc, Fors, TempDir};
use fors::cell::chan::{Created2, DestroyReason, HandshakeType};
use fors::cell::relay::msg::LinkSpec;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::keys::{KeyParams, RelayKeys};
use fors::proto::channel::{
    CellQueue, Channel, ChannelConfig, ChannelEvent, ChannelSink, LinkContext,
};
use fors_testkit::circuit::{ClientCircuit, Handshake};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// The cap under test (`TestingMaxMemInQueues`).
const CAP_BYTES: u64 = 8 << 20;
/// Circuits of the slow client, and cells B sends on each (below the per-circuit queue
/// bound, 2000 cells in the generic profile, so the memory cap is what closes them).
const SLOW_CIRCUITS: u32 = 40;
const CELLS_PER_CIRCUIT: u32 = 1200;
/// How long any one step may take on a loaded machine.
const STEP: Duration = Duration::from_secs(60);

fn torrc(dir: &Path, nick: &str, or_port: u16, metrics_port: u16, extra: &str) -> String {
    // All cores (no NumCPUs), as a relay runs by default.
    standalone_torrc(nick, dir, or_port, metrics_port)
        .unset("NumCPUs")
        .metrics_port_policy("accept 127.0.0.1")
        .raw(extra)
        .render()
}

struct Relay {
    daemon: Fors,
    rc: std::path::PathBuf,
    or: SocketAddr,
    metrics: SocketAddr,
}

fn start(dir: &Path, nick: &str, extra: &str) -> Relay {
    std::fs::create_dir_all(dir).unwrap();
    let (or_port, m_port) = (free_port(), free_port());
    let rc = dir.join("torrc");
    std::fs::write(&rc, torrc(dir, nick, or_port, m_port, extra)).unwrap();
    let mut daemon = Fors::start(&["-f", rc.to_str().unwrap()]);
    daemon.wait_for("the relay is running", Duration::from_secs(120));
    Relay {
        daemon,
        rc,
        or: SocketAddr::from(([127, 0, 0, 1], or_port)),
        metrics: SocketAddr::from(([127, 0, 0, 1], m_port)),
    }
}

/// What the test's next-hop relay B saw and does.
#[derive(Default)]
struct HopState {
    /// Circuit IDs Fors created on B, in order.
    circuits: Vec<u32>,
    /// DESTROYs Fors sent B: circuit ID and reason.
    destroys: Vec<(u32, DestroyReason)>,
    /// Cells to send backward on each circuit (index into `circuits`), and sent so far.
    plan: Vec<u32>,
    sent: Vec<u32>,
    error: Option<String>,
}

struct Hop {
    addr: SocketAddr,
    rsa: RsaIdentity,
    ed: Ed25519Identity,
    state: Arc<Mutex<HopState>>,
    stop: Arc<AtomicBool>,
    /// Cells sent on circuit 0 (the reading client's) in total.
    sent_first: Arc<AtomicU64>,
}

struct HopSink<'a> {
    st: &'a Mutex<HopState>,
}

impl ChannelSink for HopSink<'_> {
    fn cell(
        &mut self,
        c: CircId,
        cmd: ChanCmd,
        body: &mut [u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        let mut st = self.st.lock().unwrap();
        if cmd == ChanCmd::CREATE2 {
            let mut reply = [0u8; CELL_BODY_LEN];
            Created2 { hdata: &[5u8; 64] }.encode(&mut reply).unwrap();
            if out.send_cell(c, ChanCmd::CREATED2, &reply).is_err() {
                st.error = Some("B's output full at CREATED2".into());
            }
            st.circuits.push(c.0);
            st.plan.push(0);
            st.sent.push(0);
        } else if cmd == ChanCmd::DESTROY {
            st.destroys.push((c.0, DestroyReason::from(body[0])));
        }
    }
    fn event(&mut self, e: ChannelEvent) {
        if let ChannelEvent::Closed(e) = e {
            self.st.lock().unwrap().error = Some(format!("B's channel closed: {e}"));
        }
    }
}

/// Starts relay B: accepts one channel (Fors's), answers CREATE2s, records DESTROYs and
/// sends backward cells as `plan` says, round-robin, as fast as Fors takes them.
fn start_hop(dir: &Path, seed: u64) -> Hop {
    let now = SystemTime::now();
    let keys = RelayKeys::load_or_create(dir, now, KeyParams::default()).unwrap();
    let ctx = Arc::new(
        LinkContext::new(
            keys.mint_link_certs(now).unwrap(),
            &["127.0.0.1".parse().unwrap()],
            ChannelConfig::default(),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(HopState::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent_first = Arc::new(AtomicU64::new(0));
    let (st, stop2, first) = (state.clone(), stop.clone(), sent_first.clone());
    std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xB);
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + 10 * STEP;
        let (mut s, peer) = loop {
            match listener.accept() {
                Ok(x) => break x,
                Err(_) if Instant::now() < end && !stop2.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    st.lock().unwrap().error = Some(format!("no channel from Fors: {e}"));
                    return;
                }
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        s.set_write_timeout(Some(STEP)).unwrap();
        let mut ch = Channel::new_responder(ctx, peer.ip(), SystemTime::now()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        let mut body = [0u8; CELL_BODY_LEN];
        let mut next = 0usize;
        while Instant::now() < end && !stop2.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => {
                    st.lock().unwrap().error = Some("Fors closed B's channel".into());
                    return;
                }
                Ok(n) => {
                    let _ = ch.handle_input(
                        &buf[..n],
                        SystemTime::now(),
                        &mut rng,
                        &mut HopSink { st: &st },
                    );
                }
                Err(_) => {}
            }
            // Backward cells, round-robin over circuits with cells left to send, while
            // the channel's output queue takes them.
            if ch.is_open() {
                let mut g = st.lock().unwrap();
                let n = g.circuits.len();
                let mut queued = 0;
                for _ in 0..n {
                    if queued >= 256 {
                        break;
                    }
                    next = (next + 1) % n;
                    if g.sent[next] < g.plan[next] {
                        rng.fill_bytes(&mut body);
                        if ch
                            .send_cell(CircId(g.circuits[next]), ChanCmd::RELAY, &body)
                            .is_err()
                        {
                            break;
                        }
                        g.sent[next] += 1;
                        if next == 0 {
                            first.fetch_add(1, Ordering::Relaxed);
                        }
                        queued += 1;
                    }
                }
            }
            out.clear();
            ch.write_output(&mut out);
            if !out.is_empty() && s.write_all(&out).is_err() {
                st.lock().unwrap().error = Some("write to Fors timed out".into());
                return;
            }
        }
    });
    Hop {
        addr,
        rsa: keys.rsa_identity(),
        ed: keys.ed25519_identity(),
        state,
        stop,
        sent_first,
    }
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A client link to Fors; `rcvbuf`: the socket's receive buffer (small for the slow one).
fn link(to: SocketAddr, rcvbuf: Option<usize>) -> RawLink {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    sock.connect_timeout(&to.into(), STEP).unwrap();
    let tcp: TcpStream = sock.into();
    RawLink::over_tcp(tcp, STEP)
        .and_then(|l| l.client_handshake(to.ip(), STEP))
        .unwrap()
}

/// Next non-padding cell, or panic.
fn next_cell(l: &mut RawLink, limit: Duration) -> (u32, ChanCmd, Vec<u8>) {
    let end = Instant::now() + limit;
    loop {
        match l.read_cell(end.saturating_duration_since(Instant::now())) {
            LinkRead::Cell { cmd, .. } if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
            LinkRead::Cell { circ_id, cmd, body } => return (circ_id.0, cmd, body),
            other => panic!("no cell: {other:?}"),
        }
    }
}

/// Builds circuit `id` client → Fors → B on `l` (CREATE_FAST, then EXTEND2 to B with an
/// onionskin B does not check) and waits for EXTENDED2.
fn build(l: &mut RawLink, id: u32, hop: &Hop, rng: &mut StdRng) {
    let mut circ = ClientCircuit::new(CircId(id));
    let (cmd, body) = circ.create(rng, &Handshake::Fast).unwrap();
    assert!(l.send(&fixed_cell(id, cmd, &body)));
    let (got, cmd, body) = next_cell(l, STEP);
    assert_eq!((got, cmd), (id, ChanCmd::CREATED_FAST));
    circ.created(cmd, &body).unwrap();
    let SocketAddr::V4(b) = hop.addr else {
        unreachable!()
    };
    let mut skin = [0u8; 84];
    rng.fill_bytes(&mut skin);
    let specs = [
        LinkSpec::Ipv4(SocketAddrV4::new(*b.ip(), b.port())),
        LinkSpec::RsaId(hop.rsa),
        LinkSpec::Ed25519Id(hop.ed),
    ];
    let body = circ
        .extend_raw(rng, &specs, HandshakeType::NTOR, &skin)
        .unwrap();
    assert!(l.send(&fixed_cell(id, ChanCmd::RELAY_EARLY, &body)));
    let (got, cmd, body) = next_cell(l, STEP);
    assert_eq!((got, cmd), (id, ChanCmd::RELAY), "extend of {id:#x}");
    let mut body: [u8; CELL_BODY_LEN] = body.try_into().unwrap();
    let r = circ.open(&mut body).unwrap();
    assert_eq!((r.hop, r.cmd), (0, RelayCmd::EXTENDED2));
}

/// Reads what is waiting on the reading client's link: RELAY cells on `id` counted;
/// anything else on it is a failure.
fn drain_good(l: &mut RawLink, id: u32, got: &mut u64, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match l.read_cell(Duration::from_millis(50)) {
            LinkRead::Cell { circ_id, cmd, .. } if circ_id.0 == id && cmd == ChanCmd::RELAY => {
                *got += 1
            }
            LinkRead::Cell { cmd, .. } if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
            LinkRead::Cell { circ_id, cmd, body } => {
                return Err(format!(
                    "reading client got {cmd} on {:#x} ({})",
                    circ_id.0, body[0]
                ))
            }
            LinkRead::TimedOut => return Ok(()),
            LinkRead::Closed(how) => return Err(format!("reading client's link closed: {how}")),
        }
    }
    Ok(())
}

fn sum(text: &str, series: &str) -> u64 {
    metric(text, series).unwrap_or(0)
}

#[test]
fn slow_readers_hit_the_memory_cap_and_the_oldest_circuits_are_destroyed() {
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().next_u64());
    eprintln!("seed {seed} (FORS_TEST_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = TempDir::new("oom");
    let hop = start_hop(&tmp.path().join("b"), seed);
    let mut a = start(
        &tmp.path().join("a"),
        "ForsOom",
        &format!("NumCPUs 2\nTestingMaxMemInQueues {} MB\n", CAP_BYTES >> 20),
    );
    a.daemon.wait_for("MaxMemInQueues is 8 MB (Testing)", STEP);
    let cap_cells = CAP_BYTES / fors::proto::circuit::CELL_MEM_COST;

    // B's circuit 0: the reading client's; 1..=40: the slow client's, in that order.
    let mut good = link(a.or, None);
    let good_id = 0x8000_0001;
    build(&mut good, good_id, &hop, &mut rng);
    let mut slow = link(a.or, Some(16 * 1024));
    let ids: Vec<u32> = (0..SLOW_CIRCUITS).map(|k| 0x8000_0100 + k).collect();
    for &id in &ids {
        build(&mut slow, id, &hop, &mut rng);
    }
    assert_eq!(hop.state.lock().unwrap().circuits.len(), ids.len() + 1);
    let rss0 = rss_kib(a.daemon.pid());
    eprintln!("Fors before: RSS {rss0} KiB; cap {cap_cells} cells");

    // B streams to everyone; the slow client never reads.
    {
        let mut st = hop.state.lock().unwrap();
        st.plan[0] = u32::MAX;
        for p in &mut st.plan[1..] {
            *p = CELLS_PER_CIRCUIT;
        }
    }
    let (mut rss_peak, mut reserved_peak, mut good_cells) = (rss0, 0u64, 0u64);
    let total = u64::from(SLOW_CIRCUITS) * u64::from(CELLS_PER_CIRCUIT);
    let flood = Instant::now();
    let mut m = String::new();
    let mut quiet = 0;
    while flood.elapsed() < 5 * STEP {
        drain_good(
            &mut good,
            good_id,
            &mut good_cells,
            Duration::from_millis(200),
        )
        .unwrap();
        rss_peak = rss_peak.max(rss_kib(a.daemon.pid()));
        m = http_get(a.metrics, "/metrics");
        reserved_peak = reserved_peak.max(sum(&m, "fors_relay_all_shards_cell_buffers_reserved"));
        let st = hop.state.lock().unwrap();
        assert!(st.error.is_none(), "{:?}", st.error);
        let sent: u64 = st.sent[1..].iter().map(|&n| u64::from(n)).sum();
        // Done once B sent everything and a few more samples were taken.
        if sent >= total {
            quiet += 1;
            if quiet > 8 {
                break;
            }
        }
    }
    let sent_slow: u64 = hop.state.lock().unwrap().sent[1..]
        .iter()
        .map(|&n| u64::from(n))
        .sum();
    let oom = sum(
        &m,
        "fors_relay_all_shards_circuits_killed_total{reason=\"oom\"}",
    );
    let overflow = sum(
        &m,
        "fors_relay_all_shards_circuits_killed_total{reason=\"queue_overflow\"}",
    );
    eprintln!(
        "flood: {:.1?}; B sent {sent_slow} cells to the slow client; Fors RSS peak {rss_peak} \
         KiB (+{} KiB); cell buffers reserved peak {reserved_peak} of {cap_cells}; queued now \
         {}; circuits killed: oom {oom}, queue overflow {overflow}; reading client got \
         {good_cells} cells of {} sent",
        flood.elapsed(),
        rss_peak.saturating_sub(rss0),
        sum(&m, "fors_relay_all_shards_queued_cells"),
        hop.sent_first.load(Ordering::Relaxed),
    );
    for shard in 0..2 {
        let g = |name: &str| sum(&m, &format!("{name}{{shard=\"{shard}\"}}"));
        eprintln!(
            "shard {shard}: circuits {}, queued {}, buffers reserved {}, oom kills {}",
            g("fors_relay_circuits_open"),
            g("fors_relay_queued_cells"),
            g("fors_relay_cell_buffers_reserved"),
            sum(
                &m,
                &format!("fors_relay_circuits_killed_total{{shard=\"{shard}\",reason=\"oom\"}}")
            ),
        );
    }
    assert_eq!(sent_slow, total, "B could not send everything");
    assert!(oom > 0, "the slow readers never hit the cap");
    assert_eq!(
        overflow, 0,
        "the per-circuit bound, not the cap, closed circuits"
    );
    assert!(reserved_peak <= cap_cells, "{reserved_peak} > {cap_cells}");
    // The queued cells are bounded by the cap; TLS and channel buffers come on top.
    let bound_kib = (CAP_BYTES >> 10) + 32 * 1024;
    assert!(
        rss_peak.saturating_sub(rss0) <= bound_kib,
        "RSS grew {} KiB (bound {bound_kib} KiB)",
        rss_peak - rss0
    );
    // The reading client's circuit was never a victim and still flows.
    let before = good_cells;
    drain_good(&mut good, good_id, &mut good_cells, Duration::from_secs(2)).unwrap();
    assert!(good_cells > before, "the reading client's circuit stopped");

    // Fors told B of each circuit it closed, with RESOURCELIMIT. (Which go first, the
    // oldest queued cell, is checked in tests/circuit_core.rs: here the stamps of B's
    // round-robin cells tie within a millisecond, so the order is printed only.)
    for _ in 0..100 {
        if hop.state.lock().unwrap().destroys.len() as u64 >= oom {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = hop.state.lock().unwrap();
    let victims: Vec<usize> = st
        .destroys
        .iter()
        .map(|&(c, why)| {
            assert_eq!(why, DestroyReason::ResourceLimit, "B: DESTROY on {c:#x}");
            st.circuits.iter().position(|&x| x == c).unwrap()
        })
        .collect();
    eprintln!("victims in B's circuit order (1..=40 slow, 0 the reader): {victims:?}");
    assert_eq!(victims.len() as u64, oom);
    assert!(
        !victims.contains(&0),
        "the reading client's circuit was closed"
    );
    drop(st);

    // MaxMemInQueues is live: halve the cap with SIGHUP; within a few ticks the shards
    // free their shares down to 90 % of the new cap.
    let text = std::fs::read_to_string(&a.rc).unwrap();
    let half = CAP_BYTES / 2;
    std::fs::write(
        &a.rc,
        text.replace(
            &format!("TestingMaxMemInQueues {} MB", CAP_BYTES >> 20),
            &format!("TestingMaxMemInQueues {} MB", half >> 20),
        ),
    )
    .unwrap();
    a.daemon.signal(libc::SIGHUP);
    a.daemon.wait_for(
        &format!("MaxMemInQueues is now {} MB (Testing)", half >> 20),
        STEP,
    );
    let target = half / fors::proto::circuit::CELL_MEM_COST * 9 / 10;
    let mut queued = u64::MAX;
    for _ in 0..100 {
        m = http_get(a.metrics, "/metrics");
        queued = sum(&m, "fors_relay_all_shards_queued_cells");
        if queued <= target {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let oom_after = sum(
        &m,
        "fors_relay_all_shards_circuits_killed_total{reason=\"oom\"}",
    );
    eprintln!(
        "after SIGHUP to {} MB: queued {queued} (90 %: {target}); oom kills {oom_after}",
        half >> 20
    );
    assert!(
        queued <= target,
        "{queued} cells queued after lowering the cap"
    );
    assert!(oom_after > oom);
    let oom = oom_after;

    // The slow client reads at last: a DESTROY RESOURCELIMIT for each circuit the cap
    // closed, among the RELAY cells queued before.
    let mut destroyed = Vec::new();
    let end = Instant::now() + 3 * STEP;
    while Instant::now() < end && (destroyed.len() as u64) < oom {
        match slow.read_cell(Duration::from_secs(10)) {
            LinkRead::Cell { circ_id, cmd, body } if cmd == ChanCmd::DESTROY => {
                assert!(ids.contains(&circ_id.0));
                assert_eq!(
                    DestroyReason::from(body[0]),
                    DestroyReason::ResourceLimit,
                    "circuit {:#x}",
                    circ_id.0
                );
                destroyed.push(circ_id.0);
            }
            LinkRead::Cell { cmd, .. } => assert!(
                matches!(cmd, ChanCmd::RELAY | ChanCmd::PADDING | ChanCmd::VPADDING),
                "{cmd}"
            ),
            LinkRead::TimedOut => break,
            LinkRead::Closed(how) => panic!("Fors closed the slow link: {how}"),
        }
    }
    assert_eq!(destroyed.len() as u64, oom, "DESTROYs the slow client got");
    assert!(a.daemon.child.try_wait().unwrap().is_none(), "Fors died");
    hop.stop.store(true, Ordering::Relaxed);
}
