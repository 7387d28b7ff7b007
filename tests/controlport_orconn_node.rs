//! The ORCONN facts the relay node reports (`fors::relay::ctlevents`), on fake shards: an
//! accepted channel (NEW, CONNECTED), a channel launched for an extend (LAUNCHED,
//! CONNECTED, CLOSED) and one whose TCP connect is refused (FAILED with C tor's REASON and
//! NCIRCS), turned into `650 ORCONN` lines and `orconn-status` by the ControlPort's table;
//! a client's address never leaves the node under SafeLogging. And the resync: the shards
//! list their channels on their tick when the ControlPort asks, which drops an entry whose
//! CLOSED was lost and adds a channel opened before the ControlPort started.
//! Its own test binary: the fact queue is process-wide, so the tests take turns (`SERIAL`).

mod channel_support;
mod node_harness;

use fors::cell::chan::{Create2, HandshakeType};
use fors::cell::relay::msg::{Extend2, LinkSpec};
use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::controlport::orconn::OrConnTable;
use fors::relay::ctlevents;
use fors::relay::ctlevents::{OrConnEvent, OrConnStatus};
use fors::shard::{CloseReason, ConnId, ShardId};
use node_harness::*;
use std::sync::Mutex;
use std::time::Duration;

/// The fact queue and the resync round are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A shard index no node of the harness has: filler facts that keep the queue full.
const FILLER: ShardId = ShardId(7);

/// Fills the fact queue with filler facts until it has room for `room` more.
fn fill_queue(room: usize) {
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut i = 0u32;
    while ctlevents::room() > room {
        ctlevents::accepted(FILLER, ConnId::from_parts(i, 1), addr);
        i += 1;
        assert!(
            i <= ctlevents::QUEUE_CAPACITY as u32,
            "the queue never filled"
        );
    }
}

/// Drains the queue: the facts of the harness's shards (fillers thrown away).
fn drain_real() -> Vec<OrConnEvent> {
    let mut evs = Vec::new();
    ctlevents::drain(&mut evs);
    evs.retain(|e| e.shard != FILLER);
    evs
}

fn apply(t: &mut OrConnTable, evs: &[OrConnEvent]) -> Vec<String> {
    evs.iter().filter_map(|e| t.apply(e, false)).collect()
}

/// `orconn-status` as a sorted list (ids follow the order shards listed in).
fn status_set(t: &OrConnTable) -> Vec<String> {
    let mut v: Vec<String> = t
        .status(false)
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Runs shard `s`'s tick alone (fake clock moved by 100 ms), then lets both settle.
fn tick_one(net: &mut Net, s: usize) {
    net.shards[s].advance(Duration::from_millis(100));
    let now = net.shards[s].now;
    net.nodes[s].on_tick(now, &mut net.shards[s]);
    net.settle();
}

fn lines(t: &mut OrConnTable) -> Vec<String> {
    let mut evs = Vec::new();
    ctlevents::drain(&mut evs);
    // As under SafeLogging 0: what the node sent is printed.
    evs.iter().filter_map(|e| t.apply(e, false)).collect()
}

#[test]
fn orconn_facts_for_accepted_launched_failed_and_closed_channels() {
    let _serial = serial();
    ctlevents::set_enabled(false);
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

#[test]
fn resync_drops_an_entry_whose_closed_was_lost() {
    let _serial = serial();
    ctlevents::set_enabled(false);
    ctlevents::set_enabled(true);
    let mut net = Net::new(seed("orconn_resync_lost_closed"));
    let mut t = OrConnTable::new();
    let client = client_ident().id.rsa_id().to_hex();
    let target = target_ident().id.rsa_id().to_hex();
    let x = cross_circuit(&mut net, 40200);
    assert_eq!(apply(&mut t, &drain_real()).len(), 4);
    assert_eq!(
        status_set(&t),
        sorted(vec![
            format!("${client} CONNECTED"),
            format!("${target} CONNECTED")
        ])
    );

    // The target's CLOSED meets a full queue: dropped (and counted).
    fill_queue(0);
    let lost = ctlevents::dropped();
    net.peer_closed(x.owner, x.t.conn);
    assert_eq!(ctlevents::dropped() - lost, 1, "the CLOSED was dropped");
    assert!(drain_real().is_empty());
    assert_eq!(
        status_set(&t),
        sorted(vec![
            format!("${client} CONNECTED"),
            format!("${target} CONNECTED")
        ]),
        "stale until a resync"
    );

    // A round: each shard lists its channels on its tick and ends the round.
    let round = ctlevents::request_resync();
    net.tick(Duration::from_millis(100));
    let evs = drain_real();
    let ends: Vec<_> = evs
        .iter()
        .filter(|e| e.status == OrConnStatus::ListedEnd)
        .map(|e| (e.shard.0, e.round, e.ncircs))
        .collect();
    assert_eq!(
        sorted_ends(ends),
        sorted_ends(vec![(x.origin, round, 1), (x.owner, round, 0)]),
        "the client's shard lists one channel, the target's none"
    );
    assert!(apply(&mut t, &evs).is_empty(), "a listing makes no event");
    assert_eq!(status_set(&t), vec![format!("${client} CONNECTED")]);
    assert_eq!(t.swept(), 1);

    // Done: the next ticks list nothing until the ControlPort asks again.
    net.tick(Duration::from_millis(100));
    assert!(drain_real().is_empty());
    ctlevents::set_enabled(false);
}

fn sorted_ends(mut v: Vec<(usize, u32, u32)>) -> Vec<(usize, u32, u32)> {
    v.sort();
    v
}

#[test]
fn resync_lists_channels_opened_before_the_control_port_by_name() {
    let _serial = serial();
    ctlevents::set_enabled(false);
    let mut net = Net::new(seed("orconn_resync_before_start"));
    let client = client_ident().id.rsa_id().to_hex();
    let target = target_ident().id.rsa_id().to_hex();
    let mut x = cross_circuit(&mut net, 40300);
    // The target goes away and a new extend launches a channel to it, still connecting.
    net.peer_closed(x.owner, x.t.conn);
    x.p.pump(&mut net);
    let _ = x.p.cells();
    let mut c2 = ClientCirc::create(&mut net, &mut x.p, 0x8000_0030);
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
    let launched = cs[0].0;

    // The ControlPort starts: nothing is known of the two channels yet.
    ctlevents::set_enabled(true);
    let mut t = OrConnTable::new();
    assert!(drain_real().is_empty() && t.is_empty());
    ctlevents::request_resync();
    net.tick(Duration::from_millis(100));
    assert!(apply(&mut t, &drain_real()).is_empty());
    // The launched one is named by the relay it expects, as C tor names it.
    assert_eq!(
        status_set(&t),
        sorted(vec![
            format!("${client} CONNECTED"),
            format!("${target} LAUNCHED")
        ])
    );

    // Their later events name them with the ids the listing gave.
    net.shards[x.owner].drop_conn(launched);
    net.nodes[x.owner].on_closed(
        launched,
        CloseReason::ConnectFailed(libc::ECONNREFUSED),
        &mut net.shards[x.owner],
    );
    net.settle();
    let got = apply(&mut t, &drain_real());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!(
            "650 ORCONN ${target} FAILED REASON=CONNECTREFUSED NCIRCS=1 ID="
        )),
        "{got:?}"
    );
    assert_eq!(status_set(&t), vec![format!("${client} CONNECTED")]);
    ctlevents::set_enabled(false);
}

#[test]
fn a_channel_closed_during_a_round_is_not_left_listed() {
    let _serial = serial();
    ctlevents::set_enabled(false);
    ctlevents::set_enabled(true);
    let mut net = Net::new(seed("orconn_resync_close_midround"));
    let mut t = OrConnTable::new();
    // Three client channels on shard 0.
    let peers: Vec<Peer> = (0..3)
        .map(|i| Peer::client(&mut net, 0, 40400 + i))
        .collect();
    assert_eq!(
        apply(&mut t, &drain_real()).len(),
        6,
        "NEW and CONNECTED each"
    );
    assert_eq!(t.len(), 3);

    // Room for one fact only: the round lists one channel on this tick and stops there.
    fill_queue(1);
    let round = ctlevents::request_resync();
    tick_one(&mut net, 0);
    let first = drain_real();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        first[0].status,
        OrConnStatus::Listed {
            open: true,
            launched: false
        }
    );
    assert_eq!(first[0].round, round);
    apply(&mut t, &first);
    let listed = first[0].conn;
    let mut order: Vec<ConnId> = peers.iter().map(|p| p.conn).collect();
    order.sort_by_key(|c| c.slot());
    assert_eq!(listed, order[0], "the walk starts at the first slot");

    // The listed channel and one not listed yet close while the round is in progress.
    net.peer_closed(0, order[0]);
    net.peer_closed(0, order[2]);
    let closed = apply(&mut t, &drain_real());
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert_eq!(t.len(), 1);

    // The next tick lists the one left (not the closed ones) and ends with two listed.
    tick_one(&mut net, 0);
    let rest = drain_real();
    let listed: Vec<ConnId> = rest
        .iter()
        .filter(|e| matches!(e.status, OrConnStatus::Listed { .. }))
        .map(|e| e.conn)
        .collect();
    assert_eq!(listed, vec![order[1]]);
    let end = rest.last().expect("the round's end");
    assert_eq!(
        (end.status, end.round, end.ncircs),
        (OrConnStatus::ListedEnd, round, 2)
    );
    assert!(apply(&mut t, &rest).is_empty());
    assert_eq!(t.len(), 1, "{}", t.status(false));
    assert_eq!(t.swept(), 0, "nothing was stale");
    tick_one(&mut net, 0);
    assert!(drain_real().is_empty(), "the round is done on shard 0");
    let client = client_ident().id.rsa_id().to_hex();
    assert_eq!(status_set(&t), vec![format!("${client} CONNECTED")]);
    ctlevents::set_enabled(false);
}

#[test]
fn a_channel_opened_during_a_round_is_counted_once() {
    let _serial = serial();
    ctlevents::set_enabled(false);
    ctlevents::set_enabled(true);
    let mut net = Net::new(seed("orconn_resync_open_midround"));
    let mut t = OrConnTable::new();
    let peers: Vec<Peer> = (0..3)
        .map(|i| Peer::client(&mut net, 0, 40500 + i))
        .collect();
    apply(&mut t, &drain_real());
    assert_eq!(t.len(), 3);

    // The last channel's CLOSED is lost: a stale entry the round must drop.
    fill_queue(0);
    net.peer_closed(0, peers[2].conn);
    assert!(drain_real().is_empty());
    assert_eq!(t.len(), 3);

    // The round lists one channel on this tick.
    fill_queue(1);
    let round = ctlevents::request_resync();
    tick_one(&mut net, 0);
    let first = drain_real();
    assert_eq!(first.len(), 1, "{first:?}");
    apply(&mut t, &first);

    // A channel opens in a slot the walk has not reached: its NEW and CONNECTED come
    // before its listing, in the same round.
    let late = Peer::client(&mut net, 0, 40510);
    assert!(late.conn.slot() > first[0].conn.slot());
    assert_eq!(apply(&mut t, &drain_real()).len(), 2);

    tick_one(&mut net, 0);
    let rest = drain_real();
    let end = rest.last().expect("the round's end");
    assert_eq!(
        (end.status, end.round, end.ncircs),
        (OrConnStatus::ListedEnd, round, 3),
        "{rest:?}"
    );
    apply(&mut t, &rest);
    assert_eq!(t.swept(), 1, "the round completed: the stale entry is gone");
    assert_eq!(t.len(), 3, "{}", t.status(false));
    ctlevents::set_enabled(false);
}
