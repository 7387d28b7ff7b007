//! Echo over loopback with 2 shards: integrity, SO_REUSEPORT spread, abrupt closes.

mod shard_common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use fors::shard::{probe_kernel, CloseReason, Runtime};
use shard_common::*;

#[test]
fn kernel_probe_passes_here() {
    let f = probe_kernel().expect("this kernel (6.x) has every required io_uring feature");
    assert!(f.ext_arg);
}

#[test]
fn echo_many_connections_two_shards() {
    let rt = Runtime::start(runtime_config(2, small_config()), |_| Echo::default()).unwrap();
    let addr = rt.local_addr().unwrap();
    const CONNS: usize = 48;
    let workers: Vec<_> = (0..8)
        .map(|w| {
            std::thread::spawn(move || {
                for k in 0..CONNS / 8 {
                    let seed = (w * 100 + k) as u64;
                    let data = pattern(seed, 20_000 + 7919 * k);
                    let got = echo_round_trip(addr, &data, Duration::from_secs(20));
                    assert_eq!(got.len(), data.len(), "conn {seed}: short echo");
                    assert!(got == data, "conn {seed}: echo differs");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let reports = rt.stop().unwrap();
    assert_eq!(reports.len(), 2);
    let total: u64 = reports.iter().map(|r| r.metrics.accepted).sum();
    assert_eq!(total, CONNS as u64);
    for r in &reports {
        // 48 connections hashed over 2 sockets: both get some (P(all on one) = 2^-47).
        assert!(
            r.metrics.accepted > 0,
            "shard {:?} accepted nothing",
            r.shard
        );
        assert_eq!(r.handler.accepted, r.metrics.accepted);
        assert_eq!(r.handler.closed.len() as u64, r.metrics.accepted);
        assert_eq!(r.metrics.recv_bytes, r.metrics.send_bytes);
        assert_eq!(r.metrics.shutdown_leaked_ops, 0);
        assert_eq!(r.metrics.conns_open, 0);
    }
}

#[test]
fn abrupt_closes_and_garbage_do_not_break_the_shard() {
    let rt = Runtime::start(runtime_config(2, small_config()), |_| Echo::default()).unwrap();
    let addr = rt.local_addr().unwrap();
    for i in 0..20u64 {
        let s = TcpStream::connect(addr).unwrap();
        match i % 4 {
            // Connect and close at once.
            0 => drop(s),
            // Garbage, then RST (linger 0).
            1 => {
                let mut s = s;
                let _ = s.write_all(&pattern(i, 5000));
                let sock = socket2::SockRef::from(&s);
                sock.set_linger(Some(Duration::ZERO)).unwrap();
                drop(s);
            }
            // Lots of data, close without reading the echo (server hits EPIPE/RST).
            2 => {
                let mut s = s;
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.write_all(&pattern(i, 200_000));
                drop(s);
            }
            // Half-close: FIN after data; echo still flows back.
            _ => {
                let mut s = s;
                let _ = s.write_all(b"half");
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    }
    // The shards still serve a normal echo afterwards.
    let data = pattern(99, 100_000);
    assert!(echo_round_trip(addr, &data, Duration::from_secs(10)) == data);
    std::thread::sleep(Duration::from_millis(200));
    let reports = rt.stop().unwrap();
    // A connection reset before its accept completion has no peer address any more; it is
    // counted as an accept error instead of reaching the handler.
    let accepted: u64 = reports.iter().map(|r| r.metrics.accepted).sum();
    let accept_errors: u64 = reports.iter().map(|r| r.metrics.accept_errors).sum();
    assert_eq!(accepted + accept_errors, 21);
    assert!(accepted >= 16);
    let closed: usize = reports.iter().map(|r| r.handler.closed.len()).sum();
    assert_eq!(closed as u64, accepted);
    let resets = reports
        .iter()
        .flat_map(|r| r.handler.closed.iter())
        .filter(|c| matches!(c, CloseReason::Reset | CloseReason::Error(_)))
        .count();
    assert!(resets > 0, "RST'd connections should be seen as resets");
    for r in &reports {
        assert_eq!(r.metrics.shutdown_leaked_ops, 0);
    }
}

#[test]
fn table_full_rejects_without_panic() {
    let mut cfg = small_config();
    cfg.max_connections = 4;
    let rt = Runtime::start(runtime_config(1, cfg), |_| Echo::default()).unwrap();
    let addr = rt.local_addr().unwrap();
    let held: Vec<_> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    let data = pattern(5, 10_000);
    assert!(echo_round_trip(addr, &data, Duration::from_secs(10)) == data);
    let r = rt.stop().unwrap();
    assert_eq!(r[0].metrics.accept_rejected_table_full, 6);
    assert_eq!(r[0].metrics.conns_peak, 4);
}

#[test]
fn bad_config_is_a_typed_error() {
    let mut cfg = small_config();
    cfg.recv_buf_count = 100;
    match Runtime::start(runtime_config(1, cfg), |_| Echo::default()) {
        Err(fors::shard::ShardError::Config(m)) => assert!(m.contains("recv_buf_count")),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("accepted a non-power-of-two ring"),
    }
}
