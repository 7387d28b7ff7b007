//! The production tor1 crypto (`Tor1RelayCrypto`, `Tor1ClientCircuit`) against the plain
//! reference implementation in the harness, in both pairings, through a whole exit stream
//! with authenticated SENDMEs.

mod circuit_common;

use circuit_common::*;
use fors::cell::relay::msg::{RelayMsg, Sendme};
use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::crypto::relay::Tor1RelayCrypto;
use fors::proto::circuit::{Action, HopCrypto, RelayIdentity};

fn exchange<C: HopCrypto>(mut exit: Relay<C>, mut cl: Client) {
    // No CC request: this checks tor1 digests with the fixed-window SENDME spacing (every
    // 100 cells); CC circuits (every 31) are covered by tests/circuit_cc.rs.
    cl.create(&mut exit, Hs::NtorV3 { cc: false });
    let stream = cl.open_stream(&mut exit, 1);
    // 250 cells client → exit: circuit SENDMEs must carry the client's tags.
    let mut tags = vec![];
    let mut sendmes = vec![];
    for _ in 0..250 {
        let (body, tag) = cl.relay_cell(0, &RelayMsg::Data(&[7; 100]), 1);
        tags.push(tag);
        let acts = exit.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
        for r in cl.open_all(&acts) {
            if r.1 == RelayCmd::SENDME && r.2 == 0 {
                sendmes.push(r.3);
            }
        }
    }
    assert_eq!(sendmes.len(), 2);
    for (k, s) in sendmes.iter().enumerate() {
        match Sendme::parse(s).unwrap() {
            Sendme::V1 { tag } => assert_eq!(tag, &tags[100 * (k + 1) - 1][..]),
            other => panic!("{other:?}"),
        }
    }
    // 300 cells exit → client, with genuine circuit SENDMEs back.
    let mut got = 0;
    while got < 300 {
        let (n, acts) = exit.io(|c, io| c.stream_data(stream, &[3; 498], io));
        assert!(n.unwrap() > 0);
        // One cell at a time, so that `last_tag` below is the tag of the cell just counted:
        // the exit sometimes packages 498 bytes as two cells (C's DATA-length randomness),
        // and a batch that crossed the 100th cell would otherwise answer with a later tag.
        for one in acts.iter().map(std::slice::from_ref) {
            if cl.open_all(one).is_empty() {
                continue;
            }
            got += 1;
            if got % 100 == 0 {
                let tag = cl.last_tag(0);
                let acts = cl.send(
                    &mut exit,
                    0,
                    ChanCmd::RELAY,
                    &RelayMsg::Sendme(Sendme::V1 { tag: &tag }),
                    0,
                );
                assert!(!acts.iter().any(|a| matches!(a, Action::SendCell { .. })));
            }
            if got % 50 == 0 {
                cl.send(
                    &mut exit,
                    0,
                    ChanCmd::RELAY,
                    &RelayMsg::Sendme(Sendme::V0),
                    1,
                );
            }
        }
    }
    assert_eq!(exit.core.circuit_count(), 1);
    assert_eq!(exit.core.metrics().sendme_auth_failures, 0);
}

fn mid() -> (TestNet, RelayIdentity) {
    let id = RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    };
    (
        TestNet {
            known: vec![id.rsa],
            reentry: vec![],
        },
        id,
    )
}

const POLICY: &str = "accept 127.0.0.1:*, reject *:*";

#[test]
fn reference_relay_with_production_client() {
    let (net, m) = mid();
    let exit: Relay<RefRelayCrypto> = Relay::with_crypto(9, test_config(), POLICY, net);
    exchange(exit, Client::new(relay_chan(1, &m, false), 0x8000_0001));
}

#[test]
fn production_relay_with_reference_client() {
    let (net, m) = mid();
    let exit: Relay<Tor1RelayCrypto> = Relay::with_crypto(9, test_config(), POLICY, net);
    exchange(
        exit,
        Client::with_reference_crypto(relay_chan(1, &m, false), 0x8000_0001),
    );
}

#[test]
fn production_on_both_sides() {
    let (net, m) = mid();
    exchange(
        Relay::new(9, test_config(), POLICY, net),
        Client::new(relay_chan(1, &m, false), 0x8000_0001),
    );
}
