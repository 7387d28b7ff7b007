//! Bandwidth buckets on real sockets (loopback only): a 2-shard runtime started with one
//! shared budget holds reading and writing to the rate across both shards, every
//! connection keeps getting its turn, an empty bucket does not make a shard spin, and a
//! raised limit applies at once. No randomness is used.

mod shard_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fors::shard::{BwRates, CloseReason, ConnHandler, ConnId, Outbox, Runtime, SharedBudget};
use shard_common::*;

const SHARDS: usize = 2;
const CONNS: usize = 8;
const MB: u64 = 1 << 20;

fn rates(rate: u64) -> BwRates {
    BwRates {
        rate,
        burst: rate,
        relay_rate: 0,
        relay_burst: 0,
    }
}

/// Counts what it reads (`send == false`) or writes as much as it may (`send == true`).
/// Per-connection counts live in `slots` (index `base + table slot`, starting at 1 on
/// accept so a connection that never got a byte still shows), readable while it runs.
struct Pump {
    send: bool,
    /// Every connection reads regardless of the buckets (as a link handshake does).
    ungated: bool,
    total: Arc<AtomicU64>,
    /// The shard's event-loop iterations, copied at each tick.
    iterations: Arc<AtomicU64>,
    slots: Arc<Vec<AtomicU64>>,
    base: usize,
}

impl Pump {
    fn count(&self, conn: ConnId, n: u64) {
        self.slots[self.base + conn.slot() as usize].fetch_add(n, Ordering::Relaxed);
        self.total.fetch_add(n, Ordering::Relaxed);
    }
}

static CHUNK: [u8; 4096] = [0x42; 4096];

impl Pump {
    fn fill(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        // Bounded: the connection's send queue takes a few buffers at most.
        for _ in 0..1024 {
            let n = out.send_partial(conn, &CHUNK).unwrap_or(0);
            self.count(conn, n as u64);
            if n < CHUNK.len() {
                break;
            }
        }
    }
}

impl ConnHandler for Pump {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, _p: SocketAddr, out: &mut Outbox<'_, ()>) {
        self.slots[self.base + conn.slot() as usize].store(1, Ordering::Relaxed);
        if self.ungated {
            out.set_bw_read_ungated(conn, true).unwrap();
        }
        if self.send {
            self.fill(conn, out);
        }
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], _out: &mut Outbox<'_, ()>) {
        self.count(conn, data.len() as u64);
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        if self.send {
            self.fill(conn, out);
        }
    }

    fn on_closed(&mut self, _c: ConnId, _r: CloseReason, _out: &mut Outbox<'_, ()>) {}

    fn on_tick(&mut self, _now: Instant, out: &mut Outbox<'_, ()>) {
        self.iterations
            .store(out.metrics().loop_iterations, Ordering::Relaxed);
    }
}

struct Setup {
    rt: Runtime<Pump>,
    budget: Arc<SharedBudget>,
    totals: Vec<Arc<AtomicU64>>,
    iterations: Vec<Arc<AtomicU64>>,
    slots: Arc<Vec<AtomicU64>>,
    per_shard_slots: usize,
    addr: SocketAddr,
}

fn start(send: bool, rate: u64) -> Setup {
    start_with(send, false, rate)
}

fn start_with(send: bool, ungated: bool, rate: u64) -> Setup {
    let budget = SharedBudget::new(SHARDS, rates(rate), Instant::now());
    let totals: Vec<Arc<AtomicU64>> = (0..SHARDS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let t = totals.clone();
    let iterations: Vec<Arc<AtomicU64>> =
        (0..SHARDS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let it = iterations.clone();
    let mut cfg = small_config();
    // The relay's tick (and C tor's TokenBucketRefillInterval).
    cfg.tick_ms = 100;
    let per_shard_slots = cfg.max_connections as usize;
    let slots: Arc<Vec<AtomicU64>> = Arc::new(
        (0..SHARDS * per_shard_slots)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let sl = slots.clone();
    let rt = Runtime::start_limited(
        runtime_config(SHARDS, cfg),
        Some(budget.clone()),
        move |id| Pump {
            send,
            ungated,
            total: t[id.0].clone(),
            iterations: it[id.0].clone(),
            slots: sl.clone(),
            base: id.0 * per_shard_slots,
        },
    )
    .unwrap();
    let addr = rt.local_addr().unwrap();
    Setup {
        rt,
        budget,
        totals,
        iterations,
        slots,
        per_shard_slots,
        addr,
    }
}

fn total(s: &Setup) -> u64 {
    s.totals.iter().map(|t| t.load(Ordering::Relaxed)).sum()
}

/// Client threads that write (or read) as fast as they can until `stop`.
fn clients(addr: SocketAddr, write: bool, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..CONNS)
        .map(|_| {
            let stop = stop.clone();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            s.set_write_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut moved = 0u64;
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let r = if write {
                        s.write(&buf)
                    } else {
                        s.read(&mut buf)
                    };
                    match r {
                        Ok(0) => break,
                        Ok(n) => moved += n as u64,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                moved
            })
        })
        .collect()
}

fn snapshot(s: &Setup) -> Vec<u64> {
    s.slots.iter().map(|a| a.load(Ordering::Relaxed)).collect()
}

fn iterations(s: &Setup) -> Vec<u64> {
    s.iterations
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect()
}

/// What one measuring window saw.
struct Window {
    /// Bytes per second over all shards.
    rate: f64,
    /// `(shard, bytes)` of each accepted connection.
    conns: Vec<(usize, u64)>,
    /// Event-loop iterations per second, per shard.
    loops: Vec<f64>,
}

/// Waits `warmup`, then measures for `secs`.
fn measure(s: &Setup, warmup: Duration, secs: u64) -> Window {
    std::thread::sleep(warmup);
    let (a, t, before, it) = (total(s), Instant::now(), snapshot(s), iterations(s));
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t.elapsed().as_secs_f64();
    let rate = (total(s) - a) as f64 / elapsed;
    let loops = iterations(s)
        .iter()
        .zip(it)
        .map(|(b, a)| (b - a) as f64 / elapsed)
        .collect();
    let conns = snapshot(s)
        .iter()
        .zip(before)
        .enumerate()
        .filter(|(_, (&after, _))| after > 0)
        .map(|(i, (&after, before))| (i / s.per_shard_slots, after - before))
        .collect();
    Window { rate, conns, loops }
}

fn check_fair(conns: &[(usize, u64)], what: &str) {
    let per_conn: Vec<u64> = conns.iter().map(|c| c.1).collect();
    let per_shard: Vec<u64> = (0..SHARDS)
        .map(|i| conns.iter().filter(|c| c.0 == i).map(|c| c.1).sum())
        .collect();
    let conns_per_shard: Vec<usize> = (0..SHARDS)
        .map(|i| conns.iter().filter(|c| c.0 == i).count())
        .collect();
    eprintln!(
        "{what}: per shard {per_shard:?} ({conns_per_shard:?} connections), per connection \
         {per_conn:?}"
    );
    assert_eq!(per_conn.len(), CONNS);
    let mean = per_conn.iter().sum::<u64>() / CONNS as u64;
    // No connection is starved: each got a real share of the budget.
    assert!(
        per_conn.iter().all(|&b| b > mean / 10),
        "{what}: a connection starved: {per_conn:?}"
    );
    // Two shards with connections: neither starves the other.
    if conns_per_shard.iter().all(|&n| n > 0) {
        let sum: u64 = per_shard.iter().sum();
        for (i, &b) in per_shard.iter().enumerate() {
            let share = b as f64 / sum as f64;
            let fair = conns_per_shard[i] as f64 / CONNS as f64;
            assert!(
                share > fair * 0.3,
                "{what}: shard {i} got {share:.2} of the bytes with {fair:.2} of the connections"
            );
        }
    }
}

fn check_quiet(w: &Window, reports: &[fors::shard::ShardReport<Pump>], what: &str) {
    eprintln!(
        "{what}: loop iterations per second while limited: {:?}",
        w.loops
    );
    // Out of tokens a shard sleeps in the ring until the next tick; a spinning shard would
    // loop hundreds of thousands of times a second. Limited to 1 MB/s in 4 KiB buffers, a
    // few hundred completions a second is all there is.
    for (i, l) in w.loops.iter().enumerate() {
        assert!(
            *l < 5000.0,
            "{what}: shard {i} looped {l:.0} times a second"
        );
    }
    for r in reports {
        let m = &r.metrics;
        eprintln!(
            "{what}: shard {}: {} loop iterations, {} ticks, bw read pauses {}, write waits {}, \
             empty g/r {}/{} (read) {}/{} (write)",
            r.shard.0,
            m.loop_iterations,
            m.ticks,
            m.bw_read_pauses,
            m.bw_write_waits,
            m.bw_global_read_empty,
            m.bw_relayed_read_empty,
            m.bw_global_write_empty,
            m.bw_relayed_write_empty
        );
    }
}

#[test]
fn reads_are_held_to_the_shared_rate_and_lift_at_once() {
    eprintln!("seed: none (the test uses no randomness)");
    let rate = MB;
    let s = start(false, rate);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = clients(s.addr, true, &stop);
    // After the first burst (1 MB), the rate.
    let w = measure(&s, Duration::from_millis(1500), 4);
    let held = w.rate;
    eprintln!("reading at {held:.0} B/s under a {rate} B/s limit");
    s.budget.set_rates(rates(1 << 30));
    let lifted = measure(&s, Duration::from_millis(300), 2).rate;
    eprintln!("reading at {lifted:.0} B/s after lifting the limit");
    stop.store(true, Ordering::Relaxed);
    let reports = s.rt.stop().unwrap();
    for t in threads {
        let _ = t.join();
    }
    assert!(
        (held - rate as f64).abs() < 0.1 * rate as f64,
        "read {held:.0} B/s under a {rate} B/s limit"
    );
    assert!(reports.iter().any(|r| r.metrics.bw_read_pauses > 0));
    assert!(lifted > 5.0 * rate as f64, "{lifted:.0} B/s after lifting");
    check_fair(&w.conns, "read");
    check_quiet(&w, &reports, "read");
}

#[test]
fn writes_are_held_to_the_shared_rate_and_lift_at_once() {
    eprintln!("seed: none (the test uses no randomness)");
    let rate = MB;
    let s = start(true, rate);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = clients(s.addr, false, &stop);
    let w = measure(&s, Duration::from_millis(1500), 4);
    let held = w.rate;
    eprintln!("writing at {held:.0} B/s under a {rate} B/s limit");
    s.budget.set_rates(rates(1 << 30));
    let lifted = measure(&s, Duration::from_millis(300), 2).rate;
    eprintln!("writing at {lifted:.0} B/s after lifting the limit");
    stop.store(true, Ordering::Relaxed);
    let reports = s.rt.stop().unwrap();
    for t in threads {
        let _ = t.join();
    }
    // Counted when queued; queues are bounded (8 × 4 KiB per connection), so over 4 s the
    // queued rate is the sent rate.
    assert!(
        (held - rate as f64).abs() < 0.1 * rate as f64,
        "wrote {held:.0} B/s under a {rate} B/s limit"
    );
    assert!(reports.iter().any(|r| r.metrics.bw_write_waits > 0));
    assert!(lifted > 5.0 * rate as f64, "{lifted:.0} B/s after lifting");
    check_fair(&w.conns, "write");
    check_quiet(&w, &reports, "write");
}

#[test]
fn ungated_connections_read_through_an_empty_bucket_and_are_still_charged() {
    eprintln!("seed: none (the test uses no randomness)");
    let rate = MB;
    let s = start_with(false, true, rate);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = clients(s.addr, true, &stop);
    let w = measure(&s, Duration::from_millis(500), 2);
    eprintln!(
        "ungated reading at {:.0} B/s under a {rate} B/s limit",
        w.rate
    );
    stop.store(true, Ordering::Relaxed);
    let reports = s.rt.stop().unwrap();
    for t in threads {
        let _ = t.join();
    }
    assert!(w.rate > 5.0 * rate as f64, "{:.0} B/s", w.rate);
    // Charged all the same: the bucket ran dry, nothing was paused.
    assert!(reports.iter().any(|r| r.metrics.bw_global_read_empty > 0));
    assert!(reports.iter().all(|r| r.metrics.bw_read_pauses == 0));
}
