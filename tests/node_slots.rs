//! The node tells its shard when a link handshake completes (issue #15, connection slots by
//! class): `ShardIo::set_authenticated` moves an accepted connection out of the handshake
//! class, whose oldest members the shard evicts under a flood. Checked on fake shards with
//! the real link handshake (node_harness): once for an accepted channel when it opens,
//! never before, and never for a channel the node opened itself (already outbound).

mod channel_support;
mod node_harness;

use std::net::SocketAddr;

use fors::relay::node::fake::Op;
use node_harness::*;

fn authenticated(net: &Net, shard: usize) -> Vec<fors::shard::ConnId> {
    net.shards[shard]
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::Authenticated { conn } => Some(*conn),
            _ => None,
        })
        .collect()
}

#[test]
fn an_accepted_channel_is_reported_authenticated_once_when_it_opens() {
    let mut net = Net::new(seed("an_accepted_channel_is_reported_authenticated_once"));
    // Accepted, no handshake yet: still a handshake.
    let idle = net.accept(0, SocketAddr::new(LOCAL, 40200));
    net.settle();
    assert!(authenticated(&net, 0).is_empty());
    // A client runs the whole link handshake: reported once, for its connection only.
    let p = Peer::client(&mut net, 0, 40201);
    assert_eq!(authenticated(&net, 0), vec![p.conn]);
    // More traffic on the open channel reports nothing more.
    let mut p = p;
    let _c = ClientCirc::create(&mut net, &mut p, 0x8000_0001);
    net.tick(std::time::Duration::from_millis(100));
    assert_eq!(authenticated(&net, 0), vec![p.conn]);
    assert!(net.is_open(0, idle));
}

#[test]
fn a_channel_the_node_opened_is_not_reported() {
    let mut net = Net::new(seed("a_channel_the_node_opened_is_not_reported"));
    let x = cross_circuit(&mut net, 40210);
    // (`cross_circuit` clears the ops before the extend, so only what followed is seen.)
    // The owner's channel to the target was opened by the node: an outbound slot already.
    assert!(
        authenticated(&net, x.owner).is_empty(),
        "{:?}",
        net.shards[x.owner].ops
    );
    assert!(net.is_open(x.owner, x.t.conn));
}
