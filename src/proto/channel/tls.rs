//! TLS for Tor links, on rustls (tor-spec §"Negotiating and initializing channels"; C
//! `lib/tls/tortls_openssl.c`).
//!
//! Tor does not use the WebPKI: a responder presents a self-issued link certificate and the
//! initiator accepts any certificate, because the Tor identities are proven afterwards in the
//! CERTS cell (type 5 binds the certificate's SHA-256 to the Ed25519 identity). What TLS must
//! still guarantee is that the responder holds the certificate's private key, so the verifier
//! below checks the handshake signature with the certificate's public key.
//!
//! rustls is driven over byte slices: the channel feeds received bytes with `read_tls` from a
//! `&[u8]` and collects records with `write_tls` into a buffer it owns. Nothing here does I/O.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

/// The rustls this module is built on, for callers that drive a TLS peer of a channel
/// (tests, fuzzers) with the same version.
pub use rustls;

/// RFC 5705 exporter label for the AUTH0003 authenticator's TLSSECRETS field.
pub const AUTH0003_EXPORTER_LABEL: &[u8] = b"EXPORTER FOR TOR TLS CLIENT BINDING AUTH0003";

/// The one crypto provider Fors links use (chosen by measurement: docs/tls-provider.md).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2: C tor 0.4.9 requires at least 1.2 and prefers 1.3.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Responder configuration: our RSA-2048 link certificate and key, no client certificates,
/// no session resumption (Tor links are long-lived and C tor never resumes).
pub fn server_config(
    provider: Arc<CryptoProvider>,
    link_cert_der: &[u8],
    link_key_pkcs8_der: &[u8],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config_with_versions(provider, link_cert_der, link_key_pkcs8_der, VERSIONS)
}

/// [`server_config`] offering only `versions` (tests force TLS 1.2 links with it).
pub fn server_config_with_versions(
    provider: Arc<CryptoProvider>,
    link_cert_der: &[u8],
    link_key_pkcs8_der: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(link_key_pkcs8_der.to_vec()));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(link_cert_der.to_vec())], key)?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Initiator configuration: the [`TorCertVerifier`], no client certificate, no resumption.
pub fn client_config(provider: Arc<CryptoProvider>) -> Result<Arc<ClientConfig>, rustls::Error> {
    client_config_with_versions(provider, VERSIONS)
}

/// [`client_config`] offering only `versions` (tests force TLS 1.2 links with it).
pub fn client_config_with_versions(
    provider: Arc<CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = Arc::new(TorCertVerifier {
        provider: provider.clone(),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Accepts the responder's self-issued certificate whatever its issuer, names or dates (C tor
/// checks none of them on the Ed25519 path), but verifies the TLS handshake signature with the
/// certificate's key, so the peer is proven to hold it. The certificate DER is read back from
/// the connection (`peer_certificates`) for the type-5 check.
#[derive(Debug)]
pub struct TorCertVerifier {
    provider: Arc<CryptoProvider>,
}

impl TorCertVerifier {
    /// The verifier for `provider`'s signature algorithms (tests build configs with other
    /// protocol versions around it).
    pub fn new(provider: Arc<CryptoProvider>) -> TorCertVerifier {
        TorCertVerifier { provider }
    }
}

impl ServerCertVerifier for TorCertVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A random `www.<8-20 base32>.com` SNI, as C tor's client sends (`tor_tls_new` picks a
/// fake hostname so the SNI does not single Tor out by being absent).
pub fn random_sni<R: RngCore + CryptoRng>(rng: &mut R) -> ServerName<'static> {
    let host = crate::keys::x509::random_hostname(rng, "www.", ".com");
    // Base32 letters and digits with dots: always a valid DNS name. The fallback is
    // unreachable but keeps this total.
    ServerName::try_from(host)
        .unwrap_or_else(|_| ServerName::try_from("www.example.com").expect("valid DNS name"))
}
