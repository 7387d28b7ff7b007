//! DoS counters, relay-wide. They change only when a defence acts or a connection opens or
//! closes, never per relayed cell; but under a flood (refused CREATE cells, refused
//! connects) every shard would add to the same cache line, so those counters are striped:
//! each thread adds to its own padded stripe and readers sum the stripes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes of a [`StripedCounter`]; threads beyond that share stripes round-robin.
const STRIPES: usize = 16;

/// One stripe, alone on its cache line(s) (128 bytes covers adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// This thread's stripe, handed out round-robin at first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    MINE.with(|s| *s)
}

/// A counter that many threads update and few read: the calls of an `AtomicU64`, but an
/// add touches only the calling thread's stripe. Values wrap, so a gauge may be raised on
/// one thread and lowered on another (one stripe wraps below 0, the sum is right).
#[derive(Debug, Default)]
pub struct StripedCounter([Stripe; STRIPES]);

impl StripedCounter {
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        self.0[stripe()].0.fetch_add(n, order);
    }

    pub fn fetch_sub(&self, n: u64, order: Ordering) {
        self.0[stripe()].0.fetch_sub(n, order);
    }

    /// The sum of the stripes (not a snapshot: adds racing the read may or may not be in).
    pub fn load(&self, order: Ordering) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(order)))
    }

    /// Sets the total (tests, resets): `v` in one stripe, 0 in the others.
    pub fn store(&self, v: u64, order: Ordering) {
        for (i, s) in self.0.iter().enumerate() {
            s.0.store(if i == 0 { v } else { 0 }, order);
        }
    }
}

use super::config::DosConfig;

/// What the DoS defences did since start-up (C tor's heartbeat and `tor_relay_dos_total`).
#[derive(Debug, Default)]
pub struct DosCounters {
    /// CREATE* cells refused or, with defence type 1, that would have been (C
    /// `cc_num_rejected_cells`).
    pub cc_rejected_cells: StripedCounter,
    /// Addresses marked by the circuit-creation detection (C `cc_num_marked_addrs`).
    pub cc_marked_addrs: AtomicU64,
    /// Connections over `DoSConnectionMaxConcurrentCount` (C `conn_num_addr_rejected`).
    pub conn_concurrent_rejected: StripedCounter,
    /// Connections from addresses marked by the connect rate (C
    /// `conn_num_addr_connect_rejected`).
    pub conn_connect_rejected: StripedCounter,
    /// Addresses marked by the connect-rate detection (Fors only).
    pub conn_marked_addrs: AtomicU64,
    /// Connections served untracked: every slot of their probe window held open
    /// connections of other addresses (fail open).
    pub table_full: StripedCounter,
    /// Idle slots given to another address.
    pub table_reclaims: AtomicU64,
    /// Slots taken from an address with no connection but a mark in force (or a partly
    /// drained bucket) because its probe window had no idle slot: that address lost its
    /// state.
    pub table_evictions: AtomicU64,
    /// Gauges: slots holding an address, slots in all, connections tracked now.
    pub table_entries: AtomicU64,
    pub table_slots: AtomicU64,
    pub tracked_connections: StripedCounter,
}

impl DosCounters {
    /// C tor's heartbeat line (`dos_log_heartbeat`), less what Fors has no part of.
    pub fn heartbeat(&self, cfg: &DosConfig) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gs = |a: &StripedCounter| a.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        if cfg.cc_enabled {
            parts.push(format!(
                "{} circuits rejected, {} marked addresses",
                gs(&self.cc_rejected_cells),
                g(&self.cc_marked_addrs)
            ));
        } else {
            parts.push("[DoSCircuitCreationEnabled disabled]".to_string());
        }
        if cfg.conn_enabled {
            parts.push(format!(
                "{} same address concurrent connections rejected",
                gs(&self.conn_concurrent_rejected)
            ));
            parts.push(format!(
                "{} connections rejected",
                gs(&self.conn_connect_rejected)
            ));
        } else {
            parts.push("[DoSConnectionEnabled disabled]".to_string());
        }
        format!(
            "Heartbeat: DoS mitigation since startup: {}. Address table: {}/{} entries, {} \
             connections tracked, {} untracked because full.",
            parts.join(", "),
            g(&self.table_entries),
            g(&self.table_slots),
            gs(&self.tracked_connections),
            gs(&self.table_full)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn striped_counter_sums_over_threads() {
        let c = Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.fetch_add(2, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.load(Ordering::Relaxed), 40_000);
        // Raised on one thread, lowered on another: the sum is still right.
        let d = Arc::new(StripedCounter::default());
        d.fetch_add(3, Ordering::Relaxed);
        let d2 = d.clone();
        std::thread::spawn(move || d2.fetch_sub(2, Ordering::Relaxed))
            .join()
            .unwrap();
        assert_eq!(d.load(Ordering::Relaxed), 1);
        d.store(9, Ordering::Relaxed);
        assert_eq!(d.load(Ordering::Relaxed), 9);
        assert!(std::mem::size_of::<StripedCounter>() >= STRIPES * 128);
    }
}
