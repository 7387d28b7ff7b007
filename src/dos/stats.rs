//! DoS counters, relay-wide (all shards add to the same atomics; they change only when a
//! defence acts or a connection opens or closes, never per relayed cell).

use std::sync::atomic::{AtomicU64, Ordering};

use super::config::DosConfig;

/// What the DoS defences did since start-up (C tor's heartbeat and `tor_relay_dos_total`).
#[derive(Debug, Default)]
pub struct DosCounters {
    /// CREATE* cells refused or, with defence type 1, that would have been (C
    /// `cc_num_rejected_cells`).
    pub cc_rejected_cells: AtomicU64,
    /// Addresses marked by the circuit-creation detection (C `cc_num_marked_addrs`).
    pub cc_marked_addrs: AtomicU64,
    /// Connections over `DoSConnectionMaxConcurrentCount` (C `conn_num_addr_rejected`).
    pub conn_concurrent_rejected: AtomicU64,
    /// Connections from addresses marked by the connect rate (C
    /// `conn_num_addr_connect_rejected`).
    pub conn_connect_rejected: AtomicU64,
    /// Addresses marked by the connect-rate detection (Fors only).
    pub conn_marked_addrs: AtomicU64,
    /// Connections served untracked: every slot of their probe window held open
    /// connections of other addresses (fail open).
    pub table_full: AtomicU64,
    /// Idle slots given to another address.
    pub table_reclaims: AtomicU64,
    /// Slots taken from an address with no connection but a mark in force (or a partly
    /// drained bucket) because its probe window had no idle slot: that address lost its
    /// state.
    pub table_evictions: AtomicU64,
    /// Gauges: slots holding an address, slots in all, connections tracked now.
    pub table_entries: AtomicU64,
    pub table_slots: AtomicU64,
    pub tracked_connections: AtomicU64,
}

impl DosCounters {
    /// C tor's heartbeat line (`dos_log_heartbeat`), less what Fors has no part of.
    pub fn heartbeat(&self, cfg: &DosConfig) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        if cfg.cc_enabled {
            parts.push(format!(
                "{} circuits rejected, {} marked addresses",
                g(&self.cc_rejected_cells),
                g(&self.cc_marked_addrs)
            ));
        } else {
            parts.push("[DoSCircuitCreationEnabled disabled]".to_string());
        }
        if cfg.conn_enabled {
            parts.push(format!(
                "{} same address concurrent connections rejected",
                g(&self.conn_concurrent_rejected)
            ));
            parts.push(format!(
                "{} connections rejected",
                g(&self.conn_connect_rejected)
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
            g(&self.tracked_connections),
            g(&self.table_full)
        )
    }
}
