//! The blocking network glue for the control-plane thread: HTTP/1.0 over plain TCP to the
//! configured authorities' DirPorts (dir-spec §"Publishing server descriptors", C
//! `directory_post_to_dirservers`). It only ever connects to the addresses it is given, which
//! the caller takes from the `DirAuthority` lines.

// The sans-IO exception in `dir` (docs/architecture.md "Sans-IO rule"): this module is the
// socket and deadline side of the directory client, so it may open sockets and read the clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use thiserror::Error;

use super::http::{self, HttpError, HttpResponse};
use super::upload::{UploadOutcome, UploadRequest};
use crate::config::{OutboundBind, OutboundKind};
use crate::crypto::ids::RsaIdentity;

/// Consensus path, microdesc flavour, uncompressed (no `.z`).
pub const CONSENSUS_MICRODESC_PATH: &str = "/tor/status-vote/current/consensus-microdesc";
/// All authority key certificates the server has.
pub const KEYS_ALL_PATH: &str = "/tor/keys/all";

/// One directory authority's DirPort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEndpoint {
    pub nickname: String,
    pub dir_addr: SocketAddr,
    /// v3 identity (`v3ident=`), the key that signs consensuses.
    pub v3ident: Option<RsaIdentity>,
}

/// Timeouts and limits for one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub connect_timeout: Duration,
    /// Whole exchange, from connect to the server closing.
    pub total_timeout: Duration,
    pub max_body: usize,
    /// `OutboundBindAddress` (C tor binds directory connections with it alone).
    pub outbound: OutboundBind,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(60),
            max_body: super::consensus::MAX_CONSENSUS_SIZE,
            outbound: OutboundBind::default(),
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{addr}: {op}: {source}")]
    Io {
        addr: SocketAddr,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{addr}: timed out after {secs}s")]
    Timeout { addr: SocketAddr, secs: u64 },
    #[error("{addr}: {source}")]
    Http { addr: SocketAddr, source: HttpError },
    #[error("{addr}: HTTP {status} {reason}")]
    Status {
        addr: SocketAddr,
        status: u16,
        reason: String,
    },
    #[error("{addr}: response body is not UTF-8 text")]
    NotText { addr: SocketAddr },
}

/// A TCP connection to `addr` from the `OutboundBindAddress` of its family, if any.
fn connect(addr: SocketAddr, limits: &ClientLimits) -> std::io::Result<TcpStream> {
    let from = limits.outbound.source(OutboundKind::Dir, addr.ip());
    connect_from(addr, from, limits.connect_timeout)
}

/// A blocking TCP connection to `addr`, from source address `from` when given (the kernel
/// picks the port), within `timeout`.
pub fn connect_from(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&addr.into(), timeout)?;
    Ok(s.into())
}

/// Sends `request` to `addr` and reads the whole response (the server closes the connection).
pub fn exchange(
    addr: SocketAddr,
    request: &[u8],
    limits: &ClientLimits,
) -> Result<HttpResponse, ClientError> {
    let io = |op| move |source| ClientError::Io { addr, op, source };
    let deadline = Instant::now() + limits.total_timeout;
    let timeout = || ClientError::Timeout {
        addr,
        secs: limits.total_timeout.as_secs(),
    };
    let mut s = connect(addr, limits).map_err(io("connect"))?;
    let remaining = |deadline: Instant| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    s.set_write_timeout(Some(remaining(deadline).ok_or_else(timeout)?))
        .map_err(io("set timeout"))?;
    s.write_all(request).map_err(io("write"))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let cap = limits.max_body + http::MAX_HEADERS;
    loop {
        let left = remaining(deadline).ok_or_else(timeout)?;
        s.set_read_timeout(Some(left)).map_err(io("set timeout"))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > cap {
                    return Err(ClientError::Http {
                        addr,
                        source: HttpError::TooLarge(limits.max_body),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timeout())
            }
            Err(e) => return Err(io("read")(e)),
        }
    }
    http::parse_response(&buf, limits.max_body).map_err(|source| ClientError::Http { addr, source })
}

/// Posts our descriptor to every authority at once; one result per authority, in order.
pub fn post_descriptor(
    authorities: &[DirEndpoint],
    upload: &UploadRequest,
    limits: &ClientLimits,
) -> Vec<(DirEndpoint, Result<UploadOutcome, ClientError>)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = authorities
            .iter()
            .map(|a| {
                scope.spawn(move || {
                    let req = upload.to_http(&a.dir_addr.to_string());
                    exchange(a.dir_addr, &req, limits).map(|r| UploadOutcome::from_response(&r))
                })
            })
            .collect();
        authorities
            .iter()
            .cloned()
            .zip(handles)
            .map(|(a, h)| {
                let r = h.join().unwrap_or_else(|_| {
                    Err(ClientError::Io {
                        addr: a.dir_addr,
                        op: "upload thread",
                        source: std::io::Error::other("panicked"),
                    })
                });
                (a, r)
            })
            .collect()
    })
}

/// GETs `path` and returns the body as text; non-200 answers are errors.
pub fn fetch_text(
    addr: SocketAddr,
    path: &str,
    limits: &ClientLimits,
) -> Result<String, ClientError> {
    fetch_text_and_hint(addr, path, limits).map(|(t, _)| t)
}

/// [`fetch_text`], plus the server's `X-Your-Address-Is` header when it parses as an IP
/// address (dir-spec §"HTTP headers"; C `dirclient.c` reads it from direct connections to
/// learn our address; an unparsable one is ignored, as in C).
pub fn fetch_text_and_hint(
    addr: SocketAddr,
    path: &str,
    limits: &ClientLimits,
) -> Result<(String, Option<std::net::IpAddr>), ClientError> {
    let resp = exchange(addr, &http::get_request(path, &addr.to_string()), limits)?;
    let hint = resp
        .header("X-Your-Address-Is")
        .and_then(|v| v.parse().ok());
    if resp.status != 200 {
        return Err(ClientError::Status {
            addr,
            status: resp.status,
            reason: resp.reason,
        });
    }
    let body = resp
        .identity_body()
        .map_err(|source| ClientError::Http { addr, source })?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| ClientError::NotText { addr })?;
    Ok((text, hint))
}

/// The current microdesc consensus from one DirPort (verify it before use).
pub fn fetch_consensus(addr: SocketAddr, limits: &ClientLimits) -> Result<String, ClientError> {
    fetch_text(addr, CONSENSUS_MICRODESC_PATH, limits)
}

/// The descriptor a directory holds for `id` (`/tor/server/fp/<HEX>`). Use it to confirm an
/// upload: C authorities answer `200 [None]` both when they stored a descriptor and when they
/// could not parse it at all (parse failures only reach their log).
pub fn fetch_server_descriptor(
    addr: SocketAddr,
    id: &RsaIdentity,
    limits: &ClientLimits,
) -> Result<String, ClientError> {
    fetch_text(addr, &format!("/tor/server/fp/{}", id.to_hex()), limits)
}

/// All authority key certificates from one DirPort.
pub fn fetch_authority_certs(
    addr: SocketAddr,
    limits: &ClientLimits,
) -> Result<String, ClientError> {
    fetch_text(addr, KEYS_ALL_PATH, limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot loopback server that records the request and sends `answer`.
    fn serve_once(answer: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 4096];
            // Read the headers plus Content-Length bytes of body.
            loop {
                let n = c.read(&mut b).unwrap();
                req.extend_from_slice(&b[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_string();
                    let cl = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.parse().unwrap());
                    if req.len() >= end + 4 + cl {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            c.write_all(answer).unwrap();
            req
        });
        (addr, h)
    }

    #[test]
    fn posts_and_reports_per_authority() {
        let (a1, h1) = serve_once(b"HTTP/1.0 200 OK\r\n\r\n");
        let (a2, h2) = serve_once(b"HTTP/1.0 400 Bad signature\r\n\r\n");
        let auths = [
            DirEndpoint {
                nickname: "a1".into(),
                dir_addr: a1,
                v3ident: None,
            },
            DirEndpoint {
                nickname: "a2".into(),
                dir_addr: a2,
                v3ident: None,
            },
        ];
        let up = UploadRequest {
            body: b"router x\n".to_vec(),
            reason: None,
        };
        let res = post_descriptor(&auths, &up, &ClientLimits::default());
        assert!(matches!(res[0].1, Ok(UploadOutcome::Accepted { .. })));
        match &res[1].1 {
            Ok(UploadOutcome::Rejected { status, reason }) => {
                assert_eq!((*status, reason.as_str()), (400, "Bad signature"))
            }
            other => panic!("{other:?}"),
        }
        let req = String::from_utf8(h1.join().unwrap()).unwrap();
        assert!(req.starts_with("POST /tor/ HTTP/1.0\r\n") && req.ends_with("router x\n"));
        h2.join().unwrap();
    }

    #[test]
    fn fetch_errors_are_typed() {
        let (a, h) = serve_once(b"HTTP/1.0 404 Not found\r\n\r\n");
        assert!(matches!(
            fetch_consensus(a, &ClientLimits::default()),
            Err(ClientError::Status { status: 404, .. })
        ));
        h.join().unwrap();
        let (a, h) = serve_once(b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\nx");
        assert!(matches!(
            fetch_authority_certs(a, &ClientLimits::default()),
            Err(ClientError::Http {
                source: HttpError::UnsupportedEncoding(_),
                ..
            })
        ));
        h.join().unwrap();
        // Nothing listening: a connect error, not a panic.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            fetch_consensus(dead, &ClientLimits::default()),
            Err(ClientError::Io { .. })
        ));
    }
}
