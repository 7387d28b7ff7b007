#![no_main]
use fors::cell::relay::msg::{Connected, End};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 64];
    if let Ok(e) = End::parse(data) {
        let n = e.encode(&mut out).unwrap();
        assert_eq!(End::parse(&out[..n]).unwrap(), e);
    }
    if let Ok(c) = Connected::parse(data) {
        let n = c.encode(&mut out).unwrap();
        let again = Connected::parse(&out[..n]).unwrap();
        assert_eq!(again.addr, c.addr);
        if c.addr.is_some_and(|a| a.is_ipv4()) {
            assert_eq!(again.ttl, c.ttl);
        }
    }
});
