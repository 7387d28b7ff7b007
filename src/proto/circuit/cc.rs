//! Congestion control (prop 324) on circuits that negotiated it in ntor-v3 (C tor
//! `congestion_control_*.c`, `sendme.c`, `relay.c`): the state lives in
//! [`crate::proto::flow`]; this module ties it to the circuit core.
//!
//! On such a circuit the exit:
//! * sends a circuit SENDME (v1) every `sendme_inc` DATA cells it receives (the circuit's
//!   deliver [`Windows`] use the negotiated increment; see `exit::relay_data`);
//! * packages DATA while `inflight < cwnd` ([`CongestionControl`]), records the tag and send
//!   time of every `sendme_inc`-th cell and runs Vegas on each SENDME;
//! * neither sends nor accepts stream SENDMEs; instead it sends XOFF/XON for streams whose
//!   buffer toward the destination fills/drains, and obeys the client's XOFF/XON.

use super::core::{CoreIo, RelayCore};
use super::crypto::HopCrypto;
use super::{Action, CircHandle, NetworkView};
use crate::cell::relay::msg::{Sendme, Xoff, Xon};
use crate::cell::relay::RelayCmd;
use crate::proto::flow::{
    CcParams, ChanState, CongestionControl, FlowError, FlowMsg, Windows, XonXoffError,
    SENDME_TAG_LEN,
};
use crate::proto::stream::StreamHandle;

/// What a circuit's congestion control looks like now (for tests, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcStatus {
    pub sendme_inc: u64,
    pub cwnd: u64,
    pub inflight: u64,
    pub in_slow_start: bool,
    pub min_rtt_usec: u64,
    pub ewma_rtt_usec: u64,
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// New consensus parameters for circuits created from now on (and the ntor-v3 answer).
    pub fn set_cc_params(&mut self, params: CcParams) {
        self.cfg.cc = params;
    }

    /// The congestion-control state of `circ`, if it negotiated CC.
    pub fn circuit_cc(&self, circ: CircHandle) -> Option<CcStatus> {
        let idx = self.table.resolve(circ)?;
        let cc = self.table.get(idx)?.cc.as_deref()?;
        Some(CcStatus {
            sendme_inc: cc.sendme_inc(),
            cwnd: cc.cwnd(),
            inflight: cc.inflight(),
            in_slow_start: cc.in_slow_start(),
            min_rtt_usec: cc.min_rtt_usec(),
            ewma_rtt_usec: cc.ewma_rtt_usec(),
        })
    }

    /// The handshake agreed on CC with `sendme_inc` (C `congestion_control_new`).
    pub(super) fn enable_cc(&mut self, idx: u32, sendme_inc: u8) {
        let params = self.cfg.cc;
        if let Some(c) = self.table.get_mut(idx) {
            c.cc = Some(Box::new(CongestionControl::new(&params, sendme_inc)));
            c.windows = Windows::circuit_cc(sendme_inc);
            self.metrics.cc_circuits += 1;
        }
    }

    pub(super) fn is_cc(&self, idx: u32) -> bool {
        self.table.get(idx).is_some_and(|c| c.cc.is_some())
    }

    /// A circuit SENDME on a CC circuit: authenticate it against the oldest prompting cell,
    /// then let Vegas update the window. Returns false if the circuit closed.
    pub(super) fn cc_sendme(&mut self, idx: u32, data: &[u8], io: &mut CoreIo<'_>) -> bool {
        let chan = ChanState {
            blocked: self.prev_is_congested(idx),
            queued: self.table.get(idx).map_or(0, |c| c.q_prev.len() as u64),
        };
        let tag_len = self
            .table
            .get(idx)
            .and_then(|c| c.crypto.as_ref())
            .map_or(SENDME_TAG_LEN, |k| k.sendme_tag_len());
        // CGO tags are recorded zero-padded to 20 bytes; a tag of the other algorithm's
        // length never matches (C `cell_v1_is_valid`: `tag_len != circ_digest_len`).
        let mut padded = [0u8; SENDME_TAG_LEN];
        let tag = match Sendme::parse(data) {
            Ok(Sendme::V1 { tag }) if tag.len() == tag_len => {
                padded[..tag_len].copy_from_slice(tag);
                Some(&padded[..])
            }
            Ok(Sendme::V1 { .. }) => Some(&[][..]),
            // v0 or malformed: cannot authenticate (and still consumes the expected tag).
            _ => None,
        };
        let Some(cc) = self.table.get_mut(idx).and_then(|c| c.cc.as_deref_mut()) else {
            return false;
        };
        match cc.sendme_received(tag, io.now, chan) {
            Ok(()) => {
                self.resume_streams(idx, io);
                true
            }
            Err(e) => {
                let why = if e == FlowError::SendmeTagMismatch {
                    self.metrics.sendme_auth_failures += 1;
                    super::ProtocolViolation::SendmeAuth
                } else {
                    super::ProtocolViolation::UnexpectedSendme
                };
                self.protocol_close(idx, why, io);
                false
            }
        }
    }

    /// Whether the circuit may package one more DATA cell now (CC circuits only).
    pub(super) fn cc_can_send(&self, idx: u32) -> bool {
        self.table
            .get(idx)
            .and_then(|c| c.cc.as_deref())
            .is_some_and(|cc| cc.can_send())
    }

    /// Whether circuit `idx` runs CC, and stream `sid` on it, for an XON/XOFF; `None` for an
    /// unknown stream (ignored, as C does).
    fn flow_target(&self, idx: u32, sid: u16) -> Option<(bool, StreamHandle)> {
        Some((self.is_cc(idx), self.streams.find(idx, sid)?))
    }

    /// XOFF from the client (C `circuit_process_stream_xoff`): stop reading the stream's
    /// socket. On a non-CC circuit, for an unknown stream, or as a second XOFF it is
    /// ignored (C: protocol warning). Returns circuit liveness.
    pub(super) fn relay_xoff(
        &mut self,
        idx: u32,
        sid: u16,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let Some((cc, h)) = self.flow_target(idx, sid) else {
            return true;
        };
        self.metrics.xoff_received += 1;
        let s = self.streams.get_mut(h).expect("found");
        // C does not parse XOFF bodies; a bad version is a warning at most.
        let _ = Xoff::parse(data);
        match s.flow.xoff_received(cc) {
            Ok(()) => {
                if !s.read_paused {
                    s.read_paused = true;
                    io.out.push(Action::PauseStreamRead { stream: h });
                }
            }
            Err(_) => self.metrics.xon_xoff_ignored += 1,
        }
        true
    }

    /// XON from the client (C `circuit_process_stream_xon`): resume reading the stream if
    /// an XOFF was in force. The advised rate is not enforced (the window already bounds
    /// the circuit). Ignored like XOFF when invalid. Returns circuit liveness.
    pub(super) fn relay_xon(
        &mut self,
        idx: u32,
        sid: u16,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let Some((cc, h)) = self.flow_target(idx, sid) else {
            return true;
        };
        self.metrics.xon_received += 1;
        let s = self.streams.get_mut(h).expect("found");
        let r = if Xon::parse(data).is_err() {
            Err(XonXoffError::MalformedXon)
        } else {
            s.flow.xon_received(cc)
        };
        match r {
            Ok(true) => self.resume_streams(idx, io),
            Ok(false) => {}
            Err(_) => self.metrics.xon_xoff_ignored += 1,
        }
        true
    }

    /// Sends the XOFF/XON the stream's flow state asks for. Returns circuit liveness.
    pub(super) fn send_flow_msg(
        &mut self,
        idx: u32,
        sid: u16,
        msg: Option<FlowMsg>,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let sent = match msg {
            None => return true,
            Some(FlowMsg::Xoff) => {
                self.metrics.xoff_sent += 1;
                self.cfx_originate(idx, RelayCmd::XOFF, sid, |out| Xoff.encode(out), io)
            }
            Some(FlowMsg::Xon { kbps_ewma }) => {
                self.metrics.xon_sent += 1;
                self.cfx_originate(
                    idx,
                    RelayCmd::XON,
                    sid,
                    |out| Xon { kbps_ewma }.encode(out),
                    io,
                )
            }
        };
        sent.is_some()
    }

    /// DATA for stream `h` was buffered (held in `pending`): XOFF if the buffer stays
    /// above `cc_xoff_exit`. Returns circuit liveness.
    pub(super) fn cc_data_buffered(
        &mut self,
        idx: u32,
        h: StreamHandle,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let params = self.cfg.cc;
        let Some(s) = self.streams.get_mut(h) else {
            return true;
        };
        let sid = s.stream_id;
        let msg = s
            .flow
            .data_buffered(u64::from(s.pending_bytes), io.now, &params);
        self.send_flow_msg(idx, sid, msg, io)
    }

    /// `written` bytes of stream `h` went to its socket: XON if the buffer drained after
    /// an XOFF, or an advisory XON if the drain rate changed. Returns circuit liveness.
    pub(super) fn cc_drained(
        &mut self,
        idx: u32,
        h: StreamHandle,
        written: u64,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let params = self.cfg.cc;
        let Some(s) = self.streams.get_mut(h) else {
            return true;
        };
        let sid = s.stream_id;
        let msg = s
            .flow
            .drained(written, u64::from(s.pending_bytes), io.now, &params);
        self.send_flow_msg(idx, sid, msg, io)
    }
}
