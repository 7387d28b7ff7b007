//! The MetricsPort: a small blocking HTTP/1.0 server that answers `GET /metrics` with the
//! Prometheus text of a [`MetricsRegistry`] (tor-manual "MetricsPort").
//!
//! Bounds: requests larger than [`MAX_REQUEST`] bytes are refused, each connection has
//! [`REQUEST_TIMEOUT`] to send its request and as long to take the answer, and at most
//! [`MAX_CONNECTIONS`] are served at once (more get `503` and are closed). Peers the
//! `MetricsPortPolicy` rejects are closed without an answer, as C tor does.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 4;

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
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                crate::relay::log::log_warn!("MetricsPort: accept failed: {e}");
                // EMFILE and friends: do not spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if !policy.permits(peer.ip()) {
            crate::relay::log::log_info!(
                "MetricsPort: closing connection from {} (refused by MetricsPortPolicy)",
                crate::relay::log::relay_addr(peer.ip())
            );
            continue;
        }
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = stream.write_all(&response(503, "Service Unavailable", b"busy\n"));
            continue;
        }
        let registry = registry.clone();
        let guard = ActiveGuard(active.clone());
        let spawned = std::thread::Builder::new()
            .name("fors-metrics-conn".into())
            .spawn(move || {
                let _guard = guard;
                serve(stream, &registry);
            });
        if let Err(e) = spawned {
            crate::relay::log::log_warn!("MetricsPort: cannot start a connection thread: {e}");
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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

/// Reads the request head within the time and size bounds; `None` if the client was too
/// slow, too large or went away.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(buf);
        }
        if buf.len() > MAX_REQUEST {
            let _ = stream.write_all(&response(413, "Request Entity Too Large", b""));
            return None;
        }
    }
}

fn serve(mut stream: TcpStream, registry: &MetricsRegistry) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let reply = match parse_request(&head) {
        Request::Metrics => response(200, "OK", registry.render(Instant::now()).as_bytes()),
        Request::NotFound => response(404, "Not Found", b"not found\n"),
        Request::MethodNotAllowed => response(405, "Method Not Allowed", b""),
        Request::Bad => response(400, "Bad Request", b""),
    };
    let _ = stream.write_all(&reply);
    let _ = stream.shutdown(std::net::Shutdown::Both);
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
    fn connection_bound_answers_503() {
        let reg = Arc::new(MetricsRegistry::new(1, Instant::now()));
        let policy = MetricsPolicy::parse(&items(&["accept 127.0.0.1"])).unwrap();
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), policy, reg).unwrap();
        let addr = server.local_addr();
        // MAX_CONNECTIONS clients that never send a request occupy every slot...
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // ...until the server has accepted them all; then the next one is turned away.
        let end = Instant::now() + Duration::from_secs(5);
        let busy = loop {
            let r = get(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
            if r.starts_with("HTTP/1.0 503") || Instant::now() > end {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(busy.starts_with("HTTP/1.0 503"), "{busy}");
        drop(idle);
        // Slots free up once those connections end.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let r = get(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
            if r.starts_with("HTTP/1.0 200") {
                break;
            }
            assert!(Instant::now() < end, "never recovered: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
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
