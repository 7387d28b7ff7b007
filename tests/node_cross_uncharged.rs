//! The cross-shard overflow's uncharged cap at the node (`relay::cross::Hold`): while the
//! origin shard's queue toward the owner shard takes nothing, EXTEND2s toward a relay the
//! other shard owns wait in the overflow as `ExtendRequest`s, up to the link's uncharged cap
//! (`CROSS_UNCHARGED_CAP`, below its cell bound); the next one is refused and its circuit closed toward the client with DESTROY
//! RESOURCELIMIT, never dropped silently. Once the queue takes messages again, every held
//! request reaches the owner shard and the overflow empties. Seeded; the seed is printed.

mod channel_support;
mod node_harness;

use fors::cell::chan::DestroyReason;
use fors::cell::ChanCmd;
use fors::relay::handler::cross::{overflow_cells_for, CROSS_HEADROOM_CELLS, CROSS_UNCHARGED_CAP};
use node_harness::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// The fake shard's ring, and the node's minimum overflow (`node::proxy`).
const RING: usize = 1024;
const MIN_OVERFLOW: usize = 4096;

#[test]
fn extends_past_the_uncharged_cap_are_refused_with_resourcelimit() {
    let seed = seed("extends_past_the_uncharged_cap_are_refused_with_resourcelimit");
    // The cell bound is larger: requests meet their own cap first.
    assert_eq!(
        overflow_cells_for(RING, MIN_OVERFLOW),
        CROSS_HEADROOM_CELLS - RING
    );
    let cap = CROSS_UNCHARGED_CAP;
    assert!(cap < CROSS_HEADROOM_CELLS - RING);
    let mut net = Net::with_config(
        seed,
        fors::proto::circuit::CircuitConfig {
            max_circuits: cap + 64,
            ..circuit_config()
        },
    );
    let owner = owner_of(target_ident());
    let origin = 1 - owner;
    assert_eq!(net.shards[origin].cross_capacity, RING);
    let mut p = Peer::client(&mut net, origin, 40100);
    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    // The owner shard stops draining: the origin's queue toward it takes nothing.
    net.shards[origin].cross_capacity = 0;
    for i in 0..=cap as u32 {
        let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0000 + i);
        let (_st, _skin, body) = extend2_to_target(&mut c, &mut rng);
        p.send(&mut net, c.circ_id, ChanCmd::RELAY_EARLY, &body);
        let cells = p.cells();
        if (i as usize) < cap {
            // Held: nothing comes back, nothing reached the owner.
            assert!(cells.is_empty(), "extend {i}: {cells:?}");
            assert_eq!(net.nodes[origin].census().cross_depth, i as usize + 1);
        } else {
            // Past the cap: the circuit is closed toward the client, RESOURCELIMIT.
            assert_eq!(cells.len(), 1, "extend {i}: {cells:?}");
            let (id, cmd, body) = &cells[0];
            assert_eq!((*id, *cmd), (c.circ_id, ChanCmd::DESTROY));
            assert_eq!(DestroyReason::from(body[0]), DestroyReason::ResourceLimit);
        }
    }
    assert_eq!(net.nodes[origin].census().cross_depth, cap);
    assert!(net.cross_log.is_empty(), "{:?}", &net.cross_log[..4]);
    assert_eq!(
        net.nodes[origin].census().circuits,
        cap,
        "the refused circuit is gone, the held ones wait"
    );

    // The queue takes messages again: every held request reaches the owner, in order, and
    // the overflow empties.
    net.shards[origin].cross_capacity = RING;
    for _ in 0..(cap / RING + 4) {
        net.tick(std::time::Duration::from_millis(100));
        net.settle();
    }
    assert_eq!(net.nodes[origin].census().cross_depth, 0);
    let delivered = net
        .cross_log
        .iter()
        .filter(|(f, t, k)| (*f, *t, *k) == (origin, owner, "ExtendRequest"))
        .count();
    assert_eq!(delivered, cap);
    println!("{cap} extends held, 1 refused with RESOURCELIMIT, {delivered} delivered after");
}

/// Stray non-RELAY cells from a proxied circuit's next hop (requests of the next hop's to
/// flood) wait for the origin up to the request cap; the next one closes the circuit with
/// RESOURCELIMIT both ways, as a local close in C: toward the next hop at once, and toward
/// the client once the origin hears of it (`RelayMsg::NextHopClosed`), not DESTROYED.
#[test]
fn stray_cells_past_the_cap_close_the_circuit_with_resourcelimit_both_ways() {
    let seed = seed("stray_cells_past_the_cap_close_the_circuit_with_resourcelimit_both_ways");
    let mut net = Net::new(seed);
    let mut cc = cross_circuit(&mut net, 40200);
    let (origin, owner) = (cc.origin, cc.owner);
    let cap = CROSS_UNCHARGED_CAP;
    // The origin shard stops draining: the owner's queue toward it takes nothing.
    net.shards[owner].cross_capacity = 0;
    // All in one read, as a peer that writes faster than we read would have them arrive:
    // after a read that meets a congested link the channel stops reading, so a flood is
    // held to what its reads already carried.
    let stray = [0u8; fors::cell::CELL_BODY_LEN];
    let mut bytes = Vec::new();
    for _ in 0..=cap {
        cc.t.chan
            .send_cell(cc.tcid, ChanCmd::CREATED2, &stray)
            .unwrap();
        let out = cc.t.chan.pending_output().to_vec();
        cc.t.chan.consume_output(out.len());
        bytes.extend_from_slice(&out);
    }
    net.data(owner, cc.t.conn, &bytes);
    cc.t.pump(&mut net);
    // Past the cap the next hop hears RESOURCELIMIT (the one refused stray; the ones
    // before it wait for the origin).
    let cells = cc.t.cells();
    assert_eq!(cells.len(), 1, "{cells:?}");
    let (id, cmd, body) = &cells[0];
    assert_eq!((*id, *cmd), (cc.tcid, ChanCmd::DESTROY));
    assert_eq!(DestroyReason::from(body[0]), DestroyReason::ResourceLimit);
    assert!(cc.p.cells().is_empty(), "the origin heard nothing yet");
    // The queue drains: the held strays, then the close, reach the origin, which closes the
    // circuit toward the client with the same reason.
    net.cross_log.clear();
    net.shards[owner].cross_capacity = RING;
    for _ in 0..(cap / RING + 4) {
        net.tick(std::time::Duration::from_millis(100));
        net.settle();
    }
    let closes = net
        .cross_log
        .iter()
        .filter(|(f, t, k)| (*f, *t, *k) == (owner, origin, "NextHopClosed"))
        .count();
    assert_eq!(closes, 1);
    cc.p.pump(&mut net);
    let cells = cc.p.cells();
    let destroys: Vec<_> = cells
        .iter()
        .filter(|(id, cmd, _)| (*id, *cmd) == (cc.c.circ_id, ChanCmd::DESTROY))
        .collect();
    assert_eq!(destroys.len(), 1, "{cells:?}");
    assert_eq!(
        DestroyReason::from(destroys[0].2[0]),
        DestroyReason::ResourceLimit
    );
    assert_eq!(net.nodes[origin].census().circuits, 0);
    println!("{cap} strays held, 1 refused: RESOURCELIMIT to the next hop and the client");
}
