//! `Outbox::send_with` on the io_uring shard (loopback only, bounded loops): a producer
//! writes straight into the send pool, as the relay's channels write their TLS records
//! (the copy map, `docs/architecture.md`). An echo whose handler answers only through
//! `send_with` — in pieces smaller than a buffer, so fills stop short, or move on to a
//! fresh buffer leaving a buffer's rest unused, and sometimes write nothing into one — and
//! hands what does not fit to `send_partial`
//! (which marks the connection blocked) must echo every byte in order, leave no buffer
//! behind, and keep the per-connection bound.

mod shard_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use fors::shard::{CloseReason, ConnHandler, ConnId, Filled, Outbox, Runtime};
use shard_common::*;

/// At most this many bytes per `fill` call: below the 4 KiB send buffers.
const PIECE: usize = 1500;

#[derive(Default)]
struct FillEcho {
    stash: HashMap<ConnId, Vec<u8>>,
    paused: HashMap<ConnId, bool>,
    fills: u64,
    empty_fills: u64,
    closed: u64,
}

impl FillEcho {
    fn flush(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        let Some(s) = self.stash.get_mut(&conn) else {
            return;
        };
        // Bounded: each round either moves bytes or stops.
        for _ in 0..10_000 {
            if s.is_empty() {
                break;
            }
            let (fills, empty) = (&mut self.fills, &mut self.empty_fills);
            let n = out
                .send_with(conn, &mut |buf| {
                    *fills += 1;
                    let n = s.len().min(buf.len()).min(PIECE);
                    *empty += u64::from(n == 0);
                    buf[..n].copy_from_slice(&s[..n]);
                    s.drain(..n);
                    // Every other fill moves on with bytes left, leaving the buffer's
                    // rest unused (as the record layer does with a tail too small for a
                    // cell's record): that rest must never reach the wire.
                    Filled {
                        written: n,
                        more: !s.is_empty() && *fills % 2 == 0,
                    }
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
        }
        if !s.is_empty() {
            // What the buffers could not take: `send_partial` marks the connection blocked,
            // so `on_writable` follows.
            let n = out.send_partial(conn, s).unwrap_or(0);
            s.drain(..n);
        }
        let paused = self.paused.entry(conn).or_default();
        if !s.is_empty() && !*paused && out.pause_read(conn).is_ok() {
            *paused = true;
        } else if s.is_empty() && *paused && out.resume_read(conn).is_ok() {
            *paused = false;
        }
    }
}

impl ConnHandler for FillEcho {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, _peer: SocketAddr, _out: &mut Outbox<'_, ()>) {
        self.stash.insert(conn, Vec::new());
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        if let Some(s) = self.stash.get_mut(&conn) {
            s.extend_from_slice(data);
        }
        self.flush(conn, out);
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        self.flush(conn, out);
    }

    fn on_closed(&mut self, conn: ConnId, _reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        self.stash.remove(&conn);
        self.paused.remove(&conn);
        self.closed += 1;
    }
}

#[test]
fn send_with_echoes_in_order_within_bounds() {
    let cfg = small_config();
    let per_conn = u64::from(cfg.max_send_bufs_per_conn);
    let rt = Runtime::start(runtime_config(1, cfg), |_| FillEcho::default()).unwrap();
    let addr = rt.local_addr().unwrap();
    const CONNS: usize = 6;
    let workers: Vec<_> = (0..CONNS)
        .map(|k| {
            std::thread::spawn(move || {
                let data = pattern(1000 + k as u64, 150_000 + 7919 * k);
                let got = echo_round_trip(addr, &data, Duration::from_secs(20));
                assert_eq!(got.len(), data.len(), "conn {k}: short echo");
                assert!(got == data, "conn {k}: echo differs");
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let reports = rt.stop().unwrap();
    let r = &reports[0];
    println!(
        "fills {}, of which empty {}; send queue peak {} buffers; backpressure {}",
        r.handler.fills,
        r.handler.empty_fills,
        r.metrics.send_queue_peak_bufs,
        r.metrics.send_backpressure
    );
    assert_eq!(r.handler.closed, CONNS as u64);
    assert_eq!(r.metrics.recv_bytes, r.metrics.send_bytes);
    assert!(r.handler.fills > 0);
    assert!(
        r.metrics.send_queue_peak_bufs <= per_conn,
        "a connection held {} send buffers, bound {per_conn}",
        r.metrics.send_queue_peak_bufs
    );
    assert_eq!(r.metrics.shutdown_leaked_ops, 0);
    assert_eq!(r.metrics.conns_open, 0);
}
