//! Key-file parsers (C tor formats) must never panic on arbitrary file contents.
#![no_main]

use fors::keys::keyfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keyfile::parse_rsa_private_key(data);
    for tag in [keyfile::MASTER_TAG, keyfile::SIGNING_TAG] {
        if let Ok(k) = keyfile::parse_ed25519_secret_key(data, tag) {
            // A key that parses must re-encode to the same file.
            assert_eq!(&keyfile::encode_ed25519_secret_key(&k, tag)[..], data);
        }
        let _ = keyfile::parse_ed25519_public_key(data, tag);
        let _ = keyfile::parse_ed25519_cert(data, tag);
    }
    let _ = keyfile::parse_curve25519_keypair(data, keyfile::NTOR_TAG);
    let _ = fors::keys::tagged::decode(data, "ed25519v1-secret");
    let _ = fors::keys::pem::decode("RSA PRIVATE KEY", data);
});
