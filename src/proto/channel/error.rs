//! Why a channel closed. Every variant is a reason a peer (or the local side) gave us to end the
//! link; the handshake variants name the check that failed, so the log line is self-explanatory.

use thiserror::Error;

use crate::cell::chan::CertType;
use crate::cell::{CellError, ChanCmd};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::keys::cert::CertError;

/// A failed check of the peer's CERTS cell (tor-spec §"Validating a CERTS cell";
/// C `or_handshake_certs_ed25519_ok`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertsError {
    #[error("CERTS cell lacks a {0} certificate")]
    Missing(CertType),
    #[error("CERTS cell has two {0} certificates")]
    Duplicate(CertType),
    #[error("{cert_type} certificate does not parse: {reason}")]
    Unparseable { cert_type: CertType, reason: String },
    #[error("{cert_type} certificate is invalid: {error}")]
    Ed25519 {
        cert_type: CertType,
        error: CertError,
    },
    #[error("type-4 certificate does not carry the master identity key")]
    NoSigningKeyExtension,
    #[error("{0} certificate certifies the wrong kind of key")]
    WrongKeyType(CertType),
    #[error("type-5 certificate does not certify the TLS certificate's SHA-256")]
    TlsCertMismatch,
    #[error("type-2 RSA identity certificate is invalid: {0}")]
    IdentityCert(String),
    #[error("type-7 RSA->Ed25519 cross-certificate is invalid: {0}")]
    CrossCert(String),
    #[error("peer presented no TLS certificate")]
    NoTlsCert,
}

/// A failed check of an AUTHENTICATE cell (tor-spec §"AUTHENTICATE cells"; C
/// `channel_tls_process_authenticate_cell`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("AUTHENTICATE before any CERTS cell")]
    NoCerts,
    #[error("second AUTHENTICATE cell")]
    Duplicate,
    #[error("AUTHENTICATE uses method {0}, only 3 (Ed25519-SHA256-RFC5705) is accepted")]
    UnsupportedMethod(u16),
    #[error("AUTHENTICATE body is malformed: {0}")]
    Malformed(CellError),
    /// A field of the authenticator differs from what we computed: `TYPE`, `CID`, `SID`,
    /// `CID_ED`, `SID_ED`, `SLOG`, `CLOG`, `SCERT` or `TLSSECRETS`.
    #[error("AUTHENTICATE field {0} is not what we expected")]
    FieldMismatch(&'static str),
    #[error("AUTHENTICATE signature does not verify with the type-6 key")]
    BadSignature,
    #[error("TLS keying-material exporter failed: {0}")]
    Exporter(String),
}

/// Why a channel is closing (or a local request was refused).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChannelError {
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS input buffering failed: {0}")]
    TlsInput(String),
    /// Fors's own TLS 1.3 record layer (`proto::tls_record`), once the channel was switched
    /// to it: a record that failed, an alert from the peer, or the handover itself.
    #[error("TLS record layer: {0}")]
    TlsRecord(#[from] crate::proto::tls_record::TlsRecordError),
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("connection ended inside a cell ({0} bytes of it buffered)")]
    TruncatedCell(usize),
    #[error("malformed cell: {0}")]
    Cell(#[from] CellError),
    #[error("{cmd} cell not allowed {when}")]
    UnexpectedCell { cmd: ChanCmd, when: &'static str },
    #[error("{0} cell with a nonzero circuit ID")]
    NonZeroCircId(ChanCmd),
    #[error("no link protocol version in common (we offer 4, 5)")]
    NoCommonVersion,
    #[error("bad CERTS cell: {0}")]
    Certs(#[from] CertsError),
    #[error("peer RSA identity {got} is not the expected {expected}")]
    WrongRsaIdentity {
        expected: RsaIdentity,
        got: RsaIdentity,
    },
    #[error("peer Ed25519 identity {got} is not the expected {expected}")]
    WrongEd25519Identity {
        expected: Ed25519Identity,
        got: Ed25519Identity,
    },
    #[error("bad AUTHENTICATE cell: {0}")]
    Auth(#[from] AuthError),
    #[error("AUTH_CHALLENGE is malformed: {0}")]
    BadAuthChallenge(CellError),
    #[error("NETINFO is malformed: {0}")]
    BadNetinfo(CellError),
    #[error("NETINFO's other-address is not an IPv4 or IPv6 address")]
    BadNetinfoAddress,
    #[error("link handshake did not finish in time")]
    HandshakeTimeout,
    #[error("channel output is full")]
    OutputFull,
    #[error("channel is not open")]
    NotOpen,
    #[error("channel closed locally")]
    LocalClose,
}
