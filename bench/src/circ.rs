//! A client circuit, sans-IO: build it hop by hop (CREATE2 / CREATE_FAST, then EXTEND2),
//! open exit streams to the sink, move verified data both ways under SENDME flow control.
//!
//! The handshakes, the tor1 layers and building and opening relay cells are the test kit's
//! client circuit (`fors_testkit::circuit`, shared with the integration tests); this module
//! adds the load generator's paths, streams, flow control and statistics.
//!
//! Cells go out through a [`CellOut`] (the TLS channel's queue in real runs, a `Vec` in tests);
//! cells come in through [`Circuit::on_cell`]. Time is passed in.
//!
//! Flow control with tor1 circuits is the classic fixed-window scheme (tor-spec §"Flow
//! control"), since we do not ask for congestion control in their handshakes:
//! * circuit windows start at 1000 DATA cells and a SENDME adds 100; our circuit SENDMEs are
//!   version 1, carrying the running digest of the 100th DATA cell received (prop 289), and
//!   the SENDMEs we receive must carry the digest of our own 100th DATA cell, or the circuit
//!   fails;
//! * stream windows start at 500 and a (version-less, empty) stream SENDME adds 50.
//!
//! With `--relay-crypto cgo` every hop whose descriptor advertises CGO (Relay=6, with
//! Relay=5 and FlowCtrl=2 as C tor's `supports_cgo` wants) is asked for it together with
//! congestion control ([`fors_testkit::circuit::cgo_request`]): cells to and from a CGO hop
//! are in relay cell format v1 and its SENDME tags are 16-byte CGO tags. With CC on at the
//! last hop (prop 324) the exit acknowledges every `sendme_inc`-th DATA cell (its CC_RESPONSE
//! value) and we acknowledge every `sendme_inc`-th one it sends, each SENDME v1 with the tag
//! of that cell; streams have no windows and no stream SENDMEs (format v1 cannot carry them),
//! and an XOFF from the exit pauses the stream's upload until an XON. Our own sending keeps a
//! fixed window of 1000 unacknowledged cells rather than running a CC algorithm (Vegas): the
//! load generator measures relays, it does not model a client's congestion response.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Instant;

use fors::cell::chan::Destroy;
use fors::cell::relay::msg::{
    Begin, BeginFlags, BeginTarget, End, Extended2, LinkSpec, RelayMsg, Sendme,
};
use fors::cell::{ChanCmd, CircId, RelayCmd, CELL_BODY_LEN};
use fors::crypto::handshake::CircuitExtension;
use fors::crypto::relay::Tor1ClientCircuit;
use fors_testkit::circuit::{
    cgo_request, CircuitError, ClientCircuit, ClientLayers, Handshake, HopCryptoKind,
    NegotiatedLayers, SendmeTag,
};
use rand::rngs::StdRng;
use x25519_dalek::PublicKey;

use crate::cli::{HandshakeKind, RelayCrypto};
use crate::path::Relay;
use crate::pattern::{self, Verifier};
use crate::sink::{PutReply, Request};
use crate::stats::{Live, WorkerStats};

pub type Body = [u8; CELL_BODY_LEN];

/// Circuit-level window (tor-spec §"Circuit-level flow control").
pub const CIRCWINDOW_START: i32 = 1000;
pub const CIRCWINDOW_INCREMENT: i32 = 100;
/// Stream-level window (tor-spec §"Stream-level flow control").
pub const STREAMWINDOW_START: i32 = 500;
pub const STREAMWINDOW_INCREMENT: i32 = 50;
/// A client may send at most 8 RELAY_EARLY cells per circuit (tor-spec §"Handling RELAY_EARLY").
const MAX_RELAY_EARLY: u8 = 8;

/// Where cells go.
pub trait CellOut {
    /// How many more cells can be queued now.
    fn room(&self) -> usize;
    /// Queues a cell; only called when `room() > 0`.
    fn push(&mut self, circ: CircId, cmd: ChanCmd, body: &Body);
}

impl CellOut for Vec<(CircId, ChanCmd, Body)> {
    fn room(&self) -> usize {
        usize::MAX
    }
    fn push(&mut self, circ: CircId, cmd: ChanCmd, body: &Body) {
        self.push((circ, cmd, *body));
    }
}

/// What a stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Down,
    Up,
}

/// One transfer to run on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    pub dir: Dir,
    pub bytes: u64,
    pub seed: u64,
}

/// Shared per-worker context the circuit reports into.
pub struct Ctx<'a> {
    pub stats: &'a mut WorkerStats,
    pub live: &'a Live,
    pub rng: &'a mut StdRng,
}

impl Ctx<'_> {
    pub fn error(&mut self, reason: &str) {
        self.stats.error(reason);
        Live::add(&self.live.errors, 1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Connecting,
    Open,
    /// Upload: everything sent, waiting for the server's verdict.
    AwaitReply,
    Done,
    Failed,
}

#[derive(Debug)]
struct Stream {
    id: u16,
    plan: StreamPlan,
    state: StreamState,
    begun_at: Instant,
    first_byte: bool,
    verifier: Verifier,
    /// Upload: request line sent, payload bytes sent.
    header_sent: bool,
    /// The exit sent XOFF (prop 324, CC circuits only): no upload data until its XON.
    xoff: bool,
    up_sent: u64,
    reply: Vec<u8>,
    package_window: i32,
    deliver_window: i32,
    /// Stream SENDMEs owed to the exit.
    sendmes_owed: u32,
}

/// Where a circuit is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircState {
    /// Waiting for the reply from hop `n` (0-based).
    Building(usize),
    Open,
    Closed(String),
}

/// A client circuit.
pub struct Circuit {
    pub id: CircId,
    path: Arc<Vec<Relay>>,
    /// Build only this many hops (1 for the CREATE2 flood, `path.len()` otherwise).
    hops_wanted: usize,
    /// Handshakes, layers and relay cells: the test kit's client circuit (`fors`'s own tor1
    /// layers, or with `--relay-crypto cgo` the kit's per-hop tor1/CGO layers).
    circ: ClientCircuit<Box<dyn ClientLayers + Send>>,
    /// `--relay-crypto`: ask CGO of the hops that advertise it.
    relay_crypto: RelayCrypto,
    /// The last hop's congestion-control SENDME increment, when its handshake turned CC on
    /// (CGO circuits); `None`: fixed windows.
    cc_sendme_inc: Option<u8>,
    /// When the pending CREATE or EXTEND2 was sent.
    pending_since: Option<Instant>,
    pub state: CircState,
    target: SocketAddrV4,
    package_window: i32,
    deliver_window: i32,
    data_sent: u64,
    data_received: u64,
    /// (tag of our 100·k-th DATA cell, or `sendme_inc`·k-th with CC, when it was sent): what
    /// the next SENDMEs must carry.
    expected_tags: VecDeque<(SendmeTag, Instant)>,
    /// Circuit SENDME tags owed to the exit (held back when the output is full or by `--rate`).
    sendmes_owed: VecDeque<SendmeTag>,
    last_data_at: Option<Instant>,
    streams: Vec<Stream>,
    next_stream_id: u16,
    relay_early_left: u8,
    /// ntor-v3 for EXTEND2 when the user asked for it; ntor otherwise (also after
    /// CREATE_FAST, which EXTEND2 cannot carry).
    use_v3: bool,
    created_at: Instant,
    pub built_at: Option<Instant>,
}

impl Circuit {
    /// Starts a circuit: sends CREATE2 (or CREATE_FAST) to the first hop.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: CircId,
        path: Arc<Vec<Relay>>,
        hops_wanted: usize,
        kind: HandshakeKind,
        relay_crypto: RelayCrypto,
        target: SocketAddrV4,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut dyn CellOut,
    ) -> Result<Circuit, String> {
        let hops_wanted = hops_wanted.clamp(1, path.len());
        let layers: Box<dyn ClientLayers + Send> = match relay_crypto {
            RelayCrypto::Tor1 => Box::new(Tor1ClientCircuit::new()),
            RelayCrypto::Cgo => Box::new(NegotiatedLayers::default()),
        };
        let mut c = Circuit {
            id,
            path,
            hops_wanted,
            circ: ClientCircuit::with_layers(id, layers),
            relay_crypto,
            cc_sendme_inc: None,
            pending_since: None,
            state: CircState::Building(0),
            target,
            package_window: CIRCWINDOW_START,
            deliver_window: CIRCWINDOW_START,
            data_sent: 0,
            data_received: 0,
            expected_tags: VecDeque::new(),
            sendmes_owed: VecDeque::new(),
            last_data_at: None,
            streams: Vec::new(),
            next_stream_id: 1,
            relay_early_left: MAX_RELAY_EARLY,
            use_v3: kind == HandshakeKind::NtorV3,
            created_at: now,
            built_at: None,
        };
        let hs = handshake(kind, &c.path[0], relay_crypto)?;
        let (cmd, body) = c.circ.create(ctx.rng, &hs).map_err(|e| e.to_string())?;
        c.pending_since = Some(now);
        out.push(id, cmd, &body);
        ctx.stats.cells_sent += 1;
        Ok(c)
    }

    /// When the first CREATE was sent.
    pub fn started_at(&self) -> Instant {
        self.created_at
    }

    pub fn is_open(&self) -> bool {
        self.state == CircState::Open
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, CircState::Closed(_))
    }

    fn last_hop(&self) -> usize {
        self.circ.last_hop()
    }

    /// DATA cells per circuit SENDME: the CC increment, or the fixed window's 100.
    fn sendme_inc(&self) -> i32 {
        self.cc_sendme_inc
            .map_or(CIRCWINDOW_INCREMENT, |i| i32::from(i.max(1)))
    }

    /// Circuit SENDME tags we wait for at most: one per `sendme_inc` DATA cells of the
    /// 1000-cell window, plus one.
    fn max_pending_tags(&self) -> usize {
        CIRCWINDOW_START as usize / self.sendme_inc() as usize + 1
    }

    /// The crypto each built hop runs, first hop first.
    pub fn hop_crypto(&self) -> Vec<HopCryptoKind> {
        (0..self.circ.hops()).map(|h| self.circ.kind(h)).collect()
    }

    /// Unfinished streams in direction `dir`.
    pub fn active_in(&self, dir: Dir) -> usize {
        self.streams
            .iter()
            .filter(|s| {
                s.plan.dir == dir && !matches!(s.state, StreamState::Done | StreamState::Failed)
            })
            .count()
    }

    /// Streams not yet finished.
    pub fn active_streams(&self) -> usize {
        self.streams
            .iter()
            .filter(|s| !matches!(s.state, StreamState::Done | StreamState::Failed))
            .count()
    }

    /// Marks the circuit closed with `reason` counted as an error; its unfinished streams fail.
    fn close(&mut self, reason: &str, ctx: &mut Ctx<'_>) {
        if self.is_closed() {
            return;
        }
        ctx.error(reason);
        for s in &mut self.streams {
            if !matches!(s.state, StreamState::Done | StreamState::Failed) {
                s.state = StreamState::Failed;
            }
        }
        self.set_closed(reason, ctx.live);
    }

    fn set_closed(&mut self, reason: &str, live: &Live) {
        if self.is_open() {
            live.circuits_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.state = CircState::Closed(reason.to_string());
    }

    fn send_destroy(&self, out: &mut dyn CellOut) {
        if out.room() > 0 {
            let mut body = [0u8; CELL_BODY_LEN];
            Destroy {
                reason: fors::cell::chan::DestroyReason::Finished,
            }
            .encode(&mut body);
            out.push(self.id, ChanCmd::DESTROY, &body);
        }
    }

    /// Tears the circuit down from our side (DESTROY) at its normal end.
    pub fn destroy(&mut self, live: &Live, out: &mut dyn CellOut) {
        if !self.is_closed() {
            self.send_destroy(out);
            self.set_closed("finished", live);
        }
    }

    /// Abandons the circuit with `reason` counted as an error (e.g. a timeout).
    pub fn fail(&mut self, reason: &str, ctx: &mut Ctx<'_>, out: &mut dyn CellOut) {
        if !self.is_closed() {
            self.send_destroy(out);
            self.close(reason, ctx);
        }
    }

    /// A cell for this circuit arrived.
    pub fn on_cell(
        &mut self,
        cmd: ChanCmd,
        body: &mut Body,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut dyn CellOut,
    ) {
        if self.is_closed() {
            return;
        }
        ctx.stats.cells_received += 1;
        Live::add(&ctx.live.cells, 1);
        match cmd {
            ChanCmd::CREATED2 | ChanCmd::CREATED_FAST => {
                let built = self.circ.created(cmd, body);
                self.hop_built(built, now, ctx, out)
            }
            ChanCmd::DESTROY => {
                let why = Destroy::parse(body)
                    .map(|d| format!("destroy_{:?}", d.reason).to_lowercase())
                    .unwrap_or_else(|_| "destroy".into());
                // A DESTROY after every stream finished is a normal end, not a failure.
                if self.is_open()
                    && self.active_streams() == 0
                    && self.hops_wanted == self.path.len()
                {
                    self.set_closed(&why, ctx.live);
                } else {
                    self.close(&why, ctx);
                }
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => self.on_relay(cmd, body, now, ctx, out),
            _ => {}
        }
    }

    /// The answer to our CREATE or EXTEND2 was taken by the client circuit: on success the
    /// hop is added; extend further or the circuit is open.
    fn hop_built(
        &mut self,
        built: Result<Vec<CircuitExtension>, CircuitError>,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut dyn CellOut,
    ) {
        let sent = self.pending_since.take();
        let exts = match built {
            Ok(e) => e,
            Err(CircuitError::NoHandshakePending) => return self.close("unexpected_created", ctx),
            Err(CircuitError::Cell(_)) => return self.close("bad_created", ctx),
            Err(_) => return self.close("handshake_failed", ctx),
        };
        ctx.stats.handshakes += 1;
        Live::add(&ctx.live.handshakes, 1);
        if let Some(sent) = sent {
            WorkerStats::record(&mut ctx.stats.handshake_us, (now - sent).as_micros() as u64);
        }
        if self.circ.hops() < self.hops_wanted {
            self.extend(now, ctx, out);
        } else {
            // CC at the last hop, whose DATA and SENDMEs we exchange (prop 324: CC_RESPONSE).
            self.cc_sendme_inc = exts.iter().find_map(|e| match e {
                CircuitExtension::CcResponse { sendme_inc } => Some(*sendme_inc),
                _ => None,
            });
            let kinds = self.hop_crypto();
            if kinds.last() == Some(&HopCryptoKind::Cgo) && self.cc_sendme_inc.is_none() {
                // Format v1 has no stream-level SENDME: without CC streams cannot flow.
                return self.close("cgo_without_cc", ctx);
            }
            for (hop, k) in kinds.iter().enumerate() {
                ctx.stats.hop_crypto(hop, k.name());
            }
            self.state = CircState::Open;
            self.built_at = Some(now);
            ctx.stats.circuits_built += 1;
            Live::add(&ctx.live.circuits_open, 1);
        }
    }

    /// Sends EXTEND2 (in RELAY_EARLY, as tor-spec requires) to the current last hop.
    fn extend(&mut self, now: Instant, ctx: &mut Ctx<'_>, out: &mut dyn CellOut) {
        let next = self.circ.hops();
        self.state = CircState::Building(next);
        let relay = self.path[next].clone();
        let kind = if self.use_v3 {
            HandshakeKind::NtorV3
        } else {
            HandshakeKind::Ntor
        };
        let Ok(hs) = handshake(kind, &relay, self.relay_crypto) else {
            return self.close("no_ntor_key", ctx);
        };
        let mut specs = vec![LinkSpec::Ipv4(relay.addr), LinkSpec::RsaId(relay.rsa)];
        if let Some(ed) = relay.ed {
            specs.push(LinkSpec::Ed25519Id(ed));
        }
        if self.relay_early_left == 0 {
            return self.close("relay_early_exhausted", ctx);
        }
        let body = match self.circ.extend(ctx.rng, &specs, &hs) {
            Ok(b) => b,
            Err(e) => return self.close(failure(&e, "extend2_encode"), ctx),
        };
        self.relay_early_left -= 1;
        out.push(self.id, ChanCmd::RELAY_EARLY, &body);
        ctx.stats.cells_sent += 1;
        self.pending_since = Some(now);
    }

    fn on_relay(
        &mut self,
        chan_cmd: ChanCmd,
        body: &mut Body,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut dyn CellOut,
    ) {
        let msg = match self.circ.open_as(chan_cmd, body) {
            Ok(m) => m,
            Err(CircuitError::Unrecognized) => return self.close("unrecognized_relay_cell", ctx),
            Err(_) => return self.close("bad_relay_cell", ctx),
        };
        let (hop, cmd, sid) = (msg.hop, msg.cmd, msg.stream_id);
        let parsed = match RelayMsg::parse(cmd, msg.data) {
            Ok(p) => p,
            Err(_) => return self.close("bad_relay_msg", ctx),
        };
        match parsed {
            RelayMsg::Extended2(Extended2 { hdata }) => {
                let h = hdata.to_vec();
                let built = self.circ.extended(&h);
                self.hop_built(built, now, ctx, out)
            }
            RelayMsg::Truncated(r) => self.close(&format!("truncated_{r:?}").to_lowercase(), ctx),
            RelayMsg::Data(d) => {
                if hop != self.last_hop() {
                    return self.close("data_from_wrong_hop", ctx);
                }
                self.deliver_window -= 1;
                self.data_received += 1;
                if self.deliver_window < 0 {
                    return self.close("deliver_window_negative", ctx);
                }
                if let Some(prev) = self.last_data_at {
                    WorkerStats::record(
                        &mut ctx.stats.cell_gap_us,
                        (now - prev).as_micros() as u64,
                    );
                }
                self.last_data_at = Some(now);
                // The tag of the cell that brings the window to a SENDME boundary: this one.
                let inc = self.sendme_inc();
                if self.deliver_window <= CIRCWINDOW_START - inc {
                    let tag = self.circ.sendme_tag(hop).expect("recognized hop exists");
                    self.sendmes_owed.push_back(tag);
                    self.deliver_window += inc;
                }
                let d = d.to_vec();
                self.stream_data(sid, &d, now, ctx);
            }
            RelayMsg::Sendme(s) => {
                if sid == 0 {
                    self.circuit_sendme(s, now, ctx);
                } else if let Some(st) = self.streams.iter_mut().find(|x| x.id == sid) {
                    st.package_window += STREAMWINDOW_INCREMENT;
                }
            }
            // Stream flow control on CC circuits (prop 324): the exit's buffer toward the
            // sink is full, or drained again. XON's rate advice is not followed (we pause
            // and resume only).
            RelayMsg::Xoff(_) => self.stream_xoff(sid, true, ctx),
            RelayMsg::Xon(_) => self.stream_xoff(sid, false, ctx),
            RelayMsg::Connected(_) => {
                if let Some(st) = self.streams.iter_mut().find(|x| x.id == sid) {
                    if st.state == StreamState::Connecting {
                        st.state = StreamState::Open;
                    }
                }
            }
            RelayMsg::End(e) => self.stream_end(sid, e, ctx),
            _ => {}
        }
    }

    /// XOFF (`off`) or XON for stream `sid`: only CC circuits have them.
    fn stream_xoff(&mut self, sid: u16, off: bool, ctx: &mut Ctx<'_>) {
        if self.cc_sendme_inc.is_none() {
            return self.close("xon_xoff_without_cc", ctx);
        }
        if let Some(st) = self.streams.iter_mut().find(|x| x.id == sid) {
            st.xoff = off;
        }
    }

    fn circuit_sendme(&mut self, s: Sendme<'_>, now: Instant, ctx: &mut Ctx<'_>) {
        let Some((want, sent)) = self.expected_tags.pop_front() else {
            return self.close("unexpected_sendme", ctx);
        };
        match s {
            Sendme::V1 { tag } if tag == want.as_bytes() => {}
            Sendme::V1 { .. } => return self.close("sendme_tag_mismatch", ctx),
            // We require authenticated SENDMEs, as relays do with sendme_accept_min_version=1.
            _ => return self.close("sendme_unauthenticated", ctx),
        }
        WorkerStats::record(
            &mut ctx.stats.sendme_rtt_us,
            (now - sent).as_micros() as u64,
        );
        self.package_window += self.sendme_inc();
    }

    fn stream_data(&mut self, sid: u16, d: &[u8], now: Instant, ctx: &mut Ctx<'_>) {
        let windows = self.cc_sendme_inc.is_none();
        let Some(st) = self.streams.iter_mut().find(|x| x.id == sid) else {
            return; // A stream we already gave up on.
        };
        if !st.first_byte {
            st.first_byte = true;
            WorkerStats::record(
                &mut ctx.stats.ttfb_us,
                (now - st.begun_at).as_micros() as u64,
            );
        }
        // Stream windows only without CC (with CC the exit sends XON/XOFF instead).
        st.deliver_window -= i32::from(windows);
        if st.deliver_window <= STREAMWINDOW_START - STREAMWINDOW_INCREMENT {
            st.sendmes_owed += 1;
            st.deliver_window += STREAMWINDOW_INCREMENT;
        }
        match (st.plan.dir, st.state) {
            (Dir::Down, StreamState::Open | StreamState::Connecting) => {
                st.state = StreamState::Open;
                match st.verifier.feed(d) {
                    Ok(()) => {
                        ctx.stats.bytes_down += d.len() as u64;
                        Live::add(&ctx.live.bytes, d.len() as u64);
                        if st.verifier.is_complete() {
                            st.state = StreamState::Done;
                            ctx.stats.streams_done += 1;
                        }
                    }
                    Err(_) => {
                        st.state = StreamState::Failed;
                        ctx.stats.integrity_errors += 1;
                        Live::add(&ctx.live.errors, 1);
                    }
                }
            }
            (Dir::Up, StreamState::AwaitReply | StreamState::Open) => {
                st.reply.extend_from_slice(d);
                if let Some(nl) = st.reply.iter().position(|&b| b == b'\n') {
                    match PutReply::parse(&st.reply[..nl]) {
                        Ok(PutReply::Ok { bytes })
                            if bytes == st.plan.bytes && st.up_sent == bytes =>
                        {
                            st.state = StreamState::Done;
                            ctx.stats.bytes_up += bytes;
                            ctx.stats.streams_done += 1;
                        }
                        Ok(PutReply::Bad { .. }) => {
                            st.state = StreamState::Failed;
                            ctx.stats.integrity_errors += 1;
                            Live::add(&ctx.live.errors, 1);
                        }
                        _ => {
                            st.state = StreamState::Failed;
                            ctx.error("bad_put_reply");
                        }
                    }
                } else if st.reply.len() > crate::sink::MAX_REQUEST_LEN {
                    st.state = StreamState::Failed;
                    ctx.error("bad_put_reply");
                }
            }
            _ => {
                // Bytes on a finished or failed download: more than was asked for.
                if st.state == StreamState::Done {
                    st.state = StreamState::Failed;
                    ctx.stats.integrity_errors += 1;
                    Live::add(&ctx.live.errors, 1);
                }
            }
        }
    }

    fn stream_end(&mut self, sid: u16, e: End, ctx: &mut Ctx<'_>) {
        let Some(st) = self.streams.iter_mut().find(|x| x.id == sid) else {
            return;
        };
        match st.state {
            StreamState::Done | StreamState::Failed => {}
            StreamState::Connecting => {
                st.state = StreamState::Failed;
                ctx.error(&format!("begin_refused_{:?}", e.reason).to_lowercase());
            }
            _ => {
                st.state = StreamState::Failed;
                ctx.error(&format!("stream_ended_early_{:?}", e.reason).to_lowercase());
            }
        }
    }

    /// Opens a stream for `plan` (BEGIN to the exit). Needs an open circuit and one free cell.
    pub fn open_stream(
        &mut self,
        plan: StreamPlan,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut dyn CellOut,
    ) -> bool {
        if !self.is_open() || out.room() == 0 || self.next_stream_id == u16::MAX {
            return false;
        }
        // Forget finished streams so the table stays as small as the live set.
        self.streams
            .retain(|s| !matches!(s.state, StreamState::Done | StreamState::Failed));
        let id = self.next_stream_id;
        self.next_stream_id += 1;
        let t = self.target;
        let hop = self.last_hop();
        let body =
            self.circ
                .relay_cell_as(ctx.rng, hop, ChanCmd::RELAY, RelayCmd::BEGIN, id, |o| {
                    Begin {
                        target: BeginTarget::Ipv4(*t.ip()),
                        port: t.port(),
                        flags: BeginFlags(0),
                    }
                    .encode(o)
                });
        let body = match body {
            Ok((b, _)) => b,
            Err(e) => {
                self.close(failure(&e, "begin_encode"), ctx);
                return false;
            }
        };
        out.push(self.id, ChanCmd::RELAY, &body);
        ctx.stats.cells_sent += 1;
        self.streams.push(Stream {
            id,
            plan,
            state: StreamState::Connecting,
            begun_at: now,
            first_byte: false,
            verifier: Verifier::new(plan.seed, plan.bytes),
            header_sent: false,
            xoff: false,
            up_sent: 0,
            reply: Vec::new(),
            package_window: STREAMWINDOW_START,
            deliver_window: STREAMWINDOW_START,
            sendmes_owed: 0,
        });
        true
    }

    /// Sends what can be sent now: owed SENDMEs (circuit ones only while `budget` allows, as
    /// each lets the exit send 100 more cells), request lines, and upload data within the
    /// windows and `budget` (payload bytes). Returns the payload bytes committed.
    pub fn pump(
        &mut self,
        now: Instant,
        budget: u64,
        ctx: &mut Ctx<'_>,
        out: &mut dyn CellOut,
    ) -> u64 {
        if !self.is_open() {
            return 0;
        }
        let mut spent = 0u64;
        let hop = self.last_hop();
        // Stream SENDMEs and request lines first: they are small and unblock the exit.
        for i in 0..self.streams.len() {
            while self.streams[i].sendmes_owed > 0 && out.room() > 0 {
                let sid = self.streams[i].id;
                let Ok((body, _)) = self.circ.relay_cell_as(
                    ctx.rng,
                    hop,
                    ChanCmd::RELAY,
                    RelayCmd::SENDME,
                    sid,
                    |_| Ok(0),
                ) else {
                    return spent;
                };
                out.push(self.id, ChanCmd::RELAY, &body);
                ctx.stats.cells_sent += 1;
                self.streams[i].sendmes_owed -= 1;
            }
        }
        let data_len = self.circ.max_data_len(hop, RelayCmd::DATA);
        while let Some(tag) = self.sendmes_owed.front().copied() {
            let cost = self.sendme_inc() as u64 * data_len as u64;
            // Only within budget: the token bucket holds at least one SENDME's worth (60 kB),
            // so waiting never stalls; releasing one regardless let downloads ignore `--rate`.
            if out.room() == 0 || spent + cost > budget {
                break;
            }
            let Ok((body, _)) =
                self.circ
                    .relay_cell_as(ctx.rng, hop, ChanCmd::RELAY, RelayCmd::SENDME, 0, |o| {
                        Sendme::V1 {
                            tag: tag.as_bytes(),
                        }
                        .encode(o)
                    })
            else {
                return spent;
            };
            out.push(self.id, ChanCmd::RELAY, &body);
            ctx.stats.cells_sent += 1;
            self.sendmes_owed.pop_front();
            spent += cost;
        }
        // Download request lines and upload data, round-robin one cell per stream per pass.
        let windows = self.cc_sendme_inc.is_none();
        let (inc, max_tags) = (self.sendme_inc() as u64, self.max_pending_tags());
        let mut progress = true;
        while progress {
            progress = false;
            for i in 0..self.streams.len() {
                if out.room() == 0 {
                    return spent;
                }
                let st = &self.streams[i];
                let is_get =
                    st.plan.dir == Dir::Down && st.state == StreamState::Open && !st.header_sent;
                let is_put = st.plan.dir == Dir::Up
                    && st.state == StreamState::Open
                    && (!st.header_sent || st.up_sent < st.plan.bytes);
                let stream_blocked = if windows {
                    st.package_window <= 0
                } else {
                    st.xoff
                };
                if !(is_get || is_put) || stream_blocked || self.package_window <= 0 {
                    continue;
                }
                if is_put && st.header_sent && spent >= budget {
                    continue;
                }
                if self.expected_tags.len() >= max_tags {
                    return spent;
                }
                let plan = st.plan;
                let (sid, up_sent, header_sent) = (st.id, st.up_sent, st.header_sent);
                let mut payload = 0u64;
                let body = self.circ.relay_cell_as(
                    ctx.rng,
                    hop,
                    ChanCmd::RELAY,
                    RelayCmd::DATA,
                    sid,
                    |o| {
                        let o = &mut o[..data_len];
                        let mut n = 0;
                        if !header_sent {
                            let line = match plan.dir {
                                Dir::Down => Request::Get {
                                    bytes: plan.bytes,
                                    seed: plan.seed,
                                },
                                Dir::Up => Request::Put {
                                    bytes: plan.bytes,
                                    seed: plan.seed,
                                },
                            }
                            .encode();
                            o[..line.len()].copy_from_slice(line.as_bytes());
                            n = line.len();
                        }
                        if plan.dir == Dir::Up {
                            let k = ((plan.bytes - up_sent) as usize).min(o.len() - n);
                            pattern::fill(plan.seed, up_sent, &mut o[n..n + k]);
                            payload = k as u64;
                            n += k;
                        }
                        Ok(n)
                    },
                );
                let (body, tag) = match body {
                    Ok(bt) => bt,
                    Err(e) => {
                        self.close(failure(&e, "data_encode"), ctx);
                        return spent;
                    }
                };
                out.push(self.id, ChanCmd::RELAY, &body);
                ctx.stats.cells_sent += 1;
                Live::add(&ctx.live.cells, 1);
                self.data_sent += 1;
                self.package_window -= 1;
                if self.data_sent.is_multiple_of(inc) {
                    self.expected_tags.push_back((tag, now));
                }
                let st = &mut self.streams[i];
                st.package_window -= i32::from(windows);
                st.header_sent = true;
                st.up_sent += payload;
                spent += payload;
                if plan.dir == Dir::Up {
                    Live::add(&ctx.live.bytes, payload);
                    if st.up_sent == plan.bytes {
                        st.state = StreamState::AwaitReply;
                    }
                }
                progress = true;
            }
        }
        spent
    }

    /// Fails every unfinished stream (on a timeout or the end of the run); returns how many.
    pub fn abandon_streams(&mut self, reason: &str, ctx: &mut Ctx<'_>) -> usize {
        let mut n = 0;
        for s in &mut self.streams {
            if !matches!(s.state, StreamState::Done | StreamState::Failed) {
                s.state = StreamState::Failed;
                n += 1;
            }
        }
        for _ in 0..n {
            ctx.error(reason);
        }
        n
    }
}

/// The error counted when the client circuit cannot make a cell: `encode` when the message
/// did not encode, "crypto" otherwise (no such hop, a handshake that would not start).
fn failure(e: &CircuitError, encode: &'static str) -> &'static str {
    if matches!(e, CircuitError::Cell(_)) {
        encode
    } else {
        "crypto"
    }
}

/// The handshake `kind` with `relay`, from what the path knows of it; with
/// `--relay-crypto cgo`, asking for CGO (and CC) when the relay advertises CGO or its
/// protocols are unknown (a `--hop` given with its keys: no descriptor was read).
fn handshake(kind: HandshakeKind, relay: &Relay, crypto: RelayCrypto) -> Result<Handshake, String> {
    if kind == HandshakeKind::Fast {
        return Ok(Handshake::Fast);
    }
    let onion = PublicKey::from(
        relay
            .ntor_key
            .ok_or_else(|| format!("no ntor key for {}", relay.nick))?,
    );
    match kind {
        HandshakeKind::NtorV3 => {
            let ed = relay
                .ed
                .ok_or_else(|| format!("ntor-v3 needs the ed25519 id of {}", relay.nick))?;
            let exts = if crypto == RelayCrypto::Cgo && relay.supports_cgo != Some(false) {
                cgo_request()
            } else {
                vec![]
            };
            Ok(Handshake::NtorV3 { ed, onion, exts })
        }
        _ => Ok(Handshake::Ntor {
            rsa: relay.rsa,
            onion,
        }),
    }
}

#[cfg(test)]
mod tests {
    //! A circuit against a scripted one-hop "exit" that answers CREATE_FAST and runs the
    //! relay side of tor1 with the kit's reference implementation (`fors_testkit::tor1_ref`,
    //! independent of the client code under test).
    use super::*;
    use fors::cell::relay::v0;
    use fors::crypto::handshake::fast;
    use fors::crypto::keymat::Tor1KeyMaterial;
    use fors_testkit::tor1_ref::Tor1Dir;
    use rand::SeedableRng;

    struct FakeExit {
        fwd: Tor1Dir,
        bwd: Tor1Dir,
        /// Digest of each DATA cell we sent, for checking the client's SENDME tags.
        sent_digests: Vec<[u8; 20]>,
    }

    impl FakeExit {
        fn new(k: &Tor1KeyMaterial) -> Self {
            FakeExit {
                fwd: Tor1Dir::new(&k.kf, &k.df),
                bwd: Tor1Dir::new(&k.kb, &k.db),
                sent_digests: Vec::new(),
            }
        }

        /// Decrypts and checks a cell from the client; returns (cmd, stream, data).
        fn receive(&mut self, body: &Body) -> (RelayCmd, u16, Vec<u8>) {
            let mut b = *body;
            self.fwd.crypt(&mut b);
            assert!(
                self.fwd.check(&mut b).is_some(),
                "recognized, forward digest"
            );
            let m = v0::parse(&b).unwrap();
            (m.cmd, m.stream_id, m.data.to_vec())
        }

        fn send(&mut self, cmd: RelayCmd, sid: u16, data: &[u8], rng: &mut StdRng) -> Body {
            let mut b = [0u8; CELL_BODY_LEN];
            v0::encode(&mut b, cmd, sid, data, rng).unwrap();
            let d = self.bwd.set_digest(&mut b);
            if cmd == RelayCmd::DATA {
                self.sent_digests.push(d);
            }
            self.bwd.crypt(&mut b);
            b
        }
    }

    fn relay() -> Relay {
        Relay {
            nick: "exit".into(),
            addr: "127.0.0.1:9".parse().unwrap(),
            rsa: Default::default(),
            ed: None,
            ntor_key: None,
            supports_cgo: None,
        }
    }

    /// Runs a download of `bytes` through the fake exit, flipping payload byte `flip` if
    /// given. Returns the stats and how many SENDME v1 tags matched.
    fn download(bytes: u64, flip: Option<usize>) -> (WorkerStats, usize) {
        download_with_budget(bytes, flip, u64::MAX)
    }

    /// As `download`, with `budget` payload bytes (the rate bucket) for each pump after a
    /// DATA cell.
    fn download_with_budget(bytes: u64, flip: Option<usize>, budget: u64) -> (WorkerStats, usize) {
        let mut rng = StdRng::seed_from_u64(1);
        let mut stats = WorkerStats::default();
        let live = Live::default();
        let mut out: Vec<(CircId, ChanCmd, Body)> = Vec::new();
        let now = Instant::now();
        let path = Arc::new(vec![relay()]);
        let mut ctx = Ctx {
            stats: &mut stats,
            live: &live,
            rng: &mut rng,
        };
        let mut c = Circuit::start(
            CircId(0x8000_0001),
            path,
            1,
            HandshakeKind::Fast,
            RelayCrypto::Tor1,
            "127.0.0.1:9".parse().unwrap(),
            now,
            &mut ctx,
            &mut out,
        )
        .unwrap();
        let (_, cmd, create) = out.pop().unwrap();
        assert_eq!(cmd, ChanCmd::CREATE_FAST);
        let mut srng = StdRng::seed_from_u64(2);
        let (reply, keys) = fast::server_handshake(&mut srng, &create[..20]).unwrap();
        let mut exit = FakeExit::new(&keys);
        let mut body = [0u8; CELL_BODY_LEN];
        body[..reply.len()].copy_from_slice(&reply);
        c.on_cell(ChanCmd::CREATED_FAST, &mut body, now, &mut ctx, &mut out);
        assert!(c.is_open());
        let seed = 77;
        assert!(c.open_stream(
            StreamPlan {
                dir: Dir::Down,
                bytes,
                seed
            },
            now,
            &mut ctx,
            &mut out
        ));
        let (cmd, sid, _) = exit.receive(&out.pop().unwrap().2);
        assert_eq!(cmd, RelayCmd::BEGIN);
        let mut b = exit.send(RelayCmd::CONNECTED, sid, &[], &mut srng);
        c.on_cell(ChanCmd::RELAY, &mut b, now, &mut ctx, &mut out);
        c.pump(now, u64::MAX, &mut ctx, &mut out);
        let (cmd, _, req) = exit.receive(&out.remove(0).2);
        assert_eq!(cmd, RelayCmd::DATA);
        assert_eq!(req, format!("GET {bytes} {seed}\n").into_bytes());
        // Stream the pattern, answering the client's SENDMEs as C tor would check them.
        let mut data = vec![0u8; bytes as usize];
        pattern::fill(seed, 0, &mut data);
        if let Some(i) = flip {
            data[i] ^= 0x01;
        }
        let mut tags_ok = 0;
        for chunk in data.chunks(v0::MAX_DATA_LEN) {
            let mut b = exit.send(RelayCmd::DATA, sid, chunk, &mut srng);
            c.on_cell(ChanCmd::RELAY, &mut b, now, &mut ctx, &mut out);
            c.pump(now, budget, &mut ctx, &mut out);
            for (_, _, cell) in out.drain(..) {
                let (cmd, s, d) = exit.receive(&cell);
                assert_eq!(cmd, RelayCmd::SENDME);
                if s == 0 {
                    let k = (tags_ok + 1) * CIRCWINDOW_INCREMENT as usize - 1;
                    assert_eq!(
                        Sendme::parse(&d).unwrap(),
                        Sendme::V1 {
                            tag: &exit.sent_digests[k]
                        }
                    );
                    tags_ok += 1;
                }
            }
        }
        (stats, tags_ok)
    }

    #[test]
    fn download_is_verified_and_sendme_v1_tags_match_the_exit_digests() {
        let n = 250 * v0::MAX_DATA_LEN as u64 + 17;
        let (s, tags) = download(n, None);
        assert_eq!(s.bytes_down, n);
        assert_eq!(s.streams_done, 1);
        assert_eq!(s.integrity_errors, 0);
        assert_eq!(tags, 2, "SENDMEs after the 100th and 200th DATA cells");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }

    #[test]
    fn circuit_sendmes_wait_for_the_rate_budget() {
        // `--rate` paces downloads by holding circuit SENDMEs: with no budget none may go.
        let n = 250 * v0::MAX_DATA_LEN as u64;
        let (s, tags) = download_with_budget(n, None, 0);
        assert_eq!(s.bytes_down, n);
        assert_eq!(tags, 0, "no budget, no circuit SENDME");
        let cost = CIRCWINDOW_INCREMENT as u64 * v0::MAX_DATA_LEN as u64;
        let (_, tags) = download_with_budget(n, None, cost);
        assert_eq!(tags, 2, "one SENDME's worth of budget releases one");
    }

    /// `--relay-crypto cgo` against a scripted one-hop exit that runs the relay side of
    /// ntor-v3 with `fors`'s negotiation (CC on, `sendme_inc` 31, CGO) and `fors`'s CGO
    /// relay crypto, independent of the test kit's CGO client under test.
    mod cgo {
        use super::*;
        use fors::cell::chan::{Create2, Created2};
        use fors::cell::relay::msg::{Xoff, Xon};
        use fors::cell::relay::v1;
        use fors::crypto::handshake::ntor_v3::server_handshake_circ;
        use fors::crypto::handshake::{
            negotiate_circ_params, CircuitKeys, NtorKeyMap, NtorKeyPair, NtorV3ServerPolicy,
        };
        use fors::crypto::ids::Ed25519Identity;
        use fors::crypto::relay::cgo::CgoRelayCrypto128;

        const INC: usize = 31;
        const RELAY: u8 = 3;

        struct CgoExit {
            crypto: CgoRelayCrypto128,
            /// Tags of the DATA cells we sent, and of those we received.
            sent_tags: Vec<[u8; 16]>,
            recv_tags: Vec<[u8; 16]>,
        }

        impl CgoExit {
            /// Decrypts and checks a v1 cell from the client: (cmd, stream, data).
            fn receive(&mut self, body: &Body) -> (RelayCmd, u16, Vec<u8>) {
                let mut b = *body;
                assert!(self.crypto.recognize(RELAY, &mut b), "recognized");
                let m = v1::parse(&b).unwrap();
                if m.cmd == RelayCmd::DATA {
                    self.recv_tags.push(*self.crypto.sendme_tag());
                }
                (m.cmd, m.stream_id, m.data.to_vec())
            }

            fn send(&mut self, cmd: RelayCmd, sid: u16, data: &[u8], rng: &mut StdRng) -> Body {
                let mut b = [0u8; CELL_BODY_LEN];
                v1::encode(&mut b, cmd, sid, data, rng).unwrap();
                let t = self.crypto.originate(RELAY, &mut b);
                if cmd == RelayCmd::DATA {
                    self.sent_tags.push(t);
                }
                b
            }
        }

        /// A one-hop CGO circuit to the scripted exit, open, and the stream `plan` CONNECTED.
        fn setup(
            plan: StreamPlan,
            ctx: &mut Ctx<'_>,
            out: &mut Vec<(CircId, ChanCmd, Body)>,
            srng: &mut StdRng,
        ) -> (Circuit, CgoExit, u16) {
            let now = Instant::now();
            let pair = NtorKeyPair::generate(srng);
            let ed = Ed25519Identity([7; 32]);
            let relay = Relay {
                ed: Some(ed),
                ntor_key: Some(*pair.public().as_bytes()),
                supports_cgo: Some(true),
                ..relay()
            };
            let map = NtorKeyMap::new(pair, None);
            let mut c = Circuit::start(
                CircId(0x8000_0001),
                Arc::new(vec![relay]),
                1,
                HandshakeKind::NtorV3,
                RelayCrypto::Cgo,
                "127.0.0.1:9".parse().unwrap(),
                now,
                ctx,
                out,
            )
            .unwrap();
            let (_, cmd, create) = out.pop().unwrap();
            assert_eq!(cmd, ChanCmd::CREATE2);
            let hdata = Create2::parse(&create).unwrap().hdata.to_vec();
            let policy = NtorV3ServerPolicy {
                cc_enabled: true,
                sendme_inc: INC as u8,
                cgo_supported: true,
            };
            let (reply, keys, params) = server_handshake_circ(srng, &map, &ed, &hdata, |e| {
                negotiate_circ_params(e, &policy)
            })
            .unwrap();
            assert!(params.cgo, "the client asked for CGO");
            let CircuitKeys::Cgo(keys) = keys else {
                panic!("CGO keys")
            };
            let mut exit = CgoExit {
                crypto: CgoRelayCrypto128::new(&keys),
                sent_tags: Vec::new(),
                recv_tags: Vec::new(),
            };
            let mut body = [0u8; CELL_BODY_LEN];
            Created2 { hdata: &reply }.encode(&mut body).unwrap();
            c.on_cell(ChanCmd::CREATED2, &mut body, now, ctx, out);
            assert!(c.is_open(), "{:?}", c.state);
            assert_eq!(c.hop_crypto(), [HopCryptoKind::Cgo]);
            assert!(c.open_stream(plan, now, ctx, out));
            let (cmd, sid, _) = exit.receive(&out.pop().unwrap().2);
            assert_eq!(cmd, RelayCmd::BEGIN);
            let mut b = exit.send(RelayCmd::CONNECTED, sid, &[], srng);
            c.on_cell(ChanCmd::RELAY, &mut b, now, ctx, out);
            (c, exit, sid)
        }

        /// Runs `f` with a fresh context (client randomness from `seed`) and the exit's
        /// randomness (`seed + 1`).
        fn with_ctx(seed: u64, f: impl FnOnce(&mut Ctx<'_>, &mut StdRng)) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut srng = StdRng::seed_from_u64(seed + 1);
            let (mut stats, live) = (WorkerStats::default(), Live::default());
            let mut ctx = Ctx {
                stats: &mut stats,
                live: &live,
                rng: &mut rng,
            };
            f(&mut ctx, &mut srng)
        }

        #[test]
        fn download_is_verified_with_cgo_sendme_tags_every_sendme_inc_cells() {
            with_ctx(11, cgo_download)
        }

        #[test]
        fn upload_keeps_a_1000_cell_window_checks_cgo_tags_and_obeys_xoff() {
            with_ctx(21, cgo_upload)
        }

        fn cgo_download(ctx: &mut Ctx<'_>, srng: &mut StdRng) {
            let mut out = Vec::new();
            let now = Instant::now();
            let bytes = 100 * v1::MAX_DATA_LEN_WITH_STREAM as u64 + 5;
            let plan = StreamPlan {
                dir: Dir::Down,
                bytes,
                seed: 5,
            };
            let (mut c, mut exit, sid) = setup(plan, ctx, &mut out, srng);
            c.pump(now, u64::MAX, ctx, &mut out);
            let (cmd, _, req) = exit.receive(&out.remove(0).2);
            assert_eq!(cmd, RelayCmd::DATA);
            assert_eq!(req, format!("GET {bytes} 5\n").into_bytes());
            let mut data = vec![0u8; bytes as usize];
            pattern::fill(5, 0, &mut data);
            let mut tags = 0;
            for chunk in data.chunks(v1::MAX_DATA_LEN_WITH_STREAM) {
                let mut b = exit.send(RelayCmd::DATA, sid, chunk, srng);
                c.on_cell(ChanCmd::RELAY, &mut b, now, ctx, &mut out);
                c.pump(now, u64::MAX, ctx, &mut out);
                for (_, _, cell) in out.drain(..) {
                    // Only circuit SENDMEs: CC streams have none (format v1 cannot carry them).
                    let (cmd, s, d) = exit.receive(&cell);
                    assert_eq!((cmd, s), (RelayCmd::SENDME, 0));
                    let want = exit.sent_tags[(tags + 1) * INC - 1];
                    assert_eq!(Sendme::parse(&d).unwrap(), Sendme::V1 { tag: &want });
                    tags += 1;
                }
            }
            assert_eq!(tags, 101 / INC, "one SENDME per {INC} DATA cells");
            assert_eq!(ctx.stats.bytes_down, bytes);
            assert_eq!(ctx.stats.streams_done, 1);
            assert_eq!(ctx.stats.integrity_errors, 0);
            assert_eq!(ctx.stats.hop_crypto[0]["cgo"], 1);
            assert!(ctx.stats.errors.is_empty(), "{:?}", ctx.stats.errors);
        }

        fn cgo_upload(ctx: &mut Ctx<'_>, srng: &mut StdRng) {
            let mut out = Vec::new();
            let now = Instant::now();
            let plan = StreamPlan {
                dir: Dir::Up,
                bytes: 2000 * v1::MAX_DATA_LEN_WITH_STREAM as u64,
                seed: 9,
            };
            let (mut c, mut exit, sid) = setup(plan, ctx, &mut out, srng);
            // XOFF: nothing may be sent on the stream until XON.
            let mut xoff = [0u8; 8];
            let n = Xoff.encode(&mut xoff).unwrap();
            let mut b = exit.send(RelayCmd::XOFF, sid, &xoff[..n], srng);
            c.on_cell(ChanCmd::RELAY, &mut b, now, ctx, &mut out);
            c.pump(now, u64::MAX, ctx, &mut out);
            assert!(out.is_empty(), "no data after XOFF");
            let mut xon = [0u8; 8];
            let n = Xon { kbps_ewma: 0 }.encode(&mut xon).unwrap();
            let mut b = exit.send(RelayCmd::XON, sid, &xon[..n], srng);
            c.on_cell(ChanCmd::RELAY, &mut b, now, ctx, &mut out);
            // No stream window with CC: the 1000-cell circuit window is the limit.
            c.pump(now, u64::MAX, ctx, &mut out);
            assert_eq!(out.len(), 1000);
            let mut up = Vec::new();
            for (_, _, cell) in out.drain(..) {
                let (cmd, s, d) = exit.receive(&cell);
                assert_eq!((cmd, s), (RelayCmd::DATA, sid));
                up.extend_from_slice(&d);
            }
            // The request line, then the pattern.
            let nl = up.iter().position(|&x| x == b'\n').unwrap();
            let mut want = vec![0u8; up.len() - nl - 1];
            pattern::fill(9, 0, &mut want);
            assert_eq!(&up[nl + 1..], &want[..]);
            // A SENDME with the tag of our 31st DATA cell releases 31 more.
            let mut sm = [0u8; 32];
            let tag = exit.recv_tags[INC - 1];
            let n = Sendme::V1 { tag: &tag }.encode(&mut sm).unwrap();
            let mut b = exit.send(RelayCmd::SENDME, 0, &sm[..n], srng);
            c.on_cell(ChanCmd::RELAY, &mut b, now, ctx, &mut out);
            c.pump(now, u64::MAX, ctx, &mut out);
            assert_eq!(out.len(), INC);
            assert!(c.is_open());
            // One with another cell's tag fails the circuit.
            let tag = exit.recv_tags[INC];
            let n = Sendme::V1 { tag: &tag }.encode(&mut sm).unwrap();
            let mut b = exit.send(RelayCmd::SENDME, 0, &sm[..n], srng);
            c.on_cell(ChanCmd::RELAY, &mut b, now, ctx, &mut out);
            assert_eq!(c.state, CircState::Closed("sendme_tag_mismatch".into()));
        }
    }

    #[test]
    fn a_corrupted_byte_is_an_integrity_error_not_throughput() {
        let n = 50 * v0::MAX_DATA_LEN as u64;
        let (s, _) = download(n, Some(12_345));
        assert_eq!(s.integrity_errors, 1);
        assert_eq!(s.streams_done, 0);
        assert!(s.bytes_down < 12_345 + v0::MAX_DATA_LEN as u64);
    }
}
