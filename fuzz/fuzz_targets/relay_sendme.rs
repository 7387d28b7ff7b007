#![no_main]
use fors::cell::relay::msg::Sendme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Sendme::parse(data) {
        let mut out = [0u8; 64];
        let n = s.encode(&mut out).unwrap();
        assert_eq!(Sendme::parse(&out[..n]).unwrap(), s);
    }
});
