//! The sans-IO resolver: coalesces lookups per name, keeps queries in flight within fixed
//! bounds, retries across nameservers, and caches answers.
//!
//! Driving it (the shard's loop):
//! 1. [`Resolver::resolve`] → `Ready` (literal, cache) or `Pending(handle)`;
//! 2. send every [`Resolver::poll_transmit`] datagram from one UDP socket;
//! 3. pass received datagrams to [`Resolver::handle_datagram`], and call
//!    [`Resolver::handle_timeout`] once [`Resolver::next_timeout`] has passed; both yield
//!    [`Completion`]s, which must be consumed.
//!
//! Kaminsky-style spoofing defence here is the random 16-bit id, the exact question echo
//! (optionally with 0x20 case) and the source address check; the shard adds source-port
//! randomness by choosing its socket's port at random.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::RngCore;

pub use super::answer::{Answer, DnsFailure, FailureCause, Resolution};
use super::answer::{Family, Value};
use super::cache::Cache;
use super::name::{classify_host, DnsName, HostRequest, NameError};
use super::resolv_conf::ResolvConf;
use super::ttl::MAX_DNS_ENTRY_AGE;
use super::wire::{self, Expected, Outcome, ParseError, QueryBuf};

/// Tuning and bounds. Every table is sized from these at construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Tried in order, round-robin on retries.
    pub nameservers: Vec<SocketAddr>,
    /// Wait per try.
    pub timeout: Duration,
    /// Rounds over all nameservers before a timeout is final (glibc's `attempts`).
    pub attempts: u8,
    /// Names being looked up at once.
    pub max_inflight: usize,
    /// Streams waiting on one name.
    pub max_waiters_per_query: usize,
    /// Names in the cache.
    pub cache_entries: usize,
    /// Upper bound on how long an answer is cached and on the TTL reported (C: 3 h).
    pub max_cache_ttl: u32,
    /// Upper bound on how long NXDOMAIN/NODATA is cached (also used when no SOA came back).
    pub negative_ttl: u32,
    /// `ServerDNSRandomizeCase` (0x20): randomise question case and require an exact echo.
    pub randomize_case: bool,
    /// `ServerDNSAllowNonRFC953Hostnames`.
    pub allow_non_rfc953: bool,
    /// EDNS(0) UDP payload size to advertise; `None` sends no OPT record.
    pub edns_udp_payload: Option<u16>,
}

impl ResolverConfig {
    /// Defaults: C tor's exit DNS settings (consensus `exit_dns_timeout` 1 s,
    /// `exit_dns_num_attempts` 2, `ServerDNSRandomizeCase` 1) and bounds for one shard.
    pub fn new(nameservers: Vec<SocketAddr>) -> ResolverConfig {
        ResolverConfig {
            nameservers,
            timeout: Duration::from_secs(1),
            attempts: 2,
            max_inflight: 1024,
            max_waiters_per_query: 64,
            cache_entries: 4096,
            max_cache_ttl: MAX_DNS_ENTRY_AGE,
            negative_ttl: 60,
            randomize_case: true,
            allow_non_rfc953: false,
            edns_udp_payload: Some(1232),
        }
    }

    /// Nameservers from resolv.conf; its `options timeout:`/`attempts:` replace the defaults.
    pub fn from_resolv_conf(conf: &ResolvConf) -> ResolverConfig {
        let mut c = ResolverConfig::new(conf.nameservers.clone());
        if let Some(t) = conf.timeout {
            c.timeout = t;
        }
        if let Some(a) = conf.attempts {
            c.attempts = a;
        }
        c
    }
}

/// Which lookup a stream needs: BEGIN resolves to connect, RESOLVE may also ask for PTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Connect,
    Resolve,
}

/// Address families to look up for a forward name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyWanted {
    Ipv4,
    Ipv6,
    /// Both, as C does for an `IPv6Exit`; the stream picks by policy and BEGIN flags.
    Both,
}

impl FamilyWanted {
    fn mask(self) -> u8 {
        match self {
            FamilyWanted::Ipv4 => Family::V4.bit(),
            FamilyWanted::Ipv6 => Family::V6.bit(),
            FamilyWanted::Both => Family::V4.bit() | Family::V6.bit(),
        }
    }
}

/// Identifies one waiting stream's lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryHandle(u64);

impl QueryHandle {
    fn slot(self) -> usize {
        (self.0 >> 32) as usize
    }
}

/// What [`Resolver::resolve`] gives back.
// Names are held inline on purpose: no allocation per answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Answered from a literal address or the cache.
    Ready(Resolution),
    /// A [`Completion`] with this handle will follow.
    Pending(QueryHandle),
}

/// A finished lookup for one waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub handle: QueryHandle,
    pub resolution: Resolution,
}

/// Why a lookup was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("refused hostname: {0}")]
    Name(#[from] NameError),
    #[error("too many names being resolved")]
    TooManyInFlight,
    #[error("too many streams waiting on this name")]
    TooManyWaiters,
    #[error("no nameserver configured")]
    NoNameservers,
}

impl Refusal {
    /// Bad names are permanent; being out of room is transient.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Refusal::Name(_))
    }
    /// The RESOLVED answer type (tor-spec §6.4).
    pub fn resolved_type(&self) -> u8 {
        if self.is_transient() {
            super::RESOLVED_TYPE_ERROR_TRANSIENT
        } else {
            super::RESOLVED_TYPE_ERROR
        }
    }
}

/// Counters for every bound and every way a datagram can be dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsMetrics {
    pub lookups: u64,
    pub literals: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Lookups that joined a query already in flight.
    pub coalesced: u64,
    pub refused_name: u64,
    pub refused_inflight_full: u64,
    pub refused_waiters_full: u64,
    pub refused_no_nameserver: u64,
    /// Waiters that went away (their stream closed) before the answer.
    pub cancelled: u64,
    /// Names whose queries were dropped because their last waiter went away; a late
    /// answer then counts as `ignored_unknown_id`.
    pub abandoned: u64,
    /// Datagrams handed out by `poll_transmit`.
    pub queries_sent: u64,
    pub retransmits: u64,
    pub responses_accepted: u64,
    pub ignored_unknown_id: u64,
    pub ignored_wrong_source: u64,
    pub ignored_question_mismatch: u64,
    pub ignored_malformed: u64,
    pub answers_found: u64,
    pub failures_permanent: u64,
    pub failures_transient: u64,
    /// Failures by cause (one per record type asked): NXDOMAIN, no record of the type,
    /// SERVFAIL or another error RCODE from every nameserver tried.
    pub failed_nxdomain: u64,
    pub failed_nodata: u64,
    pub failed_servfail: u64,
    pub timeouts: u64,
    pub truncated: u64,
    pub id_exhausted: u64,
    pub cache_evictions: u64,
    /// Gauges at the time of the snapshot.
    pub inflight: u64,
    pub cache_len: u64,
    /// The bounds behind those two gauges (`max_inflight`, `cache_entries`).
    pub inflight_limit: u64,
    pub cache_limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    Idle,
    Queued,
    InFlight,
    Done,
}

/// One DNS query (one record type) for a pending name.
#[derive(Clone, Copy)]
struct Sub {
    state: SubState,
    query: QueryBuf,
    /// Transmissions queued so far; also picks the nameserver.
    tries: u8,
    /// Nameservers (by index) this query was sent to; replies only count from these.
    sent_mask: u16,
    deadline: Instant,
}

struct Waiter {
    handle: QueryHandle,
    wants: u8,
}

struct Pending {
    active: bool,
    name: DnsName,
    subs: [Sub; 3],
    results: Resolution,
    waiters: Vec<Waiter>,
}

impl Pending {
    fn busy(&self) -> bool {
        self.subs
            .iter()
            .any(|s| matches!(s.state, SubState::Queued | SubState::InFlight))
    }
}

/// The resolver. `R` supplies query ids, 0x20 case and nothing else.
pub struct Resolver<R> {
    config: ResolverConfig,
    rng: R,
    slots: Vec<Pending>,
    free: Vec<u32>,
    by_name: HashMap<DnsName, u32>,
    by_id: HashMap<u16, (u32, Family)>,
    transmit: VecDeque<(u32, Family)>,
    completions: Vec<Completion>,
    cache: Cache,
    next_handle: u32,
    max_tries: u8,
    metrics: DnsMetrics,
}

impl<R: RngCore> Resolver<R> {
    pub fn new(mut config: ResolverConfig, rng: R, now: Instant) -> Resolver<R> {
        // `sent_mask` has one bit per nameserver.
        config.nameservers.truncate(16);
        let n = config.max_inflight;
        let idle = Sub {
            state: SubState::Idle,
            query: QueryBuf::default(),
            tries: 0,
            sent_mask: 0,
            deadline: now,
        };
        let slots = (0..n)
            .map(|_| Pending {
                active: false,
                name: DnsName::from_bytes(b"").expect("empty name fits"),
                subs: [idle; 3],
                results: Resolution::NONE,
                waiters: Vec::with_capacity(config.max_waiters_per_query),
            })
            .collect();
        let ns = config.nameservers.len();
        let max_tries = (config.attempts.max(1) as usize * ns.max(1)).min(255) as u8;
        Resolver {
            slots,
            free: (0..n as u32).rev().collect(),
            by_name: HashMap::with_capacity(n),
            by_id: HashMap::with_capacity(2 * n),
            transmit: VecDeque::with_capacity(3 * n),
            completions: Vec::with_capacity(config.max_waiters_per_query.max(16)),
            cache: Cache::new(config.cache_entries),
            next_handle: 0,
            max_tries,
            metrics: DnsMetrics::default(),
            rng,
            config,
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// A snapshot of the counters and gauges.
    pub fn metrics(&self) -> DnsMetrics {
        let mut m = self.metrics;
        m.inflight = self.by_name.len() as u64;
        m.cache_len = self.cache.len() as u64;
        m.inflight_limit = self.config.max_inflight as u64;
        m.cache_limit = self.config.cache_entries as u64;
        m.cache_evictions = self.cache.stats.evictions + self.cache.stats.expired_evictions;
        m
    }

    /// Starts (or joins, or answers from cache) a lookup of `host` for one stream.
    pub fn resolve(
        &mut self,
        host: &[u8],
        purpose: Purpose,
        family: FamilyWanted,
        now: Instant,
    ) -> Result<Lookup, Refusal> {
        self.metrics.lookups += 1;
        let request = classify_host(
            host,
            purpose == Purpose::Resolve,
            self.config.allow_non_rfc953,
        )
        .inspect_err(|_| self.metrics.refused_name += 1)?;
        let (name, wants) = match request {
            HostRequest::Literal(addr) => {
                self.metrics.literals += 1;
                return Ok(Lookup::Ready(Resolution::literal(addr)));
            }
            HostRequest::Forward(name) => (name, family.mask()),
            HostRequest::Reverse { name, .. } => (name, Family::Ptr.bit()),
        };

        let mut cached = Resolution::NONE;
        let mut missing = 0u8;
        for fam in Family::ALL {
            if wants & fam.bit() == 0 {
                continue;
            }
            match self.cache.get(&name, fam, now) {
                Some(a) => cached.set(fam, a),
                None => missing |= fam.bit(),
            }
        }
        if missing == 0 {
            self.metrics.cache_hits += 1;
            return Ok(Lookup::Ready(cached));
        }
        self.metrics.cache_misses += 1;
        if self.config.nameservers.is_empty() {
            self.metrics.refused_no_nameserver += 1;
            return Err(Refusal::NoNameservers);
        }

        let slot = match self.by_name.get(&name) {
            Some(&s) => {
                if self.slots[s as usize].waiters.len() >= self.config.max_waiters_per_query {
                    self.metrics.refused_waiters_full += 1;
                    return Err(Refusal::TooManyWaiters);
                }
                self.metrics.coalesced += 1;
                s
            }
            None => {
                let Some(s) = self.free.pop() else {
                    self.metrics.refused_inflight_full += 1;
                    return Err(Refusal::TooManyInFlight);
                };
                let p = &mut self.slots[s as usize];
                p.active = true;
                p.name = name;
                p.results = Resolution::NONE;
                for sub in &mut p.subs {
                    sub.state = SubState::Idle;
                }
                self.by_name.insert(name, s);
                s
            }
        };

        for fam in Family::ALL {
            if wants & fam.bit() == 0 || self.slots[slot as usize].results.is_set(fam) {
                continue;
            }
            if missing & fam.bit() == 0 {
                // Fresh in the cache: share it with the other waiters on this name.
                let a = match fam {
                    Family::V4 => cached.ipv4.map_value(|v| Value::Addr(IpAddr::V4(v))),
                    Family::V6 => cached.ipv6.map_value(|v| Value::Addr(IpAddr::V6(v))),
                    Family::Ptr => cached.hostname.map_value(Value::Host),
                };
                self.slots[slot as usize].results.set(fam, a);
            } else if self.slots[slot as usize].subs[fam as usize].state == SubState::Idle {
                self.launch(slot, fam, now);
            }
        }

        let p = &self.slots[slot as usize];
        if Family::ALL
            .iter()
            .all(|&f| wants & f.bit() == 0 || p.results.is_set(f))
        {
            // Everything was already known (or failed at launch): no need to wait.
            let r = p.results.project(wants);
            self.maybe_free(slot);
            return Ok(Lookup::Ready(r));
        }
        let handle = QueryHandle(((slot as u64) << 32) | self.next_handle as u64);
        self.next_handle = self.next_handle.wrapping_add(1);
        self.slots[slot as usize]
            .waiters
            .push(Waiter { handle, wants });
        Ok(Lookup::Pending(handle))
    }

    /// Forgets a waiter (its stream closed). While others wait on the name its queries run
    /// on; once nobody waits they are dropped and the slot is freed at once, so streams
    /// that close mid-lookup cannot hold the in-flight bound until the timeout. A late
    /// answer to a dropped query no longer matches an id and is ignored.
    pub fn cancel(&mut self, handle: QueryHandle) -> bool {
        let slot = handle.slot();
        let Some(p) = self.slots.get_mut(slot) else {
            return false;
        };
        let Some(i) = p.waiters.iter().position(|w| w.handle == handle) else {
            return false;
        };
        p.waiters.swap_remove(i);
        self.metrics.cancelled += 1;
        if p.waiters.is_empty() && p.busy() {
            for sub in &mut p.subs {
                if matches!(sub.state, SubState::Queued | SubState::InFlight) {
                    self.by_id.remove(&sub.query.id());
                    // A `transmit` entry left behind is stale: skipped as not `Queued`.
                    sub.state = SubState::Idle;
                }
            }
            self.metrics.abandoned += 1;
            self.maybe_free(slot as u32);
        }
        true
    }

    /// The next datagram to send, and where. Send it before calling again.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        let n = self.config.nameservers.len();
        let mut picked = None;
        while let Some((slot, fam)) = self.transmit.pop_front() {
            let p = &mut self.slots[slot as usize];
            let sub = &mut p.subs[fam as usize];
            if !p.active || sub.state != SubState::Queued || n == 0 {
                continue; // stale entry
            }
            sub.state = SubState::InFlight;
            let ns = (sub.tries as usize - 1) % n;
            sub.sent_mask |= 1 << ns;
            self.metrics.queries_sent += 1;
            picked = Some((slot, fam, ns));
            break;
        }
        let (slot, fam, ns) = picked?;
        let query = &self.slots[slot as usize].subs[fam as usize].query;
        Some((self.config.nameservers[ns], query.as_bytes()))
    }

    /// A datagram arrived on the resolver socket. Datagrams that do not answer one of our
    /// queries exactly are counted and dropped.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> std::vec::Drain<'_, Completion> {
        self.completions.clear();
        self.on_datagram(from, bytes, now);
        self.completions.drain(..)
    }

    fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let Some(id) = wire::peek_id(bytes) else {
            self.metrics.ignored_malformed += 1;
            return;
        };
        let Some(&(slot, fam)) = self.by_id.get(&id) else {
            self.metrics.ignored_unknown_id += 1;
            return;
        };
        let from = canonical(from);
        let ns = self
            .config
            .nameservers
            .iter()
            .position(|&a| canonical(a) == from);
        let p = &self.slots[slot as usize];
        let sub = &p.subs[fam as usize];
        match ns {
            Some(i) if sub.sent_mask & (1 << i) != 0 => {}
            _ => {
                self.metrics.ignored_wrong_source += 1;
                return;
            }
        }
        let expected = Expected::for_query(&sub.query, fam.qtype(), self.config.randomize_case);
        let outcome = match wire::parse_response(bytes, &expected) {
            Ok(o) => o,
            Err(ParseError::QuestionMismatch) => {
                self.metrics.ignored_question_mismatch += 1;
                return;
            }
            Err(_) => {
                self.metrics.ignored_malformed += 1;
                return;
            }
        };
        self.metrics.responses_accepted += 1;
        let cap = self.config.max_cache_ttl;
        let neg_cap = self.config.negative_ttl.min(cap);
        let permanent = |cause, neg: Option<u32>| {
            let life = neg.map_or(neg_cap, |t| t.min(neg_cap));
            (Answer::Failed(DnsFailure { cause }), life)
        };
        let (answer, lifetime) = match outcome {
            Outcome::Address { addr, ttl } => {
                let ttl = ttl.min(cap);
                let value = Value::Addr(addr);
                (Answer::Found { value, ttl }, ttl)
            }
            Outcome::Hostname { name, ttl } => {
                let ttl = ttl.min(cap);
                let value = Value::Host(name);
                (Answer::Found { value, ttl }, ttl)
            }
            Outcome::NxDomain { negative_ttl } => permanent(FailureCause::NxDomain, negative_ttl),
            Outcome::NoData { negative_ttl } => permanent(FailureCause::NoData, negative_ttl),
            Outcome::ServerFailure { rcode } => {
                // Another nameserver may do better (as glibc and libevent do).
                let all = (1u16 << self.config.nameservers.len().min(16)) - 1;
                if sub.sent_mask & all != all && sub.tries < self.max_tries {
                    self.queue_send(slot, fam, now);
                    return;
                }
                let f = DnsFailure {
                    cause: FailureCause::ServerFailure { rcode },
                };
                (Answer::Failed(f), 0)
            }
            Outcome::Truncated => {
                self.metrics.truncated += 1;
                let f = DnsFailure {
                    cause: FailureCause::Truncated,
                };
                (Answer::Failed(f), 0)
            }
        };
        self.finish(slot, fam, answer, lifetime, now);
    }

    /// Retries and gives up on queries whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) -> std::vec::Drain<'_, Completion> {
        self.completions.clear();
        for slot in 0..self.slots.len() as u32 {
            if !self.slots[slot as usize].active {
                continue;
            }
            for fam in Family::ALL {
                let sub = &self.slots[slot as usize].subs[fam as usize];
                if !matches!(sub.state, SubState::Queued | SubState::InFlight) || sub.deadline > now
                {
                    continue;
                }
                if sub.tries < self.max_tries {
                    self.metrics.retransmits += 1;
                    self.queue_send(slot, fam, now);
                } else {
                    self.metrics.timeouts += 1;
                    let f = DnsFailure {
                        cause: FailureCause::Timeout,
                    };
                    self.finish(slot, fam, Answer::Failed(f), 0, now);
                }
            }
        }
        self.completions.drain(..)
    }

    /// When [`Resolver::handle_timeout`] next has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.by_name.is_empty() {
            return None;
        }
        self.slots
            .iter()
            .filter(|p| p.active)
            .flat_map(|p| p.subs.iter())
            .filter(|s| matches!(s.state, SubState::Queued | SubState::InFlight))
            .map(|s| s.deadline)
            .min()
    }

    /// Picks an id, builds the query and queues its first transmission.
    fn launch(&mut self, slot: u32, fam: Family, now: Instant) {
        let mut id = None;
        for _ in 0..16 {
            let candidate = (self.rng.next_u32() >> 16) as u16;
            if !self.by_id.contains_key(&candidate) {
                id = Some(candidate);
                break;
            }
        }
        let Some(id) = id else {
            self.metrics.id_exhausted += 1;
            let f = DnsFailure {
                cause: FailureCause::NoQueryId,
            };
            self.finish(slot, fam, Answer::Failed(f), 0, now);
            return;
        };
        let p = &mut self.slots[slot as usize];
        let sub = &mut p.subs[fam as usize];
        let built = wire::build_query(
            &mut sub.query,
            id,
            p.name.as_bytes(),
            fam.qtype(),
            self.config.edns_udp_payload,
            self.config.randomize_case,
            &mut self.rng,
        );
        if built.is_err() {
            // classify_host only passes names that encode; keep the stream from hanging anyway.
            debug_assert!(false, "validated name failed to encode");
            let f = DnsFailure {
                cause: FailureCause::NoData,
            };
            self.finish(slot, fam, Answer::Failed(f), 0, now);
            return;
        }
        sub.tries = 0;
        sub.sent_mask = 0;
        self.by_id.insert(id, (slot, fam));
        self.queue_send(slot, fam, now);
    }

    fn queue_send(&mut self, slot: u32, fam: Family, now: Instant) {
        let sub = &mut self.slots[slot as usize].subs[fam as usize];
        sub.tries += 1;
        sub.deadline = now + self.config.timeout;
        if sub.state != SubState::Queued {
            sub.state = SubState::Queued;
            self.transmit.push_back((slot, fam));
        }
    }

    /// Records the answer for one record type and completes every waiter that has all it
    /// asked for.
    fn finish(
        &mut self,
        slot: u32,
        fam: Family,
        answer: Answer<Value>,
        lifetime: u32,
        now: Instant,
    ) {
        let p = &mut self.slots[slot as usize];
        let sub = &mut p.subs[fam as usize];
        if matches!(sub.state, SubState::Queued | SubState::InFlight) {
            self.by_id.remove(&sub.query.id());
        }
        sub.state = SubState::Done;
        match answer {
            Answer::Found { .. } => self.metrics.answers_found += 1,
            Answer::Failed(f) if f.is_transient() => self.metrics.failures_transient += 1,
            Answer::Failed(_) => self.metrics.failures_permanent += 1,
            Answer::NotRequested => {}
        }
        // Timeouts, truncation and id exhaustion are counted where they are detected.
        if let Answer::Failed(f) = answer {
            match f.cause {
                FailureCause::NxDomain => self.metrics.failed_nxdomain += 1,
                FailureCause::NoData => self.metrics.failed_nodata += 1,
                FailureCause::ServerFailure { .. } => self.metrics.failed_servfail += 1,
                FailureCause::Truncated | FailureCause::Timeout | FailureCause::NoQueryId => {}
            }
        }
        p.results.set(fam, answer);
        let name = p.name;
        self.cache.put(
            &name,
            fam,
            answer,
            Duration::from_secs(lifetime.into()),
            now,
        );

        let p = &mut self.slots[slot as usize];
        let mut i = 0;
        while i < p.waiters.len() {
            let w = &p.waiters[i];
            let done = Family::ALL
                .iter()
                .all(|&f| w.wants & f.bit() == 0 || p.results.is_set(f));
            if done {
                self.completions.push(Completion {
                    handle: w.handle,
                    resolution: p.results.project(w.wants),
                });
                p.waiters.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.maybe_free(slot);
    }

    /// Returns a slot to the free list once nothing is in flight and nobody waits.
    fn maybe_free(&mut self, slot: u32) {
        let p = &mut self.slots[slot as usize];
        if !p.active || p.busy() || !p.waiters.is_empty() {
            return;
        }
        p.active = false;
        self.by_name.remove(&p.name);
        self.free.push(slot);
    }
}

/// IPv4-mapped IPv6 → IPv4, so a dual-stack socket's view of a v4 nameserver still matches.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

impl<T> Answer<T> {
    fn map_value<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::NotRequested => Answer::NotRequested,
            Answer::Found { value, ttl } => Answer::Found {
                value: f(value),
                ttl,
            },
            Answer::Failed(e) => Answer::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests;
