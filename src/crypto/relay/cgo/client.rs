//! Tests only: the client side of CGO (proposal 359 "Client operations"), the inverse of the
//! relay operations, so that relay code can be checked by round trips and against the
//! published client vectors.
#![forbid(unsafe_code)]

use super::uiv::Uiv;
use super::{Block16, CellBody, Cipher16, CGO_TAG_LEN};
use aes::cipher::{BlockDecrypt, BlockEncrypt};
use subtle::ConstantTimeEq;

/// One direction of one hop at the client. A client *decrypts* with UIV+ (`ED`: the ET block
/// cipher, run backwards; `PE`: the PRF's block cipher).
#[derive(Clone)]
pub(super) struct ClientDirection<ED, PE> {
    pub(super) uiv: Uiv<ED, PE>,
    pub(super) nonce: Block16,
    pub(super) tprime: Block16,
}

impl<ED: Cipher16 + BlockDecrypt, PE: Cipher16 + BlockEncrypt> ClientDirection<ED, PE> {
    pub(super) fn new(key: &[u8]) -> Self {
        let (k, n) = key.split_at(Uiv::<ED, PE>::key_len());
        ClientDirection {
            uiv: Uiv::new(k),
            nonce: n.try_into().unwrap(),
            tprime: [0; CGO_TAG_LEN],
        }
    }

    /// Forward, a hop this cell passes through: `T'` becomes the tag the cell had before.
    pub(super) fn forward(&mut self, cmd: u8, body: &mut CellBody) {
        let before: Block16 = body[..CGO_TAG_LEN].try_into().unwrap();
        self.uiv.decrypt(&self.tprime, cmd, body);
        self.tprime = before;
    }

    /// Forward, the target hop: N goes in the tag slot; returns the tag the relay will see.
    pub(super) fn originate(&mut self, cmd: u8, body: &mut CellBody) -> Block16 {
        body[..CGO_TAG_LEN].copy_from_slice(&self.nonce);
        self.forward(cmd, body);
        self.uiv.update(&mut self.nonce);
        body[..CGO_TAG_LEN].try_into().unwrap()
    }

    /// Backward: removes this hop's layer; returns the SENDME tag if the cell came from
    /// this hop.
    pub(super) fn backward(&mut self, cmd: u8, body: &mut CellBody) -> Option<Block16> {
        let before: Block16 = body[..CGO_TAG_LEN].try_into().unwrap();
        self.uiv.decrypt(&self.tprime, cmd, body);
        self.tprime = before;
        if bool::from(body[..CGO_TAG_LEN].ct_eq(&self.nonce[..])) {
            self.nonce = before;
            self.uiv.update(&mut self.nonce);
            Some(before)
        } else {
            None
        }
    }
}

/// A client's CGO circuit: one (forward, backward) pair per hop, hop 0 nearest.
pub(super) struct ClientCircuit<ED, PE> {
    pub(super) hops: Vec<super::tests::ClientHop<ED, PE>>,
}

impl<ED: Cipher16 + BlockDecrypt, PE: Cipher16 + BlockEncrypt> ClientCircuit<ED, PE> {
    /// Sends a cell to `hop`; returns the SENDME tag that hop will report.
    pub(super) fn originate(&mut self, hop: usize, cmd: u8, body: &mut CellBody) -> Block16 {
        let tag = self.hops[hop].0.originate(cmd, body);
        for h in (0..hop).rev() {
            self.hops[h].0.forward(cmd, body);
        }
        tag
    }

    /// Receives a cell; returns which hop sent it and its SENDME tag.
    pub(super) fn recognize(&mut self, cmd: u8, body: &mut CellBody) -> Option<(usize, Block16)> {
        for (i, h) in self.hops.iter_mut().enumerate() {
            if let Some(t) = h.1.backward(cmd, body) {
                return Some((i, t));
            }
        }
        None
    }
}
