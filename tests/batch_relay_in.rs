//! The RELAY cells of one read crypted together (`RelayCore::queue_relay_cell` /
//! `flush_relay_cells`): cells of several circuits interleaved, with a DESTROY, a CREATE_FAST
//! and RELAY_EARLY cells in the middle, come out in each circuit's order with the right
//! content, digests and SENDME tags, and the counters show the batched crypto ran.
//! Randomness is seeded and printed (`FORS_TEST_SEED` repeats a run).

mod circuit_common;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use circuit_common::*;
use fors::cell::chan::Created2;
use fors::cell::relay::msg::{Extend2, RelayMsg};
use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::cpu::{Sha1MultiImpl, Tor1Engine};
use fors::crypto::relay::Tor1RelayCrypto;
use fors::proto::circuit::{Action, CellBody, ChanId, ExtendDone, NextHop, ShardIdx};
use fors::proto::stream::StreamHandle;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn seed(test: &str) -> u64 {
    let s = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {s} (FORS_TEST_SEED={s} repeats it)");
    s
}

/// One input of a test sequence, in arrival order.
enum Item {
    /// A RELAY (or RELAY_EARLY) cell on `chan` for `circ_id`.
    Relay(ChanId, CircId, ChanCmd, CellBody),
    /// Any other cell, handed over with `handle_cell` (it ends the staged run).
    Other(fors::proto::circuit::ChanInfo, CircId, ChanCmd, CellBody),
}

/// Feeds `items` as reads of random length (up to 80, past the 64-cell stage) when
/// `batched`, else one cell per read; returns every action.
fn feed(a: &mut Relay, items: Vec<Item>, batched: bool, rng: &mut StdRng) -> Vec<Action> {
    let mut all = vec![];
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let n = if batched { rng.gen_range(1..=80) } else { 1 };
        let read: Vec<Item> = items.by_ref().take(n).collect();
        let (_, acts) = a.io(|c, io| {
            for it in read {
                match it {
                    Item::Relay(chan, id, cmd, body) => {
                        c.queue_relay_cell(chan, id, cmd, &body, io)
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
    all
}

fn multi_available() -> bool {
    !matches!(Tor1Engine::get().sha1_multi, Sha1MultiImpl::OneByOne(_))
}

fn create_fast_body(rng: &mut StdRng) -> CellBody {
    let mut b = [0u8; CELL_BODY_LEN];
    rng.fill_bytes(&mut b[..20]);
    b
}

// ------------------------------------------------------------------------------ exit

/// `k` circuits from one known middle (one channel), each with one open stream.
fn exit_with_circuits(k: usize) -> (Relay, Vec<Client>, Vec<StreamHandle>) {
    let mid = fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    };
    let net = TestNet {
        known: vec![mid.rsa],
        reentry: vec![],
    };
    let mut exit = Relay::new(9, test_config(), "accept 127.0.0.1:*, reject *:*", net);
    let mut clients = vec![];
    let mut streams = vec![];
    for i in 0..k {
        let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001 + i as u32);
        cl.create(&mut exit, Hs::Ntor);
        streams.push(cl.open_stream(&mut exit, 1));
        clients.push(cl);
    }
    (exit, clients, streams)
}

/// Runs the exit scenario; returns the exit's counters after it.
fn exit_scenario(seed: u64, batched: bool) -> fors::proto::circuit::CircuitMetrics {
    const K: usize = 6;
    const PER_CIRCUIT: usize = 120; // past the first circuit SENDME (every 100 DATA cells)
    const VICTIM: usize = 5;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut exit, mut clients, streams) = exit_with_circuits(K);
    let chan = clients[0].chan;
    let before = exit.core.metrics().clone();

    // Random interleaving of the circuits' cells.
    let mut left = [PER_CIRCUIT; K];
    let total = K * PER_CIRCUIT;
    let mut expected: Vec<Vec<u8>> = vec![vec![]; K];
    let mut tags: Vec<Vec<[u8; 20]>> = vec![vec![]; K];
    let mut items = vec![];
    let mut destroyed = false;
    for pos in 0..total {
        if pos == total * 2 / 5 {
            // DESTROY from the middle for the victim, mid-stream.
            let mut body = [0u8; CELL_BODY_LEN];
            body[0] = 3;
            items.push(Item::Other(
                chan,
                clients[VICTIM].circ_id,
                ChanCmd::DESTROY,
                body,
            ));
            destroyed = true;
        }
        if pos == total * 3 / 5 {
            // A non-relay cell between relay cells: a new circuit.
            items.push(Item::Other(
                chan,
                CircId(0x8000_0100),
                ChanCmd::CREATE_FAST,
                create_fast_body(&mut rng),
            ));
        }
        let live: Vec<usize> = (0..K).filter(|&i| left[i] > 0).collect();
        let ci = live[rng.gen_range(0..live.len())];
        left[ci] -= 1;
        let seq = (PER_CIRCUIT - left[ci]) as u16;
        let mut data = vec![ci as u8, seq as u8, (seq >> 8) as u8];
        let extra = rng.gen_range(0..60);
        data.extend((0..extra).map(|_| rng.gen::<u8>()));
        let (body, tag) = clients[ci].relay_cell(0, &RelayMsg::Data(&data), 1);
        if !(ci == VICTIM && destroyed) {
            expected[ci].extend_from_slice(&data);
            tags[ci].push(tag);
        }
        items.push(Item::Relay(
            chan.id,
            clients[ci].circ_id,
            ChanCmd::RELAY,
            body,
        ));
    }

    let acts = feed(&mut exit, items, batched, &mut rng);

    // Each stream got exactly its circuit's DATA, in order (a wrong digest would have
    // closed the circuit: an exit must recognize every cell).
    let mut written: HashMap<StreamHandle, Vec<u8>> = HashMap::new();
    for a in &acts {
        if let Action::StreamWrite { stream, data } = a {
            written
                .entry(*stream)
                .or_default()
                .extend_from_slice(data.as_slice());
        }
    }
    for ci in 0..K {
        let got = written.remove(&streams[ci]).unwrap_or_default();
        assert_eq!(
            got.len(),
            expected[ci].len(),
            "circuit {ci}: bytes delivered"
        );
        assert!(
            got == expected[ci],
            "circuit {ci}: data out of order or corrupted"
        );
    }
    assert!(written.is_empty(), "data for an unknown stream");
    // The new circuit was answered in place.
    assert!(cells(&acts).iter().any(|&(ch, id, cmd, _)| ch == chan.id
        && id == CircId(0x8000_0100)
        && cmd == ChanCmd::CREATED_FAST));
    // The victim's circuit closed at the DESTROY; the others stay open.
    assert_eq!(exit.core.circuit_count(), K - 1 + 1);
    // Circuit SENDMEs carry the tag of exactly the 100th DATA cell (prop 289).
    for (ci, cl) in clients.iter_mut().enumerate() {
        let sendmes: Vec<Vec<u8>> = cl
            .open_all(&acts)
            .into_iter()
            .filter(|(_, cmd, sid, _)| *cmd == RelayCmd::SENDME && *sid == 0)
            .map(|(_, _, _, d)| d)
            .collect();
        if ci == VICTIM && tags[ci].len() < 100 {
            assert!(sendmes.is_empty());
            continue;
        }
        assert_eq!(sendmes.len(), 1, "circuit {ci}: one circuit SENDME");
        assert_eq!(
            &sendmes[0][..3],
            &[1, 0, 20],
            "SENDME v1 with a 20-byte tag"
        );
        assert_eq!(sendmes[0][3..23], tags[ci][99], "circuit {ci}: SENDME tag");
    }
    let m = exit.core.metrics().clone();
    assert_eq!(m.protocol_closes, before.protocol_closes);
    m
}

#[test]
fn exit_cells_of_many_circuits_in_one_read() {
    let s = seed("exit_cells_of_many_circuits_in_one_read");
    let m = exit_scenario(s, true);
    eprintln!(
        "batched: {} reads, {} cells, {} crypted batched, {} single, {} multi-circuit calls",
        m.relay_in_batches,
        m.relay_in_cells,
        m.cells_crypted_batched,
        m.cells_crypted_single,
        m.relay_in_multi_calls
    );
    // Most cells went through a call with other cells; with SIMD SHA-1 lanes, through the
    // multi-circuit call.
    assert!(m.cells_crypted_batched * 2 > m.relay_in_cells, "{m:?}");
    if multi_available() {
        assert!(m.relay_in_multi_calls > 0, "{m:?}");
    }
    assert!(
        m.relay_in_cells > m.relay_in_batches * 4,
        "reads hold many cells: {m:?}"
    );
}

#[test]
fn exit_cells_one_per_read_behave_the_same() {
    let s = seed("exit_cells_one_per_read_behave_the_same");
    let m = exit_scenario(s, false);
    // One cell per read: nothing to batch (the check above would fail without batching).
    assert_eq!(m.cells_crypted_batched, 0, "{m:?}");
    assert_eq!(m.relay_in_multi_calls, 0);
}

// ---------------------------------------------------------------------------- middle

/// Client → A → a pretend B on A's own shard (channel 70), extended by a fake extend.
fn middle_circuit(a: &mut Relay, cl: &mut Client, next: NextHop) {
    cl.create(a, Hs::Ntor);
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let mut ext = [0u8; 498];
    let n = extend2_body(&b, "127.0.0.1:9002", &[0u8; 84], &mut ext);
    let m = RelayMsg::Extend2(Extend2::parse(&ext[..n]).unwrap());
    let acts = cl.send(a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    let Some(Action::Extend { circ, .. }) = acts.first().cloned() else {
        panic!("{acts:?}")
    };
    let mut created = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &[5u8; 64] }.encode(&mut created).unwrap();
    let (r, acts) = a.io(|c, io| {
        c.extend_result(
            circ,
            Ok(ExtendDone {
                next,
                created2: &created,
            }),
            io,
        )
    });
    r.unwrap();
    assert_eq!(cl.open_all(&acts)[0].1, RelayCmd::EXTENDED2);
}

#[test]
fn middle_cells_both_ways_in_one_read() {
    const K: usize = 5;
    const VICTIM: usize = 2;
    const NEXT_CHAN: ChanId = ChanId(70);
    let s = seed("middle_cells_both_ways_in_one_read");
    let mut rng = StdRng::seed_from_u64(s);
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut clients = vec![];
    // The pretend second hops: (forward state for checking, backward state for making).
    let mut hop_b: Vec<Tor1RelayCrypto> = vec![];
    let mut hop_b_out: Vec<Tor1RelayCrypto> = vec![];
    for i in 0..K {
        let mut cl = Client::new(client_chan(1), 0x8000_0001 + i as u32);
        let next = NextHop {
            chan: NEXT_CHAN,
            shard: ShardIdx(0),
            circ_id: CircId(0x100 + i as u32),
        };
        middle_circuit(&mut a, &mut cl, next);
        let keys = Tor1KeyMaterial::from_kdf_output(&[10 + i as u8; 92]);
        cl.circ.layers.push(&keys);
        hop_b.push(Tor1RelayCrypto::new(&keys));
        hop_b_out.push(Tor1RelayCrypto::new(&keys));
        clients.push(cl);
    }
    let chan = clients[0].chan;
    let before = a.core.metrics().clone();

    let total = 400;
    let mut fwd_expected: Vec<Vec<(ChanCmd, Vec<u8>)>> = vec![vec![]; K];
    let mut bwd_expected: Vec<Vec<Vec<u8>>> = vec![vec![]; K];
    let mut early_left = [3u8; K];
    let mut destroyed = false;
    let mut items = vec![];
    for pos in 0..total {
        if pos == total / 2 {
            let mut body = [0u8; CELL_BODY_LEN];
            body[0] = 3;
            items.push(Item::Other(
                chan,
                clients[VICTIM].circ_id,
                ChanCmd::DESTROY,
                body,
            ));
            destroyed = true;
        }
        if pos == total * 3 / 4 {
            items.push(Item::Other(
                chan,
                CircId(0x8000_0100),
                ChanCmd::CREATE_FAST,
                create_fast_body(&mut rng),
            ));
        }
        let ci = rng.gen_range(0..K);
        let keep = !(ci == VICTIM && destroyed);
        let mut data = vec![ci as u8, pos as u8, (pos >> 8) as u8];
        let extra = rng.gen_range(0..40);
        data.extend((0..extra).map(|_| rng.gen::<u8>()));
        if rng.gen_bool(0.6) {
            // Forward, for the second hop: A passes it on. Now and then RELAY_EARLY.
            let cmd = if early_left[ci] > 0 && rng.gen_bool(0.03) {
                early_left[ci] -= 1;
                ChanCmd::RELAY_EARLY
            } else {
                ChanCmd::RELAY
            };
            let (body, _) = clients[ci].relay_cell(1, &RelayMsg::Data(&data), 1);
            if keep {
                fwd_expected[ci].push((cmd, data));
            }
            items.push(Item::Relay(chan.id, clients[ci].circ_id, cmd, body));
        } else {
            // Backward, from the second hop: A adds its layer.
            let mut body = [0u8; CELL_BODY_LEN];
            v0::encode_with(&mut body, RelayCmd::DATA, 1, &mut rng, |out| {
                out[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            })
            .unwrap();
            hop_b_out[ci].originate(&mut body);
            if keep {
                bwd_expected[ci].push(data);
            }
            items.push(Item::Relay(
                NEXT_CHAN,
                CircId(0x100 + ci as u32),
                ChanCmd::RELAY,
                body,
            ));
        }
    }

    let acts = feed(&mut a, items, true, &mut rng);

    // Forward: each second hop recognizes its cells in order (its running digest would
    // reject a reordered or corrupted cell).
    let mut fwd_got: Vec<Vec<(ChanCmd, Vec<u8>)>> = vec![vec![]; K];
    for (ch, id, cmd, mut body) in cells(&acts) {
        if ch != NEXT_CHAN || cmd == ChanCmd::DESTROY {
            continue;
        }
        let ci = (id.0 - 0x100) as usize;
        assert!(
            hop_b[ci].recognize(&mut body),
            "circuit {ci}: forward cell out of order"
        );
        let len = usize::from(u16::from_be_bytes([body[9], body[10]]));
        fwd_got[ci].push((cmd, body[11..11 + len].to_vec()));
    }
    for ci in 0..K {
        assert!(
            fwd_got[ci] == fwd_expected[ci],
            "circuit {ci}: forward cells differ"
        );
    }
    // Backward: each client opens its cells in order, from hop 1.
    for (ci, cl) in clients.iter_mut().enumerate() {
        let got: Vec<Vec<u8>> = cl
            .open_all(&acts)
            .into_iter()
            .map(|(hop, cmd, sid, d)| {
                assert_eq!((hop, cmd, sid), (1, RelayCmd::DATA, 1), "circuit {ci}");
                d
            })
            .collect();
        assert!(
            got == bwd_expected[ci],
            "circuit {ci}: backward cells differ"
        );
    }
    // The victim's DESTROY went on to the next hop; the new circuit was answered.
    let all = cells(&acts);
    assert!(all.iter().any(|&(ch, id, cmd, _)| ch == NEXT_CHAN
        && id == CircId(0x100 + VICTIM as u32)
        && cmd == ChanCmd::DESTROY));
    assert!(all.iter().any(|&(ch, id, cmd, _)| ch == chan.id
        && id == CircId(0x8000_0100)
        && cmd == ChanCmd::CREATED_FAST));
    let m = a.core.metrics().clone();
    eprintln!(
        "middle: {} reads, {} cells, {} crypted batched, {} single",
        m.relay_in_batches - before.relay_in_batches,
        m.relay_in_cells - before.relay_in_cells,
        m.cells_crypted_batched - before.cells_crypted_batched,
        m.cells_crypted_single - before.cells_crypted_single
    );
    assert_eq!(m.protocol_closes, before.protocol_closes);
    // Runs of one circuit were crypted in one call.
    assert!(
        m.cells_crypted_batched > before.cells_crypted_batched,
        "{m:?}"
    );
    // RELAY_EARLY cells (and the cells after them on their circuit) went one at a time.
    assert!(
        m.cells_crypted_single > before.cells_crypted_single,
        "{m:?}"
    );
}
