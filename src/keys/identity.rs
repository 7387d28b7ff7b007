//! The relay's long-term identities and the medium-term signing key: C tor's `init_keys`
//! step 1b (RSA identity) and `load_ed_keys` (`feature/relay/routerkeys.c`).

use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};
use rsa::RsaPrivateKey;

use super::cert::{CertKeyType, CertType, Ed25519Cert};
use super::ed25519::Ed25519Keypair;
use super::error::{FileProblem, KeyError};
use super::keyfile::{self, MASTER_TAG, SIGNING_TAG};
use super::onion::{load_rsa, save_rsa};
use super::rsa as tor_rsa;
use super::store::KeyDir;
use super::time::unix_secs;
use crate::crypto::ids::Ed25519Identity;

pub const RSA_IDENTITY_FILE: &str = "secret_id_key";
pub const MASTER_SECRET_FILE: &str = "ed25519_master_id_secret_key";
pub const MASTER_PUBLIC_FILE: &str = "ed25519_master_id_public_key";
pub const SIGNING_SECRET_FILE: &str = "ed25519_signing_secret_key";
pub const SIGNING_CERT_FILE: &str = "ed25519_signing_cert";

/// Lifetime and renewal margin of the medium-term signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningKeyPolicy {
    /// `SigningKeyLifetime`, default 30 days.
    pub lifetime_secs: u64,
    /// `TestingSigningKeySlop`, default 1 day: renew once the cert expires within this.
    pub renew_before_secs: u64,
}

impl Default for SigningKeyPolicy {
    fn default() -> Self {
        Self {
            lifetime_secs: 30 * 86400,
            renew_before_secs: 86400,
        }
    }
}

/// Loads the RSA identity key, generating and saving it if missing (or empty, as C tor does).
/// The key must be RSA-1024 with e = 65537.
pub fn load_or_create_rsa_identity<R: RngCore + CryptoRng>(
    dir: &KeyDir,
    rng: &mut R,
) -> Result<RsaPrivateKey, KeyError> {
    if let Some(k) = load_rsa(dir, RSA_IDENTITY_FILE)? {
        tor_rsa::check_shape(&k.to_public_key(), tor_rsa::IDENTITY_KEY_BITS)
            .map_err(|e| KeyError::corrupt(dir.path(RSA_IDENTITY_FILE), FileProblem::Rsa(e)))?;
        return Ok(k);
    }
    let k = tor_rsa::generate(rng, tor_rsa::IDENTITY_KEY_BITS)?;
    save_rsa(dir, RSA_IDENTITY_FILE, &k)?;
    Ok(k)
}

/// The Ed25519 side of the relay's keys.
#[derive(Debug, Clone)]
pub struct Ed25519Keys {
    /// KP_relayid_ed.
    pub identity: Ed25519Identity,
    /// KP_relaysign_ed with its secret.
    pub signing: Ed25519Keypair,
    /// The type-4 cert: identity certifies signing, with the signed-with-key extension.
    pub signing_cert: Ed25519Cert,
}

/// Outcome of [`load_or_create_ed25519`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyStatus {
    /// The signing key on disk is good for at least the renewal margin.
    Unchanged,
    /// A new signing key and cert were made and saved.
    Renewed,
    /// The signing key expires soon but the master secret key is offline; it still works.
    RenewalBlocked,
}

fn load_opt<T>(
    dir: &KeyDir,
    name: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, FileProblem>,
) -> Result<Option<T>, KeyError> {
    match dir.read(name)? {
        None => Ok(None),
        Some(bytes) => parse(&bytes)
            .map(Some)
            .map_err(|p| KeyError::corrupt(dir.path(name), p)),
    }
}

/// Loads the Ed25519 master identity, signing key and signing cert, creating or renewing
/// them as C tor's `load_ed_keys` does:
/// - a missing master key is created only when there is no signing key either;
/// - the signing key is replaced when missing, expired, not matching its cert, or expiring
///   within `policy.renew_before_secs` (the last only if the master secret is available);
/// - corrupt files and keys that contradict each other are errors, never replaced.
///
/// The master secret key is read only to sign and is dropped before returning.
pub fn load_or_create_ed25519<R: RngCore + CryptoRng>(
    dir: &KeyDir,
    rng: &mut R,
    now: SystemTime,
    policy: &SigningKeyPolicy,
) -> Result<(Ed25519Keys, SigningKeyStatus), KeyError> {
    let now_secs = unix_secs(now);
    let signing = load_opt(dir, SIGNING_SECRET_FILE, |b| {
        keyfile::parse_ed25519_secret_key(b, SIGNING_TAG)
    })?;
    let cert = load_opt(dir, SIGNING_CERT_FILE, |b| {
        keyfile::parse_ed25519_cert(b, SIGNING_TAG)
    })?;
    if let Some(c) = &cert {
        if c.cert_type != CertType::IDENTITY_V_SIGNING || c.key_type != CertKeyType::ED25519 {
            let found = c.cert_type.0;
            return Err(KeyError::corrupt(
                dir.path(SIGNING_CERT_FILE),
                FileProblem::Cert(super::cert::CertError::WrongType { expected: 4, found }),
            ));
        }
        if c.signing_key.is_none() {
            return Err(KeyError::corrupt(
                dir.path(SIGNING_CERT_FILE),
                FileProblem::Cert(super::cert::CertError::MissingSigningKey),
            ));
        }
    }
    // A signing key only counts together with a cert for it. A cert for another key is what a
    // crash between writing the two files leaves behind; C tor treats it as "no signing key".
    let current = match (signing, cert) {
        (Some(s), Some(c)) if c.certified_key == s.public().to_bytes() => Some((s, c)),
        _ => None,
    };

    let expires = current.as_ref().map(|(_, c)| c.expires_at_secs());
    let need_new = expires.is_none_or(|e| e < now_secs);
    let want_new =
        need_new || expires.is_some_and(|e| e < now_secs.saturating_add(policy.renew_before_secs));

    let master_secret = load_opt(dir, MASTER_SECRET_FILE, |b| {
        keyfile::parse_ed25519_secret_key(b, MASTER_TAG)
    })?;
    let master_public = load_opt(dir, MASTER_PUBLIC_FILE, |b| {
        keyfile::parse_ed25519_public_key(b, MASTER_TAG)
    })?;

    let (identity, master_secret) = match (master_secret, master_public) {
        (Some(s), Some(p)) => {
            if s.public().to_bytes() != p {
                return Err(KeyError::Mismatch {
                    path: dir.path(MASTER_PUBLIC_FILE),
                    other: dir.path(MASTER_SECRET_FILE),
                    what: "public key does not match the secret key",
                });
            }
            (s.identity(), Some(s))
        }
        (Some(s), None) => {
            // C repairs a missing public key file from the secret key.
            dir.write(
                MASTER_PUBLIC_FILE,
                &keyfile::encode_ed25519_public_key(s.public().as_bytes(), MASTER_TAG),
            )?;
            (s.identity(), Some(s))
        }
        (None, Some(p)) => (Ed25519Identity(p), None),
        (None, None) => match &current {
            None => {
                let s = Ed25519Keypair::generate(rng);
                dir.write(
                    MASTER_SECRET_FILE,
                    &keyfile::encode_ed25519_secret_key(&s, MASTER_TAG),
                )?;
                dir.write(
                    MASTER_PUBLIC_FILE,
                    &keyfile::encode_ed25519_public_key(s.public().as_bytes(), MASTER_TAG),
                )?;
                (s.identity(), Some(s))
            }
            Some((_, c)) if !need_new => {
                // Offline master with no public key file: infer it from the cert, like C.
                let p = c.signing_key.unwrap_or_default();
                dir.write(
                    MASTER_PUBLIC_FILE,
                    &keyfile::encode_ed25519_public_key(&p, MASTER_TAG),
                )?;
                (Ed25519Identity(p), None)
            }
            Some(_) => {
                return Err(KeyError::MasterKeyOffline {
                    path: dir.path(MASTER_SECRET_FILE),
                })
            }
        },
    };

    if let Some((_, c)) = &current {
        if c.signing_key != Some(identity.0) {
            return Err(KeyError::Mismatch {
                path: dir.path(SIGNING_CERT_FILE),
                other: dir.path(MASTER_PUBLIC_FILE),
                what: "signing cert was not signed with this master identity key",
            });
        }
        c.verify(Some(&identity.0), None)
            .map_err(|e| KeyError::corrupt(dir.path(SIGNING_CERT_FILE), FileProblem::Cert(e)))?;
    }

    // An expired (or missing) signing key cannot be used, and only the master can sign anew.
    if need_new && master_secret.is_none() {
        return Err(KeyError::MasterKeyOffline {
            path: dir.path(MASTER_SECRET_FILE),
        });
    }
    match (want_new, master_secret, current) {
        (true, Some(master), _) => {
            let signing = Ed25519Keypair::generate(rng);
            let cert = Ed25519Cert::sign(
                &master,
                CertType::IDENTITY_V_SIGNING,
                CertKeyType::ED25519,
                &signing.public().to_bytes(),
                now,
                policy.lifetime_secs,
                true,
            );
            dir.write(
                SIGNING_SECRET_FILE,
                &keyfile::encode_ed25519_secret_key(&signing, SIGNING_TAG),
            )?;
            dir.write(
                SIGNING_CERT_FILE,
                &keyfile::encode_ed25519_cert(&cert, SIGNING_TAG),
            )?;
            Ok((
                Ed25519Keys {
                    identity,
                    signing,
                    signing_cert: cert,
                },
                SigningKeyStatus::Renewed,
            ))
        }
        (_, _, Some((signing, cert))) => {
            let status = if want_new {
                SigningKeyStatus::RenewalBlocked
            } else {
                SigningKeyStatus::Unchanged
            };
            Ok((
                Ed25519Keys {
                    identity,
                    signing,
                    signing_cert: cert,
                },
                status,
            ))
        }
        // Unreachable: no current key means `need_new`, handled above.
        (_, _, None) => Err(KeyError::MasterKeyOffline {
            path: dir.path(MASTER_SECRET_FILE),
        }),
    }
}
