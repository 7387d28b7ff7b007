//! `fors-relay-batch`: where crypting received RELAY cells together starts to pay, on this
//! CPU (the thresholds of `proto::circuit::relay_in`; results in `bench/RESULTS.md`).
//!
//! ```text
//! fors-relay-batch [crypto|core|all]          # wall time, fastest of many repetitions
//! fors-relay-batch core-one READ_LEN MODE     # one live-path configuration, for callgrind
//! fors-relay-batch cgo [REPS]                 # CGO on the live path, medians
//! ```
//!
//! * `crypto`: ns/cell of a middle's keystream run of N cells of one circuit
//!   (`forward_batch_tagged`) and of an exit's forward crypto over one cell each of N
//!   circuits, one call per cell against one multi-circuit call (`forward_multi_indexed`).
//! * `core`: ns/cell of the live path at an exit — `RelayCore` with 16 circuits, recognized
//!   DROP cells round-robin across them, fed in reads of N cells through
//!   `queue_relay_cell` + `flush_relay_cells` (batched) or `handle_cell` (one at a time).
//! * `core-one`: runs one `core` configuration (`batched` or `single`) 200 times, so
//!   `valgrind --tool=callgrind --toggle-collect='*feed_reads*'` counts its instructions.
//! * `cgo`: ns/cell of the live path on N CGO circuits (`RelayCore<RelayHop>`, ntor-v3
//!   circuits that negotiated CGO), cells round-robin across them in reads of K cells: a
//!   middle forwarding cells toward the exit, a middle relaying cells toward the client, and
//!   circuits ending here (DROP cells, every one recognized). Three ways on one core, the
//!   runs alternating (one repetition of each in turn): `handle_cell` per cell, the staged
//!   path with one run per circuit (`set_cgo_group_min(Some(usize::MAX))`) and the staged
//!   path grouped from two circuits on (`Some(2)`: the figures the relay's threshold,
//!   `HopCrypto::cgo_group_min_circuits`, was chosen from). Each figure is the median of the
//!   repetitions.
//!
//! Per-cell figures are the fastest of many short repetitions (as `fors bench-crypto`): on a
//! shared machine the minimum drops time lost to other processes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use fors::cell::chan::{Create2, Created2, HandshakeType};
use fors::cell::relay::msg::{Extend2, LinkSpec};
use fors::cell::relay::v1;
use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::fast::CreateFastClient;
use fors::crypto::handshake::{CircuitExtension, CircuitKeys, NtorV3Client, SubprotoCap};
use fors::crypto::handshake::{NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::cpu::Tor1Engine;
use fors::crypto::relay::{
    forward_multi_indexed, CellBody, Tor1ClientCircuit, Tor1ClientLayer, Tor1RelayCrypto,
};
use fors::exit::policy::ExitPolicy;
use fors::proto::circuit::{
    Action, ChanId, ChanInfo, CircuitConfig, CoreIo, ExtendDone, NextHop, NoNetworkView,
    PeerIdentity, RelayCore, RelayHop, RelayIdentity, ShardIdx,
};
use fors_testkit::cgo_ref::CgoClientCircuit;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Cells per timed repetition.
const CELLS: usize = 1024;
const REPS: usize = 101;
/// Circuits at the exit in the `core` figures.
const CORE_CIRCUITS: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let e = Tor1Engine::get();
    println!(
        "# engine: aes {:?}, sha1 {:?}, sha1_multi {:?}, multi_min_lanes {}",
        e.aes, e.sha1, e.sha1_multi, e.multi_min_lanes
    );
    match args.first().map(String::as_str).unwrap_or("all") {
        "crypto" => crypto(),
        "core" => core(),
        "all" => {
            crypto();
            core();
        }
        "cgo" => {
            let reps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(41);
            cgo(reps);
        }
        "cross" => {
            let reps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(41);
            cross(reps);
        }
        "cgo-one" => {
            // One middle-forward configuration, cells made once, for a profiler.
            let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
            let k: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
            let grouped = args.get(3).map(String::as_str) != Some("runs");
            let mut r = CgoRelay::new(n, true);
            r.core
                .set_cgo_group_min(Some(if grouped { 2 } else { usize::MAX }));
            let cells = r.cells(CELLS, CgoPath::MiddleForward);
            let feed = if grouped { Feed::Grouped } else { Feed::Runs };
            let t = timed(|| {
                for _ in 0..2000 {
                    let mut c = cells.clone();
                    feed_cgo(&mut r, &mut c, k, feed);
                }
            });
            println!(
                "cgo-one N={n} K={k} grouped={grouped}: {:.1} ns/cell (incl. a copy of the cells), {} grouped",
                t / (2000 * CELLS) as f64,
                r.core.metrics().cgo_cells_grouped
            );
        }
        "core-one" => {
            let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
            let batched = args.get(2).map(String::as_str) != Some("single");
            let mut ex = Exit::new(CORE_CIRCUITS);
            for _ in 0..200 {
                let cells = ex.cells(CELLS);
                feed_reads(&mut ex, cells, n, batched);
            }
            let m = ex.core.metrics();
            println!(
                "core-one read={n} batched={batched}: {} cells, {} batched, {} single",
                m.relay_in_cells, m.cells_crypted_batched, m.cells_crypted_single
            );
        }
        other => {
            eprintln!(
                "unknown mode {other}: crypto | core | all | core-one N batched|single | cgo [REPS] | cgo-one N K grouped|runs"
            );
            std::process::exit(2);
        }
    }
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64
}

/// Fastest of `REPS` repetitions, per cell.
fn per_cell(cells: usize, mut rep: impl FnMut() -> f64) -> f64 {
    rep(); // warm-up
    (0..REPS).map(|_| rep()).fold(f64::MAX, f64::min) / cells as f64
}

fn keys(rng: &mut StdRng) -> Tor1KeyMaterial {
    let mut k = [0u8; 92];
    rng.fill_bytes(&mut k);
    Tor1KeyMaterial::from_kdf_output(&k)
}

/// Client cells for `n` circuits, round by round, that each relay state recognizes.
fn recognized_cells(rng: &mut StdRng, n: usize) -> (Vec<Tor1RelayCrypto>, Vec<CellBody>) {
    let mut relays = vec![];
    let mut clients = vec![];
    for _ in 0..n {
        let k = keys(rng);
        relays.push(Tor1RelayCrypto::new(&k));
        let mut c = Tor1ClientCircuit::new();
        c.push_hop(Tor1ClientLayer::new(&k));
        clients.push(c);
    }
    let mut cells = vec![[0u8; CELL_BODY_LEN]; CELLS / n * n];
    for round in cells.chunks_exact_mut(n) {
        for (client, c) in clients.iter_mut().zip(round.iter_mut()) {
            rng.fill_bytes(c);
            c[1] = 0;
            c[2] = 0;
            client.originate(0, c).expect("hop 0");
        }
    }
    (relays, cells)
}

fn crypto() {
    let mut rng = StdRng::seed_from_u64(1);
    // Middle: runs of one circuit's cells (mostly unrecognized: random ciphertext).
    println!("middle forward, run of N cells of one circuit (forward_batch_tagged), ns/cell:");
    let k = keys(&mut rng);
    let mut relay = Tor1RelayCrypto::new(&k);
    let mut cells = vec![[0u8; CELL_BODY_LEN]; CELLS];
    for c in &mut cells {
        rng.fill_bytes(c);
    }
    let mut hits = vec![false; CELLS];
    let mut tags = vec![[0u8; 20]; CELLS];
    for n in [1, 2, 4, 8, 16, 32, 64, 128] {
        let v = per_cell(CELLS, || {
            timed(|| {
                for run in cells.chunks_exact_mut(n) {
                    black_box(relay.forward_batch_tagged(run, &mut hits[..n], &mut tags[..n]));
                }
            })
        });
        println!("  N={n:<4} {v:7.1}");
    }
    // Exit: one cell each of N circuits, each alone against one multi-circuit call.
    println!("exit forward, one cell each of N circuits, ns/cell: per-cell calls | forward_multi");
    for n in [1, 2, 3, 4, 5, 6, 8, 16] {
        let (fresh, cells) = recognized_cells(&mut rng, n);
        let circ: Vec<usize> = (0..n).collect();
        let mut hits = vec![false; n];
        let mut tags = vec![[0u8; 20]; n];
        let single = per_cell(cells.len(), || {
            let mut relays = fresh.clone();
            let mut work = cells.clone();
            timed(|| {
                for round in work.chunks_exact_mut(n) {
                    for (i, (r, c)) in relays.iter_mut().zip(round.chunks_exact_mut(1)).enumerate()
                    {
                        black_box(r.forward_batch_tagged(c, &mut hits[i..=i], &mut tags[i..=i]));
                    }
                }
            })
        });
        let multi = per_cell(cells.len(), || {
            let mut relays = fresh.clone();
            let mut work = cells.clone();
            timed(|| {
                for round in work.chunks_exact_mut(n) {
                    black_box(forward_multi_indexed(&mut relays, round, &circ, &mut hits));
                }
            })
        });
        println!("  N={n:<4} {single:7.1} | {multi:7.1}");
    }
}

/// An exit's circuit core with `n` circuits from one client channel.
struct Exit {
    core: RelayCore,
    chan: ChanInfo,
    clients: Vec<Tor1ClientCircuit>,
    rng: StdRng,
    next: usize,
}

impl Exit {
    fn new(n: usize) -> Exit {
        let mut rng = StdRng::seed_from_u64(7);
        let me = RelayIdentity {
            rsa: RsaIdentity([1; 20]),
            ed: Ed25519Identity([1; 32]),
        };
        let cfg = CircuitConfig {
            max_circuits: 64,
            ..CircuitConfig::for_tests()
        };
        let keys = Arc::new(NtorKeyMap::new(NtorKeyPair::generate(&mut rng), None));
        let mut core = RelayCore::new(
            cfg,
            me,
            keys,
            Arc::new(ExitPolicy::default()),
            NoNetworkView,
        );
        let chan = ChanInfo {
            id: ChanId(1),
            peer: PeerIdentity::Client,
            we_initiated: false,
        };
        let mut clients = vec![];
        for i in 0..n {
            let (st, x) = CreateFastClient::start(&mut rng);
            let mut body = [0u8; CELL_BODY_LEN];
            body[..20].copy_from_slice(&x);
            let mut out: Vec<Action> = Vec::new();
            let mut io = CoreIo::new(Instant::now(), &mut rng, &mut out);
            core.handle_cell(
                &chan,
                CircId(0x8000_0001 + i as u32),
                ChanCmd::CREATE_FAST,
                &mut body,
                &mut io,
            );
            let Some(Action::SendCell { body, .. }) = out.first() else {
                panic!("no CREATED_FAST: {out:?}")
            };
            let k = st.finish(&body[..40]).expect("CREATED_FAST checks");
            let mut c = Tor1ClientCircuit::new();
            c.push_hop(Tor1ClientLayer::new(&k));
            clients.push(c);
        }
        Exit {
            core,
            chan,
            clients,
            rng,
            next: 0,
        }
    }

    /// `m` DROP cells round-robin over the circuits (the next ones each circuit expects).
    fn cells(&mut self, m: usize) -> Vec<(CircId, CellBody)> {
        (0..m)
            .map(|_| {
                let i = self.next;
                self.next = (self.next + 1) % self.clients.len();
                let mut body = [0u8; CELL_BODY_LEN];
                v0::encode_with(&mut body, RelayCmd::DROP, 0, &mut self.rng, |_| Ok(0))
                    .expect("encodes");
                self.clients[i].originate(0, &mut body).expect("hop 0");
                (CircId(0x8000_0001 + i as u32), body)
            })
            .collect()
    }
}

/// The timed part: `cells` fed in reads of `n`.
#[inline(never)]
fn feed_reads(ex: &mut Exit, mut cells: Vec<(CircId, CellBody)>, n: usize, batched: bool) {
    let mut out: Vec<Action> = Vec::with_capacity(64);
    let mut rng = StdRng::seed_from_u64(9);
    let now = Instant::now();
    for read in cells.chunks_mut(n) {
        let mut io = CoreIo::new(now, &mut rng, &mut out);
        if batched {
            for (id, body) in read.iter() {
                ex.core
                    .queue_relay_cell(ex.chan.id, *id, ChanCmd::RELAY, body, &mut io);
            }
            ex.core.flush_relay_cells(&mut io);
        } else {
            for (id, body) in read.iter_mut() {
                ex.core
                    .handle_cell(&ex.chan, *id, ChanCmd::RELAY, body, &mut io);
            }
        }
        out.clear();
    }
}

fn core() {
    println!(
        "exit live path, {CORE_CIRCUITS} circuits, DROP cells round-robin, read of N cells, ns/cell: one at a time | batched"
    );
    for n in [1, 2, 4, 8, 16, 32, 64] {
        let mut fig = [0.0; 2];
        for (slot, batched) in [false, true].into_iter().enumerate() {
            let mut ex = Exit::new(CORE_CIRCUITS);
            fig[slot] = per_cell(CELLS, || {
                let cells = ex.cells(CELLS);
                timed(|| feed_reads(&mut ex, cells, n, batched))
            });
            let m = ex.core.metrics();
            assert_eq!(m.protocol_closes, 0, "every cell recognized");
        }
        println!("  N={n:<4} {:7.1} | {:7.1}", fig[0], fig[1]);
    }
}

// ------------------------------------------------------------------------------------ CGO

/// Where the CGO figures' cells go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CgoPath {
    /// From the client's side of middle circuits, on to the next hop (random ciphertext).
    MiddleForward,
    /// From the next hop of middle circuits, toward the client (random ciphertext).
    MiddleBackward,
    /// DROP cells for circuits that end here (each one recognized).
    Exit,
}

/// How a `cgo` figure feeds its cells.
#[derive(Clone, Copy)]
enum Feed {
    /// `handle_cell` per cell.
    Single,
    /// Staged reads, one run per circuit (grouping off).
    Runs,
    /// Staged reads, CGO circuits grouped from two circuits on.
    Grouped,
}

const NEXT: ChanId = ChanId(70);

/// A core with `n` CGO circuits from one relay channel, extended to a next hop (`middle`)
/// or ending here.
struct CgoRelay {
    core: RelayCore<RelayHop, NoNetworkView>,
    prev: ChanInfo,
    next: ChanInfo,
    clients: Vec<CgoClientCircuit>,
    rng: StdRng,
    next_circ: usize,
    /// The middle circuits' handles (for cells another shard delivers).
    handles: Vec<fors::proto::circuit::CircHandle>,
}

impl CgoRelay {
    fn new(n: usize, middle: bool) -> CgoRelay {
        CgoRelay::with(n, middle, true, 0)
    }

    /// `n` circuits, CGO or tor1 (`cgo`), whose next hop (if `middle`) is on shard `shard`.
    fn with(n: usize, middle: bool, cgo: bool, shard: u16) -> CgoRelay {
        let mut rng = StdRng::seed_from_u64(11);
        let me = RelayIdentity {
            rsa: RsaIdentity([1; 20]),
            ed: Ed25519Identity([1; 32]),
        };
        let cfg = CircuitConfig {
            max_circuits: 64,
            pool_cells: 4096,
            extend_allow_private: true,
            ..CircuitConfig::for_tests()
        };
        let keys = Arc::new(NtorKeyMap::new(NtorKeyPair::generate(&mut rng), None));
        let mut core = RelayCore::new(
            cfg,
            me,
            keys.clone(),
            Arc::new(ExitPolicy::default()),
            NoNetworkView,
        );
        let peer = |b: u8| PeerIdentity::Relay {
            rsa: RsaIdentity([b; 20]),
            ed: Ed25519Identity([b; 32]),
        };
        let prev = ChanInfo {
            id: ChanId(1),
            peer: peer(0x33),
            we_initiated: false,
        };
        let next = ChanInfo {
            id: NEXT,
            peer: peer(0x44),
            we_initiated: true,
        };
        let all_exts = [
            CircuitExtension::CcRequest,
            CircuitExtension::SubprotoRequest(vec![SubprotoCap {
                protocol_id: 2,
                capability: 6,
            }]),
        ];
        let exts = if cgo { &all_exts[..] } else { &all_exts[..1] };
        let mut handles = vec![];
        let mut clients = vec![];
        let mut out: Vec<Action> = Vec::new();
        for i in 0..n {
            let id = CircId(0x8000_0001 + i as u32);
            let (hs, skin) = NtorV3Client::start(&mut rng, &me.ed, keys.current().public(), exts)
                .expect("ntor-v3 starts");
            let mut body = [0u8; CELL_BODY_LEN];
            Create2 {
                htype: HandshakeType::NTOR_V3,
                hdata: &skin,
            }
            .encode(&mut body)
            .expect("CREATE2 encodes");
            out.clear();
            {
                let mut io = CoreIo::new(Instant::now(), &mut rng, &mut out);
                core.handle_cell(&prev, id, ChanCmd::CREATE2, &mut body, &mut io);
                core.process_onion_queue(&mut io);
            }
            let Some(Action::SendCell { body: reply, .. }) = out.first() else {
                panic!("no CREATED2: {out:?}")
            };
            let (keys, _) = hs
                .finish_circ(Created2::parse(reply).expect("CREATED2 parses").hdata, cgo)
                .expect("CREATED2 checks");
            let mut client = CgoClientCircuit::default();
            match &keys {
                CircuitKeys::Cgo(k) => client.push(k),
                // tor1 (the `cross` figures): only backward cells of random bytes, no client.
                CircuitKeys::Tor1(_) if !cgo => {}
                CircuitKeys::Tor1(_) => panic!("CGO was not negotiated"),
            }
            if middle {
                let specs = [
                    LinkSpec::Ipv4("127.0.0.1:9002".parse().expect("address")),
                    LinkSpec::RsaId(RsaIdentity([0x44; 20])),
                    LinkSpec::Ed25519Id(Ed25519Identity([0x44; 32])),
                ];
                let mut ext = [0u8; 490];
                let len = Extend2::encode(
                    &specs,
                    &Create2 {
                        htype: HandshakeType::NTOR_V3,
                        hdata: &[7u8; 100],
                    },
                    &mut ext,
                )
                .expect("EXTEND2 encodes");
                let mut body = [0u8; CELL_BODY_LEN];
                if cgo {
                    v1::encode(&mut body, RelayCmd::EXTEND2, 0, &ext[..len], &mut rng)
                        .expect("v1 encodes");
                    client.originate(0, u8::from(ChanCmd::RELAY_EARLY), &mut body);
                } else {
                    let CircuitKeys::Tor1(k) = &keys else {
                        unreachable!("tor1 checked above")
                    };
                    v0::encode(&mut body, RelayCmd::EXTEND2, 0, &ext[..len], &mut rng)
                        .expect("v0 encodes");
                    let mut l = Tor1ClientCircuit::new();
                    l.push_hop(Tor1ClientLayer::new(k));
                    l.originate(0, &mut body).expect("one hop");
                }
                out.clear();
                {
                    let mut io = CoreIo::new(Instant::now(), &mut rng, &mut out);
                    core.handle_cell(&prev, id, ChanCmd::RELAY_EARLY, &mut body, &mut io);
                }
                let Some(Action::Extend { circ, .. }) = out.first().cloned() else {
                    panic!("no extend: {out:?}")
                };
                let mut created = [0u8; CELL_BODY_LEN];
                Created2 { hdata: &[5u8; 64] }
                    .encode(&mut created)
                    .expect("CREATED2 encodes");
                let mut io = CoreIo::new(Instant::now(), &mut rng, &mut out);
                core.extend_result(
                    circ,
                    Ok(ExtendDone {
                        next: NextHop {
                            chan: NEXT,
                            shard: ShardIdx(shard),
                            circ_id: CircId(0x100 + i as u32),
                        },
                        created2: &created,
                    }),
                    &mut io,
                )
                .expect("extend completes");
                handles.push(circ);
            }
            clients.push(client);
        }
        CgoRelay {
            core,
            prev,
            next,
            clients,
            rng,
            next_circ: 0,
            handles,
        }
    }

    /// `m` cells round-robin over the circuits, for `path`.
    fn cells(&mut self, m: usize, path: CgoPath) -> Vec<(ChanId, CircId, CellBody)> {
        (0..m)
            .map(|_| {
                let i = self.next_circ;
                self.next_circ = (self.next_circ + 1) % self.clients.len();
                let mut body = [0u8; CELL_BODY_LEN];
                match path {
                    CgoPath::MiddleForward => {
                        self.rng.fill_bytes(&mut body);
                        (self.prev.id, CircId(0x8000_0001 + i as u32), body)
                    }
                    CgoPath::MiddleBackward => {
                        self.rng.fill_bytes(&mut body);
                        (NEXT, CircId(0x100 + i as u32), body)
                    }
                    CgoPath::Exit => {
                        v1::encode(&mut body, RelayCmd::DROP, 0, &[], &mut self.rng)
                            .expect("v1 encodes");
                        self.clients[i].originate(0, u8::from(ChanCmd::RELAY), &mut body);
                        (self.prev.id, CircId(0x8000_0001 + i as u32), body)
                    }
                }
            })
            .collect()
    }
}

/// The timed part of a `cgo` figure: `cells` fed in reads of `k` as `feed` says.
#[inline(never)]
fn feed_cgo(r: &mut CgoRelay, cells: &mut [(ChanId, CircId, CellBody)], k: usize, feed: Feed) {
    let mut out: Vec<Action> = Vec::with_capacity(64);
    let mut rng = StdRng::seed_from_u64(9);
    let now = Instant::now();
    for read in cells.chunks_mut(k) {
        let mut io = CoreIo::new(now, &mut rng, &mut out);
        match feed {
            Feed::Single => {
                for (chan, id, body) in read.iter_mut() {
                    let info = if *chan == NEXT { &r.next } else { &r.prev };
                    r.core.handle_cell(info, *id, ChanCmd::RELAY, body, &mut io);
                }
            }
            Feed::Runs | Feed::Grouped => {
                for (chan, id, body) in read.iter() {
                    r.core
                        .queue_relay_cell(*chan, *id, ChanCmd::RELAY, body, &mut io);
                }
                r.core.flush_relay_cells(&mut io);
            }
        }
        out.clear();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cgo(reps: usize) {
    println!(
        "# CGO live path: cells round-robin over N CGO circuits in reads of K; ns/cell, median of {reps} alternating repetitions of {CELLS} cells"
    );
    println!(
        "# group kernel available: {}",
        fors::crypto::relay::cgo::group_kernel_available()
    );
    for (path, name) in [
        (CgoPath::MiddleForward, "middle forward"),
        (CgoPath::MiddleBackward, "middle backward"),
        (CgoPath::Exit, "exit (recognized DROP)"),
    ] {
        println!(
            "{name}: N circuits, K cells per read: one at a time | runs | grouped | runs/grouped"
        );
        for n in [1, 2, 3, 4, 8, 16] {
            for k in [2, 3, 4, 8, 16, 64] {
                let mut r = CgoRelay::new(n, path != CgoPath::Exit);
                let mut figs = [vec![], vec![], vec![]];
                let before = r.core.metrics().clone();
                for rep in 0..=reps {
                    for (slot, feed) in [Feed::Single, Feed::Runs, Feed::Grouped]
                        .into_iter()
                        .enumerate()
                    {
                        r.core.set_cgo_group_min(match feed {
                            Feed::Grouped => Some(2),
                            _ => Some(usize::MAX),
                        });
                        let mut cells = r.cells(CELLS, path);
                        let t = timed(|| feed_cgo(&mut r, &mut cells, k, feed));
                        // Repetition 0 warms up.
                        if rep > 0 {
                            figs[slot].push(t / CELLS as f64);
                        }
                    }
                }
                let m = r.core.metrics();
                assert_eq!(m.protocol_closes, before.protocol_closes, "no cell refused");
                let [a, b, c] = figs.map(|mut v| median(&mut v));
                println!(
                    "  N={n:<3} K={k:<3} {a:7.1} | {b:7.1} | {c:7.1} | {:5.2}   (grouped cells {})",
                    b / c,
                    m.cgo_cells_grouped - before.cgo_cells_grouped
                );
            }
        }
    }
}

/// The timed part of a `cross` figure: backward cells another shard delivered, in drains of
/// `k`: one at a time (`handle_next_hop_cell`, the path before cross-shard staging) or staged
/// per drain (`queue_next_hop_cell` + `flush_relay_cells`, as `on_cross_shard` does now).
#[inline(never)]
fn feed_cross(r: &mut CgoRelay, cells: &mut [(usize, CellBody)], k: usize, staged: bool) {
    let mut out: Vec<Action> = Vec::with_capacity(64);
    let mut rng = StdRng::seed_from_u64(9);
    let now = Instant::now();
    for drain in cells.chunks_mut(k) {
        let mut io = CoreIo::new(now, &mut rng, &mut out);
        for (i, body) in drain.iter_mut() {
            let h = r.handles[*i];
            if staged {
                r.core.queue_next_hop_cell(h, body, &mut io);
            } else {
                let _ = r
                    .core
                    .handle_next_hop_cell(h, ChanCmd::RELAY, body, &mut io);
            }
        }
        r.core.flush_relay_cells(&mut io);
        out.clear();
    }
}

fn cross(reps: usize) {
    println!(
        "# backward cells from another shard, round-robin over N middle circuits in drains of K; ns/cell, median of {reps} alternating repetitions of {CELLS} cells"
    );
    for cgo in [false, true] {
        println!(
            "{}: N circuits, K cells per drain: one at a time | staged | one/staged",
            if cgo { "CGO" } else { "tor1" }
        );
        for n in [1, 4, 16] {
            for k in [4, 16, 64] {
                let mut r = CgoRelay::with(n, true, cgo, 1);
                let mut figs = [vec![], vec![]];
                for rep in 0..=reps {
                    for (slot, staged) in [false, true].into_iter().enumerate() {
                        let mut cells: Vec<(usize, CellBody)> = (0..CELLS)
                            .map(|j| {
                                let mut b = [0u8; CELL_BODY_LEN];
                                r.rng.fill_bytes(&mut b);
                                (j % n, b)
                            })
                            .collect();
                        let t = timed(|| feed_cross(&mut r, &mut cells, k, staged));
                        if rep > 0 {
                            figs[slot].push(t / CELLS as f64);
                        }
                    }
                }
                let m = r.core.metrics();
                assert_eq!(m.protocol_closes, 0, "no cell refused");
                let [a, b] = figs.map(|mut v| median(&mut v));
                println!(
                    "  N={n:<3} K={k:<3} {a:7.1} | {b:7.1} | {:5.2}   (cross stages {}, grouped cells {})",
                    a / b,
                    m.relay_in_cross_batches,
                    m.cgo_cells_grouped
                );
            }
        }
    }
}
