//! Handlers and helpers shared by the shard runtime tests (loopback only, bounded loops).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, RuntimeConfig, ShardConfig};

/// Small bounds so the tests hit them.
pub fn small_config() -> ShardConfig {
    ShardConfig {
        sq_entries: 128,
        cq_entries: 512,
        recv_buf_size: 4096,
        recv_buf_count: 64,
        max_connections: 256,
        send_buf_size: 4096,
        send_buf_count: 512,
        max_send_bufs_per_conn: 8,
        cross_queue_capacity: 1024,
        tick_ms: 20,
        connect_timeout_ms: 2000,
        ..ShardConfig::default()
    }
}

pub fn runtime_config(shards: usize, shard: ShardConfig) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: shards,
        pin_threads: true,
        cores: Vec::new(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        listen_also: Vec::new(),
        shard,
    }
}

/// Echoes every byte back. When the connection's output bound is hit it keeps the rest in a
/// stash and pauses reading that connection until `on_writable`.
#[derive(Default)]
pub struct Echo {
    stash: HashMap<ConnId, Vec<u8>>,
    pub accepted: u64,
    pub closed: Vec<CloseReason>,
    pub max_stash: usize,
    pub bytes: u64,
    pub writable: u64,
}

impl ConnHandler for Echo {
    type Msg = ();

    fn on_accept(&mut self, _conn: ConnId, _peer: SocketAddr, _out: &mut Outbox<'_, ()>) {
        self.accepted += 1;
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        self.bytes += data.len() as u64;
        if let Some(s) = self.stash.get_mut(&conn) {
            s.extend_from_slice(data);
            self.max_stash = self.max_stash.max(s.len());
            return;
        }
        let n = out.send_partial(conn, data).unwrap_or(data.len());
        if n < data.len() {
            self.stash.insert(conn, data[n..].to_vec());
            self.max_stash = self.max_stash.max(data.len() - n);
            let _ = out.pause_read(conn);
        }
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        self.writable += 1;
        if let Some(s) = self.stash.get_mut(&conn) {
            let n = out.send_partial(conn, s).unwrap_or(s.len());
            s.drain(..n);
            if s.is_empty() {
                self.stash.remove(&conn);
                let _ = out.resume_read(conn);
            }
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        self.stash.remove(&conn);
        self.closed.push(reason);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` in uneven chunks from a writer thread while reading the echo here; returns
/// what came back (stops at `data.len()` bytes, EOF, or the deadline).
pub fn echo_round_trip(addr: SocketAddr, data: &[u8], deadline: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(deadline)).unwrap();
    let to_send = data.to_vec();
    let writer = std::thread::spawn(move || {
        let mut off = 0;
        let mut step = 1;
        while off < to_send.len() {
            let n = (step * 977 % 9000 + 1).min(to_send.len() - off);
            if w.write_all(&to_send[off..off + n]).is_err() {
                return;
            }
            off += n;
            step += 1;
        }
    });
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + deadline;
    while got.len() < data.len() && Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A signal can interrupt a blocking read (seen here as EINTR on a client thread
            // while the shards' io_uring work was running); that is no reason to stop reading.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = writer.join();
    got
}
