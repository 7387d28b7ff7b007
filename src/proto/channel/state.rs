//! The [`Channel`] state machine: one Tor link over one TLS connection, sans-IO.
//!
//! Bytes in ([`Channel::handle_input`]), bytes out ([`Channel::pending_output`] /
//! [`Channel::consume_output`], or [`Channel::write_output_into`] straight into a send
//! buffer), events and cells out through a [`ChannelSink`]. Time and randomness are passed
//! in. The handshake itself lives in `handshake.rs`.
//!
//! TLS: the TLS handshake and the link handshake run on rustls's buffered API (the link
//! handshake needs its RFC 5705 exporter). An open TLS 1.3 channel then switches to Fors's
//! own record layer (`proto::tls_record`) at the first record boundary, which opens records
//! in place in the shard's receive buffer ([`Channel::handle_input_mut`]; a record split
//! across reads is gathered in the channel's record buffer first) and seals cells in place
//! in the send buffer; a TLS 1.2 link stays on rustls ([`ChannelStats::tls_path`]; the copy
//! map in `docs/architecture.md` says how the switch works).
//!
//! Memory (issue #15): the receive buffers (cells up to 32 KiB, records up to 2 × 18 KiB),
//! the plaintext output queue and the TLS output buffer start empty and grow by doubling to
//! what the channel uses, never past their bounds; [`Channel::trim_buffers`] (once a second)
//! gives back a passed burst's room. A busy channel keeps its capacity, so per received cell
//! nothing is allocated: cells are framed in place in the decrypted record (or in the
//! receive buffer, or straight from rustls's plaintext) and handed to the sink. On the
//! record layer nothing is allocated per record either; rustls's buffered API (TLS 1.2
//! links, and every link until the switch) allocates per TLS *record* (see
//! docs/tls-provider.md).

use std::io::{BufRead, ErrorKind, Read, Write};
use std::mem;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};
use rustls::{ClientConnection, Connection, ProtocolVersion, ServerConnection};

use super::context::{ChannelConfig, LinkContext};
use super::error::ChannelError;
use super::handshake::Handshake;
use super::output::{reserve_within, trim_vec, trimmed_capacity, CellQueue, GrowWithin, BUF_FLOOR};
use super::tls;
use crate::cell::chan::PaddingNegotiate;
use crate::cell::{
    Cell, CellMut, ChanCmd, CircId, FixedCell, FixedCellMut, Framer, VarCell, CELL_BODY_LEN,
    CELL_LEN, MAX_VAR_CELL_BODY_LEN,
};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::proto::tls_record::{
    self, ReadEvent, TlsRecordError, TlsRecordLayer, TrafficSecretLog, ALERT_RECORD_LEN,
    HEADER_LEN, KEY_UPDATE_RECORD_LEN, MAX_PLAINTEXT_LEN, SEAL_TRAILER_LEN,
};
use crate::util::copies::{self, CopySite};

/// Link protocol versions we offer and accept: 4 (4-byte circuit IDs) and 5 (padding).
pub const LINK_VERSIONS: [u16; 2] = [4, 5];

/// Receive buffer bound: the largest variable cell we accept plus room to read more behind
/// it. The buffer grows to it only when a cell needs it (CERTS is ~2 KiB).
const INBUF_LEN: usize = 2 * (MAX_VAR_CELL_BODY_LEN + 7);

/// The longest record rustls may be fed whole (TLS 1.2 allows 2^14 + 2048 bytes of
/// ciphertext, RFC 5246 §6.2.3; TLS 1.3 less): the record buffer's bound before the switch.
const MAX_ANY_RECORD_LEN: usize = HEADER_LEN + (1 << 14) + 2048;

/// The record buffer's bound: a read's whole records are opened there in batches of at
/// most this many bytes; it holds at least one record of the longest kind.
const RX_LEN: usize = 2 * MAX_ANY_RECORD_LEN;

/// Reads `Channel::read_hint` leaves uncapped after most of its capped reads missed.
pub const HINT_PAUSE_READS: u16 = 256;

/// Room in the TLS output buffer beyond the cell bound, for record headers and tags and the
/// handshake (the same as its old fixed capacity).
const TLS_OUT_SLACK: usize = 4096;

/// Who is on the other end, as proven by the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Did not authenticate (a Tor client, or a bridge acting as one): C's
    /// `mark_channel_tls_endpoint_as_client`. Never extend to it; exits refuse BEGIN from it.
    Client,
    /// An authenticated relay.
    Relay {
        rsa: RsaIdentity,
        ed: Ed25519Identity,
    },
}

/// The relay an initiator means to reach. The handshake fails unless the responder proves
/// this RSA identity and, if given, this Ed25519 identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedPeer {
    pub rsa: RsaIdentity,
    pub ed: Option<Ed25519Identity>,
}

/// What the handshake established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenInfo {
    pub peer: PeerIdentity,
    pub link_version: u16,
    /// Our address as the peer sees it (NETINFO OTHERADDR). Only worth learning from a
    /// trusted directory authority (C `relay_address_new_suggestion`).
    pub our_addr_according_to_peer: Option<IpAddr>,
    /// The peer listed the address we see it at among its own: the channel is canonical.
    pub canonical: bool,
    /// We sent AUTHENTICATE, so the peer treats us as relay (initiator only).
    pub authenticated_to_peer: bool,
}

/// Something the circuit layer or the shard should know about.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelEvent {
    /// The handshake finished; cells flow from now on.
    Open(OpenInfo),
    /// The channel closed; flush `pending_output` (a TLS alert) and drop the connection.
    Closed(ChannelError),
    /// The peer's NETINFO clock differs from ours by more than an hour (C warns likewise).
    ClockSkew { skew_secs: i64 },
    /// The peer asked us to start or stop channel padding (padding-spec).
    PaddingNegotiate(PaddingNegotiate),
}

/// Receives what a channel produces while reading.
pub trait ChannelSink {
    /// A circuit cell arrived on an open channel (RELAY, RELAY_EARLY, DESTROY, CREATE*,
    /// CREATED*). The body lives in the channel's receive buffer and may be changed in place
    /// (relay crypto). `out` queues replies on this same channel.
    fn cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &mut [u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    );

    /// As [`cell`](Self::cell), for a cell framed straight from TLS's plaintext, which
    /// cannot be changed in place. The default copies it to the stack and calls `cell`; a
    /// sink that copies the body anyway (the relay node stages RELAY cells) takes it from
    /// here and saves a copy (the copy map, `docs/architecture.md`).
    fn cell_ref(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        copies::note(CopySite::ChanInbuf, CELL_BODY_LEN);
        let mut b = *body;
        self.cell(circ_id, cmd, &mut b, out);
    }

    /// A channel event.
    fn event(&mut self, event: ChannelEvent);
}

/// How bytes reach rustls ([`Channel::rustls_input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RustlsInput {
    /// TLS 1.2 for good: a stretch of the stream, as much as rustls takes.
    Stream,
    /// Before the switch to our record layer: exactly one whole record.
    OneRecord,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Circuit cells handed to the sink.
    pub cells_delivered: u64,
    /// Which record layer carries the channel's TLS records.
    pub tls_path: TlsPath,
    /// Cells ignored after the handshake (PADDING, VPADDING, unknown commands...).
    pub cells_ignored: u64,
    /// Of those, the ones C tor logs as a peer's protocol violation, since the node last
    /// took them ([`Channel::take_link_warnings`]).
    pub link_warnings: LinkWarnings,
    /// Records opened in the receive buffer behind a header that came in the read before
    /// ([`Channel::read_hint`]; no copy).
    pub split_records_opened: u64,
    /// Records split across reads and gathered in the record buffer first (`RecordInbuf`).
    pub records_gathered: u64,
    /// Their bytes copied (the header that alone ended a read is not counted).
    pub record_bytes_gathered: u64,
    /// Times `Channel::read_hint` stopped capping reads because most capped reads still
    /// cut a record.
    pub read_hint_pauses: u64,
}

/// Which record layer carries a channel's TLS records (issue #13 item 3; the copy map,
/// `docs/architecture.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsPath {
    /// rustls's buffered API, for now: the TLS or link handshake is under way, or the open
    /// channel has not yet reached a record boundary with nothing left inside rustls.
    #[default]
    Rustls,
    /// Fors's in-place TLS 1.3 record layer (`proto::tls_record`), from the first record
    /// boundary after the channel opened.
    RecordLayer,
    /// rustls for good: the link negotiated TLS 1.2 (C tor still accepts it), which the
    /// record layer does not do.
    RustlsTls12,
    /// rustls for good: the handover was refused before rustls gave anything up (a suite
    /// the record layer does not implement, or no traffic secrets logged).
    RustlsRefused,
}

/// The TLS side of a channel.
pub(super) enum Tls {
    /// rustls's buffered connection: the whole TLS and link handshake runs here (the link
    /// handshake needs its RFC 5705 exporter). `log` holds the connection's traffic
    /// secrets while a switch to the record layer is still to come; `None` once the
    /// channel stays on rustls.
    Rustls {
        conn: Box<Connection>,
        log: Option<Arc<TrafficSecretLog>>,
    },
    /// Fors's record layer, after the switch.
    Record(Box<TlsRecordLayer>),
    /// Only inside `Channel::switch_tls`, between rustls giving up its keys and the layer.
    Taken,
}

/// Link cells an open channel drops where C tor logs at `LOG_PROTOCOL_WARN` and keeps the
/// channel (C `channeltls.c`). Counts only: no address, no identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkWarnings {
    /// A well-formed VERSIONS cell after the version was set
    /// (`channel_tls_process_versions_cell`).
    pub versions_repeated: u64,
    /// A NETINFO cell on an open channel (`channel_tls_process_netinfo_cell`:
    /// "non-handshaking connection").
    pub netinfo_late: u64,
    /// A PADDING_NEGOTIATE cell on a link older than v5
    /// (`channel_tls_process_padding_negotiate_cell`).
    pub padding_negotiate_old_link: u64,
    /// A PADDING_NEGOTIATE cell that does not parse (same function).
    pub padding_negotiate_malformed: u64,
}

impl LinkWarnings {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == LinkWarnings::default()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &LinkWarnings) {
        self.versions_repeated += other.versions_repeated;
        self.netinfo_late += other.netinfo_late;
        self.padding_negotiate_old_link += other.padding_negotiate_old_link;
        self.padding_negotiate_malformed += other.padding_negotiate_malformed;
    }
}

pub(super) enum Phase {
    Handshaking(Box<Handshake>),
    Open,
    Closed,
}

/// One Tor link.
pub struct Channel {
    /// Our relay keys and TLS configurations; `None` for a client channel
    /// ([`Channel::new_client`]), which proves no identity.
    pub(super) ctx: Option<Arc<LinkContext>>,
    pub(super) config: ChannelConfig,
    pub(super) tls: Tls,
    /// TLS records received but not yet whole. Before the switch rustls is fed one whole
    /// record at a time (from the input, or from here when a record spans reads), so that
    /// at a record boundary it holds nothing extraction would lose; after it, a record split
    /// across reads (or every record, for read-only input: `handle_input`) is gathered here
    /// and opened in place. Grows by doubling up to [`RX_LEN`].
    rx: Box<[u8]>,
    rx_len: usize,
    /// Most bytes `rx` held since the last trim.
    rx_peak: usize,
    /// The wire length of the last record opened on the record layer, and the longest
    /// opened in the current read: `read_hint`'s guess at the next.
    last_record_len: usize,
    read_longest_record: usize,
    /// `read_hint`'s record of its own use: the cap it gave for the read just made, that
    /// read's length, which of the last 16 capped reads took their whole cap (bit set),
    /// how the last 16 of those ended (bit set: inside a record, a miss), and the reads
    /// left before it tries again after a pause.
    hinted: Option<usize>,
    last_read_len: usize,
    hint_full: u16,
    hint_misses: u16,
    hint_pause: u16,
    /// Whole records fed to rustls after its TLS handshake finished: each KeyUpdate the
    /// peer made meanwhile ends one (RFC 8446 §5.1), so they bound the key schedule's
    /// search at the switch.
    records_after_tls_handshake: u64,
    /// The last whole record fed to rustls gave application data: then rustls joins no
    /// handshake message, and the switch may happen (`TlsRecordLayer::check_drained`).
    last_record_was_data: bool,
    pub(super) initiator: bool,
    pub(super) phase: Phase,
    pub(super) framer: Framer,
    inbuf: Box<[u8]>,
    in_len: usize,
    /// Most bytes `inbuf` held since the last [`trim_buffers`](Self::trim_buffers).
    in_peak: usize,
    pub(super) out: CellQueue,
    tls_out: Vec<u8>,
    tls_out_start: usize,
    /// Capacity `tls_out` grows to by doubling (`max_output_cells` cells plus slack).
    tls_out_cap: usize,
    /// Most bytes `tls_out` held since the last trim.
    tls_out_peak: usize,
    pub(super) peer_addr: IpAddr,
    peer: Option<PeerIdentity>,
    started_at: SystemTime,
    stats: ChannelStats,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("initiator", &self.initiator)
            .field("peer_addr", &self.peer_addr)
            .field("peer", &self.peer)
            .field("link_version", &self.framer.link_version())
            .finish_non_exhaustive()
    }
}

impl Channel {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: Option<Arc<LinkContext>>,
        config: ChannelConfig,
        mut tls: Connection,
        log: Arc<TrafficSecretLog>,
        initiator: bool,
        expected: Option<ExpectedPeer>,
        peer_addr: IpAddr,
        now: SystemTime,
    ) -> Channel {
        // We bound output ourselves (CellQueue); rustls must never refuse plaintext.
        tls.set_buffer_limit(None);
        let max_cells = config.max_output_cells;
        Channel {
            config,
            tls: Tls::Rustls {
                conn: Box::new(tls),
                log: Some(log),
            },
            rx: Box::default(),
            rx_len: 0,
            rx_peak: 0,
            last_record_len: 0,
            read_longest_record: 0,
            hinted: None,
            last_read_len: 0,
            hint_full: u16::MAX,
            hint_misses: 0,
            hint_pause: 0,
            records_after_tls_handshake: 0,
            last_record_was_data: false,
            initiator,
            phase: Phase::Handshaking(Box::new(Handshake::new(expected))),
            framer: Framer::unnegotiated(),
            // Nothing is reserved before the peer sends a byte (issue #15).
            inbuf: Box::default(),
            in_len: 0,
            in_peak: 0,
            out: CellQueue::new(max_cells),
            tls_out: Vec::new(),
            tls_out_start: 0,
            tls_out_cap: max_cells.max(1) * CELL_LEN + TLS_OUT_SLACK,
            tls_out_peak: 0,
            peer_addr,
            peer: None,
            started_at: now,
            stats: ChannelStats::default(),
            ctx,
        }
    }

    /// A channel we open to `expected` at `peer_addr`. As a relay we always authenticate.
    /// VERSIONS is queued at once; TLS carries it when its handshake completes.
    pub fn new_initiator<R: RngCore + CryptoRng>(
        ctx: Arc<LinkContext>,
        expected: ExpectedPeer,
        peer_addr: IpAddr,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Channel, ChannelError> {
        // A per-connection copy of the shared config that logs this connection's traffic
        // secrets, for the switch to the record layer (cost: `with_traffic_secret_log_*`).
        let (cfg, log) = tls_record::with_traffic_secret_log_client(&ctx.client_config);
        let conn = ClientConnection::new(cfg, tls::random_sni(rng))?;
        let config = ctx.config;
        Channel::start_initiator(Some(ctx), config, conn, log, expected, peer_addr, now)
    }

    /// A channel we open as a Tor **client** (tor-spec §"Negotiating and initializing
    /// channels": an initiator that does not authenticate). We send VERSIONS, check the
    /// responder's CERTS (its TLS certificate binding and that it proves `expected`), ignore
    /// AUTH_CHALLENGE, send no CERTS or AUTHENTICATE, and answer the responder's NETINFO
    /// with a client NETINFO: timestamp 0 and no addresses of ours, so the relay learns
    /// nothing about us and treats the link as a client's. `tls_config` is usually one
    /// [`tls::client_config`] shared by every client channel.
    pub fn new_client<R: RngCore + CryptoRng>(
        tls_config: Arc<rustls::ClientConfig>,
        config: ChannelConfig,
        expected: ExpectedPeer,
        peer_addr: IpAddr,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Channel, ChannelError> {
        let (cfg, log) = tls_record::with_traffic_secret_log_client(&tls_config);
        let conn = ClientConnection::new(cfg, tls::random_sni(rng))?;
        Channel::start_initiator(None, config, conn, log, expected, peer_addr, now)
    }

    /// Common start of both initiator kinds: VERSIONS is queued at once; TLS carries it
    /// when its handshake completes.
    fn start_initiator(
        ctx: Option<Arc<LinkContext>>,
        config: ChannelConfig,
        conn: ClientConnection,
        log: Arc<TrafficSecretLog>,
        expected: ExpectedPeer,
        peer_addr: IpAddr,
        now: SystemTime,
    ) -> Result<Channel, ChannelError> {
        let mut ch = Channel::new(
            ctx,
            config,
            Connection::Client(conn),
            log,
            true,
            Some(expected),
            peer_addr,
            now,
        );
        ch.with_handshake(|ch, hs| {
            ch.queue_versions(hs, now);
            Ok(None::<()>)
        })?;
        Ok(ch)
    }

    /// A channel for a connection we accepted from `peer_addr`.
    pub fn new_responder(
        ctx: Arc<LinkContext>,
        peer_addr: IpAddr,
        now: SystemTime,
    ) -> Result<Channel, ChannelError> {
        let (cfg, log) = tls_record::with_traffic_secret_log_server(&ctx.server_config);
        let conn = ServerConnection::new(cfg)?;
        let config = ctx.config;
        Ok(Channel::new(
            Some(ctx),
            config,
            Connection::Server(conn),
            log,
            false,
            None,
            peer_addr,
            now,
        ))
    }

    /// Feeds bytes received from the peer. Cells and events go to `sink`. An error means
    /// the channel is now closed (a `Closed` event was also sent): flush
    /// [`pending_output`](Self::pending_output), then close the connection.
    pub fn handle_input<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        data: &[u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        if matches!(self.phase, Phase::Closed) {
            return Err(ChannelError::NotOpen);
        }
        let r = self.read_input(data, now, rng, sink);
        if let Err(e) = &r {
            self.fail(e.clone(), sink);
        }
        r
    }

    /// As [`handle_input`](Self::handle_input), with the received bytes in a buffer the
    /// channel may change (the shard's receive buffer, valid only during the call): on the
    /// record layer, whole records are opened where they lie and only a record that goes
    /// on in the next read is copied (the copy map, `docs/architecture.md`). The buffer's
    /// contents afterwards are unspecified.
    pub fn handle_input_mut<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        data: &mut [u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        if matches!(self.phase, Phase::Closed) {
            return Err(ChannelError::NotOpen);
        }
        let len = data.len();
        self.last_read_len = len;
        let r = self
            .read_until_switch(data, now, rng, sink)
            .map(|rest| len - rest.len())
            .and_then(|used| self.read_records_in_place(&mut data[used..], sink));
        if let Err(e) = &r {
            self.fail(e.clone(), sink);
        }
        r
    }

    fn read_input<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        data: &[u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        let rest = self.read_until_switch(data, now, rng, sink)?;
        self.read_records(rest, sink)
    }

    /// Reads through rustls until the channel switches to the record layer (or all of
    /// `data` on a link that stays on rustls); returns the input left for the record layer.
    fn read_until_switch<'a, R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        mut data: &'a [u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<&'a [u8], ChannelError> {
        while !data.is_empty() && !matches!(self.phase, Phase::Closed) {
            match &self.tls {
                Tls::Record(_) => return Ok(data),
                Tls::Rustls { log: None, .. } => {
                    // rustls for good (TLS 1.2): bytes straight to it, as many as it takes.
                    self.rustls_input(data, RustlsInput::Stream, now, rng, sink)?;
                    return Ok(&[]);
                }
                Tls::Rustls { log: Some(_), .. } => {
                    data = self.feed_one_record(data, now, rng, sink)?;
                    self.switch_tls()?;
                }
                Tls::Taken => return Err(ChannelError::NotOpen),
            }
        }
        Ok(&[])
    }

    /// Before the switch: feeds rustls the next whole TLS record (parsing the 5-byte record
    /// header ourselves, RFC 8446 §5.1), straight from `data` when it is all there, else
    /// gathered in `rx` across reads. Returns the input not yet used.
    fn feed_one_record<'a, R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        data: &'a [u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<&'a [u8], ChannelError> {
        if self.rx_len == 0 {
            match whole_record_len(data) {
                Some(len) => {
                    self.feed_rustls(&data[..len], now, rng, sink)?;
                    return Ok(&data[len..]);
                }
                // Not a TLS record header (a plaintext probe, garbage), or one claiming more
                // than any TLS version allows: rustls refuses it at once.
                None if record_claims_too_much(data) || not_tls_header(data) => {
                    self.feed_rustls(data, now, rng, sink)?;
                    return Ok(&[]);
                }
                None => {}
            }
        }
        // The start of a record that goes on in the next read: gathered here (rare: the
        // link handshake's records are small, and the switch comes after it).
        let missing = record_missing(&self.rx[..self.rx_len]);
        let take = missing.min(data.len());
        self.rx_reserve(self.rx_len + take, MAX_ANY_RECORD_LEN);
        self.rx[self.rx_len..self.rx_len + take].copy_from_slice(&data[..take]);
        copies::note(CopySite::ChanInbuf, take);
        self.rx_len += take;
        self.rx_peak = self.rx_peak.max(self.rx_len);
        let rest = &data[take..];
        if record_missing(&self.rx[..self.rx_len]) == 0
            || record_claims_too_much(&self.rx[..self.rx_len])
            || not_tls_header(&self.rx[..self.rx_len])
        {
            let rx = mem::take(&mut self.rx);
            let len = mem::take(&mut self.rx_len);
            let r = self.feed_rustls(&rx[..len], now, rng, sink);
            self.rx = rx;
            r?;
        }
        Ok(rest)
    }

    /// Hands rustls one record (all of it) and processes what it decrypted.
    fn feed_rustls<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        record: &[u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        self.rustls_input(record, RustlsInput::OneRecord, now, rng, sink)
    }

    /// Gives `data` to rustls and processes what it decrypted. With
    /// [`RustlsInput::OneRecord`] the bytes are one whole record: when rustls has taken it
    /// all, the record is noted for the switch (`records_after_tls_handshake`,
    /// `last_record_was_data`), and rustls taking none of it is an error.
    fn rustls_input<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        mut data: &[u8],
        input: RustlsInput,
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        // Never call read_tls with an empty slice: rustls takes a 0-byte read as EOF.
        while !data.is_empty() {
            let Tls::Rustls { conn, .. } = &mut self.tls else {
                return Err(ChannelError::NotOpen);
            };
            let after_handshake = !conn.is_handshaking();
            let n = conn
                .read_tls(&mut data)
                .map_err(|e| ChannelError::TlsInput(e.to_string()))?;
            copies::note(CopySite::TlsDeframe, n);
            let io = conn.process_new_packets()?;
            if input == RustlsInput::OneRecord && data.is_empty() {
                if after_handshake {
                    self.records_after_tls_handshake += 1;
                }
                // Drained below, so all of it came from this record.
                self.last_record_was_data = io.plaintext_bytes_to_read() > 0;
            }
            self.drain_plaintext(now, rng, sink)?;
            if io.peer_has_closed() {
                // close_notify: whatever follows is not Tor data.
                return Err(self.eof_reason());
            }
            if matches!(self.phase, Phase::Closed) {
                break;
            }
            if n == 0 {
                if input == RustlsInput::Stream {
                    break;
                }
                // rustls took none of a record it had room for (it returns 0 only after a
                // close_notify, handled above): the rest would be misread as a new record.
                return Err(ChannelError::TlsInput(format!(
                    "rustls took no bytes with {} of a record left",
                    data.len()
                )));
            }
        }
        Ok(())
    }

    /// At a record boundary with rustls's plaintext drained: once the channel is open on
    /// TLS 1.3, takes rustls's output into ours and hands its keys to the record layer.
    /// TLS 1.2, or a handover refused before rustls gave anything up, keeps the channel on
    /// rustls for good. Fails the channel only if rustls gave its keys up and they do not
    /// match the logged secrets (not seen: `TlsRecordLayer::from_connection`).
    fn switch_tls(&mut self) -> Result<(), ChannelError> {
        if !matches!(self.phase, Phase::Open) {
            return Ok(());
        }
        let Tls::Rustls { conn, log: Some(_) } = &mut self.tls else {
            return Ok(());
        };
        if conn.is_handshaking() {
            return Ok(());
        }
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            self.stats.tls_path = TlsPath::RustlsTls12;
            self.tls_stay_on_rustls();
            return Ok(());
        }
        // Nothing of the peer's may stay behind in rustls: undrained plaintext, or part of a
        // handshake message (only a data record proves there is none). Else a later boundary.
        match TlsRecordLayer::check_drained(conn, self.last_record_was_data) {
            Ok(()) => {}
            Err(TlsRecordError::NotReady) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        TlsRecordLayer::prepare_handover(conn);
        self.pull_rustls_output();
        let Tls::Rustls {
            conn,
            log: Some(log),
        } = &mut self.tls
        else {
            return Ok(());
        };
        match TlsRecordLayer::check_handover(conn, log) {
            Ok(()) => {}
            // Output rustls still holds: at a later boundary.
            Err(TlsRecordError::NotReady) => return Ok(()),
            Err(_) => {
                self.stats.tls_path = TlsPath::RustlsRefused;
                self.tls_stay_on_rustls();
                return Ok(());
            }
        }
        let Tls::Rustls {
            conn,
            log: Some(log),
        } = mem::replace(&mut self.tls, Tls::Taken)
        else {
            return Ok(());
        };
        let layer = TlsRecordLayer::from_connection(*conn, &log, self.records_after_tls_handshake)?;
        self.tls = Tls::Record(Box::new(layer));
        self.stats.tls_path = TlsPath::RecordLayer;
        Ok(())
    }

    /// The channel stays on rustls: its secrets are dropped (zeroized).
    fn tls_stay_on_rustls(&mut self) {
        if let Tls::Rustls { log, .. } = &mut self.tls {
            if let Some(l) = log.take() {
                drop(l.take());
            }
        }
    }

    /// rustls's pending TLS output into the channel's TLS output buffer.
    fn pull_rustls_output(&mut self) {
        let Tls::Rustls { conn, .. } = &mut self.tls else {
            return;
        };
        while conn.wants_write() {
            // Writing into a Vec cannot fail.
            let mut w = GrowWithin {
                v: &mut self.tls_out,
                cap: self.tls_out_cap,
                start: &mut self.tls_out_start,
            };
            let n = conn.write_tls(&mut w).unwrap_or(0);
            copies::note(CopySite::TlsOut, n);
            if n == 0 {
                break;
            }
        }
        self.tls_out_peak = self.tls_out_peak.max(self.tls_out.len());
        self.out.tls_pending = self.tls_out.len() - self.tls_out_start;
    }

    /// Grows `rx` to hold at least `need` bytes (doubling from [`BUF_FLOOR`], at most
    /// `bound`, which callers never exceed).
    fn rx_reserve(&mut self, need: usize, bound: usize) {
        if need <= self.rx.len() {
            return;
        }
        let len = (self.rx.len() * 2)
            .max(BUF_FLOOR)
            .max(need)
            .min(bound.max(need));
        let mut buf = vec![0u8; len].into_boxed_slice();
        buf[..self.rx_len].copy_from_slice(&self.rx[..self.rx_len]);
        self.rx = buf;
    }

    /// After the switch, for input the channel may not change: the input's records are
    /// copied into `rx` and opened there in place; cells are framed in their plaintext.
    /// Whole records go in batches (no record is ever moved inside `rx`); a record that
    /// goes on in the next read waits there.
    fn read_records<S: ChannelSink>(
        &mut self,
        mut data: &[u8],
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        while !data.is_empty() && !matches!(self.phase, Phase::Closed) {
            if !matches!(self.tls, Tls::Record(_)) {
                return Err(ChannelError::NotOpen);
            }
            let take = if self.rx_len > 0 {
                // The rest of the record that waits (its header first).
                record_missing(&self.rx[..self.rx_len]).min(data.len())
            } else {
                match whole_records_len(data, RX_LEN) {
                    0 => data.len().min(RX_LEN),
                    n => n,
                }
            }
            .min(RX_LEN - self.rx_len);
            self.rx_append(&data[..take]);
            data = &data[take..];
            self.open_rx(sink)?;
        }
        Ok(())
    }

    /// After the switch, for input in the shard's receive buffer: whole records are opened
    /// where they lie; only a record split across two reads is copied into `rx` (its start
    /// from this read, its rest from the next).
    fn read_records_in_place<S: ChannelSink>(
        &mut self,
        mut data: &mut [u8],
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        self.read_longest_record = 0;
        while !data.is_empty() && !matches!(self.phase, Phase::Closed) {
            if !matches!(self.tls, Tls::Record(_)) {
                return Err(ChannelError::NotOpen);
            }
            if self.rx_len > 0 && self.rx_len <= HEADER_LEN {
                // Only the header (or part of it) came in the earlier read: complete it
                // here (at most 5 bytes) and open the body where it lies, if all of it is
                // in this read (what `read_hint` asks the shard for).
                let take = (HEADER_LEN - self.rx_len).min(data.len());
                if take > 0 {
                    self.rx_append(&data[..take]);
                    data = &mut mem::take(&mut data)[take..];
                }
                if self.rx_len < HEADER_LEN || data.is_empty() {
                    // Judges a header that is whole as soon as it is (nothing to open yet).
                    self.open_rx(sink)?;
                    continue;
                }
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(&self.rx[..HEADER_LEN]);
                let Tls::Record(layer) = &mut self.tls else {
                    return Err(ChannelError::NotOpen);
                };
                let consumed = match layer.read_split(header, data) {
                    Ok(ReadEvent::NeedMore { .. }) => None,
                    Ok(ReadEvent::Data {
                        plaintext,
                        consumed,
                    }) => {
                        self.rx_len = 0;
                        self.note_record(HEADER_LEN + consumed);
                        self.stats.split_records_opened += 1;
                        self.deliver_plaintext(&mut data[plaintext], sink)?;
                        Some(consumed)
                    }
                    Ok(ReadEvent::Handled { consumed }) => {
                        self.rx_len = 0;
                        self.note_record(HEADER_LEN + consumed);
                        Some(consumed)
                    }
                    Ok(ReadEvent::CloseNotify { .. } | ReadEvent::Ignored { .. }) => {
                        return Err(self.eof_reason());
                    }
                    Err(e) => {
                        self.seal_fatal_alert(&e);
                        return Err(e.into());
                    }
                };
                if let Some(consumed) = consumed {
                    data = &mut mem::take(&mut data)[consumed..];
                    continue;
                }
                // The body goes on in a later read: gathered below, as any split record.
                self.stats.records_gathered += 1;
            }
            if self.rx_len > 0 {
                // The rest of the record that began in an earlier read.
                let take = record_missing(&self.rx[..self.rx_len])
                    .min(data.len())
                    .min(RX_LEN - self.rx_len);
                self.rx_append(&data[..take]);
                self.stats.record_bytes_gathered += take as u64;
                data = &mut mem::take(&mut data)[take..];
                self.open_rx(sink)?;
                continue;
            }
            let used = self.open_records_at(data, sink)?;
            data = &mut mem::take(&mut data)[used..];
            if !data.is_empty() && !matches!(self.phase, Phase::Closed) {
                // The start of a record that goes on in the next read.
                let take = data.len().min(RX_LEN);
                if take > HEADER_LEN {
                    self.stats.records_gathered += 1;
                    self.stats.record_bytes_gathered += take as u64;
                }
                self.rx_append(&data[..take]);
                data = &mut mem::take(&mut data)[take..];
                self.open_rx(sink)?;
            }
        }
        Ok(())
    }

    /// Notes a record opened on the record layer (its length on the wire) for `read_hint`.
    fn note_record(&mut self, len: usize) {
        self.last_record_len = len;
        self.read_longest_record = self.read_longest_record.max(len);
    }

    /// Appends received record bytes to `rx`.
    fn rx_append(&mut self, bytes: &[u8]) {
        self.rx_reserve(self.rx_len + bytes.len(), RX_LEN);
        self.rx[self.rx_len..self.rx_len + bytes.len()].copy_from_slice(bytes);
        copies::note(CopySite::RecordInbuf, bytes.len());
        self.rx_len += bytes.len();
        self.rx_peak = self.rx_peak.max(self.rx_len);
    }

    /// Opens the whole records in `rx`; a partial record stays. Callers copy in only whole
    /// records, or the missing part of the one record there, so what is opened is always
    /// all of `rx` or nothing: no record is moved.
    fn open_rx<S: ChannelSink>(&mut self, sink: &mut S) -> Result<(), ChannelError> {
        let mut rx = mem::take(&mut self.rx);
        let len = self.rx_len;
        let r = self.open_records_at(&mut rx[..len], sink);
        if let Ok(used) = r {
            if used > 0 {
                rx.copy_within(used..len, 0);
                self.rx_len = len - used;
            }
        }
        self.rx = rx;
        r.map(|_| ())
    }

    /// Opens the whole records at the start of `buf` in place and hands their cells on;
    /// returns the bytes they took (a partial record at the end is left).
    fn open_records_at<S: ChannelSink>(
        &mut self,
        buf: &mut [u8],
        sink: &mut S,
    ) -> Result<usize, ChannelError> {
        let mut pos = 0;
        while pos < buf.len() && !matches!(self.phase, Phase::Closed) {
            let Tls::Record(layer) = &mut self.tls else {
                return Err(ChannelError::NotOpen);
            };
            let ev = match layer.read(&mut buf[pos..]) {
                Ok(ev) => ev,
                Err(e) => {
                    self.seal_fatal_alert(&e);
                    return Err(e.into());
                }
            };
            match ev {
                ReadEvent::Data {
                    plaintext,
                    consumed,
                } => {
                    self.note_record(consumed);
                    let pt = &mut buf[pos + plaintext.start..pos + plaintext.end];
                    self.deliver_plaintext(pt, sink)?;
                    pos += consumed;
                }
                ReadEvent::Handled { consumed } => {
                    self.note_record(consumed);
                    pos += consumed;
                }
                // close_notify: whatever follows is not Tor data.
                ReadEvent::CloseNotify { .. } | ReadEvent::Ignored { .. } => {
                    return Err(self.eof_reason());
                }
                ReadEvent::NeedMore { .. } => break,
            }
        }
        Ok(pos)
    }

    /// One record's plaintext, decrypted in place in `rx`: the rest of a cell that began in
    /// an earlier record is completed in `inbuf`, then whole cells are framed where they lie
    /// and handed on mutably; a cell that goes on in the next record is copied to `inbuf`.
    fn deliver_plaintext<S: ChannelSink>(
        &mut self,
        mut pt: &mut [u8],
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        while self.in_len > 0 && !pt.is_empty() {
            if matches!(self.phase, Phase::Closed) {
                return Ok(());
            }
            // Only the straddling cell is copied: up to its header, then what the cell
            // still needs (its length is known from the header); the cells after it are
            // framed where they lie in `pt`. At least one byte, so the loop moves on.
            let head = match self.framer.cell_len(&self.inbuf[..self.in_len]) {
                Some(total) => total,
                None => self.framer.circ_id_len() + 3,
            };
            let want = head.saturating_sub(self.in_len).max(1);
            if self.in_len == self.inbuf.len() && !self.grow_inbuf() {
                return Err(ChannelError::TlsInput("receive buffer full".into()));
            }
            let n = want.min(pt.len()).min(self.inbuf.len() - self.in_len);
            self.inbuf[self.in_len..self.in_len + n].copy_from_slice(&pt[..n]);
            copies::note(CopySite::ChanInbuf, n);
            self.in_len += n;
            self.in_peak = self.in_peak.max(self.in_len);
            pt = &mut pt[n..];
            self.process_open_cells(sink)?;
        }
        if pt.is_empty() || matches!(self.phase, Phase::Closed) {
            return Ok(());
        }
        let mut pos = 0;
        while let Some((cell, used)) = self.framer.next_mut(&mut pt[pos..])? {
            pos += used;
            self.on_open_cell(cell, sink)?;
            if matches!(self.phase, Phase::Closed) {
                return Ok(());
            }
        }
        let tail = &pt[pos..];
        if !tail.is_empty() {
            while self.inbuf.len() < tail.len() {
                if !self.grow_inbuf() {
                    return Err(ChannelError::TlsInput("receive buffer full".into()));
                }
            }
            self.inbuf[..tail.len()].copy_from_slice(tail);
            copies::note(CopySite::ChanInbuf, tail.len());
            self.in_len = tail.len();
            self.in_peak = self.in_peak.max(self.in_len);
        }
        Ok(())
    }

    /// The cells complete in `inbuf` on an open channel (after the switch the handshake is
    /// over: `process_cells` does the same with the handshake's phases).
    fn process_open_cells<S: ChannelSink>(&mut self, sink: &mut S) -> Result<(), ChannelError> {
        let mut buf = mem::take(&mut self.inbuf);
        let mut pos = 0;
        let r = loop {
            if !matches!(self.phase, Phase::Open) {
                break Ok(());
            }
            match self.framer.next_mut(&mut buf[pos..self.in_len]) {
                Ok(Some((cell, used))) => {
                    pos += used;
                    if let Err(e) = self.on_open_cell(cell, sink) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        buf.copy_within(pos..self.in_len, 0);
        self.in_len -= pos;
        self.inbuf = buf;
        r
    }

    /// Queues the alert a record-layer failure calls for (RFC 8446 §6.2), where one is due.
    fn seal_fatal_alert(&mut self, e: &TlsRecordError) {
        if let Some(alert) = e.alert() {
            self.seal_alert(Some(alert));
        }
    }

    /// Seals close_notify (`None`) or a fatal alert into the TLS output buffer, behind
    /// what waits there. Nothing more is sealed after it.
    fn seal_alert(&mut self, fatal: Option<rustls::AlertDescription>) {
        let Tls::Record(layer) = &mut self.tls else {
            return;
        };
        let at = tls_out_room(
            &mut self.tls_out,
            &mut self.tls_out_start,
            ALERT_RECORD_LEN,
            self.tls_out_cap,
        );
        self.tls_out.resize(at + ALERT_RECORD_LEN, 0);
        let r = match fatal {
            Some(a) => layer.seal_fatal_alert(&mut self.tls_out[at..], a),
            None => layer.seal_close_notify(&mut self.tls_out[at..]),
        };
        // Refused only after an earlier close_notify or alert: nothing to add.
        let n = r.unwrap_or(0);
        self.tls_out.truncate(at + n);
        self.tls_out_peak = self.tls_out_peak.max(self.tls_out.len());
        self.out.tls_pending = self.tls_out.len() - self.tls_out_start;
    }

    fn eof_reason(&self) -> ChannelError {
        if self.in_len > 0 {
            ChannelError::TruncatedCell(self.in_len)
        } else {
            ChannelError::PeerClosed
        }
    }

    /// Moves decrypted bytes into the receive buffer and processes every complete cell.
    fn drain_plaintext<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        let Tls::Rustls { conn, .. } = &self.tls else {
            return Ok(());
        };
        if !conn.is_handshaking() {
            self.with_handshake(|ch, hs| {
                let conn = ch.rustls().ok_or(ChannelError::NotOpen)?;
                hs.on_tls_established(conn, ch.initiator)?;
                Ok(None::<()>)
            })?;
        }
        loop {
            if matches!(self.phase, Phase::Closed) {
                return Ok(());
            }
            // How much to copy into `inbuf`: the rest of a cell that straddles two records
            // (then whole cells are framed in place again), else what fits.
            let mut want = if self.in_len > 0 && self.in_len < CELL_LEN {
                CELL_LEN - self.in_len
            } else {
                usize::MAX
            };
            if self.in_len == 0 && matches!(self.phase, Phase::Open) {
                // Whole cells straight from rustls's plaintext, without copying them into
                // `inbuf` first (the copy map): the sink gets them read-only.
                let Tls::Rustls { conn, .. } = &mut self.tls else {
                    return Ok(());
                };
                let mut rd = conn.reader();
                let chunk = match rd.fill_buf() {
                    Ok(c) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(ChannelError::TlsInput(e.to_string())),
                };
                if chunk.is_empty() {
                    return Ok(());
                }
                let mut pos = 0;
                let link_version = self.framer.link_version();
                while let Some((cell, used)) = self.framer.next(&chunk[pos..])? {
                    pos += used;
                    let cell = match cell {
                        Cell::Fixed(c) => OpenCell::FixedRef(c),
                        Cell::Var(v) => OpenCell::Var(v),
                    };
                    open_cell(&mut self.stats, link_version, &mut self.out, cell, sink)?;
                }
                let tail = chunk.len() - pos;
                // Copied once inside rustls (decrypted record → its plaintext queue).
                copies::note(CopySite::TlsPlaintext, pos);
                rd.consume(pos);
                if tail == 0 {
                    continue;
                }
                // A cell that goes on in the next record: its start goes to `inbuf`.
                want = tail;
            }
            if self.in_len == self.inbuf.len() && !self.grow_inbuf() {
                // Unreachable: a complete cell is at most half the bound and is consumed.
                return Err(ChannelError::TlsInput("receive buffer full".into()));
            }
            let end = self.in_len.saturating_add(want).min(self.inbuf.len());
            let Tls::Rustls { conn, .. } = &mut self.tls else {
                return Ok(());
            };
            match conn.reader().read(&mut self.inbuf[self.in_len..end]) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    // These bytes were copied once inside rustls (decrypted record →
                    // its plaintext queue) and once more here, into `inbuf`.
                    copies::note(CopySite::TlsPlaintext, n);
                    copies::note(CopySite::ChanInbuf, n);
                    self.in_len += n;
                    self.in_peak = self.in_peak.max(self.in_len);
                    self.process_cells(now, rng, sink)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                // UnexpectedEof cannot happen (we never signal EOF to rustls); be total.
                Err(e) => return Err(ChannelError::TlsInput(e.to_string())),
            }
        }
    }

    /// Doubles the receive buffer (from [`BUF_FLOOR`]) up to [`INBUF_LEN`], keeping what
    /// it holds. False at the bound.
    fn grow_inbuf(&mut self) -> bool {
        let len = self.inbuf.len();
        if len >= INBUF_LEN {
            return false;
        }
        self.resize_inbuf((len * 2).clamp(BUF_FLOOR, INBUF_LEN));
        true
    }

    /// Moves the receive buffer's bytes into a new buffer of `len` (at least `in_len`).
    fn resize_inbuf(&mut self, len: usize) {
        let mut buf = if len == 0 {
            Box::default()
        } else {
            vec![0u8; len].into_boxed_slice()
        };
        buf[..self.in_len].copy_from_slice(&self.inbuf[..self.in_len]);
        self.inbuf = buf;
    }

    /// Gives back buffer room a burst left behind (once a second, from the node's memory
    /// housekeeping; issue #15): each buffer that was not used at all since the last call is
    /// freed, and one that used at most a quarter of its capacity shrinks to a power of two
    /// over its use (at least [`BUF_FLOOR`]). A busy channel keeps its buffers, so steady
    /// traffic allocates nothing. Returns the bytes of capacity given back. The bounds
    /// (`OutputFull`, [`wants_read`](Self::wants_read)) count bytes, not capacity: unchanged.
    pub fn trim_buffers(&mut self) -> usize {
        let mut freed = self.out.trim();
        if self.tls_out_start > 0 {
            self.tls_out.drain(..self.tls_out_start);
            self.tls_out_start = 0;
        }
        freed += trim_vec(&mut self.tls_out, self.tls_out_peak);
        self.tls_out_peak = self.tls_out.len();
        let cap = self.inbuf.len();
        if let Some(keep) = trimmed_capacity(cap, self.in_len, self.in_peak) {
            self.resize_inbuf(keep);
            freed += cap - keep;
        }
        self.in_peak = self.in_len;
        let cap = self.rx.len();
        if let Some(keep) = trimmed_capacity(cap, self.rx_len, self.rx_peak) {
            let mut buf = if keep == 0 {
                Box::default()
            } else {
                vec![0u8; keep].into_boxed_slice()
            };
            buf[..self.rx_len].copy_from_slice(&self.rx[..self.rx_len]);
            self.rx = buf;
            freed += cap - keep;
        }
        self.rx_peak = self.rx_len;
        freed
    }

    /// Bytes of buffer capacity the channel holds now: receive buffers, cell queue, TLS
    /// output.
    pub fn buffer_capacity(&self) -> usize {
        self.inbuf.len() + self.rx.len() + self.out.capacity() + self.tls_out.capacity()
    }

    /// The rustls connection, while the channel is on it (the handshake always is).
    pub(super) fn rustls(&self) -> Option<&Connection> {
        match &self.tls {
            Tls::Rustls { conn, .. } => Some(conn),
            _ => None,
        }
    }

    fn process_cells<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        // Take the buffer out so cells can borrow it while handlers borrow `self`
        // (an empty boxed slice does not allocate).
        let mut buf = std::mem::take(&mut self.inbuf);
        let r = self.process_cells_in(&mut buf, now, rng, sink);
        self.inbuf = buf;
        r
    }

    fn process_cells_in<R: RngCore + CryptoRng, S: ChannelSink>(
        &mut self,
        buf: &mut [u8],
        now: SystemTime,
        rng: &mut R,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        let mut pos = 0;
        loop {
            let avail = &mut buf[pos..self.in_len];
            match self.phase {
                Phase::Closed => break,
                Phase::Open => {
                    let Some((cell, used)) = self.framer.next_mut(avail)? else {
                        break;
                    };
                    pos += used;
                    self.on_open_cell(cell, sink)?;
                }
                Phase::Handshaking(_) => {
                    let Some((cell, used)) = self.framer.next(avail)? else {
                        break;
                    };
                    pos += used;
                    let wire = &avail[..used];
                    let opened = self
                        .with_handshake(|ch, hs| ch.on_handshake_cell(hs, cell, wire, now, rng))?;
                    if let Some((info, skew)) = opened {
                        self.peer = Some(info.peer);
                        if let Some(skew_secs) = skew {
                            sink.event(ChannelEvent::ClockSkew { skew_secs });
                        }
                        sink.event(ChannelEvent::Open(info));
                    }
                }
            }
        }
        buf.copy_within(pos..self.in_len, 0);
        self.in_len -= pos;
        Ok(())
    }

    /// Runs `f` with the handshake state taken out of `self` (so both can be borrowed), then
    /// puts it back, or switches to `Open` if `f` says the handshake finished. Outside the
    /// handshake, `f` is not called.
    pub(super) fn with_handshake<T>(
        &mut self,
        f: impl FnOnce(&mut Channel, &mut Handshake) -> Result<Option<T>, ChannelError>,
    ) -> Result<Option<T>, ChannelError> {
        if !matches!(self.phase, Phase::Handshaking(_)) {
            return Ok(None);
        }
        let Phase::Handshaking(mut hs) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return Ok(None);
        };
        let r = f(self, &mut hs);
        match &r {
            Ok(Some(_)) => {
                self.phase = Phase::Open;
                self.out.open = true;
            }
            _ => self.phase = Phase::Handshaking(hs),
        }
        r
    }

    /// Cells on an open channel (tor-spec §"Cell packet format"; C `command.c`,
    /// `channeltls.c: channel_tls_handle_cell/_var_cell`).
    fn on_open_cell<S: ChannelSink>(
        &mut self,
        cell: CellMut<'_>,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        let cell = match cell {
            CellMut::Fixed(c) => OpenCell::FixedMut(c),
            CellMut::Var(v) => OpenCell::Var(v),
        };
        open_cell(
            &mut self.stats,
            self.framer.link_version(),
            &mut self.out,
            cell,
            sink,
        )
    }

    fn fail<S: ChannelSink>(&mut self, reason: ChannelError, sink: &mut S) {
        self.phase = Phase::Closed;
        self.out.open = false;
        self.out.clear_plaintext();
        match &mut self.tls {
            Tls::Rustls { conn, .. } => conn.send_close_notify(),
            // After a fatal alert (already sealed) this adds nothing.
            Tls::Record(_) => self.seal_alert(None),
            Tls::Taken => {}
        }
        sink.event(ChannelEvent::Closed(reason));
    }

    /// Closes the channel from our side (a TLS close_notify is queued).
    pub fn close<S: ChannelSink>(&mut self, sink: &mut S) {
        if !matches!(self.phase, Phase::Closed) {
            self.fail(ChannelError::LocalClose, sink);
        }
    }

    /// The TCP connection reached EOF. Returns the close reason.
    pub fn handle_eof<S: ChannelSink>(&mut self, sink: &mut S) -> ChannelError {
        let reason = self.eof_reason();
        if !matches!(self.phase, Phase::Closed) {
            self.fail(reason.clone(), sink);
        }
        reason
    }

    /// Closes a channel still handshaking after `handshake_timeout`.
    pub fn check_timeout<S: ChannelSink>(
        &mut self,
        now: SystemTime,
        sink: &mut S,
    ) -> Result<(), ChannelError> {
        if let Phase::Handshaking(_) = self.phase {
            let age = now.duration_since(self.started_at).unwrap_or_default();
            if age >= self.config.handshake_timeout {
                self.fail(ChannelError::HandshakeTimeout, sink);
                return Err(ChannelError::HandshakeTimeout);
            }
        }
        Ok(())
    }

    /// Queues a fixed cell for the peer; see [`CellQueue::send_cell`].
    pub fn send_cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
    ) -> Result<(), ChannelError> {
        self.out.send_cell(circ_id, cmd, body)
    }

    /// The output queue, to send several cells or encode them in place.
    pub fn queue(&mut self) -> &mut CellQueue {
        &mut self.out
    }

    /// Hands the queued cells to rustls, which seals them into records.
    fn seal_queued(&mut self) {
        let Tls::Rustls { conn, .. } = &mut self.tls else {
            return;
        };
        if !self.out.is_empty() {
            if !matches!(self.phase, Phase::Closed) {
                // With no rustls buffer limit the writer takes everything; the queue is
                // cleared either way so a refusal cannot wedge it.
                copies::note(CopySite::TlsRecord, self.out.plaintext().len());
                let _ = conn.writer().write_all(self.out.plaintext());
            }
            self.out.clear_plaintext();
        }
    }

    /// On the record layer: seals the queued cells as records into `dst` (the plaintext
    /// copied behind a 5-byte header gap, sealed there: no buffer per record), a KeyUpdate
    /// owed to the peer first (RFC 8446 §4.6.3). Records run to the end of `dst` (up to
    /// 2^14 bytes of plaintext, RFC 8446 §5.1), except that no record starts in a rest of
    /// `dst` too small for one whole cell unless it takes all that is queued: a tail
    /// buffer's last bytes would otherwise carry a tiny record, visible on the wire (rustls
    /// and OpenSSL send full records under bulk) and splitting a cell for the receiver.
    /// Such a rest stays unused; the caller offers the next buffer ([`wants_write_into`]).
    /// A record the size limit cuts ends on a cell boundary when the next one still starts
    /// in `dst` (free: no buffer room is lost). What does not fit stays queued. Returns
    /// the bytes written.
    ///
    /// [`wants_write_into`]: Self::wants_write_into
    fn seal_records_into(&mut self, dst: &mut [u8]) -> usize {
        let Tls::Record(layer) = &mut self.tls else {
            return 0;
        };
        const OVERHEAD: usize = HEADER_LEN + SEAL_TRAILER_LEN;
        let cell = self.framer.fixed_cell_len();
        let mut n = 0;
        loop {
            if layer.key_update_due() {
                if dst.len() - n < KEY_UPDATE_RECORD_LEN {
                    break;
                }
                match layer.seal_key_update(&mut dst[n..], false) {
                    Ok(k) => n += k,
                    // Closed (after our alert): nothing more goes out.
                    Err(_) => break,
                }
            }
            let pt = self.out.plaintext();
            let fits = (dst.len() - n)
                .saturating_sub(OVERHEAD)
                .min(MAX_PLAINTEXT_LEN);
            if pt.is_empty() || fits == 0 {
                break;
            }
            let k = if pt.len() <= fits {
                // The flush's last record: all that is left.
                pt.len()
            } else if fits < cell {
                // Not even one cell fits: leave this rest unused.
                break;
            } else {
                let aligned = fits - fits % cell;
                let left = dst.len() - n - (aligned + OVERHEAD);
                if aligned < fits && left >= OVERHEAD + cell.min(pt.len() - aligned) {
                    aligned
                } else {
                    fits
                }
            };
            dst[n + HEADER_LEN..n + HEADER_LEN + k].copy_from_slice(&pt[..k]);
            copies::note(CopySite::RecordSeal, k);
            match layer.seal_app_data(&mut dst[n..], k) {
                Ok(w) => {
                    n += w;
                    self.out.consume_plaintext(k);
                }
                // The key's record limit: a KeyUpdate goes first, at the loop's top.
                Err(TlsRecordError::KeyUpdateDue) => continue,
                Err(_) => break,
            }
        }
        n
    }

    /// On the record layer: seals everything queued into the TLS output buffer.
    fn seal_records_into_tls_out(&mut self) {
        loop {
            let due = matches!(&self.tls, Tls::Record(l) if l.key_update_due());
            let pt = self.out.plaintext().len();
            if pt == 0 && !due {
                break;
            }
            // Records the size limit cuts end on cell boundaries (`seal_records_into`).
            let cell = self.framer.fixed_cell_len();
            let records = pt
                .div_ceil(MAX_PLAINTEXT_LEN - MAX_PLAINTEXT_LEN % cell)
                .max(1);
            let need = pt + records * (HEADER_LEN + SEAL_TRAILER_LEN) + KEY_UPDATE_RECORD_LEN;
            let at = tls_out_room(
                &mut self.tls_out,
                &mut self.tls_out_start,
                need,
                self.tls_out_cap,
            );
            self.tls_out.resize(at + need, 0);
            let mut buf = mem::take(&mut self.tls_out);
            let n = self.seal_records_into(&mut buf[at..]);
            buf.truncate(at + n);
            self.tls_out = buf;
            if n == 0 {
                // Closed: what is queued cannot go out.
                self.out.clear_plaintext();
                break;
            }
        }
    }

    /// Encrypts queued cells straight into `dst` (the socket's send buffer) and returns how
    /// many TLS bytes were written there: this skips the copy through our own TLS output
    /// buffer (the copy map, `docs/architecture.md`). Writes nothing while bytes wait in that
    /// buffer (they go first, through [`pending_output`](Self::pending_output)); records that
    /// do not fit stay in rustls until the next call or `pending_output`.
    pub fn write_output_into(&mut self, dst: &mut [u8]) -> usize {
        if self.tls_out_start < self.tls_out.len() {
            return 0;
        }
        if matches!(self.tls, Tls::Record(_)) {
            if matches!(self.phase, Phase::Closed) {
                return 0;
            }
            return self.seal_records_into(dst);
        }
        self.seal_queued();
        let Tls::Rustls { conn, .. } = &mut self.tls else {
            return 0;
        };
        let mut n = 0;
        while n < dst.len() && conn.wants_write() {
            let mut w = &mut dst[n..];
            // Writing into a slice fails only when it is full.
            let k = conn.write_tls(&mut w).unwrap_or(0);
            if k == 0 {
                break;
            }
            n += k;
        }
        copies::note(CopySite::TlsOut, n);
        n
    }

    /// True when [`write_output_into`](Self::write_output_into) has more to write into a
    /// next buffer: cells or records wait, and nothing waits in the TLS output buffer
    /// (which goes first, through [`pending_output`](Self::pending_output)). A short write
    /// alone does not say it: the record layer leaves a buffer's rest unused when one
    /// cell's record does not fit there.
    pub fn wants_write_into(&self) -> bool {
        if self.tls_out_start < self.tls_out.len() {
            return false;
        }
        match &self.tls {
            Tls::Record(layer) => {
                !matches!(self.phase, Phase::Closed)
                    && (!self.out.is_empty() || layer.key_update_due())
            }
            Tls::Rustls { conn, .. } => conn.wants_write() || !self.out.is_empty(),
            Tls::Taken => false,
        }
    }

    /// Encrypts queued cells and returns the TLS bytes waiting to be sent. Call
    /// [`consume_output`](Self::consume_output) with how many the socket took.
    pub fn pending_output(&mut self) -> &[u8] {
        self.seal_queued();
        // Drop the sent prefix when it is at least half the buffer (the writer below also
        // drops it before records would not fit: the prefix does not count against the
        // bound, and keeping it would grow the buffer past its cap).
        if self.tls_out_start > 0 && self.tls_out_start * 2 >= self.tls_out.len() {
            self.tls_out.drain(..self.tls_out_start);
            self.tls_out_start = 0;
        }
        if matches!(self.tls, Tls::Record(_)) {
            if !matches!(self.phase, Phase::Closed) {
                self.seal_records_into_tls_out();
            }
            self.tls_out_peak = self.tls_out_peak.max(self.tls_out.len());
            self.out.tls_pending = self.tls_out.len() - self.tls_out_start;
        } else {
            self.pull_rustls_output();
        }
        &self.tls_out[self.tls_out_start..]
    }

    /// Marks `n` bytes of [`pending_output`](Self::pending_output) as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.tls_out_start = (self.tls_out_start + n).min(self.tls_out.len());
        if self.tls_out_start == self.tls_out.len() {
            self.tls_out.clear();
            self.tls_out_start = 0;
        }
        self.out.tls_pending = self.tls_out.len() - self.tls_out_start;
    }

    /// Appends all pending output to `dst` and marks it sent.
    pub fn write_output(&mut self, dst: &mut Vec<u8>) {
        let n = {
            let out = self.pending_output();
            dst.extend_from_slice(out);
            out.len()
        };
        self.consume_output(n);
    }

    /// False when our output is past its high-water mark (or the channel is closed): stop
    /// reading from the peer until the output drains.
    pub fn wants_read(&self) -> bool {
        !matches!(self.phase, Phase::Closed) && !self.out.over_high_water()
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// A client channel ([`new_client`](Self::new_client)): we prove no identity.
    pub fn is_client(&self) -> bool {
        self.ctx.is_none()
    }

    /// The authenticated peer, once open.
    pub fn peer(&self) -> Option<PeerIdentity> {
        self.peer
    }

    /// Negotiated link protocol version, 0 before VERSIONS.
    pub fn link_version(&self) -> u16 {
        self.framer.link_version()
    }

    pub fn peer_addr(&self) -> IpAddr {
        self.peer_addr
    }

    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// The most bytes the next read into a `buf_size` receive buffer should take, so that
    /// it ends right after a record's header: then the record's body arrives whole at the
    /// start of the next buffer and is opened where it lies behind that header
    /// ([`TlsRecordLayer::read_split`]) instead of being cut by the buffer's end and
    /// gathered whole (`RecordInbuf`, the copy map). On Fors's record layer only.
    ///
    /// The read takes what the record under way still lacks, then as many records as fit
    /// of the length the peer sent most recently, then the next header. Senders write runs
    /// of equal records (C tor one per 4 KiB buffer chunk, rustls and Fors full 2^14-byte
    /// ones), each flush ending in a shorter one: so the guess is the longest record of the
    /// read just made, or the one under way if longer (the last record opened if the read
    /// opened none). A guess that fails costs what an uncapped read costs: the record the
    /// read cuts is gathered, and the next read starts over from the header it knows. A
    /// guess too long for the records that follow (a run of long ones ended) makes one
    /// short read, and the next guess is the short records' length: a peer that alternates
    /// lengths can at most double the reads its bytes take, and a run of small records
    /// still fills each read.
    ///
    /// A capped read costs the shard a single receive where a multishot one would do
    /// (measured: about 0.3 s/GB more kernel time at an exit reading a C tor relay's
    /// records, whose lengths follow its buffer chunks and rarely repeat). So the hint
    /// watches its own use. A capped read that took its whole cap *hits* when it ended
    /// right after a header and misses otherwise. One that came short (the sender had
    /// sent no more) neither: an uncapped read would have been the same. One longer than
    /// its cap was not capped (a multishot receive made it before its cancel landed) and
    /// is not judged. The hint gives no cap for the next [`HINT_PAUSE_READS`] reads (the
    /// shard goes back to multishot receives), then tries again, when more than half of
    /// the last 16 full reads missed (lengths it cannot guess), or when none of the last
    /// 16 capped reads was full (a quiet channel: caps that never bind only cost single
    /// receives). Records longer than a buffer are never capped for: they are gathered
    /// whatever the reads.
    pub fn read_hint(&mut self, buf_size: usize) -> Option<usize> {
        if !matches!(self.tls, Tls::Record(_)) || matches!(self.phase, Phase::Closed) {
            return None;
        }
        if let Some(cap) = self.hinted.take() {
            if self.last_read_len < cap {
                self.hint_full <<= 1;
            } else if self.last_read_len == cap {
                self.hint_full = self.hint_full << 1 | 1;
                let hit = self.rx_len == HEADER_LEN;
                self.hint_misses = self.hint_misses << 1 | u16::from(!hit);
            }
        }
        if self.hint_pause > 0 {
            self.hint_pause -= 1;
            return None;
        }
        if self.hint_misses.count_ones() > 8 || self.hint_full == 0 {
            self.hint_misses = 0;
            self.hint_full = u16::MAX;
            self.hint_pause = HINT_PAUSE_READS;
            self.stats.read_hint_pauses += 1;
            return None;
        }
        // The record under way (its length, if its header is in) and what it lacks.
        let (current, missing) = match record_len(&self.rx[..self.rx_len]) {
            Some(len) => (len, len.saturating_sub(self.rx_len)),
            None if self.rx_len == 0 => (0, 0),
            // Part of a header: assume the record is as long as the last one.
            None => (
                self.last_record_len,
                self.last_record_len.saturating_sub(self.rx_len),
            ),
        };
        if current > buf_size {
            return None;
        }
        let recent = if self.read_longest_record > 0 {
            self.read_longest_record
        } else {
            self.last_record_len
        };
        // A guess that cannot fit a buffer whole with the next header is no guess.
        let recent = if recent + HEADER_LEN <= buf_size {
            recent
        } else {
            0
        };
        let guess = current.max(recent);
        if guess == 0 {
            return None;
        }
        let room = buf_size.checked_sub(missing + HEADER_LEN)?;
        let cap = missing + room / guess * guess + HEADER_LEN;
        self.hinted = Some(cap);
        Some(cap)
    }

    /// The link cells dropped for a peer's protocol violation since the last call (the
    /// node counts them for its shard's protocol-warning line), starting over.
    pub fn take_link_warnings(&mut self) -> LinkWarnings {
        std::mem::take(&mut self.stats.link_warnings)
    }

    /// Allocator for circuits we create on this channel (high-bit rule).
    pub fn circ_id_allocator(&self) -> super::CircIdAllocator {
        super::CircIdAllocator::new(self.initiator)
    }
}

/// The length of the TLS record at the start of `data` if all of it is there (RFC 8446
/// §5.1: a 5-byte header whose last two bytes are the length of what follows).
fn whole_record_len(data: &[u8]) -> Option<usize> {
    let len = record_len(data)?;
    (len <= data.len()).then_some(len)
}

/// The length on the wire of the record whose header starts `data`, once the header is in.
fn record_len(data: &[u8]) -> Option<usize> {
    let h = data.get(..HEADER_LEN)?;
    Some(HEADER_LEN + usize::from(u16::from_be_bytes([h[3], h[4]])))
}

/// Bytes the record starting `buf` still lacks (its header's first).
fn record_missing(buf: &[u8]) -> usize {
    match record_len(buf) {
        Some(len) => len.saturating_sub(buf.len()),
        None => HEADER_LEN - buf.len(),
    }
}

/// Whether the header at the start of `data` claims a record longer than TLS allows.
fn record_claims_too_much(data: &[u8]) -> bool {
    record_len(data).is_some_and(|l| l > MAX_ANY_RECORD_LEN)
}

/// Whether the bytes at the start of `data` cannot begin a TLS record header: a content type
/// outside 20–24 or a major version other than 3 (RFC 8446 §5.1, RFC 5246 §6.2.1).
fn not_tls_header(data: &[u8]) -> bool {
    data.first().is_some_and(|t| !(20..=24).contains(t)) || data.get(1).is_some_and(|&v| v != 3)
}

/// The bytes of the whole records at the start of `data`, at most `bound` of them.
fn whole_records_len(data: &[u8], bound: usize) -> usize {
    let mut end = 0;
    while let Some(len) = whole_record_len(&data[end..]) {
        if end + len > bound {
            break;
        }
        end += len;
    }
    end
}

/// Makes room for `extra` more bytes at the end of the TLS output buffer (dropping the
/// sent prefix first when they would not fit, as `GrowWithin` does) and returns where they
/// go.
fn tls_out_room(v: &mut Vec<u8>, start: &mut usize, extra: usize, cap: usize) -> usize {
    if v.len() + extra > v.capacity() && *start > 0 {
        v.drain(..*start);
        *start = 0;
    }
    reserve_within(v, extra, cap);
    v.len()
}

/// An open channel's cell: in the channel's receive buffer (may be changed in place), or
/// straight in rustls's plaintext (see `Channel::drain_plaintext`).
enum OpenCell<'a> {
    FixedMut(FixedCellMut<'a>),
    FixedRef(FixedCell<'a>),
    Var(VarCell<'a>),
}

/// Cells on an open channel (tor-spec §"Cell packet format"; C `command.c`,
/// `channeltls.c: channel_tls_handle_cell/_var_cell`).
fn open_cell<S: ChannelSink>(
    stats: &mut ChannelStats,
    link_version: u16,
    out: &mut CellQueue,
    cell: OpenCell<'_>,
    sink: &mut S,
) -> Result<(), ChannelError> {
    let (circ_id, cmd) = match &cell {
        OpenCell::FixedMut(c) => (c.circ_id, c.cmd),
        OpenCell::FixedRef(c) => (c.circ_id, c.cmd),
        OpenCell::Var(v) => return open_var_cell(stats, v),
    };
    match cmd {
        ChanCmd::RELAY
        | ChanCmd::RELAY_EARLY
        | ChanCmd::DESTROY
        | ChanCmd::CREATE
        | ChanCmd::CREATED
        | ChanCmd::CREATE_FAST
        | ChanCmd::CREATED_FAST
        | ChanCmd::CREATE2
        | ChanCmd::CREATED2 => {
            stats.cells_delivered += 1;
            match cell {
                OpenCell::FixedMut(c) => sink.cell(circ_id, cmd, c.body, out),
                OpenCell::FixedRef(c) => sink.cell_ref(circ_id, cmd, c.body, out),
                OpenCell::Var(_) => {}
            }
        }
        // Link ≥ 5 only; a malformed one is dropped, not fatal (C
        // `channel_tls_process_padding_negotiate_cell`).
        ChanCmd::PADDING_NEGOTIATE if link_version >= 5 => {
            let body: &[u8] = match &cell {
                OpenCell::FixedMut(c) => &c.body[..],
                OpenCell::FixedRef(c) => &c.body[..],
                OpenCell::Var(_) => &[],
            };
            match PaddingNegotiate::parse(body) {
                Ok(p) => sink.event(ChannelEvent::PaddingNegotiate(p)),
                Err(_) => {
                    stats.cells_ignored += 1;
                    stats.link_warnings.padding_negotiate_malformed += 1;
                }
            }
        }
        // Dropped; C logs both at its protocol-warning severity.
        ChanCmd::PADDING_NEGOTIATE => {
            stats.cells_ignored += 1;
            stats.link_warnings.padding_negotiate_old_link += 1;
        }
        ChanCmd::NETINFO => {
            stats.cells_ignored += 1;
            stats.link_warnings.netinfo_late += 1;
        }
        // PADDING, unknown commands: dropped (C: at info or debug).
        _ => stats.cells_ignored += 1,
    }
    Ok(())
}

/// Variable-length cells on an open channel.
fn open_var_cell(stats: &mut ChannelStats, v: &VarCell<'_>) -> Result<(), ChannelError> {
    match v.cmd {
        // C's handlers for these refuse them outside the handshake and close.
        ChanCmd::CERTS | ChanCmd::AUTH_CHALLENGE | ChanCmd::AUTHENTICATE => {
            return Err(ChannelError::UnexpectedCell {
                cmd: v.cmd,
                when: "after the handshake",
            })
        }
        // A repeated VERSIONS is ignored, but C closes on a malformed one at any time
        // (`channel_tls_process_versions_cell`: odd payload length).
        ChanCmd::VERSIONS if !v.body.len().is_multiple_of(2) => {
            return Err(ChannelError::UnexpectedCell {
                cmd: v.cmd,
                when: "with an odd length",
            })
        }
        // A well-formed repeated VERSIONS: ignored, with C's protocol warning.
        ChanCmd::VERSIONS => {
            stats.cells_ignored += 1;
            stats.link_warnings.versions_repeated += 1;
        }
        // VPADDING, AUTHORIZE, unknown variable cells.
        _ => stats.cells_ignored += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::chan::PaddingCommand;

    /// Counts the events it gets.
    #[derive(Default)]
    struct Events(usize);

    impl ChannelSink for Events {
        fn cell(&mut self, _: CircId, _: ChanCmd, _: &mut [u8; CELL_BODY_LEN], _: &mut CellQueue) {}
        fn event(&mut self, _: ChannelEvent) {
            self.0 += 1;
        }
    }

    fn fixed(stats: &mut ChannelStats, link: u16, cmd: ChanCmd, body: &[u8; CELL_BODY_LEN]) {
        let mut out = CellQueue::new(4);
        let mut sink = Events::default();
        let cell = OpenCell::FixedRef(FixedCell {
            circ_id: CircId(0),
            cmd,
            body,
        });
        open_cell(stats, link, &mut out, cell, &mut sink).unwrap();
        assert_eq!(sink.0, 0, "a dropped cell makes no event");
    }

    /// C tor logs each of these at `LOG_PROTOCOL_WARN` and keeps the channel
    /// (`channeltls.c`): each is counted once, and taking them starts over.
    #[test]
    fn link_cells_c_warns_about_are_counted_and_kept_open() {
        let mut stats = ChannelStats::default();
        let mut pad = [0u8; CELL_BODY_LEN];
        PaddingNegotiate {
            command: PaddingCommand::Start,
            ito_low_ms: 1500,
            ito_high_ms: 9500,
        }
        .encode(&mut pad);
        fixed(&mut stats, 4, ChanCmd::PADDING_NEGOTIATE, &pad);
        let mut bad = pad;
        bad[0] = 1; // version 1: malformed
        fixed(&mut stats, 5, ChanCmd::PADDING_NEGOTIATE, &bad);
        fixed(&mut stats, 5, ChanCmd::NETINFO, &[0; CELL_BODY_LEN]);
        // PADDING is not a violation.
        fixed(&mut stats, 5, ChanCmd::PADDING, &[0; CELL_BODY_LEN]);
        let versions = VarCell {
            circ_id: CircId(0),
            cmd: ChanCmd::VERSIONS,
            body: &[0, 4, 0, 5],
        };
        open_var_cell(&mut stats, &versions).unwrap();
        let vpadding = VarCell {
            circ_id: CircId(0),
            cmd: ChanCmd::VPADDING,
            body: &[0; 3],
        };
        open_var_cell(&mut stats, &vpadding).unwrap();
        assert_eq!(stats.cells_ignored, 6);
        assert_eq!(
            stats.link_warnings,
            LinkWarnings {
                versions_repeated: 1,
                netinfo_late: 1,
                padding_negotiate_old_link: 1,
                padding_negotiate_malformed: 1,
            }
        );
        // A well-formed one on a v5 link is the node's, not a violation.
        let mut out = CellQueue::new(4);
        let mut sink = Events::default();
        let cell = OpenCell::FixedRef(FixedCell {
            circ_id: CircId(0),
            cmd: ChanCmd::PADDING_NEGOTIATE,
            body: &pad,
        });
        open_cell(&mut stats, 5, &mut out, cell, &mut sink).unwrap();
        assert_eq!(sink.0, 1);
        assert_eq!(stats.link_warnings.padding_negotiate_old_link, 1);
        let taken = std::mem::take(&mut stats.link_warnings);
        assert!(!taken.is_empty());
        assert!(stats.link_warnings.is_empty());
    }
}
