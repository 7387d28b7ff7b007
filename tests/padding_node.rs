//! Channel padding in the relay node, on fake shards and a fake clock (padding-spec §2; C
//! `channelpadding.c`): an idle client channel that carries a multi-hop circuit gets a
//! PADDING cell every 1.5–9.5 s; none after the client's PADDING_NEGOTIATE STOP, again after
//! START; none on a channel with only a one-hop circuit, none on listed relays' channels
//! unless the consensus sets `nf_pad_relays=1`; C tor's `KeepalivePeriod` PADDING on a
//! channel with nothing written for 5 minutes, netflow-padded or not.

mod channel_support;
mod node_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use fors::cell::chan::{PaddingCommand, PaddingNegotiate};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::relay::snapshot::NetworkSnapshot;
use node_harness::*;

const TICK: Duration = Duration::from_millis(100);

/// PADDING cells a peer has received so far (its channel ignores them, and nothing else
/// the node sends here is ignored).
fn paddings(p: &Peer) -> u64 {
    p.chan.stats().cells_ignored
}

/// Runs `secs` seconds of 100 ms ticks, with every peer reading what the node sent; returns
/// for each peer the times (ms since the start) at which new PADDING cells arrived.
fn run(net: &mut Net, peers: &mut [&mut Peer], secs: u64) -> Vec<Vec<u64>> {
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); peers.len()];
    let mut before: Vec<u64> = peers.iter().map(|p| paddings(p)).collect();
    for i in 1..=secs * 10 {
        net.tick(TICK);
        for (k, p) in peers.iter_mut().enumerate() {
            p.pump(net);
            let now = paddings(p);
            for _ in before[k]..now {
                seen[k].push(i * 100);
            }
            before[k] = now;
        }
    }
    seen
}

fn negotiate(net: &mut Net, p: &mut Peer, command: PaddingCommand, low: u16, high: u16) {
    let mut body = [0u8; CELL_BODY_LEN];
    PaddingNegotiate {
        command,
        ito_low_ms: low,
        ito_high_ms: high,
    }
    .encode(&mut body);
    p.send(net, CircId(0), ChanCmd::PADDING_NEGOTIATE, &body);
}

/// The harness's "client" proves a relay identity; drop it from the consensus so the node
/// treats it as a client (C `CHANNEL_IS_CLIENT`: a relay the consensus does not list).
fn unlist_client(net: &mut Net, params: &[(&str, i32)]) {
    let mut snap: NetworkSnapshot = snapshot();
    let mut known = (*snap.known_relays).clone();
    known.remove(&client_ident().id.rsa_id());
    snap.known_relays = std::sync::Arc::new(known);
    snap.consensus_params = params
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect::<BTreeMap<_, _>>();
    net.network.publish(snap);
}

/// Each gap between PADDING cells (and from `start_ms`) fits C's range: the 1.5–9.5 s
/// timeout, drawn at the once-a-second decision after the last cell, sent at most a tick
/// late.
fn assert_gaps(times: &[u64], start_ms: u64, what: &str) {
    let mut last = start_ms;
    for &t in times {
        let gap = t - last;
        assert!(
            (1_400..=9_700).contains(&gap),
            "{what}: PADDING {gap} ms after the previous activity: {times:?}"
        );
        last = t;
    }
}

#[test]
fn idle_used_client_channel_is_padded_until_stop() {
    let mut net = Net::new(seed("idle_used_client_channel_is_padded_until_stop"));
    unlist_client(&mut net, &[]);
    // A circuit extended past the node (to a relay of either shard): the client channel
    // carries a multi-hop circuit.
    let mut x = cross_circuit(&mut net, 41000);
    // A client channel with only a one-hop circuit (a directory fetch, say): not padded.
    let mut one_hop = Peer::client(&mut net, x.origin, 41001);
    let _c = ClientCirc::create(&mut net, &mut one_hop, 0x8000_0021);
    // A client channel with no circuit at all: not padded.
    let mut bare = Peer::client(&mut net, x.origin, 41002);
    let target = &mut x.t;

    let seen = run(
        &mut net,
        &mut [&mut x.p, &mut one_hop, &mut bare, target],
        40,
    );
    assert!(
        seen[0].len() >= 4,
        "40 s idle, expected a PADDING every 1.5-9.5 s: {:?}",
        seen[0]
    );
    assert_gaps(&seen[0][1..], seen[0][0], "used client channel");
    assert!(seen[0][0] <= 11_000, "first PADDING late: {:?}", seen[0]);
    assert!(seen[1].is_empty(), "one-hop channel padded: {:?}", seen[1]);
    assert!(seen[2].is_empty(), "unused channel padded: {:?}", seen[2]);
    // The node's channel to the next hop is a listed relay's: not padded by default.
    assert!(seen[3].is_empty(), "relay channel padded: {:?}", seen[3]);

    // STOP: no more padding on that channel.
    negotiate(&mut net, &mut x.p, PaddingCommand::Stop, 0, 0);
    let seen = run(&mut net, &mut [&mut x.p], 30);
    assert!(seen[0].is_empty(), "padded after STOP: {:?}", seen[0]);

    // START with timeouts longer than the consensus's: used as given (20-25 s).
    negotiate(&mut net, &mut x.p, PaddingCommand::Start, 20_000, 25_000);
    let seen = run(&mut net, &mut [&mut x.p], 60);
    assert!(!seen[0].is_empty(), "no padding after START");
    assert!(
        seen[0][0] >= 19_900 && seen[0][0] <= 26_200,
        "first PADDING after START at {} ms, wanted the negotiated 20-25 s",
        seen[0][0]
    );
    for w in seen[0].windows(2) {
        let gap = w[1] - w[0];
        assert!((19_900..=26_200).contains(&gap), "gap {gap}: {:?}", seen[0]);
    }
}

#[test]
fn activity_postpones_padding() {
    let mut net = Net::new(seed("activity_postpones_padding"));
    unlist_client(&mut net, &[]);
    let mut x = cross_circuit(&mut net, 41010);
    // The client sends a (PADDING) cell every second: the channel is never idle for 1.5 s,
    // so the node never pads it.
    let mut got = 0;
    for _ in 0..20 {
        x.p.send(&mut net, CircId(0), ChanCmd::PADDING, &[0; CELL_BODY_LEN]);
        for _ in 0..10 {
            net.tick(TICK);
            x.p.pump(&mut net);
        }
        got = paddings(&x.p);
    }
    assert_eq!(got, 0, "a channel active every second was padded");
}

#[test]
fn relay_channels_are_padded_only_with_nf_pad_relays() {
    let mut net = Net::new(seed("relay_channels_are_padded_only_with_nf_pad_relays"));
    // The "client" is a listed relay here (the harness's consensus lists it).
    let mut x = cross_circuit(&mut net, 41020);
    let target = &mut x.t;
    let seen = run(&mut net, &mut [&mut x.p, target], 20);
    assert!(seen[0].is_empty(), "listed relay padded: {:?}", seen[0]);
    assert!(seen[1].is_empty(), "next hop padded: {:?}", seen[1]);

    let mut snap = snapshot();
    snap.consensus_params.insert("nf_pad_relays".into(), 1);
    net.network.publish(snap);
    let target = &mut x.t;
    let seen = run(&mut net, &mut [&mut x.p, target], 30);
    assert!(
        seen[0].len() >= 3,
        "nf_pad_relays=1: the previous-hop relay channel is padded: {:?}",
        seen[0]
    );
    // C pads only channels it is the previous hop of a circuit on (channel usage is set
    // for the previous hop): the channel the node opened to extend is not.
    assert!(seen[1].is_empty(), "next hop padded: {:?}", seen[1]);
}

#[test]
fn consensus_can_turn_padding_off_and_change_its_range() {
    let mut net = Net::new(seed("consensus_can_turn_padding_off"));
    unlist_client(&mut net, &[("nf_ito_low", 0), ("nf_ito_high", 0)]);
    let mut x = cross_circuit(&mut net, 41030);
    let seen = run(&mut net, &mut [&mut x.p], 20);
    assert!(seen[0].is_empty(), "padded with nf_ito_*=0: {:?}", seen[0]);

    unlist_client(&mut net, &[("nf_ito_low", 3000), ("nf_ito_high", 4000)]);
    let seen = run(&mut net, &mut [&mut x.p], 30);
    assert!(seen[0].len() >= 5, "{:?}", seen[0]);
    for w in seen[0].windows(2) {
        let gap = w[1] - w[0];
        assert!((2_900..=4_200).contains(&gap), "gap {gap}: {:?}", seen[0]);
    }
}

#[test]
fn an_authenticated_peers_relay_early_makes_its_link_used() {
    let mut net = Net::new(seed(
        "an_authenticated_peers_relay_early_makes_its_link_used",
    ));
    // The peer proved a relay identity the consensus does not list: padded like a client
    // once used. On a channel from a peer that proved an identity, C counts RELAY_EARLY
    // (full circuits) and RELAY (user traffic) on any circuit, one-hop or not.
    unlist_client(&mut net, &[("nf_pad_before_usage", 0)]);
    let mut p = Peer::client(&mut net, 0, 41040);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0041);
    let seen = run(&mut net, &mut [&mut p], 12);
    assert!(
        seen[0].is_empty(),
        "a circuit alone made it used: {:?}",
        seen[0]
    );

    // RELAY_EARLY (a DROP): full circuits, padded only with nf_pad_before_usage=1.
    let drop = c.cell(0, fors::cell::relay::RelayCmd::DROP, 0, b"");
    p.send(&mut net, c.circ_id, ChanCmd::RELAY_EARLY, &drop);
    let seen = run(&mut net, &mut [&mut p], 12);
    assert!(
        seen[0].is_empty(),
        "padded before user traffic with nf_pad_before_usage=0: {:?}",
        seen[0]
    );
    unlist_client(&mut net, &[]);
    let seen = run(&mut net, &mut [&mut p], 25);
    assert!(
        seen[0].len() >= 2,
        "RELAY_EARLY on the link, nf_pad_before_usage=1: not padded: {:?}",
        seen[0]
    );
}

/// Reviewer's case: usage was read from the circuits alive at the once-a-second scan, so a
/// circuit that got RELAY_EARLY and closed between two scans never marked its link (C tor's
/// `circuit_update_channel_usage` raises the channel's usage on the cell itself).
#[test]
fn a_circuit_that_comes_and_goes_between_scans_still_makes_its_link_used() {
    let mut net = Net::new(seed(
        "a_circuit_that_comes_and_goes_between_scans_still_makes_its_link_used",
    ));
    unlist_client(&mut net, &[]);
    let mut p = Peer::client(&mut net, 0, 41050);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0051);
    let drop = c.cell(0, fors::cell::relay::RelayCmd::DROP, 0, b"");
    p.send(&mut net, c.circ_id, ChanCmd::RELAY_EARLY, &drop);
    p.send(&mut net, c.circ_id, ChanCmd::DESTROY, &[0u8; CELL_BODY_LEN]);
    let seen = run(&mut net, &mut [&mut p], 25);
    assert!(
        seen[0].len() >= 2,
        "RELAY_EARLY on a circuit gone before the scan: link not padded: {:?}",
        seen[0]
    );
}

/// C `run_connection_housekeeping`: a listed relay's channel, which netflow padding leaves
/// alone by default, still gets one PADDING cell each time nothing was written on it for
/// `KeepalivePeriod` (default 5 minutes); the padded client channel never needs one.
#[test]
fn quiet_relay_channel_gets_a_keepalive_every_period() {
    let mut net = Net::new(seed("quiet_relay_channel_gets_a_keepalive_every_period"));
    unlist_client(&mut net, &[]);
    let mut x = cross_circuit(&mut net, 41060);
    let target = &mut x.t;
    let seen = run(&mut net, &mut [target, &mut x.p], 610);
    assert!(seen[1].len() > 60, "client channel: {:?}", seen[1]);
    // The last write toward the relay was the circuit's set-up, just before the run: the
    // keepalives come 300 s after it and 300 s after each other, at the once-a-second check.
    assert_eq!(
        seen[0].len(),
        2,
        "keepalives on the quiet relay channel: {:?}",
        seen[0]
    );
    assert!(
        (299_000..=301_200).contains(&seen[0][0]),
        "first keepalive at {} ms",
        seen[0][0]
    );
    let gap = seen[0][1] - seen[0][0];
    assert!(
        (299_000..=301_200).contains(&gap),
        "gap {gap} ms: {:?}",
        seen[0]
    );
}
