//! The introduction and rendezvous point on a relay with two shards, in the circuit core
//! with no sockets: two cores (shard 0 and shard 1) whose `Action::Hs` messages the test
//! carries between them in order, as the node's cross-shard queues do. The service's and
//! the client's circuits sit on different shards, and each key's or cookie's home table on
//! either (rend-spec-v3; C tor `hs_intropoint.c`, `rendmid.c`, `hs_circuitmap.c`, the
//! splice in `relay.c`).
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod circuit_common;

use circuit_common::hs::*;
use circuit_common::*;
use ed25519_dalek::SigningKey;
use fors::cell::chan::DestroyReason;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CELL_BODY_LEN};
use fors::proto::circuit::hs_cross::HsMsg;
use fors::proto::circuit::ShardIdx;
use fors::proto::hs::cells::{AckStatus, Rendezvous1};
use rand::rngs::StdRng;
use rand::Rng;

#[test]
fn introduce_across_shards_with_every_home() {
    let mut rng = seeded("introduce_across_shards_with_every_home");
    let (m1, m2) = (peer(0x21), peer(0x22));
    // The service's circuit on shard 0, the client's on shard 1; the key's home on each.
    for home in 0..2 {
        let mut p = Pair::new();
        let sk = key_with_home(&mut rng, home);
        let mut svc = p.intro_circuit(0, relay_chan(1, &m1, false), 1, &sk);
        let [a0, a1] = p.drain();
        assert!(a1.is_empty(), "{a1:?}");
        let g = got(&mut svc, &a0);
        assert_eq!(g.len(), 1, "{a0:?}");
        assert_eq!(g[0].1, RelayCmd::INTRO_ESTABLISHED);
        assert_eq!(p.r[home].core.hs_table_sizes().0, 1);
        assert_eq!(p.r[1 - home].core.hs_table_sizes().0, 0);

        let (mut cl, _) = build(&mut p.r[1], relay_chan(2, &m2, false), 2, false);
        let encrypted: Vec<u8> = (0..300).map(|_| rng.gen()).collect();
        let body = intro1(&sk, &encrypted);
        p.send(1, &mut cl, RelayCmd::INTRODUCE1, &body);
        let [a0, a1] = p.drain();
        // INTRODUCE2 with the same bytes on shard 0, INTRODUCE_ACK SUCCESS on shard 1.
        let to_svc = got(&mut svc, &a0);
        assert_eq!(to_svc.len(), 1, "{a0:?}");
        assert_eq!((to_svc[0].1, &to_svc[0].2), (RelayCmd::INTRODUCE2, &body));
        assert_eq!(ack_status(&mut cl, &a1), AckStatus::SUCCESS);
        let m = p.r[home].core.metrics();
        assert_eq!(m.hs_cross_shard_intros, 1);
        assert_eq!(p.r[1 - home].core.metrics().hs_cross_shard_intros, 0);
        assert_eq!(p.r[0].core.hs_counters().0.intro1_success, 1);

        // An unknown key: UNKNOWN_ID, the circuit stays, nothing to the service.
        let (mut cl2, _) = build(&mut p.r[1], relay_chan(3, &m2, false), 3, false);
        let other = key_with_home(&mut rng, 1 - home);
        p.send(
            1,
            &mut cl2,
            RelayCmd::INTRODUCE1,
            &intro1(&other, &encrypted),
        );
        let [a0, a1] = p.drain();
        assert!(a0.is_empty(), "{a0:?}");
        assert_eq!(ack_status(&mut cl2, &a1), AckStatus::UNKNOWN_ID);
        assert!(destroys(&a1).is_empty());
        assert_eq!(p.r[1 - home].core.hs_counters().0.intro1_unknown_service, 1);

        // The service's circuit goes: its key is forgotten at home.
        p.cell(0, &svc, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
        assert_eq!(p.r[home].core.hs_table_sizes().0, 0);
        assert_eq!(p.r[home].core.metrics().hs_intro_circuits, 0);
    }
}

#[test]
fn same_key_on_the_other_shard_replaces_the_older_circuit() {
    let mut rng = seeded("same_key_on_the_other_shard_replaces_the_older_circuit");
    let (m1, m2) = (peer(0x21), peer(0x22));
    let mut p = Pair::new();
    let sk = key_with_home(&mut rng, 1);
    let old = p.intro_circuit(0, relay_chan(1, &m1, false), 1, &sk);
    p.drain();
    // The service re-establishes on a circuit of shard 1: the older one, on shard 0, is
    // closed with FINISHED (C tor `hs_circuitmap_register_impl`).
    let mut new = p.intro_circuit(1, relay_chan(2, &m2, false), 2, &sk);
    let [a0, a1] = p.drain();
    assert_eq!(
        destroys(&a0),
        vec![(1, old.circ_id, DestroyReason::Finished)]
    );
    assert_eq!(got(&mut new, &a1)[0].1, RelayCmd::INTRO_ESTABLISHED);
    assert_eq!(p.r[0].core.circuit_count(), 0);
    // The old circuit's close did not unregister the new one.
    assert_eq!(p.r[1].core.hs_table_sizes().0, 1);
    assert_eq!(p.r[1].core.hs_counters().0.est_intro_replaced, 1);
    let (mut cl, _) = build(&mut p.r[0], relay_chan(3, &m2, false), 3, false);
    let body = intro1(&sk, &[9; 100]);
    p.send(0, &mut cl, RelayCmd::INTRODUCE1, &body);
    let [a0, a1] = p.drain();
    assert_eq!(got(&mut new, &a1), vec![(0, RelayCmd::INTRODUCE2, body)]);
    assert_eq!(ack_status(&mut cl, &a0), AckStatus::SUCCESS);
}

#[test]
fn duplicate_cookie_across_shards_is_refused() {
    let mut rng = seeded("duplicate_cookie_across_shards_is_refused");
    let m1 = peer(0x21);
    for home in 0..2 {
        let mut p = Pair::new();
        let cookie = cookie_with_home(&mut rng, home);
        let (mut a, _) = build(&mut p.r[0], relay_chan(1, &m1, false), 1, false);
        p.send(0, &mut a, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
        let [a0, _] = p.drain();
        assert_eq!(
            got(&mut a, &a0),
            vec![(0, RelayCmd::RENDEZVOUS_ESTABLISHED, vec![])]
        );
        let (mut b, _) = build(&mut p.r[1], relay_chan(2, &m1, false), 2, false);
        p.send(1, &mut b, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
        let [a0, a1] = p.drain();
        assert!(a0.is_empty(), "{a0:?}");
        assert_eq!(
            destroys(&a1),
            vec![(2, b.circ_id, DestroyReason::TorProtocol)]
        );
        assert_eq!(p.r[home].core.hs_counters().1.est_rend_duplicate_cookie, 1);
        // The first keeps its cookie (the newcomer's close did not remove it).
        assert_eq!(p.r[home].core.hs_table_sizes().1, 1);
        assert_eq!(p.r[0].core.circuit_count(), 1);
    }
}

/// A client circuit on shard `cs` waiting with a cookie whose home is `home`, a service
/// circuit on shard `ss`, RENDEZVOUS1 delivered: the joined pair, with an end-to-end layer.
fn joined(p: &mut Pair, rng: &mut StdRng, cs: usize, ss: usize, home: usize) -> (Client, Client) {
    let (m1, m2) = (peer(0x21), peer(0x22));
    let (mut cl, _) = build(&mut p.r[cs], relay_chan(1, &m1, false), 1, false);
    let (mut svc, _) = build(&mut p.r[ss], relay_chan(2, &m2, false), 2, false);
    let cookie = cookie_with_home(rng, home);
    p.send(cs, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let out = p.drain();
    assert_eq!(
        got(&mut cl, &out[cs]),
        vec![(0, RelayCmd::RENDEZVOUS_ESTABLISHED, vec![])]
    );
    let info: Vec<u8> = (0..64).map(|_| rng.gen()).collect();
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &info, &mut rend1).unwrap();
    p.send(ss, &mut svc, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    let out = p.drain();
    assert!(got(&mut svc, &out[ss]).is_empty());
    assert_eq!(
        got(&mut cl, &out[cs]),
        vec![(0, RelayCmd::RENDEZVOUS2, info)]
    );
    let e2e = random_keys(rng);
    cl.circ.layers.push(&e2e);
    svc.circ.layers.push(&reversed(&e2e));
    (cl, svc)
}

/// `n` DATA cells from `from` (on shard `fs`) to `to` (on shard `ts`), end to end: each
/// arrives once, in order, with one layer per side.
fn flow(
    p: &mut Pair,
    rng: &mut StdRng,
    from: &mut Client,
    fs: usize,
    to: &mut Client,
    ts: usize,
    n: usize,
) {
    let (mut sent, mut recv) = (Vec::new(), Vec::new());
    for i in 0..n {
        let len = rng.gen_range(1..=498);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let body = relay_cell(from, 1, RelayCmd::DATA, &data);
        // Several cells in flight at once keep their order.
        p.cell_held(fs, from, ChanCmd::RELAY, body);
        if i % 7 == 6 || i == n - 1 {
            p.settle();
        }
        sent.extend_from_slice(&data);
        for a in std::mem::take(&mut p.out[ts]) {
            let c = cells(&[a]);
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].1, c[0].2), (to.circ_id, ChanCmd::RELAY));
            let (hop, cmd, _, d) = to.open(c[0].3);
            assert_eq!((hop, cmd), (1, RelayCmd::DATA), "cell {i}");
            recv.extend_from_slice(&d);
        }
        assert!(p.out[fs].is_empty() || fs == ts);
    }
    assert_eq!(sent.len(), recv.len());
    assert!(sent == recv, "bytes arrive once each, in order");
}

#[test]
fn rendezvous_across_shards_splices_both_ways_and_closes_together() {
    let mut rng = seeded("rendezvous_across_shards_splices_both_ways_and_closes_together");
    for home in 0..2 {
        for close_client in [false, true] {
            let mut p = Pair::new();
            let (mut cl, mut svc) = joined(&mut p, &mut rng, 0, 1, home);
            assert_eq!(p.r[home].core.metrics().hs_cross_shard_joins, 1);
            assert_eq!(p.r[0].core.hs_counters().1.rend1_success, 1);
            // More than a circuit window each way: no flow control at the rendezvous point.
            flow(&mut p, &mut rng, &mut cl, 0, &mut svc, 1, 1100);
            flow(&mut p, &mut rng, &mut svc, 1, &mut cl, 0, 1100);
            assert_eq!(p.r[0].core.metrics().hs_cross_shard_splice_cells, 1100);
            assert_eq!(p.r[1].core.metrics().hs_cross_shard_splice_cells, 1100);

            // One side goes with DESTROY: the other, on the other shard, gets DESTROYED.
            let (s, c, o, other) = if close_client {
                (0, &cl, 1, &svc)
            } else {
                (1, &svc, 0, &cl)
            };
            p.cell(s, c, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
            let out = p.drain();
            assert!(destroys(&out[s]).is_empty());
            assert_eq!(
                destroys(&out[o]),
                vec![(other.chan.id.0, other.circ_id, DestroyReason::Destroyed)]
            );
            assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);
            assert_eq!(p.r[home].core.hs_table_sizes(), (0, 0));
            let closed: u64 = (0..2)
                .map(|s| p.r[s].core.hs_counters().1.splices_closed)
                .sum();
            assert_eq!(closed, 2);
        }
    }
}

#[test]
fn a_partner_that_vanished_mid_flight() {
    let mut rng = seeded("a_partner_that_vanished_mid_flight");
    let (m1, m2) = (peer(0x21), peer(0x22));

    // INTRODUCE1 in flight while the intro circuit closes: UNKNOWN_ID, no panic.
    let mut p = Pair::new();
    let sk = key_with_home(&mut rng, 1);
    let svc = p.intro_circuit(0, relay_chan(1, &m1, false), 1, &sk);
    let (mut cl, _) = build(&mut p.r[1], relay_chan(2, &m2, false), 2, false);
    p.drain();
    let body = relay_cell(&mut cl, 0, RelayCmd::INTRODUCE1, &intro1(&sk, &[1; 50]));
    p.cell_held(1, &cl, ChanCmd::RELAY, body);
    // Home (shard 1) routes it to shard 0 at once; it is in flight there now.
    assert!(matches!(
        p.flight.front(),
        Some((0, HsMsg::Introduce2 { .. }))
    ));
    let acts = p.r[0].cell(&svc.chan, svc.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(0, acts);
    p.settle();
    let [_, a1] = p.drain();
    assert_eq!(ack_status(&mut cl, &a1), AckStatus::UNKNOWN_ID);
    assert_eq!(p.r[0].core.hs_counters().0.intro1_circuit_dead, 1);

    // RENDEZVOUS1 in flight while the waiting client circuit closes: the service's circuit
    // is closed as for an unknown cookie (TORPROTOCOL).
    let mut p = Pair::new();
    let cookie = cookie_with_home(&mut rng, 1);
    let (mut cl, _) = build(&mut p.r[0], relay_chan(1, &m1, false), 1, false);
    p.send(0, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let (mut svc, _) = build(&mut p.r[1], relay_chan(2, &m2, false), 2, false);
    p.drain();
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &[5; 64], &mut rend1).unwrap();
    let body = relay_cell(&mut svc, 0, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    p.cell_held(1, &svc, ChanCmd::RELAY, body);
    assert!(matches!(
        p.flight.front(),
        Some((0, HsMsg::Rendezvous2 { .. }))
    ));
    let acts = p.r[0].cell(&cl.chan, cl.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(0, acts);
    p.settle();
    let [_, a1] = p.drain();
    assert_eq!(
        destroys(&a1),
        vec![(2, svc.circ_id, DestroyReason::TorProtocol)]
    );
    assert_eq!(p.r[0].core.hs_counters().1.rend1_unknown_cookie, 1);
    assert_eq!(p.r[1].core.hs_table_sizes().1, 0);
    assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);

    // The service's circuit closes while its RENDEZVOUS1 is in flight: the client still
    // gets RENDEZVOUS2 (its side joined first), then DESTROY DESTROYED as the other side of
    // any splice.
    let mut p = Pair::new();
    let cookie = cookie_with_home(&mut rng, 0);
    let (mut cl, _) = build(&mut p.r[0], relay_chan(1, &m1, false), 1, false);
    p.send(0, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let [a0, _] = p.drain();
    // Read by the client: its backward digest runs over every cell.
    assert_eq!(got(&mut cl, &a0)[0].1, RelayCmd::RENDEZVOUS_ESTABLISHED);
    let (mut svc, _) = build(&mut p.r[1], relay_chan(2, &m2, false), 2, false);
    let n = Rendezvous1::encode(&cookie, &[6; 64], &mut rend1).unwrap();
    let body = relay_cell(&mut svc, 0, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    p.cell_held(1, &svc, ChanCmd::RELAY, body);
    assert!(matches!(
        p.flight.front(),
        Some((0, HsMsg::Rendezvous1 { .. }))
    ));
    let acts = p.r[1].cell(&svc.chan, svc.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(1, acts);
    p.settle();
    let [a0, _] = p.drain();
    assert_eq!(got(&mut cl, &a0)[0].1, RelayCmd::RENDEZVOUS2);
    assert_eq!(
        destroys(&a0),
        vec![(1, cl.circ_id, DestroyReason::Destroyed)]
    );
    assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);
    assert_eq!(p.r[0].core.hs_table_sizes(), (0, 0));

    // Spliced cells in flight toward a partner that closed: dropped there, and the close
    // reaches the sender's side.
    let mut p = Pair::new();
    let (mut cl, svc) = joined(&mut p, &mut rng, 0, 1, 0);
    for _ in 0..3 {
        let body = relay_cell(&mut cl, 1, RelayCmd::DATA, &[7; 100]);
        p.cell_held(0, &cl, ChanCmd::RELAY, body);
    }
    assert_eq!(p.flight.len(), 3);
    let acts = p.r[1].cell(&svc.chan, svc.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(1, acts);
    p.settle();
    let [a0, a1] = p.drain();
    assert!(
        cells(&a1).is_empty(),
        "nothing spliced to a closed circuit: {a1:?}"
    );
    assert_eq!(
        destroys(&a0),
        vec![(1, cl.circ_id, DestroyReason::Destroyed)]
    );
}

/// A one-shard relay still serves both roles (every message is carried out at once).
#[test]
fn one_shard_never_sends_messages() {
    let mut rng = seeded("one_shard_never_sends_messages");
    let (m1, m2) = (peer(0x21), peer(0x22));
    let mut p = Pair::one_shard();
    let sk = SigningKey::from_bytes(&rng.gen());
    p.intro_circuit(0, relay_chan(1, &m1, false), 1, &sk);
    let (mut cl, _) = build(&mut p.r[0], relay_chan(2, &m2, false), 2, false);
    p.send(0, &mut cl, RelayCmd::INTRODUCE1, &intro1(&sk, &[3; 40]));
    assert!(p.flight.is_empty());
    let [a0, _] = p.drain();
    assert_eq!(ack_status(&mut cl, &a0), AckStatus::SUCCESS);
    assert_eq!(p.r[0].core.metrics().hs_cross_shard_intros, 0);
}

/// A client circuit on shard 0 waiting with a cookie whose home is `home`, and a service
/// circuit on shard 1 with the end-to-end layer in place on both; the service's
/// RENDEZVOUS1 is sent and left in flight (the service's circuit is `RendJoining`).
fn joining(p: &mut Pair, rng: &mut StdRng, home: usize) -> (Client, Client) {
    joining_on(p, rng, 0, home)
}

/// [`joining`] with the client's circuit on shard `cs`.
fn joining_on(p: &mut Pair, rng: &mut StdRng, cs: usize, home: usize) -> (Client, Client) {
    let (m1, m2) = (peer(0x21), peer(0x22));
    let (mut cl, _) = build(&mut p.r[cs], relay_chan(1, &m1, false), 1, false);
    let (mut svc, _) = build(&mut p.r[1], relay_chan(2, &m2, false), 2, false);
    let cookie = cookie_with_home(rng, home);
    p.send(cs, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let out = p.drain();
    assert_eq!(
        got(&mut cl, &out[cs]),
        vec![(0, RelayCmd::RENDEZVOUS_ESTABLISHED, vec![])]
    );
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &[0x42; 64], &mut rend1).unwrap();
    let body = relay_cell(&mut svc, 0, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    p.cell_held(1, &svc, ChanCmd::RELAY, body);
    assert!(!p.flight.is_empty(), "the join crosses shards");
    let e2e = random_keys(rng);
    cl.circ.layers.push(&e2e);
    svc.circ.layers.push(&reversed(&e2e));
    (cl, svc)
}

/// C tor joins at once (`rend_mid_rendezvous`), so a cell the service sends right after
/// RENDEZVOUS1 is spliced. Across shards the join takes a round trip: such cells are held
/// (in the cell pool) and passed through the splice in order once it completes, never a
/// TORPROTOCOL close. The client's circuit on the other shard, or on the service's (home
/// on the other: the join still takes a round trip, and the held cells take the local
/// splice).
#[test]
fn cells_sent_while_joining_are_spliced_after_the_join() {
    let mut rng = seeded("cells_sent_while_joining_are_spliced_after_the_join");
    for (cs, home) in [(0, 0), (0, 1), (1, 0)] {
        let mut p = Pair::new();
        let (mut cl, mut svc) = joining_on(&mut p, &mut rng, cs, home);
        let queued = p.r[1].core.metrics().queued_cells;
        let circuits = p.r[1].core.circuit_count();
        let mut sent = Vec::new();
        for i in 0..5u8 {
            let data = vec![i; 50 + usize::from(i)];
            let body = relay_cell(&mut svc, 1, RelayCmd::DATA, &data);
            p.cell_held(1, &svc, ChanCmd::RELAY, body);
            sent.push(data);
        }
        assert_eq!(
            p.r[1].core.circuit_count(),
            circuits,
            "home {home}: still open"
        );
        assert!(destroys(&p.out[1]).is_empty());
        // Held in the shard's cell pool.
        assert_eq!(p.r[1].core.metrics().queued_cells, queued + 5);
        assert_eq!(p.r[1].core.hs_cross_counters().joining_held, 5);
        p.settle();
        let out = p.drain();
        assert!(destroys(&out[1]).is_empty() && destroys(&out[0]).is_empty());
        let g = got(&mut cl, &out[cs]);
        assert_eq!(g.len(), 6, "client on {cs}, home {home}: {g:?}");
        assert_eq!((g[0].0, g[0].1), (0, RelayCmd::RENDEZVOUS2));
        for (i, d) in sent.iter().enumerate() {
            assert_eq!(
                (g[i + 1].0, g[i + 1].1, &g[i + 1].2),
                (1, RelayCmd::DATA, d)
            );
        }
        let c = p.r[1].core.hs_cross_counters();
        assert_eq!((c.joining_spliced, c.joining_dropped), (5, 0));
        assert_eq!(p.r[1].core.metrics().queued_cells, queued);
        // The MetricsPort copy follows (`fors_relay_hs_rend_joining_cells_total`).
        let m = p.r[1].core.metrics();
        assert_eq!((m.hs_joining_held, m.hs_joining_spliced), (5, 5));
        // Joined: the splice carries on both ways.
        flow(&mut p, &mut rng, &mut svc, 1, &mut cl, cs, 20);
        flow(&mut p, &mut rng, &mut cl, cs, &mut svc, 1, 20);
    }
}

/// Past the hold bound the service's circuit closes with RESOURCELIMIT (C tor's answer to
/// a cell queue past its limit), its held cells dropped and counted; the client's side,
/// joined meanwhile, closes with the service's own reason, as C tor marks a splice
/// partner (`circuit_mark_for_close_`), not DESTROYED.
#[test]
fn joining_past_the_hold_bound_closes_both_with_the_reason() {
    let mut rng = seeded("joining_past_the_hold_bound_closes_both_with_the_reason");
    for home in 0..2 {
        let mut p = Pair::new();
        let (mut cl, mut svc) = joining(&mut p, &mut rng, home);
        let queued = p.r[1].core.metrics().queued_cells;
        let max = fors::proto::circuit::hs_cross::REND_JOINING_HOLD_MAX;
        for i in 0..=max {
            let body = relay_cell(&mut svc, 1, RelayCmd::DATA, &[i as u8; 30]);
            p.cell_held(1, &svc, ChanCmd::RELAY, body);
        }
        assert_eq!(
            destroys(&p.out[1]),
            vec![(2, svc.circ_id, DestroyReason::ResourceLimit)]
        );
        let c = p.r[1].core.hs_cross_counters();
        assert_eq!(
            (c.joining_held, c.joining_overflow, c.joining_dropped),
            (max as u64, 1, max as u64)
        );
        assert_eq!(p.r[1].core.metrics().queued_cells, queued);
        p.settle();
        let [a0, _] = p.drain();
        assert_eq!(got(&mut cl, &a0)[0].1, RelayCmd::RENDEZVOUS2);
        assert_eq!(
            destroys(&a0),
            vec![(1, cl.circ_id, DestroyReason::ResourceLimit)],
            "home {home}"
        );
        assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);
        assert_eq!(p.r[home].core.hs_table_sizes(), (0, 0));
    }
}

/// A service circuit that breaks a rule while joining (a second RENDEZVOUS1) closes with
/// TORPROTOCOL, and so does the client's side once its join comes back.
#[test]
fn joining_circuit_closed_for_a_protocol_violation_carries_its_reason() {
    let mut rng = seeded("joining_circuit_closed_for_a_protocol_violation_carries_its_reason");
    let mut p = Pair::new();
    let (mut cl, mut svc) = joining(&mut p, &mut rng, 0);
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&[9; 20], &[1; 64], &mut rend1).unwrap();
    let body = relay_cell(&mut svc, 0, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    p.cell_held(1, &svc, ChanCmd::RELAY, body);
    assert_eq!(
        destroys(&p.out[1]),
        vec![(2, svc.circ_id, DestroyReason::TorProtocol)]
    );
    p.settle();
    let [a0, _] = p.drain();
    assert_eq!(got(&mut cl, &a0)[0].1, RelayCmd::RENDEZVOUS2);
    assert_eq!(
        destroys(&a0),
        vec![(1, cl.circ_id, DestroyReason::TorProtocol)]
    );
}

/// INTRODUCE1/2 and RENDEZVOUS1/2 that the node's cross-shard overflow refuses (at its
/// bound) are answered as C tor answers what it cannot relay: the client gets
/// INTRODUCE_ACK UNKNOWN_ID (the intro circuit stays); a refused RENDEZVOUS1 closes the
/// service's circuit with RESOURCELIMIT (the client keeps waiting); a refused RENDEZVOUS2
/// closes both. Counted.
#[test]
fn hs_messages_refused_at_the_overflow_bound() {
    let mut rng = seeded("hs_messages_refused_at_the_overflow_bound");
    let (m1, m2) = (peer(0x21), peer(0x22));
    // Gives the message in flight back to the shard that sent it, as the node does.
    fn refuse(p: &mut Pair, from: usize) {
        let (to, msg) = p.flight.pop_back().expect("a message in flight");
        let acts = p.r[from]
            .io(|c, io| c.hs_cross_refused(ShardIdx(to as u16), msg, io))
            .1;
        p.take(from, acts);
        p.settle();
    }

    // INTRODUCE1 (client's shard 1 → home 0) and INTRODUCE2 (home 1 → intro shard 0).
    for home in [0, 1] {
        let mut p = Pair::new();
        let sk = key_with_home(&mut rng, home);
        let mut svc = p.intro_circuit(0, relay_chan(1, &m1, false), 1, &sk);
        let (mut cl, _) = build(&mut p.r[1], relay_chan(2, &m2, false), 2, false);
        p.drain();
        let body = relay_cell(&mut cl, 0, RelayCmd::INTRODUCE1, &intro1(&sk, &[1; 50]));
        p.cell_held(1, &cl, ChanCmd::RELAY, body);
        let (to, m) = p.flight.back().expect("in flight");
        assert_eq!(*to, 0);
        if home == 0 {
            assert!(matches!(m, HsMsg::Introduce1 { .. }), "{m:?}");
        } else {
            assert!(matches!(m, HsMsg::Introduce2 { .. }), "{m:?}");
        }
        refuse(&mut p, 1);
        let [a0, a1] = p.drain();
        assert_eq!(
            ack_status(&mut cl, &a1),
            AckStatus::UNKNOWN_ID,
            "home {home}"
        );
        assert!(got(&mut svc, &a0).is_empty(), "no INTRODUCE2");
        assert_eq!(p.r[1].core.hs_cross_counters().overflow_introduce, 1);
        assert_eq!(p.r[0].core.circuit_count(), 1, "the intro circuit stays");
        assert!(destroys(&a0).is_empty() && destroys(&a1).is_empty());
    }

    // RENDEZVOUS1 (service's shard 1 → home 0): the service's circuit closes.
    let mut p = Pair::new();
    let (mut cl, svc) = joining(&mut p, &mut rng, 0);
    assert!(matches!(
        p.flight.back(),
        Some((0, HsMsg::Rendezvous1 { .. }))
    ));
    refuse(&mut p, 1);
    let [a0, a1] = p.drain();
    assert_eq!(
        destroys(&a1),
        vec![(2, svc.circ_id, DestroyReason::ResourceLimit)]
    );
    assert!(got(&mut cl, &a0).is_empty() && destroys(&a0).is_empty());
    assert_eq!(p.r[0].core.hs_table_sizes().1, 1, "the client still waits");
    assert_eq!(p.r[1].core.hs_cross_counters().overflow_rendezvous, 1);

    // RENDEZVOUS2 (home 1 → client's shard 0): the cookie is taken; both close.
    let mut p = Pair::new();
    let (mut cl, svc) = joining(&mut p, &mut rng, 1);
    assert!(matches!(
        p.flight.back(),
        Some((0, HsMsg::Rendezvous2 { .. }))
    ));
    refuse(&mut p, 1);
    let [a0, a1] = p.drain();
    assert!(got(&mut cl, &a0).is_empty(), "no RENDEZVOUS2");
    assert_eq!(
        destroys(&a0),
        vec![(1, cl.circ_id, DestroyReason::ResourceLimit)]
    );
    assert_eq!(
        destroys(&a1),
        vec![(2, svc.circ_id, DestroyReason::ResourceLimit)]
    );
    assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);
    assert_eq!(p.r[1].core.hs_table_sizes(), (0, 0));
    assert_eq!(p.r[1].core.hs_cross_counters().overflow_rendezvous, 1);
}
