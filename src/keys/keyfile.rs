//! Pure encoders/parsers for each of C tor's key-file formats (no I/O), so the store, the
//! tests and the fuzzers share one implementation.
//!
//! | file | format |
//! |---|---|
//! | `secret_id_key`, `secret_onion_key[.old]` | PEM "RSA PRIVATE KEY" (PKCS#1) |
//! | `ed25519_master_id_secret_key` | `== ed25519v1-secret: type0 ==` + 64-byte expanded key |
//! | `ed25519_master_id_public_key` | `== ed25519v1-public: type0 ==` + 32 bytes |
//! | `ed25519_signing_secret_key` | `== ed25519v1-secret: type4 ==` + 64 bytes |
//! | `ed25519_signing_cert` | `== ed25519v1-cert: type4 ==` + encoded cert |
//! | `secret_onion_key_ntor[.old]` | `== c25519v1: onion ==` + secret(32) + public(32) |

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::cert::Ed25519Cert;
use super::ed25519::Ed25519Keypair;
use super::error::FileProblem;
use super::rsa as tor_rsa;
use super::tagged;
use rsa::RsaPrivateKey;

pub const ED25519_SECRET_TYPE: &str = "ed25519v1-secret";
pub const ED25519_PUBLIC_TYPE: &str = "ed25519v1-public";
pub const ED25519_CERT_TYPE: &str = "ed25519v1-cert";
pub const CURVE25519_TYPE: &str = "c25519v1";
/// Tag of master identity key files (C: `"type%d"` of cert type 0).
pub const MASTER_TAG: &str = "type0";
/// Tag of signing key files (cert type 4, IDENTITY_V_SIGNING).
pub const SIGNING_TAG: &str = "type4";
/// Tag of ntor key files.
pub const NTOR_TAG: &str = "onion";
/// C reads at most this many cert bytes (`certbuf[256]`).
const MAX_CERT_LEN: usize = 256;

/// Parses a PEM RSA private key file.
pub fn parse_rsa_private_key(contents: &[u8]) -> Result<RsaPrivateKey, FileProblem> {
    let der = Zeroizing::new(super::pem::decode(tor_rsa::PRIVATE_KEY_PEM_TAG, contents)?);
    Ok(tor_rsa::private_key_from_der(&der)?)
}

/// Encodes a PEM RSA private key file.
pub fn encode_rsa_private_key(key: &RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, FileProblem> {
    Ok(Zeroizing::new(
        tor_rsa::private_key_to_pem(key)?.as_bytes().to_vec(),
    ))
}

fn tagged_body<'a>(
    contents: &'a [u8],
    typestring: &str,
    tag: &'static str,
) -> Result<&'a [u8], FileProblem> {
    let (found, body) = tagged::decode(contents, typestring)?;
    if found != tag {
        return Err(FileProblem::WrongTag {
            expected: tag,
            found,
        });
    }
    Ok(body)
}

fn exact<const N: usize>(body: &[u8]) -> Result<[u8; N], FileProblem> {
    body.try_into().map_err(|_| FileProblem::WrongLength {
        expected: N,
        found: body.len(),
    })
}

/// Parses an `ed25519v1-secret` file with the given tag.
pub fn parse_ed25519_secret_key(
    contents: &[u8],
    tag: &'static str,
) -> Result<Ed25519Keypair, FileProblem> {
    let body = tagged_body(contents, ED25519_SECRET_TYPE, tag)?;
    let bytes = Zeroizing::new(exact::<64>(body)?);
    Ok(Ed25519Keypair::from_expanded(&bytes))
}

/// Encodes an `ed25519v1-secret` file.
pub fn encode_ed25519_secret_key(key: &Ed25519Keypair, tag: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(tagged::encode(
        ED25519_SECRET_TYPE,
        tag,
        key.expanded_secret(),
    ))
}

/// Parses an `ed25519v1-public` file.
pub fn parse_ed25519_public_key(
    contents: &[u8],
    tag: &'static str,
) -> Result<[u8; 32], FileProblem> {
    exact::<32>(tagged_body(contents, ED25519_PUBLIC_TYPE, tag)?)
}

/// Encodes an `ed25519v1-public` file.
pub fn encode_ed25519_public_key(key: &[u8; 32], tag: &str) -> Vec<u8> {
    tagged::encode(ED25519_PUBLIC_TYPE, tag, key)
}

/// Parses an `ed25519v1-cert` file.
pub fn parse_ed25519_cert(contents: &[u8], tag: &'static str) -> Result<Ed25519Cert, FileProblem> {
    let body = tagged_body(contents, ED25519_CERT_TYPE, tag)?;
    if body.len() > MAX_CERT_LEN {
        return Err(FileProblem::WrongLength {
            expected: MAX_CERT_LEN,
            found: body.len(),
        });
    }
    Ok(Ed25519Cert::parse(body)?)
}

/// Encodes an `ed25519v1-cert` file.
pub fn encode_ed25519_cert(cert: &Ed25519Cert, tag: &str) -> Vec<u8> {
    tagged::encode(ED25519_CERT_TYPE, tag, cert.as_bytes())
}

/// Parses a `c25519v1` keypair file; the stored public key must match the secret key.
pub fn parse_curve25519_keypair(
    contents: &[u8],
    tag: &'static str,
) -> Result<(StaticSecret, PublicKey), FileProblem> {
    let body = tagged_body(contents, CURVE25519_TYPE, tag)?;
    let both = Zeroizing::new(exact::<64>(body)?);
    let mut sk = Zeroizing::new([0u8; 32]);
    sk.copy_from_slice(&both[..32]);
    let secret = StaticSecret::from(*sk);
    let public = PublicKey::from(&secret);
    if public.as_bytes()[..] != both[32..] {
        return Err(FileProblem::PublicKeyMismatch);
    }
    Ok((secret, public))
}

/// Encodes a `c25519v1` keypair file.
pub fn encode_curve25519_keypair(secret: &StaticSecret, tag: &str) -> Zeroizing<Vec<u8>> {
    let mut both = Zeroizing::new([0u8; 64]);
    both[..32].copy_from_slice(secret.as_bytes());
    both[32..].copy_from_slice(PublicKey::from(secret).as_bytes());
    Zeroizing::new(tagged::encode(CURVE25519_TYPE, tag, &both[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_files_round_trip() {
        let mut rng = rand::thread_rng();
        let k = Ed25519Keypair::generate(&mut rng);
        let f = encode_ed25519_secret_key(&k, MASTER_TAG);
        let back = parse_ed25519_secret_key(&f, MASTER_TAG).unwrap();
        assert_eq!(back.expanded_secret(), k.expanded_secret());
        assert!(matches!(
            parse_ed25519_secret_key(&f, SIGNING_TAG),
            Err(FileProblem::WrongTag { .. })
        ));
        assert!(matches!(
            parse_ed25519_secret_key(&f[..95], MASTER_TAG),
            Err(FileProblem::WrongLength { .. })
        ));

        let p = encode_ed25519_public_key(k.public().as_bytes(), MASTER_TAG);
        assert_eq!(
            &parse_ed25519_public_key(&p, MASTER_TAG).unwrap(),
            k.public().as_bytes()
        );
        assert!(matches!(
            parse_ed25519_secret_key(&p, MASTER_TAG),
            Err(FileProblem::Tagged(_))
        ));
    }

    #[test]
    fn curve25519_file_round_trip_and_mismatch() {
        let mut rng = rand::thread_rng();
        let s = StaticSecret::random_from_rng(&mut rng);
        let f = encode_curve25519_keypair(&s, NTOR_TAG);
        assert_eq!(f.len(), 96);
        let (s2, p2) = parse_curve25519_keypair(&f, NTOR_TAG).unwrap();
        assert_eq!(s2.to_bytes(), s.to_bytes());
        assert_eq!(p2, PublicKey::from(&s));
        let mut bad = f.to_vec();
        bad[95] ^= 1;
        assert!(matches!(
            parse_curve25519_keypair(&bad, NTOR_TAG),
            Err(FileProblem::PublicKeyMismatch)
        ));
    }

    #[test]
    fn rsa_file_errors() {
        assert!(matches!(
            parse_rsa_private_key(b"garbage"),
            Err(FileProblem::Pem(_))
        ));
        let junk_pem = super::super::pem::encode("RSA PRIVATE KEY", b"not der");
        assert!(matches!(
            parse_rsa_private_key(junk_pem.as_bytes()),
            Err(FileProblem::Rsa(_))
        ));
    }
}
