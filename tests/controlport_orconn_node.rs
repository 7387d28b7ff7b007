//! The ORCONN facts the relay node reports (`fors::relay::ctlevents`), on fake shards: an
//! accepted channel (NEW, CONNECTED), a channel launched for an extend (LAUNCHED,
//! CONNECTED, CLOSED) and one whose TCP connect is refused (FAILED with C tor's REASON and
//! NCIRCS), turned into `650 ORCONN` lines and `orconn-status` by the ControlPort's table;
//! a client's address never leaves the node under SafeLogging.
//! Its own test binary: the fact queue is process-wide.

mod channel_support;
mod node_harness;

use fors::cell::chan::{Create2, HandshakeType};
use fors::cell::relay::msg::{Extend2, LinkSpec};
use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::controlport::orconn::OrConnTable;
use fors::relay::ctlevents;
use fors::shard::CloseReason;
use node_harness::*;

fn lines(t: &mut OrConnTable) -> Vec<String> {
    let mut evs = Vec::new();
    ctlevents::drain(&mut evs);
    // As under SafeLogging 0: what the node sent is printed.
    evs.iter().filter_map(|e| t.apply(e, false)).collect()
}

#[test]
fn orconn_facts_for_accepted_launched_failed_and_closed_channels() {
    ctlevents::set_enabled(true);
    let mut net = Net::new(seed("orconn_facts"));
    let mut t = OrConnTable::new();
    let client = client_ident().id.rsa_id().to_hex();
    let target = target_ident().id.rsa_id().to_hex();

    // A client channel on one shard, extended to the target by the other.
    let mut x = cross_circuit(&mut net, 40100);
    assert_eq!(
        lines(&mut t),
        [
            // SafeLogging (the default) scrubs a client's address: the node does not even
            // send it, so `[scrubbed]` whole, port included, whatever the table is told.
            "650 ORCONN [scrubbed] NEW ID=1\r\n".to_string(),
            format!("650 ORCONN ${client} CONNECTED ID=1\r\n"),
            format!("650 ORCONN ${target} LAUNCHED ID=2\r\n"),
            format!("650 ORCONN ${target} CONNECTED ID=2\r\n"),
        ]
    );
    let show = false;
    assert_eq!(
        t.status(show),
        format!("${client} CONNECTED\n${target} CONNECTED")
    );

    // The target goes away: CLOSED, REASON=DONE for a clean close.
    net.peer_closed(x.owner, x.t.conn);
    assert_eq!(
        lines(&mut t),
        [format!("650 ORCONN ${target} CLOSED REASON=DONE ID=2\r\n")]
    );

    // A new extend opens a new channel, whose connect is refused: FAILED with the errno's
    // reason and the one circuit that waited for it.
    // (The first circuit's DESTROY, read first.)
    x.p.pump(&mut net);
    let _ = x.p.cells();
    let mut c2 = ClientCirc::create(&mut net, &mut x.p, 0x8000_0020);
    lines(&mut t);
    let ta = target_addr();
    let std::net::SocketAddr::V4(ta4) = ta else {
        unreachable!()
    };
    let mut ext = [0u8; 498];
    let n = Extend2::encode(
        &[
            LinkSpec::Ipv4(ta4),
            LinkSpec::RsaId(target_ident().id.rsa_id()),
            LinkSpec::Ed25519Id(target_ident().id.ed_id()),
        ],
        &Create2 {
            htype: HandshakeType::NTOR,
            hdata: &[7u8; 84],
        },
        &mut ext,
    )
    .unwrap();
    for s in &mut net.shards {
        s.ops.clear();
    }
    let body = c2.cell(0, RelayCmd::EXTEND2, 0, &ext[..n]);
    x.p.send(&mut net, c2.circ_id, ChanCmd::RELAY_EARLY, &body);
    let cs = connects(&net.shards[x.owner]);
    assert_eq!(cs.len(), 1, "{:?}", net.shards[x.owner].ops);
    assert_eq!(
        lines(&mut t),
        [format!("650 ORCONN ${target} LAUNCHED ID=3\r\n")]
    );
    assert_eq!(
        t.status(show),
        format!("${client} CONNECTED\n${target} LAUNCHED")
    );
    let tconn = cs[0].0;
    net.shards[x.owner].drop_conn(tconn);
    net.nodes[x.owner].on_closed(
        tconn,
        CloseReason::ConnectFailed(libc::ECONNREFUSED),
        &mut net.shards[x.owner],
    );
    net.settle();
    assert_eq!(
        lines(&mut t),
        [format!(
            "650 ORCONN ${target} FAILED REASON=CONNECTREFUSED NCIRCS=1 ID=3\r\n"
        )]
    );
    assert_eq!(t.status(show), format!("${client} CONNECTED"));

    // Off: the node reports nothing.
    ctlevents::set_enabled(false);
    net.peer_closed(x.origin, x.p.conn);
    assert!(lines(&mut t).is_empty());
}
