//! Backpressure: a slow reader on one connection pauses reading of *another* connection,
//! memory stays within the configured bounds, and resume brings everything through intact.

mod shard_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime};
use shard_common::*;

/// Relays the first accepted connection (source) into the second (sink).
#[derive(Default)]
struct Relay {
    source: Option<ConnId>,
    sink: Option<ConnId>,
    stash: Vec<u8>,
    max_stash: usize,
    pauses: u64,
    resumes: u64,
    relayed: u64,
}

impl Relay {
    fn flush(&mut self, out: &mut Outbox<'_, ()>) {
        let (Some(sink), Some(source)) = (self.sink, self.source) else {
            return;
        };
        if !self.stash.is_empty() {
            let n = out.send_partial(sink, &self.stash).unwrap_or(0);
            self.relayed += n as u64;
            self.stash.drain(..n);
        }
        if self.stash.is_empty() && out.resume_read(source).is_ok() {
            self.resumes += 1;
        }
    }
}

impl ConnHandler for Relay {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, _p: SocketAddr, out: &mut Outbox<'_, ()>) {
        if self.source.is_none() {
            self.source = Some(conn);
        } else {
            self.sink = Some(conn);
            self.flush(out);
        }
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        if Some(conn) != self.source {
            return;
        }
        let n = match self.sink {
            Some(sink) if self.stash.is_empty() => out.send_partial(sink, data).unwrap_or(0),
            _ => 0,
        };
        self.relayed += n as u64;
        if n < data.len() {
            self.stash.extend_from_slice(&data[n..]);
            self.max_stash = self.max_stash.max(self.stash.len());
            // The sink is full: stop reading the source.
            if out.pause_read(conn).is_ok() {
                self.pauses += 1;
            }
        }
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        if Some(conn) == self.sink {
            self.flush(out);
        }
    }

    fn on_closed(&mut self, conn: ConnId, _r: CloseReason, out: &mut Outbox<'_, ()>) {
        // Source finished: close the sink once its output is flushed.
        if Some(conn) == self.source && self.stash.is_empty() {
            if let Some(sink) = self.sink {
                let _ = out.close(sink);
            }
        }
    }
}

#[test]
fn slow_reader_pauses_other_connection_within_bounds() {
    let cfg = small_config();
    let per_conn_bound = cfg.max_send_bufs_per_conn as u64;
    // After a pause, the multishot recv can still deliver every buffer the kernel already filled
    // (at most the whole ring), on top of the remainder of the callback that paused.
    let recv_window = ((cfg.recv_buf_count + 1) * cfg.recv_buf_size) as usize;
    let rt = Runtime::start(runtime_config(1, cfg), |_| Relay::default()).unwrap();
    let addr = rt.local_addr().unwrap();

    const TOTAL: usize = 4 << 20;
    let data = pattern(3, TOTAL);
    let mut source = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Small receive buffer (set before connect, so the advertised window matches) so the
    // sink's window fills quickly.
    let sink_sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sink_sock.set_recv_buffer_size(8192).unwrap();
    sink_sock.connect(&addr.into()).unwrap();
    let mut sink: TcpStream = sink_sock.into();
    source
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let to_send = data.clone();
    let writer = std::thread::spawn(move || {
        source.write_all(&to_send).unwrap();
        // Dropping closes the source after all bytes.
    });

    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + Duration::from_secs(30);
    // Slow phase: 40 small reads, 10 ms apart.
    for _ in 0..40 {
        if let Ok(n) = sink.read(&mut buf[..2048]) {
            got.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    while got.len() < TOTAL && Instant::now() < end {
        match sink.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    writer.join().unwrap();
    let reports = rt.stop().unwrap();
    let r = &reports[0];
    eprintln!(
        "metrics: {:?}\nmax_stash {} pauses {} resumes {}",
        r.metrics, r.handler.max_stash, r.handler.pauses, r.handler.resumes
    );
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "relayed bytes differ");
    assert!(
        r.handler.pauses > 0 && r.handler.resumes > 0,
        "backpressure never engaged"
    );
    assert!(r.metrics.read_pauses > 0 && r.metrics.writable_events > 0);
    // The bounds held: queued output never exceeded the per-connection bound, and what the
    // handler had to hold is limited by the receive buffers in flight when it paused.
    assert!(r.metrics.send_queue_peak_bufs <= per_conn_bound);
    assert!(r.metrics.send_pool_peak_bufs <= 2 * per_conn_bound);
    assert!(
        r.handler.max_stash <= recv_window,
        "stash grew to {}",
        r.handler.max_stash
    );
    assert_eq!(r.metrics.shutdown_leaked_ops, 0);
}
