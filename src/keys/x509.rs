//! The two X.509 certificates a Tor relay still needs (tor-spec "Negotiating and initializing
//! channels"; C `lib/tls/x509_openssl.c`, `tortls.c`):
//! - the TLS link certificate: an RSA-2048 link key signed by the identity key (CERTS type 1,
//!   and the cert whose SHA-256 the type-5 Ed25519 cert certifies);
//! - the self-signed RSA-1024 identity certificate (CERTS type 2).
//!
//! Both are X.509v3 with a random 8-byte serial, random `www.<base32>.net|com` common names
//! and `sha256WithRSAEncryption`. The parser extracts only what Tor checks: the RSA subject key,
//! the validity window, and the signature.

use std::time::{Duration, SystemTime};

use rand_core::{CryptoRng, RngCore};
use rsa::pkcs1::der::asn1::{
    AnyRef, BitStringRef, ContextSpecific, GeneralizedTime, IntRef, ObjectIdentifier, SequenceRef,
    UintRef, UtcTime, Utf8StringRef,
};
use rsa::pkcs1::der::{
    self, Decode, Encode, EncodeValue, FixedTag, Length, Reader, SliceReader, Tag, TagMode,
    TagNumber, Tagged, Writer,
};
use rsa::pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::rsa::{self as tor_rsa, RsaError};
use super::time::unix_secs;

/// Identity certificates live a year (C `IDENTITY_CERT_LIFETIME`).
pub const IDENTITY_CERT_LIFETIME_SECS: u64 = 365 * 86400;
/// Accepted clock skew when checking a peer's X.509 validity (C `TOR_X509_PAST_SLOP`).
pub const X509_PAST_SLOP_SECS: u64 = 2 * 86400;
/// C `TOR_X509_FUTURE_SLOP`.
pub const X509_FUTURE_SLOP_SECS: u64 = 30 * 86400;

const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// X.509 failures.
#[derive(Debug, Error)]
pub enum X509Error {
    /// Bad length, wrong tag, truncation, trailing data...: the `der` crate's own words.
    #[error("X.509 certificate is not valid DER: {0}")]
    Der(der::Error),
    #[error("X.509 certificate's subject key is not RSA")]
    NotRsa,
    #[error("X.509 certificate's subject key BIT STRING has unused bits")]
    KeyBitsUnaligned,
    #[error("X.509 certificate's signature BIT STRING has unused bits")]
    SignatureBitsUnaligned,
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
    #[error("cannot DER-encode an X.509 certificate: {0}")]
    Encode(der::Error),
    #[error(transparent)]
    Rsa(#[from] RsaError),
}

impl From<der::Error> for X509Error {
    fn from(e: der::Error) -> Self {
        X509Error::Der(e)
    }
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

/// What [`X509Cert::parse`] takes from the TBSCertificate (RFC 5280 §4.1).
struct TbsFields<'a> {
    signature_alg: ObjectIdentifier,
    not_before: AnyRef<'a>,
    not_after: AnyRef<'a>,
    spki: SubjectPublicKeyInfoRef<'a>,
}

impl X509Cert {
    /// Parses a DER certificate whose subject key is RSA. The `der` crate does the ASN.1:
    /// definite lengths only, no trailing bytes, tags as RFC 5280 §4.1 has them.
    pub fn parse(der_bytes: &[u8]) -> Result<X509Cert, X509Error> {
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
        let mut reader = SliceReader::new(der_bytes)?;
        let (tbs, sig_alg, sig) = reader.sequence(|outer| {
            // Kept as its exact bytes: the signature covers the TBSCertificate as encoded.
            let tbs = outer.tlv_bytes()?;
            let sig_alg = AlgorithmIdentifierRef::decode(outer)?;
            let sig = BitStringRef::decode(outer)?;
            Ok((tbs, sig_alg, sig))
        })?;
        reader.finish(())?;
        if sig_alg.oid != OID_SHA256_WITH_RSA {
            return Err(X509Error::UnsupportedSignatureAlgorithm);
        }

        let fields = SliceReader::new(tbs)?.sequence(|t| {
            // version [0] EXPLICIT (absent means v1), serialNumber: Tor looks at neither.
            ContextSpecific::<u8>::decode_explicit(t, TagNumber::N0)?;
            IntRef::decode(t)?;
            let signature_alg = AlgorithmIdentifierRef::decode(t)?.oid;
            SequenceRef::decode(t)?; // issuer
            let (not_before, not_after) =
                t.sequence(|v| Ok((AnyRef::decode(v)?, AnyRef::decode(v)?)))?;
            SequenceRef::decode(t)?; // subject
            let spki = SubjectPublicKeyInfoRef::decode(t)?;
            // issuerUniqueID, subjectUniqueID, extensions: Tor does not look at them.
            while !t.is_finished() {
                AnyRef::decode(t)?;
            }
            Ok(TbsFields {
                signature_alg,
                not_before,
                not_after,
                spki,
            })
        })?; // `tbs` is one whole TLV, so nothing can follow its SEQUENCE.
        if fields.signature_alg != OID_SHA256_WITH_RSA {
            return Err(X509Error::UnsupportedSignatureAlgorithm);
        }
        if fields.spki.algorithm.oid != OID_RSA_ENCRYPTION {
            return Err(X509Error::NotRsa);
        }
        let key_der = fields
            .spki
            .subject_public_key
            .as_bytes()
            .ok_or(X509Error::KeyBitsUnaligned)?;
        let subject_key = tor_rsa::public_key_from_der(key_der)?;
        let signature = sig.as_bytes().ok_or(X509Error::SignatureBitsUnaligned)?;

        // `tbs` borrows from `der_bytes`, so its offset there is a pointer difference.
        let tbs_start = tbs.as_ptr() as usize - der_bytes.as_ptr() as usize;
        Ok(X509Cert {
            der: der_bytes.to_vec(),
            tbs_range: (tbs_start, tbs_start + tbs.len()),
            signature: signature.to_vec(),
            subject_key,
            not_before: parse_time(fields.not_before)?,
            not_after: parse_time(fields.not_after)?,
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

/// UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5) → seconds since the epoch; the `der`
/// crate checks the `YYMMDDHHMMSSZ` / `YYYYMMDDHHMMSSZ` forms and the calendar.
fn parse_time(any: AnyRef<'_>) -> Result<u64, X509Error> {
    let since_epoch = match any.tag() {
        Tag::UtcTime => any.decode_as::<UtcTime>().map(|t| t.to_unix_duration()),
        Tag::GeneralizedTime => any
            .decode_as::<GeneralizedTime>()
            .map(|t| t.to_unix_duration()),
        _ => return Err(X509Error::BadTime),
    };
    since_epoch
        .map(|d| d.as_secs())
        .map_err(|_| X509Error::BadTime)
}

/// An X.509 time as OpenSSL writes it: UTCTime through 2049, GeneralizedTime after
/// (RFC 5280 §4.1.2.5).
enum Time {
    Utc(UtcTime),
    Generalized(GeneralizedTime),
}

impl Time {
    fn from_unix(secs: u64) -> Result<Time, der::Error> {
        let d = Duration::from_secs(secs);
        // UtcTime refuses 2050 and later (its two-digit years end in 2049).
        match UtcTime::from_unix_duration(d) {
            Ok(t) => Ok(Time::Utc(t)),
            Err(_) => GeneralizedTime::from_unix_duration(d).map(Time::Generalized),
        }
    }
}

impl Encode for Time {
    fn encoded_len(&self) -> der::Result<Length> {
        match self {
            Time::Utc(t) => t.encoded_len(),
            Time::Generalized(t) => t.encoded_len(),
        }
    }

    fn encode(&self, writer: &mut impl Writer) -> der::Result<()> {
        match self {
            Time::Utc(t) => t.encode(writer),
            Time::Generalized(t) => t.encode(writer),
        }
    }
}

/// `impl FixedTag + EncodeValue` for a SEQUENCE or SET whose contents are the listed fields
/// in order; the `der` crate then supplies tag and length (`Encode`).
macro_rules! der_constructed {
    ($ty:ty, $tag:expr, |$s:ident| [$($field:expr),+ $(,)?]) => {
        impl FixedTag for $ty {
            const TAG: Tag = $tag;
        }
        impl EncodeValue for $ty {
            fn value_len(&self) -> der::Result<Length> {
                let $s = self;
                let mut len = Length::ZERO;
                $(len = (len + $field.encoded_len()?)?;)+
                Ok(len)
            }
            fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
                let $s = self;
                $($field.encode(writer)?;)+
                Ok(())
            }
        }
    };
}

/// `AttributeTypeAndValue` for a commonName (RFC 5280 §4.1.2.4).
struct CommonName<'a>(Utf8StringRef<'a>);
der_constructed!(CommonName<'_>, Tag::Sequence, |s| [OID_COMMON_NAME, s.0]);

/// A `RelativeDistinguishedName` of one attribute.
struct Rdn<'a>(CommonName<'a>);
der_constructed!(Rdn<'_>, Tag::Set, |s| [s.0]);

/// A `Name` of one RDN, `CN=<cn>`: what C tor puts in issuer and subject.
struct Name<'a>(Rdn<'a>);
der_constructed!(Name<'_>, Tag::Sequence, |s| [s.0]);

impl<'a> Name<'a> {
    fn common_name(cn: &'a str) -> Result<Self, der::Error> {
        Ok(Name(Rdn(CommonName(Utf8StringRef::new(cn)?))))
    }
}

/// `Validity` (RFC 5280 §4.1.2.5).
struct ValidityTimes {
    not_before: Time,
    not_after: Time,
}
der_constructed!(ValidityTimes, Tag::Sequence, |s| [
    s.not_before,
    s.not_after
]);

/// TBSCertificate (RFC 5280 §4.1) as C tor makes it: v3, no extensions.
struct TbsCertificate<'a> {
    version: ContextSpecific<u8>,
    serial: UintRef<'a>,
    signature: AlgorithmIdentifierRef<'a>,
    issuer: Name<'a>,
    validity: ValidityTimes,
    subject: Name<'a>,
    spki: SubjectPublicKeyInfoRef<'a>,
}
der_constructed!(TbsCertificate<'_>, Tag::Sequence, |s| [
    s.version,
    s.serial,
    s.signature,
    s.issuer,
    s.validity,
    s.subject,
    s.spki
]);

/// Certificate: the TBSCertificate's exact bytes (which the signature covers), the
/// algorithm and the signature.
struct Certificate<'a> {
    tbs_der: &'a [u8],
    algorithm: AlgorithmIdentifierRef<'a>,
    signature: BitStringRef<'a>,
}

impl FixedTag for Certificate<'_> {
    const TAG: Tag = Tag::Sequence;
}

impl EncodeValue for Certificate<'_> {
    fn value_len(&self) -> der::Result<Length> {
        let tbs = Length::try_from(self.tbs_der.len())?;
        (tbs + self.algorithm.encoded_len()?)? + self.signature.encoded_len()?
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.tbs_der)?;
        self.algorithm.encode(writer)?;
        self.signature.encode(writer)
    }
}

/// `AlgorithmIdentifier { oid, NULL }` (RFC 4055 §5: RSA algorithms carry NULL parameters).
fn with_null_params(oid: ObjectIdentifier) -> AlgorithmIdentifierRef<'static> {
    AlgorithmIdentifierRef {
        oid,
        parameters: Some(AnyRef::NULL),
    }
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
    let subject_key_der = tor_rsa::public_key_der(subject)?;
    let tbs = TbsCertificate {
        version: ContextSpecific {
            tag_number: TagNumber::N0,
            tag_mode: TagMode::Explicit,
            value: 2, // v3
        },
        serial: UintRef::new(&serial).map_err(X509Error::Encode)?,
        signature: with_null_params(OID_SHA256_WITH_RSA),
        issuer: Name::common_name(issuer_cn).map_err(X509Error::Encode)?,
        validity: ValidityTimes {
            not_before: Time::from_unix(validity.not_before).map_err(X509Error::Encode)?,
            not_after: Time::from_unix(validity.not_after).map_err(X509Error::Encode)?,
        },
        subject: Name::common_name(subject_cn).map_err(X509Error::Encode)?,
        spki: SubjectPublicKeyInfoRef {
            algorithm: with_null_params(OID_RSA_ENCRYPTION),
            subject_public_key: BitStringRef::from_bytes(&subject_key_der)
                .map_err(X509Error::Encode)?,
        },
    }
    .to_der()
    .map_err(X509Error::Encode)?;
    let sig = tor_rsa::sign_sha256_pkcs1(issuer_key, &tbs)?;
    Certificate {
        tbs_der: &tbs,
        algorithm: with_null_params(OID_SHA256_WITH_RSA),
        signature: BitStringRef::from_bytes(&sig).map_err(X509Error::Encode)?,
    }
    .to_der()
    .map_err(X509Error::Encode)
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
    use crate::keys::time::days_from_civil;
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
        let utc = |t: &[u8]| UtcTime::from_der(t).unwrap().to_der().unwrap();
        assert_eq!(
            Time::from_unix(0).unwrap().to_der().unwrap(),
            [&[0x17, 13][..], b"700101000000Z"].concat()
        );
        assert_eq!(
            utc(&Time::from_unix(0).unwrap().to_der().unwrap()),
            Time::from_unix(0).unwrap().to_der().unwrap()
        );
        // 2050-01-01 switches to GeneralizedTime.
        let t2050 = days_from_civil(2050, 1, 1) as u64 * 86400;
        assert_eq!(
            Time::from_unix(t2050).unwrap().to_der().unwrap(),
            [&[0x18, 15][..], b"20500101000000Z"].concat()
        );
        for secs in [
            0u64,
            951_782_400,
            1_700_000_123,
            t2050 - 1,
            t2050 + 59,
            4_102_444_800,
        ] {
            let e = Time::from_unix(secs).unwrap().to_der().unwrap();
            assert_eq!(parse_time(AnyRef::from_der(&e).unwrap()).unwrap(), secs);
        }
        // Not a time, or a time the calendar does not have.
        for bad in [
            &[0x02, 0x01, 0x05][..],
            &[&[0x17, 13][..], b"701301000000Z"].concat(),
            &[&[0x17, 13][..], b"700230000000Z"].concat(),
            &[&[0x17, 11][..], b"7001010000Z"].concat(),
            &[&[0x18, 15][..], b"20500101000000+"].concat(),
        ] {
            let any = AnyRef::from_der(bad).unwrap();
            assert!(
                matches!(parse_time(any), Err(X509Error::BadTime)),
                "{bad:02x?}"
            );
        }
    }

    /// Signs `tbs` with `key` and wraps it as a Certificate with `alg` and a signature whose
    /// BIT STRING has `unused` unused bits.
    fn wrap(
        tbs: TbsCertificate<'_>,
        key: &RsaPrivateKey,
        alg: ObjectIdentifier,
        unused: u8,
    ) -> Vec<u8> {
        let tbs = tbs.to_der().unwrap();
        let sig = tor_rsa::sign_sha256_pkcs1(key, &tbs).unwrap();
        Certificate {
            tbs_der: &tbs,
            algorithm: with_null_params(alg),
            signature: BitStringRef::new(unused, &sig).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    fn tbs<'a>(key_der: &'a [u8], key_alg: ObjectIdentifier, unused: u8) -> TbsCertificate<'a> {
        TbsCertificate {
            version: ContextSpecific {
                tag_number: TagNumber::N0,
                tag_mode: TagMode::Explicit,
                value: 2,
            },
            serial: UintRef::new(&[0x80, 1]).unwrap(),
            signature: with_null_params(OID_SHA256_WITH_RSA),
            issuer: Name::common_name("www.a.com").unwrap(),
            validity: ValidityTimes {
                not_before: Time::from_unix(1_700_000_000).unwrap(),
                not_after: Time::from_unix(1_800_000_000).unwrap(),
            },
            subject: Name::common_name("www.a.com").unwrap(),
            spki: SubjectPublicKeyInfoRef {
                algorithm: with_null_params(key_alg),
                subject_public_key: BitStringRef::new(unused, key_der).unwrap(),
            },
        }
    }

    /// Malformed DER and wrong contents give typed errors, never a panic.
    #[test]
    fn rejects_malformed_certificates() {
        use der::ErrorKind;
        let seed = rand::random::<u64>();
        println!("seed {seed}");
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let key = tor_rsa::generate(&mut rng, 1024).unwrap();
        let key_der = tor_rsa::public_key_der(&key.to_public_key()).unwrap();
        let good = wrap(
            tbs(&key_der, OID_RSA_ENCRYPTION, 0),
            &key,
            OID_SHA256_WITH_RSA,
            0,
        );
        X509Cert::parse(&good)
            .unwrap()
            .verify_signed_by(&key.to_public_key())
            .unwrap();
        let kind = |der: &[u8]| match X509Cert::parse(der) {
            Err(X509Error::Der(e)) => e.kind(),
            other => panic!("expected a DER error, got {other:?}"),
        };

        // Trailing data after the certificate.
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(kind(&trailing), ErrorKind::TrailingData { .. }));
        // Truncated.
        assert!(matches!(
            kind(&good[..good.len() - 1]),
            ErrorKind::Incomplete { .. } | ErrorKind::Length { .. }
        ));
        // Wrong outer tag (SET instead of SEQUENCE).
        let mut wrong_tag = good.clone();
        wrong_tag[0] = 0x31;
        assert!(matches!(kind(&wrong_tag), ErrorKind::TagUnexpected { .. }));
        // Bad lengths: indefinite (BER only), and a length longer than the input.
        assert_eq!(good[1], 0x82, "a 1024-bit cert needs a two-byte length");
        let mut indefinite = good.clone();
        indefinite[1] = 0x80;
        assert!(matches!(
            kind(&indefinite),
            ErrorKind::IndefiniteLength | ErrorKind::Length { .. }
        ));
        let mut too_long = good.clone();
        too_long[3] = too_long[3].wrapping_add(1);
        assert!(matches!(
            kind(&too_long),
            ErrorKind::Incomplete { .. } | ErrorKind::Length { .. }
        ));
        // A non-minimal length (0x83 00 xx xx) is BER, not DER.
        let mut long_form = vec![0x30, 0x83, 0x00];
        long_form.extend_from_slice(&good[2..]);
        assert!(matches!(
            X509Cert::parse(&long_form),
            Err(X509Error::Der(_))
        ));
        assert!(matches!(X509Cert::parse(&[]), Err(X509Error::Der(_))));

        // Well-formed DER with contents Tor refuses.
        let ec = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
        assert!(matches!(
            X509Cert::parse(&wrap(tbs(&key_der, ec, 0), &key, OID_SHA256_WITH_RSA, 0)),
            Err(X509Error::NotRsa)
        ));
        assert!(matches!(
            X509Cert::parse(&wrap(
                tbs(&key_der, OID_RSA_ENCRYPTION, 1),
                &key,
                OID_SHA256_WITH_RSA,
                0
            )),
            Err(X509Error::KeyBitsUnaligned)
        ));
        assert!(matches!(
            X509Cert::parse(&wrap(
                tbs(&key_der, OID_RSA_ENCRYPTION, 0),
                &key,
                OID_SHA256_WITH_RSA,
                3
            )),
            Err(X509Error::SignatureBitsUnaligned)
        ));
        assert!(matches!(
            X509Cert::parse(&wrap(
                tbs(&key_der, OID_RSA_ENCRYPTION, 0),
                &key,
                OID_RSA_ENCRYPTION,
                0
            )),
            Err(X509Error::UnsupportedSignatureAlgorithm)
        ));
        assert!(matches!(
            X509Cert::parse(&wrap(
                tbs(b"\x30\x00", OID_RSA_ENCRYPTION, 0),
                &key,
                OID_SHA256_WITH_RSA,
                0
            )),
            Err(X509Error::Rsa(RsaError::BadPublicKey(_)))
        ));
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
