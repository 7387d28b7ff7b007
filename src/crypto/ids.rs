//! Relay identities, named as in tor-spec: the legacy RSA identity digest and the ed25519
//! master identity.

use std::fmt;

/// SHA-1 of the DER (PKCS#1) encoding of a relay's RSA-1024 identity key: its "fingerprint".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RsaIdentity(pub [u8; 20]);

/// A relay's ed25519 master identity public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ed25519Identity(pub [u8; 32]);

impl RsaIdentity {
    /// Upper-case hex, no spaces (as in `fingerprint` files and consensus lookups).
    pub fn to_hex(&self) -> String {
        crate::util::hex::encode_upper(&self.0)
    }
    /// Parses 40 hex digits (either case), optionally prefixed with `$`.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.strip_prefix('$').unwrap_or(s);
        let v = crate::util::hex::decode(s)?;
        Some(Self(v.try_into().ok()?))
    }
}

impl fmt::Debug for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.to_hex())
    }
}

impl fmt::Display for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.to_hex())
    }
}

impl Ed25519Identity {
    /// Unpadded standard base64, as C tor prints ed25519 identities.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0)
    }
    /// Parses base64 with or without padding.
    pub fn from_base64(s: &str) -> Option<Self> {
        use base64::Engine;
        let s = s.trim_end_matches('=');
        let v = base64::engine::general_purpose::STANDARD_NO_PAD.decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

impl fmt::Debug for Ed25519Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", self.to_base64())
    }
}

impl fmt::Display for Ed25519Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_hex_round_trip() {
        let id = RsaIdentity([0xAB; 20]);
        assert_eq!(RsaIdentity::from_hex(&id.to_hex()), Some(id));
        assert_eq!(RsaIdentity::from_hex("$abababababababababababababababababababab"), Some(id));
        assert_eq!(RsaIdentity::from_hex("abab"), None);
    }

    #[test]
    fn ed_base64_round_trip() {
        let id = Ed25519Identity([7; 32]);
        assert_eq!(Ed25519Identity::from_base64(&id.to_base64()), Some(id));
        assert!(!id.to_base64().ends_with('='));
    }
}
