//! ntor-v3 (CREATE2 HTYPE 3) relay side on arbitrary onionskins: must return an error,
//! never panic. Even first byte: the rest follows our real ID | KEYID.
#![no_main]

use fors::crypto::handshake::{
    negotiate_circ_params, ntor_v3, NtorKeyMap, NtorKeyPair, NtorV3ServerPolicy,
};
use fors::crypto::ids::Ed25519Identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = NtorKeyMap::new(NtorKeyPair::from_secret_bytes([1; 32]), None);
    let id = Ed25519Identity([9; 32]);
    let skin = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        [&id.0[..], keys.current().public().as_bytes(), rest].concat()
    };
    let policy = NtorV3ServerPolicy::default();
    let _ = ntor_v3::server_handshake(&mut rand::thread_rng(), &keys, &id, &skin, |exts| {
        negotiate_circ_params(exts, &policy)
    });
});
