//! Zero-copy send path: large writes above the threshold go out with IORING_OP_SEND_ZC.

mod shard_common;

use std::time::Duration;

use fors::shard::Runtime;
use shard_common::*;

#[test]
fn large_echo_uses_send_zc() {
    let mut cfg = small_config();
    cfg.send_buf_size = 32 * 1024;
    cfg.recv_buf_size = 32 * 1024;
    cfg.send_buf_count = 128;
    cfg.zero_copy_threshold = 8 * 1024;
    let rt = Runtime::start(runtime_config(2, cfg), |_| Echo::default()).unwrap();
    let addr = rt.local_addr().unwrap();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern(50 + i, 3 << 20);
                let got = echo_round_trip(addr, &data, Duration::from_secs(30));
                assert_eq!(got.len(), data.len());
                assert!(got == data, "zero-copy echo differs");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let reports = rt.stop().unwrap();
    let zc: u64 = reports.iter().map(|r| r.metrics.send_zc_ops).sum();
    let copied: u64 = reports.iter().map(|r| r.metrics.send_zc_copied).sum();
    let plain: u64 = reports.iter().map(|r| r.metrics.send_ops).sum();
    eprintln!("send_zc_ops {zc} (kernel copied {copied}), plain sends {plain}");
    assert!(zc > 0, "no zero-copy sends were issued");
    // Loopback delivers into a local socket, so the kernel copies every zero-copy send
    // (bench/RESULTS.md "Zero-copy send: the crossover"); the notifications must say so.
    if fors::shard::probe_kernel().unwrap().zc_report_usage {
        assert_eq!(
            copied, zc,
            "every loopback zero-copy send reported as copied"
        );
    }
    for r in &reports {
        assert_eq!(r.metrics.shutdown_leaked_ops, 0);
        assert_eq!(r.metrics.recv_bytes, r.metrics.send_bytes);
    }
}

/// Regression: a connection blocked by its own bound used to be told `on_writable` only from
/// its own send completions, and only if the shared pool had a free buffer at that moment.
/// With zero-copy sends the finished buffers stay pinned until their notifications, so the
/// pool could be empty at each of those completions; the notifications that later freed the
/// buffers woke only connections that had found the pool empty, and the echo stalled for
/// good. A pool far smaller than connections × bound makes this the common case: every
/// connection must still get its full echo back, and pinned buffers must count against the
/// per-connection bound.
#[test]
fn tiny_pool_never_loses_a_writable_wakeup() {
    for zero_copy in [true, false] {
        let mut cfg = small_config();
        cfg.send_buf_size = 4096;
        cfg.recv_buf_size = 4096;
        cfg.recv_buf_count = 16;
        cfg.send_buf_count = 6;
        cfg.max_send_bufs_per_conn = 4;
        cfg.zero_copy_threshold = if zero_copy { 1024 } else { 0 };
        let per_conn = u64::from(cfg.max_send_bufs_per_conn);
        let rt = Runtime::start(runtime_config(1, cfg), |_| Echo::default()).unwrap();
        let addr = rt.local_addr().unwrap();
        let clients: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    let data = pattern(90 + i, 768 << 10);
                    let got = echo_round_trip(addr, &data, Duration::from_secs(20));
                    assert_eq!(
                        got.len(),
                        data.len(),
                        "echo stalled (zero_copy {zero_copy})"
                    );
                    assert!(got == data, "echo differs (zero_copy {zero_copy})");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let reports = rt.stop().unwrap();
        let m = &reports[0].metrics;
        eprintln!("zero_copy {zero_copy}: {m:?}");
        assert_eq!(m.shutdown_leaked_ops, 0);
        assert_eq!(m.recv_bytes, m.send_bytes);
        assert!(m.writable_events > 0, "backpressure never engaged");
        assert!(m.send_queue_peak_bufs <= per_conn);
        if zero_copy {
            assert!(m.send_zc_ops > 0);
            // Pinned buffers wait for notifications, so the pool always runs dry here; with
            // copying sends that depends on how the clients' transfers overlap.
            assert!(m.send_pool_exhausted > 0, "the pool never ran dry");
        }
    }
}
