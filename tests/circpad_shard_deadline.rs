//! The shard loop's millisecond wake-ups (`ConnHandler::next_deadline` / `on_timer`, used
//! by the circuit padding machines): a handler that asks for a wake-up 5 ms ahead, again
//! and again, gets about one `on_timer` per 5 ms although the tick is 100 ms and no socket
//! is active; a deadline left in the past is served without the loop spinning on it (the
//! handler drops it after one call here, and the loop must then block again).

mod shard_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime, ShardConfig};
use shard_common::*;

const STEP: Duration = Duration::from_millis(5);

struct Waker {
    echo: Echo,
    /// Until then, re-arm 5 ms ahead after each `on_timer`.
    rearm_until: Instant,
    next: Option<Instant>,
    /// `now - deadline` of every call (lateness).
    late: Vec<Duration>,
    early: u64,
}

impl ConnHandler for Waker {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, ()>) {
        self.echo.on_accept(conn, peer, out);
    }
    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        self.echo.on_data(conn, data, out);
    }
    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, ()>) {
        self.echo.on_closed(conn, reason, out);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.next
    }
    fn on_timer(&mut self, now: Instant, _out: &mut Outbox<'_, ()>) {
        let Some(at) = self.next else {
            self.early += 1;
            return;
        };
        if now < at {
            self.early += 1;
        }
        self.late.push(now.saturating_duration_since(at));
        self.next = if now < self.rearm_until {
            Some(now + STEP)
        } else {
            None
        };
    }
}

#[test]
fn handler_deadlines_wake_the_loop_within_milliseconds() {
    let start = Instant::now();
    let rearm_until = start + Duration::from_millis(500);
    let rt = Runtime::start(
        runtime_config(
            1,
            ShardConfig {
                tick_ms: 100,
                ..small_config()
            },
        ),
        move |_| Waker {
            echo: Echo::default(),
            rearm_until,
            // The first one already past: served once, not in a loop.
            next: Some(start - Duration::from_millis(1)),
            late: Vec::new(),
            early: 0,
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let reports = rt.stop().unwrap();
    let h = &reports[0].handler;
    let m = &reports[0].metrics;
    println!(
        "{} timer calls, {} loop iterations, {} ticks; lateness max {:?}",
        h.late.len(),
        m.loop_iterations,
        m.ticks,
        h.late.iter().max()
    );
    assert_eq!(h.early, 0, "on_timer before its deadline");
    // 500 ms of 5 ms steps (each from the call's own now): ~100 calls; with a 100 ms tick
    // alone there would be at most ~10. Bounds leave room for a loaded machine.
    assert!(
        (40..=101).contains(&h.late.len()),
        "{} on_timer calls in 500 ms of 5 ms deadlines",
        h.late.len()
    );
    // No spinning: once the deadlines stopped (400 ms of nothing but ticks), the loop
    // iterated about once per tick, not continuously.
    assert!(
        m.loop_iterations < 3 * h.late.len() as u64 + 200,
        "{} loop iterations for {} timer calls and {} ticks",
        m.loop_iterations,
        h.late.len(),
        m.ticks
    );
}
