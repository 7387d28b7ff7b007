//! TEMPORARY stand-in for `fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer}` with
//! the same API, used only until that module is merged (then this file is deleted).
//! tor-spec §"Routing relay cells": client-side tor1 (AES-128-CTR + running SHA-1).

use aes::cipher::{KeyIvInit, StreamCipher};
use fors::crypto::keymat::Tor1KeyMaterial;
use sha1::{Digest, Sha1};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type CellBody = [u8; 509];

#[derive(Clone)]
pub struct Tor1ClientLayer {
    fwd: Aes128Ctr,
    bwd: Aes128Ctr,
    fwd_d: Sha1,
    bwd_d: Sha1,
    sendme_tag: [u8; 20],
}

impl Tor1ClientLayer {
    pub fn new(k: &Tor1KeyMaterial) -> Self {
        let mut fwd_d = Sha1::new();
        fwd_d.update(k.df);
        let mut bwd_d = Sha1::new();
        bwd_d.update(k.db);
        Tor1ClientLayer {
            fwd: Aes128Ctr::new(&k.kf.into(), &[0u8; 16].into()),
            bwd: Aes128Ctr::new(&k.kb.into(), &[0u8; 16].into()),
            fwd_d,
            bwd_d,
            sendme_tag: [0; 20],
        }
    }
    pub fn sendme_tag(&self) -> &[u8; 20] {
        &self.sendme_tag
    }
}

#[derive(Clone, Default)]
pub struct Tor1ClientCircuit {
    hops: Vec<Tor1ClientLayer>,
}

impl Tor1ClientCircuit {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push_hop(&mut self, l: Tor1ClientLayer) {
        self.hops.push(l);
    }
    pub fn len(&self) -> usize {
        self.hops.len()
    }
    pub fn hop(&self, i: usize) -> Option<&Tor1ClientLayer> {
        self.hops.get(i)
    }
    pub fn originate(&mut self, hop: usize, body: &mut CellBody) -> Result<[u8; 20], ()> {
        let t = self.hops.get_mut(hop).ok_or(())?;
        body[5..9].fill(0);
        t.fwd_d.update(&body[..]);
        let d: [u8; 20] = t.fwd_d.clone().finalize().into();
        body[5..9].copy_from_slice(&d[..4]);
        t.sendme_tag = d;
        for l in self.hops[..=hop].iter_mut().rev() {
            l.fwd.apply_keystream(&mut body[..]);
        }
        Ok(d)
    }
    pub fn recognize(&mut self, body: &mut CellBody) -> Option<usize> {
        for (i, l) in self.hops.iter_mut().enumerate() {
            l.bwd.apply_keystream(&mut body[..]);
            if body[1..3] == [0, 0] {
                let mut got = [0u8; 4];
                got.copy_from_slice(&body[5..9]);
                body[5..9].fill(0);
                let mut h = l.bwd_d.clone();
                h.update(&body[..]);
                let d: [u8; 20] = h.clone().finalize().into();
                body[5..9].copy_from_slice(&got);
                if d[..4] == got {
                    l.bwd_d = h;
                    l.sendme_tag = d;
                    return Some(i);
                }
            }
        }
        None
    }
}
