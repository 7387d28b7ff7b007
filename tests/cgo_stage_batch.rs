//! CGO cells of many circuits crypted in groups of distinct circuits (CGO's interleaved
//! kernel) on two paths that used to crypt them one at a time, against the one-at-a-time
//! path, on twin cores keyed alike from one seed:
//! * exit DATA packaged from exit sockets (`RelayCore::stream_data`, the originate stage
//!   flushed by `flush_originated`): one twin flushes after every call (one cell at a time),
//!   the others stage a random number of calls per flush with grouping off, at the relay's
//!   threshold, and from two circuits on;
//! * backward cells of middle circuits whose next hop is on another shard, as a cross-shard
//!   drain delivers them (`RelayCore::queue_next_hop_cell` + `flush_relay_cells`, with a
//!   DESTROY from the next hop mid-way through `handle_next_hop_cell`): one twin takes them
//!   one at a time (`handle_next_hop_cell`), the others in drains of random length.
//!
//! Every cell each twin sends (per channel and circuit, in order, byte for byte) must be
//! equal, exit DATA must open at the client to the bytes the exit read, and the grouped
//! twins' counters must show that the grouped path ran. A mix of tor1 circuits rides along.
//! Randomness is seeded and printed (`FORS_TEST_SEED` repeats a run).

mod circuit_common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use circuit_common::cgo_twins::*;
use circuit_common::*;
use fors::cell::chan::{Create2, Created2, HandshakeType};
use fors::cell::relay::msg::{BeginTarget, Extend2, LinkSpec};
use fors::cell::relay::{v0, v1, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{
    CircuitExtension, CircuitKeys, NtorKeyMap, NtorKeyPair, NtorV3Client, SubprotoCap,
};
use fors::crypto::ids::Ed25519Identity;
use fors::crypto::relay::cgo::group_kernel_available;
use fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer};
use fors::proto::circuit::{Action, CellBody, ChanId, CircHandle, ExtendDone, NextHop, ShardIdx};
use fors::proto::stream::StreamHandle;
use fors_testkit::cgo_ref::CgoClientCircuit;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// The next hops' channel, on shard 1 (the cores are shard 0).
const NEXT_CHAN: ChanId = ChanId(70);

enum Layers {
    Cgo(CgoClientCircuit),
    Tor1(Tor1ClientCircuit),
}

/// A client circuit through the twins: a middle whose next hop is on shard 1 (`handle`
/// set), or ending here with one open stream.
struct Circ {
    id: CircId,
    layers: Layers,
    handle: Option<CircHandle>,
    stream: Option<StreamHandle>,
}

impl Circ {
    fn cell(&mut self, cmd: RelayCmd, sid: u16, data: &[u8], rng: &mut StdRng) -> CellBody {
        let mut b = [0u8; CELL_BODY_LEN];
        match &mut self.layers {
            Layers::Cgo(l) => {
                v1::encode(&mut b, cmd, sid, data, rng).unwrap();
                l.originate(0, u8::from(ChanCmd::RELAY_EARLY), &mut b);
            }
            Layers::Tor1(l) => {
                v0::encode(&mut b, cmd, sid, data, rng).unwrap();
                l.originate(0, &mut b).unwrap();
            }
        }
        b
    }

    /// Opens a DATA cell the exit sent on this circuit: its payload.
    fn open_data(&mut self, body: &CellBody) -> Vec<u8> {
        let mut b = *body;
        match &mut self.layers {
            Layers::Cgo(l) => {
                let (hop, _) = l
                    .recognize(u8::from(ChanCmd::RELAY), &mut b)
                    .expect("the client recognizes the exit's cell");
                assert_eq!(hop, 0);
                let m = v1::parse(&b).unwrap();
                assert_eq!(m.cmd, RelayCmd::DATA);
                m.data.to_vec()
            }
            Layers::Tor1(l) => {
                assert_eq!(l.recognize(&mut b), Some(0));
                let m = v0::parse(&b).unwrap();
                assert_eq!(m.cmd, RelayCmd::DATA);
                m.data.to_vec()
            }
        }
    }
}

/// Builds circuit `i` on every twin: ntor-v3 (CGO if `cgo`), then an extend to a next hop
/// on shard 1 (`middle`) or a stream to 127.0.0.1:80.
fn build(
    twins: &mut [Twin],
    keys: &NtorKeyMap,
    i: u32,
    cgo: bool,
    middle: bool,
    rng: &mut StdRng,
) -> Circ {
    let chan = relay_chan(1, &prev_id(), false);
    let id = CircId(0x8000_0010 + i);
    let mut exts = vec![CircuitExtension::CcRequest];
    if cgo {
        exts.push(CircuitExtension::SubprotoRequest(vec![SubprotoCap {
            protocol_id: 2,
            capability: 6,
        }]));
    }
    let (hs, skin) = NtorV3Client::start(
        rng,
        &Ed25519Identity([9; 32]),
        keys.current().public(),
        &exts,
    )
    .unwrap();
    let mut body = [0u8; CELL_BODY_LEN];
    Create2 {
        htype: HandshakeType::NTOR_V3,
        hdata: &skin,
    }
    .encode(&mut body)
    .unwrap();
    let acts = on_all(twins, |t| {
        let mut body = body; // each twin its own copy (cells are crypted in place)
        let (_, a) = t.io(|c, io| c.handle_cell(&chan, id, ChanCmd::CREATE2, &mut body, io));
        assert!(a.is_empty());
        t.io(|c, io| c.process_onion_queue(io)).1
    });
    let (_, got_id, cmd, reply) = one_cell(&acts);
    assert_eq!((got_id, cmd), (id, ChanCmd::CREATED2));
    let (keys, _) = hs
        .finish_circ(Created2::parse(&reply).unwrap().hdata, cgo)
        .unwrap();
    let layers = match keys {
        CircuitKeys::Cgo(k) => {
            let mut l = CgoClientCircuit::default();
            l.push(&k);
            Layers::Cgo(l)
        }
        CircuitKeys::Tor1(k) => {
            assert!(!cgo, "CGO was asked for");
            let mut l = Tor1ClientCircuit::new();
            l.push_hop(Tor1ClientLayer::new(&k));
            Layers::Tor1(l)
        }
    };
    let mut c = Circ {
        id,
        layers,
        handle: None,
        stream: None,
    };
    if middle {
        let specs = [
            LinkSpec::Ipv4("127.0.0.1:9002".parse().unwrap()),
            LinkSpec::RsaId(next_id().rsa),
            LinkSpec::Ed25519Id(next_id().ed),
        ];
        let mut ext = [0u8; 490];
        let n = Extend2::encode(
            &specs,
            &Create2 {
                htype: HandshakeType::NTOR_V3,
                hdata: &[7u8; 100],
            },
            &mut ext,
        )
        .unwrap();
        let body = c.cell(RelayCmd::EXTEND2, 0, &ext[..n], rng);
        let next = NextHop {
            chan: NEXT_CHAN,
            shard: ShardIdx(1),
            circ_id: CircId(0x100 + i),
        };
        let mut created = [0u8; CELL_BODY_LEN];
        Created2 { hdata: &[5u8; 64] }.encode(&mut created).unwrap();
        let acts = on_all(twins, |t| {
            let mut body = body;
            let (_, acts) =
                t.io(|c, io| c.handle_cell(&chan, id, ChanCmd::RELAY_EARLY, &mut body, io));
            let Some(Action::Extend { circ, .. }) = acts.first().cloned() else {
                panic!("{acts:?}")
            };
            let (r, mut acts2) = t.io(|core, io| {
                core.extend_result(
                    circ,
                    Ok(ExtendDone {
                        next,
                        created2: &created,
                    }),
                    io,
                )
            });
            r.unwrap();
            let mut all = acts;
            all.append(&mut acts2);
            all
        });
        let Some(Action::Extend { circ, .. }) = acts.first() else {
            unreachable!("checked in on_all")
        };
        c.handle = Some(*circ);
    } else {
        let mut begin = [0u8; 64];
        let n = begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80)
            .encode(&mut begin)
            .unwrap();
        // BEGIN goes as RELAY (CGO's cmd byte is part of the crypt).
        let mut body = [0u8; CELL_BODY_LEN];
        match &mut c.layers {
            Layers::Cgo(l) => {
                v1::encode(&mut body, RelayCmd::BEGIN, 1, &begin[..n], rng).unwrap();
                l.originate(0, u8::from(ChanCmd::RELAY), &mut body);
            }
            Layers::Tor1(l) => {
                v0::encode(&mut body, RelayCmd::BEGIN, 1, &begin[..n], rng).unwrap();
                l.originate(0, &mut body).unwrap();
            }
        }
        let acts = on_all(twins, |t| {
            let mut body = body;
            let (_, acts) = t.io(|c, io| c.handle_cell(&chan, id, ChanCmd::RELAY, &mut body, io));
            let Some(Action::Connect { stream, addr }) = acts.first().cloned() else {
                panic!("{acts:?}")
            };
            let (_, connected) = t.io(|core, io| core.stream_connected(stream, addr, io).unwrap());
            let mut all = acts;
            all.extend(connected);
            all
        });
        let Some(Action::Connect { stream, .. }) = acts.first() else {
            unreachable!("checked in on_all")
        };
        c.stream = Some(*stream);
        // The CONNECTED cell: open it so the client's layer stays in step.
        for (_, cid, cmd, b) in cells(&acts) {
            if cid == id && cmd == ChanCmd::RELAY {
                let mut b = b;
                match &mut c.layers {
                    Layers::Cgo(l) => {
                        l.recognize(u8::from(ChanCmd::RELAY), &mut b).unwrap();
                    }
                    Layers::Tor1(l) => {
                        l.recognize(&mut b).unwrap();
                    }
                }
            }
        }
    }
    c
}

/// Every cell sent, per (channel, circuit), in order.
fn by_circuit(acts: &[Action]) -> BTreeMap<(u64, u32), Vec<(ChanCmd, CellBody)>> {
    let mut m: BTreeMap<(u64, u32), Vec<(ChanCmd, CellBody)>> = BTreeMap::new();
    for (ch, id, cmd, body) in cells(acts) {
        m.entry((ch.0, id.0)).or_default().push((cmd, body));
    }
    m
}

fn same_cells(i: usize, got: &[Action], want: &[Action]) {
    let (g, w) = (by_circuit(got), by_circuit(want));
    assert_eq!(g.len(), w.len(), "twin {i}: circuits with cells");
    for (k, want) in &w {
        let got = g
            .get(k)
            .unwrap_or_else(|| panic!("twin {i}: no cells on {k:?}"));
        assert_eq!(got.len(), want.len(), "twin {i}: cells on {k:?}");
        for (j, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(a == b, "twin {i}: cell {j} on (chan, circ) {k:?} differs");
        }
    }
}

fn circuits(rng: &mut StdRng, cgo: usize, tor1: usize) -> Vec<bool> {
    let mut kinds: Vec<bool> = (0..cgo)
        .map(|_| true)
        .chain((0..tor1).map(|_| false))
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.gen_range(0..=i));
    }
    kinds
}

fn keys(rng: &mut StdRng) -> Arc<NtorKeyMap> {
    Arc::new(NtorKeyMap::new(
        NtorKeyPair::generate(&mut StdRng::seed_from_u64(rng.gen())),
        None,
    ))
}

/// [flush after every call / one cell at a time, staged with grouping off, staged at the
/// relay's thresholds, staged and grouped from two circuits on]
const GROUP_MINS: [Option<usize>; 4] = [Some(usize::MAX), Some(usize::MAX), None, Some(2)];

fn report_grouped(what: &str, grouped: &[u64]) {
    println!("{what}: grouped cells per twin {grouped:?}");
    assert_eq!(grouped[0], 0);
    assert_eq!(grouped[1], 0);
    if group_kernel_available() {
        assert!(
            grouped[3] > 0,
            "the grouped path never ran: the test compared one-at-a-time with itself"
        );
    } else {
        // A CPU without AES-NI + VPCLMULQDQ never groups (the threshold is "never" there);
        // the equivalence above still ran.
        println!("SKIPPED (grouped part): this CPU does not run CGO's interleaved kernel");
    }
}

#[test]
fn cgo_exit_data_grouped_matches_one_at_a_time() {
    let s = seed("cgo_exit_data_grouped_matches_one_at_a_time");
    let mut rng = StdRng::seed_from_u64(s);
    let relay_seed = rng.gen();
    let keys = keys(&mut rng);
    let now = Instant::now();
    let mut twins: Vec<Twin> = GROUP_MINS
        .into_iter()
        .map(|g| Twin::new(relay_seed, keys.clone(), now, g))
        .collect();
    let (n_cgo, n_tor1) = (rng.gen_range(5..=8), rng.gen_range(1..=3));
    let kinds = circuits(&mut rng, n_cgo, n_tor1);
    let mut circs: Vec<Circ> = kinds
        .iter()
        .enumerate()
        .map(|(i, &cgo)| build(&mut twins, &keys, i as u32, cgo, false, &mut rng))
        .collect();
    println!(
        "circuits: {} ({} CGO)",
        circs.len(),
        kinds.iter().filter(|k| **k).count()
    );

    // Exit socket reads: (circuit, bytes), in batches of random size (one I/O batch each).
    // Under 60 cells a circuit: no SENDME is needed (the windows start larger).
    let mut reads: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut left: Vec<usize> = circs.iter().map(|_| 60 * 400).collect();
    // Bounded: 300 reads, or until every circuit has had its share.
    while reads.len() < 300 && left.iter().any(|&l| l > 0) {
        let i = rng.gen_range(0..circs.len());
        let n = rng.gen_range(1..=1200).min(left[i]);
        if n == 0 {
            continue;
        }
        left[i] -= n;
        reads.push((i, (0..n).map(|_| rng.gen()).collect()));
    }
    let mut batches = Vec::new();
    let mut at = 0;
    while at < reads.len() {
        let n = rng.gen_range(1..=24).min(reads.len() - at);
        batches.push(at..at + n);
        at += n;
    }

    let mut outs = Vec::new();
    for (t_i, t) in twins.iter_mut().enumerate() {
        let mut all = Vec::new();
        for b in &batches {
            let (_, acts) = t.io(|c, io| {
                for (i, data) in &reads[b.clone()] {
                    let taken = c.stream_data(circs[*i].stream.unwrap(), data, io).unwrap();
                    assert_eq!(taken, data.len(), "the windows take every byte");
                    if t_i == 0 {
                        c.flush_originated(io); // one cell at a time
                    }
                }
            });
            all.extend(acts);
        }
        outs.push((all, t.core.metrics().clone()));
    }
    for (i, o) in outs.iter().enumerate().skip(1) {
        same_cells(i, &o.0, &outs[0].0);
    }
    // Ground truth: each circuit's DATA opens to the bytes its exit socket gave, in order.
    let got = by_circuit(&outs[0].0);
    for (i, c) in circs.iter_mut().enumerate() {
        let want: Vec<u8> = reads
            .iter()
            .filter(|(j, _)| *j == i)
            .flat_map(|(_, d)| d.iter().copied())
            .collect();
        let mut have = Vec::new();
        for (cmd, body) in got.get(&(1, c.id.0)).map(Vec::as_slice).unwrap_or(&[]) {
            assert_eq!(*cmd, ChanCmd::RELAY);
            have.extend(c.open_data(body));
        }
        assert!(have == want, "circuit {i}: the client's bytes differ");
    }
    let grouped: Vec<u64> = outs
        .iter()
        .map(|o| o.1.cgo_originated_grouped)
        .collect::<Vec<_>>();
    report_grouped("exit DATA", &grouped);
}

#[test]
fn cgo_cross_shard_backward_grouped_matches_one_at_a_time() {
    let s = seed("cgo_cross_shard_backward_grouped_matches_one_at_a_time");
    let mut rng = StdRng::seed_from_u64(s);
    let relay_seed = rng.gen();
    let keys = keys(&mut rng);
    let now = Instant::now();
    let mut twins: Vec<Twin> = GROUP_MINS
        .into_iter()
        .map(|g| Twin::new(relay_seed, keys.clone(), now, g))
        .collect();
    let (n_cgo, n_tor1) = (rng.gen_range(5..=8), rng.gen_range(1..=3));
    let kinds = circuits(&mut rng, n_cgo, n_tor1);
    let circs: Vec<Circ> = kinds
        .iter()
        .enumerate()
        .map(|(i, &cgo)| build(&mut twins, &keys, i as u32, cgo, true, &mut rng))
        .collect();
    println!(
        "circuits: {} ({} CGO)",
        circs.len(),
        kinds.iter().filter(|k| **k).count()
    );

    // Backward cells from the next hops (random: a middle only adds its layer), in drains;
    // one circuit's next hop sends DESTROY mid-way, and a cell for it after.
    let victim = rng.gen_range(0..circs.len());
    let mut items: Vec<(usize, ChanCmd, CellBody)> = Vec::new();
    for k in 0..400 {
        let i = rng.gen_range(0..circs.len());
        if k == 200 {
            items.push((victim, ChanCmd::DESTROY, [0u8; CELL_BODY_LEN]));
        }
        let mut b = [0u8; CELL_BODY_LEN];
        rng.fill_bytes(&mut b);
        items.push((i, ChanCmd::RELAY, b));
    }
    let mut drains = Vec::new();
    let mut at = 0;
    while at < items.len() {
        let n = rng.gen_range(1..=80).min(items.len() - at);
        drains.push(at..at + n);
        at += n;
    }

    let mut outs = Vec::new();
    for (t_i, t) in twins.iter_mut().enumerate() {
        let mut all = Vec::new();
        for d in &drains {
            let (_, acts) = t.io(|c, io| {
                for (i, cmd, body) in &items[d.clone()] {
                    let h = circs[*i].handle.unwrap();
                    let mut body = *body;
                    if t_i == 0 || *cmd != ChanCmd::RELAY {
                        let _ = c.handle_next_hop_cell(h, *cmd, &mut body, io);
                    } else {
                        c.queue_next_hop_cell(h, &body, io);
                    }
                }
                c.flush_relay_cells(io);
            });
            all.extend(acts);
        }
        outs.push((all, t.core.metrics().clone()));
    }
    let toward_client: usize = by_circuit(&outs[0].0)
        .iter()
        .filter(|(k, _)| k.0 == 1)
        .map(|(_, v)| v.len())
        .sum();
    assert!(
        toward_client > 300,
        "{toward_client} cells toward the clients"
    );
    for (i, o) in outs.iter().enumerate().skip(1) {
        same_cells(i, &o.0, &outs[0].0);
        assert!(
            o.1.relay_in_cross_batches > 0,
            "twin {i}: the cross stage ran"
        );
    }
    // The victim's cells end with DESTROY and nothing after it.
    let v = by_circuit(&outs[0].0);
    let vc = &v[&(1, circs[victim].id.0)];
    assert_eq!(vc.last().unwrap().0, ChanCmd::DESTROY, "DESTROY last");
    let grouped: Vec<u64> = outs.iter().map(|o| o.1.cgo_cells_grouped).collect();
    report_grouped("cross-shard backward", &grouped);
}
