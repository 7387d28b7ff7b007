//! The circuit core's side of cross-shard backpressure: a cell the shard could not pass to
//! the next hop's shard goes back into the circuit's next-hop queue (in the pool, so the
//! per-circuit bound and the memory cap see it) and comes out again, in order, when the
//! shard unblocks that channel; DESTROY from the next hop's shard closes toward the client.

mod circuit_common;

use circuit_common::*;
use fors::cell::chan::{Created2, DestroyReason};
use fors::cell::relay::msg::{Extend2, RelayMsg};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::circuit::{
    Action, ChanId, CircHandle, CircuitConfig, ExtendDone, NextHop, ShardIdx,
};

const NEXT: NextHop = NextHop {
    chan: ChanId((1 << 56) | 70),
    shard: ShardIdx(1),
    circ_id: CircId(0x8000_0070),
};

/// Client → A (shard 0) with its next hop on shard 1; returns the circuit's handle.
fn middle(a: &mut Relay, cl: &mut Client) -> CircHandle {
    cl.create(a, Hs::Ntor);
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let mut ext = [0u8; 498];
    let n = extend2_body(&b, "127.0.0.1:9002", &[0u8; 84], &mut ext);
    let m = RelayMsg::Extend2(Extend2::parse(&ext[..n]).unwrap());
    let acts = cl.send(a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    let Action::Extend { circ, .. } = acts[0] else {
        panic!("{acts:?}")
    };
    let mut created = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &[5u8; 64] }.encode(&mut created).unwrap();
    let (r, acts) = a.io(|c, io| {
        c.extend_result(
            circ,
            Ok(ExtendDone {
                next: NEXT,
                created2: &created,
            }),
            io,
        )
    });
    r.unwrap();
    assert_eq!(cl.open_all(&acts)[0].1, RelayCmd::EXTENDED2);
    circ
}

/// A pretend second hop so the client's cells are forwarded (not recognized) by A.
fn add_second_hop(cl: &mut Client) {
    cl.circ
        .layers
        .push(&fors::crypto::keymat::Tor1KeyMaterial::from_kdf_output(
            &[7u8; 92],
        ));
}

#[test]
fn held_cells_wait_in_the_pool_and_leave_in_order_on_unblock() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    let circ = middle(&mut a, &mut cl);
    add_second_hop(&mut cl);
    // Three cells forwarded to shard 1; the shard's queue was full for the last two.
    let mut sent = vec![];
    for i in 0..3u8 {
        let (body, _) = cl.relay_cell(1, &RelayMsg::Data(&[i; 10]), 0);
        let acts = a.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
        let (ch, id, cmd, b) = one_cell(&acts);
        assert_eq!((ch, id, cmd), (NEXT.chan, NEXT.circ_id, ChanCmd::RELAY));
        sent.push(b);
    }
    a.core.channel_blocked(NEXT.chan);
    for b in &sent[1..] {
        let (r, acts) = a.io(|c, io| c.hold_for_next_hop(circ, ChanCmd::RELAY, b, io));
        assert!(r.unwrap());
        assert!(acts.is_empty());
    }
    assert_eq!(a.core.queued_cells(circ), Some(2));
    assert_eq!(
        a.core.metrics().queued_cells,
        2,
        "held cells are in the pool"
    );
    // A cell arriving meanwhile queues behind them.
    let (body, _) = cl.relay_cell(1, &RelayMsg::Data(&[3; 10]), 0);
    assert!(a
        .cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body)
        .is_empty());
    assert_eq!(a.core.queued_cells(circ), Some(3));
    // Unblocked: the held cells first, in their order, then the later one.
    let ((), acts) = a.io(|c, io| c.channel_unblocked(NEXT.chan, io));
    let out = cells(&acts);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].3, sent[1]);
    assert_eq!(out[1].3, sent[2]);
    assert!(out
        .iter()
        .all(|&(ch, id, cmd, _)| (ch, id, cmd) == (NEXT.chan, NEXT.circ_id, ChanCmd::RELAY)));
    assert!(acts
        .iter()
        .all(|x| matches!(x, Action::SendCell { shard, .. } if *shard == NEXT.shard)));
    assert_eq!(a.core.queued_cells(circ), Some(0));
    assert_eq!(a.core.metrics().queued_cells, 0);
}

#[test]
fn holding_past_the_circuit_bound_closes_both_ways() {
    let cfg = CircuitConfig {
        max_queue_per_circuit: 4,
        ..test_config()
    };
    let mut a = Relay::new(1, cfg, "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    let circ = middle(&mut a, &mut cl);
    a.core.channel_blocked(NEXT.chan);
    let body = [1u8; CELL_BODY_LEN];
    for _ in 0..4 {
        let (r, _) = a.io(|c, io| c.hold_for_next_hop(circ, ChanCmd::RELAY, &body, io));
        assert!(r.unwrap());
    }
    let (r, acts) = a.io(|c, io| c.hold_for_next_hop(circ, ChanCmd::RELAY, &body, io));
    assert!(!r.unwrap(), "the fifth cell closes the circuit");
    let destroys: Vec<_> = cells(&acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|(ch, id, _, b)| (ch, id, destroy_reason(&b)))
        .collect();
    assert_eq!(
        destroys,
        vec![
            (cl.chan.id, cl.circ_id, DestroyReason::ResourceLimit),
            (NEXT.chan, NEXT.circ_id, DestroyReason::ResourceLimit),
        ]
    );
    assert_eq!(
        a.core.metrics().queued_cells,
        0,
        "the pool got its cells back"
    );
    // A stale handle is refused.
    let (r, _) = a.io(|c, io| c.hold_for_next_hop(circ, ChanCmd::RELAY, &body, io));
    assert!(r.is_err());
}

#[test]
fn destroy_from_the_next_hops_shard_reaches_the_client_only() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    let circ = middle(&mut a, &mut cl);
    // The circuit ID of the remote channel is not usable from a local channel.
    assert!(!a.core.circ_id_in_use(NEXT.chan, NEXT.circ_id));
    assert!(a.core.circ_id_in_use(cl.chan.id, cl.circ_id));
    let mut body = [0u8; CELL_BODY_LEN];
    let (r, acts) = a.io(|c, io| c.handle_next_hop_cell(circ, ChanCmd::DESTROY, &mut body, io));
    r.unwrap();
    let out = cells(&acts);
    assert_eq!(out.len(), 1, "{acts:?}");
    assert_eq!(
        (out[0].0, out[0].1, out[0].2, destroy_reason(&out[0].3)),
        (
            cl.chan.id,
            cl.circ_id,
            ChanCmd::DESTROY,
            DestroyReason::Destroyed
        )
    );
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::CircuitClosed { circ: c, .. } if *c == circ)));
    assert_eq!(a.core.circuit_count(), 0);
}

#[test]
fn cells_held_outside_the_core_count_against_the_memory_cap() {
    let cfg = CircuitConfig {
        pool_cells: 8,
        ..test_config()
    };
    let mut a = Relay::new(1, cfg, "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    let circ = middle(&mut a, &mut cl);
    // The circuit holds 5 cells for its blocked next hop.
    a.core.channel_blocked(NEXT.chan);
    let body = [1u8; CELL_BODY_LEN];
    for _ in 0..5 {
        assert!(a
            .io(|c, io| c.hold_for_next_hop(circ, ChanCmd::RELAY, &body, io))
            .0
            .unwrap());
    }
    // The shard holds 3 cells of other shards' circuits: the pool is full.
    for _ in 0..3 {
        let (ok, acts) = a.io(|c, io| c.charge_external_cell(io));
        assert!(ok && acts.is_empty());
    }
    assert_eq!(a.core.metrics().queued_cells, 8);
    // One more: the memory cap (8 cells, 90 % = 7) evicts the circuit with the oldest cells.
    let (ok, acts) = a.io(|c, io| c.charge_external_cell(io));
    assert!(ok);
    assert_eq!(a.core.circuit_count(), 0);
    assert_eq!(a.core.metrics().oom_kills, 1);
    assert!(cells(&acts)
        .iter()
        .any(|c| c.2 == ChanCmd::DESTROY && destroy_reason(&c.3) == DestroyReason::ResourceLimit));
    assert_eq!(a.core.metrics().queued_cells, 4);
    // Nothing left to evict: a full pool refuses further charges.
    for _ in 0..4 {
        assert!(a.io(|c, io| c.charge_external_cell(io)).0);
    }
    assert!(!a.io(|c, io| c.charge_external_cell(io)).0);
    a.core.release_external_cells(8);
    assert_eq!(a.core.metrics().queued_cells, 0);
    a.core.release_external_cells(1); // nothing charged: no effect
    assert_eq!(a.core.metrics().queued_cells, 0);
}
