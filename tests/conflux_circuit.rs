//! Conflux at the exit on live circuits (prop 329; C tor `conflux.c`, `conflux_pool.c`),
//! driven through `RelayCore` by in-memory clients with real tor1 crypto and congestion
//! control: two legs linked by nonce, LINKED/LINKED_ACK, stream cells in order across legs
//! with SWITCH both ways, out-of-order cells held and released, the queue bound, a leg
//! closing (the set's streams survive on the other) and LINKs refused as C tor refuses them.

mod circuit_common;

use std::net::Ipv4Addr;
use std::time::Duration;

use circuit_common::*;
use fors::cell::chan::DestroyReason;
use fors::cell::relay::msg::{BeginTarget, End, EndReason, RelayMsg, Sendme};
use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::proto::circuit::{Action, RelayIdentity};
use fors::proto::conflux::{DesiredUx, Link, Nonce, Switch};
use fors::proto::stream::StreamHandle;
use rand::{RngCore, SeedableRng};

const EXIT_LOCAL: &str = "accept 127.0.0.1:*, reject *:*";

fn middle() -> RelayIdentity {
    RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    }
}

fn exit() -> Relay {
    let mut cfg = test_config();
    cfg.pool_cells = 16 * 1024;
    cfg.max_queue_per_circuit = 4096;
    let net = TestNet {
        known: vec![middle().rsa],
        reentry: vec![],
    };
    Relay::new(9, cfg, EXIT_LOCAL, net)
}

/// A random nonce from a seeded RNG (the seed is printed, so a failure can be replayed).
fn nonce() -> Nonce {
    let seed = rand::random::<u64>();
    println!("nonce seed {seed}");
    let mut n = [0u8; 32];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut n);
    n
}

/// A circuit from the known middle on channel `chan`, built with ntor-v3 (+CC if `cc`).
fn leg(exit: &mut Relay, chan: u64, cc: bool) -> Client {
    let mut cl = Client::new(relay_chan(chan, &middle(), false), 0x8000_0001);
    cl.create(exit, Hs::NtorV3 { cc });
    cl
}

fn link_body(nonce: Nonce, sent: u64, recv: u64, ux: DesiredUx) -> Vec<u8> {
    let mut b = [0u8; 64];
    let n = Link {
        nonce,
        last_seqno_sent: sent,
        last_seqno_recv: recv,
        desired_ux: ux,
    }
    .encode(&mut b)
    .unwrap();
    b[..n].to_vec()
}

fn send_other(exit: &mut Relay, cl: &mut Client, cmd: RelayCmd, body: &[u8]) -> Vec<Action> {
    cl.send(exit, 0, ChanCmd::RELAY, &RelayMsg::Other { cmd, body }, 0)
}

fn switch(exit: &mut Relay, cl: &mut Client, rel: u32) -> Vec<Action> {
    let mut b = [0u8; 4];
    Switch { relative_seq: rel }.encode(&mut b).unwrap();
    send_other(exit, cl, RelayCmd::CONFLUX_SWITCH, &b)
}

fn data(exit: &mut Relay, cl: &mut Client, sid: u16, bytes: &[u8]) -> Vec<Action> {
    cl.send(exit, 0, ChanCmd::RELAY, &RelayMsg::Data(bytes), sid)
}

/// The bytes written to exit sockets, in order.
fn writes(acts: &[Action]) -> Vec<Vec<u8>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::StreamWrite { data, .. } => Some(data.as_slice().to_vec()),
            _ => None,
        })
        .collect()
}

/// The DESTROY reasons sent on `cl`'s circuit in `acts`.
fn destroys(acts: &[Action], cl: &Client) -> Vec<DestroyReason> {
    cells(acts)
        .into_iter()
        .filter(|(ch, id, cmd, _)| {
            *ch == cl.chan.id && *id == cl.circ_id && *cmd == ChanCmd::DESTROY
        })
        .map(|(_, _, _, b)| destroy_reason(&b))
        .collect()
}

/// LINK on `cl` → the LINKED it answers (parsed).
fn link(exit: &mut Relay, cl: &mut Client, nonce: Nonce, ux: DesiredUx) -> Link {
    let acts = send_other(
        exit,
        cl,
        RelayCmd::CONFLUX_LINK,
        &link_body(nonce, 0, 0, ux),
    );
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 1, "{acts:?}");
    assert_eq!(got[0].1, RelayCmd::CONFLUX_LINKED);
    Link::parse(&got[0].3).unwrap()
}

/// Two legs `a` (channel 1) and `b` (channel 2) linked with `ux`; LINKED_ACK after
/// `rtt_a` and `rtt_b`, so the exit knows each leg's RTT.
fn linked_pair(exit: &mut Relay, ux: DesiredUx, rtt_a: u64, rtt_b: u64) -> (Client, Client) {
    let mut a = leg(exit, 1, true);
    let mut b = leg(exit, 2, true);
    let n = nonce();
    let la = link(exit, &mut a, n, ux);
    let lb = link(exit, &mut b, n, ux);
    for l in [la, lb] {
        assert_eq!(l.nonce, n);
        assert_eq!((l.last_seqno_sent, l.last_seqno_recv), (0, 0));
        // C tor's exit asks for MIN_LATENCY (DEFAULT_EXIT_UX).
        assert_eq!(l.desired_ux, DesiredUx::MinLatency);
    }
    let (first, second, d1, d2) = if rtt_a <= rtt_b {
        (&mut a, &mut b, rtt_a, rtt_b - rtt_a)
    } else {
        (&mut b, &mut a, rtt_b, rtt_a - rtt_b)
    };
    exit.advance(Duration::from_millis(d1));
    assert!(send_other(exit, first, RelayCmd::CONFLUX_LINKED_ACK, &[]).is_empty());
    exit.advance(Duration::from_millis(d2));
    assert!(send_other(exit, second, RelayCmd::CONFLUX_LINKED_ACK, &[]).is_empty());
    let m = exit.core.metrics();
    assert_eq!((m.conflux_sets, m.conflux_legs), (1, 2));
    assert_eq!((m.conflux_sets_linked, m.conflux_legs_linked), (1, 2));
    (a, b)
}

/// BEGIN on `cl` as stream `sid`; the exit connects. Returns the stream and the actions of
/// `stream_connected` (its CONNECTED goes on the leg the set picks).
fn begin(exit: &mut Relay, cl: &mut Client, sid: u16) -> (StreamHandle, Vec<Action>) {
    let acts = cl.send(
        exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        sid,
    );
    let (stream, addr) = acts
        .iter()
        .find_map(|a| match a {
            Action::Connect { stream, addr } => Some((*stream, *addr)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Connect in {acts:?}"));
    let (r, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io));
    r.unwrap();
    (stream, acts)
}

#[test]
fn two_legs_link_by_nonce_and_data_flows_in_order_with_switches_both_ways() {
    let mut exit = exit();
    // HIGH_THROUGHPUT (C tor clients' default UX) → LowRTT at the exit: the lowest-RTT
    // leg with room. `a` has the lower RTT.
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::HighThroughput, 20, 60);

    // Seq 1: BEGIN on a. Its CONNECTED goes on a (lowest RTT).
    let (stream, acts) = begin(&mut exit, &mut a, 7);
    let got = a.open_all(&acts);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::CONNECTED, 7));
    assert!(b.open_all(&acts).is_empty());

    // Seq 2 on a, then the client switches to b: SWITCH by 2 (b had 0), seq 3 on b.
    assert_eq!(
        writes(&data(&mut exit, &mut a, 7, b"one")),
        vec![b"one".to_vec()]
    );
    assert!(switch(&mut exit, &mut b, 2).is_empty());
    assert_eq!(
        writes(&data(&mut exit, &mut b, 7, b"two")),
        vec![b"two".to_vec()]
    );
    assert_eq!(exit.core.metrics().conflux_switches_received, 1);

    // Exit → client: on a while it has room.
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"from-exit-1", io));
    assert_eq!(n.unwrap(), 11);
    let got = a.open_all(&acts);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].1, got[0].3.as_slice()),
        (RelayCmd::DATA, &b"from-exit-1"[..])
    );
    // a's channel blocks: the next cell goes on b, after a SWITCH that moves b's counter
    // to a's (CONNECTED + 1 DATA = 2).
    exit.core.channel_blocked(a.chan.id);
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"from-exit-2", io));
    assert_eq!(n.unwrap(), 11);
    let got = b.open_all(&acts);
    assert_eq!(got.len(), 2, "{acts:?}");
    assert_eq!(got[0].1, RelayCmd::CONFLUX_SWITCH);
    assert_eq!(Switch::parse(&got[0].3).unwrap().relative_seq, 2);
    assert_eq!(
        (got[1].1, got[1].3.as_slice()),
        (RelayCmd::DATA, &b"from-exit-2"[..])
    );
    assert_eq!(exit.core.metrics().conflux_switches_sent, 1);

    // END from the client on b (seq 4) closes the set's stream.
    let end = RelayMsg::End(End::new(EndReason::Done));
    let acts = b.send(&mut exit, 0, ChanCmd::RELAY, &end, 7);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::StreamClose { stream: s } if *s == stream)));
}

#[test]
fn early_cells_are_held_and_released_in_order() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (_stream, _) = begin(&mut exit, &mut a, 7); // seq 1
                                                    // b jumps to seq 2 and sends seq 3: early, held.
    assert!(switch(&mut exit, &mut b, 2).is_empty());
    assert!(writes(&data(&mut exit, &mut b, 7, b"third")).is_empty());
    assert!(writes(&data(&mut exit, &mut b, 7, b"fourth")).is_empty());
    assert_eq!(exit.core.metrics().conflux_held_cells, 2);
    // seq 2 on a: delivered, then the held ones in order.
    let acts = data(&mut exit, &mut a, 7, b"second");
    assert_eq!(
        writes(&acts),
        vec![b"second".to_vec(), b"third".to_vec(), b"fourth".to_vec()]
    );
    assert_eq!(exit.core.metrics().conflux_held_cells, 0);
}

#[test]
fn a_cell_beyond_the_ooo_window_tears_the_set_down_as_c_tor() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (stream, _) = begin(&mut exit, &mut a, 7);
    // b jumps beyond the out-of-order window (32,768 cells ahead).
    let window = fors::proto::conflux::Limits::default().ooo_window;
    assert!(switch(&mut exit, &mut b, window + 1).is_empty());
    let acts = data(&mut exit, &mut b, 7, b"far");
    // C tor: the leg whose cell overflows the queue closes (RESOURCELIMIT); it held the
    // highest received number, so the set is torn down and a closes too.
    assert_eq!(destroys(&acts, &b), vec![DestroyReason::ResourceLimit]);
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::Finished]);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::StreamClose { stream: s } if *s == stream)));
    let m = exit.core.metrics();
    assert_eq!(
        (m.conflux_sets, m.conflux_legs, m.conflux_held_cells),
        (0, 0, 0)
    );
    assert_eq!((m.conflux_ooo_overflow, m.conflux_teardowns), (1, 1));
    assert_eq!(exit.core.circuit_count(), 0);
}

#[test]
fn a_leg_closing_leaves_the_streams_on_the_other() {
    let mut exit = exit();
    // b has the lower RTT, so the exit sends on b; a (the leg that made the set and holds
    // its streams) can close without tearing the set down.
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 60, 20);
    let (stream, acts) = begin(&mut exit, &mut a, 7); // seq 1 on a
    assert_eq!(b.open_all(&acts)[0].1, RelayCmd::CONNECTED);
    // The client moves to b (b now at seq 1, as a), then a goes away.
    assert!(switch(&mut exit, &mut b, 1).is_empty());
    let acts = exit.cell(&a.chan, a.circ_id, ChanCmd::DESTROY, [0u8; 509]);
    assert!(
        !acts.iter().any(|x| matches!(x, Action::StreamClose { .. })),
        "{acts:?}"
    );
    assert!(destroys(&acts, &b).is_empty());
    let m = exit.core.metrics();
    assert_eq!(
        (m.conflux_sets, m.conflux_legs, m.conflux_teardowns),
        (1, 1, 0)
    );
    // The stream carries on over b, both ways.
    assert_eq!(
        writes(&data(&mut exit, &mut b, 7, b"still")),
        vec![b"still".to_vec()]
    );
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"back", io));
    assert_eq!(n.unwrap(), 4);
    let got = b.open_all(&acts);
    assert_eq!(
        (got[0].1, got[0].3.as_slice()),
        (RelayCmd::DATA, &b"back"[..])
    );
    // The last leg closing forgets the set and closes the stream with it.
    let acts = exit.cell(&b.chan, b.circ_id, ChanCmd::DESTROY, [0u8; 509]);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::StreamClose { stream: s } if *s == stream)));
    assert_eq!(exit.core.metrics().conflux_sets, 0);
}

#[test]
fn closing_the_sending_leg_tears_the_set_down() {
    let mut exit = exit();
    let (mut a, b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (stream, _) = begin(&mut exit, &mut a, 7); // CONNECTED went on a: a is current
    let acts = exit.cell(&a.chan, a.circ_id, ChanCmd::DESTROY, [0u8; 509]);
    // C tor `cfx_del_leg`: the current leg closing tears the set down.
    assert_eq!(destroys(&acts, &b), vec![DestroyReason::Finished]);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::StreamClose { stream: s } if *s == stream)));
    assert_eq!(exit.core.circuit_count(), 0);
}

/// C tor replaces a leg's RTT with its congestion-control EWMA RTT at every SENDME
/// (`congestion_control_process_sendme` → `conflux_update_rtt`): a leg whose queue grew is
/// left for a faster one. Regression: Fors kept the LINKED_ACK sample for the set's life, so
/// LowRTT stayed on a leg C tor's exit would have left.
#[test]
fn a_legs_rtt_follows_its_sendmes_as_c_tor() {
    let mut exit = exit();
    // HIGH_THROUGHPUT → LowRTT. At LINKED_ACK a is the faster leg (20 ms against 60 ms).
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::HighThroughput, 20, 60);
    let (stream, acts) = begin(&mut exit, &mut a, 7);
    assert_eq!(a.open_all(&acts)[0].1, RelayCmd::CONNECTED);
    // 31 DATA cells (one SENDME increment) on a.
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &[0x5a; 31 * 498], io));
    assert_eq!(n.unwrap(), 31 * 498);
    let got = a.open_all(&acts);
    assert_eq!(got.len(), 31, "{acts:?}");
    assert!(got.iter().all(|g| g.1 == RelayCmd::DATA));
    assert!(b.open_all(&acts).is_empty());
    // Their SENDME comes 200 ms later: a's RTT is now 200 ms, b's still 60 ms.
    let tag = a.last_tag(0);
    exit.advance(Duration::from_millis(200));
    let acts = a.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V1 { tag: &tag }),
        0,
    );
    assert!(cells(&acts).is_empty(), "{acts:?}");
    // a has room again, but b is now the lower-RTT leg: SWITCH (b to a's 32), then DATA.
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"after", io));
    assert_eq!(n.unwrap(), 5);
    assert!(a.open_all(&acts).is_empty(), "{acts:?}");
    let got = b.open_all(&acts);
    assert_eq!(got.len(), 2, "{acts:?}");
    assert_eq!(got[0].1, RelayCmd::CONFLUX_SWITCH);
    assert_eq!(Switch::parse(&got[0].3).unwrap().relative_seq, 32);
    assert_eq!(
        (got[1].1, got[1].3.as_slice()),
        (RelayCmd::DATA, &b"after"[..])
    );
    assert_eq!(exit.core.metrics().conflux_switches_sent, 1);
}

#[test]
fn bad_links_are_refused_as_c_tor() {
    let mut exit = exit();
    let n = nonce();
    // Version 2: TORPROTOCOL.
    let mut a = leg(&mut exit, 1, true);
    let mut body = link_body(n, 0, 0, DesiredUx::NoOpinion);
    body[0] = 2;
    let acts = send_other(&mut exit, &mut a, RelayCmd::CONFLUX_LINK, &body);
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::TorProtocol]);

    // No congestion control on the circuit: TORPROTOCOL.
    let mut a = leg(&mut exit, 1, false);
    let acts = send_other(
        &mut exit,
        &mut a,
        RelayCmd::CONFLUX_LINK,
        &link_body(n, 0, 0, DesiredUx::NoOpinion),
    );
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::TorProtocol]);

    // A LINK replayed on a linked leg: TORPROTOCOL (the set loses the leg).
    let mut a = leg(&mut exit, 1, true);
    link(&mut exit, &mut a, n, DesiredUx::NoOpinion);
    let acts = send_other(
        &mut exit,
        &mut a,
        RelayCmd::CONFLUX_LINK,
        &link_body(n, 0, 0, DesiredUx::NoOpinion),
    );
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::TorProtocol]);
    assert_eq!(exit.core.metrics().conflux_sets, 0);

    // A LINK claiming data the set never delivered (a replay into a live set): the new
    // leg closes INTERNAL, the set's legs TORPROTOCOL.
    let mut a = leg(&mut exit, 1, true);
    link(&mut exit, &mut a, n, DesiredUx::NoOpinion);
    let mut b = leg(&mut exit, 2, true);
    let acts = send_other(
        &mut exit,
        &mut b,
        RelayCmd::CONFLUX_LINK,
        &link_body(n, 5, 0, DesiredUx::NoOpinion),
    );
    assert_eq!(destroys(&acts, &b), vec![DestroyReason::Internal]);
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::TorProtocol]);

    // LINK on a circuit with a stream (TROVE-2026-025): TORPROTOCOL.
    let mut a = leg(&mut exit, 1, true);
    begin(&mut exit, &mut a, 3);
    let acts = send_other(
        &mut exit,
        &mut a,
        RelayCmd::CONFLUX_LINK,
        &link_body(nonce(), 0, 0, DesiredUx::NoOpinion),
    );
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::TorProtocol]);

    // SWITCH and LINKED_ACK on a circuit that is not a leg, LINKED at an exit: TORPROTOCOL.
    for cmd in [
        RelayCmd::CONFLUX_SWITCH,
        RelayCmd::CONFLUX_LINKED_ACK,
        RelayCmd::CONFLUX_LINKED,
    ] {
        let mut a = leg(&mut exit, 1, true);
        let acts = send_other(&mut exit, &mut a, cmd, &[0, 0, 0, 1]);
        assert_eq!(
            destroys(&acts, &a),
            vec![DestroyReason::TorProtocol],
            "{cmd:?}"
        );
    }
    assert!(exit.core.metrics().conflux_links_refused >= 4);
    assert_eq!(exit.core.circuit_count(), 0);
}

#[test]
fn begin_dir_on_a_leg_is_answered_notdirectory() {
    let mut exit = exit();
    let (mut a, _b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let acts = a.send(&mut exit, 0, ChanCmd::RELAY, &RelayMsg::BeginDir, 5);
    let got = a.open_all(&acts);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::END, 5));
    assert_eq!(got[0].3[0], u8::from(EndReason::NotDirectory));
    assert!(!acts.iter().any(|x| matches!(x, Action::Connect { .. })));
}

#[test]
fn a_multi_shard_relay_serves_conflux_and_a_lone_leg_links() {
    let mut exit = exit();
    exit.core.set_shard_count(2);
    assert!(fors::proto::circuit::conflux_served(2));
    assert!(fors::proto::circuit::conflux_served(1));
    // Shard 0 of two: a nonce whose home is this shard links at once; one whose home is
    // the other shard asks it first (the node carries that; `conflux_cross_core` tests it).
    let mut a = leg(&mut exit, 1, true);
    let mut n = nonce();
    while fors::proto::conflux::home_shard(&n, 2, &test_config().home_key) != 0 {
        n[0] = n[0].wrapping_add(1);
    }
    let l = link(&mut exit, &mut a, n, DesiredUx::NoOpinion);
    assert_eq!(l.nonce, n);
    assert_eq!(exit.core.metrics().conflux_sets_linked, 1);
    let mut b = leg(&mut exit, 2, true);
    let mut n = nonce();
    while fors::proto::conflux::home_shard(&n, 2, &test_config().home_key) != 1 {
        n[0] = n[0].wrapping_add(1);
    }
    let acts = send_other(
        &mut exit,
        &mut b,
        RelayCmd::CONFLUX_LINK,
        &link_body(n, 0, 0, DesiredUx::NoOpinion),
    );
    assert!(
        b.open_all(&acts).is_empty(),
        "no LINKED before the home answers"
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Cfx { to, .. } if to.0 == 1)));
    assert_eq!(exit.core.metrics().conflux_lookups_sent, 1);
}

#[test]
fn hostile_sequences_close_what_c_tor_closes() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (stream, _) = begin(&mut exit, &mut a, 7); // seq 1 on a; a is the sending leg
                                                   // b replays seq 1 (its counter is still 0): already delivered → b closes INTERNAL (C
                                                   // tor: "Anyone can mangle these sequence number"). b held no newer number and is not
                                                   // the sending leg, so the set and its stream stay on a.
    let acts = data(&mut exit, &mut b, 7, b"replayed");
    assert!(writes(&acts).is_empty());
    assert_eq!(destroys(&acts, &b), vec![DestroyReason::Internal]);
    assert!(destroys(&acts, &a).is_empty());
    assert_eq!(exit.core.metrics().conflux_legs, 1);
    assert_eq!(
        writes(&data(&mut exit, &mut a, 7, b"ok")),
        vec![b"ok".to_vec()]
    );
    let (n, _) = exit.io(|c, io| c.stream_data(stream, b"x", io));
    assert_eq!(n.unwrap(), 1);
}

#[test]
fn a_switch_flood_is_bounded_by_the_ooo_window() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (stream, _) = begin(&mut exit, &mut a, 7);
    // SWITCH by 0 is accepted (C tor 0.4.9.11 has its minimum-increment check disabled),
    // and so are many small ones: none is sequenced, nothing is held.
    for _ in 0..100 {
        assert!(switch(&mut exit, &mut b, 0).is_empty());
    }
    let window = fors::proto::conflux::Limits::default().ooo_window;
    let n = window / 16 + 1;
    for _ in 0..n {
        assert!(switch(&mut exit, &mut b, 16).is_empty());
    }
    assert_eq!(
        exit.core.metrics().conflux_switches_received,
        100 + u64::from(n)
    );
    assert_eq!(exit.core.metrics().conflux_held_cells, 0);
    // The next cell on b is 16 n + 1 ahead of the set: beyond the window, the set is torn
    // down as for any queue overflow.
    let acts = data(&mut exit, &mut b, 7, b"far");
    assert_eq!(destroys(&acts, &b), vec![DestroyReason::ResourceLimit]);
    assert_eq!(destroys(&acts, &a), vec![DestroyReason::Finished]);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::StreamClose { stream: s } if *s == stream)));
}

#[test]
fn a_stream_paused_before_linked_ack_resumes_on_it() {
    let mut exit = exit();
    let mut a = leg(&mut exit, 1, true);
    link(&mut exit, &mut a, nonce(), DesiredUx::MinLatency);
    // BEGIN before LINKED_ACK: CONNECTED goes on the only leg, but no leg has an RTT yet,
    // so DATA waits (C tor's MinRTT skips legs without one).
    let (stream, acts) = begin(&mut exit, &mut a, 7);
    assert_eq!(a.open_all(&acts)[0].1, RelayCmd::CONNECTED);
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"early", io));
    assert_eq!(n.unwrap(), 0);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::PauseStreamRead { stream: s } if *s == stream)));
    exit.advance(Duration::from_millis(30));
    let acts = send_other(&mut exit, &mut a, RelayCmd::CONFLUX_LINKED_ACK, &[]);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::ResumeStreamRead { stream: s } if *s == stream)));
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"early", io));
    assert_eq!(n.unwrap(), 5);
    assert_eq!(a.open_all(&acts)[0].3, b"early".to_vec());
}

#[test]
fn stream_commands_with_stream_id_zero_take_no_sequence_number() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (_stream, _) = begin(&mut exit, &mut a, 7); // seq 1 on a
                                                    // C `connection_edge_process_relay_cell` drops END with stream ID 0 before conflux.
    let acts = send_other(&mut exit, &mut a, RelayCmd::END, &[6]);
    assert!(destroys(&acts, &a).is_empty(), "{acts:?}");
    // So seq 2 is still free: b moves to seq 1 and sends seq 2, delivered at once (had the
    // END taken seq 2, this would be a replayed number and close b).
    assert!(switch(&mut exit, &mut b, 1).is_empty());
    let acts = data(&mut exit, &mut b, 7, b"second");
    assert!(destroys(&acts, &b).is_empty(), "{acts:?}");
    assert_eq!(writes(&acts), vec![b"second".to_vec()]);
}

#[test]
fn a_stream_sendme_on_a_leg_without_the_streams_is_refused_as_c_tor() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (_stream, _) = begin(&mut exit, &mut a, 7); // the set's streams live on a
                                                    // C tor shares the stream list across legs: a stream-level SENDME under congestion
                                                    // control finds the stream on any leg and closes that circuit (TORPROTOCOL).
    let acts = b.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Other {
            cmd: RelayCmd::SENDME,
            body: &[],
        },
        7,
    );
    assert_eq!(destroys(&acts, &b), vec![DestroyReason::TorProtocol]);
}

#[test]
fn cells_held_out_of_order_count_against_the_memory_cap() {
    let mut exit = exit();
    let (mut a, mut b) = linked_pair(&mut exit, DesiredUx::MinLatency, 20, 60);
    let (_stream, _) = begin(&mut exit, &mut a, 7); // seq 1
    let pooled = exit.core.metrics().queued_cells;
    assert!(switch(&mut exit, &mut b, 2).is_empty());
    assert!(writes(&data(&mut exit, &mut b, 7, b"third")).is_empty());
    assert!(writes(&data(&mut exit, &mut b, 7, b"fourth")).is_empty());
    // C tor adds its conflux queues to the OOM total (`cell_queues_check_size`).
    assert_eq!(exit.core.metrics().queued_cells, pooled + 2);
    let acts = data(&mut exit, &mut a, 7, b"second");
    assert_eq!(writes(&acts).len(), 3);
    assert_eq!(exit.core.metrics().queued_cells, pooled);
    // A set torn down with cells held gives their charge back too (b skips seq 5).
    assert!(switch(&mut exit, &mut b, 1).is_empty());
    assert!(writes(&data(&mut exit, &mut b, 7, b"sixth")).is_empty());
    assert_eq!(exit.core.metrics().queued_cells, pooled + 1);
    exit.cell(&a.chan, a.circ_id, ChanCmd::DESTROY, [0u8; 509]);
    exit.cell(&b.chan, b.circ_id, ChanCmd::DESTROY, [0u8; 509]);
    assert_eq!(exit.core.metrics().conflux_sets, 0);
    assert_eq!(exit.core.metrics().queued_cells, 0);
}
