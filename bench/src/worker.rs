//! One worker per shard of Fors's own io_uring runtime (`fors::shard`): thread-per-core, each
//! pinned to a core and owning its ring, its TLS link to the first hop and its share of the
//! circuits and streams.
//!
//! A worker is a [`ConnHandler`]: the runtime does the I/O (connect with a timeout, multishot
//! recv into provided buffers, sends from its pre-allocated pool, ticks), the worker stays
//! sans-IO. The link is Fors's own [`Channel`] in client mode (`Channel::new_client`), and
//! circuits write their cells straight into its [`CellQueue`]. Each callback ends with
//! [`Worker::drive`]: build circuits, open streams, pump DATA within windows and the rate
//! budget, then hand the TLS bytes to the shard until it pushes back (`on_writable` resumes).
//! Workers share nothing but relaxed counters and a "finished" count that the main thread
//! waits on before stopping the runtime and merging the workers' [`WorkerStats`].

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::channel::tls::rustls;
use fors::proto::channel::{
    CellQueue, Channel, ChannelConfig, ChannelEvent, ChannelSink, ExpectedPeer,
};
use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::circ::{Body, CellOut, Circuit, Ctx, Dir, StreamPlan};
use crate::cli::{HandshakeKind, RelayCrypto};
use crate::idle::{self, IdleSet, IdleShared};
use crate::path::Relay;
use crate::stats::{thread_cpu_seconds, Live, WorkerStats};

/// Cells the channel queues before circuits stop producing (≈ 256 KiB).
pub const LINK_QUEUE_CELLS: usize = 512;
/// CREATE2-flood circuits in flight at once, per worker.
const MAX_FLOOD_INFLIGHT: usize = 256;
/// Rounds of produce-then-send per callback; the shard's send bound ends a round sooner.
const MAX_DRIVE_ROUNDS: usize = 64;
/// The link handshake must finish within this (C tor allows 60 s for OR handshakes).
const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one worker is asked to do.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    pub index: usize,
    pub path: Arc<Vec<Relay>>,
    pub circuits: u32,
    pub streams: u32,
    pub download: Option<u64>,
    pub upload: Option<u64>,
    /// Repeat streams until this long after start; `None` = each stream slot once.
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub handshake: HandshakeKind,
    /// `--relay-crypto`.
    pub relay_crypto: RelayCrypto,
    pub target: SocketAddrV4,
    pub seed_base: u64,
    /// Payload bytes per second for this worker; `None` = unlimited.
    pub rate: Option<f64>,
    /// One-hop CREATE2 handshakes per second for this worker.
    pub create_rate: Option<f64>,
    /// `--idle-circuits`: this worker's part of the idle-circuit mode.
    pub idle: Option<IdleShared>,
}

impl WorkerPlan {
    /// A bulk worker without circuits has nothing to do (its flood, if any, only runs
    /// while its own bulk streams do); neither has a flood-only worker without a rate.
    pub fn is_idle(&self) -> bool {
        if self.idle.is_some() {
            return false;
        }
        if self.download.is_some() || self.upload.is_some() {
            self.circuits == 0
        } else {
            self.create_rate.is_none()
        }
    }
}

/// Cells a circuit pushed that the channel queue refused (it was full, or a reply came in
/// while reading): they go out first, before any new cell, so nothing is lost or reordered.
type Overflow = Vec<(CircId, ChanCmd, Body)>;

/// Circuits write into the channel's queue through this; `room` is 0 while older cells wait
/// in the overflow.
struct QueueOut<'a> {
    queue: &'a mut CellQueue,
    overflow: &'a mut Overflow,
}

impl CellOut for QueueOut<'_> {
    fn room(&self) -> usize {
        if self.overflow.is_empty() {
            self.queue.free_cells()
        } else {
            0
        }
    }
    fn push(&mut self, circ: CircId, cmd: ChanCmd, body: &Body) {
        if !self.overflow.is_empty() || self.queue.send_cell(circ, cmd, body).is_err() {
            self.overflow.push((circ, cmd, *body));
        }
    }
}

struct Slot {
    circ: Circuit,
    started: [u32; 2],
}

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::Down => 0,
        Dir::Up => 1,
    }
}

/// Hands the channel's cells to the worker's circuits while the channel reads.
struct Dispatch<'a, 'c> {
    slots: &'a mut [Slot],
    flood: &'a mut [Circuit],
    /// `--idle-circuits`: the worker's idle circuits and the counters they report into.
    idle: &'a mut IdleSet,
    idle_ctl: Option<&'a idle::IdleCtl>,
    ctx: &'a mut Ctx<'c>,
    overflow: &'a mut Overflow,
    now: Instant,
    events: &'a mut Vec<ChannelEvent>,
}

impl ChannelSink for Dispatch<'_, '_> {
    fn cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &mut [u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        let mut out = QueueOut {
            queue: out,
            overflow: self.overflow,
        };
        if let Some(s) = self.slots.iter_mut().find(|s| s.circ.id == circ_id) {
            s.circ.on_cell(cmd, body, self.now, self.ctx, &mut out);
        } else if let Some(c) = self.flood.iter_mut().find(|c| c.id == circ_id) {
            c.on_cell(cmd, body, self.now, self.ctx, &mut out);
        } else if let Some(c) = self.idle.circuits.get_mut(&circ_id) {
            let was_open = c.is_open();
            c.on_cell(cmd, body, self.now, self.ctx, &mut out);
            let change = idle::classify(was_open, &c.state);
            if let (idle::Change::Killed, idle::CircState::Closed(why)) = (change, &c.state) {
                // The relay closed an open idle circuit: never a normal end here.
                self.ctx.error(&format!("idle_closed_by_relay_{why}"));
            }
            if let Some(ctl) = self.idle_ctl {
                self.idle.apply(circ_id, change, ctl);
            }
        }
    }
    fn event(&mut self, event: ChannelEvent) {
        self.events.push(event);
    }
}

/// One worker: a shard's handler.
pub struct Worker {
    plan: WorkerPlan,
    /// The directions the plan asks for, with bytes per stream.
    dirs: Vec<(Dir, u64)>,
    live: Arc<Live>,
    finished: Arc<AtomicUsize>,
    pub stats: WorkerStats,
    /// This shard thread's CPU time, sampled every tick and when the worker finishes.
    pub cpu_s: f64,
    /// For circuits (handshakes, IDs, SENDME state).
    rng: StdRng,
    /// For the channel (TLS SNI); separate so both can be borrowed while reading.
    chan_rng: StdRng,
    tls: Arc<rustls::ClientConfig>,
    conn: Option<ConnId>,
    chan: Option<Channel>,
    overflow: Overflow,
    events: Vec<ChannelEvent>,
    slots: Vec<Slot>,
    flood: Vec<Circuit>,
    flood_issued: u64,
    idle: IdleSet,
    seed_counter: u64,
    tokens: f64,
    last_refill: Instant,
    start: Instant,
    done: bool,
}

impl Worker {
    /// A worker for `plan`; it connects when its shard starts. `finished` counts workers
    /// that are done.
    pub fn new(
        plan: WorkerPlan,
        tls: Arc<rustls::ClientConfig>,
        live: Arc<Live>,
        finished: Arc<AtomicUsize>,
    ) -> Worker {
        let now = Instant::now();
        let dirs = [(Dir::Down, plan.download), (Dir::Up, plan.upload)]
            .into_iter()
            .filter_map(|(d, s)| s.map(|s| (d, s)))
            .collect();
        Worker {
            dirs,
            plan,
            live,
            finished,
            stats: WorkerStats::default(),
            cpu_s: 0.0,
            rng: StdRng::from_entropy(),
            chan_rng: StdRng::from_entropy(),
            tls,
            conn: None,
            chan: None,
            overflow: Vec::new(),
            events: Vec::new(),
            slots: Vec::new(),
            flood: Vec::new(),
            flood_issued: 0,
            idle: IdleSet::default(),
            seed_counter: 0,
            tokens: 0.0,
            last_refill: now,
            start: now,
            done: false,
        }
    }

    /// Marks the worker finished (once) and closes its link after the queued cells.
    fn finish(&mut self, out: &mut Outbox<'_, ()>) {
        if self.done {
            return;
        }
        self.done = true;
        self.cpu_s = thread_cpu_seconds();
        self.flush(out);
        if let Some(conn) = self.conn {
            let _ = out.close(conn);
        }
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// Ends the run with a worker-level error.
    fn fail(&mut self, reason: &str, out: &mut Outbox<'_, ()>) {
        if self.done {
            return;
        }
        self.stats.error(reason);
        Live::add(&self.live.errors, 1);
        self.finish(out);
    }

    /// Hands the channel's TLS bytes to the shard until it pushes back. Returns true if all
    /// of them were taken.
    fn flush(&mut self, out: &mut Outbox<'_, ()>) -> bool {
        let (Some(chan), Some(conn)) = (self.chan.as_mut(), self.conn) else {
            return true;
        };
        // Cells refused earlier go first.
        if chan.is_open() {
            let mut moved = 0;
            for (id, cmd, body) in &self.overflow {
                if chan.queue().send_cell(*id, *cmd, body).is_err() {
                    break;
                }
                moved += 1;
            }
            self.overflow.drain(..moved);
        }
        let pending = chan.pending_output();
        if pending.is_empty() {
            return true;
        }
        let len = pending.len();
        match out.send_partial(conn, pending) {
            Ok(n) => {
                chan.consume_output(n);
                n == len
            }
            // The connection is gone; on_closed says why.
            Err(_) => false,
        }
    }

    /// Produces cells (circuits, streams, DATA, the flood) and sends them, until nothing
    /// more can be produced or the shard's send bound is reached.
    fn drive(&mut self, out: &mut Outbox<'_, ()>) {
        for _ in 0..MAX_DRIVE_ROUNDS {
            if self.done {
                return;
            }
            let produced = self.schedule(out.now(), out);
            let all_sent = self.flush(out);
            if !produced || !all_sent {
                return;
            }
        }
    }

    /// One round of the workload on an open link. Returns true if any cell was queued.
    fn schedule(&mut self, now: Instant, out: &mut Outbox<'_, ()>) -> bool {
        if self.plan.idle.is_some() {
            return self.schedule_idle(now, out);
        }
        let Some(chan) = self.chan.as_mut() else {
            return false;
        };
        if !chan.is_open() {
            return false;
        }
        let dirs = &self.dirs;
        let plan = &self.plan;
        let bulk = !dirs.is_empty();
        let end = plan.duration.map(|d| self.start + d);
        let mut ctx = Ctx {
            stats: &mut self.stats,
            live: &self.live,
            rng: &mut self.rng,
        };
        let mut link = QueueOut {
            queue: chan.queue(),
            overflow: &mut self.overflow,
        };
        let sent_before = ctx.stats.cells_sent;
        let mut progressed = false;

        // Build the bulk circuits.
        let mut start_err = None;
        while bulk && self.slots.len() < plan.circuits as usize && link.room() > 0 {
            let slots = &self.slots;
            let id = new_circ_id(ctx.rng, &|id| slots.iter().any(|s| s.circ.id == id));
            match Circuit::start(
                id,
                plan.path.clone(),
                plan.path.len(),
                plan.handshake,
                plan.relay_crypto,
                plan.target,
                now,
                &mut ctx,
                &mut link,
            ) {
                Ok(c) => self.slots.push(Slot {
                    circ: c,
                    started: [0; 2],
                }),
                Err(e) => {
                    start_err = Some(format!("circuit_start: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = start_err {
            self.fail(&e, out);
            return false;
        }
        // Open streams on open circuits.
        let may_repeat = end.is_some_and(|e| now < e);
        for s in &mut self.slots {
            if !s.circ.is_open() {
                continue;
            }
            for &(dir, bytes) in dirs {
                let di = dir_index(dir);
                while (s.circ.active_in(dir) as u32) < plan.streams
                    && (s.started[di] < plan.streams || may_repeat)
                    && link.room() > 0
                {
                    self.seed_counter += 1;
                    let seed = plan
                        .seed_base
                        .wrapping_add((plan.index as u64) << 40)
                        .wrapping_add(self.seed_counter);
                    let p = StreamPlan { dir, bytes, seed };
                    if !s.circ.open_stream(p, now, &mut ctx, &mut link) {
                        break;
                    }
                    s.started[di] += 1;
                    ctx.stats.streams_expected += 1;
                }
            }
        }
        // Rate budget (token bucket, ≤ 100 ms of burst), refilled by elapsed time.
        let budget = match plan.rate {
            None => u64::MAX,
            Some(r) => {
                let dt = now
                    .saturating_duration_since(self.last_refill)
                    .as_secs_f64();
                self.last_refill = now;
                self.tokens = (self.tokens + r * dt).min((r * 0.1).max(60_000.0));
                self.tokens.max(0.0) as u64
            }
        };
        let mut spent = 0u64;
        for s in &mut self.slots {
            if link.room() == 0 {
                break;
            }
            spent += s
                .circ
                .pump(now, budget.saturating_sub(spent), &mut ctx, &mut link);
        }
        if plan.rate.is_some() {
            self.tokens -= spent as f64;
        }
        progressed |= spent > 0;
        // CREATE2 flood: one-hop circuits at the asked rate, torn down once built.
        let mut flood_over = false;
        if let Some(rate) = plan.create_rate {
            let flood_end = end.or(if bulk {
                None
            } else {
                Some(self.start + Duration::from_secs(10))
            });
            let active = flood_end.is_none_or(|e| now < e) && (!bulk || bulk_running(&self.slots));
            let due = (now.saturating_duration_since(self.start).as_secs_f64() * rate) as u64;
            while active
                && self.flood_issued < due
                && self.flood.len() < MAX_FLOOD_INFLIGHT
                && link.room() > 1
            {
                let (slots, flood) = (&self.slots, &self.flood);
                let id = new_circ_id(ctx.rng, &|id| {
                    flood.iter().any(|c| c.id == id) || slots.iter().any(|s| s.circ.id == id)
                });
                if let Ok(c) = Circuit::start(
                    id,
                    plan.path.clone(),
                    1,
                    plan.handshake,
                    plan.relay_crypto,
                    plan.target,
                    now,
                    &mut ctx,
                    &mut link,
                ) {
                    self.flood.push(c);
                }
                self.flood_issued += 1;
            }
            for c in &mut self.flood {
                if c.is_open() {
                    c.destroy(ctx.live, &mut link);
                } else if !c.is_closed()
                    && now.saturating_duration_since(c.started_at()) > Duration::from_secs(30)
                {
                    c.fail("flood_handshake_timeout", &mut ctx, &mut link);
                }
            }
            self.flood.retain(|c| !c.is_closed());
            flood_over = !active && self.flood.is_empty();
        }
        // Finished: every slot ran its streams (or the duration is over and streams
        // drained), and the flood (if any) is over.
        let bulk_done = bulk
            && self.slots.len() == plan.circuits as usize
            && self.slots.iter().all(|s| {
                s.circ.is_closed()
                    || (s.circ.is_open()
                        && s.circ.active_streams() == 0
                        && (end.is_some() && !may_repeat
                            || end.is_none()
                                && dirs
                                    .iter()
                                    .all(|&(d, _)| s.started[dir_index(d)] >= plan.streams)))
            })
            && self.flood.is_empty();
        let finished = if bulk {
            bulk_done
        } else {
            plan.create_rate.is_none() || flood_over
        };
        if finished {
            for s in &mut self.slots {
                s.circ.destroy(ctx.live, &mut link);
            }
            self.finish(out);
            return false;
        }
        progressed || ctx.stats.cells_sent != sent_before
    }

    /// `--idle-circuits`: fail overdue builds, start the circuits the stage and the rate
    /// allow, and close the link once the main thread releases them. Returns true if any
    /// cell was queued.
    fn schedule_idle(&mut self, now: Instant, out: &mut Outbox<'_, ()>) -> bool {
        let Some(shared) = self.plan.idle.clone() else {
            return false;
        };
        let ctl = &*shared.ctl;
        if ctl.release.load(Ordering::Relaxed) {
            // Closing the link frees every circuit on it at the relay.
            self.finish(out);
            return false;
        }
        let Some(chan) = self.chan.as_mut() else {
            return false;
        };
        if !chan.is_open() {
            return false;
        }
        let mut ctx = Ctx {
            stats: &mut self.stats,
            live: &self.live,
            rng: &mut self.rng,
        };
        let mut link = QueueOut {
            queue: chan.queue(),
            overflow: &mut self.overflow,
        };
        let sent_before = ctx.stats.cells_sent;
        for id in self.idle.overdue(now) {
            if let Some(c) = self.idle.circuits.get_mut(&id) {
                c.fail("idle_build_timeout", &mut ctx, &mut link);
                let change = idle::classify(false, &c.state);
                self.idle.apply(id, change, ctl);
            }
        }
        let target = idle::share(
            ctl.target.load(Ordering::Relaxed),
            shared.workers,
            self.plan.index,
        );
        let due = self.idle.due(now, target, shared.rate);
        let mut start_err = None;
        for _ in 0..due {
            if link.room() <= 1 {
                break;
            }
            let circuits = &self.idle.circuits;
            let id = new_circ_id(ctx.rng, &|id| circuits.contains_key(&id));
            match Circuit::start(
                id,
                self.plan.path.clone(),
                1,
                self.plan.handshake,
                self.plan.relay_crypto,
                self.plan.target,
                now,
                &mut ctx,
                &mut link,
            ) {
                Ok(c) => self.idle.started(id, c, now, ctl),
                Err(e) => {
                    start_err = Some(format!("circuit_start: {e}"));
                    break;
                }
            }
        }
        let sent = ctx.stats.cells_sent != sent_before;
        if let Some(e) = start_err {
            self.fail(&e, out);
            return false;
        }
        sent
    }

    /// The deadline passed (or the link died): abandon streams, name what was unfinished.
    fn give_up(&mut self, reason: &str, out: &mut Outbox<'_, ()>) {
        if self.done {
            return;
        }
        let mut ctx = Ctx {
            stats: &mut self.stats,
            live: &self.live,
            rng: &mut self.rng,
        };
        for s in &mut self.slots {
            s.circ.abandon_streams(reason, &mut ctx);
        }
        let open = self.chan.as_ref().is_some_and(|c| c.is_open());
        if !open {
            self.fail(&format!("{reason}_link_handshake"), out);
            return;
        }
        if self
            .slots
            .iter()
            .any(|s| !s.circ.is_open() && !s.circ.is_closed())
        {
            ctx.error(&format!("{reason}_circuit_build"));
        }
        self.finish(out);
    }

    /// Channel events collected while reading.
    fn handle_events(&mut self, out: &mut Outbox<'_, ()>) {
        for ev in std::mem::take(&mut self.events) {
            if let ChannelEvent::Closed(e) = ev {
                self.fail(&format!("link: {e}"), out);
            }
        }
    }
}

fn bulk_running(slots: &[Slot]) -> bool {
    slots
        .iter()
        .any(|s| s.circ.active_streams() > 0 || !s.circ.is_open())
}

fn new_circ_id(rng: &mut StdRng, taken: &dyn Fn(CircId) -> bool) -> CircId {
    for _ in 0..64 {
        let id = CircId(rng.gen::<u32>() | 0x8000_0000);
        if !taken(id) {
            return id;
        }
    }
    CircId(0x8000_0000 | rng.gen::<u32>())
}

impl ConnHandler for Worker {
    type Msg = ();

    /// Connects to the first hop and queues the TLS ClientHello (sent once connected).
    fn on_start(&mut self, out: &mut Outbox<'_, ()>) {
        self.start = out.now();
        self.last_refill = self.start;
        if self.plan.is_idle() {
            self.finish(out);
            return;
        }
        let first = &self.plan.path[0];
        let expected = ExpectedPeer {
            rsa: first.rsa,
            ed: first.ed,
        };
        let cfg = ChannelConfig {
            max_output_cells: LINK_QUEUE_CELLS,
            handshake_timeout: LINK_HANDSHAKE_TIMEOUT,
        };
        let addr = SocketAddr::V4(first.addr);
        let chan = match Channel::new_client(
            self.tls.clone(),
            cfg,
            expected,
            addr.ip(),
            SystemTime::now(),
            &mut self.chan_rng,
        ) {
            Ok(c) => c,
            Err(e) => return self.fail(&format!("link_setup: {e}"), out),
        };
        match out.connect(addr) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.chan = Some(chan);
                self.flush(out);
            }
            Err(e) => self.fail(&format!("connect: {e}"), out),
        }
    }

    fn on_accept(&mut self, conn: ConnId, _peer: SocketAddr, out: &mut Outbox<'_, ()>) {
        // No listener is configured; refuse anything that shows up anyway.
        let _ = out.close(conn);
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        if Some(conn) != self.conn || self.done {
            return;
        }
        let Some(chan) = self.chan.as_mut() else {
            return;
        };
        let now = out.now();
        let mut ctx = Ctx {
            stats: &mut self.stats,
            live: &self.live,
            rng: &mut self.rng,
        };
        let mut sink = Dispatch {
            slots: &mut self.slots,
            flood: &mut self.flood,
            idle: &mut self.idle,
            idle_ctl: self.plan.idle.as_ref().map(|s| &*s.ctl),
            ctx: &mut ctx,
            overflow: &mut self.overflow,
            now,
            events: &mut self.events,
        };
        // An error also arrives as a Closed event.
        let _ = chan.handle_input(data, SystemTime::now(), &mut self.chan_rng, &mut sink);
        self.handle_events(out);
        self.drive(out);
    }

    fn on_writable(&mut self, _conn: ConnId, out: &mut Outbox<'_, ()>) {
        self.drive(out);
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, ()>) {
        if Some(conn) != self.conn {
            return;
        }
        self.conn = None;
        let what = match reason {
            CloseReason::PeerClosed => "link_closed_by_relay".to_string(),
            r => format!("link_{r:?}").to_lowercase(),
        };
        self.fail(&what, out);
    }

    /// Deadlines, the link handshake timeout, rate-budget refills and the flood schedule.
    fn on_tick(&mut self, now: Instant, out: &mut Outbox<'_, ()>) {
        if self.done {
            return;
        }
        self.cpu_s = thread_cpu_seconds();
        if now.saturating_duration_since(self.start) >= self.plan.timeout {
            self.give_up("timeout", out);
            return;
        }
        if let Some(chan) = self.chan.as_mut() {
            let mut sink = Dispatch {
                slots: &mut [],
                flood: &mut [],
                idle: &mut self.idle,
                idle_ctl: self.plan.idle.as_ref().map(|s| &*s.ctl),
                ctx: &mut Ctx {
                    stats: &mut self.stats,
                    live: &self.live,
                    rng: &mut self.rng,
                },
                overflow: &mut self.overflow,
                now,
                events: &mut self.events,
            };
            let _ = chan.check_timeout(SystemTime::now(), &mut sink);
        }
        self.handle_events(out);
        self.drive(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(circuits: u32, download: Option<u64>, create_rate: Option<f64>) -> WorkerPlan {
        WorkerPlan {
            index: 0,
            path: Arc::new(Vec::new()),
            circuits,
            streams: 1,
            download,
            upload: None,
            duration: None,
            timeout: Duration::from_secs(1),
            handshake: HandshakeKind::Ntor,
            relay_crypto: RelayCrypto::Tor1,
            target: "127.0.0.1:1".parse().unwrap(),
            seed_base: 0,
            rate: None,
            create_rate,
            idle: None,
        }
    }

    #[test]
    fn idle_workers_are_recognised() {
        assert!(!plan(1, Some(1), None).is_idle());
        assert!(plan(0, Some(1), None).is_idle());
        // A flood rides on the worker's own bulk streams: none, nothing to do.
        assert!(plan(0, Some(1), Some(10.0)).is_idle());
        assert!(!plan(0, None, Some(10.0)).is_idle());
        assert!(plan(0, None, None).is_idle());
        // The idle-circuit mode has work without bulk streams or a flood.
        let mut p = plan(0, None, None);
        p.idle = Some(IdleShared {
            ctl: Arc::new(idle::IdleCtl::default()),
            rate: 1.0,
            workers: 1,
        });
        assert!(!p.is_idle());
    }
}
