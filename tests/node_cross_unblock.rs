//! A channel on another shard that unblocks while the origin's queue toward that shard is
//! congested must not stay blocked at the origin (review finding M1, session 13). The origin
//! holds a blocked channel's cells in the core, so none are handed to the link and noted
//! there; before the fix the "unblocked" notice was dropped when the link was congested and
//! the circuit stalled for good. Now the link keeps the channel and its pump unblocks it once
//! it drains. Seeded; the seed is printed.

mod channel_support;
mod node_harness;

use std::time::Duration;

use fors::cell::relay::{v0, RelayCmd};
use fors::cell::ChanCmd;
use fors::proto::circuit::CellBody;
use fors::relay::node::fake::FakeShard;
use fors::shard::ConnId;
use node_harness::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// The target's connection bound while it does not read, and after.
const BLOCKED_BOUND: usize = 2048;
const OPEN_BOUND: usize = 1 << 20;

fn set_bound<M>(shard: &mut FakeShard<M>, conn: ConnId, bound: usize) {
    shard
        .conns
        .get_mut(&conn)
        .expect("the target's connection")
        .bound = bound;
}

#[test]
fn an_unblock_that_arrives_while_the_link_is_congested_is_not_lost() {
    let seed = seed("an_unblock_that_arrives_while_the_link_is_congested_is_not_lost");
    let mut net = Net::new(seed);
    let mut x = cross_circuit(&mut net, 40300);
    let (origin, owner) = (x.origin, x.owner);
    let mut sent = 0u32;
    let mut forward = |net: &mut Net, x: &mut CrossCircuit, n: u32| {
        for _ in 0..n {
            let body = x.c.cell(1, RelayCmd::DATA, 0, &sent.to_be_bytes());
            x.p.chan
                .send_cell(x.c.circ_id, ChanCmd::RELAY, &body)
                .expect("the client's own link queue has room");
            sent += 1;
        }
        x.p.pump(net);
    };

    // The target stops reading: its channel on the owner shard fills and blocks, and the
    // owner tells the origin.
    set_bound(&mut net.shards[owner], x.t.conn, BLOCKED_BOUND);
    net.cross_log.clear();
    for _ in 0..40 {
        forward(&mut net, &mut x, 8);
        x.t.push(&mut net);
    }
    assert!(
        net.cross_log
            .iter()
            .any(|&(f, t, k)| (f, t, k) == (owner, origin, "ChanBlocked")),
        "the target's channel never blocked: {:?}",
        &net.cross_log[..net.cross_log.len().min(8)]
    );

    // The origin's queue toward the owner stops taking messages, and an EXTEND2 of another
    // circuit waits in its overflow: the link is congested.
    net.shards[origin].cross_capacity = 0;
    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    let mut other = ClientCirc::create(&mut net, &mut x.p, 0x8000_0200);
    let (_st, _skin, ext) = extend2_to_target(&mut other, &mut rng);
    x.p.send(&mut net, other.circ_id, ChanCmd::RELAY_EARLY, &ext);
    assert!(net.nodes[origin].census().cross_depth >= 1);
    // More cells of the blocked circuit: the origin's core holds them.
    forward(&mut net, &mut x, 16);

    // The target reads again: the owner's channel drains and the "unblocked" notice reaches
    // the origin while its link is still congested.
    net.cross_log.clear();
    set_bound(&mut net.shards[owner], x.t.conn, OPEN_BOUND);
    x.t.pump(&mut net);
    assert!(
        net.cross_log
            .iter()
            .any(|&(f, t, k)| (f, t, k) == (owner, origin, "ChanBlocked")),
        "no unblocked notice reached the origin: {:?}",
        net.cross_log
    );
    assert!(
        net.nodes[origin].census().cross_depth >= 1,
        "still congested"
    );

    // The queue takes messages again: the link drains, the channel unblocks, and every
    // forward cell reaches the target in order.
    net.shards[origin].cross_capacity = 1024;
    let mut got = Vec::new();
    for _ in 0..20 {
        net.tick(Duration::from_millis(100));
        x.p.pump(&mut net);
        x.t.pump(&mut net);
        for (id, cmd, body) in x.t.cells() {
            if id != x.tcid || cmd != ChanCmd::RELAY {
                continue;
            }
            let mut b: CellBody = body.as_slice().try_into().unwrap();
            assert!(
                x.hop.recognize(&mut b),
                "a forward cell the target cannot open"
            );
            let m = v0::parse(&b).unwrap();
            got.push(u32::from_be_bytes(m.data[..4].try_into().unwrap()));
        }
        if got.len() == sent as usize {
            break;
        }
    }
    let expect: Vec<u32> = (0..sent).collect();
    assert_eq!(
        got.len(),
        expect.len(),
        "forward cells stuck at the origin (seed {seed})"
    );
    assert_eq!(got, expect, "forward cells out of order (seed {seed})");
    println!("seed {seed}: {sent} forward cells arrived after an unblock during congestion");
}
