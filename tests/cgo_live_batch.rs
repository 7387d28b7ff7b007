//! CGO cells of many circuits through the live read path (`RelayCore::queue_relay_cell` /
//! `flush_relay_cells`) in groups of distinct circuits (CGO's interleaved kernel), against the
//! one-at-a-time path: four twin relays, keyed alike from one seed, get the same random
//! interleaving of CGO and tor1 circuits' cells — middle circuits both ways, circuits ending
//! here with a stream (DATA recognized, SENDMEs with their tags), RELAY_EARLY cells, cells
//! recognized at the middle, a DESTROY mid-way — one cell per read, in reads of random length
//! with grouping off (one run per circuit), and in the same reads grouped at the relay's
//! thresholds and from two circuits on (so circuits that end here are grouped too). Every cell each
//! relay sends (per channel and circuit, in order, byte for byte), every stream's bytes and
//! the recognized counts must be equal, and the grouped relay's counter must show that the
//! grouped path ran. Randomness is seeded and printed (`FORS_TEST_SEED` repeats a run).

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
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::cgo::{group_kernel_available, CgoKeyMaterial};
use fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer};
use fors::proto::circuit::{
    Action, CellBody, ChanId, ChanInfo, CircuitMetrics, ExtendDone, NextHop, ShardIdx,
};
use fors::proto::stream::StreamHandle;
use fors_testkit::cgo_ref::CgoClientCircuit;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const NEXT_CHAN: ChanId = ChanId(70);

enum Layers {
    Cgo(CgoClientCircuit),
    Tor1(Tor1ClientCircuit),
}

/// A client circuit through the twins: CGO or tor1, a middle (extended to `NEXT_CHAN`) or
/// ending here with one open stream.
struct Circ {
    id: CircId,
    next_id: CircId,
    layers: Layers,
    middle: bool,
    stream: Option<StreamHandle>,
    early_left: u8,
}

impl Circ {
    /// A relay message for `hop`, sent as channel command `chan_cmd`.
    fn cell(
        &mut self,
        hop: usize,
        chan_cmd: ChanCmd,
        cmd: RelayCmd,
        sid: u16,
        data: &[u8],
        rng: &mut StdRng,
    ) -> CellBody {
        let mut b = [0u8; CELL_BODY_LEN];
        match &mut self.layers {
            Layers::Cgo(l) => {
                v1::encode(&mut b, cmd, sid, data, rng).unwrap();
                l.originate(hop, u8::from(chan_cmd), &mut b);
            }
            Layers::Tor1(l) => {
                v0::encode(&mut b, cmd, sid, data, rng).unwrap();
                l.originate(hop, &mut b).unwrap();
            }
        }
        b
    }
}

/// Builds circuit `i` on every twin: ntor-v3 (asking for CC, and CGO if `cgo`), then an
/// extend to a pretend next hop (`middle`) or a stream to 127.0.0.1:80.
fn build(
    twins: &mut [Twin],
    keys: &NtorKeyMap,
    chan: &ChanInfo,
    i: u32,
    cgo: bool,
    middle: bool,
    rng: &mut StdRng,
) -> Circ {
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
        assert!(t.cell(chan, id, ChanCmd::CREATE2, body).is_empty());
        t.io(|c, io| c.process_onion_queue(io)).1
    });
    let (_, got_id, cmd, reply) = one_cell(&acts);
    assert_eq!((got_id, cmd), (id, ChanCmd::CREATED2));
    let (keys, _) = hs
        .finish_circ(Created2::parse(&reply).unwrap().hdata, cgo)
        .unwrap();
    let layers = match keys {
        CircuitKeys::Cgo(k) => {
            assert!(cgo, "CGO only when asked");
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
        next_id: CircId(0x100 + i),
        layers,
        middle,
        stream: None,
        early_left: 7,
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
        let body = c.cell(
            0,
            ChanCmd::RELAY_EARLY,
            RelayCmd::EXTEND2,
            0,
            &ext[..n],
            rng,
        );
        let next = NextHop {
            chan: NEXT_CHAN,
            shard: ShardIdx(0),
            circ_id: c.next_id,
        };
        let mut created = [0u8; CELL_BODY_LEN];
        Created2 { hdata: &[5u8; 64] }.encode(&mut created).unwrap();
        on_all(twins, |t| {
            let acts = t.cell(chan, id, ChanCmd::RELAY_EARLY, body);
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
        // A pretend second hop, so the cells for it keep the first layer in step.
        match &mut c.layers {
            Layers::Cgo(l) => {
                let mut k = [0u8; CgoKeyMaterial::STREAM_LEN];
                rng.fill_bytes(&mut k);
                l.push(&CgoKeyMaterial::from_bytes(&k));
            }
            Layers::Tor1(l) => {
                let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
                rng.fill_bytes(&mut k);
                l.push_hop(Tor1ClientLayer::new(&Tor1KeyMaterial::from_kdf_output(&k)));
            }
        }
    } else {
        let mut begin = [0u8; 64];
        let n = begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80)
            .encode(&mut begin)
            .unwrap();
        let body = c.cell(0, ChanCmd::RELAY, RelayCmd::BEGIN, 1, &begin[..n], rng);
        let acts = on_all(twins, |t| {
            let acts = t.cell(chan, id, ChanCmd::RELAY, body);
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
    }
    c
}

/// One input, in arrival order.
#[derive(Clone)]
enum Item {
    Relay(ChanId, CircId, ChanCmd, CellBody),
    Other(ChanInfo, CircId, ChanCmd, CellBody),
}

/// What a twin did with the inputs: every cell sent, per (channel, circuit) in order; every
/// stream's bytes; every other action's description; its counters.
struct Outcome {
    cells: BTreeMap<(u64, u32), Vec<(ChanCmd, CellBody)>>,
    streams: BTreeMap<u64, Vec<u8>>,
    other: Vec<String>,
    metrics: CircuitMetrics,
}

fn outcome(acts: &[Action], metrics: CircuitMetrics) -> Outcome {
    let mut o = Outcome {
        cells: BTreeMap::new(),
        streams: BTreeMap::new(),
        other: Vec::new(),
        metrics,
    };
    for (ch, id, cmd, body) in cells(acts) {
        o.cells.entry((ch.0, id.0)).or_default().push((cmd, body));
    }
    for a in acts {
        match a {
            Action::SendCell { .. } => {}
            Action::StreamWrite { stream, data } => o
                .streams
                .entry(stream.as_u64())
                .or_default()
                .extend_from_slice(data.as_slice()),
            other => o.other.push(format!("{other:?}")),
        }
    }
    o.other.sort();
    o
}

/// Feeds `items` one cell per read (`reads` is `None`) or in reads of the given lengths.
fn feed(t: &mut Twin, items: &[Item], reads: Option<&[usize]>) -> Vec<Action> {
    let mut all = Vec::new();
    match reads {
        None => {
            let prev = relay_chan(1, &prev_id(), false);
            let next = relay_chan(NEXT_CHAN.0, &next_id(), true);
            for it in items {
                let acts = match it.clone() {
                    Item::Relay(ch, id, cmd, body) => {
                        let info = if ch == NEXT_CHAN { &next } else { &prev };
                        t.cell(info, id, cmd, body)
                    }
                    Item::Other(info, id, cmd, body) => t.cell(&info, id, cmd, body),
                };
                all.extend(acts);
            }
        }
        Some(reads) => {
            let mut at = 0;
            for &n in reads {
                let read = &items[at..(at + n).min(items.len())];
                at += n;
                let (_, acts) = t.io(|c, io| {
                    for it in read.iter().cloned() {
                        match it {
                            Item::Relay(ch, id, cmd, body) => {
                                c.queue_relay_cell(ch, id, cmd, &body, io)
                            }
                            Item::Other(info, id, cmd, mut body) => {
                                c.handle_cell(&info, id, cmd, &mut body, io)
                            }
                        }
                    }
                    c.flush_relay_cells(io);
                });
                all.extend(acts);
            }
            assert!(at >= items.len(), "every item fed");
        }
    }
    all
}

#[test]
fn cgo_grouped_read_path_matches_one_at_a_time() {
    let s = seed("cgo_grouped_read_path_matches_one_at_a_time");
    let mut rng = StdRng::seed_from_u64(s);
    let relay_seed = rng.gen();
    let keys = Arc::new(NtorKeyMap::new(
        NtorKeyPair::generate(&mut StdRng::seed_from_u64(rng.gen())),
        None,
    ));
    let now = Instant::now();
    // [one cell per read, reads with one run per circuit, reads grouped at the relay's
    // thresholds, reads grouped from two circuits on]
    let mut twins: Vec<Twin> = [Some(usize::MAX), Some(usize::MAX), None, Some(2)]
        .into_iter()
        .map(|g| Twin::new(relay_seed, keys.clone(), now, g))
        .collect();
    let chan = relay_chan(1, &prev_id(), false);

    // CGO and tor1 circuits, middles and circuits ending here, in random order.
    let mut kinds: Vec<(bool, bool)> = Vec::new();
    for _ in 0..rng.gen_range(5..=8) {
        kinds.push((true, true));
    }
    for _ in 0..rng.gen_range(3..=5) {
        kinds.push((true, false));
    }
    for _ in 0..rng.gen_range(2..=4) {
        kinds.push((false, true));
    }
    for _ in 0..rng.gen_range(2..=3) {
        kinds.push((false, false));
    }
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.gen_range(0..=i));
    }
    let mut circs: Vec<Circ> = kinds
        .iter()
        .enumerate()
        .map(|(i, &(cgo, middle))| build(&mut twins, &keys, &chan, i as u32, cgo, middle, &mut rng))
        .collect();
    println!(
        "circuits: {} (CGO middles {}, CGO ending here {}, tor1 middles {}, tor1 ending here {})",
        circs.len(),
        kinds.iter().filter(|k| **k == (true, true)).count(),
        kinds.iter().filter(|k| **k == (true, false)).count(),
        kinds.iter().filter(|k| **k == (false, true)).count(),
        kinds.iter().filter(|k| **k == (false, false)).count()
    );

    // A random interleaving: mostly CGO, some circuits busier than others.
    let weights: Vec<u32> = circs.iter().map(|_| rng.gen_range(1..=4)).collect();
    let total_w: u32 = weights.iter().sum();
    let victim = rng.gen_range(0..circs.len());
    // Bursts of one channel's cells, as a channel read holds (now and then two bursts in one
    // "read", so a cell of the other channel flushes the stage midway).
    let total = 1200;
    let middles: Vec<usize> = (0..circs.len()).filter(|&i| circs[i].middle).collect();
    let mut items = Vec::new();
    let mut reads = Vec::new();
    let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut destroyed = false;
    let mut cells_made = 0;
    while cells_made < total {
        let backward = rng.gen_bool(0.35);
        let burst = rng.gen_range(1..=80).min(total - cells_made);
        let mut read = burst;
        if !destroyed && cells_made >= total * 2 / 5 {
            let mut body = [0u8; CELL_BODY_LEN];
            body[0] = 3;
            items.push(Item::Other(chan, circs[victim].id, ChanCmd::DESTROY, body));
            destroyed = true;
            read += 1;
        }
        for _ in 0..burst {
            cells_made += 1;
            let ci = if backward {
                middles[rng.gen_range(0..middles.len())]
            } else {
                let mut pick = rng.gen_range(0..total_w);
                let mut ci = 0;
                while pick >= weights[ci] {
                    pick -= weights[ci];
                    ci += 1;
                }
                ci
            };
            let c = &mut circs[ci];
            if backward {
                // From the pretend next hop: the middle adds its layer.
                let mut body = [0u8; CELL_BODY_LEN];
                rng.fill_bytes(&mut body);
                items.push(Item::Relay(NEXT_CHAN, c.next_id, ChanCmd::RELAY, body));
                continue;
            }
            let mut data = vec![0u8; rng.gen_range(1..=300)];
            rng.fill_bytes(&mut data);
            let cmd = if c.early_left > 0 && rng.gen_bool(0.01) {
                c.early_left -= 1;
                ChanCmd::RELAY_EARLY
            } else {
                ChanCmd::RELAY
            };
            let body = if c.middle {
                if rng.gen_bool(0.1) {
                    // For the middle itself: recognized there, and dropped.
                    c.cell(0, cmd, RelayCmd::DROP, 0, &[], &mut rng)
                } else {
                    c.cell(1, cmd, RelayCmd::DATA, 1, &data, &mut rng)
                }
            } else if rng.gen_bool(0.05) {
                c.cell(0, cmd, RelayCmd::DROP, 0, &[], &mut rng)
            } else {
                if !(ci == victim && destroyed) {
                    let h = c.stream.expect("a stream").as_u64();
                    sent.entry(h).or_default().extend_from_slice(&data);
                }
                c.cell(0, cmd, RelayCmd::DATA, 1, &data, &mut rng)
            };
            items.push(Item::Relay(chan.id, c.id, cmd, body));
        }
        match reads.last_mut() {
            Some(last) if rng.gen_bool(0.15) => *last += read,
            _ => reads.push(read),
        }
    }
    assert_eq!(reads.iter().sum::<usize>(), items.len());

    let mut outs = Vec::new();
    for (i, t) in twins.iter_mut().enumerate() {
        let before = t.core.metrics().clone();
        let acts = feed(t, &items, (i > 0).then_some(&reads[..]));
        let m = t.core.metrics().clone();
        println!(
            "twin {i}: {} reads, {} cells batched, {} single, {} multi-circuit calls, {} CGO cells grouped, {} recognized",
            m.relay_in_batches - before.relay_in_batches,
            m.cells_crypted_batched - before.cells_crypted_batched,
            m.cells_crypted_single - before.cells_crypted_single,
            m.relay_in_multi_calls - before.relay_in_multi_calls,
            m.cgo_cells_grouped - before.cgo_cells_grouped,
            m.cells_recognized - before.cells_recognized,
        );
        outs.push(outcome(&acts, m));
    }

    // Ground truth: every stream got exactly its DATA, in order; nothing was refused.
    assert_eq!(outs[0].streams, sent, "stream bytes (one at a time)");
    assert_eq!(outs[0].metrics.protocol_closes, 0);
    // Some SENDMEs went back (their tags are in the compared bytes).
    let back_cells: usize = outs[0]
        .cells
        .iter()
        .filter(|(k, _)| k.0 == chan.id.0)
        .map(|(_, v)| v.len())
        .sum();
    assert!(back_cells > 0, "cells toward the client");
    for (i, o) in outs.iter().enumerate().skip(1) {
        assert_eq!(
            o.cells.len(),
            outs[0].cells.len(),
            "twin {i}: circuits with cells"
        );
        for (k, want) in &outs[0].cells {
            let got = o
                .cells
                .get(k)
                .unwrap_or_else(|| panic!("twin {i}: no cells on {k:?}"));
            assert_eq!(got.len(), want.len(), "twin {i}: cells on {k:?}");
            for (j, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(g == w, "twin {i}: cell {j} on (chan, circ) {k:?} differs");
            }
        }
        assert_eq!(o.streams, outs[0].streams, "twin {i}: stream bytes");
        assert_eq!(o.other, outs[0].other, "twin {i}: other actions");
        let (a, b) = (&o.metrics, &outs[0].metrics);
        assert_eq!(
            (
                a.cells_recognized,
                a.cells_backward,
                a.protocol_closes,
                a.destroys_sent
            ),
            (
                b.cells_recognized,
                b.cells_backward,
                b.protocol_closes,
                b.destroys_sent
            ),
            "twin {i}: recognized / backward / closes / destroys"
        );
    }
    // The grouped path ran on the grouped twins only.
    assert_eq!(outs[0].metrics.cgo_cells_grouped, 0);
    assert_eq!(outs[1].metrics.cgo_cells_grouped, 0);
    if group_kernel_available() {
        for (i, o) in outs.iter().enumerate().skip(2) {
            assert!(
                o.metrics.cgo_cells_grouped > 0,
                "twin {i}: the grouped path never ran: the test compared runs with runs"
            );
        }
    } else {
        // A CPU without AES-NI + VPCLMULQDQ never groups (the threshold is "never" there);
        // the equivalence above still ran (as in `interleaved_kernel_matches_one_cell_path`).
        println!("SKIPPED (grouped part): this CPU does not run CGO's interleaved kernel");
    }
}
