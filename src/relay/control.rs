//! The control-plane thread: everything periodic that is not on the data path.
//!
//! [`ControlPlane::run_due`] is the sans-thread core: given `now` it runs what is due and
//! says how long it may sleep. [`ControlThread`] wraps it in a thread whose sleep is a
//! bounded `recv_timeout` on its message channel, so a reload or shutdown wakes it at once.
//!
//! Tasks:
//! - key maintenance (`RelayKeys::maintain`): a renewed signing key or rotated onion key
//!   marks the descriptor dirty and publishes the new ntor keys to the shards;
//! - bandwidth: sums the shards' byte counters each second into [`BandwidthHistory`] and,
//!   with `AccountingMax`, into the accounting core ([`AccountingDriver`]), whose
//!   hibernation state goes to the shards (snapshot) and the descriptor (`hibernating 1`);
//! - directory ([`Directory`]): build and upload the descriptor when `dir::PublishState`
//!   says so, fetch and verify the consensus, report our listing, and hand consensus
//!   parameters and the relay list to the shards. The network exchanges run on the
//!   `fors-dir` worker thread, so this loop never blocks on an authority.
//! - directory cache ([`DirCacheDriver`], with `DirCache 1`): the mirror
//!   (`dircache::mirror`) says what to fetch, the `fors-dircache` worker fetches it, and what
//!   verified is filed in the shared store and saved under `DataDirectory/dircache/`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::bandwidth::BandwidthHistory;
use super::hibernate::{AccountingDriver, AccountingInfo};
use super::log::{log_info, log_notice, log_warn};
use super::publish::Directory;
use super::snapshot::{NetworkSnapshot, SnapshotCell};
use crate::accounting::Hibernation;
use crate::config::{Config, OutboundBind};
use crate::crypto::handshake::keymap::{NtorKeyMap, NtorKeyPair};
use crate::exit::policy::ExitPolicy;
use crate::keys::link::LinkCertError;
use crate::keys::RelayKeys;
use crate::metrics::MetricsRegistry;
use crate::proto::channel::{ChannelConfig, LinkContext, LinkContextError};

/// Longest the thread sleeps, whatever is scheduled.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How soon the directory cache looks for the worker's answer while requests wait for it.
const WAITING_POLL: Duration = Duration::from_millis(50);
/// How often keys are checked (C checks Ed25519 keys hourly and onion keys on their own
/// schedule; the check is cheap and only touches disk when something is due).
pub const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Bandwidth sampling period (the history works in whole seconds).
pub const BANDWIDTH_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Messages from the main thread.
pub enum ControlMsg {
    /// A reloaded configuration and the exit policy built from it.
    NewConfig {
        config: Box<Config>,
        exit_policy: Box<ExitPolicy>,
        descriptor_changed: bool,
    },
    Shutdown,
}

/// The control plane's state.
pub struct ControlPlane {
    config: Config,
    keys: RelayKeys,
    exit_policy: ExitPolicy,
    network: Arc<SnapshotCell<NetworkSnapshot>>,
    metrics: Arc<MetricsRegistry>,
    bandwidth: BandwidthHistory,
    directory: Directory,
    /// The advertised ORPort (the bound port when the torrc says `auto`).
    or_port: u16,
    /// Per-channel bounds for new link contexts.
    channel_config: ChannelConfig,
    next_key_check: Instant,
    next_bandwidth_sample: Instant,
    /// The discovered address last put into the exit policy and NETINFO (see
    /// [`Self::apply_discovered_address`]).
    applied_address: Option<std::net::Ipv4Addr>,
    /// Accounting, when `AccountingMax` is set.
    accounting: Option<AccountingDriver>,
    /// Where GETINFO reads accounting values (kept to restart accounting on SIGHUP).
    accounting_info: AccountingInfo,
    /// The DataDirectory in force (a changed one needs a restart), for the state file.
    data_directory: std::path::PathBuf,
    /// The directory cache's mirror, with `DirCache 1`.
    dircache: Option<DirCacheDriver>,
    /// What the directory server answers besides the store: our descriptor and the
    /// consensus's `HSV3MaxDescriptorSize`.
    dir_server_inputs: Option<Arc<std::sync::RwLock<crate::relay::dirserver::DirServerInputs>>>,
}

/// Drives the directory cache's mirror from the control-plane loop: hands the mirror's
/// requests to the `fors-dircache` worker, its answers back to the mirror, and saves what
/// changed to disk once the round of fetches of that kind is over.
pub struct DirCacheDriver {
    mirror: crate::dircache::mirror::Mirror,
    worker: super::dirworker::MirrorWorker,
    dir: std::path::PathBuf,
    rng: rand::rngs::StdRng,
    /// Kinds changed and not saved yet.
    unsaved: std::collections::HashSet<crate::dircache::DocKind>,
    /// Requests the mirror issued, not yet handed to the worker (at most the mirror's
    /// `MAX_IN_FLIGHT`). The worker gets one at a time and its source is picked then, as C
    /// tor picks a source when it launches a request, so a source marked down meanwhile is
    /// not asked by requests queued behind it.
    waiting: std::collections::VecDeque<crate::dircache::mirror::FetchRequest>,
    /// The worker has a request.
    worker_busy: bool,
}

impl DirCacheDriver {
    /// With `DirCache 1` and authorities to fetch from: starts the worker and loads the
    /// cache kept on disk (verified again; what fails is dropped and fetched anew).
    pub fn for_config(
        config: &Config,
        store: crate::dircache::SharedStore,
    ) -> std::io::Result<Option<DirCacheDriver>> {
        use rand::SeedableRng;
        if !config.dir_cache {
            return Ok(None);
        }
        let (endpoints, trusted) = super::dirworker::endpoints(&config.dir_authorities);
        let authorities = super::dirworker::authority_sources(&config.dir_authorities);
        if endpoints.is_empty() || trusted.is_empty() {
            log_warn!(
                "DirCache 1, but no DirAuthority line has both a DirPort and a v3ident: \
                 the directory cache has nothing to mirror."
            );
            return Ok(None);
        }
        let limits = crate::dir::client::ClientLimits {
            connect_timeout: Duration::from_secs(10),
            total_timeout: config.network_timings.dir_connection_max_stall,
            outbound: config.outbound_bind(),
            ..Default::default()
        };
        let worker = super::dirworker::MirrorWorker::spawn(limits, store.clone())?;
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut mirror = crate::dircache::mirror::Mirror::new(store, trusted);
        mirror.set_fetch_dir_info_early(
            config.fetch_dir_info_early,
            config.fetch_dir_info_extra_early,
            &mut rng,
        );
        mirror.set_authorities(authorities);
        let dir = crate::dircache::disk::cache_dir(&config.data_directory);
        let r = crate::dircache::disk::load(&dir, &mut mirror, SystemTime::now(), &mut rng);
        for p in &r.problems {
            log_warn!("Directory cache on disk: {p}");
        }
        log_notice!(
            "Directory cache: loaded {} consensuses, {} certificates, {} microdescriptors and \
             {} server descriptors from {}; dropped {} documents that failed verification and \
             {} that the consensus does not list.",
            r.consensuses,
            r.certs,
            r.microdescs,
            r.server_descriptors,
            dir.display(),
            r.rejected,
            r.unlisted
        );
        Ok(Some(DirCacheDriver {
            mirror,
            worker,
            dir,
            rng,
            unsaved: Default::default(),
            waiting: Default::default(),
            worker_busy: false,
        }))
    }

    /// Our relay identity: never asked for the directory.
    pub fn set_our_identity(&mut self, id: crate::crypto::ids::RsaIdentity) {
        self.mirror.sources_mut().set_our_identity(id);
    }

    /// Whether the descriptor we publish says `tunnelled-dir-server` (then, as C tor's
    /// `dirclient_fetches_from_authorities`, the authorities are asked; otherwise caches).
    pub fn set_advertising(&mut self, on: bool) {
        if self.mirror.sources().advertising() != on {
            log_info!(
                "Directory cache: {}",
                if on {
                    "our descriptor advertises directory service: mirroring from the authorities."
                } else {
                    "not advertising directory service: mirroring from other caches."
                }
            );
        }
        self.mirror.sources_mut().set_advertising(on);
    }

    /// torrc `FetchDirInfoEarly` and `FetchDirInfoExtraEarly` (at start and on reload).
    pub fn set_fetch_dir_info_early(&mut self, on: bool, extra_early: bool) {
        self.mirror
            .set_fetch_dir_info_early(on, extra_early, &mut self.rng);
    }

    /// Runs what is due; returns when to come back.
    pub fn run_due(&mut self, now: Instant, wall: SystemTime) -> Instant {
        while let Some(a) = self.worker.poll() {
            self.worker_busy = false;
            let what = a.request.kind().name();
            let n = a.request.path().len();
            let kind = a.source.kind();
            let label = match &a.request {
                crate::dircache::mirror::FetchRequest::Microdescs(d) => {
                    format!("{} microdescriptors", d.len())
                }
                crate::dircache::mirror::FetchRequest::ServerDescriptors(d) => {
                    format!("{} server descriptors", d.len())
                }
                r => r.path(),
            };
            {
                let mut store = self
                    .mirror
                    .store()
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                store.record_source_fetch(kind == "cache", a.answer.is_ok());
            }
            self.mirror.sources_mut().finished(&a.source, a.link_failed);
            let ok = a.answer.is_ok();
            let h = self.mirror.handle(a.request, a.answer, wall, &mut self.rng);
            if let Some(e) = &h.error {
                log_info!("Directory cache: {what} fetch ({n}-byte URL) failed: {e}");
            } else if ok {
                // The source's kind and nickname only: relays, never a client's address.
                log_info!(
                    "Directory cache: fetched {label} from {kind} {}.",
                    a.source.nickname()
                );
            }
            if h.rejected > 0 {
                log_warn!(
                    "Directory cache: {} fetched {what} document(s) did not verify and were \
                     dropped.",
                    h.rejected
                );
            }
        }
        self.waiting.extend(self.mirror.poll(wall));
        while !self.worker_busy {
            let Some(req) = self.waiting.pop_front() else {
                break;
            };
            let submitted = match self.mirror.pick_source(&mut self.rng) {
                Some(source) => self.worker.submit(req.clone(), source),
                None => false,
            };
            if submitted {
                self.worker_busy = true;
            } else {
                // No source, or the worker is gone: a failed fetch, retried later.
                self.mirror.handle(
                    req,
                    Err("no directory source to ask (or the worker stopped)".into()),
                    wall,
                    &mut self.rng,
                );
            }
        }
        self.unsaved.extend(self.mirror.take_dirty());
        let ready: std::collections::HashSet<_> = self
            .unsaved
            .iter()
            .copied()
            .filter(|k| !self.mirror.fetching(*k))
            .collect();
        if !ready.is_empty() {
            let job = {
                let store = self
                    .mirror
                    .store()
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                crate::dircache::disk::collect(&store, &ready)
            };
            match crate::dircache::disk::write_files(&self.dir, job) {
                Ok(()) => self.unsaved.retain(|k| !ready.contains(k)),
                Err(e) => log_warn!("Could not save the directory cache: {e}"),
            }
        }
        let wall_secs = unix_secs(wall);
        let due = match self.mirror.next_due() {
            Some(t) => now + Duration::from_secs(t.saturating_sub(wall_secs)),
            None => now + MAX_SLEEP,
        };
        if self.waiting.is_empty() {
            due
        } else {
            // Launch the next waiting request soon after the worker answers.
            due.min(now + WAITING_POLL)
        }
    }

    /// The store's counters (documents, bytes, fetches per kind).
    pub fn stats(&self) -> crate::dircache::StoreStats {
        self.mirror
            .store()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stats()
    }
}

/// The ntor key map the shards answer CREATE2 with, from the relay's keys.
pub fn ntor_key_map(keys: &RelayKeys) -> NtorKeyMap {
    let onion = keys.onion_keys();
    NtorKeyMap::new(
        NtorKeyPair::from_secret(onion.ntor.secret.clone()),
        onion
            .ntor_previous
            .as_ref()
            .map(|k| NtorKeyPair::from_secret(k.secret.clone())),
    )
}

/// The snapshot before any consensus is known.
/// Why the link-handshake context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    #[error("minting link certificates: {0}")]
    Certs(#[from] LinkCertError),
    #[error("link context: {0}")]
    Context(#[from] LinkContextError),
}

/// Mints link certificates and builds the channels' shared context; NETINFO advertises
/// `my_addrs` (our published addresses).
pub fn link_context(
    keys: &RelayKeys,
    my_addrs: &[IpAddr],
    channel: ChannelConfig,
    now: SystemTime,
) -> Result<LinkContext, LinkSetupError> {
    Ok(LinkContext::new(
        keys.mint_link_certs(now)?,
        my_addrs,
        channel,
    )?)
}

/// The snapshot before any consensus is known.
pub fn initial_snapshot(
    keys: &RelayKeys,
    exit_policy: &ExitPolicy,
    outbound: OutboundBind,
    link: LinkContext,
) -> NetworkSnapshot {
    NetworkSnapshot {
        outbound,
        consensus_params: BTreeMap::new(),
        known_relays: Arc::new(BTreeMap::new()),
        ntor_keys: Arc::new(ntor_key_map(keys)),
        exit_policy: Arc::new(exit_policy.clone()),
        link: Arc::new(link),
        self_status: None,
        hibernation: Hibernation::Awake,
        extend_over_ipv6: false,
    }
}

impl ControlPlane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        keys: RelayKeys,
        exit_policy: ExitPolicy,
        network: Arc<SnapshotCell<NetworkSnapshot>>,
        metrics: Arc<MetricsRegistry>,
        directory: Directory,
        or_port: u16,
        channel_config: ChannelConfig,
        now: Instant,
    ) -> ControlPlane {
        ControlPlane {
            keys,
            exit_policy,
            network,
            metrics,
            bandwidth: BandwidthHistory::new(),
            directory,
            or_port,
            channel_config,
            next_key_check: now + KEY_CHECK_INTERVAL,
            next_bandwidth_sample: now,
            applied_address: None,
            accounting: None,
            accounting_info: AccountingInfo::default(),
            data_directory: config.data_directory.clone(),
            config,
            dircache: None,
            dir_server_inputs: None,
        }
    }

    /// Turns the directory cache's mirror on (`DirCache 1`).
    pub fn set_dircache(&mut self, mut driver: DirCacheDriver) {
        driver.set_our_identity(self.keys.rsa_identity());
        self.metrics.set_dircache(driver.mirror.store().clone());
        self.dircache = Some(driver);
    }

    /// Feeds the directory server our descriptor and the consensus parameters it needs.
    pub fn set_dir_server_inputs(
        &mut self,
        inputs: Arc<std::sync::RwLock<crate::relay::dirserver::DirServerInputs>>,
    ) {
        self.dir_server_inputs = Some(inputs);
    }

    /// The directory cache's counters, when it runs.
    pub fn dircache_stats(&self) -> Option<crate::dircache::StoreStats> {
        self.dircache.as_ref().map(DirCacheDriver::stats)
    }

    /// Hands over accounting (started before the shards, so that their first snapshot
    /// already says whether to hibernate) and where GETINFO reads it.
    pub fn set_accounting(&mut self, driver: Option<AccountingDriver>, info: AccountingInfo) {
        self.accounting = driver;
        self.accounting_info = info;
        let h = self.hibernation();
        self.directory
            .set_hibernating(h.refuses_new_work(), Instant::now());
    }

    /// The hibernation state in force (awake without accounting).
    pub fn hibernation(&self) -> Hibernation {
        match self.accounting.as_ref().map(AccountingDriver::hibernation) {
            None | Some(Hibernation::Initial) => Hibernation::Awake,
            Some(h) => h,
        }
    }

    /// A new hibernation state: tell the shards (refuse new circuits and streams, or close
    /// every channel) and republish the descriptor with or without `hibernating 1`.
    fn hibernation_changed(&mut self, now: Instant) {
        let h = self.hibernation();
        let old = self.network.load();
        if old.hibernation != h {
            self.network.publish(NetworkSnapshot {
                hibernation: h,
                ..(*old).clone()
            });
        }
        self.directory.set_hibernating(h.refuses_new_work(), now);
    }

    /// Why the plane stopped on its own (a required protocol is missing), if it did.
    pub fn fatal_reason(&self) -> Option<&str> {
        self.directory.fatal()
    }

    /// Saves the accounting state (at shutdown).
    pub fn save_accounting(&mut self, wall: SystemTime) {
        if let Some(a) = &mut self.accounting {
            a.save(unix_secs(wall));
        }
    }

    /// Says plainly what this build does about the directory.
    pub fn announce(&self) {
        if !self.directory.has_authorities() {
            log_warn!(
                "No DirAuthority line with a DirPort: Fors has no built-in list of the public \
                 directory authorities yet, so it neither publishes a descriptor nor fetches a \
                 consensus. Add DirAuthority lines to join a network."
            );
        } else if !self.config.publish_server_descriptor {
            log_notice!("PublishServerDescriptor is 0: not publishing a descriptor.");
        }
    }

    pub fn keys(&self) -> &RelayKeys {
        &self.keys
    }

    pub fn exit_policy(&self) -> &ExitPolicy {
        &self.exit_policy
    }

    /// Observed bandwidth (bytes/s) for the next descriptor.
    pub fn observed_bandwidth(&self) -> u64 {
        self.bandwidth.observed()
    }

    /// Runs every task that is due at `now` (`wall` is the same instant on the system
    /// clock) and returns how long the caller may sleep.
    pub fn run_due(&mut self, now: Instant, wall: SystemTime) -> Duration {
        if now >= self.next_bandwidth_sample {
            let (r, w) = self.metrics.total_bytes();
            let secs = unix_secs(wall);
            self.bandwidth.sample(secs, r, w);
            let changed = self.accounting.as_mut().and_then(|a| a.sample(secs, r, w));
            if changed.is_some() {
                self.hibernation_changed(now);
            }
            let g = &self.metrics.relay;
            g.read_bytes.store(r, Ordering::Relaxed);
            g.written_bytes.store(w, Ordering::Relaxed);
            g.observed_bandwidth
                .store(self.bandwidth.observed(), Ordering::Relaxed);
            self.next_bandwidth_sample = now + BANDWIDTH_SAMPLE_INTERVAL;
        }
        if now >= self.next_key_check {
            self.maintain_keys(now, wall);
            self.next_key_check = now + KEY_CHECK_INTERVAL;
        }
        let update = self.directory.run_due(
            now,
            wall,
            &self.config,
            &mut self.keys,
            &self.exit_policy,
            self.or_port,
            self.bandwidth.observed(),
            &self.metrics,
        );
        let built = self.directory.take_built();
        if let (Some(doc), Some(d)) = (&built, &mut self.dircache) {
            // C `dirclient_fetches_from_authorities`: we publish (this was built to upload)
            // and it says `tunnelled-dir-server`.
            let says = doc
                .body
                .split(|b| *b == b'\n')
                .any(|l| l == b"tunnelled-dir-server");
            d.set_advertising(says && self.config.publish_server_descriptor);
        }
        if let Some(inputs) = &self.dir_server_inputs {
            let param = update
                .as_ref()
                .map(|u| u.consensus_params.get("HSV3MaxDescriptorSize").copied());
            if built.is_some() || param.is_some() {
                let mut i = inputs.write().unwrap_or_else(|p| p.into_inner());
                if let Some(doc) = built {
                    i.own_descriptor = Some(doc);
                }
                if let Some(p) = param {
                    i.hsv3_max_descriptor_size = p.map(i64::from);
                }
            }
        }
        if let Some(u) = update {
            let old = self.network.load();
            self.network.publish(u.apply(&old));
        }
        self.apply_discovered_address(wall);
        let mut next = self
            .next_bandwidth_sample
            .min(self.next_key_check)
            .min(self.directory.next_due(now));
        if let Some(d) = &mut self.dircache {
            next = next.min(d.run_due(now, wall));
        }
        next.saturating_duration_since(now).min(MAX_SLEEP)
    }

    fn maintain_keys(&mut self, now: Instant, wall: SystemTime) {
        match self.keys.maintain(wall) {
            Ok(changes) => {
                if changes.signing_key_renewal_blocked {
                    log_warn!(
                        "The Ed25519 signing key is about to expire and the master identity key \
                         is offline: create a new signing key with the master key and restart."
                    );
                }
                if changes.signing_key_renewed {
                    log_notice!("Renewed the Ed25519 signing key.");
                }
                self.renew_link_certs(wall, changes.signing_key_renewed);
                if changes.onion_keys.rotated {
                    log_notice!("Rotated the onion keys.");
                    self.publish_ntor_keys();
                }
                if changes.onion_keys.previous_expired {
                    log_info!("Forgot the previous onion keys (grace period over).");
                    self.publish_ntor_keys();
                }
                if changes.descriptor_changed() {
                    self.metrics
                        .relay
                        .key_changes
                        .fetch_add(1, Ordering::Relaxed);
                    self.directory.mark_dirty("keys changed", now);
                }
            }
            Err(e) => {
                self.metrics
                    .relay
                    .key_maintenance_failures
                    .fetch_add(1, Ordering::Relaxed);
                log_warn!("Key maintenance failed: {e}");
            }
        }
    }

    fn publish_ntor_keys(&self) {
        let old = self.network.load();
        self.network.publish(NetworkSnapshot {
            ntor_keys: Arc::new(ntor_key_map(&self.keys)),
            ..(*old).clone()
        });
    }

    /// Re-mints the link certificates when they near expiry or `force` (new signing key),
    /// and hands the shards a new link context.
    /// The configuration with a discovered address standing in for the missing `Address`
    /// line, as C tor uses the address it found everywhere it would use a configured one.
    fn addressed_config(&self) -> std::borrow::Cow<'_, Config> {
        match self.applied_address {
            Some(ip) if super::publish::configured_ipv4(&self.config).is_none() => {
                let mut c = self.config.clone();
                c.addresses
                    .push(crate::config::AddressConfig::Ip(IpAddr::V4(ip)));
                std::borrow::Cow::Owned(c)
            }
            _ => std::borrow::Cow::Borrowed(&self.config),
        }
    }

    /// A newly discovered address goes where a configured one would: the exit policy's
    /// rejection of our own addresses (C builds the descriptor's policy with the address it
    /// publishes, `policies_parse_exit_policy_from_options`) and the addresses our NETINFO
    /// cells claim. The directory delays its upload a moment so the descriptor carries the
    /// rebuilt policy.
    fn apply_discovered_address(&mut self, wall: SystemTime) {
        let found = self.directory.discovered_address();
        if found == self.applied_address || found.is_none() {
            return;
        }
        self.applied_address = found;
        if let (Some(inputs), Some(ip)) = (&self.dir_server_inputs, found) {
            // The directory server tells DirPort peers outside our /24 their address.
            let mut i = inputs.write().unwrap_or_else(|p| p.into_inner());
            i.set_our_address(IpAddr::V4(ip));
        }
        let config = self.addressed_config().into_owned();
        match super::setup::build_exit_policy(&config) {
            Ok((policy, _)) => {
                if policy != self.exit_policy {
                    self.exit_policy = policy;
                    let old = self.network.load();
                    self.network.publish(NetworkSnapshot {
                        exit_policy: Arc::new(self.exit_policy.clone()),
                        ..(*old).clone()
                    });
                }
            }
            Err(e) => log_warn!("Could not rebuild the exit policy with our new address: {e}"),
        }
        self.renew_link_certs(wall, true);
    }

    fn renew_link_certs(&self, wall: SystemTime, force: bool) {
        let old = self.network.load();
        let certs = old.link.link_certs();
        if !force && !certs.needs_renewal(wall, &self.keys.params().link) {
            return;
        }
        let addrs = super::setup::advertised_addrs(&self.addressed_config());
        match link_context(&self.keys, &addrs, self.channel_config, wall) {
            Ok(link) => {
                log_info!("Minted new link certificates.");
                self.network.publish(NetworkSnapshot {
                    link: Arc::new(link),
                    ..(*old).clone()
                });
            }
            Err(e) => {
                self.metrics
                    .relay
                    .key_maintenance_failures
                    .fetch_add(1, Ordering::Relaxed);
                log_warn!("Could not renew the link certificates: {e}");
            }
        }
    }

    /// Takes a reloaded configuration.
    pub fn apply_config(
        &mut self,
        config: Config,
        exit_policy: ExitPolicy,
        descriptor_changed: bool,
    ) {
        self.directory
            .set_publish_enabled(config.publish_server_descriptor);
        if let Some(d) = &mut self.dircache {
            if !config.publish_server_descriptor {
                d.set_advertising(false);
            }
            d.set_fetch_dir_info_early(
                config.fetch_dir_info_early,
                config.fetch_dir_info_extra_early,
            );
        }
        self.directory.set_assume_reachable(config.assume_reachable);
        let old = self.network.load();
        if exit_policy != self.exit_policy {
            self.network.publish(NetworkSnapshot {
                exit_policy: Arc::new(exit_policy.clone()),
                ..(*old).clone()
            });
        }
        self.reconfigure_accounting(&config);
        self.config = config;
        self.exit_policy = exit_policy;
        // The reloaded policy was built without a discovered address: apply it again.
        self.applied_address = None;
        if descriptor_changed {
            self.directory
                .mark_dirty("configuration reloaded", Instant::now());
        }
    }

    /// C `options_act_relay_accounting` on SIGHUP: start, change or stop accounting.
    fn reconfigure_accounting(&mut self, config: &Config) {
        let now = unix_secs(SystemTime::now());
        let before = self.hibernation();
        match (self.accounting.take(), config.accounting()) {
            (Some(mut a), Some(cfg)) => {
                a.reconfigure(cfg, now);
                self.accounting = Some(a);
            }
            (Some(a), None) => {
                log_notice!("AccountingMax is 0 now: accounting and hibernation are off.");
                a.stop(now);
            }
            (None, Some(cfg)) => {
                match AccountingDriver::start(
                    cfg,
                    &self.data_directory,
                    self.keys.rsa_identity().0,
                    now,
                    None,
                    self.accounting_info.clone(),
                ) {
                    Ok(a) => self.accounting = Some(a),
                    Err(e) => log_warn!("Accounting stays off: {e}"),
                }
            }
            (None, None) => {}
        }
        if self.hibernation() != before {
            self.hibernation_changed(Instant::now());
        }
    }

    /// Runs the loop on the current thread until `Shutdown` or the sender is dropped.
    pub fn run(mut self, rx: mpsc::Receiver<ControlMsg>) -> ControlPlane {
        loop {
            let wait = self.run_due(Instant::now(), SystemTime::now());
            if self.directory.fatal().is_some() {
                // A required protocol is missing: the main loop sees the thread end and
                // exits with status 1, giving `fatal_reason` as the cause.
                self.save_accounting(SystemTime::now());
                return self;
            }
            match rx.recv_timeout(wait) {
                Ok(ControlMsg::NewConfig {
                    config,
                    exit_policy,
                    descriptor_changed,
                }) => self.apply_config(*config, *exit_policy, descriptor_changed),
                Ok(ControlMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    // C saves the state file on exit too.
                    self.save_accounting(SystemTime::now());
                    return self;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// The running control-plane thread.
pub struct ControlThread {
    tx: mpsc::Sender<ControlMsg>,
    thread: Option<JoinHandle<ControlPlane>>,
}

impl ControlThread {
    pub fn spawn(plane: ControlPlane) -> std::io::Result<ControlThread> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fors-control".into())
            .spawn(move || plane.run(rx))?;
        Ok(ControlThread {
            tx,
            thread: Some(thread),
        })
    }

    /// Sends a message; false if the thread is gone.
    pub fn send(&self, msg: ControlMsg) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// Whether the thread ended (it only ends on request, so this means it panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the thread and returns its final state (`None` if it panicked).
    pub fn stop(mut self) -> Option<ControlPlane> {
        let _ = self.tx.send(ControlMsg::Shutdown);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(ControlMsg::Shutdown);
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, MemFs};
    use crate::keys::KeyParams;
    use crate::relay::snapshot::SnapshotReader;
    use crate::shard::ShardMetrics;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fors-control-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn samples_bandwidth_and_publishes_rotated_ntor_keys() {
        let dir = temp_dir("rot");
        let t0 = SystemTime::now();
        let keys = RelayKeys::load_or_create(&dir, t0, KeyParams::default()).unwrap();
        let cfg = parse_str(
            &MemFs::default(),
            "torrc",
            &format!(
                "ORPort 127.0.0.1:9001\nDataDirectory {}\nPublishServerDescriptor 0\n",
                dir.display()
            ),
        )
        .unwrap()
        .0;
        let cfg_copy = cfg.clone();
        let cell = SnapshotCell::new(initial_snapshot(
            &keys,
            &ExitPolicy::reject_all(),
            OutboundBind::default(),
            link_context(&keys, &[], ChannelConfig::default(), t0).unwrap(),
        ));
        let mut reader = SnapshotReader::new(cell.clone());
        let first_key = *reader.get().ntor_keys.current().public().as_bytes();
        let first_link = reader.get().link.link_certs().tls_cert_sha256();
        assert_eq!(&first_key, keys.ntor_key().public.as_bytes());
        let metrics = Arc::new(MetricsRegistry::new(2, Instant::now()));
        let now = Instant::now();
        let mut cp = ControlPlane::new(
            cfg,
            keys,
            ExitPolicy::reject_all(),
            cell.clone(),
            metrics.clone(),
            Directory::new(None, &cfg_copy, now),
            9001,
            ChannelConfig::default(),
            now,
        );
        let sleep = cp.run_due(now, t0);
        assert!(sleep <= MAX_SLEEP && sleep > Duration::ZERO);

        // 10 s of traffic on both shards.
        for s in 1..=10u64 {
            for shard in metrics.shards() {
                shard.store(&ShardMetrics {
                    recv_bytes: 50_000 * s,
                    send_bytes: 40_000 * s,
                    ..ShardMetrics::default()
                });
            }
            cp.run_due(now + Duration::from_secs(s), t0 + Duration::from_secs(s));
        }
        // Per second: read 100 kB, write 80 kB over two shards.
        assert_eq!(cp.observed_bandwidth(), 80_000);
        assert_eq!(
            metrics.relay.observed_bandwidth.load(Ordering::Relaxed),
            80_000
        );

        // 29 days later the onion keys are due for rotation (C default: 28 days).
        let later = t0 + Duration::from_secs(29 * 86_400);
        cp.run_due(now + KEY_CHECK_INTERVAL * 2, later);
        assert_eq!(metrics.relay.key_changes.load(Ordering::Relaxed), 1);
        assert!(reader.refresh(), "shards were not given the new ntor key");
        let new_key = *reader.get().ntor_keys.current().public().as_bytes();
        // Link certs (2-day lifetime) were re-minted too.
        assert_ne!(reader.get().link.link_certs().tls_cert_sha256(), first_link);
        assert_ne!(new_key, first_key);
        assert_eq!(
            reader
                .get()
                .ntor_keys
                .previous()
                .map(|k| *k.public().as_bytes()),
            Some(first_key)
        );

        // A reloaded exit policy reaches the shards through the snapshot.
        let (open, _) = crate::relay::setup::build_exit_policy(
            &parse_str(
                &MemFs::default(),
                "torrc",
                "ORPort 127.0.0.1:9001\nExitPolicy accept *:443,reject *:*\n",
            )
            .unwrap()
            .0,
        )
        .unwrap();
        assert!(reader.get().exit_policy.is_reject_star());
        cp.apply_config(cfg_copy.clone(), open.clone(), true);
        assert!(reader.refresh());
        assert_eq!(*reader.get().exit_policy, open);
        // Same policy again: no new snapshot.
        cp.apply_config(cfg_copy, open, false);
        assert!(!reader.refresh());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
