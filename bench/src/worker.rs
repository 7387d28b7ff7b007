//! One worker thread: one TLS link to the first hop carrying its share of circuits, driven by
//! a plain non-blocking socket and `poll(2)`.
//!
//! Why not the `fors::shard` io_uring runtime: a worker has exactly one socket, so there is
//! nothing to batch across connections; the cost that matters is per cell (relay crypto, TLS,
//! pattern checks), which both designs pay alike. The loop reads up to 256 KiB per wake-up and
//! writes everything the link has queued, so syscalls are amortised over hundreds of cells.
//! Workers share nothing but relaxed counters. The run reports its own CPU time so a reader
//! can tell whether the generator was the bottleneck.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::circ::{Body, CellOut, Circuit, Ctx, Dir, StreamPlan};
use crate::cli::HandshakeKind;
use crate::link::ClientLink;
use crate::path::Relay;
use crate::stats::{Live, WorkerStats};

/// Cells the link queues before circuits stop producing (≈ 256 KiB).
const LINK_QUEUE_CELLS: usize = 512;
/// Bytes read from the socket per wake-up.
const READ_CHUNK: usize = 256 * 1024;
/// CREATE2-flood circuits in flight at once, per worker.
const MAX_FLOOD_INFLIGHT: usize = 256;
/// Upper bound on loop iterations, on top of the deadline (each waits ≤ 5 ms or does I/O).
const MAX_ITERATIONS: u64 = 1 << 34;

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
    pub target: SocketAddrV4,
    pub seed_base: u64,
    /// Payload bytes per second for this worker; `None` = unlimited.
    pub rate: Option<f64>,
    /// One-hop CREATE2 handshakes per second for this worker.
    pub create_rate: Option<f64>,
}

/// Cells circuits produce while the link is busy reading; moved into the link right after.
struct Deferred(Vec<(CircId, ChanCmd, Body)>);

impl CellOut for Deferred {
    fn room(&self) -> usize {
        usize::MAX
    }
    fn push(&mut self, circ: CircId, cmd: ChanCmd, body: &Body) {
        self.0.push((circ, cmd, *body));
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

/// Runs a worker to completion; never panics on network input.
pub fn run(plan: WorkerPlan, live: Arc<Live>, stop: Arc<AtomicBool>) -> WorkerStats {
    let mut stats = WorkerStats::default();
    if let Err(e) = run_inner(&plan, &live, &stop, &mut stats) {
        stats.error(&e);
        Live::add(&live.errors, 1);
    }
    stats
}

fn new_circ_id(rng: &mut StdRng, taken: &dyn Fn(CircId) -> bool) -> CircId {
    // Link protocol ≥ 4: the initiator's circuit IDs have the high bit set (tor-spec
    // §"Circuit ID"). Random IDs, retried on the rare clash (bounded).
    for _ in 0..64 {
        let id = CircId(rng.gen::<u32>() | 0x8000_0000);
        if !taken(id) {
            return id;
        }
    }
    CircId(0x8000_0000 | rng.gen::<u32>())
}

fn run_inner(
    plan: &WorkerPlan,
    live: &Live,
    stop: &AtomicBool,
    stats: &mut WorkerStats,
) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + plan.timeout;
    let end = plan.duration.map(|d| start + d);
    let mut rng = StdRng::from_entropy();
    let first = &plan.path[0];
    let addr = SocketAddr::V4(first.addr);
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect_{:?}", e.kind()).to_lowercase())?;
    sock.set_nodelay(true).map_err(|_| "socket_option")?;
    sock.set_nonblocking(true).map_err(|_| "socket_option")?;
    let mut link = ClientLink::new(first.rsa, first.ed, addr.ip(), LINK_QUEUE_CELLS, &mut rng)
        .map_err(|e| format!("link_setup: {e}"))?;

    let dirs: Vec<(Dir, u64)> = [(Dir::Down, plan.download), (Dir::Up, plan.upload)]
        .into_iter()
        .filter_map(|(d, s)| s.map(|s| (d, s)))
        .collect();
    let bulk = !dirs.is_empty();
    let mut slots: Vec<Slot> = Vec::new();
    let mut flood: Vec<Circuit> = Vec::new();
    let mut flood_issued = 0u64;
    let mut seed_counter = 0u64;
    let mut tokens = 0f64;
    let mut last_refill = start;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut deferred = Deferred(Vec::new());
    let mut stream_seq = 0u64;

    for _ in 0..MAX_ITERATIONS {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            let reason = if now >= deadline {
                "timeout"
            } else {
                "stopped"
            };
            let mut ctx = Ctx {
                stats,
                live,
                rng: &mut rng,
            };
            for s in &mut slots {
                s.circ.abandon_streams(reason, &mut ctx);
            }
            if !link.is_open() {
                return Err(format!("{reason}_link_handshake"));
            }
            if bulk
                && slots
                    .iter()
                    .any(|s| !s.circ.is_open() && !s.circ.is_closed())
            {
                ctx.error(&format!("{reason}_circuit_build"));
            }
            break;
        }

        // Read whatever arrived.
        let mut progressed = false;
        match sock.read(&mut buf) {
            Ok(0) => return Err("link_closed_by_relay".into()),
            Ok(n) => {
                progressed = true;
                let wall = SystemTime::now();
                let mut ctx = Ctx {
                    stats,
                    live,
                    rng: &mut rng,
                };
                let slots_ref = &mut slots;
                let flood_ref = &mut flood;
                let out = &mut deferred;
                let r = link.handle_input(
                    &buf[..n],
                    wall,
                    &mut |id, cmd, body: &mut [u8; CELL_BODY_LEN]| {
                        if let Some(s) = slots_ref.iter_mut().find(|s| s.circ.id == id) {
                            s.circ.on_cell(cmd, body, now, &mut ctx, out);
                        } else if let Some(c) = flood_ref.iter_mut().find(|c| c.id == id) {
                            c.on_cell(cmd, body, now, &mut ctx, out);
                        }
                    },
                );
                if let Err(e) = r {
                    return Err(format!("link: {e}"));
                }
                for (id, cmd, body) in deferred.0.drain(..) {
                    link.push(id, cmd, &body);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("link_read_{:?}", e.kind()).to_lowercase()),
        }

        if link.is_open() {
            let mut ctx = Ctx {
                stats,
                live,
                rng: &mut rng,
            };
            // Build the bulk circuits.
            while bulk && slots.len() < plan.circuits as usize && link.room() > 0 {
                let id = new_circ_id(ctx.rng, &|id| slots.iter().any(|s| s.circ.id == id));
                match Circuit::start(
                    id,
                    plan.path.clone(),
                    plan.path.len(),
                    plan.handshake,
                    plan.target,
                    now,
                    &mut ctx,
                    &mut link,
                ) {
                    Ok(c) => slots.push(Slot {
                        circ: c,
                        started: [0; 2],
                    }),
                    Err(e) => return Err(format!("circuit_start: {e}")),
                }
            }
            // Open streams on open circuits.
            let may_repeat = end.is_some_and(|e| now < e);
            for s in &mut slots {
                if !s.circ.is_open() {
                    continue;
                }
                for &(dir, bytes) in &dirs {
                    let di = dir_index(dir);
                    while (s.circ.active_in(dir) as u32) < plan.streams
                        && (s.started[di] < plan.streams || may_repeat)
                        && link.room() > 0
                    {
                        stream_seq += 1;
                        seed_counter += 1;
                        let seed = plan
                            .seed_base
                            .wrapping_add((plan.index as u64) << 40)
                            .wrapping_add(seed_counter);
                        let p = StreamPlan { dir, bytes, seed };
                        if !s.circ.open_stream(p, now, &mut ctx, &mut link) {
                            break;
                        }
                        s.started[di] += 1;
                        ctx.stats.streams_expected += 1;
                    }
                }
            }
            // Rate budget (token bucket, ≤ 100 ms of burst).
            let budget = match plan.rate {
                None => u64::MAX,
                Some(r) => {
                    let dt = (now - last_refill).as_secs_f64();
                    last_refill = now;
                    tokens = (tokens + r * dt).min((r * 0.1).max(60_000.0));
                    tokens.max(0.0) as u64
                }
            };
            let mut spent = 0u64;
            for s in &mut slots {
                if link.room() == 0 {
                    break;
                }
                spent += s
                    .circ
                    .pump(now, budget.saturating_sub(spent), &mut ctx, &mut link);
            }
            if plan.rate.is_some() {
                tokens -= spent as f64;
            }
            if spent > 0 {
                progressed = true;
            }
            // CREATE2 flood: one-hop circuits at the asked rate, torn down once built.
            if let Some(rate) = plan.create_rate {
                let flood_end = end.or(if bulk {
                    None
                } else {
                    Some(start + Duration::from_secs(10))
                });
                let active =
                    flood_end.is_none_or(|e| now < e) && (bulk_running(&slots, bulk) || !bulk);
                let due = ((now - start).as_secs_f64() * rate) as u64;
                while active
                    && flood_issued < due
                    && flood.len() < MAX_FLOOD_INFLIGHT
                    && link.room() > 1
                {
                    let id = new_circ_id(ctx.rng, &|id| {
                        flood.iter().any(|c| c.id == id) || slots.iter().any(|s| s.circ.id == id)
                    });
                    if let Ok(c) = Circuit::start(
                        id,
                        plan.path.clone(),
                        1,
                        plan.handshake,
                        plan.target,
                        now,
                        &mut ctx,
                        &mut link,
                    ) {
                        flood.push(c);
                    }
                    flood_issued += 1;
                }
                for c in &mut flood {
                    if c.is_open() {
                        c.destroy(ctx.live, &mut link);
                    } else if !c.is_closed()
                        && now.duration_since(c.started_at()) > Duration::from_secs(30)
                    {
                        c.fail("flood_handshake_timeout", &mut ctx, &mut link);
                    }
                }
                flood.retain(|c| !c.is_closed());
                if !active && flood.is_empty() && !bulk {
                    break;
                }
            }
            // Finished: every slot ran its streams (or the duration is over and streams drained).
            if bulk
                && slots.len() == plan.circuits as usize
                && slots.iter().all(|s| {
                    s.circ.is_closed()
                        || (s.circ.is_open()
                            && s.circ.active_streams() == 0
                            && (end.is_some() && !may_repeat
                                || end.is_none()
                                    && dirs
                                        .iter()
                                        .all(|&(d, _)| s.started[dir_index(d)] >= plan.streams)))
                })
                && flood.is_empty()
            {
                for s in &mut slots {
                    s.circ.destroy(ctx.live, &mut link);
                }
                flush(
                    &mut sock,
                    &mut link,
                    Instant::now() + Duration::from_secs(2),
                );
                break;
            }
        }

        // Write what is queued.
        let pending = link.pending_output();
        if !pending.is_empty() {
            match sock.write(pending) {
                Ok(n) => {
                    link.consume_output(n);
                    progressed = true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("link_write_{:?}", e.kind()).to_lowercase()),
            }
        }
        if !progressed {
            let want_write = !link.pending_output().is_empty();
            wait(&sock, want_write, 5);
        }
    }
    let _ = stream_seq;
    Ok(())
}

fn bulk_running(slots: &[Slot], bulk: bool) -> bool {
    bulk && slots
        .iter()
        .any(|s| s.circ.active_streams() > 0 || !s.circ.is_open())
}

/// Waits for the socket to become readable (or writable) for at most `ms`.
fn wait(sock: &TcpStream, want_write: bool, ms: i32) {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    // SAFETY: one valid pollfd on a socket we own, for the duration of the call.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

/// Writes out what the link holds (DESTROYs at the end), bounded by `until`.
fn flush(sock: &mut TcpStream, link: &mut ClientLink, until: Instant) {
    while Instant::now() < until {
        let p = link.pending_output();
        if p.is_empty() {
            return;
        }
        match sock.write(p) {
            Ok(n) => link.consume_output(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait(sock, true, 10),
            Err(_) => return,
        }
    }
}
