//! UIV+: CGO's tweakable wide-block cipher over a cell body (proposal 359 "UIV+").
//!
//! ```text
//! ENC_UIV((J, S), H, (X_L, X_R)):  Y_L = ENC_ET(J, H | X_R, X_L);  Y_R = X_R ^ PRF(S, Y_L, 0)
//! DEC_UIV((J, S), H, (Y_L, Y_R)):  X_R = Y_R ^ PRF(S, Y_L, 0);     X_L = DEC_ET(J, H | X_R, Y_L)
//! UPDATE_UIV((J, S), N):           (J', S', N') = PRF(S, N, 1)
//! ```
//! Here `H` is the tweak `T' | command`: the previous tag of this direction and the cell's
//! command byte (RELAY or RELAY_EARLY).
#![forbid(unsafe_code)]

use super::et::Et;
use super::interleave::LaneKeys;
use super::prf::{Prf, T1_MAX_LEN};
use super::wipe;
use super::{split_body, Block16, CellBody, Cipher16, BLOCK_LEN};
#[cfg(test)]
use aes::cipher::BlockDecrypt;
use aes::cipher::BlockEncrypt;

/// UIV+ keys: J for ET (block cipher `EB`), S for the PRF (block cipher `PB`).
#[derive(Clone)]
pub(super) struct Uiv<EB, PB> {
    j: Et<EB>,
    s: Prf<PB>,
    /// Tests only: the key bytes in use, so that the key update can be checked against the
    /// published vectors.
    #[cfg(test)]
    pub(super) key_bytes: Vec<u8>,
}

impl<EB: Cipher16, PB: Cipher16 + BlockEncrypt> Uiv<EB, PB> {
    /// Key length: J then S.
    pub(super) fn key_len() -> usize {
        Et::<EB>::key_len() + Prf::<PB>::key_len()
    }

    /// UIV+ keyed from `key` (exactly [`Uiv::key_len`] bytes: a caller invariant).
    pub(super) fn new(key: &[u8]) -> Self {
        let (j, s) = key.split_at(Et::<EB>::key_len());
        Uiv {
            j: Et::new(j),
            s: Prf::new(s),
            #[cfg(test)]
            key_bytes: key.to_vec(),
        }
    }

    /// `UPDATE_UIV`: replaces the keys and `nonce` with `PRF(S, nonce, 1)`, so that the old
    /// state cannot be recovered from the new one.
    pub(super) fn update(&mut self, nonce: &mut Block16) {
        let klen = Self::key_len();
        let mut seed = [0u8; T1_MAX_LEN];
        self.s.gen_t1(nonce, &mut seed[..klen + BLOCK_LEN]);
        // In place: overwriting the keys wipes the old ones, and nothing as large as the
        // keys (POLYVAL powers, AES schedules) is built on the stack, moved and dropped.
        let (j, s) = seed[..klen].split_at(Et::<EB>::key_len());
        self.j.rekey(j);
        self.s.rekey(s);
        #[cfg(test)]
        self.key_bytes.copy_from_slice(&seed[..klen]);
        nonce.copy_from_slice(&seed[klen..klen + BLOCK_LEN]);
        wipe(&mut seed);
    }
}

impl<EB: Cipher16 + BlockEncrypt, PB: Cipher16 + BlockEncrypt> Uiv<EB, PB> {
    /// `ENC_UIV` of `body` in place, tweaked by `h` and `cmd` (the relay runs the two halves
    /// itself; the tests' clients run it whole).
    #[cfg(test)]
    #[inline]
    pub(super) fn encrypt(&self, h: &Block16, cmd: u8, body: &mut CellBody) {
        self.encrypt_left(h, cmd, body);
        self.encrypt_right(body);
    }

    /// The first half of `ENC_UIV`: `Y_L = ENC_ET(J, H | X_R, X_L)`. Split from the second
    /// half so that batched calls can run the ET of several circuits' cells back to back,
    /// their dependency chains (tweak POLYVAL, then AES) overlapping in the CPU.
    #[inline]
    pub(super) fn encrypt_left(&self, h: &Block16, cmd: u8, body: &mut CellBody) {
        let (x_l, x_r) = split_body(body);
        self.j.encrypt(h, cmd, x_r, x_l);
    }

    /// The keys [`super::interleave`] runs `ENC_UIV`'s first half and the PRF counter with,
    /// if this key set runs on the instructions it needs.
    #[inline]
    pub(super) fn interleave_keys(&self) -> Option<LaneKeys<'_>> {
        let (et_round_keys, tweak_powers) = self.j.interleave_keys()?;
        Some(LaneKeys {
            et_round_keys,
            tweak_powers,
            prf_key: self.s.counter_key()?,
        })
    }

    /// The second half of `ENC_UIV` when [`super::interleave`] ran the first and returned
    /// the PRF's first counter `c0`.
    #[inline]
    pub(super) fn encrypt_right_from(&self, c0: u128, body: &mut CellBody) {
        let (_, x_r) = split_body(body);
        self.s.xor_t0_from(c0, x_r);
    }

    /// The second half of `ENC_UIV`, after [`Uiv::encrypt_left`]: `Y_R = X_R ^ PRF(S, Y_L, 0)`.
    #[inline]
    pub(super) fn encrypt_right(&self, body: &mut CellBody) {
        let (y_l, x_r) = split_body(body);
        self.s.xor_t0(y_l, x_r);
    }
}

// Only clients decrypt (tests here): a relay never runs UIV+ backwards.
#[cfg(test)]
impl<EB: Cipher16 + BlockDecrypt, PB: Cipher16 + BlockEncrypt> Uiv<EB, PB> {
    /// `DEC_UIV` of `body` in place, tweaked by `h` and `cmd`.
    #[inline]
    pub(super) fn decrypt(&self, h: &Block16, cmd: u8, body: &mut CellBody) {
        let (y_l, y_r) = split_body(body);
        self.s.xor_t0(y_l, y_r);
        self.j.decrypt(h, cmd, y_r, y_l);
    }
}
