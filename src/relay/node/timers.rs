//! Time-driven work: the tick (snapshots, the core's timers, DNS retries, link-handshake
//! timeouts, idle channels) and the end of each I/O batch (queued onion handshakes, staged
//! exit DATA). Time is the `now` the shard passes in.

use super::*;

/// Flush rounds per call: carrying out a flush's actions may package more exit data
/// (a channel drained, a stream resumed), which is staged again.
const MAX_FLUSH_ROUNDS: usize = 8;

/// How often open channels are checked for idleness (a scan of the circuit table).
const IDLE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl RelayNode {
    /// Queued onion handshakes run here, `onions_per_run` per loop iteration, between I/O
    /// batches (cells of established circuits are served in between: anti-starvation).
    pub fn on_batch_end(&mut self, out: &mut impl ShardIo<RelayMsg>) -> bool {
        self.flush_staged(out);
        if self.links.iter().any(CrossLink::needs_pump) {
            self.dispatch(out);
        }
        if self.core.onions_pending() == 0 {
            return self.core.has_staged();
        }
        let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
        self.core.process_onion_queue(&mut io);
        self.dispatch(out);
        self.flush_staged(out);
        self.core.onions_pending() > 0 || self.core.has_staged()
    }

    /// The shard's periodic timer; `now` is the shard's clock.
    pub fn on_tick(&mut self, now: Instant, out: &mut impl ShardIo<RelayMsg>) {
        super::super::testing::panic_if_asked(self.shard); // TestingTorNetwork only (testing.rs)
        self.refresh_snapshot();
        {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            self.core.tick(&mut io);
        }
        if let Some(dns) = self.dns.as_mut() {
            dns.on_tick(now, &mut self.dns_done);
        }
        self.deliver_dns(now);
        // Handshake timeouts.
        let wall = out.wall();
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            if ch.open || c.closing {
                // Handshake over: reads are under the buckets again (at most a tick late;
                // its bytes were charged all along).
                if ch.open && out.bw_read_ungated(c.id) {
                    let _ = out.set_bw_read_ungated(c.id, false);
                }
                continue;
            }
            let id = c.id;
            if let Err(e) = ch.channel.check_timeout(wall, &mut NullSink) {
                log_debug!("shard {}: channel closed: {e}", self.shard.0);
                c.closing = true;
                self.mark_dirty(id);
            }
        }
        if self.next_idle_check.is_none_or(|t| now >= t) {
            self.next_idle_check = Some(now + IDLE_CHECK_INTERVAL);
            self.close_idle_channels(now);
            // At most one line a second: which rule the circuits closed since broke (debug,
            // as Fors logs peers' protocol violations; no address, no circuit ID).
            if let Some((why, n)) = self.core.take_protocol_violations() {
                log_debug!(
                    "shard {}: {n} circuit(s) closed with DESTROY TORPROTOCOL; the last for: {why}",
                    self.shard.0
                );
            }
        }
        self.dispatch(out);
        self.flush_staged(out);
        self.publish_counters(out);
    }

    /// Exit DATA packaged since the last flush, across circuits: one multi-circuit crypto
    /// call, then onto the channels (proto::circuit `staged.rs`).
    pub(super) fn flush_staged(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        for _ in 0..MAX_FLUSH_ROUNDS {
            if !self.core.has_staged() {
                break;
            }
            let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
            self.core.flush_originated(&mut io);
            self.dispatch(out);
        }
    }

    /// Closes open channels that carried no circuit here (ours, or another shard's through
    /// the proxy table) for their idle timeout (`proto::channel::idle`).
    pub(super) fn close_idle_channels(&mut self, now: Instant) {
        let mut in_use = std::mem::take(&mut self.chans_in_use);
        in_use.clear();
        self.core.channels_in_use(&mut in_use);
        let shard = self.shard;
        let hibernation = self.network.get().hibernation;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let id = c.id;
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            // Hard hibernation closes every OR connection (C hibernate_go_dormant).
            if hibernation == Hibernation::Hard && !c.closing {
                c.closing = true;
                self.mark_dirty(id);
                continue;
            }
            let Some(idle) = ch.idle.as_mut() else {
                continue;
            };
            if c.closing {
                continue;
            }
            let busy = in_use.contains(&chan_id(shard, id))
                || self.proxy.carries(id)
                || !ch.waiting_extends.is_empty();
            // Soft hibernation closes channels without circuits at once (C
            // run_connection_housekeeping).
            if hibernation.refuses_new_work() && !busy {
                c.closing = true;
                self.mark_dirty(id);
                continue;
            }
            if idle.update(now, busy) {
                log_info!(
                    "shard {shard}: closing channel with {} at {}: no circuit for {} s",
                    match ch.peer {
                        PeerIdentity::Client => "a client".to_string(),
                        PeerIdentity::Relay { rsa, .. } => format!("relay ${}", rsa.to_hex()),
                    },
                    peer_for_log(ch.peer, ch.channel.peer_addr()),
                    idle.timeout().as_secs()
                );
                c.closing = true;
                self.mark_dirty(id);
            }
        }
        self.chans_in_use = in_use;
    }
}
