#![no_main]
use fors::cell::relay::msg::{Extend2, Extended2, LinkSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Extend2::parse(data) {
        let specs: Vec<LinkSpec<'_>> = e.link_specs().collect();
        let mut out = vec![0u8; data.len()];
        let n = Extend2::encode(&specs, &e.create2, &mut out).unwrap();
        assert_eq!(&out[..n], e.wire());
        let again = Extend2::parse(&out[..n]).unwrap();
        assert_eq!(again.link_specs().collect::<Vec<_>>(), specs);
        assert_eq!(again.create2, e.create2);
    }
    if let Ok(e) = Extended2::parse(data) {
        let mut out = vec![0u8; data.len()];
        let n = e.encode(&mut out).unwrap();
        assert_eq!(Extended2::parse(&out[..n]).unwrap(), e);
    }
});
