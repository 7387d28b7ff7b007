//! An introduction point whose service circuit uses CGO (relay cell format v1, proposal
//! 359) and a client circuit on tor1 (format v0): an INTRODUCE1 up to 490 bytes reaches the
//! service as INTRODUCE2; a longer one (v0 carries up to 498) would not fit a v1 INTRODUCE2,
//! and as C tor's `handle_introduce1` it is NACKed BAD_FORMAT before the lookup (whatever the
//! service circuit's format, so the client cannot learn it), and the service's intro
//! circuit is left alone.
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod circuit_common;

use circuit_common::hs::{destroys, establish_intro, peer, seeded};
use circuit_common::*;
use ed25519_dalek::SigningKey;
use fors::cell::chan::{Create2, Created2, HandshakeType};
use fors::cell::relay::{v0, v1, RelayCmd};
use fors::cell::{ChanCmd, CELL_BODY_LEN};
use fors::crypto::handshake::{CircuitExtension, CircuitKeys, NtorV3Client, SubprotoCap};
use fors::proto::circuit::{Action, RelayHop};
use fors::proto::hs::cells::{AckStatus, Introduce1, IntroduceAck};
use fors_testkit::cgo_ref::CgoClientCircuit;
use rand::rngs::StdRng;
use rand::Rng;

const RELAY: u8 = 3;

/// A CGO service circuit over channel 1: its layers and KH.
fn cgo_service(r: &mut Relay<RelayHop>, rng: &mut StdRng) -> (CgoClientCircuit, [u8; 20]) {
    let chan = relay_chan(1, &peer(0x21), false);
    let req = vec![
        CircuitExtension::CcRequest,
        CircuitExtension::SubprotoRequest(vec![SubprotoCap {
            protocol_id: 2,
            capability: 6,
        }]),
    ];
    let (hs, skin) = NtorV3Client::start(rng, &r.id.ed, r.keys.current().public(), &req).unwrap();
    let mut body = [0u8; CELL_BODY_LEN];
    Create2 {
        htype: HandshakeType::NTOR_V3,
        hdata: &skin,
    }
    .encode(&mut body)
    .unwrap();
    assert!(r
        .cell(
            &chan,
            fors::cell::CircId(0x8000_0001),
            ChanCmd::CREATE2,
            body
        )
        .is_empty());
    let (_, _, cmd, reply) = one_cell(&r.onions());
    assert_eq!(cmd, ChanCmd::CREATED2);
    let (keys, _) = hs
        .finish_circ(Created2::parse(&reply).unwrap().hdata, true)
        .unwrap();
    let kh = *keys.kh();
    let CircuitKeys::Cgo(keys) = keys else {
        panic!("CGO keys")
    };
    let mut layers = CgoClientCircuit::default();
    layers.push(&keys);
    (layers, kh)
}

/// The v1 messages for the service (channel 1) in `acts`.
fn to_service(layers: &mut CgoClientCircuit, acts: &[Action]) -> Vec<(RelayCmd, Vec<u8>)> {
    cells(acts)
        .into_iter()
        .filter(|c| c.0 .0 == 1 && c.2 == ChanCmd::RELAY)
        .map(|(_, _, _, mut b)| {
            layers.recognize(RELAY, &mut b).expect("recognized");
            let m = v1::parse(&b).unwrap();
            (m.cmd, m.data.to_vec())
        })
        .collect()
}

fn introduce(
    r: &mut Relay<RelayHop>,
    n: u32,
    sk: &SigningKey,
    len: usize,
) -> (Client, Vec<Action>, Vec<u8>) {
    let mut cl = Client::new(
        relay_chan(u64::from(n), &peer(0x22), false),
        0x8000_0000 | n,
    );
    cl.create(r, Hs::Ntor);
    // LEGACY_KEY_ID, key type, key length, key, no extensions: 56 bytes, then the payload.
    let encrypted = vec![0x5a; len - 56];
    let mut b = [0u8; 498];
    let k = Introduce1::encode(sk.verifying_key().as_bytes(), &[], &encrypted, &mut b).unwrap();
    assert_eq!(k, len);
    let (body, _) = cl
        .circ
        .relay_cell_with(&mut cl.rng, 0, RelayCmd::INTRODUCE1, 0, |o| {
            o[..k].copy_from_slice(&b[..k]);
            Ok(k)
        })
        .unwrap();
    let acts = r.cell(&cl.chan, cl.circ_id, ChanCmd::RELAY, body);
    (cl, acts, b[..k].to_vec())
}

#[test]
fn introduce1_too_long_for_a_v1_introduce2_is_nacked_bad_format() {
    let mut rng = seeded("introduce1_too_long_for_a_v1_introduce2_is_nacked_bad_format");
    let mut r = Relay::<RelayHop>::with_crypto(1, test_config(), "reject *:*", TestNet::default());
    let sk = SigningKey::from_bytes(&rng.gen());
    let (mut svc, kh) = cgo_service(&mut r, &mut rng);
    let mut body = [0u8; CELL_BODY_LEN];
    v1::encode(
        &mut body,
        RelayCmd::ESTABLISH_INTRO,
        0,
        &establish_intro(&sk, &kh),
        &mut rng,
    )
    .unwrap();
    svc.originate(0, RELAY, &mut body);
    let acts = r.cell(
        &relay_chan(1, &peer(0x21), false),
        fors::cell::CircId(0x8000_0001),
        ChanCmd::RELAY,
        body,
    );
    assert_eq!(
        to_service(&mut svc, &acts)[0].0,
        RelayCmd::INTRO_ESTABLISHED
    );

    // 490 bytes fit a v1 INTRODUCE2 (509 - 16 tag - 1 cmd - 2 length).
    let (mut cl, acts, sent) = introduce(&mut r, 2, &sk, 490);
    assert_eq!(
        to_service(&mut svc, &acts),
        vec![(RelayCmd::INTRODUCE2, sent)]
    );
    let g = cl.open_all(&acts);
    assert_eq!(
        IntroduceAck::parse(&g[0].3).unwrap().status,
        AckStatus::SUCCESS
    );

    // 491 to 498 do not: the client hears BAD_FORMAT and keeps its circuit; nothing
    // reaches the service, whose intro circuit stays up.
    const { assert!(v0::MAX_DATA_LEN >= 491) };
    for (chan, len) in [(3, 491), (4, v0::MAX_DATA_LEN)] {
        let (mut cl, acts, _) = introduce(&mut r, chan, &sk, len);
        assert!(to_service(&mut svc, &acts).is_empty());
        assert!(destroys(&acts).is_empty(), "{acts:?}");
        let g = cl.open_all(&acts);
        assert_eq!(g.len(), 1, "{acts:?}");
        assert_eq!(g[0].1, RelayCmd::INTRODUCE_ACK);
        assert_eq!(
            IntroduceAck::parse(&g[0].3).unwrap().status,
            AckStatus::BAD_FORMAT
        );
    }
    assert_eq!(r.core.hs_counters().0.intro1_malformed, 2);
    assert_eq!(r.core.hs_counters().0.intro1_circuit_dead, 0);
    assert_eq!(
        r.core.hs_table_sizes().0,
        1,
        "the service keeps its intro point"
    );
    // The service's circuit still introduces.
    let (_, acts, sent) = introduce(&mut r, 5, &sk, 100);
    assert_eq!(
        to_service(&mut svc, &acts),
        vec![(RelayCmd::INTRODUCE2, sent)]
    );
}
