//! Circuit padding machines in the relay node, on fake shards and a fake clock
//! (padding-spec §3, prop 254; C tor `circuitpadding.c`, `circuitpadding_machines.c`): a
//! client's PADDING_NEGOTIATE START for machine 0 ("relay_ip_circ") is answered OK, then the
//! node sends 7–10 DROP cells 1–10 ms apart, driven only by the node's own deadlines
//! (`RelayNode::next_deadline` / `on_timer`, as the shard loop does), then its STOP;
//! machine 1 ("relay_rp_circ") sends one DROP within 1 ms and ends silently; an unknown
//! machine gets ERR; closing the circuit mid-machine frees it; the consensus's
//! `circpad_padding_disabled=1` stops scheduling (not negotiation, as C).

mod channel_support;
mod node_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use fors::cell::chan::DestroyReason;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CELL_BODY_LEN};
use fors::proto::circpad::{Negotiate, Negotiated, PadCommand, PadResponse};
use fors::relay::snapshot::NetworkSnapshot;
use node_harness::*;

/// What the client saw of one circuit: (µs since `t0`, command, body).
type Seen = Vec<(u64, RelayCmd, Vec<u8>)>;

fn negotiate(p: &mut Peer, net: &mut Net, c: &mut ClientCirc, cmd: PadCommand, machine: u8) {
    let body = Negotiate {
        command: cmd,
        machine_type: machine,
        echo_request: false,
        machine_ctr: 0,
    }
    .encode();
    let cell = c.cell(0, RelayCmd::PADDING_NEGOTIATE, 0, &body);
    p.send(net, c.circ_id, ChanCmd::RELAY, &cell);
}

/// Runs the node's timers only (the loop's `next_deadline` → wait → `on_timer`), moving
/// the fake clock to each deadline, for at most `limit` of fake time; returns what the
/// client got, stamped with the fake time since `t0`.
fn run_timers(
    net: &mut Net,
    p: &mut Peer,
    c: &mut ClientCirc,
    t0: std::time::Instant,
    limit: Duration,
) -> Seen {
    let mut seen = Seen::new();
    let end = net.shards[0].now + limit;
    // Bounded: each round serves at least one deadline (stale or live).
    for _ in 0..10_000 {
        let Some(at) = net.nodes[0].next_deadline() else {
            break;
        };
        if at > end {
            break;
        }
        let now = net.shards[0].now;
        if at > now {
            net.shards[0].advance(at - now);
        }
        let now = net.shards[0].now;
        net.nodes[0].on_timer(now, &mut net.shards[0]);
        net.settle();
        p.pump(net);
        let us = now.saturating_duration_since(t0).as_micros() as u64;
        for (hop, cmd, _, data) in c.open_all(&p.cells()) {
            assert_eq!(hop, 0);
            seen.push((us, cmd, data));
        }
    }
    seen
}

fn answer(data: &[u8]) -> Negotiated {
    Negotiated::parse(data).expect("a PADDING_NEGOTIATED body")
}

fn setup(test: &str, port: u16) -> (Net, Peer, ClientCirc) {
    let s = seed(test);
    let mut net = Net::new(s);
    let mut p = Peer::client(&mut net, 0, port);
    let c = ClientCirc::create(&mut net, &mut p, 0x8000_0101);
    (net, p, c)
}

/// The first answer to a START: PADDING_NEGOTIATED (START, `response`, machine).
fn expect_start_answer(p: &mut Peer, c: &mut ClientCirc, machine: u8, response: PadResponse) {
    let got = c.open_all(&p.cells());
    assert_eq!(got.len(), 1, "one answer: {got:?}");
    assert_eq!(got[0].1, RelayCmd::PADDING_NEGOTIATED);
    let n = answer(&got[0].3);
    assert_eq!(
        (n.command, n.response, n.machine_type),
        (PadCommand::Start, response, machine)
    );
}

#[test]
fn machine_0_pads_intro_setup_then_stops() {
    let (mut net, mut p, mut c) = setup("machine_0_pads_intro_setup_then_stops", 42001);
    let t0 = net.shards[0].now;
    negotiate(&mut p, &mut net, &mut c, PadCommand::Start, 0);
    expect_start_answer(&mut p, &mut c, 0, PadResponse::Ok);
    assert_eq!(net.nodes[0].circuit_metrics().circpad_negotiated, 1);
    assert_eq!(net.nodes[0].circuit_metrics().circpad_machines, 1);

    let seen = run_timers(&mut net, &mut p, &mut c, t0, Duration::from_secs(1));
    let drops: Vec<u64> = seen
        .iter()
        .filter(|s| s.1 == RelayCmd::DROP)
        .map(|s| s.0)
        .collect();
    assert!(
        (7..=10).contains(&drops.len()),
        "7-10 DROPs, got {}: {seen:?}",
        drops.len()
    );
    // Each DROP 1-10 ms after the previous cell towards the client (the first after the
    // answer, sent at t0).
    let mut last = 0;
    for &t in &drops {
        let gap = t - last;
        assert!((1_000..10_000).contains(&gap), "gap {gap} µs: {drops:?}");
        last = t;
    }
    // Then the machine's own STOP (OK, machine 0, its counter 1), and nothing more.
    let end = seen.last().expect("cells");
    assert_eq!(end.1, RelayCmd::PADDING_NEGOTIATED, "{seen:?}");
    let n = answer(&end.2);
    assert_eq!(
        (n.command, n.response, n.machine_type, n.machine_ctr),
        (PadCommand::Stop, PadResponse::Ok, 0, 1)
    );
    assert_eq!(
        end.0,
        *drops.last().unwrap(),
        "STOP right after the last DROP"
    );
    assert_eq!(seen.len(), drops.len() + 1, "{seen:?}");
    assert!(
        net.nodes[0].next_deadline().is_none(),
        "no deadline left once the machine ended"
    );
    let m = net.nodes[0].circuit_metrics();
    assert_eq!(m.circpad_padding_sent, drops.len() as u64);
    assert_eq!((m.circpad_ended, m.circpad_machines), (1, 0));

    // The client's DROP cells are counted as padding received.
    for _ in 0..2 {
        let drop = c.cell(0, RelayCmd::DROP, 0, &[]);
        p.send(&mut net, c.circ_id, ChanCmd::RELAY, &drop);
    }
    assert_eq!(net.nodes[0].circuit_metrics().circpad_padding_received, 2);
    assert!(c.open_all(&p.cells()).is_empty(), "DROP is not answered");

    // A second START on the same circuit: a new machine with counter 2.
    negotiate(&mut p, &mut net, &mut c, PadCommand::Start, 0);
    expect_start_answer(&mut p, &mut c, 0, PadResponse::Ok);
    let t1 = net.shards[0].now;
    let seen = run_timers(&mut net, &mut p, &mut c, t1, Duration::from_secs(1));
    let n = answer(&seen.last().expect("cells").2);
    assert_eq!((n.command, n.machine_ctr), (PadCommand::Stop, 2));
}

#[test]
fn machine_1_sends_one_drop_and_stays_until_stop() {
    let (mut net, mut p, mut c) = setup("machine_1_sends_one_drop_and_stays_until_stop", 42002);
    let t0 = net.shards[0].now;
    negotiate(&mut p, &mut net, &mut c, PadCommand::Start, 1);
    expect_start_answer(&mut p, &mut c, 1, PadResponse::Ok);
    let seen = run_timers(&mut net, &mut p, &mut c, t0, Duration::from_secs(1));
    assert_eq!(seen.len(), 1, "one DROP, no STOP: {seen:?}");
    assert_eq!(seen[0].1, RelayCmd::DROP);
    assert!(seen[0].0 < 1_000, "DROP at {} µs, wanted < 1 ms", seen[0].0);
    let m = net.nodes[0].circuit_metrics();
    assert_eq!((m.circpad_padding_sent, m.circpad_machines), (1, 1));

    // The client's STOP frees it and is answered STOP/OK.
    negotiate(&mut p, &mut net, &mut c, PadCommand::Stop, 1);
    let got = c.open_all(&p.cells());
    assert_eq!(got.len(), 1, "{got:?}");
    let n = answer(&got[0].3);
    assert_eq!(
        (n.command, n.response, n.machine_type),
        (PadCommand::Stop, PadResponse::Ok, 1)
    );
    let m = net.nodes[0].circuit_metrics();
    assert_eq!((m.circpad_stopped, m.circpad_machines), (1, 0));
}

#[test]
fn unknown_machine_is_refused() {
    let (mut net, mut p, mut c) = setup("unknown_machine_is_refused", 42003);
    negotiate(&mut p, &mut net, &mut c, PadCommand::Start, 7);
    expect_start_answer(&mut p, &mut c, 7, PadResponse::Err);
    assert!(net.nodes[0].next_deadline().is_none());
    let m = net.nodes[0].circuit_metrics();
    assert_eq!((m.circpad_unknown_machine, m.circpad_machines), (1, 0));
}

#[test]
fn close_mid_machine_frees_it() {
    let (mut net, mut p, mut c) = setup("close_mid_machine_frees_it", 42004);
    let t0 = net.shards[0].now;
    negotiate(&mut p, &mut net, &mut c, PadCommand::Start, 0);
    expect_start_answer(&mut p, &mut c, 0, PadResponse::Ok);
    assert!(
        net.nodes[0].next_deadline().is_some(),
        "a DROP is scheduled"
    );
    // Two DROPs at most within 3 ms (each comes 1-10 ms after the previous cell).
    let seen = run_timers(&mut net, &mut p, &mut c, t0, Duration::from_millis(3));
    assert!(seen.len() <= 2, "{seen:?}");
    let mut body = [0u8; CELL_BODY_LEN];
    fors::cell::chan::Destroy {
        reason: DestroyReason::Finished,
    }
    .encode(&mut body);
    p.send(&mut net, c.circ_id, ChanCmd::DESTROY, &body);
    assert_eq!(net.nodes[0].circuit_metrics().circpad_machines, 0);
    // Its timer entry is stale: served once, nothing sent, nothing left.
    let seen = run_timers(&mut net, &mut p, &mut c, t0, Duration::from_secs(1));
    assert!(seen.is_empty(), "{seen:?}");
    assert!(net.nodes[0].next_deadline().is_none());
    assert_eq!(net.nodes[0].circuit_metrics().circpad_timers, 0);
}

#[test]
fn consensus_can_disable_padding() {
    let (mut net, mut p, mut c) = setup("consensus_can_disable_padding", 42005);
    let mut snap: NetworkSnapshot = snapshot();
    snap.consensus_params = [("circpad_padding_disabled".to_string(), 1)]
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    net.network.publish(snap);
    net.tick(Duration::from_millis(100));
    let t0 = net.shards[0].now;
    // Negotiation still works (C checks at scheduling time)...
    negotiate(&mut p, &mut net, &mut c, PadCommand::Start, 0);
    expect_start_answer(&mut p, &mut c, 0, PadResponse::Ok);
    // ...but nothing is scheduled.
    assert!(net.nodes[0].next_deadline().is_none());
    let seen = run_timers(&mut net, &mut p, &mut c, t0, Duration::from_secs(1));
    net.tick(Duration::from_millis(100));
    p.pump(&mut net);
    assert!(seen.is_empty() && c.open_all(&p.cells()).is_empty());
    let m = net.nodes[0].circuit_metrics();
    assert_eq!((m.circpad_negotiated, m.circpad_padding_sent), (1, 0));
}
