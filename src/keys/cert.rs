//! Tor's Ed25519 certificates (cert-spec §2.1; C tor `feature/nodelist/torcert.c`,
//! `trunnel/ed25519_cert.trunnel`).
//!
//! ```text
//! VERSION(1)=1 | CERT_TYPE(1) | EXPIRATION_DATE(4, hours since epoch) | CERT_KEY_TYPE(1)
//! | CERTIFIED_KEY(32) | N_EXTENSIONS(1) | extensions | SIGNATURE(64)
//! extension = ExtLen(2) | ExtType(1) | ExtFlags(1) | ExtData(ExtLen)
//! ```
//! The signature covers every byte before it.

use std::time::SystemTime;

use thiserror::Error;

use super::ed25519::{self, Ed25519Keypair};
use super::time::{hours_ceil, unix_secs};
use crate::crypto::ids::Ed25519Identity;

/// Certificate purposes (cert-spec §A.1 "Certificate types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertType(pub u8);

impl CertType {
    /// Master identity key certifies the medium-term signing key (CERTS type 4).
    pub const IDENTITY_V_SIGNING: CertType = CertType(0x04);
    /// Signing key certifies SHA-256 of the TLS link certificate (CERTS type 5).
    pub const SIGNING_V_TLS_CERT: CertType = CertType(0x05);
    /// Signing key certifies the link authentication key (CERTS type 6).
    pub const SIGNING_V_LINK_AUTH: CertType = CertType(0x06);
    /// ntor onion key (as ed25519) certifies the master identity (`ntor-onion-key-crosscert`).
    pub const NTOR_CC_IDENTITY: CertType = CertType(0x0a);
    /// Family key certifies a relay's identity (prop 321 `family-cert`).
    pub const FAMILY_V_IDENTITY: CertType = CertType(0x0c);
}

/// What CERTIFIED_KEY holds (cert-spec §2.1 CERT_KEY_TYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertKeyType(pub u8);

impl CertKeyType {
    /// An Ed25519 public key.
    pub const ED25519: CertKeyType = CertKeyType(0x01);
    /// SHA-256 of an RSA key.
    pub const SHA256_OF_RSA: CertKeyType = CertKeyType(0x02);
    /// SHA-256 of a DER X.509 certificate.
    pub const SHA256_OF_X509: CertKeyType = CertKeyType(0x03);
}

/// Extension type carrying the signing key (cert-spec §2.2.1).
pub const EXT_SIGNED_WITH_ED25519_KEY: u8 = 0x04;
/// "This extension affects whether the certificate is valid" flag.
pub const EXT_FLAG_AFFECTS_VALIDATION: u8 = 0x01;

const HEADER_LEN: usize = 1 + 1 + 4 + 1 + 32 + 1;
const SIG_LEN: usize = 64;

/// Why a certificate was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertError {
    #[error("Ed25519 certificate is truncated")]
    Truncated,
    #[error("Ed25519 certificate has {0} bytes after its signature")]
    TrailingBytes(usize),
    #[error("Ed25519 certificate has unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("Ed25519 certificate's signed-with-key extension is {0} bytes, not 32")]
    BadSigningKeyExtension(usize),
    #[error("Ed25519 certificate has two signed-with-key extensions")]
    DuplicateSigningKey,
    #[error("Ed25519 certificate has unknown extension {0:#04x} that affects validation")]
    UnknownCriticalExtension(u8),
    #[error("Ed25519 certificate does not include its signing key and none was supplied")]
    MissingSigningKey,
    #[error("Ed25519 certificate was signed by a different key than the one expected")]
    WrongSigningKey,
    #[error("Ed25519 certificate expired at hour {expiration_hours} (now is {now_secs}s)")]
    Expired {
        expiration_hours: u32,
        now_secs: u64,
    },
    #[error("Ed25519 certificate signature does not verify")]
    BadSignature,
    #[error("Ed25519 certificate has type {found:#04x}, expected {expected:#04x}")]
    WrongType { expected: u8, found: u8 },
    #[error("Ed25519 certificate certifies the wrong key")]
    WrongCertifiedKey,
}

/// One extension, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExtension {
    pub ext_type: u8,
    pub flags: u8,
    pub data: Vec<u8>,
}

/// A parsed (not yet verified) Ed25519 certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Cert {
    pub cert_type: CertType,
    /// EXPIRATION_DATE: hours since the epoch.
    pub expiration_hours: u32,
    pub key_type: CertKeyType,
    pub certified_key: [u8; 32],
    /// Contents of the signed-with-key extension, if present.
    pub signing_key: Option<[u8; 32]>,
    pub extensions: Vec<CertExtension>,
    pub signature: [u8; 64],
    encoded: Vec<u8>,
}

impl Ed25519Cert {
    /// Creates and signs a certificate. Expiration is `ceil((now + lifetime) / 3600)` hours,
    /// as in C tor's `tor_cert_create_raw`. With `include_signing_key`, the signed-with-key
    /// extension (type 4, flags 0) carries `signer`'s public key.
    pub fn sign(
        signer: &Ed25519Keypair,
        cert_type: CertType,
        key_type: CertKeyType,
        certified_key: &[u8; 32],
        now: SystemTime,
        lifetime_secs: u64,
        include_signing_key: bool,
    ) -> Ed25519Cert {
        let expiration_hours = hours_ceil(unix_secs(now).saturating_add(lifetime_secs));
        let mut out = Vec::with_capacity(HEADER_LEN + 36 + SIG_LEN);
        out.push(1);
        out.push(cert_type.0);
        out.extend_from_slice(&expiration_hours.to_be_bytes());
        out.push(key_type.0);
        out.extend_from_slice(certified_key);
        let mut extensions = Vec::new();
        if include_signing_key {
            out.push(1);
            out.extend_from_slice(&32u16.to_be_bytes());
            out.push(EXT_SIGNED_WITH_ED25519_KEY);
            out.push(0);
            out.extend_from_slice(signer.public().as_bytes());
            extensions.push(CertExtension {
                ext_type: EXT_SIGNED_WITH_ED25519_KEY,
                flags: 0,
                data: signer.public().as_bytes().to_vec(),
            });
        } else {
            out.push(0);
        }
        let signature = signer.sign(&out).to_bytes();
        out.extend_from_slice(&signature);
        Ed25519Cert {
            cert_type,
            expiration_hours,
            key_type,
            certified_key: *certified_key,
            signing_key: include_signing_key.then(|| signer.public().to_bytes()),
            extensions,
            signature,
            encoded: out,
        }
    }

    /// Parses an encoded certificate; the input must be exactly one certificate.
    pub fn parse(bytes: &[u8]) -> Result<Ed25519Cert, CertError> {
        if bytes.len() < HEADER_LEN + SIG_LEN {
            return Err(CertError::Truncated);
        }
        if bytes[0] != 1 {
            return Err(CertError::UnsupportedVersion(bytes[0]));
        }
        let cert_type = CertType(bytes[1]);
        let expiration_hours = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let key_type = CertKeyType(bytes[6]);
        let mut certified_key = [0u8; 32];
        certified_key.copy_from_slice(&bytes[7..39]);
        let n_ext = bytes[39];
        let mut pos = HEADER_LEN;
        let mut extensions = Vec::with_capacity(n_ext as usize);
        let mut signing_key = None;
        for _ in 0..n_ext {
            let hdr = bytes.get(pos..pos + 4).ok_or(CertError::Truncated)?;
            let len = u16::from_be_bytes([hdr[0], hdr[1]]) as usize;
            let (ext_type, flags) = (hdr[2], hdr[3]);
            let data = bytes
                .get(pos + 4..pos + 4 + len)
                .ok_or(CertError::Truncated)?;
            pos += 4 + len;
            if ext_type == EXT_SIGNED_WITH_ED25519_KEY {
                // trunnel's union requires the 32-byte key to fill ExtLen exactly.
                let key: [u8; 32] = data
                    .try_into()
                    .map_err(|_| CertError::BadSigningKeyExtension(len))?;
                if signing_key.replace(key).is_some() {
                    return Err(CertError::DuplicateSigningKey);
                }
            } else if flags & EXT_FLAG_AFFECTS_VALIDATION != 0 {
                return Err(CertError::UnknownCriticalExtension(ext_type));
            }
            extensions.push(CertExtension {
                ext_type,
                flags,
                data: data.to_vec(),
            });
        }
        let sig = bytes.get(pos..pos + SIG_LEN).ok_or(CertError::Truncated)?;
        let end = pos + SIG_LEN;
        if end != bytes.len() {
            return Err(CertError::TrailingBytes(bytes.len() - end));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        Ok(Ed25519Cert {
            cert_type,
            expiration_hours,
            key_type,
            certified_key,
            signing_key,
            extensions,
            signature,
            encoded: bytes.to_vec(),
        })
    }

    /// The encoded certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Seconds since the epoch at which the certificate stops being valid.
    pub fn expires_at_secs(&self) -> u64 {
        u64::from(self.expiration_hours) * 3600
    }

    /// True if the certificate is expired at `now`. Like C tor's `tor_cert_checksig`, a
    /// certificate is still valid at its exact expiry second and there is no clock slop.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_secs(now) > self.expires_at_secs()
    }

    /// The certified key as an Ed25519 identity (meaningful when `key_type` is ED25519).
    pub fn certified_ed25519(&self) -> Ed25519Identity {
        Ed25519Identity(self.certified_key)
    }

    /// Checks the signature, and the expiry unless `now` is `None`.
    ///
    /// `signer` is the expected signing key; if `None`, the embedded signed-with-key extension
    /// is used. If both are present they must agree.
    pub fn verify(
        &self,
        signer: Option<&[u8; 32]>,
        now: Option<SystemTime>,
    ) -> Result<(), CertError> {
        let key = match (signer, &self.signing_key) {
            (Some(s), Some(inc)) if s != inc => return Err(CertError::WrongSigningKey),
            (Some(s), _) => s,
            (None, Some(inc)) => inc,
            (None, None) => return Err(CertError::MissingSigningKey),
        };
        if let Some(now) = now {
            if self.is_expired(now) {
                return Err(CertError::Expired {
                    expiration_hours: self.expiration_hours,
                    now_secs: unix_secs(now),
                });
            }
        }
        let signed = &self.encoded[..self.encoded.len() - SIG_LEN];
        if ed25519::verify(key, signed, &self.signature) {
            Ok(())
        } else {
            Err(CertError::BadSignature)
        }
    }

    /// Fails unless the certificate has type `expected`.
    pub fn expect_type(&self, expected: CertType) -> Result<(), CertError> {
        if self.cert_type == expected {
            Ok(())
        } else {
            Err(CertError::WrongType {
                expected: expected.0,
                found: self.cert_type.0,
            })
        }
    }

    /// Base64 PEM-style object for descriptors (`-----BEGIN ED25519 CERT-----`).
    pub fn to_pem(&self) -> String {
        super::pem::encode("ED25519 CERT", &self.encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn all_types_round_trip_and_verify() {
        let mut rng = rand::thread_rng();
        let master = Ed25519Keypair::generate(&mut rng);
        let signing = Ed25519Keypair::generate(&mut rng);
        let now = at(1_700_000_123);
        let cases = [
            (CertType::IDENTITY_V_SIGNING, CertKeyType::ED25519, true),
            (
                CertType::SIGNING_V_TLS_CERT,
                CertKeyType::SHA256_OF_X509,
                false,
            ),
            (CertType::SIGNING_V_LINK_AUTH, CertKeyType::ED25519, false),
            (CertType::NTOR_CC_IDENTITY, CertKeyType::ED25519, false),
        ];
        for (ty, kt, include) in cases {
            let signer = if ty == CertType::IDENTITY_V_SIGNING {
                &master
            } else {
                &signing
            };
            let cert = Ed25519Cert::sign(signer, ty, kt, &[9; 32], now, 2 * 86400, include);
            let parsed = Ed25519Cert::parse(cert.as_bytes()).unwrap();
            assert_eq!(parsed, cert);
            assert_eq!(parsed.cert_type, ty);
            assert_eq!(parsed.key_type, kt);
            assert_eq!(parsed.signing_key.is_some(), include);
            // ceil((now + lifetime) / 3600)
            assert_eq!(
                parsed.expiration_hours as u64,
                (1_700_000_123u64 + 2 * 86400).div_ceil(3600)
            );
            parsed
                .verify(Some(signer.public().as_bytes()), Some(now))
                .unwrap();
            if include {
                parsed.verify(None, Some(now)).unwrap();
                assert_eq!(parsed.as_bytes().len(), 104 + 36);
            } else {
                assert_eq!(
                    parsed.verify(None, Some(now)),
                    Err(CertError::MissingSigningKey)
                );
                assert_eq!(parsed.as_bytes().len(), 104);
            }
            let other = Ed25519Keypair::generate(&mut rng);
            assert!(parsed
                .verify(Some(other.public().as_bytes()), Some(now))
                .is_err());
        }
    }

    #[test]
    fn tampering_and_expiry_fail() {
        let mut rng = rand::thread_rng();
        let k = Ed25519Keypair::generate(&mut rng);
        let now = at(1_700_000_000);
        let cert = Ed25519Cert::sign(
            &k,
            CertType::IDENTITY_V_SIGNING,
            CertKeyType::ED25519,
            &[1; 32],
            now,
            3600,
            true,
        );
        for i in 0..cert.as_bytes().len() {
            let mut bad = cert.as_bytes().to_vec();
            bad[i] ^= 0x10;
            if let Ok(c) = Ed25519Cert::parse(&bad) {
                assert!(
                    c.verify(Some(k.public().as_bytes()), None).is_err(),
                    "byte {i}"
                );
            }
        }
        let exp = cert.expires_at_secs();
        cert.verify(None, Some(at(exp))).unwrap();
        assert!(matches!(
            cert.verify(None, Some(at(exp + 1))),
            Err(CertError::Expired { .. })
        ));
        assert!(cert.is_expired(at(exp + 1)));
        cert.verify(None, None).unwrap();
    }

    #[test]
    fn parser_rejects_malformed() {
        let mut rng = rand::thread_rng();
        let k = Ed25519Keypair::generate(&mut rng);
        let cert = Ed25519Cert::sign(
            &k,
            CertType::IDENTITY_V_SIGNING,
            CertKeyType::ED25519,
            &[1; 32],
            at(0),
            3600,
            true,
        );
        let b = cert.as_bytes();
        assert_eq!(
            Ed25519Cert::parse(&b[..b.len() - 1]),
            Err(CertError::Truncated)
        );
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Ed25519Cert::parse(&long), Err(CertError::TrailingBytes(1)));
        let mut v2 = b.to_vec();
        v2[0] = 2;
        assert_eq!(
            Ed25519Cert::parse(&v2),
            Err(CertError::UnsupportedVersion(2))
        );

        // Build raw certs with hand-made extension lists (signatures are irrelevant here).
        let raw = |exts: &[(u8, u8, &[u8])]| {
            let mut v = vec![1, 4, 0, 0, 0, 1, 1];
            v.extend_from_slice(&[0; 32]);
            v.push(exts.len() as u8);
            for (t, f, d) in exts {
                v.extend_from_slice(&(d.len() as u16).to_be_bytes());
                v.extend_from_slice(&[*t, *f]);
                v.extend_from_slice(d);
            }
            v.extend_from_slice(&[0; 64]);
            v
        };
        assert_eq!(
            Ed25519Cert::parse(&raw(&[(4, 0, &[0; 31])])),
            Err(CertError::BadSigningKeyExtension(31))
        );
        assert_eq!(
            Ed25519Cert::parse(&raw(&[(4, 0, &[0; 32]), (4, 0, &[0; 32])])),
            Err(CertError::DuplicateSigningKey)
        );
        assert_eq!(
            Ed25519Cert::parse(&raw(&[(9, 1, &[1, 2])])),
            Err(CertError::UnknownCriticalExtension(9))
        );
        let ok = Ed25519Cert::parse(&raw(&[(9, 0, &[1, 2])])).unwrap();
        assert_eq!(ok.extensions.len(), 1);
        assert_eq!(ok.signing_key, None);
    }
}
