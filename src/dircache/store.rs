//! The documents a directory cache keeps, looked up the way dir-spec's URLs name them
//! (dir-spec §4.4 "Downloading ... from a directory cache", appendix "Standard URLs").
//!
//! Every document is inserted already verified (signatures and digests checked by the
//! mirror) and is kept as the exact bytes to serve, behind an `Arc` so a reader clones a
//! pointer, not the body.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::crypto::ids::RsaIdentity;

/// The store as shared by the mirror (writer) and the directory server (readers).
pub type SharedStore = Arc<RwLock<DirStore>>;

/// The two consensus flavours a cache serves (dir-spec §3.4.1, §3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsensusFlavor {
    /// `consensus` (the "ns" flavour: full router status entries).
    Ns,
    /// `consensus-microdesc`.
    Microdesc,
}

impl ConsensusFlavor {
    /// The name in URLs and in the `network-status-version 3 <flavor>` line.
    pub fn url_name(self) -> &'static str {
        match self {
            ConsensusFlavor::Ns => "consensus",
            ConsensusFlavor::Microdesc => "consensus-microdesc",
        }
    }
}

/// One stored document: the bytes to serve and when it was published (for
/// `Last-Modified` / `If-Modified-Since`, dir-spec §4.4).
#[derive(Debug, Clone)]
pub struct Document {
    pub body: Arc<[u8]>,
    /// Unix seconds.
    pub published: u64,
}

/// A verified consensus.
#[derive(Debug, Clone)]
pub struct ConsensusDoc {
    pub body: Arc<[u8]>,
    pub flavor: ConsensusFlavor,
    /// Unix seconds of `valid-after`, `fresh-until`, `valid-until`.
    pub valid_after: u64,
    pub fresh_until: u64,
    pub valid_until: u64,
    /// The v3 identities (authority `fingerprint`s) whose signatures verified; a request
    /// naming authorities (`/consensus/F1+F2`) is served only if enough of them signed
    /// (dir-spec §4.4, "more than half").
    pub signers: Vec<RsaIdentity>,
    /// SHA3-256 of the signed part (dir-spec "consensus diffs": the digest named by
    /// `X-Or-Diff-From-Consensus`).
    pub sha3_digest: [u8; 32],
}

/// Everything the cache serves.
#[derive(Debug, Default)]
pub struct DirStore {
    consensus: HashMap<ConsensusFlavor, ConsensusDoc>,
    /// Diffs to the current consensus of a flavour, keyed by the older consensus's SHA3-256.
    diffs: HashMap<(ConsensusFlavor, [u8; 32]), Arc<[u8]>>,
    /// Microdescriptors by SHA-256 of their text.
    microdescs: HashMap<[u8; 32], Document>,
    /// Server descriptors by SHA-1 digest of the signed part.
    server_by_digest: HashMap<[u8; 20], Document>,
    /// Digest of the newest server descriptor per relay identity.
    server_by_id: HashMap<RsaIdentity, [u8; 20]>,
    /// Authority key certificates by (identity, signing-key digest).
    certs: HashMap<(RsaIdentity, [u8; 20]), Document>,
}

impl DirStore {
    pub fn new() -> DirStore {
        DirStore::default()
    }

    /// Replaces the current consensus of its flavour. Diffs to the old one are dropped; the
    /// caller inserts diffs to the new one with [`DirStore::insert_diff`].
    pub fn set_consensus(&mut self, doc: ConsensusDoc) {
        let flavor = doc.flavor;
        self.diffs.retain(|(f, _), _| *f != flavor);
        self.consensus.insert(flavor, doc);
    }

    /// A diff from the consensus whose SHA3-256 is `from` to the current one of `flavor`.
    pub fn insert_diff(&mut self, flavor: ConsensusFlavor, from: [u8; 32], diff: Arc<[u8]>) {
        self.diffs.insert((flavor, from), diff);
    }

    pub fn insert_microdesc(&mut self, sha256: [u8; 32], doc: Document) {
        self.microdescs.insert(sha256, doc);
    }

    pub fn insert_server_descriptor(&mut self, id: RsaIdentity, sha1: [u8; 20], doc: Document) {
        let newer = match self
            .server_by_id
            .get(&id)
            .and_then(|d| self.server_by_digest.get(d))
        {
            Some(old) => doc.published >= old.published,
            None => true,
        };
        self.server_by_digest.insert(sha1, doc);
        if newer {
            self.server_by_id.insert(id, sha1);
        }
    }

    pub fn insert_cert(&mut self, id: RsaIdentity, signing_key_digest: [u8; 20], doc: Document) {
        self.certs.insert((id, signing_key_digest), doc);
    }

    pub fn consensus(&self, flavor: ConsensusFlavor) -> Option<&ConsensusDoc> {
        self.consensus.get(&flavor)
    }

    pub fn consensus_diff(&self, flavor: ConsensusFlavor, from: &[u8; 32]) -> Option<&Arc<[u8]>> {
        self.diffs.get(&(flavor, *from))
    }

    pub fn microdesc(&self, sha256: &[u8; 32]) -> Option<&Document> {
        self.microdescs.get(sha256)
    }

    pub fn server_descriptor_by_digest(&self, sha1: &[u8; 20]) -> Option<&Document> {
        self.server_by_digest.get(sha1)
    }

    pub fn server_descriptor_by_id(&self, id: &RsaIdentity) -> Option<&Document> {
        self.server_by_id
            .get(id)
            .and_then(|d| self.server_by_digest.get(d))
    }

    /// The newest server descriptor of every relay, in no particular order.
    pub fn server_descriptors(&self) -> impl Iterator<Item = &Document> {
        self.server_by_id
            .values()
            .filter_map(|d| self.server_by_digest.get(d))
    }

    /// Every certificate of authority `id`.
    pub fn certs_by_id<'a>(&'a self, id: &'a RsaIdentity) -> impl Iterator<Item = &'a Document> {
        self.certs
            .iter()
            .filter(move |((i, _), _)| i == id)
            .map(|(_, d)| d)
    }

    pub fn cert(&self, id: &RsaIdentity, signing_key_digest: &[u8; 20]) -> Option<&Document> {
        self.certs.get(&(*id, *signing_key_digest))
    }

    /// Every certificate kept.
    pub fn certs(&self) -> impl Iterator<Item = &Document> {
        self.certs.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, published: u64) -> Document {
        Document {
            body: Arc::from(text.as_bytes()),
            published,
        }
    }

    #[test]
    fn newest_server_descriptor_wins_by_id() {
        let mut s = DirStore::new();
        let id = RsaIdentity([7; 20]);
        s.insert_server_descriptor(id, [1; 20], doc("new", 200));
        s.insert_server_descriptor(id, [2; 20], doc("old", 100));
        assert_eq!(&*s.server_descriptor_by_id(&id).unwrap().body, b"new");
        assert_eq!(
            &*s.server_descriptor_by_digest(&[2; 20]).unwrap().body,
            b"old"
        );
        assert_eq!(s.server_descriptors().count(), 1);
    }

    #[test]
    fn a_new_consensus_drops_diffs_to_the_old_one() {
        let mut s = DirStore::new();
        let c = |d: u8| ConsensusDoc {
            body: Arc::from(&b"c"[..]),
            flavor: ConsensusFlavor::Microdesc,
            valid_after: 0,
            fresh_until: 0,
            valid_until: 0,
            signers: vec![],
            sha3_digest: [d; 32],
        };
        s.set_consensus(c(1));
        s.insert_diff(ConsensusFlavor::Microdesc, [0; 32], Arc::from(&b"diff"[..]));
        assert!(s
            .consensus_diff(ConsensusFlavor::Microdesc, &[0; 32])
            .is_some());
        s.set_consensus(c(2));
        assert!(s
            .consensus_diff(ConsensusFlavor::Microdesc, &[0; 32])
            .is_none());
    }
}
