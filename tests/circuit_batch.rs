//! The batching seam, cross-shard next hops and stream backpressure.

mod circuit_common;

use circuit_common::*;
use fors::cell::chan::Created2;
use fors::cell::relay::msg::{Extend2, RelayMsg};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::circuit::{Action, ChanId, ExtendDone, NextHop, ShardIdx};

/// Client → A whose next hop lives on shard 1.
fn middle(a: &mut Relay, cl: &mut Client, next: NextHop) {
    cl.create(a, Hs::Ntor);
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let mut ext = [0u8; 498];
    let n = extend2_body(&b, "127.0.0.1:9002", &[0u8; 84], &mut ext);
    let m = RelayMsg::Extend2(Extend2::parse(&ext[..n]).unwrap());
    let acts = cl.send(a, 0, ChanCmd::RELAY_EARLY, &m, 0);
    let Action::Extend { circ, .. } = acts[0] else {
        panic!("{acts:?}")
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
    assert_eq!(cl.open_all(&acts)[0].1, RelayCmd::EXTENDED2);
}

#[test]
fn batch_of_mixed_cells_matches_one_by_one() {
    let next = NextHop {
        chan: ChanId(70),
        shard: ShardIdx(1),
        circ_id: CircId(0x8000_0070),
    };
    let run = |batched: bool| {
        let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
        let mut cl = Client::new(client_chan(1), 0x8000_0001);
        middle(&mut a, &mut cl, next);
        // A pretend second hop, so cells for it carry two layers and A forwards them.
        cl.circ
            .layers
            .push(&fors::crypto::keymat::Tor1KeyMaterial::from_kdf_output(
                &[7u8; 92],
            ));
        // Cells for hop 0 (DROP: recognized) interleaved with cells for hop 1.
        let mut cells = vec![];
        for i in 0..10u8 {
            let hop = usize::from(i % 3 != 0);
            cells.push(cl.relay_cell(hop, &RelayMsg::Data(&[i; 10]), 0).0);
        }
        let acts = if batched {
            let (_, acts) = a.io(|c, io| {
                c.handle_relay_batch(cl.chan.id, cl.circ_id, ChanCmd::RELAY, &mut cells, io)
            });
            acts
        } else {
            let mut all = vec![];
            for b in cells {
                all.extend(a.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, b));
            }
            all
        };
        (
            cells_of(&acts),
            a.core.metrics().cells_recognized,
            a.core.metrics().cells_forwarded,
        )
    };
    let one = run(false);
    let many = run(true);
    // 4 DATA cells plus the EXTEND2 that built the circuit.
    assert_eq!((one.1, one.2), (5, 6));
    assert_eq!((many.1, many.2), (5, 6));
    assert_eq!(one.0.len(), many.0.len());
    // Forwarded cells go to the other shard's channel.
    assert!(many
        .0
        .iter()
        .all(|&(ch, id, sh)| ch == next.chan && id == next.circ_id && sh == next.shard));
}

fn cells_of(acts: &[Action]) -> Vec<(ChanId, CircId, ShardIdx)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::SendCell {
                chan,
                circ_id,
                shard,
                ..
            } => Some((*chan, *circ_id, *shard)),
            _ => None,
        })
        .collect()
}

#[test]
fn cross_shard_backward_cells_and_destroy() {
    let next = NextHop {
        chan: ChanId(70),
        shard: ShardIdx(1),
        circ_id: CircId(0x8000_0070),
    };
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    middle(&mut a, &mut cl, next);
    let circ = a.core.circuit_by_prev(cl.chan.id, cl.circ_id).unwrap();
    // The next-hop key is not in this shard's table: its channel lives on shard 1.
    assert!(a
        .cell(
            &relay_chan(70, &a.id.clone(), true),
            next.circ_id,
            ChanCmd::RELAY,
            [0; CELL_BODY_LEN]
        )
        .is_empty());
    let mut body = [9u8; CELL_BODY_LEN];
    let (r, acts) = a.io(|c, io| c.handle_next_hop_cell(circ, ChanCmd::RELAY, &mut body, io));
    r.unwrap();
    let (ch, id, cmd, _) = one_cell(&acts);
    assert_eq!((ch, id, cmd), (cl.chan.id, cl.circ_id, ChanCmd::RELAY));
    let (r, acts) = a.io(|c, io| c.handle_next_hop_cell(circ, ChanCmd::DESTROY, &mut body, io));
    r.unwrap();
    let (ch, _, cmd, b) = one_cell(&acts);
    assert_eq!(
        (ch, cmd, destroy_reason(&b)),
        (
            cl.chan.id,
            ChanCmd::DESTROY,
            fors::cell::chan::DestroyReason::Destroyed
        )
    );
    assert!(a
        .io(|c, io| c.handle_next_hop_cell(circ, ChanCmd::RELAY, &mut body, io))
        .0
        .is_err());
}

#[test]
fn blocked_socket_holds_data_and_stream_sendmes() {
    let mid = fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    };
    let mut exit = Relay::new(
        9,
        test_config(),
        "accept 127.0.0.1:*, reject *:*",
        TestNet {
            known: vec![mid.rsa],
            reentry: vec![],
        },
    );
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let stream = cl.open_stream(&mut exit, 3);
    exit.io(|c, io| c.stream_write_blocked(stream, true, io).unwrap());
    let mut replies = vec![];
    for _ in 0..60 {
        let acts = cl.send(&mut exit, 0, ChanCmd::RELAY, &RelayMsg::Data(b"x"), 3);
        assert!(!acts.iter().any(|a| matches!(a, Action::StreamWrite { .. })));
        replies.extend(cl.open_all(&acts));
    }
    // No stream SENDME while the socket is full: the client's window is the backpressure.
    assert!(!replies.iter().any(|r| r.1 == RelayCmd::SENDME && r.2 == 3));
    assert_eq!(exit.core.metrics().queued_cells, 60);
    let (_, acts) = exit.io(|c, io| c.stream_write_blocked(stream, false, io).unwrap());
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::StreamWrite { .. }))
            .count(),
        60
    );
    let got = cl.open_all(&acts);
    assert_eq!(
        got.iter()
            .filter(|r| r.1 == RelayCmd::SENDME && r.2 == 3)
            .count(),
        1
    );
    assert_eq!(exit.core.metrics().queued_cells, 0);
}

#[test]
fn batched_data_gets_the_sendme_tag_of_the_hundredth_cell() {
    let mut r = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    cl.create(&mut r, Hs::Ntor);
    // 130 cells in one batch: 100 DATA, then 30 more; a BEGIN_DIR just before the 100th
    // DATA makes the relay originate an END in the middle of the run.
    let mut cells = vec![];
    let mut hundredth = [0u8; 20];
    let mut data_cells = 0;
    while cells.len() < 131 {
        if data_cells == 99 && cells.len() == 99 {
            cells.push(cl.relay_cell(0, &RelayMsg::BeginDir, 4).0);
            continue;
        }
        let (b, tag) = cl.relay_cell(0, &RelayMsg::Data(&[1; 300]), 0);
        data_cells += 1;
        if data_cells == 100 {
            hundredth = tag;
        }
        cells.push(b);
    }
    let (_, acts) =
        r.io(|c, io| c.handle_relay_batch(cl.chan.id, cl.circ_id, ChanCmd::RELAY, &mut cells, io));
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].1, got[0].2), (RelayCmd::END, 4));
    assert_eq!(got[1].1, RelayCmd::SENDME);
    match fors::cell::relay::msg::Sendme::parse(&got[1].3).unwrap() {
        fors::cell::relay::msg::Sendme::V1 { tag } => assert_eq!(tag, &hundredth[..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn blocked_client_channel_pauses_exit_reading_until_unblocked() {
    let mid = fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    };
    let mut exit = Relay::new(
        9,
        test_config(),
        "accept 127.0.0.1:*, reject *:*",
        TestNet {
            known: vec![mid.rsa],
            reentry: vec![],
        },
    );
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    cl.create(&mut exit, Hs::Ntor);
    let stream = cl.open_stream(&mut exit, 3);
    exit.core.channel_blocked(ChanId(1));
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"response", io));
    assert_eq!(n.unwrap(), 0);
    assert!(matches!(&acts[..], [Action::PauseStreamRead { stream: s }] if *s == stream));
    let (_, acts) = exit.io(|c, io| c.channel_unblocked(ChanId(1), io));
    assert!(matches!(&acts[..], [Action::ResumeStreamRead { stream: s }] if *s == stream));
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, b"response", io));
    assert_eq!(n.unwrap(), 8);
    assert_eq!(cl.open_all(&acts)[0].3, b"response");
}
