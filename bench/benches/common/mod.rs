//! Shared set-up for the relay-crypto benches: deterministic keys and cells, no RNG crate.

#![allow(dead_code)] // each bench uses a different part

use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::{
    CellBody, Tor1ClientCircuit, Tor1ClientLayer, Tor1RelayCrypto, CELL_BODY_LEN,
};

/// A small xorshift generator: benches need varied bytes, not secure ones.
pub struct Fill(u64);

impl Fill {
    pub fn new(seed: u64) -> Self {
        Fill(seed | 1)
    }
    pub fn bytes(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
    pub fn keys(&mut self) -> Tor1KeyMaterial {
        let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
        self.bytes(&mut k);
        Tor1KeyMaterial::from_kdf_output(&k)
    }
    pub fn cells(&mut self, n: usize) -> Vec<CellBody> {
        let mut v = vec![[0u8; CELL_BODY_LEN]; n];
        for c in &mut v {
            self.bytes(c);
        }
        v
    }
}

/// `n` relay hop states with matching one-hop client circuits.
pub fn circuits(fill: &mut Fill, n: usize) -> (Vec<Tor1RelayCrypto>, Vec<Tor1ClientCircuit>) {
    (0..n)
        .map(|_| {
            let k = fill.keys();
            let mut c = Tor1ClientCircuit::new();
            c.push_hop(Tor1ClientLayer::new(&k));
            (Tor1RelayCrypto::new(&k), c)
        })
        .unzip()
}
