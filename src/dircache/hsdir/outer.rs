//! The outer (plaintext) layer of a v3 onion-service descriptor (rend-spec-v3 §2.4
//! "Hidden service descriptors: outer wrapper"), decoded and verified as C tor's
//! `hs_desc_decode_plaintext` does — all an HSDir ever reads of a descriptor.
//!
//! ```text
//! hs-descriptor 3                                  (first, exactly once)
//! descriptor-lifetime <minutes>                    (exactly once, at most 720)
//! descriptor-signing-key-cert + ED25519 CERT       (exactly once; cert type 08)
//! revision-counter <u64>                           (exactly once)
//! superencrypted + MESSAGE                         (exactly once; > 48 bytes)
//! signature <base64 ed25519 sig>                   (last, exactly once)
//! ```
//! The certificate must be type 08 (`HS_V3_DESC_SIGNING`), carry its signing key (the
//! blinded key) in the signed-with-key extension, verify under it and not be expired at
//! `now`. The signature, by the certified (descriptor signing) key, covers
//! `"Tor onion service descriptor sig v3"` followed by the document up to and including the
//! newline before the first `"\nsignature "`.

use std::time::SystemTime;

use thiserror::Error;

use super::cstr::{base64_decode, parse_u64};
use super::token::{self, ObjSyntax, Pos, Rule, TokenError};
use crate::keys::cert::{CertError, CertType, Ed25519Cert};
use crate::keys::ed25519;

/// `HS_DESC_MAX_LEN`: the default of the consensus parameter `HSV3MaxDescriptorSize`.
pub const HS_DESC_MAX_LEN: u32 = 50_000;
/// `HS_DESC_MAX_LIFETIME`, in seconds (12 hours).
pub const HS_DESC_MAX_LIFETIME: u32 = 12 * 60 * 60;
/// cert-spec A.1: "ed25519 signing key with an ed25519 blinded key" (`CERT_TYPE_SIGNING_HS_DESC`).
pub const CERT_TYPE_SIGNING_HS_DESC: CertType = CertType(0x08);
/// rend-spec-v3 §2.4: prefix of the signed data.
pub const SIG_PREFIX: &[u8] = b"Tor onion service descriptor sig v3";
/// `HS_DESC_ENCRYPTED_SALT_LEN` + `DIGEST256_LEN`: an encrypted section must be longer.
const MIN_ENCRYPTED_LEN: usize = 16 + 32;
/// `ED25519_SIG_BASE64_LEN`.
const SIG_BASE64_LEN: usize = 86;

const KW_HS_DESC: usize = 0;
const KW_LIFETIME: usize = 1;
const KW_CERT: usize = 2;
const KW_REVISION: usize = 3;
const KW_SUPERENCRYPTED: usize = 4;
const KW_SIGNATURE: usize = 5;

const fn one(keyword: &'static str, args: usize, obj: ObjSyntax, pos: Pos) -> Rule {
    Rule {
        keyword,
        min_args: args,
        max_args: args,
        obj,
        min_count: 1,
        max_count: 1,
        pos,
    }
}

/// `hs_desc_v3_token_table`.
const TABLE: &[Rule] = &[
    one("hs-descriptor", 1, ObjSyntax::NoObj, Pos::AtStart),
    one("descriptor-lifetime", 1, ObjSyntax::NoObj, Pos::Any),
    one(
        "descriptor-signing-key-cert",
        0,
        ObjSyntax::NeedObj,
        Pos::Any,
    ),
    one("revision-counter", 1, ObjSyntax::NoObj, Pos::Any),
    one("superencrypted", 0, ObjSyntax::NeedObj, Pos::Any),
    one("signature", 1, ObjSyntax::NoObj, Pos::AtEnd),
];

/// Why a posted descriptor was refused. [`HsDescError::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HsDescError {
    #[error("descriptor is too big ({len} bytes, limit is below {max})")]
    TooBig { len: usize, max: u32 },
    #[error("descriptor is not parseable: {0}")]
    Tokens(#[from] TokenError),
    #[error("descriptor has an unparseable or unsupported version")]
    Version,
    #[error("descriptor lifetime is invalid or above 12 hours")]
    Lifetime,
    #[error("descriptor signing cert object is not an ED25519 CERT")]
    CertObjectType,
    #[error("descriptor signing cert: {0}")]
    Cert(CertError),
    #[error("descriptor signing cert has type {0:#04x}, not 0x08")]
    CertType(u8),
    #[error("descriptor signing cert does not include the blinded key")]
    CertNoSigningKey,
    #[error("descriptor signing cert expired")]
    CertExpired,
    #[error("descriptor revision-counter is invalid")]
    RevisionCounter,
    #[error("descriptor superencrypted section is not a MESSAGE or is too short")]
    Superencrypted,
    #[error("descriptor signature is not 86 base64 characters of a signature")]
    SignatureEncoding,
    #[error("descriptor has no \"\\nsignature \" line to delimit the signed part")]
    SignatureLine,
    #[error("descriptor signature does not verify")]
    BadSignature,
}

impl HsDescError {
    /// Short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            HsDescError::TooBig { .. } => "too_big",
            HsDescError::Tokens(_)
            | HsDescError::Version
            | HsDescError::Lifetime
            | HsDescError::CertObjectType
            | HsDescError::RevisionCounter
            | HsDescError::Superencrypted
            | HsDescError::SignatureEncoding
            | HsDescError::SignatureLine => "malformed",
            HsDescError::Cert(_) | HsDescError::CertType(_) | HsDescError::CertNoSigningKey => {
                "bad_cert"
            }
            HsDescError::CertExpired => "cert_expired",
            HsDescError::BadSignature => "bad_signature",
        }
    }
}

/// What an HSDir keeps from a verified outer layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuterLayer {
    /// The blinded key: the cert's signing key, and the cache index.
    pub blinded_key: [u8; 32],
    /// The descriptor signing key (the cert's certified key).
    pub signing_key: [u8; 32],
    /// `descriptor-lifetime` in seconds (C tor multiplies the minutes in 32 bits).
    pub lifetime_secs: u32,
    pub revision_counter: u64,
    /// Size of the decoded superencrypted blob (counted in the cache's size, as C tor does).
    pub superencrypted_len: usize,
    /// When the signing-key cert expires, seconds since the epoch.
    pub cert_expires_at: u64,
}

/// Decodes and verifies the outer layer of `body` (`hs_desc_decode_plaintext`).
/// `max_size` is `HSV3MaxDescriptorSize`: a body of `max_size` bytes or more is refused.
/// As in C tor, the body is read as a C string: it ends at its first NUL byte.
pub fn decode_outer(
    body: &[u8],
    max_size: u32,
    now: SystemTime,
) -> Result<OuterLayer, HsDescError> {
    let text = c_string(body);
    if text.len() >= max_size as usize {
        return Err(HsDescError::TooBig {
            len: text.len(),
            max: max_size,
        });
    }
    let tokens = token::tokenize(text, TABLE)?;
    let find = |kw: usize| {
        tokens
            .iter()
            .find(|t| t.rule == Some(kw))
            .expect("tokenize checked every keyword occurs once")
    };

    let version = parse_u64(find(KW_HS_DESC).args[0]).filter(|v| *v <= u64::from(u32::MAX));
    if version != Some(3) {
        return Err(HsDescError::Version);
    }

    let minutes = parse_u64(find(KW_LIFETIME).args[0])
        .and_then(|m| u32::try_from(m).ok())
        .ok_or(HsDescError::Lifetime)?;
    // C stores minutes in a uint32_t and multiplies in place: the product wraps.
    let lifetime_secs = minutes.wrapping_mul(60);
    if lifetime_secs > HS_DESC_MAX_LIFETIME {
        return Err(HsDescError::Lifetime);
    }

    let cert_obj = find(KW_CERT).object.as_ref().expect("NeedObj");
    if cert_obj.tag != b"ED25519 CERT" {
        return Err(HsDescError::CertObjectType);
    }
    let cert = Ed25519Cert::parse(&cert_obj.body).map_err(HsDescError::Cert)?;
    if cert.cert_type != CERT_TYPE_SIGNING_HS_DESC {
        return Err(HsDescError::CertType(cert.cert_type.0));
    }
    let blinded_key = cert.signing_key.ok_or(HsDescError::CertNoSigningKey)?;
    cert.verify(None, Some(now)).map_err(|e| match e {
        CertError::Expired { .. } => HsDescError::CertExpired,
        e => HsDescError::Cert(e),
    })?;
    // C tor takes the certified key as the signing key whatever CERT_KEY_TYPE says.
    let signing_key = cert.certified_key;

    let revision_counter =
        parse_u64(find(KW_REVISION).args[0]).ok_or(HsDescError::RevisionCounter)?;

    let sup = find(KW_SUPERENCRYPTED).object.as_ref().expect("NeedObj");
    if sup.tag != b"MESSAGE" || sup.body.len() <= MIN_ENCRYPTED_LEN {
        return Err(HsDescError::Superencrypted);
    }

    let sig_b64 = find(KW_SIGNATURE).args[0];
    if sig_b64.len() != SIG_BASE64_LEN {
        return Err(HsDescError::SignatureEncoding);
    }
    let sig: [u8; 64] = base64_decode(sig_b64, 128)
        .and_then(|v| v.try_into().ok())
        .ok_or(HsDescError::SignatureEncoding)?;
    let at = text
        .windows(11)
        .position(|w| w == b"\nsignature ")
        .ok_or(HsDescError::SignatureLine)?;
    let mut signed = Vec::with_capacity(SIG_PREFIX.len() + at + 1);
    signed.extend_from_slice(SIG_PREFIX);
    signed.extend_from_slice(&text[..=at]);
    if !ed25519::verify(&signing_key, &signed, &sig) {
        return Err(HsDescError::BadSignature);
    }

    Ok(OuterLayer {
        blinded_key,
        signing_key,
        lifetime_secs,
        revision_counter,
        superencrypted_len: sup.body.len(),
        cert_expires_at: cert.expires_at_secs(),
    })
}

/// The bytes before the first NUL: what C tor's string functions see of an HTTP body.
pub fn c_string(body: &[u8]) -> &[u8] {
    match body.iter().position(|&b| b == 0) {
        Some(n) => &body[..n],
        None => body,
    }
}
