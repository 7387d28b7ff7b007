//! Rules of the exit's conflux sets, each against C tor 0.4.9.11's behaviour, plus a seeded
//! model test of random interleavings over two legs.

use super::*;
use crate::cell::chan::DestroyReason;
use crate::proto::conflux::set::OOO_PAGE;
use rand::{Rng, SeedableRng};

type Sets = ConfluxSets<u32, u64>;

const OK: LegFacts = LegFacts {
    enabled: true,
    has_next_hop: false,
    has_streams: false,
    data_in_flight: false,
};

fn nonce(n: u8) -> Nonce {
    let mut x = [0x5a; 32];
    x[0] = n;
    x
}

fn link_body(nonce: Nonce, sent: u64, recv: u64, ux: DesiredUx) -> [u8; 50] {
    let mut b = [0u8; 50];
    Link {
        nonce,
        last_seqno_sent: sent,
        last_seqno_recv: recv,
        desired_ux: ux,
    }
    .encode(&mut b)
    .unwrap();
    b
}

fn switch_body(rel: u32) -> [u8; 4] {
    rel.to_be_bytes()
}

fn sets() -> Sets {
    Sets::new(Limits {
        max_sets: 4,
        max_legs: MAX_LEGS_FOR_TESTS,
        ooo_window: 16,
        ooo_pool_cells: 24,
    })
}
const MAX_LEGS_FOR_TESTS: usize = set::MAX_LEGS;

/// Links circuits `circs` into the set `n` with the client's UX.
fn linked(s: &mut Sets, n: u8, circs: &[u32], ux: DesiredUx) {
    for &c in circs {
        s.on_link(c, OK, &link_body(nonce(n), 0, 0, ux), 1_000)
            .unwrap();
    }
}

fn data(s: &mut Sets, circ: u32, tag: u64) -> Inbound<u64, u32> {
    s.on_cell(circ, RelayCmd::DATA, OK, tag)
}

fn delivered(s: &mut Sets, circ: u32, tag: u64) -> Vec<u64> {
    let mut out = Vec::new();
    match data(s, circ, tag) {
        Inbound::Deliver(m) => {
            out.push(m);
            while let Some(m) = s.pop_ready(circ) {
                out.push(m);
            }
        }
        Inbound::Held => {}
        other => panic!("unexpected {other:?}"),
    }
    out
}

fn refused_of(i: Inbound<u64, u32>) -> Refused<u32> {
    match i {
        Inbound::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn multiplexed_commands_match_c_tor() {
    let got: Vec<u8> = (0..=255u8)
        .filter(|&c| should_multiplex(RelayCmd(c)))
        .collect();
    // BEGIN DATA END CONNECTED RESOLVE RESOLVED XOFF XON (conflux_should_multiplex).
    assert_eq!(got, vec![1, 2, 3, 4, 11, 12, 43, 44]);
}

#[test]
fn ux_to_algorithm_as_c_tor_exit() {
    assert_eq!(Alg::for_ux(DesiredUx::NoOpinion), Alg::LowRtt);
    assert_eq!(Alg::for_ux(DesiredUx::HighThroughput), Alg::LowRtt);
    assert_eq!(Alg::for_ux(DesiredUx::MinLatency), Alg::MinRtt);
    assert_eq!(Alg::for_ux(DesiredUx::LowMemLatency), Alg::MinRtt);
    assert_eq!(Alg::for_ux(DesiredUx::LowMemThroughput), Alg::MinRtt);
}

#[test]
fn link_creates_then_joins_and_linked_reports_set_state() {
    let mut s = sets();
    let a = s
        .on_link(
            1,
            OK,
            &link_body(nonce(1), 0, 0, DesiredUx::HighThroughput),
            10,
        )
        .unwrap();
    assert!(a.new_set);
    assert_eq!(a.linked.nonce, nonce(1));
    assert_eq!((a.linked.last_seqno_sent, a.linked.last_seqno_recv), (0, 0));
    assert_eq!(a.linked.desired_ux, DesiredUx::MinLatency);
    // Deliver three cells, and send two, before the second leg joins.
    assert_eq!(delivered(&mut s, 1, 1), vec![1]);
    assert_eq!(delivered(&mut s, 1, 2), vec![2]);
    assert_eq!(delivered(&mut s, 1, 3), vec![3]);
    s.note_sent(1, RelayCmd::DATA);
    s.note_sent(1, RelayCmd::CONNECTED);
    s.note_sent(1, RelayCmd::SENDME); // not sequenced
    let b = s
        .on_link(
            2,
            OK,
            &link_body(nonce(1), 3, 2, DesiredUx::HighThroughput),
            20,
        )
        .unwrap();
    assert!(!b.new_set);
    assert_eq!((b.linked.last_seqno_sent, b.linked.last_seqno_recv), (2, 3));
    assert_eq!(s.set_of(2), Some((nonce(1), 2)));
    let st = s.stats();
    assert_eq!(
        (st.sets, st.legs, st.sets_linked_total, st.legs_linked_total),
        (1, 2, 1, 2)
    );
    // The new leg continues from the client's last_seqno_sent: its next cell is 4.
    assert_eq!(delivered(&mut s, 2, 4), vec![4]);
}

#[test]
fn link_refusals() {
    let mut s = sets();
    let body = link_body(nonce(1), 0, 0, DesiredUx::NoOpinion);
    let r = |s: &mut Sets, c, f, b: &[u8]| s.on_link(c, f, b, 0).unwrap_err();
    // Conflux needs congestion control (conflux_is_enabled).
    let e = r(
        &mut s,
        1,
        LegFacts {
            enabled: false,
            ..OK
        },
        &body,
    );
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::NotEnabled)
    );
    // Only from the last hop.
    let e = r(
        &mut s,
        1,
        LegFacts {
            has_next_hop: true,
            ..OK
        },
        &body,
    );
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::NotLastHop)
    );
    // TROVE-2026-025: BEGIN before LINK on the same circuit.
    let e = r(
        &mut s,
        1,
        LegFacts {
            has_streams: true,
            ..OK
        },
        &body,
    );
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::HasStreams)
    );
    // Malformed bodies.
    let mut v2 = body;
    v2[0] = 2;
    let e = r(&mut s, 1, OK, &v2);
    assert_eq!(
        e.why,
        RefuseWhy::Malformed(ConfluxCellError::UnsupportedVersion(2))
    );
    let e = r(&mut s, 1, OK, &body[..49]);
    assert!(matches!(
        e.why,
        RefuseWhy::Malformed(ConfluxCellError::Truncated { .. })
    ));
    // A new set cannot have lost data already.
    let e = r(
        &mut s,
        1,
        OK,
        &link_body(nonce(1), 1, 0, DesiredUx::NoOpinion),
    );
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::Internal, RefuseWhy::DataLoss)
    );
    assert_eq!(s.stats().sets, 0);
    assert_eq!(s.stats().links_refused_total, 6);
    // A second LINK on a leg closes it (and here, being its set's only leg, the set).
    s.on_link(1, OK, &body, 0).unwrap();
    let e = r(&mut s, 1, OK, &body);
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::AlreadyLinked)
    );
    assert!(e.others.is_empty());
    assert_eq!((s.stats().sets, s.stats().legs), (0, 0));
}

#[test]
fn link_claiming_undelivered_data_tears_the_set_down() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
    assert_eq!(delivered(&mut s, 1, 1), vec![1]);
    let e = s
        .on_link(3, OK, &link_body(nonce(1), 2, 0, DesiredUx::NoOpinion), 0)
        .unwrap_err();
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::Internal, RefuseWhy::DataLoss)
    );
    assert_eq!(e.others.reason, DestroyReason::TorProtocol);
    assert_eq!(e.others.circs().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!((s.stats().sets, s.stats().legs), (0, 0));
    assert!(s.leg_of(1).is_none());
}

#[test]
fn ninth_leg_is_refused_and_the_set_stays_whole() {
    // TROVE-2023-007: a refused leg must not desynchronise the set.
    let mut s = sets();
    let circs: Vec<u32> = (1..=8).collect();
    linked(&mut s, 1, &circs, DesiredUx::NoOpinion);
    let e = s
        .on_link(9, OK, &link_body(nonce(1), 0, 0, DesiredUx::NoOpinion), 0)
        .unwrap_err();
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::TooManyLegs)
    );
    assert!(e.others.is_empty());
    assert_eq!(s.set_of(8), Some((nonce(1), 8)));
    assert!(s.leg_of(9).is_none());
    assert_eq!(delivered(&mut s, 8, 1), vec![1]);
}

#[test]
fn set_table_is_bounded() {
    let mut s = sets();
    for n in 0..4 {
        linked(&mut s, n, &[u32::from(n)], DesiredUx::NoOpinion);
    }
    let e = s
        .on_link(99, OK, &link_body(nonce(9), 0, 0, DesiredUx::NoOpinion), 0)
        .unwrap_err();
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::ResourceLimit, RefuseWhy::TooManySets)
    );
    // A slot freed by the last leg closing is reused; the old handle stays dead.
    let old = s.leg_of(0).unwrap();
    assert!(s.is_current(old));
    assert!(s.leg_closed(0, false).is_empty());
    assert!(!s.is_current(old));
    linked(&mut s, 9, &[99], DesiredUx::NoOpinion);
    assert_eq!(s.stats().sets, 4);
    assert!(s.is_current(s.leg_of(99).unwrap()));
    assert!(!s.is_current(old));
}

#[test]
fn nonces_are_compared_in_full() {
    // TROVE-2026-004 was a nonce compare with the wrong length.
    let mut s = sets();
    let mut n2 = nonce(1);
    n2[31] ^= 1;
    s.on_link(1, OK, &link_body(nonce(1), 0, 0, DesiredUx::NoOpinion), 0)
        .unwrap();
    let b = s
        .on_link(2, OK, &link_body(n2, 0, 0, DesiredUx::NoOpinion), 0)
        .unwrap();
    assert!(b.new_set);
    assert_eq!(s.stats().sets, 2);
}

#[test]
fn switch_reorders_across_legs() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
    // The client sends 1..=3 on leg 1, switches to leg 2 (relative 3) and sends 4, 5.
    // Leg 2 is faster: its cells arrive first and wait.
    assert_eq!(s.on_switch(2, OK, &switch_body(3)).unwrap().relative_seq, 3);
    assert!(delivered(&mut s, 2, 4).is_empty());
    assert!(delivered(&mut s, 2, 5).is_empty());
    assert_eq!(s.stats().held_cells, 2);
    assert_eq!(delivered(&mut s, 1, 1), vec![1]);
    assert_eq!(delivered(&mut s, 1, 2), vec![2]);
    assert_eq!(delivered(&mut s, 1, 3), vec![3, 4, 5]);
    assert_eq!(s.stats().held_cells, 0);
    assert_eq!(s.stats().switches_received_total, 1);
    // Unsequenced commands pass straight through, even ahead of order.
    assert!(matches!(
        s.on_cell(2, RelayCmd::SENDME, OK, 77),
        Inbound::NotSequenced(77)
    ));
    // Cells on circuits that are not legs are not ours.
    assert!(matches!(data(&mut s, 42, 9), Inbound::NotSequenced(9)));
}

#[test]
fn switch_validation() {
    let mut s = sets();
    // On a circuit that is not a leg.
    let e = s.on_switch(5, OK, &switch_body(1)).unwrap_err();
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::NotLinked)
    );
    linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
    // Without congestion control, or from past this hop: the leg goes.
    let e = s
        .on_switch(
            2,
            LegFacts {
                has_next_hop: true,
                ..OK
            },
            &switch_body(1),
        )
        .unwrap_err();
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::NotLastHop)
    );
    assert!(s.leg_of(2).is_none());
    let e = s
        .on_switch(
            1,
            LegFacts {
                enabled: false,
                ..OK
            },
            &switch_body(1),
        )
        .unwrap_err();
    assert_eq!(e.why, RefuseWhy::NotEnabled);
    assert_eq!(s.stats().sets, 0);

    // C tor 0.4.9.11 accepts a switch by 0 (its minimum-increment check is disabled), and
    // takes a truncated body as 0.
    linked(&mut s, 2, &[3, 4], DesiredUx::NoOpinion);
    assert_eq!(s.on_switch(3, OK, &switch_body(0)).unwrap().relative_seq, 0);
    assert_eq!(s.on_switch(3, OK, &[1, 2]).unwrap().relative_seq, 0);
    assert_eq!(s.stats().switches_malformed_total, 1);
    assert_eq!(delivered(&mut s, 3, 1), vec![1]);
}

#[test]
fn switch_flood_cannot_grow_memory_past_the_window() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
    // Each SWITCH by 1 then DATA leaves a hole; the cells wait in the window of 16.
    let mut held = 0;
    loop {
        s.on_switch(2, OK, &switch_body(1)).unwrap();
        match data(&mut s, 2, 0) {
            Inbound::Held => held += 1,
            Inbound::Refused(r) => {
                assert_eq!(
                    (r.this, r.why),
                    (DestroyReason::ResourceLimit, RefuseWhy::OooWindow)
                );
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(held <= 16);
    }
    // Leg 2 held the highest received sequence number: closing it tears the set down.
    assert_eq!(held, 8);
    assert_eq!(s.stats().held_cells, 0);
    assert_eq!(s.stats().ooo_overflow_total, 1);
    assert_eq!(s.stats().sets, 0);
}

#[test]
fn sequence_jump_past_the_window_is_a_resource_limit() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
    s.on_switch(2, OK, &switch_body(16)).unwrap();
    let r = refused_of(data(&mut s, 2, 0));
    assert_eq!(
        (r.this, r.why),
        (DestroyReason::ResourceLimit, RefuseWhy::OooWindow)
    );
    // Exactly at the window edge is held.
    linked(&mut s, 2, &[3, 4], DesiredUx::NoOpinion);
    s.on_switch(4, OK, &switch_body(15)).unwrap();
    assert!(matches!(data(&mut s, 4, 16), Inbound::Held));
}

#[test]
fn pool_is_shared_and_bounded() {
    let mut s = sets();
    // Three sets each hold 8 cells: 24, the pool; the 25th is refused.
    for n in 0..3u8 {
        let (a, b) = (u32::from(n) * 2, u32::from(n) * 2 + 1);
        linked(&mut s, n, &[a, b], DesiredUx::NoOpinion);
        s.on_switch(b, OK, &switch_body(1)).unwrap();
        for _ in 0..8 {
            assert!(matches!(data(&mut s, b, 0), Inbound::Held));
        }
    }
    linked(&mut s, 3, &[6, 7], DesiredUx::NoOpinion);
    s.on_switch(7, OK, &switch_body(1)).unwrap();
    let r = refused_of(data(&mut s, 7, 0));
    assert_eq!(
        (r.this, r.why),
        (DestroyReason::ResourceLimit, RefuseWhy::OooPool)
    );
    assert_eq!(s.stats().held_cells, 24);
}

#[test]
fn already_delivered_and_duplicate_sequence_numbers() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2, 3], DesiredUx::NoOpinion);
    assert_eq!(delivered(&mut s, 1, 1), vec![1]);
    // Leg 2 still believes it is at 0: its cell is number 1 again.
    let r = refused_of(data(&mut s, 2, 1));
    assert_eq!(
        (r.this, r.why),
        (DestroyReason::Internal, RefuseWhy::SeqAlreadyDelivered)
    );
    // Leg 2 had the same counters as the rest: the set survives without it.
    assert!(r.others.is_empty());
    assert!(s.leg_of(2).is_none());
    // Two cells claiming number 3.
    s.on_switch(1, OK, &switch_body(1)).unwrap();
    assert!(matches!(data(&mut s, 1, 3), Inbound::Held));
    s.on_switch(3, OK, &switch_body(2)).unwrap();
    let r = refused_of(data(&mut s, 3, 3));
    assert_eq!(
        (r.this, r.why),
        (DestroyReason::TorProtocol, RefuseWhy::SeqDuplicate)
    );
}

#[test]
fn leg_close_rules() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2, 3], DesiredUx::NoOpinion);
    // An idle leg that is not the sending leg leaves quietly.
    assert!(s.leg_closed(3, false).is_empty());
    assert_eq!(s.set_of(1), Some((nonce(1), 2)));
    // A leg with unacknowledged data tears the set down.
    let t = s.leg_closed(2, true);
    assert_eq!(t.reason, DestroyReason::Finished);
    assert_eq!(t.circs().collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.stats().sets, 0);
    // Closing a torn-down leg again is a no-op (no use after free).
    assert!(s.leg_closed(1, false).is_empty());

    // The leg with the highest received number carries data the others cannot resume.
    linked(&mut s, 2, &[4, 5], DesiredUx::NoOpinion);
    assert_eq!(delivered(&mut s, 4, 1), vec![1]);
    assert_eq!(s.leg_closed(4, false).circs().collect::<Vec<_>>(), vec![5]);

    // The exit's current sending leg. Before any LINKED_ACK no leg has an RTT: DATA waits
    // (C tor skips 0-RTT legs) but CONNECTED goes on the first leg, which becomes current.
    linked(&mut s, 3, &[6, 7], DesiredUx::NoOpinion);
    assert_eq!(
        s.choose_send(7, RelayCmd::DATA, |_| ready()),
        SendChoice::Blocked
    );
    let SendChoice::Send { circ, .. } = s.choose_send(7, RelayCmd::CONNECTED, |_| ready()) else {
        panic!()
    };
    assert_eq!(circ, 6);
    assert_eq!(s.leg_closed(6, false).circs().collect::<Vec<_>>(), vec![7]);
    assert_eq!(s.stats().teardowns_total, 3);
}

#[test]
fn last_leg_close_forgets_the_nonce() {
    // TROVE-2026-026 (client side in C tor): a leg for a dead set must not revive it.
    let mut s = sets();
    linked(&mut s, 1, &[1], DesiredUx::NoOpinion);
    assert_eq!(delivered(&mut s, 1, 1), vec![1]);
    assert!(s.leg_closed(1, false).is_empty());
    assert_eq!(s.stats().sets, 0);
    // Resuming with its old counters is data loss; a fresh LINK makes a fresh set.
    let e = s
        .on_link(2, OK, &link_body(nonce(1), 1, 0, DesiredUx::NoOpinion), 0)
        .unwrap_err();
    assert_eq!(e.why, RefuseWhy::DataLoss);
    assert!(
        s.on_link(2, OK, &link_body(nonce(1), 0, 0, DesiredUx::NoOpinion), 0)
            .unwrap()
            .new_set
    );
}

#[test]
fn teardown_returns_held_cells_to_the_pool() {
    // TROVE-2026-010: OOO accounting when a queue is cleared.
    let mut s = sets();
    linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
    s.on_switch(2, OK, &switch_body(1)).unwrap();
    for _ in 0..8 {
        assert!(matches!(data(&mut s, 2, 0), Inbound::Held));
    }
    assert_eq!(s.stats().held_cells, 8);
    assert_eq!(s.leg_closed(2, false).circs().collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.stats().held_cells, 0);
    // Bug 41162: nothing is dequeued from a set that is gone.
    assert_eq!(s.pop_ready(1), None);
    assert!(matches!(data(&mut s, 1, 5), Inbound::NotSequenced(5)));
    // The whole pool (24) is usable again.
    for n in 0..3u8 {
        let (a, b) = (10 + u32::from(n) * 2, 11 + u32::from(n) * 2);
        linked(&mut s, 10 + n, &[a, b], DesiredUx::NoOpinion);
        s.on_switch(b, OK, &switch_body(1)).unwrap();
        for _ in 0..8 {
            assert!(matches!(data(&mut s, b, 0), Inbound::Held));
        }
    }
    assert_eq!(s.stats().held_cells, 24);
}

#[test]
fn begin_dir_is_refused_on_legs() {
    // TROVE-2026-008.
    let mut s = sets();
    assert!(!s.refuses_begin_dir(1));
    linked(&mut s, 1, &[1], DesiredUx::NoOpinion);
    assert!(s.refuses_begin_dir(1));
}

#[test]
fn linked_ack_and_linked() {
    let mut s = sets();
    let e = s.on_linked_ack(1, OK, 5).unwrap_err();
    assert_eq!(
        (e.this, e.why),
        (DestroyReason::TorProtocol, RefuseWhy::NotLinked)
    );
    linked(&mut s, 1, &[1, 2], DesiredUx::MinLatency);
    s.on_linked_ack(1, OK, 1_500).unwrap();
    // A stalled clock gives an unusable RTT, never picked.
    s.on_linked_ack(2, OK, 1_000).unwrap();
    let SendChoice::Send { circ, switch } = s.choose_send(2, RelayCmd::DATA, |_| ready()) else {
        panic!()
    };
    assert_eq!((circ, switch), (1, None));
    // LINKED is for clients only.
    let r = s.on_linked(2, OK);
    assert_eq!(
        (r.this, r.why),
        (DestroyReason::TorProtocol, RefuseWhy::NotLinked)
    );
    assert!(s.leg_of(2).is_none());
}

fn ready() -> LegSendState {
    LegSendState {
        cwnd: 100,
        inflight: 0,
        blocked_on_chan: false,
    }
}
fn full() -> LegSendState {
    LegSendState {
        cwnd: 100,
        inflight: 100,
        blocked_on_chan: false,
    }
}

fn send(
    s: &mut Sets,
    orig: u32,
    cmd: RelayCmd,
    st: impl Fn(u32) -> LegSendState,
) -> SendChoice<u32> {
    let c = s.choose_send(orig, cmd, st);
    if let SendChoice::Send { circ, .. } = c {
        s.note_sent(circ, cmd);
    }
    c
}

#[test]
fn exit_send_choice_min_rtt() {
    let mut s = sets();
    // Non-multiplexed commands and non-legs go where they were headed.
    assert_eq!(
        s.choose_send(9, RelayCmd::DATA, |_| ready()),
        SendChoice::Send {
            circ: 9,
            switch: None
        }
    );
    linked(&mut s, 1, &[1, 2], DesiredUx::MinLatency);
    // No RTT yet (BEGIN beat LINKED_ACK): the first leg.
    assert_eq!(
        send(&mut s, 2, RelayCmd::CONNECTED, |_| ready()),
        SendChoice::Send {
            circ: 1,
            switch: None
        }
    );
    assert_eq!(
        send(&mut s, 2, RelayCmd::SENDME, |_| ready()),
        SendChoice::Send {
            circ: 2,
            switch: None
        }
    );
    s.on_linked_ack(1, OK, 3_000).unwrap(); // RTT 2000
    s.on_linked_ack(2, OK, 2_000).unwrap(); // RTT 1000
                                            // MinRTT moves to leg 2; the SWITCH says how far leg 2's counter jumps (1 cell sent).
    assert_eq!(
        send(&mut s, 1, RelayCmd::DATA, |_| ready()),
        SendChoice::Send {
            circ: 2,
            switch: Some(Switch { relative_seq: 1 })
        }
    );
    assert_eq!(
        send(&mut s, 1, RelayCmd::DATA, |_| ready()),
        SendChoice::Send {
            circ: 2,
            switch: None
        }
    );
    // MinRTT never uses another leg: with leg 2 full, DATA waits and END goes on leg 2.
    let st = |c| if c == 2 { full() } else { ready() };
    assert_eq!(send(&mut s, 1, RelayCmd::DATA, st), SendChoice::Blocked);
    assert_eq!(
        send(&mut s, 1, RelayCmd::END, st),
        SendChoice::Send {
            circ: 2,
            switch: None
        }
    );
    assert_eq!(s.stats().switches_sent_total, 1);
}

#[test]
fn exit_send_choice_low_rtt_and_switch_failure() {
    let mut s = sets();
    linked(&mut s, 1, &[1, 2], DesiredUx::HighThroughput);
    s.on_linked_ack(1, OK, 2_000).unwrap(); // RTT 1000
    s.on_linked_ack(2, OK, 3_000).unwrap(); // RTT 2000
    for _ in 0..3 {
        assert_eq!(
            send(&mut s, 2, RelayCmd::DATA, |_| ready()),
            SendChoice::Send {
                circ: 1,
                switch: None
            }
        );
    }
    // Leg 1's window is full: LowRTT uses leg 2, which jumps by the 3 cells sent on leg 1.
    let st = |c| if c == 1 { full() } else { ready() };
    assert_eq!(
        send(&mut s, 2, RelayCmd::DATA, st),
        SendChoice::Send {
            circ: 2,
            switch: Some(Switch { relative_seq: 3 })
        }
    );
    // And back: leg 1 sent 3, leg 2 is now at 4.
    assert_eq!(
        send(&mut s, 2, RelayCmd::DATA, |_| ready()),
        SendChoice::Send {
            circ: 1,
            switch: Some(Switch { relative_seq: 1 })
        }
    );
    // Both full: nothing.
    assert_eq!(
        send(&mut s, 2, RelayCmd::DATA, |_| full()),
        SendChoice::Blocked
    );
    // TROVE-2026-017: a SWITCH that could not be sent breaks the set.
    let t = s.switch_send_failed(1);
    assert_eq!(t.reason, DestroyReason::TorProtocol);
    assert_eq!(t.circs().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s.stats().sets, 0);
}

#[test]
fn home_shard_is_stable_and_in_range() {
    let key = HomeKey::for_tests(0);
    for shards in 1..9 {
        for n in 0..50u8 {
            let h = home_shard(&nonce(n), shards, &key);
            assert!(h < shards);
            assert_eq!(h, home_shard(&nonce(n), shards, &key));
        }
    }
    assert_eq!(home_shard(&nonce(3), 0, &key), 0);
}

fn test_seed(name: &str) -> u64 {
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{name}: seed {seed} (rerun with FORS_TEST_SEED={seed})");
    seed
}

/// SipHash-2-4 as published: the reference vectors (key 00..0f, message 00..len-1), and
/// std's own (deprecated) SipHash-2-4 on random messages of every length up to 40.
#[test]
fn home_hash_is_siphash_2_4() {
    let key = HomeKey::new(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    let msg: Vec<u8> = (0..16).collect();
    assert_eq!(super::siphash24(&key, &msg[..0]), 0x726f_db47_dd0e_0e31);
    assert_eq!(super::siphash24(&key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
    assert_eq!(super::siphash24(&key, &msg[..15]), 0xa129_ca61_49be_45e5);
    let seed = test_seed("home_hash_is_siphash_2_4");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for len in 0..=40 {
        let (k0, k1) = (rng.gen(), rng.gen());
        let mut m = vec![0u8; len];
        rng.fill(&mut m[..]);
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        std::hash::Hasher::write(&mut h, &m);
        let want = std::hash::Hasher::finish(&h);
        assert_eq!(
            super::siphash24(&HomeKey::new(k0, k1), &m),
            want,
            "len {len}"
        );
    }
}

/// Nonces a client picks so that the old unkeyed home (`nonce % shards`) is shard 0 for
/// every one: the first eight bytes (little-endian) are multiples of `shards`.
fn aimed_nonces(shards: usize, count: usize, rng: &mut impl Rng) -> Vec<Nonce> {
    (0..count)
        .map(|i| {
            let mut n = [0u8; 32];
            rng.fill(&mut n[8..]);
            n[..8].copy_from_slice(&((i * shards) as u64).to_le_bytes());
            n
        })
        .collect()
}

/// Review finding L8: with a key a client does not know, a nonce set aimed at one shard
/// (under one key, or under the old `nonce % shards`) spreads over all of them, and two
/// keys home the same nonces differently.
#[test]
fn keyed_home_spreads_nonces_aimed_at_one_shard() {
    let seed = test_seed("keyed_home_spreads_nonces_aimed_at_one_shard");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const SHARDS: usize = 4;
    let a = HomeKey::new(rng.gen(), rng.gen());
    let b = HomeKey::new(rng.gen(), rng.gen());
    // 400 nonces all homed on shard 0 under key `a` (what a client knowing `a` would send).
    let mut aimed = Vec::new();
    while aimed.len() < 400 {
        let mut n = [0u8; 32];
        rng.fill(&mut n[..]);
        if home_shard(&n, SHARDS, &a) == 0 {
            aimed.push(n);
        }
    }
    let mut per = [0usize; SHARDS];
    for n in &aimed {
        per[home_shard(n, SHARDS, &b)] += 1;
    }
    // Binomial(400, 1/4) per shard: mean 100, sd 8.7; 50..150 is over 5 sd.
    assert!(per.iter().all(|&c| (50..=150).contains(&c)), "{per:?}");
    // Aimed under the old unkeyed home: spread as well under a key.
    let mut per = [0usize; SHARDS];
    for n in aimed_nonces(SHARDS, 400, &mut rng) {
        per[home_shard(&n, SHARDS, &a)] += 1;
    }
    assert!(per.iter().all(|&c| (50..=150).contains(&c)), "{per:?}");
}

/// The home is balanced over the shards for any shard count, for random and for structured
/// (counter) nonces, under a random key.
#[test]
fn keyed_home_is_balanced_over_shards() {
    let seed = test_seed("keyed_home_is_balanced_over_shards");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const N: usize = 64_000;
    for shards in [2usize, 3, 4, 6, 8] {
        let key = HomeKey::new(rng.gen(), rng.gen());
        let aimed = aimed_nonces(shards, N, &mut rng);
        for (what, nonces) in [
            (
                "random",
                (0..N).map(|_| rng.gen::<Nonce>()).collect::<Vec<_>>(),
            ),
            ("aimed", aimed),
        ] {
            let mut per = vec![0usize; shards];
            for n in &nonces {
                per[home_shard(n, shards, &key)] += 1;
            }
            // Each count within 5 % of N / shards: at least 4.7 standard deviations.
            let mean = N / shards;
            let tol = mean / 20;
            assert!(
                per.iter().all(|&c| c.abs_diff(mean) <= tol),
                "{what} nonces over {shards} shards: {per:?} (mean {mean}, ±{tol})"
            );
        }
    }
}

/// A C tor-like client spreads cells 1..=n over two legs, switching at random; the two
/// legs deliver in random interleavings. The exit must deliver 1..=n in order, within its
/// bounds, and leave nothing behind after a random leg close.
#[test]
fn model_random_interleavings_over_two_legs() {
    let seed: u64 = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ff1e_2026);
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let window = 64u32;
    let (mut complete, mut closed, mut overflowed, mut max_held) = (0, 0, 0, 0);
    for round in 0..300 {
        let mut s: ConfluxSets<u32, u64> = ConfluxSets::new(Limits {
            max_sets: 2,
            max_legs: 8,
            ooo_window: window,
            ooo_pool_cells: 128,
        });
        let n = rng.gen_range(1..200u64);
        for c in [1, 2] {
            s.on_link(c, OK, &link_body(nonce(7), 0, 0, DesiredUx::NoOpinion), 0)
                .unwrap();
        }
        // What the client puts on each leg: Some(tag) for DATA, None for a SWITCH by rel.
        let mut legs: [std::collections::VecDeque<(Option<u64>, u32)>; 2] = Default::default();
        let mut sent = [0u64; 2];
        let mut cur = 0usize;
        let mut last_seq = 0u64;
        for tag in 1..=n {
            // Switch now and then, but never so far ahead that an honest client would
            // outrun the exit's window (its cwnd keeps it behind).
            if rng.gen_bool(0.2) {
                let other = 1 - cur;
                let rel = last_seq - sent[other];
                legs[other].push_back((None, rel as u32));
                sent[other] = last_seq;
                cur = other;
            }
            legs[cur].push_back((Some(tag), 0));
            sent[cur] += 1;
            last_seq = sent[cur];
        }
        let close_at = rng.gen_bool(0.3).then(|| rng.gen_range(0..=n));
        let mut got = Vec::new();
        let mut torn = false;
        while !legs[0].is_empty() || !legs[1].is_empty() {
            let l = if legs[1].is_empty() || (!legs[0].is_empty() && rng.gen_bool(0.5)) {
                0
            } else {
                1
            };
            // The delivered stream can lag the other leg by at most what it holds.
            let (item, rel) = legs[l].pop_front().unwrap();
            let circ = l as u32 + 1;
            match item {
                None => {
                    s.on_switch(circ, OK, &switch_body(rel)).unwrap();
                }
                Some(tag) => match s.on_cell(circ, RelayCmd::DATA, OK, tag) {
                    Inbound::Deliver(m) => {
                        got.push(m);
                        while let Some(m) = s.pop_ready(circ) {
                            got.push(m);
                        }
                    }
                    Inbound::Held => {}
                    Inbound::Refused(r) => {
                        // Only an interleaving that outruns the window may refuse.
                        assert_eq!(r.why, RefuseWhy::OooWindow, "round {round}");
                        overflowed += 1;
                        torn = true;
                        break;
                    }
                    Inbound::NotSequenced(_) => panic!("round {round}: not sequenced"),
                },
            }
            let st = s.stats();
            assert!(st.held_cells <= window as usize, "round {round}");
            max_held = max_held.max(st.held_cells);
            if close_at == Some(got.len() as u64) && !torn {
                closed += 1;
                let t = s.leg_closed(circ, false);
                for c in t.circs() {
                    assert!(s.leg_closed(c, false).is_empty());
                }
                if s.stats().sets == 0 {
                    torn = true;
                    break;
                }
                // The other leg goes on alone: drop the closed leg's queue.
                legs[l].clear();
                // Cells sent on the closed leg are lost to the client's stream; stop
                // checking order past them.
                torn = true;
                break;
            }
        }
        // Delivered cells are always an in-order prefix 1..=k.
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        assert_eq!(got, want, "round {round}");
        if !torn {
            complete += 1;
            assert_eq!(got.len() as u64, n, "round {round}");
            assert_eq!(s.stats().held_cells, 0, "round {round}");
        }
        // Teardown of whatever is left frees everything.
        for c in [1, 2] {
            let t = s.leg_closed(c, false);
            for o in t.circs() {
                s.leg_closed(o, false);
            }
        }
        let st = s.stats();
        assert_eq!(
            (st.sets, st.legs, st.held_cells),
            (0, 0, 0),
            "round {round}"
        );
    }
    eprintln!("complete {complete} closed {closed} overflowed {overflowed} max held {max_held}");
    // The rounds must have exercised reordering, closes and the window, not just passed.
    assert!(
        complete > 100 && closed > 10 && max_held > 8,
        "too few interesting rounds"
    );
}

/// Legs of one set arrive on different shards: each shard forwards the LINK and the leg's
/// sequenced cells to the nonce's home shard, whose table joins them and orders the cells.
#[test]
fn legs_on_different_shards_meet_at_the_home_shard() {
    let seed: u64 = 0x5eed_0c0f;
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const SHARDS: usize = 4;
    // A circuit handle names its shard, as the node's would.
    let mut tables: Vec<ConfluxSets<(u8, u32), u64>> = (0..SHARDS)
        .map(|_| ConfluxSets::new(Limits::default()))
        .collect();
    let mut spread = [false; SHARDS];
    for i in 0..64u32 {
        let mut n = [0u8; 32];
        rng.fill(&mut n[..]);
        let home = home_shard(&n, SHARDS, &HomeKey::for_tests(0));
        spread[home] = true;
        let a = (rng.gen_range(0..SHARDS as u8), 2 * i);
        let b = (rng.gen_range(0..SHARDS as u8), 2 * i + 1);
        for leg in [a, b] {
            tables[home]
                .on_link(leg, OK, &link_body(n, 0, 0, DesiredUx::NoOpinion), 0)
                .unwrap();
        }
        assert_eq!(tables[home].set_of(a), Some((n, 2)));
        // Cell 2 on leg b (after a SWITCH by 1) overtakes cell 1 on leg a.
        tables[home].on_switch(b, OK, &switch_body(1)).unwrap();
        assert!(matches!(
            tables[home].on_cell(b, RelayCmd::DATA, OK, 2),
            Inbound::Held
        ));
        let Inbound::Deliver(1) = tables[home].on_cell(a, RelayCmd::DATA, OK, 1) else {
            panic!("set {i}")
        };
        assert_eq!(tables[home].pop_ready(a), Some(2));
        for (s, t) in tables.iter().enumerate() {
            if s != home {
                assert!(t.leg_of(a).is_none() && t.leg_of(b).is_none());
            }
        }
    }
    assert!(
        spread.iter().all(|&x| x),
        "nonces should spread over the shards"
    );
    assert_eq!(tables.iter().map(|t| t.stats().sets).sum::<usize>(), 64);
}

/// An honest client's leg can run thousands of cells ahead of a delayed one (the exit
/// acknowledges each leg as cells arrive): 6,000 cells on leg 2 wait behind 1,000 still
/// on leg 1, past the old 2,048-cell window. Every cell is delivered in order once leg 1's
/// arrive, and the pages go back. Before, such sets were closed with RESOURCELIMIT (seen
/// with C tor 0.4.9 clients on a loaded private network).
#[test]
fn a_leg_far_ahead_is_held_and_delivered_in_order() {
    let mut s = Sets::new(Limits::default());
    linked(&mut s, 1, &[1, 2], DesiredUx::HighThroughput);
    const BEHIND: u64 = 1_000;
    const AHEAD: u64 = 6_000;
    // The client sent 1..=BEHIND on leg 1, switched, then the rest on leg 2; leg 2's
    // arrive first.
    s.on_switch(2, OK, &switch_body(BEHIND as u32)).unwrap();
    for tag in BEHIND + 1..=BEHIND + AHEAD {
        assert!(matches!(data(&mut s, 2, tag), Inbound::Held), "tag {tag}");
    }
    let st = s.stats();
    assert_eq!(st.held_cells, AHEAD as usize);
    // Pages cover only the numbers held.
    let first_page = (BEHIND + 1) / OOO_PAGE as u64;
    let last_page = (BEHIND + AHEAD) / OOO_PAGE as u64;
    assert_eq!(st.ooo_pages as u64, last_page - first_page + 1);
    let mut got = Vec::new();
    for tag in 1..=BEHIND {
        got.extend(delivered(&mut s, 1, tag));
    }
    assert_eq!(got, (1..=BEHIND + AHEAD).collect::<Vec<_>>());
    let st = s.stats();
    assert_eq!(
        (st.held_cells, st.ooo_pages, st.ooo_overflow_total),
        (0, 0, 0)
    );
}

/// A cell far ahead costs one page, not room for the whole distance: sets that each pin
/// one cell at the edge of the window (a SWITCH jump, then DATA) take a page each and
/// leave the rest of the shard's room to others; the cells held stay bounded by the pool,
/// and a torn-down set gives its page and cell back.
#[test]
fn a_cell_far_ahead_costs_one_page() {
    let window = Limits::default().ooo_window;
    let mut s = Sets::new(Limits {
        max_sets: 64,
        max_legs: 2,
        ooo_window: window,
        ooo_pool_cells: 48,
    });
    for n in 0..40u8 {
        let (a, b) = (u32::from(n) * 2 + 1, u32::from(n) * 2 + 2);
        linked(&mut s, n, &[a, b], DesiredUx::NoOpinion);
        s.on_switch(b, OK, &switch_body(window - 1)).unwrap();
        assert!(
            matches!(data(&mut s, b, u64::from(n)), Inbound::Held),
            "set {n}"
        );
    }
    let st = s.stats();
    assert_eq!((st.held_cells, st.ooo_pages), (40, 40));
    // What bounds the cells held is the pool (48 here): a set that holds its last 8 has
    // the next refused as a full pool.
    linked(&mut s, 50, &[101, 102], DesiredUx::NoOpinion);
    s.on_switch(102, OK, &switch_body(100)).unwrap();
    for tag in 0..8 {
        assert!(
            matches!(data(&mut s, 102, tag), Inbound::Held),
            "cell {tag}"
        );
    }
    let r = refused_of(data(&mut s, 102, 8));
    assert_eq!(
        (r.this, r.why),
        (DestroyReason::ResourceLimit, RefuseWhy::OooPool)
    );
    // The refused leg held the set's newest number, so the set went with its 8 cells and
    // their page.
    let st = s.stats();
    assert_eq!((st.held_cells, st.ooo_pages), (40, 40));
    // Tearing down set 0 gives its page and cell back.
    let before = s.stats();
    let t = s.leg_closed(2, false);
    for c in t.circs() {
        s.leg_closed(c, false);
    }
    let after = s.stats();
    assert_eq!(after.held_cells, before.held_cells - 1);
    assert_eq!(after.ooo_pages, before.ooo_pages - 1);
}

/// Held cells stay under their own sequence numbers wherever the directory wraps: seeded
/// random bursts on two legs, each up to 12,000 cells ahead of the other, over numbers well
/// past one window, delivered in order.
#[test]
fn far_ahead_bursts_keep_every_cell_in_order() {
    let seed: u64 = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0000_5eed_2026_1208);
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut wrapped = 0;
    for round in 0..20 {
        let window = 16 * 1024;
        let mut s = Sets::new(Limits {
            max_sets: 1,
            max_legs: 2,
            ooo_window: window,
            ooo_pool_cells: 16 * 1024,
        });
        linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
        // Bursts: leg 1 carries `behind` cells that arrive after leg 2's `ahead` ones.
        let mut next = 1u64;
        let mut got = Vec::new();
        // Each leg's last sequence number.
        let mut sent = [0u64; 2];
        for _ in 0..rng.gen_range(1..6) {
            let behind = rng.gen_range(1..3_000u64);
            let ahead = rng.gen_range(1..12_000u64);
            // Leg 1 catches up to the set's last number, then carries `behind` cells.
            let rel1 = (next - 1) - sent[0];
            // Leg 2 jumps over them.
            let first2 = next + behind;
            let rel2 = (first2 - 1) - sent[1];
            s.on_switch(2, OK, &switch_body(rel2 as u32)).unwrap();
            for tag in first2..first2 + ahead {
                match data(&mut s, 2, tag) {
                    Inbound::Held => {}
                    other => panic!("round {round} tag {tag}: {other:?}"),
                }
            }
            sent[1] = first2 + ahead - 1;
            if rel1 > 0 {
                s.on_switch(1, OK, &switch_body(rel1 as u32)).unwrap();
            }
            for tag in next..next + behind {
                got.extend(delivered(&mut s, 1, tag));
            }
            sent[0] = next + behind - 1;
            next = first2 + ahead;
        }
        if next > u64::from(window) {
            wrapped += 1;
        }
        assert_eq!(got, (1..next).collect::<Vec<_>>(), "round {round}");
        let st = s.stats();
        assert_eq!((st.held_cells, st.ooo_pages), (0, 0), "round {round}");
    }
    assert!(wrapped > 0, "some round must wrap the directory");
}

/// The first and last numbers of a window can sit in pages a window apart: the directory
/// has one entry more than the window fills, so they never share one, wherever the window
/// starts within a page.
#[test]
fn cells_a_whole_window_apart_do_not_collide() {
    let window = 1024u32;
    for start in 0..OOO_PAGE as u64 {
        let mut s = Sets::new(Limits {
            max_sets: 1,
            max_legs: 2,
            ooo_window: window,
            ooo_pool_cells: 8,
        });
        linked(&mut s, 1, &[1, 2], DesiredUx::NoOpinion);
        // `start` cells delivered in order on leg 1.
        let mut got = Vec::new();
        for tag in 1..=start {
            got.extend(delivered(&mut s, 1, tag));
        }
        // Leg 2 jumps to the window's last number; leg 1 then holds the second.
        let last = start + u64::from(window);
        s.on_switch(2, OK, &switch_body((last - 1) as u32)).unwrap();
        assert!(
            matches!(data(&mut s, 2, last), Inbound::Held),
            "start {start}"
        );
        s.on_switch(1, OK, &switch_body(1)).unwrap();
        assert!(
            matches!(data(&mut s, 1, start + 2), Inbound::Held),
            "start {start}"
        );
        let st = s.stats();
        assert_eq!(st.held_cells, 2, "start {start}");
        assert_eq!(st.ooo_pages, 2, "start {start}: two pages, not one shared");
        // Closing leg 2 (it holds the newest number) tears the set down and frees both.
        let t = s.leg_closed(2, false);
        for c in t.circs() {
            s.leg_closed(c, false);
        }
        let st = s.stats();
        assert_eq!(
            (st.held_cells, st.ooo_pages, st.sets),
            (0, 0, 0),
            "start {start}"
        );
    }
}
