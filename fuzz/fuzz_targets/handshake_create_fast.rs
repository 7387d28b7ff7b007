//! CREATE_FAST relay side, and the client side of every circuit handshake on arbitrary
//! replies: the test kit's client circuit (`fors_testkit::circuit`, the one the tests and the
//! load generator use) given an arbitrary CREATED_FAST or CREATED2 body after a CREATE_FAST,
//! ntor or ntor-v3 CREATE, then an arbitrary relay cell. Errors, never panics; a reply that
//! is accepted adds exactly one hop.
#![no_main]

use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::fast;
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors_testkit::circuit::{ClientCircuit, Handshake};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let _ = fast::server_handshake(&mut rng, data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let onion = x25519_dalek::PublicKey::from([9u8; 32]);
    let hs = match mode % 3 {
        0 => Handshake::Fast,
        1 => Handshake::Ntor {
            rsa: RsaIdentity([1; 20]),
            onion,
        },
        _ => Handshake::NtorV3 {
            ed: Ed25519Identity([2; 32]),
            onion,
            exts: vec![],
        },
    };
    let mut c = ClientCircuit::new(CircId(0x8000_0001));
    let (create, _) = c.create(&mut rng, &hs).unwrap();
    let answer = if create == ChanCmd::CREATE_FAST {
        ChanCmd::CREATED_FAST
    } else {
        ChanCmd::CREATED2
    };
    let (reply, cell) = rest.split_at(rest.len().min(CELL_BODY_LEN));
    let mut body = [0u8; CELL_BODY_LEN];
    body[..reply.len()].copy_from_slice(reply);
    if c.created(answer, &body).is_ok() {
        assert_eq!(c.hops(), 1);
        let mut relay = [0u8; CELL_BODY_LEN];
        relay[..cell.len()].copy_from_slice(cell);
        if let Ok(r) = c.open(&mut relay) {
            let _ = r.msg();
        }
    } else {
        assert_eq!(c.hops(), 0);
    }
});
