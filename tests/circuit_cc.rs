//! Congestion control (prop 324) at the exit, driven by an in-memory client that negotiated
//! it in ntor-v3: circuit SENDMEs every `sendme_inc` cells both ways, the congestion window
//! instead of the fixed windows, and stream XON/XOFF instead of stream SENDMEs.

mod circuit_common;

use std::net::Ipv4Addr;
use std::time::Duration;

use circuit_common::*;
use fors::cell::chan::DestroyReason;
use fors::cell::relay::msg::{BeginTarget, RelayMsg, Sendme, Xon};
use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::crypto::handshake::CircuitExtension;
use fors::proto::circuit::{Action, CircHandle};
use fors::proto::stream::StreamHandle;

const EXIT_LOCAL: &str = "accept 127.0.0.1:*, reject *:*";

/// An exit with one circuit from a known middle, built with ntor-v3 (`cc` requested or
/// not), and one open stream (id 7) to 127.0.0.1:80.
fn open_stream(cc: bool) -> (Relay, Client, StreamHandle, CircHandle) {
    let mid = fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    };
    let net = TestNet {
        known: vec![mid.rsa],
        reentry: vec![],
    };
    let mut cfg = test_config();
    // Room for a few thousand cells in flight and queued.
    cfg.pool_cells = 16 * 1024;
    cfg.max_queue_per_circuit = 4096;
    let mut exit = Relay::new(9, cfg, EXIT_LOCAL, net);
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    let exts = cl.create(&mut exit, Hs::NtorV3 { cc });
    if cc {
        assert_eq!(exts, vec![CircuitExtension::CcResponse { sendme_inc: 31 }]);
    } else {
        assert!(exts.is_empty());
    }
    let circ = exit.core.circuit_by_prev(cl.chan.id, cl.circ_id).unwrap();
    assert_eq!(exit.core.circuit_cc(circ).is_some(), cc);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        7,
    );
    let (stream, addr) = acts
        .iter()
        .find_map(|a| match a {
            Action::Connect { stream, addr } => Some((*stream, *addr)),
            _ => None,
        })
        .unwrap();
    let (r, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io));
    r.unwrap();
    assert_eq!(cl.open_all(&acts)[0].1, RelayCmd::CONNECTED);
    (exit, cl, stream, circ)
}

fn count(acts: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    acts.iter().filter(|a| f(a)).count()
}

fn is_resume(a: &Action) -> bool {
    matches!(a, Action::ResumeStreamRead { .. })
}
fn is_pause(a: &Action) -> bool {
    matches!(a, Action::PauseStreamRead { .. })
}

#[test]
fn download_10k_cells_with_sendmes_every_31_and_a_growing_window() {
    let (mut exit, mut cl, stream, circ) = open_stream(true);
    let st = exit.core.circuit_cc(circ).unwrap();
    assert_eq!((st.cwnd, st.inflight, st.sendme_inc), (124, 0, 31));
    let chunk = vec![0x5au8; 64 * 498];
    let mut delivered = 0usize;
    let mut bytes = 0usize;
    let mut first_burst = None;
    let mut cwnds = vec![];
    let mut received_since_sendme = 0;
    let mut sendmes = 0usize;
    while delivered < 10_000 {
        // The exit socket has data: package as much as the window allows.
        let mut burst = 0;
        let mut owed = vec![];
        loop {
            let (n, acts) = exit.io(|c, io| c.stream_data(stream, &chunk, io));
            for (_, _, _, body) in cells(&acts) {
                let (_, cmd, sid, data) = cl.open(body);
                assert_eq!((cmd, sid), (RelayCmd::DATA, 7));
                burst += 1;
                bytes += data.len();
                received_since_sendme += 1;
                if received_since_sendme == 31 {
                    // The client owes a SENDME carrying this cell's digest.
                    received_since_sendme = 0;
                    owed.push(cl.last_tag(0));
                }
            }
            if n.unwrap() < chunk.len() {
                // Window full: the socket is paused. (Stream windows do not apply: no
                // stream SENDME is ever needed.)
                assert_eq!(count(&acts, is_pause), 1);
                break;
            }
        }
        delivered += burst;
        first_burst.get_or_insert(burst);
        // One RTT later the burst's SENDMEs arrive; the first one resumes the socket.
        exit.advance(Duration::from_millis(20));
        let mut resumed = 0;
        for tag in owed {
            let acts = cl.send(
                &mut exit,
                0,
                ChanCmd::RELAY,
                &RelayMsg::Sendme(Sendme::V1 { tag: &tag }),
                0,
            );
            assert!(cells(&acts).is_empty(), "{acts:?}");
            resumed += count(&acts, is_resume);
            sendmes += 1;
        }
        assert_eq!(resumed, 1);
        cwnds.push(exit.core.circuit_cc(circ).unwrap().cwnd);
    }
    // cwnd_init = 4 * sendme_inc cells before the first SENDME.
    assert_eq!(first_burst, Some(124));
    assert_eq!(sendmes, delivered / 31);
    assert!(bytes > 9_000 * 480);
    // Slow start: the window grew (by sendme_inc per full-window SENDME) well past its
    // initial 124 cells, and never shrank on this queue-free path.
    let st = exit.core.circuit_cc(circ).unwrap();
    assert!(st.cwnd >= 1000, "{cwnds:?}");
    assert!(cwnds.windows(2).all(|w| w[1] >= w[0]), "{cwnds:?}");
    assert_eq!(st.min_rtt_usec, 20_000);
    assert_eq!(exit.core.metrics().cc_circuits, 1);
    assert_eq!(exit.core.circuit_count(), 1);
}

#[test]
fn forged_sendme_and_stream_sendme_close_a_cc_circuit() {
    let (mut exit, mut cl, stream, _) = open_stream(true);
    let (_, acts) = exit.io(|c, io| c.stream_data(stream, &vec![1u8; 40 * 498], io));
    assert_eq!(cl.open_all(&acts).len(), 40);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V1 { tag: &[0xEE; 20] }),
        0,
    );
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
    assert_eq!(exit.core.metrics().sendme_auth_failures, 1);

    // C `sendme_process_stream_level`: a stream SENDME on a CC circuit is a violation.
    let (mut exit, mut cl, _, _) = open_stream(true);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Sendme(Sendme::V0),
        7,
    );
    assert_eq!(
        destroy_reason(&one_cell(&acts).3),
        DestroyReason::TorProtocol
    );
}

#[test]
fn upload_gets_an_authenticated_sendme_every_31_cells_and_no_stream_sendmes() {
    let (mut exit, mut cl, _, _) = open_stream(true);
    let mut replies = vec![];
    let mut tags = vec![];
    for i in 1..=200 {
        let (body, tag) = cl.relay_cell(0, &RelayMsg::Data(&[0x61; 498]), 7);
        let acts = exit.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
        assert_eq!(count(&acts, |a| matches!(a, Action::StreamWrite { .. })), 1);
        for r in cl.open_all(&acts) {
            replies.push((i, r));
        }
        tags.push(tag);
    }
    // Circuit SENDMEs after cells 31, 62, ..., 186, each with that cell's digest.
    let at: Vec<usize> = replies.iter().map(|(i, _)| *i).collect();
    assert_eq!(at, vec![31, 62, 93, 124, 155, 186]);
    for (i, (_, cmd, sid, data)) in &replies {
        assert_eq!((*cmd, *sid), (RelayCmd::SENDME, 0));
        match Sendme::parse(data).unwrap() {
            Sendme::V1 { tag } => assert_eq!(tag, &tags[i - 1][..]),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn client_xoff_stops_packaging_and_xon_resumes() {
    let (mut exit, mut cl, stream, _) = open_stream(true);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Xoff(Default::default()),
        7,
    );
    assert_eq!(count(&acts, is_pause), 1);
    assert!(cells(&acts).is_empty());
    // Nothing is packaged from the stream while XOFF holds, though the window is open.
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &[7u8; 1000], io));
    assert_eq!(n.unwrap(), 0);
    assert!(cells(&acts).is_empty());
    // A second XOFF is ignored with a protocol warning; the circuit stays.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Xoff(Default::default()),
        7,
    );
    assert!(acts.is_empty());
    assert_eq!(exit.core.metrics().xon_xoff_ignored, 1);
    assert_eq!(exit.core.circuit_count(), 1);
    // XON (with a rate advice) resumes reading and packaging.
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Xon(Xon { kbps_ewma: 1000 }),
        7,
    );
    assert_eq!(count(&acts, is_resume), 1);
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &[7u8; 1000], io));
    assert_eq!(n.unwrap(), 1000);
    assert_eq!(cl.open_all(&acts).len(), 3);
}

#[test]
fn xon_xoff_on_a_non_cc_circuit_is_ignored() {
    let (mut exit, mut cl, stream, _) = open_stream(false);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Xoff(Default::default()),
        7,
    );
    assert!(acts.is_empty());
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &RelayMsg::Xon(Xon { kbps_ewma: 0 }),
        7,
    );
    assert!(acts.is_empty());
    assert_eq!(exit.core.metrics().xon_xoff_ignored, 2);
    // Fixed windows as before: 500 cells (stream window), then a pause.
    let (_, acts) = exit.io(|c, io| c.stream_data(stream, &vec![0u8; 600 * 498], io));
    assert_eq!(cl.open_all(&acts).len(), 500);
    assert_eq!(count(&acts, is_pause), 1);
}

#[test]
fn exit_sends_xoff_when_its_buffer_fills_and_xon_when_it_drains() {
    let (mut exit, mut cl, stream, _) = open_stream(true);
    // The destination stops taking data.
    let (r, _) = exit.io(|c, io| c.stream_write_blocked(stream, true, io));
    r.unwrap();
    let mut xoff_at = None;
    let mut stream_writes = 0;
    for i in 1..=700 {
        exit.advance(Duration::from_micros(100));
        let (body, _) = cl.relay_cell(0, &RelayMsg::Data(&[0x61; 498]), 7);
        let acts = exit.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
        stream_writes += count(&acts, |a| matches!(a, Action::StreamWrite { .. }));
        for (_, cmd, sid, _) in cl.open_all(&acts) {
            if cmd == RelayCmd::XOFF {
                assert_eq!(sid, 7);
                assert!(xoff_at.is_none(), "one XOFF only");
                xoff_at = Some(i);
            }
        }
    }
    assert_eq!(stream_writes, 0);
    // cc_xoff_exit = 500 cells of 498 bytes: XOFF once the buffer held more than that
    // for the 5 ms grace period (50 cells at 0.1 ms each).
    let at = xoff_at.expect("XOFF sent");
    assert!((551..=553).contains(&at), "{at}");
    assert_eq!(exit.core.metrics().xoff_sent, 1);
    // The destination drains: everything is written and XON follows.
    exit.advance(Duration::from_millis(10));
    let (r, acts) = exit.io(|c, io| c.stream_write_blocked(stream, false, io));
    r.unwrap();
    assert_eq!(
        count(&acts, |a| matches!(a, Action::StreamWrite { .. })),
        700
    );
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].1, got[0].2), (RelayCmd::XON, 7));
    let xon = Xon::parse(&got[0].3).unwrap();
    assert!(xon.kbps_ewma > 0, "{xon:?}");
    assert_eq!(exit.core.metrics().xon_sent, 1);
}
