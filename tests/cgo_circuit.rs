//! CGO relay crypto (proposal 359) on circuits of the circuit core, driven by the test kit's
//! independent CGO client (`fors_testkit::cgo_ref`): an ntor-v3 CREATE2 asking for
//! congestion control and Relay=6, then relay cell format v1 both ways, BEGIN/DATA/END and
//! circuit SENDMEs with 16-byte CGO tags, a forged tag, and a tor1 circuit beside it.

mod circuit_common;

use std::net::Ipv4Addr;

use circuit_common::*;
use fors::cell::chan::{Create2, Created2, DestroyReason, HandshakeType};
use fors::cell::relay::msg::{BeginTarget, Extend2, Extended2, LinkSpec, Sendme};
use fors::cell::relay::{v1, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{CircuitExtension, CircuitKeys, NtorV3Client, SubprotoCap};
use fors::proto::circuit::{
    Action, CellBody, ChanId, ChanInfo, ExtendDone, NextHop, RelayHop, ShardIdx,
};
use fors::proto::stream::StreamHandle;
use fors_testkit::cgo_ref::CgoClientCircuit;
use rand::{Rng, RngCore, SeedableRng};

const EXIT_LOCAL: &str = "accept 127.0.0.1:*, reject *:*";
const RELAY: u8 = 3;

/// A decrypted cell: (hop, relay command, stream, data, SENDME tag).
type Opened = (usize, RelayCmd, u16, Vec<u8>, [u8; 16]);

fn seeded() -> rand::rngs::StdRng {
    let seed: u64 = rand::thread_rng().gen();
    println!("seed {seed:#x}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn mid_id() -> fors::proto::circuit::RelayIdentity {
    fors::proto::circuit::RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    }
}

fn exit_relay() -> Relay<RelayHop> {
    relay_with(9, EXIT_LOCAL)
}

fn relay_with(tag: u8, policy: &str) -> Relay<RelayHop> {
    let net = TestNet {
        known: vec![mid_id().rsa, fors::crypto::ids::RsaIdentity([1; 20])],
        reentry: vec![],
    };
    let mut cfg = test_config();
    cfg.pool_cells = 4096;
    cfg.max_queue_per_circuit = 1024;
    Relay::with_crypto(tag, cfg, policy, net)
}

/// A CGO client circuit whose cells go straight into the exit's core.
struct CgoClient {
    chan: ChanInfo,
    circ_id: CircId,
    layers: CgoClientCircuit,
    rng: rand::rngs::StdRng,
}

fn cgo_request() -> Vec<CircuitExtension> {
    vec![
        CircuitExtension::CcRequest,
        CircuitExtension::SubprotoRequest(vec![SubprotoCap {
            protocol_id: 2,
            capability: 6,
        }]),
    ]
}

impl CgoClient {
    /// Builds the first hop with ntor-v3, CC and the CGO request; returns the reply
    /// extensions.
    fn create(relay: &mut Relay<RelayHop>, circ_id: u32) -> (Self, Vec<CircuitExtension>) {
        let mut rng = seeded();
        let chan = relay_chan(1, &mid_id(), false);
        let (hs, skin) = NtorV3Client::start(
            &mut rng,
            &relay.id.ed,
            relay.keys.current().public(),
            &cgo_request(),
        )
        .unwrap();
        let mut body = [0u8; CELL_BODY_LEN];
        Create2 {
            htype: HandshakeType::NTOR_V3,
            hdata: &skin,
        }
        .encode(&mut body)
        .unwrap();
        let circ_id = CircId(circ_id);
        assert!(relay
            .cell(&chan, circ_id, ChanCmd::CREATE2, body)
            .is_empty());
        let (_, id, cmd, reply) = one_cell(&relay.onions());
        assert_eq!((id, cmd), (circ_id, ChanCmd::CREATED2));
        let c2 = Created2::parse(&reply).unwrap();
        let (keys, exts) = hs.finish_circ(c2.hdata, true).unwrap();
        let CircuitKeys::Cgo(keys) = keys else {
            panic!("CGO keys")
        };
        let mut layers = CgoClientCircuit::default();
        layers.push(&keys);
        let me = CgoClient {
            chan,
            circ_id,
            layers,
            rng,
        };
        (me, exts)
    }

    /// A v1 cell for hop 0; the body and the SENDME tag the hop will keep.
    fn cell(&mut self, cmd: RelayCmd, sid: u16, data: &[u8]) -> (CellBody, [u8; 16]) {
        self.cell_to(0, ChanCmd::RELAY, cmd, sid, data)
    }

    /// A v1 cell for `hop`, sent as channel command `chan_cmd` (CGO tweaks with it).
    fn cell_to(
        &mut self,
        hop: usize,
        chan_cmd: ChanCmd,
        cmd: RelayCmd,
        sid: u16,
        data: &[u8],
    ) -> (CellBody, [u8; 16]) {
        let mut body = [0u8; CELL_BODY_LEN];
        v1::encode(&mut body, cmd, sid, data, &mut self.rng).unwrap();
        let tag = self.layers.originate(hop, u8::from(chan_cmd), &mut body);
        (body, tag)
    }

    fn send(
        &mut self,
        relay: &mut Relay<RelayHop>,
        cmd: RelayCmd,
        sid: u16,
        data: &[u8],
    ) -> (Vec<Action>, [u8; 16]) {
        let (body, tag) = self.cell(cmd, sid, data);
        (
            relay.cell(&self.chan, self.circ_id, ChanCmd::RELAY, body),
            tag,
        )
    }

    /// Every RELAY cell to us in `acts` from hop 0, decrypted: (cmd, stream, data, tag).
    fn open_all(&mut self, acts: &[Action]) -> Vec<(RelayCmd, u16, Vec<u8>, [u8; 16])> {
        self.open_all_hops(acts)
            .into_iter()
            .map(|(hop, cmd, sid, data, tag)| {
                assert_eq!(hop, 0);
                (cmd, sid, data, tag)
            })
            .collect()
    }

    /// Every RELAY cell to us in `acts`, decrypted: (hop, cmd, stream, data, SENDME tag).
    fn open_all_hops(&mut self, acts: &[Action]) -> Vec<Opened> {
        cells(acts)
            .into_iter()
            .filter(|(ch, id, cmd, _)| {
                *ch == self.chan.id && *id == self.circ_id && *cmd == ChanCmd::RELAY
            })
            .map(|(_, _, _, mut b)| {
                let (hop, tag) = self.layers.recognize(RELAY, &mut b).expect("recognized");
                let m = v1::parse(&b).expect("v1 message");
                (hop, m.cmd, m.stream_id, m.data.to_vec(), tag)
            })
            .collect()
    }
}

fn destroys(acts: &[Action]) -> Vec<DestroyReason> {
    cells(acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|c| destroy_reason(&c.3))
        .collect()
}

/// BEGIN to 127.0.0.1:80 as stream 7; returns the exit's stream handle.
fn open_stream(exit: &mut Relay<RelayHop>, cl: &mut CgoClient) -> StreamHandle {
    let mut begin = [0u8; 64];
    let n = begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80)
        .encode(&mut begin)
        .unwrap();
    let (acts, _) = cl.send(exit, RelayCmd::BEGIN, 7, &begin[..n]);
    let Some(Action::Connect { stream, addr }) = acts.first().cloned() else {
        panic!("{acts:?}")
    };
    let (_, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (RelayCmd::CONNECTED, 7));
    stream
}

#[test]
fn cgo_exit_carries_a_stream_both_ways_with_cgo_sendmes() {
    let mut exit = exit_relay();
    let (mut cl, exts) = CgoClient::create(&mut exit, 0x8000_0001);
    assert_eq!(exts, vec![CircuitExtension::CcResponse { sendme_inc: 31 }]);
    assert_eq!(exit.core.metrics().circuits_cgo_created, 1);
    let stream = open_stream(&mut exit, &mut cl);

    // Upload: 100 DATA cells of random sizes; the exit writes the same bytes and sends a
    // circuit SENDME carrying the 16-byte tag of every 31st cell.
    let mut sent = Vec::new();
    let mut written = Vec::new();
    let mut tags = Vec::new();
    let mut sendmes = Vec::new();
    for _ in 0..100 {
        let len = cl.rng.gen_range(1..=v1::max_data_len(RelayCmd::DATA));
        let mut chunk = vec![0u8; len];
        cl.rng.fill_bytes(&mut chunk);
        sent.extend_from_slice(&chunk);
        let (acts, tag) = cl.send(&mut exit, RelayCmd::DATA, 7, &chunk);
        tags.push(tag);
        for a in &acts {
            if let Action::StreamWrite { data, .. } = a {
                written.extend_from_slice(data.as_slice());
            }
        }
        for (cmd, sid, data, _) in cl.open_all(&acts) {
            assert_eq!((cmd, sid), (RelayCmd::SENDME, 0));
            sendmes.push(data);
        }
    }
    assert_eq!(written, sent);
    assert_eq!(sendmes.len(), 3);
    for (i, s) in sendmes.iter().enumerate() {
        let Sendme::V1 { tag } = Sendme::parse(s).unwrap() else {
            panic!("v1 SENDME")
        };
        assert_eq!(tag, &tags[31 * (i + 1) - 1][..], "SENDME {i}");
    }

    // Download: 62 cells' worth; the client acknowledges every 31st cell with its tag.
    let mut down = vec![0u8; 62 * v1::max_data_len(RelayCmd::DATA)];
    cl.rng.fill_bytes(&mut down);
    let (n, acts) = exit.io(|c, io| c.stream_data(stream, &down, io));
    let n = n.unwrap();
    let got = cl.open_all(&acts);
    assert!(got.len() >= 31, "{} cells", got.len());
    let mut received = Vec::new();
    for (cmd, sid, data, _) in &got {
        assert_eq!((*cmd, *sid), (RelayCmd::DATA, 7));
        received.extend_from_slice(data);
    }
    assert_eq!(&received[..], &down[..received.len()]);
    assert!(received.len() <= n);
    let circ = exit.core.circuit_by_prev(cl.chan.id, cl.circ_id).unwrap();
    let before = exit.core.circuit_cc(circ).unwrap().inflight;
    let mut sendme = [0u8; 32];
    let k = Sendme::V1 { tag: &got[30].3 }.encode(&mut sendme).unwrap();
    let (acts, _) = cl.send(&mut exit, RelayCmd::SENDME, 0, &sendme[..k]);
    assert!(destroys(&acts).is_empty(), "{acts:?}");
    assert_eq!(exit.core.circuit_cc(circ).unwrap().inflight, before - 31);

    // END closes the stream.
    let (acts, _) = cl.send(&mut exit, RelayCmd::END, 7, &[6]);
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::StreamClose { stream: s } if *s == stream)));
}

#[test]
fn cgo_sendme_with_a_wrong_or_tor1_length_tag_closes() {
    for tag_len in [16usize, 20] {
        let mut exit = exit_relay();
        let (mut cl, _) = CgoClient::create(&mut exit, 0x8000_0001);
        let stream = open_stream(&mut exit, &mut cl);
        let down = vec![5u8; 40 * v1::max_data_len(RelayCmd::DATA)];
        let (_, acts) = exit.io(|c, io| c.stream_data(stream, &down, io));
        let got = cl.open_all(&acts);
        assert!(got.len() >= 31);
        // The right tag's bytes, but flipped (16) or padded to tor1's length (20).
        let mut tag = [0u8; 20];
        tag[..16].copy_from_slice(&got[30].3);
        if tag_len == 16 {
            tag[0] ^= 1;
        }
        let mut sendme = [0u8; 32];
        let k = Sendme::V1 {
            tag: &tag[..tag_len],
        }
        .encode(&mut sendme)
        .unwrap();
        let (acts, _) = cl.send(&mut exit, RelayCmd::SENDME, 0, &sendme[..k]);
        assert_eq!(
            destroys(&acts),
            vec![DestroyReason::TorProtocol],
            "{tag_len}"
        );
        assert_eq!(exit.core.metrics().sendme_auth_failures, 1);
    }
}

#[test]
fn cgo_cell_with_a_forged_tag_closes_with_torprotocol() {
    let mut exit = exit_relay();
    let (mut cl, _) = CgoClient::create(&mut exit, 0x8000_0001);
    let (mut body, _) = cl.cell(RelayCmd::DROP, 0, &[]);
    let i = cl.rng.gen_range(0..16);
    body[i] ^= 0x40;
    let acts = exit.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
    assert_eq!(destroys(&acts), vec![DestroyReason::TorProtocol]);
    assert_eq!(exit.core.circuit_count(), 0);
}

#[test]
fn tor1_circuit_beside_a_cgo_circuit() {
    let mut exit = exit_relay();
    let (mut cgo, _) = CgoClient::create(&mut exit, 0x8000_0001);
    let mut t1 = Client::new(relay_chan(2, &mid_id(), false), 0x8000_0002);
    let exts = t1.create(&mut exit, Hs::NtorV3 { cc: true });
    assert_eq!(exts, vec![CircuitExtension::CcResponse { sendme_inc: 31 }]);
    assert_eq!(exit.core.metrics().circuits_cgo_created, 1);
    assert_eq!(exit.core.metrics().circuits_created, 2);
    let s1 = t1.open_stream(&mut exit, 3);
    let s2 = open_stream(&mut exit, &mut cgo);
    let (_, acts) = exit.io(|c, io| {
        c.stream_data(s1, b"tor1 bytes", io).unwrap();
        c.stream_data(s2, b"cgo bytes", io).unwrap();
    });
    let (me1, id1) = (t1.chan.id, t1.circ_id);
    let tor1_cells: Vec<_> = cells(&acts)
        .into_iter()
        .filter(|c| c.0 == me1 && c.1 == id1)
        .map(|c| t1.open(c.3))
        .collect();
    assert_eq!(tor1_cells.len(), 1);
    assert_eq!(tor1_cells[0].3, b"tor1 bytes");
    let got = cgo.open_all(&acts);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, b"cgo bytes");
}

#[test]
fn cgo_request_is_refused_without_congestion_control() {
    // C `negotiate_v3_ntor_server_circ_params`: the v1 format needs CC.
    let mut exit = exit_relay();
    let mut rng = seeded();
    let chan = relay_chan(1, &mid_id(), false);
    let exts = vec![CircuitExtension::SubprotoRequest(vec![SubprotoCap {
        protocol_id: 2,
        capability: 6,
    }])];
    let (_, skin) =
        NtorV3Client::start(&mut rng, &exit.id.ed, exit.keys.current().public(), &exts).unwrap();
    let mut body = [0u8; CELL_BODY_LEN];
    Create2 {
        htype: HandshakeType::NTOR_V3,
        hdata: &skin,
    }
    .encode(&mut body)
    .unwrap();
    exit.cell(&chan, CircId(0x8000_0001), ChanCmd::CREATE2, body);
    assert_eq!(destroys(&exit.onions()), vec![DestroyReason::TorProtocol]);
    assert_eq!(exit.core.metrics().circuits_cgo_created, 0);
}

/// Client → A (Fors middle) → B (Fors exit), both hops CGO: the EXTEND2 goes as a v1
/// RELAY_EARLY cell, the new hop's keys come from the EXTENDED2, and a stream runs through
/// both cores with SENDMEs from the exit checked against the client's tags.
#[test]
fn cgo_two_hops_middle_and_exit() {
    let mut a = relay_with(1, "reject *:*");
    let mut b = relay_with(2, EXIT_LOCAL);
    let (mut cl, _) = CgoClient::create(&mut a, 0x8000_0001);

    let (hs, skin) = NtorV3Client::start(
        &mut cl.rng,
        &b.id.ed,
        b.keys.current().public(),
        &cgo_request(),
    )
    .unwrap();
    let specs = [
        LinkSpec::Ipv4("127.0.0.1:9002".parse().unwrap()),
        LinkSpec::RsaId(b.id.rsa),
        LinkSpec::Ed25519Id(b.id.ed),
    ];
    let mut ext = [0u8; 490];
    let n = Extend2::encode(
        &specs,
        &Create2 {
            htype: HandshakeType::NTOR_V3,
            hdata: &skin,
        },
        &mut ext,
    )
    .unwrap();
    let (body, _) = cl.cell_to(0, ChanCmd::RELAY_EARLY, RelayCmd::EXTEND2, 0, &ext[..n]);
    let acts = a.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY_EARLY, body);
    let (circ, create2) = match &acts[..] {
        [Action::Extend { circ, create2, .. }] => (*circ, *create2),
        other => panic!("{other:?}"),
    };
    let ab_on_b = relay_chan(200, &a.id, false);
    let ab_on_a = relay_chan(201, &b.id, true);
    let ab_id = CircId(0x8000_0042);
    assert!(b
        .cell(&ab_on_b, ab_id, ChanCmd::CREATE2, create2)
        .is_empty());
    let (_, _, cmd, created2) = one_cell(&b.onions());
    assert_eq!(cmd, ChanCmd::CREATED2);
    assert_eq!(b.core.metrics().circuits_cgo_created, 1);
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
    assert_eq!(got[0].0, RelayCmd::EXTENDED2);
    let hdata = Extended2::parse(&got[0].2).unwrap().hdata;
    let (keys, _) = hs.finish_circ(hdata, true).unwrap();
    let CircuitKeys::Cgo(keys) = keys else {
        panic!("CGO keys")
    };
    cl.layers.push(&keys);

    // Through A to B and back: each cell crosses A's core, then B's.
    let to_b = |cl: &mut CgoClient,
                a: &mut Relay<RelayHop>,
                b: &mut Relay<RelayHop>,
                cmd: RelayCmd,
                sid: u16,
                data: &[u8]| {
        let (body, tag) = cl.cell_to(1, ChanCmd::RELAY, cmd, sid, data);
        let acts = a.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
        let (ch, id, c, fwd) = one_cell(&acts);
        assert_eq!((ch, id, c), (ChanId(201), ab_id, ChanCmd::RELAY));
        (b.cell(&ab_on_b, ab_id, c, fwd), tag)
    };
    let back = |cl: &mut CgoClient, a: &mut Relay<RelayHop>, acts: &[Action]| {
        let mut out = Vec::new();
        for (ch, id, c, body) in cells(acts) {
            assert_eq!((ch, id), (ChanId(200), ab_id));
            out.extend(cl.open_all_hops(&a.cell(&ab_on_a, ab_id, c, body)));
        }
        out
    };

    let mut begin = [0u8; 64];
    let k = begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80)
        .encode(&mut begin)
        .unwrap();
    let (acts, _) = to_b(&mut cl, &mut a, &mut b, RelayCmd::BEGIN, 3, &begin[..k]);
    let Some(Action::Connect { stream, addr }) = acts.first().cloned() else {
        panic!("{acts:?}")
    };
    let (_, acts) = b.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
    let got = back(&mut cl, &mut a, &acts);
    assert_eq!((got[0].0, got[0].1, got[0].2), (1, RelayCmd::CONNECTED, 3));

    // Upload 31 cells: B writes the bytes and acknowledges the 31st cell's tag.
    let mut sent = Vec::new();
    let mut written = Vec::new();
    let mut last_tag = [0u8; 16];
    let mut sendmes = Vec::new();
    for _ in 0..31 {
        let mut chunk = vec![0u8; cl.rng.gen_range(1..=v1::max_data_len(RelayCmd::DATA))];
        cl.rng.fill_bytes(&mut chunk);
        sent.extend_from_slice(&chunk);
        let (acts, tag) = to_b(&mut cl, &mut a, &mut b, RelayCmd::DATA, 3, &chunk);
        last_tag = tag;
        for act in &acts {
            if let Action::StreamWrite { data, .. } = act {
                written.extend_from_slice(data.as_slice());
            }
        }
        let relayed: Vec<_> = acts
            .iter()
            .filter(|x| matches!(x, Action::SendCell { .. }))
            .cloned()
            .collect();
        sendmes.extend(back(&mut cl, &mut a, &relayed));
    }
    assert_eq!(written, sent);
    assert_eq!(sendmes.len(), 1);
    assert_eq!((sendmes[0].0, sendmes[0].1), (1, RelayCmd::SENDME));
    let Sendme::V1 { tag } = Sendme::parse(&sendmes[0].3).unwrap() else {
        panic!("v1 SENDME")
    };
    assert_eq!(tag, &last_tag[..]);

    // Download: B's DATA through A, bytes checked; the client's SENDME to B is accepted.
    let mut down = vec![0u8; 40 * v1::max_data_len(RelayCmd::DATA)];
    cl.rng.fill_bytes(&mut down);
    let (_, acts) = b.io(|c, io| c.stream_data(stream, &down, io).unwrap());
    let got = back(&mut cl, &mut a, &acts);
    assert!(got.len() >= 31);
    let mut received = Vec::new();
    for (hop, cmd, sid, data, _) in &got {
        assert_eq!((*hop, *cmd, *sid), (1, RelayCmd::DATA, 3));
        received.extend_from_slice(data);
    }
    assert_eq!(&received[..], &down[..received.len()]);
    let mut sendme = [0u8; 32];
    let k = Sendme::V1 { tag: &got[30].4 }.encode(&mut sendme).unwrap();
    let (acts, _) = to_b(&mut cl, &mut a, &mut b, RelayCmd::SENDME, 0, &sendme[..k]);
    assert!(destroys(&acts).is_empty(), "{acts:?}");
    assert_eq!(a.core.metrics().circuits_cgo_created, 1);
}

/// The shard's read path (`queue_relay_cell` / `flush_relay_cells`): DATA cells of three CGO
/// circuits and a tor1 circuit on one channel, interleaved in one read with a RELAY_EARLY
/// among them, reach their streams intact and in order.
#[test]
fn cgo_and_tor1_cells_crypted_together_in_one_read() {
    let mut exit = exit_relay();
    let mut cgo: Vec<CgoClient> = (0..3)
        .map(|i| CgoClient::create(&mut exit, 0x8000_0010 + i).0)
        .collect();
    let mut handles = Vec::new();
    for (i, cl) in cgo.iter_mut().enumerate() {
        let mut begin = [0u8; 64];
        let k = begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80)
            .encode(&mut begin)
            .unwrap();
        let sid = 10 + i as u16;
        let (acts, _) = cl.send(&mut exit, RelayCmd::BEGIN, sid, &begin[..k]);
        let Some(Action::Connect { stream, addr }) = acts.first().cloned() else {
            panic!("{acts:?}")
        };
        let (_, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
        assert_eq!(cl.open_all(&acts)[0].0, RelayCmd::CONNECTED);
        handles.push(stream);
    }
    let mut t1 = Client::new(relay_chan(1, &mid_id(), false), 0x8000_0020);
    t1.create(&mut exit, Hs::NtorV3 { cc: true });
    handles.push(t1.open_stream(&mut exit, 5));

    let mut rng = seeded();
    let mut sent = vec![Vec::new(); 4];
    let mut read = Vec::new();
    for round in 0..20 {
        for (i, cl) in cgo.iter_mut().enumerate() {
            if round == 7 && i == 1 {
                let (b, _) = cl.cell_to(0, ChanCmd::RELAY_EARLY, RelayCmd::DROP, 0, &[]);
                read.push((cl.circ_id, ChanCmd::RELAY_EARLY, b));
            }
            let mut chunk = vec![0u8; rng.gen_range(1..=v1::max_data_len(RelayCmd::DATA))];
            rng.fill_bytes(&mut chunk);
            let (b, _) = cl.cell(RelayCmd::DATA, 10 + i as u16, &chunk);
            sent[i].extend_from_slice(&chunk);
            read.push((cl.circ_id, ChanCmd::RELAY, b));
        }
        let mut chunk = vec![0u8; rng.gen_range(1..=400)];
        rng.fill_bytes(&mut chunk);
        let (b, _) = t1.relay_cell(0, &fors::cell::relay::msg::RelayMsg::Data(&chunk), 5);
        sent[3].extend_from_slice(&chunk);
        read.push((t1.circ_id, ChanCmd::RELAY, b));
    }
    let chan = cgo[0].chan.id;
    let (_, acts) = exit.io(|c, io| {
        for (id, cmd, body) in &read {
            c.queue_relay_cell(chan, *id, *cmd, body, io);
        }
        c.flush_relay_cells(io);
    });
    assert!(destroys(&acts).is_empty(), "{acts:?}");
    let mut written = vec![Vec::new(); 4];
    for a in &acts {
        if let Action::StreamWrite { stream, data } = a {
            let i = handles.iter().position(|h| h == stream).unwrap();
            written[i].extend_from_slice(data.as_slice());
        }
    }
    assert_eq!(written, sent);
}

/// The multi-circuit jobs of a shard read or flush, over a plain vector of hops.
struct MixedJobs<'a> {
    hops: &'a mut [RelayHop],
    cells: &'a mut [CellBody],
    circ: &'a [usize],
}

impl fors::proto::circuit::OriginateJobs<RelayHop> for MixedJobs<'_> {
    fn count(&self) -> usize {
        self.cells.len()
    }
    fn circuit(&self, i: usize) -> usize {
        self.circ[i]
    }
    fn get(&mut self, i: usize) -> (&mut RelayHop, &mut CellBody) {
        (&mut self.hops[self.circ[i]], &mut self.cells[i])
    }
}

/// Twin sets of hops keyed alike: tor1 and CGO circuits mixed.
fn mixed_hops(rng: &mut rand::rngs::StdRng, kinds: &[bool]) -> (Vec<RelayHop>, Vec<RelayHop>) {
    use fors::crypto::keymat::Tor1KeyMaterial;
    use fors::crypto::relay::cgo::CgoKeyMaterial;
    use fors::proto::circuit::HopCrypto;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &cgo in kinds {
        if cgo {
            let mut k = [0u8; CgoKeyMaterial::STREAM_LEN];
            rng.fill_bytes(&mut k);
            let m = CgoKeyMaterial::from_bytes(&k);
            a.push(RelayHop::from_cgo_keys(&m).unwrap());
            b.push(RelayHop::from_cgo_keys(&m).unwrap());
        } else {
            let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
            rng.fill_bytes(&mut k);
            let m = Tor1KeyMaterial::from_kdf_output(&k);
            a.push(RelayHop::from_keys(&m));
            b.push(RelayHop::from_keys(&m));
        }
    }
    (a, b)
}

/// A batch mixing tor1 and CGO circuits (more jobs than one split chunk) is split by
/// algorithm: every job's body, flag and tag equal those of one-by-one calls in job order.
#[test]
fn mixed_batches_split_by_algorithm_match_one_by_one() {
    use fors::proto::circuit::HopCrypto;
    let mut rng = seeded();
    // Circuits 0..6: tor1 and CGO interleaved, enough tor1 ones for the multi-buffer kernel.
    let kinds = [false, true, false, false, true, false, true, false];
    let n_jobs = 300;
    let circ: Vec<usize> = (0..n_jobs).map(|_| rng.gen_range(0..kinds.len())).collect();
    let mut cells = vec![[0u8; CELL_BODY_LEN]; n_jobs];
    for c in cells.iter_mut() {
        rng.fill_bytes(c);
    }

    // Originate.
    let (mut batch, mut single) = mixed_hops(&mut rng, &kinds);
    let mut got = cells.clone();
    let mut got_tags = vec![[0u8; 20]; n_jobs];
    RelayHop::originate_jobs(
        &mut MixedJobs {
            hops: &mut batch,
            cells: &mut got,
            circ: &circ,
        },
        &mut got_tags,
    );
    let mut want = cells.clone();
    for i in 0..n_jobs {
        let t = single[circ[i]].originate(&mut want[i]);
        assert_eq!(got_tags[i], t, "originate job {i} (circuit {})", circ[i]);
    }
    assert_eq!(got, want, "originated bodies");

    // Forward: ciphertext passing through (random cells: not for this hop).
    let (mut batch, mut single) = mixed_hops(&mut rng, &kinds);
    let mut got = cells.clone();
    let mut hits = vec![true; n_jobs];
    let mut tags = vec![[0u8; 20]; n_jobs];
    let n = RelayHop::forward_jobs(
        &mut MixedJobs {
            hops: &mut batch,
            cells: &mut got,
            circ: &circ,
        },
        &mut hits,
        &mut tags,
    )
    .recognized;
    let mut want = cells.clone();
    let want_hits: Vec<bool> = (0..n_jobs)
        .map(|i| single[circ[i]].recognize(&mut want[i]))
        .collect();
    assert_eq!(hits, want_hits);
    assert_eq!(n, want_hits.iter().filter(|&&h| h).count());
    assert_eq!(got, want, "forwarded bodies");
}
