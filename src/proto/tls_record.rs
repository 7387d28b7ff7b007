//! The TLS 1.3 record layer, in place (RFC 8446 §5.2–5.5, §7.2–7.3; issue #13 item 3).
//!
//! rustls's buffered API copies a relay cell four times between the receive and the send
//! buffer (`docs/architecture.md`, "Copy map": `TlsDeframe`, `TlsPlaintext`, `TlsRecord`,
//! `TlsOut`). Kernel TLS would remove them but is not available here, so this module does
//! the record layer itself and leaves rustls only the handshake:
//!
//! * [`Sealer`] seals one record in place in a buffer the caller owns (a send-pool buffer):
//!   the caller leaves [`HEADER_LEN`] bytes before the plaintext and [`SEAL_TRAILER_LEN`]
//!   after it, writes its cells in between, and the record is sealed where it lies.
//! * [`Opener`] finds the first record in a byte slice (the receive buffer), decrypts it in
//!   place and says where its plaintext is; a partial record says how many bytes it lacks.
//! * [`TlsRecordLayer`] owns both plus the two application traffic secrets, from which it
//!   computes the next keys on a KeyUpdate itself (RFC 8446 §7.2: HKDF-Expand-Label with
//!   `ring::hkdf`); it handles the post-handshake messages and alerts inside the record
//!   stream.
//!
//! Construction (what `proto::channel` does): a *buffered* rustls connection runs the TLS
//! handshake (and the Tor link handshake, which needs rustls's RFC 5705 exporter) with a
//! config from [`with_traffic_secret_log_server`] / [`with_traffic_secret_log_client`]: a
//! copy of the shared config with `enable_secret_extraction` and a per-connection
//! [`TrafficSecretLog`] that keeps `CLIENT_TRAFFIC_SECRET_0` and `SERVER_TRAFFIC_SECRET_0`.
//! At a record boundary where rustls holds no plaintext and no output,
//! [`TlsRecordLayer::from_connection`] takes rustls's current keys and sequence numbers
//! (`dangerous_extract_secrets`) and the logged secrets; it checks that the secrets derive
//! those keys (RFC 8446 §7.3), following KeyUpdates the peer may have made meanwhile.
//! Bytes rustls has not been given are records for this layer.
//!
//! TLS 1.3 only: a TLS 1.2 connection is refused ([`TlsRecordError::NotTls13`]) before it is
//! consumed; channels keep such links on rustls. Suites: AES-128-GCM, AES-256-GCM and
//! ChaCha20-Poly1305, through `ring::aead` (the crypto rustls uses with its ring provider).
//! We never pad our records.
//!
//! No allocation at all after the handover: records are opened and sealed in the caller's
//! buffers. A post-handshake message that spans records (RFC 8446 §5.1; rustls never sends
//! one) is read as a stream ([`HsReader`]): its type and length are judged as soon as its
//! 4-byte header is in, a KeyUpdate's one byte waits in a fixed array, and a
//! NewSessionTicket's bytes are checked for framing and dropped as they come, so a peer
//! cutting a message into 1-byte records costs what the bytes cost, never a gather.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use ring::{aead, hkdf};
use rustls::{
    AlertDescription, CipherSuite, ClientConfig, Connection, ConnectionTrafficSecrets,
    ExtractedSecrets, KeyLog, ProtocolVersion, ServerConfig, SupportedCipherSuite,
};
use zeroize::Zeroize;

/// The record header: opaque_type, legacy_record_version, length (RFC 8446 §5.1).
pub const HEADER_LEN: usize = 5;
/// The AEAD tag of every TLS 1.3 suite (RFC 8446 §5.2; AES-GCM and ChaCha20-Poly1305).
pub const TAG_LEN: usize = 16;
/// The largest plaintext of one record: 2^14 bytes (RFC 8446 §5.1).
pub const MAX_PLAINTEXT_LEN: usize = 1 << 14;
/// The largest `TLSCiphertext.length`: 2^14 + 256 (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + 256;
/// The largest record on the wire.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CIPHERTEXT_LEN;
/// What a caller leaves after the plaintext of a record to seal: the inner content type
/// byte and the tag (RFC 8446 §5.2 `TLSInnerPlaintext`, no padding).
pub const SEAL_TRAILER_LEN: usize = 1 + TAG_LEN;
/// A sealed KeyUpdate: header, handshake header (4), request_update (1), trailer.
pub const KEY_UPDATE_RECORD_LEN: usize = HEADER_LEN + 4 + 1 + SEAL_TRAILER_LEN;
/// A sealed alert: header, level and description, trailer.
pub const ALERT_RECORD_LEN: usize = HEADER_LEN + 2 + SEAL_TRAILER_LEN;
/// The longest post-handshake message body we take (a NewSessionTicket; a KeyUpdate's is
/// 1): rustls's own limit on any handshake message (`MAX_HANDSHAKE_SIZE`,
/// `msgs/deframer/handshake.rs`, refused with decode_error), so a peer rustls would serve
/// is served here. Nothing is buffered up to it: ticket bytes are checked and dropped as
/// they arrive ([`HsReader`]).
pub const MAX_HANDSHAKE_MESSAGE_LEN: usize = 0xffff;

/// `TLSCiphertext.opaque_type` is always application_data (RFC 8446 §5.2).
const OUTER_TYPE: u8 = 23;
/// `legacy_record_version` we send (RFC 8446 §5.1).
const LEGACY_VERSION: [u8; 2] = [3, 3];
/// Handshake message types handled after the handshake (RFC 8446 §4).
const HS_NEW_SESSION_TICKET: u8 = 4;
const HS_KEY_UPDATE: u8 = 24;
/// Alert levels (RFC 8446 §6).
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
/// KeyUpdates the peer may send with no application data between them; one more closes
/// the connection (rustls `TemperCounters::INITIAL_KEY_UPDATE_REQUESTS`, after BoringSSL's
/// `kMaxKeyUpdates`): each costs us two HKDF expansions and possibly a KeyUpdate of ours.
pub const MAX_KEY_UPDATES_WITHOUT_DATA: u8 = 32;
/// Warning alerts (user_canceled, the only one TLS 1.3 lets pass) the peer may send over
/// the connection's life; one more closes it (rustls `TemperCounters`, after BoringSSL's
/// `kMaxWarningAlerts`; never reset).
pub const MAX_WARNING_ALERTS: u8 = 4;
/// The most KeyUpdates per direction [`TlsRecordLayer::from_connection`] follows from the
/// logged secret_0 to rustls's keys, whatever bound the caller gives: the channel's bound
/// (records since the TLS handshake) is one a peer interleaving data and KeyUpdates could
/// push into the tens of thousands of HKDF steps. No honest peer updates its key 64 times
/// during a link handshake (rustls and C tor update only near a key's record limit).
pub const MAX_KEY_UPDATES_BEFORE_HANDOVER: u64 = 64;
/// Past this many records under one key we want a KeyUpdate even where the suite has no
/// confidentiality limit, long before the sequence number could wrap (rustls: the same
/// soft limit, `record_layer.rs`).
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;

/// The inner content type of a TLS 1.3 record (RFC 8446 §5.2; change_cipher_spec is never
/// protected, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Alert,
    Handshake,
    ApplicationData,
}

impl ContentType {
    fn to_byte(self) -> u8 {
        match self {
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
        }
    }
}

/// The longest hash of a TLS 1.3 suite we implement (SHA-384).
const MAX_HASH_LEN: usize = 48;
/// The longest AEAD key (AES-256, ChaCha20).
const MAX_KEY_LEN: usize = 32;

/// A TLS 1.3 suite the layer implements (RFC 8446 §B.4): its AEAD and the hash of its
/// HKDF.
#[derive(Clone, Copy, Debug)]
struct Suite {
    suite: CipherSuite,
    aead: &'static aead::Algorithm,
    hkdf: hkdf::Algorithm,
    /// Records per key (`CipherSuiteCommon::confidentiality_limit`, RFC 8446 §5.5).
    confidentiality_limit: u64,
}

impl Suite {
    fn of(suite: SupportedCipherSuite) -> Result<Suite, TlsRecordError> {
        let SupportedCipherSuite::Tls13(t13) = suite else {
            return Err(TlsRecordError::NotTls13(ProtocolVersion::TLSv1_2));
        };
        let (aead, hkdf) = match t13.common.suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => (&aead::AES_128_GCM, hkdf::HKDF_SHA256),
            CipherSuite::TLS13_AES_256_GCM_SHA384 => (&aead::AES_256_GCM, hkdf::HKDF_SHA384),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => {
                (&aead::CHACHA20_POLY1305, hkdf::HKDF_SHA256)
            }
            _ => return Err(KeyError::UnsupportedSuite.into()),
        };
        Ok(Suite {
            suite: t13.common.suite,
            aead,
            hkdf,
            confidentiality_limit: t13.common.confidentiality_limit,
        })
    }

    fn hash_len(&self) -> usize {
        hkdf::KeyType::len(&self.hkdf)
    }
}

/// An output length for `ring::hkdf`.
struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1): the `HkdfLabel` is
/// `uint16 length`, `opaque label<7..255> = "tls13 " + label`, `opaque context<0..255>`.
fn hkdf_expand_label(
    alg: hkdf::Algorithm,
    secret: &[u8],
    label: &[u8],
    out: &mut [u8],
) -> Result<(), KeyError> {
    let length = u16::try_from(out.len())
        .map_err(|_| KeyError::Hkdf)?
        .to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).map_err(|_| KeyError::Hkdf)?];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    hkdf::Prk::new_less_safe(alg, secret)
        .expand(&info, OkmLen(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| KeyError::Hkdf)
}

/// An application traffic secret (RFC 8446 §7.1), zeroized on drop, never printed.
#[derive(Clone)]
pub struct TrafficSecret {
    bytes: [u8; MAX_HASH_LEN],
    len: usize,
}

impl TrafficSecret {
    /// `None` for a secret longer than any suite's hash.
    pub fn new(secret: &[u8]) -> Option<TrafficSecret> {
        let mut bytes = [0u8; MAX_HASH_LEN];
        bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        Some(TrafficSecret {
            bytes,
            len: secret.len(),
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "",
    /// Hash.length) (RFC 8446 §7.2).
    fn next(&self, suite: &Suite) -> Result<TrafficSecret, KeyError> {
        if self.len != suite.hash_len() {
            return Err(KeyError::SecretLength);
        }
        let mut next = TrafficSecret {
            bytes: [0u8; MAX_HASH_LEN],
            len: self.len,
        };
        hkdf_expand_label(
            suite.hkdf,
            self.as_bytes(),
            b"traffic upd",
            &mut next.bytes[..self.len],
        )?;
        Ok(next)
    }

    /// The record key and IV this secret gives (RFC 8446 §7.3: HKDF-Expand-Label with
    /// "key" and "iv").
    fn key_material(&self, suite: &Suite) -> Result<KeyMaterial, KeyError> {
        if self.len != suite.hash_len() {
            return Err(KeyError::SecretLength);
        }
        let mut m = KeyMaterial {
            key: [0u8; MAX_KEY_LEN],
            key_len: suite.aead.key_len(),
            iv: [0u8; aead::NONCE_LEN],
        };
        hkdf_expand_label(suite.hkdf, self.as_bytes(), b"key", &mut m.key[..m.key_len])?;
        hkdf_expand_label(suite.hkdf, self.as_bytes(), b"iv", &mut m.iv)?;
        Ok(m)
    }
}

impl Drop for TrafficSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for TrafficSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrafficSecret({} bytes)", self.len)
    }
}

/// A record key and IV as bytes, zeroized on drop.
struct KeyMaterial {
    key: [u8; MAX_KEY_LEN],
    key_len: usize,
    iv: [u8; aead::NONCE_LEN],
}

impl KeyMaterial {
    fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// Whether these are the key and IV rustls handed over.
    fn matches(&self, extracted: &ConnectionTrafficSecrets) -> bool {
        let (key, iv) = match extracted {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
            _ => return false,
        };
        // Not constant time: both sides are ours, and a mismatch is not secret.
        key.as_ref() == self.key() && iv.as_ref() == self.iv
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// The two application traffic secrets a TLS 1.3 handshake ends with.
#[derive(Clone, Debug)]
pub struct TrafficSecrets {
    /// client_application_traffic_secret_0.
    pub client: TrafficSecret,
    /// server_application_traffic_secret_0.
    pub server: TrafficSecret,
}

/// rustls's key log, per connection: keeps `CLIENT_TRAFFIC_SECRET_0` and
/// `SERVER_TRAFFIC_SECRET_0` (RFC 8446 §7.1) for [`TlsRecordLayer::from_connection`] and
/// declines every other label, so no handshake secret is ever handed over. rustls calls it
/// twice per handshake; the lock is never taken per record.
#[derive(Default)]
pub struct TrafficSecretLog {
    secrets: Mutex<(Option<TrafficSecret>, Option<TrafficSecret>)>,
}

const CLIENT_TRAFFIC_SECRET_0: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC_SECRET_0: &str = "SERVER_TRAFFIC_SECRET_0";

impl TrafficSecretLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<TrafficSecret>, Option<TrafficSecret>)> {
        // Nothing can panic while it is held; a poisoned lock still holds whole values.
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether both secrets were logged.
    pub fn has_both(&self) -> bool {
        let s = self.lock();
        s.0.is_some() && s.1.is_some()
    }

    /// Takes both secrets out (they are zeroized when dropped).
    pub fn take(&self) -> Option<TrafficSecrets> {
        let mut s = self.lock();
        match (s.0.take(), s.1.take()) {
            (Some(client), Some(server)) => Some(TrafficSecrets { client, server }),
            _ => None,
        }
    }
}

impl std::fmt::Debug for TrafficSecretLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficSecretLog")
            .field("has_both", &self.has_both())
            .finish()
    }
}

impl KeyLog for TrafficSecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let mut s = self.lock();
        match label {
            CLIENT_TRAFFIC_SECRET_0 => s.0 = TrafficSecret::new(secret),
            SERVER_TRAFFIC_SECRET_0 => s.1 = TrafficSecret::new(secret),
            _ => {}
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_TRAFFIC_SECRET_0 || label == SERVER_TRAFFIC_SECRET_0
    }
}

/// A copy of a server config for one connection whose record layer may be taken over:
/// `enable_secret_extraction` and a fresh [`TrafficSecretLog`]; everything else as `base`
/// (`channel::tls::server_config`). Cloning copies the config's `Arc`s and empty `Vec`s
/// (no ALPN, no certificate compression), so it costs two allocations: the new config's
/// `Arc` and the log's.
pub fn with_traffic_secret_log_server(
    base: &ServerConfig,
) -> (Arc<ServerConfig>, Arc<TrafficSecretLog>) {
    let log = Arc::new(TrafficSecretLog::default());
    let mut cfg = base.clone();
    cfg.enable_secret_extraction = true;
    cfg.key_log = log.clone();
    (Arc::new(cfg), log)
}

/// As [`with_traffic_secret_log_server`], for an initiator's config
/// (`channel::tls::client_config`).
pub fn with_traffic_secret_log_client(
    base: &ClientConfig,
) -> (Arc<ClientConfig>, Arc<TrafficSecretLog>) {
    let log = Arc::new(TrafficSecretLog::default());
    let mut cfg = base.clone();
    cfg.enable_secret_extraction = true;
    cfg.key_log = log.clone();
    (Arc::new(cfg), log)
}

/// One direction's AEAD key and static IV (RFC 8446 §5.3).
struct RecordKey {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
}

impl RecordKey {
    fn from_material(suite: &Suite, m: &KeyMaterial) -> Result<RecordKey, KeyError> {
        let unbound =
            aead::UnboundKey::new(suite.aead, m.key()).map_err(|_| KeyError::KeyLength)?;
        Ok(RecordKey {
            key: aead::LessSafeKey::new(unbound),
            iv: m.iv,
        })
    }

    fn new(secrets: &ConnectionTrafficSecrets) -> Result<RecordKey, KeyError> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(KeyError::UnsupportedSuite),
        };
        let unbound = aead::UnboundKey::new(alg, key.as_ref()).map_err(|_| KeyError::KeyLength)?;
        let iv: [u8; aead::NONCE_LEN] = iv.as_ref().try_into().map_err(|_| KeyError::IvLength)?;
        Ok(RecordKey {
            key: aead::LessSafeKey::new(unbound),
            iv,
        })
    }

    /// The per-record nonce: the static IV XOR the 64-bit sequence number, left-padded
    /// (RFC 8446 §5.3).
    fn nonce(&self, seq: u64) -> aead::Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(seq.to_be_bytes())
        {
            *n ^= s;
        }
        aead::Nonce::assume_unique_for_key(nonce)
    }
}

impl Drop for RecordKey {
    fn drop(&mut self) {
        self.iv.zeroize();
    }
}

/// Why traffic secrets could not become a record key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("traffic secrets of a suite the record layer does not implement")]
    UnsupportedSuite,
    #[error("traffic key of the wrong length for its AEAD")]
    KeyLength,
    #[error("traffic IV is not 12 bytes")]
    IvLength,
    #[error("traffic secret of the wrong length for the suite's hash")]
    SecretLength,
    #[error("HKDF-Expand-Label failed")]
    Hkdf,
}

/// Why a record could not be sealed. Nothing was written when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("plaintext of {0} bytes exceeds the 2^14-byte record limit (RFC 8446 §5.1)")]
    PlaintextTooLong(usize),
    #[error("record buffer of {have} bytes, {need} needed (header + plaintext + 17)")]
    BufferTooShort { have: usize, need: usize },
    #[error("the write key reached its record limit: send a KeyUpdate first (RFC 8446 §5.5)")]
    KeyUpdateDue,
    #[error("the write sequence number is exhausted (RFC 8446 §5.3: it must not wrap)")]
    SequenceExhausted,
    #[error("AEAD seal failed")]
    Aead,
}

/// Seals TLS 1.3 records in place, one key and sequence number (RFC 8446 §5.2–5.3).
pub struct Sealer {
    key: RecordKey,
    seq: u64,
    /// Application data is refused from this sequence number on, until a KeyUpdate: the
    /// suite's confidentiality limit (RFC 8446 §5.5), or [`SEQ_SOFT_LIMIT`].
    key_update_at: u64,
    confidentiality_limit: u64,
}

impl Sealer {
    /// A sealer for `secrets`, starting at `seq`; `confidentiality_limit` is the suite's
    /// record limit per key (`CipherSuiteCommon::confidentiality_limit`).
    pub fn new(
        secrets: &ConnectionTrafficSecrets,
        seq: u64,
        confidentiality_limit: u64,
    ) -> Result<Sealer, KeyError> {
        Ok(Sealer::with_key(
            RecordKey::new(secrets)?,
            seq,
            confidentiality_limit,
        ))
    }

    fn with_key(key: RecordKey, seq: u64, confidentiality_limit: u64) -> Sealer {
        Sealer {
            key,
            seq,
            key_update_at: confidentiality_limit.min(SEQ_SOFT_LIMIT),
            confidentiality_limit,
        }
    }

    /// The sequence number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether application data must wait for a KeyUpdate (the key's record limit).
    pub fn key_update_due(&self) -> bool {
        self.seq >= self.key_update_at
    }

    /// A new key after a KeyUpdate: its sequence number starts at 0 (RFC 8446 §5.3).
    fn rekey(&mut self, key: RecordKey) {
        self.key = key;
        self.seq = 0;
        self.key_update_at = self.confidentiality_limit.min(SEQ_SOFT_LIMIT);
    }

    /// Seals one record in place. `record` starts with [`HEADER_LEN`] bytes for the header,
    /// then the `plaintext_len` bytes of plaintext, then at least [`SEAL_TRAILER_LEN`] bytes
    /// (content type, tag); what follows is untouched. Returns the record's length on the
    /// wire (`HEADER_LEN + plaintext_len + SEAL_TRAILER_LEN`).
    pub fn seal(
        &mut self,
        content_type: ContentType,
        record: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, SealError> {
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(SealError::PlaintextTooLong(plaintext_len));
        }
        if content_type == ContentType::ApplicationData && self.key_update_due() {
            return Err(SealError::KeyUpdateDue);
        }
        let need = HEADER_LEN + plaintext_len + SEAL_TRAILER_LEN;
        if record.len() < need {
            return Err(SealError::BufferTooShort {
                have: record.len(),
                need,
            });
        }
        record[HEADER_LEN + plaintext_len] = content_type.to_byte();
        self.seal_inner(record, plaintext_len + 1)
    }

    /// Seals `record[HEADER_LEN..HEADER_LEN + inner_len]` as it is (a whole
    /// `TLSInnerPlaintext`: content, type, padding) and writes header and tag.
    fn seal_inner(&mut self, record: &mut [u8], inner_len: usize) -> Result<usize, SealError> {
        if self.seq == u64::MAX {
            return Err(SealError::SequenceExhausted);
        }
        let ciphertext_len = inner_len + TAG_LEN;
        let total = HEADER_LEN + ciphertext_len;
        if record.len() < total {
            return Err(SealError::BufferTooShort {
                have: record.len(),
                need: total,
            });
        }
        // `inner_len` ≤ 2^14 + 1 (checked by the callers), so the length fits in u16.
        let len =
            u16::try_from(ciphertext_len).map_err(|_| SealError::PlaintextTooLong(inner_len))?;
        let [l0, l1] = len.to_be_bytes();
        let header = [OUTER_TYPE, LEGACY_VERSION[0], LEGACY_VERSION[1], l0, l1];
        record[..HEADER_LEN].copy_from_slice(&header);
        // additional_data = the record header (RFC 8446 §5.2).
        let (body, tag_out) = record[HEADER_LEN..total].split_at_mut(inner_len);
        let tag = self
            .key
            .key
            .seal_in_place_separate_tag(self.key.nonce(self.seq), aead::Aad::from(header), body)
            .map_err(|_| SealError::Aead)?;
        tag_out.copy_from_slice(tag.as_ref());
        self.seq += 1;
        Ok(total)
    }
}

/// Why a record could not be opened. Each maps to the alert rustls would send
/// ([`OpenError::alert`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("record of outer type {0}: after the handshake every record is application_data (RFC 8446 §5.2)")]
    OuterType(u8),
    #[error("record of {0} bytes exceeds 2^14 + 256 (RFC 8446 §5.2)")]
    CiphertextTooLong(usize),
    #[error("decrypted record of {0} bytes exceeds 2^14 + 1 (RFC 8446 §5.4)")]
    PlaintextTooLong(usize),
    #[error("record of {0} bytes is shorter than its tag")]
    TooShort(usize),
    #[error("record failed authentication")]
    BadRecordMac,
    #[error("decrypted record holds no content type (all zero: RFC 8446 §5.4)")]
    NoContentType,
    #[error("inner content type {0} (RFC 8446 §5: only alert, handshake, application_data)")]
    ContentType(u8),
    #[error("the read sequence number is exhausted (RFC 8446 §5.3: it must not wrap)")]
    SequenceExhausted,
}

impl OpenError {
    /// The alert to send before closing (RFC 8446 §6.2; what rustls sends for the same).
    pub fn alert(&self) -> AlertDescription {
        match self {
            OpenError::OuterType(_) | OpenError::NoContentType | OpenError::ContentType(_) => {
                AlertDescription::UnexpectedMessage
            }
            OpenError::CiphertextTooLong(_) | OpenError::PlaintextTooLong(_) => {
                AlertDescription::RecordOverflow
            }
            OpenError::TooShort(_) | OpenError::BadRecordMac => AlertDescription::BadRecordMac,
            OpenError::SequenceExhausted => AlertDescription::InternalError,
        }
    }
}

/// What [`Opener::open`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A whole record, now decrypted in place.
    Record(OpenedRecord),
    /// The first record is not all there: at least `needed` more bytes (exactly, once the
    /// header is in).
    Incomplete { needed: usize },
}

/// A record opened in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedRecord {
    pub content_type: ContentType,
    /// Where its content lies in the buffer given to [`Opener::open`] (padding and type
    /// stripped).
    pub plaintext: Range<usize>,
    /// Its length on the wire: the caller's next record starts there.
    pub record_len: usize,
}

/// Opens TLS 1.3 records in place, one key and sequence number (RFC 8446 §5.2–5.4).
pub struct Opener {
    key: RecordKey,
    seq: u64,
}

impl Opener {
    /// An opener for `secrets`, starting at `seq`.
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Opener, KeyError> {
        Ok(Opener {
            key: RecordKey::new(secrets)?,
            seq,
        })
    }

    /// The sequence number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A new key after a KeyUpdate: its sequence number starts at 0 (RFC 8446 §5.3).
    fn rekey(&mut self, key: RecordKey) {
        self.key = key;
        self.seq = 0;
    }

    /// Opens the record at the start of `buf` in place. A record that fails leaves its
    /// bytes unspecified (the connection is over) and the sequence number where it was.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, OpenError> {
        if buf.len() < HEADER_LEN {
            return Ok(Opened::Incomplete {
                needed: HEADER_LEN - buf.len(),
            });
        }
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        let header: [u8; HEADER_LEN] = [header[0], header[1], header[2], header[3], header[4]];
        Ok(match self.open_split(header, rest)? {
            Opened::Record(rec) => Opened::Record(OpenedRecord {
                content_type: rec.content_type,
                plaintext: rec.plaintext.start + HEADER_LEN..rec.plaintext.end + HEADER_LEN,
                record_len: rec.record_len + HEADER_LEN,
            }),
            incomplete => incomplete,
        })
    }

    /// Opens a record whose header came apart from its body: `header` (read earlier, at the
    /// end of another receive buffer) and the body at the start of `body`, decrypted where
    /// it lies. The header is the AEAD's additional data (RFC 8446 §5.2), so the two need
    /// not be contiguous. The record's `plaintext` and `record_len` count from `body`'s
    /// start and leave the header out. Failures as [`Opener::open`].
    pub fn open_split(
        &mut self,
        header: [u8; HEADER_LEN],
        body: &mut [u8],
    ) -> Result<Opened, OpenError> {
        let len = body_len(&header)?;
        if body.len() < len {
            return Ok(Opened::Incomplete {
                needed: len - body.len(),
            });
        }
        if self.seq == u64::MAX {
            return Err(OpenError::SequenceExhausted);
        }
        // legacy_record_version is ignored (RFC 8446 §5.1), but authenticated here.
        let inner = self
            .key
            .key
            .open_in_place(
                self.key.nonce(self.seq),
                aead::Aad::from(header),
                &mut body[..len],
            )
            .map_err(|_| OpenError::BadRecordMac)?;
        self.seq += 1;
        if inner.len() > MAX_PLAINTEXT_LEN + 1 {
            return Err(OpenError::PlaintextTooLong(inner.len()));
        }
        // The content type is the last non-zero byte; zeros after it are padding (§5.4).
        let at = inner
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(OpenError::NoContentType)?;
        let content_type = match inner[at] {
            21 => ContentType::Alert,
            22 => ContentType::Handshake,
            23 => ContentType::ApplicationData,
            other => return Err(OpenError::ContentType(other)),
        };
        Ok(Opened::Record(OpenedRecord {
            content_type,
            plaintext: 0..at,
            record_len: len,
        }))
    }
}

/// The `TLSCiphertext.length` a record header announces, judged as soon as the header is
/// in so garbage fails before anyone waits for a body (RFC 8446 §5.1–5.2).
pub fn body_len(header: &[u8; HEADER_LEN]) -> Result<usize, OpenError> {
    if header[0] != OUTER_TYPE {
        return Err(OpenError::OuterType(header[0]));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_CIPHERTEXT_LEN {
        return Err(OpenError::CiphertextTooLong(len));
    }
    if len < TAG_LEN {
        return Err(OpenError::TooShort(len));
    }
    Ok(len)
}

/// Why the record layer failed. [`TlsRecordError::alert`] is the alert to send, where one
/// is due.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsRecordError {
    #[error("rustls would not hand the connection over: {0}")]
    Handover(rustls::Error),
    #[error("negotiated {0:?}: the in-place record layer does TLS 1.3 only")]
    NotTls13(ProtocolVersion),
    #[error("the TLS handshake is not finished, or rustls still holds records to send or input to hand out")]
    NotReady,
    #[error("the traffic secrets were not logged (the config lacks a TrafficSecretLog)")]
    SecretsNotLogged,
    #[error("the logged traffic secrets do not derive rustls's keys within {0} KeyUpdates")]
    SecretMismatch(u64),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the peer sent a {0:?} alert")]
    AlertReceived(AlertDescription),
    #[error("the peer sent a warning {0:?} alert: only close_notify and user_canceled are warnings in TLS 1.3 (RFC 8446 §6)")]
    WarningAlert(AlertDescription),
    #[error("alert record of {0} bytes (an alert is 2: RFC 8446 §6)")]
    AlertLength(usize),
    #[error("alert of unknown level {0}")]
    AlertLevel(u8),
    #[error("empty handshake record (RFC 8446 §5.1)")]
    EmptyHandshake,
    #[error("empty alert record (RFC 8446 §5.1, §6)")]
    EmptyAlert,
    #[error("handshake message of type {0} after the handshake")]
    UnexpectedHandshake(u8),
    #[error("NewSessionTicket sent to a server")]
    TicketToServer,
    #[error("NewSessionTicket that does not parse (RFC 8446 §4.6.1)")]
    TicketFormat,
    #[error("KeyUpdate of {0} bytes (it is 1: RFC 8446 §4.6.3)")]
    KeyUpdateLength(usize),
    #[error("KeyUpdate with request_update {0} (RFC 8446 §4.6.3)")]
    KeyUpdateValue(u8),
    #[error("KeyUpdate not at the end of its record (RFC 8446 §5.1)")]
    KeyUpdateNotLast,
    #[error("a {0:?} record inside a handshake message that spans records (RFC 8446 §5.1)")]
    Interleaved(ContentType),
    #[error(
        "handshake message body of {0} bytes exceeds {MAX_HANDSHAKE_MESSAGE_LEN} (rustls's limit)"
    )]
    HandshakeTooLong(usize),
    #[error(
        "more than {MAX_KEY_UPDATES_WITHOUT_DATA} KeyUpdates with no application data between them"
    )]
    TooManyKeyUpdates,
    #[error("more than {MAX_WARNING_ALERTS} warning alerts")]
    TooManyWarningAlerts,
    #[error("a KeyUpdate is owed first (RFC 8446 §4.6.3) or the key reached its limit")]
    KeyUpdateDue,
    #[error("we sent close_notify or a fatal alert: nothing more may be sent")]
    Closed,
    #[error("an earlier record failed: the connection is over")]
    Failed,
}

impl TlsRecordError {
    /// The alert to send before closing, as rustls would; `None` where the error is ours
    /// (a misuse or a handover refused) rather than the peer's.
    pub fn alert(&self) -> Option<AlertDescription> {
        use TlsRecordError as E;
        match self {
            E::Open(e) => Some(e.alert()),
            // A zero-length Handshake or Alert record is unexpected_message (RFC 8446 §5.1;
            // RFC 8446bis says so outright), not a decode_error.
            E::EmptyHandshake
            | E::EmptyAlert
            | E::UnexpectedHandshake(_)
            | E::TicketToServer
            | E::KeyUpdateNotLast
            | E::Interleaved(_) => Some(AlertDescription::UnexpectedMessage),
            E::KeyUpdateLength(_)
            | E::AlertLength(_)
            | E::WarningAlert(_)
            | E::HandshakeTooLong(_)
            | E::TicketFormat => Some(AlertDescription::DecodeError),
            E::KeyUpdateValue(_) | E::AlertLevel(_) => Some(AlertDescription::IllegalParameter),
            // Our key schedule failed on a KeyUpdate.
            E::Key(_) => Some(AlertDescription::InternalError),
            // rustls closes on these with no alert (`PeerMisbehaved::TooManyKeyUpdateRequests`,
            // `TooManyWarningAlertsReceived` are returned, never sent: `common_state.rs`).
            E::TooManyKeyUpdates | E::TooManyWarningAlerts => None,
            // The peer closed, or we did, or the failure was already answered.
            E::AlertReceived(_)
            | E::Handover(_)
            | E::NotTls13(_)
            | E::NotReady
            | E::SecretsNotLogged
            | E::SecretMismatch(_)
            | E::Seal(_)
            | E::KeyUpdateDue
            | E::Closed
            | E::Failed => None,
        }
    }
}

/// What one [`TlsRecordLayer::read`] did. `consumed` bytes at the start of the buffer are
/// done with: the next call starts after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEvent {
    /// An application-data record: its content is `buf[plaintext]`, decrypted in place.
    Data {
        plaintext: Range<usize>,
        consumed: usize,
    },
    /// A record handled inside (KeyUpdate, NewSessionTicket, part of a handshake message,
    /// a user_canceled alert). After a KeyUpdate with update_requested,
    /// [`TlsRecordLayer::key_update_due`] is true.
    Handled { consumed: usize },
    /// The peer's close_notify (RFC 8446 §6.1): no more data comes; what follows is ignored.
    CloseNotify { consumed: usize },
    /// After close_notify: the bytes are ignored (RFC 8446 §6.1).
    Ignored { consumed: usize },
    /// The next record is not all there: at least `needed` more bytes.
    NeedMore { needed: usize },
}

impl ReadEvent {
    /// How many bytes at the start of the buffer this read used up.
    pub fn consumed(&self) -> usize {
        match *self {
            ReadEvent::Data { consumed, .. }
            | ReadEvent::Handled { consumed }
            | ReadEvent::CloseNotify { consumed }
            | ReadEvent::Ignored { consumed } => consumed,
            ReadEvent::NeedMore { .. } => 0,
        }
    }
}

/// What the layer did (per connection; not on the MetricsPort: the channel counts only which
/// layer it runs on, `ChannelStats::tls_path`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsRecordCounters {
    pub records_sealed: u64,
    pub records_opened: u64,
    pub key_updates_sent: u64,
    pub key_updates_received: u64,
    pub tickets_received: u64,
}

/// A TLS 1.3 connection after its handshake: records sealed and opened in place, the
/// post-handshake messages handled, the key schedule for KeyUpdate our own.
pub struct TlsRecordLayer {
    sealer: Sealer,
    opener: Opener,
    suite: Suite,
    /// The application traffic secrets now in use for sending and receiving (RFC 8446 §7.2).
    tx_secret: TrafficSecret,
    rx_secret: TrafficSecret,
    /// We are the TLS client (initiator): only a client takes NewSessionTickets.
    is_client: bool,
    /// Where we are in the peer's handshake byte stream: between messages, or inside one
    /// that spans records (a few bytes, no buffer).
    hs: HsReader,
    /// The peer asked for our KeyUpdate (RFC 8446 §4.6.3): before our next application data.
    key_update_owed: bool,
    /// KeyUpdates the peer may still send before its next application data
    /// ([`MAX_KEY_UPDATES_WITHOUT_DATA`]).
    key_updates_allowed: u8,
    /// Warning alerts the peer may still send ([`MAX_WARNING_ALERTS`]).
    warning_alerts_allowed: u8,
    sent_close: bool,
    received_close_notify: bool,
    read_failed: bool,
    counters: TlsRecordCounters,
}

/// Follows `secret` through up to `max_updates` KeyUpdates until it derives `extracted`'s
/// key and IV; the matching secret and its record key.
fn find_current_secret(
    suite: &Suite,
    secret: &TrafficSecret,
    extracted: &ConnectionTrafficSecrets,
    max_updates: u64,
) -> Result<(TrafficSecret, RecordKey), TlsRecordError> {
    let mut secret = secret.clone();
    for _ in 0..=max_updates {
        let m = secret.key_material(suite)?;
        if m.matches(extracted) {
            let key = RecordKey::from_material(suite, &m)?;
            return Ok((secret, key));
        }
        secret = secret.next(suite)?;
    }
    Err(TlsRecordError::SecretMismatch(max_updates))
}

impl TlsRecordLayer {
    /// Makes rustls put out what it owes before a handover: after a KeyUpdate with
    /// update_requested, rustls has already switched its sending key but keeps its own
    /// KeyUpdate record out of its output until the next write (`common_state.rs`
    /// `perhaps_write_key_update`), where extraction would lose it. An empty write puts it
    /// there; then take rustls's output (`write_tls`) before
    /// [`from_connection`](Self::from_connection).
    pub fn prepare_handover(conn: &mut Connection) {
        // An empty write makes no record; it cannot fail on a connection without error.
        let _ = std::io::Write::write(&mut conn.writer(), &[]);
    }

    /// Whether [`from_connection`](Self::from_connection) would take `conn` over without
    /// a misuse error: TLS 1.3 with a suite we implement, handshake finished, no TLS
    /// output waiting in rustls, both secrets logged in `log`. Checks without consuming
    /// `conn`, so a refused connection stays usable (a TLS 1.2 link stays on rustls).
    pub fn check_handover(conn: &Connection, log: &TrafficSecretLog) -> Result<(), TlsRecordError> {
        match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => {}
            Some(v) => return Err(TlsRecordError::NotTls13(v)),
            None => return Err(TlsRecordError::NotReady),
        }
        let suite = conn
            .negotiated_cipher_suite()
            .ok_or(TlsRecordError::NotReady)?;
        Suite::of(suite)?;
        if conn.is_handshaking() || conn.wants_write() {
            return Err(TlsRecordError::NotReady);
        }
        if !log.has_both() {
            return Err(TlsRecordError::SecretsNotLogged);
        }
        Ok(())
    }

    /// Whether rustls holds no input the handover would lose, at a record boundary (whole
    /// records fed): no plaintext it has not handed out (`IoState::plaintext_bytes_to_read`),
    /// and no part of a handshake message in its joiner. rustls 0.23 shows the joiner to no
    /// one (`msgs/deframer/handshake.rs` is crate-private, and `dangerous_extract_secrets`
    /// does not look at it), so the second is known from where the boundary is:
    /// `last_record_was_data` says the record just processed gave application data. rustls
    /// refuses any record other than a handshake record while it joins a message
    /// (`MessageInterleavedWithHandshakeMessage`, RFC 8446 §5.1), so after a data record the
    /// joiner is empty. After any other record (a KeyUpdate, a NewSessionTicket, a piece of
    /// one) the caller waits for a later boundary; otherwise our layer would take the rest of
    /// a message for the start of one. [`TlsRecordError::NotReady`] when not drained.
    pub fn check_drained(
        conn: &mut Connection,
        last_record_was_data: bool,
    ) -> Result<(), TlsRecordError> {
        // Processes nothing new (whole records were fed and processed): reports the state.
        let io = conn
            .process_new_packets()
            .map_err(TlsRecordError::Handover)?;
        if io.plaintext_bytes_to_read() != 0 || !last_record_was_data {
            return Err(TlsRecordError::NotReady);
        }
        Ok(())
    }

    /// Takes over a buffered rustls connection at a record boundary: rustls must hold no
    /// plaintext it has not handed out and no partial record (the caller fed it whole
    /// records and drained its reader), since both are lost. Its current keys and sequence
    /// numbers (`dangerous_extract_secrets`, which needs `enable_secret_extraction`) must be
    /// derived by the secrets in `log` after at most `max_updates` KeyUpdates per direction
    /// (the caller's bound: each KeyUpdate ends a record, RFC 8446 §5.1, so the records the
    /// peer sent after its Finished bound both directions; rustls updates its sending key
    /// only when asked), capped at [`MAX_KEY_UPDATES_BEFORE_HANDOVER`]. Call
    /// [`check_handover`](Self::check_handover) first: past it, only a key mismatch fails
    /// here ([`TlsRecordError::SecretMismatch`], also when the peer updated more often than
    /// the cap), and then the connection is gone.
    pub fn from_connection(
        conn: Connection,
        log: &TrafficSecretLog,
        max_updates: u64,
    ) -> Result<TlsRecordLayer, TlsRecordError> {
        TlsRecordLayer::check_handover(&conn, log)?;
        let suite = conn
            .negotiated_cipher_suite()
            .ok_or(TlsRecordError::NotReady)?;
        let is_client = matches!(conn, Connection::Client(_));
        let logged = log.take().ok_or(TlsRecordError::SecretsNotLogged)?;
        let extracted = conn
            .dangerous_extract_secrets()
            .map_err(TlsRecordError::Handover)?;
        let max_updates = max_updates.min(MAX_KEY_UPDATES_BEFORE_HANDOVER);
        TlsRecordLayer::from_secrets(suite, extracted, &logged, is_client, max_updates)
    }

    /// The layer from rustls's extracted keys and sequence numbers and the logged
    /// application traffic secrets (see [`from_connection`](Self::from_connection)).
    pub fn from_secrets(
        suite: SupportedCipherSuite,
        extracted: ExtractedSecrets,
        logged: &TrafficSecrets,
        is_client: bool,
        max_updates: u64,
    ) -> Result<TlsRecordLayer, TlsRecordError> {
        let suite = Suite::of(suite)?;
        let (tx0, rx0) = if is_client {
            (&logged.client, &logged.server)
        } else {
            (&logged.server, &logged.client)
        };
        let (tx_seq, tx) = &extracted.tx;
        let (rx_seq, rx) = &extracted.rx;
        let (tx_secret, tx_key) = find_current_secret(&suite, tx0, tx, max_updates)?;
        let (rx_secret, rx_key) = find_current_secret(&suite, rx0, rx, max_updates)?;
        Ok(TlsRecordLayer {
            sealer: Sealer::with_key(tx_key, *tx_seq, suite.confidentiality_limit),
            opener: Opener {
                key: rx_key,
                seq: *rx_seq,
            },
            suite,
            tx_secret,
            rx_secret,
            is_client,
            hs: HsReader::Aligned,
            key_update_owed: false,
            key_updates_allowed: MAX_KEY_UPDATES_WITHOUT_DATA,
            warning_alerts_allowed: MAX_WARNING_ALERTS,
            sent_close: false,
            received_close_notify: false,
            read_failed: false,
            counters: TlsRecordCounters::default(),
        })
    }

    /// The negotiated suite.
    pub fn cipher_suite(&self) -> CipherSuite {
        self.suite.suite
    }

    pub fn counters(&self) -> TlsRecordCounters {
        self.counters
    }

    /// Whether [`TlsRecordLayer::seal_key_update`] must come before more application data:
    /// the peer asked for it, or our key reached its record limit (RFC 8446 §4.6.3, §5.5).
    pub fn key_update_due(&self) -> bool {
        self.key_update_owed || self.sealer.key_update_due()
    }

    /// Whether the peer's close_notify came.
    pub fn peer_closed(&self) -> bool {
        self.received_close_notify
    }

    /// Seals one application-data record in place (the layout of [`Sealer::seal`]).
    pub fn seal_app_data(
        &mut self,
        record: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, TlsRecordError> {
        if self.sent_close {
            return Err(TlsRecordError::Closed);
        }
        if self.key_update_due() {
            return Err(TlsRecordError::KeyUpdateDue);
        }
        let n = self
            .sealer
            .seal(ContentType::ApplicationData, record, plaintext_len)?;
        self.counters.records_sealed += 1;
        Ok(n)
    }

    /// Writes our KeyUpdate at the start of `out` ([`KEY_UPDATE_RECORD_LEN`] bytes) under
    /// the current key, then switches to the next one (RFC 8446 §4.6.3). With
    /// `request_update`, the peer must answer with its own.
    pub fn seal_key_update(
        &mut self,
        out: &mut [u8],
        request_update: bool,
    ) -> Result<usize, TlsRecordError> {
        if self.sent_close {
            return Err(TlsRecordError::Closed);
        }
        if out.len() < KEY_UPDATE_RECORD_LEN {
            return Err(SealError::BufferTooShort {
                have: out.len(),
                need: KEY_UPDATE_RECORD_LEN,
            }
            .into());
        }
        out[HEADER_LEN..HEADER_LEN + 5].copy_from_slice(&[
            HS_KEY_UPDATE,
            0,
            0,
            1,
            u8::from(request_update),
        ]);
        // The next secret first, so a failure leaves nothing sealed under the old key.
        let next = self.tx_secret.next(&self.suite)?;
        let key = RecordKey::from_material(&self.suite, &next.key_material(&self.suite)?)?;
        let n = self.sealer.seal(ContentType::Handshake, out, 5)?;
        self.sealer.rekey(key);
        self.tx_secret = next;
        self.key_update_owed = false;
        self.counters.records_sealed += 1;
        self.counters.key_updates_sent += 1;
        Ok(n)
    }

    /// Writes close_notify at the start of `out` ([`ALERT_RECORD_LEN`] bytes); nothing may
    /// be sent after it (RFC 8446 §6.1).
    pub fn seal_close_notify(&mut self, out: &mut [u8]) -> Result<usize, TlsRecordError> {
        self.seal_alert(out, ALERT_WARNING, AlertDescription::CloseNotify)
    }

    /// Writes a fatal alert at the start of `out` ([`ALERT_RECORD_LEN`] bytes), typically
    /// [`TlsRecordError::alert`] of a failure; nothing may be sent after it.
    pub fn seal_fatal_alert(
        &mut self,
        out: &mut [u8],
        description: AlertDescription,
    ) -> Result<usize, TlsRecordError> {
        self.seal_alert(out, ALERT_FATAL, description)
    }

    fn seal_alert(
        &mut self,
        out: &mut [u8],
        level: u8,
        description: AlertDescription,
    ) -> Result<usize, TlsRecordError> {
        if self.sent_close {
            return Err(TlsRecordError::Closed);
        }
        if out.len() < ALERT_RECORD_LEN {
            return Err(SealError::BufferTooShort {
                have: out.len(),
                need: ALERT_RECORD_LEN,
            }
            .into());
        }
        out[HEADER_LEN] = level;
        out[HEADER_LEN + 1] = u8::from(description);
        let n = self.sealer.seal(ContentType::Alert, out, 2)?;
        self.sent_close = true;
        self.counters.records_sealed += 1;
        Ok(n)
    }

    /// Reads the record at the start of `buf` (the receive buffer), in place. Any error is
    /// final: later reads return [`TlsRecordError::Failed`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<ReadEvent, TlsRecordError> {
        if self.read_failed {
            return Err(TlsRecordError::Failed);
        }
        if self.received_close_notify {
            return Ok(ReadEvent::Ignored {
                consumed: buf.len(),
            });
        }
        let r = self.read_record(buf);
        if r.is_err() {
            self.read_failed = true;
        }
        r
    }

    /// Reads a record whose header was received apart from its body (at the end of an
    /// earlier receive buffer) with the body at the start of `body`, in place
    /// ([`Opener::open_split`]); the event's ranges and `consumed` count from `body`'s
    /// start. Any error is final, as [`TlsRecordLayer::read`].
    pub fn read_split(
        &mut self,
        header: [u8; HEADER_LEN],
        body: &mut [u8],
    ) -> Result<ReadEvent, TlsRecordError> {
        if self.read_failed {
            return Err(TlsRecordError::Failed);
        }
        if self.received_close_notify {
            return Ok(ReadEvent::Ignored {
                consumed: body.len(),
            });
        }
        let r = match self.opener.open_split(header, body) {
            Ok(opened) => self.on_opened(opened, body),
            Err(e) => Err(e.into()),
        };
        if r.is_err() {
            self.read_failed = true;
        }
        r
    }

    fn read_record(&mut self, buf: &mut [u8]) -> Result<ReadEvent, TlsRecordError> {
        let opened = self.opener.open(buf)?;
        self.on_opened(opened, buf)
    }

    /// What an opened record means; its ranges refer to `buf`.
    fn on_opened(&mut self, opened: Opened, buf: &[u8]) -> Result<ReadEvent, TlsRecordError> {
        let rec = match opened {
            Opened::Incomplete { needed } => return Ok(ReadEvent::NeedMore { needed }),
            Opened::Record(rec) => rec,
        };
        self.counters.records_opened += 1;
        let consumed = rec.record_len;
        let content = &buf[rec.plaintext.clone()];
        // Handshake messages must not be interleaved with other records (RFC 8446 §5.1).
        if rec.content_type != ContentType::Handshake && !self.hs.is_aligned() {
            return Err(TlsRecordError::Interleaved(rec.content_type));
        }
        match rec.content_type {
            ContentType::ApplicationData => {
                // As rustls: application data (even empty) renews the KeyUpdate allowance.
                self.key_updates_allowed = MAX_KEY_UPDATES_WITHOUT_DATA;
                Ok(ReadEvent::Data {
                    plaintext: rec.plaintext,
                    consumed,
                })
            }
            ContentType::Alert => self.on_alert(content, consumed),
            ContentType::Handshake => {
                self.on_handshake(content)?;
                Ok(ReadEvent::Handled { consumed })
            }
        }
    }

    /// An alert (RFC 8446 §6): close_notify ends the peer's data, user_canceled is ignored
    /// (as rustls does), any other is the end of the connection.
    fn on_alert(&mut self, alert: &[u8], consumed: usize) -> Result<ReadEvent, TlsRecordError> {
        if alert.is_empty() {
            return Err(TlsRecordError::EmptyAlert);
        }
        let &[level, description] = alert else {
            return Err(TlsRecordError::AlertLength(alert.len()));
        };
        let description = AlertDescription::from(description);
        if level != ALERT_WARNING && level != ALERT_FATAL {
            return Err(TlsRecordError::AlertLevel(level));
        }
        if description == AlertDescription::CloseNotify {
            self.received_close_notify = true;
            return Ok(ReadEvent::CloseNotify { consumed });
        }
        if level == ALERT_WARNING {
            // Counted before the description is judged, as rustls does.
            self.warning_alerts_allowed = self
                .warning_alerts_allowed
                .checked_sub(1)
                .ok_or(TlsRecordError::TooManyWarningAlerts)?;
            if description == AlertDescription::UserCanceled {
                return Ok(ReadEvent::Handled { consumed });
            }
            return Err(TlsRecordError::WarningAlert(description));
        }
        Err(TlsRecordError::AlertReceived(description))
    }

    /// The content of one handshake record, read as a stream of handshake messages that
    /// may span records (RFC 8446 §5.1): each message is judged by its 4-byte header as
    /// soon as that is in, then its body is taken as it comes, without a gather buffer.
    fn on_handshake(&mut self, mut content: &[u8]) -> Result<(), TlsRecordError> {
        if content.is_empty() {
            return Err(TlsRecordError::EmptyHandshake);
        }
        while let Some((&first, rest)) = content.split_first() {
            match &mut self.hs {
                HsReader::Aligned => {
                    self.hs = HsReader::Header {
                        bytes: [first, 0, 0, 0],
                        have: 1,
                    };
                    content = rest;
                }
                HsReader::Header { bytes, have } => {
                    let n = (4 - *have).min(content.len());
                    bytes[*have..*have + n].copy_from_slice(&content[..n]);
                    *have += n;
                    content = &content[n..];
                    if *have == 4 {
                        let [typ, l0, l1, l2] = *bytes;
                        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                        self.hs = self.judge_header(typ, len)?;
                    }
                }
                HsReader::KeyUpdate => {
                    // A key change must end its record (RFC 8446 §5.1).
                    if !rest.is_empty() {
                        return Err(TlsRecordError::KeyUpdateNotLast);
                    }
                    self.hs = HsReader::Aligned;
                    content = rest;
                    self.on_key_update(first)?;
                }
                HsReader::Ticket(ticket) => {
                    let n = ticket.skip(content)?;
                    content = &content[n..];
                    if ticket.is_done() {
                        self.hs = HsReader::Aligned;
                        self.counters.tickets_received += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Judges a post-handshake message by its header, before any of its body is taken:
    /// only a KeyUpdate (body 1 byte) is allowed, and a NewSessionTicket (body at most
    /// [`MAX_HANDSHAKE_MESSAGE_LEN`]) to a client. As rustls: a length over its limit is a
    /// decode_error whatever the type (`msgs/deframer/handshake.rs`), a message not
    /// expected now an unexpected_message, a KeyUpdate that is not 1 byte a decode_error.
    fn judge_header(&self, typ: u8, len: usize) -> Result<HsReader, TlsRecordError> {
        if len > MAX_HANDSHAKE_MESSAGE_LEN {
            return Err(TlsRecordError::HandshakeTooLong(len));
        }
        match typ {
            HS_KEY_UPDATE if len == 1 => Ok(HsReader::KeyUpdate),
            HS_KEY_UPDATE => Err(TlsRecordError::KeyUpdateLength(len)),
            // Checked for its framing and dropped: Fors never resumes a session (C tor does
            // not either; `channel::tls` turns resumption off), and Fors's configs do not
            // ask for tickets, but a server may send them anyway.
            // An empty body cannot hold a ticket's fields; refused now, not at the next byte.
            HS_NEW_SESSION_TICKET if self.is_client && len == 0 => {
                Err(TlsRecordError::TicketFormat)
            }
            HS_NEW_SESSION_TICKET if self.is_client => Ok(HsReader::Ticket(TicketSkip::new(len))),
            HS_NEW_SESSION_TICKET => Err(TlsRecordError::TicketToServer),
            other => Err(TlsRecordError::UnexpectedHandshake(other)),
        }
    }

    /// The peer's KeyUpdate (RFC 8446 §4.6.3): the next read key, and ours owed if asked.
    fn on_key_update(&mut self, request: u8) -> Result<(), TlsRecordError> {
        // Counted before request_update is judged, as rustls does (`should_update_key`).
        self.key_updates_allowed = self
            .key_updates_allowed
            .checked_sub(1)
            .ok_or(TlsRecordError::TooManyKeyUpdates)?;
        if request > 1 {
            return Err(TlsRecordError::KeyUpdateValue(request));
        }
        let next = self.rx_secret.next(&self.suite)?;
        let m = next.key_material(&self.suite)?;
        self.opener
            .rekey(RecordKey::from_material(&self.suite, &m)?);
        self.rx_secret = next;
        self.counters.key_updates_received += 1;
        if request == 1 {
            self.key_update_owed = true;
        }
        Ok(())
    }
}

/// Where the reader is in the peer's post-handshake handshake messages (RFC 8446 §4.6),
/// which may span records (§5.1). Fixed size: nothing of a message is gathered but its
/// header and a KeyUpdate's byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HsReader {
    /// Between messages.
    Aligned,
    /// The first `have` (1..=3) bytes of a message header (type, uint24 length).
    Header { bytes: [u8; 4], have: usize },
    /// A KeyUpdate's header is in; its one byte (request_update) comes next.
    KeyUpdate,
    /// Inside a NewSessionTicket, checked and dropped as it comes.
    Ticket(TicketSkip),
}

impl HsReader {
    fn is_aligned(&self) -> bool {
        matches!(self, HsReader::Aligned)
    }
}

/// The fields of a NewSessionTicket body (RFC 8446 §4.6.1), in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TicketField {
    /// ticket_lifetime (4) and ticket_age_add (4).
    Fixed,
    /// The 1-byte length of ticket_nonce<0..255>.
    NonceLen,
    Nonce,
    /// The 2-byte length of ticket<1..2^16-1>.
    TicketLen,
    Ticket,
    /// The 2-byte length of extensions<0..2^16-2>.
    ExtensionsLen,
    Extensions,
    /// All fields read: no byte may follow.
    Done,
}

/// A NewSessionTicket body read as a stream: each field's framing checked as its bytes
/// arrive, the bytes themselves dropped (Fors never resumes). O(1) state, no buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TicketSkip {
    /// Bytes of the body not yet seen (its length from the message header).
    body_left: usize,
    field: TicketField,
    /// Bytes left of the current field (of a length prefix: of the prefix).
    field_left: usize,
    /// The length prefix read so far.
    prefix: usize,
}

impl TicketSkip {
    fn new(body_len: usize) -> TicketSkip {
        TicketSkip {
            body_left: body_len,
            field: TicketField::Fixed,
            field_left: 8,
            prefix: 0,
        }
    }

    /// Takes the start of `bytes` that belongs to this body; returns how many it took.
    fn skip(&mut self, bytes: &[u8]) -> Result<usize, TlsRecordError> {
        let take = bytes.len().min(self.body_left);
        let mut at = 0;
        while at < take {
            match self.field {
                TicketField::NonceLen | TicketField::TicketLen | TicketField::ExtensionsLen => {
                    self.prefix = self.prefix << 8 | usize::from(bytes[at]);
                    self.field_left -= 1;
                    at += 1;
                }
                TicketField::Done => return Err(TlsRecordError::TicketFormat),
                _ => {
                    let n = self.field_left.min(take - at);
                    self.field_left -= n;
                    at += n;
                }
            }
            self.next_fields()?;
        }
        self.body_left -= take;
        if self.body_left == 0 && self.field != TicketField::Done {
            return Err(TlsRecordError::TicketFormat);
        }
        Ok(take)
    }

    /// Moves past every field that is complete (a zero-length one at once).
    fn next_fields(&mut self) -> Result<(), TlsRecordError> {
        while self.field_left == 0 && self.field != TicketField::Done {
            let (field, left) = match self.field {
                TicketField::Fixed => (TicketField::NonceLen, 1),
                TicketField::NonceLen => (TicketField::Nonce, self.prefix),
                TicketField::Nonce => (TicketField::TicketLen, 2),
                TicketField::TicketLen if self.prefix == 0 => {
                    return Err(TlsRecordError::TicketFormat);
                }
                TicketField::TicketLen => (TicketField::Ticket, self.prefix),
                TicketField::Ticket => (TicketField::ExtensionsLen, 2),
                TicketField::ExtensionsLen => (TicketField::Extensions, self.prefix),
                TicketField::Extensions | TicketField::Done => (TicketField::Done, 0),
            };
            self.field = field;
            self.field_left = left;
            self.prefix = 0;
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.body_left == 0
    }
}

/// Checks a whole NewSessionTicket body's framing as [`TicketSkip`] does (tests).
#[cfg(test)]
fn check_new_session_ticket(body: &[u8]) -> Result<(), TlsRecordError> {
    let mut t = TicketSkip::new(body.len());
    if body.is_empty() {
        return Err(TlsRecordError::TicketFormat);
    }
    t.skip(body).map(|_| ())
}

/// In-memory handshakes between this layer and a rustls peer, for the tests and
/// `benches/tls_record.rs` (no sockets, no clocks; rustls draws its own handshake
/// randomness).
#[doc(hidden)]
pub mod testing {
    use std::io::Read;
    use std::sync::Arc;

    use rand_core::{CryptoRng, RngCore};
    use rsa::pkcs8::EncodePrivateKey;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

    use super::{
        with_traffic_secret_log_client, with_traffic_secret_log_server, TlsRecordLayer,
        TrafficSecretLog, HEADER_LEN, MAX_PLAINTEXT_LEN, SEAL_TRAILER_LEN,
    };
    use crate::keys::{rsa as tor_rsa, x509};

    /// A self-signed RSA-2048 link certificate and its PKCS#8 key, as a responder presents
    /// (the Tor identities are not involved at the TLS layer).
    pub fn link_credentials<R: RngCore + CryptoRng>(rng: &mut R) -> (Vec<u8>, Vec<u8>) {
        let key = tor_rsa::generate(rng, tor_rsa::LINK_KEY_BITS).expect("RSA key");
        let validity = x509::Validity {
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
        };
        let cert = x509::create_certificate(
            rng,
            &key.to_public_key(),
            "www.tlsrecord.net",
            &key,
            "www.tlsrecord.com",
            validity,
        )
        .expect("certificate");
        let pkcs8 = key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec();
        (cert, pkcs8)
    }

    /// The ring provider with only `suite`: forces a peer to that suite.
    pub fn provider_with_suite(suite: rustls::SupportedCipherSuite) -> Arc<CryptoProvider> {
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = vec![suite];
        Arc::new(p)
    }

    /// The SNI our tests' initiators send.
    pub fn sni() -> ServerName<'static> {
        ServerName::try_from("www.tlsrecord.com").expect("DNS name")
    }

    /// Feeds `bytes` (records) to the rustls peer and returns the plaintext it read.
    pub fn peer_read(peer: &mut Connection, mut bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut plain = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            loop {
                match peer.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("peer read: {e}")),
                }
            }
            if bytes.is_empty() {
                return Ok(plain);
            }
            peer.read_tls(&mut bytes)
                .map_err(|e| format!("peer read_tls: {e}"))?;
            peer.process_new_packets()
                .map_err(|e| format!("peer: {e}"))?;
        }
    }

    /// Everything the rustls peer wants to send.
    pub fn peer_output(peer: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while peer.wants_write() {
            if peer.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    /// The peer writes `data` (its writer cuts records of at most 2^14 bytes) and returns
    /// the records.
    pub fn peer_write(peer: &mut Connection, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        peer.writer().write_all(data).expect("peer write");
        peer_output(peer)
    }

    /// Seals `data` as our application-data records (at most 2^14 bytes each) into one
    /// buffer.
    pub fn seal_records(layer: &mut TlsRecordLayer, data: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for piece in data.chunks(MAX_PLAINTEXT_LEN) {
            let at = out.len();
            out.resize(at + HEADER_LEN + piece.len() + SEAL_TRAILER_LEN, 0);
            out[at + HEADER_LEN..at + HEADER_LEN + piece.len()].copy_from_slice(piece);
            let n = layer
                .seal_app_data(&mut out[at..], piece.len())
                .map_err(|e| e.to_string())?;
            out.truncate(at + n);
        }
        Ok(out)
    }

    /// Runs a TLS handshake between `ours` (buffered, as a channel's) and the rustls
    /// `peer` in memory, as the channel would: our output to the peer, the peer's output to
    /// us, until our handshake is done and we have nothing left to send. The peer writes
    /// `peer_data` as soon as its own handshake is done (so it can arrive with its last
    /// flight); what rustls decrypts of it goes to `plain`. What the peer sends after that
    /// (session tickets) is left in it for the record layer.
    fn drive(
        ours: &mut Connection,
        peer: &mut Connection,
        peer_data: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut peer_data_sent = peer_data.is_empty();
        for _ in 0..64 {
            let out = peer_output(ours);
            peer_read(peer, &out)?;
            if !peer_data_sent && !peer.is_handshaking() {
                std::io::Write::write_all(&mut peer.writer(), peer_data)
                    .map_err(|e| format!("peer write: {e}"))?;
                peer_data_sent = true;
            }
            if !ours.is_handshaking() && !ours.wants_write() {
                return Ok(());
            }
            let more = peer_output(peer);
            if more.is_empty() {
                return Err("handshake stalled: the peer has nothing to send".into());
            }
            plain.extend(peer_read(ours, &more)?);
        }
        Err("handshake did not finish in 64 steps".into())
    }

    /// A handshake with us as the responder on a copy of `ours` with a
    /// [`TrafficSecretLog`](super::TrafficSecretLog), and a rustls initiator; returns our
    /// record layer and the peer.
    pub fn handshake_as_server(
        ours: Arc<ServerConfig>,
        peer: Arc<ClientConfig>,
    ) -> Result<(TlsRecordLayer, Connection), String> {
        let (layer, peer, _) = handshake_as_server_with_data(ours, peer, &[])?;
        Ok((layer, peer))
    }

    /// As [`handshake_as_server`], the initiator sending `peer_data` right behind its
    /// Finished; also returns what rustls decrypted of it before the handover.
    pub fn handshake_as_server_with_data(
        ours: Arc<ServerConfig>,
        peer: Arc<ClientConfig>,
        peer_data: &[u8],
    ) -> Result<(TlsRecordLayer, Connection, Vec<u8>), String> {
        let (cfg, log) = with_traffic_secret_log_server(&ours);
        let mut conn = Connection::Server(ServerConnection::new(cfg).map_err(|e| e.to_string())?);
        let mut peer =
            Connection::Client(ClientConnection::new(peer, sni()).map_err(|e| e.to_string())?);
        let mut plain = Vec::new();
        drive(&mut conn, &mut peer, peer_data, &mut plain)?;
        let layer = TlsRecordLayer::from_connection(conn, &log, 0).map_err(|e| e.to_string())?;
        if peer.is_handshaking() {
            return Err("peer still handshaking".into());
        }
        Ok((layer, peer, plain))
    }

    /// A handshake with us as the initiator on a copy of `ours` with a
    /// [`TrafficSecretLog`](super::TrafficSecretLog), and a rustls responder.
    pub fn handshake_as_client(
        ours: Arc<ClientConfig>,
        peer: Arc<ServerConfig>,
    ) -> Result<(TlsRecordLayer, Connection), String> {
        let (conn, peer) = handshake_client_conn(ours, peer)?;
        let (conn, log) = conn;
        let layer = TlsRecordLayer::from_connection(conn, &log, 0).map_err(|e| e.to_string())?;
        Ok((layer, peer))
    }

    /// Our initiator's buffered connection after the handshake, not yet taken over.
    #[allow(clippy::type_complexity)]
    pub fn handshake_client_conn(
        ours: Arc<ClientConfig>,
        peer: Arc<ServerConfig>,
    ) -> Result<((Connection, Arc<TrafficSecretLog>), Connection), String> {
        let (cfg, log) = with_traffic_secret_log_client(&ours);
        let mut conn =
            Connection::Client(ClientConnection::new(cfg, sni()).map_err(|e| e.to_string())?);
        let mut peer = Connection::Server(ServerConnection::new(peer).map_err(|e| e.to_string())?);
        let mut plain = Vec::new();
        drive(&mut conn, &mut peer, &[], &mut plain)?;
        if !plain.is_empty() {
            return Err("the responder sent data before our Finished".into());
        }
        Ok(((conn, log), peer))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    use rustls::pki_types::CertificateDer;
    use rustls::{Connection, SupportedCipherSuite};

    use super::testing::*;
    use super::*;
    use crate::proto::channel::tls;

    fn seed(test: &str) -> u64 {
        let seed = std::env::var("FORS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::Rng::gen(&mut StdRng::from_entropy()));
        println!("{test}: seed {seed} (FORS_TEST_SEED={seed} replays it)");
        seed
    }

    fn creds() -> &'static (Vec<u8>, Vec<u8>) {
        static CREDS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
        // A fixed key: the credentials are not what these tests vary.
        CREDS.get_or_init(|| link_credentials(&mut StdRng::seed_from_u64(13)))
    }

    const SUITES: [SupportedCipherSuite; 3] = [
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];

    /// Our layer as the responder, Fors's own configs, the peer forced to `suite`.
    fn pair_server(suite: SupportedCipherSuite) -> (TlsRecordLayer, Connection) {
        let (cert, key) = creds();
        let ours = tls::server_config(tls::provider(), cert, key).expect("server config");
        let peer = tls::client_config(provider_with_suite(suite)).expect("client config");
        handshake_as_server(ours, peer).expect("handshake")
    }

    /// Our layer as the initiator, Fors's own configs, the peer forced to `suite`.
    fn pair_client(suite: SupportedCipherSuite) -> (TlsRecordLayer, Connection) {
        let (cert, key) = creds();
        let ours = tls::client_config(tls::provider()).expect("client config");
        let peer = tls::server_config(provider_with_suite(suite), cert, key).expect("config");
        handshake_as_client(ours, peer).expect("handshake")
    }

    /// Reads every whole record in `rx` through the layer; returns the application data
    /// and the other events; leaves a partial record in `rx`.
    fn read_all(layer: &mut TlsRecordLayer, rx: &mut Vec<u8>) -> (Vec<u8>, Vec<ReadEvent>) {
        let (mut data, mut events, mut off) = (Vec::new(), Vec::new(), 0);
        loop {
            let ev = layer.read(&mut rx[off..]).expect("read");
            match &ev {
                ReadEvent::Data {
                    plaintext,
                    consumed,
                } => {
                    data.extend_from_slice(&rx[off + plaintext.start..off + plaintext.end]);
                    off += consumed;
                }
                ReadEvent::NeedMore { .. } => break,
                other => {
                    off += other.consumed();
                    events.push(ev.clone());
                }
            }
            if off == rx.len() {
                break;
            }
        }
        rx.drain(..off);
        (data, events)
    }

    fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rng.fill(&mut v[..]);
        v
    }

    #[test]
    fn every_suite_both_roles_both_ways() {
        let mut rng = StdRng::seed_from_u64(seed("every_suite_both_roles_both_ways"));
        let sizes = [1usize, 2, 13, 509, 514, 4112, 16383, 16384, 16385, 40000];
        for suite in SUITES {
            for server in [true, false] {
                let (mut ours, mut peer) = if server {
                    pair_server(suite)
                } else {
                    pair_client(suite)
                };
                assert_eq!(ours.cipher_suite(), suite.suite(), "negotiated suite");
                for &n in &sizes {
                    // Ours → rustls.
                    let data = random_bytes(&mut rng, n);
                    let records = seal_records(&mut ours, &data).expect("seal");
                    assert_eq!(records.len(), n + n.div_ceil(MAX_PLAINTEXT_LEN) * 22);
                    assert_eq!(peer_read(&mut peer, &records).expect("peer"), data);
                    // rustls → ours.
                    let data = random_bytes(&mut rng, n);
                    let mut rx = peer_write(&mut peer, &data);
                    let (got, events) = read_all(&mut ours, &mut rx);
                    assert_eq!(got, data, "{suite:?} server={server} n={n}");
                    assert!(events.is_empty() && rx.is_empty());
                }
                assert_eq!(
                    ours.counters().records_sealed,
                    ours.counters().records_opened
                );
            }
        }
    }

    #[test]
    fn many_records_in_one_buffer() {
        let mut rng = StdRng::seed_from_u64(seed("many_records_in_one_buffer"));
        let (mut ours, mut peer) = pair_server(TLS13_AES_128_GCM_SHA256);
        // 64 cells, one record each, back to back in one receive buffer.
        let cells: Vec<Vec<u8>> = (0..64).map(|_| random_bytes(&mut rng, 514)).collect();
        let mut rx: Vec<u8> = cells
            .iter()
            .flat_map(|c| peer_write(&mut peer, c))
            .collect();
        assert_eq!(rx.len(), 64 * (514 + 22));
        let (got, _) = read_all(&mut ours, &mut rx);
        assert_eq!(got, cells.concat());
        // And 64 of ours in one send buffer.
        let mut tx = Vec::new();
        for c in &cells {
            tx.extend_from_slice(&seal_records(&mut ours, c).expect("seal"));
        }
        assert_eq!(peer_read(&mut peer, &tx).expect("peer"), cells.concat());
    }

    /// The peer's records, split at every byte boundary: the prefix yields the records
    /// wholly inside it and then asks for exactly what the next one lacks.
    #[test]
    fn split_at_every_byte_boundary() {
        let mut rng = StdRng::seed_from_u64(seed("split_at_every_byte_boundary"));
        let (mut ours, mut peer) = pair_client(TLS13_CHACHA20_POLY1305_SHA256);
        let sizes = [1usize, 514, 37];
        let stream_len: usize = sizes.iter().map(|n| n + 22).sum();
        for split in 0..=stream_len {
            let data: Vec<Vec<u8>> = sizes.iter().map(|&n| random_bytes(&mut rng, n)).collect();
            let stream: Vec<u8> = data.iter().flat_map(|d| peer_write(&mut peer, d)).collect();
            assert_eq!(stream.len(), stream_len);
            let mut rx = stream[..split].to_vec();
            let mut fed = split;
            let mut got = Vec::new();
            loop {
                let (d, _) = read_all(&mut ours, &mut rx);
                got.extend(d);
                if fed == stream.len() && rx.is_empty() {
                    break;
                }
                let needed = match ours.read(&mut rx).expect("read") {
                    ReadEvent::NeedMore { needed } => needed,
                    other => panic!("split {split}: {other:?}"),
                };
                assert!(
                    needed > 0 && fed + needed <= stream.len(),
                    "split {split}: needed {needed}"
                );
                rx.extend_from_slice(&stream[fed..fed + needed]);
                fed += needed;
            }
            assert_eq!(got, data.concat(), "split {split}");
        }
    }

    /// Random record sizes, cut into random pieces as receive buffers would be.
    #[test]
    fn random_split_points() {
        let mut rng = StdRng::seed_from_u64(seed("random_split_points"));
        for suite in SUITES {
            let (mut ours, mut peer) = pair_server(suite);
            for _ in 0..50 {
                let data: Vec<Vec<u8>> = (0..rng.gen_range(1..12))
                    .map(|_| {
                        let n = if rng.gen_bool(0.1) {
                            rng.gen_range(1..=MAX_PLAINTEXT_LEN)
                        } else {
                            rng.gen_range(1..600)
                        };
                        random_bytes(&mut rng, n)
                    })
                    .collect();
                let stream: Vec<u8> = data.iter().flat_map(|d| peer_write(&mut peer, d)).collect();
                let (mut rx, mut at, mut got) = (Vec::new(), 0, Vec::new());
                while at < stream.len() {
                    let n = rng.gen_range(1..=(stream.len() - at).min(5000));
                    rx.extend_from_slice(&stream[at..at + n]);
                    at += n;
                    got.extend(read_all(&mut ours, &mut rx).0);
                }
                assert!(rx.is_empty());
                assert_eq!(got, data.concat());
            }
        }
    }

    /// Records read with their header apart (`read_split`: the header from one receive
    /// buffer, the body at the start of the next) open as whole ones do, in every suite,
    /// interleaved with whole reads: the same plaintext, the same sequence numbers, and
    /// a body cut short asks for exactly what it lacks and changes nothing.
    #[test]
    fn records_read_with_their_header_apart() {
        let mut rng = StdRng::seed_from_u64(seed("records_read_with_their_header_apart"));
        for suite in SUITES {
            let (mut ours, mut peer) = pair_server(suite);
            for i in 0..40 {
                let n = if i % 3 == 0 {
                    MAX_PLAINTEXT_LEN
                } else {
                    rng.gen_range(1..3000)
                };
                let data = random_bytes(&mut rng, n);
                let mut record = peer_write(&mut peer, &data);
                assert_eq!(record.len(), HEADER_LEN + n + 17);
                if i % 2 == 1 {
                    assert_eq!(read_all(&mut ours, &mut record).0, data);
                    continue;
                }
                let header: [u8; HEADER_LEN] = record[..HEADER_LEN].try_into().unwrap();
                let mut body = record[HEADER_LEN..].to_vec();
                let short = body.len() - rng.gen_range(1..=body.len());
                let mut cut = body[..short].to_vec();
                assert_eq!(
                    ours.read_split(header, &mut cut),
                    Ok(ReadEvent::NeedMore {
                        needed: body.len() - short
                    })
                );
                // With bytes of the next record behind it, only its own are consumed.
                body.extend_from_slice(&[0x17; 9]);
                match ours.read_split(header, &mut body) {
                    Ok(ReadEvent::Data {
                        plaintext,
                        consumed,
                    }) => {
                        assert_eq!(consumed, n + 17, "{suite:?} record {i}");
                        assert_eq!(&body[plaintext], &data[..], "{suite:?} record {i}");
                    }
                    other => panic!("{suite:?} record {i}: {other:?}"),
                }
            }
            assert_eq!(ours.counters().records_opened, 40);
        }
    }

    /// A split record's header is judged before its body is waited for, is authenticated
    /// with it (every byte: the type, the ignored legacy version, the length), and a
    /// failure is final as for whole records.
    #[test]
    fn a_split_record_fails_as_a_whole_one() {
        let mut rng = StdRng::seed_from_u64(seed("a_split_record_fails_as_a_whole_one"));
        for suite in SUITES {
            let (mut ours, mut peer) = pair_server(suite);
            let data = random_bytes(&mut rng, 300);
            let record = peer_write(&mut peer, &data);
            let header: [u8; HEADER_LEN] = record[..HEADER_LEN].try_into().unwrap();
            for i in 0..HEADER_LEN {
                let mut bad = header;
                bad[i] ^= rng.gen_range(1..=255u8);
                let mut body = record[HEADER_LEN..].to_vec();
                body.extend_from_slice(&[0; 2048]);
                let got = ours.opener.open_split(bad, &mut body);
                // A changed length is judged by its value: too long or too short for any
                // record, longer than what is there (wait), or a record whose tag fails.
                let len = usize::from(u16::from_be_bytes([bad[3], bad[4]]));
                let want = match i {
                    0 => Err(OpenError::OuterType(bad[0])),
                    3 | 4 if len > MAX_CIPHERTEXT_LEN => Err(OpenError::CiphertextTooLong(len)),
                    3 | 4 if len < TAG_LEN => Err(OpenError::TooShort(len)),
                    3 | 4 if len > body.len() => Ok(Opened::Incomplete {
                        needed: len - body.len(),
                    }),
                    _ => Err(OpenError::BadRecordMac),
                };
                assert_eq!(got, want, "byte {i}");
                assert_eq!(ours.opener.seq(), 0, "a failed open leaves the sequence");
            }
            // Garbage fails with no body at all.
            let mut none = [];
            let err = ours
                .read_split([0x16, 3, 3, 0, 40], &mut none)
                .expect_err("a handshake-typed outer header");
            assert_eq!(err.alert(), Some(AlertDescription::UnexpectedMessage));
            assert_eq!(
                ours.read_split(header, &mut record[HEADER_LEN..].to_vec()),
                Err(TlsRecordError::Failed)
            );
        }
    }

    /// rustls's `refresh_traffic_keys` sends KeyUpdate(update_requested): we switch our
    /// read key, owe our own KeyUpdate before more data, and the peer reads it.
    #[test]
    fn key_update_requested_by_peer() {
        for suite in SUITES {
            let (mut ours, mut peer) = pair_server(suite);
            peer.refresh_traffic_keys().expect("refresh");
            let mut rx = peer_write(&mut peer, b"after the peer's key update");
            let (got, events) = read_all(&mut ours, &mut rx);
            assert_eq!(got, b"after the peer's key update");
            assert_eq!(
                events,
                vec![ReadEvent::Handled {
                    consumed: KEY_UPDATE_RECORD_LEN
                }]
            );
            assert!(ours.key_update_due());
            let mut buf = [0u8; 64];
            assert_eq!(
                ours.seal_app_data(&mut buf, 1),
                Err(TlsRecordError::KeyUpdateDue)
            );
            let n = ours.seal_key_update(&mut buf, false).expect("key update");
            assert_eq!(n, KEY_UPDATE_RECORD_LEN);
            let mut tx = buf[..n].to_vec();
            assert!(!ours.key_update_due());
            tx.extend(seal_records(&mut ours, b"after ours").expect("seal"));
            assert_eq!(peer_read(&mut peer, &tx).expect("peer"), b"after ours");
            // Both new keys keep working.
            let mut rx = peer_write(&mut peer, b"again");
            assert_eq!(read_all(&mut ours, &mut rx).0, b"again");
            let c = ours.counters();
            assert_eq!((c.key_updates_received, c.key_updates_sent), (1, 1));
        }
    }

    /// We ask (update_requested): rustls answers with KeyUpdate(update_not_requested),
    /// which we take without owing another.
    #[test]
    fn key_update_not_requested_from_peer() {
        let (mut ours, mut peer) = pair_client(TLS13_AES_256_GCM_SHA384);
        let mut buf = [0u8; KEY_UPDATE_RECORD_LEN];
        ours.seal_key_update(&mut buf, true).expect("key update");
        assert_eq!(peer_read(&mut peer, &buf).expect("peer"), b"");
        let mut rx = peer_write(&mut peer, b"under the peer's next key");
        let (got, events) = read_all(&mut ours, &mut rx);
        assert_eq!(got, b"under the peer's next key");
        assert_eq!(events.len(), 1, "the peer's answering KeyUpdate");
        assert!(!ours.key_update_due());
        let tx = seal_records(&mut ours, b"still ours").expect("seal");
        assert_eq!(peer_read(&mut peer, &tx).expect("peer"), b"still ours");
        assert_eq!(ours.counters().key_updates_received, 1);
    }

    #[test]
    fn close_notify_both_ways() {
        let (mut ours, mut peer) = pair_server(TLS13_AES_128_GCM_SHA256);
        peer.send_close_notify();
        let mut rx = peer_write(&mut peer, b"");
        let mut trailing = rx.clone();
        let n = rx.len();
        assert_eq!(
            ours.read(&mut rx),
            Ok(ReadEvent::CloseNotify { consumed: n })
        );
        assert!(ours.peer_closed());
        // Anything after close_notify is ignored (RFC 8446 §6.1).
        assert_eq!(
            ours.read(&mut trailing),
            Ok(ReadEvent::Ignored { consumed: n })
        );
        // We can still send until we close too.
        let tx = seal_records(&mut ours, b"last words").expect("seal");
        assert_eq!(peer_read(&mut peer, &tx).expect("peer"), b"last words");
        let mut buf = [0u8; ALERT_RECORD_LEN];
        assert_eq!(ours.seal_close_notify(&mut buf), Ok(ALERT_RECORD_LEN));
        peer_read(&mut peer, &buf).expect("peer reads our close_notify");
        let mut chunk = [0u8; 8];
        assert_eq!(
            std::io::Read::read(&mut peer.reader(), &mut chunk).expect("EOF"),
            0
        );
        assert_eq!(
            ours.seal_app_data(&mut [0u8; 64], 1),
            Err(TlsRecordError::Closed)
        );
    }

    #[test]
    fn fatal_alert_from_peer_and_ours_to_peer() {
        let (mut ours, mut peer) = pair_server(TLS13_AES_128_GCM_SHA256);
        // Our fatal alert: the peer reports it as received.
        let mut buf = [0u8; ALERT_RECORD_LEN];
        ours.seal_fatal_alert(&mut buf, AlertDescription::InternalError)
            .expect("alert");
        let err = peer_read(&mut peer, &buf).expect_err("fatal alert");
        assert!(err.contains("InternalError"), "{err}");
        // rustls's fatal alert to us: a TLS 1.3 peer sends bad_record_mac on a record it
        // cannot open.
        let (mut a, mut b) = pair_client(TLS13_AES_128_GCM_SHA256);
        let mut bad = seal_records(&mut a, b"x").expect("seal");
        bad[HEADER_LEN] ^= 1;
        assert!(peer_read(&mut b, &bad).is_err());
        let mut alert = peer_output(&mut b);
        assert_eq!(alert.len(), ALERT_RECORD_LEN);
        assert_eq!(
            a.read(&mut alert),
            Err(TlsRecordError::AlertReceived(
                AlertDescription::BadRecordMac
            ))
        );
        assert_eq!(a.read(&mut alert), Err(TlsRecordError::Failed));
    }

    /// Every byte of a record flipped: an error (or a wait for more bytes when the length
    /// grew), never a panic and never data; the untouched record then opens.
    #[test]
    fn tampered_records_fail() {
        let mut rng = StdRng::seed_from_u64(seed("tampered_records_fail"));
        for suite in SUITES {
            let (mut ours, mut peer) = pair_server(suite);
            let data = random_bytes(&mut rng, 40);
            let record = peer_write(&mut peer, &data);
            for i in 0..record.len() {
                let mut bad = record.clone();
                bad[i] ^= rng.gen_range(1..=255u8);
                match ours.opener.open(&mut bad) {
                    Err(e) => {
                        let want = match i {
                            0 => AlertDescription::UnexpectedMessage,
                            3 | 4 => e.alert(), // a new length: several outcomes
                            _ => AlertDescription::BadRecordMac,
                        };
                        assert_eq!(e.alert(), want, "byte {i}: {e}");
                    }
                    Ok(Opened::Incomplete { .. }) => assert!(i == 3 || i == 4, "byte {i}"),
                    Ok(Opened::Record(r)) => panic!("byte {i}: tampered record opened: {r:?}"),
                }
            }
            let mut rx = record.clone();
            assert_eq!(read_all(&mut ours, &mut rx).0, data);
            // Through the layer, a bad tag is final.
            let mut bad = peer_write(&mut peer, b"tail");
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            let err = ours.read(&mut bad).expect_err("bad tag");
            assert_eq!(err.alert(), Some(AlertDescription::BadRecordMac));
            assert_eq!(ours.read(&mut bad), Err(TlsRecordError::Failed));
        }
    }

    fn test_secrets(byte: u8) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: rustls::crypto::cipher::AeadKey::from([byte; 32]),
            iv: rustls::crypto::cipher::Iv::new([byte ^ 0x5a; 12]),
        }
    }

    /// Records a rustls peer never sends, made with our sealer's raw inner plaintext.
    #[test]
    fn malformed_inner_plaintext() {
        let secrets = test_secrets(7);
        let mut sealer = Sealer::new(&secrets, 0, u64::MAX).expect("sealer");
        let mut opener = Opener::new(&secrets, 0).expect("opener");
        let mut seal_raw = |inner: &[u8]| {
            let mut rec = vec![0u8; HEADER_LEN + inner.len() + TAG_LEN];
            rec[HEADER_LEN..HEADER_LEN + inner.len()].copy_from_slice(inner);
            let n = sealer.seal_inner(&mut rec, inner.len()).expect("seal");
            assert_eq!(n, rec.len());
            rec
        };
        // Padding is stripped.
        let mut rec = seal_raw(&[b'h', b'i', 23, 0, 0, 0, 0]);
        match opener.open(&mut rec).expect("open") {
            Opened::Record(r) => {
                assert_eq!(r.content_type, ContentType::ApplicationData);
                assert_eq!(&rec[r.plaintext], b"hi");
            }
            other => panic!("{other:?}"),
        }
        // Zero-length application data is allowed (RFC 8446 §5.1).
        let mut rec = seal_raw(&[23]);
        assert!(matches!(opener.open(&mut rec), Ok(Opened::Record(r)) if r.plaintext.is_empty()));
        let cases: [(Vec<u8>, OpenError); 4] = [
            (vec![0, 0, 0], OpenError::NoContentType),
            (vec![], OpenError::NoContentType),
            (vec![1, 20], OpenError::ContentType(20)),
            (vec![1, 99, 0], OpenError::ContentType(99)),
        ];
        for (inner, want) in cases {
            let mut rec = seal_raw(&inner);
            assert_eq!(opener.open(&mut rec), Err(want.clone()));
            assert_eq!(want.alert(), AlertDescription::UnexpectedMessage);
        }
        // 2^14 + 2 bytes of inner plaintext: within the ciphertext limit, over §5.4's.
        let mut inner = vec![0u8; MAX_PLAINTEXT_LEN + 2];
        inner[0] = 23;
        let mut rec = seal_raw(&inner);
        let err = opener.open(&mut rec).expect_err("oversized");
        assert_eq!(err, OpenError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 2));
        assert_eq!(err.alert(), AlertDescription::RecordOverflow);
        // A header that claims more than 2^14 + 256: refused before the body arrives.
        let mut hdr = [23, 3, 3, 0x41, 0x01];
        let err = opener.open(&mut hdr).expect_err("overflow");
        assert_eq!(err.alert(), AlertDescription::RecordOverflow);
        // Shorter than a tag.
        let mut short = [23, 3, 3, 0, 15];
        assert_eq!(opener.open(&mut short), Err(OpenError::TooShort(15)));
        // Another outer type (a plaintext alert, a change_cipher_spec).
        for t in [20u8, 21, 22, 0] {
            assert_eq!(
                opener.open(&mut [t, 3, 3, 0, 2]),
                Err(OpenError::OuterType(t))
            );
        }
    }

    #[test]
    fn sealer_limits() {
        let secrets = test_secrets(1);
        let mut sealer = Sealer::new(&secrets, 0, 10).expect("sealer");
        let mut buf = vec![0u8; MAX_RECORD_LEN + 1];
        assert_eq!(
            sealer.seal(
                ContentType::ApplicationData,
                &mut buf,
                MAX_PLAINTEXT_LEN + 1
            ),
            Err(SealError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 1))
        );
        assert_eq!(
            sealer.seal(ContentType::ApplicationData, &mut buf[..30], 14),
            Err(SealError::BufferTooShort { have: 30, need: 36 })
        );
        assert_eq!(
            sealer.seal(ContentType::ApplicationData, &mut buf, MAX_PLAINTEXT_LEN),
            Ok(HEADER_LEN + MAX_PLAINTEXT_LEN + SEAL_TRAILER_LEN)
        );
        // At the confidentiality limit: no more application data, but a KeyUpdate goes.
        let mut sealer = Sealer::new(&secrets, 10, 10).expect("sealer");
        assert!(sealer.key_update_due());
        assert_eq!(
            sealer.seal(ContentType::ApplicationData, &mut buf, 1),
            Err(SealError::KeyUpdateDue)
        );
        assert!(sealer.seal(ContentType::Handshake, &mut buf, 5).is_ok());
        // The sequence number never wraps.
        let mut sealer = Sealer::new(&secrets, u64::MAX - 1, u64::MAX).expect("sealer");
        assert!(sealer.seal(ContentType::Handshake, &mut buf, 5).is_ok());
        assert_eq!(
            sealer.seal(ContentType::Handshake, &mut buf, 5),
            Err(SealError::SequenceExhausted)
        );
        let mut opener = Opener::new(&secrets, u64::MAX).expect("opener");
        let mut rec = vec![23, 3, 3, 0, 17];
        rec.resize(22, 0);
        assert_eq!(opener.open(&mut rec), Err(OpenError::SequenceExhausted));
    }

    /// Nonce = IV XOR seq, AAD = header (RFC 8446 §5.2–5.3): our records at a sequence
    /// number open only there, and a changed header fails.
    #[test]
    fn nonce_and_aad_follow_the_sequence_number() {
        let secrets = test_secrets(3);
        let mut sealer = Sealer::new(&secrets, 5, u64::MAX).expect("sealer");
        let mut rec = vec![0u8; HEADER_LEN + 3 + SEAL_TRAILER_LEN];
        rec[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(b"abc");
        sealer
            .seal(ContentType::ApplicationData, &mut rec, 3)
            .expect("seal");
        for seq in [4u64, 6] {
            let mut r = rec.clone();
            assert_eq!(
                Opener::new(&secrets, seq).expect("opener").open(&mut r),
                Err(OpenError::BadRecordMac)
            );
        }
        let mut r = rec.clone();
        r[1] = 1; // legacy_record_version: ignored, but authenticated
        assert_eq!(
            Opener::new(&secrets, 5).expect("opener").open(&mut r),
            Err(OpenError::BadRecordMac)
        );
        let mut opener = Opener::new(&secrets, 5).expect("opener");
        assert!(matches!(opener.open(&mut rec), Ok(Opened::Record(_))));
        assert_eq!(opener.seq(), 6);
    }

    /// A rustls responder that sends session tickets: our initiator checks their framing
    /// and drops them (Fors never resumes). (Fors's own configs send and ask for none: both
    /// are turned on here.)
    #[test]
    fn new_session_tickets_are_dropped() {
        let (cert, key) = creds();
        let mut ours = ClientConfig::clone(&tls::client_config(tls::provider()).expect("config"));
        ours.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let ours = Arc::new(ours);
        let base = tls::server_config(tls::provider(), cert, key).expect("server config");
        let mut peer_cfg = ServerConfig::clone(&base);
        peer_cfg.send_tls13_tickets = 2;
        peer_cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(8);
        let (mut ours, mut peer) =
            handshake_as_client(ours, Arc::new(peer_cfg)).expect("handshake");
        // The tickets were queued after our Finished.
        let mut rx = peer_write(&mut peer, b"data after the tickets");
        let (got, events) = read_all(&mut ours, &mut rx);
        assert_eq!(got, b"data after the tickets");
        // rustls coalesces both tickets in one record (RFC 8446 §5.1 allows it).
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(ours.counters().tickets_received, 2);
        // A ticket whose lengths do not add up is a decode_error.
        for bad in [&[0u8; 7][..], &[0; 13], &[0; 14]] {
            assert_eq!(
                check_new_session_ticket(bad),
                Err(TlsRecordError::TicketFormat)
            );
        }
        let mut good = vec![0u8; 8];
        good.extend_from_slice(&[1, 9, 0, 2, 7, 7, 0, 0]);
        assert_eq!(check_new_session_ticket(&good), Ok(()));
        good.push(0);
        assert_eq!(
            check_new_session_ticket(&good),
            Err(TlsRecordError::TicketFormat)
        );
    }

    /// Handshake messages that span records are gathered; a KeyUpdate must end its record;
    /// a NewSessionTicket to a server is refused. Records made with the peer's keys.
    #[test]
    fn post_handshake_messages_framing() {
        // A layer with known keys: ours as the client of a real handshake, then the opener
        // rekeyed to secrets we also seal with.
        let (mut ours, _peer) = pair_client(TLS13_AES_128_GCM_SHA256);
        let secrets = test_secrets(9);
        ours.opener = Opener::new(&secrets, 0).expect("opener");
        let mut sealer = Sealer::new(&secrets, 0, u64::MAX).expect("sealer");
        fn seal_one(sealer: &mut Sealer, typ: ContentType, content: &[u8]) -> Vec<u8> {
            let mut rec = vec![0u8; HEADER_LEN + content.len() + SEAL_TRAILER_LEN];
            rec[HEADER_LEN..HEADER_LEN + content.len()].copy_from_slice(content);
            sealer.seal(typ, &mut rec, content.len()).expect("seal");
            rec
        }
        // user_canceled is ignored; an empty handshake record is not allowed.
        let mut r = seal_one(&mut sealer, ContentType::Alert, &[1, 90]);
        assert!(matches!(ours.read(&mut r), Ok(ReadEvent::Handled { .. })));
        // A message split over three records: first two are Handled with nothing done.
        let msg = [HS_KEY_UPDATE, 0, 0, 1, 0];
        for piece in [&msg[..2], &msg[2..3]] {
            let mut r = seal_one(&mut sealer, ContentType::Handshake, piece);
            assert!(matches!(ours.read(&mut r), Ok(ReadEvent::Handled { .. })));
        }
        assert_eq!(ours.counters().key_updates_received, 0);
        let mut r = seal_one(&mut sealer, ContentType::Handshake, &msg[3..]);
        assert!(matches!(ours.read(&mut r), Ok(ReadEvent::Handled { .. })));
        assert_eq!(ours.counters().key_updates_received, 1);
        assert!(!ours.key_update_due());

        let cases: Vec<(ContentType, Vec<u8>, TlsRecordError)> = vec![
            (
                ContentType::Handshake,
                vec![],
                TlsRecordError::EmptyHandshake,
            ),
            (
                ContentType::Handshake,
                vec![HS_KEY_UPDATE, 0, 0, 1, 0, HS_KEY_UPDATE, 0, 0, 1, 0],
                TlsRecordError::KeyUpdateNotLast,
            ),
            (
                ContentType::Handshake,
                vec![HS_KEY_UPDATE, 0, 0, 1, 2],
                TlsRecordError::KeyUpdateValue(2),
            ),
            (
                ContentType::Handshake,
                vec![HS_KEY_UPDATE, 0, 0, 2, 0, 0],
                TlsRecordError::KeyUpdateLength(2),
            ),
            (
                ContentType::Handshake,
                vec![13, 0, 0, 1, 0],
                TlsRecordError::UnexpectedHandshake(13),
            ),
            (
                ContentType::Handshake,
                vec![4, 0xff, 0xff, 0xff],
                TlsRecordError::HandshakeTooLong(0xff_ffff),
            ),
            (ContentType::Alert, vec![1], TlsRecordError::AlertLength(1)),
            (ContentType::Alert, vec![], TlsRecordError::EmptyAlert),
            (
                ContentType::Alert,
                vec![3, 0],
                TlsRecordError::AlertLevel(3),
            ),
            (
                ContentType::Alert,
                vec![1, 10],
                TlsRecordError::WarningAlert(AlertDescription::UnexpectedMessage),
            ),
            (
                ContentType::Alert,
                vec![2, 20],
                TlsRecordError::AlertReceived(AlertDescription::BadRecordMac),
            ),
        ];
        for (typ, content, want) in cases {
            let (mut ours, _peer) = pair_client(TLS13_AES_128_GCM_SHA256);
            ours.opener = Opener::new(&secrets, sealer.seq()).expect("opener");
            let mut r = seal_one(&mut sealer, typ, &content);
            assert_eq!(ours.read(&mut r), Err(want.clone()), "{content:?}");
            if content.is_empty() {
                assert_eq!(
                    want.alert(),
                    Some(AlertDescription::UnexpectedMessage),
                    "zero-length {typ:?} record (RFC 8446 §5.1)"
                );
            }
            assert!(want.alert().is_some() || matches!(want, TlsRecordError::AlertReceived(_)));
        }
        // Data inside a message that spans records: unexpected_message.
        let (mut ours, _peer) = pair_client(TLS13_AES_128_GCM_SHA256);
        ours.opener = Opener::new(&secrets, sealer.seq()).expect("opener");
        let mut r = seal_one(&mut sealer, ContentType::Handshake, &msg[..2]);
        assert!(ours.read(&mut r).is_ok());
        let mut r = seal_one(&mut sealer, ContentType::ApplicationData, b"x");
        let err = ours.read(&mut r).expect_err("interleaved");
        assert_eq!(err.alert(), Some(AlertDescription::UnexpectedMessage));
        // A ticket sent to a server.
        let (mut srv, _peer) = pair_server(TLS13_AES_128_GCM_SHA256);
        srv.opener = Opener::new(&secrets, sealer.seq()).expect("opener");
        let mut r = seal_one(&mut sealer, ContentType::Handshake, &[4, 0, 0, 1, 0]);
        assert_eq!(srv.read(&mut r), Err(TlsRecordError::TicketToServer));
    }

    fn seal_handshake(sealer: &mut Sealer, content: &[u8]) -> Vec<u8> {
        let mut rec = vec![0u8; HEADER_LEN + content.len() + SEAL_TRAILER_LEN];
        rec[HEADER_LEN..HEADER_LEN + content.len()].copy_from_slice(content);
        sealer
            .seal(ContentType::Handshake, &mut rec, content.len())
            .expect("seal");
        rec
    }

    /// A layer in role `client` whose opener takes records from the returned sealer.
    fn layer_with_known_peer(client: bool, byte: u8) -> (TlsRecordLayer, Sealer) {
        let (mut ours, _peer) = if client {
            pair_client(TLS13_AES_128_GCM_SHA256)
        } else {
            pair_server(TLS13_AES_128_GCM_SHA256)
        };
        let secrets = test_secrets(byte);
        ours.opener = Opener::new(&secrets, 0).expect("opener");
        (ours, Sealer::new(&secrets, 0, u64::MAX).expect("sealer"))
    }

    /// The review's attack: a handshake header claiming a long message, then its body in
    /// 1-byte records. A server refuses it at the header, whatever the type; a client takes
    /// a ticket's bytes one by one, counting them down with no buffer (the old gather
    /// copied the whole message so far per record: quadratic).
    #[test]
    fn long_handshake_message_in_tiny_records() {
        // Server: refused once the 4-byte header is in, even when it comes a byte a record.
        let heads: [([u8; 4], TlsRecordError); 4] = [
            (
                [HS_NEW_SESSION_TICKET, 0x02, 0x00, 0x02],
                TlsRecordError::HandshakeTooLong(0x2_0002),
            ),
            (
                [HS_NEW_SESSION_TICKET, 0, 0x10, 0],
                TlsRecordError::TicketToServer,
            ),
            ([HS_KEY_UPDATE, 0, 0, 2], TlsRecordError::KeyUpdateLength(2)),
            ([8, 0, 0, 1], TlsRecordError::UnexpectedHandshake(8)),
        ];
        for (head, want) in heads {
            let (mut srv, mut sealer) = layer_with_known_peer(false, 21);
            for b in &head[..3] {
                let mut r = seal_handshake(&mut sealer, &[*b]);
                assert!(matches!(srv.read(&mut r), Ok(ReadEvent::Handled { .. })));
            }
            let mut r = seal_handshake(&mut sealer, &head[3..]);
            assert_eq!(srv.read(&mut r), Err(want.clone()), "{head:?}");
            let alert = want.alert().expect("an alert");
            let expect = match want {
                TlsRecordError::TicketToServer | TlsRecordError::UnexpectedHandshake(_) => {
                    AlertDescription::UnexpectedMessage
                }
                _ => AlertDescription::DecodeError,
            };
            assert_eq!(alert, expect, "{head:?}");
        }
        // Client: over rustls's limit is refused at the header too.
        let (mut cli, mut sealer) = layer_with_known_peer(true, 22);
        let mut r = seal_handshake(&mut sealer, &[HS_NEW_SESSION_TICKET, 1, 0, 0]);
        assert_eq!(
            cli.read(&mut r),
            Err(TlsRecordError::HandshakeTooLong(0x1_0000))
        );

        // Client: the longest ticket, a byte a record; the state stays a few counters.
        let (mut cli, mut sealer) = layer_with_known_peer(true, 23);
        let ticket_len = MAX_HANDSHAKE_MESSAGE_LEN - 8 - 1 - 2 - 2;
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&[0]); // empty nonce
        body.extend_from_slice(&u16::try_from(ticket_len).expect("u16").to_be_bytes());
        body.resize(body.len() + ticket_len, 0xab);
        body.extend_from_slice(&[0, 0]); // no extensions
        assert_eq!(body.len(), MAX_HANDSHAKE_MESSAGE_LEN);
        let mut msg = vec![HS_NEW_SESSION_TICKET, 0, 0xff, 0xff];
        msg.extend_from_slice(&body);
        let mut rec = [0u8; HEADER_LEN + 1 + SEAL_TRAILER_LEN];
        for (i, b) in msg.iter().enumerate() {
            rec[HEADER_LEN] = *b;
            sealer
                .seal(ContentType::Handshake, &mut rec, 1)
                .expect("seal");
            assert!(matches!(cli.read(&mut rec), Ok(ReadEvent::Handled { .. })));
            if i >= 4 && i + 1 < msg.len() {
                // Counted down, nothing kept.
                match cli.hs {
                    HsReader::Ticket(t) => assert_eq!(t.body_left, msg.len() - 1 - i),
                    other => panic!("byte {i}: {other:?}"),
                }
            }
        }
        assert_eq!(cli.hs, HsReader::Aligned);
        assert_eq!(cli.counters().tickets_received, 1);
        assert!(std::mem::size_of::<HsReader>() <= 48);
        // And data after it still flows.
        let mut r = vec![0u8; HEADER_LEN + 3 + SEAL_TRAILER_LEN];
        r[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(b"abc");
        sealer
            .seal(ContentType::ApplicationData, &mut r, 3)
            .expect("seal");
        assert!(matches!(cli.read(&mut r), Ok(ReadEvent::Data { .. })));
    }

    /// A legitimate ticket (and one with a nonce and extensions) cut at every point across
    /// two or three records, and two tickets sharing a record with a split between them: each
    /// is skipped and counted, and a malformed one split the same way still fails.
    #[test]
    fn split_tickets_are_skipped() {
        let mut body = vec![0, 0, 1, 0, 1, 2, 3, 4]; // lifetime, age_add
        body.extend_from_slice(&[3, 9, 9, 9]); // nonce
        body.extend_from_slice(&[0, 5, 1, 2, 3, 4, 5]); // ticket
        body.extend_from_slice(&[0, 4, 0, 42, 0, 0]); // one empty extension
        let mut msg = vec![
            HS_NEW_SESSION_TICKET,
            0,
            0,
            u8::try_from(body.len()).expect("u8"),
        ];
        msg.extend_from_slice(&body);
        let two: Vec<u8> = [msg.clone(), msg.clone()].concat();
        for cut in 1..two.len() {
            for cut2 in [cut, (cut + 3).min(two.len() - 1)] {
                let (mut cli, mut sealer) = layer_with_known_peer(true, 24);
                let mut pieces = vec![&two[..cut]];
                if cut2 > cut {
                    pieces.push(&two[cut..cut2]);
                }
                pieces.push(&two[cut2..]);
                for p in pieces {
                    let mut r = seal_handshake(&mut sealer, p);
                    assert!(
                        matches!(cli.read(&mut r), Ok(ReadEvent::Handled { .. })),
                        "cut {cut}/{cut2}"
                    );
                }
                assert_eq!(cli.counters().tickets_received, 2, "cut {cut}/{cut2}");
                assert_eq!(cli.hs, HsReader::Aligned);
            }
        }
        // A ticket whose extensions overrun its body, split: decode_error at the overrun.
        let mut bad = msg.clone();
        let n = bad.len();
        bad[n - 5] = 9; // extensions claim 9 bytes, 4 remain
        for cut in 1..bad.len() {
            let (mut cli, mut sealer) = layer_with_known_peer(true, 25);
            let mut r = seal_handshake(&mut sealer, &bad[..cut]);
            let first = cli.read(&mut r);
            let err = match first {
                Ok(_) => {
                    let mut r = seal_handshake(&mut sealer, &bad[cut..]);
                    cli.read(&mut r).expect_err("overrun")
                }
                Err(e) => e,
            };
            assert_eq!(err, TlsRecordError::TicketFormat, "cut {cut}");
            assert_eq!(err.alert(), Some(AlertDescription::DecodeError));
        }
    }

    /// rustls's DoS limits: 32 KeyUpdates with no application data between them (data
    /// renews the allowance), 4 warning alerts over the connection's life; one more of
    /// either closes with no alert, as rustls does.
    #[test]
    fn key_update_and_warning_alert_limits() {
        let key_update = |sealer: &mut Sealer, ours: &mut TlsRecordLayer| {
            let mut r = seal_handshake(sealer, &[HS_KEY_UPDATE, 0, 0, 1, 0]);
            let got = ours.read(&mut r);
            // Our opener follows the peer's new key: the test sealer must too.
            let next = ours.rx_secret.clone();
            let m = next.key_material(&ours.suite).expect("key");
            sealer.rekey(RecordKey::from_material(&ours.suite, &m).expect("key"));
            got
        };
        for server in [true, false] {
            let (mut ours, _peer) = if server {
                pair_server(TLS13_AES_128_GCM_SHA256)
            } else {
                pair_client(TLS13_AES_128_GCM_SHA256)
            };
            // A sealer with the peer's real secret, so our key schedule can follow it.
            let suite = ours.suite;
            let m = ours.rx_secret.key_material(&suite).expect("key");
            ours.opener = Opener {
                key: RecordKey::from_material(&suite, &m).expect("key"),
                seq: 0,
            };
            let mut sealer = Sealer::with_key(
                RecordKey::from_material(&suite, &m).expect("key"),
                0,
                u64::MAX,
            );
            for round in 0..3 {
                for i in 0..MAX_KEY_UPDATES_WITHOUT_DATA {
                    let got = key_update(&mut sealer, &mut ours);
                    assert!(matches!(got, Ok(ReadEvent::Handled { .. })), "{round}/{i}");
                }
                if round < 2 {
                    // Empty application data renews the allowance.
                    let mut r = vec![0u8; HEADER_LEN + SEAL_TRAILER_LEN];
                    sealer
                        .seal(ContentType::ApplicationData, &mut r, 0)
                        .expect("seal");
                    assert!(matches!(ours.read(&mut r), Ok(ReadEvent::Data { .. })));
                }
            }
            let err = key_update(&mut sealer, &mut ours).expect_err("33rd");
            assert_eq!(err, TlsRecordError::TooManyKeyUpdates);
            assert_eq!(err.alert(), None);
        }
        // Warning alerts: four user_canceled pass, even with data between, the fifth fails.
        let (mut ours, mut sealer) = layer_with_known_peer(true, 26);
        for _ in 0..MAX_WARNING_ALERTS {
            let mut r = vec![0u8; HEADER_LEN + 2 + SEAL_TRAILER_LEN];
            r[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&[ALERT_WARNING, 90]);
            sealer.seal(ContentType::Alert, &mut r, 2).expect("seal");
            assert!(matches!(ours.read(&mut r), Ok(ReadEvent::Handled { .. })));
            let mut d = vec![0u8; HEADER_LEN + 1 + SEAL_TRAILER_LEN];
            sealer
                .seal(ContentType::ApplicationData, &mut d, 1)
                .expect("seal");
            assert!(matches!(ours.read(&mut d), Ok(ReadEvent::Data { .. })));
        }
        let mut r = vec![0u8; HEADER_LEN + 2 + SEAL_TRAILER_LEN];
        r[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&[ALERT_WARNING, 90]);
        sealer.seal(ContentType::Alert, &mut r, 2).expect("seal");
        let err = ours.read(&mut r).expect_err("fifth warning");
        assert_eq!(err, TlsRecordError::TooManyWarningAlerts);
        assert_eq!(err.alert(), None);
    }

    /// The initiator's first data right behind its Finished, in the same read: rustls
    /// decrypts it before the handover (read through `ReadTraffic`), and the layer goes on
    /// at the next sequence number.
    #[test]
    fn handover_after_data_in_the_last_flight() {
        let (cert, key) = creds();
        let ours = tls::server_config(tls::provider(), cert, key).expect("server config");
        let peer = tls::client_config(tls::provider()).expect("client config");
        let first = [7u8; 514 * 3];
        let (mut ours, mut peer, early) =
            handshake_as_server_with_data(ours, peer, &first).expect("handshake");
        assert_eq!(early, first);
        assert!(ours.opener.seq() > 0, "rustls opened the first records");
        let mut rx = peer_write(&mut peer, b"the next records are ours to open");
        assert_eq!(
            read_all(&mut ours, &mut rx).0,
            b"the next records are ours to open"
        );
        let tx = seal_records(&mut ours, b"and to seal").expect("seal");
        assert_eq!(peer_read(&mut peer, &tx).expect("peer"), b"and to seal");
    }

    /// A TLS 1.2 link (C tor still accepts 1.2) cannot be handed over.
    #[test]
    fn tls12_is_refused() {
        let (cert, key) = creds();
        let ours = tls::client_config(tls::provider()).expect("client config");
        let peer = ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.clone().into()),
            )
            .expect("cert");
        let err = handshake_as_client(ours, Arc::new(peer))
            .err()
            .expect("TLS 1.2 refused");
        assert!(err.contains("TLS 1.3 only"), "{err}");
    }

    /// A connection whose config has no [`TrafficSecretLog`] is refused before it is
    /// consumed.
    #[test]
    fn handover_needs_the_secret_log() {
        let (cert, key) = creds();
        let ours = tls::client_config(tls::provider()).expect("client config");
        let peer = tls::server_config(tls::provider(), cert, key).expect("server config");
        let mut conn =
            Connection::Client(rustls::ClientConnection::new(ours, sni()).expect("client"));
        let mut server = Connection::Server(rustls::ServerConnection::new(peer).expect("server"));
        for _ in 0..8 {
            let c = peer_output(&mut conn);
            peer_read(&mut server, &c).expect("server");
            let s = peer_output(&mut server);
            peer_read(&mut conn, &s).expect("client");
        }
        assert!(!conn.is_handshaking());
        let log = TrafficSecretLog::default();
        assert_eq!(
            TlsRecordLayer::check_handover(&conn, &log),
            Err(TlsRecordError::SecretsNotLogged)
        );
    }

    /// The logged secret_0 derives the keys rustls extracts for every suite and both roles
    /// (RFC 8446 §7.3), and the secret log keeps nothing but the two traffic secrets.
    #[test]
    fn logged_secrets_derive_rustls_keys() {
        let (cert, key) = creds();
        for suite in SUITES {
            let ours = tls::client_config(tls::provider()).expect("client config");
            let peer = tls::server_config(provider_with_suite(suite), cert, key).expect("cfg");
            let ((conn, log), _peer) = handshake_client_conn(ours, peer).expect("handshake");
            assert!(!log.will_log("CLIENT_HANDSHAKE_TRAFFIC_SECRET"));
            assert!(!log.will_log("EXPORTER_SECRET"));
            let logged = log.take().expect("both secrets logged");
            assert_eq!(
                logged.client.len,
                Suite::of(suite).expect("suite").hash_len()
            );
            let extracted = conn.dangerous_extract_secrets().expect("extract");
            // With no KeyUpdate, secret_0 is current: no update may be needed.
            let layer = TlsRecordLayer::from_secrets(suite, extracted, &logged, true, 0);
            assert!(layer.is_ok(), "{suite:?}");
        }
    }

    /// Seals `content` as one record of `typ` with the peer's `sealer`.
    fn seal_one(sealer: &mut Sealer, typ: ContentType, content: &[u8]) -> Vec<u8> {
        let mut rec = vec![0u8; HEADER_LEN + content.len() + SEAL_TRAILER_LEN];
        rec[HEADER_LEN..HEADER_LEN + content.len()].copy_from_slice(content);
        let n = sealer.seal(typ, &mut rec, content.len()).expect("seal");
        rec.truncate(n);
        rec
    }

    /// A NewSessionTicket the peer splits over two records reaches rustls before the
    /// handover: rustls then holds its first part in its joiner, which no API shows and
    /// which the handover would lose (our layer would read the second part as a message of
    /// its own). `check_drained` allows the handover only after a record that gave data
    /// (after which rustls can join nothing, RFC 8446 §5.1), and only once that data is read.
    #[test]
    fn handover_waits_for_a_split_handshake_message_and_undrained_plaintext() {
        let (cert, key) = creds();
        let ours = tls::client_config(tls::provider()).expect("client config");
        let mut peer_cfg = (*tls::server_config(tls::provider(), cert, key).expect("cfg")).clone();
        peer_cfg.enable_secret_extraction = true;
        let ((mut conn, log), peer) =
            handshake_client_conn(ours, Arc::new(peer_cfg)).expect("handshake");
        let (seq, secrets) = peer.dangerous_extract_secrets().expect("peer secrets").tx;
        let mut peer_tx = Sealer::new(&secrets, seq, u64::MAX).expect("sealer");
        // NewSessionTicket (RFC 8446 §4.6.1): lifetime 60 s, age_add 1, a 1-byte nonce, a
        // 4-byte ticket, no extensions.
        let body = [0, 0, 0, 60, 0, 0, 0, 1, 1, 0x42, 0, 4, 1, 2, 3, 4, 0, 0];
        let mut nst = vec![4, 0, 0, body.len() as u8];
        nst.extend_from_slice(&body);
        let first = seal_one(&mut peer_tx, ContentType::Handshake, &nst[..10]);
        assert!(peer_read(&mut conn, &first).expect("first part").is_empty());
        // What a caller that tracked no record types would ask: rustls reports nothing held.
        assert_eq!(TlsRecordLayer::check_drained(&mut conn, true), Ok(()));
        // The last record gave no data: rustls may be joining a message.
        assert_eq!(
            TlsRecordLayer::check_drained(&mut conn, false),
            Err(TlsRecordError::NotReady)
        );
        let rest = seal_one(&mut peer_tx, ContentType::Handshake, &nst[10..]);
        assert!(peer_read(&mut conn, &rest).expect("rest").is_empty());
        assert_eq!(
            TlsRecordLayer::check_drained(&mut conn, false),
            Err(TlsRecordError::NotReady)
        );
        // A data record: rustls joins nothing now, but holds its plaintext until it is read.
        let data = seal_one(&mut peer_tx, ContentType::ApplicationData, b"cells");
        let mut rd = &data[..];
        conn.read_tls(&mut rd).expect("read_tls");
        conn.process_new_packets().expect("process");
        assert_eq!(
            TlsRecordLayer::check_drained(&mut conn, true),
            Err(TlsRecordError::NotReady)
        );
        assert_eq!(peer_read(&mut conn, &[]).expect("drain"), b"cells");
        assert_eq!(TlsRecordLayer::check_drained(&mut conn, true), Ok(()));
        // The handover then reads on where rustls stopped.
        let mut layer = TlsRecordLayer::from_connection(conn, &log, 0).expect("handover");
        let mut rx = seal_one(&mut peer_tx, ContentType::ApplicationData, b"after");
        assert_eq!(read_all(&mut layer, &mut rx).0, b"after");
    }

    /// The peer updates its keys (asking for ours) before the handover, while rustls still
    /// reads for us (as during the link handshake): rustls's keys are then secret_1 both
    /// ways. The layer follows the logged secret_0 to them within the bound it is given,
    /// and refuses below it; the link then works both ways.
    #[test]
    fn handover_after_a_key_update_in_rustls() {
        let (cert, key) = creds();
        for suite in SUITES {
            for bound in [0u64, 1, 3] {
                let ours = tls::client_config(tls::provider()).expect("client config");
                let peer = tls::server_config(provider_with_suite(suite), cert, key).expect("c");
                let ((mut conn, log), mut peer) =
                    handshake_client_conn(ours, peer).expect("handshake");
                peer.refresh_traffic_keys().expect("refresh");
                let rx = peer_write(&mut peer, b"under the peer's secret_1");
                assert_eq!(
                    peer_read(&mut conn, &rx).expect("ours"),
                    b"under the peer's secret_1"
                );
                // rustls answered with its own KeyUpdate, held back until a write.
                assert!(!conn.wants_write());
                TlsRecordLayer::prepare_handover(&mut conn);
                let ku = peer_output(&mut conn);
                assert_eq!(ku.len(), KEY_UPDATE_RECORD_LEN);
                peer_read(&mut peer, &ku).expect("peer");
                let r = TlsRecordLayer::from_connection(conn, &log, bound);
                if bound == 0 {
                    assert_eq!(r.err(), Some(TlsRecordError::SecretMismatch(0)));
                    continue;
                }
                let mut ours = r.expect("handover");
                let mut rx = peer_write(&mut peer, b"to the layer");
                assert_eq!(read_all(&mut ours, &mut rx).0, b"to the layer");
                let tx = seal_records(&mut ours, b"from the layer").expect("seal");
                assert_eq!(peer_read(&mut peer, &tx).expect("peer"), b"from the layer");
            }
        }
    }

    /// The key search at the handover is capped: a peer that updated its key more often
    /// than [`MAX_KEY_UPDATES_BEFORE_HANDOVER`] before it (data between, so rustls lets it)
    /// fails the handover with a typed error however large the caller's bound; at the cap
    /// it is found.
    #[test]
    fn handover_key_search_is_capped() {
        let (cert, key) = creds();
        for updates in [
            MAX_KEY_UPDATES_BEFORE_HANDOVER,
            MAX_KEY_UPDATES_BEFORE_HANDOVER + 1,
        ] {
            let ours = tls::client_config(tls::provider()).expect("client config");
            let peer = tls::server_config(tls::provider(), cert, key).expect("server config");
            let ((mut conn, log), mut peer) = handshake_client_conn(ours, peer).expect("hs");
            let mut records = 0u64;
            for _ in 0..updates {
                peer.refresh_traffic_keys().expect("refresh");
                let rx = peer_write(&mut peer, b"x");
                assert_eq!(peer_read(&mut conn, &rx).expect("ours"), b"x");
                records += 2;
                // rustls's answer goes out (with data: the peer counts KeyUpdates too), so
                // the peer's next request is honoured as well.
                let ku = peer_write(&mut conn, b"y");
                assert_eq!(peer_read(&mut peer, &ku).expect("peer"), b"y");
            }
            let r = TlsRecordLayer::from_connection(conn, &log, records * 1000);
            if updates > MAX_KEY_UPDATES_BEFORE_HANDOVER {
                assert_eq!(
                    r.err(),
                    Some(TlsRecordError::SecretMismatch(
                        MAX_KEY_UPDATES_BEFORE_HANDOVER
                    ))
                );
            } else {
                let mut ours = r.expect("handover at the cap");
                let mut rx = peer_write(&mut peer, b"to the layer");
                assert_eq!(read_all(&mut ours, &mut rx).0, b"to the layer");
                let tx = seal_records(&mut ours, b"from the layer").expect("seal");
                assert_eq!(peer_read(&mut peer, &tx).expect("peer"), b"from the layer");
            }
        }
    }

    /// KeyUpdates from a real rustls peer, again and again, both requested by it and by
    /// us: our own key schedule (RFC 8446 §7.2) follows each, with data flowing both ways
    /// between them.
    #[test]
    fn key_updates_from_a_rustls_peer_again_and_again() {
        let mut rng = StdRng::seed_from_u64(seed("key_updates_from_a_rustls_peer_again_and_again"));
        for suite in SUITES {
            for server in [true, false] {
                let (mut ours, mut peer) = if server {
                    pair_server(suite)
                } else {
                    pair_client(suite)
                };
                for round in 0..6 {
                    let n = rng.gen_range(1..3000);
                    let data = random_bytes(&mut rng, n);
                    let mut tx = Vec::new();
                    if round % 2 == 0 {
                        // The peer updates and asks for ours.
                        peer.refresh_traffic_keys().expect("refresh");
                        let mut rx = peer_write(&mut peer, &data);
                        assert_eq!(read_all(&mut ours, &mut rx).0, data, "round {round}");
                        assert!(ours.key_update_due());
                        let mut buf = [0u8; KEY_UPDATE_RECORD_LEN];
                        ours.seal_key_update(&mut buf, false).expect("ours");
                        tx.extend_from_slice(&buf);
                    } else {
                        // We update and ask for the peer's.
                        let mut buf = [0u8; KEY_UPDATE_RECORD_LEN];
                        ours.seal_key_update(&mut buf, true).expect("ours");
                        tx.extend_from_slice(&buf);
                    }
                    tx.extend(seal_records(&mut ours, &data).expect("seal"));
                    assert_eq!(
                        peer_read(&mut peer, &tx).expect("peer"),
                        data,
                        "round {round}"
                    );
                    let mut rx = peer_write(&mut peer, b"answer");
                    assert_eq!(read_all(&mut ours, &mut rx).0, b"answer", "round {round}");
                    assert!(!ours.key_update_due());
                }
                let c = ours.counters();
                assert_eq!(c.key_updates_sent, 6);
                assert_eq!(
                    c.key_updates_received, 6,
                    "three asked by the peer, three answers"
                );
            }
        }
    }
}
