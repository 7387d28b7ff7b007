//! [`ClientAddrTable`]: per-address DoS statistics (C tor keeps them in its geoip client map,
//! `dos_client_stats_t`), shared by every shard.
//!
//! Connections from one address are spread over the shards by SO_REUSEPORT, so per-shard
//! tables would each see a fraction of an attacker's connections. The table is one array of
//! slots allocated at start-up and never resized; every operation is a bounded probe and a
//! few compare-and-swaps: no lock, no allocation.
//!
//! A slot's `word` packs `[tag:2][key:32][concurrent count:30]`. The key is the IPv4 address
//! itself, or for IPv6 32 bits of a keyed hash (SipHash with a per-process random key, so a
//! collision cannot be aimed at). The probe start comes from the same keyed hash. Slots go
//! from empty to occupied, never back (so probe chains never break). When an address's
//! probe window has no empty slot, an occupied slot without connections is taken over: an
//! idle one (marks expired, buckets full again) if there is one, else the one whose marks
//! end soonest — that address loses its mark (and its buckets). This is the trade-off for a
//! fixed table: C's geoip map always makes room for a new address, and refusing to evict
//! would let as many marked addresses as the table has slots (a connect-rate mark costs a
//! few dozen connects, from say an IPv6 /64) switch every defence off for all addresses not yet
//! seen. Only when every slot of the window holds open connections is the new address
//! served untracked (fail open); with the table at twice the connection capacity that
//! needs a crowded window.
//!
//! A connection pins its slot (count ≥ 1) from accept to close, so the CREATE path of that
//! connection reaches its slot by index, without a lookup, and the slot cannot be taken over
//! meanwhile.
//!
//! Times are whole seconds on a caller-chosen clock (≥ 1; 0 means "never"), as C uses
//! `approx_time()`; the caller passes `now`, which keeps all of this testable.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rand::Rng;

use super::config::{CcDefenseType, ConnDefenseType, DosConfig};
use super::stats::DosCounters;

/// Slots probed from an address's start position.
pub const PROBE_WINDOW: usize = 32;
/// Smallest and largest table (slots).
pub const MIN_SLOTS: usize = 1 << 10;
pub const MAX_SLOTS: usize = 1 << 22;

const TAG_V4: u64 = 1 << 62;
const TAG_V6: u64 = 2 << 62;
const COUNT_BITS: u32 = 30;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const KEY_MASK: u64 = !COUNT_MASK;

/// The index of a connection's slot, kept by the connection from accept to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrSlot(u32);

/// Why a new connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnRefusal {
    /// More than `DoSConnectionMaxConcurrentCount` connections already open.
    Concurrent,
    /// Marked by the connect-rate detection (`DoSConnectionConnect*`).
    ConnectRate,
}

/// What to do with a newly accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnDecision {
    /// Serve it; pass the slot to [`ClientAddrTable::on_close`] when it closes.
    Track(AddrSlot),
    /// Close it now (defence type 2). Nothing to release.
    Refuse(ConnRefusal),
    /// Serve it untracked: no defence is on, or the table had no room (fail open).
    Untracked,
}

/// What to do with a CREATE/CREATE2/CREATE_FAST cell (C `dos_cc_get_defense_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircCreateDecision {
    Allow,
    /// Answer DESTROY with reason RESOURCELIMIT, without the handshake (command.c).
    Refuse,
}

#[derive(Default)]
struct Slot {
    word: AtomicU64,
    /// Circuit bucket: `[last refill second:32][tokens:32]`; 0 = never filled (full).
    cc_bucket: AtomicU64,
    /// Connect bucket (C `connect_count`), same packing.
    connect_bucket: AtomicU64,
    /// Second until which the address is marked by the circuit defence; 0 = not marked.
    cc_marked_until: AtomicU32,
    /// Same for the connect-rate defence.
    conn_marked_until: AtomicU32,
}

fn count_of(w: u64) -> u32 {
    (w & COUNT_MASK) as u32
}

/// A token bucket refilled at `now` (C `cc_stats_refill_bucket` / `token_bucket_ctr_refill`):
/// a never-filled bucket, a clock that went backwards or a huge gap give a full bucket;
/// otherwise `elapsed × rate` tokens, capped at `burst`; no change within the same second.
fn refill(packed: u64, now: u32, rate: u32, burst: u32) -> (u32, u32) {
    let (ts, tokens) = ((packed >> 32) as u32, packed as u32);
    if ts == now && ts != 0 {
        return (ts, tokens.min(burst));
    }
    if ts == 0 || now < ts {
        return (now, burst);
    }
    let add = u64::from(now - ts) * u64::from(rate);
    let filled = (u64::from(tokens) + add).min(u64::from(burst));
    (now, filled as u32)
}

fn pack(ts: u32, tokens: u32) -> u64 {
    (u64::from(ts) << 32) | u64::from(tokens)
}

/// Refills a packed bucket to `now` and takes one token (none left stays 0), atomically;
/// returns the tokens left.
fn take_token(bucket: &AtomicU64, now: u32, rate: u32, burst: u32) -> u32 {
    let mut cur = bucket.load(Ordering::Relaxed);
    loop {
        let (ts, t) = refill(cur, now, rate, burst);
        let t = t.saturating_sub(1);
        match bucket.compare_exchange_weak(cur, pack(ts, t), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return t,
            Err(v) => cur = v,
        }
    }
}

/// Whether a bucket would be full at `now`, i.e. indistinguishable from a fresh one.
fn bucket_full(packed: u64, now: u32, rate: u32, burst: u32) -> bool {
    let ts = (packed >> 32) as u32;
    if ts == 0 {
        return true;
    }
    ts != now && refill(packed, now, rate, burst).1 >= burst
}

fn marked(until: u32, now: u32) -> bool {
    until != 0 && until >= now
}

/// `now + period + random(1, period/2)` (C `cc_mark_client` / `conn_mark_client`: the random
/// part makes the end less predictable).
fn mark_until(now: u32, period: u32, rng: &mut impl Rng) -> u32 {
    let half = period / 2;
    let extra = if half > 1 { rng.gen_range(1..half) } else { 0 };
    now.saturating_add(period).saturating_add(extra)
}

/// The shared per-address table. See the module documentation.
pub struct ClientAddrTable {
    /// Second 1 of the table's clock (shared by every shard, so marks mean the same).
    epoch: std::time::Instant,
    slots: Box<[Slot]>,
    mask: usize,
    hasher: RandomState,
    counters: std::sync::Arc<DosCounters>,
}

impl ClientAddrTable {
    /// A table of `slots` (rounded up to a power of two within
    /// [`MIN_SLOTS`]..=[`MAX_SLOTS`]), reporting into `counters`; `epoch` (the caller's
    /// `Instant::now()`: this module reads no clock) is second 1 of the table's clock.
    pub fn new(
        slots: usize,
        counters: std::sync::Arc<DosCounters>,
        epoch: std::time::Instant,
    ) -> ClientAddrTable {
        let n = slots.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
        counters.table_slots.store(n as u64, Ordering::Relaxed);
        ClientAddrTable {
            epoch,
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            hasher: RandomState::new(),
            counters,
        }
    }

    /// Slots for a relay that may hold `max_connections` connections at once: each open
    /// connection pins at most one slot, and twice that leaves room for marked addresses
    /// without connections and keeps probe chains short ([`ClientAddrTable::new`] then
    /// rounds up to a power of two, so up to ~4×; at [`MAX_SLOTS`] that is 128 MiB).
    pub fn slots_for(max_connections: usize) -> usize {
        max_connections
            .saturating_mul(2)
            .clamp(MIN_SLOTS, MAX_SLOTS)
    }

    /// Bytes one slot takes.
    pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    /// `now` in whole seconds on the table's clock, from 1 (0 means "never" in the slots).
    pub fn secs(&self, now: std::time::Instant) -> u32 {
        let s = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(s.saturating_add(1)).unwrap_or(u32::MAX)
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn counters(&self) -> &DosCounters {
        &self.counters
    }

    /// (probe start, tagged key) for an address.
    fn locate(&self, ip: IpAddr) -> (usize, u64) {
        let ip = ip.to_canonical();
        let h = self.hasher.hash_one(ip);
        let key = match ip {
            IpAddr::V4(a) => TAG_V4 | (u64::from(u32::from(a)) << COUNT_BITS),
            IpAddr::V6(_) => TAG_V6 | ((h >> 32) << COUNT_BITS),
        };
        (h as usize & self.mask, key)
    }

    /// How good a slot is to give to another address when the probe window has no empty
    /// one; lower is better, `None` = not at all. A slot holding connections is never
    /// taken (they reach it by index). An idle one (marks expired, buckets back to full)
    /// loses nothing; otherwise the one whose marks end soonest is evicted, so an
    /// address's mark is what it loses (C's geoip map always makes room for a new address;
    /// an attacker who could pin every slot with marks would otherwise switch the defences
    /// off for every address not yet seen).
    fn eviction_rank(&self, s: &Slot, w: u64, now: u32, cfg: &DosConfig) -> Option<u64> {
        if count_of(w) != 0 {
            return None;
        }
        let live = |m: &AtomicU32| {
            let v = m.load(Ordering::Relaxed);
            if marked(v, now) {
                v
            } else {
                0
            }
        };
        let ends = live(&s.cc_marked_until).max(live(&s.conn_marked_until));
        let idle = ends == 0
            && bucket_full(
                s.cc_bucket.load(Ordering::Relaxed),
                now,
                cfg.cc_circuit_rate,
                cfg.cc_circuit_burst,
            )
            && bucket_full(
                s.connect_bucket.load(Ordering::Relaxed),
                now,
                cfg.conn_connect_rate,
                cfg.conn_connect_burst,
            );
        // Idle first (0), then unmarked with partly drained buckets (1), then by mark end.
        Some(if idle { 0 } else { 1 + u64::from(ends) })
    }

    /// Finds or creates `ip`'s slot and adds one connection to it; returns the slot and
    /// the count before. `None` only when every slot of the probe window holds open
    /// connections of other addresses (or the count is saturated): then the caller fails
    /// open.
    fn pin(&self, ip: IpAddr, now: u32, cfg: &DosConfig) -> Option<(usize, u32)> {
        let (start, key) = self.locate(ip);
        // A lost race for a slot to take over is retried: the winner may be the same
        // address, or the slot may have been pinned meanwhile.
        for _attempt in 0..3 {
            let mut best: Option<(u64, usize, u64)> = None;
            for i in 0..PROBE_WINDOW {
                let idx = (start + i) & self.mask;
                let s = &self.slots[idx];
                let mut w = s.word.load(Ordering::Acquire);
                loop {
                    if w == 0 {
                        match s.word.compare_exchange(
                            0,
                            key | 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                self.counters.table_entries.fetch_add(1, Ordering::Relaxed);
                                return Some((idx, 0));
                            }
                            Err(cur) => {
                                w = cur;
                                continue;
                            }
                        }
                    }
                    if w & KEY_MASK == key {
                        let c = count_of(w);
                        if u64::from(c) == COUNT_MASK {
                            return None;
                        }
                        match s
                            .word
                            .compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
                        {
                            Ok(_) => return Some((idx, c)),
                            Err(cur) => {
                                w = cur;
                                continue;
                            }
                        }
                    }
                    break;
                }
                if let Some(r) = self.eviction_rank(s, w, now, cfg) {
                    if best.is_none_or(|(b, _, _)| r < b) {
                        best = Some((r, idx, w));
                    }
                }
            }
            let (rank, idx, w) = best?;
            let s = &self.slots[idx];
            if s.word
                .compare_exchange(w, key | 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // The slot is ours (count 1): nothing of the previous address may carry
                // over, even a mark set by a racing thread after our scan read it. (A
                // connect of the same new address racing these stores may get its token
                // back: harmless.)
                s.cc_bucket.store(0, Ordering::Relaxed);
                s.connect_bucket.store(0, Ordering::Relaxed);
                s.cc_marked_until.store(0, Ordering::Relaxed);
                s.conn_marked_until.store(0, Ordering::Relaxed);
                let c = if rank == 0 {
                    &self.counters.table_reclaims
                } else {
                    &self.counters.table_evictions
                };
                c.fetch_add(1, Ordering::Relaxed);
                return Some((idx, 0));
            }
        }
        None
    }

    fn unpin(&self, idx: usize) {
        // The holder's pin keeps the count ≥ 1 and the key in place.
        self.slots[idx].word.fetch_sub(1, Ordering::AcqRel);
    }

    /// A connection was accepted from `ip` (C: `dos_conn_addr_get_defense_type` at accept,
    /// then `dos_new_client_conn`, which since 0.4.8 tracks every incoming connection from
    /// the start of its handshake, relay or client).
    pub fn on_accept(
        &self,
        ip: IpAddr,
        cfg: &DosConfig,
        now: u32,
        rng: &mut impl Rng,
    ) -> ConnDecision {
        if !cfg.any_enabled() {
            return ConnDecision::Untracked;
        }
        let Some((idx, before)) = self.pin(ip, now, cfg) else {
            self.counters.table_full.fetch_add(1, Ordering::Relaxed);
            return ConnDecision::Untracked;
        };
        let s = &self.slots[idx];
        let c = &self.counters;
        if cfg.conn_enabled {
            let until = s.conn_marked_until.load(Ordering::Relaxed);
            let refuse = if marked(until, now) {
                c.conn_connect_rejected.fetch_add(1, Ordering::Relaxed);
                Some(ConnRefusal::ConnectRate)
            } else {
                if until != 0 {
                    // Expired: clear it so the detection can mark the address again.
                    let _ = s.conn_marked_until.compare_exchange(
                        until,
                        0,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                // C checks the count before adding the new connection, with ">": up to
                // MaxConcurrentCount + 1 connections are served.
                (before > cfg.conn_max_concurrent_count).then(|| {
                    c.conn_concurrent_rejected.fetch_add(1, Ordering::Relaxed);
                    ConnRefusal::Concurrent
                })
            };
            if let (Some(r), ConnDefenseType::Close) = (refuse, cfg.conn_defense_type) {
                self.unpin(idx);
                return ConnDecision::Refuse(r);
            }
        }
        self.count_connect(s, cfg, now, rng);
        ConnDecision::Track(AddrSlot(idx as u32))
    }

    /// C `conn_update_on_connect`, for a connection now pinned to slot `s`.
    fn count_connect(&self, s: &Slot, cfg: &DosConfig, now: u32, rng: &mut impl Rng) {
        let c = &self.counters;
        // C `conn_update_on_connect`: take a connect token; an empty bucket marks the
        // address (once: not again while a mark stands, which would extend it forever).
        let left = take_token(
            &s.connect_bucket,
            now,
            cfg.conn_connect_rate,
            cfg.conn_connect_burst,
        );
        // C marks only when `marked_until_ts == 0`: an expired mark is reset to 0 solely by
        // the accept check in `on_accept`, which runs only while the connection defence is on, so
        // with it off an address is marked at most once (C does the same).
        if left == 0 {
            let new = mark_until(now, cfg.conn_connect_defense_time_period, rng);
            if s.conn_marked_until
                .compare_exchange(0, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                c.conn_marked_addrs.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.tracked_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A client channel opened whose connection was not tracked at accept because no
    /// defence was on then (the defaults keep both off until the first consensus). C
    /// catches such channels up in `channel_do_open_actions` with `dos_new_client_conn`:
    /// the connection is counted (connect bucket included) without the accept-time
    /// refusal checks, so its later CREATE cells are counted and checked. `None` when no
    /// defence is on, or the probe window holds only connections (fail open).
    pub fn on_client_open(
        &self,
        ip: IpAddr,
        cfg: &DosConfig,
        now: u32,
        rng: &mut impl Rng,
    ) -> Option<AddrSlot> {
        if !cfg.any_enabled() {
            return None;
        }
        let Some((idx, _)) = self.pin(ip, now, cfg) else {
            self.counters.table_full.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.count_connect(&self.slots[idx], cfg, now, rng);
        Some(AddrSlot(idx as u32))
    }

    /// A tracked connection closed (C `dos_close_client_conn`). Call once per `Track`.
    pub fn on_close(&self, slot: AddrSlot) {
        if let Some(s) = self.slots.get(slot.0 as usize) {
            if count_of(s.word.load(Ordering::Acquire)) > 0 {
                self.unpin(slot.0 as usize);
                self.counters
                    .tracked_connections
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A CREATE/CREATE2/CREATE_FAST cell arrived on a client channel tracked as `slot`
    /// (C `dos_cc_new_create_cell`, which runs before the cell is even validated): take a
    /// token; an empty bucket with at least `DoSCircuitCreationMinConnections` connections
    /// open marks the address (again, extending the period, while it keeps going).
    pub fn note_create_cell(&self, slot: AddrSlot, cfg: &DosConfig, now: u32, rng: &mut impl Rng) {
        if !cfg.cc_enabled {
            return;
        }
        let Some(s) = self.slots.get(slot.0 as usize) else {
            return;
        };
        let left = take_token(&s.cc_bucket, now, cfg.cc_circuit_rate, cfg.cc_circuit_burst);
        let conns = count_of(s.word.load(Ordering::Relaxed));
        if left == 0 && conns >= cfg.cc_min_concurrent_conn {
            let new = mark_until(now, cfg.cc_defense_time_period, rng);
            let old = s.cc_marked_until.swap(new, Ordering::Relaxed);
            if old == 0 {
                self.counters
                    .cc_marked_addrs
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether to refuse a CREATE* cell from a client channel tracked as `slot`
    /// (C `dos_cc_get_defense_type`, checked after the cell's circuit ID was validated).
    pub fn create_defense(&self, slot: AddrSlot, cfg: &DosConfig, now: u32) -> CircCreateDecision {
        if !cfg.cc_enabled {
            return CircCreateDecision::Allow;
        }
        let Some(s) = self.slots.get(slot.0 as usize) else {
            return CircCreateDecision::Allow;
        };
        let until = s.cc_marked_until.load(Ordering::Relaxed);
        if marked(until, now) {
            self.counters
                .cc_rejected_cells
                .fetch_add(1, Ordering::Relaxed);
            if cfg.cc_defense_type == CcDefenseType::RefuseCell {
                return CircCreateDecision::Refuse;
            }
        }
        // An expired mark stays as it is (C never resets `marked_until_ts` here): the
        // address counts once in `cc_marked_addrs` for as long as it keeps its slot.
        CircCreateDecision::Allow
    }

    /// Concurrent connections counted for `ip` (tests, diagnostics).
    pub fn concurrent_count(&self, ip: IpAddr) -> u32 {
        let (start, key) = self.locate(ip);
        for i in 0..PROBE_WINDOW {
            let w = self.slots[(start + i) & self.mask]
                .word
                .load(Ordering::Acquire);
            if w == 0 {
                break;
            }
            if w & KEY_MASK == key {
                return count_of(w);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::sync::Arc;

    fn cfg() -> DosConfig {
        DosConfig {
            cc_enabled: true,
            cc_min_concurrent_conn: 1,
            cc_circuit_rate: 1,
            cc_circuit_burst: 5,
            cc_defense_type: CcDefenseType::RefuseCell,
            cc_defense_time_period: 100,
            conn_enabled: true,
            conn_max_concurrent_count: 3,
            conn_defense_type: ConnDefenseType::Close,
            conn_connect_rate: 20,
            conn_connect_burst: 40,
            conn_connect_defense_time_period: 1000,
        }
    }

    fn table() -> ClientAddrTable {
        ClientAddrTable::new(
            MIN_SLOTS,
            Arc::new(DosCounters::default()),
            std::time::Instant::now(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn track(
        t: &ClientAddrTable,
        a: IpAddr,
        c: &DosConfig,
        now: u32,
        rng: &mut StdRng,
    ) -> AddrSlot {
        match t.on_accept(a, c, now, rng) {
            ConnDecision::Track(s) => s,
            other => panic!("expected Track, got {other:?}"),
        }
    }

    #[test]
    fn slots_are_small() {
        assert_eq!(ClientAddrTable::SLOT_BYTES, 32);
        assert_eq!(ClientAddrTable::slots_for(10), MIN_SLOTS);
        assert_eq!(ClientAddrTable::slots_for(100_000), 200_000);
        assert_eq!(ClientAddrTable::slots_for(usize::MAX), MAX_SLOTS);
        let t = ClientAddrTable::new(
            3000,
            Arc::new(DosCounters::default()),
            std::time::Instant::now(),
        );
        assert_eq!(t.capacity(), 4096);
        assert_eq!(t.counters().table_slots.load(Ordering::Relaxed), 4096);
        let now = std::time::Instant::now();
        assert!(t.secs(now) >= 1);
    }

    #[test]
    fn refill_rules() {
        // Never filled → full.
        assert_eq!(refill(0, 10, 3, 90), (10, 90));
        // Same second → unchanged.
        assert_eq!(refill(pack(10, 4), 10, 3, 90), (10, 4));
        // Two seconds at 3/s.
        assert_eq!(refill(pack(10, 4), 12, 3, 90), (12, 10));
        // Capped at the burst; clock backwards → full.
        assert_eq!(refill(pack(10, 80), 20, 3, 90), (20, 90));
        assert_eq!(refill(pack(10, 0), 5, 3, 90), (5, 90));
        // Huge gaps do not overflow.
        assert_eq!(refill(pack(1, 0), u32::MAX, u32::MAX, 7), (u32::MAX, 7));
        assert!(bucket_full(0, 5, 1, 1));
        assert!(!bucket_full(pack(5, 0), 5, 1, 1));
        assert!(bucket_full(pack(5, 0), 6, 1, 1));
    }

    #[test]
    fn mark_period_has_c_jitter() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let m = mark_until(1000, 100, &mut rng);
            assert!((1101..1150).contains(&m), "{m}");
        }
        assert_eq!(mark_until(1000, 2, &mut rng), 1002);
        assert_eq!(mark_until(1000, 0, &mut rng), 1000);
    }

    #[test]
    fn concurrent_limit_is_checked_before_counting_as_in_c() {
        let (t, c) = (table(), cfg());
        let mut rng = StdRng::seed_from_u64(2);
        let a = ip("192.0.2.1");
        // Counts 0,1,2,3 are not above 3: four connections are served.
        let slots: Vec<_> = (0..4).map(|_| track(&t, a, &c, 10, &mut rng)).collect();
        assert_eq!(t.concurrent_count(a), 4);
        assert_eq!(
            t.on_accept(a, &c, 10, &mut rng),
            ConnDecision::Refuse(ConnRefusal::Concurrent)
        );
        assert_eq!(
            t.concurrent_count(a),
            4,
            "a refused connection is not counted"
        );
        assert_eq!(
            t.counters()
                .conn_concurrent_rejected
                .load(Ordering::Relaxed),
            1
        );
        // Another address is unaffected.
        track(&t, ip("192.0.2.2"), &c, 10, &mut rng);
        // Closing one lets the next in.
        t.on_close(slots[0]);
        assert_eq!(t.concurrent_count(a), 3);
        track(&t, a, &c, 10, &mut rng);
        // Defence type 1 counts but serves.
        let none = DosConfig {
            conn_defense_type: ConnDefenseType::None,
            ..c
        };
        track(&t, a, &none, 10, &mut rng);
        assert_eq!(
            t.counters()
                .conn_concurrent_rejected
                .load(Ordering::Relaxed),
            2
        );
        // Disabled entirely: nothing tracked.
        let off = DosConfig {
            cc_enabled: false,
            conn_enabled: false,
            ..c
        };
        assert_eq!(t.on_accept(a, &off, 10, &mut rng), ConnDecision::Untracked);
    }

    #[test]
    fn connect_rate_marks_and_expires() {
        let t = table();
        let c = DosConfig {
            conn_max_concurrent_count: 1000,
            conn_connect_rate: 1,
            conn_connect_burst: 3,
            conn_connect_defense_time_period: 10,
            ..cfg()
        };
        let mut rng = StdRng::seed_from_u64(3);
        let a = ip("2001:db8::1");
        // Burst 3: the third connect empties the bucket and marks; it is still served.
        for _ in 0..3 {
            let s = track(&t, a, &c, 100, &mut rng);
            t.on_close(s);
        }
        assert_eq!(t.counters().conn_marked_addrs.load(Ordering::Relaxed), 1);
        assert_eq!(
            t.on_accept(a, &c, 101, &mut rng),
            ConnDecision::Refuse(ConnRefusal::ConnectRate)
        );
        // Marked for 10 s plus 1..5 s of jitter: refused at 110, served from 115 on.
        assert_eq!(
            t.on_accept(a, &c, 110, &mut rng),
            ConnDecision::Refuse(ConnRefusal::ConnectRate)
        );
        assert_eq!(
            t.counters().conn_connect_rejected.load(Ordering::Relaxed),
            2
        );
        let s = track(&t, a, &c, 115, &mut rng);
        t.on_close(s);
        assert_eq!(t.concurrent_count(a), 0);
        // Slow connects never mark.
        let b = ip("192.0.2.9");
        for now in 200..220 {
            let s = track(&t, b, &c, now, &mut rng);
            t.on_close(s);
        }
        assert_eq!(t.counters().conn_marked_addrs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn circuit_creation_marks_after_burst_and_refuses() {
        let t = table();
        let c = cfg();
        let mut rng = StdRng::seed_from_u64(4);
        let a = ip("198.51.100.7");
        let s = track(&t, a, &c, 50, &mut rng);
        // Burst 5: cells 1..4 leave tokens; the 5th empties the bucket and, with one
        // connection (≥ MinConnections 1), marks the address: C refuses that cell already.
        for i in 1..=5 {
            t.note_create_cell(s, &c, 50, &mut rng);
            let want = if i < 5 {
                CircCreateDecision::Allow
            } else {
                CircCreateDecision::Refuse
            };
            assert_eq!(t.create_defense(s, &c, 50), want, "cell {i}");
        }
        assert_eq!(t.counters().cc_marked_addrs.load(Ordering::Relaxed), 1);
        assert_eq!(t.counters().cc_rejected_cells.load(Ordering::Relaxed), 1);
        // Refilling does not unmark: the mark holds for 100 s (+ jitter).
        t.note_create_cell(s, &c, 60, &mut rng);
        assert_eq!(t.create_defense(s, &c, 60), CircCreateDecision::Refuse);
        assert_eq!(
            t.counters().cc_marked_addrs.load(Ordering::Relaxed),
            1,
            "re-marks are not new addresses"
        );
        // Another address on the same table is unaffected.
        let s2 = track(&t, ip("198.51.100.8"), &c, 60, &mut rng);
        t.note_create_cell(s2, &c, 60, &mut rng);
        assert_eq!(t.create_defense(s2, &c, 60), CircCreateDecision::Allow);
        // After the period (at most 60 + 100 + 49) the address is served again.
        assert_eq!(t.create_defense(s, &c, 210), CircCreateDecision::Allow);
        t.note_create_cell(s, &c, 210, &mut rng);
        assert_eq!(t.create_defense(s, &c, 210), CircCreateDecision::Allow);
    }

    #[test]
    fn marked_address_counts_once_per_entry_as_in_c() {
        let t = table();
        let c = cfg();
        let mut rng = StdRng::seed_from_u64(8);
        let s = track(&t, ip("198.51.100.9"), &c, 50, &mut rng);
        for _ in 0..5 {
            t.note_create_cell(s, &c, 50, &mut rng);
        }
        assert_eq!(t.create_defense(s, &c, 50), CircCreateDecision::Refuse);
        // The mark (at most 50 + 100 + 49) expires; the defence check does not clear it,
        // and a second detection later does not count the address again (C
        // `cc_num_marked_addrs` counts a mark over `marked_until_ts == 0` only).
        assert_eq!(t.create_defense(s, &c, 300), CircCreateDecision::Allow);
        for _ in 0..10 {
            t.note_create_cell(s, &c, 300, &mut rng);
        }
        assert_eq!(t.create_defense(s, &c, 300), CircCreateDecision::Refuse);
        assert_eq!(t.counters().cc_marked_addrs.load(Ordering::Relaxed), 1);
        assert_eq!(t.counters().cc_rejected_cells.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn connect_mark_is_not_renewed_while_the_connection_defence_is_off() {
        // Only the circuit defence is on: connections are still counted (C
        // `conn_update_on_connect` runs for every tracked connection) and an empty connect
        // bucket marks once; nothing resets the mark, so it is not set again.
        let t = table();
        let c = DosConfig {
            conn_enabled: false,
            conn_connect_rate: 1,
            conn_connect_burst: 1,
            conn_connect_defense_time_period: 10,
            ..cfg()
        };
        let mut rng = StdRng::seed_from_u64(9);
        let a = ip("192.0.2.55");
        for now in [10, 11, 100, 101, 500] {
            let s = track(&t, a, &c, now, &mut rng);
            t.on_close(s);
            let s2 = track(&t, a, &c, now, &mut rng);
            t.on_close(s2);
        }
        assert_eq!(t.counters().conn_marked_addrs.load(Ordering::Relaxed), 1);
        // With the defence on, an expired mark is reset at accept and the address can be
        // marked again.
        let on = DosConfig {
            conn_enabled: true,
            ..c
        };
        let s = track(&t, a, &on, 600, &mut rng);
        t.on_close(s);
        assert_eq!(t.counters().conn_marked_addrs.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn channel_opened_before_the_defences_is_caught_up() {
        let t = table();
        let c = cfg();
        let off = DosConfig {
            cc_enabled: false,
            conn_enabled: false,
            ..c
        };
        let mut rng = StdRng::seed_from_u64(10);
        let a = ip("203.0.113.40");
        // Accepted while everything was off: untracked.
        assert_eq!(t.on_accept(a, &off, 5, &mut rng), ConnDecision::Untracked);
        assert_eq!(t.on_client_open(a, &off, 5, &mut rng), None);
        // The defences came on (first consensus); the channel opens now and is counted,
        // even over the concurrent limit (no refusal on this path, as in C).
        let held: Vec<_> = (0..4).map(|_| track(&t, a, &c, 6, &mut rng)).collect();
        let s = t.on_client_open(a, &c, 6, &mut rng).expect("caught up");
        assert_eq!(t.concurrent_count(a), 5);
        assert_eq!(s, held[0]);
        // Its CREATE cells now count towards the address's bucket.
        for _ in 0..5 {
            t.note_create_cell(s, &c, 6, &mut rng);
        }
        assert_eq!(t.create_defense(s, &c, 6), CircCreateDecision::Refuse);
        t.on_close(s);
        assert_eq!(t.concurrent_count(a), 4);
    }

    #[test]
    fn min_connections_and_defense_type() {
        let t = table();
        let c = DosConfig {
            cc_min_concurrent_conn: 2,
            ..cfg()
        };
        let mut rng = StdRng::seed_from_u64(5);
        let a = ip("203.0.113.5");
        let s = track(&t, a, &c, 7, &mut rng);
        // One connection < MinConnections 2: an empty bucket does not mark.
        for _ in 0..20 {
            t.note_create_cell(s, &c, 7, &mut rng);
        }
        assert_eq!(t.create_defense(s, &c, 7), CircCreateDecision::Allow);
        // A second connection: the next cell over an empty bucket marks.
        let _s2 = track(&t, a, &c, 7, &mut rng);
        t.note_create_cell(s, &c, 7, &mut rng);
        assert_eq!(t.create_defense(s, &c, 7), CircCreateDecision::Refuse);
        // Type 1: counted, not refused.
        let none = DosConfig {
            cc_defense_type: CcDefenseType::None,
            ..c
        };
        assert_eq!(t.create_defense(s, &none, 7), CircCreateDecision::Allow);
        assert_eq!(t.counters().cc_rejected_cells.load(Ordering::Relaxed), 2);
        // Disabled: nothing counted.
        let off = DosConfig {
            cc_enabled: false,
            ..c
        };
        assert_eq!(t.create_defense(s, &off, 7), CircCreateDecision::Allow);
        assert_eq!(t.counters().cc_rejected_cells.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn full_table_fails_open_and_idle_slots_are_reused() {
        let t = table();
        let c = cfg();
        let mut rng = StdRng::seed_from_u64(6);
        // Pin one connection per address until some address finds no room.
        let mut held = Vec::new();
        let mut full_at = None;
        for i in 0..(MIN_SLOTS as u32 + 64) {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            match t.on_accept(a, &c, 1, &mut rng) {
                ConnDecision::Track(s) => held.push(s),
                ConnDecision::Untracked => {
                    full_at = Some(a);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let late = full_at.expect("a bounded table fills up");
        assert!(t.counters().table_full.load(Ordering::Relaxed) >= 1);
        let entries = t.counters().table_entries.load(Ordering::Relaxed);
        assert!(entries as usize <= t.capacity());
        // Close everything: once the buckets have refilled, slots are idle and reusable.
        for s in held {
            t.on_close(s);
        }
        assert_eq!(t.counters().tracked_connections.load(Ordering::Relaxed), 0);
        assert!(matches!(
            t.on_accept(late, &c, 100, &mut rng),
            ConnDecision::Track(_)
        ));
        assert_eq!(t.concurrent_count(late), 1);
    }

    /// Fills every slot of the table with addresses that each connect `connects` times
    /// (closing at once) at `now`, so that with a connect burst of `connects` each ends up
    /// marked.
    fn fill_with_marked(t: &ClientAddrTable, c: &DosConfig, connects: u32, now: u32) {
        let mut rng = StdRng::seed_from_u64(70);
        let mut i = 0u32;
        while (t.counters().table_entries.load(Ordering::Relaxed) as usize) < t.capacity() {
            i += 1;
            assert!(i < 1 << 20, "the table fills up");
            let a = IpAddr::V4((0x0b00_0000 + i).into());
            for _ in 0..connects {
                if let ConnDecision::Track(s) = t.on_accept(a, c, now, &mut rng) {
                    t.on_close(s);
                }
            }
        }
    }

    #[test]
    fn marked_addresses_without_connections_cannot_switch_the_defences_off() {
        let t = table();
        let c = DosConfig {
            conn_max_concurrent_count: 1000,
            conn_connect_burst: 2,
            conn_connect_rate: 1,
            conn_connect_defense_time_period: 100_000,
            ..cfg()
        };
        fill_with_marked(&t, &c, 2, 10);
        assert_eq!(
            t.counters().table_entries.load(Ordering::Relaxed),
            MIN_SLOTS as u64
        );
        assert!(t.counters().conn_marked_addrs.load(Ordering::Relaxed) >= MIN_SLOTS as u64);
        // Every slot is marked for a day, none has a connection: a new address still gets
        // a slot (evicting one), and the defences apply to it.
        let mut rng = StdRng::seed_from_u64(71);
        let late = ip("2001:db8:77::1");
        let s1 = track(&t, late, &c, 20, &mut rng);
        assert!(t.counters().table_evictions.load(Ordering::Relaxed) >= 1);
        assert_eq!(t.counters().table_full.load(Ordering::Relaxed), 0);
        // The evicted address's mark and emptied bucket are not inherited: the first
        // connect was served, the second takes the last token and marks, the third is
        // refused.
        let _s2 = track(&t, late, &c, 20, &mut rng);
        assert_eq!(
            t.on_accept(late, &c, 20, &mut rng),
            ConnDecision::Refuse(ConnRefusal::ConnectRate)
        );
        // Its CREATE cells are counted too.
        for _ in 0..5 {
            t.note_create_cell(s1, &c, 20, &mut rng);
        }
        assert_eq!(t.create_defense(s1, &c, 20), CircCreateDecision::Refuse);
    }

    #[test]
    fn eviction_takes_the_mark_that_ends_soonest() {
        let t = table();
        let c = cfg();
        // Make every slot hold an address with a circuit mark, at various ends.
        let mut rng = StdRng::seed_from_u64(72);
        let mut held = Vec::new();
        let mut i = 0u32;
        while (t.counters().table_entries.load(Ordering::Relaxed) as usize) < t.capacity() {
            let a = IpAddr::V4((0x0c00_0000 + i).into());
            if let ConnDecision::Track(s) = t.on_accept(a, &c, 1, &mut rng) {
                held.push(s);
            }
            i += 1;
            assert!(i < 1 << 20, "the table fills up");
        }
        for (n, s) in held.iter().enumerate() {
            let sl = &t.slots[s.0 as usize];
            sl.cc_marked_until.store(1000 + n as u32, Ordering::Relaxed);
            t.on_close(*s);
        }
        let late = ip("198.51.100.200");
        let (start, _) = t.locate(late);
        let window: Vec<usize> = (0..PROBE_WINDOW).map(|i| (start + i) & t.mask).collect();
        let soonest = *window
            .iter()
            .min_by_key(|&&i| t.slots[i].cc_marked_until.load(Ordering::Relaxed))
            .unwrap();
        let got = track(&t, late, &c, 5, &mut rng);
        assert_eq!(got.0 as usize, soonest);
        assert_eq!(t.slots[soonest].cc_marked_until.load(Ordering::Relaxed), 0);
        assert_eq!(t.create_defense(got, &c, 5), CircCreateDecision::Allow);
    }

    #[test]
    fn shards_share_counts() {
        let t = Arc::new(table());
        let c = DosConfig {
            conn_max_concurrent_count: 10_000,
            conn_connect_burst: 10_000,
            ..cfg()
        };
        let a = ip("192.0.2.77");
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut rng = StdRng::seed_from_u64(i);
                    let mut v = Vec::new();
                    for _ in 0..500 {
                        v.push(track(&t, a, &c, 5, &mut rng));
                    }
                    v
                })
            })
            .collect();
        let all: Vec<AddrSlot> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(t.concurrent_count(a), 2000);
        assert!(
            all.iter().all(|s| *s == all[0]),
            "one entry for one address"
        );
        for s in all {
            t.on_close(s);
        }
        assert_eq!(t.concurrent_count(a), 0);
    }
}
