//! Key material a circuit handshake hands to relay crypto (tor-spec §"Setting circuit keys").

use zeroize::{Zeroize, ZeroizeOnDrop};

/// tor1 key material: forward/backward digest seeds and AES-128 keys, in the order the KDFs
/// emit them (Df, Db, Kf, Kb), plus the 20-byte nonce KH that follows them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Tor1KeyMaterial {
    /// Forward digest seed (client to exit direction).
    pub df: [u8; 20],
    /// Backward digest seed.
    pub db: [u8; 20],
    /// Forward AES-128-CTR key.
    pub kf: [u8; 16],
    /// Backward AES-128-CTR key.
    pub kb: [u8; 16],
    /// Derivative key data used as a nonce (KH).
    pub kh: [u8; 20],
}

impl Tor1KeyMaterial {
    /// Bytes the KDF must produce for tor1: Df | Db | Kf | Kb | KH.
    pub const KDF_LEN: usize = 20 + 20 + 16 + 16 + 20;

    /// Splits KDF output laid out as Df | Db | Kf | Kb | KH (ntor, ntor-v3).
    pub fn from_kdf_output(k: &[u8; Self::KDF_LEN]) -> Self {
        let mut m = Self { df: [0; 20], db: [0; 20], kf: [0; 16], kb: [0; 16], kh: [0; 20] };
        m.df.copy_from_slice(&k[0..20]);
        m.db.copy_from_slice(&k[20..40]);
        m.kf.copy_from_slice(&k[40..56]);
        m.kb.copy_from_slice(&k[56..72]);
        m.kh.copy_from_slice(&k[72..92]);
        m
    }
}

impl std::fmt::Debug for Tor1KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tor1KeyMaterial(..)")
    }
}
