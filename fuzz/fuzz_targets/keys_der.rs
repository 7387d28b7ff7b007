//! DER reader and X.509 parser: arbitrary input must never panic or read out of bounds.
#![no_main]

use fors::keys::der::Reader;
use fors::keys::x509::X509Cert;
use libfuzzer_sys::fuzz_target;

fn walk(input: &[u8], depth: u32) {
    if depth > 16 {
        return;
    }
    let mut r = Reader::new(input);
    while let Ok(e) = r.read_any() {
        if e.tag & 0x20 != 0 {
            walk(e.body, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    walk(data, 0);
    if let Ok(cert) = X509Cert::parse(data) {
        let _ = cert.check_identity_cert(std::time::SystemTime::UNIX_EPOCH);
        let _ = cert.sha256();
    }
});
