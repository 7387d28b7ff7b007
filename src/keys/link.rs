//! Link-handshake credentials minted on demand from the relay keys: the TLS link key and its
//! X.509 cert, the self-signed identity cert, and the Ed25519 certs a CERTS cell carries
//! (tor-spec "Negotiating and initializing channels"; C `tortls.c`,
//! `routerkeys.c: generate_ed_link_cert`, `relay_handshake.c`).

use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};
use rsa::pkcs8::EncodePrivateKey;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::cert::{CertKeyType, CertType, Ed25519Cert};
use super::crosscert::{RsaEd25519CrossCert, RSA_ED_CROSSCERT_LIFETIME_SECS};
use super::ed25519::Ed25519Keypair;
use super::rsa::{self as tor_rsa, RsaError};
use super::time::{from_unix_secs, unix_secs};
use super::x509::{self, X509Error};

/// Lifetimes and renewal margins of the link certificates (C option defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCertPolicy {
    /// `TestingLinkCertLifetime`: type-5 cert, 2 days.
    pub tls_cert_cert_lifetime_secs: u64,
    /// `TestingAuthKeyLifetime`: type-6 cert, 2 days.
    pub auth_key_lifetime_secs: u64,
    /// `TestingLinkKeySlop` / `TestingAuthKeySlop`: re-mint 3 hours before expiry.
    pub renew_before_secs: u64,
}

impl Default for LinkCertPolicy {
    fn default() -> Self {
        Self {
            tls_cert_cert_lifetime_secs: 2 * 86400,
            auth_key_lifetime_secs: 2 * 86400,
            renew_before_secs: 3 * 3600,
        }
    }
}

/// Everything a relay needs to run the responder and initiator sides of the link handshake.
pub struct LinkCerts {
    /// RSA-2048 TLS key.
    pub link_key: RsaPrivateKey,
    /// The same key as DER PKCS#8, for a TLS library.
    pub link_key_pkcs8_der: Zeroizing<Vec<u8>>,
    /// X.509 TLS certificate (CERTS type 1), link key signed by the RSA identity key.
    pub link_cert_der: Vec<u8>,
    /// Self-signed RSA-1024 identity certificate (CERTS type 2).
    pub identity_cert_der: Vec<u8>,
    /// Type 4: master identity → signing key (a copy of the stored cert).
    pub signing_cert: Ed25519Cert,
    /// Type 5: signing key → SHA-256 of `link_cert_der`.
    pub tls_cert_cert: Ed25519Cert,
    /// Link authentication key used to sign AUTHENTICATE.
    pub link_auth_key: Ed25519Keypair,
    /// Type 6: signing key → `link_auth_key`.
    pub link_auth_cert: Ed25519Cert,
    /// Type 7: RSA identity → Ed25519 master identity.
    pub rsa_crosscert: RsaEd25519CrossCert,
}

impl std::fmt::Debug for LinkCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCerts")
            .field(
                "tls_cert_sha256",
                &crate::util::hex::encode(&self.tls_cert_sha256()),
            )
            .finish()
    }
}

/// Why link credentials could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum LinkCertError {
    #[error(transparent)]
    Rsa(#[from] RsaError),
    #[error(transparent)]
    X509(#[from] X509Error),
    #[error("cannot encode the link key as PKCS#8: {0}")]
    Pkcs8(String),
}

/// Inputs from the long-term keys.
pub struct LinkCertInputs<'a> {
    pub rsa_identity: &'a RsaPrivateKey,
    pub master: &'a crate::crypto::ids::Ed25519Identity,
    pub signing: &'a Ed25519Keypair,
    pub signing_cert: &'a Ed25519Cert,
}

impl LinkCerts {
    /// Mints a fresh link key, both X.509 certs and the type 5/6/7 certs.
    pub fn mint<R: RngCore + CryptoRng>(
        rng: &mut R,
        keys: &LinkCertInputs<'_>,
        now: SystemTime,
        policy: &LinkCertPolicy,
    ) -> Result<LinkCerts, LinkCertError> {
        let link_key = tor_rsa::generate(rng, tor_rsa::LINK_KEY_BITS)?;
        let link_key_pkcs8_der = Zeroizing::new(
            link_key
                .to_pkcs8_der()
                .map_err(|e| LinkCertError::Pkcs8(e.to_string()))?
                .as_bytes()
                .to_vec(),
        );
        // C: subject "www.<rand>.net" for the link cert, issuer "www.<rand>.com" for both.
        let link_cn = x509::random_hostname(rng, "www.", ".net");
        let id_cn = x509::random_hostname(rng, "www.", ".com");
        let link_lifetime = x509::pick_link_cert_lifetime(rng);
        let link_validity = x509::pick_validity(rng, now, link_lifetime);
        let link_cert_der = x509::create_certificate(
            rng,
            &link_key.to_public_key(),
            &link_cn,
            keys.rsa_identity,
            &id_cn,
            link_validity,
        )?;
        let id_validity = x509::pick_validity(rng, now, x509::IDENTITY_CERT_LIFETIME_SECS);
        let identity_cert_der = x509::create_certificate(
            rng,
            &keys.rsa_identity.to_public_key(),
            &id_cn,
            keys.rsa_identity,
            &id_cn,
            id_validity,
        )?;

        let digest: [u8; 32] = Sha256::digest(&link_cert_der).into();
        let tls_cert_cert = Ed25519Cert::sign(
            keys.signing,
            CertType::SIGNING_V_TLS_CERT,
            CertKeyType::SHA256_OF_X509,
            &digest,
            now,
            policy.tls_cert_cert_lifetime_secs,
            false,
        );
        let link_auth_key = Ed25519Keypair::generate(rng);
        let link_auth_cert = Ed25519Cert::sign(
            keys.signing,
            CertType::SIGNING_V_LINK_AUTH,
            CertKeyType::ED25519,
            &link_auth_key.public().to_bytes(),
            now,
            policy.auth_key_lifetime_secs,
            false,
        );
        let rsa_crosscert = RsaEd25519CrossCert::sign(
            keys.rsa_identity,
            keys.master,
            from_unix_secs(unix_secs(now) + RSA_ED_CROSSCERT_LIFETIME_SECS),
        )?;
        Ok(LinkCerts {
            link_key,
            link_key_pkcs8_der,
            link_cert_der,
            identity_cert_der,
            signing_cert: keys.signing_cert.clone(),
            tls_cert_cert,
            link_auth_key,
            link_auth_cert,
            rsa_crosscert,
        })
    }

    /// SHA-256 of the TLS certificate (AUTHENTICATE SCERT; what type 5 certifies).
    pub fn tls_cert_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.link_cert_der).into()
    }

    /// True when any of the short-lived certs expires within the renewal margin, so the
    /// caller should mint new ones (C `should_make_new_ed_keys`).
    pub fn needs_renewal(&self, now: SystemTime, policy: &LinkCertPolicy) -> bool {
        let horizon = unix_secs(now).saturating_add(policy.renew_before_secs);
        self.tls_cert_cert.expires_at_secs() < horizon
            || self.link_auth_cert.expires_at_secs() < horizon
            || self.signing_cert.expires_at_secs() < horizon
            || self.rsa_crosscert.expires_at_secs()
                < unix_secs(now) + super::crosscert::RSA_ED_CROSSCERT_RENEW_SECS
    }
}
