//! A plain reference tor1 (tor-spec §"Routing relay cells", §"Relay cells"): AES-128-CTR from
//! a zero IV and a running SHA-1 seeded with the digest key, one direction at a time. It
//! shares no code with `fors::crypto::relay`, so tests can cross-check the production
//! crypto against it, on the client side ([`RefClientLayers`]) and the relay side
//! ([`RefRelayCrypto`]).

use aes::cipher::{KeyIvInit, StreamCipher};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::proto::circuit::{CellBody, HopCrypto};
use sha1::{Digest, Sha1};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The byte range of a relay cell's digest field (tor-spec §"Relay cells").
const DIGEST: std::ops::Range<usize> = 5..9;

/// One direction of tor1.
#[derive(Clone)]
pub struct Tor1Dir {
    cipher: Aes128Ctr,
    digest: Sha1,
}

impl Tor1Dir {
    pub fn new(key: &[u8; 16], seed: &[u8; 20]) -> Self {
        let mut digest = Sha1::new();
        digest.update(seed);
        Tor1Dir {
            cipher: Aes128Ctr::new(key.into(), &[0u8; 16].into()),
            digest,
        }
    }

    pub fn crypt(&mut self, body: &mut CellBody) {
        self.cipher.apply_keystream(body);
    }

    /// Sets the digest field of a cell we originate; returns the full digest (SENDME tag).
    pub fn set_digest(&mut self, body: &mut CellBody) -> [u8; 20] {
        body[DIGEST].fill(0);
        self.digest.update(&body[..]);
        let d: [u8; 20] = self.digest.clone().finalize().into();
        body[DIGEST].copy_from_slice(&d[..4]);
        d
    }

    /// On a decrypted cell: `recognized` == 0 and the digest matches → commit the digest and
    /// return it (the SENDME tag); otherwise leave everything as it was.
    pub fn check(&mut self, body: &mut CellBody) -> Option<[u8; 20]> {
        if body[1] != 0 || body[2] != 0 {
            return None;
        }
        let mut field = [0u8; 4];
        field.copy_from_slice(&body[DIGEST]);
        body[DIGEST].fill(0);
        let mut trial = self.digest.clone();
        trial.update(&body[..]);
        let d: [u8; 20] = trial.clone().finalize().into();
        body[DIGEST].copy_from_slice(&field);
        if d[..4] == field {
            self.digest = trial;
            Some(d)
        } else {
            None
        }
    }
}

/// The relay side of one hop, for a `RelayCore` under test.
pub struct RefRelayCrypto {
    fwd: Tor1Dir,
    back: Tor1Dir,
    tag: [u8; 20],
}

impl HopCrypto for RefRelayCrypto {
    fn from_keys(k: &Tor1KeyMaterial) -> Self {
        RefRelayCrypto {
            fwd: Tor1Dir::new(&k.kf, &k.df),
            back: Tor1Dir::new(&k.kb, &k.db),
            tag: [0; 20],
        }
    }
    fn recognize(&mut self, body: &mut CellBody) -> bool {
        self.fwd.crypt(body);
        match self.fwd.check(body) {
            Some(d) => {
                self.tag = d;
                true
            }
            None => false,
        }
    }
    fn sendme_tag(&self) -> &[u8; 20] {
        &self.tag
    }
    fn backward_relay(&mut self, body: &mut CellBody) {
        self.back.crypt(body);
    }
    fn originate(&mut self, body: &mut CellBody) -> [u8; 20] {
        let d = self.back.set_digest(body);
        self.back.crypt(body);
        self.tag = d;
        d
    }
}

/// The client side of a multi-hop circuit in the reference tor1.
#[derive(Default)]
pub struct RefClientLayers {
    hops: Vec<(Tor1Dir, Tor1Dir)>,
    /// SENDME tag of the last cell each hop sent us.
    last_tag: Vec<[u8; 20]>,
}

impl crate::circuit::ClientLayers for RefClientLayers {
    fn push(&mut self, k: &Tor1KeyMaterial) {
        self.hops
            .push((Tor1Dir::new(&k.kf, &k.df), Tor1Dir::new(&k.kb, &k.db)));
        self.last_tag.push([0; 20]);
    }
    fn len(&self) -> usize {
        self.hops.len()
    }
    fn originate(&mut self, hop: usize, body: &mut CellBody) -> Option<[u8; 20]> {
        let d = self.hops.get_mut(hop)?.0.set_digest(body);
        for h in (0..=hop).rev() {
            self.hops[h].0.crypt(body);
        }
        Some(d)
    }
    fn recognize(&mut self, body: &mut CellBody) -> Option<usize> {
        for (i, (_, back)) in self.hops.iter_mut().enumerate() {
            back.crypt(body);
            if let Some(d) = back.check(body) {
                self.last_tag[i] = d;
                return Some(i);
            }
        }
        None
    }
    fn last_tag(&self, hop: usize) -> Option<[u8; 20]> {
        self.last_tag.get(hop).copied()
    }
}
