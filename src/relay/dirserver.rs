//! The directory server thread: answers dir-spec's HTTP requests on the `DirPort`
//! listeners from the [`SharedStore`] (docs/architecture.md "Directory cache: serving").
//!
//! One thread, non-blocking sockets, like the MetricsPort server: never a shard, never the
//! per-cell path. The HTTP logic is the sans-IO [`crate::dircache::serve`]; this module only
//! moves bytes. Bounds:
//! * at most [`MAX_CONNECTIONS`] connections; when full, the oldest one still sending its
//!   request is closed for a newcomer, and only when every slot is answering does the
//!   newcomer get `503 Directory busy, try again later`;
//! * a request has [`REQUEST_TIMEOUT`] to arrive (C tor's bounds on its size: 50 000 bytes
//!   of head, 16 MB − 1 of body, per connection), and requests being read hold at most
//!   [`MAX_READ_BUFFER_BYTES`] together (past it, reading waits); a connection whose answer
//!   makes no progress for `TestingDirConnectionMaxStall` ([`DIR_CONN_MAX_STALL`] by
//!   default) is closed, as C tor closes a "wedged" directory connection
//!   (mainloop.c `run_connection_housekeeping`: no write for that long), however long the
//!   whole answer takes;
//! * answers hold no copy of a stored document (they are `Arc`s), and an answer compressed
//!   per request is compressed as it is sent ([`StreamCompressor`]), so a connection holds
//!   at most [`STREAM_AHEAD`] bytes of its own besides the compressor;
//! * DirPort answers to a peer that is not internal (or to any, with
//!   `CountPrivateBandwidth`) are paced by the relay-wide global write bucket the shards
//!   spend from (`BandwidthRate` / `BandwidthBurst`, [`WriteBucket`] takes from
//!   [`SharedBudget`]), and such a request gets C tor's `503 Directory busy` when the
//!   global or relayed write bucket holds less than its answer, or either ran dry in the
//!   last second, for the shards' writes or ours (C tor `connection_dir_is_global_write_low`,
//!   `write_buckets_last_empty_at`). BEGIN_DIR streams are never refused or paced
//!   here: C tor does not rate-limit linked connections (`connection_is_rate_limited`),
//!   their bytes are paced by the circuit (SENDMEs) and the relay's own buckets.
//!
//! Onion-service descriptors (`/tor/hs/…`) go to one [`HsDirCache`] owned by this thread
//! (its only user), cleaned every [`HS_CACHE_CLEAN_INTERVAL`]. C tor stores and serves them
//! only over anonymous connections (`connection_dir_is_anonymous`): a BEGIN_DIR stream on
//! a circuit whose previous hop is a relay, not a client. The circuit core knows the
//! previous hop, the server does not, so BEGIN_DIR streams arrive on one of two internal
//! listeners: [`DirServer::internal_addr`] for circuits from a client channel,
//! [`DirServer::internal_anonymous_addr`] for circuits from a relay. DirPort requests are
//! never anonymous.
//!
//! A BEGIN_DIR stream's connection starts with a fixed-size preamble from the shard
//! ([`crate::dircache::tunnel`]): the address of the channel its circuit arrived on, which
//! C tor reports in `X-Your-Address-Is` (by the same locality rule as for the DirPort,
//! [`serve::your_address`]). A malformed one closes the connection without an answer; the
//! address is used for that header and nothing else.
//!
//! HTTP/1.0: one request per connection, closed after the answer, as C tor.
//! No client address is logged or counted (SafeLogging).

use std::io::{IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dircache::compress::StreamCompressor;
use crate::dircache::hsdir::cache::{max_cache_bytes, max_descriptor_size_from_param};
use crate::dircache::hsdir::{HsDirCache, HsDirCounters};
use crate::dircache::request::{self, Parsed};
use crate::dircache::serve::{self, Answer, Context, Kind};
use crate::dircache::store::{Document, SharedStore};
use crate::dircache::tunnel;
use crate::shard::ratelimit::SharedBudget;

pub const MAX_CONNECTIONS: usize = 256;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// C tor's `TestingDirConnectionMaxStall` default: an answer that makes no progress this
/// long is given up.
pub const DIR_CONN_MAX_STALL: Duration = Duration::from_secs(5 * 60);
/// Bytes of requests being read, all connections together.
pub const MAX_READ_BUFFER_BYTES: usize = 64 << 20;
/// Compressed output a connection prepares ahead of its socket.
pub const STREAM_AHEAD: usize = 32 << 10;
/// C tor's `CLEAN_CACHES_INTERVAL`: expired onion-service descriptors are dropped this often.
pub const HS_CACHE_CLEAN_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Parts of a stored answer one `writev` carries at most.
const MAX_IOV: usize = 64;
/// Sleep between passes when nothing happened.
const POLL: Duration = Duration::from_millis(5);

/// Counters of the directory server, for the MetricsPort and tests (no addresses).
#[derive(Debug, Default)]
pub struct DirServerStats {
    /// Requests answered, by [`Kind`] (index in [`Kind::ALL`]).
    pub requests: [AtomicU64; Kind::ALL.len()],
    /// Answers by status class: 2xx, 3xx, 4xx, 5xx.
    pub status: [AtomicU64; 4],
    /// Successful (2xx) answers by their `Content-Encoding` (index in
    /// [`crate::dircache::compress::Method::ALL`]).
    pub encodings: [AtomicU64; 5],
    pub bytes_written: AtomicU64,
    pub evicted: AtomicU64,
    pub timeouts: AtomicU64,
    /// Requests closed without an answer (oversized, unknown command, as C tor; or a
    /// BEGIN_DIR connection with a malformed preamble).
    pub closed_bad: AtomicU64,
    pub connections: AtomicU64,
    /// The HSDir cache's counters, descriptors held and bytes accounted, refreshed after
    /// each onion-service request and each clean.
    pub hsdir: std::sync::Mutex<HsDirCounters>,
    pub hsdir_entries: AtomicU64,
    pub hsdir_bytes: AtomicU64,
}

/// What the server answers besides the store; shared so a new descriptor or front page is
/// seen by the next request.
#[derive(Default)]
pub struct DirServerInputs {
    pub front_page: Option<Arc<[u8]>>,
    pub own_descriptor: Option<Document>,
    /// `MaxHSDirCacheBytes` (0: a fifth of `MaxMemInQueues`, as C tor).
    pub max_hsdir_cache_bytes: u64,
    /// `MaxMemInQueues` as the relay resolved it.
    pub max_mem_in_queues: u64,
    /// The consensus parameter `HSV3MaxDescriptorSize`, if the consensus has it.
    pub hsv3_max_descriptor_size: Option<i64>,
    /// The relay's bandwidth buckets (`BandwidthRate` & co.): DirPort answers are paced at
    /// its global rate and burst. `None`: DirPort answers are not rate-limited.
    pub bandwidth: Option<Arc<SharedBudget>>,
    /// `CountPrivateBandwidth`: DirPort peers with internal addresses are rate-limited too.
    pub count_private_bandwidth: bool,
    /// `TestingDirConnectionMaxStall` (`None`: [`DIR_CONN_MAX_STALL`]).
    pub dir_conn_max_stall: Option<Duration>,
    /// Our own address of each family as last resolved (configured `Address`, or found):
    /// a DirPort peer in the same /24 (IPv4) or /48 (IPv6) is not told its address.
    pub our_addresses: Vec<IpAddr>,
}

impl DirServerInputs {
    /// Records our address of `ip`'s family (C tor's `last_resolved_addrs`).
    pub fn set_our_address(&mut self, ip: IpAddr) {
        self.our_addresses.retain(|a| a.is_ipv4() != ip.is_ipv4());
        self.our_addresses.push(ip);
    }

    /// (cache bytes, descriptor size) bounds for the HSDir cache.
    fn hsdir_limits(&self) -> (u64, u32) {
        (
            max_cache_bytes(self.max_hsdir_cache_bytes, self.max_mem_in_queues),
            max_descriptor_size_from_param(self.hsv3_max_descriptor_size),
        )
    }
}

pub struct DirServer {
    local_addrs: Vec<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    internal_anonymous_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<DirServerStats>,
    pub inputs: Arc<RwLock<DirServerInputs>>,
}

impl DirServer {
    /// Binds nothing: takes the DirPort listeners already bound (so a bind error names its
    /// torrc line where the caller binds) and the internal loopback listener BEGIN_DIR
    /// streams connect to, and serves them on a new thread. Beside `internal` it binds a
    /// second loopback listener for BEGIN_DIR streams on circuits from relays (anonymous).
    pub fn start(
        mut listeners: Vec<TcpListener>,
        internal: Option<TcpListener>,
        store: SharedStore,
        inputs: DirServerInputs,
    ) -> std::io::Result<DirServer> {
        let mut local_addrs = Vec::with_capacity(listeners.len());
        for l in &listeners {
            l.set_nonblocking(true)?;
            local_addrs.push(l.local_addr()?);
        }
        let (internal_addr, anonymous) = match &internal {
            Some(l) => {
                l.set_nonblocking(true)?;
                let a = l.local_addr()?;
                let anon = TcpListener::bind(SocketAddr::new(a.ip(), 0))?;
                anon.set_nonblocking(true)?;
                (Some(a), Some(anon))
            }
            None => (None, None),
        };
        let internal_anonymous_addr = match &anonymous {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        // The internal listeners go last: connections from them are tunnelled ones, and
        // from the very last (when there) anonymous.
        let n_public = listeners.len();
        listeners.extend(internal);
        listeners.extend(anonymous);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DirServerStats::default());
        let inputs = Arc::new(RwLock::new(inputs));
        let thread = std::thread::Builder::new()
            .name("dirserver".into())
            .spawn({
                let (stop, stats, inputs) = (stop.clone(), stats.clone(), inputs.clone());
                move || serve_loop(listeners, n_public, store, inputs, stats, stop)
            })?;
        Ok(DirServer {
            local_addrs,
            internal_addr,
            internal_anonymous_addr,
            stop,
            thread: Some(thread),
            stats,
            inputs,
        })
    }

    /// The DirPort listeners' addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Where BEGIN_DIR streams connect (with `DirCache 1`).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr
    }

    /// Where BEGIN_DIR streams on circuits whose previous hop is a relay connect: requests
    /// from there are anonymous (onion-service descriptors are stored and served).
    pub fn internal_anonymous_addr(&self) -> Option<SocketAddr> {
        self.internal_anonymous_addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DirServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The DirPort's draw on the relay-wide global write bucket (C tor connection.c charges
/// directory connections to the same `global_bucket` as OR and exit traffic;
/// `connection_counts_as_relayed_traffic` is false for them, so not the relayed one). A
/// small local allowance is taken from the shards' [`SharedBudget`] at a time, so DirPort
/// and OR traffic together stay within `BandwidthRate`/`BandwidthBurst`.
struct WriteBucket {
    /// Taken from the shared budget, not yet written.
    tokens: i64,
}

/// The global write pool of [`SharedBudget`] (`POOL_LABELS`).
const GLOBAL_WRITE: usize = 1;
/// The relayed write pool.
const RELAYED_WRITE: usize = 3;

impl WriteBucket {
    fn new() -> WriteBucket {
        WriteBucket { tokens: 0 }
    }

    /// Tops the local allowance up toward `need` bytes, at most one chunk (a shard's share
    /// of one refill interval), so an idle DirPort holds back little of the budget. Dry:
    /// the global bucket is empty, noted in the shared budget as the shards note theirs.
    fn top_up(&mut self, now: Instant, budget: &SharedBudget, need: usize) {
        let need = i64::try_from(need).unwrap_or(i64::MAX);
        let want = need.min(budget.chunk(GLOBAL_WRITE)) - self.tokens;
        if want > 0 {
            self.tokens += budget.take_unsharded(GLOBAL_WRITE, want);
        }
        if self.tokens <= 0 {
            budget.note_write_empty(now);
        }
    }

    /// Bytes a rate-limited connection may write now.
    fn allowance(&self) -> usize {
        self.tokens.max(0) as usize
    }

    fn spend(&mut self, n: usize) {
        self.tokens = self.tokens.saturating_sub(n as i64);
    }

    /// The largest answer a rate-limited request may get now (C tor
    /// `connection_dir_is_global_write_low`: the smaller of the global and relayed write
    /// buckets, none for a second after either ran dry — for anyone's writes, the shards'
    /// OR and exit traffic as much as ours, as C's `write_buckets_last_empty_at`). The
    /// global bucket is what the shared budget holds plus our own allowance.
    fn answer_allowance(&self, now: Instant, budget: &SharedBudget) -> u64 {
        if budget.write_ran_dry_within(now, Duration::from_secs(1)) {
            return 0;
        }
        let t = budget.tokens();
        (t[GLOBAL_WRITE].saturating_add(self.tokens))
            .min(t[RELAYED_WRITE])
            .max(0) as u64
    }
}

/// Where an answer being sent is.
enum Cur {
    Head,
    /// A stored document, sent as it is.
    Doc(usize),
    /// Compressed output of the documents fed so far.
    Out(Vec<u8>),
}

/// An answer being sent: its head, then its documents, compressed on the way if the
/// answer is streamed.
struct Writer {
    head: Vec<u8>,
    body: Vec<Arc<[u8]>>,
    /// The next document to send or to compress.
    next: usize,
    cur: Cur,
    /// Bytes of `cur` sent.
    sent: usize,
    /// Set while a streamed answer has documents left to compress.
    z: Option<StreamCompressor>,
    streamed: bool,
}

impl Writer {
    fn new(a: Answer) -> Result<Writer, crate::dircache::compress::CompressError> {
        let z = if a.streamed {
            StreamCompressor::new(a.encoding)?
        } else {
            None
        };
        Ok(Writer {
            head: a.head,
            body: a.body,
            next: 0,
            cur: Cur::Head,
            sent: 0,
            streamed: z.is_some(),
            z,
        })
    }

    /// The unsent rest of the current part (after `pending` returned it).
    fn current(&self) -> &[u8] {
        match &self.cur {
            Cur::Head => &self.head[self.sent..],
            Cur::Doc(i) => &self.body[*i][self.sent..],
            Cur::Out(o) => &o[self.sent..],
        }
    }

    /// An answer sent as stored: the current part and the documents after it (at most
    /// [`MAX_IOV`] in all), for one `writev` rather than a write per document (each
    /// write on loopback is a segment the kernel handles on our CPU time).
    fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>; MAX_IOV]) -> usize {
        debug_assert!(!self.streamed);
        iov[0] = IoSlice::new(self.current());
        let mut k = 1;
        for d in &self.body[self.next..] {
            if k == MAX_IOV {
                break;
            }
            iov[k] = IoSlice::new(d);
            k += 1;
        }
        k
    }

    /// `n` bytes went: past the current part into the next documents when the answer is
    /// sent as stored (`gather`); a streamed answer only writes its current part.
    fn advance(&mut self, mut n: usize) {
        loop {
            let rem = self.current().len();
            if n < rem || self.streamed {
                self.sent += n;
                return;
            }
            n -= rem;
            self.sent += rem;
            if n == 0 || self.next == self.body.len() {
                return;
            }
            self.cur = Cur::Doc(self.next);
            self.next += 1;
            self.sent = 0;
        }
    }

    /// The bytes to send next (not empty), or `None` once everything went.
    fn pending(&mut self) -> Result<Option<&[u8]>, crate::dircache::compress::CompressError> {
        loop {
            let len = match &self.cur {
                Cur::Head => self.head.len(),
                Cur::Doc(i) => self.body[*i].len(),
                Cur::Out(o) => o.len(),
            };
            if self.sent < len {
                break;
            }
            self.sent = 0;
            self.cur = if !self.streamed {
                if self.next == self.body.len() {
                    return Ok(None);
                }
                self.next += 1;
                Cur::Doc(self.next - 1)
            } else {
                let Some(z) = self.z.as_mut() else {
                    return Ok(None);
                };
                let mut out = Vec::new();
                while out.len() < STREAM_AHEAD && self.next < self.body.len() {
                    z.write(&self.body[self.next])?;
                    self.next += 1;
                    out.extend(z.take_output());
                }
                if self.next == self.body.len() {
                    if let Some(z) = self.z.take() {
                        out.extend(z.finish()?);
                    }
                }
                Cur::Out(out)
            };
        }
        Ok(Some(match &self.cur {
            Cur::Head => &self.head[self.sent..],
            Cur::Doc(i) => &self.body[*i][self.sent..],
            Cur::Out(o) => &o[self.sent..],
        }))
    }
}

enum Phase {
    Reading(Vec<u8>),
    Writing(Box<Writer>),
}

struct Conn {
    stream: TcpStream,
    /// The address `X-Your-Address-Is` is about (before C tor's locality rule,
    /// `serve::your_address`): a DirPort connection's TCP peer; for a BEGIN_DIR stream the
    /// address of the channel its circuit arrived on, from its preamble (`None` until then,
    /// or when the shard did not know it). Used for nothing else.
    peer: Option<IpAddr>,
    /// A BEGIN_DIR stream whose preamble (`dircache::tunnel`) has not been read yet.
    preamble_due: bool,
    /// Paced by the DirPort's write bucket (C tor `connection_is_rate_limited`).
    limited: bool,
    /// C tor's `connection_dir_is_anonymous`.
    anonymous: bool,
    /// A found onion-service descriptor being sent: counted as downloaded at close.
    hs_download: Option<[u8; 32]>,
    accepted: Instant,
    /// When the request must have arrived.
    deadline: Instant,
    /// When the answer last made progress (C tor `timestamp_last_write_allowed`).
    last_progress: Instant,
    phase: Phase,
}

impl Conn {
    fn reading(&self) -> usize {
        match &self.phase {
            Phase::Reading(b) => b.len(),
            Phase::Writing(_) => 0,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn serve_loop(
    listeners: Vec<TcpListener>,
    n_public: usize,
    store: SharedStore,
    inputs: Arc<RwLock<DirServerInputs>>,
    stats: Arc<DirServerStats>,
    stop: Arc<AtomicBool>,
) {
    let mut conns: Vec<Conn> = Vec::with_capacity(MAX_CONNECTIONS);
    let (max_bytes, max_size) = inputs
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .hsdir_limits();
    let mut hsdir = HsDirCache::new(max_bytes, max_size);
    let mut next_clean = Instant::now() + HS_CACHE_CLEAN_INTERVAL;
    let anonymous_listener = listeners.len() > n_public + 1;
    let mut bucket: Option<WriteBucket> = None;
    // Whether the last wait ended early on a ready socket (see `wait_ready`).
    let mut woke_early = false;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut busy = false;
        let (budget, count_private, max_stall) = {
            let i = inputs.read().unwrap_or_else(|p| p.into_inner());
            (
                i.bandwidth.clone(),
                i.count_private_bandwidth,
                i.dir_conn_max_stall.unwrap_or(DIR_CONN_MAX_STALL),
            )
        };
        // DirPort bytes come out of the relay-wide budget (a SIGHUP changes its rates).
        match &budget {
            Some(b) => {
                // Shards refill it at their ticks; with none busy this thread may be first.
                b.refill(now);
                bucket.get_or_insert_with(WriteBucket::new);
            }
            None => bucket = None,
        }
        if now >= next_clean {
            next_clean = now + HS_CACHE_CLEAN_INTERVAL;
            hsdir.clean(SystemTime::now());
            publish_hsdir_stats(&hsdir, &stats);
        }
        for (n, l) in listeners.iter().enumerate() {
            let tunnelled = n >= n_public;
            let anonymous = anonymous_listener && n == listeners.len() - 1;
            loop {
                match l.accept() {
                    Ok((stream, peer)) => {
                        busy = true;
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        // A tunnelled stream's TCP peer is our own shard: the address for
                        // its `X-Your-Address-Is` (the previous hop's channel, as C tor's)
                        // comes in its preamble. It is never rate-limited here.
                        let peer = (!tunnelled).then_some(peer.ip());
                        let limited = peer
                            .is_some_and(|p| count_private || !crate::exit::policy::is_internal(p));
                        admit(
                            &mut conns,
                            stream,
                            (peer, tunnelled),
                            limited,
                            anonymous,
                            now,
                            &stats,
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        crate::relay::log::log_warn!("DirPort: accept failed: {e}");
                        break;
                    }
                }
            }
        }
        let mut reading: usize = conns.iter().map(Conn::reading).sum();
        let mut i = 0;
        while i < conns.len() {
            let before = conns[i].reading();
            let (keep, moved) = step(
                &mut conns[i],
                now,
                reading < MAX_READ_BUFFER_BYTES,
                (&mut bucket, budget.as_deref()),
                max_stall,
                &store,
                &inputs,
                &mut hsdir,
                &stats,
            );
            let after = if keep { conns[i].reading() } else { 0 };
            reading = (reading + after).saturating_sub(before);
            busy |= moved;
            if keep {
                i += 1;
            } else {
                let c = conns.swap_remove(i);
                if let Some(key) = c.hs_download {
                    hsdir.note_downloaded(&key);
                }
            }
        }
        stats
            .connections
            .store(conns.len() as u64, Ordering::Relaxed);
        if !busy {
            // A wake-up that led to no work (a socket ready for something this pass could
            // not do) must not spin: then just sleep once.
            woke_early = if woke_early {
                std::thread::sleep(POLL);
                false
            } else {
                wait_ready(&listeners, &conns, POLL)
            };
        } else {
            woke_early = false;
        }
    }
}

/// Waits at most `timeout` for a new connection, a request's bytes, or room to write an
/// unpaced answer, so a DirPort or BEGIN_DIR request is served when it arrives rather than
/// at the next pass (answers paced by the write bucket wait for its refill, the timeout).
/// Whether something became ready before the timeout.
fn wait_ready(listeners: &[TcpListener], conns: &[Conn], timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(listeners.len() + conns.len());
    fds.extend(
        listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)),
    );
    for c in conns {
        let flags = match c.phase {
            Phase::Reading(_) => PollFlags::POLLIN,
            Phase::Writing(_) if !c.limited => PollFlags::POLLOUT,
            Phase::Writing(_) => continue,
        };
        fds.push(PollFd::new(c.stream.as_fd(), flags));
    }
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Copies the HSDir cache's counters and size where the MetricsPort reads them.
fn publish_hsdir_stats(hsdir: &HsDirCache, stats: &DirServerStats) {
    *stats.hsdir.lock().unwrap_or_else(|p| p.into_inner()) = hsdir.counters();
    stats
        .hsdir_entries
        .store(hsdir.len() as u64, Ordering::Relaxed);
    stats
        .hsdir_bytes
        .store(hsdir.total_bytes(), Ordering::Relaxed);
}

fn admit(
    conns: &mut Vec<Conn>,
    mut stream: TcpStream,
    (peer, tunnelled): (Option<IpAddr>, bool),
    limited: bool,
    anonymous: bool,
    now: Instant,
    stats: &DirServerStats,
) {
    if conns.len() >= MAX_CONNECTIONS {
        let oldest_reader = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.phase, Phase::Reading(_)))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(i, _)| i);
        match oldest_reader {
            Some(i) => {
                conns.swap_remove(i);
                stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let a = serve::short_at(
                    unix_now(),
                    503,
                    "Directory busy, try again later",
                    Kind::Other,
                );
                let _ = stream.write(&a.head);
                stats.status[3].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    conns.push(Conn {
        stream,
        peer,
        preamble_due: tunnelled,
        limited,
        anonymous,
        hs_download: None,
        accepted: now,
        deadline: now + REQUEST_TIMEOUT,
        last_progress: now,
        phase: Phase::Reading(Vec::with_capacity(512)),
    });
}

#[allow(clippy::too_many_arguments)]
fn step(
    c: &mut Conn,
    now: Instant,
    may_read: bool,
    (bucket, budget): (&mut Option<WriteBucket>, Option<&SharedBudget>),
    max_stall: Duration,
    store: &SharedStore,
    inputs: &RwLock<DirServerInputs>,
    hsdir: &mut HsDirCache,
    stats: &DirServerStats,
) -> (bool, bool) {
    let mut moved = false;
    if let Phase::Reading(buf) = &mut c.phase {
        let mut chunk = [0u8; 4096];
        // Past the bound on requests being read, reading waits (the request deadline
        // still runs).
        loop {
            if !may_read {
                break;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => return (false, true),
                Ok(n) => {
                    moved = true;
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > request::MAX_HEADERS_SIZE {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (false, true),
            }
        }
        if c.preamble_due {
            if buf.len() < tunnel::PREAMBLE_LEN {
                if now >= c.deadline {
                    stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    return (false, moved);
                }
                return (true, moved);
            }
            // Only our shards write here; anything else is closed without an answer.
            match tunnel::decode(&buf[..tunnel::PREAMBLE_LEN]) {
                Ok(chan_addr) => {
                    c.peer = chan_addr;
                    c.preamble_due = false;
                    buf.drain(..tunnel::PREAMBLE_LEN);
                }
                Err(_) => {
                    stats.closed_bad.fetch_add(1, Ordering::Relaxed);
                    return (false, true);
                }
            }
        }
        let answer: Option<Answer> = match request::parse(buf) {
            Parsed::Incomplete if now >= c.deadline => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                return (false, moved);
            }
            Parsed::Incomplete => return (true, moved),
            Parsed::Close(_) => {
                stats.closed_bad.fetch_add(1, Ordering::Relaxed);
                return (false, true);
            }
            Parsed::BadRequest => {
                Some(serve::short_at(unix_now(), 400, "Bad request", Kind::Other))
            }
            Parsed::Request(req) => {
                let store = store.read().unwrap_or_else(|p| p.into_inner());
                let inputs = inputs.read().unwrap_or_else(|p| p.into_inner());
                let ctx = Context {
                    now: unix_now(),
                    store: &store,
                    front_page: inputs.front_page.as_ref(),
                    own_descriptor: inputs.own_descriptor.as_ref(),
                    peer_for_header: serve::your_address(c.peer, &inputs.our_addresses),
                    write_allowance: match bucket {
                        Some(b) if c.limited => {
                            budget.map_or(u64::MAX, |g| b.answer_allowance(now, g))
                        }
                        _ => u64::MAX,
                    },
                };
                let (max_bytes, max_size) = inputs.hsdir_limits();
                hsdir.set_limits(max_bytes, max_size);
                match serve::answer_hs(&ctx, hsdir, &req, c.anonymous) {
                    Some((a, found)) => {
                        c.hs_download = found;
                        publish_hsdir_stats(hsdir, stats);
                        Some(a)
                    }
                    None => serve::answer(&ctx, req),
                }
            }
        };
        let Some(a) = answer else {
            return (false, true);
        };
        if let Some(i) = Kind::ALL.iter().position(|k| *k == a.kind) {
            stats.requests[i].fetch_add(1, Ordering::Relaxed);
        }
        let class = (a.status / 100).clamp(2, 5) as usize - 2;
        stats.status[class].fetch_add(1, Ordering::Relaxed);
        if class == 0 {
            if let Some(i) = crate::dircache::compress::Method::ALL
                .iter()
                .position(|m| *m == a.encoding)
            {
                stats.encodings[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        let Ok(w) = Writer::new(a) else {
            return (false, true);
        };
        c.phase = Phase::Writing(Box::new(w));
        c.last_progress = now;
    }
    if let Phase::Writing(w) = &mut c.phase {
        loop {
            let mut n_max = match w.pending() {
                Ok(Some(d)) => d.len(),
                Ok(None) => {
                    let _ = c.stream.shutdown(std::net::Shutdown::Both);
                    return (false, true);
                }
                Err(_) => return (false, true),
            };
            if let (true, Some(b), Some(g)) = (c.limited, bucket.as_mut(), budget) {
                if b.allowance() < n_max {
                    b.top_up(now, g, n_max);
                }
                n_max = n_max.min(b.allowance());
                if n_max == 0 {
                    break;
                }
            }
            let wrote = if !c.limited && !w.streamed {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let k = w.gather(&mut iov);
                c.stream.write_vectored(&iov[..k])
            } else {
                c.stream.write(&w.current()[..n_max])
            };
            match wrote {
                Ok(0) => return (false, true),
                Ok(n) => {
                    moved = true;
                    c.last_progress = now;
                    w.advance(n);
                    if let (true, Some(b)) = (c.limited, bucket.as_mut()) {
                        b.spend(n);
                    }
                    stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (false, true),
            }
        }
        if now.saturating_duration_since(c.last_progress) >= max_stall {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            return (false, moved);
        }
    }
    (true, moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dircache::store::DirStore;

    fn fetch(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    /// As a shard connects a BEGIN_DIR stream: the preamble naming `chan_addr`, then
    /// `req`.
    fn fetch_tunnelled(addr: SocketAddr, chan_addr: Option<IpAddr>, req: &[u8]) -> Vec<u8> {
        let mut v = tunnel::encode(chan_addr).to_vec();
        v.extend_from_slice(req);
        fetch(addr, &v)
    }

    #[test]
    fn serves_front_page_404_and_closes_bad_requests() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let store: SharedStore = Arc::new(RwLock::new(DirStore::new()));
        let internal = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = DirServer::start(
            vec![l],
            Some(internal),
            store,
            DirServerInputs {
                front_page: Some(Arc::from(&b"<html>hi</html>"[..])),
                ..Default::default()
            },
        )
        .unwrap();
        let addr = server.local_addrs()[0];
        let out = String::from_utf8(fetch(addr, b"GET / HTTP/1.0\r\n\r\n")).unwrap();
        assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Type: text/html\r\n"));
        assert!(
            !out.contains("X-Your-Address-Is"),
            "loopback peer: no header"
        );
        assert!(out.ends_with("\r\n\r\n<html>hi</html>"));
        // The BEGIN_DIR listener serves the same answers.
        let internal = server.internal_addr().unwrap();
        let out = String::from_utf8(fetch_tunnelled(
            internal,
            None,
            b"GET /tor/robots.txt HTTP/1.0\r\n\r\n",
        ))
        .unwrap();
        assert!(
            out.ends_with("\r\n\r\nUser-agent: *\r\nDisallow: /\r\n"),
            "{out}"
        );
        let out = String::from_utf8(fetch(
            addr,
            b"GET /tor/status-vote/current/consensus-microdesc.z HTTP/1.0\r\n\r\n",
        ))
        .unwrap();
        assert!(out.starts_with("HTTP/1.0 404 Not found\r\nDate: "), "{out}");
        // Unknown command: closed without an answer, as C tor.
        assert!(fetch(addr, b"BREW /pot HTTP/1.0\r\n\r\n").is_empty());
        let out = String::from_utf8(fetch(addr, b"GET /\r\n\r\n")).unwrap();
        assert!(out.starts_with("HTTP/1.0 400 Bad request\r\n"), "{out}");
        // An oversized head is closed.
        let mut big = b"GET / HTTP/1.0\r\nX: ".to_vec();
        big.resize(request::MAX_HEADERS_SIZE + 100, b'a');
        assert!(fetch(addr, &big).is_empty());
        assert_eq!(server.stats.status[0].load(Ordering::Relaxed), 2);
        assert_eq!(server.stats.closed_bad.load(Ordering::Relaxed), 2);
        server.stop();
    }

    /// POST bytes as C tor's HSDir upload does (HTTP/1.0, Content-Length); over BEGIN_DIR
    /// when `tunnelled`.
    fn post(addr: SocketAddr, tunnelled: bool, url: &str, body: &[u8]) -> String {
        let mut req = format!(
            "POST {url} HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let out = if tunnelled {
            fetch_tunnelled(addr, None, &req)
        } else {
            fetch(addr, &req)
        };
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn onion_service_descriptors_only_over_anonymous_listener() {
        use crate::dircache::hsdir::build::{build_outer, OuterSpec};
        use crate::keys::Ed25519Keypair;
        use rand::{RngCore, SeedableRng};
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let blinded = Ed25519Keypair::generate(&mut rng);
        let signing = Ed25519Keypair::generate(&mut rng);
        let mut blob = vec![0u8; 1500];
        rng.fill_bytes(&mut blob);
        let desc = build_outer(
            &OuterSpec {
                blinded: &blinded,
                signing: &signing,
                cert_lifetime_secs: 54 * 3600,
                lifetime_minutes: 180,
                revision_counter: 7,
                superencrypted: &blob,
            },
            SystemTime::now(),
        );
        let key = crate::dir::netdoc::base64_nopad(&blinded.public().to_bytes());

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let store: SharedStore = Arc::new(RwLock::new(DirStore::new()));
        let internal = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = DirServer::start(
            vec![l],
            Some(internal),
            store,
            DirServerInputs {
                max_mem_in_queues: 256 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let dirport = server.local_addrs()[0];
        let client = server.internal_addr().unwrap();
        let anon = server.internal_anonymous_addr().unwrap();
        assert_ne!(client, anon);
        // Neither the DirPort nor a client's one-hop BEGIN_DIR may publish (C tor: 503).
        for (a, t) in [(dirport, false), (client, true)] {
            let out = post(a, t, "/tor/hs/3/publish", desc.as_bytes());
            assert!(
                out.starts_with("HTTP/1.0 503 Rejecting single hop HS descriptor post\r\n"),
                "{out}"
            );
        }
        let out = post(anon, true, "/tor/hs/3/publish", desc.as_bytes());
        assert!(
            out.starts_with("HTTP/1.0 200 HS descriptor stored successfully.\r\n"),
            "{out}"
        );
        let out = post(anon, true, "/tor/hs/2/publish", desc.as_bytes());
        assert!(out.starts_with("HTTP/1.0 400 "), "{out}");
        // Fetches: refused off the anonymous listener; found there, with or without `.z`.
        let get = |a, url: &str| {
            let req = format!("GET {url} HTTP/1.0\r\n\r\n");
            let out = if a == dirport {
                fetch(a, req.as_bytes())
            } else {
                fetch_tunnelled(a, None, req.as_bytes())
            };
            String::from_utf8(out).unwrap()
        };
        for a in [dirport, client] {
            let out = get(a, &format!("/tor/hs/3/{key}"));
            assert!(
                out.starts_with("HTTP/1.0 503 Rejecting single hop HS v3 descriptor request\r\n"),
                "{out}"
            );
        }
        for url in [format!("/tor/hs/3/{key}"), format!("/tor/hs/3/{key}.z")] {
            let out = get(anon, &url);
            assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
            assert!(out.contains("Content-Encoding: identity\r\n"), "{out}");
            assert!(out.contains("Pragma: no-cache\r\n"), "{out}");
            assert!(out.ends_with(&format!("\r\n\r\n{desc}")), "{out}");
        }
        let other = crate::dir::netdoc::base64_nopad(&[9u8; 32]);
        let out = get(anon, &format!("/tor/hs/3/{other}"));
        assert!(out.starts_with("HTTP/1.0 404 Not found\r\n"), "{out}");
        let c = server.stats.hsdir.lock().unwrap().clone();
        assert_eq!(c.stored, 1);
        assert_eq!(c.single_hop_rejected, 4);
        assert_eq!((c.fetch_hit, c.fetch_miss), (2, 1));
        assert_eq!(server.stats.hsdir_entries.load(Ordering::Relaxed), 1);
        assert!(server.stats.hsdir_bytes.load(Ordering::Relaxed) > desc.len() as u64);
        let hs = Kind::ALL
            .iter()
            .position(|k| *k == Kind::HsDescriptor)
            .unwrap();
        assert_eq!(server.stats.requests[hs].load(Ordering::Relaxed), 5);
        server.stop();
    }

    #[test]
    fn write_bucket_draws_on_the_relay_wide_budget() {
        use crate::shard::ratelimit::BwRates;
        let t0 = Instant::now();
        let rates = |relay_rate| BwRates {
            rate: 100_000,
            burst: 100_000,
            relay_rate,
            relay_burst: relay_rate,
        };
        let g = SharedBudget::new(2, rates(0), t0);
        let mut b = WriteBucket::new();
        assert_eq!(b.answer_allowance(t0, &g), 100_000);
        // A shard spends 70 kB: the DirPort sees what is left.
        assert_eq!(g.take(0, GLOBAL_WRITE, 50_000), 50_000);
        assert_eq!(g.take(1, GLOBAL_WRITE, 20_000), 20_000);
        assert_eq!(b.answer_allowance(t0, &g), 30_000);
        // Writing takes from the shared budget, one chunk at most (16 KiB here).
        b.top_up(t0, &g, 40_000);
        assert_eq!(b.allowance(), 16 * 1024);
        assert_eq!(g.tokens()[GLOBAL_WRITE], 30_000 - 16 * 1024);
        assert_eq!(
            b.answer_allowance(t0, &g),
            30_000,
            "held tokens still count"
        );
        b.spend(16 * 1024);
        b.top_up(t0, &g, 40_000);
        b.spend(b.allowance());
        // Dry: nothing answered for a second (C `write_buckets_last_empty_at`), even
        // after a refill.
        b.top_up(t0, &g, 1);
        assert_eq!(b.allowance(), 0);
        let t1 = t0 + Duration::from_millis(500);
        assert!(g.refill(t1));
        assert_eq!(b.answer_allowance(t1, &g), 0);
        let t2 = t0 + Duration::from_millis(1100);
        assert!(g.refill(t2));
        assert!(b.answer_allowance(t2, &g) > 0);
        // The relayed write bucket counts too when it is smaller.
        let g = SharedBudget::new(1, rates(80_000), t0);
        assert_eq!(WriteBucket::new().answer_allowance(t0, &g), 80_000);
        // A shard's OR traffic running the relayed write bucket dry closes the DirPort for
        // a second, though the DirPort itself took nothing (the reviewer's finding).
        let mut shard = crate::shard::ratelimit::ShardBuckets::new(g.clone(), 0);
        use crate::shard::ratelimit::{BwClass, BwDir};
        for _ in 0..1000 {
            let a = shard.allowance(BwClass::Relayed, BwDir::Write);
            if a <= 0 || shard.charge(BwClass::Relayed, BwDir::Write, a as u64) {
                break;
            }
        }
        assert!(shard.blocked(BwClass::Relayed, BwDir::Write));
        let b = WriteBucket::new();
        assert_eq!(b.answer_allowance(t0, &g), 0);
        let t3 = t0 + Duration::from_millis(1100);
        assert!(g.refill(t3));
        assert!(b.answer_allowance(t3, &g) > 0);
    }

    /// A store with `n` microdescriptors of `len` bytes each, keyed [i; 32].
    fn md_store(n: u8, len: usize, seed: u64) -> (SharedStore, Vec<u8>) {
        use rand::{RngCore, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut s = DirStore::new();
        let mut all = Vec::new();
        for i in 0..n {
            let mut body = format!("onion-key\nmd {i}\n").into_bytes();
            while body.len() < len {
                // Base64-ish text, compressible as real microdescs are.
                let mut raw = [0u8; 48];
                rng.fill_bytes(&mut raw);
                body.extend(crate::dir::netdoc::base64_nopad(&raw).bytes());
                body.push(b'\n');
            }
            body.truncate(len);
            all.extend_from_slice(&body);
            s.insert_microdesc(
                [i; 32],
                Document {
                    body: Arc::from(body),
                    published: unix_now(),
                },
            );
        }
        (Arc::new(RwLock::new(s)), all)
    }

    fn md_url(keys: std::ops::Range<u8>) -> String {
        let list: Vec<String> = keys
            .map(|i| crate::dir::netdoc::base64_nopad(&[i; 32]))
            .collect();
        format!("/tor/micro/d/{}", list.join("-"))
    }

    fn split(out: &[u8]) -> (String, &[u8]) {
        let at = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        (String::from_utf8(out[..at].to_vec()).unwrap(), &out[at..])
    }

    /// DirPort answers are paced and refused by the write bucket; BEGIN_DIR answers never
    /// are; answers compressed per request are compressed as they are sent.
    #[test]
    fn dirport_is_rate_limited_begin_dir_is_not_and_answers_stream() {
        use crate::shard::ratelimit::BwRates;
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        // 40 microdescs of 1000 bytes; the documents are in key order in the answer.
        let (store, all) = md_store(40, 1000, seed);
        let started = Instant::now();
        let budget = SharedBudget::new(
            1,
            BwRates {
                rate: 20_000,
                burst: 20_000,
                relay_rate: 0,
                relay_burst: 0,
            },
            started,
        );
        let server = DirServer::start(
            vec![TcpListener::bind("127.0.0.1:0").unwrap()],
            Some(TcpListener::bind("127.0.0.1:0").unwrap()),
            store,
            DirServerInputs {
                bandwidth: Some(budget.clone()),
                // The test's peer is loopback: count it as C tor does with
                // CountPrivateBandwidth.
                count_private_bandwidth: true,
                ..Default::default()
            },
        )
        .unwrap();
        let dirport = server.local_addrs()[0];
        let begin_dir = server.internal_addr().unwrap();
        let get = |a, url: &str, extra: &str| {
            let req = format!("GET {url} HTTP/1.0\r\n{extra}\r\n");
            if a == begin_dir {
                fetch_tunnelled(a, None, req.as_bytes())
            } else {
                fetch(a, req.as_bytes())
            }
        };
        // 40 kB is more than the 20 kB bucket: 503 on the DirPort...
        let out = get(dirport, &md_url(0..40), "");
        assert!(
            out.starts_with(b"HTTP/1.0 503 Directory busy, try again later\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // ...but never over BEGIN_DIR (a linked connection in C tor).
        let out = get(begin_dir, &md_url(0..40), "");
        let (h, b) = split(&out);
        assert!(h.starts_with("HTTP/1.0 200 OK\r\n"), "{h}");
        assert_eq!(b, &all[..]);
        // 15 kB fits and is sent; the bucket is then short for another 15 kB.
        let out = get(dirport, &md_url(0..15), "");
        let (h, b) = split(&out);
        assert!(h.starts_with("HTTP/1.0 200 OK\r\n"), "{h}");
        assert_eq!(b, &all[..15_000]);
        let out = get(dirport, &md_url(15..30), "");
        assert!(
            out.starts_with(b"HTTP/1.0 503 "),
            "spent by the first answer"
        );
        // The DirPort draws on the relay-wide budget: what it sent is gone from it, and
        // what a shard spends leaves the DirPort less. (Refills add 20 kB/s; the
        // burst caps them.)
        let earned = (20_000.0 * started.elapsed().as_secs_f64()) as i64 + 1;
        let left = budget.tokens()[1];
        assert!(left <= 20_000 - 15_000 + earned, "{left} tokens left");
        std::thread::sleep(Duration::from_millis(1100));
        budget.refill(Instant::now());
        assert_eq!(budget.tokens()[1], 20_000, "full again");
        assert_eq!(budget.take(0, 1, 12_000), 12_000);
        let out = get(dirport, &md_url(0..10), "");
        assert!(
            out.starts_with(b"HTTP/1.0 503 "),
            "10 kB does not fit beside the shard's 12 kB"
        );
        // Compressed as sent: zstd and deflate, over BEGIN_DIR, whole and exact.
        for (enc, name) in [("x-zstd", "x-zstd"), ("deflate", "deflate")] {
            let out = get(
                begin_dir,
                &md_url(0..40),
                &format!("Accept-Encoding: {enc}\r\n"),
            );
            let (h, b) = split(&out);
            assert!(h.contains(&format!("Content-Encoding: {name}\r\n")), "{h}");
            let plain = if enc == "x-zstd" {
                zstd::decode_all(b).unwrap()
            } else {
                let mut v = Vec::new();
                flate2::read::ZlibDecoder::new(b)
                    .read_to_end(&mut v)
                    .unwrap();
                v
            };
            assert_eq!(plain, all);
            assert!(b.len() < all.len());
        }
        server.stop();
    }

    /// A streamed answer is produced piecewise: never more than [`STREAM_AHEAD`] (plus one
    /// document's output) ahead of the socket.
    #[test]
    fn a_streamed_answer_holds_little_of_its_own() {
        let docs: Vec<Arc<[u8]>> = (0..200u32)
            .map(|i| Arc::from(format!("doc {i} {}\n", "x".repeat(3000)).into_bytes()))
            .collect();
        let want: Vec<u8> = docs.iter().flat_map(|d| d.iter().copied()).collect();
        let mut w = Writer::new(Answer {
            status: 200,
            kind: Kind::Microdesc,
            head: b"H\r\n\r\n".to_vec(),
            body: docs,
            encoding: crate::dircache::compress::Method::Gzip,
            streamed: true,
        })
        .unwrap();
        let mut out = Vec::new();
        let mut max_pending = 0;
        while let Some(d) = w.pending().unwrap() {
            max_pending = max_pending.max(d.len());
            // Send in small pieces, as a slow socket takes them.
            let n = d.len().min(1000);
            out.extend_from_slice(&d[..n]);
            w.sent += n;
        }
        assert!(max_pending <= STREAM_AHEAD + 4000, "{max_pending}");
        assert_eq!(&out[..5], b"H\r\n\r\n");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&out[5..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, want);
    }

    /// An answer sent as stored goes out in gathered writes (head and documents together)
    /// that a socket may take only partly: every byte once, in order.
    #[test]
    fn a_stored_answer_goes_out_whole_in_gathered_writes() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let docs: Vec<Arc<[u8]>> = (0..(MAX_IOV as u32 * 2 + 7))
            .map(|i| Arc::from(format!("doc {i} {}\n", "z".repeat(i as usize % 97)).into_bytes()))
            .collect();
        let mut want = b"HEAD\r\n\r\n".to_vec();
        want.extend(docs.iter().flat_map(|d| d.iter().copied()));
        let mut w = Writer::new(Answer {
            status: 200,
            kind: Kind::Microdesc,
            head: b"HEAD\r\n\r\n".to_vec(),
            body: docs,
            encoding: crate::dircache::compress::Method::Identity,
            streamed: false,
        })
        .unwrap();
        let mut out = Vec::new();
        let mut writes = 0;
        while w.pending().unwrap().is_some() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let k = w.gather(&mut iov);
            let all: Vec<u8> = iov[..k].iter().flat_map(|s| s.iter().copied()).collect();
            // A socket takes some of it, sometimes all.
            let n = if rng.gen_bool(0.3) {
                all.len()
            } else {
                rng.gen_range(1..=all.len())
            };
            out.extend_from_slice(&all[..n]);
            w.advance(n);
            writes += 1;
        }
        assert_eq!(out, want);
        assert!(writes < 200, "gathered, not one write per part: {writes}");
    }

    /// No total write deadline: a slow reader that keeps taking bytes gets the whole
    /// answer, one that stops for `TestingDirConnectionMaxStall` is closed (C tor's wedged
    /// directory connection).
    #[test]
    fn a_stalled_answer_is_closed_a_slow_one_is_not() {
        // 24 MB of microdescs: more than the loopback socket buffers hold.
        let mut s = DirStore::new();
        for i in 0..60u8 {
            let body = format!("onion-key\nmd {i}\n{}\n", "y".repeat(400_000));
            s.insert_microdesc(
                [i; 32],
                Document {
                    body: Arc::from(body.into_bytes()),
                    published: unix_now(),
                },
            );
        }
        let store: SharedStore = Arc::new(RwLock::new(s));
        let server = DirServer::start(
            vec![TcpListener::bind("127.0.0.1:0").unwrap()],
            None,
            store,
            DirServerInputs {
                dir_conn_max_stall: Some(Duration::from_millis(1500)),
                ..Default::default()
            },
        )
        .unwrap();
        let addr = server.local_addrs()[0];
        let req = format!("GET {} HTTP/1.0\r\n\r\n", md_url(0..60));
        // The stalled one: sends its request and reads nothing.
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled.write_all(req.as_bytes()).unwrap();
        // The slow one: reads 1 MB every 200 ms, so the whole answer takes ~5 s, more
        // than three times the stall limit.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.write_all(req.as_bytes()).unwrap();
        let started = Instant::now();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            assert!(started.elapsed() < Duration::from_secs(60), "bounded");
            let mut n_this = 0;
            while n_this < buf.len() {
                match slow.read(&mut buf[n_this..]) {
                    Ok(0) => break,
                    Ok(n) => n_this += n,
                    Err(e) => panic!("slow reader: {e}"),
                }
            }
            got += n_this;
            if n_this < buf.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(started.elapsed() > Duration::from_millis(3000));
        assert!(got > 24_000_000, "the whole answer: {got}");
        // The stalled one was closed meanwhile: it reads what the buffers held, then EOF
        // (or a reset), well short of the answer.
        stalled
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut total = 0usize;
        loop {
            match stalled.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        assert!(total < got, "{total} of {got}");
        assert!(server.stats.timeouts.load(Ordering::Relaxed) >= 1);
        server.stop();
    }

    #[test]
    fn begin_dir_preamble_gives_x_your_address_is_by_c_tors_rule() {
        let store: SharedStore = Arc::new(RwLock::new(DirStore::new()));
        let mut inputs = DirServerInputs::default();
        inputs.set_our_address("198.51.100.1".parse().unwrap());
        let server = DirServer::start(
            vec![TcpListener::bind("127.0.0.1:0").unwrap()],
            Some(TcpListener::bind("127.0.0.1:0").unwrap()),
            store,
            inputs,
        )
        .unwrap();
        const REQ: &[u8] = b"GET /tor/robots.txt HTTP/1.0\r\n\r\n";
        let header = |a: SocketAddr, chan: Option<&str>| -> Option<String> {
            let out = fetch_tunnelled(a, chan.map(|c| c.parse().unwrap()), REQ);
            let out = String::from_utf8(out).unwrap();
            assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
            assert!(out.ends_with("\r\n\r\nUser-agent: *\r\nDisallow: /\r\n"));
            out.lines()
                .find_map(|l| l.strip_prefix("X-Your-Address-Is: "))
                .map(str::to_owned)
        };
        for a in [
            server.internal_addr().unwrap(),
            server.internal_anonymous_addr().unwrap(),
        ] {
            // A public previous hop is told its address, IPv4 and IPv6 alike.
            assert_eq!(
                header(a, Some("203.0.113.7")).as_deref(),
                Some("203.0.113.7")
            );
            assert_eq!(
                header(a, Some("2001:db8:5::9")).as_deref(),
                Some("2001:db8:5::9")
            );
            // Internal, in our own /24, or unknown: no header.
            for local in ["10.1.2.3", "127.0.0.1", "fe80::1", "198.51.100.77"] {
                assert_eq!(header(a, Some(local)), None, "{local}");
            }
            assert_eq!(header(a, None), None);
        }
        // The preamble may arrive in pieces.
        let mut s = TcpStream::connect(server.internal_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let p = tunnel::encode(Some("203.0.113.9".parse().unwrap()));
        s.write_all(&p[..7]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&p[7..]).unwrap();
        s.write_all(REQ).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("\r\nX-Your-Address-Is: 203.0.113.9\r\n"),
            "{out}"
        );
        // A request without a preamble, or a malformed one, is closed without an answer.
        let bad_before = server.stats.closed_bad.load(Ordering::Relaxed);
        assert!(fetch(server.internal_addr().unwrap(), REQ).is_empty());
        let mut m = tunnel::encode(Some("203.0.113.7".parse().unwrap()));
        m[4] = 5;
        let mut req = m.to_vec();
        req.extend_from_slice(REQ);
        assert!(fetch(server.internal_anonymous_addr().unwrap(), &req).is_empty());
        assert_eq!(
            server.stats.closed_bad.load(Ordering::Relaxed),
            bad_before + 2
        );
        // The DirPort takes no preamble: its TCP peer (loopback here) decides.
        let out = fetch(server.local_addrs()[0], REQ);
        assert!(out.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert!(!String::from_utf8(out)
            .unwrap()
            .contains("X-Your-Address-Is"));
        server.stop();
    }

    #[test]
    fn our_addresses_keep_the_last_of_each_family() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut i = DirServerInputs::default();
        i.set_our_address(ip("198.51.100.1"));
        i.set_our_address(ip("2001:db8:1::1"));
        i.set_our_address(ip("203.0.113.1"));
        let p = ip("198.51.100.4");
        assert_eq!(serve::your_address(Some(p), &i.our_addresses), Some(p));
        let q = ip("203.0.113.77");
        assert_eq!(serve::your_address(Some(q), &i.our_addresses), None);
        let r = ip("2001:db8:1:5::7");
        assert_eq!(serve::your_address(Some(r), &i.our_addresses), None);
    }
}
