//! [`RelayKeys`]: every key a relay holds, loaded from (or created in) C tor's
//! `DataDirectory/keys` layout, plus the derived certificates.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};
use rsa::{RsaPrivateKey, RsaPublicKey};

use super::cert::Ed25519Cert;
use super::crosscert::{self, RsaEd25519CrossCert, RSA_ED_CROSSCERT_LIFETIME_SECS};
use super::ed25519::Ed25519Keypair;
use super::error::KeyError;
use super::family::{self, FamilyKey};
use super::identity::{self, Ed25519Keys, SigningKeyPolicy, SigningKeyStatus};
use super::link::{LinkCertError, LinkCertInputs, LinkCertPolicy, LinkCerts};
use super::onion::{NtorKeypair, OnionKeyChanges, OnionKeyRotation, OnionKeys};
use super::rsa::{self as tor_rsa, RsaError};
use super::store::{self, KeyDir};
use super::time::{from_unix_secs, unix_secs};
use crate::config::FamilyId;
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};

/// Tunables, all defaulting to C tor's values; the onion-key schedule should follow the
/// consensus (`onion-key-rotation-days`, `onion-key-grace-period-days`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyParams {
    pub signing: SigningKeyPolicy,
    pub onion: OnionKeyRotation,
    pub link: LinkCertPolicy,
}

/// What [`RelayKeys::maintain`] changed. Any change means the descriptor must be rebuilt;
/// a new signing key also means the link certs must be re-minted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyChanges {
    pub signing_key_renewed: bool,
    /// The signing key needs renewing but the master secret key is offline.
    pub signing_key_renewal_blocked: bool,
    pub onion_keys: OnionKeyChanges,
}

impl KeyChanges {
    pub fn descriptor_changed(&self) -> bool {
        self.signing_key_renewed || self.onion_keys.rotated
    }
}

/// All of a relay's keys.
pub struct RelayKeys {
    data_dir: PathBuf,
    keys_dir: KeyDir,
    params: KeyParams,
    rsa_identity_key: RsaPrivateKey,
    rsa_identity: RsaIdentity,
    ed: Ed25519Keys,
    onion: OnionKeys,
    /// Happy-family keys in use (`FamilyId`), and the settings they were loaded for.
    family: Vec<FamilyKey>,
    family_source: (Vec<FamilyId>, PathBuf),
}

/// Shows identities only, never secret material.
impl std::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayKeys")
            .field("data_dir", &self.data_dir)
            .field("rsa_identity", &self.rsa_identity)
            .field("ed25519_identity", &self.ed.identity)
            .field("onion", &self.onion)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

fn rsa_err(e: RsaError) -> KeyError {
    KeyError::Generate(e)
}

impl RelayKeys {
    /// Loads every key from `data_dir/keys`, creating what is missing and renewing the
    /// signing key if it is due (C `init_keys` for a relay). Existing C tor keys are used
    /// unchanged, so the relay keeps its fingerprint and Ed25519 identity.
    // A control-plane entry point: the one place `keys` draws OS randomness (sans-IO rule);
    // everything it calls takes the RNG as an argument.
    #[allow(clippy::disallowed_types)]
    pub fn load_or_create(
        data_dir: &Path,
        now: SystemTime,
        params: KeyParams,
    ) -> Result<RelayKeys, KeyError> {
        Self::load_or_create_with_rng(data_dir, now, params, &mut rand::rngs::OsRng)
    }

    /// As [`load_or_create`](Self::load_or_create) with an explicit RNG.
    pub fn load_or_create_with_rng<R: RngCore + CryptoRng>(
        data_dir: &Path,
        now: SystemTime,
        params: KeyParams,
        rng: &mut R,
    ) -> Result<RelayKeys, KeyError> {
        let keys_dir = KeyDir::open_or_create(data_dir)?;
        let rsa_identity_key = identity::load_or_create_rsa_identity(&keys_dir, rng)?;
        let rsa_identity =
            tor_rsa::rsa_identity(&rsa_identity_key.to_public_key()).map_err(rsa_err)?;
        let (ed, _) = identity::load_or_create_ed25519(&keys_dir, rng, now, &params.signing)?;
        let onion = OnionKeys::load_or_create(&keys_dir, rng, now)?;
        Ok(RelayKeys {
            data_dir: data_dir.to_path_buf(),
            keys_dir,
            params,
            rsa_identity_key,
            rsa_identity,
            ed,
            onion,
            family: Vec::new(),
            family_source: (Vec::new(), PathBuf::new()),
        })
    }

    /// Loads the family keys `FamilyId` asks for from `dir` (`FamilyKeyDirectory`), replacing
    /// the current ones. On error the current ones stay. Returns the files holding keys that
    /// no `FamilyId` names, for the caller to warn about as C tor does.
    pub fn load_family_keys(
        &mut self,
        wanted: &[FamilyId],
        dir: &Path,
    ) -> Result<Vec<(PathBuf, Ed25519Identity)>, KeyError> {
        let (used, unlisted) = family::load_family_keys_and_unlisted(dir, wanted)?;
        self.family = used;
        self.family_source = (wanted.to_vec(), dir.to_path_buf());
        Ok(unlisted.iter().map(|k| (k.path.clone(), k.id())).collect())
    }

    /// Reloads the family keys if `FamilyId` or `FamilyKeyDirectory` changed since they were
    /// loaded (a SIGHUP). Returns whether they were reloaded.
    pub fn refresh_family_keys(
        &mut self,
        wanted: &[FamilyId],
        dir: &Path,
    ) -> Result<bool, KeyError> {
        if self.family_source.0 == wanted && (wanted.is_empty() || self.family_source.1 == dir) {
            return Ok(false);
        }
        self.load_family_keys(wanted, dir)?;
        Ok(true)
    }

    /// The family IDs of the family keys in use.
    pub fn family_ids(&self) -> Vec<Ed25519Identity> {
        self.family.iter().map(FamilyKey::id).collect()
    }

    /// One `family-cert` per family key, certifying our Ed25519 identity, minted for a
    /// descriptor published at `published` (C tor mints them in `router_dump_router_to_string`).
    pub fn family_certs(&self, published: SystemTime) -> Vec<Ed25519Cert> {
        self.family
            .iter()
            .map(|k| family::mint_family_cert(&k.key, &self.ed.identity, published))
            .collect()
    }

    /// Periodic upkeep (C `check_ed_keys_callback`, `rotate_onion_key_callback`,
    /// `check_onion_keys_expiry_time_callback`): renew the signing key, rotate onion keys,
    /// forget expired previous onion keys.
    // A control-plane entry point: the one place `keys` draws OS randomness (sans-IO rule);
    // everything it calls takes the RNG as an argument.
    #[allow(clippy::disallowed_types)]
    pub fn maintain(&mut self, now: SystemTime) -> Result<KeyChanges, KeyError> {
        self.maintain_with_rng(now, &mut rand::rngs::OsRng)
    }

    pub fn maintain_with_rng<R: RngCore + CryptoRng>(
        &mut self,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<KeyChanges, KeyError> {
        let mut changes = KeyChanges::default();
        let horizon = unix_secs(now).saturating_add(self.params.signing.renew_before_secs);
        if self.ed.signing_cert.expires_at_secs() < horizon {
            let (ed, status) =
                identity::load_or_create_ed25519(&self.keys_dir, rng, now, &self.params.signing)?;
            if ed.identity != self.ed.identity {
                return Err(KeyError::Mismatch {
                    path: self.keys_dir.path(identity::MASTER_PUBLIC_FILE),
                    other: self.keys_dir.path(identity::SIGNING_CERT_FILE),
                    what: "master identity key on disk changed while running",
                });
            }
            changes.signing_key_renewed = status == SigningKeyStatus::Renewed;
            changes.signing_key_renewal_blocked = status == SigningKeyStatus::RenewalBlocked;
            self.ed = ed;
        }
        changes.onion_keys = self
            .onion
            .maintain(&self.keys_dir, rng, &self.params.onion, now)?;
        Ok(changes)
    }

    /// Replaces the tunables (e.g. when a new consensus changes the onion-key schedule).
    pub fn set_params(&mut self, params: KeyParams) {
        self.params = params;
    }

    pub fn params(&self) -> &KeyParams {
        &self.params
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The relay fingerprint (SHA-1 of the DER RSA identity key).
    pub fn rsa_identity(&self) -> RsaIdentity {
        self.rsa_identity
    }

    /// KP_relayid_rsa.
    pub fn rsa_identity_key(&self) -> &RsaPrivateKey {
        &self.rsa_identity_key
    }

    pub fn rsa_identity_public(&self) -> RsaPublicKey {
        self.rsa_identity_key.to_public_key()
    }

    /// KP_relayid_ed.
    pub fn ed25519_identity(&self) -> Ed25519Identity {
        self.ed.identity
    }

    /// KP_relaysign_ed (signs descriptors and the link certs).
    pub fn signing_key(&self) -> &Ed25519Keypair {
        &self.ed.signing
    }

    /// The type-4 cert for the signing key (descriptor `identity-ed25519`, CERTS type 4).
    pub fn signing_cert(&self) -> &Ed25519Cert {
        &self.ed.signing_cert
    }

    pub fn onion_keys(&self) -> &OnionKeys {
        &self.onion
    }

    /// Current ntor key (published as `ntor-onion-key`).
    pub fn ntor_key(&self) -> &NtorKeypair {
        &self.onion.ntor
    }

    /// The ntor keys a CREATE2 may name: current first, then the previous one in its grace
    /// period.
    pub fn ntor_keys(&self) -> impl Iterator<Item = &NtorKeypair> {
        self.onion.ntor_keys()
    }

    /// The dummy TAP onion key (published as `onion-key`).
    pub fn tap_onion_key(&self) -> &RsaPrivateKey {
        &self.onion.tap
    }

    /// `onion-key-crosscert` signature bytes.
    pub fn tap_onion_key_crosscert(&self) -> Result<Vec<u8>, RsaError> {
        crosscert::make_tap_onion_key_crosscert(
            &self.onion.tap,
            &self.rsa_identity_public(),
            &self.ed.identity,
        )
    }

    /// `ntor-onion-key-crosscert` cert and sign bit. C uses the descriptor's publication time
    /// as `now` and the onion-key rotation period as the lifetime.
    pub fn ntor_onion_key_crosscert(&self, published: SystemTime) -> (Ed25519Cert, u8) {
        crosscert::make_ntor_onion_key_crosscert(
            &self.onion.ntor.secret.to_bytes(),
            &self.ed.identity,
            published,
            self.params.onion.rotation_secs,
        )
    }

    /// Type-7 RSA→Ed25519 cross-cert valid for six months from `now`.
    pub fn rsa_ed25519_crosscert(&self, now: SystemTime) -> Result<RsaEd25519CrossCert, RsaError> {
        RsaEd25519CrossCert::sign(
            &self.rsa_identity_key,
            &self.ed.identity,
            from_unix_secs(unix_secs(now) + RSA_ED_CROSSCERT_LIFETIME_SECS),
        )
    }

    /// Mints a new TLS link key and the CERTS-cell certificates (types 1, 2, 4, 5, 6, 7).
    // A control-plane entry point: the one place `keys` draws OS randomness (sans-IO rule);
    // everything it calls takes the RNG as an argument.
    #[allow(clippy::disallowed_types)]
    pub fn mint_link_certs(&self, now: SystemTime) -> Result<LinkCerts, LinkCertError> {
        self.mint_link_certs_with_rng(now, &mut rand::rngs::OsRng)
    }

    pub fn mint_link_certs_with_rng<R: RngCore + CryptoRng>(
        &self,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<LinkCerts, LinkCertError> {
        let inputs = LinkCertInputs {
            rsa_identity: &self.rsa_identity_key,
            master: &self.ed.identity,
            signing: &self.ed.signing,
            signing_cert: &self.ed.signing_cert,
        };
        LinkCerts::mint(rng, &inputs, now, &self.params.link)
    }

    /// Writes `DataDirectory/fingerprint` ("<nick> <HEX>\n") and `fingerprint-ed25519`
    /// ("<nick> <base64>\n") like C's `router_write_fingerprint`, only when they differ.
    pub fn write_fingerprint_files(&self, nickname: &str) -> Result<(), KeyError> {
        let rsa_line = format!("{nickname} {}\n", self.rsa_identity.to_hex());
        let ed_line = format!("{nickname} {}\n", self.ed.identity.to_base64());
        for (name, line) in [("fingerprint", rsa_line), ("fingerprint-ed25519", ed_line)] {
            let path = self.data_dir.join(name);
            let current = std::fs::read(&path).ok();
            if current.as_deref() != Some(line.as_bytes()) {
                store::write_atomic(&path, line.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// The fingerprint in groups of four, as `--list-fingerprint` and descriptors print it.
pub fn spaced_fingerprint(id: &RsaIdentity) -> String {
    let hex = id.to_hex();
    let mut out = String::with_capacity(50);
    for (i, chunk) in hex.as_bytes().chunks(4).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    out
}
