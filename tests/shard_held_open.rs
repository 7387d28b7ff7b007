//! A connection closed after its output is flushed, toward a peer that never reads, is closed
//! anyway once it has waited `HOLD_OPEN_LIMIT` (15 s), as C tor's
//! `connection_expire_held_open` does: a stalled peer must not hold a socket (and whatever the
//! handler frees at close) forever. Loopback only; every wait is bounded.

mod shard_common;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime};
use shard_common::*;

#[derive(Default, Debug)]
struct Seen {
    /// When the handler asked for the close (its output could not all be sent).
    close_asked: Option<Instant>,
    /// When, and why, the shard reported it closed.
    closed: Option<(Instant, CloseReason)>,
    sent: usize,
}

/// Sends to the first connection until its output backs up for a second, then closes it.
struct Flooder {
    seen: Arc<Mutex<Seen>>,
    conn: Option<ConnId>,
    last_room: Instant,
}

impl Flooder {
    fn fill(&mut self, out: &mut Outbox<'_, ()>) {
        let Some(conn) = self.conn else { return };
        let chunk = [0x5au8; 4096];
        // Bounded: the shard's per-connection queue refuses once full.
        for _ in 0..64 {
            match out.send_partial(conn, &chunk) {
                Ok(n) => {
                    self.seen.lock().unwrap().sent += n;
                    if n < chunk.len() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

impl ConnHandler for Flooder {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, _p: SocketAddr, out: &mut Outbox<'_, ()>) {
        if self.conn.is_none() {
            self.conn = Some(conn);
            self.last_room = out.now();
            self.fill(out);
        }
    }

    fn on_data(&mut self, _c: ConnId, _d: &mut [u8], _out: &mut Outbox<'_, ()>) {}

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        if Some(conn) == self.conn && self.seen.lock().unwrap().close_asked.is_none() {
            self.last_room = out.now();
            self.fill(out);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbox<'_, ()>) {
        let Some(conn) = self.conn else { return };
        let mut seen = self.seen.lock().unwrap();
        if seen.close_asked.is_none()
            && now.saturating_duration_since(self.last_room) > Duration::from_secs(1)
            && out.pending_output(conn) > 0
        {
            seen.close_asked = Some(Instant::now());
            drop(seen);
            let _ = out.close(conn);
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        if Some(conn) == self.conn {
            self.seen.lock().unwrap().closed = Some((Instant::now(), reason));
        }
    }
}

#[test]
fn a_peer_that_never_reads_cannot_hold_a_closing_connection() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rt = Runtime::start(runtime_config(1, small_config()), {
        let seen = seen.clone();
        move |_| Flooder {
            seen: seen.clone(),
            conn: None,
            last_room: Instant::now(),
        }
    })
    .unwrap();
    let addr = rt.local_addr().unwrap();
    // Connects and never reads.
    let _peer = TcpStream::connect(addr).unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let s = seen.lock().unwrap();
        if s.closed.is_some() || Instant::now() > end {
            break;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = seen.lock().unwrap();
    eprintln!("{s:?}");
    let asked = s.close_asked.expect("the output never backed up");
    let (closed, reason) = s
        .closed
        .expect("the closing connection was held open for good");
    let held = closed.saturating_duration_since(asked);
    assert_eq!(reason, CloseReason::LocalClose);
    assert!(
        held >= Duration::from_secs(14) && held <= Duration::from_secs(20),
        "held open {held:?}, expected about 15 s"
    );
    drop(s);
    rt.stop().unwrap();
}
