//! A responder channel that completed a client handshake (VERSIONS + NETINFO), then fed
//! arbitrary bytes as cells: the open-channel cell path (framing with 4-byte circuit IDs,
//! PADDING_NEGOTIATE parsing, ignored and fatal commands, delivery to the sink). The first
//! byte picks link version 4 or 5. Must never panic.
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
    let v = if mode & 1 == 0 { 4 } else { 5 };
    prefix.extend_from_slice(&[0, 0, 7, 0, 2, 0, v]);
    let mut ni = [0u8; 514];
    ni[4] = 8;
    ni[5..15].copy_from_slice(&[0, 0, 0, 0, 4, 4, 127, 0, 0, 1]);
    prefix.extend_from_slice(&ni);
    common::drive_responder(&prefix, rest);
});
