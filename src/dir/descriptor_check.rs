//! Checking a server descriptor or extra-info document the way a C tor 0.4.9 authority does
//! (`routerparse.c` `router_parse_entry_from_string`, `extrainfo_parse_entry_from_string`,
//! `process_descs.c`): token counts and positions, the key chain and all signatures.
//!
//! Fors runs this over every descriptor it builds before uploading (C does the same in
//! `router_dump_router_to_string`), and the tests use it to prove the output.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use rsa::RsaPublicKey;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use thiserror::Error;

use super::descriptor::{ED_DESC_SIGNATURE_PREFIX, MAX_DESCRIPTOR_SIZE, MAX_EXTRA_INFO_SIZE};
use super::isotime;
use super::netdoc::{self, decode_base64_any, Item, NetdocError};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::keys::cert::{CertError, CertType, Ed25519Cert};
use crate::keys::crosscert;
use crate::keys::rsa as tor_rsa;
use crate::keys::time::unix_secs;

/// C `ROUTER_ALLOW_SKEW`: descriptors published further in the future are refused.
pub const ALLOW_SKEW_SECS: u64 = 12 * 3600;
/// C `ROUTER_MAX_AGE_TO_PUBLISH`: older descriptors are refused.
pub const MAX_AGE_TO_PUBLISH_SECS: u64 = 24 * 3600;

/// Why a descriptor would be refused.
#[derive(Debug, Error)]
pub enum DescriptorCheckError {
    #[error("document is {size} bytes (limit {max})")]
    TooLarge { size: usize, max: usize },
    #[error(transparent)]
    Netdoc(#[from] NetdocError),
    #[error("document must start with {0:?}")]
    WrongStart(&'static str),
    #[error("no proto line (authorities drop such descriptors as obsolete)")]
    NoProto,
    #[error("item {keyword:?} appears {count} times")]
    Count { keyword: &'static str, count: usize },
    #[error("{0} is in the wrong position")]
    Position(&'static str),
    #[error("item {keyword:?} is malformed")]
    Malformed { keyword: &'static str },
    #[error("fingerprint line does not match the signing-key digest")]
    FingerprintMismatch,
    #[error("master-key-ed25519 does not match the key in the identity-ed25519 cert")]
    MasterKeyMismatch,
    #[error("{what}: {source}")]
    Cert {
        what: &'static str,
        source: CertError,
    },
    #[error("router-sig-ed25519 does not verify")]
    BadEd25519Signature,
    #[error("onion-key-crosscert does not verify")]
    BadTapCrossCert,
    #[error("router-signature does not verify")]
    BadRsaSignature,
    #[error("accept6/reject6 lines are refused")]
    Ipv6PolicyLine,
    #[error("no exit policy lines")]
    NoPolicy,
    #[error("ntor-onion-key is all zero")]
    ZeroNtorKey,
    #[error("published time {published} is outside the window the authorities accept")]
    PublishedSkew { published: String },
}

type E = DescriptorCheckError;

/// What a checked descriptor says about the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDescriptor {
    pub nickname: String,
    pub address: Ipv4Addr,
    pub or_port: u16,
    pub dir_port: u16,
    pub rsa_identity: RsaIdentity,
    pub ed25519_identity: Ed25519Identity,
    pub ntor_onion_key: [u8; 32],
    pub published_secs: u64,
    pub platform: Option<String>,
    pub proto: String,
    /// `extra-info-digest`: SHA-1 and optional SHA-256.
    pub extra_info_digest: Option<([u8; 20], Option<[u8; 32]>)>,
    /// Exit policy lines as written.
    pub policy: Vec<String>,
    /// Keywords in document order (for order assertions).
    pub keywords: Vec<String>,
    /// Family IDs of the valid `family-cert`s (prop 321), in order.
    pub family_ids: Vec<Ed25519Identity>,
    /// The earliest certificate expiry (C `cert_expiration_time`), seconds.
    pub cert_expiry_secs: u64,
    /// SHA-1 of the signed part.
    pub digest: [u8; 20],
}

/// What a checked extra-info document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedExtraInfo {
    pub nickname: String,
    pub rsa_identity: RsaIdentity,
    pub ed25519_identity: Ed25519Identity,
    pub published_secs: u64,
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
}

fn count<'a, 'b>(items: &'b [Item<'a>], kw: &str) -> Vec<&'b Item<'a>> {
    items.iter().filter(|i| i.keyword == kw).collect()
}

fn exactly_one<'a, 'b>(items: &'b [Item<'a>], kw: &'static str) -> Result<&'b Item<'a>, E> {
    let v = count(items, kw);
    if v.len() == 1 {
        Ok(v[0])
    } else {
        Err(E::Count {
            keyword: kw,
            count: v.len(),
        })
    }
}

fn at_most_one<'a, 'b>(items: &'b [Item<'a>], kw: &'static str) -> Result<Option<&'b Item<'a>>, E> {
    let v = count(items, kw);
    match v.len() {
        0 => Ok(None),
        1 => Ok(Some(v[0])),
        n => Err(E::Count {
            keyword: kw,
            count: n,
        }),
    }
}

fn object<'i>(item: &'i Item<'_>, kw: &'static str, tag: &str) -> Result<&'i [u8], E> {
    match &item.object {
        Some(o) if o.tag == tag => Ok(&o.data),
        _ => Err(E::Malformed { keyword: kw }),
    }
}

fn rsa_key(item: &Item<'_>, kw: &'static str) -> Result<RsaPublicKey, E> {
    let der = object(item, kw, tor_rsa::PUBLIC_KEY_PEM_TAG)?;
    let key = tor_rsa::public_key_from_der(der).map_err(|_| E::Malformed { keyword: kw })?;
    tor_rsa::check_shape(&key, tor_rsa::IDENTITY_KEY_BITS)
        .map_err(|_| E::Malformed { keyword: kw })?;
    Ok(key)
}

fn ed_key_b64(s: &str, kw: &'static str) -> Result<[u8; 32], E> {
    decode_base64_any(s)
        .and_then(|v| v.try_into().ok())
        .ok_or(E::Malformed { keyword: kw })
}

fn cert_err(what: &'static str) -> impl FnOnce(CertError) -> E {
    move |source| E::Cert { what, source }
}

/// Verifies the Ed25519 signature: SHA-256(prefix ‖ text from `start_kw` through
/// "\nrouter-sig-ed25519 ").
fn check_ed_sig(text: &str, sig_item: &Item<'_>, signing_key: &[u8; 32]) -> Result<(), E> {
    let end = netdoc::signed_end(text, 0, "\nrouter-sig-ed25519", ' ').ok_or(E::Malformed {
        keyword: "router-sig-ed25519",
    })?;
    let mut h = Sha256::new();
    h.update(ED_DESC_SIGNATURE_PREFIX);
    h.update(&text.as_bytes()[..end]);
    let digest: [u8; 32] = h.finalize().into();
    let sig: [u8; 64] = sig_item
        .arg(0)
        .and_then(decode_base64_any)
        .and_then(|v| v.try_into().ok())
        .ok_or(E::Malformed {
            keyword: "router-sig-ed25519",
        })?;
    if crate::keys::ed25519::verify(signing_key, &digest, &sig) {
        Ok(())
    } else {
        Err(E::BadEd25519Signature)
    }
}

/// Verifies `router-signature`: SHA-1 of the text through "\nrouter-signature\n".
fn check_rsa_sig(text: &str, sig_item: &Item<'_>, identity: &RsaPublicKey) -> Result<[u8; 20], E> {
    let end = netdoc::signed_end(text, 0, "\nrouter-signature", '\n').ok_or(E::Malformed {
        keyword: "router-signature",
    })?;
    let digest: [u8; 20] = Sha1::digest(&text.as_bytes()[..end]).into();
    let sig = object(sig_item, "router-signature", "SIGNATURE")?;
    tor_rsa::verify_unprefixed(identity, &digest, sig).map_err(|_| E::BadRsaSignature)?;
    Ok(digest)
}

fn check_published(secs: u64, now: Option<SystemTime>) -> Result<(), E> {
    if let Some(now) = now {
        let now = unix_secs(now);
        if secs > now + ALLOW_SKEW_SECS || secs + MAX_AGE_TO_PUBLISH_SECS < now {
            return Err(E::PublishedSkew {
                published: isotime::format_secs(secs),
            });
        }
    }
    Ok(())
}

/// The type-4 cert from `identity-ed25519`: checks its form and signature (and expiry if `now`).
fn signing_cert(item: &Item<'_>, now: Option<SystemTime>) -> Result<Ed25519Cert, E> {
    let cert = Ed25519Cert::parse(object(item, "identity-ed25519", "ED25519 CERT")?)
        .map_err(cert_err("identity-ed25519"))?;
    cert.expect_type(CertType::IDENTITY_V_SIGNING)
        .map_err(cert_err("identity-ed25519"))?;
    if cert.signing_key.is_none() {
        return Err(E::Cert {
            what: "identity-ed25519",
            source: CertError::MissingSigningKey,
        });
    }
    cert.verify(None, now)
        .map_err(cert_err("identity-ed25519"))?;
    Ok(cert)
}

/// Checks a server descriptor. With `now`, also the published-time window and cert expiry.
pub fn check_descriptor(text: &str, now: Option<SystemTime>) -> Result<CheckedDescriptor, E> {
    if text.len() > MAX_DESCRIPTOR_SIZE {
        return Err(E::TooLarge {
            size: text.len(),
            max: MAX_DESCRIPTOR_SIZE,
        });
    }
    if !text.starts_with("router ") {
        return Err(E::WrongStart("router "));
    }
    if !text.contains("\nproto ") {
        return Err(E::NoProto);
    }
    let items = netdoc::tokenize(text)?;
    for kw in [
        "router",
        "signing-key",
        "onion-key",
        "ntor-onion-key",
        "router-signature",
        "published",
        "proto",
        "bandwidth",
        "identity-ed25519",
        "master-key-ed25519",
        "router-sig-ed25519",
        "onion-key-crosscert",
        "ntor-onion-key-crosscert",
    ] {
        exactly_one(&items, kw)?;
    }
    for kw in [
        "ipv6-policy",
        "uptime",
        "fingerprint",
        "hibernating",
        "platform",
        "contact",
        "extra-info-digest",
        "hidden-service-dir",
        "family",
        "caches-extra-info",
        "tunnelled-dir-server",
    ] {
        at_most_one(&items, kw)?;
    }
    let n = items.len();
    if items[0].keyword != "router" {
        return Err(E::Position("router"));
    }
    if items[1].keyword != "identity-ed25519" {
        return Err(E::Position("identity-ed25519"));
    }
    if items[n - 2].keyword != "router-sig-ed25519" {
        return Err(E::Position("router-sig-ed25519"));
    }
    if items[n - 1].keyword != "router-signature" {
        return Err(E::Position("router-signature"));
    }

    let router = &items[0];
    if router.args.len() < 5 {
        return Err(E::Malformed { keyword: "router" });
    }
    let bad_router = || E::Malformed { keyword: "router" };
    let nickname = router.args[0].to_owned();
    if !super::descriptor::is_legal_nickname(&nickname) {
        return Err(bad_router());
    }
    let address: Ipv4Addr = router.args[1].parse().map_err(|_| bad_router())?;
    let or_port: u16 = router.args[2].parse().map_err(|_| bad_router())?;
    let dir_port: u16 = router.args[4].parse().map_err(|_| bad_router())?;
    if or_port == 0 {
        return Err(bad_router());
    }

    let bw = exactly_one(&items, "bandwidth")?;
    let bw_ok = bw.args.len() >= 3
        && bw.args[..3].iter().all(|a| a.parse::<u32>().is_ok())
        && bw.args[0] != "0";
    if !bw_ok {
        return Err(E::Malformed {
            keyword: "bandwidth",
        });
    }

    let published_secs =
        isotime::parse_secs(exactly_one(&items, "published")?.rest).ok_or(E::Malformed {
            keyword: "published",
        })?;
    check_published(published_secs, now)?;

    let identity = rsa_key(exactly_one(&items, "signing-key")?, "signing-key")?;
    let rsa_identity = tor_rsa::rsa_identity(&identity).map_err(|_| E::Malformed {
        keyword: "signing-key",
    })?;
    let onion = rsa_key(exactly_one(&items, "onion-key")?, "onion-key")?;
    let ntor_onion_key: [u8; 32] = exactly_one(&items, "ntor-onion-key")?
        .arg(0)
        .and_then(decode_base64_any)
        .and_then(|v| v.try_into().ok())
        .ok_or(E::Malformed {
            keyword: "ntor-onion-key",
        })?;
    if ntor_onion_key == [0; 32] {
        return Err(E::ZeroNtorKey);
    }

    if let Some(fp) = at_most_one(&items, "fingerprint")? {
        let hex: String = fp.rest.chars().filter(|c| *c != ' ').collect();
        if RsaIdentity::from_hex(&hex) != Some(rsa_identity) {
            return Err(E::FingerprintMismatch);
        }
    }

    // The Ed25519 key chain: master → signing (type 4), ntor → master (type 0x0a).
    let cert = signing_cert(&items[1], now)?;
    let master = cert.signing_key.unwrap_or_default();
    let mk = ed_key_b64(
        exactly_one(&items, "master-key-ed25519")?
            .arg(0)
            .unwrap_or(""),
        "master-key-ed25519",
    )?;
    if mk != master {
        return Err(E::MasterKeyMismatch);
    }
    let master = Ed25519Identity(master);
    // prop 321: each family-cert is a type-0x0c cert of our identity by the family key.
    let mut family_ids = Vec::new();
    for item in items.iter().filter(|i| i.keyword == "family-cert") {
        if !item.args.is_empty() {
            return Err(E::Malformed {
                keyword: "family-cert",
            });
        }
        let fc = Ed25519Cert::parse(object(item, "family-cert", "FAMILY CERT")?)
            .map_err(cert_err("family-cert"))?;
        let id = crate::keys::family::verify_family_cert(&fc, &master, now)
            .map_err(cert_err("family-cert"))?;
        family_ids.push(id);
    }
    let ntor_cc_item = exactly_one(&items, "ntor-onion-key-crosscert")?;
    let sign_bit = match ntor_cc_item.args.as_slice() {
        ["0"] => 0u8,
        ["1"] => 1u8,
        _ => {
            return Err(E::Malformed {
                keyword: "ntor-onion-key-crosscert",
            })
        }
    };
    let ntor_cc = Ed25519Cert::parse(object(
        ntor_cc_item,
        "ntor-onion-key-crosscert",
        "ED25519 CERT",
    )?)
    .map_err(cert_err("ntor-onion-key-crosscert"))?;
    crosscert::verify_ntor_onion_key_crosscert(&ntor_cc, sign_bit, &ntor_onion_key, &master, now)
        .map_err(cert_err("ntor-onion-key-crosscert"))?;
    check_ed_sig(text, &items[n - 2], &cert.certified_key)?;
    let tap_cc = object(
        exactly_one(&items, "onion-key-crosscert")?,
        "onion-key-crosscert",
        "CROSSCERT",
    )?;
    crosscert::verify_tap_onion_key_crosscert(&onion, &identity, &master, tap_cc)
        .map_err(|_| E::BadTapCrossCert)?;

    if items
        .iter()
        .any(|i| i.keyword == "accept6" || i.keyword == "reject6")
    {
        return Err(E::Ipv6PolicyLine);
    }
    let policy: Vec<String> = items
        .iter()
        .filter(|i| i.keyword == "accept" || i.keyword == "reject")
        .map(|i| format!("{} {}", i.keyword, i.rest))
        .collect();
    if policy.is_empty() {
        return Err(E::NoPolicy);
    }

    let extra_info_digest = match at_most_one(&items, "extra-info-digest")? {
        None => None,
        Some(i) => {
            let bad = || E::Malformed {
                keyword: "extra-info-digest",
            };
            let sha1: [u8; 20] = i
                .arg(0)
                .and_then(crate::util::hex::decode)
                .and_then(|v| v.try_into().ok())
                .ok_or_else(bad)?;
            let sha256 = match i.arg(1) {
                None => None,
                Some(b) => Some(
                    decode_base64_any(b)
                        .and_then(|v| v.try_into().ok())
                        .ok_or_else(bad)?,
                ),
            };
            Some((sha1, sha256))
        }
    };

    let digest = check_rsa_sig(text, &items[n - 1], &identity)?;
    Ok(CheckedDescriptor {
        nickname,
        address,
        or_port,
        dir_port,
        rsa_identity,
        ed25519_identity: master,
        ntor_onion_key,
        published_secs,
        platform: at_most_one(&items, "platform")?.map(|i| i.rest.to_owned()),
        proto: exactly_one(&items, "proto")?.rest.to_owned(),
        extra_info_digest,
        policy,
        keywords: items.iter().map(|i| i.keyword.to_owned()).collect(),
        family_ids,
        cert_expiry_secs: cert.expires_at_secs().min(ntor_cc.expires_at_secs()),
        digest,
    })
}

/// Checks an extra-info document; `identity` is the relay's RSA identity key (from its
/// descriptor), which signs it.
pub fn check_extra_info(
    text: &str,
    identity: &RsaPublicKey,
    now: Option<SystemTime>,
) -> Result<CheckedExtraInfo, E> {
    if text.len() > MAX_EXTRA_INFO_SIZE {
        return Err(E::TooLarge {
            size: text.len(),
            max: MAX_EXTRA_INFO_SIZE,
        });
    }
    if !text.starts_with("extra-info ") {
        return Err(E::WrongStart("extra-info "));
    }
    let items = netdoc::tokenize(text)?;
    for kw in [
        "extra-info",
        "published",
        "identity-ed25519",
        "router-sig-ed25519",
        "router-signature",
    ] {
        exactly_one(&items, kw)?;
    }
    let n = items.len();
    if items[1].keyword != "identity-ed25519" {
        return Err(E::Position("identity-ed25519"));
    }
    if items[n - 2].keyword != "router-sig-ed25519" {
        return Err(E::Position("router-sig-ed25519"));
    }
    if items[n - 1].keyword != "router-signature" {
        return Err(E::Position("router-signature"));
    }
    let head = &items[0];
    let (nickname, fp) = match head.args.as_slice() {
        [nick, fp, ..] => (nick.to_string(), RsaIdentity::from_hex(fp)),
        _ => (String::new(), None),
    };
    let rsa_identity = tor_rsa::rsa_identity(identity).map_err(|_| E::Malformed {
        keyword: "extra-info",
    })?;
    if fp != Some(rsa_identity) {
        return Err(E::FingerprintMismatch);
    }
    let published_secs =
        isotime::parse_secs(exactly_one(&items, "published")?.rest).ok_or(E::Malformed {
            keyword: "published",
        })?;
    let cert = signing_cert(&items[1], now)?;
    check_ed_sig(text, &items[n - 2], &cert.certified_key)?;
    let sha1 = check_rsa_sig(text, &items[n - 1], identity)?;
    Ok(CheckedExtraInfo {
        nickname,
        rsa_identity,
        ed25519_identity: Ed25519Identity(cert.signing_key.unwrap_or_default()),
        published_secs,
        sha1,
        sha256: Sha256::digest(text.as_bytes()).into(),
    })
}
