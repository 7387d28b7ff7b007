//! ntor (CREATE2 HTYPE 2) relay side on arbitrary onionskins: must return an error, never
//! panic. Odd first byte: the rest is used as is; even: it follows our real NODEID | KEYID
//! so the curve25519 path is reached.
#![no_main]

use fors::crypto::handshake::{ntor, NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::RsaIdentity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = NtorKeyMap::new(
        NtorKeyPair::from_secret_bytes([1; 32]),
        Some(NtorKeyPair::from_secret_bytes([2; 32])),
    );
    let id = RsaIdentity([7; 20]);
    let skin = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        let key = if mode & 2 == 0 {
            keys.current()
        } else {
            keys.previous().unwrap()
        };
        [&id.0[..], key.public().as_bytes(), rest].concat()
    };
    let _ = ntor::server_handshake(&mut rand::thread_rng(), &keys, &id, &skin);
});
