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
//!   of head), and an answer [`WRITE_TIMEOUT`] to be taken;
//! * answers queued on all connections together stay under [`MAX_INFLIGHT_BYTES`]: a
//!   request that would pass it gets C tor's `503` (its "global write low" answer).
//!
//! HTTP/1.0: one request per connection, closed after the answer, as C tor.
//! No client address is logged or counted (SafeLogging).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dircache::request::{self, Parsed};
use crate::dircache::serve::{self, Answer, CompressCache, Context, Kind};
use crate::dircache::store::{Document, SharedStore};

pub const MAX_CONNECTIONS: usize = 256;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of answers held for all connections together.
pub const MAX_INFLIGHT_BYTES: usize = 64 << 20;
/// Compressed consensuses and diffs kept (entries, bytes).
const COMPRESS_CACHE_ENTRIES: usize = 16;
const COMPRESS_CACHE_BYTES: usize = 64 << 20;
/// Sleep between passes when nothing happened.
const POLL: Duration = Duration::from_millis(5);

/// Counters of the directory server, for the MetricsPort and tests (no addresses).
#[derive(Debug, Default)]
pub struct DirServerStats {
    /// Requests answered, by [`Kind`] (index in [`Kind::ALL`]).
    pub requests: [AtomicU64; 9],
    /// Answers by status class: 2xx, 3xx, 4xx, 5xx.
    pub status: [AtomicU64; 4],
    pub bytes_written: AtomicU64,
    pub evicted: AtomicU64,
    pub timeouts: AtomicU64,
    /// Requests closed without an answer (oversized, unknown command), as C tor.
    pub closed_bad: AtomicU64,
    pub connections: AtomicU64,
}

/// What the server answers besides the store; shared so a new descriptor or front page is
/// seen by the next request.
#[derive(Default)]
pub struct DirServerInputs {
    pub front_page: Option<Arc<[u8]>>,
    pub own_descriptor: Option<Document>,
}

pub struct DirServer {
    local_addrs: Vec<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<DirServerStats>,
    pub inputs: Arc<RwLock<DirServerInputs>>,
}

impl DirServer {
    /// Binds nothing: takes the DirPort listeners already bound (so a bind error names its
    /// torrc line where the caller binds) and the internal loopback listener BEGIN_DIR
    /// streams connect to, and serves them on a new thread.
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
        let internal_addr = match &internal {
            Some(l) => {
                l.set_nonblocking(true)?;
                Some(l.local_addr()?)
            }
            None => None,
        };
        // The internal listener goes last: connections from it are tunnelled ones.
        let n_public = listeners.len();
        listeners.extend(internal);
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

enum Phase {
    Reading(Vec<u8>),
    /// The answer's chunks, the chunk being written and how much of it went.
    Writing {
        head: Vec<u8>,
        body: Vec<Arc<[u8]>>,
        chunk: usize,
        sent: usize,
        len: usize,
    },
}

struct Conn {
    stream: TcpStream,
    /// The DirPort peer; `None` for a BEGIN_DIR stream (its client is not ours to know).
    peer: Option<IpAddr>,
    accepted: Instant,
    deadline: Instant,
    phase: Phase,
}

impl Conn {
    fn queued(&self) -> usize {
        match &self.phase {
            Phase::Reading(b) => b.len(),
            Phase::Writing { len, .. } => *len,
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
    let mut cache = CompressCache::new(COMPRESS_CACHE_ENTRIES, COMPRESS_CACHE_BYTES);
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut busy = false;
        for (n, l) in listeners.iter().enumerate() {
            let tunnelled = n >= n_public;
            loop {
                match l.accept() {
                    Ok((stream, peer)) => {
                        busy = true;
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        admit(
                            &mut conns,
                            stream,
                            (!tunnelled).then_some(peer.ip()),
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
        let mut i = 0;
        while i < conns.len() {
            let inflight: usize = conns.iter().map(Conn::queued).sum();
            let (keep, moved) = step(
                &mut conns[i],
                now,
                inflight,
                &store,
                &inputs,
                &mut cache,
                &stats,
            );
            busy |= moved;
            if keep {
                i += 1;
            } else {
                conns.swap_remove(i);
            }
        }
        stats
            .connections
            .store(conns.len() as u64, Ordering::Relaxed);
        if !busy {
            std::thread::sleep(POLL);
        }
    }
}

fn admit(
    conns: &mut Vec<Conn>,
    mut stream: TcpStream,
    peer: Option<IpAddr>,
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
        accepted: now,
        deadline: now + REQUEST_TIMEOUT,
        phase: Phase::Reading(Vec::with_capacity(512)),
    });
}

/// C tor sends `X-Your-Address-Is` only to a peer that is not local or private.
fn header_addr(peer: IpAddr) -> Option<IpAddr> {
    let local = match peer {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified()
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    (!local).then_some(peer)
}

#[allow(clippy::too_many_arguments)]
fn step(
    c: &mut Conn,
    now: Instant,
    inflight: usize,
    store: &SharedStore,
    inputs: &RwLock<DirServerInputs>,
    cache: &mut CompressCache,
    stats: &DirServerStats,
) -> (bool, bool) {
    let mut moved = false;
    if let Phase::Reading(buf) = &mut c.phase {
        let mut chunk = [0u8; 4096];
        loop {
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
                    peer_for_header: c.peer.and_then(header_addr),
                    write_allowance: MAX_INFLIGHT_BYTES.saturating_sub(inflight) as u64,
                };
                serve::answer(&ctx, cache, req)
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
        let len = a.head.len() + a.body_len();
        c.phase = Phase::Writing {
            head: a.head,
            body: a.body,
            chunk: 0,
            sent: 0,
            len,
        };
        c.deadline = now + WRITE_TIMEOUT;
    }
    if let Phase::Writing {
        head,
        body,
        chunk,
        sent,
        ..
    } = &mut c.phase
    {
        loop {
            // Chunk 0 is the head, then the body's chunks.
            let data: &[u8] = if *chunk == 0 {
                head
            } else if let Some(b) = body.get(*chunk - 1) {
                b
            } else {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                return (false, true);
            };
            if *sent == data.len() {
                *chunk += 1;
                *sent = 0;
                continue;
            }
            match c.stream.write(&data[*sent..]) {
                Ok(0) => return (false, true),
                Ok(n) => {
                    moved = true;
                    *sent += n;
                    stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (false, true),
            }
        }
        if now >= c.deadline {
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
                own_descriptor: None,
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
        let out =
            String::from_utf8(fetch(internal, b"GET /tor/robots.txt HTTP/1.0\r\n\r\n")).unwrap();
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

    #[test]
    fn header_addr_only_for_public_peers() {
        assert_eq!(header_addr("127.0.0.1".parse().unwrap()), None);
        assert_eq!(header_addr("10.1.2.3".parse().unwrap()), None);
        assert_eq!(header_addr("::1".parse().unwrap()), None);
        let p: IpAddr = "198.51.100.4".parse().unwrap();
        assert_eq!(header_addr(p), Some(p));
    }
}
