//! Bandwidth limits enforced live (tor manual: RelayBandwidthRate / RelayBandwidthBurst),
//! on the private loopback network of scripts/testnet.py (C tor 0.4.9 authorities, relays
//! and client; nothing leaves 127.0.0.0/8).
//!
//! A Fors **exit** with 2 shards (`NumCPUs 2`) and `RelayBandwidthRate 2 MBytes`,
//! `RelayBandwidthBurst 4 MBytes` carries one bulk download from a local source to the C
//! tor client. `TestingTorNetwork` implies `CountPrivateBandwidth`, so its loopback
//! channels are rate-limited as on a public relay. After the first burst:
//! - the bytes the Fors exit writes (its MetricsPort's `fors_shard_send_bytes`) stay under
//!   the rate plus 10 %, and the client's goodput does not exceed it; they also reach
//!   [`FLOOR`] of the rate, so a limiter that throttles far too hard (half its rate) fails;
//! - the torrc's limit is then removed and Fors gets SIGHUP: the same download speeds up
//!   to clearly above the old limit;
//! - the limit is put back (SIGHUP again) and the client uploads: now the exit *reads* the
//!   bulk from its channel, and its reads (`fors_shard_recv_bytes`) stay under the rate
//!   plus 10 % and reach [`FLOOR`] of it (the read bucket is separate from the write bucket).
//!
//! Without `tor`, `tor-gencert` or python3: fails when `CI=true`, otherwise prints
//! `SKIPPED: …` and returns. The network is stopped (by pid, by the script) when the test
//! ends, pass or fail. No randomness is used.

mod daemon_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_common::private_net::{
    client_ports, relay_record, testnet, testnet_skip_reason, TorControl,
};
use daemon_common::{
    free_port, free_port_range_base, http_get, wait_for_file_line, TempDir, TestnetGuard,
};
use fors_testkit::socks::Socks5;

/// `RelayBandwidthRate 2 MBytes` in bytes per second (tor's MBytes are 2^20).
const RATE: f64 = 2.0 * 1048576.0;

/// The least share of [`RATE`] the held transfers must reach. The upper bound (+10 %) is
/// what shows the limit holds; this one catches a limiter that throttles far too hard: with
/// its refill halved on purpose the download ran at 0.501 of the rate (the bucket is empty
/// whenever it is asked) and this failed. It is not 0.9: on a busy test bed the relays and
/// the client, not the bucket, slow the transfer for moments; the bucket then fills to its
/// burst and the tokens past it are lost, so a correct limiter once measured 1.89 MB/s
/// under the 2 MB/s limit on a loaded machine.
const FLOOR: f64 = 0.75;

/// A source that sends an endless byte stream to whoever connects, until the peer goes.
fn start_source(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let chunk = vec![0x5au8; 64 * 1024];
                let _ = s.set_write_timeout(Some(Duration::from_secs(300)));
                while s.write_all(&chunk).is_ok() {}
            });
        }
    });
    addr
}

/// A sink that reads and counts whatever is sent to it.
fn start_sink(ip: &str) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    count.fetch_add(k as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, n)
}

/// Waits until `needle` occurs at least `count` times in the file.
fn wait_for_count(path: &std::path::Path, needle: &str, count: usize, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < end,
            "{needle:?} not {count} times in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sum over shards of a per-shard family.
fn shard_sum(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Bytes received by the client and written by the Fors exit at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    client: u64,
    fors_sent: u64,
    fors_recv: u64,
}

fn sample(received: &AtomicU64, m_addr: SocketAddr) -> Sample {
    let text = http_get(m_addr, "/metrics");
    Sample {
        at: Instant::now(),
        client: received.load(Ordering::Relaxed),
        fors_sent: shard_sum(&text, "fors_shard_send_bytes"),
        fors_recv: shard_sum(&text, "fors_shard_recv_bytes"),
    }
}

/// (goodput, Fors write rate, Fors read rate) in bytes/s between two samples.
fn rates(a: Sample, b: Sample) -> (f64, f64, f64) {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    (
        (b.client - a.client) as f64 / secs,
        (b.fors_sent - a.fors_sent) as f64 / secs,
        (b.fors_recv - a.fors_recv) as f64 / secs,
    )
}

/// Metric lines starting with `prefix`, for messages.
fn lines_with(metrics: &str, prefix: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of one series.
fn value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn relay_bandwidth_rate_holds_a_download_and_lifts_on_sighup() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(
            "relay_bandwidth_rate_holds_a_download_and_lifts_on_sighup",
            &why,
        );
        return;
    }
    eprintln!("seed: none (the test uses no randomness)");
    let tmp = TempDir::new("daemon-bandwidth");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let m_port = free_port();
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));
    let base = free_port_range_base().to_string();
    let metrics_opt = format!("forsexit1 MetricsPort 127.0.0.1:{m_port}");
    testnet(
        &dir,
        &[
            "up",
            "--fors",
            "exit",
            "--middles",
            "2",
            "--exits",
            "1",
            "--exit",
            "forsexit1",
            "--base-port",
            &base,
            "--fors-bin",
            env!("CARGO_BIN_EXE_fors"),
            "--slot-option",
            "forsexit1 NumCPUs 2",
            "--slot-option",
            "forsexit1 RelayBandwidthRate 2 MBytes",
            "--slot-option",
            "forsexit1 RelayBandwidthBurst 4 MBytes",
            "--slot-option",
            &metrics_opt,
            "--slot-option",
            "forsexit1 MetricsPortPolicy accept 127.0.0.1",
        ],
    );
    let log_path = dir.join("forsexit1/stdout.log");
    let l = wait_for_file_line(&log_path, "Opened ORPort", Duration::from_secs(120));
    assert!(l.contains("with 2 shards"), "{l}");
    let l = wait_for_file_line(
        &log_path,
        "Bandwidth limits in force",
        Duration::from_secs(10),
    );
    assert!(l.contains("relayed traffic 2097152 B/s"), "{l}");
    wait_for_file_line(
        &log_path,
        "Fors is listed in the consensus",
        Duration::from_secs(300),
    );
    testnet(&dir, &["wait", "--pluggable-only", "--timeout", "240"]);
    let fors = relay_record(&dir, "forsexit1");
    let fors_pid = fors["pid"].as_u64().unwrap() as i32;

    // One download through the Fors exit (the client's exit is pinned to it).
    let src = start_source("127.0.0.2");
    let (socks, control) = client_ports(&dir);
    let mut ctl = TorControl::connect(control);
    let target = format!("127.0.0.2:{}", src.port());
    let mut stream = (0..6)
        .find_map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(5));
            }
            Socks5::local(socks, Duration::from_secs(120))
                .connect("127.0.0.2", src.port())
                .ok()
        })
        .expect("no SOCKS stream through the Fors exit");
    let circ = ctl
        .stream_circuit(&target)
        .expect("our stream in stream-status");
    let path = ctl.circuit_path(&circ);
    assert_eq!(
        path.last().map(String::as_str),
        fors["fingerprint"].as_str(),
        "the stream's circuit {path:?} does not end at the Fors exit"
    );
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, stop) = (received.clone(), stop.clone());
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        std::thread::spawn(move || -> Result<(), String> {
            let mut buf = vec![0u8; 256 * 1024];
            let started = Instant::now();
            // Bounded: the test stops it, or 10 minutes pass.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                match stream.read(&mut buf) {
                    Ok(0) => return Err("stream closed".into()),
                    Ok(n) => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            Ok(())
        })
    };

    // The first burst (up to 4 MB) and the circuit's slow start, then the held rate.
    let t0 = Instant::now();
    while received.load(Ordering::Relaxed) < 6 << 20 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        received.load(Ordering::Relaxed) >= 6 << 20,
        "the download did not get going: {} bytes in 120 s",
        received.load(Ordering::Relaxed)
    );
    let a = sample(&received, m_addr);
    std::thread::sleep(Duration::from_secs(10));
    let b = sample(&received, m_addr);
    let (held_client, held_fors, _) = rates(a, b);
    eprintln!(
        "limited to {RATE} B/s: client goodput {:.0} B/s ({:.2} MB/s), Fors writes {:.0} B/s \
         ({:.3} of the rate)",
        held_client,
        held_client / 1e6,
        held_fors,
        held_fors / RATE
    );

    // Lift the limit: drop the two lines from the torrc, SIGHUP.
    let torrc = dir.join("forsexit1/torrc");
    let text = std::fs::read_to_string(&torrc).unwrap();
    let lifted: String = text
        .lines()
        .filter(|l| !l.starts_with("RelayBandwidth"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, lifted, "the torrc had the limit lines");
    std::fs::write(&torrc, lifted).unwrap();
    // SAFETY: sends SIGHUP to the Fors process this test's network started (pid from its
    // network.json); no memory is involved.
    assert_eq!(unsafe { libc::kill(fors_pid, libc::SIGHUP) }, 0);
    let l = wait_for_file_line(
        &log_path,
        "no separate limit for relayed traffic",
        Duration::from_secs(20),
    );
    eprintln!("after SIGHUP: {l}");
    let lifted_at = Instant::now();
    // The circuit's congestion window had settled at the old rate; give it time to grow.
    std::thread::sleep(Duration::from_secs(3));
    let c = sample(&received, m_addr);
    std::thread::sleep(Duration::from_secs(5));
    let d = sample(&received, m_addr);
    let (free_client, free_fors, _) = rates(c, d);
    eprintln!(
        "lifted ({:.1} s after SIGHUP): client goodput {:.0} B/s ({:.2} MB/s), Fors writes \
         {:.0} B/s ({:.2}x the old rate)",
        lifted_at.elapsed().as_secs_f64(),
        free_client,
        free_client / 1e6,
        free_fors,
        free_fors / RATE
    );
    let metrics = http_get(m_addr, "/metrics");
    let empty = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "fors_relay_bandwidth_empty_total{bucket=\"relayed\",direction=\"write\"}",
            )
        })
        .unwrap_or("(missing)")
        .to_string();
    eprintln!("{empty}");
    stop.store(true, Ordering::Relaxed);
    let read_result = reader.join().unwrap();

    assert!(
        held_fors <= 1.10 * RATE,
        "Fors wrote {held_fors:.0} B/s under a {RATE} B/s limit"
    );
    assert!(
        held_fors >= FLOOR * RATE,
        "Fors wrote only {held_fors:.0} B/s under a {RATE} B/s limit: the limiter throttles \
         too hard"
    );
    assert!(
        held_client <= 1.05 * RATE,
        "the client got {held_client:.0} B/s through a {RATE} B/s limit"
    );
    assert!(
        held_client >= 0.7 * RATE,
        "the download ran at {held_client:.0} B/s, well below the {RATE} B/s limit: not \
         limited by it"
    );
    let hits: u64 = empty
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(hits > 0, "the relayed write bucket never ran dry: {empty}");
    assert!(
        metrics.contains("fors_relay_bandwidth_rate_bytes{bucket=\"relayed\"} 1073741824"),
        "the lifted rate is not in force:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("fors_relay_bandwidth"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        free_client > 1.4 * RATE,
        "after lifting the limit the download ran at only {free_client:.0} B/s"
    );
    read_result.expect("the download failed");

    // The limit back (a lowered limit applies at once too), then an upload: the exit reads
    // the bulk from its channel, paced by the relayed *read* bucket.
    std::fs::write(&torrc, &text).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(fors_pid, libc::SIGHUP) }, 0);
    wait_for_count(
        &log_path,
        "relayed traffic 2097152 B/s",
        2,
        Duration::from_secs(20),
    );
    let (sink, sunk) = start_sink("127.0.0.2");
    let up = Socks5::local(socks, Duration::from_secs(120))
        .connect("127.0.0.2", sink.port())
        .expect("no SOCKS stream for the upload");
    let up_target = format!("127.0.0.2:{}", sink.port());
    let circ = ctl
        .stream_circuit(&up_target)
        .expect("the upload stream in stream-status");
    let path = ctl.circuit_path(&circ);
    assert_eq!(
        path.last().map(String::as_str),
        fors["fingerprint"].as_str(),
        "the upload's circuit {path:?} does not end at the Fors exit"
    );
    let up_stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = up_stop.clone();
        let mut up = up;
        up.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        std::thread::spawn(move || {
            let chunk = vec![0xa5u8; 64 * 1024];
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                match up.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        })
    };
    let t1 = Instant::now();
    while sunk.load(Ordering::Relaxed) < 6 << 20 && t1.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        sunk.load(Ordering::Relaxed) >= 6 << 20,
        "the upload did not get going: {} bytes in 120 s",
        sunk.load(Ordering::Relaxed)
    );
    let e = sample(&sunk, m_addr);
    std::thread::sleep(Duration::from_secs(10));
    let f = sample(&sunk, m_addr);
    let (up_goodput, _, up_fors_read) = rates(e, f);
    eprintln!(
        "upload limited to {RATE} B/s: goodput {:.0} B/s ({:.2} MB/s), Fors reads {:.0} B/s \
         ({:.3} of the rate)",
        up_goodput,
        up_goodput / 1e6,
        up_fors_read,
        up_fors_read / RATE
    );
    up_stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    let metrics = http_get(m_addr, "/metrics");
    eprintln!("{}", lines_with(&metrics, "fors_relay_bandwidth"));
    assert!(
        up_fors_read <= 1.10 * RATE,
        "Fors read {up_fors_read:.0} B/s under a {RATE} B/s limit"
    );
    assert!(
        up_fors_read >= FLOOR * RATE,
        "Fors read only {up_fors_read:.0} B/s under a {RATE} B/s limit: the limiter throttles \
         too hard"
    );
    assert!(
        up_goodput <= 1.05 * RATE,
        "the upload ran at {up_goodput:.0} B/s through a {RATE} B/s limit"
    );
    assert!(
        value(
            &metrics,
            "fors_relay_bandwidth_empty_total{bucket=\"relayed\",direction=\"read\"}"
        ) > 0,
        "the relayed read bucket never ran dry"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        daemon_common::unexpected_err_lines(&log).is_empty(),
        "{log}"
    );
}
