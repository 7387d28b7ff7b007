//! The relay side of one CGO hop (proposal 359 "Relay operations"; C tor
//! `cgo_crypt_relay_forward`, `_backward`, `_originate`).
//!
//! Each direction keeps `(K, N, T')`. Every relay operation is a UIV+ *encryption* tweaked by
//! `T' | command`, after which `T'` becomes the new tag (the body's first 16 bytes):
//! * forward (toward the exit): the cell is for this hop when the new tag equals `N`; then
//!   the keys are updated and the tag the cell *arrived* with is this hop's SENDME tag;
//! * backward (toward the client), relayed: encrypt and pass on;
//! * backward, originated: put `N` in the tag slot, encrypt, and the new tag becomes both
//!   `T'` and `N` (the SENDME tag); then the keys are updated.
#![forbid(unsafe_code)]

use super::interleave::{self, Bodies, Lane};
use super::prf::first_counter;
use super::uiv::Uiv;
use super::{keys::CgoKeyError, Block16, CellBody, CgoKeyMaterial, Cipher16, CGO_TAG_LEN};
use aes::cipher::BlockEncrypt;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The AES variants CGO runs on: the encrypt-only key schedules of the `aes` crate (a relay
/// never runs the AES inverse).
pub trait CgoAes: Cipher16 + BlockEncrypt + Clone {}
impl CgoAes for aes::Aes128Enc {}
impl CgoAes for aes::Aes256Enc {}

/// One direction of a hop at a relay.
#[derive(Clone)]
pub struct CgoRelayDirection<B> {
    pub(super) uiv: Uiv<B, B>,
    pub(super) nonce: Block16,
    pub(super) tprime: Block16,
}

impl<B> Drop for CgoRelayDirection<B> {
    fn drop(&mut self) {
        // N is the next update's PRF input: as secret as the keys. (POLYVAL keys zeroize
        // themselves; the `aes` key schedules do not without that crate's `zeroize` feature.)
        self.nonce.zeroize();
        self.tprime.zeroize();
    }
}

impl<B> std::fmt::Debug for CgoRelayDirection<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CgoRelayDirection(..)")
    }
}

impl<B: CgoAes> CgoRelayDirection<B> {
    /// Bytes of key material for one direction: UIV+ keys, then N.
    pub fn key_len() -> usize {
        Uiv::<B, B>::key_len() + CGO_TAG_LEN
    }

    /// A direction keyed from `J | S | N`; `T'` starts at zero.
    pub fn new(key: &[u8]) -> Result<Self, CgoKeyError> {
        if key.len() != Self::key_len() {
            return Err(CgoKeyError {
                expected: Self::key_len(),
                got: key.len(),
            });
        }
        let (k, n) = key.split_at(Uiv::<B, B>::key_len());
        let mut nonce = [0u8; CGO_TAG_LEN];
        nonce.copy_from_slice(n);
        Ok(CgoRelayDirection {
            uiv: Uiv::new(k),
            nonce,
            tprime: [0; CGO_TAG_LEN],
        })
    }

    /// UIV+ encryption chained on `T'`.
    #[inline]
    fn encrypt(&mut self, cmd: u8, body: &mut CellBody) {
        match self.encrypt_left_one(cmd, body) {
            Some(c0) => self.encrypt_right_from(c0, body),
            None => {
                self.encrypt_left(cmd, body);
                self.encrypt_right(body);
            }
        }
    }

    /// The ET half and the PRF's counter of one cell in the [`interleave`] kernel (one lane:
    /// still one call instead of three dispatched ones); the counter, or `None`, changing
    /// nothing, where the kernel does not run (then [`CgoRelayDirection::encrypt_left`]).
    #[inline]
    fn encrypt_left_one(&self, cmd: u8, body: &mut CellBody) -> Option<u128> {
        let lane = Lane {
            keys: self.uiv.interleave_keys()?,
            tprime: &self.tprime,
            cmd,
        };
        let h =
            interleave::et_and_counters(std::slice::from_ref(&lane), std::slice::from_mut(body))?;
        Some(first_counter(h[0]))
    }

    /// The ET half of [`CgoRelayDirection::encrypt`] (see [`Uiv::encrypt_left`]).
    #[inline]
    fn encrypt_left(&self, cmd: u8, body: &mut CellBody) {
        self.uiv.encrypt_left(&self.tprime, cmd, body);
    }

    /// The PRF half of [`CgoRelayDirection::encrypt`]; `T'` becomes the new tag.
    #[inline]
    fn encrypt_right(&mut self, body: &mut CellBody) {
        self.uiv.encrypt_right(body);
        self.tprime.copy_from_slice(&body[..CGO_TAG_LEN]);
    }

    /// [`CgoRelayDirection::encrypt_right`] after [`interleave`] ran the ET half and gave the
    /// PRF's first counter `c0`.
    #[inline]
    fn encrypt_right_from(&mut self, c0: u128, body: &mut CellBody) {
        self.uiv.encrypt_right_from(c0, body);
        self.tprime.copy_from_slice(&body[..CGO_TAG_LEN]);
    }

    /// Forward direction: encrypts `body`; if it is for this hop returns the tag it arrived
    /// with (its SENDME tag) and updates the keys.
    #[inline]
    pub fn forward(&mut self, cmd: u8, body: &mut CellBody) -> Option<Block16> {
        let arrived = Self::tag_of(body);
        match self.encrypt_left_one(cmd, body) {
            Some(c0) => self.forward_finish_from(c0, body, arrived),
            None => {
                self.encrypt_left(cmd, body);
                self.forward_finish(body, arrived)
            }
        }
    }

    /// The tag slot of `body`.
    #[inline]
    fn tag_of(body: &CellBody) -> Block16 {
        let mut t = [0u8; CGO_TAG_LEN];
        t.copy_from_slice(&body[..CGO_TAG_LEN]);
        t
    }

    /// [`CgoRelayDirection::forward`] after its ET half; `arrived` is the tag before it.
    #[inline]
    fn forward_finish(&mut self, body: &mut CellBody, arrived: Block16) -> Option<Block16> {
        self.encrypt_right(body);
        self.forward_check(arrived)
    }

    /// [`CgoRelayDirection::forward_finish`] after [`interleave`] (see
    /// [`CgoRelayDirection::encrypt_right_from`]).
    #[inline]
    fn forward_finish_from(
        &mut self,
        c0: u128,
        body: &mut CellBody,
        arrived: Block16,
    ) -> Option<Block16> {
        self.encrypt_right_from(c0, body);
        self.forward_check(arrived)
    }

    /// Whether the new `T'` equals `N` (the cell is for this hop); if so updates the keys
    /// and returns `arrived`, the cell's SENDME tag.
    #[inline]
    fn forward_check(&mut self, arrived: Block16) -> Option<Block16> {
        // Constant time: the comparison must not tell a timing observer how close a forged
        // tag came to N.
        // As two 64-bit words: `subtle`'s byte-wise compare puts an optimisation barrier on
        // each of the 16 bytes, a tenth of a passing cell's cost.
        if bool::from(u128::from_ne_bytes(self.tprime).ct_eq(&u128::from_ne_bytes(self.nonce))) {
            self.uiv.update(&mut self.nonce);
            Some(arrived)
        } else {
            None
        }
    }

    /// Backward direction, a cell from further along the circuit: encrypts it.
    #[inline]
    pub fn backward(&mut self, cmd: u8, body: &mut CellBody) {
        self.encrypt(cmd, body);
    }

    /// Backward direction, a cell this hop originates: its first 16 bytes are overwritten
    /// with N, then it is encrypted. Returns the new tag (the SENDME tag to expect) and
    /// updates the keys.
    #[inline]
    pub fn originate(&mut self, cmd: u8, body: &mut CellBody) -> Block16 {
        body[..CGO_TAG_LEN].copy_from_slice(&self.nonce);
        match self.encrypt_left_one(cmd, body) {
            Some(c0) => self.originate_finish_from(c0, body),
            None => {
                self.encrypt_left(cmd, body);
                self.originate_finish(body)
            }
        }
    }

    /// [`CgoRelayDirection::originate`] after `N` went into the tag slot and
    /// [`CgoRelayDirection::encrypt_left`] ran.
    #[inline]
    fn originate_finish(&mut self, body: &mut CellBody) -> Block16 {
        self.encrypt_right(body);
        self.originate_rekey()
    }

    /// [`CgoRelayDirection::originate_finish`] after [`interleave`] (see
    /// [`CgoRelayDirection::encrypt_right_from`]).
    #[inline]
    fn originate_finish_from(&mut self, c0: u128, body: &mut CellBody) -> Block16 {
        self.encrypt_right_from(c0, body);
        self.originate_rekey()
    }

    /// After an originated cell's encryption: `N` becomes the new tag, which is returned (the
    /// SENDME tag), and the keys are updated.
    #[inline]
    fn originate_rekey(&mut self) -> Block16 {
        self.nonce = self.tprime;
        let tag = self.tprime;
        self.uiv.update(&mut self.nonce);
        tag
    }
}

/// A relay's CGO state for one circuit hop, plus the SENDME tag of the last cell originated or
/// recognized here (C tor keeps one per layer, for both directions).
#[derive(Clone)]
pub struct CgoRelayCrypto<B> {
    pub(super) forward: CgoRelayDirection<B>,
    pub(super) backward: CgoRelayDirection<B>,
    pub(super) sendme_tag: Block16,
}

impl<B> std::fmt::Debug for CgoRelayCrypto<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CgoRelayCrypto(..)")
    }
}

/// CGO with AES-128, as C tor 0.4.9 negotiates it.
pub type CgoRelayCrypto128 = CgoRelayCrypto<aes::Aes128Enc>;
/// CGO with AES-256.
pub type CgoRelayCrypto256 = CgoRelayCrypto<aes::Aes256Enc>;

impl CgoRelayCrypto128 {
    /// The relay side of a hop keyed by a circuit handshake.
    pub fn new(keys: &CgoKeyMaterial) -> Self {
        Self::from_directions(&keys.forward, &keys.backward)
            .expect("CgoKeyMaterial holds AES-128 lengths")
    }
}

impl<B: CgoAes> CgoRelayCrypto<B> {
    /// A hop from each direction's `J | S | N`.
    pub fn from_directions(forward: &[u8], backward: &[u8]) -> Result<Self, CgoKeyError> {
        Ok(CgoRelayCrypto {
            forward: CgoRelayDirection::new(forward)?,
            backward: CgoRelayDirection::new(backward)?,
            sendme_tag: [0; CGO_TAG_LEN],
        })
    }

    /// The tag of the last cell this hop originated or recognized: what an authenticated
    /// SENDME for CGO carries (16 bytes).
    #[inline]
    pub fn sendme_tag(&self) -> &Block16 {
        &self.sendme_tag
    }

    /// A cell moving away from the client with command `cmd`: applies this hop's layer and
    /// returns whether the cell is for this hop. If not, pass it on.
    #[inline]
    pub fn recognize(&mut self, cmd: u8, body: &mut CellBody) -> bool {
        match self.forward.forward(cmd, body) {
            Some(t) => {
                self.sendme_tag = t;
                true
            }
            None => false,
        }
    }

    /// A cell from further along the circuit, toward the client: adds this hop's layer.
    #[inline]
    pub fn backward_relay(&mut self, cmd: u8, body: &mut CellBody) {
        self.backward.backward(cmd, body);
    }

    /// A cell this hop sends toward the client. The first 16 bytes of `body` are the tag slot
    /// and are overwritten; the relay message starts after them. Returns the SENDME tag.
    #[inline]
    pub fn originate(&mut self, cmd: u8, body: &mut CellBody) -> Block16 {
        let t = self.backward.originate(cmd, body);
        self.sendme_tag = t;
        t
    }

    /// [`CgoRelayCrypto::recognize`] for a run of cells of this circuit in order; `for_us[i]`
    /// tells whether `cells[i]` (command `cmds[i]`) is for this hop, and `tags`, if given,
    /// receives each recognized cell's SENDME tag. Returns how many are for this hop.
    ///
    /// # Panics
    /// If the slices differ in length (a caller bug).
    pub fn forward_batch(
        &mut self,
        cmds: &[u8],
        cells: &mut [CellBody],
        for_us: &mut [bool],
        mut tags: Option<&mut [Block16]>,
    ) -> usize {
        assert_eq!(cells.len(), cmds.len(), "one command per cell");
        assert_eq!(cells.len(), for_us.len(), "one flag per cell");
        if let Some(t) = tags.as_deref() {
            assert_eq!(cells.len(), t.len(), "one tag slot per cell");
        }
        let mut n = 0;
        for (i, (body, (&cmd, f))) in cells
            .iter_mut()
            .zip(cmds.iter().zip(for_us.iter_mut()))
            .enumerate()
        {
            *f = self.recognize(cmd, body);
            if *f {
                n += 1;
                if let Some(t) = tags.as_deref_mut() {
                    t[i] = self.sendme_tag;
                }
            }
        }
        n
    }

    /// [`CgoRelayCrypto::backward_relay`] for a run of cells of this circuit, in order.
    ///
    /// # Panics
    /// If the slices differ in length (a caller bug).
    pub fn backward_relay_batch(&mut self, cmds: &[u8], cells: &mut [CellBody]) {
        assert_eq!(cells.len(), cmds.len(), "one command per cell");
        for (body, &cmd) in cells.iter_mut().zip(cmds) {
            self.backward.backward(cmd, body);
        }
    }

    /// [`CgoRelayCrypto::originate`] for a run of cells of this circuit, in order; `tags`, if
    /// given, receives each cell's SENDME tag.
    ///
    /// # Panics
    /// If the slices differ in length (a caller bug).
    pub fn originate_batch(
        &mut self,
        cmds: &[u8],
        cells: &mut [CellBody],
        mut tags: Option<&mut [Block16]>,
    ) {
        assert_eq!(cells.len(), cmds.len(), "one command per cell");
        if let Some(t) = tags.as_deref() {
            assert_eq!(cells.len(), t.len(), "one tag slot per cell");
        }
        for (i, (body, &cmd)) in cells.iter_mut().zip(cmds).enumerate() {
            let t = self.originate(cmd, body);
            if let Some(ts) = tags.as_deref_mut() {
                ts[i] = t;
            }
        }
    }
}

/// Checks the shared shape of the `*_multi` calls.
fn check_multi(n_relays: usize, circ: &[usize], cmds: &[u8], n_cells: usize) {
    assert_eq!(circ.len(), n_cells, "one circuit index per cell");
    assert_eq!(cmds.len(), n_cells, "one command per cell");
    assert!(
        circ.iter().all(|&c| c < n_relays),
        "circuit index out of range"
    );
}

/// Cells of distinct circuits whose ET halves run back to back in one kernel call (the
/// `*_multi` and `*_group` calls).
pub const CGO_GROUP: usize = 4;

/// The end of the group that starts at `start`: at most [`CGO_GROUP`] consecutive cells, all
/// of distinct circuits (a circuit's next cell depends on its previous one through `T'`).
#[inline]
fn group_end(circ: &[usize], start: usize) -> usize {
    let mut end = start + 1;
    while end < circ.len() && end - start < CGO_GROUP && !circ[start..end].contains(&circ[end]) {
        end += 1;
    }
    end
}

const _: () = assert!(CGO_GROUP <= interleave::MAX_LANES);

/// The hop states of one group's cells, by lane (distinct circuits).
trait GroupHops<B> {
    fn hop(&self, lane: usize) -> &CgoRelayCrypto<B>;
    fn hop_mut(&mut self, lane: usize) -> &mut CgoRelayCrypto<B>;
}

/// A group of a `*_multi` call: lane `l` is `relays[circ[l]]`.
struct Indexed<'a, B> {
    relays: &'a mut [CgoRelayCrypto<B>],
    circ: &'a [usize],
}

impl<B> GroupHops<B> for Indexed<'_, B> {
    #[inline]
    fn hop(&self, lane: usize) -> &CgoRelayCrypto<B> {
        &self.relays[self.circ[lane]]
    }
    #[inline]
    fn hop_mut(&mut self, lane: usize) -> &mut CgoRelayCrypto<B> {
        &mut self.relays[self.circ[lane]]
    }
}

/// A group of a `*_group` call: the states themselves (distinct: they are `&mut`).
impl<B> GroupHops<B> for [&mut CgoRelayCrypto<B>] {
    #[inline]
    fn hop(&self, lane: usize) -> &CgoRelayCrypto<B> {
        self[lane]
    }
    #[inline]
    fn hop_mut(&mut self, lane: usize) -> &mut CgoRelayCrypto<B> {
        self[lane]
    }
}

/// The ET halves of one group (`cmds.len()` lanes, distinct circuits) in one [`interleave`]
/// kernel, on the direction `dir` picks; returns each cell's PRF first counter, or `None`,
/// changing nothing, if a key or the CPU cannot run the kernel (then run the one-cell
/// halves).
#[inline]
fn interleaved_left<B: CgoAes, H: GroupHops<B> + ?Sized, S: Bodies + ?Sized>(
    hops: &H,
    dir: fn(&CgoRelayCrypto<B>) -> &CgoRelayDirection<B>,
    cmds: &[u8],
    cells: &mut S,
) -> Option<[u128; CGO_GROUP]> {
    let n = cmds.len();
    let lane = |i: usize| -> Option<Lane<'_>> {
        let d = dir(hops.hop(i));
        Some(Lane {
            keys: d.uiv.interleave_keys()?,
            tprime: &d.tprime,
            cmd: cmds[i],
        })
    };
    let mut lanes = [lane(0)?; CGO_GROUP];
    for (i, l) in lanes.iter_mut().enumerate().take(n).skip(1) {
        *l = lane(i)?;
    }
    let hashes = interleave::et_and_counters(&lanes[..n], cells)?;
    let mut c0 = [0u128; CGO_GROUP];
    for (c, h) in c0.iter_mut().zip(hashes) {
        *c = first_counter(h);
    }
    Some(c0)
}

/// What one group's crypto did: cells for their hop, and whether the interleaved kernel ran.
#[derive(Clone, Copy)]
struct GroupRun {
    for_us: usize,
    interleaved: bool,
}

/// Forward direction for one group (`cmds.len()` lanes of distinct circuits, at most
/// [`CGO_GROUP`]): sets `for_us[l]` per lane.
#[inline]
fn forward_one_group<B: CgoAes, H: GroupHops<B> + ?Sized, S: Bodies + ?Sized>(
    hops: &mut H,
    cmds: &[u8],
    cells: &mut S,
    for_us: &mut [bool],
) -> GroupRun {
    let n = cmds.len();
    let mut arrived = [[0u8; CGO_TAG_LEN]; CGO_GROUP];
    for (l, a) in arrived.iter_mut().enumerate().take(n) {
        *a = CgoRelayDirection::<B>::tag_of(cells.body(l));
    }
    let c0 = interleaved_left(&*hops, |r| &r.forward, cmds, cells);
    if c0.is_none() {
        for (l, &cmd) in cmds.iter().enumerate() {
            hops.hop(l).forward.encrypt_left(cmd, cells.body_mut(l));
        }
    }
    let mut hits = 0;
    for l in 0..n {
        let r = hops.hop_mut(l);
        let done = match c0 {
            Some(c0) => r
                .forward
                .forward_finish_from(c0[l], cells.body_mut(l), arrived[l]),
            None => r.forward.forward_finish(cells.body_mut(l), arrived[l]),
        };
        for_us[l] = match done {
            Some(t) => {
                r.sendme_tag = t;
                true
            }
            None => false,
        };
        hits += usize::from(for_us[l]);
    }
    GroupRun {
        for_us: hits,
        interleaved: c0.is_some(),
    }
}

/// Backward relaying for one group (as [`forward_one_group`]).
#[inline]
fn backward_one_group<B: CgoAes, H: GroupHops<B> + ?Sized, S: Bodies + ?Sized>(
    hops: &mut H,
    cmds: &[u8],
    cells: &mut S,
) -> GroupRun {
    let n = cmds.len();
    let c0 = interleaved_left(&*hops, |r| &r.backward, cmds, cells);
    match c0 {
        Some(c0) => {
            for (l, &c) in c0.iter().enumerate().take(n) {
                hops.hop_mut(l)
                    .backward
                    .encrypt_right_from(c, cells.body_mut(l));
            }
        }
        None => {
            for (l, &cmd) in cmds.iter().enumerate() {
                hops.hop(l).backward.encrypt_left(cmd, cells.body_mut(l));
            }
            for l in 0..n {
                hops.hop_mut(l).backward.encrypt_right(cells.body_mut(l));
            }
        }
    }
    GroupRun {
        for_us: 0,
        interleaved: c0.is_some(),
    }
}

/// Originates one group (as [`forward_one_group`]); `tags`, if given, receives each lane's
/// SENDME tag.
#[inline]
fn originate_one_group<B: CgoAes, H: GroupHops<B> + ?Sized, S: Bodies + ?Sized>(
    hops: &mut H,
    cmds: &[u8],
    cells: &mut S,
    mut tags: Option<&mut [Block16]>,
) -> GroupRun {
    let n = cmds.len();
    for l in 0..n {
        cells.body_mut(l)[..CGO_TAG_LEN].copy_from_slice(&hops.hop(l).backward.nonce);
    }
    let c0 = interleaved_left(&*hops, |r| &r.backward, cmds, cells);
    if c0.is_none() {
        for (l, &cmd) in cmds.iter().enumerate() {
            hops.hop(l).backward.encrypt_left(cmd, cells.body_mut(l));
        }
    }
    for l in 0..n {
        let r = hops.hop_mut(l);
        let t = match c0 {
            Some(c0) => r.backward.originate_finish_from(c0[l], cells.body_mut(l)),
            None => r.backward.originate_finish(cells.body_mut(l)),
        };
        r.sendme_tag = t;
        if let Some(ts) = tags.as_deref_mut() {
            ts[l] = t;
        }
    }
    GroupRun {
        for_us: 0,
        interleaved: c0.is_some(),
    }
}

/// Forward direction for cells of many circuits in one call: `cells[i]` (command `cmds[i]`)
/// belongs to `relays[circ[i]]`; cells of one circuit are taken in slice order. Sets
/// `for_us[i]` and returns how many cells are for their hop.
///
/// Consecutive cells of distinct circuits are taken in groups of up to four: the ET halves
/// (tweak POLYVAL, one AES block, the PRF's counter POLYVAL: a chain of dependent latencies)
/// of the group's cells interleaved in one kernel ([`interleave`], with AES-NI and
/// VPCLMULQDQ; elsewhere back to back), then the PRF's CTR pass of each.
///
/// # Panics
/// If the slices differ in length or an index is out of range (a caller bug).
pub fn forward_multi<B: CgoAes>(
    relays: &mut [CgoRelayCrypto<B>],
    circ: &[usize],
    cmds: &[u8],
    cells: &mut [CellBody],
    for_us: &mut [bool],
) -> usize {
    check_multi(relays.len(), circ, cmds, cells.len());
    assert_eq!(for_us.len(), cells.len(), "one flag per cell");
    let mut n = 0;
    let mut start = 0;
    while start < cells.len() {
        let end = group_end(circ, start);
        let mut hops = Indexed {
            relays: &mut *relays,
            circ: &circ[start..end],
        };
        n += forward_one_group(
            &mut hops,
            &cmds[start..end],
            &mut cells[start..end],
            &mut for_us[start..end],
        )
        .for_us;
        start = end;
    }
    n
}

/// Backward relaying for cells of many circuits in one call (layout and grouping as in
/// [`forward_multi`]).
///
/// # Panics
/// If the slices differ in length or an index is out of range (a caller bug).
pub fn backward_relay_multi<B: CgoAes>(
    relays: &mut [CgoRelayCrypto<B>],
    circ: &[usize],
    cmds: &[u8],
    cells: &mut [CellBody],
) {
    check_multi(relays.len(), circ, cmds, cells.len());
    let mut start = 0;
    while start < cells.len() {
        let end = group_end(circ, start);
        let mut hops = Indexed {
            relays: &mut *relays,
            circ: &circ[start..end],
        };
        backward_one_group(&mut hops, &cmds[start..end], &mut cells[start..end]);
        start = end;
    }
}

/// Originates cells of many circuits in one call (layout and grouping as in
/// [`forward_multi`]); `tags`, if given, receives each cell's SENDME tag.
///
/// # Panics
/// If the slices differ in length or an index is out of range (a caller bug).
pub fn originate_multi<B: CgoAes>(
    relays: &mut [CgoRelayCrypto<B>],
    circ: &[usize],
    cmds: &[u8],
    cells: &mut [CellBody],
    mut tags: Option<&mut [Block16]>,
) {
    check_multi(relays.len(), circ, cmds, cells.len());
    if let Some(t) = tags.as_deref() {
        assert_eq!(t.len(), cells.len(), "one tag slot per cell");
    }
    let mut start = 0;
    while start < cells.len() {
        let end = group_end(circ, start);
        let mut hops = Indexed {
            relays: &mut *relays,
            circ: &circ[start..end],
        };
        originate_one_group(
            &mut hops,
            &cmds[start..end],
            &mut cells[start..end],
            tags.as_deref_mut().map(|t| &mut t[start..end]),
        );
        start = end;
    }
}

/// What a `*_group` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupDone {
    /// Cells for their hop (forward calls).
    pub for_us: usize,
    /// Cells that went through the interleaved kernel in a group of two or more circuits.
    pub interleaved: usize,
}

impl GroupDone {
    fn add(&mut self, lanes: usize, r: GroupRun) {
        self.for_us += r.for_us;
        if r.interleaved && lanes > 1 {
            self.interleaved += lanes;
        }
    }
}

/// Checks the shared shape of the `*_group` calls.
fn check_group(n_hops: usize, cmds: &[u8], n_cells: usize) {
    assert_eq!(n_hops, n_cells, "one hop state per cell");
    assert_eq!(cmds.len(), n_cells, "one command per cell");
}

/// [`forward_multi`] for states that do not lie in one slice (a relay's circuit table): cell
/// `cells[i]` (command `cmds[i]`) belongs to `hops[i]`, so every cell is of another circuit
/// (the states are `&mut`). Taken in groups of [`CGO_GROUP`] in slice order.
///
/// # Panics
/// If the slices differ in length (a caller bug).
pub fn forward_group<B: CgoAes>(
    hops: &mut [&mut CgoRelayCrypto<B>],
    cmds: &[u8],
    cells: &mut [&mut CellBody],
    for_us: &mut [bool],
) -> GroupDone {
    check_group(hops.len(), cmds, cells.len());
    assert_eq!(for_us.len(), cells.len(), "one flag per cell");
    let mut done = GroupDone::default();
    let mut start = 0;
    while start < cells.len() {
        let end = cells.len().min(start + CGO_GROUP);
        let r = forward_one_group(
            &mut hops[start..end],
            &cmds[start..end],
            &mut cells[start..end],
            &mut for_us[start..end],
        );
        done.add(end - start, r);
        start = end;
    }
    done
}

/// [`backward_relay_multi`] for states that do not lie in one slice (as [`forward_group`]).
///
/// # Panics
/// If the slices differ in length (a caller bug).
pub fn backward_relay_group<B: CgoAes>(
    hops: &mut [&mut CgoRelayCrypto<B>],
    cmds: &[u8],
    cells: &mut [&mut CellBody],
) -> GroupDone {
    check_group(hops.len(), cmds, cells.len());
    let mut done = GroupDone::default();
    let mut start = 0;
    while start < cells.len() {
        let end = cells.len().min(start + CGO_GROUP);
        let r = backward_one_group(
            &mut hops[start..end],
            &cmds[start..end],
            &mut cells[start..end],
        );
        done.add(end - start, r);
        start = end;
    }
    done
}

/// [`originate_multi`] for states that do not lie in one slice (as [`forward_group`]).
///
/// # Panics
/// If the slices differ in length (a caller bug).
pub fn originate_group<B: CgoAes>(
    hops: &mut [&mut CgoRelayCrypto<B>],
    cmds: &[u8],
    cells: &mut [&mut CellBody],
    mut tags: Option<&mut [Block16]>,
) -> GroupDone {
    check_group(hops.len(), cmds, cells.len());
    if let Some(t) = tags.as_deref() {
        assert_eq!(t.len(), cells.len(), "one tag slot per cell");
    }
    let mut done = GroupDone::default();
    let mut start = 0;
    while start < cells.len() {
        let end = cells.len().min(start + CGO_GROUP);
        let r = originate_one_group(
            &mut hops[start..end],
            &cmds[start..end],
            &mut cells[start..end],
            tags.as_deref_mut().map(|t| &mut t[start..end]),
        );
        done.add(end - start, r);
        start = end;
    }
    done
}

/// Whether the `*_group` and `*_multi` calls run the interleaved kernel in this process
/// (the CPU has its instructions and `FORS_CGO_INTERLEAVE` is not `off`): without it a group
/// costs what its cells cost one at a time, and callers need not group.
pub fn group_kernel_available() -> bool {
    interleave::available()
}
