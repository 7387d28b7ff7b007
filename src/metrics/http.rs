//! The MetricsPort: a small HTTP/1.0 server that answers `GET /metrics` with the Prometheus
//! text of a [`MetricsRegistry`] (tor-manual "MetricsPort").
//!
//! One thread serves every connection with non-blocking sockets (the control plane: never a
//! shard). Bounds, chosen so that idle or slow connections cannot starve a scraper:
//! * at most [`MAX_CONNECTIONS`] connections; when the table is full, a new connection takes
//!   the place of the **oldest one that has not finished sending its request** (an idle or
//!   slow client), which is closed and counted. Only when every slot is answering a request
//!   does a newcomer get `503`.
//! * each connection has [`REQUEST_TIMEOUT`] to send its request head (at most
//!   [`MAX_REQUEST`] bytes, else `413`), and as long again to take the answer.
//!
//! Peers the `MetricsPortPolicy` rejects are closed without an answer, as C tor does.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::registry::MetricsRegistry;
use crate::config::{Location, PolicyItem};
use crate::exit::policy::{
    parse_policy_item, AddrPattern, ExitPolicy, PolicyAction, PolicyParseError, PolicyRule,
    PortRange,
};

/// Largest request head we read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request, and again to read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections held at the same time (idle ones are evicted first when it is reached).
pub const MAX_CONNECTIONS: usize = 64;
/// Sleep between passes when nothing happened. A scrape waits at most this long to be
/// noticed; the thread costs a few system calls per pass.
const POLL: Duration = Duration::from_millis(10);

/// Who may read the MetricsPort. As in C tor, an empty `MetricsPortPolicy` rejects everyone,
/// port numbers in the items are ignored, and a peer no item matches is rejected.
#[derive(Clone, Debug)]
pub struct MetricsPolicy {
    policy: ExitPolicy,
    empty: bool,
}

/// A `MetricsPortPolicy` item that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{location}: bad MetricsPortPolicy item {item:?}: {error}")]
pub struct MetricsPolicyError {
    pub location: Location,
    pub item: String,
    pub error: PolicyParseError,
}

impl MetricsPolicy {
    pub fn parse(items: &[PolicyItem]) -> Result<MetricsPolicy, MetricsPolicyError> {
        let mut rules = Vec::with_capacity(items.len() + 1);
        for (item, location) in items {
            let rule = parse_policy_item(item).map_err(|error| MetricsPolicyError {
                location: location.clone(),
                item: item.clone(),
                error,
            })?;
            rules.push(PolicyRule::new(rule.action, rule.pattern, PortRange::ALL));
        }
        rules.push(PolicyRule::new(
            PolicyAction::Reject,
            AddrPattern::Any,
            PortRange::ALL,
        ));
        Ok(MetricsPolicy {
            policy: ExitPolicy::from_rules(&rules, true),
            empty: items.is_empty(),
        })
    }

    /// True if no item was configured (so nobody can read the port).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    pub fn permits(&self, peer: IpAddr) -> bool {
        // Port is irrelevant (every rule covers all ports); 1 is any valid port.
        self.policy.allows(peer, 1) == crate::exit::policy::PolicyDecision::Accepted
    }
}

/// A running MetricsPort listener.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and starts the accept thread.
    pub fn start(
        addr: SocketAddr,
        policy: MetricsPolicy,
        registry: Arc<MetricsRegistry>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("fors-metrics".into())
            .spawn({
                let stop = stop.clone();
                move || accept_loop(listener, policy, registry, stop)
            })?;
        Ok(MetricsServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and joins the accept thread (connections being served finish on
    /// their own, bounded by their timeouts).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    policy: MetricsPolicy,
    registry: Arc<MetricsRegistry>,
    stop: Arc<AtomicBool>,
) {
    if let Err(e) = listener.set_nonblocking(true) {
        crate::relay::log::log_warn!("MetricsPort: cannot make the listener non-blocking: {e}");
        return;
    }
    let mut server = Server::new(MAX_CONNECTIONS);
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut busy = false;
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    busy = true;
                    if !policy.permits(peer.ip()) {
                        crate::relay::log::log_info!(
                            "MetricsPort: closing connection from {} (refused by MetricsPortPolicy)",
                            crate::relay::log::relay_addr(peer.ip())
                        );
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    server.admit(stream, now, &registry);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::relay::log::log_warn!("MetricsPort: accept failed: {e}");
                    // EMFILE and friends: do not spin; serve what we hold meanwhile.
                    break;
                }
            }
        }
        busy |= server.pass(now, &registry);
        registry
            .relay
            .metricsport_connections
            .store(server.conns.len() as u64, Ordering::Relaxed);
        if !busy {
            std::thread::sleep(POLL);
        }
    }
}

/// What a connection is doing.
enum Phase {
    /// Reading the request head (`buf`), until `deadline`.
    Reading { buf: Vec<u8> },
    /// Writing `out[sent..]`, until `deadline`.
    Writing { out: Vec<u8>, sent: usize },
}

struct Conn {
    stream: TcpStream,
    /// When it was accepted: the oldest reader is evicted first.
    accepted: Instant,
    deadline: Instant,
    phase: Phase,
}

/// The connection table and its bound (sans the listener: testable with socket pairs).
struct Server {
    conns: Vec<Conn>,
    max: usize,
}

impl Server {
    fn new(max: usize) -> Server {
        Server {
            conns: Vec::with_capacity(max),
            max,
        }
    }

    /// Takes a new connection: evicts the oldest one still reading its request if the table
    /// is full, or answers `503` if every slot is busy answering.
    fn admit(&mut self, stream: TcpStream, now: Instant, registry: &MetricsRegistry) {
        if self.conns.len() >= self.max {
            let oldest_reader = self
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c.phase, Phase::Reading { .. }))
                .min_by_key(|(_, c)| c.accepted)
                .map(|(i, _)| i);
            match oldest_reader {
                Some(i) => {
                    self.conns.swap_remove(i);
                    let n = registry
                        .relay
                        .metricsport_evicted
                        .fetch_add(1, Ordering::Relaxed);
                    // C tor-style rate limit by powers of two: a flood of idle sockets
                    // leaves a trace without flooding the log.
                    if (n + 1).is_power_of_two() {
                        crate::relay::log::log_notice!(
                            "MetricsPort: connection table full ({} connections); closed the \
                             oldest one that had not sent its request ({} so far).",
                            self.max,
                            n + 1
                        );
                    }
                }
                None => {
                    registry
                        .relay
                        .metricsport_refused
                        .fetch_add(1, Ordering::Relaxed);
                    let mut stream = stream;
                    let _ = stream.write(&response(503, "Service Unavailable", b"busy\n"));
                    return;
                }
            }
        }
        self.conns.push(Conn {
            stream,
            accepted: now,
            deadline: now + REQUEST_TIMEOUT,
            phase: Phase::Reading {
                buf: Vec::with_capacity(512),
            },
        });
    }

    /// Reads, answers and writes what each connection allows without blocking; drops the
    /// finished, failed and timed-out ones. Whether anything moved.
    fn pass(&mut self, now: Instant, registry: &MetricsRegistry) -> bool {
        let mut busy = false;
        let mut i = 0;
        while i < self.conns.len() {
            let (keep, moved) = step(&mut self.conns[i], now, registry);
            busy |= moved;
            if keep {
                i += 1;
            } else {
                self.conns.swap_remove(i);
            }
        }
        busy
    }
}

/// Advances one connection; (keep it, did anything move).
fn step(c: &mut Conn, now: Instant, registry: &MetricsRegistry) -> (bool, bool) {
    let mut moved = false;
    if let Phase::Reading { buf } = &mut c.phase {
        let mut chunk = [0u8; 1024];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => return (false, true),
                Ok(n) => {
                    moved = true;
                    buf.extend_from_slice(&chunk[..n]);
                    if head_complete(buf) || buf.len() > MAX_REQUEST {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (false, true),
            }
        }
        let reply = if buf.len() > MAX_REQUEST {
            Some(response(413, "Request Entity Too Large", b""))
        } else if head_complete(buf) {
            Some(match parse_request(buf) {
                Request::Metrics => response(200, "OK", registry.render(now).as_bytes()),
                Request::NotFound => response(404, "Not Found", b"not found\n"),
                Request::MethodNotAllowed => response(405, "Method Not Allowed", b""),
                Request::Bad => response(400, "Bad Request", b""),
            })
        } else {
            None
        };
        match reply {
            Some(out) => {
                c.phase = Phase::Writing { out, sent: 0 };
                c.deadline = now + REQUEST_TIMEOUT;
            }
            None if now >= c.deadline => {
                registry
                    .relay
                    .metricsport_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return (false, moved);
            }
            None => return (true, moved),
        }
    }
    if let Phase::Writing { out, sent } = &mut c.phase {
        while *sent < out.len() {
            match c.stream.write(&out[*sent..]) {
                Ok(0) => return (false, true),
                Ok(n) => {
                    moved = true;
                    *sent += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (false, true),
            }
        }
        if *sent == out.len() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            return (false, true);
        }
        if now >= c.deadline {
            registry
                .relay
                .metricsport_timeouts
                .fetch_add(1, Ordering::Relaxed);
            return (false, moved);
        }
    }
    (true, moved)
}

fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// Parses a request head (`GET /metrics HTTP/1.0` plus headers, which are ignored).
pub fn parse_request(head: &[u8]) -> Request {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    // The query string is ignored.
    match target.split('?').next() {
        Some("/metrics") => Request::Metrics,
        _ => Request::NotFound,
    }
}

fn response(code: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.0 {code} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &[&str]) -> Vec<PolicyItem> {
        list.iter()
            .map(|s| (s.to_string(), Location::new("torrc", 7)))
            .collect()
    }

    #[test]
    fn policy_semantics() {
        let empty = MetricsPolicy::parse(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(!empty.permits("127.0.0.1".parse().unwrap()));
        let p = MetricsPolicy::parse(&items(&["accept 127.0.0.1:9999", "accept [::1]"])).unwrap();
        assert!(p.permits("127.0.0.1".parse().unwrap()));
        assert!(p.permits("::1".parse().unwrap()));
        assert!(!p.permits("127.0.0.2".parse().unwrap()));
        let p = MetricsPolicy::parse(&items(&["reject 10.0.0.1", "accept 10.0.0.0/8"])).unwrap();
        assert!(!p.permits("10.0.0.1".parse().unwrap()));
        assert!(p.permits("10.9.9.9".parse().unwrap()));
        let e = MetricsPolicy::parse(&items(&["allow 1.2.3.4"])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("torrc:7: bad MetricsPortPolicy item"),
            "{e}"
        );
    }

    #[test]
    fn request_parsing() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.0\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse_request(b"GET / HTTP/1.0\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.0\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse_request(b"\xff\xfe\r\n\r\n"), Request::Bad);
    }

    fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn idle_connections_do_not_starve_a_scrape() {
        let reg = Arc::new(MetricsRegistry::new(1, Instant::now()));
        let policy = MetricsPolicy::parse(&items(&["accept 127.0.0.1"])).unwrap();
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), policy, reg.clone()).unwrap();
        let addr = server.local_addr();
        // Far more idle sockets than slots, all from the scraper's own address.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 36)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..5 {
            let r = get(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
            assert!(
                r.starts_with("HTTP/1.0 200 OK\r\n"),
                "{}",
                &r[..r.len().min(80)]
            );
        }
        let evicted = reg.relay.metricsport_evicted.load(Ordering::Relaxed);
        assert!(evicted >= 36, "evicted {evicted}");
        assert_eq!(reg.relay.metricsport_refused.load(Ordering::Relaxed), 0);
        drop(idle);
        server.stop();
    }

    /// A pair of connected loopback sockets (ours, the peer's).
    fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (s, c)
    }

    #[test]
    fn busy_slots_answer_503_and_slow_ones_time_out() {
        let reg = MetricsRegistry::new(1, Instant::now());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let mut server = Server::new(2);
        // Two connections in the middle of an answer: neither may be evicted.
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (s, c) = pair(&l);
            peers.push(c);
            server.conns.push(Conn {
                stream: s,
                accepted: t0,
                deadline: t0 + REQUEST_TIMEOUT,
                phase: Phase::Writing {
                    out: vec![b'x'; 16],
                    sent: 8,
                },
            });
        }
        let (s, mut c) = pair(&l);
        server.admit(s, t0, &reg);
        assert_eq!(server.conns.len(), 2);
        assert_eq!(reg.relay.metricsport_refused.load(Ordering::Relaxed), 1);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.0 503"), "{out}");
        // A reader that sends half a request and stalls is closed at its deadline, counted.
        let mut server = Server::new(4);
        let (s, mut c) = pair(&l);
        c.write_all(b"GET /metr").unwrap();
        server.admit(s, t0, &reg);
        std::thread::sleep(Duration::from_millis(50));
        server.pass(t0 + Duration::from_secs(1), &reg);
        assert_eq!(server.conns.len(), 1, "still within its deadline");
        server.pass(t0 + REQUEST_TIMEOUT, &reg);
        assert_eq!(server.conns.len(), 0);
        assert_eq!(reg.relay.metricsport_timeouts.load(Ordering::Relaxed), 1);
        // A full table of readers: the oldest makes room.
        let mut server = Server::new(2);
        let (s1, _c1) = pair(&l);
        let (s2, _c2) = pair(&l);
        let (s3, _c3) = pair(&l);
        server.admit(s1, t0, &reg);
        server.admit(s2, t0 + Duration::from_millis(1), &reg);
        let second = server.conns[1].stream.local_addr().unwrap();
        server.admit(s3, t0 + Duration::from_millis(2), &reg);
        assert_eq!(server.conns.len(), 2);
        assert_eq!(reg.relay.metricsport_evicted.load(Ordering::Relaxed), 1);
        assert!(server
            .conns
            .iter()
            .any(|c| c.stream.local_addr().unwrap() == second && c.accepted > t0));
    }

    #[test]
    fn serves_metrics_over_loopback() {
        let reg = Arc::new(MetricsRegistry::new(2, Instant::now()));
        let policy = MetricsPolicy::parse(&items(&["accept 127.0.0.1"])).unwrap();
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), policy, reg).unwrap();
        let addr = server.local_addr();
        let r = get(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
        assert!(r.contains("fors_shard_accepted{shard=\"1\"} 0\n"));
        let r = get(addr, b"GET /nope HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 404"), "{r}");
        let big = vec![b'a'; MAX_REQUEST + 2048];
        let r = get(addr, &big);
        assert!(r.is_empty() || r.starts_with("HTTP/1.0 413"), "{r}");
        server.stop();
        // Refused by policy: closed without an answer.
        let reg = Arc::new(MetricsRegistry::new(1, Instant::now()));
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            MetricsPolicy::parse(&[]).unwrap(),
            reg,
        )
        .unwrap();
        assert_eq!(
            get(server.local_addr(), b"GET /metrics HTTP/1.0\r\n\r\n"),
            ""
        );
    }
}
