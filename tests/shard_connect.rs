//! Outbound connections: IORING_OP_CONNECT with a linked timeout.

mod shard_common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime, RuntimeConfig};
use shard_common::*;

#[derive(Default)]
struct Dialer {
    targets: Vec<SocketAddr>,
    ids: HashMap<ConnId, usize>,
    connected: Vec<usize>,
    data: HashMap<usize, Vec<u8>>,
    closed: HashMap<usize, CloseReason>,
}

impl ConnHandler for Dialer {
    type Msg = ();
    fn on_accept(&mut self, _c: ConnId, _p: SocketAddr, _o: &mut Outbox<'_, ()>) {}
    fn on_connected(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, ()>) {
        let i = self.ids[&conn];
        assert_eq!(peer, self.targets[i]);
        self.connected.push(i);
        out.send(conn, b"ping").unwrap();
    }
    fn on_data(&mut self, conn: ConnId, data: &mut [u8], _o: &mut Outbox<'_, ()>) {
        self.data
            .entry(self.ids[&conn])
            .or_default()
            .extend_from_slice(data);
    }
    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, _o: &mut Outbox<'_, ()>) {
        self.closed.insert(self.ids[&conn], reason);
    }
    fn on_tick(&mut self, _now: Instant, out: &mut Outbox<'_, ()>) {
        if self.ids.is_empty() {
            for (i, &t) in self.targets.iter().enumerate() {
                let id = out.connect(t).unwrap();
                self.ids.insert(id, i);
            }
        }
    }
}

#[test]
fn connect_success_refused_and_timeout() {
    // 0: a server that answers "pong" and closes.
    let ok = TcpListener::bind("127.0.0.1:0").unwrap();
    let ok_addr = ok.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = ok.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        s.write_all(b"pong").unwrap();
    });
    // 1: nothing listens there.
    let refused_addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // 2: a listener whose accept queue is full, so SYNs are dropped and connect hangs.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&full_addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));

    let mut cfg = small_config();
    cfg.connect_timeout_ms = 300;
    let rc = RuntimeConfig {
        listen: None,
        listen_also: Vec::new(),
        ..runtime_config(1, cfg)
    };
    let targets = vec![ok_addr, refused_addr, full_addr];
    let rt = Runtime::start(rc, move |_| Dialer {
        targets: targets.clone(),
        ..Dialer::default()
    })
    .unwrap();
    assert!(rt.local_addr().is_none());
    server.join().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let reports = rt.stop().unwrap();
    let h = &reports[0].handler;
    assert_eq!(h.connected, vec![0]);
    assert_eq!(h.data.get(&0).map(Vec::as_slice), Some(&b"pong"[..]));
    assert_eq!(h.closed.get(&0), Some(&CloseReason::PeerClosed));
    assert_eq!(
        h.closed.get(&1),
        Some(&CloseReason::ConnectFailed(libc::ECONNREFUSED))
    );
    assert_eq!(h.closed.get(&2), Some(&CloseReason::ConnectTimeout));
    let m = &reports[0].metrics;
    assert_eq!(m.connected, 1);
    assert_eq!(m.connect_failed, 2);
    assert_eq!(m.shutdown_leaked_ops, 0);
    drop(fillers);
}
