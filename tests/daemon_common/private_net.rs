//! Driving the private loopback network of `scripts/testnet.py` from a test: running the
//! script, reading `network.json`, a C tor client's ports and ControlPort (cookie
//! authentication, events), a loopback echo server, and a long echo transfer through the
//! client that checks every byte. The client's SocksPort is driven with
//! `fors_testkit::socks`. Everything is on 127.0.0.0/8; every wait is bounded.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::testnet_script;

/// Whether `cmd arg` runs here (the program exists).
pub fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Why a private-network test cannot run here (`FORS_SKIP_TESTNET`, or a missing tool), or
/// `None` when it can. `files`: further programs the test needs (e.g. unbound's path).
pub fn testnet_skip_reason(files: &[&str]) -> Option<String> {
    if std::env::var_os("FORS_SKIP_TESTNET").is_some() {
        return Some("FORS_SKIP_TESTNET is set".into());
    }
    for (cmd, arg) in [
        ("tor", "--version"),
        ("tor-gencert", "--help"),
        ("python3", "--version"),
    ] {
        if !have(cmd, arg) {
            return Some(format!("{cmd} is not available"));
        }
    }
    files
        .iter()
        .find(|f| !Path::new(f).exists())
        .map(|f| format!("{f} is not available"))
}

/// Runs `testnet.py --dir DIR ARGS...`; panics if it fails.
pub fn testnet(dir: &Path, args: &[&str]) {
    let st = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "testnet.py {args:?} failed");
}

/// `network.json` of the network in `dir`.
pub fn network_json(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("network.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The record of relay `nick` in `network.json`.
pub fn relay_record(dir: &Path, nick: &str) -> serde_json::Value {
    let net = network_json(dir);
    net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nick"] == nick)
        .unwrap_or_else(|| panic!("no relay {nick} in network.json"))
        .clone()
}

/// The C tor client's SOCKS and control ports.
pub fn client_ports(dir: &Path) -> (u16, u16) {
    let net = network_json(dir);
    let c = &net["client"];
    (
        c["socks_port"].as_u64().unwrap() as u16,
        c["control_port"].as_u64().unwrap() as u16,
    )
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// A TCP echo server on `ip` (port chosen by the kernel), one thread per connection.
pub fn start_echo_server(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A listener that only counts the connections it accepts (to prove nobody connected).
pub fn start_counting_listener(addr: SocketAddr) -> Arc<AtomicU64> {
    let l = TcpListener::bind(addr).unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    n
}

/// A C tor ControlPort connection (control-spec: line protocol, cookie authentication).
/// Asynchronous `650` event lines are queued in `events` whenever they arrive.
pub struct TorControl {
    w: TcpStream,
    r: BufReader<TcpStream>,
    partial: Vec<u8>,
    pub events: VecDeque<String>,
}

impl TorControl {
    pub fn connect(port: u16) -> TorControl {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        let mut c = TorControl {
            w,
            r,
            partial: Vec::new(),
            events: VecDeque::new(),
        };
        let info = c.command("PROTOCOLINFO 1").unwrap();
        let file = info
            .iter()
            .find_map(|l| {
                let i = l.find("COOKIEFILE=\"")? + 12;
                Some(l[i..].split('"').next()?.to_string())
            })
            .expect("control port offers a cookie file");
        let cookie = std::fs::read(file).unwrap();
        let hex: String = cookie.iter().map(|b| format!("{b:02X}")).collect();
        c.command(&format!("AUTHENTICATE {hex}")).unwrap();
        c
    }

    /// One line, or `None` if none completed within `limit`.
    fn line(&mut self, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            match self.r.read_until(b'\n', &mut self.partial) {
                Ok(0) => panic!("control connection closed"),
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let l = String::from_utf8_lossy(&self.partial)
                        .trim_end()
                        .to_string();
                    self.partial.clear();
                    return Some(l);
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("control read: {e}"),
            }
            if Instant::now() > end {
                return None;
            }
        }
    }

    /// An ephemeral v3 onion service (`ADD_ONION NEW:ED25519-V3`, key discarded) whose port
    /// 80 goes to `target`; its address, without ".onion".
    pub fn add_onion(&mut self, target: SocketAddr) -> String {
        let reply = self
            .command(&format!(
                "ADD_ONION NEW:ED25519-V3 Flags=DiscardPK Port=80,{target}"
            ))
            .unwrap();
        reply
            .iter()
            .find_map(|l| l.strip_prefix("ServiceID="))
            .expect("ADD_ONION names the service")
            .to_string()
    }

    /// Sends a command; its reply lines (code stripped, data blocks inlined). `Err` holds the
    /// reply if the code is not 250.
    pub fn command(&mut self, cmd: &str) -> Result<Vec<String>, Vec<String>> {
        self.w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut code;
        loop {
            let l = self
                .line(Duration::from_secs(60))
                .unwrap_or_else(|| panic!("no reply to {cmd:?}"));
            if l.starts_with("650") {
                self.events.push_back(l);
                continue;
            }
            assert!(l.len() >= 4, "malformed control line {l:?}");
            code = l[..3].to_string();
            let sep = l.as_bytes()[3];
            out.push(l[4..].to_string());
            if sep == b'+' {
                loop {
                    let d = self.line(Duration::from_secs(60)).expect("data block");
                    if d == "." {
                        break;
                    }
                    out.push(d);
                }
            }
            if sep == b' ' {
                break;
            }
        }
        if code == "250" {
            Ok(out)
        } else {
            Err(out)
        }
    }

    /// The first event (queued or new) for which `pred` holds, within `limit`; the others
    /// stay queued.
    pub fn wait_event(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(i) = self.events.iter().position(|e| pred(e)) {
            return self.events.remove(i);
        }
        let end = Instant::now() + limit;
        while Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            if let Some(l) = self.line(left.min(Duration::from_secs(1))) {
                if pred(&l) {
                    return Some(l);
                }
                self.events.push_back(l);
            }
        }
        None
    }

    /// Fingerprints on the path of client circuit `circ` (GETINFO circuit-status).
    pub fn circuit_path(&mut self, circ: &str) -> Vec<String> {
        let lines = self.command("GETINFO circuit-status").unwrap();
        lines
            .iter()
            .find_map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                (parts.len() >= 3 && parts[0] == circ).then(|| {
                    parts[2]
                        .split(',')
                        .map(|h| {
                            h.split('~')
                                .next()
                                .unwrap()
                                .trim_start_matches('$')
                                .to_string()
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The circuit carrying the stream whose target is `target` (GETINFO stream-status).
    pub fn stream_circuit(&mut self, target: &str) -> Option<String> {
        let lines = self.command("GETINFO stream-status").unwrap();
        lines.iter().find_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.len() >= 4 && parts[3] == target && parts[1] == "SUCCEEDED")
                .then(|| parts[2].to_string())
        })
    }
}

/// The deterministic byte at offset `i` of an echo transfer (a cheap PRNG of the offset, so
/// reordering, loss or corruption anywhere shows).
fn pattern(i: u64) -> u8 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0005_DEEC_E66D;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 32) as u8
}

/// A bulk echo transfer through the C tor client: one thread writes a byte pattern at up to
/// `rate` bytes per second (the machine is shared), another reads the echo back and compares
/// every byte. It runs until [`EchoTransfer::finish`], so it overlaps whatever the test does
/// meanwhile.
pub struct EchoTransfer {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    writer: JoinHandle<Result<u64, String>>,
    reader: JoinHandle<Result<u64, String>>,
}

impl EchoTransfer {
    /// Starts over an established SOCKS stream to an echo server.
    pub fn start(stream: TcpStream, rate: u64) -> EchoTransfer {
        const IDLE_LIMIT: Duration = Duration::from_secs(180);
        let stop = Arc::new(AtomicBool::new(false));
        let writer_done = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let mut w = stream.try_clone().unwrap();
        let mut r = stream;
        w.set_write_timeout(Some(IDLE_LIMIT)).unwrap();
        r.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (stop_w, done_w, sent_w) = (stop.clone(), writer_done.clone(), sent.clone());
        let writer = std::thread::spawn(move || {
            let mut off = 0u64;
            let mut chunk = vec![0u8; 32 * 1024];
            let mut result = Ok(());
            let started = Instant::now();
            while !stop_w.load(Ordering::Relaxed) {
                let due = Duration::from_secs_f64(off as f64 / rate.max(1) as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                    continue;
                }
                for (k, b) in chunk.iter_mut().enumerate() {
                    *b = pattern(off + k as u64);
                }
                if let Err(e) = w.write_all(&chunk) {
                    result = Err(format!("write at {off}: {e}"));
                    break;
                }
                off += chunk.len() as u64;
                sent_w.store(off, Ordering::Relaxed);
            }
            done_w.store(true, Ordering::Release);
            result.map(|()| off)
        });
        let recv_r = received.clone();
        let reader = std::thread::spawn(move || {
            let mut off = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let mut idle_since = Instant::now();
            loop {
                // Done once the writer has stopped and every byte it wrote came back.
                if writer_done.load(Ordering::Acquire) && off == sent.load(Ordering::Relaxed) {
                    return Ok(off);
                }
                let n = match r.read(&mut buf) {
                    Ok(0) => return Err(format!("stream closed after {off} bytes")),
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if idle_since.elapsed() > IDLE_LIMIT {
                            return Err(format!("no echo for {IDLE_LIMIT:?} after {off} bytes"));
                        }
                        continue;
                    }
                    Err(e) => return Err(format!("read after {off} bytes: {e}")),
                };
                idle_since = Instant::now();
                for (k, b) in buf[..n].iter().enumerate() {
                    if *b != pattern(off + k as u64) {
                        return Err(format!("byte {} differs", off + k as u64));
                    }
                }
                off += n as u64;
                recv_r.store(off, Ordering::Relaxed);
            }
        });
        EchoTransfer {
            stop,
            received,
            writer,
            reader,
        }
    }

    /// Bytes echoed back and verified so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whether both directions are still going.
    pub fn running(&self) -> bool {
        !self.writer.is_finished() && !self.reader.is_finished()
    }

    /// Waits until at least `n` bytes came back verified; false on timeout or failure.
    pub fn wait_received(&self, n: u64, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.received() >= n {
                return true;
            }
            if !self.running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Stops writing, waits for the rest of the echo and checks it; the byte count.
    pub fn finish(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.writer.join().unwrap()?;
        let got = self.reader.join().unwrap()?;
        if got != sent {
            return Err(format!("sent {sent} bytes, {got} came back"));
        }
        Ok(got)
    }
}

/// One test's private network of `scripts/testnet.py` with this build's Fors: a fresh temp
/// directory, the skip check, `up` on a free port range, and the wait for Fors slots to run
/// (the setup every directory-cache test repeated). `testnet.py down` runs on drop, then the
/// directory is removed (kept with `FORS_KEEP_TEST_DIRS`).
pub struct PrivateNet {
    dir: std::path::PathBuf,
    // Dropped after `Drop::drop` has stopped the network.
    tmp: super::TempDir,
}

impl PrivateNet {
    /// A fresh directory tagged `tag` for test `test`, or `None` when the test cannot run here:
    /// `FORS_SKIP_TESTNET`, or `tor`, `tor-gencert`, python3 or one of `tools` (program and
    /// an argument it accepts, e.g. `("curl", "--version")`) missing. The reason is then
    /// printed as SKIPPED, or fails the test under `CI=true` (`skip_common`).
    pub fn prepare(test: &str, tag: &str, tools: &[(&str, &str)]) -> Option<PrivateNet> {
        let why = testnet_skip_reason(&[]).or_else(|| {
            tools
                .iter()
                .find(|(cmd, arg)| !super::skip_common::have(cmd, arg))
                .map(|(cmd, _)| format!("{cmd} is not available"))
        });
        if let Some(why) = why {
            super::skip_common::skip(test, &why);
            return None;
        }
        let tmp = super::TempDir::new(tag);
        Some(PrivateNet {
            dir: tmp.path().join("net"),
            tmp,
        })
    }

    /// The test's temp directory (the network is in its `net/`): for files the test adds,
    /// such as a client log.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// The network's directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `testnet.py up ARGS --base-port <free range> --fors-bin <this build's fors>`.
    pub fn up(&self, args: &[&str]) {
        let base = super::free_port_range_base().to_string();
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--base-port",
            &base,
            "--fors-bin",
            env!("CARGO_BIN_EXE_fors"),
        ]);
        testnet(&self.dir, &all);
    }

    /// Waits (bounded by `limit`) until each of the Fors slots `nicks` logs that it runs.
    pub fn wait_running(&self, nicks: &[&str], limit: Duration) {
        for n in nicks {
            super::wait_for_file_line(&self.log(n), "the relay is running", limit);
        }
    }

    /// The stdout log of Fors slot `nick`.
    pub fn log(&self, nick: &str) -> std::path::PathBuf {
        self.dir.join(nick).join("stdout.log")
    }

    /// The record of relay `nick` in `network.json`.
    pub fn relay(&self, nick: &str) -> serde_json::Value {
        relay_record(&self.dir, nick)
    }

    /// `network.json`.
    pub fn json(&self) -> serde_json::Value {
        network_json(&self.dir)
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        drop(super::TestnetGuard { dir: &self.dir });
    }
}
