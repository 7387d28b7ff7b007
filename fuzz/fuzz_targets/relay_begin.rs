#![no_main]
use fors::cell::relay::msg::Begin;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Begin::parse(data) {
        // Canonical re-encoding is never much longer than the input (shortest IP forms).
        let mut out = vec![0u8; data.len() + 64];
        let n = b.encode(&mut out).unwrap();
        assert_eq!(Begin::parse(&out[..n]).unwrap(), b);
    }
});
