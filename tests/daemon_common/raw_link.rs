//! A hand-driven Tor link to a live ORPort: real TLS (rustls, the relay's self-signed
//! certificate accepted like any Tor client does), then whatever bytes the test writes —
//! well-formed cells, malformed cells, half cells — and a reader that reports each cell the
//! relay sends back, or how and when the connection ended. Every read is bounded in time.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fors::cell::chan::{Netinfo, NetinfoAddr};
use fors::cell::link::encode_versions_cell;
use fors::cell::{Cell, ChanCmd, CircId, Framer, CELL_BODY_LEN};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// What a bounded read of the link produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRead {
    /// One cell from the relay (a fixed cell's body is all 509 bytes).
    Cell {
        circ_id: CircId,
        cmd: ChanCmd,
        body: Vec<u8>,
    },
    /// The relay ended the connection (TLS close_notify, alert, TCP FIN or RST): how.
    Closed(String),
    /// Nothing arrived within the time given.
    TimedOut,
}

/// A client-side Tor link over TLS whose every byte the test chooses.
pub struct RawLink {
    tls: StreamOwned<ClientConnection, TcpStream>,
    /// Decrypted bytes from the relay not yet framed.
    plain: Vec<u8>,
    /// Framing of the relay's bytes: unnegotiated until its VERSIONS is read.
    pub framer: Framer,
}

/// A TCP connection to `addr` from the local address `from` (any 127.x address works on
/// loopback), bounded by `limit`.
pub fn connect_tcp_from(
    from: IpAddr,
    addr: SocketAddr,
    limit: Duration,
) -> Result<TcpStream, String> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    sock.bind(&SocketAddr::new(from, 0).into())
        .map_err(|e| format!("bind {from}: {e}"))?;
    sock.connect_timeout(&addr.into(), limit)
        .map_err(|e| format!("connect: {e}"))?;
    Ok(sock.into())
}

impl RawLink {
    /// TCP connect and a complete TLS handshake (bounded by `limit`).
    pub fn connect(addr: SocketAddr, limit: Duration) -> Result<RawLink, String> {
        let tcp = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
        RawLink::over_tcp(tcp, limit)
    }

    /// A complete TLS handshake over a connected socket (bounded by `limit`).
    pub fn over_tcp(tcp: TcpStream, limit: Duration) -> Result<RawLink, String> {
        tcp.set_write_timeout(Some(limit)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        let provider = fors::proto::channel::tls::provider();
        let cfg = fors::proto::channel::tls::client_config(provider).unwrap();
        let name = ServerName::try_from("www.example.com").unwrap();
        let conn = ClientConnection::new(cfg, name).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        let end = Instant::now() + limit;
        while tls.conn.is_handshaking() {
            if Instant::now() > end {
                return Err("TLS handshake timed out".into());
            }
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(format!("TLS handshake: {e}")),
            }
        }
        Ok(RawLink {
            tls,
            plain: Vec::new(),
            framer: Framer::unnegotiated(),
        })
    }

    /// An open link as a Tor client would make it (tor-spec §"Negotiating versions", no
    /// AUTHENTICATE): VERSIONS 4,5; the relay's VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO;
    /// our NETINFO. The link protocol is then 5 (4-byte circuit IDs).
    pub fn open_as_client(addr: SocketAddr, limit: Duration) -> Result<RawLink, String> {
        RawLink::connect(addr, limit)?.client_handshake(addr.ip(), limit)
    }

    /// The client side of the link handshake (see `open_as_client`) over a TLS link to
    /// the relay at `relay_ip`.
    pub fn client_handshake(self, relay_ip: IpAddr, limit: Duration) -> Result<RawLink, String> {
        let mut link = self;
        link.send(&versions_cell(&[4, 5]));
        let mut seen = Vec::new();
        let end = Instant::now() + limit;
        while !seen.contains(&ChanCmd::NETINFO) {
            let left = end.saturating_duration_since(Instant::now());
            match link.read_cell(left) {
                LinkRead::Cell { cmd, body, .. } => {
                    if cmd == ChanCmd::VERSIONS {
                        let offered: Vec<u16> = body
                            .chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        if !offered.contains(&5) {
                            return Err(format!("relay offers link versions {offered:?}"));
                        }
                        link.framer = Framer::negotiated(5).unwrap();
                    }
                    seen.push(cmd);
                }
                other => return Err(format!("handshake: {other:?} after {seen:?}")),
            }
        }
        if seen
            != [
                ChanCmd::VERSIONS,
                ChanCmd::CERTS,
                ChanCmd::AUTH_CHALLENGE,
                ChanCmd::NETINFO,
            ]
        {
            return Err(format!("unexpected responder handshake {seen:?}"));
        }
        link.send(&netinfo_cell(relay_ip));
        Ok(link)
    }

    /// Writes `bytes` as TLS application data (split into records by rustls) and flushes.
    /// A relay that already closed makes this fail; that is reported, not a panic.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.tls.write_all(bytes).is_ok() && self.tls.flush().is_ok()
    }

    /// Sends a TLS close_notify: the end of the byte stream, said inside TLS.
    pub fn send_close_notify(&mut self) {
        self.tls.conn.send_close_notify();
        let _ = self.tls.flush();
        while self.tls.conn.wants_write() {
            if self.tls.conn.write_tls(&mut self.tls.sock).is_err() {
                break;
            }
        }
    }

    /// Half-closes the TCP connection (FIN) without a TLS close_notify.
    pub fn shutdown_write(&mut self) {
        let _ = self.tls.sock.shutdown(Shutdown::Write);
    }

    /// The next cell from the relay, or how the connection ended, within `limit`.
    pub fn read_cell(&mut self, limit: Duration) -> LinkRead {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.framer.next(&self.plain) {
                Ok(Some((cell, used))) => {
                    let r = match cell {
                        Cell::Fixed(c) => LinkRead::Cell {
                            circ_id: c.circ_id,
                            cmd: c.cmd,
                            body: c.body.to_vec(),
                        },
                        Cell::Var(c) => LinkRead::Cell {
                            circ_id: c.circ_id,
                            cmd: c.cmd,
                            body: c.body.to_vec(),
                        },
                    };
                    self.plain.drain(..used);
                    return r;
                }
                Ok(None) => {}
                Err(e) => return LinkRead::Closed(format!("relay sent an unframeable cell: {e}")),
            }
            if Instant::now() >= end {
                return LinkRead::TimedOut;
            }
            match self.tls.read(&mut buf) {
                Ok(0) => return LinkRead::Closed("TLS close_notify".into()),
                Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return LinkRead::Closed(format!("{:?}: {e}", e.kind())),
            }
        }
    }

    /// Reads (and keeps) cells until the relay ends the connection. `Err`: still open after
    /// `limit`, with the cells seen meanwhile.
    pub fn wait_closed(&mut self, limit: Duration) -> Result<LinkClosed, Vec<(CircId, ChanCmd)>> {
        let start = Instant::now();
        let mut cells = Vec::new();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.read_cell(left) {
                LinkRead::Cell { circ_id, cmd, body } => cells.push((circ_id, cmd, body)),
                LinkRead::Closed(how) => {
                    return Ok(LinkClosed {
                        how,
                        after: start.elapsed(),
                        cells,
                    })
                }
                LinkRead::TimedOut => {
                    return Err(cells.into_iter().map(|(c, m, _)| (c, m)).collect());
                }
            }
        }
    }
}

/// How a link ended: as [`LinkRead::Closed`] says, after how long, and the cells (circuit ID,
/// command, body) the relay sent before.
#[derive(Debug)]
pub struct LinkClosed {
    pub how: String,
    pub after: Duration,
    pub cells: Vec<(CircId, ChanCmd, Vec<u8>)>,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Waits until the peer of a plain TCP connection closes it (FIN or RST), discarding what it
/// sends. `Some(after)` if it did within `limit`.
pub fn tcp_wait_closed(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// A VERSIONS cell in its 5-byte-header form (tor-spec §"Negotiating versions").
pub fn versions_cell(list: &[u16]) -> Vec<u8> {
    let mut w = vec![0u8; 5 + 2 * list.len()];
    let n = encode_versions_cell(list, &mut w).unwrap();
    w.truncate(n);
    w
}

/// A fixed cell on link 5; `body` is zero-padded to 509 bytes.
pub fn fixed_cell(circ_id: u32, cmd: ChanCmd, body: &[u8]) -> Vec<u8> {
    let mut b = [0u8; CELL_BODY_LEN];
    b[..body.len()].copy_from_slice(body);
    let f = Framer::negotiated(5).unwrap();
    let mut w = vec![0u8; f.fixed_cell_len()];
    f.encode_fixed(CircId(circ_id), cmd, &b, &mut w).unwrap();
    w
}

/// A variable-length cell on link 5 (circuit ID 0).
pub fn var_cell(cmd: ChanCmd, body: &[u8]) -> Vec<u8> {
    let f = Framer::negotiated(5).unwrap();
    let mut w = vec![0u8; 7 + body.len()];
    let n = f.encode_var(CircId(0), cmd, body, &mut w).unwrap();
    w.truncate(n);
    w
}

/// A client's NETINFO: our clock, the relay's address as we see it, no addresses of ours.
pub fn netinfo_cell(relay: IpAddr) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut body = [0u8; CELL_BODY_LEN];
    Netinfo::encode(now, &NetinfoAddr::from(relay), &[], &mut body).unwrap();
    fixed_cell(0, ChanCmd::NETINFO, &body)
}
