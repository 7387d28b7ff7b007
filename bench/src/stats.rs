//! Measurements: per-worker counters and histograms (merged at the end), the shared live
//! counters the progress line reads, and getrusage for the load generator's own CPU time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Counters every worker bumps with relaxed atomics; read once a second for progress.
#[derive(Debug, Default)]
pub struct Live {
    /// Payload bytes verified (download) or sent (upload).
    pub bytes: AtomicU64,
    /// Relay cells sent plus received.
    pub cells: AtomicU64,
    pub circuits_open: AtomicU64,
    pub handshakes: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Histogram over 1 µs .. 1 h with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// What one worker measured.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub bytes_down: u64,
    /// Upload bytes the server confirmed intact (`OK`).
    pub bytes_up: u64,
    pub cells_sent: u64,
    pub cells_received: u64,
    pub circuits_built: u64,
    pub streams_done: u64,
    /// Streams opened that had to finish (all of them, also in `--duration` runs, where
    /// no new stream starts after the end and open ones run to completion).
    pub streams_expected: u64,
    pub handshakes: u64,
    pub integrity_errors: u64,
    pub errors: BTreeMap<String, u64>,
    /// Per hop (first hop first): circuits that opened with each relay crypto ("tor1",
    /// "cgo"), as the handshakes negotiated it.
    pub hop_crypto: Vec<BTreeMap<String, u64>>,
    /// Download: gap between consecutive DATA cells of one circuit (µs).
    pub cell_gap_us: Histogram<u64>,
    /// Upload: time from sending the DATA cell a SENDME v1 acknowledges to receiving it (µs).
    pub sendme_rtt_us: Histogram<u64>,
    /// BEGIN sent → first byte of data (µs).
    pub ttfb_us: Histogram<u64>,
    /// CREATE2/EXTEND2 sent → CREATED2/EXTENDED2 received (µs), per hop.
    pub handshake_us: Histogram<u64>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            bytes_down: 0,
            bytes_up: 0,
            cells_sent: 0,
            cells_received: 0,
            circuits_built: 0,
            streams_done: 0,
            streams_expected: 0,
            handshakes: 0,
            integrity_errors: 0,
            errors: BTreeMap::new(),
            hop_crypto: Vec::new(),
            cell_gap_us: new_histogram(),
            sendme_rtt_us: new_histogram(),
            ttfb_us: new_histogram(),
            handshake_us: new_histogram(),
        }
    }
}

impl WorkerStats {
    /// Counts an error by reason (a short, stable name).
    pub fn error(&mut self, reason: &str) {
        *self.errors.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts a circuit whose hop `hop` opened with relay crypto `kind`.
    pub fn hop_crypto(&mut self, hop: usize, kind: &str) {
        self.add_hop_crypto(hop, kind, 1);
    }

    /// Counts `n` circuits whose hop `hop` opened with relay crypto `kind`.
    pub fn add_hop_crypto(&mut self, hop: usize, kind: &str, n: u64) {
        if self.hop_crypto.len() <= hop {
            self.hop_crypto.resize_with(hop + 1, BTreeMap::new);
        }
        *self.hop_crypto[hop].entry(kind.to_string()).or_default() += n;
    }

    /// Records into a histogram, clamping to its range instead of failing.
    pub fn record(h: &mut Histogram<u64>, v: u64) {
        let _ = h.record(v.clamp(1, h.high()));
    }

    pub fn merge(&mut self, o: &WorkerStats) {
        self.bytes_down += o.bytes_down;
        self.bytes_up += o.bytes_up;
        self.cells_sent += o.cells_sent;
        self.cells_received += o.cells_received;
        self.circuits_built += o.circuits_built;
        self.streams_done += o.streams_done;
        self.streams_expected += o.streams_expected;
        self.handshakes += o.handshakes;
        self.integrity_errors += o.integrity_errors;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (hop, kinds) in o.hop_crypto.iter().enumerate() {
            for (k, n) in kinds {
                self.add_hop_crypto(hop, k, *n);
            }
        }
        let _ = self.cell_gap_us.add(&o.cell_gap_us);
        let _ = self.sendme_rtt_us.add(&o.sendme_rtt_us);
        let _ = self.ttfb_us.add(&o.ttfb_us);
        let _ = self.handshake_us.add(&o.handshake_us);
    }
}

/// User plus system CPU seconds this process has used (all threads), from getrusage.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass; RUSAGE_SELF is valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The calling thread's user+system CPU time (getrusage RUSAGE_THREAD), to split the
/// process's CPU between the workers and the built-in sink.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: as above, with RUSAGE_THREAD (Linux) naming the calling thread.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) != 0 {
            return 0.0;
        }
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = WorkerStats::default();
        let mut b = WorkerStats::default();
        a.bytes_down = 10;
        b.bytes_down = 5;
        a.error("destroy");
        b.error("destroy");
        b.error("timeout");
        WorkerStats::record(&mut a.cell_gap_us, 100);
        WorkerStats::record(&mut b.cell_gap_us, 0); // clamped to 1
        WorkerStats::record(&mut b.cell_gap_us, u64::MAX); // clamped to the top
        a.hop_crypto(0, "tor1");
        b.hop_crypto(1, "cgo");
        b.hop_crypto(0, "tor1");
        a.merge(&b);
        assert_eq!(a.hop_crypto[0]["tor1"], 2);
        assert_eq!(a.hop_crypto[1]["cgo"], 1);
        assert_eq!(a.bytes_down, 15);
        assert_eq!(a.errors["destroy"], 2);
        assert_eq!(a.errors["timeout"], 1);
        assert_eq!(a.cell_gap_us.len(), 3);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let t0 = process_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds() > t0);
        let t1 = thread_cpu_seconds();
        assert!(t1 > 0.0 && t1 <= process_cpu_seconds());
    }
}
