//! Server descriptor / extra-info checker and the netdoc tokenizer: no panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(items) = fors::dir::netdoc::tokenize(text) {
        for i in &items {
            assert!(i.start < i.end && i.end <= text.len());
        }
    }
    let _ = fors::dir::check_descriptor(text, Some(std::time::SystemTime::UNIX_EPOCH));
});
