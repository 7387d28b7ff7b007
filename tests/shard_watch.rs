//! Readiness watches: a handler's own UDP socket, watched by the shard's ring, delivers every
//! datagram through `on_readable` well before the (slow) tick would; the watch table is
//! bounded; shutdown cancels the poll without leaking ops.

mod shard_common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use fors::shard::{ConnHandler, ConnId, Outbox, OutboxError, Runtime, ShardConfig, WatchId};
use shard_common::*;

struct UdpDrain {
    sock: UdpSocket,
    /// Extra watches asked for at start (to hit the bound).
    extra_watches: usize,
    watch_results: Vec<Result<WatchId, OutboxError>>,
    datagrams: u64,
    bytes: u64,
    readable_calls: u64,
    ticks_with_data: u64,
}

impl ConnHandler for UdpDrain {
    type Msg = ();

    fn on_start(&mut self, out: &mut Outbox<'_, ()>) {
        use std::os::fd::AsFd;
        for _ in 0..1 + self.extra_watches {
            let r = out.watch_readable(self.sock.as_fd());
            self.watch_results.push(r);
        }
    }

    fn on_readable(&mut self, _w: WatchId, _out: &mut Outbox<'_, ()>) {
        self.readable_calls += 1;
        self.drain();
    }

    fn on_accept(&mut self, _c: ConnId, _p: std::net::SocketAddr, _out: &mut Outbox<'_, ()>) {}

    fn on_data(&mut self, _c: ConnId, _d: &mut [u8], _out: &mut Outbox<'_, ()>) {}

    fn on_closed(&mut self, _c: ConnId, _r: fors::shard::CloseReason, _out: &mut Outbox<'_, ()>) {}

    fn on_tick(&mut self, _now: Instant, _out: &mut Outbox<'_, ()>) {
        if self.drain() > 0 {
            self.ticks_with_data += 1;
        }
    }
}

impl UdpDrain {
    fn drain(&mut self) -> u64 {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while let Ok((len, _)) = self.sock.recv_from(&mut buf) {
            n += 1;
            self.bytes += len as u64;
        }
        self.datagrams += n;
        n
    }
}

fn start(extra_watches: usize) -> (Runtime<UdpDrain>, std::net::SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    // A tick far longer than the test's waits: only the watch can deliver in time.
    let cfg = ShardConfig {
        tick_ms: 10_000,
        ..small_config()
    };
    let rt = Runtime::start(runtime_config(1, cfg), move |_| UdpDrain {
        sock: sock.try_clone().unwrap(),
        extra_watches,
        watch_results: Vec::new(),
        datagrams: 0,
        bytes: 0,
        readable_calls: 0,
        ticks_with_data: 0,
    })
    .unwrap();
    (rt, addr)
}

#[test]
fn watched_udp_socket_delivers_every_datagram_promptly() {
    let (rt, addr) = start(0);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    const N: u64 = 300;
    let start = Instant::now();
    for i in 0..N {
        tx.send_to(&[i as u8; 100], addr).unwrap();
        if i % 50 == 49 {
            // Several separate wake-ups, not one burst.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(5));
    let reports = rt.stop().unwrap();
    let h = &reports[0].handler;
    assert!(matches!(h.watch_results[..], [Ok(WatchId(0))]));
    assert_eq!(h.datagrams, N, "datagrams delivered");
    assert_eq!(h.bytes, N * 100);
    assert!(h.readable_calls >= 2, "{} wake-ups", h.readable_calls);
    assert_eq!(
        h.ticks_with_data, 0,
        "the tick, not the watch, delivered data"
    );
    assert_eq!(reports[0].metrics.shutdown_leaked_ops, 0);
}

#[test]
fn watch_table_is_bounded() {
    let (rt, _) = start(7);
    let reports = rt.stop().unwrap();
    let r = &reports[0].handler.watch_results;
    assert_eq!(r.len(), 8);
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 4);
    assert!(matches!(r[4], Err(OutboxError::TableFull)));
    assert_eq!(reports[0].metrics.shutdown_leaked_ops, 0);
}
