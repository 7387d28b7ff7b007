//! The client side of tor1 (for the load generator and tests): a circuit is a list of hop
//! layers; cells to hop i are digested with hop i's forward digest and then encrypted with the
//! layers of hops i, i-1, ..., 0 (tor-spec "Routing relay cells", sending and receiving at the
//! client).

use super::cpu::{AesImpl, Sha1Impl, Tor1Engine};
use super::tor1::Tor1Direction;
use super::{CellBody, SENDME_TAG_LEN};
use crate::crypto::keymat::Tor1KeyMaterial;

/// The client's state for one hop: the mirror image of that hop's [`super::Tor1RelayCrypto`].
#[derive(Clone, Debug)]
pub struct Tor1ClientLayer {
    forward: Tor1Direction,
    backward: Tor1Direction,
    sendme_tag: [u8; SENDME_TAG_LEN],
}

impl Tor1ClientLayer {
    /// The client side of a hop keyed by a circuit handshake.
    pub fn new(keys: &Tor1KeyMaterial) -> Self {
        let e = Tor1Engine::get();
        Self::with_impls(keys, e.aes, e.sha1)
    }

    /// As [`Tor1ClientLayer::new`] with chosen implementations.
    pub fn with_impls(keys: &Tor1KeyMaterial, aes: AesImpl, sha1: Sha1Impl) -> Self {
        Tor1ClientLayer {
            forward: Tor1Direction::new(&keys.kf, &keys.df, aes, sha1),
            backward: Tor1Direction::new(&keys.kb, &keys.db, aes, sha1),
            sendme_tag: [0; SENDME_TAG_LEN],
        }
    }

    /// SENDME v1 tag of the last cell this layer originated or recognized.
    pub fn sendme_tag(&self) -> &[u8; SENDME_TAG_LEN] {
        &self.sendme_tag
    }
}

/// Errors from client-side circuit crypto.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tor1ClientError {
    /// A cell was addressed to a hop the circuit does not have.
    #[error("circuit has {hops} hops, no hop {hop}")]
    NoSuchHop {
        /// The requested hop index (0 = first hop).
        hop: usize,
        /// Hops in the circuit.
        hops: usize,
    },
}

/// A client's multi-hop circuit crypto.
#[derive(Clone, Debug, Default)]
pub struct Tor1ClientCircuit {
    hops: Vec<Tor1ClientLayer>,
}

impl Tor1ClientCircuit {
    /// A circuit without hops.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a hop (after its CREATED2 / EXTENDED2).
    pub fn push_hop(&mut self, layer: Tor1ClientLayer) {
        self.hops.push(layer);
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the circuit has no hops.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The layer of hop `hop`.
    pub fn hop(&self, hop: usize) -> Option<&Tor1ClientLayer> {
        self.hops.get(hop)
    }

    /// Sends a cell to hop `hop`: sets its digest with that hop's forward digest, then adds the
    /// layers of hops `hop`..=0. Returns the cell's SENDME v1 tag.
    pub fn originate(
        &mut self,
        hop: usize,
        body: &mut CellBody,
    ) -> Result<[u8; SENDME_TAG_LEN], Tor1ClientError> {
        let hops = self.hops.len();
        let target = self
            .hops
            .get_mut(hop)
            .ok_or(Tor1ClientError::NoSuchHop { hop, hops })?;
        let d = target.forward.set_digest(body);
        target.sendme_tag = d;
        for layer in self.hops[..=hop].iter_mut().rev() {
            layer.forward.crypt(body);
        }
        Ok(d)
    }

    /// [`Tor1ClientCircuit::originate`] for a run of cells to the same hop.
    pub fn originate_batch(
        &mut self,
        hop: usize,
        cells: &mut [CellBody],
    ) -> Result<(), Tor1ClientError> {
        let hops = self.hops.len();
        let target = self
            .hops
            .get_mut(hop)
            .ok_or(Tor1ClientError::NoSuchHop { hop, hops })?;
        for body in cells.iter_mut() {
            target.sendme_tag = target.forward.set_digest(body);
        }
        for layer in self.hops[..=hop].iter_mut().rev() {
            layer.forward.crypt(cells.as_flattened_mut());
        }
        Ok(())
    }

    /// Receives a cell from the circuit: strips layers from hop 0 outward until one recognizes
    /// it. Returns the index of the hop that sent it, or `None` if no hop did (a protocol
    /// violation: the caller closes the circuit).
    pub fn recognize(&mut self, body: &mut CellBody) -> Option<usize> {
        for (i, layer) in self.hops.iter_mut().enumerate() {
            if let Some(d) = layer.backward.decrypt_and_recognize(body) {
                layer.sendme_tag = d;
                return Some(i);
            }
        }
        None
    }
}
