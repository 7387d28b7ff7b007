//! Issue #15: the shard's connection table gives its chunks back after a peak. Slots are
//! taken lowest first, so once a peak has passed the high chunks are wholly free, and the
//! once-a-second trim releases them (keeping one free chunk above the live ones); a slot of
//! a released chunk is never handed out, and new connections land in the low chunks.

mod shard_common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime, ShardConfig};
use shard_common::*;

/// Slots per chunk of the connection table (`shard::conn::CONN_CHUNK`).
const CHUNK: u64 = 256;

/// Counts accepts and closes, and the highest slot of the connections accepted since
/// `mark` was raised.
struct Counter {
    accepted: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    max_slot_after_mark: Arc<AtomicU64>,
    mark: Arc<AtomicU64>,
}

impl ConnHandler for Counter {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, _peer: SocketAddr, _out: &mut Outbox<'_, ()>) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        if self.mark.load(Ordering::SeqCst) != 0 {
            self.max_slot_after_mark
                .fetch_max(u64::from(conn.slot()), Ordering::SeqCst);
        }
    }

    fn on_data(&mut self, _conn: ConnId, _data: &mut [u8], _out: &mut Outbox<'_, ()>) {}

    fn on_closed(&mut self, _conn: ConnId, _reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_connection_table_gives_chunks_back_after_a_peak() {
    let cfg = ShardConfig {
        max_connections: 8 * CHUNK as u32,
        ..small_config()
    };
    let (accepted, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (max_slot, mark) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let h = (
        accepted.clone(),
        closed.clone(),
        max_slot.clone(),
        mark.clone(),
    );
    let rt = Runtime::start(runtime_config(1, cfg), move |_| Counter {
        accepted: h.0.clone(),
        closed: h.1.clone(),
        max_slot_after_mark: h.2.clone(),
        mark: h.3.clone(),
    })
    .unwrap();
    let addr = rt.local_addr().unwrap();
    // A peak of 5 chunks' worth (slots 0..1200), held at once.
    const PEAK: u64 = 1200;
    let held: Vec<TcpStream> = (0..PEAK)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
        .collect();
    wait_for("the peak's accepts", Duration::from_secs(30), || {
        accepted.load(Ordering::SeqCst) == PEAK
    });
    // All but the first 10 close; the trim runs once a second.
    let mut held = held;
    held.truncate(10);
    wait_for("the closes", Duration::from_secs(30), || {
        closed.load(Ordering::SeqCst) == PEAK - 10
    });
    std::thread::sleep(Duration::from_millis(2500));
    // New connections land in the first chunk, next to the ones still open.
    mark.store(1, Ordering::SeqCst);
    let more: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
        .collect();
    wait_for("the new accepts", Duration::from_secs(30), || {
        accepted.load(Ordering::SeqCst) == PEAK + 100
    });
    std::thread::sleep(Duration::from_millis(100));
    let reports = rt.stop().unwrap();
    drop((held, more));
    let m = &reports[0].metrics;
    println!(
        "slots allocated {} after a peak of {PEAK}; chunks released {}; highest new slot {}",
        m.conn_slots_allocated,
        m.conn_chunks_released,
        max_slot.load(Ordering::SeqCst)
    );
    // Five chunks at the peak; the live ones fit in the first, one free chunk is kept.
    assert_eq!(m.conn_chunks_released, 3);
    assert_eq!(m.conn_slots_allocated, 2 * CHUNK);
    assert!(max_slot.load(Ordering::SeqCst) < CHUNK);
}
