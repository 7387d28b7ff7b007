#![no_main]
use fors::cell::relay::msg::{Resolve, Resolved, ResolvedAnswer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Resolve::parse(data) {
        let mut out = vec![0u8; data.len() + 1];
        let n = r.encode(&mut out).unwrap();
        assert_eq!(Resolve::parse(&out[..n]).unwrap(), r);
    }
    if let Ok(r) = Resolved::parse(data) {
        let answers: Vec<ResolvedAnswer<'_>> = r.answers().collect();
        let mut out = vec![0u8; data.len()];
        let n = Resolved::encode(&answers, &mut out).unwrap();
        assert_eq!(&out[..n], data);
    }
});
