//! The mirror: what a directory cache fetches from the authorities, when, and what it does
//! with the answers (dir-spec §4 "Directory cache operation", §5.1 "Downloading
//! network-status documents"; C `networkstatus.c` `update_consensus_networkstatus_downloads`,
//! `microdesc.c`, `routerlist.c` `update_router_descriptor_downloads`).
//!
//! Sans-IO: [`Mirror::poll`] says which requests are due at `now` (randomness comes from the
//! caller), the caller runs them (the `fors-dircache` worker thread) and hands each answer to
//! [`Mirror::handle`], which verifies it ([`super::verify`]) and files what verified in the
//! [`SharedStore`].
//!
//! What is fetched:
//! - all authority certificates (`/tor/keys/all`) at start, and again when a consensus does
//!   not verify with the ones kept (new signing keys);
//! - both consensus flavours, at a random time in the first half of the interval after
//!   `fresh-until` (C caches' schedule, [`next_fetch_time`]), with backoff on failure;
//! - the microdescriptors the microdesc consensus lists and the server descriptors the ns
//!   consensus lists that the store lacks, in batches of C's size for DirPort requests
//!   (`/tor/micro/d/<d1>-<d2>…`, `/tor/server/d/<D1>+<D2>…`); a digest that a fetch did not
//!   deliver waits with backoff before it is asked for again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rand::Rng;

use super::store::{ConsensusDoc, ConsensusFlavor, DocKind, SharedStore, DIFF_BASES};
use super::verify::{self, VerifyError};
use super::{compress, consdiff};
use crate::crypto::ids::RsaIdentity;
use crate::dir::authcert::AuthorityCert;
use crate::dir::consensus::{Consensus, ConsensusError};
use crate::keys::time::unix_secs;

/// C `max_dl_per_request` for a direct (non-tunnelled) request: 96 descriptor digests (URLs
/// stay under 4 kB for proxies), 90 microdescriptor digests.
pub const SERVER_DESCRIPTORS_PER_REQUEST: usize = 96;
pub const MICRODESCS_PER_REQUEST: usize = 90;
/// Requests outstanding at once (the worker runs them in turn; this bounds its queue).
pub const MAX_IN_FLIGHT: usize = 8;
/// C `CONSENSUS_MIN_SECONDS_BEFORE_CACHING`: caches wait this long after `fresh-until`
/// (less on networks with very short intervals, see [`next_fetch_time`]).
pub const MIN_SECS_BEFORE_CACHING: u64 = 120;
/// C `TOLERATE_MICRODESC_AGE`: a microdescriptor no consensus has listed for a week goes.
pub const TOLERATE_MICRODESC_AGE: u64 = 7 * 24 * 3600;
/// C `ROUTER_MAX_AGE`: an unlisted server descriptor older than two days goes.
pub const ROUTER_MAX_AGE: u64 = 48 * 3600;
/// Longest wait between retries of a failed fetch.
pub const MAX_BACKOFF_SECS: u64 = 3600;

/// One request for the worker. [`FetchRequest::path`] is the URL path to GET.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FetchRequest {
    Certs,
    Consensus(ConsensusFlavor),
    Microdescs(Vec<[u8; 32]>),
    ServerDescriptors(Vec<[u8; 20]>),
}

impl FetchRequest {
    /// The path (dir-spec appendix "Standard URLs"), uncompressed.
    pub fn path(&self) -> String {
        match self {
            FetchRequest::Certs => "/tor/keys/all".into(),
            FetchRequest::Consensus(f) => format!("/tor/status-vote/current/{}", f.url_name()),
            FetchRequest::Microdescs(ds) => {
                let parts: Vec<String> = ds.iter().map(|d| STANDARD_NO_PAD.encode(d)).collect();
                format!("/tor/micro/d/{}", parts.join("-"))
            }
            FetchRequest::ServerDescriptors(ds) => {
                let parts: Vec<String> = ds
                    .iter()
                    .map(|d| crate::util::hex::encode_upper(d))
                    .collect();
                format!("/tor/server/d/{}", parts.join("+"))
            }
        }
    }

    pub fn kind(&self) -> DocKind {
        match self {
            FetchRequest::Certs => DocKind::Cert,
            FetchRequest::Consensus(_) => DocKind::Consensus,
            FetchRequest::Microdescs(_) => DocKind::Microdesc,
            FetchRequest::ServerDescriptors(_) => DocKind::ServerDescriptor,
        }
    }
}

/// When a cache fetches the next consensus (C `update_consensus_networkstatus_fetch_time_impl`
/// for a cache): at `fresh-until` plus a short slop (2 minutes, or a sixteenth of the
/// interval on fast test networks), then at a uniformly random point of the first half of
/// the interval, and before `valid-until` in any case.
pub fn next_fetch_time(
    valid_after: u64,
    fresh_until: u64,
    valid_until: u64,
    rng: &mut impl Rng,
) -> u64 {
    let interval = fresh_until.saturating_sub(valid_after).max(1);
    let mut slop = MIN_SECS_BEFORE_CACHING;
    if slop > interval / 16 {
        slop = (interval / 16).max(1);
    }
    let mut start = fresh_until + slop;
    let dl_interval = (interval / 2).max(1);
    if start + dl_interval >= valid_until {
        start = valid_until.saturating_sub(dl_interval + 1);
    }
    start + rng.gen_range(0..dl_interval)
}

/// Exponential backoff with jitter (C `next_random_exponential_delay`): a random delay
/// between the last one and three times it, at least 1 s, at most [`MAX_BACKOFF_SECS`].
fn next_backoff(last: u64, rng: &mut impl Rng) -> u64 {
    let low = last.max(1);
    let high = last.saturating_mul(3).max(low + 1);
    rng.gen_range(low..=high).min(MAX_BACKOFF_SECS)
}

/// Retry state of one thing to fetch.
#[derive(Debug, Clone, Copy, Default)]
struct Retry {
    /// Unix seconds before which it is not asked for again.
    not_before: u64,
    last_delay: u64,
}

impl Retry {
    fn due(&self, now: u64) -> bool {
        now >= self.not_before
    }

    fn failed(&mut self, now: u64, rng: &mut impl Rng) {
        self.last_delay = next_backoff(self.last_delay, rng);
        self.not_before = now + self.last_delay;
    }
}

/// What one handled answer did (for the log and the tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub stored: usize,
    pub rejected: usize,
    /// Set when a consensus was refused (or the fetch failed), with the reason.
    pub error: Option<String>,
}

/// The mirror's state.
pub struct Mirror {
    store: SharedStore,
    trusted: Vec<RsaIdentity>,
    certs: Vec<AuthorityCert>,
    /// Retry state for certs and each flavour's consensus.
    certs_retry: Retry,
    /// Certificates are wanted (none yet, or a consensus did not verify with them).
    certs_wanted: bool,
    consensus_retry: HashMap<ConsensusFlavor, Retry>,
    /// When the next consensus of each flavour is due (set from the one kept).
    consensus_due: HashMap<ConsensusFlavor, u64>,
    /// The parsed current consensus of each flavour (what it lists).
    current: HashMap<ConsensusFlavor, Consensus>,
    in_flight: Vec<FetchRequest>,
    md_retry: HashMap<[u8; 32], Retry>,
    sd_retry: HashMap<[u8; 20], Retry>,
    /// Kinds changed since the last [`Mirror::take_dirty`].
    dirty: HashSet<DocKind>,
}

impl Mirror {
    /// A mirror filing into `store`, trusting consensus signatures of `trusted` (the
    /// `v3ident`s of the configured authorities).
    pub fn new(store: SharedStore, trusted: Vec<RsaIdentity>) -> Mirror {
        Mirror {
            store,
            trusted,
            certs: Vec::new(),
            certs_retry: Retry::default(),
            certs_wanted: true,
            consensus_retry: HashMap::new(),
            consensus_due: HashMap::new(),
            current: HashMap::new(),
            in_flight: Vec::new(),
            md_retry: HashMap::new(),
            sd_retry: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The parsed consensus of `flavor` in force, if any.
    pub fn consensus(&self, flavor: ConsensusFlavor) -> Option<&Consensus> {
        self.current.get(&flavor)
    }

    /// The kinds whose documents changed since the last call (to be saved to disk).
    pub fn take_dirty(&mut self) -> HashSet<DocKind> {
        std::mem::take(&mut self.dirty)
    }

    /// Whether a request of `kind` is still outstanding (save a kind to disk when its round
    /// is over, not after each batch).
    pub fn fetching(&self, kind: DocKind) -> bool {
        self.in_flight.iter().any(|r| r.kind() == kind)
    }

    /// Certificates loaded from disk (already verified by the caller): kept and filed.
    pub fn load_certs(&mut self, body: &[u8], now: SystemTime) -> usize {
        let (batch, parsed) = verify::verify_certs(body, &self.trusted, now);
        let n = batch.good.len();
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        for ((id, sk), doc) in batch.good {
            store.insert_cert(id, sk, doc);
        }
        drop(store);
        self.merge_certs(parsed);
        // Certs from disk may be stale: ask the authorities once anyway.
        self.certs_wanted = true;
        n
    }

    fn merge_certs(&mut self, parsed: Vec<AuthorityCert>) {
        for c in parsed {
            self.certs.retain(|k| {
                !(k.fingerprint == c.fingerprint && k.signing_key_digest == c.signing_key_digest)
            });
            self.certs.push(c);
        }
    }

    /// The requests due at `now`, marked in flight. Call again after each answer.
    pub fn poll(&mut self, now: SystemTime) -> Vec<FetchRequest> {
        let n = unix_secs(now);
        let mut out = Vec::new();
        let room = |out: &Vec<FetchRequest>, in_flight: &Vec<FetchRequest>| {
            in_flight.len() + out.len() < MAX_IN_FLIGHT
        };
        if self.certs_wanted && self.certs_retry.due(n) && !self.fetching(DocKind::Cert) {
            out.push(FetchRequest::Certs);
        }
        if self.certs.is_empty() {
            // Nothing can be verified yet.
            self.in_flight.extend(out.iter().cloned());
            return out;
        }
        for flavor in [ConsensusFlavor::Microdesc, ConsensusFlavor::Ns] {
            let due = self.consensus_due.get(&flavor).is_none_or(|&t| n >= t);
            let retry_ok = self.consensus_retry.get(&flavor).is_none_or(|r| r.due(n));
            let req = FetchRequest::Consensus(flavor);
            if due && retry_ok && !self.in_flight.contains(&req) && room(&out, &self.in_flight) {
                out.push(req);
            }
        }
        // Missing microdescriptors, then missing server descriptors.
        if let Some(c) = self.current.get(&ConsensusFlavor::Microdesc) {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let missing = missing_digests(
                c.relays.iter().filter_map(|r| r.microdesc_digest),
                self.in_flight.iter().filter_map(|r| match r {
                    FetchRequest::Microdescs(ds) => Some(ds),
                    _ => None,
                }),
                |d| store.microdesc(d).is_some() || self.md_retry.get(d).is_some_and(|r| !r.due(n)),
            );
            drop(store);
            for chunk in missing.chunks(MICRODESCS_PER_REQUEST) {
                if !room(&out, &self.in_flight) {
                    break;
                }
                out.push(FetchRequest::Microdescs(chunk.to_vec()));
            }
        }
        if let Some(c) = self.current.get(&ConsensusFlavor::Ns) {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let missing = missing_digests(
                c.relays.iter().filter_map(|r| r.descriptor_digest),
                self.in_flight.iter().filter_map(|r| match r {
                    FetchRequest::ServerDescriptors(ds) => Some(ds),
                    _ => None,
                }),
                |d| {
                    store.server_descriptor_by_digest(d).is_some()
                        || self.sd_retry.get(d).is_some_and(|r| !r.due(n))
                },
            );
            drop(store);
            for chunk in missing.chunks(SERVER_DESCRIPTORS_PER_REQUEST) {
                if !room(&out, &self.in_flight) {
                    break;
                }
                out.push(FetchRequest::ServerDescriptors(chunk.to_vec()));
            }
        }
        self.in_flight.extend(out.iter().cloned());
        out
    }

    /// The earliest time (Unix seconds) something may become due, for the caller's sleep.
    /// Missing documents in backoff and consensus fetches count; `None` means "ask again
    /// after the next answer".
    pub fn next_due(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut at = |x: u64| t = Some(t.map_or(x, |y| y.min(x)));
        if self.certs_wanted {
            at(self.certs_retry.not_before);
        }
        for f in [ConsensusFlavor::Microdesc, ConsensusFlavor::Ns] {
            let due = self.consensus_due.get(&f).copied().unwrap_or(0);
            let retry = self.consensus_retry.get(&f).map_or(0, |r| r.not_before);
            at(due.max(retry));
        }
        for r in self.md_retry.values() {
            at(r.not_before);
        }
        for r in self.sd_retry.values() {
            at(r.not_before);
        }
        t
    }

    fn finish(&mut self, req: &FetchRequest) {
        if let Some(i) = self.in_flight.iter().position(|r| r == req) {
            self.in_flight.swap_remove(i);
        }
    }

    /// Takes the answer to `req` (the body, or why the fetch failed), verifies it, and files
    /// what verified.
    pub fn handle(
        &mut self,
        req: FetchRequest,
        answer: Result<Vec<u8>, String>,
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Handled {
        self.finish(&req);
        let n = unix_secs(now);
        let kind = req.kind();
        {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.record_fetch(kind, answer.is_ok());
        }
        let body = match answer {
            Ok(b) => b,
            Err(e) => {
                self.failed(&req, n, rng);
                return Handled {
                    error: Some(e),
                    ..Handled::default()
                };
            }
        };
        match req {
            FetchRequest::Certs => self.handle_certs(&body, now, rng),
            FetchRequest::Consensus(flavor) => self.handle_consensus(flavor, &body, now, rng),
            FetchRequest::Microdescs(asked) => self.handle_microdescs(&asked, &body, n, rng),
            FetchRequest::ServerDescriptors(asked) => {
                self.handle_server_descriptors(&asked, &body, n, rng)
            }
        }
    }

    fn failed(&mut self, req: &FetchRequest, n: u64, rng: &mut impl Rng) {
        match req {
            FetchRequest::Certs => self.certs_retry.failed(n, rng),
            FetchRequest::Consensus(f) => {
                self.consensus_retry.entry(*f).or_default().failed(n, rng)
            }
            FetchRequest::Microdescs(ds) => {
                for d in ds {
                    self.md_retry.entry(*d).or_default().failed(n, rng);
                }
            }
            FetchRequest::ServerDescriptors(ds) => {
                for d in ds {
                    self.sd_retry.entry(*d).or_default().failed(n, rng);
                }
            }
        }
    }

    fn handle_certs(&mut self, body: &[u8], now: SystemTime, rng: &mut impl Rng) -> Handled {
        let n = unix_secs(now);
        let (batch, parsed) = verify::verify_certs(body, &self.trusted, now);
        let mut h = Handled {
            rejected: batch.rejected,
            ..Handled::default()
        };
        {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.record_rejected(DocKind::Cert, batch.rejected);
            for ((id, sk), doc) in batch.good {
                if store.insert_cert(id, sk, doc) {
                    h.stored += 1;
                }
            }
        }
        if parsed.is_empty() {
            self.certs_retry.failed(n, rng);
            h.error = Some("no usable authority certificate in the answer".into());
            return h;
        }
        self.merge_certs(parsed);
        self.certs_wanted = false;
        self.certs_retry = Retry::default();
        self.dirty.insert(DocKind::Cert);
        h
    }

    fn handle_consensus(
        &mut self,
        flavor: ConsensusFlavor,
        body: &[u8],
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Handled {
        let n = unix_secs(now);
        let have = self.current.get(&flavor).map(|c| c.valid_after);
        // A diff from the consensus we named in `X-Or-Diff-From-Consensus` (dir-spec
        // "consensus diffs"): applied to it, then the result is verified like any consensus.
        let applied;
        let body = if body.starts_with(consdiff::DIFF_HEADER) {
            match self.apply_diff(flavor, body) {
                Ok(text) => {
                    applied = text;
                    applied.as_bytes()
                }
                Err(e) => {
                    let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
                    store.record_rejected(DocKind::Consensus, 1);
                    drop(store);
                    self.consensus_retry
                        .entry(flavor)
                        .or_default()
                        .failed(n, rng);
                    return Handled {
                        rejected: 1,
                        error: Some(e),
                        ..Handled::default()
                    };
                }
            }
        } else {
            body
        };
        match verify::verify_consensus(body, flavor, &self.certs, &self.trusted, now, have) {
            Ok(v) => {
                self.consensus_retry.remove(&flavor);
                self.consensus_due.insert(
                    flavor,
                    next_fetch_time(v.doc.valid_after, v.doc.fresh_until, v.doc.valid_until, rng),
                );
                self.install(flavor, v, n);
                Handled {
                    stored: 1,
                    ..Handled::default()
                }
            }
            Err(e) => {
                if matches!(
                    e,
                    VerifyError::Consensus(ConsensusError::NotEnoughSignatures { .. })
                ) {
                    // Perhaps new signing keys: fetch the certificates, then try again.
                    self.certs_wanted = true;
                }
                if let VerifyError::NotNewer { .. } = e {
                    // The source has nothing newer yet: back off, the schedule stands.
                } else {
                    let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
                    store.record_rejected(DocKind::Consensus, 1);
                }
                self.consensus_retry
                    .entry(flavor)
                    .or_default()
                    .failed(n, rng);
                Handled {
                    rejected: usize::from(!matches!(e, VerifyError::NotNewer { .. })),
                    error: Some(e.to_string()),
                    ..Handled::default()
                }
            }
        }
    }

    /// The consensus `diff` makes from our current one of `flavor`.
    fn apply_diff(&self, flavor: ConsensusFlavor, diff: &[u8]) -> Result<String, String> {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        let base = store
            .consensus(flavor)
            .ok_or("a consensus diff, but no consensus to apply it to")?;
        let base = std::str::from_utf8(&base.body).map_err(|_| "stored consensus not UTF-8")?;
        let diff = std::str::from_utf8(diff).map_err(|_| "consensus diff not UTF-8")?;
        consdiff::apply(base, diff).map_err(|e| format!("consensus diff: {e}"))
    }

    /// Files a verified consensus and evicts what no consensus lists any more.
    fn install(&mut self, flavor: ConsensusFlavor, v: verify::VerifiedConsensus, n: u64) {
        // Diffs are made before the write lock is taken, so the directory server keeps
        // answering meanwhile (the mirror is the only writer: the bases cannot change).
        let diffs = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            let bases: Vec<ConsensusDoc> = store
                .consensus(flavor)
                .into_iter()
                .chain(store.diff_bases(flavor).take(DIFF_BASES - 1))
                .cloned()
                .collect();
            drop(store);
            make_diffs(&bases, &v.doc.body)
        };
        // Each consensus and each diff is compressed once, here, as C tor's consdiffmgr.c
        // does when a consensus arrives: the directory server only copies bytes, so no
        // request can make it compress a big document.
        let mut forms = precompress(None, &v.doc.body, &compress::CONSENSUS_FORMS);
        for (from, diff) in &diffs {
            if let Some(d) = diff {
                forms.extend(precompress(Some(*from), d, &compress::DIFF_FORMS));
            }
        }
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        store.set_consensus(v.doc);
        for (from, diff) in diffs {
            match diff {
                Some(d) => store.insert_diff(flavor, from, d),
                None => store.record_diff_failure(),
            }
        }
        for (from, method, form) in forms {
            match form {
                Some(c) => {
                    store.insert_compressed(flavor, from, method, c);
                }
                None => store.record_compress_failure(),
            }
        }
        if flavor == ConsensusFlavor::Microdesc {
            store.touch_microdescs(
                v.consensus
                    .relays
                    .iter()
                    .filter_map(|r| r.microdesc_digest.as_ref()),
                v.consensus.valid_after,
            );
            // Backoff records of digests no longer listed are dropped (bounded by the
            // consensus).
            let listed: HashSet<[u8; 32]> = v
                .consensus
                .relays
                .iter()
                .filter_map(|r| r.microdesc_digest)
                .collect();
            self.md_retry.retain(|d, _| listed.contains(d));
        } else {
            let listed: HashSet<[u8; 20]> = v
                .consensus
                .relays
                .iter()
                .filter_map(|r| r.descriptor_digest)
                .collect();
            self.sd_retry.retain(|d, _| listed.contains(d));
        }
        self.current.insert(flavor, v.consensus);
        let listed_sd: HashSet<[u8; 20]> = self
            .current
            .get(&ConsensusFlavor::Ns)
            .map(|c| {
                c.relays
                    .iter()
                    .filter_map(|r| r.descriptor_digest)
                    .collect()
            })
            .unwrap_or_default();
        let certs = &self.certs;
        let evicted = store.evict(
            n.saturating_sub(TOLERATE_MICRODESC_AGE),
            &listed_sd,
            n.saturating_sub(ROUTER_MAX_AGE),
            |id, sk| {
                certs
                    .iter()
                    .find(|c| c.fingerprint == *id && c.signing_key_digest == *sk)
                    .is_none_or(|c| c.expires_secs < n)
            },
        );
        drop(store);
        self.certs.retain(|c| c.expires_secs >= n);
        self.dirty.insert(DocKind::Consensus);
        if evicted > 0 {
            self.dirty
                .extend([DocKind::Microdesc, DocKind::ServerDescriptor, DocKind::Cert]);
        }
    }

    fn handle_microdescs(
        &mut self,
        asked: &[[u8; 32]],
        body: &[u8],
        n: u64,
        rng: &mut impl Rng,
    ) -> Handled {
        let Some(c) = self.current.get(&ConsensusFlavor::Microdesc) else {
            return Handled::default();
        };
        // Only what we asked for and the consensus lists (a cache must not be fed extras).
        let listed: HashSet<[u8; 32]> =
            c.relays.iter().filter_map(|r| r.microdesc_digest).collect();
        let wanted: HashSet<[u8; 32]> = asked
            .iter()
            .copied()
            .filter(|d| listed.contains(d))
            .collect();
        let batch = verify::verify_microdescs(body, &wanted, c.valid_after);
        let mut h = Handled {
            rejected: batch.rejected + batch.unlisted,
            ..Handled::default()
        };
        let mut got = HashSet::new();
        {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.record_rejected(DocKind::Microdesc, h.rejected);
            for (d, doc) in batch.good {
                got.insert(d);
                if store.insert_microdesc(d, doc) {
                    h.stored += 1;
                }
            }
        }
        for d in asked {
            if got.contains(d) {
                self.md_retry.remove(d);
            } else {
                self.md_retry.entry(*d).or_default().failed(n, rng);
            }
        }
        if h.stored > 0 {
            self.dirty.insert(DocKind::Microdesc);
        }
        h
    }

    fn handle_server_descriptors(
        &mut self,
        asked: &[[u8; 20]],
        body: &[u8],
        n: u64,
        rng: &mut impl Rng,
    ) -> Handled {
        let Some(c) = self.current.get(&ConsensusFlavor::Ns) else {
            return Handled::default();
        };
        let asked_set: HashSet<&[u8; 20]> = asked.iter().collect();
        let wanted: HashMap<[u8; 20], RsaIdentity> = c
            .relays
            .iter()
            .filter_map(|r| Some((r.descriptor_digest?, r.rsa_identity)))
            .filter(|(d, _)| asked_set.contains(d))
            .collect();
        let batch = verify::verify_server_descriptors(body, &wanted);
        let mut h = Handled {
            rejected: batch.rejected + batch.unlisted,
            ..Handled::default()
        };
        let mut got = HashSet::new();
        {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            store.record_rejected(DocKind::ServerDescriptor, h.rejected);
            for ((id, d), doc) in batch.good {
                got.insert(d);
                if store.insert_server_descriptor(id, d, doc) {
                    h.stored += 1;
                }
            }
        }
        for d in asked {
            if got.contains(d) {
                self.sd_retry.remove(d);
            } else {
                self.sd_retry.entry(*d).or_default().failed(n, rng);
            }
        }
        if h.stored > 0 {
            self.dirty.insert(DocKind::ServerDescriptor);
        }
        h
    }

    /// A consensus loaded from disk: verified like a fetched one and installed; the next
    /// fetch is scheduled from it.
    pub fn load_consensus(
        &mut self,
        flavor: ConsensusFlavor,
        body: &[u8],
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Result<(), VerifyError> {
        let v = verify::verify_consensus(body, flavor, &self.certs, &self.trusted, now, None)?;
        self.consensus_due.insert(
            flavor,
            next_fetch_time(v.doc.valid_after, v.doc.fresh_until, v.doc.valid_until, rng),
        );
        self.install(flavor, v, unix_secs(now));
        self.dirty.clear();
        Ok(())
    }

    /// Microdescriptors loaded from disk: kept if the consensus in force lists them.
    /// Returns (kept, refused, unlisted).
    pub fn load_microdescs(&mut self, body: &[u8]) -> (usize, usize, usize) {
        let Some(c) = self.current.get(&ConsensusFlavor::Microdesc) else {
            return (0, 0, 0);
        };
        let listed: HashSet<[u8; 32]> =
            c.relays.iter().filter_map(|r| r.microdesc_digest).collect();
        let batch = verify::verify_microdescs(body, &listed, c.valid_after);
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let mut kept = 0;
        for (d, doc) in batch.good {
            kept += usize::from(store.insert_microdesc(d, doc));
        }
        (kept, batch.rejected, batch.unlisted)
    }

    /// Server descriptors loaded from disk: kept if the ns consensus in force lists them and
    /// they verify. Returns (kept, refused, unlisted).
    pub fn load_server_descriptors(&mut self, body: &[u8]) -> (usize, usize, usize) {
        let Some(c) = self.current.get(&ConsensusFlavor::Ns) else {
            return (0, 0, 0);
        };
        let wanted: HashMap<[u8; 20], RsaIdentity> = c
            .relays
            .iter()
            .filter_map(|r| Some((r.descriptor_digest?, r.rsa_identity)))
            .collect();
        let batch = verify::verify_server_descriptors(body, &wanted);
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let mut kept = 0;
        for ((id, d), doc) in batch.good {
            kept += usize::from(store.insert_server_descriptor(id, d, doc));
        }
        (kept, batch.rejected, batch.unlisted)
    }
}

/// The digests `listed` that are not yet asked for (`asked`, the batches in flight) and that
/// `skip` does not rule out (already stored, or backing off), sorted and without repeats.
fn missing_digests<'a, D: Copy + Ord + std::hash::Hash + 'a>(
    listed: impl Iterator<Item = D>,
    asked: impl Iterator<Item = &'a Vec<D>>,
    skip: impl Fn(&D) -> bool,
) -> Vec<D> {
    let asked: HashSet<D> = asked.flatten().copied().collect();
    let mut missing: Vec<D> = listed.filter(|d| !asked.contains(d) && !skip(d)).collect();
    missing.sort();
    missing.dedup();
    missing
}

/// A diff from the base with this SHA3-256 digest-as-signed, or `None` if it could not be made.
type MadeDiff = ([u8; 32], Option<Arc<[u8]>>);

/// A compressed form: (diff base or `None` for the consensus, method, bytes or `None` if
/// the compressor failed).
type Form = (Option<[u8; 32]>, compress::Method, Option<Arc<[u8]>>);

/// `body` compressed with each of `methods` at C tor's level for kept documents.
fn precompress(from: Option<[u8; 32]>, body: &[u8], methods: &[compress::Method]) -> Vec<Form> {
    methods
        .iter()
        .map(|&m| {
            let c = compress::compress(m, &[body], true).ok().map(Arc::from);
            (from, m, c)
        })
        .collect()
}

/// Diffs from each of `bases` to `target` (dir-spec "consensus diffs"), so a client naming
/// its consensus in `X-Or-Diff-From-Consensus` downloads a diff. Each diff is checked by
/// applying it back (`consdiff::generate`); `None` for one that cannot be made (counted; the
/// client gets the whole consensus).
fn make_diffs(bases: &[ConsensusDoc], target: &[u8]) -> Vec<MadeDiff> {
    let target = std::str::from_utf8(target).ok();
    bases
        .iter()
        .map(|base| {
            let made = match (std::str::from_utf8(&base.body).ok(), target) {
                (Some(b), Some(t)) => consdiff::generate(b, t).ok(),
                _ => None,
            };
            (base.sha3_digest, made.map(|d| Arc::from(d.into_bytes())))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dircache::store::DirStore;
    use rand::SeedableRng;
    use std::sync::{Arc, RwLock};
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) const CERTS: &str = include_str!("testdata/certs.txt");
    pub(crate) const NS: &str = include_str!("testdata/consensus-ns.txt");
    pub(crate) const MD: &str = include_str!("testdata/consensus-microdesc.txt");
    pub(crate) const MD2: &str = include_str!("testdata/consensus-microdesc-2.txt");
    pub(crate) const MICRODESCS: &str = include_str!("testdata/microdescs.txt");
    pub(crate) const SERVER: &str = include_str!("testdata/server-descriptors.txt");

    /// The fixtures' authorities (the `fingerprint`s of their certificates).
    pub(crate) fn trusted() -> Vec<RsaIdentity> {
        CERTS
            .lines()
            .filter_map(|l| l.strip_prefix("fingerprint "))
            .map(|h| RsaIdentity::from_hex(h).unwrap())
            .collect()
    }

    /// A moment inside the fixtures' consensus validity.
    pub(crate) fn fixture_now() -> SystemTime {
        let c = Consensus::parse(MD).unwrap();
        UNIX_EPOCH + Duration::from_secs(c.valid_after + 5)
    }

    pub(crate) fn rng() -> rand::rngs::StdRng {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    fn answer(req: &FetchRequest) -> Vec<u8> {
        match req {
            FetchRequest::Certs => CERTS.into(),
            FetchRequest::Consensus(ConsensusFlavor::Ns) => NS.into(),
            FetchRequest::Consensus(ConsensusFlavor::Microdesc) => MD.into(),
            FetchRequest::Microdescs(_) => MICRODESCS.into(),
            FetchRequest::ServerDescriptors(_) => SERVER.into(),
        }
    }

    /// Runs the mirror against the fixtures until nothing is due; every request answered
    /// by `answer_with`.
    pub(crate) fn fill(
        m: &mut Mirror,
        now: SystemTime,
        rng: &mut impl Rng,
        answer_with: impl Fn(&FetchRequest) -> Vec<u8>,
    ) -> Vec<FetchRequest> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let reqs = m.poll(now);
            if reqs.is_empty() {
                break;
            }
            for r in reqs {
                let body = answer_with(&r);
                let h = m.handle(r.clone(), Ok(body), now, rng);
                assert!(h.error.is_none(), "{r:?}: {h:?}");
                seen.push(r);
            }
        }
        seen
    }

    pub(crate) fn filled_mirror(rng: &mut impl Rng) -> Mirror {
        let store = Arc::new(RwLock::new(DirStore::new()));
        let mut m = Mirror::new(store, trusted());
        fill(&mut m, fixture_now(), rng, answer);
        m
    }

    #[test]
    fn fills_the_store_from_real_documents() {
        let mut rng = rng();
        let store = Arc::new(RwLock::new(DirStore::new()));
        let mut m = Mirror::new(store.clone(), trusted());
        let now = fixture_now();
        // Certificates come first: nothing can be verified without them.
        assert_eq!(m.poll(now), [FetchRequest::Certs]);
        assert!(m.poll(now).is_empty(), "asked twice while in flight");
        m.handle(FetchRequest::Certs, Ok(CERTS.into()), now, &mut rng);
        let seen = fill(&mut m, now, &mut rng, answer);
        let md = Consensus::parse(MD).unwrap();
        let ns = Consensus::parse(NS).unwrap();
        // One batch each (6 relays), and nothing asked twice.
        assert_eq!(seen.len(), 4, "{seen:?}");
        let s = store.read().unwrap();
        for r in &md.relays {
            assert!(s.microdesc(&r.microdesc_digest.unwrap()).is_some());
        }
        for r in &ns.relays {
            let d = s
                .server_descriptor_by_digest(&r.descriptor_digest.unwrap())
                .unwrap();
            assert!(d.body.starts_with(b"router "));
            assert!(s.server_descriptor_by_id(&r.rsa_identity).is_some());
        }
        let c = s.consensus(ConsensusFlavor::Microdesc).unwrap();
        assert_eq!(&*c.body, MD.as_bytes());
        assert_eq!(c.signers.len(), 3);
        // The digest-as-signed: SHA3-256 through "directory-signature ".
        use sha3::Digest as _;
        let end = MD.find("\ndirectory-signature ").unwrap() + "\ndirectory-signature ".len();
        let want: [u8; 32] = sha3::Sha3_256::digest(&MD.as_bytes()[..end]).into();
        assert_eq!(c.sha3_digest, want);
        assert!(s.consensus(ConsensusFlavor::Ns).is_some());
        let st = s.stats();
        assert_eq!(st.microdesc.documents, md.relays.len() as u64);
        assert_eq!(st.microdesc.bytes, MICRODESCS.len() as u64);
        assert_eq!(st.server_descriptor.documents, ns.relays.len() as u64);
        assert_eq!(st.server_descriptor.bytes, SERVER.len() as u64);
        assert_eq!(st.cert.documents, 3);
        assert_eq!(st.consensus.documents, 2);
        assert_eq!(st.consensus.fetches_ok, 2);
        assert_eq!(st.microdesc.rejected + st.server_descriptor.rejected, 0);
        drop(s);
        // Nothing more is due until the schedule says so.
        assert!(m.poll(now).is_empty());
        let next = m.next_due().unwrap();
        assert!(next > md.fresh_until && next < md.valid_until, "{next}");
    }

    #[test]
    fn tampered_documents_are_counted_and_not_stored() {
        let mut rng = rng();
        let store = Arc::new(RwLock::new(DirStore::new()));
        let mut m = Mirror::new(store.clone(), trusted());
        let now = fixture_now();
        // One byte changed in the ntor key of the first microdesc, and in a signature of
        // the first server descriptor.
        let bad_md = MICRODESCS.replacen("ntor-onion-key ", "ntor-onion-key X", 1);
        let sig = SERVER
            .find("router-signature\n-----BEGIN SIGNATURE-----\n")
            .unwrap()
            + 50;
        let mut bad_sd = SERVER.as_bytes().to_vec();
        bad_sd[sig] = if bad_sd[sig] == b'A' { b'B' } else { b'A' };
        fill(&mut m, now, &mut rng, |r| match r {
            FetchRequest::Microdescs(_) => bad_md.clone().into(),
            FetchRequest::ServerDescriptors(_) => bad_sd.clone(),
            other => answer(other),
        });
        let st = store.read().unwrap().stats();
        let n = Consensus::parse(MD).unwrap().relays.len() as u64;
        assert_eq!(st.microdesc.rejected, 1);
        assert_eq!(st.microdesc.documents, n - 1);
        assert_eq!(st.server_descriptor.rejected, 1);
        assert_eq!(st.server_descriptor.documents, n - 1);
        // The missing ones wait (backoff), then are asked for again, alone.
        assert!(m.poll(now).is_empty());
        let later = now + Duration::from_secs(MAX_BACKOFF_SECS.min(4));
        let reqs = m.poll(later);
        assert!(
            reqs.iter().all(|r| match r {
                FetchRequest::Microdescs(d) => d.len() == 1,
                FetchRequest::ServerDescriptors(d) => d.len() == 1,
                _ => true,
            }),
            "{reqs:?}"
        );
        assert!(reqs.len() >= 2, "{reqs:?}");

        // A consensus with a broken signature: refused, counted, certs asked for again.
        let store = Arc::new(RwLock::new(DirStore::new()));
        let mut m = Mirror::new(store.clone(), trusted());
        m.poll(now);
        m.handle(FetchRequest::Certs, Ok(CERTS.into()), now, &mut rng);
        let reqs = m.poll(now);
        assert!(reqs.contains(&FetchRequest::Consensus(ConsensusFlavor::Microdesc)));
        let bad = MD.replacen("\ns ", "\ns Guard ", 1);
        let h = m.handle(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            Ok(bad.into()),
            now,
            &mut rng,
        );
        assert_eq!(h.rejected, 1, "{h:?}");
        assert!(h.error.unwrap().contains("good signatures"));
        let s = store.read().unwrap();
        assert!(s.consensus(ConsensusFlavor::Microdesc).is_none());
        assert_eq!(s.stats().consensus.rejected, 1);
        drop(s);
        assert!(m.poll(now).contains(&FetchRequest::Certs));
    }

    #[test]
    fn a_newer_consensus_is_served_as_a_diff_from_the_one_before() {
        let mut rng = rng();
        let mut m = filled_mirror(&mut rng);
        let md = Consensus::parse(MD).unwrap();
        let old_sha3 = md.sha3_as_signed();
        let md2 = Consensus::parse(MD2).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(md2.valid_after + 1);
        let s = m.store().read().unwrap();
        assert!(s
            .consensus_diff(ConsensusFlavor::Microdesc, &old_sha3)
            .is_none());
        drop(s);
        let h = m.handle(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            Ok(MD2.into()),
            now,
            &mut rng,
        );
        assert_eq!(h.stored, 1, "{h:?}");
        let s = m.store().read().unwrap();
        let diff = s
            .consensus_diff(ConsensusFlavor::Microdesc, &old_sha3)
            .expect("a diff from the consensus the client holds");
        // The diff turns the old consensus into exactly the new one.
        let applied = consdiff::apply(MD, std::str::from_utf8(diff).unwrap()).unwrap();
        assert_eq!(applied, MD2);
        let st = s.stats();
        assert_eq!((st.diffs, st.diff_failures), (1, 0));
        assert!(st.diff_bytes > 0 && (st.diff_bytes as usize) < MD2.len());
        // Compressed once here, as C tor's consdiffmgr: the new consensus in zlib, LZMA
        // and zstd, the diff in gzip, LZMA and zstd; the ones of the old consensus are gone.
        use crate::dircache::compress::{CONSENSUS_FORMS, DIFF_FORMS};
        let f = ConsensusFlavor::Microdesc;
        for m in CONSENSUS_FORMS {
            let z = s.compressed(f, None, m).expect("consensus form");
            assert_eq!(decompress(m, z), MD2.as_bytes(), "{m:?}");
            assert!(z.len() < MD2.len() / 2);
        }
        for m in DIFF_FORMS {
            let z = s.compressed(f, Some(&old_sha3), m).expect("diff form");
            assert_eq!(&decompress(m, z)[..], &diff[..], "{m:?}");
        }
        assert!(s.compressed(f, None, compress::Method::Gzip).is_none());
        assert!(s
            .compressed(f, Some(&old_sha3), compress::Method::Deflate)
            .is_none());
        // The ns consensus's three forms and these six.
        assert_eq!((st.compressed, st.compress_failures), (9, 0));
        assert!(st.compressed_bytes > 0);
    }

    /// A cache that named its consensus gets a diff: it is applied to that consensus and
    /// the result verified like a whole consensus; a diff that does not apply is refused.
    #[test]
    fn a_fetched_diff_is_applied_and_verified() {
        let mut rng = rng();
        let md2 = Consensus::parse(MD2).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(md2.valid_after + 1);
        let diff = consdiff::generate(MD, MD2).unwrap();
        // A diff that does not apply (its base digest is wrong) is refused, nothing changes.
        let mut m = filled_mirror(&mut rng);
        let bad = diff.replacen("hash ", "hash 00", 1);
        let h = m.handle(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            Ok(bad.into_bytes()),
            now,
            &mut rng,
        );
        assert_eq!((h.stored, h.rejected), (0, 1), "{h:?}");
        assert!(h.error.unwrap().contains("consensus diff"));
        let s = m.store().read().unwrap();
        assert_eq!(
            &*s.consensus(ConsensusFlavor::Microdesc).unwrap().body,
            MD.as_bytes()
        );
        drop(s);
        let h = m.handle(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            Ok(diff.into_bytes()),
            now,
            &mut rng,
        );
        assert_eq!(h.stored, 1, "{h:?}");
        let s = m.store().read().unwrap();
        assert_eq!(
            &*s.consensus(ConsensusFlavor::Microdesc).unwrap().body,
            MD2.as_bytes()
        );
    }

    fn decompress(m: compress::Method, b: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        match m {
            compress::Method::Identity => out.extend_from_slice(b),
            compress::Method::Deflate => {
                flate2::read::ZlibDecoder::new(b)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            compress::Method::Gzip => {
                flate2::read::GzDecoder::new(b)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            compress::Method::Zstd => out = zstd::decode_all(b).unwrap(),
            compress::Method::Lzma => {
                let st = liblzma::stream::Stream::new_lzma_decoder(u64::MAX).unwrap();
                liblzma::read::XzDecoder::new_stream(b, st)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn a_newer_consensus_replaces_and_an_older_one_is_refused() {
        let mut rng = rng();
        let mut m = filled_mirror(&mut rng);
        let md2 = Consensus::parse(MD2).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(md2.valid_after + 1);
        let h = m.handle(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            Ok(MD2.into()),
            now,
            &mut rng,
        );
        assert_eq!(h.stored, 1, "{h:?}");
        let s = m.store().read().unwrap();
        assert_eq!(
            s.consensus(ConsensusFlavor::Microdesc).unwrap().valid_after,
            md2.valid_after
        );
        drop(s);
        let h = m.handle(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            Ok(MD.into()),
            now,
            &mut rng,
        );
        assert!(h.error.unwrap().contains("not newer"));
    }

    #[test]
    fn unlisted_documents_are_evicted_after_c_tors_grace_periods() {
        let mut rng = rng();
        let m = filled_mirror(&mut rng);
        let mut s = m.store().write().unwrap();
        let n = s.stats().microdesc.documents as usize;
        let va = Consensus::parse(MD).unwrap().valid_after;
        // Still within a week of last being listed: kept.
        let none = HashSet::new();
        assert_eq!(s.evict(va.saturating_sub(10), &none, 0, |_, _| false), 0);
        // Listed last more than a week ago, and descriptors older than the cutoff and not
        // listed: gone, counted.
        let dropped = s.evict(va + 1, &none, u64::MAX, |_, _| false);
        assert_eq!(dropped, 2 * n);
        let st = s.stats();
        assert_eq!((st.microdesc.documents, st.microdesc.bytes), (0, 0));
        assert_eq!(st.microdesc.evicted, n as u64);
        assert_eq!(st.server_descriptor.documents, 0);
        assert_eq!(s.server_descriptors().count(), 0);
    }

    #[test]
    fn a_cache_fetches_in_the_first_half_interval_after_fresh_until() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // The public network: 1 h interval, valid 3 h.
        let (va, fu, vu) = (10_000, 13_600, 20_800);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, &mut rng);
            assert!((fu + 120..fu + 120 + 1800).contains(&t), "{t}");
        }
        // A 20 s test network: the slop is a sixteenth of the interval (1 s).
        let (va, fu, vu) = (100, 120, 160);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, &mut rng);
            assert!((121..131).contains(&t), "{t}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut r = Retry::default();
        let mut last = 0;
        for i in 0..40 {
            r.failed(1000, &mut rng);
            assert!(r.last_delay >= last.min(MAX_BACKOFF_SECS), "step {i}");
            assert!(r.last_delay <= MAX_BACKOFF_SECS && r.last_delay >= 1);
            assert!(!r.due(1000) && r.due(1000 + r.last_delay));
            last = r.last_delay;
        }
        assert_eq!(last, MAX_BACKOFF_SECS);
    }

    #[test]
    fn paths_are_the_standard_urls() {
        assert_eq!(FetchRequest::Certs.path(), "/tor/keys/all");
        assert_eq!(
            FetchRequest::Consensus(ConsensusFlavor::Ns).path(),
            "/tor/status-vote/current/consensus"
        );
        assert_eq!(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc).path(),
            "/tor/status-vote/current/consensus-microdesc"
        );
        assert_eq!(
            FetchRequest::Microdescs(vec![[0; 32], [0xff; 32]]).path(),
            format!("/tor/micro/d/{}-{}8", "A".repeat(43), "/".repeat(42))
        );
        assert_eq!(
            FetchRequest::ServerDescriptors(vec![[0xab; 20], [1; 20]]).path(),
            format!("/tor/server/d/{}+{}", "AB".repeat(20), "01".repeat(20))
        );
    }
}
