//! ntor-v3 extension codec and the relay's negotiation on arbitrary messages (the part of
//! the ntor-v3 server that sees attacker-chosen plaintext after the MAC).
//! Checks: no panics; decode(encode(decode(m))) == decode(m) stably sorted by type.
#![no_main]

use fors::crypto::handshake::extensions::{decode_extensions, encode_extensions};
use fors::crypto::handshake::{negotiate_circ_params, NtorV3ServerPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(exts) = decode_extensions(data) else {
        return;
    };
    for cc_enabled in [false, true] {
        for cgo_supported in [false, true] {
            let policy = NtorV3ServerPolicy {
                cc_enabled,
                sendme_inc: 31,
                cgo_supported,
            };
            if let Ok((reply, params)) = negotiate_circ_params(&exts, &policy) {
                assert_eq!(params.cc.is_some(), !reply.is_empty());
                assert!(!params.cgo || (cgo_supported && params.cc.is_some()));
            }
        }
    }
    let mut encoded = Vec::new();
    encode_extensions(&exts, &mut encoded).expect("a decoded list always re-encodes");
    let mut sorted = exts.clone();
    sorted.sort_by_key(|e| e.ext_type());
    assert_eq!(decode_extensions(&encoded).expect("re-decodes"), sorted);
});
