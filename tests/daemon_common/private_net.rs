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
    assert!(testnet_ok(dir, args), "testnet.py {args:?} failed");
}

/// Runs `testnet.py --dir DIR ARGS...`; whether it succeeded (for a caller that gathers
/// evidence before failing).
pub fn testnet_ok(dir: &Path, args: &[&str]) -> bool {
    Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(dir)
        .args(args)
        .status()
        .unwrap()
        .success()
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

/// The arti client binary: `ARTI_BIN`, else `target/arti/bin/arti` (where
/// `scripts/setup-debian.sh` installs arti 2.7 for CI), else `arti` on PATH.
pub fn arti_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ARTI_BIN") {
        return p.into();
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/arti/bin/arti");
    if built.exists() {
        built
    } else {
        "arti".into()
    }
}

/// Moves the calling thread (and so every thread and process it starts from now on) into
/// the network namespace of process `pid`.
pub fn enter_netns(pid: u32) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    // SAFETY: setns(2) with a valid namespace fd and CLONE_NEWNET only changes this thread's
    // network namespace; it touches no memory of ours.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Stops the network's C tor client (SIGTERM by its recorded pid, checked against its
/// command line), so that from then on no C tor client builds circuits; bounded wait.
pub fn stop_ctor_client(dir: &Path) {
    let net = network_json(dir);
    let c = &net["client"];
    let (Some(pid), Some(torrc)) = (c["pid"].as_u64(), c["torrc"].as_str()) else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !pid_alive(pid) || !String::from_utf8_lossy(&cmdline).contains(torrc) {
        return;
    }
    // SAFETY: kill(2) on a pid this test's network started (its command line names the
    // client's torrc); no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(20);
    while pid_alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pid_alive(pid), "the C tor client (pid {pid}) did not stop");
}

/// A directory cache an arti client bootstraps from (its only `fallback_caches` entry).
pub struct ArtiFallback {
    /// RSA identity, 40 hex digits.
    pub rsa: String,
    /// ed25519 identity, base64 without padding.
    pub ed: String,
    pub orport: u16,
}

/// An arti client (`arti proxy`) configured for a private network of `testnet.py`
/// (/work/shared/reference/arti-private-network.md): its log goes to a file; it is killed
/// on drop.
pub struct ArtiClient {
    child: std::process::Child,
    /// Its SOCKS port on 127.0.0.1.
    pub socks: u16,
    /// Its console log (stdout and stderr).
    pub log: std::path::PathBuf,
}

impl ArtiClient {
    /// Starts `arti` with state under `dir` for the network `net` (`network.json`): the
    /// authorities' v3 identities and DirPorts, `fallback` as its only fallback cache,
    /// `log_filter` as its console log filter (tracing targets syntax), and, when not
    /// empty, `reachable` as `path_rules.reachable_addrs` (which relays it may connect to
    /// directly, i.e. its guards).
    pub fn start(
        arti: &Path,
        dir: &Path,
        net: &serde_json::Value,
        fallback: &ArtiFallback,
        log_filter: &str,
        reachable: &[String],
    ) -> ArtiClient {
        let mut ids = Vec::new();
        let mut dirs = Vec::new();
        for a in net["authorities"].as_array().unwrap() {
            ids.push(format!("\"{}\"", a["v3ident"].as_str().unwrap()));
            dirs.push(format!("[ \"127.0.0.1:{}\" ]", a["dirport"]));
        }
        let socks = super::free_port();
        let root = if super::running_as_root() {
            "allow_running_as_root = true\n"
        } else {
            ""
        };
        let reachable = if reachable.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = reachable.iter().map(|a| format!("\"{a}\"")).collect();
            format!("reachable_addrs = [ {} ]\n", list.join(", "))
        };
        let toml = format!(
            "[application]\n{root}watch_configuration = false\n\
             [logging]\nconsole = \"{log_filter}\"\n\
             [proxy]\nsocks_listen = \"127.0.0.1:{socks}\"\ndns_listen = 0\n\
             [storage]\ncache_dir = \"{d}/cache\"\nstate_dir = \"{d}/state\"\n\
             [storage.permissions]\ndangerously_trust_everyone = true\n\
             [tor_network]\nfallback_caches = [ {{ rsa_identity = \"{rsa}\", \
             ed_identity = \"{ed}\", orports = [\"127.0.0.1:{or}\"] }} ]\n\
             [tor_network.authorities]\nv3idents = [ {ids} ]\nuploads = [ {dl} ]\n\
             downloads = [ {dl} ]\nvotes = [ {dl} ]\n\
             [path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n\
             {reachable}\
             [address_filter]\nallow_local_addrs = true\nallow_onion_addrs = true\n",
            d = dir.display(),
            rsa = fallback.rsa,
            ed = fallback.ed,
            or = fallback.orport,
            ids = ids.join(", "),
            dl = dirs.join(", "),
        );
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("arti.toml");
        std::fs::write(&conf, toml).unwrap();
        let log = dir.join("arti.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(arti)
            .args(["proxy", "-c"])
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start arti");
        ArtiClient { child, socks, log }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits (bounded) until arti says it is "Sufficiently bootstrapped"; panics with the
    /// log's tail otherwise.
    pub fn wait_bootstrapped(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if self.log_text().contains("Sufficiently bootstrapped") {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("arti exited ({st}):\n{}", self.log_tail(60));
            }
            assert!(
                Instant::now() < end,
                "arti did not bootstrap within {limit:?}:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for ArtiClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `testnet.py`'s data server (`GET /data/<n>`, `POST /upload`) on `ip:port` and
/// waits (at most 10 s) until it accepts connections.
pub fn start_data_server(ip: &str, port: u16) -> ChildGuard {
    let srv = Command::new("python3")
        .arg(testnet_script())
        .args(["serve", "--address", ip, "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(srv);
    let up = (0..40).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(250));
        }
        TcpStream::connect((ip, port)).is_ok()
    });
    assert!(up, "the data server on {ip}:{port} did not start");
    guard
}

/// The sum over all series (shards, labels) of counter `name` in a MetricsPort answer.
pub fn metric_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The SHA-256 (hex) of the body `testnet.py`'s data server sends for
/// `GET /data/<n>?seed=<seed>` (computed by the script itself).
pub fn expected_data_sha256(seed: &str, n: usize) -> String {
    let script = testnet_script();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys; sys.path.insert(0, sys.argv[1]); import testnet; \
             print(testnet.expected_sha256(sys.argv[2], int(sys.argv[3])))",
        )
        .arg(script.parent().unwrap())
        .arg(seed)
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "expected_sha256 failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One HTTP/1.1 exchange (`Connection: close`) on `s`: the status and body, or what went
/// wrong. Reads time out after `io_timeout` without progress.
fn http_exchange(
    mut s: TcpStream,
    request: &[u8],
    body: &[u8],
    io_timeout: Duration,
) -> Result<(u32, Vec<u8>), String> {
    s.set_read_timeout(Some(io_timeout)).unwrap();
    s.set_write_timeout(Some(io_timeout)).unwrap();
    s.write_all(request)
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("write: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .map_err(|e| format!("read after {} bytes: {e}", all.len()))?;
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {} bytes", all.len()))?;
    let head = String::from_utf8_lossy(&all[..at]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, all[at + 4..].to_vec()))
}

/// Through `socks`, downloads `n` bytes from `testnet.py`'s data server at `host:port`
/// (`GET /data/n?seed=seed`) and uploads `up` to it (`POST /upload`), each on its own
/// stream; SHA-256 checked both ways (the server reports the upload's digest). `Err` says
/// what failed.
pub fn http_down_up(
    socks: &fors_testkit::socks::Socks5,
    host: &str,
    port: u16,
    seed: &str,
    n: usize,
    up: &[u8],
    io_timeout: Duration,
) -> Result<(), String> {
    let s = socks
        .connect(host, port)
        .map_err(|e| format!("SOCKS connect to {host}:{port}: {e:?}"))?;
    let (status, body) = http_exchange(
        s,
        format!("GET /data/{n}?seed={seed} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        b"",
        io_timeout,
    )
    .map_err(|e| format!("download: {e}"))?;
    let want = expected_data_sha256(seed, n);
    let got = sha256_hex(&body);
    if status != 200 || body.len() != n || got != want {
        return Err(format!(
            "download: HTTP {status}, {} of {n} bytes, sha256 {got} (want {want})",
            body.len()
        ));
    }
    let sent = sha256_hex(up);
    let s = socks
        .connect(host, port)
        .map_err(|e| format!("SOCKS connect to {host}:{port}: {e:?}"))?;
    let (status, body) = http_exchange(
        s,
        format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            up.len()
        )
        .as_bytes(),
        up,
        io_timeout,
    )
    .map_err(|e| format!("upload: {e}"))?;
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != 200 || reply["bytes"] != up.len() || reply["sha256"] != sent.as_str() {
        return Err(format!(
            "upload: HTTP {status}, server says {reply}, sent {} bytes sha256 {sent}",
            up.len()
        ));
    }
    Ok(())
}
