//! The relay's [`ConnHandler`]: where the link protocol (`proto::channel`) and, later, the
//! circuit layer (`proto::circuit`) plug into the shard runtime.
//!
//! Every ORPort connection gets a responder [`Channel`]: TLS and the Tor link handshake
//! (VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO) run for real, so clients and the authorities'
//! reachability tests can open channels to us. **The circuit layer is not wired in yet:** a
//! CREATE/CREATE2/CREATE_FAST is answered with DESTROY (reason INTERNAL) and other circuit
//! cells are dropped and counted. That is the seam for `proto::circuit`: replace
//! [`NoCircuits`] with the circuit table (CREATE2 handshakes use the snapshot's `ntor_keys`,
//! BEGIN checks `exit_policy`, EXTEND2 looks up `known_relays`).
//!
//! Besides the channels, the handler mirrors the shard's counters into the MetricsPort's
//! [`ShardStats`] every tick and picks up control-plane snapshots once per tick, without
//! locking on the data path.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::log::{log_debug, log_info};
use super::snapshot::{NetworkSnapshot, SnapshotCell, SnapshotReader};
use crate::cell::chan::DestroyReason;
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::metrics::ShardStats;
use crate::proto::channel::{CellQueue, Channel, ChannelEvent, ChannelSink, PeerIdentity};
use crate::shard::{CloseReason, ConnHandler, ConnId, Outbox, OutboxError, ShardId};

/// One connection's protocol state.
struct Conn {
    id: ConnId,
    channel: Channel,
    /// Counted in `channels_open`.
    open: bool,
    /// Reading was paused because the channel's output is over its high-water mark.
    read_paused: bool,
    /// The channel closed; the connection closes once its output is flushed.
    closing: bool,
}

/// Stand-in for the circuit layer: refuses circuits, drops circuit cells.
#[derive(Default)]
pub struct NoCircuits {
    events: Vec<ChannelEvent>,
    /// Circuit-creating cells refused with DESTROY.
    pub creates_refused: u64,
    /// Other circuit cells dropped (no circuit exists).
    pub cells_dropped: u64,
}

impl ChannelSink for NoCircuits {
    fn cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        _body: &mut [u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        match cmd {
            ChanCmd::CREATE | ChanCmd::CREATE2 | ChanCmd::CREATE_FAST => {
                self.creates_refused += 1;
                // tor-spec §5.4: DESTROY carries one reason byte; the rest is zero.
                let _ = out.send_cell_with(circ_id, ChanCmd::DESTROY, |b| {
                    b.fill(0);
                    b[0] = u8::from(DestroyReason::Internal);
                });
            }
            _ => self.cells_dropped += 1,
        }
    }

    fn event(&mut self, event: ChannelEvent) {
        self.events.push(event);
    }
}

/// One shard's relay handler.
pub struct RelayHandler {
    shard: ShardId,
    stats: Arc<ShardStats>,
    network: SnapshotReader<NetworkSnapshot>,
    /// Indexed by connection slot; sized once from the shard's connection table.
    conns: Vec<Option<Box<Conn>>>,
    circuits: NoCircuits,
    rng: StdRng,
}

impl RelayHandler {
    pub fn new(
        shard: ShardId,
        stats: Arc<ShardStats>,
        network: Arc<SnapshotCell<NetworkSnapshot>>,
        max_connections: usize,
    ) -> RelayHandler {
        RelayHandler {
            shard,
            stats,
            network: SnapshotReader::new(network),
            conns: (0..max_connections).map(|_| None).collect(),
            circuits: NoCircuits::default(),
            rng: StdRng::from_entropy(),
        }
    }

    /// The snapshot this shard currently uses.
    pub fn network(&self) -> &Arc<NetworkSnapshot> {
        self.network.get()
    }

    fn slot(&mut self, conn: ConnId) -> Option<&mut Box<Conn>> {
        self.conns
            .get_mut(conn.slot() as usize)?
            .as_mut()
            .filter(|c| c.id == conn)
    }

    /// Hands the channel's output to the socket, applies read backpressure, reports events,
    /// and closes the connection once a closed channel has flushed.
    fn after_io(&mut self, conn: ConnId, out: &mut Outbox<'_, RelayMsg>) {
        let events = std::mem::take(&mut self.circuits.events);
        let shard = self.shard.0;
        let stats = self.stats.clone();
        let Some(c) = self.slot(conn) else {
            self.circuits.events = events;
            return;
        };
        for e in &events {
            match e {
                ChannelEvent::Open(info) => {
                    c.open = true;
                    stats.handler.channels_open.fetch_add(1, Ordering::Relaxed);
                    match info.peer {
                        PeerIdentity::Relay { rsa, .. } => log_info!(
                            "shard {shard}: channel open with relay ${} at {} (link v{})",
                            rsa.to_hex(),
                            c.channel.peer_addr(),
                            info.link_version
                        ),
                        PeerIdentity::Client => log_debug!(
                            "shard {shard}: channel open with a client (link v{})",
                            info.link_version
                        ),
                    }
                }
                ChannelEvent::Closed(reason) => {
                    log_debug!("shard {shard}: channel closed: {reason}");
                    c.closing = true;
                }
                ChannelEvent::ClockSkew { skew_secs } => log_info!(
                    "shard {shard}: peer {} says our clock is off by {skew_secs} s",
                    c.channel.peer_addr()
                ),
                ChannelEvent::PaddingNegotiate(_) => {}
            }
        }
        // Reuse the event buffer's allocation.
        let mut events = events;
        events.clear();

        let pending = c.channel.pending_output();
        if !pending.is_empty() {
            match out.send_partial(conn, pending) {
                Ok(n) => c.channel.consume_output(n),
                Err(OutboxError::NotOpen) => c.closing = true,
                Err(_) => {}
            }
        }
        let flushed = c.channel.pending_output().is_empty();
        if c.closing {
            if flushed {
                let _ = out.close(conn);
            }
        } else if !c.channel.wants_read() && !c.read_paused {
            if out.pause_read(conn).is_ok() {
                c.read_paused = true;
            }
        } else if c.channel.wants_read() && c.read_paused && out.resume_read(conn).is_ok() {
            c.read_paused = false;
        }
        self.circuits.events = events;
    }
}

/// What shards send each other. Nothing yet: cross-shard cells arrive with `proto::circuit`.
#[derive(Debug)]
pub enum RelayMsg {}

impl ConnHandler for RelayHandler {
    type Msg = RelayMsg;

    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        self.stats
            .handler
            .connections_seen
            .fetch_add(1, Ordering::Relaxed);
        let ctx = self.network.get().link.clone();
        let Some(entry) = self.conns.get_mut(conn.slot() as usize) else {
            let _ = out.close(conn);
            return;
        };
        match Channel::new_responder(ctx, peer.ip(), SystemTime::now()) {
            Ok(channel) => {
                *entry = Some(Box::new(Conn {
                    id: conn,
                    channel,
                    open: false,
                    read_paused: false,
                    closing: false,
                }));
            }
            Err(e) => {
                log_info!("shard {}: cannot start a channel: {e}", self.shard.0);
                self.stats
                    .handler
                    .connections_closed_unserved
                    .fetch_add(1, Ordering::Relaxed);
                let _ = out.close(conn);
            }
        }
    }

    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox<'_, RelayMsg>) {
        let now = SystemTime::now();
        let Some(slot) = self.conns.get_mut(conn.slot() as usize) else {
            return;
        };
        let Some(c) = slot.as_mut().filter(|c| c.id == conn) else {
            return;
        };
        if c.closing {
            return;
        }
        // An error has already closed the channel and reported `Closed` to the sink.
        let _ = c
            .channel
            .handle_input(data, now, &mut self.rng, &mut self.circuits);
        self.after_io(conn, out);
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, RelayMsg>) {
        self.after_io(conn, out);
    }

    fn on_closed(&mut self, conn: ConnId, _reason: CloseReason, _out: &mut Outbox<'_, RelayMsg>) {
        let Some(slot) = self.conns.get_mut(conn.slot() as usize) else {
            return;
        };
        if slot.as_ref().is_some_and(|c| c.id == conn) {
            if let Some(mut c) = slot.take() {
                c.channel.handle_eof(&mut self.circuits);
                self.circuits.events.clear();
                if c.open {
                    self.stats
                        .handler
                        .channels_open
                        .fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn on_tick(&mut self, _now: Instant, out: &mut Outbox<'_, RelayMsg>) {
        self.stats.store(out.metrics());
        if self.network.refresh() {
            self.stats
                .handler
                .snapshots_taken
                .fetch_add(1, Ordering::Relaxed);
        }
        // Handshake timeouts. Open channels have nothing to time out here yet.
        let now = SystemTime::now();
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            if c.open || c.closing {
                continue;
            }
            let id = c.id;
            if c.channel.check_timeout(now, &mut self.circuits).is_err() {
                self.after_io(id, out);
            }
        }
        self.stats
            .handler
            .creates_refused
            .store(self.circuits.creates_refused, Ordering::Relaxed);
        self.stats
            .handler
            .cells_dropped
            .store(self.circuits.cells_dropped, Ordering::Relaxed);
    }
}
