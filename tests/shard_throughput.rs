//! Loopback echo throughput (MB/s) with 1 and 2 shards, and the zero-copy threshold sweep.
//! Not a correctness test: run with
//! `cargo test --release --test shard_throughput -- --ignored --nocapture`.

mod shard_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fors::shard::{Runtime, ShardConfig};
use shard_common::*;

/// Streams `bytes` through `conns` echo connections at once; returns echoed MB/s.
fn measure(shards: usize, cfg: ShardConfig, conns: usize, bytes: usize, chunk: usize) -> f64 {
    let rt = Runtime::start(runtime_config(shards, cfg), |_| Echo::default()).unwrap();
    let addr: SocketAddr = rt.local_addr().unwrap();
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut w = s.try_clone().unwrap();
                let data = pattern(i as u64, chunk);
                let writer = std::thread::spawn(move || {
                    let mut sent = 0;
                    while sent < bytes {
                        w.write_all(&data).unwrap();
                        sent += data.len();
                    }
                    sent
                });
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0;
                while got < bytes {
                    match s.read(&mut buf) {
                        // EINTR is not the end of the stream.
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                let sent = writer.join().unwrap();
                assert!(got >= sent.min(bytes));
                got
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    rt.stop().unwrap();
    total as f64 / secs / 1e6
}

fn bench_config() -> ShardConfig {
    ShardConfig {
        recv_buf_size: 64 * 1024,
        recv_buf_count: 256,
        send_buf_size: 64 * 1024,
        send_buf_count: 512,
        max_send_bufs_per_conn: 16,
        ..ShardConfig::default()
    }
}

#[test]
#[ignore]
fn loopback_echo_throughput() {
    const BYTES: usize = 256 << 20;
    for shards in [1, 2] {
        let mbs = measure(shards, bench_config(), 4, BYTES / 4, 64 * 1024);
        println!("echo, {shards} shard(s), 4 conns, 64 KiB writes: {mbs:.0} MB/s (echoed bytes)");
    }
    for (label, zc) in [
        ("copy", 0),
        ("zero-copy >= 4 KiB", 4096),
        ("zero-copy >= 16 KiB", 16384),
        ("zero-copy >= 64 KiB", 65536),
    ] {
        for chunk in [4096usize, 16384, 65536] {
            let mut cfg = bench_config();
            cfg.zero_copy_threshold = zc;
            let mbs = measure(1, cfg, 2, BYTES / 4, chunk);
            println!("1 shard, {label:>20}, client writes {chunk:>6} B: {mbs:.0} MB/s");
        }
    }
}
