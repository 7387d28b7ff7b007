//! Issue #15, "connection slots by class": idle inbound connections must not starve exit
//! traffic. On the private loopback network of scripts/testnet.py (C tor 0.4.9
//! authorities, relays and client; nothing leaves 127.0.0.0/8), a Fors **exit** with one
//! shard and a small connection table (a hardware profile with 64 channels + 192 streams:
//! 256 slots) carries bulk downloads from a local source to the C tor client, every byte
//! checked against the seeded generator that produced it.
//!
//! 1. Unloaded: two downloads; the better MB/s is the reference.
//! 2. Then idle TCP connections to its ORPort from many loopback source addresses
//!    (127.0.10.1, 127.0.10.2, …) numbering twice the table are opened and held (bounded:
//!    that count, and 90 s).
//! 3. While they are held: two more downloads (each a new exit stream, so a new outbound
//!    connection) keep at least 80 % of the unloaded MB/s, and a new client channel (TLS,
//!    VERSIONS, NETINFO) and a new relay channel (CERTS, AUTHENTICATE) still open. Before slot classes the idle sockets filled the table
//!    and the exit's connects failed (END RESOURCELIMIT): the SOCKS request is refused.
//!
//! Without `tor`, `tor-gencert` or python3: fails when `CI=true`, otherwise prints
//! `SKIPPED: …` and returns. The network is stopped when the test ends, pass or fail.
//! `FORS_SLOTS_BIN` runs another Fors binary (to check that an older build fails).

mod channel_support;
mod daemon_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::private_net::{client_ports, relay_record, testnet, testnet_skip_reason};
use daemon_common::raw_link::{connect_tcp_from, RawLink};
use daemon_common::{
    free_port, free_port_range_base, http_get, standalone_torrc, wait_for_file_line, Fors, TempDir,
    TestnetGuard,
};
use fors::crypto::ids::RsaIdentity;
use fors::proto::channel::{Channel, ExpectedPeer};
use fors_testkit::socks::Socks5;

/// Connection slots of the Fors exit's one shard: the profile's channels + streams.
const TABLE: usize = 256;
/// Bytes per download.
const SIZE: u64 = 24 << 20;
/// Downloads per phase; the best of each phase is compared (the machine is shared, so one
/// download alone is noisy).
const DOWNLOADS: usize = 3;
/// Bound on one download.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(240);

/// xorshift64*: the byte stream of one download, from its seed.
struct Gen(u64);

impl Gen {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A source that sends each connection `SIZE` bytes of the stream seeded by `seed`.
fn start_source(ip: &str, seed: u64) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_write_timeout(Some(DOWNLOAD_LIMIT));
                let mut g = Gen(seed);
                let mut buf = vec![0u8; 64 * 1024];
                let mut sent = 0u64;
                while sent < SIZE {
                    g.fill(&mut buf);
                    let n = (SIZE - sent).min(buf.len() as u64) as usize;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    sent += n as u64;
                }
                // Let the client read the end before the FIN arrives.
                std::thread::sleep(Duration::from_secs(1));
            });
        }
    });
    addr
}

/// One download through the client's SOCKS port; its MB/s (first byte to last), every byte
/// compared with the generator's.
fn download(socks: u16, src: SocketAddr, seed: u64) -> Result<f64, String> {
    let mut s = Socks5::local(socks, Duration::from_secs(120))
        .connect(&src.ip().to_string(), src.port())
        .map_err(|e| format!("SOCKS connect through the Fors exit: {e:?}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut g = Gen(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let (mut got, mut first) = (0u64, None);
    let start = Instant::now();
    let mut pending: Vec<u8> = Vec::new();
    while got < SIZE {
        if start.elapsed() > DOWNLOAD_LIMIT {
            return Err(format!("{got} of {SIZE} bytes in {DOWNLOAD_LIMIT:?}"));
        }
        let n = match s.read(&mut buf) {
            Ok(0) => return Err(format!("stream closed after {got} of {SIZE} bytes")),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("stalled after {got} bytes"))
            }
            Err(e) => return Err(format!("read: {e}")),
        };
        first.get_or_insert_with(Instant::now);
        // Compare in the generator's 64 KiB blocks.
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= want.len() || got + pending.len() as u64 == SIZE {
            let k = pending.len().min(want.len());
            if k == 0 {
                break;
            }
            g.fill(&mut want);
            if pending[..k] != want[..k] {
                return Err(format!("wrong bytes in the block at {got}"));
            }
            pending.drain(..k);
            got += k as u64;
        }
    }
    let secs = first.map_or(1.0, |t| t.elapsed().as_secs_f64());
    Ok(SIZE as f64 / secs / 1e6)
}

/// The hardware profile of the test: the generic one with a 256-slot table.
fn small_profile(dir: &Path) -> std::path::PathBuf {
    let generic = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles/generic.toml"),
    )
    .unwrap();
    let text: String = generic
        .lines()
        .map(|l| {
            if l.starts_with("max_channels_per_shard") {
                "max_channels_per_shard = 64".to_string()
            } else if l.starts_with("max_streams_per_shard") {
                "max_streams_per_shard = 192".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert!(text.contains("max_streams_per_shard = 192"));
    let p = dir.join("small.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Sum over shards of a per-shard series.
fn shard_sum(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn idle_connections_do_not_starve_exit_traffic() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip("idle_connections_do_not_starve_exit_traffic", &why);
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed: {seed:#x}");
    let tmp = TempDir::new("daemon-slots");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let profile = small_profile(tmp.path());
    let m_port = free_port();
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));
    let base = free_port_range_base().to_string();
    let bin = std::env::var("FORS_SLOTS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fors").into());
    let opts = [
        "forsexit1 NumCPUs 1".to_string(),
        format!("forsexit1 HardwareProfile {}", profile.display()),
        format!("forsexit1 MetricsPort 127.0.0.1:{m_port}"),
        "forsexit1 MetricsPortPolicy accept 127.0.0.1".to_string(),
    ];
    let mut args: Vec<&str> = vec![
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
        &bin,
    ];
    for o in &opts {
        args.extend(["--slot-option", o.as_str()]);
    }
    testnet(&dir, &args);
    let log_path = dir.join("forsexit1/stdout.log");
    wait_for_file_line(&log_path, "Opened ORPort", Duration::from_secs(120));
    wait_for_file_line(
        &log_path,
        "Fors is listed in the consensus",
        Duration::from_secs(300),
    );
    testnet(&dir, &["wait", "--pluggable-only", "--timeout", "240"]);
    let fors = relay_record(&dir, "forsexit1");
    let or_addr = SocketAddr::new(
        fors["address"].as_str().unwrap().parse().unwrap(),
        fors["orport"].as_u64().unwrap() as u16,
    );
    let (socks, _control) = client_ports(&dir);
    let src = start_source("127.0.0.2", seed);

    // Unloaded. The first stream may wait for the client's circuits: retry a few times.
    let mut unloaded = Vec::new();
    for i in 0..DOWNLOADS {
        let r = (0..4)
            .find_map(|k| {
                if k > 0 {
                    std::thread::sleep(Duration::from_secs(5));
                }
                download(socks, src, seed)
                    .map_err(|e| eprintln!("unloaded download {i}, try {k}: {e}"))
                    .ok()
            })
            .expect("no unloaded download through the Fors exit");
        eprintln!("unloaded download {i}: {r:.2} MB/s");
        unloaded.push(r);
    }
    let before = http_get(m_addr, "/metrics");

    // Idle connections: twice the table, from many source addresses, held.
    let t0 = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(2 * TABLE);
    let mut failed = 0usize;
    for i in 0..2 * TABLE {
        if t0.elapsed() > Duration::from_secs(90) {
            break;
        }
        let from = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            10 + (i / 250) as u8,
            1 + (i % 250) as u8,
        ));
        match connect_tcp_from(from, or_addr, Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(_) => failed += 1,
        }
    }
    eprintln!(
        "opened {} idle connections ({failed} failed to connect) in {:.1} s",
        idle.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(idle.len(), 2 * TABLE, "could not open the idle connections");
    // Let the relay accept them all.
    std::thread::sleep(Duration::from_secs(2));

    // Loaded: new exit streams, and a new client channel.
    let mut loaded = Vec::new();
    for i in 0..DOWNLOADS {
        let r = download(socks, src, seed)
            .unwrap_or_else(|e| panic!("download {i} while idle connections are held: {e}"));
        eprintln!("loaded download {i}: {r:.2} MB/s");
        loaded.push(r);
    }
    let link = RawLink::connect_tcp_and_handshake_from(or_addr);
    let fors_rsa = RsaIdentity::from_hex(fors["fingerprint"].as_str().unwrap()).unwrap();
    let relay_link = open_relay_channel(or_addr, fors_rsa, seed);
    let after = http_get(m_addr, "/metrics");
    drop(idle);
    for (name, text) in [("before", &before), ("under load", &after)] {
        eprintln!(
            "{name}: slots in use outbound {} authenticated {} handshake {}; evicted {}, \
             expired {}, refused handshake {} outbound {}; accepts refused (table full) {}",
            shard_sum(text, "fors_shard_slots_outbound_in_use"),
            shard_sum(text, "fors_shard_slots_authenticated_in_use"),
            shard_sum(text, "fors_shard_slots_handshake_in_use"),
            shard_sum(text, "fors_shard_slots_handshake_evicted"),
            shard_sum(text, "fors_shard_slots_handshake_expired"),
            shard_sum(text, "fors_shard_slots_handshake_refused"),
            shard_sum(text, "fors_shard_slots_outbound_refused"),
            shard_sum(text, "fors_shard_accept_rejected_table_full"),
        );
    }
    let best_unloaded = unloaded.iter().cloned().fold(0.0, f64::max);
    let best_loaded = loaded.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "unloaded {best_unloaded:.2} MB/s, with {} idle connections held {best_loaded:.2} MB/s \
         ({:.0} %)",
        2 * TABLE,
        best_loaded / best_unloaded * 100.0
    );
    link.expect("a new client channel while the idle connections were held");
    relay_link.expect("a new relay channel while the idle connections were held");
    assert!(
        best_loaded >= 0.8 * best_unloaded,
        "{best_loaded:.2} MB/s under load, below 80 % of {best_unloaded:.2} MB/s"
    );
    assert!(
        shard_sum(&after, "fors_shard_slots_handshake_evicted") > 0,
        "no handshake was evicted although twice the table was opened"
    );
    // The relay and client channels open before the flood were not touched.
    assert!(
        shard_sum(&after, "fors_shard_slots_authenticated_in_use")
            >= shard_sum(&before, "fors_shard_slots_authenticated_in_use"),
        "authenticated connections were lost under the flood"
    );
}

/// Fors started with `RLIMIT_NOFILE` set to `limit` (soft and hard, so it cannot raise it).
fn start_with_nofile(dir: &Path, limit: u64) -> Fors {
    let rc = dir.join("torrc");
    std::fs::write(
        &rc,
        standalone_torrc("ForsFdLimit", dir, free_port(), free_port())
            .num_cpus(1)
            .render(),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fors"));
    cmd.args(["-f", rc.to_str().unwrap()]);
    // SAFETY: setrlimit in the forked child before exec; it touches no memory of the parent
    // and allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Fors::start_command(cmd)
}

#[test]
fn too_low_an_open_files_limit_is_refused_with_how_to_raise_it() {
    eprintln!("seed: none (the test uses no randomness)");
    let tmp = TempDir::new("daemon-fdlimit-low");
    let mut f = start_with_nofile(tmp.path(), 512);
    let l = f.wait_for("open-files limit", Duration::from_secs(60));
    let code = f.wait_exit(Duration::from_secs(30));
    eprintln!("exit {code:?}: {l}");
    assert_eq!(code, Some(1), "{}", f.log.join("\n"));
    for part in [
        "The open-files limit is 512 (hard limit 512)",
        "needs at least 1000 open files",
        "LimitNOFILE=",
        "ulimit -n",
    ] {
        assert!(l.contains(part), "{part:?} not in {l}");
    }
    assert!(
        !f.log.iter().any(|l| l.contains("Opened ORPort")),
        "it opened its ORPort anyway"
    );
}

#[test]
fn a_limit_below_the_recommended_value_warns_and_runs() {
    eprintln!("seed: none (the test uses no randomness)");
    let tmp = TempDir::new("daemon-fdlimit-warn");
    let mut f = start_with_nofile(tmp.path(), 2048);
    let l = f.wait_for("open-files limit", Duration::from_secs(60));
    eprintln!("{l}");
    assert!(l.contains("[warn]"), "{l}");
    assert!(l.contains("The open-files limit is 2048"), "{l}");
    assert!(
        l.contains("each shard's connection table holds 1920 connections"),
        "{l}"
    );
    f.wait_for("Opened ORPort", Duration::from_secs(60));
}

/// A new channel to the relay from a fresh loopback address that authenticates as a relay
/// (the crate's own initiator: CERTS, AUTHENTICATE, NETINFO), held a second after it opened
/// to see that the relay kept it.
fn open_relay_channel(relay: SocketAddr, rsa: RsaIdentity, seed: u64) -> Result<(), String> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let me = channel_support::relay_a();
    let mut ch = Channel::new_initiator(
        me.ctx.clone(),
        ExpectedPeer { rsa, ed: None },
        relay.ip(),
        std::time::SystemTime::now(),
        &mut rng,
    )
    .map_err(|e| format!("initiator: {e}"))?;
    let mut tcp = connect_tcp_from(
        IpAddr::V4(Ipv4Addr::new(127, 0, 9, 2)),
        relay,
        Duration::from_secs(10),
    )?;
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut sink = channel_support::Collect::default();
    let start = Instant::now();
    let mut opened_at = None;
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: 30 s for the handshake, then one second open.
    while start.elapsed() < Duration::from_secs(30) {
        let out = ch.pending_output().to_vec();
        ch.consume_output(out.len());
        tcp.write_all(&out).map_err(|e| format!("write: {e}"))?;
        if let Some(e) = sink.closed() {
            return Err(format!("relay channel closed: {e}"));
        }
        if sink.opened().is_some() {
            let t = *opened_at.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(1) {
                return Ok(());
            }
        }
        match tcp.read(&mut buf) {
            Ok(0) => return Err("the relay closed the connection".into()),
            Ok(n) => {
                let _ =
                    ch.handle_input(&buf[..n], std::time::SystemTime::now(), &mut rng, &mut sink);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Err(format!("no open relay channel in 30 s: {:?}", sink.events))
}

/// A client link from a fresh loopback address (TLS, VERSIONS, NETINFO).
trait FromFresh {
    fn connect_tcp_and_handshake_from(relay: SocketAddr) -> Result<RawLink, String>;
}

impl FromFresh for RawLink {
    fn connect_tcp_and_handshake_from(relay: SocketAddr) -> Result<RawLink, String> {
        let tcp = connect_tcp_from(
            IpAddr::V4(Ipv4Addr::new(127, 0, 9, 1)),
            relay,
            Duration::from_secs(10),
        )?;
        RawLink::over_tcp(tcp, Duration::from_secs(30))?
            .client_handshake(relay.ip(), Duration::from_secs(30))
    }
}
