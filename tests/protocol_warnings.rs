//! `ProtocolWarnings` (issue #15; C tor `protocol_warning_severity_level`): a peer's
//! protocol violation gives exactly one log line per shard and second, at info with
//! `ProtocolWarnings 0` and at warn with 1, naming the rule broken and no address or
//! circuit ID. Driven through the relay node on its in-memory fake shard (no sockets): a
//! client circuit sends a RELAY cell the node cannot recognize at the last hop (C tor
//! `circuit_receive_relay_cell`: "circ stops here", `LOG_PROTOCOL_WARN`, TORPROTOCOL).
//!
//! Then each cell C tor drops with a protocol warning while keeping the circuit or channel
//! (`relay.c` `handle_relay_msg`, `channeltls.c`) gives its own line naming the rule, and
//! the circuit stays up.
//!
//! One test only: the option and the log's event tap are process-wide. Seeded; the seed is
//! printed (`FORS_TEST_SEED` replays it).

mod channel_support;
mod node_harness;

use std::time::Duration;

use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::config::LogSeverity;
use fors::relay::log::{drain_events, set_event_tap, set_protocol_warnings, LogEvent};
use node_harness::*;
use rand::{Rng, SeedableRng};

const MARK: &str = "peers' protocol violations";

/// One circuit to shard 0 gets a RELAY cell no hop recognizes: DESTROY back.
fn violate(net: &mut Net, p: &mut Peer, circ_id: u32, rng: &mut impl Rng) {
    let c = ClientCirc::create(net, p, circ_id);
    let mut junk = [0u8; CELL_BODY_LEN];
    rng.fill(&mut junk[..]);
    p.send(net, c.circ_id, ChanCmd::RELAY, &junk);
    let cells = p.cells();
    assert!(
        cells
            .iter()
            .any(|(id, cmd, _)| *id == c.circ_id && *cmd == ChanCmd::DESTROY),
        "no DESTROY for the junk cell: {cells:?}"
    );
}

/// The protocol-warning lines logged since the last call.
fn lines() -> Vec<LogEvent> {
    let mut out = Vec::new();
    drain_events(&mut out);
    out.retain(|e| e.message.contains(MARK));
    out
}

#[test]
fn a_violation_gives_one_line_at_the_protocol_warning_level() {
    let seed = seed("a_violation_gives_one_line_at_the_protocol_warning_level");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    set_event_tap(Some(LogSeverity::Debug), 4096);
    let mut net = Net::new(rng.gen());
    let mut p = Peer::client(&mut net, 0, 40001);
    net.tick(Duration::from_secs(1));
    assert!(lines().is_empty(), "a line before any violation");

    // ProtocolWarnings 0 (C tor's default): info.
    set_protocol_warnings(false);
    violate(&mut net, &mut p, 0x8000_0001, &mut rng);
    net.tick(Duration::from_secs(1));
    let got = lines();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].severity, LogSeverity::Info, "{got:?}");
    let line = &got[0].message;
    assert!(
        line.ends_with(
            "1 circuit(s) closed with DESTROY TORPROTOCOL; the last for: unrecognized relay \
             cell at the last hop"
        ),
        "{line}"
    );
    // No address, no circuit ID (in any spelling).
    for bad in ["127.0.0.1", "40001", "2147483649", "80000001"] {
        assert!(!line.contains(bad), "{bad} in {line}");
    }
    net.tick(Duration::from_secs(1));
    assert!(
        lines().is_empty(),
        "a line repeated without a new violation"
    );

    // ProtocolWarnings 1 (SIGHUP applies it the same way): warn; and two violations within
    // the same second still give one line.
    set_protocol_warnings(true);
    violate(&mut net, &mut p, 0x8000_0002, &mut rng);
    violate(&mut net, &mut p, 0x8000_0003, &mut rng);
    net.tick(Duration::from_secs(1));
    let got = lines();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].severity, LogSeverity::Warn, "{got:?}");
    assert!(
        got[0]
            .message
            .contains("2 circuit(s) closed with DESTROY TORPROTOCOL"),
        "{got:?}"
    );
    set_protocol_warnings(false);
    drops_keep_the_circuit_and_give_a_line(&mut net, &mut p, &mut rng);
    set_event_tap(None, 0);
}

/// Sends `body` on `c` as `cmd` (RELAY or RELAY_EARLY); checks nothing closed it and the
/// next second's single line names `rule`.
fn drop_gives_line(
    net: &mut Net,
    p: &mut Peer,
    circ: CircId,
    cmd: ChanCmd,
    body: &[u8; CELL_BODY_LEN],
    rule: &str,
) {
    p.send(net, circ, cmd, body);
    let cells = p.cells();
    assert!(
        !cells.iter().any(|(_, cmd, _)| *cmd == ChanCmd::DESTROY),
        "{rule}: a dropped cell closed the circuit: {cells:?}"
    );
    assert!(net.is_open(p.shard, p.conn), "{rule}: the channel closed");
    net.tick(Duration::from_secs(1));
    let got = lines();
    assert_eq!(got.len(), 1, "{rule}: {got:?}");
    assert_eq!(got[0].severity, LogSeverity::Info, "{got:?}");
    assert!(got[0].message.ends_with(rule), "{rule}: {}", got[0].message);
}

fn drops_keep_the_circuit_and_give_a_line(net: &mut Net, p: &mut Peer, rng: &mut impl Rng) {
    let mut c = ClientCirc::create(net, p, 0x8000_0010);
    let id = c.circ_id;
    let junk: [u8; 32] = rng.gen();
    let relay_sites: [(ChanCmd, RelayCmd, u16, &str); 5] = [
        (
            ChanCmd::RELAY_EARLY,
            RelayCmd::EXTEND2,
            7,
            "1 relay cell(s) dropped: EXTEND2 with a nonzero stream ID",
        ),
        (
            ChanCmd::RELAY,
            RelayCmd::EXTEND2,
            0,
            "1 relay cell(s) dropped: EXTEND2 not in a RELAY_EARLY cell",
        ),
        (
            ChanCmd::RELAY,
            RelayCmd::DATA,
            0,
            "1 relay cell(s) dropped: stream command with stream ID 0",
        ),
        (
            ChanCmd::RELAY,
            RelayCmd::EXTENDED2,
            0,
            "1 relay cell(s) dropped: EXTENDED or TRUNCATED at a non-origin",
        ),
        (
            ChanCmd::RELAY,
            RelayCmd(200),
            0,
            "1 relay cell(s) dropped: unknown relay command",
        ),
    ];
    for (chan_cmd, cmd, sid, rule) in relay_sites {
        let body = c.cell(0, cmd, sid, &junk);
        drop_gives_line(net, p, id, chan_cmd, &body, rule);
    }
    // BEGIN and RESOLVE for a stream that is open.
    let _stream = open_stream(net, p, &mut c, 9);
    let body = c.cell(0, RelayCmd::BEGIN, 9, &begin_data("127.0.0.1:8080"));
    drop_gives_line(
        net,
        p,
        id,
        ChanCmd::RELAY,
        &body,
        "1 relay cell(s) dropped: BEGIN for a known stream",
    );
    let body = c.cell(0, RelayCmd::RESOLVE, 9, b"example.com\0");
    drop_gives_line(
        net,
        p,
        id,
        ChanCmd::RELAY,
        &body,
        "1 relay cell(s) dropped: RESOLVE for a known stream",
    );
    // CONNECTED for a stream still connecting: dropped (C: "unexpected relay command").
    net.shards[p.shard].ops.clear();
    let body = c.cell(0, RelayCmd::BEGIN, 11, &begin_data("127.0.0.1:8080"));
    p.send(net, id, ChanCmd::RELAY, &body);
    assert_eq!(
        connects(&net.shards[p.shard]).len(),
        1,
        "stream 11 connecting"
    );
    let body = c.cell(0, RelayCmd::CONNECTED, 11, &[]);
    drop_gives_line(
        net,
        p,
        id,
        ChanCmd::RELAY,
        &body,
        "1 relay cell(s) dropped: CONNECTED or RESOLVED for a pending stream",
    );
    // CONNECTED for an open stream: C closes the circuit (TORPROTOCOL).
    let body = c.cell(0, RelayCmd::CONNECTED, 9, &[]);
    p.send(net, id, ChanCmd::RELAY, &body);
    let cells = p.cells();
    assert!(
        cells
            .iter()
            .any(|(cid, cmd, _)| *cid == id && *cmd == ChanCmd::DESTROY),
        "no DESTROY for CONNECTED on an open stream: {cells:?}"
    );
    net.tick(Duration::from_secs(1));
    let got = lines();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].message.ends_with(
            "1 circuit(s) closed with DESTROY TORPROTOCOL; the last for: CONNECTED or \
             RESOLVED for an open exit stream"
        ),
        "{}",
        got[0].message
    );
    // Link cells on the open (v5) channel.
    drop_gives_line(
        net,
        p,
        CircId(0),
        ChanCmd::NETINFO,
        &[0; CELL_BODY_LEN],
        "1 link cell(s) dropped: NETINFO on an open channel",
    );
    let mut bad = [0u8; CELL_BODY_LEN];
    bad[0] = 1; // PADDING_NEGOTIATE version 1 does not exist
    drop_gives_line(
        net,
        p,
        CircId(0),
        ChanCmd::PADDING_NEGOTIATE,
        &bad,
        "1 link cell(s) dropped: malformed PADDING_NEGOTIATE",
    );
}
