//! Ed25519 certificate and RSA->Ed25519 cross-cert parsers: no panics, exact round trips.
#![no_main]

use fors::keys::{Ed25519Cert, RsaEd25519CrossCert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Ed25519Cert::parse(data) {
        assert_eq!(cert.as_bytes(), data);
        let _ = cert.verify(None, None);
        let _ = cert.verify(
            Some(&cert.certified_key),
            Some(std::time::SystemTime::UNIX_EPOCH),
        );
        let _ = cert.expires_at_secs();
    }
    if let Ok(cc) = RsaEd25519CrossCert::parse(data) {
        assert_eq!(cc.as_bytes(), data);
        let _ = cc.expires_at_secs();
    }
});
