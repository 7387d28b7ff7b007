#![no_main]
use fors::cell::chan::Versions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Versions::parse(data) {
        let list: Vec<u16> = v.iter().collect();
        let mut out = vec![0u8; data.len()];
        let n = Versions::encode(&list, &mut out).unwrap();
        assert_eq!(&out[..n], data);
        let _ = v.highest_common(&[4, 5]);
    }
});
