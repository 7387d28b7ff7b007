use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::proto::circpad::machines::STATE_OBFUSCATE_CIRC_SETUP;
use crate::proto::circpad::CircpadParams;

/// `FORS_TEST_SEED` if set (to replay a failure), else a fresh seed; printed.
fn seeded() -> StdRng {
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (rerun with FORS_TEST_SEED={seed})");
    StdRng::seed_from_u64(seed)
}

fn params(kv: &[(&str, i32)]) -> CircpadParams {
    CircpadParams::from_consensus(|n| kv.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
}

fn shard() -> ShardPadding {
    ShardPadding::new(CircpadParams::default(), true)
}

fn negotiate(cmd: PadCommand, machine: u8, ctr: u32) -> [u8; 8] {
    Negotiate {
        command: cmd,
        machine_type: machine,
        echo_request: false,
        machine_ctr: ctr,
    }
    .encode()
}

fn reply(cmd: PadCommand, resp: PadResponse, machine: u8, ctr: u32) -> Option<Negotiated> {
    Some(Negotiated {
        command: cmd,
        response: resp,
        machine_type: machine,
        machine_ctr: ctr,
    })
}

const OBF: StateNum = StateNum::State(STATE_OBFUSCATE_CIRC_SETUP);

/// What a client-side C tor does on an intro/rendezvous circuit, from the middle's view:
/// PADDING_NEGOTIATE arrives (a received non-padding cell, then the negotiation), the
/// middle answers and reports that answer as sent. Returns the outcome.
fn start(
    c: &mut CircPadding,
    g: &mut ShardPadding,
    machine: u8,
    ctr: u32,
    now: Instant,
    rng: &mut StdRng,
) -> NegotiateOutcome {
    assert_eq!(c.on_cell_received(g, CellKind::NonPadding, now, rng), None);
    let out = c.on_negotiate(g, &negotiate(PadCommand::Start, machine, ctr), now, rng);
    if out.reply.is_some() {
        assert_eq!(c.on_cell_sent(g, CellKind::NonPadding, now, rng), None);
    }
    out
}

/// Runs a machine's timers to the end with no other traffic. Returns the delays between
/// DROPs (µs, the first from `t0`) and the STOP sent at the end, if any.
fn run_to_quiet(
    c: &mut CircPadding,
    g: &mut ShardPadding,
    t0: Instant,
    rng: &mut StdRng,
) -> (Vec<u128>, Option<Negotiated>, Instant) {
    let mut delays = Vec::new();
    let mut last = t0;
    let mut stop = None;
    // Bounded: no relay machine sends more than 10 cells.
    for _ in 0..100 {
        let Some(at) = c.next_wakeup() else { break };
        assert!(at >= last, "deadline in the past");
        // One microsecond early: nothing.
        if at > last {
            assert_eq!(
                c.on_wakeup(g, at - Duration::from_micros(1), 0, rng),
                Wakeup::default()
            );
        }
        let w = c.on_wakeup(g, at, 0, rng);
        assert!(w.send_drop);
        delays.push((at - last).as_micros());
        last = at;
        if w.negotiated.is_some() {
            assert!(stop.is_none());
            stop = w.negotiated;
            // The STOP is itself a non-padding cell sent.
            assert_eq!(c.on_cell_sent(g, CellKind::NonPadding, at, rng), None);
        }
    }
    assert_eq!(c.next_wakeup(), None, "machine did not go quiet");
    (delays, stop, last)
}

#[test]
fn per_circuit_state_is_small() {
    assert!(
        std::mem::size_of::<CircPadding>() <= 64,
        "{}",
        std::mem::size_of::<CircPadding>()
    );
}

#[test]
fn relay_ip_circ_sends_7_to_10_drops_1_to_10_ms_apart_then_stops() {
    let mut rng = seeded();
    let mut g = shard();
    let mut seen = [0u32; 11];
    // Bounded: 300 circuits.
    for i in 0..300u32 {
        let t0 = Instant::now() + Duration::from_secs(u64::from(i));
        let mut c = CircPadding::new();
        let client_ctr = 1;
        let out = start(&mut c, &mut g, 0, client_ctr, t0, &mut rng);
        assert_eq!(
            out.result,
            Negotiation::Started {
                machine_num: 0,
                ctr_mismatch: false
            }
        );
        assert_eq!(out.reply, reply(PadCommand::Start, PadResponse::Ok, 0, 1));
        // The answer going out moved START → OBFUSCATE_CIRC_SETUP and set the timer.
        assert_eq!(c.machine(), Some(("relay_ip_circ", OBF)));
        let (delays, stop, _) = run_to_quiet(&mut c, &mut g, t0, &mut rng);
        for d in &delays {
            assert!((1000..10_000).contains(d), "delay {d} µs");
        }
        let n = delays.len();
        assert!((7..=10).contains(&n), "{n} DROPs");
        seen[n] += 1;
        // END: the relay tells the client with its own counter, and frees the slot.
        assert_eq!(
            stop,
            reply(PadCommand::Stop, PadResponse::Ok, 0, c.machine_ctr())
        );
        assert_eq!(c.machine(), None);
    }
    println!("DROP counts 7..=10: {:?}", &seen[7..]);
    // Uniform on [7, 10] truncated: 7, 8 and 9 each about a third (10 only on an exact 10.0).
    for (n, &k) in seen.iter().enumerate().take(10).skip(7) {
        assert!(k >= 50, "{n} DROPs only {k} times of 300");
    }
    let s = g.stats();
    assert_eq!(
        (s.machines_started, s.machines_ended, s.machines_running),
        (300, 300, 0)
    );
    assert_eq!(
        s.padding_sent,
        seen.iter()
            .enumerate()
            .map(|(n, k)| n as u64 * u64::from(*k))
            .sum::<u64>()
    );
}

#[test]
fn relay_ip_circ_keeps_padding_across_relayed_cells() {
    let mut rng = seeded();
    let mut g = shard();
    let t0 = Instant::now();
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 0, 0, t0, &mut rng);
    let first = c.next_wakeup().unwrap();
    // INTRODUCE_ACK relayed to the client before the timer: a new delay from then.
    let t1 = t0 + Duration::from_micros(500);
    assert_eq!(
        c.on_cell_sent(&mut g, CellKind::NonPadding, t1, &mut rng),
        None
    );
    let second = c.next_wakeup().unwrap();
    assert!(second >= t1 + Duration::from_millis(1) && second < t1 + Duration::from_millis(10));
    assert!(first > t0);
    // Cells from the client do not change anything for this machine.
    assert_eq!(
        c.on_cell_received(&mut g, CellKind::NonPadding, t1, &mut rng),
        None
    );
    assert_eq!(
        c.on_cell_received(&mut g, CellKind::Padding, t1, &mut rng),
        None
    );
    assert_eq!(c.next_wakeup(), Some(second));
    // Non-padding cells do not count against the length: still 7..=10 DROPs.
    let (delays, stop, _) = run_to_quiet(&mut c, &mut g, t1, &mut rng);
    assert!((7..=10).contains(&delays.len()), "{}", delays.len());
    assert!(stop.is_some());
}

#[test]
fn relay_rp_circ_sends_one_drop_within_a_millisecond_and_ends_silently() {
    let mut rng = seeded();
    let mut g = shard();
    for i in 0..100u64 {
        let t0 = Instant::now() + Duration::from_secs(i);
        let mut c = CircPadding::new();
        let out = start(&mut c, &mut g, 1, 1, t0, &mut rng);
        assert_eq!(out.reply, reply(PadCommand::Start, PadResponse::Ok, 1, 1));
        assert_eq!(c.machine(), Some(("relay_rp_circ", OBF)));
        let at = c.next_wakeup().unwrap();
        assert!(at < t0 + Duration::from_millis(1), "{:?}", at - t0);
        let (delays, stop, _) = run_to_quiet(&mut c, &mut g, t0, &mut rng);
        assert_eq!(delays.len(), 1);
        // No STOP: should_negotiate_end is off; the machine stays in END on the circuit.
        assert_eq!(stop, None);
        assert_eq!(c.machine(), Some(("relay_rp_circ", StateNum::End)));
        // In END nothing reacts.
        assert_eq!(
            c.on_cell_sent(&mut g, CellKind::NonPadding, at, &mut rng),
            None
        );
        assert_eq!(c.next_wakeup(), None);
        c.on_close(&mut g);
        assert_eq!(c.machine(), None);
    }
    let s = g.stats();
    assert_eq!(
        (s.padding_sent, s.machines_ended, s.machines_running),
        (100, 100, 0)
    );
}

#[test]
fn negotiation_rules_follow_c_tor() {
    let mut rng = seeded();
    let mut g = shard();
    let now = Instant::now();
    let mut c = CircPadding::new();

    // Unknown machine: ERR, nothing set up, counter unchanged.
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Start, 2, 1), now, &mut rng);
    assert_eq!(out.result, Negotiation::UnknownMachine);
    assert_eq!(out.reply, reply(PadCommand::Start, PadResponse::Err, 2, 1));
    assert_eq!((c.machine(), c.machine_ctr()), (None, 0));

    // STOP with nothing running: no answer; counter 0 is "old", above ours "unknown".
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 0, 0), now, &mut rng);
    assert_eq!(
        (out.result, out.reply),
        (Negotiation::StopForOldMachine, None)
    );
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 0, 5), now, &mut rng);
    assert_eq!(
        (out.result, out.reply),
        (Negotiation::StopForUnknownMachine, None)
    );

    // START with the client's counter off: started all the same, answered OK with the
    // client's counter.
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Start, 1, 9), now, &mut rng);
    assert_eq!(
        out.result,
        Negotiation::Started {
            machine_num: 1,
            ctr_mismatch: true
        }
    );
    assert_eq!(out.reply, reply(PadCommand::Start, PadResponse::Ok, 1, 9));
    assert_eq!(c.machine_ctr(), 1);

    // A second START while the slot is taken: OK, nothing new (C's BUG path).
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Start, 0, 2), now, &mut rng);
    assert_eq!(out.result, Negotiation::SlotBusy);
    assert_eq!(out.reply, reply(PadCommand::Start, PadResponse::Ok, 0, 2));
    assert_eq!(c.machine().unwrap().0, "relay_rp_circ");
    assert_eq!(c.machine_ctr(), 1);

    // STOP for the other machine number, or with a wrong counter: not ours, no answer.
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 0, 1), now, &mut rng);
    assert_eq!(
        (out.result, out.reply),
        (Negotiation::StopForOldMachine, None)
    );
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 1, 7), now, &mut rng);
    assert_eq!(
        (out.result, out.reply),
        (Negotiation::StopForUnknownMachine, None)
    );
    assert!(c.machine().is_some());

    // STOP with our counter: freed, answered STOP OK.
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 1, 1), now, &mut rng);
    assert_eq!(out.result, Negotiation::Stopped);
    assert_eq!(out.reply, reply(PadCommand::Stop, PadResponse::Ok, 1, 1));
    assert_eq!(c.machine(), None);

    // Next machine gets counter 2; a STOP with counter 0 matches any.
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Start, 0, 2), now, &mut rng);
    assert_eq!(
        out.result,
        Negotiation::Started {
            machine_num: 0,
            ctr_mismatch: false
        }
    );
    assert_eq!(c.machine_ctr(), 2);
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 0, 0), now, &mut rng);
    assert_eq!(out.result, Negotiation::Stopped);
    assert_eq!(out.reply, reply(PadCommand::Stop, PadResponse::Ok, 0, 0));

    // Malformed: dropped, no answer, nothing changes.
    for bad in [
        &[0u8, 2, 0][..],
        &[1, 2, 0, 0, 0, 0, 0, 1],
        &[0, 3, 0, 0, 0, 0, 0, 1],
        &[0, 2, 0, 2, 0, 0, 0, 1],
    ] {
        let out = c.on_negotiate(&mut g, bad, now, &mut rng);
        assert!(matches!(out.result, Negotiation::Malformed(_)), "{out:?}");
        assert_eq!(out.reply, None);
    }
    assert_eq!(c.machine(), None);
    let s = *g.stats();
    assert_eq!(s.negotiate_unknown_machine, 1);
    assert_eq!(s.negotiate_slot_busy, 1);
    assert_eq!(s.negotiate_stopped, 2);
    assert_eq!(s.negotiate_stop_unmatched, 4);
    assert_eq!(s.negotiate_malformed, 4);
    assert_eq!((s.machines_started, s.machines_running), (2, 0));
}

#[test]
fn counter_wraps_past_zero() {
    let mut rng = seeded();
    let mut g = shard();
    let now = Instant::now();
    let mut c = CircPadding {
        ctr: u32::MAX,
        slot: None,
    };
    c.on_negotiate(&mut g, &negotiate(PadCommand::Start, 0, 0), now, &mut rng);
    assert_eq!(c.machine_ctr(), 1);
}

#[test]
fn stop_cancels_pending_padding_and_close_frees() {
    let mut rng = seeded();
    let mut g = shard();
    let t0 = Instant::now();
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 0, 1, t0, &mut rng);
    assert!(c.next_wakeup().is_some());
    let out = c.on_negotiate(&mut g, &negotiate(PadCommand::Stop, 0, 1), t0, &mut rng);
    assert_eq!(out.result, Negotiation::Stopped);
    assert_eq!(c.next_wakeup(), None);
    assert_eq!(
        c.on_wakeup(&mut g, t0 + Duration::from_secs(1), 0, &mut rng),
        Wakeup::default()
    );
    // Close mid-padding.
    start(&mut c, &mut g, 0, 2, t0, &mut rng);
    assert_eq!(g.stats().machines_running, 1);
    c.on_close(&mut g);
    assert_eq!((c.machine(), c.next_wakeup()), (None, None));
    assert_eq!(g.stats().machines_running, 0);
    c.on_close(&mut g);
    assert_eq!(g.stats().machines_running, 0);
}

#[test]
fn consensus_can_disable_padding() {
    let mut rng = seeded();
    let t0 = Instant::now();
    for (p, torrc) in [
        (params(&[("circpad_padding_disabled", 1)]), true),
        (CircpadParams::default(), false),
    ] {
        let mut g = ShardPadding::new(p, torrc);
        let mut c = CircPadding::new();
        // Negotiation still succeeds, as in C (the check is at scheduling).
        let out = start(&mut c, &mut g, 0, 1, t0, &mut rng);
        assert_eq!(out.reply, reply(PadCommand::Start, PadResponse::Ok, 0, 1));
        assert_eq!(c.machine(), Some(("relay_ip_circ", OBF)));
        assert_eq!(c.next_wakeup(), None);
    }
    // Turned off mid-machine: the pending DROP goes, nothing more is scheduled.
    let mut g = shard();
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 0, 1, t0, &mut rng);
    let at = c.next_wakeup().unwrap();
    g.set_params(params(&[("circpad_padding_disabled", 1)]));
    assert!(c.on_wakeup(&mut g, at, 0, &mut rng).send_drop);
    assert_eq!(c.next_wakeup(), None);
}

#[test]
fn params_defaults_and_bounds_as_c() {
    let d = CircpadParams::default();
    assert_eq!(
        d,
        CircpadParams {
            disabled: false,
            reduced: false,
            global_allowed_cells: 0,
            global_max_padding_pct: 0,
            max_circ_queued_cells: 1000,
        }
    );
    let p = params(&[
        ("circpad_padding_disabled", 7),
        ("circpad_padding_reduced", 1),
        ("circpad_global_allowed_cells", 70_000),
        ("circpad_global_max_padding_pct", 101),
        ("circpad_max_circ_queued_cells", 60_000),
    ]);
    assert!(p.disabled && p.reduced);
    assert_eq!(p.global_allowed_cells, 65_534);
    assert_eq!(p.global_max_padding_pct, 100);
    assert_eq!(p.max_circ_queued_cells, 50_000);
    let n = params(&[
        ("circpad_max_circ_queued_cells", -5),
        ("circpad_global_max_padding_pct", -1),
    ]);
    assert_eq!((n.max_circ_queued_cells, n.global_max_padding_pct), (0, 0));
}

#[test]
fn global_padding_percentage_stops_scheduling() {
    let mut rng = seeded();
    let t0 = Instant::now();
    // At most 10% padding once 3 padding cells went out on this shard.
    let mut g = ShardPadding::new(
        params(&[
            ("circpad_global_allowed_cells", 3),
            ("circpad_global_max_padding_pct", 10),
        ]),
        true,
    );
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 0, 1, t0, &mut rng);
    let (delays, stop, last) = run_to_quiet(&mut c, &mut g, t0, &mut rng);
    // 1 non-padding (the answer) so far: after 3 DROPs, 3/4 > 10%: no fourth.
    assert_eq!(delays.len(), 3);
    assert_eq!(stop, None);
    assert!(g.stats().padding_limited >= 1);
    // Much non-padding traffic on other circuits brings the share under 10%: the next
    // event reschedules.
    let mut other = CircPadding::new();
    for _ in 0..100 {
        other.on_cell_sent(&mut g, CellKind::NonPadding, last, &mut rng);
    }
    assert_eq!(g.global_counts(), (3, 101));
    c.on_cell_sent(&mut g, CellKind::NonPadding, last, &mut rng);
    assert!(c.next_wakeup().is_some());
}

#[test]
fn machine_percentage_limit_applies_past_allowed_count() {
    // relay_ip_circ's own limit: 10 padding cells, then at most 1%. Its length never
    // reaches it (at most 10); force a longer one to see the limit stop it at 10.
    let mut rng = seeded();
    let mut g = shard();
    let t0 = Instant::now();
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 0, 1, t0, &mut rng);
    c.slot.as_mut().unwrap().state_length = 50;
    let (delays, stop, _) = run_to_quiet(&mut c, &mut g, t0, &mut rng);
    assert_eq!(delays.len(), 10, "allowed_padding_count, then 10/11 > 1%");
    assert_eq!(stop, None);
}

#[test]
fn full_queue_suppresses_the_drop_but_the_machine_counts_it() {
    let mut rng = seeded();
    let t0 = Instant::now();
    let mut g = ShardPadding::new(params(&[("circpad_max_circ_queued_cells", 5)]), true);
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 1, 1, t0, &mut rng);
    let at = c.next_wakeup().unwrap();
    let w = c.on_wakeup(&mut g, at, 6, &mut rng);
    assert!(!w.send_drop);
    assert_eq!(c.machine(), Some(("relay_rp_circ", StateNum::End)));
    assert_eq!(g.stats().padding_suppressed_queue, 1);
    assert_eq!(g.stats().padding_sent, 0);
    // At the bound exactly: sent.
    let mut c = CircPadding::new();
    start(&mut c, &mut g, 1, 1, t0, &mut rng);
    let at = c.next_wakeup().unwrap();
    assert!(c.on_wakeup(&mut g, at, 5, &mut rng).send_drop);
}

#[test]
fn cells_without_a_machine_only_count() {
    let mut rng = seeded();
    let mut g = shard();
    let now = Instant::now();
    let mut c = CircPadding::new();
    assert_eq!(
        c.on_cell_sent(&mut g, CellKind::NonPadding, now, &mut rng),
        None
    );
    assert_eq!(
        c.on_cell_sent(&mut g, CellKind::Padding, now, &mut rng),
        None
    );
    assert_eq!(
        c.on_cell_received(&mut g, CellKind::Padding, now, &mut rng),
        None
    );
    assert_eq!(c.on_wakeup(&mut g, now, 0, &mut rng), Wakeup::default());
    assert_eq!(g.global_counts(), (0, 1));
    assert_eq!(c.next_wakeup(), None);
}
