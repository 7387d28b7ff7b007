#![no_main]
use fors::cell::relay::msg::{Xoff, Xon};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 8];
    if let Ok(x) = Xon::parse(data) {
        let n = x.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &data[..n]);
    }
    if let Ok(x) = Xoff::parse(data) {
        let n = x.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &data[..n]);
    }
});
