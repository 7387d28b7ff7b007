//! The documents a directory cache keeps, looked up the way dir-spec's URLs name them
//! (dir-spec §4.4 "Downloading ... from a directory cache", appendix "Standard URLs").
//!
//! Every document is inserted already verified (signatures and digests checked by the
//! mirror) and is kept as the exact bytes to serve, behind an `Arc` so a reader clones a
//! pointer, not the body.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use super::compress::Method;
use crate::crypto::ids::RsaIdentity;

/// How many earlier consensuses of each flavour are kept to diff from: with hourly
/// consensuses, a client up to this many hours behind gets a diff, an older one the whole
/// consensus (as from a C tor cache that no longer holds its base). Bounds the memory of bases
/// and diffs to this many of each.
pub const DIFF_BASES: usize = 8;

/// The store as shared by the mirror (writer) and the directory server (readers).
pub type SharedStore = Arc<RwLock<DirStore>>;

/// A compressed form's key: the flavour, the diff base (`None`: the consensus itself) and
/// the method.
type FormKey = (ConsensusFlavor, Option<[u8; 32]>, Method);

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

/// C tor's default `try-diff-for-consensus-newer-than` (72 hours), in seconds.
pub const TRY_DIFF_DEFAULT_SECS: u64 = 72 * 3600;

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
    /// SHA3-256 of the signed part, from `network-status-version` through the space after
    /// the first `directory-signature` (the "digest-as-signed" of prop 140 and dir-spec
    /// "consensus diffs", C `router_get_networkstatus_v3_sha3_as_signed`), not of the whole
    /// text: signatures can be re-encoded, so a client names its consensus by this digest in
    /// `X-Or-Diff-From-Consensus`.
    pub sha3_digest: [u8; 32],
    /// Its `try-diff-for-consensus-newer-than` parameter in seconds (C tor dirclient.c
    /// `dir_consensus_request_set_additional_headers`: hours, default 72, 0..=8192): a
    /// cache holding it asks for a diff from it only while it is younger than this.
    pub try_diff_newer_than: u64,
}

/// The kinds of document the mirror fetches, for counters and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Consensus,
    Cert,
    Microdesc,
    ServerDescriptor,
}

impl DocKind {
    pub const ALL: [DocKind; 4] = [
        DocKind::Consensus,
        DocKind::Cert,
        DocKind::Microdesc,
        DocKind::ServerDescriptor,
    ];

    /// The label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            DocKind::Consensus => "consensus",
            DocKind::Cert => "cert",
            DocKind::Microdesc => "microdesc",
            DocKind::ServerDescriptor => "server_descriptor",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How much the store may hold per kind; an insert past a bound is refused and counted
/// (the mirror evicts what the consensus no longer lists first, see [`DirStore::evict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_microdescs: usize,
    pub max_microdesc_bytes: usize,
    pub max_server_descriptors: usize,
    pub max_server_descriptor_bytes: usize,
    pub max_certs: usize,
    pub max_cert_bytes: usize,
    /// Bytes of the compressed forms of the current consensuses and of the diffs to them
    /// (see [`DirStore::insert_compressed`]).
    pub max_compressed_bytes: usize,
}

impl Default for StoreLimits {
    /// About 4x today's network (≈9 000 relays; microdescs ≈ 500 B, descriptors ≈ 2.5 kB;
    /// about 10 authorities with at most a few certificates each).
    fn default() -> Self {
        StoreLimits {
            max_microdescs: 40_000,
            max_microdesc_bytes: 64 << 20,
            max_server_descriptors: 40_000,
            max_server_descriptor_bytes: 160 << 20,
            max_certs: 64,
            max_cert_bytes: 1 << 20,
            // Today: ≈ 1 MB per compressed consensus form (3 forms × 2 flavours) and tens of
            // kB per compressed diff (3 forms × 2 flavours × 8 bases): about 10 MB.
            max_compressed_bytes: 64 << 20,
        }
    }
}

/// Counts per kind (documents kept, their bytes, fetches, refusals), read by the metrics
/// code through [`DirStore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    pub documents: u64,
    pub bytes: u64,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
    /// Documents that did not verify (bad signature, unlisted digest, malformed).
    pub rejected: u64,
    /// Verified documents refused because the kind's bound was reached.
    pub over_limit: u64,
    /// Documents dropped because the consensus no longer lists them (or expired).
    pub evicted: u64,
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub consensus: KindStats,
    pub cert: KindStats,
    pub microdesc: KindStats,
    pub server_descriptor: KindStats,
    /// Diffs kept (to the current consensus of either flavour), and their bytes.
    pub diffs: u64,
    pub diff_bytes: u64,
    /// Diffs that could not be generated (counted, never served).
    pub diff_failures: u64,
    /// Compressed forms kept of the current consensuses and their diffs, and their bytes.
    pub compressed: u64,
    pub compressed_bytes: u64,
    /// Compressed forms not kept: the compressor failed, or the bound was reached (the
    /// uncompressed document is served instead).
    pub compress_failures: u64,
    pub compressed_over_limit: u64,
    /// Fetches by source: `[authority, cache]` × `[answered, failed]`.
    pub source_fetches: [[u64; 2]; 2],
}

impl StoreStats {
    pub fn get(&self, kind: DocKind) -> &KindStats {
        match kind {
            DocKind::Consensus => &self.consensus,
            DocKind::Cert => &self.cert,
            DocKind::Microdesc => &self.microdesc,
            DocKind::ServerDescriptor => &self.server_descriptor,
        }
    }
}

/// Everything the cache serves.
#[derive(Debug, Default)]
pub struct DirStore {
    consensus: HashMap<ConsensusFlavor, ConsensusDoc>,
    /// Diffs to the current consensus of a flavour, keyed by the older consensus's SHA3-256.
    diffs: HashMap<(ConsensusFlavor, [u8; 32]), Arc<[u8]>>,
    /// Earlier consensuses of each flavour, newest first, at most [`DIFF_BASES`]: a client
    /// holding one of them is served a diff (dir-spec "consensus diffs").
    diff_bases: HashMap<ConsensusFlavor, VecDeque<ConsensusDoc>>,
    diff_failures: u64,
    /// The compressed forms of the current consensus of a flavour (`None`) and of the diffs
    /// to it (`Some(base's SHA3-256)`), made once when the consensus arrived, as C tor's
    /// `consdiffmgr.c` keeps them: the server only copies bytes.
    compressed: HashMap<FormKey, Arc<[u8]>>,
    compressed_bytes: usize,
    compress_failures: u64,
    compressed_over_limit: u64,
    /// Microdescriptors by SHA-256 of their text.
    microdescs: HashMap<[u8; 32], Document>,
    /// Server descriptors by SHA-1 digest of the signed part.
    server_by_digest: HashMap<[u8; 20], Document>,
    /// Digest of the newest server descriptor per relay identity.
    server_by_id: HashMap<RsaIdentity, [u8; 20]>,
    /// Authority key certificates by (identity, signing-key digest).
    certs: HashMap<(RsaIdentity, [u8; 20]), Document>,
    limits: StoreLimits,
    /// Fetch and refusal counters per [`DocKind`] (documents and bytes are computed).
    counters: [KindStats; 4],
    /// Fetches by source kind (authority, cache) and result (answered, failed).
    source_fetches: [[u64; 2]; 2],
    microdesc_bytes: usize,
    server_bytes: usize,
    cert_bytes: usize,
}

impl DirStore {
    pub fn new() -> DirStore {
        DirStore::default()
    }

    pub fn with_limits(limits: StoreLimits) -> DirStore {
        DirStore {
            limits,
            ..DirStore::default()
        }
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Counts a finished fetch of `kind`.
    pub fn record_fetch(&mut self, kind: DocKind, ok: bool) {
        let c = &mut self.counters[kind.index()];
        if ok {
            c.fetches_ok += 1;
        } else {
            c.fetches_failed += 1;
        }
    }

    /// Counts a finished fetch from an authority or (`cache`) another directory cache.
    pub fn record_source_fetch(&mut self, cache: bool, ok: bool) {
        self.source_fetches[usize::from(cache)][usize::from(!ok)] += 1;
    }

    /// Counts `n` fetched documents of `kind` that did not verify.
    pub fn record_rejected(&mut self, kind: DocKind, n: usize) {
        self.counters[kind.index()].rejected += n as u64;
    }

    /// Documents and bytes kept, and the fetch counters, per kind.
    pub fn stats(&self) -> StoreStats {
        let with = |kind: DocKind, documents: usize, bytes: usize| KindStats {
            documents: documents as u64,
            bytes: bytes as u64,
            ..self.counters[kind.index()]
        };
        let cons_bytes: usize = self.consensus.values().map(|c| c.body.len()).sum();
        StoreStats {
            consensus: with(DocKind::Consensus, self.consensus.len(), cons_bytes),
            cert: with(DocKind::Cert, self.certs.len(), self.cert_bytes),
            microdesc: with(
                DocKind::Microdesc,
                self.microdescs.len(),
                self.microdesc_bytes,
            ),
            server_descriptor: with(
                DocKind::ServerDescriptor,
                self.server_by_digest.len(),
                self.server_bytes,
            ),
            diffs: self.diffs.len() as u64,
            diff_bytes: self.diffs.values().map(|d| d.len() as u64).sum(),
            diff_failures: self.diff_failures,
            compressed: self.compressed.len() as u64,
            compressed_bytes: self.compressed_bytes as u64,
            compress_failures: self.compress_failures,
            compressed_over_limit: self.compressed_over_limit,
            source_fetches: self.source_fetches,
        }
    }

    /// Whether one more document of `len` bytes fits beside `count` documents of `bytes`.
    fn fits(count: usize, bytes: usize, len: usize, max_count: usize, max_bytes: usize) -> bool {
        count < max_count && bytes.saturating_add(len) <= max_bytes
    }

    /// Replaces the current consensus of its flavour. Diffs to the old one are dropped and
    /// the old one becomes the newest diff base; the caller inserts diffs to the new one with
    /// [`DirStore::insert_diff`] (see [`DirStore::diff_bases`]).
    pub fn set_consensus(&mut self, doc: ConsensusDoc) {
        let flavor = doc.flavor;
        self.diffs.retain(|(f, _), _| *f != flavor);
        let mut freed = 0;
        self.compressed.retain(|(f, _, _), c| {
            let keep = *f != flavor;
            if !keep {
                freed += c.len();
            }
            keep
        });
        self.compressed_bytes -= freed;
        if let Some(old) = self.consensus.insert(flavor, doc) {
            let bases = self.diff_bases.entry(flavor).or_default();
            bases.push_front(old);
            bases.truncate(DIFF_BASES);
        }
    }

    /// The earlier consensuses of `flavor` kept as diff bases, newest first.
    pub fn diff_bases(&self, flavor: ConsensusFlavor) -> impl Iterator<Item = &ConsensusDoc> {
        self.diff_bases.get(&flavor).into_iter().flatten()
    }

    /// Counts a diff that could not be generated.
    pub fn record_diff_failure(&mut self) {
        self.diff_failures += 1;
    }

    /// A diff from the consensus whose SHA3-256 is `from` to the current one of `flavor`.
    pub fn insert_diff(&mut self, flavor: ConsensusFlavor, from: [u8; 32], diff: Arc<[u8]>) {
        self.diffs.insert((flavor, from), diff);
    }

    /// Keeps `body`, the current consensus of `flavor` (`from` `None`) or the diff to it
    /// from `from`, compressed with `method`. False if the bound refused it (counted).
    pub fn insert_compressed(
        &mut self,
        flavor: ConsensusFlavor,
        from: Option<[u8; 32]>,
        method: Method,
        body: Arc<[u8]>,
    ) -> bool {
        let key = (flavor, from, method);
        let old = self.compressed.get(&key).map_or(0, |c| c.len());
        let bytes = self.compressed_bytes - old;
        if bytes.saturating_add(body.len()) > self.limits.max_compressed_bytes {
            self.compressed_over_limit += 1;
            return false;
        }
        self.compressed_bytes = bytes + body.len();
        self.compressed.insert(key, body);
        true
    }

    /// Counts a compressed form the compressor could not make.
    pub fn record_compress_failure(&mut self) {
        self.compress_failures += 1;
    }

    /// The current consensus of `flavor` (`from` `None`), or the diff to it from `from`,
    /// compressed with `method`, if kept.
    pub fn compressed(
        &self,
        flavor: ConsensusFlavor,
        from: Option<&[u8; 32]>,
        method: Method,
    ) -> Option<&Arc<[u8]>> {
        self.compressed.get(&(flavor, from.copied(), method))
    }

    /// Keeps a verified microdescriptor (a known one gets the newer `published`, C's
    /// `last-listed`). False if the bound refused it (counted).
    pub fn insert_microdesc(&mut self, sha256: [u8; 32], doc: Document) -> bool {
        if let Some(old) = self.microdescs.get_mut(&sha256) {
            old.published = old.published.max(doc.published);
            return true;
        }
        let l = self.limits;
        if !Self::fits(
            self.microdescs.len(),
            self.microdesc_bytes,
            doc.body.len(),
            l.max_microdescs,
            l.max_microdesc_bytes,
        ) {
            self.counters[DocKind::Microdesc.index()].over_limit += 1;
            return false;
        }
        self.microdesc_bytes += doc.body.len();
        self.microdescs.insert(sha256, doc);
        true
    }

    /// Keeps a verified server descriptor. False if the bound refused it (counted).
    pub fn insert_server_descriptor(
        &mut self,
        id: RsaIdentity,
        sha1: [u8; 20],
        doc: Document,
    ) -> bool {
        if self.server_by_digest.contains_key(&sha1) {
            return true;
        }
        let l = self.limits;
        if !Self::fits(
            self.server_by_digest.len(),
            self.server_bytes,
            doc.body.len(),
            l.max_server_descriptors,
            l.max_server_descriptor_bytes,
        ) {
            self.counters[DocKind::ServerDescriptor.index()].over_limit += 1;
            return false;
        }
        self.server_bytes += doc.body.len();
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
        true
    }

    /// Keeps a verified authority certificate. False if the bound refused it (counted).
    pub fn insert_cert(
        &mut self,
        id: RsaIdentity,
        signing_key_digest: [u8; 20],
        doc: Document,
    ) -> bool {
        let key = (id, signing_key_digest);
        if let Some(old) = self.certs.get(&key) {
            if old.body.len() == doc.body.len() {
                return true;
            }
        }
        let l = self.limits;
        let old_len = self.certs.get(&key).map_or(0, |d| d.body.len());
        let count = self.certs.len() - usize::from(old_len > 0);
        if !Self::fits(
            count,
            self.cert_bytes - old_len,
            doc.body.len(),
            l.max_certs,
            l.max_cert_bytes,
        ) {
            self.counters[DocKind::Cert.index()].over_limit += 1;
            return false;
        }
        self.cert_bytes = self.cert_bytes - old_len + doc.body.len();
        self.certs.insert(key, doc);
        true
    }

    /// Drops what the caches no longer need (C `microdesc_cache_clean`,
    /// `routerlist_remove_old_routers`, `authority_certs_remove_expired`):
    /// - microdescriptors not listed (`published` is their last-listed time) since
    ///   `microdesc_cutoff`;
    /// - server descriptors not in `listed_descriptors` and published before
    ///   `descriptor_cutoff`;
    /// - certificates for which `cert_expired` says so.
    ///
    /// Returns how many documents were dropped.
    pub fn evict(
        &mut self,
        microdesc_cutoff: u64,
        listed_descriptors: &std::collections::HashSet<[u8; 20]>,
        descriptor_cutoff: u64,
        cert_expired: impl Fn(&RsaIdentity, &[u8; 20]) -> bool,
    ) -> usize {
        let (mut n_md, mut freed_md) = (0u64, 0usize);
        self.microdescs.retain(|_, d| {
            let keep = d.published >= microdesc_cutoff;
            if !keep {
                n_md += 1;
                freed_md += d.body.len();
            }
            keep
        });
        self.microdesc_bytes -= freed_md;
        let (mut n_sd, mut freed_sd) = (0u64, 0usize);
        self.server_by_digest.retain(|digest, d| {
            let keep = listed_descriptors.contains(digest) || d.published >= descriptor_cutoff;
            if !keep {
                n_sd += 1;
                freed_sd += d.body.len();
            }
            keep
        });
        self.server_bytes -= freed_sd;
        let by_digest = &self.server_by_digest;
        self.server_by_id.retain(|_, d| by_digest.contains_key(d));
        let (mut n_cert, mut freed_cert) = (0u64, 0usize);
        self.certs.retain(|(id, sk), d| {
            let keep = !cert_expired(id, sk);
            if !keep {
                n_cert += 1;
                freed_cert += d.body.len();
            }
            keep
        });
        self.cert_bytes -= freed_cert;
        self.counters[DocKind::Microdesc.index()].evicted += n_md;
        self.counters[DocKind::ServerDescriptor.index()].evicted += n_sd;
        self.counters[DocKind::Cert.index()].evicted += n_cert;
        (n_md + n_sd + n_cert) as usize
    }

    /// Every microdescriptor kept, with its SHA-256.
    pub fn microdescs(&self) -> impl Iterator<Item = (&[u8; 32], &Document)> {
        self.microdescs.iter()
    }

    /// Every server descriptor kept (not only the newest per relay), by digest.
    pub fn server_descriptors_by_digest(&self) -> impl Iterator<Item = (&[u8; 20], &Document)> {
        self.server_by_digest.iter()
    }

    /// Marks the microdescriptors in `listed` as listed at `when` (their `published`, C's
    /// `last_listed`), so eviction keeps them.
    pub fn touch_microdescs<'a>(&mut self, listed: impl Iterator<Item = &'a [u8; 32]>, when: u64) {
        for d in listed {
            if let Some(m) = self.microdescs.get_mut(d) {
                m.published = m.published.max(when);
            }
        }
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

    /// The certificate whose signing key has SHA-1 digest `signing_key_digest`, of
    /// whichever authority (C tor `authority_cert_get_by_sk_digest`).
    pub fn cert_by_signing_key(&self, signing_key_digest: &[u8; 20]) -> Option<&Document> {
        self.certs
            .iter()
            .find(|((_, sk), _)| sk == signing_key_digest)
            .map(|(_, d)| d)
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
    fn compressed_forms_are_bounded_and_go_with_their_consensus() {
        let mut s = DirStore::with_limits(StoreLimits {
            max_compressed_bytes: 100,
            ..StoreLimits::default()
        });
        let c = |d: u8, flavor| ConsensusDoc {
            body: Arc::from(&b"c"[..]),
            flavor,
            valid_after: 0,
            fresh_until: 0,
            valid_until: 0,
            signers: vec![],
            sha3_digest: [d; 32],
            try_diff_newer_than: TRY_DIFF_DEFAULT_SECS,
        };
        let (md, ns) = (ConsensusFlavor::Microdesc, ConsensusFlavor::Ns);
        s.set_consensus(c(1, md));
        s.set_consensus(c(1, ns));
        assert!(s.insert_compressed(md, None, Method::Zstd, Arc::from(vec![0; 60])));
        assert!(s.insert_compressed(ns, Some([0; 32]), Method::Gzip, Arc::from(vec![0; 40])));
        // Over the bound: refused and counted; the same key replaced is not counted twice.
        assert!(!s.insert_compressed(md, None, Method::Lzma, Arc::from(vec![0; 1])));
        assert!(s.insert_compressed(md, None, Method::Zstd, Arc::from(vec![0; 50])));
        let st = s.stats();
        assert_eq!((st.compressed, st.compressed_bytes), (2, 90));
        assert_eq!(st.compressed_over_limit, 1);
        assert!(s.compressed(md, None, Method::Lzma).is_none());
        // A new consensus drops its flavour's forms only.
        s.set_consensus(c(2, md));
        assert!(s.compressed(md, None, Method::Zstd).is_none());
        assert!(s.compressed(ns, Some(&[0; 32]), Method::Gzip).is_some());
        assert_eq!((s.stats().compressed, s.stats().compressed_bytes), (1, 40));
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
            try_diff_newer_than: TRY_DIFF_DEFAULT_SECS,
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
