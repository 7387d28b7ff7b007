//! `ProtocolWarnings` (issue #15; C tor `protocol_warning_severity_level`): a peer's
//! protocol violation gives exactly one log line per shard and second, at info with
//! `ProtocolWarnings 0` and at warn with 1, naming the rule broken and no address or
//! circuit ID. Driven through the relay node on its in-memory fake shard (no sockets): a
//! client circuit sends a RELAY cell the node cannot recognize at the last hop (C tor
//! `circuit_receive_relay_cell`: "circ stops here", `LOG_PROTOCOL_WARN`, TORPROTOCOL).
//!
//! One test only: the option and the log's event tap are process-wide. Seeded; the seed is
//! printed (`FORS_TEST_SEED` replays it).

mod channel_support;
mod node_harness;

use std::time::Duration;

use fors::cell::{ChanCmd, CELL_BODY_LEN};
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
    set_event_tap(None, 0);
}
