//! Circuit handshakes: ntor, ntor-v3, CREATE_FAST, and the KDFs they use.
//!
//! Everything here is sans-IO: functions take the onionskin bytes (the HDATA of a CREATE2,
//! or the X of a CREATE_FAST) and return the reply bytes plus [`Tor1KeyMaterial`]. Randomness
//! comes in as an `rng` argument so tests can replay published vectors.
//!
//! Failures never panic: every malformed, truncated or unauthenticated input becomes a
//! [`HandshakeError`], on which the caller destroys the circuit (tor-spec §"CREATE2").
//!
//! [`Tor1KeyMaterial`]: crate::crypto::keymat::Tor1KeyMaterial

pub mod extensions;
pub mod fast;
pub mod kdf;
pub mod keymap;
pub mod ntor;
pub mod ntor_v3;
#[cfg(test)]
mod timing;
mod x25519;

pub use extensions::{
    negotiate_circ_params, CircuitExtension, ExtensionError, NegotiatedCircParams,
    NegotiationError, NtorV3ServerPolicy, SubprotoCap,
};
pub use fast::CreateFastClient;
pub use kdf::KdfError;
pub use keymap::{NtorKeyMap, NtorKeyPair};
pub use ntor::NtorClient;
pub use ntor_v3::{CircuitKeys, NtorV3Client, NtorV3ServerState, NTOR3_CIRC_VERIFICATION};

/// CREATE2 handshake types (tor-spec §"CREATE and CREATE2 cells").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum HandshakeType {
    /// TAP: removed (proposal 350); relays refuse it.
    Tap = 0,
    /// Reserved (CREATE_FAST has its own cell, never a CREATE2 HTYPE).
    Reserved = 1,
    /// ntor (Relay=2).
    Ntor = 2,
    /// ntor-v3 (Relay=4).
    NtorV3 = 3,
}

impl HandshakeType {
    /// The HTYPE for a CREATE2 value, if it names a known handshake.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            0 => Some(Self::Tap),
            1 => Some(Self::Reserved),
            2 => Some(Self::Ntor),
            3 => Some(Self::NtorV3),
            _ => None,
        }
    }
}

/// Why a circuit handshake failed. Each variant names what was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The client's onionskin has the wrong length for this handshake.
    #[error("{handshake} onionskin is {got} bytes, expected {expected}")]
    OnionskinLength {
        /// Handshake name.
        handshake: &'static str,
        /// Required length (the minimum for ntor-v3).
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The server's reply has the wrong length for this handshake.
    #[error("{handshake} reply is {got} bytes, expected {expected}")]
    ReplyLength {
        /// Handshake name.
        handshake: &'static str,
        /// Required length (the minimum for ntor-v3).
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The onionskin is addressed to a different relay identity (NODEID / ID).
    #[error("onionskin names a different relay identity")]
    WrongNodeId,
    /// The onionskin's KEYID is neither our current nor our previous ntor key.
    #[error("onionskin names an ntor onion key we do not hold")]
    UnknownKeyId,
    /// A Diffie-Hellman output was all zeros: the peer sent a small-order point.
    #[error("curve25519 handshake produced an all-zero shared secret")]
    ZeroSharedSecret,
    /// The ntor-v3 client message MAC did not verify.
    #[error("ntor-v3 client message MAC mismatch")]
    BadMac,
    /// The server's AUTH value (or CREATE_FAST's KH) did not verify.
    #[error("server authentication value mismatch")]
    BadAuth,
    /// An ntor-v3 extension list could not be parsed or encoded.
    #[error("ntor-v3 extensions: {0}")]
    Extensions(#[from] ExtensionError),
    /// The ntor-v3 client asked for circuit parameters we refuse.
    #[error("ntor-v3 negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    /// A KDF was asked for more output than it can give (a bug in the caller's lengths).
    #[error("key derivation: {0}")]
    Kdf(#[from] KdfError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
    use rand::{Rng, RngCore};

    /// A quick in-tree stand-in for the fuzz targets: mutated and random onionskins and
    /// extension lists only ever produce errors.
    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::thread_rng();
        let keys = NtorKeyMap::new(NtorKeyPair::generate(&mut rng), None);
        let rsa = RsaIdentity([3; 20]);
        let ed = Ed25519Identity([4; 32]);
        let policy = NtorV3ServerPolicy {
            cgo_supported: true,
            ..Default::default()
        };
        let (_, skin2) = ntor::NtorClient::start(&mut rng, &rsa, keys.current().public());
        let exts = [CircuitExtension::CcRequest];
        let (_, skin3) =
            ntor_v3::NtorV3Client::start(&mut rng, &ed, keys.current().public(), &exts).unwrap();
        for _ in 0..300 {
            let mut a = skin2.to_vec();
            let mut b = skin3.clone();
            for v in [&mut a, &mut b] {
                let i = rng.gen_range(0..v.len());
                v[i] ^= rng.gen::<u8>() | 1;
                v.truncate(rng.gen_range(0..=v.len() + 1));
            }
            // A flipped bit in X still makes a valid ntor onionskin; only the absence of
            // panics is checked. ntor-v3's MAC covers everything.
            let _ = ntor::server_handshake(&mut rng, &keys, &rsa, &a);
            assert!(ntor_v3::server_handshake(
                &mut rng,
                &keys,
                &ed,
                &b,
                |e| negotiate_circ_params(e, &policy)
            )
            .is_err());
            let mut m = vec![0u8; rng.gen_range(0..40)];
            rng.fill_bytes(&mut m);
            if let Ok(e) = extensions::decode_extensions(&m) {
                let _ = negotiate_circ_params(&e, &policy);
            }
            let _ = fast::server_handshake(&mut rng, &m);
        }
    }
}
