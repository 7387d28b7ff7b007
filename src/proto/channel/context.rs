//! [`LinkContext`]: what every channel of a shard shares — our identities, the current link
//! certificates, the rustls configurations (built once, not per connection), the encoded
//! CERTS bodies and our advertised addresses. A new context is built when the link
//! certificates are re-minted (about every two hours); channels keep the `Arc` they started
//! with, so a live channel always proves the certificate its TLS session used.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};

use super::tls;
use crate::cell::chan::{CertEntry, CertType, Certs, NetinfoAddr};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::keys::rsa as tor_rsa;
use crate::keys::x509::X509Cert;
use crate::keys::LinkCerts;

/// Per-channel limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Cells `send_cell` accepts before returning `OutputFull` (plaintext queued plus TLS
    /// output not yet taken by the caller, counted in 514-byte cells).
    pub max_output_cells: usize,
    /// A channel still handshaking after this long is closed (C: 60 s for OR handshakes).
    pub handshake_timeout: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_output_cells: 512,
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a [`LinkContext`] could not be built from the link certificates.
#[derive(Debug, thiserror::Error)]
pub enum LinkContextError {
    #[error("our RSA identity certificate does not parse: {0}")]
    IdentityCert(String),
    #[error("our type-4 certificate lacks the master identity key")]
    NoMasterKey,
    #[error("cannot encode our CERTS cell: {0}")]
    Certs(#[from] crate::cell::CellError),
    #[error("rustls rejected our configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Shared, read-only state of all channels on a shard.
pub struct LinkContext {
    pub(super) rsa_identity: RsaIdentity,
    pub(super) rsa_id_sha256: [u8; 32],
    pub(super) ed_identity: Ed25519Identity,
    pub(super) certs: LinkCerts,
    pub(super) tls_cert_sha256: [u8; 32],
    pub(super) server_config: Arc<ServerConfig>,
    pub(super) client_config: Arc<ClientConfig>,
    pub(super) my_addrs: Vec<NetinfoAddr>,
    /// CERTS body a responder sends: types 1, 2, 4, 5, 7.
    pub(super) responder_certs: Vec<u8>,
    /// CERTS body an authenticating initiator sends: types 2, 4, 6, 7.
    pub(super) initiator_certs: Vec<u8>,
    pub(super) config: ChannelConfig,
}

impl std::fmt::Debug for LinkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkContext")
            .field("rsa_identity", &self.rsa_identity)
            .field("ed_identity", &self.ed_identity)
            .field("my_addrs", &self.my_addrs)
            .finish_non_exhaustive()
    }
}

fn encode_certs(entries: &[CertEntry<'_>]) -> Result<Vec<u8>, crate::cell::CellError> {
    let len = 1 + entries.iter().map(|e| 3 + e.body.len()).sum::<usize>();
    let mut out = vec![0u8; len];
    let n = Certs::encode(entries, &mut out)?;
    out.truncate(n);
    Ok(out)
}

impl LinkContext {
    /// Builds the context from freshly minted link certificates. `my_addrs` are the
    /// addresses we advertise in NETINFO: our IPv4 address and, if we have one, IPv6.
    pub fn new(
        certs: LinkCerts,
        my_addrs: &[IpAddr],
        config: ChannelConfig,
    ) -> Result<LinkContext, LinkContextError> {
        let id_cert = X509Cert::parse(&certs.identity_cert_der)
            .map_err(|e| LinkContextError::IdentityCert(e.to_string()))?;
        let rsa_identity = tor_rsa::rsa_identity(id_cert.subject_key())
            .map_err(|e| LinkContextError::IdentityCert(e.to_string()))?;
        let rsa_id_sha256 = tor_rsa::public_key_sha256(id_cert.subject_key())
            .map_err(|e| LinkContextError::IdentityCert(e.to_string()))?;
        let ed_identity = Ed25519Identity(
            certs
                .signing_cert
                .signing_key
                .ok_or(LinkContextError::NoMasterKey)?,
        );
        let provider = tls::provider();
        let server_config = tls::server_config(
            provider.clone(),
            &certs.link_cert_der,
            &certs.link_key_pkcs8_der,
        )?;
        let client_config = tls::client_config(provider)?;
        let entry = |cert_type, body| CertEntry { cert_type, body };
        let responder_certs = encode_certs(&[
            entry(CertType::TLS_LINK_X509, &certs.link_cert_der[..]),
            entry(CertType::RSA_ID_X509, &certs.identity_cert_der[..]),
            entry(CertType::IDENTITY_V_SIGNING, certs.signing_cert.as_bytes()),
            entry(CertType::SIGNING_V_TLS_CERT, certs.tls_cert_cert.as_bytes()),
            entry(CertType::RSA_ID_V_IDENTITY, certs.rsa_crosscert.as_bytes()),
        ])?;
        let initiator_certs = encode_certs(&[
            entry(CertType::RSA_ID_X509, &certs.identity_cert_der[..]),
            entry(CertType::IDENTITY_V_SIGNING, certs.signing_cert.as_bytes()),
            entry(
                CertType::SIGNING_V_LINK_AUTH,
                certs.link_auth_cert.as_bytes(),
            ),
            entry(CertType::RSA_ID_V_IDENTITY, certs.rsa_crosscert.as_bytes()),
        ])?;
        Ok(LinkContext {
            rsa_identity,
            rsa_id_sha256,
            ed_identity,
            tls_cert_sha256: certs.tls_cert_sha256(),
            certs,
            server_config,
            client_config,
            my_addrs: my_addrs.iter().map(|a| NetinfoAddr::from(*a)).collect(),
            responder_certs,
            initiator_certs,
            config,
        })
    }

    /// This context with TLS configurations that offer only `versions` (tests force TLS 1.2
    /// links with it; a relay always offers 1.3 and 1.2).
    #[doc(hidden)]
    pub fn with_tls_versions(
        mut self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<LinkContext, LinkContextError> {
        let provider = tls::provider();
        self.server_config = tls::server_config_with_versions(
            provider.clone(),
            &self.certs.link_cert_der,
            &self.certs.link_key_pkcs8_der,
            versions,
        )?;
        self.client_config = tls::client_config_with_versions(provider, versions)?;
        Ok(self)
    }

    /// Our RSA identity (fingerprint).
    pub fn rsa_identity(&self) -> RsaIdentity {
        self.rsa_identity
    }

    /// Our Ed25519 master identity.
    pub fn ed25519_identity(&self) -> Ed25519Identity {
        self.ed_identity
    }

    /// The link certificates this context presents.
    pub fn link_certs(&self) -> &LinkCerts {
        &self.certs
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }
}
