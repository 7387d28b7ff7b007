//! In-memory initiator↔responder channels, both with full relay keys: the handshake, cell
//! traffic in both directions, and the initiator's certificate checks failing with a typed
//! reason.

mod channel_support;

use channel_support::*;
use fors::cell::{ChanCmd, CircId};
use fors::keys::cert::{CertError, CertKeyType, CertType as EdCertType, Ed25519Cert};
use fors::proto::channel::{
    CertsError, Channel, ChannelConfig, ChannelError, ChannelEvent, ExpectedPeer, LinkContext,
    PeerIdentity,
};
use std::sync::Arc;

#[test]
fn handshake_opens_both_sides_with_proven_identities() {
    let (a, b) = (relay_a(), relay_b());
    let (init, si, resp, sr) = open_pair(a, b);
    assert!(
        init.is_open() && resp.is_open(),
        "{:?} {:?}",
        si.events,
        sr.events
    );
    let oi = si.opened().unwrap();
    let or = sr.opened().unwrap();
    assert_eq!(
        oi.peer,
        PeerIdentity::Relay {
            rsa: b.id.rsa_id(),
            ed: b.id.ed_id()
        }
    );
    assert_eq!(
        or.peer,
        PeerIdentity::Relay {
            rsa: a.id.rsa_id(),
            ed: a.id.ed_id()
        }
    );
    assert_eq!((oi.link_version, or.link_version), (5, 5));
    assert!(oi.authenticated_to_peer);
    assert!(!or.authenticated_to_peer);
    assert_eq!(oi.our_addr_according_to_peer, Some(LOCAL));
    assert!(oi.canonical && or.canonical);
    assert_eq!(init.peer(), Some(oi.peer));
    // No skew, no close.
    assert_eq!(si.events.len(), 1);
    assert_eq!(sr.events.len(), 1);
}

#[test]
fn cells_flow_both_ways_in_large_batches() {
    let (mut init, mut si, mut resp, mut sr) = open_pair(relay_a(), relay_b());
    sr.echo = true;
    let total = 3000u32;
    let mut sent = 0u32;
    let mut full_seen = false;
    while sent < total {
        let mut body = [0u8; 509];
        body[1..5].copy_from_slice(&sent.to_be_bytes());
        body[508] = 0xEE;
        match init.send_cell(CircId(0x8000_0000 | sent), ChanCmd::RELAY, &body) {
            Ok(()) => sent += 1,
            Err(ChannelError::OutputFull) => {
                full_seen = true;
                assert!(!init.wants_read());
                pump(&mut init, &mut si, &mut resp, &mut sr);
            }
            Err(e) => panic!("{e}"),
        }
    }
    pump(&mut init, &mut si, &mut resp, &mut sr);
    assert!(full_seen, "the output bound was never reached");
    assert_eq!(sr.cells.len(), total as usize);
    assert_eq!(si.cells.len(), total as usize, "echoes");
    for (i, ((cid, cmd, body), (ecid, _, echo))) in sr.cells.iter().zip(&si.cells).enumerate() {
        assert_eq!(*cid, CircId(0x8000_0000 | i as u32));
        assert_eq!(*cmd, ChanCmd::RELAY);
        assert_eq!(&body[1..5], &(i as u32).to_be_bytes());
        assert_eq!(body[508], 0xEE);
        assert_eq!(ecid, cid);
        assert_eq!(echo[0], 1, "echo changed the body in place");
    }
    assert_eq!(resp.stats().cells_delivered, total as u64);
    assert!(init.wants_read() && resp.wants_read());

    // The other direction, other commands; ignored ones are counted, not delivered.
    let mut body = [7u8; 509];
    resp.send_cell(CircId(5), ChanCmd::CREATE2, &body).unwrap();
    resp.send_cell(CircId(5), ChanCmd::PADDING, &body).unwrap();
    resp.send_cell(CircId(5), ChanCmd(77), &body).unwrap();
    body[..6].copy_from_slice(&[0, 2, 0, 100, 0, 200]);
    resp.send_cell(CircId(0), ChanCmd::PADDING_NEGOTIATE, &body)
        .unwrap();
    resp.send_cell(CircId(5), ChanCmd::DESTROY, &[1; 509])
        .unwrap();
    let before = si.cells.len();
    pump(&mut init, &mut si, &mut resp, &mut sr);
    let got: Vec<_> = si.cells[before..].iter().map(|c| c.1).collect();
    assert_eq!(got, vec![ChanCmd::CREATE2, ChanCmd::DESTROY]);
    assert_eq!(init.stats().cells_ignored, 2);
    assert!(si.events.iter().any(|e| matches!(
        e,
        ChannelEvent::PaddingNegotiate(p) if p.ito_low_ms == 100 && p.ito_high_ms == 200
    )));
    assert!(init.is_open() && resp.is_open());
}

#[test]
fn local_close_sends_close_notify_and_peer_sees_it() {
    let (mut init, mut si, mut resp, mut sr) = open_pair(relay_a(), relay_b());
    init.close(&mut si);
    assert_eq!(si.closed(), Some(&ChannelError::LocalClose));
    assert_eq!(
        init.send_cell(CircId(1), ChanCmd::RELAY, &[0; 509]),
        Err(ChannelError::NotOpen)
    );
    pump(&mut init, &mut si, &mut resp, &mut sr);
    assert_eq!(sr.closed(), Some(&ChannelError::PeerClosed));
    assert!(resp.is_closed());
}

fn initiator_to(
    a: &Fixture,
    b_ctx: Arc<LinkContext>,
    expected: ExpectedPeer,
) -> (Channel, Collect, Channel, Collect) {
    let mut rng = rand::thread_rng();
    let mut init = Channel::new_initiator(a.ctx.clone(), expected, LOCAL, now(), &mut rng).unwrap();
    let mut resp = Channel::new_responder(b_ctx, LOCAL, now()).unwrap();
    let (mut si, mut sr) = (Collect::default(), Collect::default());
    pump(&mut init, &mut si, &mut resp, &mut sr);
    (init, si, resp, sr)
}

#[test]
fn wrong_expected_rsa_identity_closes() {
    let (a, b) = (relay_a(), relay_b());
    let expected = ExpectedPeer {
        rsa: a.id.rsa_id(),
        ed: None,
    };
    let (init, si, resp, sr) = initiator_to(a, b.ctx.clone(), expected);
    assert!(init.is_closed());
    assert_eq!(
        si.closed(),
        Some(&ChannelError::WrongRsaIdentity {
            expected: a.id.rsa_id(),
            got: b.id.rsa_id()
        })
    );
    // The responder never sees NETINFO from us; it learns of the close from TLS.
    assert!(!resp.is_open());
    assert!(sr.opened().is_none());
}

#[test]
fn wrong_expected_ed_identity_closes() {
    let (a, b) = (relay_a(), relay_b());
    let expected = ExpectedPeer {
        rsa: b.id.rsa_id(),
        ed: Some(a.id.ed_id()),
    };
    let (init, si, _, _) = initiator_to(a, b.ctx.clone(), expected);
    assert!(init.is_closed());
    assert_eq!(
        si.closed(),
        Some(&ChannelError::WrongEd25519Identity {
            expected: a.id.ed_id(),
            got: b.id.ed_id()
        })
    );
}

#[test]
fn type5_for_another_tls_cert_closes() {
    let (a, b) = (relay_a(), relay_b());
    // A validly signed type-5 cert, but for a different TLS certificate.
    let mut certs = b.id.link_certs();
    certs.tls_cert_cert = Ed25519Cert::sign(
        &b.id.signing,
        EdCertType::SIGNING_V_TLS_CERT,
        CertKeyType::SHA256_OF_X509,
        &[0x42; 32],
        now(),
        86400,
        false,
    );
    let ctx = Arc::new(LinkContext::new(certs, &[LOCAL], ChannelConfig::default()).unwrap());
    let expected = ExpectedPeer {
        rsa: b.id.rsa_id(),
        ed: None,
    };
    let (init, si, _, _) = initiator_to(a, ctx, expected);
    assert!(init.is_closed());
    assert_eq!(
        si.closed(),
        Some(&ChannelError::Certs(CertsError::TlsCertMismatch))
    );
}

#[test]
fn type5_with_bad_signature_closes() {
    let (a, b) = (relay_a(), relay_b());
    let mut certs = b.id.link_certs();
    // Right digest, signed by a key that is not the certified signing key.
    let other = fors::keys::Ed25519Keypair::generate(&mut rand::thread_rng());
    certs.tls_cert_cert = Ed25519Cert::sign(
        &other,
        EdCertType::SIGNING_V_TLS_CERT,
        CertKeyType::SHA256_OF_X509,
        &certs.tls_cert_sha256(),
        now(),
        86400,
        false,
    );
    let ctx = Arc::new(LinkContext::new(certs, &[LOCAL], ChannelConfig::default()).unwrap());
    let expected = ExpectedPeer {
        rsa: b.id.rsa_id(),
        ed: None,
    };
    let (_, si, _, _) = initiator_to(a, ctx, expected);
    assert_eq!(
        si.closed(),
        Some(&ChannelError::Certs(CertsError::Ed25519 {
            cert_type: fors::cell::chan::CertType::SIGNING_V_TLS_CERT,
            error: CertError::BadSignature
        }))
    );
}

#[test]
fn expired_type4_closes() {
    let a = relay_a();
    // Signing cert issued ten days ago for one day.
    let b = TestIdentity::generate_with_signing_cert(secs_ago(10 * 86400), 86400);
    let ctx = b.context(ChannelConfig::default());
    let expected = ExpectedPeer {
        rsa: b.rsa_id(),
        ed: None,
    };
    let (init, si, _, _) = initiator_to(a, ctx, expected);
    assert!(init.is_closed());
    assert!(
        matches!(
            si.closed(),
            Some(ChannelError::Certs(CertsError::Ed25519 {
                cert_type: fors::cell::chan::CertType::IDENTITY_V_SIGNING,
                error: CertError::Expired { .. }
            }))
        ),
        "{:?}",
        si.events
    );
}

#[test]
fn expired_initiator_type4_is_refused_by_responder() {
    let b = relay_b();
    let a = TestIdentity::generate_with_signing_cert(secs_ago(10 * 86400), 86400);
    let a_fix = Fixture {
        ctx: a.context(ChannelConfig::default()),
        id: a,
    };
    let expected = ExpectedPeer {
        rsa: b.id.rsa_id(),
        ed: Some(b.id.ed_id()),
    };
    let (_, _, resp, sr) = initiator_to(&a_fix, b.ctx.clone(), expected);
    assert!(resp.is_closed());
    assert!(matches!(
        sr.closed(),
        Some(ChannelError::Certs(CertsError::Ed25519 {
            error: CertError::Expired { .. },
            ..
        }))
    ));
}

#[test]
fn handshake_timeout() {
    let b = relay_b();
    let start = now();
    let mut resp = Channel::new_responder(b.ctx.clone(), LOCAL, start).unwrap();
    let mut s = Collect::default();
    resp.check_timeout(start + std::time::Duration::from_secs(59), &mut s)
        .unwrap();
    assert_eq!(
        resp.check_timeout(start + std::time::Duration::from_secs(60), &mut s),
        Err(ChannelError::HandshakeTimeout)
    );
    assert!(resp.is_closed());
    assert_eq!(s.closed(), Some(&ChannelError::HandshakeTimeout));
}

#[test]
fn circ_id_allocators_follow_the_high_bit_rule() {
    let (init, _, resp, _) = open_pair(relay_a(), relay_b());
    let mut rng = rand::thread_rng();
    let ai = init.circ_id_allocator();
    let ar = resp.circ_id_allocator();
    let id_i = ai.allocate(&mut rng, |_| false).unwrap();
    let id_r = ar.allocate(&mut rng, |_| false).unwrap();
    assert!(id_i.has_high_bit());
    assert!(!id_r.has_high_bit());
    assert!(ar.check_peer_create(id_i).is_ok());
    assert!(ai.check_peer_create(id_r).is_ok());
    assert!(ai.check_peer_create(id_i).is_err());
}

/// A client channel (no relay keys) to `b`, pumped until settled.
fn client_to(b: &Fixture, expected: ExpectedPeer) -> (Channel, Collect, Channel, Collect) {
    let mut rng = rand::thread_rng();
    let tls =
        fors::proto::channel::tls::client_config(fors::proto::channel::tls::provider()).unwrap();
    let mut client = Channel::new_client(
        tls,
        ChannelConfig::default(),
        expected,
        LOCAL,
        now(),
        &mut rng,
    )
    .unwrap();
    let mut resp = Channel::new_responder(b.ctx.clone(), LOCAL, now()).unwrap();
    let (mut sc, mut sr) = (Collect::default(), Collect::default());
    pump(&mut client, &mut sc, &mut resp, &mut sr);
    (client, sc, resp, sr)
}

#[test]
fn client_channel_verifies_the_relay_and_stays_a_client() {
    let b = relay_b();
    let expected = ExpectedPeer {
        rsa: b.id.rsa_id(),
        ed: Some(b.id.ed_id()),
    };
    let (mut client, mut sc, mut resp, mut sr) = client_to(b, expected);
    assert!(
        client.is_open() && resp.is_open(),
        "{:?} {:?}",
        sc.events,
        sr.events
    );
    assert!(client.is_client() && client.is_initiator() && !resp.is_client());
    let oc = sc.opened().unwrap();
    let or = sr.opened().unwrap();
    // The client proved the relay's identities from its CERTS.
    assert_eq!(
        oc.peer,
        PeerIdentity::Relay {
            rsa: b.id.rsa_id(),
            ed: b.id.ed_id()
        }
    );
    assert!(!oc.authenticated_to_peer);
    assert_eq!(oc.link_version, 5);
    assert_eq!(oc.our_addr_according_to_peer, Some(LOCAL));
    // The relay saw no AUTHENTICATE (a client) and no address of ours in NETINFO.
    assert_eq!(or.peer, PeerIdentity::Client);
    assert!(!or.canonical);
    assert_eq!(resp.peer(), Some(PeerIdentity::Client));

    // Cells flow both ways; circuit IDs we allocate have the high bit set.
    let id = client
        .circ_id_allocator()
        .allocate(&mut rand::thread_rng(), |_| false);
    assert!(id.is_some_and(|c| c.0 & 0x8000_0000 != 0));
    client
        .send_cell(CircId(0x8000_0001), ChanCmd::CREATE_FAST, &[3; 509])
        .unwrap();
    resp.send_cell(CircId(0x8000_0001), ChanCmd::CREATED_FAST, &[4; 509])
        .unwrap();
    pump(&mut client, &mut sc, &mut resp, &mut sr);
    assert_eq!(sr.cells.len(), 1);
    assert_eq!(sr.cells[0].1, ChanCmd::CREATE_FAST);
    assert_eq!(sc.cells.len(), 1);
    assert_eq!(sc.cells[0].1, ChanCmd::CREATED_FAST);
    assert_eq!(sc.cells[0].2, vec![4u8; 509]);
    assert!(sc.closed().is_none() && sr.closed().is_none());
}

#[test]
fn client_channel_with_wrong_expected_identities_closes() {
    let (a, b) = (relay_a(), relay_b());
    let (client, sc, resp, sr) = client_to(
        b,
        ExpectedPeer {
            rsa: a.id.rsa_id(),
            ed: None,
        },
    );
    assert!(client.is_closed());
    assert_eq!(
        sc.closed(),
        Some(&ChannelError::WrongRsaIdentity {
            expected: a.id.rsa_id(),
            got: b.id.rsa_id()
        })
    );
    assert!(!resp.is_open() && sr.opened().is_none());

    let (client, sc, _, _) = client_to(
        b,
        ExpectedPeer {
            rsa: b.id.rsa_id(),
            ed: Some(a.id.ed_id()),
        },
    );
    assert!(client.is_closed());
    assert_eq!(
        sc.closed(),
        Some(&ChannelError::WrongEd25519Identity {
            expected: a.id.ed_id(),
            got: b.id.ed_id()
        })
    );
}

#[test]
fn client_channel_times_out_like_any_initiator() {
    let mut rng = rand::thread_rng();
    let tls =
        fors::proto::channel::tls::client_config(fors::proto::channel::tls::provider()).unwrap();
    let cfg = ChannelConfig {
        handshake_timeout: std::time::Duration::from_secs(5),
        ..ChannelConfig::default()
    };
    let expected = ExpectedPeer {
        rsa: relay_b().id.rsa_id(),
        ed: None,
    };
    let start = now();
    let mut client = Channel::new_client(tls, cfg, expected, LOCAL, start, &mut rng).unwrap();
    let mut sc = Collect::default();
    assert!(
        !client.pending_output().is_empty(),
        "TLS ClientHello queued"
    );
    client
        .check_timeout(start + std::time::Duration::from_secs(4), &mut sc)
        .unwrap();
    assert_eq!(
        client.check_timeout(start + std::time::Duration::from_secs(6), &mut sc),
        Err(ChannelError::HandshakeTimeout)
    );
    assert_eq!(sc.closed(), Some(&ChannelError::HandshakeTimeout));
}
