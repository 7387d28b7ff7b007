//! A SOCKS5 client (RFC 1928; username/password authentication, RFC 1929) for driving a C tor
//! client's SocksPort: CONNECT to a hostname or IP literal, and Tor's RESOLVE extension
//! (torspec socks-extensions §"Name lookup"). Every read and write is bounded by the
//! timeout given; every failure is a [`SocksError`].
//!
//! A username/password pair is what Tor uses for stream isolation (`IsolateSOCKSAuth`, on by
//! default): streams with different credentials never share a circuit.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// A SOCKS5 reply code (RFC 1928 §6), as C tor maps its END reasons onto them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocksReply {
    /// X'01' general SOCKS server failure (Tor: END MISC, or a circuit that failed).
    GeneralFailure,
    /// X'02' connection not allowed by ruleset (Tor: END EXITPOLICY).
    NotAllowed,
    /// X'03' network unreachable.
    NetworkUnreachable,
    /// X'04' host unreachable (Tor: END RESOLVEFAILED, NOROUTE).
    HostUnreachable,
    /// X'05' connection refused (Tor: END CONNECTREFUSED).
    ConnectionRefused,
    /// X'06' TTL expired (Tor: END TIMEOUT).
    TtlExpired,
    /// X'07' command not supported.
    CommandNotSupported,
    /// X'08' address type not supported.
    AddressTypeNotSupported,
    /// Tor's X'F0'..X'F7' onion-service codes and anything else.
    Other(u8),
}

impl SocksReply {
    pub fn from_code(code: u8) -> SocksReply {
        match code {
            1 => SocksReply::GeneralFailure,
            2 => SocksReply::NotAllowed,
            3 => SocksReply::NetworkUnreachable,
            4 => SocksReply::HostUnreachable,
            5 => SocksReply::ConnectionRefused,
            6 => SocksReply::TtlExpired,
            7 => SocksReply::CommandNotSupported,
            8 => SocksReply::AddressTypeNotSupported,
            c => SocksReply::Other(c),
        }
    }

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            SocksReply::GeneralFailure => 1,
            SocksReply::NotAllowed => 2,
            SocksReply::NetworkUnreachable => 3,
            SocksReply::HostUnreachable => 4,
            SocksReply::ConnectionRefused => 5,
            SocksReply::TtlExpired => 6,
            SocksReply::CommandNotSupported => 7,
            SocksReply::AddressTypeNotSupported => 8,
            SocksReply::Other(c) => c,
        }
    }
}

/// Why a SOCKS request did not give a stream (or an address).
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// The SocksPort could not be reached.
    #[error("cannot connect to the SocksPort {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Reading or writing failed, or no answer came within the timeout.
    #[error("SOCKS {step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    /// The server broke the protocol (wrong version, method, address type).
    #[error("SOCKS protocol: {0}")]
    Protocol(String),
    /// The server answered with a failure code.
    #[error("SOCKS reply {0:?} ({code})", code = .0.code())]
    Reply(SocksReply),
}

impl SocksError {
    /// The reply code, when the server answered with one.
    pub fn reply(&self) -> Option<SocksReply> {
        match self {
            SocksError::Reply(r) => Some(*r),
            _ => None,
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A hostname, resolved by the exit (ATYP 3).
    Host(&'a str),
    Ip(IpAddr),
}

impl<'a> Target<'a> {
    /// An IP literal as an address, anything else as a hostname.
    pub fn parse(host: &'a str) -> Target<'a> {
        match host.parse::<IpAddr>() {
            Ok(ip) => Target::Ip(ip),
            Err(_) => Target::Host(host),
        }
    }
}

/// A SOCKS5 client of the SocksPort at `server`.
#[derive(Debug, Clone)]
pub struct Socks5 {
    pub server: SocketAddr,
    /// Bounds connecting, each read and each write.
    pub timeout: Duration,
    /// Username/password (RFC 1929), for stream isolation.
    pub auth: Option<(String, String)>,
}

/// SOCKS5 commands (RFC 1928 §4) and Tor's RESOLVE (socks-extensions §"Name lookup").
const CMD_CONNECT: u8 = 1;
const CMD_RESOLVE: u8 = 0xF0;

impl Socks5 {
    /// A client of `127.0.0.1:port` without authentication.
    pub fn local(port: u16, timeout: Duration) -> Socks5 {
        Socks5 {
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            timeout,
            auth: None,
        }
    }

    /// The same client authenticating as `user` (any password): Tor puts streams of
    /// different users on different circuits.
    pub fn isolated(mut self, user: &str) -> Socks5 {
        self.auth = Some((user.to_string(), "x".to_string()));
        self
    }

    /// CONNECT to `host:port` (`host` an IP literal or a hostname); the open stream.
    pub fn connect(&self, host: &str, port: u16) -> Result<TcpStream, SocksError> {
        let mut s = self.open()?;
        request(&mut s, CMD_CONNECT, Target::parse(host), port)?;
        Ok(s)
    }

    /// RESOLVE `host` through Tor (a hostname to an address); the address.
    pub fn resolve(&self, host: &str) -> Result<IpAddr, SocksError> {
        let mut s = self.open()?;
        match request(&mut s, CMD_RESOLVE, Target::Host(host), 0)? {
            Some(ip) => Ok(ip),
            None => Err(SocksError::Protocol(
                "RESOLVE answered with a hostname".into(),
            )),
        }
    }

    /// TCP connection and method negotiation (and authentication).
    fn open(&self) -> Result<TcpStream, SocksError> {
        let mut s = TcpStream::connect_timeout(&self.server, self.timeout).map_err(|source| {
            SocksError::Connect {
                addr: self.server,
                source,
            }
        })?;
        let io = |step| move |source| SocksError::Io { step, source };
        s.set_read_timeout(Some(self.timeout))
            .map_err(io("set timeout"))?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(io("set timeout"))?;
        // Version 5, one method: 0 (none) or 2 (username/password).
        let method = if self.auth.is_some() { 2 } else { 0 };
        s.write_all(&[5, 1, method]).map_err(io("greeting"))?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).map_err(io("method reply"))?;
        if choice != [5, method] {
            return Err(SocksError::Protocol(format!(
                "method selection {choice:?}, asked for {method}"
            )));
        }
        if let Some((user, pass)) = &self.auth {
            if user.len() > 255 || pass.len() > 255 {
                return Err(SocksError::Protocol("credentials over 255 bytes".into()));
            }
            // RFC 1929 §2: VER 1, ULEN, UNAME, PLEN, PASSWD.
            let mut m = vec![1, user.len() as u8];
            m.extend_from_slice(user.as_bytes());
            m.push(pass.len() as u8);
            m.extend_from_slice(pass.as_bytes());
            s.write_all(&m).map_err(io("authentication"))?;
            let mut st = [0u8; 2];
            s.read_exact(&mut st).map_err(io("authentication reply"))?;
            if st != [1, 0] {
                return Err(SocksError::Protocol(format!(
                    "authentication refused {st:?}"
                )));
            }
        }
        Ok(s)
    }
}

/// Sends one request and reads its reply; the bound address if it is an IP.
fn request(
    s: &mut TcpStream,
    cmd: u8,
    target: Target<'_>,
    port: u16,
) -> Result<Option<IpAddr>, SocksError> {
    let io = |step| move |source| SocksError::Io { step, source };
    let mut req = vec![5, cmd, 0];
    match target {
        Target::Ip(IpAddr::V4(ip)) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        Target::Ip(IpAddr::V6(ip)) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
        Target::Host(h) => {
            let len = u8::try_from(h.len())
                .map_err(|_| SocksError::Protocol(format!("hostname of {} bytes", h.len())))?;
            req.extend_from_slice(&[3, len]);
            req.extend_from_slice(h.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).map_err(io("request"))?;
    // VER REP RSV ATYP, then BND.ADDR and BND.PORT.
    let mut head = [0u8; 4];
    s.read_exact(&mut head).map_err(io("reply"))?;
    if head[0] != 5 {
        return Err(SocksError::Protocol(format!("reply version {}", head[0])));
    }
    let bound = match head[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).map_err(io("reply address"))?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).map_err(io("reply address"))?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n).map_err(io("reply address"))?;
            let mut name = vec![0u8; n[0] as usize];
            s.read_exact(&mut name).map_err(io("reply address"))?;
            None
        }
        t => return Err(SocksError::Protocol(format!("reply address type {t}"))),
    };
    let mut bport = [0u8; 2];
    s.read_exact(&mut bport).map_err(io("reply port"))?;
    if head[1] != 0 {
        return Err(SocksError::Reply(SocksReply::from_code(head[1])));
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection SOCKS server: for each exchange, reads exactly the bytes expected
    /// (checking them) and writes the answer.
    fn server(exchanges: Vec<(Vec<u8>, Vec<u8>)>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for (expect, reply) in exchanges {
                let mut got = vec![0u8; expect.len()];
                s.read_exact(&mut got).unwrap();
                assert_eq!(got, expect);
                s.write_all(&reply).unwrap();
            }
            let mut rest = [0u8; 16];
            let _ = s.read(&mut rest);
        });
        port
    }

    #[test]
    fn connect_hostname_succeeds() {
        let mut req = vec![5, 1, 0, 3, 8];
        req.extend_from_slice(b"web.test");
        req.extend_from_slice(&80u16.to_be_bytes());
        let port = server(vec![
            (vec![5, 1, 0], vec![5, 0]),
            (req, vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80]),
        ]);
        Socks5::local(port, Duration::from_secs(5))
            .connect("web.test", 80)
            .unwrap();
    }

    #[test]
    fn failure_code_is_typed() {
        let port = server(vec![
            (vec![5, 1, 0], vec![5, 0]),
            (
                vec![5, 1, 0, 1, 127, 0, 0, 2, 0, 81],
                vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0],
            ),
        ]);
        let e = Socks5::local(port, Duration::from_secs(5))
            .connect("127.0.0.2", 81)
            .unwrap_err();
        assert_eq!(e.reply(), Some(SocksReply::HostUnreachable), "{e}");
    }

    #[test]
    fn isolation_authenticates_and_resolve_returns_the_address() {
        let mut req = vec![5, 0xF0, 0, 3, 4];
        req.extend_from_slice(b"a.bc");
        req.extend_from_slice(&[0, 0]);
        let port = server(vec![
            (vec![5, 1, 2], vec![5, 2]),
            (vec![1, 2, b'u', b'1', 1, b'x'], vec![1, 0]),
            (req, vec![5, 0, 0, 1, 10, 1, 2, 3, 0, 0]),
        ]);
        let ip = Socks5::local(port, Duration::from_secs(5))
            .isolated("u1")
            .resolve("a.bc")
            .unwrap();
        assert_eq!(ip, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn silence_is_a_timeout_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = Socks5::local(port, Duration::from_millis(200))
            .connect("x.test", 1)
            .unwrap_err();
        assert!(matches!(e, SocksError::Io { .. }), "{e}");
        drop(l);
    }
}
