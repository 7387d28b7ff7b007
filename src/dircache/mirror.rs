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
//!
//! Whom each request goes to ([`Mirror::pick_source`], C `directory_get_from_dirserver`):
//! the authorities when our published descriptor says `tunnelled-dir-server` (C
//! `dirclient_fetches_from_authorities`) or when no consensus is held; otherwise a directory
//! cache picked from the consensus held as C `router_pick_directory_server` picks one. See
//! [`Sources`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rand::Rng;

use super::store::{ConsensusDoc, ConsensusFlavor, DocKind, SharedStore, DIFF_BASES};
use super::verify::{self, VerifyError};
use super::{compress, consdiff};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
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

/// Which of C tor's consensus download schedules applies
/// (C `update_consensus_networkstatus_fetch_time_impl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchSchedule {
    /// A relay that asks caches: as a client, after the caches had time to fetch it.
    Client,
    /// A cache that asks the authorities (C `dirclient_fetches_dir_info_early`).
    Cache,
    /// `Cache` with `FetchDirInfoExtraEarly`: within a minute.
    CacheExtraEarly,
}

/// When to fetch the next consensus (C `update_consensus_networkstatus_fetch_time_impl`).
/// `Cache`: at `fresh-until` plus a short slop (2 minutes, or a sixteenth of the interval on
/// fast test networks), at a uniformly random point of the first half of the interval
/// (`CacheExtraEarly`: of the first minute, unless the interval is too short for it).
/// `Client`, which gives the caches time to fetch it first: from three quarters of an
/// interval after `fresh-until`, within seven eighths of what is left until `valid-until`.
/// Before `valid-until` in any case.
pub fn next_fetch_time(
    valid_after: u64,
    fresh_until: u64,
    valid_until: u64,
    schedule: FetchSchedule,
    rng: &mut impl Rng,
) -> u64 {
    let interval = fresh_until.saturating_sub(valid_after).max(1);
    let mut slop = MIN_SECS_BEFORE_CACHING;
    if slop > interval / 16 {
        slop = (interval / 16).max(1);
    }
    let (mut start, dl_interval) = match schedule {
        FetchSchedule::Cache => (fresh_until + slop, (interval / 2).max(1)),
        FetchSchedule::CacheExtraEarly => {
            let dl = if slop + 60 > interval {
                interval / 2
            } else {
                60
            };
            (fresh_until + slop, dl.max(1))
        }
        FetchSchedule::Client => {
            let start = fresh_until + interval * 3 / 4;
            (start, (valid_until.saturating_sub(start) * 7 / 8).max(1))
        }
    };
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

/// A configured directory authority, as a source to fetch from (its DirPort).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthoritySource {
    pub nickname: String,
    pub dir_addr: SocketAddr,
    /// Its relay identity (the `DirAuthority` fingerprint).
    pub rsa: RsaIdentity,
}

/// A directory cache picked from the consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSource {
    pub nickname: String,
    pub rsa: RsaIdentity,
    /// From its microdescriptor (`id ed25519`), when we hold it: the link must prove it too.
    pub ed: Option<Ed25519Identity>,
    pub or_addr: SocketAddr,
    /// Its DirPort, if the consensus lists one. C tor in relay mode asks a cache there
    /// (`directory_command_should_use_begindir`: "in relay mode"), and over a one-hop
    /// BEGIN_DIR circuit to its ORPort only when it has none — as nearly every cache today.
    pub dir_addr: Option<SocketAddr>,
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Authority(AuthoritySource),
    Cache(CacheSource),
}

impl Source {
    /// `authority` or `cache`, for the log and the metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Authority(_) => "authority",
            Source::Cache(_) => "cache",
        }
    }

    pub fn nickname(&self) -> &str {
        match self {
            Source::Authority(a) => &a.nickname,
            Source::Cache(c) => &c.nickname,
        }
    }

    fn rsa(&self) -> RsaIdentity {
        match self {
            Source::Authority(a) => a.rsa,
            Source::Cache(c) => c.rsa,
        }
    }
}

/// C `DEFAULT_BW_WEIGHT_SCALE` / the `bwweightscale` consensus parameter's bounds.
const BW_WEIGHT_SCALE_DEFAULT: i32 = 10_000;
/// C `compute_weighted_bandwidths`: a routerstatus without a bandwidth counts as this many
/// bytes.
const MISSING_BW_BYTES: f64 = 30_000.0;

/// The choice of source (sans-IO): C tor 0.4.9's rules for a relay's directory fetches.
///
/// * `directory_get_from_dirserver`: a relay whose descriptor says `tunnelled-dir-server`
///   and which publishes it (`dirclient_fetches_from_authorities`) asks the authorities
///   (`router_pick_trusteddirserver`: uniformly among those not marked down, never
///   ourselves). Every request is sent with `PDS_RETRY_IF_NO_SERVERS`, so when every
///   authority is marked down, all are marked up again and one is picked
///   (`router_pick_dirserver_generic`): C does not turn to a cache then, and neither do we.
/// * Otherwise (before that descriptor is published, with `PublishServerDescriptor 0`)
///   it asks a cache from the consensus it holds (`router_pick_directory_server_impl`):
///   listed Running, Valid and V2Dir, not ourselves, not marked down; authorities only when
///   no other cache is left; weighted by bandwidth with the consensus's `Wbg`, `Wbm`, `Wbe`,
///   `Wbd` weights (`WEIGHT_FOR_DIR`, `compute_weighted_bandwidths`). With no consensus or no
///   usable cache, the fallback list, which (Fors has no `FallbackDir`) holds the
///   authorities (`router_pick_fallback_dirserver`).
/// * A request whose connection failed marks its source down (C `router_set_status(id, 0)`
///   in `connection_dir_client_request_failed`); a cache stays down until the next
///   consensus (C sets `is_running` from each consensus); an HTTP error status marks
///   nothing.
#[derive(Debug, Default)]
pub struct Sources {
    authorities: Vec<AuthoritySource>,
    authority_down: HashSet<RsaIdentity>,
    cache_down: HashSet<RsaIdentity>,
    our_id: Option<RsaIdentity>,
    advertising: bool,
    fetch_early: bool,
    fetch_extra_early: bool,
}

impl Sources {
    pub fn new(authorities: Vec<AuthoritySource>) -> Sources {
        Sources {
            authorities,
            ..Sources::default()
        }
    }

    /// Whether our published descriptor says `tunnelled-dir-server`.
    pub fn set_advertising(&mut self, on: bool) {
        self.advertising = on;
    }

    pub fn advertising(&self) -> bool {
        self.advertising
    }

    /// torrc `FetchDirInfoEarly`: ask the authorities even before advertising.
    pub fn set_fetch_dir_info_early(&mut self, on: bool) {
        self.fetch_early = on;
    }

    /// torrc `FetchDirInfoExtraEarly` (the config allows it only with `FetchDirInfoEarly`).
    pub fn set_fetch_dir_info_extra_early(&mut self, on: bool) {
        self.fetch_extra_early = on;
    }

    /// The consensus download schedule that applies now.
    pub fn schedule(&self) -> FetchSchedule {
        match (self.fetches_from_authorities(), self.fetch_extra_early) {
            (false, _) => FetchSchedule::Client,
            (true, false) => FetchSchedule::Cache,
            (true, true) => FetchSchedule::CacheExtraEarly,
        }
    }

    /// C `dirclient_fetches_from_authorities` (and so `dirclient_fetches_dir_info_early`):
    /// `FetchDirInfoEarly`, or our published descriptor says `tunnelled-dir-server`.
    pub fn fetches_from_authorities(&self) -> bool {
        self.fetch_early || self.advertising
    }

    /// Our relay identity: never picked.
    pub fn set_our_identity(&mut self, id: RsaIdentity) {
        self.our_id = Some(id);
    }

    fn is_authority(&self, id: &RsaIdentity) -> bool {
        self.authorities.iter().any(|a| a.rsa == *id)
    }

    /// An authority not marked down (all marked up again when none is left).
    fn pick_authority(&mut self, rng: &mut impl Rng) -> Option<AuthoritySource> {
        let me = self.our_id;
        let usable = |s: &Sources| -> Vec<AuthoritySource> {
            s.authorities
                .iter()
                .filter(|a| Some(a.rsa) != me && !s.authority_down.contains(&a.rsa))
                .cloned()
                .collect()
        };
        let mut list = usable(self);
        if list.is_empty() {
            self.authority_down.clear();
            list = usable(self);
        }
        if list.is_empty() {
            return None;
        }
        Some(list.swap_remove(rng.gen_range(0..list.len())))
    }

    /// The source for the next request. `consensus`: the one held (ns preferred), with its
    /// body's `bandwidth-weights`; `ed_of`: a relay's Ed25519 identity, if known.
    pub fn pick(
        &mut self,
        consensus: Option<(&Consensus, &HashMap<String, i64>)>,
        ed_of: impl Fn(&RsaIdentity) -> Option<Ed25519Identity>,
        rng: &mut impl Rng,
    ) -> Option<Source> {
        if self.fetches_from_authorities() || consensus.is_none() {
            if let Some(a) = self.pick_authority(rng) {
                return Some(Source::Authority(a));
            }
        }
        if let Some((c, weights)) = consensus {
            if let Some(rs) = self.pick_cache(c, weights, rng) {
                if let Some(a) = self.authorities.iter().find(|a| a.rsa == rs.rsa_identity) {
                    // An authority picked as a cache: ask it where we know it.
                    return Some(Source::Authority(a.clone()));
                }
                let ip = std::net::IpAddr::V4(rs.address);
                return Some(Source::Cache(CacheSource {
                    nickname: rs.nickname.clone(),
                    rsa: rs.rsa_identity,
                    ed: ed_of(&rs.rsa_identity),
                    or_addr: SocketAddr::new(ip, rs.or_port),
                    dir_addr: (rs.dir_port != 0).then(|| SocketAddr::new(ip, rs.dir_port)),
                }));
            }
        }
        self.pick_authority(rng).map(Source::Authority)
    }

    fn pick_cache<'c>(
        &self,
        c: &'c Consensus,
        weights: &HashMap<String, i64>,
        rng: &mut impl Rng,
    ) -> Option<&'c crate::dir::RouterStatus> {
        use crate::dir::RelayFlags as F;
        let (mut caches, mut trusted) = (Vec::new(), Vec::new());
        for rs in &c.relays {
            let f = rs.flags;
            if !(f.contains(F::RUNNING) && f.contains(F::VALID) && f.contains(F::V2DIR)) {
                continue;
            }
            if Some(rs.rsa_identity) == self.our_id || rs.or_port == 0 {
                continue;
            }
            if self.cache_down.contains(&rs.rsa_identity)
                || self.authority_down.contains(&rs.rsa_identity)
            {
                continue;
            }
            if self.is_authority(&rs.rsa_identity) {
                trusted.push(rs);
            } else {
                caches.push(rs);
            }
        }
        if caches.is_empty() {
            // C: "We don't load balance over authorities yet."
            return (!trusted.is_empty()).then(|| trusted[rng.gen_range(0..trusted.len())]);
        }
        let scale = f64::from(
            c.params
                .get("bwweightscale", BW_WEIGHT_SCALE_DEFAULT, 1, i32::MAX),
        );
        let w = |k: &str| weights.get(k).copied().filter(|v| *v >= 0);
        // Missing (or negative) weights: every class weighs the same (C's naive fallback).
        let (wg, wm, we, wd) = match (w("Wbg"), w("Wbm"), w("Wbe"), w("Wbd")) {
            (Some(g), Some(m), Some(e), Some(d)) => (
                g as f64 / scale,
                m as f64 / scale,
                e as f64 / scale,
                d as f64 / scale,
            ),
            _ => (1.0, 1.0, 1.0, 1.0),
        };
        let weight = |rs: &crate::dir::RouterStatus| {
            let bw = rs
                .bandwidth
                .map_or(MISSING_BW_BYTES, |kb| f64::from(kb) * 1000.0);
            let exit = rs.flags.contains(F::EXIT) && !rs.flags.contains(F::BAD_EXIT);
            let guard = rs.flags.contains(F::GUARD);
            // Every candidate is a directory (Wxb = 1 for WEIGHT_FOR_DIR).
            bw * match (guard, exit) {
                (true, true) => wd,
                (true, false) => wg,
                (false, true) => we,
                (false, false) => wm,
            }
        };
        let total: f64 = caches.iter().map(|r| weight(r)).sum();
        if total <= 0.0 || !total.is_finite() {
            return Some(caches[rng.gen_range(0..caches.len())]);
        }
        let mut x = rng.gen_range(0.0..total);
        for rs in &caches {
            let wt = weight(rs);
            if x < wt {
                return Some(rs);
            }
            x -= wt;
        }
        caches.last().copied()
    }

    /// A request to `source` finished; `link_failed`: no answer came (connection, link or
    /// circuit failure, timeout), as opposed to an HTTP answer of any status.
    pub fn finished(&mut self, source: &Source, link_failed: bool) {
        if !link_failed {
            return;
        }
        match source {
            Source::Authority(a) => {
                self.authority_down.insert(a.rsa);
            }
            Source::Cache(c) => {
                self.cache_down.insert(c.rsa);
            }
        }
    }

    /// A new consensus: every cache it lists Running is usable again.
    fn new_consensus(&mut self) {
        self.cache_down.clear();
    }

    /// Whether `source` is marked down (for tests and the log).
    pub fn is_down(&self, source: &Source) -> bool {
        let id = source.rsa();
        self.authority_down.contains(&id) || self.cache_down.contains(&id)
    }
}

/// The `bandwidth-weights` line of a consensus (dir-spec §3.4.1 footer), `K=V` integers;
/// empty when absent.
pub fn bandwidth_weights(body: &[u8]) -> HashMap<String, i64> {
    let text = String::from_utf8_lossy(body);
    let Some(line) = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("bandwidth-weights "))
    else {
        return HashMap::new();
    };
    line.split_ascii_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The Ed25519 identity a microdescriptor names (`id ed25519 <base64>`, dir-spec §3.3).
pub fn microdesc_ed25519(body: &[u8]) -> Option<Ed25519Identity> {
    let text = std::str::from_utf8(body).ok()?;
    let b64 = text.lines().find_map(|l| l.strip_prefix("id ed25519 "))?;
    let raw = crate::dir::netdoc::decode_base64_any(b64.trim())?;
    Some(Ed25519Identity(raw.try_into().ok()?))
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
    /// Whom to ask.
    sources: Sources,
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
            sources: Sources::default(),
        }
    }

    /// The authorities to fetch from (their DirPorts) when the rules say so.
    pub fn set_authorities(&mut self, authorities: Vec<AuthoritySource>) {
        self.sources.authorities = authorities;
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn sources_mut(&mut self) -> &mut Sources {
        &mut self.sources
    }

    /// Where the next request goes ([`Sources`]): picked from the consensus held, the ns
    /// flavour when we have it (a relay's own), else the microdesc one.
    pub fn pick_source(&mut self, rng: &mut impl Rng) -> Option<Source> {
        let c = self
            .current
            .get(&ConsensusFlavor::Ns)
            .map(|c| (c, ConsensusFlavor::Ns))
            .or_else(|| {
                self.current
                    .get(&ConsensusFlavor::Microdesc)
                    .map(|c| (c, ConsensusFlavor::Microdesc))
            });
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        let weights = c
            .and_then(|(_, f)| store.consensus(f))
            .map(|d| bandwidth_weights(&d.body))
            .unwrap_or_default();
        let md = self.current.get(&ConsensusFlavor::Microdesc);
        let ed_of = |id: &RsaIdentity| {
            let d = md?.is_listed(id)?.microdesc_digest?;
            microdesc_ed25519(&store.microdesc(&d)?.body)
        };
        self.sources.pick(c.map(|(c, _)| (c, &weights)), ed_of, rng)
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The parsed consensus of `flavor` in force, if any.
    pub fn consensus(&self, flavor: ConsensusFlavor) -> Option<&Consensus> {
        self.current.get(&flavor)
    }

    /// torrc `FetchDirInfoEarly` (at start and on reload). When that changes whether the
    /// authorities are asked, the next consensus fetches are timed again on the schedule
    /// that now applies (C `options_act` → `update_consensus_networkstatus_fetch_time`).
    pub fn set_fetch_dir_info_early(&mut self, on: bool, extra_early: bool, rng: &mut impl Rng) {
        let before = self.sources.schedule();
        self.sources.set_fetch_dir_info_early(on);
        self.sources.set_fetch_dir_info_extra_early(extra_early);
        let schedule = self.sources.schedule();
        if schedule == before {
            return;
        }
        for (flavor, c) in &self.current {
            self.consensus_due.insert(
                *flavor,
                next_fetch_time(c.valid_after, c.fresh_until, c.valid_until, schedule, rng),
            );
        }
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
                    next_fetch_time(
                        v.doc.valid_after,
                        v.doc.fresh_until,
                        v.doc.valid_until,
                        self.sources.schedule(),
                        rng,
                    ),
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
        self.sources.new_consensus();
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
            next_fetch_time(
                v.doc.valid_after,
                v.doc.fresh_until,
                v.doc.valid_until,
                self.sources.schedule(),
                rng,
            ),
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
            let t = next_fetch_time(va, fu, vu, FetchSchedule::Cache, &mut rng);
            assert!((fu + 120..fu + 120 + 1800).contains(&t), "{t}");
        }
        // A 20 s test network: the slop is a sixteenth of the interval (1 s).
        let (va, fu, vu) = (100, 120, 160);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, FetchSchedule::Cache, &mut rng);
            assert!((121..131).contains(&t), "{t}");
        }
    }

    #[test]
    fn a_relay_that_does_not_advertise_fetches_on_the_client_schedule() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // C: from fresh-until + 3/4 interval, within 7/8 of what is left until valid-until.
        let (va, fu, vu) = (10_000, 13_600, 20_800);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, FetchSchedule::Client, &mut rng);
            assert!((16_300..16_300 + 3_937).contains(&t), "{t}");
            (lo, hi) = (lo.min(t), hi.max(t));
        }
        assert!(lo < 16_300 + 400 && hi > 16_300 + 3_500, "{lo}..{hi}");
        let (va, fu, vu) = (100, 120, 160);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, FetchSchedule::Client, &mut rng);
            assert!((135..156).contains(&t), "{t}");
        }
    }

    #[test]
    fn extra_early_fetches_within_a_minute() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (va, fu, vu) = (10_000, 13_600, 20_800);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, FetchSchedule::CacheExtraEarly, &mut rng);
            assert!((fu + 120..fu + 180).contains(&t), "{t}");
        }
        // An interval too short for a minute: half of it, as the cache schedule.
        let (va, fu, vu) = (100, 120, 160);
        for _ in 0..1000 {
            let t = next_fetch_time(va, fu, vu, FetchSchedule::CacheExtraEarly, &mut rng);
            assert!((121..131).contains(&t), "{t}");
        }
        let mut s = Sources::default();
        s.set_fetch_dir_info_extra_early(true);
        assert_eq!(s.schedule(), FetchSchedule::Client);
        s.set_fetch_dir_info_early(true);
        assert_eq!(s.schedule(), FetchSchedule::CacheExtraEarly);
    }

    #[test]
    fn fetch_dir_info_early_asks_the_authorities_before_advertising() {
        let mut s = Sources::default();
        assert!(!s.fetches_from_authorities());
        s.set_fetch_dir_info_early(true);
        assert!(s.fetches_from_authorities() && !s.advertising());
        s.set_fetch_dir_info_early(false);
        s.set_advertising(true);
        assert!(s.fetches_from_authorities());
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

    fn auth(nick: &str, rsa: RsaIdentity) -> AuthoritySource {
        AuthoritySource {
            nickname: nick.into(),
            dir_addr: "127.0.0.1:1".parse().unwrap(),
            rsa,
        }
    }

    /// The fixture's ns consensus (3 authorities, middle1, middle2, exit1) and our sources
    /// knowing its three authorities.
    fn sources_and_consensus() -> (Sources, Consensus, HashMap<String, i64>) {
        let c = Consensus::parse(NS).unwrap();
        let auths = c
            .relays
            .iter()
            .filter(|r| r.flags.contains(crate::dir::RelayFlags::AUTHORITY))
            .map(|r| auth(&r.nickname, r.rsa_identity))
            .collect::<Vec<_>>();
        assert_eq!(auths.len(), 3);
        (Sources::new(auths), c, bandwidth_weights(NS.as_bytes()))
    }

    fn id_of(c: &Consensus, nick: &str) -> RsaIdentity {
        c.relays
            .iter()
            .find(|r| r.nickname == nick)
            .unwrap()
            .rsa_identity
    }

    #[test]
    fn an_advertising_cache_asks_the_authorities_and_retries_them_all_when_all_are_down() {
        let mut rng = rng();
        let (mut s, c, w) = sources_and_consensus();
        s.set_advertising(true);
        let me = id_of(&c, "auth0");
        s.set_our_identity(me);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let src = s.pick(Some((&c, &w)), |_| None, &mut rng).unwrap();
            let Source::Authority(a) = &src else {
                panic!("advertising: {src:?}");
            };
            assert_ne!(a.rsa, me, "never ourselves");
            seen.insert(a.nickname.clone());
        }
        assert_eq!(seen.len(), 2, "uniformly among the others: {seen:?}");
        // A failed connection marks one down: the other is asked.
        let a1 = Source::Authority(auth("auth1", id_of(&c, "auth1")));
        s.finished(&a1, true);
        assert!(s.is_down(&a1));
        for _ in 0..50 {
            assert_eq!(
                s.pick(Some((&c, &w)), |_| None, &mut rng)
                    .unwrap()
                    .nickname(),
                "auth2"
            );
        }
        // All down: C marks them all up again (PDS_RETRY_IF_NO_SERVERS), no cache is asked.
        let a2 = Source::Authority(auth("auth2", id_of(&c, "auth2")));
        s.finished(&a2, true);
        let src = s.pick(Some((&c, &w)), |_| None, &mut rng).unwrap();
        assert_eq!(src.kind(), "authority");
        assert!(!s.is_down(&a1) && !s.is_down(&a2));
        // An HTTP error is an answer: nothing is marked down.
        s.finished(&a1, false);
        assert!(!s.is_down(&a1));
    }

    #[test]
    fn a_cache_that_does_not_advertise_asks_caches_from_the_consensus_as_c_tor() {
        use crate::dir::RelayFlags as F;
        let mut rng = rng();
        let (mut s, mut c, w) = sources_and_consensus();
        // No consensus: the authorities (the fallback list).
        assert_eq!(
            s.pick(None, |_| None, &mut rng).unwrap().kind(),
            "authority"
        );
        // The fixture's weights: Wbe = Wbd = 0, so exit1 (Guard and Exit) is never asked;
        // the middles are (Guard: Wbg), the authorities only when no other cache is left.
        let ed = Ed25519Identity([9; 32]);
        let mut count: HashMap<String, usize> = HashMap::new();
        for _ in 0..300 {
            let src = s.pick(Some((&c, &w)), |_| Some(ed), &mut rng).unwrap();
            let Source::Cache(cs) = &src else {
                panic!("{src:?}");
            };
            assert_eq!(cs.ed, Some(ed));
            // The fixture's relays list no DirPort: BEGIN_DIR to the ORPort.
            assert_eq!(cs.dir_addr, None);
            assert_eq!(cs.or_addr.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
            *count.entry(cs.nickname.clone()).or_default() += 1;
        }
        assert_eq!(count.len(), 2, "{count:?}");
        assert!(count.contains_key("middle1") && count.contains_key("middle2"));
        // Ourselves, and relays not Running, Valid and V2Dir, are never asked.
        s.set_our_identity(id_of(&c, "middle1"));
        for r in c.relays.iter_mut().filter(|r| r.nickname == "middle2") {
            r.flags = F(r.flags.0 & !F::V2DIR.0);
        }
        // exit1 alone is left: weight 0, but C picks uniformly when all weigh nothing
        // (`choose_array_element_by_weight`).
        for _ in 0..20 {
            let src = s.pick(Some((&c, &w)), |_| None, &mut rng).unwrap();
            assert_eq!(src.nickname(), "exit1", "{src:?}");
        }
        for r in c.relays.iter_mut().filter(|r| r.nickname == "exit1") {
            r.flags = F(r.flags.0 & !F::RUNNING.0);
        }
        for _ in 0..50 {
            let src = s.pick(Some((&c, &w)), |_| None, &mut rng).unwrap();
            assert_eq!(src.kind(), "authority", "{src:?}");
        }
        // Bandwidth weighting: middle2 back, 3x middle1's bandwidth, both middles
        // (Wbg): about three picks in four. We are no longer middle1.
        let (mut s, mut c, w) = sources_and_consensus();
        for r in c.relays.iter_mut() {
            if r.nickname == "middle2" {
                r.bandwidth = Some(600);
            }
            if r.nickname == "middle1" {
                r.bandwidth = Some(200);
            }
        }
        let n = 4000;
        let m2 = (0..n)
            .filter(|_| {
                s.pick(Some((&c, &w)), |_| None, &mut rng)
                    .unwrap()
                    .nickname()
                    == "middle2"
            })
            .count();
        assert!((2800..3200).contains(&m2), "middle2 picked {m2} of {n}");
        // Without bandwidth-weights every class weighs the same: exit1 is asked too.
        let none = HashMap::new();
        assert!((0..300).any(|_| s
            .pick(Some((&c, &none)), |_| None, &mut rng)
            .unwrap()
            .nickname()
            == "exit1"));
        // A cache whose connection failed is not asked again until the next consensus.
        let m2src = (0..100)
            .map(|_| s.pick(Some((&c, &w)), |_| None, &mut rng).unwrap())
            .find(|x| x.nickname() == "middle2")
            .unwrap();
        s.finished(&m2src, true);
        for _ in 0..100 {
            assert_eq!(
                s.pick(Some((&c, &w)), |_| None, &mut rng)
                    .unwrap()
                    .nickname(),
                "middle1"
            );
        }
        s.new_consensus();
        assert!(!s.is_down(&m2src));
        // A DirPort listed: a relay asks the cache there (C, in relay mode).
        for r in c.relays.iter_mut() {
            r.dir_port = 9030;
        }
        let Some(Source::Cache(cs)) = s.pick(Some((&c, &w)), |_| None, &mut rng) else {
            panic!("no cache");
        };
        assert_eq!(cs.dir_addr.unwrap().port(), 9030);
        // The mirror stops asking caches once its descriptor advertises.
        s.set_advertising(true);
        assert_eq!(
            s.pick(Some((&c, &w)), |_| None, &mut rng).unwrap().kind(),
            "authority"
        );
    }

    #[test]
    fn the_mirror_picks_from_the_consensus_it_holds_with_the_caches_ed25519_ids() {
        let mut rng = rng();
        let store = Arc::new(RwLock::new(DirStore::new()));
        let mut m = Mirror::new(store.clone(), trusted());
        let c = Consensus::parse(NS).unwrap();
        m.set_authorities(
            c.relays
                .iter()
                .filter(|r| r.flags.contains(crate::dir::RelayFlags::AUTHORITY))
                .map(|r| auth(&r.nickname, r.rsa_identity))
                .collect(),
        );
        // Nothing held: an authority.
        assert_eq!(m.pick_source(&mut rng).unwrap().kind(), "authority");
        let now = fixture_now();
        m.handle_certs(CERTS.as_bytes(), now, &mut rng);
        for (f, body) in [(ConsensusFlavor::Ns, NS), (ConsensusFlavor::Microdesc, MD)] {
            m.handle(FetchRequest::Consensus(f), Ok(body.into()), now, &mut rng);
        }
        let mds: Vec<[u8; 32]> = m
            .consensus(ConsensusFlavor::Microdesc)
            .unwrap()
            .relays
            .iter()
            .filter_map(|r| r.microdesc_digest)
            .collect();
        m.handle(
            FetchRequest::Microdescs(mds),
            Ok(MICRODESCS.into()),
            now,
            &mut rng,
        );
        let Some(Source::Cache(cs)) = m.pick_source(&mut rng) else {
            panic!("a cache from the consensus held");
        };
        // The ed25519 identity is the one its microdescriptor names.
        let md = m.consensus(ConsensusFlavor::Microdesc).unwrap();
        let d = md.is_listed(&cs.rsa).unwrap().microdesc_digest.unwrap();
        let body = store.read().unwrap().microdesc(&d).unwrap().body.clone();
        assert!(cs.ed.is_some());
        assert_eq!(cs.ed, microdesc_ed25519(&body));
        let text = String::from_utf8_lossy(&body).to_string();
        let b64 = text
            .lines()
            .find_map(|l| l.strip_prefix("id ed25519 "))
            .unwrap();
        assert_eq!(
            cs.ed.unwrap().0.to_vec(),
            crate::dir::netdoc::decode_base64_any(b64).unwrap()
        );
        m.sources_mut().set_advertising(true);
        assert_eq!(m.pick_source(&mut rng).unwrap().kind(), "authority");
    }

    #[test]
    fn bandwidth_weights_are_read_from_the_footer() {
        let w = bandwidth_weights(NS.as_bytes());
        assert_eq!(w.get("Wbg"), Some(&4993));
        assert_eq!(w.get("Wbd"), Some(&0));
        assert_eq!(w.len(), 19);
        assert!(bandwidth_weights(b"network-status-version 3\n").is_empty());
        assert_eq!(microdesc_ed25519(b"onion-key\nid ed25519 !!\n"), None);
    }
}
