//! Onion keys: the curve25519 ntor key (current and previous) and the dummy RSA-1024 TAP key
//! that descriptors must still carry (tor-spec §"ntor", prop 350). C tor: `router.c`
//! (`init_keys`, `rotate_onion_key`, `expire_old_onion_keys`) and `relay_periodic.c`.
//!
//! C tor remembers when it last rotated in its state file; Fors has no state file, so the
//! modification time of `secret_onion_key_ntor` (written at creation and at each rotation)
//! serves as the rotation timestamp.

use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};
use rsa::RsaPrivateKey;
use x25519_dalek::{PublicKey, StaticSecret};

use super::error::KeyError;
use super::keyfile::{self, NTOR_TAG};
use super::rsa as tor_rsa;
use super::store::KeyDir;
use super::time::{from_unix_secs, unix_secs};

pub const NTOR_FILE: &str = "secret_onion_key_ntor";
pub const NTOR_OLD_FILE: &str = "secret_onion_key_ntor.old";
pub const TAP_FILE: &str = "secret_onion_key";
pub const TAP_OLD_FILE: &str = "secret_onion_key.old";

/// Onion-key rotation schedule. Both values come from the consensus parameters
/// `onion-key-rotation-days` and `onion-key-grace-period-days` when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionKeyRotation {
    /// Rotate the onion keys this long after they were set.
    pub rotation_secs: u64,
    /// Keep accepting the previous keys this long after the current ones were set.
    pub grace_secs: u64,
}

impl Default for OnionKeyRotation {
    /// C tor defaults: rotate every 28 days, 7 days' grace (`or.h`).
    fn default() -> Self {
        Self::from_consensus_days(None, None)
    }
}

impl OnionKeyRotation {
    /// From consensus values, clamped as C's `networkstatus_get_param` calls do:
    /// rotation 1..=90 days (default 28), grace 1..=rotation days (default 7).
    pub fn from_consensus_days(rotation_days: Option<i64>, grace_days: Option<i64>) -> Self {
        let rotation = rotation_days.unwrap_or(28).clamp(1, 90);
        let grace = grace_days.unwrap_or(7).clamp(1, rotation);
        Self {
            rotation_secs: rotation as u64 * 86400,
            grace_secs: grace as u64 * 86400,
        }
    }

    /// True once `set_at + rotation <= now` (C `rotate_onion_key_callback`).
    pub fn rotation_due(&self, set_at: SystemTime, now: SystemTime) -> bool {
        unix_secs(set_at).saturating_add(self.rotation_secs) <= unix_secs(now)
    }

    /// True once `set_at + grace <= now` (C `check_onion_keys_expiry_time_callback`).
    pub fn previous_expired(&self, set_at: SystemTime, now: SystemTime) -> bool {
        unix_secs(set_at).saturating_add(self.grace_secs) <= unix_secs(now)
    }
}

/// A curve25519 ntor onion keypair.
#[derive(Clone)]
pub struct NtorKeypair {
    pub secret: StaticSecret,
    pub public: PublicKey,
}

impl std::fmt::Debug for NtorKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NtorKeypair({})",
            crate::util::hex::encode(self.public.as_bytes())
        )
    }
}

impl NtorKeypair {
    /// A fresh key, stored clamped as C tor's `curve25519_secret_key_generate` does (so the
    /// curve25519→ed25519 crosscert derivation sees the same scalar C would).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut b[..]);
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        let secret = StaticSecret::from(*b);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }
}

/// The relay's onion keys. (`Debug` shows only public parts: the rsa crate's `Debug`
/// would print private exponents.)
#[derive(Clone)]
pub struct OnionKeys {
    pub ntor: NtorKeypair,
    /// Still accepted during the grace period after a rotation.
    pub ntor_previous: Option<NtorKeypair>,
    /// Dummy TAP key, published as `onion-key` but never used for handshakes.
    pub tap: RsaPrivateKey,
    pub tap_previous: Option<RsaPrivateKey>,
    /// When the current keys were set (the rotation clock).
    pub set_at: SystemTime,
}

impl std::fmt::Debug for OnionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionKeys")
            .field("ntor", &self.ntor)
            .field("ntor_previous", &self.ntor_previous)
            .field("tap_previous", &self.tap_previous.is_some())
            .field("set_at", &self.set_at)
            .finish_non_exhaustive()
    }
}

/// What [`OnionKeys::maintain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnionKeyChanges {
    pub rotated: bool,
    pub previous_expired: bool,
}

fn load_ntor(dir: &KeyDir, name: &str) -> Result<Option<NtorKeypair>, KeyError> {
    match dir.read_nonempty(name)? {
        None => Ok(None),
        Some(bytes) => {
            let (secret, public) = keyfile::parse_curve25519_keypair(&bytes, NTOR_TAG)
                .map_err(|p| KeyError::corrupt(dir.path(name), p))?;
            Ok(Some(NtorKeypair { secret, public }))
        }
    }
}

fn save_ntor(dir: &KeyDir, name: &str, k: &NtorKeypair) -> Result<(), KeyError> {
    dir.write(
        name,
        &keyfile::encode_curve25519_keypair(&k.secret, NTOR_TAG),
    )
}

pub(crate) fn load_rsa(dir: &KeyDir, name: &str) -> Result<Option<RsaPrivateKey>, KeyError> {
    match dir.read_nonempty(name)? {
        None => Ok(None),
        Some(bytes) => keyfile::parse_rsa_private_key(&bytes)
            .map(Some)
            .map_err(|p| KeyError::corrupt(dir.path(name), p)),
    }
}

pub(crate) fn save_rsa(dir: &KeyDir, name: &str, k: &RsaPrivateKey) -> Result<(), KeyError> {
    let bytes =
        keyfile::encode_rsa_private_key(k).map_err(|p| KeyError::corrupt(dir.path(name), p))?;
    dir.write(name, &bytes)
}

fn new_tap_key<R: RngCore + CryptoRng>(rng: &mut R) -> Result<RsaPrivateKey, KeyError> {
    Ok(tor_rsa::generate(rng, tor_rsa::IDENTITY_KEY_BITS)?)
}

impl OnionKeys {
    /// Loads the onion keys, generating the current ones if missing (C `init_keys` steps 2
    /// and 2b). Missing `.old` keys are never generated; corrupt files are errors.
    pub fn load_or_create<R: RngCore + CryptoRng>(
        dir: &KeyDir,
        rng: &mut R,
        now: SystemTime,
    ) -> Result<Self, KeyError> {
        let tap = match load_rsa(dir, TAP_FILE)? {
            Some(k) => k,
            None => {
                let k = new_tap_key(rng)?;
                save_rsa(dir, TAP_FILE, &k)?;
                k
            }
        };
        let tap_previous = load_rsa(dir, TAP_OLD_FILE)?;
        let (ntor, created) = match load_ntor(dir, NTOR_FILE)? {
            Some(k) => (k, false),
            None => {
                let k = NtorKeypair::generate(rng);
                save_ntor(dir, NTOR_FILE, &k)?;
                (k, true)
            }
        };
        let ntor_previous = load_ntor(dir, NTOR_OLD_FILE)?;
        // A future mtime (clock jump) must not postpone rotation forever: clamp to now.
        let set_at = if created {
            now
        } else {
            dir.modified(NTOR_FILE)?.map(|t| t.min(now)).unwrap_or(now)
        };
        Ok(Self {
            ntor,
            ntor_previous,
            tap,
            tap_previous,
            set_at: from_unix_secs(unix_secs(set_at)),
        })
    }

    /// Rotates the keys when due and forgets the previous ones after the grace period.
    pub fn maintain<R: RngCore + CryptoRng>(
        &mut self,
        dir: &KeyDir,
        rng: &mut R,
        schedule: &OnionKeyRotation,
        now: SystemTime,
    ) -> Result<OnionKeyChanges, KeyError> {
        let mut changes = OnionKeyChanges::default();
        if schedule.rotation_due(self.set_at, now) {
            self.rotate(dir, rng, now)?;
            changes.rotated = true;
        }
        if self.has_previous() && schedule.previous_expired(self.set_at, now) {
            self.expire_previous(dir)?;
            changes.previous_expired = true;
        }
        Ok(changes)
    }

    fn has_previous(&self) -> bool {
        self.ntor_previous.is_some() || self.tap_previous.is_some()
    }

    /// C `rotate_onion_key`: current files become `.old`, fresh keys become current.
    pub fn rotate<R: RngCore + CryptoRng>(
        &mut self,
        dir: &KeyDir,
        rng: &mut R,
        now: SystemTime,
    ) -> Result<(), KeyError> {
        let tap = new_tap_key(rng)?;
        let ntor = NtorKeypair::generate(rng);
        if dir.read(TAP_FILE)?.is_some() {
            dir.rename(TAP_FILE, TAP_OLD_FILE)?;
        }
        save_rsa(dir, TAP_FILE, &tap)?;
        if dir.read(NTOR_FILE)?.is_some() {
            dir.rename(NTOR_FILE, NTOR_OLD_FILE)?;
        }
        save_ntor(dir, NTOR_FILE, &ntor)?;
        self.tap_previous = Some(std::mem::replace(&mut self.tap, tap));
        self.ntor_previous = Some(std::mem::replace(&mut self.ntor, ntor));
        self.set_at = from_unix_secs(unix_secs(now));
        Ok(())
    }

    /// C `expire_old_onion_keys`: drop the previous keys and delete their files.
    pub fn expire_previous(&mut self, dir: &KeyDir) -> Result<(), KeyError> {
        self.tap_previous = None;
        self.ntor_previous = None;
        dir.remove(TAP_OLD_FILE)?;
        dir.remove(NTOR_OLD_FILE)
    }

    /// The ntor keys a handshake may use, current first; the previous key is listed only if it
    /// differs (C `construct_ntor_key_map`).
    pub fn ntor_keys(&self) -> impl Iterator<Item = &NtorKeypair> {
        let prev = self
            .ntor_previous
            .as_ref()
            .filter(|p| p.public != self.ntor.public);
        std::iter::once(&self.ntor).chain(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn schedule_matches_c() {
        let s = OnionKeyRotation::default();
        assert_eq!(s.rotation_secs, 28 * 86400);
        assert_eq!(s.grace_secs, 7 * 86400);
        let c = OnionKeyRotation::from_consensus_days(Some(500), Some(0));
        assert_eq!((c.rotation_secs, c.grace_secs), (90 * 86400, 86400));
        let c = OnionKeyRotation::from_consensus_days(Some(3), Some(10));
        assert_eq!(c.grace_secs, 3 * 86400);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(!s.rotation_due(t0, t0 + Duration::from_secs(28 * 86400 - 1)));
        assert!(s.rotation_due(t0, t0 + Duration::from_secs(28 * 86400)));
        assert!(!s.previous_expired(t0, t0 + Duration::from_secs(7 * 86400 - 1)));
        assert!(s.previous_expired(t0, t0 + Duration::from_secs(7 * 86400)));
    }

    #[test]
    fn generated_ntor_keys_are_clamped() {
        let k = NtorKeypair::generate(&mut rand::thread_rng());
        let b = k.secret.to_bytes();
        assert_eq!(b[0] & 7, 0);
        assert_eq!(b[31] & 0xc0, 0x40);
    }
}
