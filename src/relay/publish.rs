//! The control plane's directory duties: build and upload our descriptor when
//! `dir::PublishState` says so, fetch and verify the consensus every few minutes, and report
//! plainly whether and how the consensus lists us.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dirworker::{DirJob, DirResult, DirWorker, UploadAnswer};
use super::log::{log_err, log_info, log_notice, log_warn};
use super::reach::{self, SelfTest, SelfTestNews, SelfTestStep, LEARN_ADDRESS_INTERVAL};
use super::snapshot::{KnownRelay, NetworkSnapshot};
use crate::config::{AddressConfig, Config};
use crate::dir::consensus::RelayFlags;
use crate::dir::publish::Listing;
use crate::dir::{
    build_descriptor, build_extra_info, check_descriptor, Bandwidth, Consensus, DescriptorParams,
    PublishDecision, PublishState, UploadRequest,
};
use crate::exit::policy::ExitPolicy;
use crate::keys::{KeyParams, OnionKeyRotation, RelayKeys};
use crate::metrics::MetricsRegistry;
use crate::proto::channel::ExpectedPeer;

/// Public network: fetch the consensus at most this often once we have a fresh one.
pub const CONSENSUS_REFRESH_PUBLIC: Duration = Duration::from_secs(5 * 60);
/// Retry after a failed fetch (public network / test network).
pub const CONSENSUS_RETRY_PUBLIC: Duration = Duration::from_secs(60);
pub const CONSENSUS_RETRY_TESTING: Duration = Duration::from_secs(5);
/// Retry a publication no authority took (public network / test network).
pub const UPLOAD_RETRY_PUBLIC: Duration = Duration::from_secs(5 * 60);
pub const UPLOAD_RETRY_TESTING: Duration = Duration::from_secs(10);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn clamp_u32(v: u64) -> u32 {
    v.min(i32::MAX as u64) as u32
}

/// The descriptor's contents from the configuration. `or_port` is the advertised ORPort
/// (the bound one when the torrc says `auto`). Errors say why nothing can be published.
pub fn descriptor_params(
    config: &Config,
    policy: &ExitPolicy,
    or_port: u16,
    observed: u64,
    uptime_secs: u64,
    now: SystemTime,
) -> Result<DescriptorParams, String> {
    let address: Ipv4Addr = configured_ipv4(config).ok_or(
        "no IPv4 address to publish: set `Address`, or wait until a directory authority \
         tells us our address",
    )?;
    // The port of an advertised line as written; `auto` was bound as the first listener
    // (`or_port`).
    let port_of = |p: &crate::config::OrPort| match p.port {
        crate::config::PortNumber::Fixed(n) => n.get(),
        crate::config::PortNumber::Auto => or_port,
    };
    // C `get_first_advertised_port_by_type_af`: the first advertised IPv4 ORPort, which may
    // be a NoListen line (a port forwarded to a NoAdvertise listener).
    let v4_port = config
        .or_ports
        .iter()
        .find(|p| !p.no_advertise && p.is_ipv4())
        .map_or(or_port, port_of);
    let v6 = config
        .or_ports
        .iter()
        .filter(|p| !p.no_advertise)
        .find_map(|p| match p.address {
            Some(IpAddr::V6(a)) if !a.is_unspecified() => {
                Some(SocketAddrV6::new(a, port_of(p), 0, 0))
            }
            _ => None,
        });
    let mut p = DescriptorParams::new(&config.nickname, address, v4_port, now);
    p.ipv6_or_address = v6;
    // C `get_effective_bwrate`/`bwburst`: the relay bucket when set, else the global one.
    let b = &config.bandwidth;
    let (rate, burst) = if b.relay_rate != 0 {
        (b.relay_rate, b.relay_burst)
    } else {
        (b.rate, b.burst)
    };
    p.bandwidth = Bandwidth {
        average: clamp_u32(rate),
        burst: clamp_u32(burst),
        observed: clamp_u32(observed),
    };
    p.uptime_secs = uptime_secs;
    if dir_advertise(config, v4_port != 0, now).begindir() {
        p.advertise_dir_cache();
    }
    p.contact = config.contact_info.clone();
    p.family = config
        .my_family
        .iter()
        .map(|id| format!("${}", id.to_hex()))
        .collect();
    let mut lines = String::new();
    policy.write_ipv4_policy_lines(&mut lines);
    p.policy = lines.lines().map(str::to_owned).collect();
    p.ipv6_policy = policy
        .ipv6_policy_line()
        .and_then(|l| l.strip_prefix("ipv6-policy ").map(str::to_owned));
    Ok(p)
}

/// The inputs of C tor's rule for advertising directory service (router.c).
fn dir_advertise(
    config: &Config,
    ipv4_or_port: bool,
    now: SystemTime,
) -> crate::dir::descriptor::DirAdvertise {
    use crate::accounting::{time::Zone, AccountingRule};
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let accounting = config
        .accounting()
        .filter(|a| a.rule != AccountingRule::In)
        .map(|a| {
            let len = a.start.start_of_interval_after(Zone::Local, now)
                - a.start.start_of_interval_containing(Zone::Local, now);
            let bytes = if a.rule == AccountingRule::Sum {
                a.max / 2
            } else {
                a.max
            };
            (bytes, len)
        });
    crate::dir::descriptor::DirAdvertise {
        dir_cache: config.dir_cache,
        ipv4_or_port,
        bandwidth_rate: config.bandwidth.rate,
        relay_bandwidth_rate: config.bandwidth.relay_rate,
        accounting,
    }
}

/// The IPv4 address the configuration gives: `Address` if it is IPv4, else an IPv4 ORPort
/// address (C `find_my_address`: configured address first, then the ORPort's). `None`: it
/// must be learned from the authorities.
pub fn configured_ipv4(config: &Config) -> Option<Ipv4Addr> {
    let configured = config.addresses.iter().find_map(|a| match a {
        AddressConfig::Ip(IpAddr::V4(v4)) => Some(*v4),
        _ => None,
    });
    let from_port = config
        .or_ports
        .iter()
        .filter(|p| !p.no_advertise)
        .find_map(|p| match p.address {
            Some(IpAddr::V4(v4)) if !v4.is_unspecified() => Some(v4),
            _ => None,
        });
    configured.or(from_port)
}

/// "Running Valid Fast Exit": the flag words of our consensus entry.
pub fn flag_words(flags: RelayFlags) -> String {
    flags.names().join(" ")
}

/// Directory state on the control plane.
pub struct Directory {
    worker: Option<DirWorker>,
    testing: bool,
    publish_enabled: bool,
    publish: PublishState,
    next_publish_check: Instant,
    upload_in_flight: Option<u64>,
    next_fetch: Instant,
    fetch_in_flight: bool,
    listing: Listing,
    /// What we last told the operator about our listing (to log changes only).
    reported: Option<Option<RelayFlags>>,
    fetch_failures: u32,
    started: SystemTime,
    cannot_publish_reported: Option<String>,
    /// SHA-1 digest of the descriptor we last submitted for upload (the `r` line's digest).
    published_digest: Option<[u8; 20]>,
    /// The descriptor last built, not yet handed to the directory server
    /// (`/tor/server/authority`, C tor's `router_get_my_descriptor`).
    built: Option<crate::dircache::store::Document>,
    /// The ORPort self-test (skipped with `AssumeReachable 1`).
    selftest: SelfTest,
    /// Our IPv4 address as a directory authority told it, when the torrc gives none.
    discovered: Option<Ipv4Addr>,
    next_learn_address: Instant,
    learn_in_flight: bool,
    /// Whether "no address to publish" was already said (C says it hourly at most).
    no_address_reported: bool,
    /// Accounting hibernation: the descriptor says `hibernating 1` (C router.c).
    hibernating: bool,
    /// Set when a consensus requires a protocol Fors lacks and C tor would exit: the
    /// control loop ends and the relay exits with status 1, saying this.
    fatal: Option<String>,
    /// Whether this relay serves the onion-service roles (`proto::circuit` `hs.rs`, across
    /// shards through `hs_cross.rs`), so the descriptor advertises `HSIntro=4-5 HSRend=2`
    /// and the protocol check counts them as supported.
    onion_service_roles: bool,
    /// The relay runs conflux at the exit (`proto::circuit` `conflux.rs`): advertise
    /// `Conflux=1` and count it as supported.
    conflux: bool,
}

impl Directory {
    /// `worker` is `None` when there is no authority to talk to.
    pub fn new(worker: Option<DirWorker>, config: &Config, now: Instant) -> Directory {
        Directory {
            worker,
            testing: config.testing_tor_network,
            publish_enabled: config.publish_server_descriptor,
            publish: PublishState::new(),
            next_publish_check: now,
            upload_in_flight: None,
            next_fetch: now,
            fetch_in_flight: false,
            listing: Listing::NoConsensus,
            reported: None,
            fetch_failures: 0,
            started: SystemTime::now(),
            cannot_publish_reported: None,
            published_digest: None,
            built: None,
            selftest: SelfTest::new(config.assume_reachable, now),
            discovered: None,
            next_learn_address: now,
            learn_in_flight: false,
            no_address_reported: false,
            hibernating: false,
            fatal: None,
            onion_service_roles: false,
            conflux: false,
        }
    }

    /// The relay serves the introduction- and rendezvous-point roles: advertise
    /// them, and do not report them missing against the consensus.
    pub fn set_onion_service_roles(&mut self, on: bool) {
        self.onion_service_roles = on;
    }

    /// The relay runs conflux at the exit: advertise `Conflux=1`.
    pub fn set_conflux(&mut self, on: bool) {
        self.conflux = on;
    }

    /// Why the relay must stop (a required protocol is missing), once that happened.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// `AssumeReachable` after a reload.
    pub fn set_assume_reachable(&mut self, assume: bool) {
        self.selftest.set_assume_reachable(assume);
    }

    /// The IPv4 address we would publish now: configured, else discovered.
    fn address(&self, config: &Config) -> Option<Ipv4Addr> {
        configured_ipv4(config).or(self.discovered)
    }

    /// An authority told us our address (C `relay_address_new_suggestion`, then
    /// `check_descriptor_ipaddress_changed` for the log lines).
    fn address_hint(
        &mut self,
        config: &Config,
        suggested: IpAddr,
        from: IpAddr,
        authority: &str,
        how: &str,
        now: Instant,
    ) {
        let v4 = match reach::accept_suggestion(suggested, from) {
            Ok(v4) => v4,
            Err(why) => {
                log_info!(
                    "Ignoring our address {suggested} as directory authority {authority} \
                     suggests it ({how}): {why:?}."
                );
                return;
            }
        };
        if configured_ipv4(config).is_some() {
            // A configured address wins, as in C (the suggestion cache is consulted last).
            return;
        }
        match self.discovered {
            Some(old) if old == v4 => return,
            Some(_) => log_notice!(
                "Your IP address seems to have changed to {v4} (source: {how} from directory \
                 authority {authority}). Updating."
            ),
            None => log_notice!(
                "Guessed our IP address as {v4} (source: {how} from directory authority \
                 {authority})."
            ),
        }
        self.discovered = Some(v4);
        self.no_address_reported = false;
        self.selftest.address_changed(now);
        self.publish.mark_dirty("IP address changed");
        // Not in this pass: the control plane first rebuilds the exit policy with the new
        // address (`ControlPlane::apply_discovered_address`).
        self.next_publish_check = now + Duration::from_secs(1);
    }

    /// Our address as an authority reported it, when the torrc gives none.
    pub fn discovered_address(&self) -> Option<Ipv4Addr> {
        self.discovered
    }

    /// Self-test and address discovery: what is due now.
    fn reachability_due(&mut self, now: Instant, config: &Config, keys: &RelayKeys, or_port: u16) {
        let Some(worker) = self.worker.as_ref() else {
            return;
        };
        let Some(ip) = self.address(config) else {
            // No address yet: ask an authority's ORPort (C `relay_addr_learn_from_dirauth`).
            if !self.learn_in_flight && now >= self.next_learn_address {
                self.learn_in_flight = worker.submit(DirJob::LearnAddress);
                self.next_learn_address = now
                    + if self.testing {
                        reach::EARLY_CHECK_INTERVAL
                    } else {
                        LEARN_ADDRESS_INTERVAL
                    };
            }
            return;
        };
        let target = SocketAddr::from((ip, or_port));
        if self.selftest.step(target, now) == SelfTestStep::Probe {
            if self.selftest.should_inform(target) {
                log_notice!(
                    "Now checking whether IPv4 ORPort {target} is reachable... (this may take \
                     up to {} minutes -- look for log messages indicating success)",
                    reach::COMPLAINT_AFTER.as_secs() / 60
                );
            }
            let expected = ExpectedPeer {
                rsa: keys.rsa_identity(),
                ed: Some(keys.ed25519_identity()),
            };
            if !worker.submit(DirJob::SelfTest {
                addr: target,
                expected,
            }) {
                self.selftest
                    .finished(target, None, Err("no worker".into()));
            }
        }
        if let Some(why) = self.selftest.complaint_due(target, now) {
            log_warn!(
                "Your server has not managed to confirm reachability for its ORPort(s) at \
                 {target}. Relays do not publish descriptors until their ORPort and DirPort \
                 are reachable. Please check your firewalls, ports, address, /etc/hosts file, \
                 etc. (last self-test: {why})"
            );
        }
    }

    /// Hibernation started or ended: republish with or without `hibernating 1`.
    pub fn set_hibernating(&mut self, hibernating: bool, now: Instant) {
        if hibernating != self.hibernating {
            self.hibernating = hibernating;
            if !hibernating {
                // C hibernate_end → reset_uptime: the published uptime counts from waking.
                self.started = SystemTime::now();
            }
            self.mark_dirty("hibernation state changed", now);
        }
    }

    pub fn has_authorities(&self) -> bool {
        self.worker.is_some()
    }

    /// Something in the descriptor changed: check at once.
    pub fn mark_dirty(&mut self, reason: &str, now: Instant) {
        self.publish.mark_dirty(reason);
        self.next_publish_check = now;
    }

    pub fn set_publish_enabled(&mut self, enabled: bool) {
        self.publish_enabled = enabled;
    }

    /// Next time something is due.
    pub fn next_due(&self, now: Instant) -> Instant {
        if self.worker.is_none() {
            return now + Duration::from_secs(3600);
        }
        let mut next = self.next_publish_check.min(self.next_fetch);
        if self.publish_enabled {
            if let Some(t) = self.selftest.next_due() {
                next = next.min(t);
            }
        }
        next
    }

    /// Runs due work; new consensus data is returned for the caller to hand to the shards.
    #[allow(clippy::too_many_arguments)]
    pub fn run_due(
        &mut self,
        now: Instant,
        wall: SystemTime,
        config: &Config,
        keys: &mut RelayKeys,
        policy: &ExitPolicy,
        or_port: u16,
        observed: u64,
        metrics: &MetricsRegistry,
    ) -> Option<NetworkSnapshotUpdate> {
        self.worker.as_ref()?;
        // C router.c: a hibernating relay reports no bandwidth ("unless we're hibernating").
        let observed = if self.hibernating { 0 } else { observed };
        let mut update = None;
        while let Some(r) = self.worker.as_ref().and_then(DirWorker::poll) {
            match r {
                DirResult::Uploaded(answers) => {
                    let published_at = self.upload_in_flight.take().unwrap_or(0);
                    self.uploaded(answers, published_at, observed, now, metrics)
                }
                DirResult::Consensus(c) => {
                    self.fetch_in_flight = false;
                    update = self.consensus(c, now, wall, keys, metrics);
                }
                DirResult::SelfTest { addr, result } => {
                    let current = self
                        .address(config)
                        .map(|ip| SocketAddr::from((ip, or_port)));
                    let failure = result.as_ref().err().cloned();
                    match self.selftest.finished(addr, current, result) {
                        SelfTestNews::Reachable => {
                            log_notice!(
                                "Self-testing indicates your ORPort {addr} is reachable from the \
                                 outside. Excellent.{}",
                                if self.publish_enabled {
                                    " Publishing server descriptor."
                                } else {
                                    ""
                                }
                            );
                            self.mark_dirty("ORPort found reachable", now);
                        }
                        // C is silent until its 20-minute warning; Fors says once at once why
                        // it is not publishing, then keeps the details at info level.
                        SelfTestNews::Failed { first: true } => log_notice!(
                            "ORPort self-test of {addr} failed: {}. Not publishing a descriptor \
                             until it passes; retrying every {} seconds.",
                            failure.unwrap_or_default(),
                            reach::EARLY_CHECK_INTERVAL.as_secs()
                        ),
                        SelfTestNews::Failed { first: false } => log_info!(
                            "ORPort self-test of {addr} failed again: {}.",
                            failure.unwrap_or_default()
                        ),
                        SelfTestNews::Nothing => {}
                    }
                }
                DirResult::AddressHint {
                    suggested,
                    from,
                    authority,
                    how,
                } => {
                    if how == "NETINFO" {
                        self.learn_in_flight = false;
                    }
                    self.address_hint(config, suggested, from, &authority, how, now);
                }
                DirResult::NoAddressHint(why) => {
                    self.learn_in_flight = false;
                    log_info!("Could not learn our address from an authority: {why}");
                }
            }
        }
        let worker = self.worker.as_ref()?;
        if !self.fetch_in_flight && now >= self.next_fetch {
            self.fetch_in_flight = worker.submit(DirJob::FetchConsensus);
            // Rescheduled when the answer comes.
            self.next_fetch = now + Duration::from_secs(3600);
        }
        if self.publish_enabled {
            self.reachability_due(now, config, keys, or_port);
        }
        if self.publish_enabled && self.upload_in_flight.is_none() && now >= self.next_publish_check
        {
            let uptime = wall.duration_since(self.started).map_or(0, |d| d.as_secs());
            self.publish.note_bandwidth(
                unix(wall),
                uptime,
                self.hibernating,
                observed,
                self.testing,
            );
            match self.publish.decide(unix(wall), self.listing) {
                PublishDecision::Wait { check_again_in } => {
                    self.next_publish_check = now + Duration::from_secs(check_again_in);
                }
                PublishDecision::Publish { .. } if !self.may_publish(config, or_port) => {
                    // C `decide_if_publishable_server`: not before the self-test passed; the
                    // test's success marks the descriptor dirty and brings us back here.
                    self.next_publish_check = now + Duration::from_secs(60);
                }
                PublishDecision::Publish { reason } => {
                    self.next_publish_check = now + Duration::from_secs(60);
                    let worker = self.worker.as_ref()?;
                    // FamilyId / FamilyKeyDirectory may have changed on SIGHUP.
                    let built = keys
                        .refresh_family_keys(&config.family_ids, &config.family_key_dir())
                        .map_err(|e| format!("family keys: {e}"))
                        .and_then(|_| {
                            self.build_upload(config, keys, policy, or_port, observed, uptime, wall)
                        });
                    match built {
                        Ok((request, text, digest)) => {
                            self.published_digest = Some(digest);
                            self.built = Some(crate::dircache::store::Document {
                                body: std::sync::Arc::from(text.as_bytes()),
                                published: unix(wall),
                            });
                            log_notice!("Uploading our descriptor ({reason}).");
                            let job = DirJob::Upload {
                                request: request.with_reason(&reason),
                                descriptor_text: text,
                                our_id: keys.rsa_identity(),
                            };
                            if worker.submit(job) {
                                self.upload_in_flight = Some(unix(wall));
                            }
                        }
                        Err(e) => {
                            if self.cannot_publish_reported.as_deref() != Some(e.as_str()) {
                                log_warn!("Not publishing a descriptor: {e}");
                                self.cannot_publish_reported = Some(e);
                            }
                            self.next_publish_check = now + self.upload_retry();
                        }
                    }
                }
            }
        }
        update
    }

    /// The descriptor built since the last call, for the directory server.
    pub fn take_built(&mut self) -> Option<crate::dircache::store::Document> {
        self.built.take()
    }

    /// Whether the address is known and the self-test allows publishing it.
    fn may_publish(&mut self, config: &Config, or_port: u16) -> bool {
        match self.address(config) {
            Some(ip) => self
                .selftest
                .allows_publishing(SocketAddr::from((ip, or_port))),
            None => {
                if !self.no_address_reported {
                    // C `relay_find_addr_to_publish`'s notice.
                    log_notice!(
                        "Unable to find IPv4 address for ORPort {or_port}. You might want to \
                         specify IPv6Only to it or set an explicit address or set Address."
                    );
                    self.no_address_reported = true;
                }
                false
            }
        }
    }

    fn upload_retry(&self) -> Duration {
        if self.testing {
            UPLOAD_RETRY_TESTING
        } else {
            UPLOAD_RETRY_PUBLIC
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_upload(
        &self,
        config: &Config,
        keys: &RelayKeys,
        policy: &ExitPolicy,
        or_port: u16,
        observed: u64,
        uptime: u64,
        wall: SystemTime,
    ) -> Result<(UploadRequest, String, [u8; 20]), String> {
        let mut params = match (configured_ipv4(config), self.discovered) {
            // A discovered address stands in for the missing `Address` line.
            (None, Some(ip)) => {
                let mut c = config.clone();
                c.addresses.push(AddressConfig::Ip(IpAddr::V4(ip)));
                descriptor_params(&c, policy, or_port, observed, uptime, wall)?
            }
            _ => descriptor_params(config, policy, or_port, observed, uptime, wall)?,
        };
        // Minted afresh for every descriptor, so they never near their 30-day expiry.
        params.family_certs = keys.family_certs(wall);
        params.hibernating = self.hibernating;
        if self.onion_service_roles {
            params.advertise_onion_service_roles();
        }
        if self.conflux {
            params.advertise_conflux();
        }
        let ei = build_extra_info(keys, &params.nickname, wall)
            .map_err(|e| format!("extra-info: {e}"))?;
        let desc = build_descriptor(keys, &params, Some(&ei)).map_err(|e| e.to_string())?;
        // Self-check: an authority would drop a descriptor failing this without telling us.
        check_descriptor(&desc.text, Some(wall))
            .map_err(|e| format!("our own descriptor fails the authorities' checks: {e}"))?;
        let text = desc.text.clone();
        Ok((UploadRequest::new(&desc, Some(&ei)), text, desc.digest))
    }

    fn uploaded(
        &mut self,
        answers: Vec<(crate::dir::client::DirEndpoint, UploadAnswer)>,
        published_at: u64,
        observed: u64,
        now: Instant,
        metrics: &MetricsRegistry,
    ) {
        let mut stored = 0;
        for (a, answer) in &answers {
            let name = &a.nickname;
            match answer {
                UploadAnswer::Confirmed(o) => {
                    stored += 1;
                    log_notice!("Authority {name} ({}): descriptor {o}.", a.dir_addr);
                }
                // As a C tor relay, a 200 is success: the authority keeps an equivalent
                // descriptor of ours, so uploading again would change nothing.
                UploadAnswer::Kept(o) => {
                    stored += 1;
                    log_notice!(
                        "Authority {name} ({}): {o}: it keeps the descriptor it has for us, \
                         which differs from this one only cosmetically.",
                        a.dir_addr
                    );
                }
                UploadAnswer::NotStored(o, why) => log_warn!(
                    "Authority {name} ({}) answered \"{o}\" but does not serve our descriptor \
                     ({why}); its log has the reason.",
                    a.dir_addr
                ),
                UploadAnswer::Rejected(o) => {
                    log_warn!("Authority {name} ({}): descriptor {o}", a.dir_addr)
                }
                UploadAnswer::Failed(e) => {
                    log_warn!("Could not upload our descriptor to authority {name}: {e}")
                }
            }
        }
        let failed = answers.len() - stored;
        metrics
            .relay
            .descriptor_uploads_accepted
            .fetch_add(stored as u64, Ordering::Relaxed);
        metrics
            .relay
            .descriptor_uploads_failed
            .fetch_add(failed as u64, Ordering::Relaxed);
        if stored > 0 {
            self.publish.published(published_at, observed);
            self.cannot_publish_reported = None;
            log_notice!(
                "Our descriptor is stored by {stored} of {} authorities.",
                answers.len()
            );
        } else {
            self.next_publish_check = now + self.upload_retry();
        }
    }

    fn consensus(
        &mut self,
        result: Result<Box<Consensus>, String>,
        now: Instant,
        wall: SystemTime,
        keys: &mut RelayKeys,
        metrics: &MetricsRegistry,
    ) -> Option<NetworkSnapshotUpdate> {
        let c = match result {
            Err(e) => {
                metrics
                    .relay
                    .consensus_fetches_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.fetch_failures += 1;
                if self.fetch_failures == 1 {
                    log_warn!("Fetching the consensus failed: {e} (retrying)");
                } else {
                    log_info!("Fetching the consensus failed again: {e}");
                }
                self.next_fetch = now
                    + if self.testing {
                        CONSENSUS_RETRY_TESTING
                    } else {
                        CONSENSUS_RETRY_PUBLIC
                    };
                return None;
            }
            Ok(c) => c,
        };
        metrics
            .relay
            .consensus_fetches_ok
            .fetch_add(1, Ordering::Relaxed);
        self.fetch_failures = 0;
        // Next fetch once this one is no longer fresh, within bounds.
        let fresh_for = Duration::from_secs(c.fresh_until.saturating_sub(unix(wall)));
        let (min, max) = if self.testing {
            (CONSENSUS_RETRY_TESTING, Duration::from_secs(60))
        } else {
            (CONSENSUS_RETRY_PUBLIC, CONSENSUS_REFRESH_PUBLIC)
        };
        self.next_fetch = now + fresh_for.clamp(min, max);

        let ours = c.is_listed(&keys.rsa_identity());
        let self_status = ours
            .zip(self.published_digest.as_ref())
            .map(|(rs, d)| Arc::<str>::from(rs.ns_entry(d)));
        let flags = ours.map(|rs| rs.flags);
        self.listing = match ours {
            None => Listing::NotListed,
            Some(rs) => Listing::Listed {
                stale_desc: rs.flags.contains(RelayFlags::STALE_DESC),
                consensus_valid_after: c.valid_after,
            },
        };
        metrics
            .relay
            .listed_in_consensus
            .store(u64::from(ours.is_some()), Ordering::Relaxed);
        self.check_protocols(&c);
        let bits = flags.map_or(0, |f| u64::from(f.0));
        metrics.relay.consensus_flags.store(bits, Ordering::Relaxed);
        if self.reported != Some(flags) {
            match flags {
                Some(f) => log_notice!(
                    "Fors is listed in the consensus (valid-after {}) as {}.",
                    crate::dir::isotime::format_secs(c.valid_after),
                    flag_words(f)
                ),
                None => log_notice!(
                    "Fors is not listed in the consensus (valid-after {}, {} relays).",
                    crate::dir::isotime::format_secs(c.valid_after),
                    c.relays.len()
                ),
            }
            self.reported = Some(flags);
        }
        // Onion-key schedule follows the consensus (C `get_onion_key_rotation_days`).
        let onion = OnionKeyRotation::from_consensus_days(
            Some(i64::from(c.params.onion_key_rotation_days)),
            Some(i64::from(c.params.onion_key_grace_period_days)),
        );
        if keys.params().onion != onion {
            keys.set_params(KeyParams {
                onion,
                ..*keys.params()
            });
        }
        let relays: BTreeMap<_, _> = c
            .relays
            .iter()
            .map(|rs| {
                let mut addrs = vec![SocketAddr::from((rs.address, rs.or_port))];
                addrs.extend(rs.extra_addresses.iter().copied());
                (
                    rs.rsa_identity,
                    KnownRelay {
                        rsa_identity: rs.rsa_identity,
                        ed25519_identity: None,
                        or_addresses: addrs,
                    },
                )
            })
            .collect();
        Some(NetworkSnapshotUpdate {
            consensus_params: c.params.raw.clone(),
            known_relays: Arc::new(relays),
            self_status,
        })
    }
}

impl Directory {
    /// C `handle_missing_protocol_warning` for a relay, on every new consensus: a missing
    /// recommended protocol is a warning; a missing required one is an error, and C tor
    /// exits. Fors exits too, except for the onion-service roles it does not implement yet
    /// (issue #11: `HSIntro`, `HSRend`), which it names at error level on every consensus
    /// and keeps running — stopping would take a working exit off the network over a role
    /// the authorities do not make it play.
    fn check_protocols(&mut self, c: &Consensus) {
        use crate::dir::protover::{check_relay_protocols, ProtoList, ProtocolCheck};
        let mut ours = if self.onion_service_roles {
            crate::dir::descriptor::with_onion_service_roles(SUPPORTED_PROTOCOLS)
        } else {
            SUPPORTED_PROTOCOLS.to_owned()
        };
        if self.conflux {
            ours = crate::dir::descriptor::with_protocols(&ours, &["Conflux=1"]);
        }
        let supported = ProtoList::parse(&ours).expect("our own list parses");
        let check = check_relay_protocols(
            &supported,
            c.required_relay_protocols.as_deref(),
            c.recommended_relay_protocols.as_deref(),
            c.valid_after,
            APPROX_RELEASE_DATE,
        );
        match check {
            ProtocolCheck::Fine => {}
            ProtocolCheck::RecommendedMissing(m) => log_warn!(
                "At least one protocol listed as recommended in the consensus is not supported \
                 by this version of Fors. You should upgrade. This version of Fors will \
                 eventually stop working as a relay on the Tor network. The missing protocols \
                 are: {m}"
            ),
            ProtocolCheck::RequiredMissing(m) => {
                let line = format!(
                    "At least one protocol listed as required in the consensus is not \
                     supported by this version of Fors. You should upgrade. This version of \
                     Fors will not work as a relay on the Tor network. The missing protocols \
                     are: {m}"
                );
                log_err!("{line}");
                self.fatal = Some(line);
            }
        }
    }
}

/// Every protocol version Fors implements (C `protover_get_supported_protocols`), whether
/// or not this configuration advertises it (`DirCache`/`HSDir` only with the cache on).
pub const SUPPORTED_PROTOCOLS: &str = crate::dir::descriptor::DIR_CACHE_PROTO;

/// C `APPROX_RELEASE_DATE` (Unix seconds): a consensus valid before this release is not
/// judged, since what it requires may have changed since. 2026-12-01 00:00 UTC.
pub const APPROX_RELEASE_DATE: u64 = 1_796_083_200;

/// Consensus data for the next [`NetworkSnapshot`].
pub struct NetworkSnapshotUpdate {
    pub consensus_params: BTreeMap<String, i32>,
    pub known_relays: Arc<BTreeMap<crate::crypto::ids::RsaIdentity, KnownRelay>>,
    pub self_status: Option<Arc<str>>,
}

impl NetworkSnapshotUpdate {
    pub fn apply(self, old: &NetworkSnapshot) -> NetworkSnapshot {
        NetworkSnapshot {
            consensus_params: self.consensus_params,
            known_relays: self.known_relays,
            self_status: self.self_status,
            ..old.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, MemFs};
    use crate::relay::setup::build_exit_policy;

    /// The private network's consensus (C tor 0.4.9 authorities) with its relay protocol
    /// lines replaced by `required` / `recommended`.
    fn consensus_requiring(required: &str, valid_after: &str) -> Consensus {
        let text = include_str!("../dircache/testdata/consensus-ns.txt");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("required-relay-protocols ") {
                    format!("required-relay-protocols {required}")
                } else if l.starts_with("valid-after ") {
                    format!("valid-after {valid_after}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        Consensus::parse(&text).expect("test consensus parses")
    }

    #[test]
    fn missing_required_protocols_stop_the_relay_as_in_c_tor_except_the_onion_roles() {
        let config = cfg("ORPort 9001\n");
        let live = "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=2 \
                    Link=4-5 LinkAuth=3 Microdesc=2 Relay=2-4";
        // A relay not serving the onion-service roles misses HSIntro/HSRend: C tor exits,
        // and so does Fors.
        let mut d = Directory::new(None, &config, Instant::now());
        d.check_protocols(&consensus_requiring(live, "2026-12-06 14:20:00"));
        let why = d.fatal().expect("missing HSIntro/HSRend is fatal");
        assert!(why.ends_with("are: HSIntro=4-5 HSRend=2"), "{why}");
        let mut d = Directory::new(None, &config, Instant::now());
        let more = format!("{live} Padding=3");
        d.check_protocols(&consensus_requiring(&more, "2026-12-06 14:20:00"));
        let why = d.fatal().expect("a missing Padding=3 is fatal");
        assert!(why.contains("HSIntro=4-5 HSRend=2 Padding=3"), "{why}");
        // A consensus older than this release is not judged (C `APPROX_RELEASE_DATE`).
        let mut d = Directory::new(None, &config, Instant::now());
        d.check_protocols(&consensus_requiring(&more, "2026-11-30 23:00:00"));
        assert_eq!(d.fatal(), None);
    }

    /// A relay serving the onion-service roles: the live required list is met, and
    /// a missing `Padding=3` (a version Fors lacks) alone is what stops it.
    #[test]
    fn a_relay_serving_the_onion_roles_meets_the_live_required_list() {
        let config = cfg("ORPort 9001\n");
        let live = "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=2 \
                    Link=4-5 LinkAuth=3 Microdesc=2 Relay=2-4";
        let mut d = Directory::new(None, &config, Instant::now());
        d.set_onion_service_roles(true);
        d.check_protocols(&consensus_requiring(live, "2026-12-06 14:20:00"));
        assert_eq!(d.fatal(), None);
        d.check_protocols(&consensus_requiring(
            &format!("{live} Padding=3"),
            "2026-12-06 14:20:00",
        ));
        let why = d.fatal().expect("a missing Padding=3 is fatal");
        assert!(why.ends_with("are: Padding=3"), "{why}");
    }

    fn cfg(extra: &str) -> Config {
        parse_str(
            &MemFs::default(),
            "torrc",
            &format!("DataDirectory /tmp/x\nContactInfo op@example.org\n{extra}"),
        )
        .unwrap()
        .0
    }

    /// C `get_first_advertised_port_by_type_af`: the published IPv4 ORPort is the first
    /// advertised IPv4 line, not the first listener.
    #[test]
    fn published_orport_is_the_first_advertised_ipv4_line() {
        // The manual's port-forwarding setup: advertise 443, listen on 9090.
        let c =
            cfg("Address 203.0.113.5\nORPort 443 NoListen\nORPort 127.0.0.1:9090 NoAdvertise\n");
        let (policy, _) = build_exit_policy(&c).unwrap();
        let p = descriptor_params(&c, &policy, 9090, 0, 0, SystemTime::now()).unwrap();
        assert_eq!(p.or_port, 443);
        // An IPv6 line first: the IPv4 line's own port, and the IPv6 line's.
        let c = cfg("Address 203.0.113.5\nORPort [::1]:9002\nORPort 9001\n");
        let p = descriptor_params(&c, &policy, 9002, 0, 0, SystemTime::now()).unwrap();
        assert_eq!(p.or_port, 9001);
        assert_eq!(p.ipv6_or_address.unwrap().port(), 9002);
    }

    #[test]
    fn params_from_config() {
        let c = cfg(
            "ORPort 127.0.0.1:9001\nORPort [::1]:9002 NoListen\nNickname Fors1\nRelayBandwidthRate 1 MB\n\
             ExitPolicy accept *:443,reject *:*\nIPv6Exit 1\nMyFamily $0123456789ABCDEF0123456789ABCDEF01234567\n",
        );
        let (policy, _) = build_exit_policy(&c).unwrap();
        let p = descriptor_params(&c, &policy, 9001, 5000, 60, SystemTime::now()).unwrap();
        assert_eq!(p.nickname, "Fors1");
        assert_eq!(p.address, Ipv4Addr::LOCALHOST);
        assert_eq!(p.or_port, 9001);
        assert_eq!(p.ipv6_or_address.unwrap().port(), 9002);
        assert_eq!(
            (p.bandwidth.average, p.bandwidth.burst, p.bandwidth.observed),
            (1 << 20, 1 << 20, 5000)
        );
        assert_eq!(p.contact.as_deref(), Some("op@example.org"));
        assert_eq!(p.family, ["$0123456789ABCDEF0123456789ABCDEF01234567"]);
        assert!(
            p.policy.iter().any(|l| l == "accept *:443"),
            "{:?}",
            p.policy
        );
        assert_eq!(p.policy.last().map(String::as_str), Some("reject *:*"));
        assert_eq!(p.ipv6_policy.as_deref(), Some("accept 443"));
    }

    #[test]
    fn no_address_is_a_plain_error() {
        let c = cfg("ORPort 9001\n");
        let (policy, _) = build_exit_policy(&c).unwrap();
        let e = descriptor_params(&c, &policy, 9001, 0, 0, SystemTime::now()).unwrap_err();
        assert!(e.contains("set `Address`"), "{e}");
        let c = cfg("ORPort 9001\nAddress 192.0.2.7\n");
        let p = descriptor_params(&c, &policy, 9001, 0, 0, SystemTime::now()).unwrap();
        assert_eq!(p.address, "192.0.2.7".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn flag_words_read_like_the_consensus() {
        let mut f = RelayFlags::default();
        for n in ["Running", "Valid", "Fast", "Exit"] {
            f.insert(RelayFlags::from_name(n));
        }
        assert_eq!(flag_words(f), "Exit Fast Running Valid");
    }
}
