//! Fuzzes the torrc reader: syntax, `%include` expansion (against an in-memory tree that
//! includes the input itself, to exercise loops), option merging and typed validation.
//! Any input must yield a Config or an error, never a panic.
#![no_main]

use fors::config::{parse_str, MemFs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fs = MemFs::default()
        .with("/fuzz/torrc", &text)
        .with("/fuzz/d/a.conf", "ORPort 9001\n")
        .with("/fuzz/d/b.conf", &text);
    if let Err(e) = parse_str(&fs, "torrc", &text) {
        // Every error renders; file errors carry a location.
        let _ = e.to_string();
    }
});
