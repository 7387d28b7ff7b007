//! A handler's read cap (`Outbox::set_read_cap`) bounds each receive on the real io_uring
//! shard: the kernel reads at most the cap into the provided buffer it picks, the
//! connection's multishot receive gives way to single ones, and lifting the cap brings
//! whole-buffer reads back. Loopback only; bounded in bytes and time.

mod shard_common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fors::shard::{CloseReason, ConnHandler, ConnId, Outbox, Runtime};
use shard_common::*;

/// Bytes the client sends in each phase.
const PHASE: usize = 300_000;
/// The cap in the first phase.
const CAP: usize = 1000;

#[derive(Default)]
struct Capped {
    got: Vec<u8>,
    /// (bytes received before this read, its length).
    reads: Vec<(usize, usize)>,
    closed: bool,
    /// Bytes received, for the test thread to wait on.
    seen: Arc<AtomicUsize>,
    /// Where in the stream reads are capped at [`CAP`].
    capped: std::ops::Range<usize>,
}

impl ConnHandler for Capped {
    type Msg = ();

    fn on_accept(&mut self, conn: ConnId, _peer: SocketAddr, out: &mut Outbox<'_, ()>) {
        if self.capped.contains(&0) {
            out.set_read_cap(conn, Some(CAP)).unwrap();
        }
    }

    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, ()>) {
        self.reads.push((self.got.len(), data.len()));
        self.got.extend_from_slice(data);
        self.seen.store(self.got.len(), Ordering::Relaxed);
        let cap = self.capped.contains(&self.got.len()).then_some(CAP);
        out.set_read_cap(conn, cap).unwrap();
    }

    fn on_closed(&mut self, _conn: ConnId, _reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        self.closed = true;
    }
}

/// Streams `total` bytes to a shard whose handler caps reads within `capped`; returns the
/// handler and the shard's counters after the close.
fn run(total: usize, capped: std::ops::Range<usize>) -> (Capped, fors::shard::ShardMetrics) {
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let rt = Runtime::start(runtime_config(1, small_config()), move |_| Capped {
        seen: seen2.clone(),
        capped: capped.clone(),
        ..Capped::default()
    })
    .unwrap();
    let addr = rt.local_addr().unwrap();
    let data = pattern(7, total);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // In pieces, with pauses, so the shard sees the second phase's bytes after the
    // first's cap is lifted.
    for chunk in data.chunks(50_000) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::Relaxed) < data.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The close follows the last bytes.
    std::thread::sleep(Duration::from_millis(100));
    let reports = rt.stop().unwrap();
    let r = reports.into_iter().next().unwrap();
    let h = &r.handler;
    assert!(h.closed, "the client's close was seen");
    assert_eq!(h.got.len(), data.len(), "every byte arrived");
    assert!(h.got == data, "in order");
    assert_eq!(r.metrics.shutdown_leaked_ops, 0);
    (r.handler, r.metrics)
}

/// The reads' lengths of those that start within `at`.
fn reads_in(h: &Capped, at: std::ops::Range<usize>) -> Vec<usize> {
    h.reads
        .iter()
        .filter(|(pos, _)| at.contains(pos))
        .map(|r| r.1)
        .collect()
}

/// A cap set at accept bounds every read from the first; lifted, reads take whole
/// buffers again.
#[test]
fn reads_end_at_the_cap_and_grow_back_without_it() {
    let (h, m) = run(2 * PHASE, 0..PHASE);
    let buf = small_config().recv_buf_size as usize;
    let first = reads_in(&h, 0..PHASE);
    let over = first.iter().filter(|&&n| n > CAP).count();
    assert_eq!(
        over,
        0,
        "{over} of {} capped reads exceeded {CAP}",
        first.len()
    );
    assert!(
        first.iter().filter(|&&n| n == CAP).count() * 10 >= first.len() * 9,
        "the kernel reads up to the cap when the socket holds more"
    );
    let later_max = reads_in(&h, PHASE + CAP..usize::MAX)
        .into_iter()
        .max()
        .unwrap_or(0);
    assert!(
        later_max > CAP,
        "uncapped reads grow past the cap ({later_max})"
    );
    assert!(later_max <= buf);
    // And after a few uncapped reads the connection is back on a multishot receive: each
    // single receive ends (and is re-armed) with its completion, a multishot one does not.
    let later = reads_in(&h, PHASE..usize::MAX).len() as u64;
    println!(
        "{} capped reads, {later} after; {} completions, {} re-arms",
        first.len(),
        m.recv_completions,
        m.recv_rearms
    );
    assert!(
        m.recv_rearms < first.len() as u64 + 12 + later / 4,
        "{} re-arms for {} capped and {later} uncapped reads",
        m.recv_rearms,
        first.len()
    );
    assert!(
        m.recv_capped as usize >= first.len(),
        "{} capped receives",
        m.recv_capped
    );
}

/// A cap set while the multishot receive runs cancels it: once the reads already under
/// way are delivered (at most the socket's backlog then), single capped receives follow.
#[test]
fn a_cap_set_mid_stream_replaces_the_multishot_receive() {
    // Long phases: the shard may lag the writer on a loaded machine, and every read the
    // multishot receive made before its cancel landed is delivered uncapped.
    const LONG: usize = 3 * PHASE;
    let (h, m) = run(3 * LONG, LONG..2 * LONG);
    let before = reads_in(&h, 0..LONG);
    assert!(
        before.iter().any(|&n| n > CAP),
        "uncapped at first: {:?}",
        &before[..before.len().min(8)]
    );
    // Past the reads the multishot receive made before its cancel landed (at most what
    // the socket held then: the writer pauses between 50,000-byte chunks), every read is
    // capped; the last third of the phase leaves 600,000 bytes for that.
    let late = reads_in(&h, LONG + 2 * PHASE..2 * LONG);
    assert!(!late.is_empty());
    let over = late.iter().filter(|&&n| n > CAP).count();
    assert_eq!(over, 0, "{over} of {} reads exceeded {CAP}", late.len());
    assert!(m.recv_capped as usize >= late.len());
}
