//! Latency histograms with fixed buckets, one set per shard, rendered as Prometheus
//! histograms (per shard, and summed over the shards at scrape time).
//!
//! The shard thread is the only writer of its [`ShardLatency`]: an observation is a
//! relaxed load and store on two counters (no read-modify-write, no lock, no allocation),
//! meant to be taken once per batch (an onionskin batch, a channel flush), not per cell.
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
const SLOTS: usize = BOUNDS_US.len() + 1;

/// One histogram of one shard.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; SLOTS],
    /// Sum of the observations, microseconds.
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A histogram's values at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Observations per bucket (not cumulative); the last is +Inf.
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
    /// Records one observation. Only the owning shard thread may call this.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let slot = BOUNDS_US.partition_point(|&b| b < us);
        bump(&self.buckets[slot], 1);
        bump(&self.sum_us, us);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The latency histograms of one shard. Names are those of the exported families.
#[derive(Debug, Default)]
pub struct ShardLatency {
    /// Time one batch of queued onionskins (CREATE2/CREATE_FAST) took to process.
    pub onionskin_batch: LatencyHistogram,
    /// Time from an exit stream's connect request to the connected (or failed) event.
    pub exit_connect: LatencyHistogram,
}

/// `(family name, help, pick)` for every histogram of [`ShardLatency`].
type Pick = fn(&ShardLatency) -> &LatencyHistogram;
pub const FAMILIES: [(&str, &str, Pick); 2] = [
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
];

fn secs(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// Writes one histogram's `_bucket`, `_sum` and `_count` lines (`labels` may be empty).
fn write_series(out: &mut String, name: &str, labels: &str, s: &Snapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, n) in s.buckets.iter().enumerate() {
        cumulative += n;
        let le = BOUNDS_US
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
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, s) in snaps.iter().enumerate() {
            write_series(out, name, &format!("shard=\"{i}\""), s);
        }
        let all = format!(
            "fors_relay_all_shards_{}",
            name.strip_prefix("fors_relay_").unwrap_or(name)
        );
        let _ = writeln!(
            out,
            "# HELP {all} {help} Sum over all shards.\n# TYPE {all} histogram"
        );
        write_series(out, &all, "", &total);
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
        assert_eq!(s.buckets[SLOTS - 1], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 50 + 51 + 3_000 + 60_000_000);
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
    }
}
