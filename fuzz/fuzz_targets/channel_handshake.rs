//! A responder channel fed arbitrary cells right after TLS is up: the pre-handshake cell rules,
//! VERSIONS negotiation and the CERTS / AUTH_CHALLENGE / AUTHENTICATE / NETINFO handlers.
//! First byte odd: the input is sent as is; even: a valid VERSIONS(4,5) goes first so the
//! fuzzer reaches the cells after it. Must never panic; every outcome is open, waiting or a
//! typed close.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

// The relay identity (RSA key generation: seconds under ASan) is made before fuzzing starts,
// not inside the first input, where libFuzzer's -timeout counted it as a hang.
fuzz_target!(init: common::context(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut prefix = Vec::new();
    if mode & 1 == 0 {
        prefix.extend_from_slice(&[0, 0, 7, 0, 4, 0, 4, 0, 5]);
    }
    common::drive_responder(&prefix, rest);
});
