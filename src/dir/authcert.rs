//! Directory authority key certificates (dir-spec §3.1 "Creating key certificates"; C
//! `authcert_parse.c`): the long-term identity key vouches for the medium-term signing key
//! that signs consensuses. Fetched from `/tor/keys/all`.

use std::net::SocketAddrV4;
use std::time::SystemTime;

use rsa::RsaPublicKey;
use sha1::{Digest, Sha1};
use thiserror::Error;

use super::isotime;
use super::netdoc::{self, Item, NetdocError};
use crate::crypto::ids::RsaIdentity;
use crate::keys::rsa as tor_rsa;
use crate::keys::time::unix_secs;

/// C `MAX_CERT_SIZE`.
pub const MAX_CERT_SIZE: usize = 128 * 1024;

/// Why a certificate was refused.
#[derive(Debug, Error)]
pub enum AuthCertError {
    #[error("no dir-key-certification signature found")]
    NoSignature,
    #[error("certificate is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error(transparent)]
    Netdoc(#[from] NetdocError),
    #[error("certificate must begin with dir-key-certificate-version 3")]
    WrongVersion,
    #[error("certificate must end with dir-key-certification")]
    WrongEnd,
    #[error("item {keyword:?} appears {count} times")]
    Count { keyword: &'static str, count: usize },
    #[error("item {0:?} is malformed")]
    Malformed(&'static str),
    #[error("fingerprint does not match dir-identity-key")]
    FingerprintMismatch,
    #[error("dir-key-certification does not verify with the identity key")]
    BadCertification,
    #[error("dir-key-crosscert does not verify with the signing key")]
    BadCrossCert,
    #[error("certificate for {fingerprint} expired at {expires}")]
    Expired {
        fingerprint: String,
        expires: String,
    },
    #[error("certificate for {fingerprint} is published in the future ({published})")]
    NotYetValid {
        fingerprint: String,
        published: String,
    },
}

type E = AuthCertError;

/// A verified authority key certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityCert {
    /// SHA-1 of the identity key: the authority's `v3ident`.
    pub fingerprint: RsaIdentity,
    pub identity_key: RsaPublicKey,
    pub signing_key: RsaPublicKey,
    /// SHA-1 of the DER signing key, as named on `directory-signature` lines.
    pub signing_key_digest: [u8; 20],
    pub published_secs: u64,
    pub expires_secs: u64,
    pub dir_address: Option<SocketAddrV4>,
}

impl AuthorityCert {
    /// True if `now` is within [published, expires] (C `authority_cert_is_expired` ignores
    /// the start; being published in the future is only suspicious, so it is not checked).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_secs(now) > self.expires_secs
    }

    /// Fails if the certificate has expired at `now`.
    pub fn check_time(&self, now: SystemTime) -> Result<(), AuthCertError> {
        if self.is_expired(now) {
            return Err(E::Expired {
                fingerprint: self.fingerprint.to_hex(),
                expires: isotime::format_secs(self.expires_secs),
            });
        }
        Ok(())
    }
}

fn one<'a, 'b>(items: &'b [Item<'a>], kw: &'static str) -> Result<&'b Item<'a>, E> {
    let v: Vec<_> = items.iter().filter(|i| i.keyword == kw).collect();
    if v.len() == 1 {
        Ok(v[0])
    } else {
        Err(E::Count {
            keyword: kw,
            count: v.len(),
        })
    }
}

fn rsa_object(item: &Item<'_>, kw: &'static str) -> Result<RsaPublicKey, E> {
    match &item.object {
        Some(o) if o.tag == tor_rsa::PUBLIC_KEY_PEM_TAG => {
            tor_rsa::public_key_from_der(&o.data).map_err(|_| E::Malformed(kw))
        }
        _ => Err(E::Malformed(kw)),
    }
}

/// Length of the first certificate in `text` (which must start at its first item): through
/// the line after "\ndir-key-certification"'s "-----END SIGNATURE-----".
fn cert_len(text: &str) -> Result<usize, E> {
    let at = text.find("\ndir-key-certification").ok_or(E::NoSignature)?;
    let end_marker = "\n-----END SIGNATURE-----\n";
    let end = text[at..].find(end_marker).ok_or(E::NoSignature)? + at + end_marker.len();
    Ok(end)
}

/// Parses and verifies one certificate that makes up all of `text`.
pub fn parse_cert(text: &str) -> Result<AuthorityCert, E> {
    if text.len() > MAX_CERT_SIZE {
        return Err(E::TooLarge(text.len()));
    }
    let items = netdoc::tokenize(text)?;
    match items.first() {
        Some(i) if i.keyword == "dir-key-certificate-version" && i.args.first() == Some(&"3") => {}
        _ => return Err(E::WrongVersion),
    }
    if items.last().map(|i| i.keyword) != Some("dir-key-certification") {
        return Err(E::WrongEnd);
    }
    for kw in ["dir-key-published", "dir-key-expires", "fingerprint"] {
        one(&items, kw)?;
    }
    let identity_key = rsa_object(one(&items, "dir-identity-key")?, "dir-identity-key")?;
    let signing_key = rsa_object(one(&items, "dir-signing-key")?, "dir-signing-key")?;
    let fingerprint =
        tor_rsa::rsa_identity(&identity_key).map_err(|_| E::Malformed("dir-identity-key"))?;
    let declared = RsaIdentity::from_hex(&one(&items, "fingerprint")?.rest.replace(' ', ""))
        .ok_or(E::Malformed("fingerprint"))?;
    if declared != fingerprint {
        return Err(E::FingerprintMismatch);
    }
    let signing_key_digest = tor_rsa::rsa_identity(&signing_key)
        .map_err(|_| E::Malformed("dir-signing-key"))?
        .0;
    let published_secs = isotime::parse_secs(one(&items, "dir-key-published")?.rest)
        .ok_or(E::Malformed("dir-key-published"))?;
    let expires_secs = isotime::parse_secs(one(&items, "dir-key-expires")?.rest)
        .ok_or(E::Malformed("dir-key-expires"))?;
    let dir_address = match items.iter().find(|i| i.keyword == "dir-address") {
        None => None,
        Some(i) => Some(
            i.arg(0)
                .and_then(|a| a.parse().ok())
                .ok_or(E::Malformed("dir-address"))?,
        ),
    };

    // dir-key-certification: identity key over SHA-1 of the text through
    // "\ndir-key-certification\n".
    let signed_end =
        netdoc::signed_end(text, 0, "\ndir-key-certification", '\n').ok_or(E::NoSignature)?;
    let digest: [u8; 20] = Sha1::digest(&text.as_bytes()[..signed_end]).into();
    let cert_item = items.last().ok_or(E::WrongEnd)?;
    let sig = match &cert_item.object {
        Some(o) if o.tag == "SIGNATURE" => &o.data,
        _ => return Err(E::Malformed("dir-key-certification")),
    };
    tor_rsa::verify_unprefixed(&identity_key, &digest, sig).map_err(|_| E::BadCertification)?;

    // dir-key-crosscert: signing key over the identity digest (object type "ID SIGNATURE",
    // historically "SIGNATURE").
    let cc = one(&items, "dir-key-crosscert")?;
    let cc_sig = match &cc.object {
        Some(o) if o.tag == "ID SIGNATURE" || o.tag == "SIGNATURE" => &o.data,
        _ => return Err(E::Malformed("dir-key-crosscert")),
    };
    tor_rsa::verify_unprefixed(&signing_key, &fingerprint.0, cc_sig)
        .map_err(|_| E::BadCrossCert)?;

    Ok(AuthorityCert {
        fingerprint,
        identity_key,
        signing_key,
        signing_key_digest,
        published_secs,
        expires_secs,
        dir_address,
    })
}

/// Splits a `/tor/keys/...` body into certificates and verifies each. One bad certificate
/// does not hide the others: each gets its own result.
pub fn parse_certs(text: &str) -> Vec<Result<AuthorityCert, AuthCertError>> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        match cert_len(rest) {
            Ok(len) => {
                out.push(parse_cert(&rest[..len]));
                rest = rest[len..].trim_start();
            }
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}
