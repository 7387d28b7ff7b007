//! The built-in sink/source server and its wire protocol.
//!
//! Protocol, on the TCP stream the exit opens for us:
//! * `GET <bytes> <seed>\n` → the server sends exactly `<bytes>` bytes of
//!   [`pattern`](crate::pattern) for `<seed>`, then closes.
//! * `PUT <bytes> <seed>\n` followed by `<bytes>` bytes → the server verifies them against the
//!   pattern and answers `OK <bytes>\n` or `BAD <offset>\n` (first wrong byte), then closes.
//!
//! The server uses plain threads (one per connection, bounded): it is not what is measured,
//! but it shares the load generator's process, so each connection thread adds its CPU time
//! to [`SinkServer::cpu_seconds`] when it ends (reported as `sink_cpu_s`). It only binds
//! loopback addresses, unless the operator named another with `--allow-remote` (a rack).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cli::{check_reach, Reach, MAX_SIZE};
use crate::pattern;

/// Longest request line accepted.
pub const MAX_REQUEST_LEN: usize = 64;
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 4096;
/// A peer silent for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// A transfer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Get { bytes: u64, seed: u64 },
    Put { bytes: u64, seed: u64 },
}

/// Why a request line or reply could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("request line longer than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    #[error("malformed line {0:?}")]
    Malformed(String),
}

impl Request {
    /// The request line, newline included.
    pub fn encode(&self) -> String {
        match self {
            Request::Get { bytes, seed } => format!("GET {bytes} {seed}\n"),
            Request::Put { bytes, seed } => format!("PUT {bytes} {seed}\n"),
        }
    }

    /// Parses a request line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, ProtoError> {
        let bad = || ProtoError::Malformed(String::from_utf8_lossy(line).into_owned());
        let s = std::str::from_utf8(line).map_err(|_| bad())?;
        let mut f = s.split(' ');
        let (verb, n, seed) = (f.next(), f.next(), f.next());
        if f.next().is_some() {
            return Err(bad());
        }
        let bytes: u64 = n
            .and_then(|n| n.parse().ok())
            .filter(|&n| n <= MAX_SIZE)
            .ok_or_else(bad)?;
        let seed: u64 = seed.and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        match verb {
            Some("GET") => Ok(Request::Get { bytes, seed }),
            Some("PUT") => Ok(Request::Put { bytes, seed }),
            _ => Err(bad()),
        }
    }
}

/// The server's answer to a PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutReply {
    Ok { bytes: u64 },
    Bad { offset: u64 },
}

impl PutReply {
    pub fn encode(&self) -> String {
        match self {
            PutReply::Ok { bytes } => format!("OK {bytes}\n"),
            PutReply::Bad { offset } => format!("BAD {offset}\n"),
        }
    }

    /// Parses a reply line (without its newline).
    pub fn parse(line: &[u8]) -> Result<PutReply, ProtoError> {
        let bad = || ProtoError::Malformed(String::from_utf8_lossy(line).into_owned());
        let s = std::str::from_utf8(line).map_err(|_| bad())?;
        let (verb, n) = s.split_once(' ').ok_or_else(bad)?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        match verb {
            "OK" => Ok(PutReply::Ok { bytes: n }),
            "BAD" => Ok(PutReply::Bad { offset: n }),
            _ => Err(bad()),
        }
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_REQUEST_LEN`] bytes, one byte at a time so
/// nothing after it is consumed.
fn read_line(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(MAX_REQUEST_LEN);
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_REQUEST_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ProtoError::TooLong,
            ));
        }
        line.push(b[0]);
    }
}

/// Serves one connection.
pub fn serve_one(mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let _ = s.set_nodelay(true);
    let line = read_line(&mut s)?;
    let req = Request::parse(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut buf = vec![0u8; 64 * 1024];
    match req {
        Request::Get { bytes, seed } => {
            let mut off = 0u64;
            while off < bytes {
                let n = (bytes - off).min(buf.len() as u64) as usize;
                pattern::fill(seed, off, &mut buf[..n]);
                s.write_all(&buf[..n])?;
                off += n as u64;
            }
        }
        Request::Put { bytes, seed } => {
            let mut v = pattern::Verifier::new(seed, bytes);
            while v.verified() < bytes {
                let want = (bytes - v.verified()).min(buf.len() as u64) as usize;
                let n = s.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if v.feed(&buf[..n]).is_err() {
                    break;
                }
            }
            let reply = match v.error() {
                Some(pattern::IntegrityError::Mismatch { offset }) => PutReply::Bad { offset },
                Some(pattern::IntegrityError::TooLong { expected, .. }) => {
                    PutReply::Bad { offset: expected }
                }
                None => PutReply::Ok { bytes },
            };
            s.write_all(reply.encode().as_bytes())?;
        }
    }
    s.flush()?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// A running built-in server; stops (and joins its accept thread) on drop.
pub struct SinkServer {
    addr: SocketAddr,
    /// CPU of finished connection threads, in µs.
    cpu_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SinkServer {
    /// Binds `addr` (port 0 picks one) and starts serving. `addr` must be loopback unless
    /// `reach` is [`Reach::Named`], and is never a wildcard: the exit is told this address.
    pub fn start(addr: SocketAddr, reach: Reach) -> io::Result<SinkServer> {
        check_reach("--sink-listen", &addr, reach)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let cpu_us = Arc::new(AtomicU64::new(0));
        let cpu_us2 = cpu_us.clone();
        let stop2 = stop.clone();
        let accept = std::thread::Builder::new()
            .name("sink-accept".into())
            .spawn(move || {
                // Polls every 20 ms so a stop request is seen promptly; the loop ends with it.
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS
                                || s.set_nonblocking(false).is_err()
                            {
                                continue;
                            }
                            live.fetch_add(1, Ordering::Relaxed);
                            let live = live.clone();
                            let cpu_us = cpu_us2.clone();
                            let spawned = std::thread::Builder::new()
                                .name("sink-conn".into())
                                .spawn(move || {
                                    let _ = serve_one(s);
                                    let cpu = crate::stats::thread_cpu_seconds();
                                    cpu_us.fetch_add((cpu * 1e6) as u64, Ordering::Relaxed);
                                    live.fetch_sub(1, Ordering::Relaxed);
                                });
                            if spawned.is_err() {
                                // The closure (and its decrement) was dropped unrun.
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(SinkServer {
            addr,
            cpu_us,
            stop,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// CPU time of the connections served so far (counted as each one ends).
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_round_trip_and_reject_garbage() {
        for r in [
            Request::Get { bytes: 5, seed: 9 },
            Request::Put {
                bytes: 1 << 30,
                seed: u64::MAX,
            },
        ] {
            let line = r.encode();
            assert_eq!(Request::parse(line.trim_end().as_bytes()), Ok(r));
        }
        for bad in [
            "GET 5",
            "GET x 1",
            "POST 1 1",
            "GET 1 1 1",
            "",
            "GET 99999999999999 1",
        ] {
            assert!(Request::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        for r in [PutReply::Ok { bytes: 3 }, PutReply::Bad { offset: 77 }] {
            assert_eq!(PutReply::parse(r.encode().trim_end().as_bytes()), Ok(r));
        }
        assert!(PutReply::parse(b"OK").is_err());
    }

    #[test]
    fn refuses_non_loopback_bind() {
        assert!(SinkServer::start("10.200.0.2:0".parse().unwrap(), Reach::Loopback).is_err());
        // Even with --allow-remote: the exit is told this address, so it must be one host.
        assert!(SinkServer::start("0.0.0.0:0".parse().unwrap(), Reach::Named).is_err());
    }

    #[test]
    fn serves_pattern_and_verifies_uploads() {
        let srv = SinkServer::start("127.0.0.1:0".parse().unwrap(), Reach::Loopback).unwrap();
        // GET
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        c.write_all(
            Request::Get {
                bytes: 100_000,
                seed: 4,
            }
            .encode()
            .as_bytes(),
        )
        .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let mut v = pattern::Verifier::new(4, 100_000);
        v.feed(&got).unwrap();
        assert!(v.is_complete());
        // PUT, intact and with one flipped byte.
        for flip in [None, Some(12_345usize)] {
            let mut data = vec![0u8; 50_000];
            pattern::fill(8, 0, &mut data);
            if let Some(i) = flip {
                data[i] ^= 1;
            }
            let mut c = TcpStream::connect(srv.addr()).unwrap();
            c.write_all(
                Request::Put {
                    bytes: 50_000,
                    seed: 8,
                }
                .encode()
                .as_bytes(),
            )
            .unwrap();
            c.write_all(&data).unwrap();
            let mut reply = Vec::new();
            c.read_to_end(&mut reply).unwrap();
            let want = match flip {
                None => PutReply::Ok { bytes: 50_000 },
                Some(i) => PutReply::Bad { offset: i as u64 },
            };
            assert_eq!(PutReply::parse(reply.trim_ascii_end()), Ok(want));
        }
    }
}
