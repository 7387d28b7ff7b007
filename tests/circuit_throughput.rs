//! Rough per-cell cost of the circuit core (ignored by default; run with
//! `cargo test --release --test circuit_throughput -- --ignored --nocapture`).

mod circuit_common;

use std::net::Ipv4Addr;
use std::time::Instant;

use circuit_common::*;
use fors::cell::chan::Created2;
use fors::cell::relay::msg::{BeginTarget, Extend2, RelayMsg, Sendme};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::circuit::{Action, ChanId, ExtendDone, NextHop, ShardIdx};

const CELLS: usize = 200_000;

#[test]
#[ignore]
fn middle_forwarding_and_exit_packaging_rates() {
    // Middle: client cells for hop 1 pass through A, 32 per batch.
    let mut a = Relay::new(1, test_config(), "reject *:*", TestNet::default());
    let mut cl = Client::new(client_chan(1), 0x8000_0001);
    cl.create(&mut a, Hs::Ntor);
    let b = Relay::new(2, test_config(), "reject *:*", TestNet::default());
    let mut ext = [0u8; 498];
    let n = extend2_body(&b, "127.0.0.1:9002", &[0u8; 84], &mut ext);
    let acts = cl.send(
        &mut a,
        0,
        ChanCmd::RELAY_EARLY,
        &RelayMsg::Extend2(Extend2::parse(&ext[..n]).unwrap()),
        0,
    );
    let Action::Extend { circ, .. } = acts[0] else {
        panic!()
    };
    let mut created = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &[5; 64] }.encode(&mut created).unwrap();
    let next = NextHop {
        chan: ChanId(9),
        shard: ShardIdx(0),
        circ_id: CircId(0x8000_0009),
    };
    a.io(|c, io| {
        c.extend_result(
            circ,
            Ok(ExtendDone {
                next,
                created2: &created,
            }),
            io,
        )
    })
    .0
    .unwrap();
    // Cells as they would arrive: random bodies are never recognized at A.
    let mut batch = vec![[0x5Au8; CELL_BODY_LEN]; 32];
    let mut out = Vec::with_capacity(64);
    let t = Instant::now();
    let mut sent = 0;
    while sent < CELLS {
        out.clear();
        let mut io = fors::proto::circuit::CoreIo::new(a.now, &mut a.rng, &mut out);
        a.core
            .handle_relay_batch(cl.chan.id, cl.circ_id, ChanCmd::RELAY, &mut batch, &mut io);
        sent += batch.len();
    }
    let dt = t.elapsed();
    assert_eq!(a.core.metrics().cells_forwarded as usize, sent);
    println!(
        "middle forward: {:.0} ns/cell ({:.0} kcells/s)",
        dt.as_nanos() as f64 / sent as f64,
        sent as f64 / dt.as_secs_f64() / 1e3
    );

    // Exit: package socket bytes into DATA cells; the client's SENDMEs keep windows open.
    let (mut exit, mut cl) = {
        let mid = fors::proto::circuit::RelayIdentity {
            rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
            ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
        };
        let e = Relay::new(
            9,
            test_config(),
            "accept 127.0.0.1:*, reject *:*",
            TestNet {
                known: vec![mid.rsa],
                reentry: vec![],
            },
        );
        (e, Client::new(relay_chan(1, &mid, false), 0x8000_0001))
    };
    cl.create(&mut exit, Hs::Ntor);
    let acts = cl.send(
        &mut exit,
        0,
        ChanCmd::RELAY,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        1,
    );
    let Some(Action::Connect { stream, addr }) = acts.first().cloned() else {
        panic!()
    };
    let (r, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io));
    r.unwrap();
    cl.open_all(&acts);
    let chunk = vec![0x42u8; 498 * 50];
    let mut packaged = 0usize;
    let mut received = 0usize;
    let mut busy = std::time::Duration::ZERO;
    while packaged < CELLS / 4 {
        out.clear();
        let t = Instant::now();
        let mut io = fors::proto::circuit::CoreIo::new(exit.now, &mut exit.rng, &mut out);
        let took = exit.core.stream_data(stream, &chunk, &mut io).unwrap();
        exit.core.flush_originated(&mut io);
        busy += t.elapsed();
        packaged += out.len();
        assert!(took > 0);
        // The client answers (not timed): SENDME v1 with the tag of every 100th cell,
        // a stream SENDME every 50.
        for (_, _, _, body) in cells(&out) {
            cl.open(body);
            received += 1;
            if received.is_multiple_of(100) {
                let tag = cl.last_tag(0);
                let m = RelayMsg::Sendme(Sendme::V1 { tag: &tag });
                cl.send(&mut exit, 0, ChanCmd::RELAY, &m, 0);
            }
            if received.is_multiple_of(50) {
                cl.send(
                    &mut exit,
                    0,
                    ChanCmd::RELAY,
                    &RelayMsg::Sendme(Sendme::V0),
                    1,
                );
            }
        }
        if exit.core.circuit_count() == 0 {
            break;
        }
    }
    println!(
        "exit package: {:.0} ns/cell over {} cells",
        busy.as_nanos() as f64 / packaged.max(1) as f64,
        packaged
    );
}
