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
    for r in &reports {
        assert_eq!(r.metrics.shutdown_leaked_ops, 0);
        assert_eq!(r.metrics.recv_bytes, r.metrics.send_bytes);
    }
}
