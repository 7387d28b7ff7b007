//! DER input Tor parses (X.509 link/identity certs from CERTS cells, PKCS#1 RSA public keys
//! from certs and descriptors), through the `der`/`pkcs1` crates: arbitrary input must never
//! panic, and what parses must be what was given.
#![no_main]

use fors::keys::rsa::{public_key_der, public_key_from_der};
use fors::keys::x509::X509Cert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = X509Cert::parse(data) {
        // The parser takes exactly one certificate: no trailing bytes, nothing re-encoded.
        assert_eq!(cert.as_der(), data);
        let _ = cert.check_identity_cert(std::time::SystemTime::UNIX_EPOCH);
        let _ = cert.sha256();
    }
    if let Ok(key) = public_key_from_der(data) {
        // DER is canonical: a key that parses re-encodes to the same bytes (its fingerprint
        // is a hash of them).
        assert_eq!(public_key_der(&key).as_deref().ok(), Some(data));
    }
});
