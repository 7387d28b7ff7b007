//! Happy-family keys (proposal 321) as C tor 0.4.9 keeps them.
//!
//! - `--keygen-family NAME` writes `NAME.secret_family_key` (an `ed25519v1-secret` file with
//!   tag `fmly-id`, the same tagged format as the identity keys) and `NAME.public_family_id`
//!   (the family ID, unpadded base64, and a newline), overwriting both as C tor does.
//! - With any `FamilyId` set, every `*.secret_family_key` file in the family key directory
//!   (`FamilyKeyDirectory`, else the key directory) is read; one that does not parse is an
//!   error, as in C tor. `FamilyId *` uses all of them; `FamilyId <id>` needs its key there.
//! - Each key in use signs a `family-cert` (cert-spec type 0x0c, FAMILY_V_IDENTITY) over the
//!   relay's Ed25519 identity, carrying the family key in the signed-with-key extension
//!   (prop 321 "Design overview"), valid for 30 days from the descriptor's `published`
//!   time like C tor's `FAMILY_CERT_LIFETIME`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rand::{CryptoRng, RngCore};

use super::cert::{CertError, CertKeyType, CertType, Ed25519Cert};
use super::ed25519::Ed25519Keypair;
use super::error::KeyError;
use super::keyfile::{encode_ed25519_secret_key, parse_ed25519_secret_key};
use super::store::write_atomic;
use crate::config::FamilyId;
use crate::crypto::ids::Ed25519Identity;

/// Suffix of family secret key files (C tor's `--keygen-family`, man page "FamilyId").
pub const SECRET_KEY_SUFFIX: &str = ".secret_family_key";
/// Suffix of the file holding the family ID that `--keygen-family` writes next to the key.
pub const PUBLIC_ID_SUFFIX: &str = ".public_family_id";
/// Tag in the key file's header: `== ed25519v1-secret: fmly-id ==`.
pub const FAMILY_KEY_TAG: &str = "fmly-id";
/// C tor 0.4.9 `FAMILY_CERT_LIFETIME` (router.c): 30 days from the descriptor's publication.
/// Descriptors are rebuilt at least every 18 hours (`dir::publish::FORCE_REGENERATE_SECS`),
/// each with freshly minted certs, so a published cert always has weeks left.
pub const FAMILY_CERT_LIFETIME_SECS: u64 = 30 * 86400;

/// A family key and the file it came from.
pub struct FamilyKey {
    pub path: PathBuf,
    pub key: Ed25519Keypair,
}

impl FamilyKey {
    /// The family ID: the public key, as `FamilyId` and `family-keys` spell it.
    pub fn id(&self) -> Ed25519Identity {
        self.key.identity()
    }
}

/// Shows family IDs and files, never secret material.
impl std::fmt::Debug for FamilyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FamilyKey")
            .field("path", &self.path)
            .field("id", &self.id().to_base64())
            .finish()
    }
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(base.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// `--keygen-family BASE`: a new family key in `BASE.secret_family_key` and its ID in
/// `BASE.public_family_id` (both mode 0600, written atomically, replacing existing files as
/// C tor does). Returns the family ID.
pub fn generate_family_key<R: RngCore + CryptoRng>(
    base: &Path,
    rng: &mut R,
) -> Result<Ed25519Identity, KeyError> {
    let key = Ed25519Keypair::generate(rng);
    let id = key.identity();
    write_atomic(
        &with_suffix(base, SECRET_KEY_SUFFIX),
        &encode_ed25519_secret_key(&key, FAMILY_KEY_TAG),
    )?;
    write_atomic(
        &with_suffix(base, PUBLIC_ID_SUFFIX),
        format!("{}\n", id.to_base64()).as_bytes(),
    )?;
    Ok(id)
}

/// Reads one family key file. Anything but a well-formed `fmly-id` secret key is an error.
pub fn read_family_key(path: &Path) -> Result<FamilyKey, KeyError> {
    let contents = zeroize::Zeroizing::new(
        fs::read(path).map_err(|e| KeyError::io("read family key", path, e))?,
    );
    let key = parse_ed25519_secret_key(&contents, FAMILY_KEY_TAG)
        .map_err(|p| KeyError::corrupt(path, p))?;
    Ok(FamilyKey {
        path: path.to_path_buf(),
        key,
    })
}

/// Every `*.secret_family_key` in `dir`, sorted by file name. A directory that cannot be
/// listed or a key that cannot be read is an error (C tor refuses to start).
pub fn read_family_key_dir(dir: &Path) -> Result<Vec<FamilyKey>, KeyError> {
    let entries = fs::read_dir(dir).map_err(|e| KeyError::io("list contents of", dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| KeyError::io("list contents of", dir, e))?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(SECRET_KEY_SUFFIX)
        {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths.iter().map(|p| read_family_key(p)).collect()
}

/// The family keys the configuration asks for, in `FamilyId` order without duplicates:
/// nothing (and no file read) without `FamilyId`; all keys in `dir` for `FamilyId *`;
/// each listed ID must have its key in `dir`.
pub fn load_family_keys(dir: &Path, wanted: &[FamilyId]) -> Result<Vec<FamilyKey>, KeyError> {
    Ok(load_family_keys_and_unlisted(dir, wanted)?.0)
}

/// As [`load_family_keys`], also returning the keys found in `dir` that no `FamilyId` names
/// (C tor warns about each: "Found secret family key in … with unexpected FamilyID …").
pub fn load_family_keys_and_unlisted(
    dir: &Path,
    wanted: &[FamilyId],
) -> Result<(Vec<FamilyKey>, Vec<FamilyKey>), KeyError> {
    if wanted.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let found = read_family_key_dir(dir)?;
    for w in wanted {
        if let FamilyId::Key(id) = w {
            if !found.iter().any(|k| k.id() == *id) {
                return Err(KeyError::FamilyKeyMissing {
                    id: id.to_base64(),
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    let all = wanted.contains(&FamilyId::All);
    let mut chosen: Vec<FamilyKey> = Vec::new();
    let order: Vec<Ed25519Identity> = if all {
        found.iter().map(FamilyKey::id).collect()
    } else {
        wanted
            .iter()
            .filter_map(|w| match w {
                FamilyId::Key(id) => Some(*id),
                FamilyId::All => None,
            })
            .collect()
    };
    let mut found: Vec<Option<FamilyKey>> = found.into_iter().map(Some).collect();
    for id in order {
        if chosen.iter().any(|k| k.id() == id) {
            continue;
        }
        // Two files may hold the same key; the first (by name) is used.
        if let Some(k) = found
            .iter_mut()
            .find(|k| k.as_ref().is_some_and(|k| k.id() == id))
            .and_then(Option::take)
        {
            chosen.push(k);
        }
    }
    let unlisted = found
        .into_iter()
        .flatten()
        .filter(|k| !chosen.iter().any(|c| c.id() == k.id()))
        .collect();
    Ok((chosen, unlisted))
}

/// The `family-cert` for `identity` (the relay's Ed25519 master identity) signed by `family`
/// at `published`.
pub fn mint_family_cert(
    family: &Ed25519Keypair,
    identity: &Ed25519Identity,
    published: SystemTime,
) -> Ed25519Cert {
    Ed25519Cert::sign(
        family,
        CertType::FAMILY_V_IDENTITY,
        CertKeyType::ED25519,
        &identity.0,
        published,
        FAMILY_CERT_LIFETIME_SECS,
        true,
    )
}

/// Checks a `family-cert` as a prop-321 reader must: type 0x0c, certifying `identity`, with
/// the family key in the signed-with-key extension, and a good signature by that key (and not
/// expired at `now`, if given). Returns the family ID.
pub fn verify_family_cert(
    cert: &Ed25519Cert,
    identity: &Ed25519Identity,
    now: Option<SystemTime>,
) -> Result<Ed25519Identity, CertError> {
    cert.expect_type(CertType::FAMILY_V_IDENTITY)?;
    if cert.key_type != CertKeyType::ED25519 || cert.certified_key != identity.0 {
        return Err(CertError::WrongCertifiedKey);
    }
    let family = cert.signing_key.ok_or(CertError::MissingSigningKey)?;
    cert.verify(None, now)?;
    Ok(Ed25519Identity(family))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::time::unix_secs;
    use rand::SeedableRng;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    fn rng() -> rand::rngs::StdRng {
        let seed = rand::random::<u64>();
        println!("seed {seed}");
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fors-family-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keygen_writes_c_tor_files() {
        let mut rng = rng();
        let d = tmpdir("keygen");
        let id = generate_family_key(&d.join("Foo"), &mut rng).unwrap();
        let secret = fs::read(d.join("Foo.secret_family_key")).unwrap();
        assert_eq!(secret.len(), 96);
        assert_eq!(&secret[..32], b"== ed25519v1-secret: fmly-id ==\0");
        let public = fs::read_to_string(d.join("Foo.public_family_id")).unwrap();
        assert_eq!(public, format!("{}\n", id.to_base64()));
        assert_eq!(public.len(), 44);
        for f in ["Foo.secret_family_key", "Foo.public_family_id"] {
            let mode = fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let k = read_family_key(&d.join("Foo.secret_family_key")).unwrap();
        assert_eq!(k.id(), id);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn loading_follows_family_id() {
        let mut rng = rng();
        let d = tmpdir("load");
        let a = generate_family_key(&d.join("a"), &mut rng).unwrap();
        let b = generate_family_key(&d.join("b"), &mut rng).unwrap();
        let ids = |v: Vec<FamilyKey>| v.iter().map(FamilyKey::id).collect::<Vec<_>>();
        // No FamilyId: nothing is read, so even a missing directory is fine.
        assert!(load_family_keys(&d.join("nope"), &[]).unwrap().is_empty());
        assert_eq!(ids(load_family_keys(&d, &[FamilyId::All]).unwrap()), [a, b]);
        assert_eq!(
            ids(load_family_keys(&d, &[FamilyId::Key(b), FamilyId::Key(b)]).unwrap()),
            [b]
        );
        assert_eq!(
            ids(load_family_keys(&d, &[FamilyId::Key(b), FamilyId::All]).unwrap()),
            [a, b]
        );
        let (used, unlisted) = load_family_keys_and_unlisted(&d, &[FamilyId::Key(a)]).unwrap();
        assert_eq!((ids(used), ids(unlisted)), (vec![a], vec![b]));
        let missing = Ed25519Identity([7; 32]);
        let e = load_family_keys(&d, &[FamilyId::Key(missing)]).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "No key was found for listed FamilyID {}",
                missing.to_base64()
            )),
            "{e}"
        );
        let e = load_family_keys(&d.join("nope"), &[FamilyId::All]).unwrap_err();
        assert!(e.to_string().contains("cannot list contents of"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_or_foreign_key_file_is_an_error() {
        let mut rng = rng();
        let d = tmpdir("corrupt");
        let a = generate_family_key(&d.join("a"), &mut rng).unwrap();
        let good = fs::read(d.join("a.secret_family_key")).unwrap();
        // Truncated.
        fs::write(d.join("t.secret_family_key"), &good[..50]).unwrap();
        let e = load_family_keys(&d, &[FamilyId::Key(a)]).unwrap_err();
        assert!(matches!(e, KeyError::Corrupt { .. }), "{e}");
        fs::remove_file(d.join("t.secret_family_key")).unwrap();
        // An identity key (tag type0) is not a family key.
        let other = Ed25519Keypair::generate(&mut rng);
        fs::write(
            d.join("m.secret_family_key"),
            encode_ed25519_secret_key(&other, crate::keys::keyfile::MASTER_TAG),
        )
        .unwrap();
        let e = load_family_keys(&d, &[FamilyId::All]).unwrap_err();
        assert!(matches!(e, KeyError::Corrupt { .. }), "{e}");
        // The file is left as it was.
        assert!(d.join("m.secret_family_key").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn family_cert_round_trips_through_the_cert_parser() {
        let mut rng = rng();
        let family = Ed25519Keypair::generate(&mut rng);
        let relay = Ed25519Keypair::generate(&mut rng).identity();
        let published = UNIX_EPOCH + Duration::from_secs(1_700_000_123);
        let cert = mint_family_cert(&family, &relay, published);
        let parsed = Ed25519Cert::parse(cert.as_bytes()).unwrap();
        // cert-spec §2.1: version 1, type 0x0c, key type 1, one signed-with-key extension.
        let b = cert.as_bytes();
        assert_eq!(b.len(), 40 + 4 + 32 + 64);
        assert_eq!((b[0], b[1], b[6], b[39]), (1, 0x0c, 1, 1));
        assert_eq!(&b[40..44], &[0, 32, 4, 0]);
        assert_eq!(parsed.cert_type, CertType::FAMILY_V_IDENTITY);
        assert_eq!(parsed.certified_key, relay.0);
        assert_eq!(parsed.signing_key, Some(family.identity().0));
        // Expiry: the hour at or after published + 30 days.
        let want = (1_700_000_123u64 + 30 * 86400).div_ceil(3600);
        assert_eq!(u64::from(parsed.expiration_hours), want);
        assert_eq!(
            verify_family_cert(&parsed, &relay, Some(published)).unwrap(),
            family.identity()
        );
        // Wrong relay, expired, tampered.
        assert!(verify_family_cert(&parsed, &Ed25519Identity([1; 32]), None).is_err());
        let late = UNIX_EPOCH + Duration::from_secs(want * 3600 + 1);
        assert!(matches!(
            verify_family_cert(&parsed, &relay, Some(late)),
            Err(CertError::Expired { .. })
        ));
        let mut bad = b.to_vec();
        bad[10] ^= 1;
        let bad = Ed25519Cert::parse(&bad).unwrap();
        assert!(verify_family_cert(&bad, &Ed25519Identity(bad.certified_key), None).is_err());
    }

    #[test]
    fn certs_outlive_the_descriptor_rebuild_interval() {
        // A descriptor is rebuilt (and its certs re-minted) at least every 18 hours; the
        // certs must stay valid well past that, as in C tor.
        let lifetime = FAMILY_CERT_LIFETIME_SECS;
        assert!(lifetime > 10 * crate::dir::publish::FORCE_REGENERATE_SECS);
        let now = SystemTime::now();
        let mut rng = rng();
        let c = mint_family_cert(
            &Ed25519Keypair::generate(&mut rng),
            &Ed25519Identity([3; 32]),
            now,
        );
        assert!(c.expires_at_secs() >= unix_secs(now) + lifetime);
    }
}
