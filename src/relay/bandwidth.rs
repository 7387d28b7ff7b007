//! Observed bandwidth for the descriptor's `bandwidth` line (dir-spec §2.1.1
//! "bandwidth ... observed"), computed like C tor's `rep_hist_bandwidth_assess`:
//!
//! - bytes are summed per second and over a rolling window of the last 10 seconds;
//! - the largest 10-second sum is remembered per 24-hour interval, for 5 intervals;
//! - observed = min(largest read sum, largest write sum) / 10, in bytes per second.
//!
//! The input is the shards' cumulative socket byte counters (TLS bytes, all connections),
//! sampled by the control plane about once a second; bytes seen between two samples are
//! booked to the second of the later sample. Sans-IO: time comes in as Unix seconds.

/// Seconds in the rolling window (C `NUM_SECS_ROLLING_MEASURE`).
pub const ROLLING_SECS: usize = 10;
/// Length of one maximum-keeping interval (C `NUM_SECS_BW_SUM_INTERVAL`).
pub const INTERVAL_SECS: u64 = 24 * 60 * 60;
/// Completed intervals remembered (C `NUM_TOTALS`: 5 days / 1 day).
pub const INTERVALS: usize = 5;

/// One direction's history.
#[derive(Clone, Debug, Default)]
struct Direction {
    /// Bytes per second, circular, indexed by second % ROLLING_SECS.
    per_sec: [u64; ROLLING_SECS],
    /// Sum of `per_sec`.
    window: u64,
    /// Largest `window` in the current interval.
    max_current: u64,
    /// Largest `window` of each completed interval, newest last.
    max_past: Vec<u64>,
}

impl Direction {
    fn largest(&self) -> u64 {
        self.max_past
            .iter()
            .copied()
            .fold(self.max_current, u64::max)
    }
}

/// Read and write history.
#[derive(Clone, Debug, Default)]
pub struct BandwidthHistory {
    read: Direction,
    write: Direction,
    /// Second the newest slot belongs to; `None` before the first sample.
    current_sec: Option<u64>,
    interval_start: u64,
    last_totals: Option<(u64, u64)>,
}

impl BandwidthHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the cumulative byte counters at Unix second `now`. Counters that went
    /// backwards (a restarted shard) count as zero new bytes.
    pub fn sample(&mut self, now: u64, read_total: u64, write_total: u64) {
        let (dr, dw) = match self.last_totals {
            None => (0, 0),
            Some((r, w)) => (read_total.saturating_sub(r), write_total.saturating_sub(w)),
        };
        self.last_totals = Some((read_total, write_total));
        self.advance_to(now);
        let slot = (now % ROLLING_SECS as u64) as usize;
        for (d, bytes) in [(&mut self.read, dr), (&mut self.write, dw)] {
            d.per_sec[slot] += bytes;
            d.window += bytes;
            d.max_current = d.max_current.max(d.window);
        }
    }

    /// Moves the window to second `now`, clearing the seconds that passed and closing
    /// intervals that ended.
    fn advance_to(&mut self, now: u64) {
        let Some(cur) = self.current_sec else {
            self.current_sec = Some(now);
            self.interval_start = now;
            return;
        };
        if now <= cur {
            return;
        }
        let steps = (now - cur).min(ROLLING_SECS as u64);
        for s in 1..=steps {
            let slot = ((cur + s) % ROLLING_SECS as u64) as usize;
            for d in [&mut self.read, &mut self.write] {
                d.window -= d.per_sec[slot];
                d.per_sec[slot] = 0;
            }
        }
        if now >= self.interval_start + INTERVAL_SECS * (INTERVALS as u64 + 1) {
            // Silent for longer than the whole history: everything remembered has expired.
            for d in [&mut self.read, &mut self.write] {
                d.max_past.clear();
                d.max_current = 0;
            }
            self.interval_start = now;
        }
        while now >= self.interval_start + INTERVAL_SECS {
            self.interval_start += INTERVAL_SECS;
            for d in [&mut self.read, &mut self.write] {
                d.max_past.push(d.max_current);
                if d.max_past.len() > INTERVALS {
                    d.max_past.remove(0);
                }
                d.max_current = 0;
            }
        }
        self.current_sec = Some(now);
    }

    /// Observed bandwidth in bytes per second.
    pub fn observed(&self) -> u64 {
        self.read.largest().min(self.write.largest()) / ROLLING_SECS as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_of_best_ten_second_rates() {
        let mut h = BandwidthHistory::new();
        h.sample(1000, 0, 0);
        // 20 s of 1000 B/s read, 500 B/s written.
        for s in 1..=20 {
            h.sample(1000 + s, 1000 * s, 500 * s);
        }
        assert_eq!(h.observed(), 500);
        // A 3-second burst of 10 kB/s in both directions: best window now holds it.
        let (mut r, mut w) = (20_000, 10_000);
        for s in 21..=23 {
            r += 10_000;
            w += 10_000;
            h.sample(1000 + s, r, w);
        }
        // Read window: 7 s × 1000 + 3 × 10000 = 37000; write: 7 × 500 + 30000 = 33500.
        assert_eq!(h.observed(), 3350);
        // Idle for a minute: the maximum stays.
        h.sample(1083, r, w);
        assert_eq!(h.observed(), 3350);
    }

    #[test]
    fn maxima_expire_after_five_intervals() {
        let mut h = BandwidthHistory::new();
        h.sample(0, 0, 0);
        h.sample(1, 100_000, 100_000);
        assert_eq!(h.observed(), 10_000);
        let mut t = 1;
        for _ in 0..INTERVALS {
            t += INTERVAL_SECS;
            h.sample(t, 100_000, 100_000);
            assert_eq!(h.observed(), 10_000, "forgotten too early at {t}");
        }
        t += INTERVAL_SECS;
        h.sample(t, 100_000, 100_000);
        assert_eq!(h.observed(), 0);
    }

    #[test]
    fn gaps_and_counter_resets() {
        let mut h = BandwidthHistory::new();
        h.sample(10, 5_000, 5_000);
        // Counters went backwards: no bytes, no underflow.
        h.sample(11, 0, 0);
        assert_eq!(h.observed(), 0);
        h.sample(12, 20_000, 10_000);
        assert_eq!(h.observed(), 1_000);
        // Long gap: the window empties rather than carrying stale seconds.
        h.sample(1_000, 20_000, 10_000);
        h.sample(1_001, 20_010, 10_010);
        assert_eq!(h.read.window, 10);
        // Many days of silence in one step.
        h.sample(1_001 + 100 * INTERVAL_SECS, 20_010, 10_010);
        assert_eq!(h.observed(), 0);
    }
}
