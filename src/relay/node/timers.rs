//! Time-driven work: the tick (snapshots, the core's timers, DNS retries, link-handshake
//! timeouts, idle channels, channel padding, the ControlPort's ORCONN resync listing) and
//! the end of each I/O batch (queued onion handshakes, staged exit DATA). Time is the
//! `now` the shard passes in.
//!
//! Channel padding (`proto::channel::padding`) runs on the same clock, with no timer per
//! channel: once a second, with the idle check, each open channel decides whether it is
//! padded and when its next PADDING cell is due (C `channelpadding_decide_to_pad_channel`
//! from `run_connection_housekeeping`); the node keeps the earliest deadline, and the tick
//! (every `tick_ms`, 100 ms by default) sends the cells that are due. A PADDING cell thus
//! goes out at most a tick late, never on whole seconds.
//!
//! Circuit padding machines need milliseconds: the shard asks [`RelayNode::next_deadline`]
//! after each batch, bounds its wait by it, and calls [`RelayNode::on_timer`] once it has
//! passed. Before that decision, the same
//! check sends C tor's `KeepalivePeriod` PADDING on any channel with nothing written for
//! that long, and closes a channel whose output has been stuck for ten periods
//! (`ChannelPadding::housekeeping`, C `run_connection_housekeeping`).

use std::collections::HashSet;

use super::*;
use crate::cell::chan::{PaddingCommand, PaddingNegotiate};
use crate::proto::channel::padding::{
    ChannelUsage, Housekeeping, NegotiateRefused, PaddingDecision, PaddingParams,
    DEFAULT_KEEPALIVE_PERIOD,
};

/// Flush rounds per call: carrying out a flush's actions may package more exit data
/// (a channel drained, a stream resumed), which is staged again.
const MAX_FLUSH_ROUNDS: usize = 8;

/// How often open channels are checked for idleness (a scan of the circuit table).
const IDLE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl RelayNode {
    /// The earliest time the node needs the shard to wake for: a circuit padding machine's
    /// next DROP or STOP (`proto::circuit` `padding.rs`); millisecond precision, unlike the
    /// tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.core.circpad_next_deadline()
    }

    /// The deadline from [`RelayNode::next_deadline`] (or an earlier one) has come: the
    /// padding cells and STOPs due at `now` go out.
    pub fn on_timer(&mut self, now: Instant, out: &mut impl ShardIo<RelayMsg>) {
        {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            self.core.circpad_timers(&mut io);
        }
        self.dispatch(out);
    }

    /// Queued onion handshakes run here, `onions_per_run` per loop iteration, between I/O
    /// batches (cells of established circuits are served in between: anti-starvation).
    pub fn on_batch_end(&mut self, out: &mut impl ShardIo<RelayMsg>) -> bool {
        self.flush_staged(out);
        self.qdelay_close(out); // staged exit cells went out: their window ends (channel.rs)
        if self.links.iter().any(CrossLink::needs_pump) {
            self.dispatch(out);
        }
        if self.core.onions_pending() == 0 {
            return self.core.has_staged();
        }
        let started = out.now();
        let mut io = CoreIo::new(started, &mut self.core_rng, &mut self.actions);
        self.core.process_onion_queue(&mut io);
        if let Some(l) = &self.latency {
            // `ShardIo::now` reads the clock at each call (the shard's), so this is the
            // batch's own time.
            l.onionskin_batch
                .observe(out.now().saturating_duration_since(started));
        }
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
            self.decide_padding(now);
            self.housekeep_memory(now);
            // At most one line a second for peers' protocol violations, at C tor's
            // protocol-warning severity (`ProtocolWarnings`; no address, no circuit ID).
            let circuits = self.core.take_protocol_violations();
            let drops = self.core.take_protocol_drops();
            if let Some(line) = self
                .protocol_warnings
                .take_line(self.shard.0, &drops, circuits)
            {
                log_protocol_warn!("{line}");
            }
        }
        if self.padding.next_due.is_some_and(|t| now >= t) {
            self.send_due_padding(now);
        }
        self.list_orconns();
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
            // Straight into our channels' queues where it can (`channel.rs` DirectSink).
            let now = out.now();
            self.with_direct_io(now, out, |core, io| core.flush_originated(io));
            self.dispatch(out);
        }
    }

    /// Closes open channels that carried no circuit here (ours, or another shard's through
    /// the proxy table) for their idle timeout (`proto::channel::idle`).
    pub(super) fn close_idle_channels(&mut self, now: Instant) {
        let mut in_use = std::mem::take(&mut self.chans_in_use);
        in_use.clear();
        self.core.channels_in_use(&mut in_use);
        in_use.extend(self.proxy_attached.drain());
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

impl RelayNode {
    /// The ControlPort's ORCONN resync (`ctlevents`): while a round it asked for is not
    /// done here, lists this shard's channels — closing ones too, their CLOSED is still to
    /// come — from where the last tick stopped, at most [`ORCONN_LIST_PER_TICK`] and what
    /// the fact queue has room for, then ends the round with the count. A refused fact is
    /// offered again on a later tick; a newer round starts over from the first slot.
    pub(super) fn list_orconns(&mut self) {
        use crate::relay::ctlevents;
        if !ctlevents::enabled() {
            return;
        }
        let round = ctlevents::resync_round();
        if round == 0 || round == self.orconn_done {
            return;
        }
        let (mut slot, mut count) = match self.orconn_resync {
            Some((r, slot, count)) if r == round => (slot, count),
            _ => (0, 0),
        };
        let mut budget = ctlevents::room().min(ORCONN_LIST_PER_TICK);
        while slot < self.conns.len() {
            let Some(c) = self.conns[slot].as_ref() else {
                slot += 1;
                continue;
            };
            let Kind::Channel(ch) = &c.kind else {
                slot += 1;
                continue;
            };
            if budget == 0 {
                break;
            }
            let launched = ch.channel.is_initiator();
            // A channel we launched names its expected relay until the handshake proves
            // it (C `orconn_target_get_name`); `opening` is small: channels in their
            // handshake.
            let relay = ctlevents::relay_of(ch.peer).or_else(|| {
                (launched && !ch.open)
                    .then(|| self.opening.iter().find(|(_, &id)| id == c.id))
                    .flatten()
                    .map(|(rsa, _)| *rsa)
            });
            if !ctlevents::listed(self.shard, round, c.id, ch.open, launched, relay, None) {
                break;
            }
            budget -= 1;
            count += 1;
            slot += 1;
        }
        if slot >= self.conns.len() && ctlevents::listed_end(self.shard, round, count) {
            self.orconn_done = round;
            self.orconn_resync = None;
        } else {
            self.orconn_resync = Some((round, slot, count));
        }
    }
}

/// Channels listed per tick at most for an ORCONN resync (the fact queue holds 8192,
/// shared by every shard and by the channels' own events).
const ORCONN_LIST_PER_TICK: usize = 1024;

/// The node's side of channel padding: the consensus parameters in force, the scratch sets
/// of the usage scan (kept for their capacity), the earliest PADDING deadline and the
/// torrc's `KeepalivePeriod`.
pub(super) struct NodePadding {
    params: PaddingParams,
    full: HashSet<ChanId>,
    user: HashSet<ChanId>,
    next_due: Option<Instant>,
    keepalive_period: std::time::Duration,
}

impl Default for NodePadding {
    fn default() -> Self {
        NodePadding {
            params: PaddingParams::default(),
            full: HashSet::new(),
            user: HashSet::new(),
            next_due: None,
            keepalive_period: DEFAULT_KEEPALIVE_PERIOD,
        }
    }
}

impl NodePadding {
    /// The consensus `nf_conntimeout_relays` (idle relay links, `proto::channel::idle`).
    pub(super) fn conntimeout_relays_secs(&self) -> u32 {
        self.params.conntimeout_relays_secs
    }
}

impl RelayNode {
    /// The torrc's `KeepalivePeriod` (C tor's default: 5 minutes; must be positive).
    pub fn keepalive_period(mut self, period: std::time::Duration) -> RelayNode {
        self.padding.keepalive_period = period;
        self
    }

    /// Once a second: each open channel's keepalive check, then its usage and its padding
    /// decision; the earliest deadline is kept for the tick.
    pub(super) fn decide_padding(&mut self, now: Instant) {
        let snap = self.network.get();
        let params = PaddingParams::from_consensus(|n| snap.consensus_params.get(n).copied());
        let pad = &mut self.padding;
        pad.params = params;
        pad.full.clear();
        pad.user.clear();
        self.core
            .channels_padding_usage(&mut pad.full, &mut pad.user);
        let keepalive = pad.keepalive_period;
        let shard = self.shard;
        let mut next_due: Option<Instant> = None;
        let mut keepalives = 0u64;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let id = c.id;
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            if c.closing || ch.padding.is_none() {
                continue;
            }
            let queued = output_queued(ch);
            let Some(p) = ch.padding.as_mut() else {
                continue;
            };
            match p.housekeeping(now, keepalive, queued) {
                Housekeeping::Nothing => {}
                Housekeeping::SendKeepalive => {
                    // Circuit ID 0, zero body; nothing is queued, so the queue has room.
                    if ch
                        .channel
                        .send_cell(CircId(0), ChanCmd::PADDING, &[0; CELL_BODY_LEN])
                        .is_ok()
                    {
                        keepalives += 1;
                        mark_dirty(&mut self.dirty, id);
                    }
                    continue;
                }
                Housekeeping::CloseStuck => {
                    log_info!(
                        "shard {shard}: closing stuck channel with {}: output waiting and \
                         nothing written for {} s",
                        peer_for_log(ch.peer, ch.channel.peer_addr()),
                        keepalive.as_secs() * 10
                    );
                    self.stats
                        .handler
                        .channels_closed_stuck
                        .fetch_add(1, Ordering::Relaxed);
                    c.closing = true;
                    mark_dirty(&mut self.dirty, id);
                    continue;
                }
            }
            let chan = chan_id(shard, id);
            if self.padding.user.contains(&chan) {
                p.note_usage(ChannelUsage::UserTraffic);
            } else if self.padding.full.contains(&chan) {
                p.note_usage(ChannelUsage::FullCircuits);
            }
            // C `CHANNEL_IS_CLIENT` on a relay: the peer proved no relay identity, or the
            // consensus does not list the one it proved.
            let is_client = match ch.peer {
                PeerIdentity::Client => true,
                PeerIdentity::Relay { rsa, .. } => !snap.known_relays.contains_key(&rsa),
            };
            if let PaddingDecision::PadAt(t) =
                p.decide(&self.padding.params, is_client, queued, &mut self.chan_rng)
            {
                next_due = Some(next_due.map_or(t, |d| d.min(t)));
            }
        }
        self.padding.next_due = next_due;
        if keepalives > 0 {
            self.stats
                .handler
                .keepalive_cells_sent
                .fetch_add(keepalives, Ordering::Relaxed);
        }
    }

    /// A tick at or past the earliest deadline: a PADDING cell on each idle channel whose
    /// deadline has come, and the next earliest deadline.
    pub(super) fn send_due_padding(&mut self, now: Instant) {
        let mut next_due: Option<Instant> = None;
        let mut sent = 0u64;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let id = c.id;
            let closing = c.closing;
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            let queued = output_queued(ch);
            let Some(p) = ch.padding.as_mut() else {
                continue;
            };
            if closing {
                continue;
            }
            if !p.poll(now, queued) {
                if let Some(t) = p.deadline() {
                    next_due = Some(next_due.map_or(t, |d| d.min(t)));
                }
                continue;
            }
            // Circuit ID 0, zero body (tor-spec §"PADDING cells"); the queue is drained, so
            // it has room.
            if ch
                .channel
                .send_cell(CircId(0), ChanCmd::PADDING, &[0; CELL_BODY_LEN])
                .is_ok()
            {
                sent += 1;
                self.mark_dirty(id);
            }
        }
        self.padding.next_due = next_due;
        if sent > 0 {
            self.stats
                .handler
                .padding_cells_sent
                .fetch_add(sent, Ordering::Relaxed);
        }
    }

    /// The peer's PADDING_NEGOTIATE on channel `id` (C
    /// `channel_tls_process_padding_negotiate_cell`).
    pub(super) fn padding_negotiate(&mut self, id: ConnId, cell: &PaddingNegotiate) {
        let counter = match cell.command {
            PaddingCommand::Start => &self.stats.handler.padding_negotiate_start,
            PaddingCommand::Stop => &self.stats.handler.padding_negotiate_stop,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard;
        let params = self.padding.params;
        let Some(Conn {
            kind: Kind::Channel(ch),
            ..
        }) = conn_in(&mut self.conns, id)
        else {
            return;
        };
        let Some(p) = ch.padding.as_mut() else {
            return;
        };
        match p.negotiate(cell, &params) {
            Ok(()) => log_debug!(
                "shard {shard}: peer negotiated padding {:?} (timeouts {:?} ms)",
                cell.command,
                p.negotiated()
            ),
            // C tor logs it at its protocol-warning severity: counted for the shard's
            // line (`protowarn.rs`), since the peer decides how often it comes.
            Err(NegotiateRefused::OldLink { .. }) => self.protocol_warnings.padding_old_link(),
        }
    }
}

/// Cells wait to go out on the channel (in its queue, its TLS output, its overflow, or in
/// the core while it is blocked): it is not idle.
fn output_queued(ch: &mut ChanConn) -> bool {
    ch.blocked || !ch.overflow.is_empty() || !ch.channel.queue().is_drained()
}

/// `RelayNode::mark_dirty` on the field alone, for loops that hold the network snapshot.
fn mark_dirty(dirty: &mut Vec<ConnId>, id: ConnId) {
    if !dirty.contains(&id) {
        dirty.push(id);
    }
}
