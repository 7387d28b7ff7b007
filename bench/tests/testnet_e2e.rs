//! End to end through C tor relays on a private loopback network (`scripts/testnet.py`):
//! middle → exit circuits built by fors-loadgen, verified downloads and uploads, and a
//! corrupting TCP proxy between the exit and the sink that must turn into an integrity error.
//!
//! Needs Debian's `tor` and ~40 s. Without `tor` it follows the workspace's skip rule
//! (`tests/skip_common`): fails under `CI=true`, else prints `SKIPPED:`. The network is always
//! taken down (Drop guard).

#[path = "../../tests/skip_common/mod.rs"]
mod skip_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `testnet.py down` when dropped.
struct Network {
    dir: PathBuf,
}

impl Network {
    fn up(dir: PathBuf, base_port: u16) -> Network {
        let net = Network { dir };
        let ok = Command::new("python3")
            .arg(repo().join("scripts/testnet.py"))
            .arg("--dir")
            .arg(&net.dir)
            .args(["up", "--base-port", &base_port.to_string()])
            .status()
            .expect("python3")
            .success();
        assert!(ok, "testnet up failed");
        let ok = Command::new("python3")
            .arg(repo().join("scripts/testnet.py"))
            .arg("--dir")
            .arg(&net.dir)
            .args(["wait", "--timeout", "180"])
            .status()
            .expect("python3")
            .success();
        assert!(ok, "testnet wait failed");
        net
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(repo().join("scripts/testnet.py"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("down")
            .status();
    }
}

/// Kills a child process by its own handle when dropped.
struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A base port whose next 40 ports are free, varied by process id so concurrent test runs
/// (and other networks on the machine) do not collide; same scheme as
/// `tests/daemon_common::free_port_range_base`, with room for a whole testnet.
fn free_port_range_base() -> u16 {
    let seed = (std::process::id() % 2000) as u16;
    for i in 0..200u16 {
        let base = 30_000 + (seed * 13 + i * 97) % 25_000;
        if (0..40).all(|p| TcpListener::bind(("127.0.0.1", base + p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fors-loadgen"))
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = loadgen().args(args).output().expect("run fors-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// A TCP proxy that flips one byte of what the server sends, at `flip_at`. One thread per
/// direction; ends when either side closes.
fn corrupting_proxy(upstream: String, flip_at: usize) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut s = TcpStream::connect(&upstream).unwrap();
        let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(std::net::Shutdown::Write);
        });
        let mut buf = vec![0u8; 65536];
        let mut seen = 0usize;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (seen..seen + n).contains(&flip_at) {
                buf[flip_at - seen] ^= 0x40;
            }
            seen += n;
            if c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c.shutdown(std::net::Shutdown::Write);
        let _ = up.join();
    });
    (addr, h)
}

#[test]
fn loadgen_through_c_tor_relays() {
    if !Path::new("/usr/sbin/tor").exists() {
        skip_common::skip(
            "loadgen_through_c_tor_relays",
            "/usr/sbin/tor is not installed (apt-get install tor)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("fors-loadgen-e2e-{}", std::process::id()));
    let net = Network::up(dir.clone(), free_port_range_base());
    let nj = net.dir.join("network.json");
    let nj = nj.to_str().unwrap();

    // 1. Bulk both ways through middle → exit: every byte verified. Right after `wait`, a
    //    C tor exit may still refuse BEGIN (END reason MISC) until its own view of the network
    //    has caught up with the client's; only that is retried, at most 6 times.
    let mut j = serde_json::Value::Null;
    for attempt in 0..6 {
        j = run_json(&[
            "--network",
            nj,
            "--circuits",
            "2",
            "--streams",
            "2",
            "--download",
            "5M",
            "--upload",
            "5M",
            "--json",
            "--timeout",
            "150s",
        ]);
        let warmup_only = j["errors"]
            .as_object()
            .is_some_and(|e| !e.is_empty() && e.keys().all(|k| k.starts_with("begin_refused")));
        if !warmup_only || j["bytes_verified"] != 0 {
            break;
        }
        eprintln!("attempt {attempt}: exit refused BEGIN during warm-up; retrying in 5 s");
        std::thread::sleep(Duration::from_secs(5));
    }
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["integrity_errors"], 0);
    assert_eq!(j["bytes_down"], 2 * 2 * 5 * 1024 * 1024);
    assert_eq!(j["bytes_up"], 2 * 2 * 5 * 1024 * 1024);
    assert_eq!(j["streams_done"], 8);
    assert!(j["sendme_rtt_us"]["count"].as_u64().unwrap() > 0, "{j}");
    let cpu = j["loadgen_cpu_s"].as_f64().unwrap();
    let workers = j["workers_cpu_s"].as_f64().unwrap();
    let sink = j["sink_cpu_s"].as_f64().unwrap();
    assert!(cpu > 0.0 && workers > 0.0 && sink > 0.0, "{j}");
    // Thread samples are a split of the process total, not more than it.
    assert!(workers + sink <= cpu * 1.05 + 0.05, "{j}");

    // 2. ntor-v3 and CREATE_FAST handshakes build working circuits too.
    for hs in ["ntor-v3", "fast"] {
        let j = run_json(&[
            "--network",
            nj,
            "--handshake",
            hs,
            "--download",
            "600K",
            "--json",
            "--timeout",
            "90s",
        ]);
        assert_eq!(j["ok"], true, "{hs}: {j}");
        assert_eq!(j["bytes_down"], 600 * 1024);
    }

    // 3. A byte flipped between the exit and the sink is an integrity error, not throughput.
    let mut server = Kid(loadgen()
        .args(["--serve", "127.0.0.1:0", "--duration", "300s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let mut line = [0u8; 64];
    let n = server.0.stdout.as_mut().unwrap().read(&mut line).unwrap();
    let sink = String::from_utf8_lossy(&line[..n])
        .trim()
        .trim_start_matches("listening ")
        .to_string();
    let (proxy, ph) = corrupting_proxy(sink, 100_000);
    let j = run_json(&[
        "--network",
        nj,
        "--download",
        "300K",
        "--target",
        &proxy,
        "--json",
        "--timeout",
        "90s",
    ]);
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["integrity_errors"], 1, "{j}");
    assert!(j["bytes_down"].as_u64().unwrap() < 100_000 + 498, "{j}");
    let _ = ph.join();
    drop(server);
    drop(net);
    let _ = std::fs::remove_dir_all(dir);
}
