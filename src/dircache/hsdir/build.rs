//! Writes a signed outer layer in C tor's layout (`hs_desc_encode_descriptor`'s plaintext
//! part). The HSDir never writes descriptors; this exists so tests, fuzz seeds and load tools
//! can produce real, verifiable descriptors with the crate's own key code.

use std::time::SystemTime;

use super::outer::{CERT_TYPE_SIGNING_HS_DESC, SIG_PREFIX};
use crate::dir::netdoc::base64_nopad;
use crate::keys::cert::{CertKeyType, Ed25519Cert};
use crate::keys::pem;
use crate::keys::Ed25519Keypair;

/// What goes into an outer layer.
pub struct OuterSpec<'a> {
    /// Signs the descriptor-signing-key cert; its public key is the cache index.
    pub blinded: &'a Ed25519Keypair,
    /// Certified by the cert; signs the descriptor.
    pub signing: &'a Ed25519Keypair,
    /// The cert's expiry is `ceil((now + cert_lifetime_secs) / 3600)` hours.
    pub cert_lifetime_secs: u64,
    pub lifetime_minutes: u32,
    pub revision_counter: u64,
    /// The superencrypted blob (opaque to an HSDir).
    pub superencrypted: &'a [u8],
}

/// The signed descriptor text.
pub fn build_outer(spec: &OuterSpec<'_>, now: SystemTime) -> String {
    let cert = Ed25519Cert::sign(
        spec.blinded,
        CERT_TYPE_SIGNING_HS_DESC,
        CertKeyType::ED25519,
        spec.signing.public().as_bytes(),
        now,
        spec.cert_lifetime_secs,
        true,
    );
    let mut text = format!(
        "hs-descriptor 3\ndescriptor-lifetime {}\ndescriptor-signing-key-cert\n{}\
         revision-counter {}\nsuperencrypted\n{}",
        spec.lifetime_minutes,
        pem::encode("ED25519 CERT", cert.as_bytes()),
        spec.revision_counter,
        pem::encode("MESSAGE", spec.superencrypted),
    );
    let mut signed = SIG_PREFIX.to_vec();
    signed.extend_from_slice(text.as_bytes());
    let sig = spec.signing.sign(&signed).to_bytes();
    text.push_str("signature ");
    text.push_str(&base64_nopad(&sig));
    text.push('\n');
    text
}
