//! Relay keys and certificates, stored in C tor's DataDirectory/keys layout.
//!
//! - [`RelayKeys`]: load-or-create every key from a DataDirectory; periodic upkeep; the
//!   descriptor cross-certs; minting link-handshake certs ([`LinkCerts`]).
//! - [`cert`]: Ed25519 certificates (cert-spec); [`crosscert`]: RSA→Ed25519 (CERTS type 7),
//!   TAP and ntor onion-key crosscerts; [`family`]: happy-family keys and `family-cert`s;
//!   [`x509`]: the X.509 link/identity certs (ASN.1 by the `der` crate).
//! - [`keyfile`] / [`tagged`] / [`pem`]: C tor's on-disk formats; [`store`]: atomic file I/O.

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod cert;
pub mod crosscert;
pub mod ed25519;
pub mod error;
pub mod family;
pub mod identity;
pub mod keyfile;
pub mod link;
pub mod onion;
pub mod pem;
pub mod relay;
pub mod rsa;
pub mod store;
pub mod tagged;
pub mod time;
pub mod x509;

pub use cert::{CertKeyType, CertType, Ed25519Cert};
pub use crosscert::RsaEd25519CrossCert;
pub use ed25519::Ed25519Keypair;
pub use error::{FileProblem, KeyError};
pub use identity::SigningKeyPolicy;
pub use link::{LinkCertPolicy, LinkCerts};
pub use onion::{NtorKeypair, OnionKeyRotation, OnionKeys};
pub use relay::{spaced_fingerprint, KeyChanges, KeyParams, RelayKeys};
