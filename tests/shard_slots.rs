//! Connection slots by class in the shard runtime (issue #15), on loopback with a 64-slot
//! table (`slot_classes` on: outbound up to 48, inbound up to 48 of which 8 live handshakes
//! and 32 authenticated). A handler marks a connection authenticated when it says `AUTH`.
//! While idle connections number three times the table: the authenticated ones stay open,
//! the oldest idle ones are evicted (`CloseReason::Evicted`, counted), a new connection still
//! gets in, and the handler can still open outbound connections. Without classes the idle
//! sockets filled the table and the new connection was refused.

mod shard_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime, ShardConfig};
use shard_common::*;

const TABLE: u32 = 64;
const OUTBOUND: usize = 12;

struct Classes {
    target: SocketAddr,
    evicted: u64,
    auth_failed: u64,
    connects_ok: u64,
}

impl ConnHandler for Classes {
    type Msg = ();

    fn on_accept(&mut self, _conn: ConnId, _peer: SocketAddr, _out: &mut Outbox<'_, ()>) {}

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        if data.starts_with(b"AUTH") {
            if out.set_authenticated(conn).is_err() {
                self.auth_failed += 1;
            }
            let _ = out.send(conn, b"OK");
        } else if data.starts_with(b"CONNECT") {
            let ok = (0..OUTBOUND)
                .filter(|_| out.connect(self.target).is_ok())
                .count();
            self.connects_ok += ok as u64;
            let _ = out.send(conn, format!("C{ok:02}").as_bytes());
        }
    }

    fn on_closed(&mut self, _conn: ConnId, reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        if reason == CloseReason::Evicted {
            self.evicted += 1;
        }
    }
}

fn ask(s: &mut TcpStream, what: &[u8], n: usize) -> Result<Vec<u8>, String> {
    s.write_all(what).map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(buf)
}

#[test]
fn idle_connections_evict_each_other_not_authenticated_or_outbound_ones() {
    eprintln!("seed: none (the test uses no randomness)");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    let cfg = ShardConfig {
        max_connections: TABLE,
        slot_classes: true,
        ..small_config()
    };
    let rt = Runtime::start(runtime_config(1, cfg), move |_| Classes {
        target: target_addr,
        evicted: 0,
        auth_failed: 0,
        connects_ok: 0,
    })
    .unwrap();
    let addr = rt.local_addr().unwrap();
    let limit = Some(Duration::from_secs(10));

    let mut authed: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(limit).unwrap();
            assert_eq!(ask(&mut s, b"AUTH", 2).unwrap(), b"OK");
            s
        })
        .collect();

    // Three tables' worth of idle connections, held (bounded in count and time).
    let t0 = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..3 * TABLE {
        if t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 3 * TABLE as usize);
    std::thread::sleep(Duration::from_millis(300));

    // The authenticated connections are untouched.
    for s in &mut authed {
        assert_eq!(ask(s, b"AUTH", 2).unwrap(), b"OK");
    }
    // A new connection gets in (it evicts the oldest idle one) and outbound work has room.
    let mut fresh = TcpStream::connect(addr).unwrap();
    fresh.set_read_timeout(limit).unwrap();
    let reply = ask(&mut fresh, b"CONNECT", 3).expect("a new connection under the flood");
    assert_eq!(reply, format!("C{OUTBOUND:02}").as_bytes());
    let accepted: Vec<TcpStream> = (0..OUTBOUND)
        .filter_map(|_| target.accept().ok().map(|(s, _)| s))
        .collect();
    assert_eq!(accepted.len(), OUTBOUND);

    let reports = rt.stop().unwrap();
    let m = &reports[0].metrics;
    let h = &reports[0].handler;
    eprintln!(
        "evicted {} (handler saw {}), handshake refused {}, accepts refused: table full {}, \
         evictees closing {}, outbound ok {}, auth failed {}",
        m.slots_handshake_evicted,
        h.evicted,
        m.slots_handshake_refused,
        m.accept_rejected_table_full,
        m.accept_rejected_evicting,
        h.connects_ok,
        h.auth_failed
    );
    assert!(m.slots_handshake_evicted > 0);
    // Accepts refused in the burst were refused while evictees closed, not for a full
    // table (which would tell the operator to raise the open-files limit).
    assert_eq!(m.accept_rejected_table_full, 0);
    // Each eviction reached the handler as `Evicted` (the expiry under pressure too).
    assert_eq!(
        h.evicted,
        m.slots_handshake_evicted + m.slots_handshake_expired
    );
    assert_eq!(h.auth_failed, 0);
    assert_eq!(m.slots_outbound_refused, 0);
    // Everything was given back at stop.
    assert_eq!(m.slots_handshake_in_use, 0);
    assert_eq!(m.slots_authenticated_in_use, 0);
    assert_eq!(m.slots_outbound_in_use, 0);
    drop(idle);
}
