#![no_main]
use fors::cell::relay::msg::Begin;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Begin::parse(data) {
        let mut out = [0u8; 600];
        let n = b.encode(&mut out).unwrap();
        assert_eq!(Begin::parse(&out[..n]).unwrap(), b);
    }
});
