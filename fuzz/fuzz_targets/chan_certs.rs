#![no_main]
use fors::cell::chan::{CertEntry, Certs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certs::parse(data) {
        let entries: Vec<CertEntry<'_>> = c.iter().collect();
        assert_eq!(entries.len(), c.len());
        let _ = c.duplicate_type();
        let mut out = vec![0u8; data.len()];
        let n = Certs::encode(&entries, &mut out).unwrap();
        assert_eq!(
            Certs::parse(&out[..n]).unwrap().iter().collect::<Vec<_>>(),
            entries
        );
        assert_eq!(&out[..n], &data[..n]);
    }
});
