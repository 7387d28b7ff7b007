//! `fors-relay-batch`: where crypting received RELAY cells together starts to pay, on this
//! CPU (the thresholds of `proto::circuit::relay_in`; results in `bench/RESULTS.md`).
//!
//! ```text
//! fors-relay-batch [crypto|core|all]          # wall time, fastest of many repetitions
//! fors-relay-batch core-one READ_LEN MODE     # one live-path configuration, for callgrind
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
//!
//! Per-cell figures are the fastest of many short repetitions (as `fors bench-crypto`): on a
//! shared machine the minimum drops time lost to other processes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::fast::CreateFastClient;
use fors::crypto::handshake::{NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::cpu::Tor1Engine;
use fors::crypto::relay::{
    forward_multi_indexed, CellBody, Tor1ClientCircuit, Tor1ClientLayer, Tor1RelayCrypto,
};
use fors::exit::policy::ExitPolicy;
use fors::proto::circuit::{
    Action, ChanId, ChanInfo, CircuitConfig, CoreIo, NoNetworkView, PeerIdentity, RelayCore,
    RelayIdentity,
};
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
            eprintln!("unknown mode {other}: crypto | core | all | core-one N batched|single");
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
            ..CircuitConfig::default()
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
