//! Where does io_uring zero-copy send (`IORING_OP_SEND_ZC`) beat a plain send on Fors's own
//! shard runtime?
//!
//! One pinned shard (`fors::shard::Runtime`, 1 shard) connects to a sink on 127.0.0.1 and
//! streams a fixed volume in writes of S bytes. The send buffers are exactly S bytes, so every
//! send op the shard submits carries (at most) S bytes. Each S runs twice: zero-copy off
//! (`zero_copy_threshold = 0`) and forced on (`zero_copy_threshold = S`). The sink is a plain
//! thread with a blocking socket, pinned to another core, that reads and discards.
//!
//! Measured per point: the shard thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, read inside the
//! handler, which runs on the shard thread; the runtime has no per-thread CPU counter of its
//! own), wall time, and the shard's `send_ops`, `send_zc_ops` and `send_zc_copied` (the
//! kernel's "copied anyway" flag on the zero-copy notification), so the result says whether
//! the kernel really avoided the copy.
//!
//! Usage: `fors-zc-crossover [--sizes 512,1024,...] [--volume-mb 1024] [--cap-secs 10]
//! [--repeats 3] [--shard-core 0] [--sink-core 1] [--veth] [--json]`
//!
//! `--veth` (root only) runs the sender and the sink in two network namespaces the tool
//! creates (`fors-zc-a`, `fors-zc-b`), joined by a veth pair on 10.213.7.0/30, and deletes
//! them afterwards: a real device between the sockets instead of loopback, though still a
//! local socket at the far end.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fors::shard::{
    CloseReason, ConnHandler, ConnId, Outbox, Runtime, RuntimeConfig, ShardConfig, ShardMetrics,
};
use serde::Serialize;

const DEFAULT_SIZES: [u32; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// Bytes kept queued per connection (in send buffers of S bytes), so small S do not turn
/// into a wake-up per buffer.
const QUEUE_BYTES: u32 = 1 << 20;

struct Options {
    sizes: Vec<u32>,
    volume: u64,
    cap: Duration,
    repeats: usize,
    shard_core: usize,
    sink_core: usize,
    json: bool,
    veth: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("fors-zc-crossover: {msg}");
    eprintln!(
        "usage: fors-zc-crossover [--sizes 512,1024,...] [--volume-mb N] [--cap-secs N] \
         [--repeats N] [--shard-core C] [--sink-core C] [--veth] [--json]"
    );
    std::process::exit(2);
}

fn parse_options() -> Options {
    let mut o = Options {
        sizes: DEFAULT_SIZES.to_vec(),
        volume: 1024 << 20,
        cap: Duration::from_secs(10),
        repeats: 3,
        shard_core: 0,
        sink_core: 1,
        json: false,
        veth: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        let num = |name: &str, v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{name}: not a number: {v}")))
        };
        match a.as_str() {
            "--sizes" => {
                let v = val("--sizes");
                o.sizes = v
                    .split(',')
                    .map(|s| num("--sizes", s.to_string()) as u32)
                    .collect();
                if o.sizes.iter().any(|&s| s == 0 || s > (1 << 20)) {
                    usage("--sizes must be in 1..=1048576");
                }
            }
            "--volume-mb" => o.volume = num("--volume-mb", val("--volume-mb")) << 20,
            "--cap-secs" => o.cap = Duration::from_secs(num("--cap-secs", val("--cap-secs"))),
            "--repeats" => o.repeats = num("--repeats", val("--repeats")).max(1) as usize,
            "--shard-core" => o.shard_core = num("--shard-core", val("--shard-core")) as usize,
            "--sink-core" => o.sink_core = num("--sink-core", val("--sink-core")) as usize,
            "--json" => o.json = true,
            "--veth" => o.veth = true,
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown option {other}")),
        }
    }
    if o.volume == 0 {
        usage("--volume-mb must be > 0");
    }
    o
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live stack value we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pin_current(core: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What the shard-side sender measured (sent back when its connection closes).
#[derive(Debug, Clone, Default)]
struct SendSide {
    queued: u64,
    cpu: Duration,
    wall: Duration,
    capped: bool,
    close: Option<String>,
}

/// Connects to the sink in `on_start` and keeps the connection's send queue full of S-byte
/// writes until `volume` bytes are queued (or the time cap), then closes after the flush.
struct Streamer {
    sink: SocketAddr,
    chunk: Vec<u8>,
    volume: u64,
    cap: Duration,
    conn: Option<ConnId>,
    started: Option<(Instant, Duration)>,
    side: SendSide,
    done: Option<mpsc::Sender<SendSide>>,
    closing: bool,
}

impl Streamer {
    fn fill(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        if self.closing {
            return;
        }
        let capped = self.started.is_some_and(|(t, _)| t.elapsed() >= self.cap);
        while !capped && self.side.queued < self.volume {
            let n = (self.volume - self.side.queued).min(self.chunk.len() as u64) as usize;
            let took = match out.send_partial(conn, &self.chunk[..n]) {
                Ok(k) => k,
                Err(_) => break,
            };
            self.side.queued += took as u64;
            if took < n {
                // Bound reached: `on_writable` follows.
                return;
            }
        }
        self.side.capped = capped;
        self.closing = true;
        let _ = out.close(conn);
    }
}

impl ConnHandler for Streamer {
    type Msg = ();

    fn on_start(&mut self, out: &mut Outbox<'_, ()>) {
        match out.connect_nodelay(self.sink) {
            Ok(c) => self.conn = Some(c),
            Err(e) => {
                self.side.close = Some(format!("connect: {e}"));
                if let Some(tx) = self.done.take() {
                    let _ = tx.send(self.side.clone());
                }
            }
        }
    }

    fn on_accept(&mut self, _conn: ConnId, _peer: SocketAddr, _out: &mut Outbox<'_, ()>) {}

    fn on_connected(&mut self, conn: ConnId, _peer: SocketAddr, out: &mut Outbox<'_, ()>) {
        self.started = Some((Instant::now(), thread_cpu()));
        self.fill(conn, out);
    }

    fn on_data(&mut self, _conn: ConnId, _data: &mut [u8], _out: &mut Outbox<'_, ()>) {}

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, ()>) {
        self.fill(conn, out);
    }

    fn on_tick(&mut self, _now: Instant, out: &mut Outbox<'_, ()>) {
        // The time cap must also hold when the sink is so slow no `on_writable` comes.
        if let (Some(c), Some((t, _))) = (self.conn, self.started) {
            if !self.closing && t.elapsed() >= self.cap {
                self.side.capped = true;
                self.closing = true;
                let _ = out.close(c);
            }
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, _out: &mut Outbox<'_, ()>) {
        if Some(conn) != self.conn {
            return;
        }
        if let Some((t, cpu0)) = self.started {
            self.side.wall = t.elapsed();
            self.side.cpu = thread_cpu().saturating_sub(cpu0);
        }
        self.side.close = Some(format!("{reason:?}"));
        if let Some(tx) = self.done.take() {
            let _ = tx.send(self.side.clone());
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
struct Run {
    zero_copy: bool,
    write_size: u32,
    bytes_sent: u64,
    bytes_received: u64,
    capped: bool,
    close_reason: String,
    secs: f64,
    shard_cpu_secs: f64,
    cpu_secs_per_gb: f64,
    mb_per_sec: f64,
    send_ops: u64,
    send_zc_ops: u64,
    send_zc_copied: u64,
}

/// Two network namespaces joined by a veth pair (private 10.213.7.0/30), deleted on drop.
/// Threads switch namespace with setns(2); sockets and threads keep the namespace they were
/// created in.
struct VethPair {
    orig: std::fs::File,
    sender: std::fs::File,
    sink: std::fs::File,
}

const NETNS_A: &str = "fors-zc-a";
const NETNS_B: &str = "fors-zc-b";
const VETH_SINK_IP: &str = "10.213.7.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !st.success() {
        return Err(format!("ip {} failed: {st}", args.join(" ")));
    }
    Ok(())
}

impl VethPair {
    fn create() -> Result<VethPair, String> {
        // Left over from an interrupted run: start clean.
        for ns in [NETNS_A, NETNS_B] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
        ip(&["netns", "add", NETNS_A])?;
        // From here on, Drop deletes whatever exists.
        let open = |p: String| std::fs::File::open(&p).map_err(|e| format!("open {p}: {e}"));
        let orig = open("/proc/thread-self/ns/net".to_string())?;
        ip(&["netns", "add", NETNS_B])?;
        let pair = VethPair {
            sender: open(format!("/run/netns/{NETNS_A}"))?,
            sink: open(format!("/run/netns/{NETNS_B}"))?,
            orig,
        };
        ip(&[
            "link", "add", "fzc0", "netns", NETNS_A, "type", "veth", "peer", "name", "fzc1",
            "netns", NETNS_B,
        ])?;
        ip(&["-n", NETNS_A, "addr", "add", "10.213.7.1/30", "dev", "fzc0"])?;
        ip(&["-n", NETNS_B, "addr", "add", "10.213.7.2/30", "dev", "fzc1"])?;
        for (ns, dev) in [(NETNS_A, "fzc0"), (NETNS_B, "fzc1")] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    fn enter(f: &std::fs::File) -> Result<(), String> {
        // SAFETY: setns on a namespace descriptor we hold open; affects this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(f), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Runs `f` with this thread in namespace `ns`, then returns to the original one.
    fn within<T>(&self, ns: &std::fs::File, f: impl FnOnce() -> T) -> Result<T, String> {
        Self::enter(ns)?;
        let r = f();
        Self::enter(&self.orig)?;
        Ok(r)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Self::enter(&self.orig);
        for ns in [NETNS_A, NETNS_B] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

/// Where sender and sink sit: loopback in this namespace, or the two ends of a veth pair.
#[derive(Clone, Copy)]
enum NetPath<'a> {
    Loopback,
    Veth(&'a VethPair),
}

impl NetPath<'_> {
    /// Runs `f` where the sender lives (the shard thread inherits it when started there).
    fn sender<T>(self, f: impl FnOnce() -> T) -> Result<T, String> {
        match self {
            NetPath::Loopback => Ok(f()),
            NetPath::Veth(v) => v.within(&v.sender, f),
        }
    }
}

type Sink = std::thread::JoinHandle<std::io::Result<u64>>;

/// A loopback sink on its own pinned thread: accepts one connection, reads and discards until
/// EOF, and returns the byte count.
fn spawn_sink(core: usize, path: NetPath<'_>) -> Result<(SocketAddr, Sink), String> {
    let listener = match path {
        NetPath::Loopback => TcpListener::bind("127.0.0.1:0"),
        NetPath::Veth(v) => v.within(&v.sink, || TcpListener::bind((VETH_SINK_IP, 0)))?,
    }
    .map_err(|e| format!("sink bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        pin_current(core);
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    });
    Ok((addr, sink))
}

/// What the kernel's zero-copy notifications said for plain `send(MSG_ZEROCOPY)` calls.
#[derive(Debug, Clone, Default, Serialize)]
struct CopyProbe {
    write_size: u32,
    /// `send(MSG_ZEROCOPY)` calls made: one per write, plus one per partial send (a
    /// blocking send can return short under memory pressure; the rest goes in another call,
    /// which the kernel notifies on its own).
    sends: u64,
    /// Zero-copy sends whose completion was reported.
    sends_notified: u64,
    /// Of those, sends the kernel reported as copied anyway (SO_EE_CODE_ZEROCOPY_COPIED).
    sends_copied: u64,
}

/// Asks the kernel directly whether zero-copy data to this sink is really left uncopied.
///
/// The shard's `send_zc_copied` cannot say: Fors submits SEND_ZC without
/// `IORING_SEND_ZC_REPORT_USAGE`, and without that flag the kernel never sets
/// `IORING_NOTIF_USAGE_ZC_COPIED` in the notification, so the counter stays 0 whatever
/// happened. io_uring's SEND_ZC and socket `MSG_ZEROCOPY` share the kernel's zero-copy skb
/// path and its "copied" verdict, so the same verdict is read here from the socket error
/// queue (docs/networking/msg_zerocopy: `SO_EE_ORIGIN_ZEROCOPY`, `SO_EE_CODE_ZEROCOPY_COPIED`).
fn probe_copy(
    sink_core: usize,
    path: NetPath<'_>,
    size: u32,
    sends: u32,
) -> Result<CopyProbe, String> {
    const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
    const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
    let (addr, sink) = spawn_sink(sink_core, path)?;
    let stream = path
        .sender(|| std::net::TcpStream::connect(addr))?
        .map_err(|e| format!("probe connect: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live stack value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ZEROCOPY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("SO_ZEROCOPY: {}", std::io::Error::last_os_error()));
    }
    // Never modified while the kernel may still reference it.
    let buf = vec![0xa5u8; size as usize];
    let mut calls = 0u64;
    let mut sent = 0u64;
    let total = u64::from(size) * u64::from(sends);
    while sent < total {
        let n = (total - sent).min(u64::from(size)) as usize;
        // SAFETY: sends from a live buffer that outlives every notification (we wait below).
        let r = unsafe { libc::send(fd, buf.as_ptr().cast(), n, libc::MSG_ZEROCOPY) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("send(MSG_ZEROCOPY): {e}"));
        }
        sent += r as u64;
        calls += 1;
    }
    let mut probe = CopyProbe {
        write_size: size,
        sends: calls,
        ..CopyProbe::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut control = [0u64; 64];
    while probe.sends_notified < calls && Instant::now() < deadline {
        // SAFETY: msghdr is plain data; only the control buffer is set, and it is a live
        // stack array of the stated length.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: recvmsg writes only into the control buffer described by msg.
        let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if r < 0 {
            // Nothing queued yet: wait for POLLERR.
            let mut pfd = libc::pollfd {
                fd,
                events: 0,
                revents: 0,
            };
            // SAFETY: polls one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            continue;
        }
        // SAFETY: walks the control messages the kernel just wrote into `control`, within
        // msg_controllen; the extended error is read unaligned from its cmsg data.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(&msg);
            while !cm.is_null() {
                let level = (*cm).cmsg_level;
                let ty = (*cm).cmsg_type;
                if (level == libc::SOL_IP && ty == libc::IP_RECVERR)
                    || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR)
                {
                    let ee: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast());
                    if ee.ee_errno == 0 && ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                        // One notification covers the send calls ee_info..=ee_data.
                        let n = u64::from(ee.ee_data.wrapping_sub(ee.ee_info)) + 1;
                        probe.sends_notified += n;
                        if ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                            probe.sends_copied += n;
                        }
                    }
                }
                cm = libc::CMSG_NXTHDR(&msg, cm);
            }
        }
    }
    drop(stream);
    let got = sink
        .join()
        .map_err(|_| "probe sink panicked".to_string())?
        .map_err(|e| format!("probe sink: {e}"))?;
    if got != sent {
        return Err(format!("probe sink got {got} of {sent} bytes"));
    }
    Ok(probe)
}

fn run_point(o: &Options, path: NetPath<'_>, size: u32, zero_copy: bool) -> Result<Run, String> {
    let (sink_addr, sink) = spawn_sink(o.sink_core, path)?;

    let per_conn = (QUEUE_BYTES / size).clamp(8, 4096);
    let shard = ShardConfig {
        send_buf_size: size,
        send_buf_count: per_conn * 2,
        max_send_bufs_per_conn: per_conn,
        zero_copy_threshold: if zero_copy { size } else { 0 },
        max_connections: 16,
        recv_buf_count: 16,
        tick_ms: 50,
        ..ShardConfig::default()
    };
    let cfg = RuntimeConfig {
        shard_count: 1,
        pin_threads: true,
        cores: vec![o.shard_core],
        listen: None,
        listen_also: Vec::new(),
        shard,
    };
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let (volume, cap) = (o.volume, o.cap);
    let rt = path
        .sender(move || {
            Runtime::start(cfg, move |_| Streamer {
                sink: sink_addr,
                chunk: vec![0x5a; size as usize],
                volume,
                cap,
                conn: None,
                started: None,
                side: SendSide::default(),
                done: tx.lock().ok().and_then(|mut t| t.take()),
                closing: false,
            })
        })?
        .map_err(|e| format!("runtime start: {e}"))?;
    let side = rx.recv_timeout(o.cap + Duration::from_secs(30));
    let reports = rt.stop().map_err(|e| format!("runtime stop: {e}"))?;
    let side = side.map_err(|_| "sender never finished".to_string())?;
    let received = sink
        .join()
        .map_err(|_| "sink panicked".to_string())?
        .map_err(|e| format!("sink: {e}"))?;
    let m: &ShardMetrics = &reports[0].metrics;
    let secs = side.wall.as_secs_f64();
    let gb = m.send_bytes as f64 / 1e9;
    Ok(Run {
        zero_copy,
        write_size: size,
        bytes_sent: m.send_bytes,
        bytes_received: received,
        capped: side.capped,
        close_reason: side.close.unwrap_or_default(),
        secs,
        shard_cpu_secs: side.cpu.as_secs_f64(),
        cpu_secs_per_gb: if gb > 0.0 {
            side.cpu.as_secs_f64() / gb
        } else {
            0.0
        },
        mb_per_sec: if secs > 0.0 {
            m.send_bytes as f64 / 1e6 / secs
        } else {
            0.0
        },
        send_ops: m.send_ops,
        send_zc_ops: m.send_zc_ops,
        send_zc_copied: m.send_zc_copied,
    })
}

/// The repeats of one (size, mode) point, summarised by the median.
#[derive(Debug, Serialize)]
struct Point {
    zero_copy: bool,
    write_size: u32,
    median_cpu_secs_per_gb: f64,
    min_cpu_secs_per_gb: f64,
    max_cpu_secs_per_gb: f64,
    median_mb_per_sec: f64,
    zc_copied_fraction: f64,
    runs: Vec<Run>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Debug, Serialize)]
struct Report {
    /// "loopback" or "veth" (two network namespaces).
    path: &'static str,
    kernel: String,
    cpu: String,
    volume_bytes: u64,
    repeats: usize,
    points: Vec<Point>,
    /// Per write size: the kernel's own verdict on zero-copy sends to the same kind of sink.
    copy_probe: Vec<CopyProbe>,
    /// Smallest write size from which zero-copy clearly used less shard CPU per GB than
    /// copying (every zero-copy run below the best copying run), at every measured size from
    /// there up; `None` when it never did.
    crossover_bytes: Option<u32>,
}

fn first_line_of(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.split_once(':').map_or(l, |(_, v)| v).trim().to_string())
        })
        .unwrap_or_default()
}

fn main() {
    let o = parse_options();
    let veth = if o.veth {
        match VethPair::create() {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("fors-zc-crossover: veth setup: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    let path = veth.as_ref().map_or(NetPath::Loopback, NetPath::Veth);
    let mut points = Vec::new();
    let mut copy_probe = Vec::new();
    for &size in &o.sizes {
        match probe_copy(o.sink_core, path, size, 256) {
            Ok(p) => copy_probe.push(p),
            Err(e) => {
                eprintln!("fors-zc-crossover: copy probe S={size}: {e}");
                drop(veth); // deletes the namespaces
                std::process::exit(1);
            }
        }
        for zero_copy in [false, true] {
            let mut runs = Vec::new();
            for _ in 0..o.repeats {
                match run_point(&o, path, size, zero_copy) {
                    Ok(r) => runs.push(r),
                    Err(e) => {
                        eprintln!("fors-zc-crossover: S={size} zero_copy={zero_copy}: {e}");
                        drop(veth); // deletes the namespaces
                        std::process::exit(1);
                    }
                }
            }
            let zc_ops: u64 = runs.iter().map(|r| r.send_zc_ops).sum();
            let copied: u64 = runs.iter().map(|r| r.send_zc_copied).sum();
            points.push(Point {
                zero_copy,
                write_size: size,
                median_cpu_secs_per_gb: median(runs.iter().map(|r| r.cpu_secs_per_gb).collect()),
                min_cpu_secs_per_gb: runs
                    .iter()
                    .map(|r| r.cpu_secs_per_gb)
                    .fold(f64::INFINITY, f64::min),
                max_cpu_secs_per_gb: runs.iter().map(|r| r.cpu_secs_per_gb).fold(0.0, f64::max),
                median_mb_per_sec: median(runs.iter().map(|r| r.mb_per_sec).collect()),
                zc_copied_fraction: if zc_ops > 0 {
                    copied as f64 / zc_ops as f64
                } else {
                    0.0
                },
                runs,
            });
        }
    }
    // A win must survive the noise of a shared machine: every zero-copy run used less CPU
    // per GB than the best copying run.
    let wins: Vec<(u32, bool)> = o
        .sizes
        .iter()
        .map(|&s| {
            let get = |zc: bool| {
                points
                    .iter()
                    .find(|p| p.write_size == s && p.zero_copy == zc)
            };
            let win = match (get(true), get(false)) {
                (Some(z), Some(c)) => z.max_cpu_secs_per_gb < c.min_cpu_secs_per_gb,
                _ => false,
            };
            (s, win)
        })
        .collect();
    let crossover_bytes = (0..wins.len())
        .find(|&i| wins[i..].iter().all(|&(_, w)| w))
        .map(|i| wins[i].0);
    let report = Report {
        path: if o.veth { "veth" } else { "loopback" },
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpu: first_line_of("/proc/cpuinfo", "model name"),
        volume_bytes: o.volume,
        repeats: o.repeats,
        points,
        copy_probe,
        crossover_bytes,
    };
    if o.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("fors-zc-crossover: json: {e}");
                std::process::exit(1);
            }
        }
    }
    // With --json the table goes to stderr, so one run gives both.
    let table = |line: String| {
        if o.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    table(format!(
        "{}: kernel {}, cpu {}, {} MiB per run, median of {}",
        report.path,
        report.kernel,
        report.cpu,
        o.volume >> 20,
        o.repeats
    ));
    table(format!(
        "{:>7} | {:>13} {:>9} | {:>11} {:>9} {:>9} {:>9} | {:>7} | {:>12}",
        "S",
        "copy CPU s/GB",
        "copy MB/s",
        "ZC CPU s/GB",
        "ZC MB/s",
        "zc_ops",
        "zc_copied",
        "ZC/copy",
        "kernel copied"
    ));
    for &s in &o.sizes {
        let p = |zc: bool| {
            report
                .points
                .iter()
                .find(|p| p.write_size == s && p.zero_copy == zc)
        };
        if let (Some(c), Some(z)) = (p(false), p(true)) {
            let ops: u64 = z.runs.iter().map(|r| r.send_zc_ops).sum();
            let copied: u64 = z.runs.iter().map(|r| r.send_zc_copied).sum();
            let probe = report
                .copy_probe
                .iter()
                .find(|p| p.write_size == s)
                .map_or("?".to_string(), |p| {
                    format!("{}/{}", p.sends_copied, p.sends_notified)
                });
            table(format!(
                "{:>7} | {:>13.3} {:>9.0} | {:>11.3} {:>9.0} {:>9} {:>9} | {:>7.2} | {:>12}",
                s,
                c.median_cpu_secs_per_gb,
                c.median_mb_per_sec,
                z.median_cpu_secs_per_gb,
                z.median_mb_per_sec,
                ops,
                copied,
                z.median_cpu_secs_per_gb / c.median_cpu_secs_per_gb,
                probe
            ));
        }
    }
    match report.crossover_bytes {
        Some(b) => table(format!(
            "crossover: every zero-copy run used less shard CPU per GB than the best copying run \
             from {b} bytes up"
        )),
        None => table(
            "crossover: none (at no size did every zero-copy run beat the best copying run)"
                .to_string(),
        ),
    }
}
