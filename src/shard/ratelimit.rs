//! Relay-wide bandwidth token buckets, shared by every shard without a lock.
//!
//! Semantics follow the tor manual and C tor's `connection.c`:
//! - `BandwidthRate`/`BandwidthBurst` fill a *global* bucket that every rate-limited
//!   connection draws from; `RelayBandwidthRate`/`RelayBandwidthBurst` fill a *relayed*
//!   bucket that OR connections draw from as well (when it is 0, C tor gives the relayed
//!   bucket the global values). Reading and writing have separate buckets of the same size
//!   (C `token_bucket_rw_t`), so there are four pools.
//! - Buckets start full, never hold more than the burst, and may go negative: bytes already
//!   read are charged in full (C `token_bucket_rw_dec`), the debt is paid by later refills.
//! - Refill runs every `TokenBucketRefillInterval` (C default 100 ms): here at each shard
//!   tick, by the elapsed time, so the long-run rate does not depend on tick jitter.
//! - Connections with an internal address are not limited unless `CountPrivateBandwidth`
//!   (C `connection_is_rate_limited`); the caller classifies connections ([`BwClass`]).
//!
//! Sharing between shards. The budget lives in atomics: each shard has its own *slot* per
//! pool, and there is one *spare* per pool. A refill (done by whichever shard's tick comes
//! first after an interval; the others lose a compare-exchange and skip) adds `rate ×
//! elapsed`, split equally over the shard slots; each slot is capped at `burst / shards`,
//! and what does not fit (an idle shard's share) goes to the spare, capped so slots plus
//! spare stay within the burst. A shard spends from a local (plain integer) bucket, and
//! only when that is empty, or at its tick, takes from its own slot, then from the spare,
//! in chunks of one interval's fair share. So a busy shard always gets its `1/shards` of
//! the rate (no shard can starve another), may use what idle shards leave in the spare, and
//! the data path touches atomics once per chunk, never per cell.
//!
//! Sans-IO: time comes in as an `Instant`; nothing here touches sockets or the ring.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// C tor's `TokenBucketRefillInterval` default: how often buckets are refilled, and the
/// unit of a shard's fair share.
pub const REFILL_INTERVAL: Duration = Duration::from_millis(100);

/// The smallest chunk a shard takes from the shared budget (one TLS record), so a very low
/// rate does not mean an atomic operation per receive.
const MIN_CHUNK: i64 = 16 * 1024;

/// Ticks a pool counts as under pressure after it ran dry (see [`ShardBuckets::pressed`]).
const PRESSURE_TICKS: u8 = 10;

/// Refills closer together than this are skipped (the next one adds the whole interval).
const MIN_REFILL_GAP: Duration = Duration::from_millis(5);

/// Rates and bursts in bytes (per second for rates), as `config::BandwidthConfig` holds them
/// after C tor's normalisation. `relay_rate == 0`: no separate relayed limit (the relayed
/// bucket takes the global values, as in C `connection_bucket_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BwRates {
    pub rate: u64,
    pub burst: u64,
    pub relay_rate: u64,
    pub relay_burst: u64,
}

/// How a connection is charged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BwClass {
    /// Not rate-limited (an internal address without `CountPrivateBandwidth`).
    Exempt,
    /// Charged to the global buckets only (exit streams, directory fetches).
    #[default]
    Global,
    /// An OR connection: charged to the relayed buckets and to the global ones.
    Relayed,
}

/// Direction of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BwDir {
    Read = 0,
    Write = 1,
}

/// The four pools: global read, global write, relayed read, relayed write.
pub const POOLS: usize = 4;
/// Pool names for metrics labels, in pool order.
pub const POOL_LABELS: [(&str, &str); POOLS] = [
    ("global", "read"),
    ("global", "write"),
    ("relayed", "read"),
    ("relayed", "write"),
];

/// The pools a class draws from in one direction (at most two).
fn pools_of(class: BwClass, dir: BwDir) -> &'static [usize] {
    const GR: [usize; 1] = [0];
    const GW: [usize; 1] = [1];
    const RR: [usize; 2] = [0, 2];
    const RW: [usize; 2] = [1, 3];
    match (class, dir) {
        (BwClass::Exempt, _) => &[],
        (BwClass::Global, BwDir::Read) => &GR,
        (BwClass::Global, BwDir::Write) => &GW,
        (BwClass::Relayed, BwDir::Read) => &RR,
        (BwClass::Relayed, BwDir::Write) => &RW,
    }
}

/// One shard's slots, on its own cache line: the owner takes from it, the refiller adds.
#[repr(align(64))]
#[derive(Default)]
struct Slot([AtomicI64; POOLS]);

/// The relay-wide budget (one per process, shared by all shards).
pub struct SharedBudget {
    epoch: Instant,
    shards: usize,
    /// Rate and burst per pool (read and write of one bucket are equal).
    rate: [AtomicU64; POOLS],
    burst: [AtomicU64; POOLS],
    /// Microseconds since `epoch` of the last refill.
    last_refill_us: AtomicU64,
    slots: Box<[Slot]>,
    spare: [AtomicI64; POOLS],
    /// Refills done (any shard).
    refills: AtomicU64,
    /// When a write pool (global or relayed) last ran dry, in µs since `epoch` plus one
    /// (0: never): C tor's `write_buckets_last_empty_at`, which any connection's write sets
    /// (connection.c `connection_buckets_decrement`) and the directory server reads
    /// (`connection_dir_is_global_write_low`). Written once per dry event, never per cell.
    last_write_empty_us: AtomicU64,
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudget")
            .field("shards", &self.shards)
            .field("rates", &self.rates())
            .field("tokens", &self.tokens())
            .finish()
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Adds `add` to `a` but never past `cap` (a value already above `cap` is lowered to it);
/// returns what did not fit.
fn add_capped(a: &AtomicI64, add: i64, cap: i64) -> i64 {
    let mut overflow = 0;
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        let want = v.saturating_add(add);
        let new = want.min(cap);
        overflow = want - new;
        Some(new)
    });
    overflow.max(0)
}

/// Takes up to `want` (> 0) from `a` if it holds a positive amount; returns what was taken.
fn take_from(a: &AtomicI64, want: i64) -> i64 {
    let mut got = 0;
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        if v <= 0 {
            got = 0;
            return None;
        }
        got = v.min(want);
        Some(v - got)
    });
    got
}

impl SharedBudget {
    /// A budget for `shards` shards, full (C buckets start at their burst).
    pub fn new(shards: usize, rates: BwRates, now: Instant) -> Arc<SharedBudget> {
        let shards = shards.max(1);
        let b = SharedBudget {
            epoch: now,
            shards,
            rate: Default::default(),
            burst: Default::default(),
            last_refill_us: AtomicU64::new(0),
            slots: (0..shards).map(|_| Slot::default()).collect(),
            spare: Default::default(),
            refills: AtomicU64::new(0),
            last_write_empty_us: AtomicU64::new(0),
        };
        b.store_rates(rates);
        for p in 0..POOLS {
            let cap = b.slot_cap(p);
            for s in b.slots.iter() {
                s.0[p].store(cap, Ordering::Relaxed);
            }
        }
        Arc::new(b)
    }

    fn store_rates(&self, r: BwRates) {
        let (rr, rb) = if r.relay_rate == 0 {
            (r.rate, r.burst)
        } else {
            (r.relay_rate, r.relay_burst.max(r.relay_rate))
        };
        let burst = r.burst.max(r.rate);
        for (p, (rate, burst)) in [(r.rate, burst), (r.rate, burst), (rr, rb), (rr, rb)]
            .into_iter()
            .enumerate()
        {
            self.rate[p].store(rate, Ordering::Relaxed);
            self.burst[p].store(burst, Ordering::Relaxed);
        }
    }

    /// New limits (SIGHUP). Tokens above a lowered burst are dropped (C
    /// `token_bucket_rw_adjust`); a raised rate applies from the next refill, at most one
    /// interval away.
    pub fn set_rates(&self, rates: BwRates) {
        self.store_rates(rates);
        for p in 0..POOLS {
            let cap = self.slot_cap(p);
            let mut held = 0i64;
            for s in self.slots.iter() {
                add_capped(&s.0[p], 0, cap);
                held = held.saturating_add(s.0[p].load(Ordering::Acquire).max(0));
            }
            add_capped(&self.spare[p], 0, (self.burst_of(p) - held).max(0));
        }
    }

    /// The limits in force.
    pub fn rates(&self) -> BwRates {
        BwRates {
            rate: load(&self.rate[0]),
            burst: load(&self.burst[0]),
            relay_rate: load(&self.rate[2]),
            relay_burst: load(&self.burst[2]),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    fn burst_of(&self, p: usize) -> i64 {
        load(&self.burst[p]).min(i64::MAX as u64) as i64
    }

    fn slot_cap(&self, p: usize) -> i64 {
        self.burst_of(p) / self.shards as i64
    }

    /// One interval's fair share of one shard in pool `p`: the chunk it takes at a time.
    pub fn chunk(&self, p: usize) -> i64 {
        let per_interval =
            u128::from(load(&self.rate[p])) * REFILL_INTERVAL.as_micros() / 1_000_000;
        ((per_interval / self.shards as u128).min(i64::MAX as u128) as i64).max(MIN_CHUNK)
    }

    /// Adds the tokens earned since the last refill, if at least `MIN_REFILL_GAP` passed and
    /// no other shard is doing it. Returns whether this call refilled.
    pub fn refill(&self, now: Instant) -> bool {
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let last = self.last_refill_us.load(Ordering::Acquire);
        let elapsed = now_us.saturating_sub(last);
        if elapsed < MIN_REFILL_GAP.as_micros() as u64 {
            return false;
        }
        if self
            .last_refill_us
            .compare_exchange(last, now_us, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        // More than a second adds at least a full burst anyway (bursts are ≥ rates).
        let elapsed = elapsed.min(1_000_000);
        for p in 0..POOLS {
            let add = (u128::from(load(&self.rate[p])) * u128::from(elapsed) / 1_000_000)
                .min(i64::MAX as u128 / 2) as i64;
            let n = self.shards as i64;
            let per = add / n;
            let cap = self.slot_cap(p);
            let mut overflow = add - per * n;
            let mut held = 0i64;
            for s in self.slots.iter() {
                overflow = overflow.saturating_add(add_capped(&s.0[p], per, cap));
                held = held.saturating_add(s.0[p].load(Ordering::Acquire).max(0));
            }
            // Slots plus spare stay within the burst.
            let spare_cap = (self.burst_of(p) - held).max(0);
            add_capped(&self.spare[p], overflow, spare_cap);
        }
        self.refills.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Takes up to `want` tokens of pool `p` for `shard`: its own slot first, then the spare.
    pub fn take(&self, shard: usize, p: usize, want: i64) -> i64 {
        if want <= 0 {
            return 0;
        }
        let own = self
            .slots
            .get(shard)
            .map_or(0, |s| take_from(&s.0[p], want));
        if own >= want {
            return own;
        }
        own + take_from(&self.spare[p], want - own)
    }

    /// For a consumer that is not a shard (the directory server: C tor charges directory
    /// connections to the same global bucket as everything else, connection.c
    /// `connection_bucket_write_limit`): takes up to `want` tokens of pool `p` from the
    /// spare, then evenly from the shards' slots. Lock-free, like [`take`](Self::take); the
    /// shards' own code is unchanged, they only find less in their slots.
    pub fn take_unsharded(&self, p: usize, want: i64) -> i64 {
        if want <= 0 || p >= POOLS {
            return 0;
        }
        let mut got = take_from(&self.spare[p], want);
        // Two passes: an even share from each slot, then whatever is left from any.
        for even in [true, false] {
            let n = self.slots.len();
            for (i, s) in self.slots.iter().enumerate() {
                let left = want - got;
                if left <= 0 {
                    return got;
                }
                let ask = if even {
                    (left + (n - i) as i64 - 1) / (n - i) as i64
                } else {
                    left
                };
                got += take_from(&s.0[p], ask);
            }
        }
        got
    }

    /// Tokens held in the shared budget (slots and spare, not shards' local buckets), per pool.
    pub fn tokens(&self) -> [i64; POOLS] {
        std::array::from_fn(|p| {
            self.slots
                .iter()
                .map(|s| s.0[p].load(Ordering::Relaxed))
                .sum::<i64>()
                + self.spare[p].load(Ordering::Relaxed)
        })
    }

    /// Refills done so far.
    pub fn refills(&self) -> u64 {
        self.refills.load(Ordering::Relaxed)
    }

    /// Records that a write pool ran dry at `now` (C `write_buckets_last_empty_at = now`).
    pub fn note_write_empty(&self, now: Instant) {
        let us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        self.last_write_empty_us
            .fetch_max(us.saturating_add(1), Ordering::AcqRel);
    }

    /// A shard found a write pool dry: it keeps no clock of its own here, so the time is
    /// that of the latest refill, at most one tick ago.
    fn note_write_empty_at_last_refill(&self) {
        let us = self.last_refill_us.load(Ordering::Acquire);
        self.last_write_empty_us
            .fetch_max(us.saturating_add(1), Ordering::AcqRel);
    }

    /// Whether a write pool, global or relayed, ran dry (by any shard's write or the
    /// directory server's) no longer than `within` before `now`.
    pub fn write_ran_dry_within(&self, now: Instant, within: Duration) -> bool {
        let at = self.last_write_empty_us.load(Ordering::Acquire);
        if at == 0 {
            return false;
        }
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        now_us.saturating_sub(at - 1) <= within.as_micros() as u64
    }
}

/// One shard's local buckets: plain integers, spent on the data path, topped up from the
/// [`SharedBudget`] in chunks.
#[derive(Debug)]
pub struct ShardBuckets {
    shared: Arc<SharedBudget>,
    shard: usize,
    tokens: [i64; POOLS],
    /// The pool ran dry and the shared budget had nothing: wait for a tick.
    empty: [bool; POOLS],
    /// Times each pool ran dry (the limit was hit).
    pub empty_events: [u64; POOLS],
    /// Ticks left during which the pool counts as under pressure (it ran dry recently).
    pressure: [u8; POOLS],
}

impl ShardBuckets {
    pub fn new(shared: Arc<SharedBudget>, shard: usize) -> ShardBuckets {
        let mut b = ShardBuckets {
            shared,
            shard,
            tokens: [0; POOLS],
            empty: [false; POOLS],
            empty_events: [0; POOLS],
            pressure: [0; POOLS],
        };
        for p in 0..POOLS {
            b.top_up(p);
        }
        b
    }

    /// Local tokens per pool (may be negative: a debt).
    pub fn tokens(&self) -> [i64; POOLS] {
        self.tokens
    }

    /// Takes from the shared budget until the pool holds one chunk (if there is that much).
    fn top_up(&mut self, p: usize) {
        let chunk = self.shared.chunk(p);
        if self.tokens[p] < chunk {
            self.tokens[p] += self.shared.take(self.shard, p, chunk - self.tokens[p]);
        }
    }

    /// Whether connections of `class` must stop in direction `dir` until a tick.
    pub fn blocked(&self, class: BwClass, dir: BwDir) -> bool {
        pools_of(class, dir).iter().any(|&p| self.empty[p])
    }

    /// Bytes `class` may move in `dir` now (`i64::MAX` for exempt connections), topping up
    /// from the shared budget if a pool is empty; on failure the pool is marked empty.
    pub fn allowance(&mut self, class: BwClass, dir: BwDir) -> i64 {
        let mut allow = i64::MAX;
        for &p in pools_of(class, dir) {
            if self.empty[p] {
                return 0;
            }
            if self.tokens[p] <= 0 {
                self.top_up(p);
                if self.tokens[p] <= 0 {
                    self.mark_empty(p);
                    return 0;
                }
            }
            allow = allow.min(self.tokens[p]);
        }
        allow
    }

    fn mark_empty(&mut self, p: usize) {
        if !self.empty[p] {
            self.empty[p] = true;
            self.empty_events[p] += 1;
            if p % 2 == BwDir::Write as usize {
                self.shared.note_write_empty_at_last_refill();
            }
        }
        self.pressure[p] = PRESSURE_TICKS;
    }

    /// Whether a pool of `class` in `dir` ran dry within the last `PRESSURE_TICKS` ticks:
    /// the limit is what paces this traffic now, so the shard should hand out bytes in
    /// small turns (one receive buffer per connection at a time) rather than let one
    /// connection's burst take a whole refill.
    pub fn pressed(&self, class: BwClass, dir: BwDir) -> bool {
        pools_of(class, dir).iter().any(|&p| self.pressure[p] > 0)
    }

    /// Charges `n` bytes moved. Returns true if this left a pool of the class empty (the
    /// caller stops that direction for the class until a tick).
    pub fn charge(&mut self, class: BwClass, dir: BwDir, n: u64) -> bool {
        let n = n.min(i64::MAX as u64) as i64;
        let mut now_empty = false;
        for &p in pools_of(class, dir) {
            self.tokens[p] = self.tokens[p].saturating_sub(n);
            if self.tokens[p] <= 0 && !self.empty[p] {
                self.top_up(p);
                if self.tokens[p] <= 0 {
                    self.mark_empty(p);
                    now_empty = true;
                }
            }
        }
        now_empty
    }

    /// Gives back bytes charged but not moved (a short write).
    pub fn refund(&mut self, class: BwClass, dir: BwDir, n: u64) {
        let n = n.min(i64::MAX as u64) as i64;
        for &p in pools_of(class, dir) {
            self.tokens[p] = self.tokens[p].saturating_add(n);
        }
    }

    /// The shard's tick: refill the shared budget (if due), top every pool up, and clear
    /// the empty marks of pools that have tokens again. Returns, per direction, whether
    /// some pool of it was empty and no longer is (the caller resumes that direction).
    pub fn on_tick(&mut self, now: Instant) -> [bool; 2] {
        self.shared.refill(now);
        let mut resumed = [false; 2];
        for p in 0..POOLS {
            // A lowered rate (SIGHUP) shrinks the chunk: tokens held beyond it (taken at the
            // old rate, or refunded) are dropped, so the new limit holds from this tick.
            self.tokens[p] = self.tokens[p].min(self.shared.chunk(p));
            self.pressure[p] = self.pressure[p].saturating_sub(1);
            self.top_up(p);
            if self.empty[p] && self.tokens[p] > 0 {
                self.empty[p] = false;
                resumed[p % 2] = true;
            }
        }
        resumed
    }

    /// The shared budget.
    pub fn shared(&self) -> &Arc<SharedBudget> {
        &self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn rates(rate: u64, burst: u64) -> BwRates {
        BwRates {
            rate,
            burst,
            relay_rate: 0,
            relay_burst: 0,
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Spends everything a shard can get right now in `dir` for `class`; returns the total.
    fn drain(b: &mut ShardBuckets, class: BwClass, dir: BwDir) -> u64 {
        let mut total = 0;
        for _ in 0..100_000 {
            let a = b.allowance(class, dir);
            if a <= 0 {
                break;
            }
            let n = a.min(16 * 1024) as u64;
            total += n;
            if b.charge(class, dir, n) {
                break;
            }
        }
        total
    }

    #[test]
    fn starts_full_and_caps_at_burst() {
        let t0 = Instant::now();
        let s = SharedBudget::new(1, rates(MB, 2 * MB), t0);
        assert_eq!(s.tokens()[0], (2 * MB) as i64);
        // A long idle time does not grow the bucket past the burst.
        assert!(s.refill(ms(t0, 10_000)));
        assert_eq!(s.tokens()[0], (2 * MB) as i64);
        let mut b = ShardBuckets::new(s.clone(), 0);
        let got = drain(&mut b, BwClass::Global, BwDir::Read);
        assert_eq!(got, 2 * MB, "exactly the burst");
        assert!(b.blocked(BwClass::Global, BwDir::Read));
    }

    #[test]
    fn an_unsharded_consumer_shares_the_shards_budget() {
        let t0 = Instant::now();
        let rates = BwRates {
            rate: 4000,
            burst: 4000,
            relay_rate: 0,
            relay_burst: 0,
        };
        let b = SharedBudget::new(4, rates, t0);
        // Full: 1000 per slot. The directory server takes 2500 of the global write pool,
        // evenly from the slots; the shards find only what is left.
        assert_eq!(b.take_unsharded(1, 2500), 2500);
        assert_eq!(b.tokens()[1], 1500);
        let shards: i64 = (0..4).map(|s| b.take(s, 1, 1000)).sum();
        assert_eq!(shards, 1500, "together never more than the burst");
        assert_eq!(b.take_unsharded(1, 10), 0);
        // Other pools are untouched; a bad pool or amount takes nothing.
        assert_eq!(b.tokens()[0], 4000);
        assert_eq!(b.take_unsharded(POOLS, 10), 0);
        assert_eq!(b.take_unsharded(0, -1), 0);
        // After a refill it takes the spare first, then the slots.
        assert!(b.refill(t0 + Duration::from_millis(500)));
        assert_eq!(b.take_unsharded(1, 5000), 2000);
    }

    #[test]
    fn a_shard_running_dry_on_writes_is_seen_by_the_directory_server() {
        // C `connection_buckets_decrement` sets `write_buckets_last_empty_at` for any
        // connection's write; the DirPort's 503 rule reads it.
        let t0 = Instant::now();
        let s = SharedBudget::new(2, rates(100_000, 100_000), t0);
        let mut b = ShardBuckets::new(s.clone(), 0);
        assert!(!s.write_ran_dry_within(t0, Duration::from_secs(1)));
        // Reads running dry do not count.
        drain(&mut b, BwClass::Relayed, BwDir::Read);
        assert!(b.blocked(BwClass::Relayed, BwDir::Read));
        assert!(!s.write_ran_dry_within(t0, Duration::from_secs(1)));
        // OR traffic (relayed class) drains the writes: seen at the last refill's time.
        let t1 = ms(t0, 300);
        assert!(s.refill(t1));
        drain(&mut b, BwClass::Relayed, BwDir::Write);
        assert!(b.blocked(BwClass::Relayed, BwDir::Write));
        assert!(s.write_ran_dry_within(ms(t0, 1300), Duration::from_secs(1)));
        assert!(!s.write_ran_dry_within(ms(t0, 1400), Duration::from_secs(1)));
        // The directory server's own note moves it forward, never back.
        s.note_write_empty(ms(t0, 2000));
        s.note_write_empty(ms(t0, 100));
        assert!(s.write_ran_dry_within(ms(t0, 2900), Duration::from_secs(1)));
        assert!(!s.write_ran_dry_within(ms(t0, 3100), Duration::from_secs(1)));
    }

    #[test]
    fn refill_adds_rate_times_elapsed() {
        let t0 = Instant::now();
        let s = SharedBudget::new(1, rates(MB, MB), t0);
        let mut b = ShardBuckets::new(s.clone(), 0);
        assert_eq!(drain(&mut b, BwClass::Global, BwDir::Write), MB);
        let mut total = 0;
        // 10 ticks of 100 ms: one second's worth, i.e. the rate.
        for i in 1..=10 {
            let resumed = b.on_tick(ms(t0, 100 * i));
            assert!(resumed[BwDir::Write as usize], "tick {i} resumes writing");
            total += drain(&mut b, BwClass::Global, BwDir::Write);
        }
        let want = MB as f64;
        assert!(
            (total as f64 - want).abs() < want * 0.01,
            "{total} bytes in 1 s at {MB} B/s"
        );
    }

    #[test]
    fn reads_and_writes_have_separate_buckets() {
        let t0 = Instant::now();
        let s = SharedBudget::new(1, rates(MB, MB), t0);
        let mut b = ShardBuckets::new(s, 0);
        assert_eq!(drain(&mut b, BwClass::Global, BwDir::Read), MB);
        assert!(b.blocked(BwClass::Global, BwDir::Read));
        assert!(!b.blocked(BwClass::Global, BwDir::Write));
        assert_eq!(drain(&mut b, BwClass::Global, BwDir::Write), MB);
    }

    #[test]
    fn reads_may_overdraw_and_the_debt_is_paid_by_refills() {
        let t0 = Instant::now();
        let s = SharedBudget::new(1, rates(MB, MB), t0);
        let mut b = ShardBuckets::new(s, 0);
        // A receive larger than everything left: charged in full.
        assert!(b.charge(BwClass::Global, BwDir::Read, 2 * MB));
        // 100 ms adds 0.1 MB: still in debt, stays blocked.
        assert_eq!(b.on_tick(ms(t0, 100)), [false, false]);
        assert!(b.blocked(BwClass::Global, BwDir::Read));
        // After a further second the debt (1 MB) is paid and reading resumes.
        for i in 2..=11 {
            b.on_tick(ms(t0, 100 * i));
        }
        assert!(!b.blocked(BwClass::Global, BwDir::Read));
    }

    #[test]
    fn relayed_traffic_draws_from_both_buckets_and_exempt_from_none() {
        let t0 = Instant::now();
        let r = BwRates {
            rate: 4 * MB,
            burst: 4 * MB,
            relay_rate: MB,
            relay_burst: MB,
        };
        let s = SharedBudget::new(1, r, t0);
        let mut b = ShardBuckets::new(s, 0);
        assert_eq!(drain(&mut b, BwClass::Relayed, BwDir::Write), MB);
        assert!(b.blocked(BwClass::Relayed, BwDir::Write));
        // The global bucket paid for it too, but has 3 MB left for exit streams.
        assert!(!b.blocked(BwClass::Global, BwDir::Write));
        assert_eq!(drain(&mut b, BwClass::Global, BwDir::Write), 3 * MB);
        assert_eq!(b.allowance(BwClass::Exempt, BwDir::Write), i64::MAX);
        assert!(!b.charge(BwClass::Exempt, BwDir::Write, 10 * MB));
    }

    #[test]
    fn two_busy_shards_share_the_rate_equally() {
        let t0 = Instant::now();
        let s = SharedBudget::new(2, rates(2 * MB, 2 * MB), t0);
        let mut a = ShardBuckets::new(s.clone(), 0);
        let mut b = ShardBuckets::new(s.clone(), 1);
        let (mut ta, mut tb) = (0u64, 0u64);
        // Shard 0 is greedy: it ticks first and drains before shard 1 gets a look.
        for i in 1..=50 {
            a.on_tick(ms(t0, 100 * i));
            ta += drain(&mut a, BwClass::Global, BwDir::Read);
            b.on_tick(ms(t0, 100 * i + 50));
            tb += drain(&mut b, BwClass::Global, BwDir::Read);
        }
        let total = (ta + tb) as f64;
        // 5 s at 2 MB/s plus the initial 2 MB burst.
        let want = (12 * MB) as f64;
        assert!((total - want).abs() < want * 0.02, "{ta} + {tb}");
        let (fa, fb) = (ta as f64 / total, tb as f64 / total);
        assert!(
            (fa - 0.5).abs() < 0.05,
            "shard 0 got {fa:.3}, shard 1 {fb:.3}"
        );
    }

    #[test]
    fn an_idle_shard_leaves_its_share_to_a_busy_one() {
        let t0 = Instant::now();
        let s = SharedBudget::new(2, rates(2 * MB, 2 * MB), t0);
        let mut a = ShardBuckets::new(s.clone(), 0);
        let mut b = ShardBuckets::new(s.clone(), 1);
        let mut ta = drain(&mut a, BwClass::Global, BwDir::Read);
        let start = ta;
        for i in 1..=20 {
            a.on_tick(ms(t0, 100 * i));
            b.on_tick(ms(t0, 100 * i + 50));
            ta += drain(&mut a, BwClass::Global, BwDir::Read);
        }
        // Two seconds at the full rate go to the busy shard (less one slot the idle shard
        // keeps topped up, bounded by a burst in total).
        let after = (ta - start) as f64;
        let want = (4 * MB) as f64;
        assert!(after > want * 0.7 && after < want * 1.05, "{after}");
        let total_budget: i64 = s.tokens()[0] + a.tokens()[0] + b.tokens()[0];
        assert!(
            total_budget <= (2 * MB) as i64 + 2 * s.chunk(0),
            "{total_budget}"
        );
    }

    #[test]
    fn raising_and_lowering_the_limit_applies_at_the_next_tick() {
        let t0 = Instant::now();
        let s = SharedBudget::new(2, rates(MB, MB), t0);
        let mut a = ShardBuckets::new(s.clone(), 0);
        drain(&mut a, BwClass::Global, BwDir::Write);
        a.on_tick(ms(t0, 100));
        let slow = drain(&mut a, BwClass::Global, BwDir::Write);
        assert!(slow <= MB / 10 + 1024, "{slow}");
        // Lifted (C tor's default 1 GB): the next tick brings plenty.
        s.set_rates(rates(1 << 30, 1 << 30));
        a.on_tick(ms(t0, 200));
        let fast = drain(&mut a, BwClass::Global, BwDir::Write);
        assert!(fast > 20 * MB, "{fast}");
        // Lowered again: tokens above the new burst are dropped.
        s.set_rates(rates(MB, MB));
        assert!(s.tokens()[1] <= MB as i64, "{:?}", s.tokens());
    }

    #[test]
    fn pressure_lasts_a_few_ticks_after_the_pool_ran_dry() {
        let t0 = Instant::now();
        let s = SharedBudget::new(1, rates(MB, MB), t0);
        let mut b = ShardBuckets::new(s, 0);
        assert!(!b.pressed(BwClass::Global, BwDir::Read));
        drain(&mut b, BwClass::Global, BwDir::Read);
        assert!(b.pressed(BwClass::Global, BwDir::Read));
        assert!(!b.pressed(BwClass::Global, BwDir::Write));
        assert!(!b.pressed(BwClass::Exempt, BwDir::Read));
        for i in 1..=u64::from(PRESSURE_TICKS) {
            assert!(b.pressed(BwClass::Global, BwDir::Read), "tick {i}");
            b.on_tick(ms(t0, 100 * i));
        }
        assert!(!b.pressed(BwClass::Global, BwDir::Read));
    }

    #[test]
    fn concurrent_refill_happens_once_per_interval() {
        let t0 = Instant::now();
        let s = SharedBudget::new(2, rates(MB, MB), t0);
        assert!(s.refill(ms(t0, 100)));
        assert!(!s.refill(ms(t0, 101)), "too soon after the last refill");
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || s.refill(ms(t0, 200)))
            })
            .collect();
        let wins: usize = threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(wins, 1);
        assert_eq!(s.refills(), 2);
    }
}
