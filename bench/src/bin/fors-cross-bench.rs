//! What does handing a cell to another shard cost? (issue #13, scaling model input)
//!
//! Drives Fors's own cross-shard queue, `fors::shard::spsc`, with the message type the relay
//! sends through it (`RelayMsg::Forward`: a 509-byte cell body plus channel, circuit ID and
//! command, i.e. the 514-byte cell on the wire), the way the shard runtime uses it
//! (`src/shard/core.rs` `push_cross`/`flush_cross`, `src/shard/event_loop.rs` `drain_cross`):
//!
//! * the producer writes a batch of B cells into slots, publishes them with one store and
//!   wakes the consumer with one io_uring `Write` of 1 to the consumer's eventfd (as
//!   `flush_cross` does once per loop iteration and destination);
//! * the consumer pops up to `cross_batch` (64, the runtime default) at a time and, only when
//!   the queue is empty, sleeps in `io_uring_enter` on an armed `Read` of its eventfd (as the
//!   shard's `WakeRead` op); a ring built with SINGLE_ISSUER + DEFER_TASKRUN when the kernel
//!   has them, as the shard's;
//! * a full queue: the producer publishes, wakes the consumer, retries once, then sleeps on
//!   its own eventfd, which the consumer writes when `take_producer_waiting` says so (the
//!   runtime's `wake_peer`).
//!
//! Modes: `wake` (the above), `spin` (two threads, no eventfd: both sides poll; the queue and
//! cache-line transfer cost alone) and `local` (push and pop on one thread: the copies into
//! and out of the slots without any cross-core traffic, the floor of the other two).
//!
//! Two threads pinned to two cores (`--cores 0,1`). Per point: `--reps` repetitions of
//! `--cells` cells each; reported: the fastest and the median of the wall time per cell (first
//! push to last pop), each thread's CPU time per cell (`CLOCK_THREAD_CPUTIME_ID`), eventfd
//! wake-ups sent and consumer sleeps per cell, and how often the queue was full. Every cell
//! carries its sequence number (body and circuit ID) and the consumer checks order and
//! count, so a lost, duplicated or reordered cell fails the run. No randomness is used.
//!
//! The producer's io_uring submit per batch is a syscall of its own here; in a shard the wake
//! SQE rides the loop's `submit_and_wait`, so the `wake` producer figure is an upper bound on
//! what a crossing adds to the sending shard.
//!
//! Usage: `fors-cross-bench [--batches 1,8,32,64] [--cells N] [--reps N] [--capacity N]
//! [--pop-batch N] [--modes local,spin,wake] [--cores 0,1] [--json]`

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use fors::cell::{ChanCmd, CircId};
use fors::proto::circuit::{CellBody, ChanId};
use fors::relay::node::cross::RelayMsg;
use fors::shard::spsc::{self, Consumer, Producer};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{opcode, IoUring};
use serde::Serialize;

/// Every repetition must finish within this; a stuck run is an error, not a hang.
const REP_LIMIT: Duration = Duration::from_secs(30);
const WAKE_ONE: [u8; 8] = 1u64.to_ne_bytes();
const UD_READ: u64 = 1;
const UD_WRITE: u64 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Local,
    Spin,
    Wake,
}

struct Options {
    batches: Vec<usize>,
    cells: u64,
    reps: usize,
    capacity: usize,
    pop_batch: usize,
    modes: Vec<Mode>,
    cores: (usize, usize),
    json: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("fors-cross-bench: {msg}");
    eprintln!(
        "usage: fors-cross-bench [--batches 1,8,32,64] [--cells N] [--reps N] [--capacity N] \
         [--pop-batch N] [--modes local,spin,wake] [--cores P,C] [--json]"
    );
    std::process::exit(2);
}

fn parse_list<T: std::str::FromStr>(flag: &str, v: &str) -> Vec<T> {
    v.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: bad value {s:?}")))
        })
        .collect()
}

fn parse_options() -> Options {
    let mut o = Options {
        batches: vec![1, 8, 32, 64],
        cells: 1 << 18,
        reps: 15,
        capacity: 4096,
        pop_batch: 64,
        modes: vec![Mode::Local, Mode::Spin, Mode::Wake],
        cores: (0, 1),
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--batches" => o.batches = parse_list("--batches", &val()),
            "--cells" => o.cells = parse_list::<u64>("--cells", &val())[0],
            "--reps" => o.reps = parse_list::<usize>("--reps", &val())[0],
            "--capacity" => o.capacity = parse_list::<usize>("--capacity", &val())[0],
            "--pop-batch" => o.pop_batch = parse_list::<usize>("--pop-batch", &val())[0],
            "--modes" => {
                o.modes = val()
                    .split(',')
                    .map(|m| match m {
                        "local" => Mode::Local,
                        "spin" => Mode::Spin,
                        "wake" => Mode::Wake,
                        _ => usage(&format!("--modes: unknown mode {m:?}")),
                    })
                    .collect()
            }
            "--cores" => {
                let c: Vec<usize> = parse_list("--cores", &val());
                if c.len() != 2 {
                    usage("--cores takes two core numbers");
                }
                o.cores = (c[0], c[1]);
            }
            "--json" => o.json = true,
            "-h" | "--help" => usage("help"),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if o.batches.iter().any(|&b| b == 0 || b > o.capacity) {
        usage("every batch must be in 1..=capacity");
    }
    if o.cells == 0 || o.reps == 0 || o.pop_batch == 0 || !o.capacity.is_power_of_two() {
        usage("--cells, --reps, --pop-batch must be non-zero; --capacity a power of two");
    }
    o
}

fn pin(core: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads `size_of` bytes of it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pin to core {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live stack value.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall with constant flags; no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own exclusively.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One side's ring, built on its own thread like a shard's.
struct Waker {
    ring: IoUring,
    own: i32,
    peer: i32,
    buf: Box<[u8; 8]>,
    read_armed: bool,
    /// Wake-up writes submitted to the peer.
    sent: u64,
    /// Times this side slept in io_uring_enter.
    sleeps: u64,
}

impl Waker {
    fn new(own: i32, peer: i32) -> Waker {
        let mut b = IoUring::builder();
        b.setup_submit_all();
        let ring = b
            .clone()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(64)
            .or_else(|_| b.setup_coop_taskrun().build(64))
            .expect("io_uring setup");
        Waker {
            ring,
            own,
            peer,
            buf: Box::new([0; 8]),
            read_armed: false,
            sent: 0,
            sleeps: 0,
        }
    }

    /// Queues the eventfd write to the peer and submits it (one io_uring_enter).
    fn wake_peer(&mut self) {
        let e = opcode::Write::new(Fd(self.peer), WAKE_ONE.as_ptr(), 8)
            .build()
            .user_data(UD_WRITE);
        // SAFETY: WAKE_ONE is static and the fd outlives the ring's use of it (joined below).
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit().expect("submit");
            self.reap();
        }
        self.ring.submit().expect("submit");
        self.sent += 1;
        self.reap();
    }

    fn arm_read(&mut self) {
        if self.read_armed {
            return;
        }
        let e = opcode::Read::new(Fd(self.own), self.buf.as_mut_ptr(), 8)
            .build()
            .user_data(UD_READ);
        // SAFETY: `buf` is boxed and lives as long as the ring; one read in flight at a time.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit().expect("submit");
            self.reap();
        }
        self.read_armed = true;
    }

    fn reap(&mut self) {
        for c in self.ring.completion() {
            if c.user_data() == UD_READ {
                self.read_armed = false;
            }
        }
    }

    /// Sleeps until the own eventfd is written or `max` passes.
    fn sleep(&mut self, max: Duration) {
        self.arm_read();
        self.sleeps += 1;
        let ts: Timespec = max.into();
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        self.reap();
    }
}

fn cell(seq: u64, template: &CellBody) -> RelayMsg {
    let mut body = *template;
    body[..8].copy_from_slice(&seq.to_le_bytes());
    RelayMsg::Forward {
        chan: ChanId(7),
        circ_id: CircId(seq as u32),
        cmd: ChanCmd::RELAY,
        body,
    }
}

/// Checks a popped cell is the next in order.
fn check(msg: &RelayMsg, want: u64) -> Result<(), String> {
    match msg {
        RelayMsg::Forward { circ_id, body, .. }
            if circ_id.0 == want as u32 && body[..8] == want.to_le_bytes() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "cell {want}: got another message (lost or reordered)"
        )),
    }
}

#[derive(Default, Clone, Serialize)]
struct Rep {
    wall_ns_per_cell: f64,
    producer_cpu_ns_per_cell: f64,
    consumer_cpu_ns_per_cell: f64,
    wakeups_sent_per_cell: f64,
    consumer_sleeps_per_cell: f64,
    producer_full_events: u64,
    producer_sleeps: u64,
}

struct ProducerOut {
    cpu_ns: u64,
    wakes: u64,
    full: u64,
    sleeps: u64,
    start: Instant,
}

fn run_producer(
    mut p: Producer<RelayMsg>,
    batch: usize,
    cells: u64,
    wake: Option<(i32, i32)>,
    core: usize,
    go: &std::sync::Barrier,
) -> Result<ProducerOut, String> {
    pin(core)?;
    let mut w = wake.map(|(own, peer)| Waker::new(own, peer));
    let template: CellBody = [0x5a; fors::cell::CELL_BODY_LEN];
    go.wait();
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let limit = start + REP_LIMIT;
    let (mut seq, mut full) = (0u64, 0u64);
    while seq < cells {
        let n = (cells - seq).min(batch as u64);
        for _ in 0..n {
            let mut msg = cell(seq, &template);
            let mut tries = 0u32;
            loop {
                match p.push(msg) {
                    Ok(()) => break,
                    Err(m) => msg = m,
                }
                full += 1;
                tries += 1;
                if Instant::now() > limit {
                    return Err(format!("producer stuck at cell {seq} (queue full)"));
                }
                // Make what we have visible and tell the consumer before waiting.
                if p.publish() != 0 {
                    if let Some(w) = w.as_mut() {
                        w.wake_peer();
                    }
                }
                match w.as_mut() {
                    // Retry once (the consumer may have drained before seeing our flag).
                    Some(w) if tries > 1 => w.sleep(Duration::from_millis(100)),
                    Some(_) => {}
                    None => std::hint::spin_loop(),
                }
            }
            seq += 1;
        }
        if p.publish() != 0 {
            if let Some(w) = w.as_mut() {
                w.wake_peer();
            }
        }
    }
    Ok(ProducerOut {
        cpu_ns: thread_cpu_ns() - cpu0,
        wakes: w.as_ref().map_or(0, |w| w.sent),
        full,
        sleeps: w.as_ref().map_or(0, |w| w.sleeps),
        start,
    })
}

fn run_consumer(
    mut c: Consumer<RelayMsg>,
    pop_batch: usize,
    cells: u64,
    wake: Option<(i32, i32)>,
    core: usize,
    go: &std::sync::Barrier,
) -> Result<(u64, u64, Instant), String> {
    pin(core)?;
    let mut w = wake.map(|(own, peer)| Waker::new(own, peer));
    let mut buf: Vec<RelayMsg> = Vec::with_capacity(pop_batch);
    go.wait();
    let cpu0 = thread_cpu_ns();
    let limit = Instant::now() + REP_LIMIT;
    let mut got = 0u64;
    let mut idle = 0u32;
    while got < cells {
        let n = c.pop_batch(&mut buf, pop_batch);
        for m in buf.drain(..) {
            check(&m, got)?;
            got += 1;
        }
        if c.take_producer_waiting() {
            if let Some(w) = w.as_mut() {
                w.wake_peer();
            }
        }
        if n != 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle.is_multiple_of(1024) && Instant::now() > limit {
            return Err(format!("consumer stuck at cell {got} of {cells}"));
        }
        match w.as_mut() {
            // Empty: the shard waits in io_uring_enter until its eventfd read completes.
            Some(w) => w.sleep(Duration::from_millis(100)),
            None => std::hint::spin_loop(),
        }
    }
    let end = Instant::now();
    Ok((
        thread_cpu_ns() - cpu0,
        w.as_ref().map_or(0, |w| w.sleeps),
        end,
    ))
}

fn run_local(o: &Options, batch: usize) -> Result<Rep, String> {
    let (mut p, mut c) = spsc::channel::<RelayMsg>(o.capacity);
    let template: CellBody = [0x5a; fors::cell::CELL_BODY_LEN];
    let mut buf: Vec<RelayMsg> = Vec::with_capacity(o.pop_batch.max(batch));
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let (mut seq, mut got) = (0u64, 0u64);
    while seq < o.cells {
        let n = (o.cells - seq).min(batch as u64);
        for _ in 0..n {
            p.push(cell(seq, &template))
                .map_err(|_| "local queue full".to_string())?;
            seq += 1;
        }
        p.publish();
        while c.pop_batch(&mut buf, o.pop_batch) != 0 {
            for m in buf.drain(..) {
                check(&m, got)?;
                got += 1;
            }
        }
    }
    let cpu = thread_cpu_ns() - cpu0;
    let wall = start.elapsed().as_nanos() as f64;
    let cells = o.cells as f64;
    Ok(Rep {
        wall_ns_per_cell: wall / cells,
        producer_cpu_ns_per_cell: cpu as f64 / cells,
        ..Rep::default()
    })
}

fn run_pair(o: &Options, mode: Mode, batch: usize) -> Result<Rep, String> {
    let (p, c) = spsc::channel::<RelayMsg>(o.capacity);
    let (pfd, cfd) = (eventfd(), eventfd());
    let (pw, cw) = if mode == Mode::Wake {
        (
            Some((pfd.as_raw_fd(), cfd.as_raw_fd())),
            Some((cfd.as_raw_fd(), pfd.as_raw_fd())),
        )
    } else {
        (None, None)
    };
    let go = std::sync::Barrier::new(2);
    let (cells, pop_batch) = (o.cells, o.pop_batch);
    let (pcore, ccore) = o.cores;
    let (pr, cr) = std::thread::scope(|s| {
        let go = &go;
        let ph = s.spawn(move || run_producer(p, batch, cells, pw, pcore, go));
        let ch = s.spawn(move || run_consumer(c, pop_batch, cells, cw, ccore, go));
        (
            ph.join().map_err(|_| "producer panicked".to_string()),
            ch.join().map_err(|_| "consumer panicked".to_string()),
        )
    });
    drop((pfd, cfd));
    let pr = pr??;
    let (ccpu, csleeps, end) = cr??;
    let n = cells as f64;
    Ok(Rep {
        wall_ns_per_cell: (end - pr.start).as_nanos() as f64 / n,
        producer_cpu_ns_per_cell: pr.cpu_ns as f64 / n,
        consumer_cpu_ns_per_cell: ccpu as f64 / n,
        wakeups_sent_per_cell: pr.wakes as f64 / n,
        consumer_sleeps_per_cell: csleeps as f64 / n,
        producer_full_events: pr.full,
        producer_sleeps: pr.sleeps,
    })
}

#[derive(Serialize)]
struct Point {
    mode: Mode,
    batch: usize,
    reps: usize,
    cells_per_rep: u64,
    fastest: Rep,
    median: Rep,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(mode: Mode, batch: usize, o: &Options, reps: Vec<Rep>) -> Point {
    let fastest = reps
        .iter()
        .min_by(|a, b| a.wall_ns_per_cell.total_cmp(&b.wall_ns_per_cell))
        .cloned()
        .unwrap_or_default();
    let col = |f: fn(&Rep) -> f64| median(reps.iter().map(f).collect());
    let median = Rep {
        wall_ns_per_cell: col(|r| r.wall_ns_per_cell),
        producer_cpu_ns_per_cell: col(|r| r.producer_cpu_ns_per_cell),
        consumer_cpu_ns_per_cell: col(|r| r.consumer_cpu_ns_per_cell),
        wakeups_sent_per_cell: col(|r| r.wakeups_sent_per_cell),
        consumer_sleeps_per_cell: col(|r| r.consumer_sleeps_per_cell),
        producer_full_events: col(|r| r.producer_full_events as f64) as u64,
        producer_sleeps: col(|r| r.producer_sleeps as f64) as u64,
    };
    Point {
        mode,
        batch,
        reps: reps.len(),
        cells_per_rep: o.cells,
        fastest,
        median,
    }
}

fn main() {
    let o = parse_options();
    let msg_size = std::mem::size_of::<RelayMsg>();
    eprintln!(
        "fors-cross-bench: size_of::<RelayMsg>() = {msg_size} B, queue capacity {}, pop batch {}, \
         {} cells x {} reps per point, cores {},{}; no randomness (no seed)",
        o.capacity, o.pop_batch, o.cells, o.reps, o.cores.0, o.cores.1
    );
    let mut points = Vec::new();
    for &mode in &o.modes {
        for &batch in &o.batches {
            let mut reps = Vec::with_capacity(o.reps);
            // One unmeasured warm-up (page faults of the slots, thread start-up).
            let warm = |o: &Options| match mode {
                Mode::Local => run_local(o, batch),
                _ => run_pair(o, mode, batch),
            };
            for i in 0..=o.reps {
                match warm(&o) {
                    Ok(r) if i > 0 => reps.push(r),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("fors-cross-bench: {mode:?} batch {batch}: {e}");
                        std::process::exit(1);
                    }
                }
            }
            let p = summarize(mode, batch, &o, reps);
            if !o.json {
                println!(
                    "{:>5} batch {:>2}: wall {:>7.1} ns/cell fastest, {:>7.1} median | cpu \
                     producer {:>6.1} consumer {:>6.1} ns/cell (median) | wake-ups sent {:.4}/cell, \
                     consumer sleeps {:.4}/cell | queue full {} (producer slept {})",
                    format!("{mode:?}").to_lowercase(),
                    batch,
                    p.fastest.wall_ns_per_cell,
                    p.median.wall_ns_per_cell,
                    p.median.producer_cpu_ns_per_cell,
                    p.median.consumer_cpu_ns_per_cell,
                    p.median.wakeups_sent_per_cell,
                    p.median.consumer_sleeps_per_cell,
                    p.median.producer_full_events,
                    p.median.producer_sleeps,
                );
            }
            points.push(p);
        }
    }
    if o.json {
        let out = serde_json::json!({
            "relay_msg_bytes": msg_size,
            "capacity": o.capacity,
            "pop_batch": o.pop_batch,
            "cores": [o.cores.0, o.cores.1],
            "points": points,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cells: u64) -> Options {
        Options {
            batches: vec![1],
            cells,
            reps: 1,
            capacity: 4096,
            pop_batch: 64,
            modes: vec![Mode::Wake],
            // Both threads on core 0: works on any machine; the wake-up path is the subject.
            cores: (0, 0),
            json: true,
        }
    }

    #[test]
    fn the_order_check_catches_a_lost_or_reordered_cell() {
        let t: CellBody = [0; fors::cell::CELL_BODY_LEN];
        assert!(check(&cell(5, &t), 5).is_ok());
        assert!(check(&cell(6, &t), 5).is_err(), "a cell skipped");
        let other = RelayMsg::ChanBlocked {
            chan: ChanId(1),
            blocked: true,
        };
        assert!(check(&other, 0).is_err());
    }

    #[test]
    fn one_wake_up_per_published_batch_and_every_cell_arrives() {
        // 1000 cells never fill a 4096 ring, so the producer publishes exactly
        // ceil(1000 / b) batches, each with one eventfd write.
        let o = opts(1000);
        for (b, batches) in [(1usize, 1000u64), (8, 125), (64, 16)] {
            let r = run_pair(&o, Mode::Wake, b).expect("run");
            assert_eq!(r.producer_full_events, 0);
            let sent = (r.wakeups_sent_per_cell * 1000.0).round() as u64;
            assert_eq!(sent, batches, "batch {b}");
        }
        let r = run_pair(&o, Mode::Spin, 8).expect("spin run");
        assert_eq!(r.wakeups_sent_per_cell, 0.0);
        assert!(run_local(&o, 8).is_ok());
    }

    #[test]
    fn a_full_ring_wakes_the_producer_and_loses_nothing() {
        // Capacity 8 with 4000 cells in batches of 8: the producer finds the ring full
        // and must be woken by the consumer (take_producer_waiting) to finish.
        let mut o = opts(4000);
        o.capacity = 8;
        o.pop_batch = 4;
        // Ok means all 4000 arrived in order (the consumer checks each).
        let r = run_pair(&o, Mode::Wake, 8).expect("run");
        assert!(r.producer_full_events > 0, "the ring never filled");
    }
}
