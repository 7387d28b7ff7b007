//! Exit DATA staged for the multi-circuit originate call (proto::circuit `staged.rs`): what
//! many circuits package in one batch is crypted together and still reaches each client in
//! order, decryptable, with END after its stream's DATA; a circuit that dies before the
//! flush loses only its own staged cells.

mod circuit_common;

use circuit_common::*;
use fors::cell::chan::DestroyReason;
use fors::cell::relay::msg::EndReason;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::stream::StreamHandle;

/// An exit with `n` circuits from one middle, each with an open stream to 127.0.0.1:80.
fn exit_with_streams(n: u32) -> (Relay, Vec<(Client, StreamHandle)>) {
    let mid = fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x44; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x44; 32]),
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
    let mut out = Vec::new();
    for i in 0..n {
        let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001 + i);
        cl.create(&mut exit, Hs::Ntor);
        let stream = cl.open_stream(&mut exit, 7);
        out.push((cl, stream));
    }
    (exit, out)
}

/// Three cells' worth of bytes, different for every circuit and cell.
fn payload(i: usize) -> Vec<u8> {
    (0..3 * 498)
        .map(|k| (i * 7 + k / 498 * 3 + k) as u8)
        .collect()
}

#[test]
fn many_circuits_packaged_in_one_batch_are_crypted_together_and_arrive_in_order() {
    let (mut exit, mut circs) = exit_with_streams(20);
    let (_, acts) = exit.io_unflushed(|c, io| {
        for (i, (_, s)) in circs.iter().enumerate() {
            assert_eq!(c.stream_data(*s, &payload(i), io).unwrap(), 3 * 498);
        }
        assert!(c.has_staged());
    });
    assert!(cells(&acts).is_empty(), "nothing leaves before the flush");
    let (_, acts) = exit.io(|_, _| {});
    assert!(!exit.core.has_staged());
    assert_eq!(cells(&acts).len(), 60);
    for (i, (cl, _)) in circs.iter_mut().enumerate() {
        let got = cl.open_all(&acts);
        assert_eq!(got.len(), 3, "circuit {i}");
        let mut bytes = Vec::new();
        for (hop, cmd, sid, data) in got {
            assert_eq!((hop, cmd, sid), (0, RelayCmd::DATA, 7));
            bytes.extend_from_slice(&data);
        }
        assert_eq!(bytes, payload(i), "circuit {i}");
    }
    // The cells went out in packaging order: circuit by circuit.
    let order: Vec<CircId> = cells(&acts).iter().map(|c| c.1).collect();
    let want: Vec<CircId> = (0..20u32)
        .flat_map(|i| [CircId(0x8000_0001 + i); 3])
        .collect();
    assert_eq!(order, want);
    let m = exit.core.metrics();
    assert_eq!(m.staged_cells_dropped, 0);
    assert!(
        m.originate_multi_flushes >= 1,
        "one call crypted several circuits"
    );

    // A second round keeps every circuit's keystream and digest in step.
    let (_, acts) = exit.io(|c, io| {
        for (i, (_, s)) in circs.iter().enumerate().rev() {
            c.stream_data(*s, &payload(i + 1), io).unwrap();
        }
    });
    for (i, (cl, _)) in circs.iter_mut().enumerate() {
        let bytes: Vec<u8> = cl.open_all(&acts).into_iter().flat_map(|g| g.3).collect();
        assert_eq!(bytes, payload(i + 1), "circuit {i}, second round");
    }
}

#[test]
fn end_follows_its_data_and_a_dead_circuit_loses_only_its_staged_cells() {
    let (mut exit, mut circs) = exit_with_streams(3);
    let (_, acts) = exit.io_unflushed(|c, io| {
        c.stream_data(circs[0].1, &payload(0), io).unwrap();
        c.stream_data(circs[1].1, &payload(1), io).unwrap();
        c.stream_data(circs[2].1, &payload(2), io).unwrap();
        // The socket of stream 0 hit EOF after its data: the END must follow the DATA.
        c.stream_closed(circs[0].1, EndReason::Done, io).unwrap();
    });
    let got = circs[0].0.open_all(&acts);
    let cmds: Vec<RelayCmd> = got.iter().map(|g| g.1).collect();
    assert_eq!(
        cmds,
        [
            RelayCmd::DATA,
            RelayCmd::DATA,
            RelayCmd::DATA,
            RelayCmd::END
        ]
    );
    // The END flushed everything staged before it, so circuits 1 and 2 got theirs too.
    assert_eq!(circs[1].0.open_all(&acts).len(), 3);
    assert_eq!(circs[2].0.open_all(&acts).len(), 3);

    // Stage on circuits 1 and 2, then circuit 1 is destroyed before the flush.
    let chan = circs[1].0.chan;
    let (_, acts) = exit.io_unflushed(|c, io| {
        c.stream_data(circs[1].1, &payload(5), io).unwrap();
        c.stream_data(circs[2].1, &payload(6), io).unwrap();
        let mut body = [0u8; CELL_BODY_LEN];
        body[0] = u8::from(DestroyReason::Finished);
        c.handle_cell(&chan, CircId(0x8000_0002), ChanCmd::DESTROY, &mut body, io);
    });
    assert!(cells(&acts).is_empty());
    let (_, acts) = exit.io(|_, _| {});
    assert!(circs[1].0.open_all(&acts).is_empty());
    let bytes: Vec<u8> = circs[2]
        .0
        .open_all(&acts)
        .into_iter()
        .flat_map(|g| g.3)
        .collect();
    assert_eq!(bytes, payload(6));
    assert_eq!(
        exit.core.metrics().staged_cells_dropped,
        3,
        "circuit 1's three cells dropped"
    );
}
