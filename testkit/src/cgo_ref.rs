//! A plain reference of CGO's client side (proposal 359 "Client operations"; tor-spec
//! "Relay cryptography: CGO"), AES-128 as C tor 0.4.9 runs it, written apart from
//! `fors::crypto::relay::cgo` so a relay under test is checked by an independent client.
//!
//! A client *decrypts* with UIV+: for a hop a cell passes through, it computes the body that
//! hop's encryption turns into the body it already has. Per direction it keeps the UIV+ keys
//! `(J, S)`, the nonce `N` and the chained tag `T'`.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use fors::cell::CELL_BODY_LEN;
use fors::crypto::relay::cgo::CgoKeyMaterial;
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;

type Body = [u8; CELL_BODY_LEN];
type B16 = [u8; 16];

/// Tag (left half) length.
pub const TAG_LEN: usize = 16;
const PAYLOAD_LEN: usize = CELL_BODY_LEN - TAG_LEN;

#[derive(Clone)]
struct Keys {
    /// ET: AES key KB, POLYVAL key KU.
    kb: Aes128,
    ku: B16,
    /// PRF: AES key K, POLYVAL key B.
    k: Aes128,
    b: B16,
}

impl Keys {
    /// `KB | KU | K | B`, 64 bytes.
    fn new(key: &[u8]) -> Self {
        Keys {
            kb: Aes128::new(GenericArray::from_slice(&key[..16])),
            ku: key[16..32].try_into().unwrap(),
            k: Aes128::new(GenericArray::from_slice(&key[32..48])),
            b: key[48..64].try_into().unwrap(),
        }
    }

    fn polyval(key: &B16, data: &[u8]) -> B16 {
        let mut p = Polyval::new(&(*key).into());
        p.update_padded(data);
        p.finalize().into()
    }

    /// The ET tweak mask: POLYVAL(KU, H | cmd | X_R), zero-padded, no length block. (The
    /// tweak is built on the stack: the load generator runs this for every cell.)
    fn et_mask(&self, h: &B16, cmd: u8, x_r: &[u8]) -> B16 {
        let mut t = [0u8; 16 + 1 + PAYLOAD_LEN];
        t[..16].copy_from_slice(h);
        t[16] = cmd;
        t[17..].copy_from_slice(x_r);
        Self::polyval(&self.ku, &t)
    }

    /// PRF(S, x, t): AES-CTR from POLYVAL(B, x) with the low six bits cleared, + 31·t.
    fn prf(&self, x: &B16, t: u128, out: &mut [u8]) {
        let mut iv = Self::polyval(&self.b, x);
        iv[15] &= 0xC0;
        let c0 = u128::from_be_bytes(iv) + 31 * t;
        for (i, chunk) in out.chunks_mut(16).enumerate() {
            let mut blk = Block::from((c0 + i as u128).to_be_bytes());
            self.k.encrypt_block(&mut blk);
            for (o, k) in chunk.iter_mut().zip(blk.iter()) {
                *o ^= k;
            }
        }
    }

    /// DEC_UIV: X_R = Y_R ^ PRF(S, Y_L, 0); X_L = DEC_ET(J, H | cmd | X_R, Y_L).
    fn decrypt(&self, h: &B16, cmd: u8, body: &mut Body) {
        let (l, r) = body.split_at_mut(TAG_LEN);
        let y_l: B16 = l.try_into().unwrap();
        self.prf(&y_l, 0, r);
        let m = self.et_mask(h, cmd, r);
        let mut blk = Block::from(y_l);
        for (b, m) in blk.iter_mut().zip(m) {
            *b ^= m;
        }
        self.kb.decrypt_block(&mut blk);
        for (o, (b, m)) in l.iter_mut().zip(blk.iter().zip(m)) {
            *o = b ^ m;
        }
    }

    /// UPDATE_UIV: (J', S', N') = PRF(S, N, 1).
    fn update(&mut self, nonce: &mut B16) {
        let mut seed = [0u8; 80];
        self.prf(nonce, 1, &mut seed);
        *self = Keys::new(&seed[..64]);
        nonce.copy_from_slice(&seed[64..]);
    }
}

#[derive(Clone)]
struct Dir {
    keys: Keys,
    nonce: B16,
    tprime: B16,
}

impl Dir {
    /// `J | S | N`, 80 bytes.
    fn new(key: &[u8; 80]) -> Self {
        Dir {
            keys: Keys::new(&key[..64]),
            nonce: key[64..].try_into().unwrap(),
            tprime: [0; 16],
        }
    }

    fn pass(&mut self, cmd: u8, body: &mut Body) {
        let before: B16 = body[..TAG_LEN].try_into().unwrap();
        self.keys.decrypt(&self.tprime, cmd, body);
        self.tprime = before;
    }
}

/// The client side of one CGO hop: its forward and backward directions.
#[derive(Clone)]
pub struct CgoClientHop {
    fwd: Dir,
    back: Dir,
}

impl CgoClientHop {
    /// The layer of a hop whose ntor-v3 handshake negotiated CGO.
    pub fn new(k: &CgoKeyMaterial) -> Self {
        CgoClientHop {
            fwd: Dir::new(&k.forward),
            back: Dir::new(&k.backward),
        }
    }

    /// A v1-formatted body (tag slot ignored) for this hop, sent with channel command `cmd`:
    /// sets the tag and adds this hop's layer; returns the SENDME tag the hop will keep.
    pub fn originate(&mut self, cmd: u8, body: &mut Body) -> B16 {
        let target = &mut self.fwd;
        body[..TAG_LEN].copy_from_slice(&target.nonce);
        target.pass(cmd, body);
        let tag: B16 = body[..TAG_LEN].try_into().unwrap();
        target.keys.update(&mut target.nonce);
        tag
    }

    /// Adds this hop's layer to a cell for a later hop (the hop only passes it on).
    pub fn forward(&mut self, cmd: u8, body: &mut Body) {
        self.fwd.pass(cmd, body);
    }

    /// Removes this hop's layer from a cell coming toward the client; the cell's SENDME tag
    /// if this hop sent it.
    pub fn backward(&mut self, cmd: u8, body: &mut Body) -> Option<B16> {
        let back = &mut self.back;
        let before: B16 = body[..TAG_LEN].try_into().unwrap();
        back.pass(cmd, body);
        if body[..TAG_LEN] == back.nonce {
            back.nonce = before;
            back.keys.update(&mut back.nonce);
            Some(before)
        } else {
            None
        }
    }
}

/// The client side of a CGO circuit: one [`CgoClientHop`] per hop, hop 0 nearest.
#[derive(Default)]
pub struct CgoClientCircuit {
    hops: Vec<CgoClientHop>,
}

impl CgoClientCircuit {
    /// Adds the layer of a hop whose ntor-v3 handshake negotiated CGO.
    pub fn push(&mut self, k: &CgoKeyMaterial) {
        self.hops.push(CgoClientHop::new(k));
    }

    pub fn len(&self) -> usize {
        self.hops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// A v1-formatted body (tag slot ignored) for `hop`, sent with channel command `cmd`:
    /// adds the layers; returns the SENDME tag that hop will keep.
    pub fn originate(&mut self, hop: usize, cmd: u8, body: &mut Body) -> B16 {
        let tag = self.hops[hop].originate(cmd, body);
        for h in (0..hop).rev() {
            self.hops[h].forward(cmd, body);
        }
        tag
    }

    /// Strips layers until a hop recognizes the cell: that hop and the cell's SENDME tag.
    pub fn recognize(&mut self, cmd: u8, body: &mut Body) -> Option<(usize, B16)> {
        self.hops
            .iter_mut()
            .enumerate()
            .find_map(|(i, h)| h.backward(cmd, body).map(|t| (i, t)))
    }
}
