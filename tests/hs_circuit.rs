//! The introduction point and rendezvous point in the circuit core, one shard, no sockets
//! (rend-spec-v3; C tor `hs_intropoint.c`, `rendmid.c`, `relay.c`): a service circuit
//! establishes an intro point with a real ed25519 key and the circuit-key MAC, a client
//! introduces on another circuit and the service gets the INTRODUCE2 (same bytes) while the
//! client gets INTRODUCE_ACK; then a rendezvous (ESTABLISH_RENDEZVOUS, RENDEZVOUS1,
//! RENDEZVOUS2) and data spliced both ways through an end-to-end layer the relay cannot
//! read, past a circuit window (the relay does no flow control on spliced cells); closing
//! one side closes the other with C tor's reason.
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod circuit_common;

use circuit_common::hs::*;
use circuit_common::*;
use ed25519_dalek::SigningKey;
use fors::cell::chan::DestroyReason;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::circuit::ProtocolViolation;
use fors::proto::hs::cells::{
    parse_intro_established, AckStatus, Introduce1, IntroduceAck, Rendezvous1,
};
use rand::Rng;

/// Circuit IDs a peer that opened the channel picks have the high bit set.
fn cid(n: u32) -> CircId {
    CircId(0x8000_0000 | n)
}

#[test]
fn intro_point_establish_and_introduce() {
    let mut rng = seeded("intro_point_establish_and_introduce");
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let (m1, m2) = (peer(0x21), peer(0x22));
    let sk = SigningKey::from_bytes(&rng.gen());

    // A MAC keyed with another circuit's KH: refused with DESTROY TORPROTOCOL.
    let (mut bad, _) = build(&mut r, relay_chan(9, &m1, false), 9, false);
    let (_, other_kh) = build(&mut r, relay_chan(8, &m1, false), 8, false);
    let acts = send(
        &mut r,
        &mut bad,
        0,
        ChanCmd::RELAY,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &other_kh),
    );
    assert_eq!(
        destroys(&acts),
        vec![(9, cid(9), DestroyReason::TorProtocol)]
    );
    assert_eq!(
        r.core.take_protocol_violations(),
        Some((ProtocolViolation::OnionServiceRole, 1))
    );
    assert_eq!(r.core.hs_counters().0.est_intro_verify_failed, 1);

    // The service's circuit (ntor-v3), the right MAC: INTRO_ESTABLISHED.
    let (mut svc, kh) = build(&mut r, relay_chan(1, &m1, false), 1, true);
    let acts = send(
        &mut r,
        &mut svc,
        0,
        ChanCmd::RELAY_EARLY,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh),
    );
    let g = got(&mut svc, &acts);
    assert_eq!(g.len(), 1, "{acts:?}");
    assert_eq!((g[0].0, g[0].1), (0, RelayCmd::INTRO_ESTABLISHED));
    assert!(parse_intro_established(&g[0].2).unwrap().is_empty());
    assert_eq!(r.core.hs_table_sizes().0, 1);

    // A client (ntor, through another middle): INTRODUCE2 to the service with the same
    // bytes, INTRODUCE_ACK SUCCESS to the client.
    let (mut cl, _) = build(&mut r, relay_chan(2, &m2, false), 2, false);
    let encrypted: Vec<u8> = (0..300).map(|_| rng.gen()).collect();
    let mut intro1 = [0u8; 498];
    let n =
        Introduce1::encode(sk.verifying_key().as_bytes(), &[], &encrypted, &mut intro1).unwrap();
    let acts = send(
        &mut r,
        &mut cl,
        0,
        ChanCmd::RELAY,
        RelayCmd::INTRODUCE1,
        &intro1[..n],
    );
    let to_svc = got(&mut svc, &acts);
    assert_eq!(to_svc.len(), 1, "{acts:?}");
    assert_eq!(to_svc[0].1, RelayCmd::INTRODUCE2);
    assert_eq!(to_svc[0].2, intro1[..n].to_vec());
    let to_cl = got(&mut cl, &acts);
    assert_eq!(to_cl.len(), 1, "{acts:?}");
    assert_eq!(to_cl[0].1, RelayCmd::INTRODUCE_ACK);
    assert_eq!(
        IntroduceAck::parse(&to_cl[0].2).unwrap().status,
        AckStatus::SUCCESS
    );
    assert_eq!(r.core.hs_counters().0.intro1_success, 1);
    assert_eq!(r.core.metrics().hs_intro1_success, 1);

    // A second INTRODUCE1 on that circuit: closed, no ACK.
    let acts = send(
        &mut r,
        &mut cl,
        0,
        ChanCmd::RELAY,
        RelayCmd::INTRODUCE1,
        &intro1[..n],
    );
    assert_eq!(
        destroys(&acts),
        vec![(2, cid(2), DestroyReason::TorProtocol)]
    );

    // An unknown key: ACK UNKNOWN_ID, the circuit stays.
    let (mut cl2, _) = build(&mut r, relay_chan(3, &m2, false), 3, false);
    let other = SigningKey::from_bytes(&rng.gen());
    let n = Introduce1::encode(
        other.verifying_key().as_bytes(),
        &[],
        &encrypted,
        &mut intro1,
    )
    .unwrap();
    let acts = send(
        &mut r,
        &mut cl2,
        0,
        ChanCmd::RELAY,
        RelayCmd::INTRODUCE1,
        &intro1[..n],
    );
    let to_cl = got(&mut cl2, &acts);
    assert_eq!(to_cl.len(), 1, "{acts:?}");
    assert_eq!(
        IntroduceAck::parse(&to_cl[0].2).unwrap().status,
        AckStatus::UNKNOWN_ID
    );
    assert!(got(&mut svc, &acts).is_empty());
    assert!(destroys(&acts).is_empty());

    // The service re-establishes on a new circuit: the old one is closed with FINISHED.
    let (mut svc2, kh2) = build(&mut r, relay_chan(4, &m1, false), 4, false);
    let acts = send(
        &mut r,
        &mut svc2,
        0,
        ChanCmd::RELAY,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh2),
    );
    assert_eq!(destroys(&acts), vec![(1, cid(1), DestroyReason::Finished)]);
    assert_eq!(got(&mut svc2, &acts)[0].1, RelayCmd::INTRO_ESTABLISHED);
    assert_eq!(r.core.hs_table_sizes().0, 1);

    // Its DESTROY forgets the key: an INTRODUCE1 for it is now UNKNOWN_ID.
    let acts = r.cell(
        &svc2.chan,
        svc2.circ_id,
        ChanCmd::DESTROY,
        [0u8; CELL_BODY_LEN],
    );
    assert!(destroys(&acts).is_empty());
    assert_eq!(r.core.hs_table_sizes().0, 0);
    assert_eq!(r.core.metrics().hs_intro_circuits, 0);
}

#[test]
fn rendezvous_splice_both_ways_and_close() {
    let mut rng = seeded("rendezvous_splice_both_ways_and_close");
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let (m1, m2) = (peer(0x21), peer(0x22));
    let (mut cl, _) = build(&mut r, relay_chan(1, &m1, false), 1, false);
    let (mut svc, _) = build(&mut r, relay_chan(2, &m2, false), 2, true);

    let cookie: [u8; 20] = rng.gen();
    let acts = send(
        &mut r,
        &mut cl,
        0,
        ChanCmd::RELAY,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        &cookie,
    );
    let g = got(&mut cl, &acts);
    assert_eq!(g, vec![(0, RelayCmd::RENDEZVOUS_ESTABLISHED, vec![])]);

    // A second circuit with the same waiting cookie is refused.
    let (mut dup, _) = build(&mut r, relay_chan(3, &m1, false), 3, false);
    let acts = send(
        &mut r,
        &mut dup,
        0,
        ChanCmd::RELAY,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        &cookie,
    );
    assert_eq!(
        destroys(&acts),
        vec![(3, cid(3), DestroyReason::TorProtocol)]
    );

    // RENDEZVOUS1 from the service: RENDEZVOUS2 (everything after the cookie) to the client.
    let info: Vec<u8> = (0..64).map(|_| rng.gen()).collect();
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &info, &mut rend1).unwrap();
    let acts = send(
        &mut r,
        &mut svc,
        0,
        ChanCmd::RELAY,
        RelayCmd::RENDEZVOUS1,
        &rend1[..n],
    );
    assert!(got(&mut svc, &acts).is_empty());
    let g = got(&mut cl, &acts);
    assert_eq!(g, vec![(0, RelayCmd::RENDEZVOUS2, info.clone())]);
    assert_eq!(r.core.hs_counters().1.rend1_success, 1);
    assert_eq!(r.core.metrics().hs_rend1_success, 1);

    // The end-to-end hop: the relay holds neither key.
    let e2e = random_keys(&mut rng);
    cl.circ.layers.push(&e2e);
    svc.circ.layers.push(&reversed(&e2e));

    // Client → service: more cells than a circuit window (1000), one as RELAY_EARLY.
    let mut sent = Vec::new();
    let mut recv = Vec::new();
    for i in 0..1100 {
        let len = rng.gen_range(1..=498);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let cmd = if i == 5 {
            ChanCmd::RELAY_EARLY
        } else {
            ChanCmd::RELAY
        };
        let acts = send(&mut r, &mut cl, 1, cmd, RelayCmd::DATA, &data);
        let c = cells(&acts);
        assert_eq!(c.len(), 1, "cell {i}: {acts:?}");
        assert_eq!(
            (c[0].0 .0, c[0].1, c[0].2),
            (2, svc.circ_id, ChanCmd::RELAY)
        );
        let (hop, cmd, _, d) = svc.open(c[0].3);
        assert_eq!((hop, cmd), (1, RelayCmd::DATA));
        sent.extend_from_slice(&data);
        recv.extend_from_slice(&d);
    }
    assert_eq!(sent, recv);

    // Service → client.
    let (mut sent, mut recv) = (Vec::new(), Vec::new());
    for i in 0..1100 {
        let len = rng.gen_range(1..=498);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let acts = send(&mut r, &mut svc, 1, ChanCmd::RELAY, RelayCmd::DATA, &data);
        let c = cells(&acts);
        assert_eq!(c.len(), 1, "cell {i}: {acts:?}");
        assert_eq!((c[0].0 .0, c[0].1, c[0].2), (1, cl.circ_id, ChanCmd::RELAY));
        let (hop, cmd, _, d) = cl.open(c[0].3);
        assert_eq!((hop, cmd), (1, RelayCmd::DATA));
        sent.extend_from_slice(&data);
        recv.extend_from_slice(&d);
    }
    assert_eq!(sent, recv);
    assert_eq!(r.core.circuit_count(), 2);

    // The service's side goes: the client's side gets DESTROY DESTROYED (C tor closes the
    // splice with the reason its own circuit closed with: DESTROYED for a DESTROY).
    let acts = r.cell(
        &svc.chan,
        svc.circ_id,
        ChanCmd::DESTROY,
        [0u8; CELL_BODY_LEN],
    );
    assert_eq!(
        destroys(&acts),
        vec![(1, cl.circ_id, DestroyReason::Destroyed)]
    );
    assert_eq!(r.core.circuit_count(), 0);
    assert_eq!(r.core.hs_table_sizes(), (0, 0));
    assert_eq!(r.core.hs_counters().1.splices_closed, 2);
    assert_eq!(
        (
            r.core.metrics().hs_splices_closed,
            r.core.metrics().hs_rend_cookies
        ),
        (2, 0)
    );
}

/// A joined pair closed from the client's side by a protocol error on it (an unrecognized
/// cell on a circuit that is not spliced is one; here a malformed RENDEZVOUS1 on the
/// client's spliced circuit): the service's side gets the same reason.
#[test]
fn splice_partner_closed_with_the_same_reason() {
    let mut rng = seeded("splice_partner_closed_with_the_same_reason");
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let (m1, m2) = (peer(0x21), peer(0x22));
    let (mut cl, _) = build(&mut r, relay_chan(1, &m1, false), 1, false);
    let (mut svc, _) = build(&mut r, relay_chan(2, &m2, false), 2, false);
    let cookie: [u8; 20] = rng.gen();
    send(
        &mut r,
        &mut cl,
        0,
        ChanCmd::RELAY,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        &cookie,
    );
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &[7; 64], &mut rend1).unwrap();
    send(
        &mut r,
        &mut svc,
        0,
        ChanCmd::RELAY,
        RelayCmd::RENDEZVOUS1,
        &rend1[..n],
    );
    // An ESTABLISH_RENDEZVOUS on an already joined circuit is refused (TORPROTOCOL).
    let acts = send(
        &mut r,
        &mut cl,
        0,
        ChanCmd::RELAY,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        &cookie,
    );
    let mut d = destroys(&acts);
    d.sort_by_key(|x| x.0);
    assert_eq!(
        d,
        vec![
            (1, cl.circ_id, DestroyReason::TorProtocol),
            (2, svc.circ_id, DestroyReason::TorProtocol)
        ]
    );
    assert_eq!(r.core.circuit_count(), 0);
}

/// On a relay with more than one shard each key and cookie has one home shard's table
/// (tests/hs_cross_shard.rs runs both shards): a valid ESTABLISH_INTRO or
/// ESTABLISH_RENDEZVOUS is served, not refused; when its home is another shard the core
/// asks that shard (`Action::Hs`) and answers only when it hears back.
#[test]
fn multi_shard_relay_serves_through_the_home_shard() {
    use fors::proto::circuit::hs_cross::HsMsg;
    use fors::proto::circuit::{Action, ShardIdx};
    let mut rng = seeded("multi_shard_relay_serves_through_the_home_shard");
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    r.core.set_shard_count(2);
    let m1 = peer(0x21);
    for (n, want_home) in [(1u32, 0usize), (2, 1)] {
        let sk = key_with_home(&mut rng, want_home);
        let (mut svc, kh) = build(&mut r, relay_chan(u64::from(n), &m1, false), n, false);
        let acts = send(
            &mut r,
            &mut svc,
            0,
            ChanCmd::RELAY,
            RelayCmd::ESTABLISH_INTRO,
            &establish_intro(&sk, &kh),
        );
        assert!(destroys(&acts).is_empty(), "{acts:?}");
        let to_other: Vec<_> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Hs { to, msg } => Some((*to, msg.clone())),
                _ => None,
            })
            .collect();
        if want_home == 0 {
            assert!(to_other.is_empty());
            assert_eq!(got(&mut svc, &acts)[0].1, RelayCmd::INTRO_ESTABLISHED);
        } else {
            assert!(
                got(&mut svc, &acts).is_empty(),
                "established only when home answers"
            );
            assert_eq!(to_other.len(), 1);
            assert_eq!(to_other[0].0, ShardIdx(1));
            assert!(matches!(
                to_other[0].1,
                HsMsg::IntroRegister { key, .. } if key == *sk.verifying_key().as_bytes()
            ));
        }
    }
    assert_eq!(r.core.hs_counters().0.est_intro_success, 1);
    assert_eq!(r.core.circuit_count(), 2);
}
