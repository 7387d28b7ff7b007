//! Key derivation functions used by the circuit handshakes (tor-spec §"Setting circuit keys").
//!
//! * KDF-TOR: iterated SHA-1 (`SHA1(K0 | [0]) | SHA1(K0 | [1]) | ...`), used by CREATE_FAST.
//! * KDF-RFC5869: HKDF-SHA256 as ntor uses it (salt = `t_key`, info = `m_expand`).
//! * SHAKE-256 with ntor-v3's length-prefixed `ENCAP` framing (proposal 332).

use digest::{Digest, ExtendableOutput, Update, XofReader};
use sha1::Sha1;
use sha2::Sha256;
use sha3::{Shake256, Shake256Reader};
use zeroize::Zeroize;

/// Why a KDF could not produce the requested output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    /// The caller asked for more bytes than the construction can produce without repeating.
    #[error("KDF output of {requested} bytes requested, at most {max} possible")]
    OutputTooLong {
        /// Bytes asked for.
        requested: usize,
        /// Largest output the KDF supports.
        max: usize,
    },
}

/// SHA-1 output length: one KDF-TOR block.
const SHA1_LEN: usize = 20;
/// KDF-TOR's counter is a single byte, so 256 blocks is the most it can emit.
pub const KDF_TOR_MAX_OUTPUT: usize = SHA1_LEN * 256;
/// RFC 5869 limits HKDF output to 255 hash blocks.
pub const HKDF_SHA256_MAX_OUTPUT: usize = 32 * 255;

/// KDF-TOR (tor-spec §"KDF-TOR"): fills `out` with `SHA1(seed | [i])` for i = 0, 1, ...
pub fn kdf_tor(seed: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    if out.len() > KDF_TOR_MAX_OUTPUT {
        return Err(KdfError::OutputTooLong {
            requested: out.len(),
            max: KDF_TOR_MAX_OUTPUT,
        });
    }
    let mut prefix = Sha1::new();
    Digest::update(&mut prefix, seed);
    for (i, chunk) in out.chunks_mut(SHA1_LEN).enumerate() {
        let mut h = prefix.clone();
        // i < 256 by the length check above.
        Digest::update(&mut h, [i as u8]);
        let mut block = h.finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
        block.as_mut_slice().zeroize();
    }
    Ok(())
}

/// KDF-RFC5869 with SHA-256 (tor-spec §"KDF-RFC5869"): HKDF-Extract(salt, ikm) followed by
/// HKDF-Expand(info) into `out`.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand(info, out).map_err(|_| KdfError::OutputTooLong {
        requested: out.len(),
        max: HKDF_SHA256_MAX_OUTPUT,
    })
}

/// ntor-v3's `ENCAP(s)`: the length as a big-endian u64, then `s` (proposal 332).
pub(crate) fn encap_len(len: usize) -> [u8; 8] {
    (len as u64).to_be_bytes()
}

/// Absorbs input into SHAKE-256, with the `ENCAP` helper ntor-v3 uses for tweaks and
/// variable-length fields; then squeezes a [`ShakeReader`].
#[derive(Clone, Default)]
pub struct ShakeKdf(Shake256);

impl ShakeKdf {
    /// An empty SHAKE-256 state.
    pub fn new() -> Self {
        Self(Shake256::default())
    }
    /// Absorbs `data` as is.
    pub fn absorb(&mut self, data: &[u8]) -> &mut Self {
        Update::update(&mut self.0, data);
        self
    }
    /// Absorbs `ENCAP(data)`: its 8-byte big-endian length, then the data.
    pub fn absorb_encap(&mut self, data: &[u8]) -> &mut Self {
        Update::update(&mut self.0, &encap_len(data.len()));
        Update::update(&mut self.0, data);
        self
    }
    /// Ends absorbing; the reader yields the XOF stream.
    pub fn finalize(self) -> ShakeReader {
        ShakeReader(self.0.finalize_xof())
    }
}

/// The SHAKE-256 output stream: successive reads continue where the previous stopped, so
/// ntor-v3 can take its AES key first and relay keys after.
pub struct ShakeReader(Shake256Reader);

impl ShakeReader {
    /// Fills `out` with the next `out.len()` bytes of the stream.
    pub fn read(&mut self, out: &mut [u8]) {
        self.0.read(out);
    }
    /// Reads the next `N` bytes into an array.
    pub fn read_array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        self.0.read(&mut a);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::hex;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    // KDF-TOR vectors from C tor's test_crypto.c (`test_crypto_kdf_TAP`).
    #[test]
    fn kdf_tor_vectors() {
        let cases: [(&str, &str); 3] = [
            (
                "",
                "5ba93c9db0cff93f52b521d7420e43f6eda2784fbf8b4530d8\
                 d246dd74ac53a13471bba17941dff7c4ea21bb365bbeeaf5f2\
                 c654883e56d11e43c44e9842926af7ca0a8cca12604f945414\
                 f07b01e13da42c6cf1de3abfdea9b95f34687cbbe92b9a7383",
            ),
            (
                "Tor",
                "776c6214fc647aaa5f683c737ee66ec44f03d0372e1cce6922\
                 7950f236ddf1e329a7ce7c227903303f525a8c6662426e8034\
                 870642a6dabbd41b5d97ec9bf2312ea729992f48f8ea2d0ba8\
                 3f45dfda1a80bdc8b80de01b23e3e0ffae099b3e4ccf28dc28",
            ),
            (
                "AN ALARMING ITEM TO FIND ON A MONTHLY AUTO-DEBIT NOTICE",
                "a340b5d126086c3ab29c2af4179196dbf95e1c72431419d331\
                 4844bf8f6afb6098db952b95581fb6c33625709d6f4400b8e7\
                 ace18a70579fad83c0982ef73f89395bcc39493ad53a685854\
                 daf2ba9b78733b805d9a6824c907ee1dba5ac27a1e466d4d10",
            ),
        ];
        for (seed, expect) in cases {
            let mut out = [0u8; 100];
            kdf_tor(seed.as_bytes(), &mut out).unwrap();
            assert_eq!(out.to_vec(), h(expect), "seed {seed:?}");
            // A shorter request is a prefix of the longer one.
            let mut short = [0u8; 33];
            kdf_tor(seed.as_bytes(), &mut short).unwrap();
            assert_eq!(&short[..], &out[..33]);
        }
    }

    #[test]
    fn kdf_tor_length_limit() {
        let mut ok = vec![0u8; KDF_TOR_MAX_OUTPUT];
        assert!(kdf_tor(b"x", &mut ok).is_ok());
        let mut too_long = vec![0u8; KDF_TOR_MAX_OUTPUT + 1];
        assert_eq!(
            kdf_tor(b"x", &mut too_long),
            Err(KdfError::OutputTooLong {
                requested: KDF_TOR_MAX_OUTPUT + 1,
                max: 5120
            })
        );
    }

    // RFC 5869 appendix A.1–A.3 (SHA-256 cases).
    #[test]
    fn hkdf_rfc5869_vectors() {
        let cases = [
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                "000102030405060708090a0b0c",
                "f0f1f2f3f4f5f6f7f8f9",
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
                 34007208d5b887185865",
            ),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                 202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
                 404142434445464748494a4b4c4d4e4f",
                "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
                 808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
                 a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
                "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf\
                 d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef\
                 f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
                 59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
                 cc30c58179ec3e87c14c01d5c1f3434f1d87",
            ),
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                "",
                "",
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d\
                 9d201395faa4b61a96c8",
            ),
        ];
        for (ikm, salt, info, okm) in cases {
            let expect = h(okm);
            let mut out = vec![0u8; expect.len()];
            hkdf_sha256(&h(ikm), &h(salt), &h(info), &mut out).unwrap();
            assert_eq!(out, expect);
        }
    }

    // ntor-specific HKDF vectors from C tor's test_crypto.c (`test_crypto_hkdf_sha256`).
    #[test]
    fn hkdf_ntor_tweak_vectors() {
        let salt = b"ntor-curve25519-sha256-1:key_extract";
        let info = b"ntor-curve25519-sha256-1:key_expand";
        let cases = [
            (
                "Tor",
                "5521492a85139a8d9107a2d5c0d9c91610d0f95989975ebee6\
                 c02a4f8d622a6cfdf9b7c7edd3832e2760ded1eac309b76f8d\
                 66c4a3c4d6225429b3a016e3c3d45911152fc87bc2de9630c3\
                 961be9fdb9f93197ea8e5977180801926d3321fa21513e59ac",
            ),
            (
                "AN ALARMING ITEM TO FIND ON YOUR CREDIT-RATING STATEMENT",
                "a2aa9b50da7e481d30463adb8f233ff06e9571a0ca6ab6df0f\
                 b206fa34e5bc78d063fc291501beec53b36e5a0e434561200c\
                 5f8bd13e0f88b3459600b4dc21d69363e2895321c06184879d\
                 94b18f078411be70b767c7fc40679a9440a0c95ea83a23efbf",
            ),
        ];
        for (ikm, expect) in cases {
            let mut out = [0u8; 100];
            hkdf_sha256(ikm.as_bytes(), salt, info, &mut out).unwrap();
            assert_eq!(out.to_vec(), h(expect));
        }
    }

    #[test]
    fn hkdf_length_limit() {
        let mut out = vec![0u8; HKDF_SHA256_MAX_OUTPUT + 1];
        assert!(matches!(
            hkdf_sha256(b"k", b"s", b"i", &mut out),
            Err(KdfError::OutputTooLong { .. })
        ));
        assert!(hkdf_sha256(b"k", b"s", b"i", &mut out[..HKDF_SHA256_MAX_OUTPUT]).is_ok());
    }

    // SHAKE-256("") from FIPS 202 / NIST example values: 46b9dd2b0ba88d13...
    #[test]
    fn shake_reader_streams() {
        let mut r = ShakeKdf::new().finalize();
        let first: [u8; 8] = r.read_array();
        assert_eq!(first.to_vec(), h("46b9dd2b0ba88d13"));
        let mut next = [0u8; 8];
        r.read(&mut next);
        assert_eq!(next.to_vec(), h("233b3feb743eeb24"));
    }

    #[test]
    fn shake_encap_prefixes_length() {
        let mut a = ShakeKdf::new();
        a.absorb_encap(b"abc");
        let mut b = ShakeKdf::new();
        b.absorb(&[0, 0, 0, 0, 0, 0, 0, 3]).absorb(b"abc");
        assert_eq!(
            a.finalize().read_array::<32>(),
            b.finalize().read_array::<32>()
        );
    }
}
