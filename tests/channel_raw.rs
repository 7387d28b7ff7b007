//! A responder channel against a hand-driven TLS initiator that writes its own handshake
//! cells: an independent recomputation of SLOG/CLOG/TLSSECRETS that the responder must
//! accept, and every way of getting AUTHENTICATE or the early cells wrong, each closing the
//! channel with a typed reason. And the reverse: a client channel (`Channel::new_client`)
//! against a hand-driven TLS responder, to read back exactly what a client sends.

mod channel_support;

use channel_support::*;
use fors::cell::chan::{
    AuthMethod, Authenticate, CertEntry, CertType, Certs, Netinfo, NetinfoAddr,
};
use fors::cell::link::encode_versions_cell;
use fors::cell::{CellError, ChanCmd, CircId, Framer};
use fors::keys::rsa as tor_rsa;
use fors::keys::Ed25519Keypair;
use fors::proto::channel::auth::AuthFields;
use fors::proto::channel::tls::AUTH0003_EXPORTER_LABEL;
use fors::proto::channel::{
    AuthError, CertsError, Channel, ChannelError, ChannelEvent, PeerIdentity, TlsPath,
};
use fors::proto::tls_record::{OpenError, TlsRecordError};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

fn versions(list: &[u16]) -> Vec<u8> {
    let mut w = vec![0u8; 5 + 2 * list.len()];
    let n = encode_versions_cell(list, &mut w).unwrap();
    w.truncate(n);
    w
}

fn var_cell(cmd: ChanCmd, body: &[u8]) -> Vec<u8> {
    let f = Framer::negotiated(5).unwrap();
    let mut w = vec![0u8; 7 + body.len()];
    let n = f.encode_var(CircId(0), cmd, body, &mut w).unwrap();
    w.truncate(n);
    w
}

fn fixed_cell(circ: u32, cmd: ChanCmd, body: &[u8; 509]) -> Vec<u8> {
    let f = Framer::negotiated(5).unwrap();
    let mut w = vec![0u8; 514];
    f.encode_fixed(CircId(circ), cmd, body, &mut w).unwrap();
    w
}

fn netinfo(time: u32) -> Vec<u8> {
    let mut body = [0u8; 509];
    Netinfo::encode(
        time,
        &NetinfoAddr::from(LOCAL),
        &[NetinfoAddr::from(LOCAL)],
        &mut body,
    )
    .unwrap();
    fixed_cell(0, ChanCmd::NETINFO, &body)
}

fn unix_now() -> u32 {
    now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// What to get wrong.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tamper {
    Nothing,
    SignWithOtherKey,
    SlogWithoutAuthChallenge,
    ClogWithoutCerts,
    TlsSecretsWrongContext,
    ScertOfOtherCert,
    SwapCidSid,
    DuplicateCert,
    NetinfoTwoHoursAhead,
    VpaddingFirst,
}

struct Run {
    resp: Channel,
    sink: Collect,
    raw: RawInitiator,
}

/// Runs an authenticating initiator (relay A's keys) against a responder (relay B).
fn authenticate(tamper: Tamper) -> Run {
    let (a, b) = (relay_a(), relay_b());
    let mut resp = Channel::new_responder(b.ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = RawInitiator::new();
    let mut sent_log = Vec::new();
    if tamper == Tamper::VpaddingFirst {
        // A VPADDING before VERSIONS is allowed, and is part of CLOG.
        let mut vp = vec![0, 0, 128, 0, 3];
        vp.extend_from_slice(&[1, 2, 3]);
        raw.send(&vp);
        sent_log.extend_from_slice(&vp);
    }
    let v = versions(&[3, 4, 5]);
    raw.send(&v);
    sent_log.extend_from_slice(&v);
    raw.exchange(&mut resp, &mut sink);

    // The responder's VERSIONS (2-byte circuit ID), CERTS, AUTH_CHALLENGE, NETINFO.
    let mut recv_log = Vec::new();
    let rv = raw.next_cell(&Framer::unnegotiated()).expect("VERSIONS");
    assert_eq!(rv, versions(&[4, 5]));
    recv_log.extend_from_slice(&rv);
    let f = Framer::negotiated(5).unwrap();
    let certs = raw.next_cell(&f).expect("CERTS");
    assert_eq!(certs[4], ChanCmd::CERTS.0);
    recv_log.extend_from_slice(&certs);
    let ac = raw.next_cell(&f).expect("AUTH_CHALLENGE");
    assert_eq!(ac[4], ChanCmd::AUTH_CHALLENGE.0);
    assert_eq!(&ac[5..7], &[0, 36], "challenge + one method");
    assert_eq!(&ac[39..43], &[0, 1, 0, 3], "method 3 only");
    let recv_without_ac = recv_log.clone();
    recv_log.extend_from_slice(&ac);
    let ni = raw.next_cell(&f).expect("NETINFO");
    assert_eq!((ni.len(), ni[4]), (514, ChanCmd::NETINFO.0));
    let ni = Netinfo::parse(&ni[5..]).unwrap();
    assert!(ni.timestamp.abs_diff(unix_now()) < 5);
    assert_eq!(ni.other_addr, NetinfoAddr::from(LOCAL));

    // Our CERTS (2, 4, 6, 7).
    let lc = &a.ctx.link_certs();
    let mut entries = vec![
        CertEntry {
            cert_type: CertType::RSA_ID_X509,
            body: &lc.identity_cert_der,
        },
        CertEntry {
            cert_type: CertType::IDENTITY_V_SIGNING,
            body: lc.signing_cert.as_bytes(),
        },
        CertEntry {
            cert_type: CertType::SIGNING_V_LINK_AUTH,
            body: lc.link_auth_cert.as_bytes(),
        },
        CertEntry {
            cert_type: CertType::RSA_ID_V_IDENTITY,
            body: lc.rsa_crosscert.as_bytes(),
        },
    ];
    if tamper == Tamper::DuplicateCert {
        entries.push(entries[1]);
    }
    let mut body = vec![0u8; 8192];
    let n = Certs::encode(&entries, &mut body).unwrap();
    let certs_cell = var_cell(ChanCmd::CERTS, &body[..n]);
    raw.send(&certs_cell);
    let clog_without_certs: [u8; 32] = Sha256::digest(&sent_log).into();
    sent_log.extend_from_slice(&certs_cell);

    let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    let cid = tor_rsa::public_key_sha256(&a.id.rsa.to_public_key()).unwrap();
    let sid = tor_rsa::public_key_sha256(&b.id.rsa.to_public_key()).unwrap();
    let export = |ctx: &[u8]| {
        raw.tls
            .export_keying_material([0u8; 32], AUTH0003_EXPORTER_LABEL, Some(ctx))
            .unwrap()
    };
    let mut fields = AuthFields {
        cid,
        sid,
        cid_ed: a.id.ed_id().0,
        sid_ed: b.id.ed_id().0,
        slog: sha(&recv_log),
        clog: sha(&sent_log),
        scert: sha(&raw.peer_cert_der()),
        tlssecrets: export(&cid),
    };
    let mut key = &lc.link_auth_key;
    let other = Ed25519Keypair::generate(&mut rand::thread_rng());
    match tamper {
        Tamper::SignWithOtherKey => key = &other,
        Tamper::SlogWithoutAuthChallenge => fields.slog = sha(&recv_without_ac),
        Tamper::ClogWithoutCerts => fields.clog = clog_without_certs,
        Tamper::TlsSecretsWrongContext => fields.tlssecrets = export(&sid),
        Tamper::ScertOfOtherCert => {
            fields.scert = b.ctx.link_certs().tls_cert_sha256().map(|x| x ^ 1)
        }
        Tamper::SwapCidSid => std::mem::swap(&mut fields.cid, &mut fields.sid),
        _ => {}
    }
    let auth = fields.sign(&[7; 24], key);
    let mut ab = [0u8; 400];
    let n = Authenticate {
        auth_type: AuthMethod::ED25519_SHA256_RFC5705,
        auth: &auth,
    }
    .encode(&mut ab)
    .unwrap();
    raw.send(&var_cell(ChanCmd::AUTHENTICATE, &ab[..n]));
    let t = if tamper == Tamper::NetinfoTwoHoursAhead {
        unix_now() + 7200
    } else {
        unix_now()
    };
    raw.send(&netinfo(t));
    raw.exchange(&mut resp, &mut sink);
    Run { resp, sink, raw }
}

#[test]
fn independent_authenticate_is_accepted() {
    let r = authenticate(Tamper::Nothing);
    let a = relay_a();
    assert!(r.resp.is_open(), "{:?}", r.sink.events);
    assert_eq!(
        r.sink.opened().unwrap().peer,
        PeerIdentity::Relay {
            rsa: a.id.rsa_id(),
            ed: a.id.ed_id()
        }
    );
}

#[test]
fn vpadding_before_versions_is_logged_and_accepted() {
    let r = authenticate(Tamper::VpaddingFirst);
    assert!(r.resp.is_open(), "{:?}", r.sink.events);
}

fn expect_close(tamper: Tamper, want: ChannelError) {
    let r = authenticate(tamper);
    assert!(r.resp.is_closed(), "{tamper:?}: {:?}", r.sink.events);
    assert_eq!(r.sink.closed(), Some(&want), "{tamper:?}");
    assert!(r.sink.opened().is_none());
    // The close is announced to the peer with a TLS alert.
    let _ = r.raw;
}

#[test]
fn bad_signature_closes() {
    expect_close(
        Tamper::SignWithOtherKey,
        ChannelError::Auth(AuthError::BadSignature),
    );
}

#[test]
fn wrong_slog_closes() {
    expect_close(
        Tamper::SlogWithoutAuthChallenge,
        ChannelError::Auth(AuthError::FieldMismatch("SLOG")),
    );
}

#[test]
fn wrong_clog_closes() {
    expect_close(
        Tamper::ClogWithoutCerts,
        ChannelError::Auth(AuthError::FieldMismatch("CLOG")),
    );
}

#[test]
fn wrong_tlssecrets_closes() {
    expect_close(
        Tamper::TlsSecretsWrongContext,
        ChannelError::Auth(AuthError::FieldMismatch("TLSSECRETS")),
    );
}

#[test]
fn wrong_scert_closes() {
    expect_close(
        Tamper::ScertOfOtherCert,
        ChannelError::Auth(AuthError::FieldMismatch("SCERT")),
    );
}

#[test]
fn swapped_ids_close() {
    expect_close(
        Tamper::SwapCidSid,
        ChannelError::Auth(AuthError::FieldMismatch("CID")),
    );
}

#[test]
fn duplicate_certs_close() {
    expect_close(
        Tamper::DuplicateCert,
        ChannelError::Certs(CertsError::Duplicate(CertType::IDENTITY_V_SIGNING)),
    );
}

#[test]
fn clock_skew_is_reported_not_fatal() {
    let r = authenticate(Tamper::NetinfoTwoHoursAhead);
    assert!(r.resp.is_open());
    let skew = r.sink.events.iter().find_map(|e| match e {
        ChannelEvent::ClockSkew { skew_secs } => Some(*skew_secs),
        _ => None,
    });
    let s = skew.expect("skew event");
    assert!((-7205..=-7195).contains(&s), "{s}");
}

/// Sends `plain` from a fresh raw initiator and returns the responder's close reason.
fn early(plain: &[&[u8]]) -> (Channel, Collect) {
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = RawInitiator::new();
    for p in plain {
        raw.send(p);
        raw.exchange(&mut resp, &mut sink);
    }
    (resp, sink)
}

#[test]
fn client_without_certs_is_accepted_as_client() {
    let (resp, sink) = early(&[&versions(&[4, 5]), &netinfo(0)]);
    assert!(resp.is_open(), "{:?}", sink.events);
    let info = sink.opened().unwrap();
    assert_eq!(info.peer, PeerIdentity::Client);
    assert_eq!(info.link_version, 5);
    // A client's bad clock is not our business (C warns only about relays).
    assert_eq!(sink.events.len(), 1);
    assert_eq!(resp.peer(), Some(PeerIdentity::Client));
}

#[test]
fn odd_versions_length_closes() {
    let mut v = versions(&[4, 5]);
    v[4] = 3; // length 3: one and a half versions
    v.pop();
    let (resp, sink) = early(&[&v]);
    assert!(resp.is_closed());
    assert_eq!(
        sink.closed(),
        Some(&ChannelError::Cell(CellError::BadLength {
            what: "VERSIONS body",
            len: 3
        }))
    );
}

#[test]
fn no_common_version_closes() {
    let (resp, sink) = early(&[&versions(&[1, 2, 3, 6])]);
    assert!(resp.is_closed());
    assert_eq!(sink.closed(), Some(&ChannelError::NoCommonVersion));
}

#[test]
fn first_cell_must_be_versions_vpadding_or_authorize() {
    let (resp, sink) = early(&[&[0, 0, ChanCmd::CERTS.0, 0, 0]]);
    assert!(resp.is_closed());
    assert_eq!(
        sink.closed(),
        Some(&ChannelError::UnexpectedCell {
            cmd: ChanCmd::CERTS,
            when: "before VERSIONS"
        })
    );
    // A fixed cell (2-byte circuit ID form before negotiation) that is not NETINFO.
    let mut fixed = vec![0u8; 512];
    fixed[2] = ChanCmd::CREATE_FAST.0;
    let (resp, sink) = early(&[&fixed]);
    assert!(resp.is_closed());
    assert!(matches!(
        sink.closed(),
        Some(ChannelError::UnexpectedCell {
            cmd: ChanCmd::CREATE_FAST,
            ..
        })
    ));
}

#[test]
fn padding_during_handshake_closes_like_c() {
    let (resp, sink) = early(&[&versions(&[5]), &fixed_cell(0, ChanCmd::PADDING, &[0; 509])]);
    assert!(resp.is_closed());
    assert_eq!(
        sink.closed(),
        Some(&ChannelError::UnexpectedCell {
            cmd: ChanCmd::PADDING,
            when: "during the handshake"
        })
    );
}

#[test]
fn authenticate_without_certs_closes() {
    let (resp, sink) = early(&[
        &versions(&[4]),
        &var_cell(ChanCmd::AUTHENTICATE, &[0, 3, 0, 0]),
    ]);
    assert!(resp.is_closed());
    assert_eq!(sink.closed(), Some(&ChannelError::Auth(AuthError::NoCerts)));
}

#[test]
fn auth_challenge_to_responder_closes() {
    let (resp, sink) = early(&[
        &versions(&[4]),
        &var_cell(ChanCmd::AUTH_CHALLENGE, &[0; 36]),
    ]);
    assert!(resp.is_closed());
    assert!(matches!(
        sink.closed(),
        Some(ChannelError::UnexpectedCell {
            cmd: ChanCmd::AUTH_CHALLENGE,
            ..
        })
    ));
}

#[test]
fn garbage_certs_cell_closes() {
    let (resp, sink) = early(&[&versions(&[4]), &var_cell(ChanCmd::CERTS, &[3, 4, 0])]);
    assert!(resp.is_closed());
    assert!(matches!(
        sink.closed(),
        Some(ChannelError::Cell(CellError::Truncated { .. }))
    ));
}

#[test]
fn netinfo_with_unknown_other_address_closes() {
    let mut body = [0u8; 509];
    body[..9].copy_from_slice(&[0, 0, 0, 0, 9, 2, 1, 1, 0]);
    let (resp, sink) = early(&[&versions(&[4]), &fixed_cell(0, ChanCmd::NETINFO, &body)]);
    assert!(resp.is_closed());
    assert_eq!(sink.closed(), Some(&ChannelError::BadNetinfoAddress));
}

/// A client channel that is open, for the after-handshake cases.
fn open_client() -> (Channel, Collect, RawInitiator) {
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = RawInitiator::new();
    raw.send(&versions(&[4, 5]));
    raw.send(&netinfo(unix_now()));
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_open());
    (resp, sink, raw)
}

#[test]
fn after_open_ignored_and_fatal_cells() {
    let (mut resp, mut sink, mut raw) = open_client();
    raw.send(&var_cell(ChanCmd::VPADDING, &[0; 100]));
    raw.send(&var_cell(ChanCmd::AUTHORIZE, &[0; 10]));
    raw.send(&var_cell(ChanCmd(200), &[0; 10]));
    raw.send(&var_cell(ChanCmd::VERSIONS, &[0, 4]));
    raw.send(&netinfo(0));
    raw.send(&fixed_cell(9, ChanCmd::PADDING, &[0; 509]));
    raw.send(&fixed_cell(9, ChanCmd(42), &[0; 509]));
    raw.send(&fixed_cell(0x8000_0009, ChanCmd::CREATE_FAST, &[3; 509]));
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_open(), "{:?}", sink.events);
    assert_eq!(resp.stats().cells_ignored, 7);
    assert_eq!(sink.cells.len(), 1);
    assert_eq!(sink.cells[0].1, ChanCmd::CREATE_FAST);

    raw.send(&var_cell(ChanCmd::CERTS, &[0]));
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_closed());
    assert_eq!(
        sink.closed(),
        Some(&ChannelError::UnexpectedCell {
            cmd: ChanCmd::CERTS,
            when: "after the handshake"
        })
    );
}

#[test]
fn garbage_after_tls_closes() {
    let (mut resp, mut sink, _raw) = open_client();
    // Not a TLS record: content type 0x42.
    // The open TLS 1.3 channel is on Fors's record layer, which refuses it as rustls would
    // (unexpected_message).
    assert_eq!(resp.stats().tls_path, TlsPath::RecordLayer);
    let r = resp.handle_input(&[0x42; 64], now(), &mut rand::thread_rng(), &mut sink);
    let want = ChannelError::TlsRecord(TlsRecordError::Open(OpenError::OuterType(0x42)));
    assert_eq!(r, Err(want.clone()));
    assert!(resp.is_closed());
    assert_eq!(sink.closed(), Some(&want));
    // Further input is refused, not processed.
    assert_eq!(
        resp.handle_input(&[0; 5], now(), &mut rand::thread_rng(), &mut sink),
        Err(ChannelError::NotOpen)
    );
    // The TLS alert is waiting to be sent.
    assert!(!resp.pending_output().is_empty());
}

#[test]
fn truncated_cell_then_close_notify() {
    let (mut resp, mut sink, mut raw) = open_client();
    let cell = fixed_cell(0x8000_0001, ChanCmd::RELAY, &[5; 509]);
    raw.send(&cell[..300]);
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_open());
    raw.tls.send_close_notify();
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_closed());
    assert_eq!(sink.closed(), Some(&ChannelError::TruncatedCell(300)));
    assert!(sink.cells.is_empty());
}

#[test]
fn truncated_cell_then_tcp_eof() {
    let (mut resp, mut sink, mut raw) = open_client();
    let cell = fixed_cell(0x8000_0001, ChanCmd::RELAY, &[5; 509]);
    raw.send(&cell[..513]);
    raw.exchange(&mut resp, &mut sink);
    assert_eq!(resp.handle_eof(&mut sink), ChannelError::TruncatedCell(513));
    assert!(resp.is_closed());
    assert_eq!(sink.closed(), Some(&ChannelError::TruncatedCell(513)));
}

#[test]
fn oversized_variable_cell_closes() {
    let (mut resp, mut sink, mut raw) = open_client();
    raw.send(&[0, 0, 0, 0, ChanCmd::VPADDING.0, 0xFF, 0xFF]);
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_closed());
    assert!(matches!(
        sink.closed(),
        Some(ChannelError::Cell(CellError::TooLong { .. }))
    ));
}

#[test]
fn responder_output_is_bounded() {
    let (mut resp, _sink, _raw) = open_client();
    let mut n = 0;
    while resp.send_cell(CircId(1), ChanCmd::RELAY, &[0; 509]).is_ok() {
        n += 1;
        assert!(n <= 512, "bound not enforced");
    }
    assert_eq!(n, 512);
    assert!(!resp.wants_read());
    assert_eq!(
        resp.send_cell(CircId(1), ChanCmd::RELAY, &[0; 509]),
        Err(ChannelError::OutputFull)
    );
    // Encrypted but not yet taken by the socket still counts.
    let pending = resp.pending_output().len();
    assert!(pending > 512 * 514);
    assert!(resp
        .send_cell(CircId(1), ChanCmd::RELAY, &[0; 509])
        .is_err());
    resp.consume_output(pending);
    assert!(resp.wants_read());
    assert_eq!(resp.queue().free_cells(), 512);
}

/// A client channel (`Channel::new_client`) against a hand-driven TLS responder that writes
/// relay B's handshake cells itself: what the client sends is read back in plaintext, so we
/// check it sends VERSIONS, then only a client NETINFO (timestamp 0, no addresses of its
/// own) — no CERTS, no AUTHENTICATE — and accepts a correct responder.
#[test]
fn client_channel_sends_only_versions_and_a_client_netinfo() {
    let b = relay_b();
    let certs = b.ctx.link_certs();
    let provider = fors::proto::channel::tls::provider();
    let server_cfg = fors::proto::channel::tls::server_config(
        provider.clone(),
        &certs.link_cert_der,
        &certs.link_key_pkcs8_der,
    )
    .unwrap();
    let mut server = rustls::ServerConnection::new(server_cfg).unwrap();
    let mut rng = rand::thread_rng();
    let mut client = Channel::new_client(
        fors::proto::channel::tls::client_config(provider).unwrap(),
        fors::proto::channel::ChannelConfig::default(),
        fors::proto::channel::ExpectedPeer {
            rsa: b.id.rsa_id(),
            ed: Some(b.id.ed_id()),
        },
        LOCAL,
        now(),
        &mut rng,
    )
    .unwrap();
    let mut sink = Collect::default();
    let mut plain = Vec::new();

    // Moves TLS bytes both ways until quiet; the server's plaintext lands in `plain`.
    let exchange = |client: &mut Channel,
                    server: &mut rustls::ServerConnection,
                    sink: &mut Collect,
                    plain: &mut Vec<u8>| {
        use std::io::Read;
        for _ in 0..100 {
            let out = client.pending_output().to_vec();
            client.consume_output(out.len());
            let mut s = &out[..];
            while !s.is_empty() {
                server.read_tls(&mut s).unwrap();
                server.process_new_packets().unwrap();
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = server.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&buf[..n]);
            }
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut back).unwrap();
            }
            if !back.is_empty() {
                let _ = client.handle_input(&back, now(), &mut rand::thread_rng(), sink);
            }
            if out.is_empty() && back.is_empty() {
                return;
            }
        }
        panic!("exchange did not settle");
    };
    exchange(&mut client, &mut server, &mut sink, &mut plain);

    // 1. The client's first cell: VERSIONS (4, 5) in the 2-byte-circuit-ID form, alone.
    assert_eq!(plain, versions(&[4, 5]), "client's opening bytes");
    plain.clear();

    // 2. B's side: VERSIONS, CERTS (1, 2, 4, 5, 7), AUTH_CHALLENGE, NETINFO.
    let entry = |cert_type, body| CertEntry { cert_type, body };
    let entries = [
        entry(CertType::TLS_LINK_X509, &certs.link_cert_der[..]),
        entry(CertType::RSA_ID_X509, &certs.identity_cert_der[..]),
        entry(CertType::IDENTITY_V_SIGNING, certs.signing_cert.as_bytes()),
        entry(CertType::SIGNING_V_TLS_CERT, certs.tls_cert_cert.as_bytes()),
        entry(CertType::RSA_ID_V_IDENTITY, certs.rsa_crosscert.as_bytes()),
    ];
    let mut certs_body = vec![0u8; 8192];
    let n = Certs::encode(&entries, &mut certs_body).unwrap();
    certs_body.truncate(n);
    let mut ac = [0u8; 36];
    let n = fors::cell::chan::AuthChallenge::encode(
        &[9u8; 32],
        &[AuthMethod::ED25519_SHA256_RFC5705],
        &mut ac,
    )
    .unwrap();
    let mut flight = versions(&[4, 5]);
    flight.extend(var_cell(ChanCmd::CERTS, &certs_body));
    flight.extend(var_cell(ChanCmd::AUTH_CHALLENGE, &ac[..n]));
    flight.extend(netinfo(unix_now()));
    std::io::Write::write_all(&mut server.writer(), &flight).unwrap();
    exchange(&mut client, &mut server, &mut sink, &mut plain);

    assert!(client.is_open(), "{:?}", sink.events);
    let info = sink.opened().unwrap();
    assert_eq!(
        info.peer,
        PeerIdentity::Relay {
            rsa: b.id.rsa_id(),
            ed: b.id.ed_id()
        }
    );
    assert!(!info.authenticated_to_peer);
    assert!(info.canonical, "B listed the address we reached it at");

    // 3. Everything the client sent after VERSIONS: exactly one NETINFO cell.
    let f = Framer::negotiated(5).unwrap();
    assert_eq!(plain.len(), 514, "one fixed cell, no CERTS or AUTHENTICATE");
    let (cell, used) = f.next(&plain).unwrap().unwrap();
    assert_eq!(used, 514);
    let fors::cell::Cell::Fixed(fc) = cell else {
        panic!("not a fixed cell")
    };
    assert_eq!(fc.cmd, ChanCmd::NETINFO);
    assert!(fc.circ_id.is_zero());
    let ni = Netinfo::parse(&fc.body[..]).unwrap();
    assert_eq!(ni.timestamp, 0, "a client does not reveal its clock");
    assert_eq!(ni.other_addr, NetinfoAddr::from(LOCAL));
    assert_eq!(ni.my_addrs().count(), 0, "nor its addresses");

    // 4. Cells flow: the client's CREATE_FAST reaches the raw responder.
    client
        .send_cell(CircId(0x8000_0042), ChanCmd::CREATE_FAST, &[1; 509])
        .unwrap();
    plain.clear();
    exchange(&mut client, &mut server, &mut sink, &mut plain);
    assert_eq!(
        plain,
        fixed_cell(0x8000_0042, ChanCmd::CREATE_FAST, &[1; 509])
    );
}

/// A RawInitiator whose rustls offers only `versions`.
fn raw_with_versions(versions: &[&'static rustls::SupportedProtocolVersion]) -> RawInitiator {
    use fors::proto::channel::tls;
    let verifier = std::sync::Arc::new(tls::TorCertVerifier::new(tls::provider()));
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(fors::proto::channel::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    let name = rustls::pki_types::ServerName::try_from("www.example.com").unwrap();
    RawInitiator {
        tls: rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap(),
        plain: Vec::new(),
    }
}

/// One RELAY cell each way through an open channel; checks both arrive intact.
fn relay_both_ways(resp: &mut Channel, sink: &mut Collect, raw: &mut RawInitiator, tag: u8) {
    let before = sink.cells.len();
    raw.send(&fixed_cell(0x8000_0001, ChanCmd::RELAY, &[tag; 509]));
    raw.exchange(resp, sink);
    assert!(resp.is_open(), "{:?}", sink.events);
    assert_eq!(
        sink.cells.len(),
        before + 1,
        "round {tag}: the peer's cell arrives"
    );
    assert_eq!(sink.cells[before].2, vec![tag; 509]);
    resp.send_cell(CircId(0x8000_0001), ChanCmd::RELAY, &[!tag; 509])
        .unwrap();
    raw.exchange(resp, sink);
    let f = Framer::negotiated(5).unwrap();
    let got = raw.next_cell(&f).expect("our cell arrives");
    assert_eq!(got, fixed_cell(0x8000_0001, ChanCmd::RELAY, &[!tag; 509]));
}

/// A rustls peer updates its keys again and again on an open channel, asking for ours
/// each time (`refresh_traffic_keys`: KeyUpdate with update_requested): the record layer
/// follows, answers with its own KeyUpdate before its next data, and cells keep flowing
/// both ways.
#[test]
fn key_updates_from_a_rustls_peer_on_an_open_channel() {
    let (mut resp, mut sink, mut raw) = open_client();
    assert_eq!(resp.stats().tls_path, TlsPath::RecordLayer);
    raw.plain.clear();
    for round in 0..6u8 {
        raw.tls.refresh_traffic_keys().unwrap();
        relay_both_ways(&mut resp, &mut sink, &mut raw, round);
    }
    assert!(resp.is_open());
}

/// A TLS 1.2 link (C tor still accepts 1.2) stays on rustls, and works.
#[test]
fn tls12_link_stays_on_rustls() {
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = raw_with_versions(&[&rustls::version::TLS12]);
    raw.send(&versions(&[4, 5]));
    raw.send(&netinfo(unix_now()));
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_open());
    assert_eq!(resp.stats().tls_path, TlsPath::RustlsTls12);
    raw.plain.clear();
    for round in 0..3u8 {
        relay_both_ways(&mut resp, &mut sink, &mut raw, round);
    }
}

/// The peer's bytes cut at random points, before and after the switch: records that span
/// reads are gathered (one record at a time for rustls, then opened in place), and cells
/// that span records are assembled. Seeded.
#[test]
fn records_split_across_reads_before_and_after_the_switch() {
    let seed = fors_testkit::test_seed("records_split_across_reads_before_and_after_the_switch");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = RawInitiator::new();
    raw.tls.set_buffer_limit(None);
    raw.send(&versions(&[4, 5]));
    raw.send(&netinfo(unix_now()));
    // The first cells go in the same write as NETINFO: some arrive in NETINFO's record.
    let mut want = Vec::new();
    for i in 0..200u32 {
        let body = [(i % 251) as u8; 509];
        raw.send(&fixed_cell(
            0x8000_0000 | (i % 7 + 1),
            ChanCmd::RELAY,
            &body,
        ));
        want.push(body.to_vec());
        if i % 37 == 0 {
            // Var cells between them, of all sizes, spanning records.
            raw.send(&var_cell(
                ChanCmd::VPADDING,
                &vec![0; rng.gen_range(0..3000)],
            ));
        }
    }
    let mut rrng = rand::thread_rng();
    for _ in 0..1000 {
        let mut out = Vec::new();
        while raw.tls.wants_write() {
            raw.tls.write_tls(&mut out).unwrap();
        }
        let mut s = &out[..];
        while !s.is_empty() {
            let n = rng.gen_range(1..=s.len().min(1500));
            resp.handle_input(&s[..n], now(), &mut rrng, &mut sink)
                .unwrap();
            s = &s[n..];
        }
        let back = resp.pending_output().to_vec();
        resp.consume_output(back.len());
        if back.is_empty() && out.is_empty() {
            break;
        }
        let mut b = &back[..];
        while !b.is_empty() {
            raw.tls.read_tls(&mut b).unwrap();
            raw.tls.process_new_packets().unwrap();
        }
    }
    assert!(resp.is_open(), "{:?}", sink.events);
    assert_eq!(resp.stats().tls_path, TlsPath::RecordLayer);
    let got: Vec<Vec<u8>> = sink.cells.iter().map(|c| c.2.clone()).collect();
    assert_eq!(got, want, "seed {seed}");
}

/// A plaintext probe before any TLS (an HTTP request) is refused at once, as rustls would:
/// the channel, which parses record headers itself until the switch, does not wait for the
/// 8,244 bytes "GET / " would claim as a record.
#[test]
fn plaintext_probe_before_tls_closes_at_once() {
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let r = resp.handle_input(
        b"GET / HTTP/1.1\r\n\r\n",
        now(),
        &mut rand::thread_rng(),
        &mut sink,
    );
    assert!(matches!(r, Err(ChannelError::Tls(_))), "{r:?}");
    assert!(resp.is_closed());
}

/// The peer updates its keys during the link handshake, asking for ours, while the channel
/// still reads through rustls: rustls follows (and holds its answering KeyUpdate back until
/// its next write). At the switch the channel puts that KeyUpdate out first and the record
/// layer follows the logged secrets to the updated keys; cells then flow both ways.
#[test]
fn key_update_during_the_link_handshake_then_switch() {
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = RawInitiator::new();
    raw.send(&versions(&[4, 5]));
    raw.exchange(&mut resp, &mut sink);
    assert!(!raw.tls.is_handshaking());
    assert!(!resp.is_open());
    raw.tls.refresh_traffic_keys().unwrap();
    raw.send(&netinfo(unix_now()));
    raw.exchange(&mut resp, &mut sink);
    assert!(resp.is_open(), "{:?}", sink.events);
    assert_eq!(resp.stats().tls_path, TlsPath::RecordLayer);
    raw.plain.clear();
    for round in 0..3u8 {
        relay_both_ways(&mut resp, &mut sink, &mut raw, round);
    }
}

/// A cell that straddles two records is the only one copied into the channel's receive
/// buffer (the copy map's `ChanInbuf`), also when it is a variable-length cell: past its
/// first 514 bytes only what it still needs, and before that no bytes of the cells after
/// it (they are framed where they lie in the next record). The cells come out whole and
/// in order.
#[test]
fn only_the_straddling_cell_is_copied() {
    if !fors::util::copies::ENABLED {
        println!("SKIPPED: copy counters are off");
        return;
    }
    use fors::util::copies::{self, CopySite};
    // (VPADDING body length, bytes of the cell in the first record)
    for (body, split) in [(1000, 600), (1000, 513), (100, 50), (100, 5), (100, 2)] {
        let (mut resp, mut sink, mut raw) = open_client();
        let cell = var_cell(ChanCmd::VPADDING, &vec![7; body]);
        raw.send(&cell[..split]);
        let mut second = cell[split..].to_vec();
        for i in 1..=3u8 {
            second.extend_from_slice(&fixed_cell(
                0x8000_0000 + u32::from(i),
                ChanCmd::CREATE_FAST,
                &[i; 509],
            ));
        }
        raw.send(&second);
        let before = copies::snapshot();
        raw.exchange(&mut resp, &mut sink);
        let copied =
            copies::snapshot()[CopySite::ChanInbuf as usize] - before[CopySite::ChanInbuf as usize];
        assert!(resp.is_open(), "{:?}", sink.events);
        let got: Vec<_> = sink
            .cells
            .iter()
            .map(|(id, cmd, b)| (id.0, *cmd, b[0]))
            .collect();
        assert_eq!(
            got,
            (1..=3u8)
                .map(|i| (0x8000_0000 + u32::from(i), ChanCmd::CREATE_FAST, i))
                .collect::<Vec<_>>(),
            "body {body}, split {split}"
        );
        assert_eq!(
            copied,
            cell.len() as u64,
            "body {body}, split {split}: {copied} bytes copied into the receive buffer, the \
             straddling cell has {}",
            cell.len()
        );
    }
}

/// The shard's receive buffer with the shipped profiles (16 KiB + `RECV_BUF_SLACK`).
const BUF: usize = 16 * 1024 + fors::config::hwprofile::RECV_BUF_SLACK as usize;

/// The peer's records in reads cut where `Channel::read_hint` asks (right after the
/// next record's header) and, now and then, a few bytes short of it or past it, so the
/// header itself is split (0–4 of its bytes in one read) or a record's body spans reads.
/// A body whose header came in the read before is opened where it lies
/// (`split_records_opened`, no gather); the others are gathered; every cell arrives
/// intact and in order. Seeded.
#[test]
fn records_opened_behind_a_header_from_the_read_before() {
    let seed = fors_testkit::test_seed("records_opened_behind_a_header_from_the_read_before");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut resp, mut sink, mut raw) = open_client();
    assert_eq!(resp.stats().tls_path, TlsPath::RecordLayer);
    raw.tls.set_buffer_limit(None);
    let mut want = Vec::new();
    // Written in flushes of up to 100 cells (rustls cuts each into full records and a
    // smaller last one), as a bulk sender does.
    let mut i = 0u32;
    while i < 2400 {
        let mut flush = Vec::new();
        for _ in 0..rng.gen_range(1..=100) {
            let body = [(i % 251) as u8; 509];
            flush.extend_from_slice(&fixed_cell(
                0x8000_0000 | (i % 5 + 1),
                ChanCmd::RELAY,
                &body,
            ));
            want.push(body.to_vec());
            i += 1;
        }
        raw.send(&flush);
    }
    let wire = take_wire(&mut raw);
    let before = resp.stats();
    let mut pos = 0;
    let mut hinted = 0;
    let mut crng = rand::thread_rng();
    while pos < wire.len() {
        let n = match resp.read_hint(BUF) {
            Some(h) => {
                hinted += 1;
                match rng.gen_range(0..16) {
                    // A few bytes short: the next header (or the body's end) is cut.
                    0 => h.saturating_sub(rng.gen_range(1..=7)).max(1),
                    1 => h + rng.gen_range(1..=600),
                    _ => h,
                }
            }
            None => rng.gen_range(1..=BUF),
        }
        .min(wire.len() - pos);
        let mut read = wire[pos..pos + n].to_vec();
        resp.handle_input_mut(&mut read, now(), &mut crng, &mut sink)
            .unwrap();
        pos += n;
    }
    assert!(resp.is_open(), "{:?}", sink.events);
    let got: Vec<Vec<u8>> = sink.cells.iter().map(|c| c.2.clone()).collect();
    assert_eq!(got.len(), want.len(), "seed {seed}");
    assert!(got == want, "cells differ, seed {seed}");
    let after = resp.stats();
    let split = after.split_records_opened - before.split_records_opened;
    let gathered = after.records_gathered - before.records_gathered;
    let bytes = after.record_bytes_gathered - before.record_bytes_gathered;
    println!("{hinted} hinted reads, {split} records opened split, {gathered} gathered");
    // Each gathered record's bytes are counted once, at most a full record's.
    assert!(
        bytes >= gathered && bytes <= gathered * 16_406,
        "{bytes} bytes gathered"
    );
    assert!(
        hinted > 5,
        "full records make the channel ask for capped reads"
    );
    // Seven reads in eight end where asked; a read after one that did opens its record
    // split unless it falls short of the body; 0.4 of the hinted reads leaves room for
    // chance (and for a pause of the hints, should many reads in a row miss) and still
    // fails if none opens split.
    assert!(
        split * 5 >= hinted * 2,
        "most records open behind their header ({split} split of {hinted} hinted reads, \
         {gathered} gathered), seed {seed}"
    );
}

/// A record opened behind a header from the read before is authenticated with that
/// header: a changed header byte (the legacy version, which nothing else checks) or body
/// byte fails as bad_record_mac and closes the channel.
#[test]
fn a_split_record_is_authenticated_with_its_header() {
    for (what, at_header) in [("none", false), ("header", true), ("body", false)] {
        let (mut resp, mut sink, mut raw) = open_client();
        raw.tls.set_buffer_limit(None);
        for i in 0..40u32 {
            raw.send(&fixed_cell(0x8000_0001, ChanCmd::RELAY, &[i as u8; 509]));
        }
        let wire = take_wire(&mut raw);
        let mut crng = rand::thread_rng();
        // The first record's header alone, then the rest.
        let mut head = wire[..5].to_vec();
        let mut rest = wire[5..].to_vec();
        if at_header {
            head[2] ^= 0x01;
        } else if what == "body" {
            rest[100] ^= 0x01;
        }
        resp.handle_input_mut(&mut head, now(), &mut crng, &mut sink)
            .unwrap();
        let r = resp.handle_input_mut(&mut rest, now(), &mut crng, &mut sink);
        if what == "none" {
            // The control: the same cut opens the record split, and its cells arrive.
            r.unwrap();
            assert_eq!(resp.stats().split_records_opened, 1);
            assert_eq!(resp.stats().records_gathered, 0);
            assert_eq!(sink.cells.len(), 40);
            continue;
        }
        assert_eq!(resp.stats().split_records_opened, 0, "{what}");
        assert!(
            matches!(
                r,
                Err(ChannelError::TlsRecord(TlsRecordError::Open(
                    OpenError::BadRecordMac
                )))
            ),
            "{what}: {r:?}"
        );
        assert!(resp.is_closed(), "{what}");
        assert!(
            sink.cells.is_empty(),
            "{what}: nothing of the record is delivered"
        );
        // The peer is told why: a bad_record_mac alert (RFC 8446 §5.2), as rustls sends.
        let back = resp.pending_output().to_vec();
        let mut b = &back[..];
        while !b.is_empty() && raw.tls.read_tls(&mut b).unwrap() > 0 {}
        let e = raw.tls.process_new_packets().expect_err("an alert");
        assert_eq!(
            e,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
            "{what}"
        );
    }
}

/// A sender's run of equal records smaller than a buffer (C tor writes one per 4 KiB
/// buffer chunk: 4,086 bytes on the wire): reads end where `read_hint` asks — after as
/// many whole records as fit and the next header — so after the first read no record is
/// cut and gathered, and each read still fills most of a buffer.
#[test]
fn runs_of_equal_small_records_are_read_whole() {
    let (mut resp, mut sink, mut raw) = open_client();
    raw.tls.set_buffer_limit(None);
    let mut stream = Vec::new();
    for i in 0..1000u32 {
        stream.extend_from_slice(&fixed_cell(0x8000_0001, ChanCmd::RELAY, &[i as u8; 509]));
    }
    for chunk in stream.chunks(4064) {
        raw.send(chunk);
    }
    let wire = take_wire(&mut raw);
    let before = resp.stats();
    let mut crng = rand::thread_rng();
    let (mut pos, mut reads) = (0usize, 0usize);
    while pos < wire.len() {
        let n = resp.read_hint(BUF).unwrap_or(BUF).min(wire.len() - pos);
        assert!(n <= BUF);
        let mut read = wire[pos..pos + n].to_vec();
        resp.handle_input_mut(&mut read, now(), &mut crng, &mut sink)
            .unwrap();
        pos += n;
        reads += 1;
    }
    assert_eq!(sink.cells.len(), 1000);
    let after = resp.stats();
    let gathered = after.records_gathered - before.records_gathered;
    let split = after.split_records_opened - before.split_records_opened;
    println!(
        "{reads} reads of {} bytes: {split} split, {gathered} gathered",
        wire.len()
    );
    assert!(gathered <= 1, "{gathered} records gathered");
    assert!(
        split as usize + 2 >= reads,
        "each read after the first ends after a header"
    );
    // 4 records a read (16,344 of 16,448 bytes), not one.
    assert!(reads * 4 <= wire.len().div_ceil(4086) + 8, "{reads} reads");
}

/// Reads driven by `read_hint` over a stream of records of the given plaintext lengths
/// (one `send` each, so one record each): returns (reads, wire bytes, records gathered).
/// Every hint stays within a buffer and covers at least what the record under way lacks.
fn hinted_reads(lens: &[usize]) -> (usize, usize, u64) {
    let (mut resp, mut sink, mut raw) = open_client();
    raw.tls.set_buffer_limit(None);
    let mut cells = 0;
    for &len in lens {
        assert_eq!(len % 514, 0);
        let mut rec = Vec::new();
        for _ in 0..len / 514 {
            rec.extend_from_slice(&fixed_cell(0x8000_0001, ChanCmd::RELAY, &[1; 509]));
            cells += 1;
        }
        raw.send(&rec);
    }
    let wire = take_wire(&mut raw);
    let before = resp.stats();
    let mut crng = rand::thread_rng();
    let (mut pos, mut reads) = (0usize, 0usize);
    while pos < wire.len() {
        let n = match resp.read_hint(BUF) {
            Some(h) => {
                assert!((HEADER_LEN..=BUF).contains(&h), "hint {h}");
                h
            }
            None => BUF,
        }
        .min(wire.len() - pos);
        let mut read = wire[pos..pos + n].to_vec();
        resp.handle_input_mut(&mut read, now(), &mut crng, &mut sink)
            .unwrap();
        pos += n;
        reads += 1;
    }
    assert_eq!(sink.cells.len(), cells);
    let gathered = resp.stats().records_gathered - before.records_gathered;
    (reads, wire.len(), gathered)
}

const HEADER_LEN: usize = fors::proto::tls_record::HEADER_LEN;

/// A peer's small records do not make reads small: a run of one-cell records fills each
/// read as an uncapped read would; a peer alternating full and one-cell records can at
/// most double the reads its bytes take (one short read where a guess was too long).
#[test]
fn small_or_alternating_records_do_not_multiply_reads() {
    let (reads, wire, _) = hinted_reads(&[514; 400]);
    let full = wire.div_ceil(BUF);
    println!("one-cell records: {reads} reads of {wire} bytes (uncapped: {full})");
    assert!(reads <= full + 2, "{reads} reads, {full} uncapped");
    let alternating: Vec<usize> = (0..60)
        .map(|i| if i % 2 == 0 { 31 * 514 } else { 514 })
        .collect();
    let (reads, wire, gathered) = hinted_reads(&alternating);
    let full = wire.div_ceil(BUF);
    println!("alternating: {reads} reads of {wire} bytes (uncapped: {full}), {gathered} gathered");
    assert!(reads <= 2 * full + 2, "{reads} reads, {full} uncapped");
}

/// Records whose lengths do not repeat (as a C tor relay's, which follow how full its
/// buffer chunks were at each flush), read as a shard with a backlog reads them: most
/// capped reads still end inside a record, so the channel stops capping for
/// `HINT_PAUSE_READS` reads (the shard goes back to multishot receives) and then tries
/// again. Every cell arrives. Seeded.
#[test]
fn read_hints_pause_when_record_lengths_cannot_be_guessed() {
    let seed = fors_testkit::test_seed("read_hints_pause_when_record_lengths_cannot_be_guessed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut resp, mut sink, mut raw) = open_client();
    raw.tls.set_buffer_limit(None);
    let mut cells = 0;
    for _ in 0..4000 {
        let mut rec = Vec::new();
        for _ in 0..rng.gen_range(1..=8) {
            rec.extend_from_slice(&fixed_cell(0x8000_0001, ChanCmd::RELAY, &[3; 509]));
            cells += 1;
        }
        raw.send(&rec);
    }
    let wire = take_wire(&mut raw);
    let mut crng = rand::thread_rng();
    let (mut pos, mut capped, mut uncapped) = (0usize, 0usize, 0usize);
    while pos < wire.len() {
        let n = match resp.read_hint(BUF) {
            Some(h) => {
                capped += 1;
                h
            }
            None => {
                uncapped += 1;
                BUF
            }
        }
        .min(wire.len() - pos);
        let mut read = wire[pos..pos + n].to_vec();
        resp.handle_input_mut(&mut read, now(), &mut crng, &mut sink)
            .unwrap();
        pos += n;
    }
    assert_eq!(sink.cells.len(), cells, "seed {seed}");
    let st = resp.stats();
    println!(
        "{capped} capped, {uncapped} uncapped reads; {} pauses; {} split, {} gathered",
        st.read_hint_pauses, st.split_records_opened, st.records_gathered
    );
    // About 570 reads: a pause of 256, a second try, a second pause.
    assert!(
        st.read_hint_pauses >= 2,
        "it tries again after a pause, seed {seed}"
    );
    assert!(
        capped <= 80,
        "{capped} capped reads: the hint pauses, seed {seed}"
    );
    assert!(uncapped > 4 * capped, "seed {seed}");
}

/// The peer's full records as reads of a whole buffer that ignore the caps — what a
/// multishot receive delivers before the cancel a first cap asks for lands — and then as
/// reads that honour them: the uncapped reads are not judged (no pause), and the capped
/// ones open their records in place. A quiet channel, where each read is one small record
/// the sender just wrote, never fills a cap, and pauses.
#[test]
fn read_hints_judge_only_capped_reads() {
    let (mut resp, mut sink, mut raw) = open_client();
    raw.tls.set_buffer_limit(None);
    let cell = fixed_cell(0x8000_0001, ChanCmd::RELAY, &[5; 509]);
    for _ in 0..40 {
        raw.send(&cell.repeat(31));
    }
    let wire = take_wire(&mut raw);
    let mut crng = rand::thread_rng();
    let mut pos = 0;
    for i in 0..40 {
        let hint = resp.read_hint(BUF);
        let n = if i < 20 { BUF } else { hint.unwrap_or(BUF) }.min(wire.len() - pos);
        let mut read = wire[pos..pos + n].to_vec();
        resp.handle_input_mut(&mut read, now(), &mut crng, &mut sink)
            .unwrap();
        pos += n;
        if pos == wire.len() {
            break;
        }
    }
    let st = resp.stats();
    assert_eq!(st.read_hint_pauses, 0, "uncapped reads are not judged");
    assert!(st.split_records_opened >= 10, "{st:?}");

    // Quiet: one small record per read, each shorter than the cap: after 16 such reads
    // the caps have bought nothing and pause.
    let (mut resp, mut sink, mut raw) = open_client();
    let mut hints = Vec::new();
    for _ in 0..30 {
        raw.send(&cell);
        let mut rec = Vec::new();
        while raw.tls.wants_write() {
            raw.tls.write_tls(&mut rec).unwrap();
        }
        resp.handle_input_mut(&mut rec, now(), &mut crng, &mut sink)
            .unwrap();
        hints.push(resp.read_hint(BUF));
    }
    assert_eq!(sink.cells.len(), 30);
    assert_eq!(resp.stats().read_hint_pauses, 1, "{hints:?}");
    assert!(hints[..16].iter().all(Option::is_some), "{hints:?}");
    assert!(hints[17..].iter().all(Option::is_none), "{hints:?}");
}

/// Records longer than a buffer can never be opened in place (a buffer smaller than the
/// shipped one, or a peer's longest legal record): no cap is asked for them, so the
/// shard keeps its multishot receive.
#[test]
fn no_read_hint_for_records_longer_than_a_buffer() {
    let (mut resp, mut sink, mut raw) = open_client();
    raw.tls.set_buffer_limit(None);
    let cell = fixed_cell(0x8000_0001, ChanCmd::RELAY, &[6; 509]);
    for _ in 0..10 {
        raw.send(&cell.repeat(32));
    }
    let wire = take_wire(&mut raw);
    let small = 8192;
    let mut crng = rand::thread_rng();
    let mut pos = 0;
    while pos < wire.len() {
        let n = small.min(wire.len() - pos);
        let mut read = wire[pos..pos + n].to_vec();
        resp.handle_input_mut(&mut read, now(), &mut crng, &mut sink)
            .unwrap();
        pos += n;
        assert_eq!(resp.read_hint(small), None, "at {pos}");
    }
    assert_eq!(sink.cells.len(), 320);
}

/// Everything the raw peer has to send, as TLS bytes on the wire.
fn take_wire(raw: &mut RawInitiator) -> Vec<u8> {
    let mut wire = Vec::new();
    while raw.tls.wants_write() {
        raw.tls.write_tls(&mut wire).unwrap();
    }
    wire
}
