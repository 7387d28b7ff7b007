//! Latency histograms with fixed buckets, one set per shard, rendered as Prometheus
//! histograms (per shard, and summed over the shards at scrape time).
//!
//! The shard thread is the only writer of its [`ShardLatency`]: an observation is a
//! relaxed load and store on two counters (no read-modify-write, no lock, no allocation),
//! meant to be taken once per batch (an onionskin batch, a channel read's cells), not per
//! cell: [`LatencyHistogram::observe_n`] records one duration for the `n` cells of a batch.
//! Readers (the MetricsPort) load relaxed: a scrape may see a bucket one observation ahead
//! of the sum, which monitoring tolerates.
//!
//! A family is rendered only once something has been observed in it: a histogram no code
//! path records into yet is not exported as if it measured zero.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, microseconds (`le` labels, in seconds); +Inf follows.
pub const BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Bounds of the cell queueing delay, microseconds: a cell handled in the read that brought
/// it takes microseconds, so the buckets start at 10 µs; cells held for a blocked channel
/// wait milliseconds to seconds (every bound of the pool's own buckets,
/// `proto::circuit::pool::QUEUE_DELAY_BOUNDS_MS`, is one of these).
pub const QUEUE_DELAY_BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Bucket slots of the widest family (+Inf included); a family with fewer bounds leaves
/// the slots past its +Inf at zero.
const SLOTS: usize = max(BOUNDS_US.len(), QUEUE_DELAY_BOUNDS_US.len()) + 1;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// One histogram of one shard.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Upper bounds of its buckets, microseconds (+Inf follows).
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); slot `bounds.len()` is +Inf.
    buckets: [AtomicU64; SLOTS],
    /// Sum of the observations, microseconds.
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::with_bounds(&BOUNDS_US)
    }
}

/// A histogram's values at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Observations per bucket (not cumulative); slot `bounds.len()` is +Inf.
    pub buckets: [u64; SLOTS],
    pub sum_us: u64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }
}

/// Relaxed `+= n` for a counter with a single writer (no locked instruction).
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl LatencyHistogram {
    /// A histogram over `bounds` (microseconds, increasing, at most `SLOTS - 1` of them).
    pub fn with_bounds(bounds: &'static [u64]) -> Self {
        assert!(bounds.len() < SLOTS && bounds.windows(2).all(|w| w[0] < w[1]));
        LatencyHistogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Upper bounds of the buckets, microseconds.
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Records one observation. Only the owning shard thread may call this.
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Records `n` observations of the same duration (the cells of one batch) at the cost
    /// of one. Only the owning shard thread may call this.
    pub fn observe_n(&self, d: Duration, n: u64) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.add(us, n, us.saturating_mul(n));
    }

    /// Adds `n` observations that lie at or below `upper_us` (and above the bound before
    /// it) and together sum to `sum_us`: counts kept elsewhere in coarser buckets whose
    /// bounds are among these (`u64::MAX`: +Inf). Only the owning shard thread may call this.
    pub fn add(&self, upper_us: u64, n: u64, sum_us: u64) {
        if n == 0 {
            return;
        }
        let slot = self.bounds.partition_point(|&b| b < upper_us);
        bump(&self.buckets[slot], n);
        bump(&self.sum_us, sum_us);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The latency histograms of one shard. Names are those of the exported families.
#[derive(Debug)]
pub struct ShardLatency {
    /// Time one batch of queued onionskins (CREATE2/CREATE_FAST) took to process.
    pub onionskin_batch: LatencyHistogram,
    /// Time from an exit stream's connect request to the connected (or failed) event.
    pub exit_connect: LatencyHistogram,
    /// Time a relay cell this shard sends on a channel spent in the relay: from the start
    /// of handling the read (or cross-shard batch) that brought it, or that brought the
    /// exit data it carries, to its hand-over to the connection's output; for a cell held
    /// for a blocked channel, from its pool enqueue stamp to its release (docs/
    /// architecture.md, "Cell queueing delay").
    pub cell_queue_delay: LatencyHistogram,
}

impl Default for ShardLatency {
    fn default() -> Self {
        ShardLatency {
            onionskin_batch: LatencyHistogram::default(),
            exit_connect: LatencyHistogram::default(),
            cell_queue_delay: LatencyHistogram::with_bounds(&QUEUE_DELAY_BOUNDS_US),
        }
    }
}

/// `(family name, help, pick)` for every histogram of [`ShardLatency`].
type Pick = fn(&ShardLatency) -> &LatencyHistogram;
pub const FAMILIES: [(&str, &str, Pick); 3] = [
    (
        "fors_relay_onionskin_batch_seconds",
        "Time to process one batch of queued onionskins.",
        |l| &l.onionskin_batch,
    ),
    (
        "fors_relay_exit_connect_seconds",
        "Time from an exit stream's connect request to its outcome.",
        |l| &l.exit_connect,
    ),
    (
        "fors_relay_cell_queue_delay_seconds",
        "Time a relay cell spent in the relay, from the read that brought it to its hand-over to the connection's output.",
        |l| &l.cell_queue_delay,
    ),
];

fn secs(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// Writes one histogram's `_bucket`, `_sum` and `_count` lines (`labels` may be empty).
fn write_series(out: &mut String, name: &str, labels: &str, bounds: &[u64], s: &Snapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, n) in s.buckets[..=bounds.len()].iter().enumerate() {
        cumulative += n;
        let le = bounds
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |&b| secs(b));
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {}", braces(labels), secs(s.sum_us));
    let _ = writeln!(out, "{name}_count{} {}", braces(labels), s.count());
}

/// Renders every family with at least one observation: one series per shard
/// (`shard="N"`) and their sum as `fors_relay_all_shards_<name>`.
pub fn render(out: &mut String, shards: &[&ShardLatency]) {
    for (name, help, pick) in FAMILIES {
        let snaps: Vec<Snapshot> = shards.iter().map(|l| pick(l).snapshot()).collect();
        let mut total = Snapshot::default();
        snaps.iter().for_each(|s| total.merge(s));
        if total.count() == 0 {
            continue;
        }
        let bounds = pick(shards[0]).bounds();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, s) in snaps.iter().enumerate() {
            write_series(out, name, &format!("shard=\"{i}\""), bounds, s);
        }
        let all = format!(
            "fors_relay_all_shards_{}",
            name.strip_prefix("fors_relay_").unwrap_or(name)
        );
        let _ = writeln!(
            out,
            "# HELP {all} {help} Sum over all shards.\n# TYPE {all} histogram"
        );
        write_series(out, &all, "", bounds, &total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50)); // le 50 µs (bounds are inclusive)
        h.observe(Duration::from_micros(51)); // le 100 µs
        h.observe(Duration::from_millis(3)); // le 5 ms
        h.observe(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[BOUNDS_US.partition_point(|&b| b < 3_000)], 1);
        assert_eq!(s.buckets[BOUNDS_US.len()], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 50 + 51 + 3_000 + 60_000_000);
    }

    /// One call per batch: `observe_n` counts `n` cells at the batch's duration, on the
    /// queue delay's own bounds (inclusive upper edges, 10 µs first, 10 s last, +Inf).
    #[test]
    fn observe_n_counts_a_batch_at_the_bucket_edges() {
        let h = ShardLatency::default().cell_queue_delay;
        assert_eq!(h.bounds(), &QUEUE_DELAY_BOUNDS_US);
        h.observe_n(Duration::from_micros(10), 7); // le 10 µs: the edge is inclusive
        h.observe_n(Duration::from_nanos(10_999), 2); // 10 µs (whole µs): still le 10 µs
        h.observe_n(Duration::from_micros(11), 3); // le 25 µs
        h.observe_n(Duration::ZERO, 4); // le 10 µs
        h.observe_n(Duration::from_millis(40), 0); // nothing
        h.observe_n(Duration::from_secs(10), 1); // le 10 s, the last bound
        h.observe_n(Duration::from_micros(10_000_001), 5); // +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 7 + 2 + 4);
        assert_eq!(s.buckets[1], 3);
        assert_eq!(s.buckets[QUEUE_DELAY_BOUNDS_US.len() - 1], 1);
        assert_eq!(s.buckets[QUEUE_DELAY_BOUNDS_US.len()], 5);
        assert_eq!(s.count(), 7 + 2 + 3 + 4 + 1 + 5);
        assert_eq!(
            s.sum_us,
            7 * 10 + 2 * 10 + 3 * 11 + 10_000_000 + 5 * 10_000_001
        );
        // Counts kept in coarser buckets elsewhere (the cell pool's, in ms) land in the
        // bucket whose upper bound is theirs.
        h.add(50_000, 6, 6 * 30_000);
        h.add(u64::MAX, 1, 20_000_000);
        let t = h.snapshot();
        let at_50ms = QUEUE_DELAY_BOUNDS_US.partition_point(|&b| b < 50_000);
        assert_eq!(t.buckets[at_50ms] - s.buckets[at_50ms], 6);
        assert_eq!(t.buckets[QUEUE_DELAY_BOUNDS_US.len()], 6);
        assert_eq!(t.sum_us - s.sum_us, 6 * 30_000 + 20_000_000);
        // Every bound of the pool's millisecond buckets is one of ours.
        for ms in crate::proto::circuit::pool::QUEUE_DELAY_BOUNDS_MS {
            assert!(
                QUEUE_DELAY_BOUNDS_US.contains(&(u64::from(ms) * 1000)),
                "{ms} ms"
            );
        }
    }

    #[test]
    fn renders_cumulative_buckets_per_shard_and_summed_only_once_observed() {
        let a = ShardLatency::default();
        let b = ShardLatency::default();
        let mut out = String::new();
        render(&mut out, &[&a, &b]);
        assert!(out.is_empty(), "nothing observed, nothing claimed: {out}");

        a.onionskin_batch.observe(Duration::from_micros(80));
        b.onionskin_batch.observe(Duration::from_micros(80));
        b.onionskin_batch.observe(Duration::from_millis(2));
        render(&mut out, &[&a, &b]);
        for line in [
            "# TYPE fors_relay_onionskin_batch_seconds histogram",
            "fors_relay_onionskin_batch_seconds_bucket{shard=\"0\",le=\"0.000050\"} 0",
            "fors_relay_onionskin_batch_seconds_bucket{shard=\"0\",le=\"0.000100\"} 1",
            "fors_relay_onionskin_batch_seconds_bucket{shard=\"1\",le=\"0.001000\"} 1",
            "fors_relay_onionskin_batch_seconds_bucket{shard=\"1\",le=\"0.002500\"} 2",
            "fors_relay_onionskin_batch_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2",
            "fors_relay_onionskin_batch_seconds_sum{shard=\"1\"} 0.002080",
            "fors_relay_onionskin_batch_seconds_count{shard=\"1\"} 2",
            "# TYPE fors_relay_all_shards_onionskin_batch_seconds histogram",
            "fors_relay_all_shards_onionskin_batch_seconds_bucket{le=\"0.000100\"} 2",
            "fors_relay_all_shards_onionskin_batch_seconds_bucket{le=\"+Inf\"} 3",
            "fors_relay_all_shards_onionskin_batch_seconds_sum 0.002160",
            "fors_relay_all_shards_onionskin_batch_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        // The other families saw nothing and stay out.
        assert!(!out.contains("exit_connect"));
        assert!(!out.contains("cell_queue_delay"));

        // The queue delay renders on its own bounds, 10 µs … 10 s.
        let mut out = String::new();
        b.cell_queue_delay.observe_n(Duration::from_micros(8), 64);
        render(&mut out, &[&a, &b]);
        for line in [
            "# TYPE fors_relay_cell_queue_delay_seconds histogram",
            "fors_relay_cell_queue_delay_seconds_bucket{shard=\"0\",le=\"+Inf\"} 0",
            "fors_relay_cell_queue_delay_seconds_bucket{shard=\"1\",le=\"0.000010\"} 64",
            "fors_relay_cell_queue_delay_seconds_bucket{shard=\"1\",le=\"10.000000\"} 64",
            "fors_relay_cell_queue_delay_seconds_count{shard=\"1\"} 64",
            "fors_relay_all_shards_cell_queue_delay_seconds_sum 0.000512",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        let buckets = out
            .lines()
            .filter(|l| l.starts_with("fors_relay_all_shards_cell_queue_delay_seconds_bucket"))
            .count();
        assert_eq!(buckets, QUEUE_DELAY_BOUNDS_US.len() + 1);
        let buckets = out
            .lines()
            .filter(|l| l.starts_with("fors_relay_all_shards_onionskin_batch_seconds_bucket"))
            .count();
        assert_eq!(buckets, BOUNDS_US.len() + 1);
    }
}
