//! A client-side Tor link (TLS + link handshake), sans-IO.
//!
//! `fors::proto::channel::Channel` is a relay's channel: as initiator it always answers
//! AUTH_CHALLENGE with AUTHENTICATE, which needs relay link keys and would make the first hop
//! treat us as a relay. A load generator must look like a Tor client (tor-spec
//! §"Negotiating and initializing channels": an initiator that does not authenticate sends
//! only VERSIONS and NETINFO), so this is the smallest adapter that does that on top of
//! Fors's own pieces: its rustls client configuration and certificate verifier
//! (`proto::channel::tls`), its CERTS checks (`proto::channel::certs::verify_certs`), and the
//! cell framer and encoders.
//!
//! Link handshake as a client: send VERSIONS (2-byte circuit IDs) → receive VERSIONS, CERTS
//! (checked: the responder's RSA and, if known, Ed25519 identity must be the expected ones,
//! and type 5 must bind the TLS certificate), AUTH_CHALLENGE (ignored), NETINFO → send
//! NETINFO. Then fixed cells flow.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::SystemTime;

use fors::cell::chan::{Certs, Netinfo, NetinfoAddr, Versions};
use fors::cell::link::encode_versions_cell;
use fors::cell::{
    CellMut, ChanCmd, CircId, Framer, CELL_BODY_LEN, CELL_LEN, MAX_VAR_CELL_BODY_LEN,
};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::proto::channel::certs::{cert_sha256, verify_certs, PeerRole};
use fors::proto::channel::tls::{self, rustls};
use rand::rngs::StdRng;

/// Link versions we offer: 4 (4-byte circuit IDs) and 5.
const LINK_VERSIONS: [u16; 2] = [4, 5];
/// Plaintext receive buffer: a maximal variable cell plus room to read behind it.
const INBUF_LEN: usize = 2 * (MAX_VAR_CELL_BODY_LEN + 7);
/// Plaintext handed to rustls per write: a full TLS record's worth of cells.
const TLS_CHUNK: usize = 16 * 1024;

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cell framing: {0}")]
    Cell(#[from] fors::cell::CellError),
    #[error("no common link protocol version")]
    NoCommonVersion,
    #[error("CERTS: {0}")]
    Certs(String),
    #[error("relay proved identity {got}, expected {expected}")]
    WrongIdentity { expected: String, got: String },
    #[error("{0} during the link handshake")]
    Unexpected(&'static str),
    #[error("connection closed by the relay")]
    Eof,
    #[error("reading TLS records: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitVersions,
    AwaitCerts,
    AwaitNetinfo,
    Open,
}

/// One client link to the first hop.
pub struct ClientLink {
    tls: rustls::ClientConnection,
    framer: Framer,
    phase: Phase,
    expected_rsa: RsaIdentity,
    expected_ed: Option<Ed25519Identity>,
    peer_addr: IpAddr,
    inbuf: Box<[u8]>,
    in_len: usize,
    /// Plaintext cells not yet given to rustls, bounded by `max_out`.
    out_plain: Vec<u8>,
    max_out: usize,
    tls_out: Vec<u8>,
    tls_out_start: usize,
}

impl ClientLink {
    /// A link to the relay `expected_rsa` at `peer_addr`; VERSIONS is queued at once.
    /// `max_out_cells` bounds the cells queued before [`room`](Self::room) reports zero.
    pub fn new(
        expected_rsa: RsaIdentity,
        expected_ed: Option<Ed25519Identity>,
        peer_addr: IpAddr,
        max_out_cells: usize,
        rng: &mut StdRng,
    ) -> Result<ClientLink, LinkError> {
        let cfg = tls::client_config(tls::provider())?;
        let mut conn = rustls::ClientConnection::new(cfg, tls::random_sni(rng))?;
        // We bound plaintext ourselves.
        conn.set_buffer_limit(None);
        let mut link = ClientLink {
            tls: conn,
            framer: Framer::unnegotiated(),
            phase: Phase::AwaitVersions,
            expected_rsa,
            expected_ed,
            peer_addr,
            inbuf: vec![0u8; INBUF_LEN].into_boxed_slice(),
            in_len: 0,
            out_plain: Vec::with_capacity(max_out_cells * CELL_LEN + 64),
            max_out: max_out_cells.max(1) * CELL_LEN,
            tls_out: Vec::with_capacity(max_out_cells * CELL_LEN + 4096),
            tls_out_start: 0,
        };
        let mut wire = [0u8; 5 + 2 * LINK_VERSIONS.len()];
        let n = encode_versions_cell(&LINK_VERSIONS, &mut wire)?;
        link.out_plain.extend_from_slice(&wire[..n]);
        Ok(link)
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Cells that can be queued now.
    pub fn room(&self) -> usize {
        if !self.is_open() {
            return 0;
        }
        let used = self.out_plain.len() + (self.tls_out.len() - self.tls_out_start);
        self.max_out.saturating_sub(used) / CELL_LEN
    }

    /// Queues a fixed cell (check [`room`](Self::room) first; over the bound it is still
    /// queued, the bound is a pacing hint).
    pub fn push(&mut self, circ: CircId, cmd: ChanCmd, body: &[u8; CELL_BODY_LEN]) {
        self.out_plain.extend_from_slice(&circ.0.to_be_bytes());
        self.out_plain.push(cmd.0);
        self.out_plain.extend_from_slice(body);
    }

    /// Feeds bytes from the socket; each circuit cell that arrives on the open link goes to
    /// `on_cell` (its body may be changed in place).
    pub fn handle_input(
        &mut self,
        mut data: &[u8],
        now: SystemTime,
        on_cell: &mut dyn FnMut(CircId, ChanCmd, &mut [u8; CELL_BODY_LEN]),
    ) -> Result<(), LinkError> {
        while !data.is_empty() {
            self.tls.read_tls(&mut data)?;
            let state = self.tls.process_new_packets()?;
            let mut avail = state.plaintext_bytes_to_read();
            while avail > 0 {
                let room = self.inbuf.len() - self.in_len;
                if room == 0 {
                    return Err(LinkError::Unexpected("an oversized cell"));
                }
                let n = self.tls.reader().read(&mut self.inbuf[self.in_len..])?;
                if n == 0 {
                    break;
                }
                self.in_len += n;
                avail -= n.min(avail);
                self.drain_cells(now, on_cell)?;
            }
            if state.peer_has_closed() && self.in_len == 0 {
                return Err(LinkError::Eof);
            }
        }
        Ok(())
    }

    fn drain_cells(
        &mut self,
        now: SystemTime,
        on_cell: &mut dyn FnMut(CircId, ChanCmd, &mut [u8; CELL_BODY_LEN]),
    ) -> Result<(), LinkError> {
        let mut at = 0;
        loop {
            let framer = self.framer;
            let Some((cell, used)) = framer.next_mut(&mut self.inbuf[at..self.in_len])? else {
                break;
            };
            match cell {
                CellMut::Fixed(f) if self.phase == Phase::Open => match f.cmd {
                    ChanCmd::PADDING | ChanCmd::VPADDING | ChanCmd::NETINFO => {}
                    cmd => on_cell(f.circ_id, cmd, f.body),
                },
                CellMut::Fixed(f) => {
                    if f.cmd == ChanCmd::NETINFO && self.phase == Phase::AwaitNetinfo {
                        Netinfo::parse(&f.body[..])?;
                        self.queue_netinfo(now)?;
                        self.phase = Phase::Open;
                    } else if f.cmd != ChanCmd::PADDING {
                        return Err(LinkError::Unexpected("a fixed cell"));
                    }
                }
                CellMut::Var(v) => match (v.cmd, self.phase) {
                    (ChanCmd::VERSIONS, Phase::AwaitVersions) => {
                        let ver = Versions::parse(v.body)?
                            .highest_common(&LINK_VERSIONS)
                            .ok_or(LinkError::NoCommonVersion)?;
                        self.framer = Framer::negotiated(ver)?;
                        self.phase = Phase::AwaitCerts;
                    }
                    (ChanCmd::CERTS, Phase::AwaitCerts) => {
                        let body = v.body.to_vec();
                        self.check_certs(&body, now)?;
                        self.phase = Phase::AwaitNetinfo;
                    }
                    // A client does not authenticate: AUTH_CHALLENGE is ignored.
                    (ChanCmd::AUTH_CHALLENGE | ChanCmd::VPADDING, _) => {}
                    _ if self.phase == Phase::Open => {}
                    _ => return Err(LinkError::Unexpected("a variable cell")),
                },
            }
            at += used;
        }
        self.inbuf.copy_within(at..self.in_len, 0);
        self.in_len -= at;
        Ok(())
    }

    fn check_certs(&self, body: &[u8], now: SystemTime) -> Result<(), LinkError> {
        let der = self
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| LinkError::Certs("no TLS certificate".into()))?;
        let tls_cert_sha256 = cert_sha256(der.as_ref());
        let certs = Certs::parse(body)?;
        let vc = verify_certs(
            &certs,
            PeerRole::Responder {
                tls_cert_sha256: &tls_cert_sha256,
            },
            now,
        )
        .map_err(|e| LinkError::Certs(e.to_string()))?;
        if vc.rsa_identity != self.expected_rsa {
            return Err(LinkError::WrongIdentity {
                expected: self.expected_rsa.to_hex(),
                got: vc.rsa_identity.to_hex(),
            });
        }
        if let Some(ed) = self.expected_ed {
            if vc.ed_identity != ed {
                return Err(LinkError::WrongIdentity {
                    expected: format!("{ed:?}"),
                    got: format!("{:?}", vc.ed_identity),
                });
            }
        }
        Ok(())
    }

    /// A client's NETINFO: timestamp 0 and no addresses of its own, as C tor clients send
    /// (tor-spec §"NETINFO cells"), so nothing about us is revealed.
    fn queue_netinfo(&mut self, _now: SystemTime) -> Result<(), LinkError> {
        let mut body = [0u8; CELL_BODY_LEN];
        Netinfo::encode(0, &NetinfoAddr::from(self.peer_addr), &[], &mut body)?;
        let mut wire = [0u8; CELL_LEN];
        let n = self
            .framer
            .encode_fixed(CircId(0), ChanCmd::NETINFO, &body, &mut wire)?;
        self.out_plain.extend_from_slice(&wire[..n]);
        Ok(())
    }

    /// Encrypts queued cells and returns the TLS bytes to send; report what the socket took
    /// with [`consume_output`](Self::consume_output).
    pub fn pending_output(&mut self) -> &[u8] {
        if !self.out_plain.is_empty() {
            for chunk in self.out_plain.chunks(TLS_CHUNK) {
                // No rustls buffer limit: the writer takes everything.
                let _ = self.tls.writer().write_all(chunk);
            }
            self.out_plain.clear();
        }
        if self.tls_out_start > 0 && self.tls_out_start * 2 >= self.tls_out.len() {
            self.tls_out.drain(..self.tls_out_start);
            self.tls_out_start = 0;
        }
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.tls_out).unwrap_or(0) == 0 {
                break;
            }
        }
        &self.tls_out[self.tls_out_start..]
    }

    pub fn consume_output(&mut self, n: usize) {
        self.tls_out_start = (self.tls_out_start + n).min(self.tls_out.len());
        if self.tls_out_start == self.tls_out.len() {
            self.tls_out.clear();
            self.tls_out_start = 0;
        }
    }
}

/// Lets circuits write straight into the link.
impl crate::circ::CellOut for ClientLink {
    fn room(&self) -> usize {
        ClientLink::room(self)
    }
    fn push(&mut self, circ: CircId, cmd: ChanCmd, body: &[u8; CELL_BODY_LEN]) {
        ClientLink::push(self, circ, cmd, body)
    }
}
