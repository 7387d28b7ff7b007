//! `fors-loadgen --allow-remote` across a veth pair: a "relay host" and a "load-generator
//! host" as two network namespaces this test makes, joined only by a veth pair with the
//! private addresses 10.200.0.1/30 (relay side) and 10.200.0.2/30 (generator side). Nothing
//! here has a route off the machine.
//!
//! * Relay host: a namespace from `scripts/netns.py hold` (only `lo` while it checks
//!   isolation), running the private network of `scripts/testnet.py` with a Fors exit slot
//!   (`--fors exit`) whose policy accepts ports 80 and 443 (`--policy-exit`), so it may
//!   connect to the sink on 10.200.0.2. The network's relays listen on 127.0.0.1 in that
//!   namespace, so the test forwards the C tor middle's ORPort onto 10.200.0.1 (a TCP relay
//!   of bytes inside the relay namespace: the TLS link is end to end).
//! * Generator host: a namespace from `ip netns add`, with `lo` and the veth's other end.
//!   Two `fors-loadgen` runs at once (one "host" each, sinks on 10.200.0.2:80 and :443),
//!   with both hops named on the command line, move verified bytes both ways through
//!   middle → Fors exit; the veth's counters show the traffic crossed it; `fors-loadgen
//!   merge` sums the two reports. The same command without `--allow-remote` is refused
//!   (status 2, the address named) before anything connects.
//!
//! Needs root (for `ip netns` and the veth), tor, tor-gencert, python3, unshare, nsenter, ip,
//! and the `fors` binary next to `fors-loadgen` (built by `cargo test --workspace`). Without
//! one it follows the skip rule (`tests/skip_common`): FAILS under `CI=true`, otherwise prints
//! `SKIPPED:`. Every wait is bounded; the namespaces and the network are always removed.

#[path = "../../tests/skip_common/mod.rs"]
mod skip_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const TEST: &str = "rack_remote";
const RELAY_IP: &str = "10.200.0.1";
const LOADGEN_IP: &str = "10.200.0.2";
/// Per stream, each way; two circuits of one stream per direction per run, two runs.
const DOWN: u64 = 3 << 20;
const UP: u64 = 1 << 20;
const CIRCUITS: u64 = 2;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fors-loadgen"))
}

/// Runs `cmd`, echoing its output; panics if it cannot start.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    eprint!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
}

/// The relay host: `netns.py hold`, killed on drop (the namespace goes with its last process).
struct RelayNs {
    holder: Child,
    pid: u32,
}

impl RelayNs {
    /// `None` when no namespace can be made here (the caller applies the skip rule).
    fn start() -> Result<RelayNs, String> {
        let mut holder = Command::new("python3")
            .arg(repo().join("scripts/netns.py"))
            .args(["hold", "--max-seconds", "900"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let mut out = BufReader::new(holder.stdout.take().unwrap());
        let mut line = String::new();
        // Bounded: netns.py prints the line or exits (then read_line returns 0).
        while out.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
            eprint!("netns| {line}");
            if let Some(rest) = line.strip_prefix("netns ready: pid=") {
                let pid = rest.split_whitespace().next().unwrap().parse().unwrap();
                assert!(line.contains("interfaces=lo(up)"), "{line}");
                // Keep draining so the holder never blocks on a full pipe.
                std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                return Ok(RelayNs { holder, pid });
            }
            line.clear();
        }
        let st = holder.wait().map_err(|e| e.to_string())?;
        Err(format!("netns.py hold exited with {st}"))
    }

    /// A command run in the relay namespace through `netns.py enter` (isolation re-checked).
    fn enter(&self, program: &str) -> Command {
        let mut c = Command::new("python3");
        c.arg(repo().join("scripts/netns.py")).args([
            "enter",
            &self.pid.to_string(),
            "--",
            program,
        ]);
        c
    }

    /// A command run in the relay namespace without the isolation check (once the veth is
    /// in, `lo` is no longer the only interface).
    fn nsenter(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-n", "--", program]);
        c
    }
}

impl Drop for RelayNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The private network inside the relay namespace; `down` on drop.
struct Testnet<'a> {
    ns: &'a RelayNs,
    dir: PathBuf,
}

impl Testnet<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ns.enter("python3");
        c.arg(repo().join("scripts/testnet.py"))
            .arg("--dir")
            .arg(&self.dir)
            .args(args);
        c
    }
}

impl Drop for Testnet<'_> {
    fn drop(&mut self) {
        // `nsenter`, not `enter`: the veth may still be there if the test failed early.
        let _ = self
            .ns
            .nsenter("python3")
            .arg(repo().join("scripts/testnet.py"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("down")
            .status();
    }
}

/// The generator host (`ip netns add`), with the veth pair to the relay namespace; deleting
/// it on drop also deletes the pair.
struct GeneratorNs {
    name: String,
    veth: String,
}

impl GeneratorNs {
    fn create(relay: &RelayNs) -> GeneratorNs {
        let id = std::process::id() % 100_000;
        let g = GeneratorNs {
            name: format!("fors-rack-{id}"),
            veth: format!("frg{id}"),
        };
        let relay_end = format!("frr{id}");
        must(Command::new("ip").args(["netns", "add", &g.name]));
        // Both ends are made directly in their namespaces: no interface of the test ever
        // exists in the host's own namespace.
        must(Command::new("ip").args([
            "-n",
            &g.name,
            "link",
            "add",
            &g.veth,
            "type",
            "veth",
            "peer",
            "name",
            &relay_end,
            "netns",
            &relay.pid.to_string(),
        ]));
        let (gen_net, relay_net) = (format!("{LOADGEN_IP}/30"), format!("{RELAY_IP}/30"));
        for args in [
            vec!["addr", "add", gen_net.as_str(), "dev", g.veth.as_str()],
            vec!["link", "set", g.veth.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            must(Command::new("ip").args(["-n", &g.name]).args(&args));
        }
        for args in [
            vec!["addr", "add", relay_net.as_str(), "dev", relay_end.as_str()],
            vec!["link", "set", relay_end.as_str(), "up"],
        ] {
            must(relay.nsenter("ip").args(&args));
        }
        // No default route anywhere: the /30 is all either side can reach besides loopback.
        let routes = run(Command::new("ip").args(["-n", &g.name, "-4", "route", "show"]));
        let routes = String::from_utf8_lossy(&routes.stdout).to_string();
        assert!(!routes.contains("default"), "{routes}");
        g
    }

    fn exec(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// (rx, tx) bytes of the generator's veth end.
    fn counters(&self) -> (u64, u64) {
        let read = |what: &str| -> u64 {
            let out = run(Command::new("ip").args([
                "netns",
                "exec",
                &self.name,
                "cat",
                &format!("/sys/class/net/{}/statistics/{what}_bytes", self.veth),
            ]));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        (read("rx"), read("tx"))
    }
}

impl Drop for GeneratorNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Forwards `RELAY_IP:port` to `127.0.0.1:to` inside the relay namespace: the relays of the
/// private network listen on loopback only. Accepts at most `max_conns`, until dropped.
struct Forwarder {
    port: u16,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(relay: &RelayNs, to: u16, max_conns: u64) -> Forwarder {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", relay.pid)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, stop2) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            // SAFETY: setns(2) on this thread only, with a namespace fd we opened; sockets
            // made afterwards by this thread (and the threads it spawns) live there.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let _ = tx.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            let l = match TcpListener::bind((RELAY_IP, 0)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            l.set_nonblocking(true).unwrap();
            let _ = tx.send(Ok(l.local_addr().unwrap().port()));
            // Bounded by `max_conns` and by the test's end (`stop`).
            while !stop2.load(Ordering::Relaxed) && acc.load(Ordering::Relaxed) < max_conns {
                match l.accept() {
                    Ok((a, _)) => {
                        acc.fetch_add(1, Ordering::Relaxed);
                        a.set_nonblocking(false).unwrap();
                        // Made on this thread, so in the relay namespace.
                        let Ok(b) = TcpStream::connect(("127.0.0.1", to)) else {
                            continue;
                        };
                        pump(a, b);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("forwarder start")
            .unwrap_or_else(|e| panic!("forwarder in the relay namespace: {e}"));
        Forwarder {
            port,
            accepted,
            stop,
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways until either side closes (each copy ends with its socket).
fn pump(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

/// `--hop` for a relay of the network: its ORPort `at`, fingerprint and ntor key (read from
/// its DataDirectory: `keys/secret_onion_key_ntor` is a 32-byte header, the secret, then the
/// public key).
fn hop(relay: &Value, at: &str) -> String {
    use base64::Engine;
    let data = Path::new(relay["data_dir"].as_str().expect("data_dir"));
    let key = std::fs::read(data.join("keys/secret_onion_key_ntor")).unwrap();
    assert_eq!(key.len(), 96, "ntor key file of {}", relay["nick"]);
    let ntor = base64::engine::general_purpose::STANDARD.encode(&key[64..]);
    let fp = relay["fingerprint"].as_str().unwrap().replace(' ', "");
    format!("{at},{fp},ntor={ntor}")
}

fn seed() -> u64 {
    let s = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{TEST}: seed {s} (FORS_TEST_SEED={s} repeats it)");
    s
}

/// The first port of the private network: inside the fresh relay namespace every port is
/// free.
fn base_port() -> u16 {
    15_100
}

fn missing_tool() -> Option<String> {
    for (cmd, arg) in [
        ("tor", "--version"),
        ("python3", "--version"),
        ("unshare", "--version"),
        ("nsenter", "--version"),
        ("ip", "-V"),
    ] {
        if !skip_common::have(cmd, arg) {
            return Some(format!("{cmd} is not available"));
        }
    }
    if !skip_common::have("tor-gencert", "--help") && !Path::new("/usr/bin/tor-gencert").exists() {
        return Some("tor-gencert is not available".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (ip netns and the veth pair need it)".into());
    }
    None
}

#[test]
fn allow_remote_drives_a_fors_exit_across_a_veth_and_merges_two_hosts() {
    if std::env::var_os("FORS_SKIP_TESTNET").is_some() {
        return skip_common::skip(TEST, "FORS_SKIP_TESTNET is set");
    }
    if let Some(why) = missing_tool() {
        return skip_common::skip(TEST, &why);
    }
    let fors = loadgen().with_file_name("fors");
    if !fors.exists() {
        return skip_common::skip(
            TEST,
            &format!("{} is not built (cargo build --bin fors)", fors.display()),
        );
    }
    let seed = seed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let relay = RelayNs::start().unwrap_or_else(|e| panic!("relay namespace: {e}"));
    let tmp = std::env::temp_dir().join(format!("fors-rack-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let net = Testnet {
        ns: &relay,
        dir: tmp.join("net"),
    };
    let base = base_port().to_string();
    let fors_bin = fors.to_str().unwrap();
    must(&mut net.cmd(&[
        "up",
        "--base-port",
        &base,
        "--middles",
        "1",
        "--exits",
        "1",
        "--fors",
        "exit",
        "--fors-bin",
        fors_bin,
        "--policy-exit",
        "forsexit1 80,443",
    ]));
    must(&mut net.cmd(&["wait", "--timeout", "240"]));
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(net.dir.join("network.json")).unwrap())
            .unwrap();
    let relays = j["relays"].as_array().unwrap();
    let find = |nick: &str| {
        relays
            .iter()
            .find(|r| r["nick"] == nick)
            .unwrap_or_else(|| panic!("no {nick} in network.json"))
    };
    let (middle, exit) = (find("middle1"), find("forsexit1"));

    let gen = GeneratorNs::create(&relay);
    let fwd = Forwarder::start(&relay, middle["orport"].as_u64().unwrap() as u16, 16);
    // The first hop is reached over the veth; the middle extends to the Fors exit inside the
    // relay host, and the exit connects back over the veth to the sinks on 10.200.0.2.
    let hops = [
        hop(middle, &format!("{RELAY_IP}:{}", fwd.port)),
        hop(exit, &format!("127.0.0.1:{}", exit["orport"])),
    ];
    let args = |sink_port: u16, s: u64| -> Vec<String> {
        let mut a = vec![];
        for h in &hops {
            a.extend(["--hop".to_string(), h.clone()]);
        }
        a.extend([
            "--sink-listen".into(),
            format!("{LOADGEN_IP}:{sink_port}"),
            "--circuits".into(),
            CIRCUITS.to_string(),
            "--download".into(),
            DOWN.to_string(),
            "--upload".into(),
            UP.to_string(),
            "--timeout".into(),
            "120s".into(),
            "--threads".into(),
            "1".into(),
            "--seed".into(),
            s.to_string(),
            "--json".into(),
        ]);
        a
    };

    // Without the opt-in: refused before anything connects, the address named.
    let out = run(gen.exec(&loadgen()).args(args(80, seed)));
    assert_eq!(out.status.code(), Some(2), "without --allow-remote");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{RELAY_IP}:{}", fwd.port)) && err.contains("--allow-remote"),
        "{err}"
    );
    assert_eq!(
        fwd.accepted.load(Ordering::Relaxed),
        0,
        "it connected anyway"
    );

    // Two generator "hosts" at once, each with its own sink.
    let (rx0, tx0) = gen.counters();
    let runs: Vec<Child> = [(80u16, seed), (443, seed.wrapping_add(1))]
        .iter()
        .map(|&(port, s)| {
            gen.exec(&loadgen())
                .arg("--allow-remote")
                .args(args(port, s))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reports = Vec::new();
    for (i, c) in runs.into_iter().enumerate() {
        // Bounded by the loadgen's own --timeout (120 s, plus its 15 s grace).
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("host{i}: {text}");
        assert_eq!(out.status.code(), Some(0), "host{i} run failed");
        let r: Value = serde_json::from_str(&text).expect("json report");
        let per_run = CIRCUITS * (DOWN + UP);
        assert_eq!(r["ok"], Value::Bool(true), "host{i}");
        assert_eq!(r["integrity_errors"].as_u64(), Some(0));
        assert_eq!(r["bytes_verified"].as_u64(), Some(per_run), "host{i}");
        assert_eq!(r["bytes_down"].as_u64(), Some(CIRCUITS * DOWN));
        let f = tmp.join(format!("host{i}.json"));
        std::fs::write(&f, &text).unwrap();
        reports.push(f);
    }
    assert!(Instant::now() < deadline, "took too long");
    assert!(
        fwd.accepted.load(Ordering::Relaxed) >= 2,
        "one link per run"
    );
    // Every verified byte crossed the veth twice: middle ↔ generator, and exit ↔ sink. Each
    // direction carries at least the payload of that direction (cells and TCP add more).
    let (rx1, tx1) = gen.counters();
    let (rx, tx) = (rx1 - rx0, tx1 - tx0);
    let total_down = 2 * CIRCUITS * DOWN;
    let total_up = 2 * CIRCUITS * UP;
    eprintln!("{TEST}: veth rx {rx} tx {tx} bytes");
    assert!(rx >= total_down + total_up, "rx {rx}");
    assert!(tx >= total_down + total_up, "tx {tx}");

    // One report for the rack.
    let out = run(Command::new(loadgen())
        .args(["merge", "--json", "--relay-cpu-s", "3"])
        .args(&reports));
    assert_eq!(out.status.code(), Some(0), "merge");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["ok"], Value::Bool(true));
    assert_eq!(m["merged_from"].as_u64(), Some(2));
    assert_eq!(
        m["bytes_verified"].as_u64(),
        Some(2 * CIRCUITS * (DOWN + UP))
    );
    let gb = (2 * CIRCUITS * (DOWN + UP)) as f64 / 1e9;
    let per_gb = m["relay_cpu_s_per_gb"].as_f64().unwrap();
    assert!((per_gb - 3.0 / gb).abs() < 1e-6, "{per_gb}");
    assert_eq!(m["hosts"].as_array().map(Vec::len), Some(2));

    drop(fwd);
    drop(gen);
    drop(net);
    drop(relay);
    let _ = std::fs::remove_dir_all(&tmp);
}
