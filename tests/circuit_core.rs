//! The circuit core end to end, driven by an in-memory Tor client: handshakes, extend and
//! middle forwarding, exit streams, flow control, teardown, and the bounds.

mod circuit_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use circuit_common::*;
use fors::cell::chan::{Create2, Created2, DestroyReason, HandshakeType};
use fors::cell::relay::msg::{
    BeginTarget, Connected, End, EndReason, LinkSpec, RelayMsg, Resolve, Resolved, ResolvedValue,
    Sendme,
};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::NtorClient;
use fors::exit::dns::{Answer, DnsFailure, FailureCause, HostRequest, Resolution};
use fors::proto::circuit::{
    Action, ChanId, ChanInfo, CircuitConfig, ConnectError, ExtendDone, MemBudget, NextHop,
    ShardIdx, CHUNK_CELLS,
};
use fors::proto::flow::RANDOM_SENDME_PAYLOAD_LEN;

fn found_v4(a: Ipv4Addr, ttl: u32) -> Resolution {
    Resolution {
        ipv4: Answer::Found { value: a, ttl },
        ..Resolution::NONE
    }
}
use fors::proto::stream::StreamHandle;

const EXIT_LOCAL: &str = "accept 127.0.0.1:*, reject *:*";

fn exit_relay(net: TestNet) -> Relay {
    Relay::new(9, test_config(), EXIT_LOCAL, net)
}

/// A relay-peer channel from a known middle (so BEGIN is allowed).
fn known_middle() -> (TestNet, fors::proto::circuit::RelayIdentity) {
    let mid = fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    };
    (
        TestNet {
            known: vec![mid.rsa],
            reentry: vec![],
        },
        mid,
    )
}

fn connect_action(actions: &[Action]) -> (StreamHandle, SocketAddr) {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Connect { stream, addr } => Some((*stream, *addr)),
            _ => None,
        })
        .expect("a Connect action")
}

/// An exit with one circuit from a known relay and one open stream to 127.0.0.1:80.
fn open_stream() -> (Relay, Client, StreamHandle) {
    let (net, mid) = known_middle();
    let mut exit = exit_relay(net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        7,
    );
    let (stream, addr) = connect_action(&acts);
    assert_eq!(addr, "127.0.0.1:80".parse().unwrap());
    let (r, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io));
    r.unwrap();
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::CONNECTED, 7));
    (exit, cl, stream)
}

#[test]
fn create2_ntor_and_create_fast_and_ntor_v3_with_cc_request() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut a = Client::new(client_chan(1), 0x8000_0001);
    assert!(a.create(&mut r, Hs::Ntor).is_empty());
    let mut b = Client::new(client_chan(1), 0x8000_0002);
    b.create(&mut r, Hs::Fast);
    let mut c = Client::new(client_chan(2), 0x8000_0001);
    // CC requested: with the default (consensus cc_alg = Vegas) Fors echoes sendme_inc 31.
    assert_eq!(
        c.create(&mut r, Hs::NtorV3 { cc: true }),
        vec![fors::crypto::handshake::CircuitExtension::CcResponse { sendme_inc: 31 }]
    );
    assert_eq!(r.core.circuit_count(), 3);
    assert_eq!(r.core.metrics().circuits_created, 3);
    // Each circuit's keys work: DROP is recognized and discarded without any output.
    for cl in [&mut a, &mut b, &mut c] {
        assert!(cl
            .send(&mut r, 0, ChanCmd::RELAY, &RelayMsg::Drop, 0)
            .is_empty());
    }
    assert_eq!(r.core.metrics().cells_recognized, 3);
}

#[test]
fn obsolete_create_wrong_high_bit_and_bad_htype_are_destroyed() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let ch = client_chan(1);
    let body = [0u8; CELL_BODY_LEN];
    let acts = r.cell(&ch, CircId(0x8000_0005), ChanCmd::CREATE, body);
    let (_, id, cmd, b) = one_cell(&acts);
    assert_eq!(
        (id, cmd, destroy_reason(&b)),
        (
            CircId(0x8000_0005),
            ChanCmd::DESTROY,
            DestroyReason::TorProtocol
        )
    );
    // The client opened the connection, so its IDs must have the high bit set.
    let acts = r.cell(&ch, CircId(5), ChanCmd::CREATE_FAST, body);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    // TAP inside CREATE2.
    let mut b2 = [0u8; CELL_BODY_LEN];
    Create2 {
        htype: HandshakeType::TAP,
        hdata: &[1; 186],
    }
    .encode(&mut b2)
    .unwrap();
    let acts = r.cell(&ch, CircId(0x8000_0006), ChanCmd::CREATE2, b2);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    // Circuit ID 0 is dropped silently.
    assert!(r
        .cell(&ch, CircId(0), ChanCmd::CREATE_FAST, body)
        .is_empty());
    assert_eq!(r.core.circuit_count(), 0);
    // A bad onionskin fails the handshake → DESTROY.
    Create2 {
        htype: HandshakeType::NTOR,
        hdata: &[7; 84],
    }
    .encode(&mut b2)
    .unwrap();
    assert!(r
        .cell(&ch, CircId(0x8000_0007), ChanCmd::CREATE2, b2)
        .is_empty());
    let acts = r.onions();
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    assert_eq!(r.core.metrics().handshake_failures, 1);
}

/// Client → A (middle) → B (exit): EXTEND2 becomes `Action::Extend`; the CREATED2 comes
/// back as EXTENDED2; cells then flow both ways through both cores.
#[test]
fn extend_and_forward_through_two_cores() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut b = Relay::new(
        2,
        test_config(),
        EXIT_LOCAL,
        TestNet {
            known: vec![fors::crypto::ids::RsaIdentity([1; 20])],
            reentry: vec![],
        },
    );
    let mut cl = Client::new(client_chan(100), 0x8000_0001);
    cl.create(&mut a, Hs::Ntor);

    let specs = [
        LinkSpec::Ipv4("127.0.0.1:9002".parse().unwrap()),
        LinkSpec::RsaId(b.id.rsa),
        LinkSpec::Ed25519Id(b.id.ed),
    ];
    let hs = Handshake::Ntor {
        rsa: b.id.rsa,
        onion: *b.keys.current().public(),
    };
    let body = cl.circ.extend(&mut cl.rng, &specs, &hs).unwrap();
    let acts = a.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY_EARLY, body);
    let (circ, target, create2) = match &acts[..] {
        [Action::Extend {
            circ,
            target,
            create2,
        }] => (*circ, *target, *create2),
        other => panic!("{other:?}"),
    };
    assert_eq!(target.rsa, b.id.rsa);
    assert_eq!(target.ipv4, Some("127.0.0.1:9002".parse().unwrap()));

    // The shard opens channel A→B (A initiated: its IDs have the high bit set).
    let ab_on_b = relay_chan(200, &a.id, false);
    let ab_id = CircId(0x8000_0042);
    assert!(b
        .cell(&ab_on_b, ab_id, ChanCmd::CREATE2, create2)
        .is_empty());
    let (_, _, cmd, created2) = one_cell(&b.onions());
    assert_eq!(cmd, ChanCmd::CREATED2);
    let next = NextHop {
        chan: ChanId(201),
        shard: ShardIdx(0),
        circ_id: ab_id,
    };
    let (r, acts) = a.io(|c, io| {
        c.extend_result(
            circ,
            Ok(ExtendDone {
                next,
                created2: &created2,
            }),
            io,
        )
    });
    r.unwrap();
    let got = cl.open_all(&acts);
    assert_eq!(got[0].1, RelayCmd::EXTENDED2);
    let hdata = fors::cell::relay::msg::Extended2::parse(&got[0].3)
        .unwrap()
        .hdata;
    cl.circ.extended(hdata).unwrap();
    // A second EXTEND2 on the same circuit is refused.
    assert_eq!(Created2::parse(&created2).unwrap().hdata.len(), 64);

    // BEGIN to hop 1 (B) passes through A unrecognized.
    let acts = cl.send(
        &mut a,
        1,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        3,
    );
    let (ch, id, cmd, fwd) = one_cell(&acts);
    assert_eq!((ch, id, cmd), (ChanId(201), ab_id, ChanCmd::RELAY));
    let acts = b.cell(&ab_on_b, ab_id, cmd, fwd);
    let (stream, addr) = connect_action(&acts);
    let (_, acts) = b.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
    let (ch, id, cmd, back) = one_cell(&acts);
    assert_eq!((ch, id), (ChanId(200), ab_id));
    // Back at A on the A→B channel: one layer added, sent to the client.
    let ab_on_a = relay_chan(201, &b.id, true);
    let acts = a.cell(&ab_on_a, ab_id, cmd, back);
    let got = cl.open_all(&acts);
    assert_eq!((got[0].0, got[0].1, got[0].2), (1, RelayCmd::CONNECTED, 3));
    let conn = Connected::parse(&got[0].3).unwrap();
    assert_eq!(conn.addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(a.core.metrics().cells_forwarded, 1);
    assert_eq!(a.core.metrics().cells_backward, 1);

    // DATA both ways through both cores.
    let acts = cl.send(&mut a, 1, ChanCmd::RELAY, &RelayMsg::Data(b"GET /"), 3);
    let (_, _, cmd, fwd) = one_cell(&acts);
    let acts = b.cell(&ab_on_b, ab_id, cmd, fwd);
    assert!(matches!(&acts[..], [Action::StreamWrite { data, .. }] if data.as_slice() == b"GET /"));
    let (n, acts) = b.io(|c, io| c.stream_data(stream, b"HTTP/1.0 200 OK", io));
    assert_eq!(n.unwrap(), 15);
    let (_, _, cmd, back) = one_cell(&acts);
    let got = cl.open_all(&a.cell(&ab_on_a, ab_id, cmd, back));
    assert_eq!(
        (got[0].1, &got[0].3[..]),
        (RelayCmd::DATA, &b"HTTP/1.0 200 OK"[..])
    );

    // A RELAY_EARLY from the next hop (backward) closes the circuit at A.
    let acts = a.cell(&ab_on_a, ab_id, ChanCmd::RELAY_EARLY, [0u8; CELL_BODY_LEN]);
    let c = cells(&acts);
    assert_eq!(c.len(), 2);
    assert!(c
        .iter()
        .all(|x| x.2 == ChanCmd::DESTROY && destroy_reason(&x.3) == DestroyReason::TorProtocol));
}

#[test]
fn extend2_refusals_close_the_circuit() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let prev = Relay::new(5, test_config(), "reject *:*", TestNet::default());
    let skin = [0u8; 84];
    let mut ext = [0u8; 498];
    // Extending back to the previous hop.
    let mut cl = Client::new(relay_chan(1, &prev.id, false), 0x8000_0001);
    cl.create(&mut a, Hs::Ntor);
    let n = extend2_body(&prev, "127.0.0.2:9001", &skin, &mut ext);
    let m = RelayMsg::Extend2(fors::cell::relay::msg::Extend2::parse(&ext[..n]).unwrap());
    let acts = cl.send(&mut a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    // Not in RELAY_EARLY: dropped, circuit stays.
    let mut cl = Client::new(client_chan(2), 0x8000_0001);
    cl.create(&mut a, Hs::Ntor);
    let n = extend2_body(&b, "127.0.0.2:9001", &skin, &mut ext);
    let m = RelayMsg::Extend2(fors::cell::relay::msg::Extend2::parse(&ext[..n]).unwrap());
    assert!(cl.send(&mut a, 0, ChanCmd::RELAY, &m, 0).is_empty());
    // Private address without ExtendAllowPrivateAddresses.
    let mut strict = Relay::new(
        3,
        CircuitConfig {
            extend_allow_private: false,
            ..test_config()
        },
        "reject *:*",
        TestNet::default(),
    );
    let mut cl = Client::new(client_chan(3), 0x8000_0001);
    cl.create(&mut strict, Hs::Ntor);
    let acts = cl.send(&mut strict, 0, ChanCmd::RELAY_EARLY, &m, 0);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    // A second EXTEND2 while the first is pending.
    let mut cl = Client::new(client_chan(4), 0x8000_0001);
    cl.create(&mut a, Hs::Ntor);
    assert!(matches!(
        &cl.send(&mut a, 0, ChanCmd::RELAY_EARLY, &m, 0)[..],
        [Action::Extend { .. }]
    ));
    let acts = cl.send(&mut a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    assert_eq!(a.core.metrics().extends_refused, 2);
}

#[test]
fn begin_literal_ip_connect_and_connected_ttl() {
    let (_exit, _cl, _stream) = open_stream();
    // Check the CONNECTED payload again on a fresh exit, looking at the TTL.
    let (net, mid) = known_middle();
    let mut exit = exit_relay(net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::NtorV3 { cc: false });
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 443),
        1,
    );
    let (stream, addr) = connect_action(&acts);
    let (_, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
    let got = cl.open_all(&acts);
    let conn = Connected::parse(&got[0].3).unwrap();
    assert_eq!(conn.addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    // Literal IP: 30 min default TTL → 1 h bucket ± 240 s.
    let ttl = conn.ttl.unwrap();
    assert!((3360..=3840).contains(&ttl), "{ttl}");
    assert_eq!(exit.core.metrics().streams_opened, 1);
}

#[test]
fn exit_policy_rejection_carries_address_and_ttl() {
    let (net, mid) = known_middle();
    let mut exit = Relay::new(9, test_config(), "accept 127.0.0.1:80, reject *:*", net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 25),
        4,
    );
    let got = cl.open_all(&acts);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::END, 4));
    let end = End::parse(&got[0].3).unwrap();
    assert_eq!(end.reason, EndReason::ExitPolicy);
    assert_eq!(end.addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert!((3360..=3840).contains(&end.ttl.unwrap()));
    assert_eq!(exit.core.metrics().streams_refused_policy, 1);
    // Re-entry into a known ORPort → CONNECTREFUSED.
    let (mut net, mid) = known_middle();
    net.reentry.push("127.0.0.1:80".parse().unwrap());
    let mut exit = Relay::new(9, test_config(), "accept 127.0.0.1:80, reject *:*", net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        4,
    );
    let got = cl.open_all(&acts);
    assert_eq!(
        End::parse(&got[0].3).unwrap().reason,
        EndReason::ConnectRefused
    );
}

#[test]
fn hostname_begin_resolve_failed_and_resolved() {
    let (net, mid) = known_middle();
    let mut exit = Relay::new(9, test_config(), "accept *:80, reject *:*", net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Hostname("example.com"), 80),
        5,
    );
    let (stream, name) = match &acts[..] {
        [Action::Resolve {
            stream,
            request: HostRequest::Forward(name),
            ..
        }] => (*stream, *name),
        other => panic!("{other:?}"),
    };
    assert_eq!(name.as_bytes(), b"example.com");
    let (_, acts) = exit.io(|c, io| {
        c.dns_result(
            stream,
            &Resolution {
                ipv4: Answer::Failed(DnsFailure {
                    cause: FailureCause::NxDomain,
                }),
                ..Resolution::NONE
            },
            io,
        )
        .unwrap()
    });
    let got = cl.open_all(&acts);
    assert_eq!(
        End::parse(&got[0].3).unwrap().reason,
        EndReason::ResolveFailed
    );
    // A port the policy refuses for every address: END EXITPOLICY without a lookup.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Hostname("example.com"), 25),
        6,
    );
    let got = cl.open_all(&acts);
    assert_eq!(End::parse(&got[0].3).unwrap().reason, EndReason::ExitPolicy);
    // Bad characters → RESOLVEFAILED.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Hostname("ex%ample.com"), 80),
        8,
    );
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::ResolveFailed
    );
    // Resolved → policy on the address → Connect.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Hostname("example.org"), 80),
        9,
    );
    let stream = match &acts[..] {
        [Action::Resolve { stream, .. }] => *stream,
        other => panic!("{other:?}"),
    };
    let (_, acts) = exit.io(|c, io| {
        c.dns_result(stream, &found_v4(Ipv4Addr::new(93, 184, 216, 34), 100), io)
            .unwrap()
    });
    assert_eq!(connect_action(&acts).1, "93.184.216.34:80".parse().unwrap());
    // RESOLVE → Resolve action → RESOLVED with the clipped 60 s TTL; failure → error answer.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Resolve(Resolve {
            hostname: "torproject.org",
        }),
        10,
    );
    let stream = match &acts[..] {
        [Action::Resolve {
            stream,
            request: HostRequest::Forward(_),
            ..
        }] => *stream,
        other => panic!("{other:?}"),
    };
    let (_, acts) = exit.io(|c, io| {
        c.dns_result(stream, &found_v4(Ipv4Addr::new(1, 2, 3, 4), 9999), io)
            .unwrap()
    });
    let got = cl.open_all(&acts);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::RESOLVED, 10));
    let r = Resolved::parse(&got[0].3).unwrap();
    let ans: Vec<_> = r.answers().collect();
    assert_eq!(ans[0].value, ResolvedValue::Ipv4(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(ans[0].ttl, 60);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Resolve(Resolve {
            hostname: "1.0.168.192.in-addr.arpa",
        }),
        11,
    );
    let got = cl.open_all(&acts);
    let r = Resolved::parse(&got[0].3).unwrap();
    assert!(matches!(
        r.answers().next().unwrap().value,
        ResolvedValue::PermanentError(_)
    ));
    // BEGIN_DIR: not a directory cache.
    let acts = cl.send(&mut exit, 0, ChanCmd::RELAY, &RelayMsg::BeginDir, 12);
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::NotDirectory
    );
}

#[test]
fn begin_refused_on_client_channel_and_for_unknown_relays() {
    let mut exit = exit_relay(TestNet::default());
    // A circuit straight from a client: one-hop proxy protection → END TORPROTOCOL.
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        1,
    );
    let got = cl.open_all(&acts);
    assert_eq!(
        End::parse(&got[0].3).unwrap().reason,
        EndReason::TorProtocol
    );
    // From an authenticated relay we don't know (RefuseUnknownExits) → END MISC.
    let stranger = Relay::new(77, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(relay_chan(2, &stranger.id, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        1,
    );
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::Misc
    );
    // Malformed BEGIN → END TORPROTOCOL, circuit stays up.
    let (net, mid) = known_middle();
    let mut exit = exit_relay(net);
    let mut cl = Client::new(relay_chan(3, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Other {
            cmd: RelayCmd::BEGIN,
            body: b"no-port\0",
        },
        2,
    );
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::TorProtocol
    );
    assert_eq!(exit.core.circuit_count(), 1);
}

#[test]
fn data_windows_and_authenticated_sendmes() {
    let (mut exit, mut cl, stream) = open_stream();
    // Client → exit: 100 DATA cells. After 50 a stream SENDME, after 100 a circuit SENDME
    // v1 whose tag is the digest of the 100th cell.
    let mut writes = 0;
    let mut replies = vec![];
    let mut last_tag = [0u8; 20];
    for _ in 0..100 {
        let (body, tag) = cl.relay_cell(0, &RelayMsg::Data(&[0x61; 400]), 7);
        last_tag = tag;
        let acts = exit.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
        writes += acts
            .iter()
            .filter(|a| matches!(a, Action::StreamWrite { .. }))
            .count();
        replies.extend(cl.open_all(&acts));
    }
    assert_eq!(writes, 100);
    let stream_sendmes = replies
        .iter()
        .filter(|r| r.1 == RelayCmd::SENDME && r.2 == 7)
        .count();
    assert_eq!(stream_sendmes, 2);
    let circ: Vec<_> = replies
        .iter()
        .filter(|r| r.1 == RelayCmd::SENDME && r.2 == 0)
        .collect();
    assert_eq!(circ.len(), 1);
    match Sendme::parse(&circ[0].3).unwrap() {
        Sendme::V1 { tag } => assert_eq!(tag, &last_tag[..]),
        other => panic!("{other:?}"),
    }

    // Exit → client: the stream window (500 cells) stops packaging and pauses the socket.
    let big = vec![0x42u8; 600 * 498];
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &big, io));
    let n = n.unwrap();
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 500);
    assert!(got.iter().all(|g| g.1 == RelayCmd::DATA));
    assert_eq!(n, got.iter().map(|g| g.3.len()).sum::<usize>());
    // Some cells were kept short so SENDME tags stay unpredictable.
    assert!(got.iter().any(|g| g.3.len() == RANDOM_SENDME_PAYLOAD_LEN));
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::PauseStreamRead { .. })));
    let (n2, _) = exit.io(|c, io| c.stream_data(stream, &big, io));
    assert_eq!(n2.unwrap(), 0);

    // The client's stream SENDME reopens the stream; its circuit SENDMEs carry the tag of
    // every 100th cell; the exit resumes reading.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V0),
        7,
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::ResumeStreamRead { .. })));
    // A forged circuit SENDME tag (genuine ones: `genuine_circuit_sendme_is_accepted`).
    let forged = [0xEEu8; 20];
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V1 { tag: &forged }),
        0,
    );
    let c = cells(&acts);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].2, destroy_reason(&c[0].3)),
        (ChanCmd::DESTROY, DestroyReason::TorProtocol)
    );
    assert!(acts.iter().any(|a| matches!(a, Action::StreamClose { .. })));
    assert_eq!(exit.core.metrics().sendme_auth_failures, 1);
}

#[test]
fn genuine_circuit_sendme_is_accepted() {
    let (mut exit, mut cl, stream) = open_stream();
    // Exactly 100 DATA cells: the client owes one circuit SENDME with the 100th's tag.
    let data = vec![1u8; 100 * 498];
    let mut tags = vec![];
    let mut sent = 0;
    while sent < data.len() {
        let (n, acts) = exit
            .io(|c, io| c.stream_data(stream, &data[sent..sent + 498.min(data.len() - sent)], io));
        sent += n.unwrap();
        // Cell by cell (one call may package two: C's DATA-length randomness), so each tag
        // is its own cell's and the count stops at exactly 100.
        for one in acts.iter().map(std::slice::from_ref) {
            if tags.len() < 100 && !cl.open_all(one).is_empty() {
                tags.push(cl.last_tag(0));
            }
        }
        if tags.len() == 100 {
            break;
        }
    }
    assert_eq!(tags.len(), 100);
    let t = tags[99];
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V1 { tag: &t }),
        0,
    );
    assert!(cells(&acts).is_empty(), "{acts:?}");
    assert_eq!(exit.core.circuit_count(), 1);
    // A second SENDME with nothing outstanding is a violation.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V1 { tag: &t }),
        0,
    );
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
}

#[test]
fn optimistic_data_is_delivered_after_connected_and_stream_end() {
    let (net, mid) = known_middle();
    let mut exit = exit_relay(net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        7,
    );
    let (stream, addr) = connect_action(&acts);
    assert!(cl
        .send(&mut exit, 0, ChanCmd::RELAY, &RelayMsg::Data(b"early-1"), 7)
        .is_empty());
    assert!(cl
        .send(&mut exit, 0, ChanCmd::RELAY, &RelayMsg::Data(b"early-2"), 7)
        .is_empty());
    let (_, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
    let writes: Vec<Vec<u8>> = acts
        .iter()
        .filter_map(|a| match a {
            Action::StreamWrite { data, .. } => Some(data.as_slice().to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(writes, vec![b"early-1".to_vec(), b"early-2".to_vec()]);
    assert_eq!(cl.open_all(&acts)[0].1, RelayCmd::CONNECTED);
    assert_eq!(exit.core.metrics().queued_cells, 0);
    // END from the client closes the socket.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::End(End::new(EndReason::Done)),
        7,
    );
    assert!(matches!(&acts[..], [Action::StreamClose { stream: s }] if *s == stream));
    // Socket EOF on another stream → END DONE.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        8,
    );
    let (s2, addr) = connect_action(&acts);
    let (r, acts) =
        exit.io(|c, io| c.stream_connect_failed(s2, ConnectError::Errno(libc::ECONNREFUSED), io));
    r.unwrap();
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::ConnectRefused
    );
    assert!(exit.io(|c, io| c.stream_connected(s2, addr, io)).0.is_err());
}

#[test]
fn relay_early_limit_is_eight() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    cl.create(&mut r, Hs::Ntor);
    for _ in 0..8 {
        assert!(cl
            .send(&mut r, 0, ChanCmd::RELAY_EARLY, &RelayMsg::Drop, 0)
            .is_empty());
    }
    let acts = cl.send(&mut r, 0, ChanCmd::RELAY_EARLY, &RelayMsg::Drop, 0);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    assert_eq!(r.core.circuit_count(), 0);
}

/// Builds client → A with a next hop registered at A via a (fake) extend.
fn middle_with_next(a: &mut Relay, cl: &mut Client, next: NextHop) {
    cl.create(a, Hs::Ntor);
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let mut ext = [0u8; 498];
    let n = extend2_body(&b, "127.0.0.1:9002", &[0u8; 84], &mut ext);
    let m = RelayMsg::Extend2(fors::cell::relay::msg::Extend2::parse(&ext[..n]).unwrap());
    let acts = cl.send(a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    let circ = match &acts[..] {
        [Action::Extend { circ, .. }] => *circ,
        other => panic!("{other:?}"),
    };
    let mut created = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &[5u8; 64] }.encode(&mut created).unwrap();
    let (r, acts) = a.io(|c, io| {
        c.extend_result(
            circ,
            Ok(ExtendDone {
                next,
                created2: &created,
            }),
            io,
        )
    });
    r.unwrap();
    let got = cl.open_all(&acts);
    assert_eq!(got[0].1, RelayCmd::EXTENDED2);
}

#[test]
fn destroy_propagates_as_destroyed_both_ways() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let next = NextHop {
        chan: ChanId(50),
        shard: ShardIdx(0),
        circ_id: CircId(0x8000_0100),
    };
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    middle_with_next(&mut a, &mut cl, next);
    let mut body = [0u8; CELL_BODY_LEN];
    body[0] = 3; // REQUESTED from the client
    let acts = a.cell(&cl.chan, cl.circ_id, ChanCmd::DESTROY, body);
    let (ch, id, cmd, b) = one_cell(&acts);
    assert_eq!(
        (ch, id, cmd, destroy_reason(&b)),
        (
            next.chan,
            next.circ_id,
            ChanCmd::DESTROY,
            DestroyReason::Destroyed
        )
    );
    assert_eq!(a.core.circuit_count(), 0);

    // From the next hop: the client hears DESTROYED, not the remote reason.
    let mut cl = Client::new(client_chan(1), 0x8000_0002);
    middle_with_next(&mut a, &mut cl, next);
    let b_side = relay_chan(
        50,
        &Relay::new(2, test_config(), "reject *:*", TestNet::default()).id,
        true,
    );
    body[0] = 5; // RESOURCELIMIT
    let acts = a.cell(&b_side, next.circ_id, ChanCmd::DESTROY, body);
    let (ch, id, _, b) = one_cell(&acts);
    assert_eq!(
        (ch, id, destroy_reason(&b)),
        (cl.chan.id, cl.circ_id, DestroyReason::Destroyed)
    );

    // Channel close: every circuit on it ends, the other side hears DESTROYED.
    let mut cl = Client::new(client_chan(7), 0x8000_0003);
    middle_with_next(&mut a, &mut cl, next);
    let (_, acts) = a.io(|c, io| c.channel_closed(ChanId(7), io));
    let (ch, _, _, b) = one_cell(&acts);
    assert_eq!(
        (ch, destroy_reason(&b)),
        (next.chan, DestroyReason::Destroyed)
    );
    assert_eq!(a.core.circuit_count(), 0);
}

#[test]
fn truncate_destroys_next_hop_and_replies_truncated() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let next = NextHop {
        chan: ChanId(50),
        shard: ShardIdx(0),
        circ_id: CircId(0x8000_0100),
    };
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    middle_with_next(&mut a, &mut cl, next);
    let acts = cl.send(&mut a, 0, ChanCmd::RELAY, &RelayMsg::Truncate, 0);
    let c = cells(&acts);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].0, c[0].2), (next.chan, ChanCmd::DESTROY));
    let got = cl.open_all(&acts);
    assert_eq!((got[0].1, got[0].3[0]), (RelayCmd::TRUNCATED, 3));
    assert_eq!(a.core.circuit_count(), 1);
}

#[test]
fn malformed_cells_close_only_their_circuit() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut good = Client::new(client_chan(1), 0x8000_0001);
    good.create(&mut r, Hs::Ntor);
    let mut bad = Client::new(client_chan(1), 0x8000_0002);
    bad.create(&mut r, Hs::Ntor);
    // Garbage that no hop recognizes, on a circuit without a next hop.
    let acts = r.cell(
        &bad.chan,
        bad.circ_id,
        ChanCmd::RELAY,
        [0xA5; CELL_BODY_LEN],
    );
    let (_, id, _, b) = one_cell(&acts);
    assert_eq!(
        (id, destroy_reason(&b)),
        (bad.circ_id, DestroyReason::TorProtocol)
    );
    // A recognized cell with a length past the end.
    let mut bad2 = Client::new(client_chan(1), 0x8000_0003);
    bad2.create(&mut r, Hs::Ntor);
    let mut body = [0u8; CELL_BODY_LEN];
    body[0] = RelayCmd::DATA.0;
    body[9..11].copy_from_slice(&499u16.to_be_bytes());
    bad2.circ.layers.originate(0, &mut body);
    let acts = r.cell(&bad2.chan, bad2.circ_id, ChanCmd::RELAY, body);
    assert_eq!(one_cell(&acts).1, bad2.circ_id);
    // The good circuit still works; cells for unknown circuits are ignored.
    assert!(good
        .send(&mut r, 0, ChanCmd::RELAY, &RelayMsg::Drop, 0)
        .is_empty());
    assert!(r
        .cell(&bad.chan, bad.circ_id, ChanCmd::RELAY, [0; CELL_BODY_LEN])
        .is_empty());
    assert_eq!(r.core.circuit_count(), 1);
    assert_eq!(r.core.metrics().protocol_closes, 2);
}

#[test]
fn create2_flood_stays_bounded_and_open_circuits_keep_moving() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut est = Client::new(client_chan(1), 0x8000_0001);
    est.create(&mut r, Hs::Ntor);
    let flood = client_chan(2);
    let mut refused = 0;
    let mut body = [0u8; CELL_BODY_LEN];
    let (_, skin) = NtorClient::start(
        &mut rand::thread_rng(),
        &r.id.rsa,
        r.keys.current().public(),
    );
    Create2 {
        htype: HandshakeType::NTOR,
        hdata: &skin,
    }
    .encode(&mut body)
    .unwrap();
    for i in 0..40u32 {
        let acts = r.cell(&flood, CircId(0x8000_1000 + i), ChanCmd::CREATE2, body);
        if let Some((_, _, ChanCmd::DESTROY, b)) = cells(&acts).first().copied() {
            assert_eq!(destroy_reason(&b), DestroyReason::ResourceLimit);
            refused += 1;
        }
        // The established circuit is served between flood cells.
        assert!(est
            .send(&mut r, 0, ChanCmd::RELAY, &RelayMsg::Drop, 0)
            .is_empty());
    }
    assert_eq!(refused, 32); // queue bound is 8
    assert_eq!(r.core.metrics().onion_queue_len, 8);
    assert_eq!(r.core.metrics().create_refused_queue_full, 32);
    // Each run does at most `onions_per_run` (4) handshakes.
    assert_eq!(cells(&r.onions()).len(), 4);
    // Stale onionskins are refused once they have waited too long.
    r.advance(Duration::from_secs(5));
    let acts = r.onions();
    assert_eq!(cells(&acts).len(), 4);
    assert!(cells(&acts)
        .iter()
        .all(|c| destroy_reason(&c.3) == DestroyReason::ResourceLimit));
    assert_eq!(r.core.metrics().onionskins_expired, 4);
    assert_eq!(r.core.circuit_count(), 5);
}

/// `n` middle circuits of relay `a`, circuit k from client channel k+1 to next hop
/// (channel 50, circuit ID 0x8000_0100 + k); every client channel blocked, so backward cells
/// queue at `a`.
fn blocked_middles(a: &mut Relay, n: u32) -> (Vec<NextHop>, ChanInfo) {
    let mut hops = Vec::new();
    for k in 0..n {
        let next = NextHop {
            chan: ChanId(50),
            shard: ShardIdx(0),
            circ_id: CircId(0x8000_0100 + k),
        };
        let mut cl = Client::new(client_chan(u64::from(k) + 1), 0x8000_0001);
        middle_with_next(a, &mut cl, next);
        a.core.channel_blocked(ChanId(u64::from(k) + 1));
        hops.push(next);
    }
    let b_side = relay_chan(
        50,
        &Relay::new(2, test_config(), "reject *:*", TestNet::default()).id,
        true,
    );
    (hops, b_side)
}

/// C tor's `circuits_handle_oom`: the circuits whose oldest queued cell is oldest go first
/// (not the biggest queues), with DESTROY RESOURCELIMIT both ways, until the cells freed
/// bring the total below 90 % of the cap; the rest are untouched.
#[test]
fn memory_cap_frees_the_oldest_queues_first_down_to_90_percent() {
    let cfg = CircuitConfig {
        pool_cells: 100,
        max_queue_per_circuit: 1000,
        ..test_config()
    };
    let mut a = Relay::new(1, cfg, "reject *:*", TestNet::default());
    let (hops, b_side) = blocked_middles(&mut a, 4);
    // Oldest first: 5, 5, 10 and 80 cells, 10 ms apart: the pool (100) is full.
    for (k, n) in [5, 5, 10, 80].into_iter().enumerate() {
        for _ in 0..n {
            let acts = a.cell(
                &b_side,
                hops[k].circ_id,
                ChanCmd::RELAY,
                [k as u8; CELL_BODY_LEN],
            );
            assert!(acts.is_empty(), "{acts:?}");
        }
        a.advance(Duration::from_millis(10));
    }
    assert_eq!(a.core.metrics().queued_cells, 100);
    // One more for the biggest queue: 10 cells must go (100 → 90); the two oldest
    // circuits hold 5 each.
    let acts = a.cell(&b_side, hops[3].circ_id, ChanCmd::RELAY, [3; CELL_BODY_LEN]);
    let mut got: Vec<(ChanId, CircId, DestroyReason)> = cells(&acts)
        .iter()
        .map(|x| {
            assert_eq!(x.2, ChanCmd::DESTROY);
            (x.0, x.1, destroy_reason(&x.3))
        })
        .collect();
    got.sort_by_key(|x| (x.0, x.1));
    let rl = DestroyReason::ResourceLimit;
    assert_eq!(
        got,
        vec![
            (ChanId(1), CircId(0x8000_0001), rl),
            (ChanId(2), CircId(0x8000_0001), rl),
            (ChanId(50), hops[0].circ_id, rl),
            (ChanId(50), hops[1].circ_id, rl),
        ]
    );
    assert_eq!(a.core.metrics().oom_kills, 2);
    assert_eq!(a.core.circuit_count(), 2);
    assert_eq!(a.core.metrics().queued_cells, 91);
    // The others are untouched: their queues flush whole and in order.
    for (chan, n) in [(ChanId(3), 10), (ChanId(4), 81)] {
        let (_, acts) = a.io(|c, io| c.channel_unblocked(chan, io));
        let c = cells(&acts);
        assert_eq!(c.len(), n);
        assert!(c.iter().all(|x| x.0 == chan && x.2 == ChanCmd::RELAY));
    }
    assert_eq!(a.core.metrics().queued_cells, 0);
}

/// Two shards under one cap. Each keeps a chunk of its own, so the quiet one can queue
/// while the busy one holds the rest. When the quiet one needs more and the cap is reached,
/// each frees its share of the excess over 90 % (by buffers held) from its own oldest
/// circuits: the quiet one at once, the busy one on its next tick.
#[test]
fn shards_share_one_memory_cap() {
    const CAP: u64 = 20 * CHUNK_CELLS as u64; // 90 %: 4608 cells
    let budget = std::sync::Arc::new(MemBudget::new(CAP));
    let cfg = CircuitConfig {
        mem_budget: Some(budget.clone()),
        max_queue_per_circuit: 4000,
        ..test_config()
    };
    let mut a = Relay::new(1, cfg.clone(), "reject *:*", TestNet::default());
    let mut b = Relay::new(3, cfg, "reject *:*", TestNet::default());
    let (ha, ba) = blocked_middles(&mut a, 2);
    let (hb, bb) = blocked_middles(&mut b, 2);
    let body = [9u8; CELL_BODY_LEN];
    let queue = |r: &mut Relay, chan: &ChanInfo, h: &NextHop, n: usize| {
        for _ in 0..n {
            let acts = r.cell(chan, h.circ_id, ChanCmd::RELAY, body);
            assert!(acts.is_empty(), "{acts:?}");
        }
        r.advance(Duration::from_millis(5));
    };
    // A takes all but B's chunk: 2000 older cells, then 2864 newer ones.
    queue(&mut a, &ba, &ha[0], 2000);
    queue(&mut a, &ba, &ha[1], 2864);
    assert_eq!(budget.reserved(), CAP);
    assert_eq!(
        a.core.metrics().cell_buffers_reserved,
        CAP - CHUNK_CELLS as u64
    );
    // B still queues a chunk's worth (older cells first).
    b.advance(Duration::from_millis(20));
    queue(&mut b, &bb, &hb[0], 100);
    queue(&mut b, &bb, &hb[1], CHUNK_CELLS - 100);
    assert_eq!(b.core.metrics().queued_cells, CHUNK_CELLS as u64);
    // One more for B: 5120 − 4608 = 512 to free, B's share 512 × 256 / 5120 = 25: its
    // oldest circuit (100 cells) goes; the cell is queued.
    let acts = b.cell(&bb, hb[1].circ_id, ChanCmd::RELAY, body);
    let c = cells(&acts);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c.iter().any(|x| x.1 == hb[0].circ_id));
    assert!(c
        .iter()
        .all(|x| x.2 == ChanCmd::DESTROY && destroy_reason(&x.3) == DestroyReason::ResourceLimit));
    assert_eq!(b.core.metrics().oom_kills, 1);
    assert_eq!(b.core.metrics().queued_cells, CHUNK_CELLS as u64 - 100 + 1);
    assert_eq!(a.core.circuit_count(), 2, "B cannot touch A's circuits");
    // A's tick: 5021 cells queued > 4608; A's share 512 × 4864 / 5120 = 486: its oldest
    // circuit (2000 cells) goes, and the chunks it held go back to the budget.
    let (_, acts) = a.io(|c, io| c.tick(io));
    let c = cells(&acts);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c.iter().any(|x| x.1 == ha[0].circ_id));
    assert!(c
        .iter()
        .all(|x| x.2 == ChanCmd::DESTROY && destroy_reason(&x.3) == DestroyReason::ResourceLimit));
    assert_eq!(a.core.metrics().oom_kills, 1);
    assert_eq!(a.core.metrics().queued_cells, 2864);
    assert!(
        budget.reserved() <= CAP - 6 * CHUNK_CELLS as u64,
        "{}",
        budget.reserved()
    );
    // No new pressure: the next tick does nothing.
    assert!(a.io(|c, io| c.tick(io)).1.is_empty());
    // B grows into the memory A gave back.
    queue(&mut b, &bb, &hb[1], 2 * CHUNK_CELLS);
    assert_eq!(b.core.circuit_count(), 1);
    assert_eq!(
        budget.reserved(),
        a.core.metrics().cell_buffers_reserved + b.core.metrics().cell_buffers_reserved
    );
    assert!(budget.reserved() <= CAP);
}

#[test]
fn stale_extend_result_destroys_the_new_hop() {
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    cl.create(&mut a, Hs::Ntor);
    let mut ext = [0u8; 498];
    let n = extend2_body(&b, "127.0.0.1:9002", &[0u8; 84], &mut ext);
    let m = RelayMsg::Extend2(fors::cell::relay::msg::Extend2::parse(&ext[..n]).unwrap());
    let acts = cl.send(&mut a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    let circ = match &acts[..] {
        [Action::Extend { circ, .. }] => *circ,
        other => panic!("{other:?}"),
    };
    a.cell(&cl.chan, cl.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    let next = NextHop {
        chan: ChanId(9),
        shard: ShardIdx(1),
        circ_id: CircId(0x8000_0009),
    };
    let mut created = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &[1; 64] }.encode(&mut created).unwrap();
    let (r, acts) = a.io(|c, io| {
        c.extend_result(
            circ,
            Ok(ExtendDone {
                next,
                created2: &created,
            }),
            io,
        )
    });
    assert!(r.is_err());
    let (ch, id, cmd, _) = one_cell(&acts);
    assert_eq!((ch, id, cmd), (next.chan, next.circ_id, ChanCmd::DESTROY));
}

#[test]
fn cc_flag_decides_the_ntor_v3_answer() {
    use fors::crypto::handshake::CircuitExtension;
    // The local switch off: a CC request gets an empty extension list.
    let cfg = CircuitConfig {
        cc_enabled: false,
        ..test_config()
    };
    let mut r = Relay::new(1, cfg, "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    assert!(cl.create(&mut r, Hs::NtorV3 { cc: true }).is_empty());
    // The consensus disables CC (cc_alg=0): the same. cc_sendme_inc=33 is what is echoed
    // once it is enabled again.
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let lookup = |alg: i32| {
        fors::proto::flow::CcParams::from_lookup(move |k| match k {
            "cc_alg" => Some(alg),
            "cc_sendme_inc" => Some(33),
            _ => None,
        })
    };
    r.core.set_cc_params(lookup(0));
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    assert!(cl.create(&mut r, Hs::NtorV3 { cc: true }).is_empty());
    r.core.set_cc_params(lookup(2));
    let mut cl = Client::new(client_chan(1), 0x8000_0003);
    assert_eq!(
        cl.create(&mut r, Hs::NtorV3 { cc: true }),
        vec![CircuitExtension::CcResponse { sendme_inc: 33 }]
    );
    // Without a request there is nothing to answer, flag or not.
    let mut cl = Client::new(client_chan(1), 0x8000_0002);
    assert!(cl.create(&mut r, Hs::NtorV3 { cc: false }).is_empty());
}

/// Regression (bench-compare exit download stall): a stream paused on its package window
/// whose SENDME arrives while the client channel is blocked (other circuits filled it) must
/// be resumed when the channel unblocks. Before the fix the SENDME found the channel
/// congested, resumed nothing and did not register the circuit as waiting, so
/// `channel_unblocked` never visited it and the exit socket stayed paused forever.
#[test]
fn sendme_during_blocked_channel_resumes_the_stream_on_unblock() {
    let (mut exit, mut cl, stream) = open_stream();
    let big = vec![0x42u8; 600 * 498];
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &big, io));
    assert!(n.unwrap() < big.len());
    assert_eq!(cl.open_all(&acts).len(), 500);
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::PauseStreamRead { .. })));

    // The channel toward the client fills up with other circuits' cells.
    exit.core.channel_blocked(cl.chan.id);
    // The stream SENDME reopens the stream window while the channel is blocked: reading
    // must stay paused for now.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V0),
        7,
    );
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::ResumeStreamRead { .. })));
    // Once the channel drains, the stream must be resumed.
    let chan = cl.chan.id;
    let (_, acts) = exit.io(|c, io| c.channel_unblocked(chan, io));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::ResumeStreamRead { stream: s } if *s == stream)),
        "{acts:?}"
    );
    // And it packages again.
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &big[..10 * 498], io));
    assert_eq!(n.unwrap(), 10 * 498);
    assert!(cl.open_all(&acts).len() >= 10);
}

/// Consensus `refuseunknownexits` and `allow-network-reentry` (C `should_refuse_unknown_exits`,
/// `network_reentry_is_allowed`) switch the exit checks; an empty map restores C's defaults.
#[test]
fn consensus_params_switch_unknown_exits_and_reentry() {
    let begin = |exit: &mut Relay, chan, port| {
        let mut cl = Client::new(chan, 0x8000_0001);
        cl.create(exit, Hs::Ntor);
        cl.send(
            exit,
            0,
            ChanCmd::RELAY,
            &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), port),
            1,
        )
    };
    let params = |pairs: &[(&str, i32)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    // refuseunknownexits=0: a BEGIN from a relay not in the consensus is served.
    let mut exit = exit_relay(TestNet::default());
    let stranger = Relay::new(77, test_config(), "reject *:*", TestNet::default());
    exit.core
        .set_exit_consensus_params(&params(&[("refuseunknownexits", 0)]));
    let acts = begin(&mut exit, relay_chan(2, &stranger.id, false), 80);
    assert_eq!(connect_action(&acts).1, "127.0.0.1:80".parse().unwrap());
    // Back to the default (param absent): refused again with END MISC.
    exit.core.set_exit_consensus_params(&params(&[]));
    let mut cl = Client::new(relay_chan(3, &stranger.id, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        1,
    );
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::Misc
    );

    // allow-network-reentry=1: a known relay's ORPort may be connected to.
    let (mut net, mid) = known_middle();
    net.reentry.push("127.0.0.1:80".parse().unwrap());
    let mut exit = Relay::new(9, test_config(), "accept 127.0.0.1:80, reject *:*", net);
    exit.core
        .set_exit_consensus_params(&params(&[("allow-network-reentry", 1)]));
    let acts = begin(&mut exit, relay_chan(1, &mid, false), 80);
    assert_eq!(connect_action(&acts).1, "127.0.0.1:80".parse().unwrap());
    // allow-network-reentry=0 (explicit): CONNECTREFUSED as before.
    exit.core
        .set_exit_consensus_params(&params(&[("allow-network-reentry", 0)]));
    let mut cl = Client::new(relay_chan(4, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        1,
    );
    assert_eq!(
        End::parse(&cl.open_all(&acts)[0].3).unwrap().reason,
        EndReason::ConnectRefused
    );
}

/// BEGIN_DIR on a directory cache (tor-spec §6.2): even on a non-exit and from a client's
/// first hop, the stream goes to the directory server's own listener, outside the exit
/// policy, and CONNECTED is empty, as C tor `connection_exit_connect_dir` sends it.
#[test]
fn begin_dir_connects_to_the_directory_server_with_an_empty_connected() {
    let dir: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let cfg = CircuitConfig {
        dir_server: Some(dir),
        ..test_config()
    };
    let mut relay = Relay::new(5, cfg, "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    cl.create(&mut relay, Hs::Ntor);
    let acts = cl.send(&mut relay, 0, ChanCmd::RELAY, &RelayMsg::BeginDir, 3);
    let (stream, addr) = connect_action(&acts);
    assert_eq!(addr, dir);
    let (r, acts) = relay.io(|c, io| c.stream_connected(stream, addr, io));
    r.unwrap();
    let got = cl.open_all(&acts);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::CONNECTED, 3));
    assert!(got[0].3.is_empty(), "CONNECTED for BEGIN_DIR has no body");
    // A second BEGIN_DIR on the same stream id is dropped.
    let acts = cl.send(&mut relay, 0, ChanCmd::RELAY, &RelayMsg::BeginDir, 3);
    assert!(!acts.iter().any(|a| matches!(a, Action::Connect { .. })));
}

/// C tor `connection_dir_is_anonymous`: only a circuit from a relay's channel, not built with
/// CREATE_FAST, reaches the directory server's anonymous listener (onion-service
/// descriptors); a client's circuit, or CREATE_FAST, gets the other one.
#[test]
fn begin_dir_from_a_relay_circuit_goes_to_the_anonymous_listener() {
    let dir: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let anon: SocketAddr = "127.0.0.1:9998".parse().unwrap();
    let cfg = CircuitConfig {
        dir_server: Some(dir),
        dir_server_anonymous: Some(anon),
        ..test_config()
    };
    let mut relay = Relay::new(5, cfg, "reject *:*", TestNet::default());
    let middle = Relay::new(77, test_config(), "reject *:*", TestNet::default());
    for (chan, hs, want) in [
        (relay_chan(2, &middle.id, false), Hs::Ntor, anon),
        (relay_chan(3, &middle.id, false), Hs::Fast, dir),
        (client_chan(1), Hs::Ntor, dir),
    ] {
        let mut cl = Client::new(chan, 0x8000_0001);
        cl.create(&mut relay, hs);
        let acts = cl.send(&mut relay, 0, ChanCmd::RELAY, &RelayMsg::BeginDir, 3);
        let (_, addr) = connect_action(&acts);
        assert_eq!(addr, want);
    }
}

/// Malformed onion-service requests on a one-hop client circuit (an ESTABLISH_INTRO with an
/// unknown key type, INTRODUCE1 from a client channel, an ESTABLISH_RENDEZVOUS of the wrong
/// length, RENDEZVOUS1 with an unknown cookie) close the circuit with DESTROY TORPROTOCOL,
/// as C tor does. Counted by the HS counters, not as the peer's protocol violation, but
/// the rule is kept for the shard's debug line (tests/hs_circuit.rs has the roles working).
#[test]
fn onion_service_requests_are_refused_with_destroy() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    for (i, cmd) in [
        RelayCmd::ESTABLISH_INTRO,
        RelayCmd::INTRODUCE1,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        RelayCmd::RENDEZVOUS1,
    ]
    .into_iter()
    .enumerate()
    {
        let mut cl = Client::new(client_chan(1), 0x8000_0001 + i as u32);
        cl.create(&mut r, Hs::Ntor);
        let body = [7u8; 84];
        let acts = cl.send(
            &mut r,
            0,
            ChanCmd::RELAY,
            &RelayMsg::Other { cmd, body: &body },
            0,
        );
        let (_, id, c, b) = one_cell(&acts);
        assert_eq!(
            (id, c, destroy_reason(&b)),
            (cl.circ_id, ChanCmd::DESTROY, DestroyReason::TorProtocol),
            "{cmd:?}"
        );
        assert_eq!(r.core.circuit_count(), 0, "{cmd:?}");
        assert_eq!(
            r.core.take_protocol_violations(),
            Some((fors::proto::circuit::ProtocolViolation::OnionServiceRole, 1))
        );
    }
    assert_eq!(r.core.metrics().protocol_closes, 0);
    assert_eq!(r.core.take_protocol_violations(), None);
    // A real violation is counted and named.
    let mut cl = Client::new(client_chan(1), 0x8000_0010);
    cl.create(&mut r, Hs::Ntor);
    let body = [0u8; 4];
    let tap = RelayMsg::Other {
        cmd: RelayCmd::EXTEND,
        body: &body,
    };
    let acts = cl.send(&mut r, 0, ChanCmd::RELAY_EARLY, &tap, 0);
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    assert_eq!(r.core.metrics().protocol_closes, 1);
    assert_eq!(
        r.core.take_protocol_violations(),
        Some((fors::proto::circuit::ProtocolViolation::TapExtend, 1))
    );
}

/// A circuit's paused streams are resumed starting at a random one and wrapping around,
/// as C (`circuit_resume_edge_reading_helper`): resumed streams read in the order their
/// actions run, so a fixed start at the list head would let the first streams of a busy
/// circuit go first every time.
#[test]
fn resumed_streams_start_at_a_random_one_and_wrap() {
    const STREAMS: u16 = 4;
    const TRIALS: usize = 40;
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..TRIALS {
        let (net, mid) = known_middle();
        let mut exit = exit_relay(net);
        let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
        cl.create(&mut exit, Hs::Ntor);
        let mut streams = vec![];
        for sid in 1..=STREAMS {
            let acts = cl.send(
                &mut exit,
                0,
                ChanCmd::RELAY,
                &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
                sid,
            );
            let (stream, addr) = connect_action(&acts);
            let (r, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io));
            r.unwrap();
            assert_eq!(cl.open_all(&acts).len(), 1);
            streams.push(stream);
        }
        // The client's channel is congested: every stream's bytes wait and it pauses.
        exit.core.channel_blocked(cl.chan.id);
        for &s in &streams {
            let (n, acts) = exit.io(|c, io| c.stream_data(s, &[7u8; 100], io));
            assert_eq!(n.unwrap(), 0);
            assert!(acts
                .iter()
                .any(|a| matches!(a, Action::PauseStreamRead { stream } if *stream == s)));
        }
        let chan = cl.chan.id;
        let (_, acts) = exit.io(|c, io| c.channel_unblocked(chan, io));
        let order: Vec<usize> = acts
            .iter()
            .filter_map(|a| match a {
                Action::ResumeStreamRead { stream } => {
                    Some(streams.iter().position(|s| s == stream).expect("ours"))
                }
                _ => None,
            })
            .collect();
        // Every stream once, in list order from the chosen one, wrapping at the end (the
        // circuit's list holds the newest stream first).
        assert_eq!(order.len(), STREAMS as usize, "{order:?}");
        let n = STREAMS as usize;
        for w in order.windows(2) {
            assert_eq!(w[1], (w[0] + n - 1) % n, "{order:?}");
        }
        firsts.insert(order[0]);
    }
    // A fixed start fails this always; a uniform one with probability 4 · 4^-40.
    assert!(firsts.len() > 1, "always started at stream {firsts:?}");
}
