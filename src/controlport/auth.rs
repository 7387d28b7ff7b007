//! ControlPort authentication (control-spec §3.5 AUTHENTICATE, §3.24 AUTHCHALLENGE, §5.1
//! cookie files): the authentication cookie, SAFECOOKIE's HMAC-SHA256 hashes, and
//! `HashedControlPassword`'s salted, iterated SHA-1 (OpenPGP S2K, RFC 2440 §3.6.1.3, as C
//! tor's `secret_to_key_rfc2440`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::quote::{hex_upper, unhex};

/// Length of the authentication cookie (control-spec §5.1).
pub const COOKIE_LEN: usize = 32;
/// Length of the SAFECOOKIE server nonce (control-spec §3.24).
pub const SERVER_NONCE_LEN: usize = 32;
/// HMAC key of the hash the server sends (control-spec §3.24).
pub const SAFECOOKIE_SERVER_KEY: &[u8] =
    b"Tor safe cookie authentication server-to-controller hash";
/// HMAC key of the hash the controller sends back.
pub const SAFECOOKIE_CLIENT_KEY: &[u8] =
    b"Tor safe cookie authentication controller-to-server hash";
/// The S2K exponent bias (RFC 2440 §3.6.1.3 `EXPBIAS`).
const EXPBIAS: u32 = 6;

/// Why authentication material could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot write the control cookie file {path}: {source}")]
    CookieFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HashedControlPassword {0:?} is not \"16:\" followed by 58 hex digits")]
    BadHashedPassword(String),
}

/// Bytes hashed by the S2K for count byte `c`.
pub fn s2k_count(c: u8) -> usize {
    (16 + usize::from(c & 15)) << (u32::from(c >> 4) + EXPBIAS)
}

/// RFC 2440 iterated and salted S2K with SHA-1: `salt || secret` repeated until `count`
/// bytes have been hashed (the last copy cut short).
pub fn s2k_sha1(secret: &[u8], salt: &[u8; 8], c: u8) -> [u8; 20] {
    let mut block = Vec::with_capacity(8 + secret.len());
    block.extend_from_slice(salt);
    block.extend_from_slice(secret);
    let mut left = s2k_count(c);
    let mut h = Sha1::new();
    while left > 0 {
        let n = left.min(block.len());
        h.update(&block[..n]);
        left -= n;
    }
    h.finalize().into()
}

/// One `HashedControlPassword` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedPassword {
    pub salt: [u8; 8],
    pub count: u8,
    pub digest: [u8; 20],
}

impl HashedPassword {
    /// Parses `16:` + hex(salt 8 ‖ count 1 ‖ SHA-1 20).
    pub fn parse(s: &str) -> Result<HashedPassword, AuthError> {
        let bad = || AuthError::BadHashedPassword(s.to_string());
        let hex = s.strip_prefix("16:").ok_or_else(bad)?;
        let b = unhex(hex).map_err(|_| bad())?;
        if b.len() != 29 {
            return Err(bad());
        }
        let mut p = HashedPassword {
            salt: [0; 8],
            count: b[8],
            digest: [0; 20],
        };
        p.salt.copy_from_slice(&b[..8]);
        p.digest.copy_from_slice(&b[9..]);
        Ok(p)
    }

    /// Hashes `password` with a fresh salt and C tor's count byte (96: 65536 bytes), like
    /// `tor --hash-password`.
    pub fn create(password: &[u8], rng: &mut dyn RngCore) -> HashedPassword {
        let mut salt = [0u8; 8];
        rng.fill_bytes(&mut salt);
        let count = 96;
        HashedPassword {
            salt,
            count,
            digest: s2k_sha1(password, &salt, count),
        }
    }

    /// Whether `password` hashes to this value (constant-time comparison).
    pub fn verify(&self, password: &[u8]) -> bool {
        s2k_sha1(password, &self.salt, self.count)
            .ct_eq(&self.digest)
            .into()
    }

    /// The `16:…` text form.
    pub fn to_torrc(&self) -> String {
        let mut b = self.salt.to_vec();
        b.push(self.count);
        b.extend_from_slice(&self.digest);
        format!("16:{}", hex_upper(&b))
    }
}

/// HMAC-SHA256(key, cookie ‖ client nonce ‖ server nonce), SAFECOOKIE's two hashes.
pub fn safecookie_hash(
    key: &[u8],
    cookie: &[u8],
    client_nonce: &[u8],
    server_nonce: &[u8],
) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(cookie);
    m.update(client_nonce);
    m.update(server_nonce);
    m.finalize().into_bytes().into()
}

/// The authentication cookie and the file it was written to.
#[derive(Clone)]
pub struct Cookie {
    pub bytes: [u8; COOKIE_LEN],
    pub path: PathBuf,
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cookie({})", self.path.display())
    }
}

impl Cookie {
    /// A fresh random cookie written to `path` (mode 0600, or 0640 when group-readable),
    /// replacing any old one atomically, as C tor does at every start.
    pub fn create(
        path: &Path,
        group_readable: bool,
        rng: &mut dyn RngCore,
    ) -> Result<Cookie, AuthError> {
        let mut bytes = [0u8; COOKIE_LEN];
        rng.fill_bytes(&mut bytes);
        let err = |source| AuthError::CookieFile {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mode = if group_readable { 0o640 } else { 0o600 };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(err)?;
        // The umask may have narrowed the mode; set it as asked.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(Cookie {
            bytes,
            path: path.to_path_buf(),
        })
    }

    /// Whether `candidate` is the cookie (constant-time comparison).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        candidate.len() == COOKIE_LEN && bool::from(candidate.ct_eq(&self.bytes))
    }
}

/// How controllers may authenticate.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// `CookieAuthentication 1`: COOKIE and SAFECOOKIE.
    pub cookie: Option<Cookie>,
    /// `HashedControlPassword` values: HASHEDPASSWORD.
    pub passwords: Vec<HashedPassword>,
}

impl AuthConfig {
    /// No method configured: any AUTHENTICATE succeeds (NULL).
    pub fn is_open(&self) -> bool {
        self.cookie.is_none() && self.passwords.is_empty()
    }

    /// PROTOCOLINFO's `METHODS=` list.
    pub fn method_names(&self) -> String {
        let mut m = Vec::new();
        if self.is_open() {
            m.push("NULL");
        }
        if self.cookie.is_some() {
            m.push("COOKIE");
            m.push("SAFECOOKIE");
        }
        if !self.passwords.is_empty() {
            m.push("HASHEDPASSWORD");
        }
        m.join(",")
    }

    /// AUTHENTICATE with a plain secret: the cookie itself or a password.
    pub fn check_secret(&self, secret: &[u8]) -> bool {
        if self.is_open() {
            return true;
        }
        let cookie_ok = self.cookie.as_ref().is_some_and(|c| c.matches(secret));
        // Check every password even after a match, so timing says nothing about which.
        let pw_ok = self
            .passwords
            .iter()
            .fold(false, |ok, p| p.verify(secret) | ok);
        cookie_ok | pw_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    /// Output of Debian's `tor --hash-password` (0.4.9.11) for three passwords.
    const VECTORS: &[(&[u8], &str)] = &[
        (
            b"fors-test-password",
            "16:208DBEED17D8CED360996C11C3BB158CB5326796842DDBE220BA14CC1C",
        ),
        (
            b"",
            "16:87FBF6532749F353602490E9D61BA2C4CD7986B001E03A4E3DD3EA5703",
        ),
        (
            b"p@ss \"quoted\" \\ word",
            "16:89220EE78E85AF9160842116A1CC8219BF4C3AFD87FEBBAEF22675DDF4",
        ),
    ];

    #[test]
    fn tor_hash_password_vectors() {
        for (pw, h) in VECTORS {
            let p = HashedPassword::parse(h).unwrap();
            assert_eq!(p.count, 0x60);
            assert!(p.verify(pw), "{h}");
            assert!(!p.verify(b"wrong"), "{h}");
            assert_eq!(p.to_torrc(), *h);
        }
        assert_eq!(s2k_count(0x60), 65536);
        assert_eq!(s2k_count(0), 1024);
        assert_eq!(s2k_count(0xff), 31 << 21);
    }

    #[test]
    fn s2k_matches_a_direct_computation() {
        // Independent: hash the whole repeated stream built as one buffer.
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let secret = b"hunter2";
        let mut stream = Vec::new();
        while stream.len() < 1024 {
            stream.extend_from_slice(&salt);
            stream.extend_from_slice(secret);
        }
        stream.truncate(1024);
        let want: [u8; 20] = Sha1::digest(&stream).into();
        assert_eq!(s2k_sha1(secret, &salt, 0), want);
        let mut rng = rand::thread_rng();
        let p = HashedPassword::create(b"abc", &mut rng);
        assert!(HashedPassword::parse(&p.to_torrc()).unwrap().verify(b"abc"));
        for bad in ["15:00", "16:ZZ", "16:00", "", "16:"] {
            assert!(HashedPassword::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn safecookie_hashes_use_the_spec_keys() {
        let cookie = [0x11u8; 32];
        let cn = [0x22u8; 32];
        let sn = [0x33u8; 32];
        // Computed here the long way: one HMAC over the concatenation.
        let mut concat = cookie.to_vec();
        concat.extend_from_slice(&cn);
        concat.extend_from_slice(&sn);
        for (key, got) in [
            (
                &b"Tor safe cookie authentication server-to-controller hash"[..],
                safecookie_hash(SAFECOOKIE_SERVER_KEY, &cookie, &cn, &sn),
            ),
            (
                &b"Tor safe cookie authentication controller-to-server hash"[..],
                safecookie_hash(SAFECOOKIE_CLIENT_KEY, &cookie, &cn, &sn),
            ),
        ] {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(&concat);
            let want: [u8; 32] = m.finalize().into_bytes().into();
            assert_eq!(got, want);
        }
        assert_ne!(
            safecookie_hash(SAFECOOKIE_SERVER_KEY, &cookie, &cn, &sn),
            safecookie_hash(SAFECOOKIE_CLIENT_KEY, &cookie, &cn, &sn)
        );
    }

    #[test]
    fn cookie_file_mode_and_checks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fors-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control_auth_cookie");
        let mut rng = rand::thread_rng();
        for (group, mode) in [(false, 0o600), (true, 0o640)] {
            let c = Cookie::create(&path, group, &mut rng).unwrap();
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk, c.bytes);
            let m = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode);
            let auth = AuthConfig {
                cookie: Some(c.clone()),
                passwords: vec![],
            };
            assert!(auth.check_secret(&on_disk));
            assert!(!auth.check_secret(&on_disk[..31]));
            assert!(!auth.is_open());
            assert_eq!(auth.method_names(), "COOKIE,SAFECOOKIE");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let open = AuthConfig::default();
        assert!(open.check_secret(b"anything") && open.method_names() == "NULL");
    }
}
