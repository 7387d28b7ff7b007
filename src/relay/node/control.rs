//! The node and the control plane: read-only snapshots (link context, onion keys, exit
//! policy, consensus, DoS options) picked up once per tick, and the shard's counters
//! mirrored into the MetricsPort's [`ShardStats`], without locking on the data path.

use super::*;

impl RelayNode {
    pub(super) fn refresh_snapshot(&mut self) {
        let options_changed = self.dos_options.refresh();
        let network_changed = self.network.refresh();
        if options_changed || network_changed {
            self.dos_cfg = dos_config(self.network.get(), self.dos_options.get());
        }
        if !network_changed {
            return;
        }
        self.stats
            .handler
            .snapshots_taken
            .fetch_add(1, Ordering::Relaxed);
        let snap = self.network.get().clone();
        self.core.set_onion_keys(snap.ntor_keys.clone());
        self.core.set_exit_policy(snap.exit_policy.clone());
        self.core.set_cc_params(cc_params(&snap));
        self.core.set_exit_consensus_params(&snap.consensus_params);
        self.core.set_circpad_params(&snap.consensus_params);
        *self.core.network_view_mut() = SnapshotView(snap);
    }

    pub(super) fn publish_counters(&mut self, out: &impl ShardIo<RelayMsg>) {
        self.publish_pool_delay();
        self.stats.store(out.metrics());
        let m = self.core.metrics();
        self.stats.store_circuit(m);
        if let Some(dns) = &self.dns {
            self.stats.store_dns(&dns.metrics());
            self.stats
                .handler
                .dns_send_errors
                .store(dns.send_errors, Ordering::Relaxed);
        }
        let h = &self.stats.handler;
        h.circuits_open
            .store(self.core.circuit_count() as u64, Ordering::Relaxed);
        h.circuits_created
            .store(m.circuits_created, Ordering::Relaxed);
        h.circuits_cc.store(m.cc_circuits, Ordering::Relaxed);
        h.stream_xoff_sent.store(m.xoff_sent, Ordering::Relaxed);
        h.stream_xon_sent.store(m.xon_sent, Ordering::Relaxed);
        h.cells_forwarded
            .store(m.cells_forwarded, Ordering::Relaxed);
        h.cells_backward.store(m.cells_backward, Ordering::Relaxed);
        h.cells_dropped
            .store(self.cells_dropped_full, Ordering::Relaxed);
        h.exit_streams
            .store(self.streams.len() as u64, Ordering::Relaxed);
        let x = &self.cross;
        h.cross_circuits_open
            .store(self.remote_next.len() as u64, Ordering::Relaxed);
        h.cross_circuits_carried
            .store(self.proxy.len() as u64, Ordering::Relaxed);
        h.cross_circuits_total
            .store(x.circuits_total, Ordering::Relaxed);
        h.cross_extends_sent
            .store(x.extends_sent, Ordering::Relaxed);
        h.cross_cells_sent.store(x.cells_sent, Ordering::Relaxed);
        h.cross_cells_received
            .store(x.cells_received, Ordering::Relaxed);
        let full: u64 = self.links.iter().map(|l| l.full_events).sum();
        h.cross_queue_full.store(full, Ordering::Relaxed);
        let depth: usize = self.links.iter().map(CrossLink::depth).sum();
        h.cross_overflow_depth
            .store(depth as u64, Ordering::Relaxed);
        h.cross_overflow_kills
            .store(x.overflow_kills, Ordering::Relaxed);
        let sum = |f: fn(&CrossLink) -> u64| self.links.iter().map(f).sum::<u64>();
        h.cross_requests_refused
            .store(sum(|l| l.uncharged_refused), Ordering::Relaxed);
        h.cross_notices_collapsed
            .store(sum(|l| l.notices_collapsed), Ordering::Relaxed);
        h.cross_uncharged_over_cap
            .store(sum(|l| l.uncharged_over_cap), Ordering::Relaxed);
        h.channel_buffer_bytes_released
            .store(self.spare.chan_bytes_trimmed, Ordering::Relaxed);
        h.channels_tls_record_layer
            .store(self.tls_paths.record_layer, Ordering::Relaxed);
        h.channels_tls_rustls_tls12
            .store(self.tls_paths.rustls_tls12, Ordering::Relaxed);
        h.channels_tls_rustls_refused
            .store(self.tls_paths.rustls_refused, Ordering::Relaxed);
        h.tls_records_split
            .store(self.tls_paths.records_split, Ordering::Relaxed);
        h.tls_records_gathered
            .store(self.tls_paths.records_gathered, Ordering::Relaxed);
        h.tls_record_bytes_gathered
            .store(self.tls_paths.record_bytes_gathered, Ordering::Relaxed);
        h.tls_read_hint_pauses
            .store(self.tls_paths.read_hint_pauses, Ordering::Relaxed);
    }
}

impl RelayNode {
    /// Copies the cells the core's pool timed since the last copy (held for a blocked
    /// channel, by their enqueue stamps) into the cell queueing delay histogram: each
    /// pool bucket's count goes to the histogram bucket with the same upper bound.
    fn publish_pool_delay(&mut self) {
        let Some(l) = &self.latency else { return };
        let now = *self.core.queue_delay();
        let seen = std::mem::replace(&mut self.pool_delay_seen, now);
        let mut sum_us = (now.sum_ms - seen.sum_ms).saturating_mul(1000);
        for (i, (a, b)) in now.buckets.iter().zip(seen.buckets).enumerate() {
            let n = a - b;
            if n == 0 {
                continue;
            }
            let upper_us = crate::proto::circuit::pool::QUEUE_DELAY_BOUNDS_MS
                .get(i)
                .map_or(u64::MAX, |&ms| u64::from(ms) * 1000);
            l.cell_queue_delay
                .add(upper_us, n, std::mem::take(&mut sum_us));
        }
    }
}
