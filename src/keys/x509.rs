//! The two X.509 certificates a Tor relay still needs (tor-spec "Negotiating and initializing
//! channels"; C `lib/tls/x509_openssl.c`, `tortls.c`):
//! - the TLS link certificate: an RSA-2048 link key signed by the identity key (CERTS type 1,
//!   and the cert whose SHA-256 the type-5 Ed25519 cert certifies);
//! - the self-signed RSA-1024 identity certificate (CERTS type 2).
//!
//! Both are X.509v3 with a random 8-byte serial, random `www.<base32>.net|com` common names
//! and `sha256WithRSAEncryption`. The parser extracts only what Tor checks: the RSA subject key,
//! the validity window, and the signature.

use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::der::{self, tag, DerError, Reader};
use super::rsa::{self as tor_rsa, RsaError};
use super::time::{civil_from_days, days_from_civil, unix_secs};

/// Identity certificates live a year (C `IDENTITY_CERT_LIFETIME`).
pub const IDENTITY_CERT_LIFETIME_SECS: u64 = 365 * 86400;
/// Accepted clock skew when checking a peer's X.509 validity (C `TOR_X509_PAST_SLOP`).
pub const X509_PAST_SLOP_SECS: u64 = 2 * 86400;
/// C `TOR_X509_FUTURE_SLOP`.
pub const X509_FUTURE_SLOP_SECS: u64 = 30 * 86400;

const OID_SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
const OID_RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];

/// X.509 failures.
#[derive(Debug, Error)]
pub enum X509Error {
    #[error("X.509 certificate is not valid DER: {0}")]
    Der(#[from] DerError),
    #[error("X.509 certificate's subject key is not RSA")]
    NotRsa,
    #[error("X.509 certificate uses signature algorithm other than sha256WithRSAEncryption")]
    UnsupportedSignatureAlgorithm,
    #[error("X.509 certificate has an unparseable time")]
    BadTime,
    #[error("X.509 certificate is not yet valid or has expired")]
    OutsideLifetime,
    #[error("X.509 certificate signature does not verify")]
    BadSignature,
    #[error("X.509 identity key has {0} bits; Tor requires exactly 1024")]
    NotRsa1024(usize),
    #[error(transparent)]
    Rsa(#[from] RsaError),
}

/// A parsed X.509 certificate (only the fields Tor looks at).
#[derive(Debug, Clone)]
pub struct X509Cert {
    der: Vec<u8>,
    tbs_range: (usize, usize),
    signature: Vec<u8>,
    subject_key: RsaPublicKey,
    not_before: u64,
    not_after: u64,
}

impl X509Cert {
    /// Parses a DER certificate whose subject key is RSA.
    pub fn parse(der_bytes: &[u8]) -> Result<X509Cert, X509Error> {
        let cert = der::parse_single(der_bytes, tag::SEQUENCE)?;
        let mut outer = Reader::new(cert.body);
        let tbs = outer.read(tag::SEQUENCE)?;
        let sig_alg = outer.read(tag::SEQUENCE)?;
        let sig = outer.read(tag::BIT_STRING)?;
        outer.finish()?;
        check_sha256_rsa(sig_alg.body)?;

        let mut t = Reader::new(tbs.body);
        if t.peek_tag() == Some(tag::CONTEXT_0) {
            t.read_any()?; // version
        }
        t.read(tag::INTEGER)?; // serial
        let inner_alg = t.read(tag::SEQUENCE)?;
        check_sha256_rsa(inner_alg.body)?;
        t.read(tag::SEQUENCE)?; // issuer
        let mut validity = t.read_nested(tag::SEQUENCE)?;
        let not_before = parse_time(&validity.read_any()?)?;
        let not_after = parse_time(&validity.read_any()?)?;
        validity.finish()?;
        t.read(tag::SEQUENCE)?; // subject
        let mut spki = t.read_nested(tag::SEQUENCE)?;
        let mut alg = spki.read_nested(tag::SEQUENCE)?;
        if alg.read(tag::OID)?.raw != der::oid(OID_RSA_ENCRYPTION).as_slice() {
            return Err(X509Error::NotRsa);
        }
        let key_bits = spki.read(tag::BIT_STRING)?;
        let subject_key = tor_rsa::public_key_from_der(der::bit_string_bytes(&key_bits)?)?;
        // Extensions and unique IDs, if any, are ignored: Tor does not look at them.

        let tbs_start = tbs.raw.as_ptr() as usize - der_bytes.as_ptr() as usize;
        Ok(X509Cert {
            der: der_bytes.to_vec(),
            tbs_range: (tbs_start, tbs_start + tbs.raw.len()),
            signature: der::bit_string_bytes(&sig)?.to_vec(),
            subject_key,
            not_before,
            not_after,
        })
    }

    /// The DER encoding.
    pub fn as_der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER encoding (what a type-5 cert certifies; AUTHENTICATE SCERT).
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    pub fn subject_key(&self) -> &RsaPublicKey {
        &self.subject_key
    }

    /// notBefore, seconds since the epoch.
    pub fn not_before_secs(&self) -> u64 {
        self.not_before
    }

    /// notAfter, seconds since the epoch.
    pub fn not_after_secs(&self) -> u64 {
        self.not_after
    }

    /// Checks the signature with `issuer`.
    pub fn verify_signed_by(&self, issuer: &RsaPublicKey) -> Result<(), X509Error> {
        let tbs = &self.der[self.tbs_range.0..self.tbs_range.1];
        tor_rsa::verify_sha256_pkcs1(issuer, tbs, &self.signature)
            .map_err(|_| X509Error::BadSignature)
    }

    /// Checks the validity window with C tor's slop (`tor_x509_check_cert_lifetime_internal`).
    pub fn check_lifetime(
        &self,
        now: SystemTime,
        past_slop: u64,
        future_slop: u64,
    ) -> Result<(), X509Error> {
        let now = unix_secs(now);
        if self.not_before > now.saturating_add(future_slop)
            || self.not_after < now.saturating_sub(past_slop)
        {
            return Err(X509Error::OutsideLifetime);
        }
        Ok(())
    }

    /// The CERTS type-2 check (C `tor_tls_cert_is_valid(.., id_cert, id_cert, now, 1)`):
    /// self-signed, inside its lifetime with the standard slop, RSA key of exactly 1024 bits.
    /// Returns the identity key.
    pub fn check_identity_cert(&self, now: SystemTime) -> Result<&RsaPublicKey, X509Error> {
        self.verify_signed_by(&self.subject_key)?;
        self.check_lifetime(now, X509_PAST_SLOP_SECS, X509_FUTURE_SLOP_SECS)?;
        let bits = self.subject_key.n().bits();
        if bits != 1024 {
            return Err(X509Error::NotRsa1024(bits));
        }
        Ok(&self.subject_key)
    }
}

fn check_sha256_rsa(alg_body: &[u8]) -> Result<(), X509Error> {
    let mut r = Reader::new(alg_body);
    if r.read(tag::OID)?.raw != der::oid(OID_SHA256_WITH_RSA).as_slice() {
        return Err(X509Error::UnsupportedSignatureAlgorithm);
    }
    Ok(())
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` → seconds since the epoch.
fn parse_time(e: &der::Element<'_>) -> Result<u64, X509Error> {
    let s = e.body;
    let digits = |r: std::ops::Range<usize>| -> Result<i64, X509Error> {
        let part = s.get(r).ok_or(X509Error::BadTime)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(X509Error::BadTime);
        }
        Ok(part.iter().fold(0i64, |a, &b| a * 10 + i64::from(b - b'0')))
    };
    let (year, rest) = match (e.tag, s.len()) {
        (tag::UTC_TIME, 13) => {
            let yy = digits(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (tag::GENERALIZED_TIME, 15) => (digits(0..4)?, 4),
        _ => return Err(X509Error::BadTime),
    };
    if s[s.len() - 1] != b'Z' {
        return Err(X509Error::BadTime);
    }
    let month = digits(rest..rest + 2)?;
    let day = digits(rest + 2..rest + 4)?;
    let (h, m, sec) = (
        digits(rest + 4..rest + 6)?,
        digits(rest + 6..rest + 8)?,
        digits(rest + 8..rest + 10)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(X509Error::BadTime);
    }
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86400 + h * 3600 + m * 60 + sec;
    u64::try_from(secs).map_err(|_| X509Error::BadTime)
}

/// Encodes an X.509 time the way OpenSSL does: UTCTime through 2049, GeneralizedTime after.
fn encode_time(secs: u64) -> Vec<u8> {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    if (1950..2050).contains(&y) {
        let txt = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
        der::tlv(tag::UTC_TIME, txt.as_bytes())
    } else {
        let txt = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
        der::tlv(tag::GENERALIZED_TIME, txt.as_bytes())
    }
}

fn name(cn: &str) -> Vec<u8> {
    let atv = der::sequence(&[
        &der::oid(OID_COMMON_NAME),
        &der::tlv(tag::UTF8_STRING, cn.as_bytes()),
    ]);
    der::sequence(&[&der::constructed(tag::SET, &[&atv])])
}

fn sha256_rsa_alg() -> Vec<u8> {
    der::sequence(&[&der::oid(OID_SHA256_WITH_RSA), &der::null()])
}

/// Validity window `[not_before, not_after]` in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

/// Creates an X.509v3 certificate for `subject` signed by `issuer_key`
/// (C `tor_tls_create_certificate`).
pub fn create_certificate<R: RngCore + CryptoRng>(
    rng: &mut R,
    subject: &RsaPublicKey,
    subject_cn: &str,
    issuer_key: &RsaPrivateKey,
    issuer_cn: &str,
    validity: Validity,
) -> Result<Vec<u8>, X509Error> {
    let mut serial = [0u8; 8];
    rng.fill_bytes(&mut serial);
    let spki = der::sequence(&[
        &der::sequence(&[&der::oid(OID_RSA_ENCRYPTION), &der::null()]),
        &der::bit_string(&tor_rsa::public_key_der(subject)?),
    ]);
    let tbs = der::sequence(&[
        &der::constructed(tag::CONTEXT_0, &[&der::small_integer(2)]),
        &der::unsigned_integer(&serial),
        &sha256_rsa_alg(),
        &name(issuer_cn),
        &der::sequence(&[
            &encode_time(validity.not_before),
            &encode_time(validity.not_after),
        ]),
        &name(subject_cn),
        &spki,
    ]);
    let sig = tor_rsa::sign_sha256_pkcs1(issuer_key, &tbs)?;
    Ok(der::sequence(&[
        &tbs,
        &sha256_rsa_alg(),
        &der::bit_string(&sig),
    ]))
}

/// C tor's `tor_tls_pick_certificate_lifetime`: start on a day boundary some random time in
/// the past (so the cert is part-way through its life), end `lifetime` later.
pub fn pick_validity<R: RngCore + CryptoRng>(
    rng: &mut R,
    now: SystemTime,
    lifetime: u64,
) -> Validity {
    const MIN_REAL_LIFETIME: u64 = 86400;
    const START_GRANULARITY: u64 = 86400;
    let now = unix_secs(now);
    let earliest = if lifetime <= MIN_REAL_LIFETIME + START_GRANULARITY {
        now.saturating_sub(1)
    } else {
        (now + MIN_REAL_LIFETIME + START_GRANULARITY).saturating_sub(lifetime)
    };
    let span = now - earliest.min(now);
    let start = earliest + if span == 0 { 0 } else { rng.next_u64() % span };
    let start = start - start % START_GRANULARITY;
    Validity {
        not_before: start,
        not_after: start + lifetime,
    }
}

/// C tor's `router_initialize_tls_context` choice of a TLS certificate lifetime: a whole
/// number of days between 5 and 365, minus one second half of the time.
pub fn pick_link_cert_lifetime<R: RngCore + CryptoRng>(rng: &mut R) -> u64 {
    let (five_days, one_year) = (5 * 86400u64, 365 * 86400u64);
    let mut lifetime = five_days + rng.next_u64() % (one_year - five_days);
    lifetime -= lifetime % 86400;
    if rng.next_u32() & 1 == 1 {
        lifetime -= 1;
    }
    lifetime
}

/// `crypto_random_hostname(8, 20, prefix, suffix)`: prefix, 8–20 random lower-case base32
/// characters, suffix.
pub fn random_hostname<R: RngCore + CryptoRng>(rng: &mut R, prefix: &str, suffix: &str) -> String {
    const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let len = 8 + (rng.next_u32() % 13) as usize;
    let mut s = String::with_capacity(prefix.len() + len + suffix.len());
    s.push_str(prefix);
    for _ in 0..len {
        s.push(BASE32[(rng.next_u32() & 31) as usize] as char);
    }
    s.push_str(suffix);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn identity_cert_round_trip() {
        let mut rng = rand::thread_rng();
        let id = tor_rsa::generate(&mut rng, 1024).unwrap();
        let now = 1_700_000_000;
        let validity = pick_validity(&mut rng, at(now), IDENTITY_CERT_LIFETIME_SECS);
        assert!(validity.not_before <= now && validity.not_after > now + 86400);
        assert_eq!(validity.not_before % 86400, 0);
        let cn = random_hostname(&mut rng, "www.", ".com");
        let der =
            create_certificate(&mut rng, &id.to_public_key(), &cn, &id, &cn, validity).unwrap();
        let cert = X509Cert::parse(&der).unwrap();
        assert_eq!(cert.subject_key(), &id.to_public_key());
        assert_eq!(cert.not_before_secs(), validity.not_before);
        assert_eq!(cert.not_after_secs(), validity.not_after);
        assert_eq!(
            cert.check_identity_cert(at(now)).unwrap(),
            &id.to_public_key()
        );
        // Slop: 2 days after expiry is still accepted, 2 days + 1s is not.
        assert!(cert
            .check_identity_cert(at(validity.not_after + X509_PAST_SLOP_SECS))
            .is_ok());
        assert!(cert
            .check_identity_cert(at(validity.not_after + X509_PAST_SLOP_SECS + 1))
            .is_err());
        assert!(cert
            .check_identity_cert(at(validity.not_before - X509_FUTURE_SLOP_SECS - 1))
            .is_err());

        // Any flipped bit in the TBS part breaks the signature (or the parse).
        let mut bad = der.clone();
        let i = bad.len() / 2;
        bad[i] ^= 1;
        if let Ok(c) = X509Cert::parse(&bad) {
            assert!(c.check_identity_cert(at(now)).is_err());
        }
        // A link cert signed by the identity key.
        let link = tor_rsa::generate(&mut rng, 1024).unwrap();
        let der = create_certificate(
            &mut rng,
            &link.to_public_key(),
            "www.abcdefgh.net",
            &id,
            &cn,
            validity,
        )
        .unwrap();
        let cert = X509Cert::parse(&der).unwrap();
        cert.verify_signed_by(&id.to_public_key()).unwrap();
        assert!(matches!(
            cert.check_identity_cert(at(now)),
            Err(X509Error::BadSignature)
        ));
    }

    #[test]
    fn times_encode_like_openssl() {
        assert_eq!(encode_time(0), der::tlv(tag::UTC_TIME, b"700101000000Z"));
        // 2050-01-01 switches to GeneralizedTime.
        let t2050 = days_from_civil(2050, 1, 1) as u64 * 86400;
        assert_eq!(
            encode_time(t2050),
            der::tlv(tag::GENERALIZED_TIME, b"20500101000000Z")
        );
        for secs in [0u64, 951_782_400, 1_700_000_123, t2050 + 59, 4_102_444_800] {
            let e = encode_time(secs);
            let el = der::parse_single(&e, e[0]).unwrap();
            assert_eq!(parse_time(&el).unwrap(), secs);
        }
    }

    #[test]
    fn hostnames_and_lifetimes() {
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            let h = random_hostname(&mut rng, "www.", ".net");
            let mid = &h[4..h.len() - 4];
            assert!((8..=20).contains(&mid.len()), "{h}");
            assert!(mid
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
            let l = pick_link_cert_lifetime(&mut rng);
            assert!((5 * 86400 - 1..=365 * 86400).contains(&l));
            assert!(l.is_multiple_of(86400) || l % 86400 == 86399);
        }
    }
}
