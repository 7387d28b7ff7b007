//! Cross-shard forwarding: bytes received on one shard travel through the SPSC queue to the
//! other shard, which writes them to an outbound connection it opened with connect.

mod shard_common;

use std::collections::VecDeque;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, CrossPushError, Outbox, Runtime, ShardId};
use shard_common::*;

/// A cell-sized fixed chunk: what a relay would move between shards.
pub struct Chunk {
    len: u16,
    data: [u8; 509],
}

struct Forwarder {
    sink: SocketAddr,
    outbound: Option<ConnId>,
    connected: bool,
    /// Bytes waiting for the outbound connection (not yet connected, or full).
    pending: VecDeque<u8>,
    /// Bytes that could not be pushed cross-shard (queue full), per source.
    unpushed: VecDeque<Chunk>,
    pub forwarded: u64,
    pub received_cross: u64,
    pub batches: u64,
    pub closes: Vec<CloseReason>,
}

impl Forwarder {
    fn flush_pending(&mut self, out: &mut Outbox<'_, Chunk>) {
        let Some(conn) = self.outbound else { return };
        if !self.connected {
            return;
        }
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            match out.send_partial(conn, a) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.pending.drain(..n);
                }
            }
        }
    }

    fn flush_unpushed(&mut self, out: &mut Outbox<'_, Chunk>) {
        let to = ShardId(1 - out.shard().0);
        while let Some(c) = self.unpushed.pop_front() {
            if let Err(CrossPushError::Full(c) | CrossPushError::NoSuchShard(c)) =
                out.push_cross(to, c)
            {
                self.unpushed.push_front(c);
                break;
            }
        }
    }
}

impl ConnHandler for Forwarder {
    type Msg = Chunk;

    fn on_accept(&mut self, _c: ConnId, _p: SocketAddr, _o: &mut Outbox<'_, Chunk>) {}

    fn on_connected(&mut self, conn: ConnId, _p: SocketAddr, out: &mut Outbox<'_, Chunk>) {
        assert_eq!(Some(conn), self.outbound);
        self.connected = true;
        self.flush_pending(out);
    }

    fn on_data(&mut self, _conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, Chunk>) {
        // Every accepted connection's bytes go to the other shard.
        for part in data.chunks(509) {
            let mut c = Chunk {
                len: part.len() as u16,
                data: [0; 509],
            };
            c.data[..part.len()].copy_from_slice(part);
            self.forwarded += part.len() as u64;
            self.unpushed.push_back(c);
        }
        self.flush_unpushed(out);
    }

    fn on_writable(&mut self, _conn: ConnId, out: &mut Outbox<'_, Chunk>) {
        self.flush_pending(out);
    }

    fn on_closed(&mut self, _conn: ConnId, reason: CloseReason, _o: &mut Outbox<'_, Chunk>) {
        self.closes.push(reason);
    }

    fn on_cross_shard(
        &mut self,
        _from: ShardId,
        items: std::vec::Drain<'_, Chunk>,
        out: &mut Outbox<'_, Chunk>,
    ) {
        self.batches += 1;
        for c in items {
            self.received_cross += u64::from(c.len);
            self.pending.extend(&c.data[..c.len as usize]);
        }
        self.flush_pending(out);
    }

    fn on_tick(&mut self, _now: Instant, out: &mut Outbox<'_, Chunk>) {
        if self.outbound.is_none() {
            self.outbound = Some(out.connect(self.sink).expect("connect"));
        }
        self.flush_unpushed(out);
        self.flush_pending(out);
    }
}

#[test]
fn bytes_cross_shards_intact() {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let (tx, rx) = mpsc::channel::<(usize, Vec<u8>)>();
    const TOTAL: usize = 3_000_000;
    // Sink side: accept both shards' outbound connections, read each until EOF/quiet.
    let total_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink_thread = std::thread::spawn(move || {
        let mut readers = Vec::new();
        for i in 0..2 {
            let (mut s, _) = sink.accept().unwrap();
            let tx = tx.clone();
            let total_seen = total_seen.clone();
            readers.push(std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                let end = Instant::now() + Duration::from_secs(30);
                use std::sync::atomic::Ordering::SeqCst;
                while Instant::now() < end && total_seen.load(SeqCst) < TOTAL {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            total_seen.fetch_add(n, SeqCst);
                        }
                        Err(_) => {}
                    }
                }
                tx.send((i, got)).unwrap();
            }));
        }
        for r in readers {
            r.join().unwrap();
        }
    });

    let cfg = runtime_config(2, small_config());
    let rt = Runtime::start(cfg, move |_| Forwarder {
        sink: sink_addr,
        outbound: None,
        connected: false,
        pending: VecDeque::new(),
        unpushed: VecDeque::new(),
        forwarded: 0,
        received_cross: 0,
        batches: 0,
        closes: Vec::new(),
    })
    .unwrap();
    let addr = rt.local_addr().unwrap();
    // Let both shards' first tick open their outbound connections.
    std::thread::sleep(Duration::from_millis(200));

    let data = pattern(7, TOTAL);
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        for part in data.chunks(60_000) {
            c.write_all(part).unwrap();
        }
    }
    let mut results = [
        rx.recv_timeout(Duration::from_secs(40)).unwrap(),
        rx.recv_timeout(Duration::from_secs(40)).unwrap(),
    ];
    results.sort_by_key(|r| std::cmp::Reverse(r.1.len()));
    sink_thread.join().unwrap();
    let reports = rt.stop().unwrap();

    // All data went through exactly one shard's outbound connection, in order.
    assert_eq!(results[1].1.len(), 0);
    assert_eq!(results[0].1.len(), TOTAL);
    assert!(results[0].1 == data, "forwarded bytes differ");
    let fwd: u64 = reports.iter().map(|r| r.handler.forwarded).sum();
    let recv: u64 = reports.iter().map(|r| r.handler.received_cross).sum();
    assert_eq!(fwd, TOTAL as u64);
    assert_eq!(recv, TOTAL as u64);
    let pushed: u64 = reports.iter().map(|r| r.metrics.cross_pushed).sum();
    let popped: u64 = reports.iter().map(|r| r.metrics.cross_popped).sum();
    assert_eq!(pushed, popped);
    let wakes: u64 = reports.iter().map(|r| r.metrics.cross_wakeups_sent).sum();
    let batches: u64 = reports.iter().map(|r| r.handler.batches).sum();
    // Batching: far fewer wake-ups than items.
    assert!(
        wakes > 0 && wakes * 4 < pushed,
        "wakes {wakes} for {pushed} items"
    );
    assert!(batches <= pushed);
    for r in &reports {
        assert_eq!(r.metrics.connected, 1);
        assert_eq!(r.metrics.shutdown_leaked_ops, 0);
    }
}
