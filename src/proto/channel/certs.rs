//! Checking a peer's CERTS cell (tor-spec §"Validating the CERTS cell"; C `torcert.c:
//! or_handshake_certs_ed25519_ok`, `channeltls.c: channel_tls_process_certs_cell`).
//!
//! Only the Ed25519 path exists: every relay C tor 0.4.9 accepts has Ed25519 keys, and
//! link authentication method 3 needs them. The checks, in C's order:
//! * no certificate type among 1..=7 appears twice (unknown types are ignored);
//! * type 4 (identity → signing) carries the master key in its signed-with-key extension,
//!   verifies with it and is unexpired;
//! * initiator checking a responder: type 5 (signing → TLS cert) certifies SHA-256 of the
//!   TLS certificate the responder presented, and verifies with the signing key;
//! * responder checking an initiator: type 6 (signing → link-auth key) verifies with the
//!   signing key; its key later checks the AUTHENTICATE signature;
//! * type 2 is a self-signed RSA-1024 X.509 certificate inside its lifetime (2-day slop);
//! * type 7 (RSA → Ed25519 cross-cert) verifies under that RSA key, names the same master key
//!   and is unexpired.
//!
//! Ed25519 certificates get no clock slop, as in C.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::error::CertsError;
use crate::cell::chan::{CertType, Certs};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::keys::cert::{self as edcert, CertKeyType, Ed25519Cert};
use crate::keys::crosscert::RsaEd25519CrossCert;
use crate::keys::rsa as tor_rsa;
use crate::keys::x509::X509Cert;

/// What a valid CERTS cell proves about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCerts {
    /// SHA-1 of the peer's DER RSA identity key (its fingerprint).
    pub rsa_identity: RsaIdentity,
    /// SHA-256 of the same DER key: AUTHENTICATE's CID or SID.
    pub rsa_id_sha256: [u8; 32],
    /// The peer's Ed25519 master identity.
    pub ed_identity: Ed25519Identity,
    /// The type-6 link-authentication key (only when checking an initiator).
    pub link_auth_key: Option<[u8; 32]>,
}

/// Which side's certificates are being checked.
#[derive(Debug, Clone, Copy)]
pub enum PeerRole<'a> {
    /// We initiated: the peer is a responder and must prove the TLS certificate it used,
    /// whose SHA-256 is given.
    Responder { tls_cert_sha256: &'a [u8; 32] },
    /// We accepted: the peer is an authenticating initiator (types 2, 4, 6, 7).
    Initiator,
}

/// Fails on the first certificate type in 1..=7 that appears twice (C closes the channel;
/// higher types are skipped unparsed, so their repeats are harmless).
fn check_duplicates(certs: &Certs<'_>) -> Result<(), CertsError> {
    let mut seen = [false; 8];
    for e in certs.iter() {
        let t = e.cert_type.0 as usize;
        if (1..=7).contains(&t) {
            if seen[t] {
                return Err(CertsError::Duplicate(e.cert_type));
            }
            seen[t] = true;
        }
    }
    Ok(())
}

fn ed_cert(
    certs: &Certs<'_>,
    cert_type: CertType,
    expected: edcert::CertType,
    key_type: CertKeyType,
) -> Result<Ed25519Cert, CertsError> {
    let body = certs.get(cert_type).ok_or(CertsError::Missing(cert_type))?;
    let cert =
        Ed25519Cert::parse(body).map_err(|error| CertsError::Ed25519 { cert_type, error })?;
    cert.expect_type(expected)
        .map_err(|error| CertsError::Ed25519 { cert_type, error })?;
    if cert.key_type != key_type {
        return Err(CertsError::WrongKeyType(cert_type));
    }
    Ok(cert)
}

/// Checks a CERTS cell as `role` requires; `now` is the local time.
pub fn verify_certs(
    certs: &Certs<'_>,
    role: PeerRole<'_>,
    now: SystemTime,
) -> Result<VerifiedCerts, CertsError> {
    check_duplicates(certs)?;

    // Type 4: master identity certifies the signing key, and names the master itself.
    let t4 = CertType::IDENTITY_V_SIGNING;
    let id_cert = ed_cert(
        certs,
        t4,
        edcert::CertType::IDENTITY_V_SIGNING,
        CertKeyType::ED25519,
    )?;
    let master = id_cert
        .signing_key
        .ok_or(CertsError::NoSigningKeyExtension)?;
    id_cert
        .verify(Some(&master), Some(now))
        .map_err(|error| CertsError::Ed25519 {
            cert_type: t4,
            error,
        })?;
    let signing_key = id_cert.certified_key;

    let link_auth_key = match role {
        PeerRole::Responder { tls_cert_sha256 } => {
            let t5 = CertType::SIGNING_V_TLS_CERT;
            let c = ed_cert(
                certs,
                t5,
                edcert::CertType::SIGNING_V_TLS_CERT,
                CertKeyType::SHA256_OF_X509,
            )?;
            if &c.certified_key != tls_cert_sha256 {
                return Err(CertsError::TlsCertMismatch);
            }
            c.verify(Some(&signing_key), Some(now))
                .map_err(|error| CertsError::Ed25519 {
                    cert_type: t5,
                    error,
                })?;
            None
        }
        PeerRole::Initiator => {
            let t6 = CertType::SIGNING_V_LINK_AUTH;
            let c = ed_cert(
                certs,
                t6,
                edcert::CertType::SIGNING_V_LINK_AUTH,
                CertKeyType::ED25519,
            )?;
            c.verify(Some(&signing_key), Some(now))
                .map_err(|error| CertsError::Ed25519 {
                    cert_type: t6,
                    error,
                })?;
            Some(c.certified_key)
        }
    };

    // Type 2: the legacy RSA identity, self-signed, RSA-1024.
    let t2 = CertType::RSA_ID_X509;
    let rsa_body = certs.get(t2).ok_or(CertsError::Missing(t2))?;
    let rsa_cert = X509Cert::parse(rsa_body).map_err(|e| CertsError::Unparseable {
        cert_type: t2,
        reason: e.to_string(),
    })?;
    let rsa_key = rsa_cert
        .check_identity_cert(now)
        .map_err(|e| CertsError::IdentityCert(e.to_string()))?;

    // Type 7: the RSA identity vouches for the same master Ed25519 key.
    let t7 = CertType::RSA_ID_V_IDENTITY;
    let cc_body = certs.get(t7).ok_or(CertsError::Missing(t7))?;
    let cc = RsaEd25519CrossCert::parse(cc_body).map_err(|e| CertsError::Unparseable {
        cert_type: t7,
        reason: e.to_string(),
    })?;
    let master_id = Ed25519Identity(master);
    cc.verify(rsa_key, &master_id, now)
        .map_err(|e| CertsError::CrossCert(e.to_string()))?;

    let rsa_identity =
        tor_rsa::rsa_identity(rsa_key).map_err(|e| CertsError::IdentityCert(e.to_string()))?;
    let rsa_id_sha256 =
        tor_rsa::public_key_sha256(rsa_key).map_err(|e| CertsError::IdentityCert(e.to_string()))?;
    Ok(VerifiedCerts {
        rsa_identity,
        rsa_id_sha256,
        ed_identity: master_id,
        link_auth_key,
    })
}

/// SHA-256 of a DER certificate (what type 5 certifies; AUTHENTICATE's SCERT).
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}
