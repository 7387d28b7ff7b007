//! A handler with background work left after every batch (a long CREATE2 queue, say) makes
//! the loop poll the ring without blocking. Completions must still arrive while it does:
//! with DEFER_TASKRUN the kernel runs completion work only on an enter with GETEVENTS, so a
//! poll that skipped it would starve every socket until the backlog ended.

mod shard_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime};
use shard_common::*;

/// Echo, plus a background backlog that lasts until `busy_until`.
struct BusyEcho {
    echo: Echo,
    busy_until: Instant,
    backlog_batches: u64,
}

impl ConnHandler for BusyEcho {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, ()>) {
        self.echo.on_accept(conn, peer, out);
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        self.echo.on_data(conn, data, out);
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        self.echo.on_writable(conn, out);
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, ()>) {
        self.echo.on_closed(conn, reason, out);
    }

    fn on_batch_end(&mut self, _out: &mut Outbox<'_, ()>) -> bool {
        let busy = Instant::now() < self.busy_until;
        if busy {
            self.backlog_batches += 1;
            // A slice of "work" per batch, as a real queue would take.
            std::thread::sleep(Duration::from_micros(200));
        }
        busy
    }
}

#[test]
fn sockets_are_served_while_the_handler_has_a_backlog() {
    const BUSY: Duration = Duration::from_secs(20);
    let busy_until = Instant::now() + BUSY;
    let rt = Runtime::start(runtime_config(1, small_config()), move |_| BusyEcho {
        echo: Echo::default(),
        busy_until,
        backlog_batches: 0,
    })
    .unwrap();
    let addr = rt.local_addr().unwrap();
    let data = pattern(7, 200_000);
    let t0 = Instant::now();
    let got = echo_round_trip(addr, &data, Duration::from_secs(10));
    let took = t0.elapsed();
    let still_busy = Instant::now() < busy_until;
    let reports = rt.stop().unwrap();
    let h = &reports[0].handler;
    assert!(got == data, "echo: {} of {} bytes", got.len(), data.len());
    // The echo finished inside the backlog window, so it did not wait for it to end.
    assert!(
        still_busy,
        "the echo took {took:?}, past the backlog window"
    );
    assert!(h.backlog_batches > 0);
    assert_eq!(h.echo.accepted, 1);
    assert_eq!(reports[0].metrics.shutdown_leaked_ops, 0);
}
