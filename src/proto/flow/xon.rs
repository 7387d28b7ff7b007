//! Stream flow control on congestion-controlled circuits (prop 324 §4, XON/XOFF; C tor
//! `congestion_control_flow.c`), for an exit stream.
//!
//! Stream SENDMEs are not used on CC circuits. Instead, as the *receiver* of the client's
//! data the exit sends XOFF when the bytes buffered toward the destination exceed
//! `cc_xoff_exit` (after a 5 ms grace period for the buffer to drain, C bug 41130), and
//! XON once the buffer has drained, advising the drain rate it measured (kB/s). As the
//! *sender* toward the client it stops reading the destination socket on XOFF and resumes
//! on XON. Sans-IO: inputs take `now`; outputs are the messages to send.

use std::time::{Duration, Instant};

use super::params::{CcParams, RELAY_PAYLOAD_SIZE};
use super::vegas::n_count_ewma;

/// Time the buffer gets to drain below the limit before XOFF (C `XOFF_GRACE_PERIOD_USEC`).
pub const XOFF_GRACE_PERIOD: Duration = Duration::from_micros(5000);
/// Cells that may arrive in one burst before the buffer counts as not draining (C
/// `MAX_EXPECTED_CELL_BURST`).
const MAX_EXPECTED_CELL_BURST: u64 = 32;

/// A flow-control message the exit must send on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMsg {
    Xoff,
    /// XON with the advised drain rate in kB/s (0 = no advice).
    Xon {
        kbps_ewma: u32,
    },
}

/// Why a received XON/XOFF was ignored (C logs a protocol warning and drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XonXoffError {
    #[error("XON/XOFF on a circuit without congestion control")]
    NotCongestionControlled,
    #[error("second XOFF without an XON in between")]
    DuplicateXoff,
    #[error("malformed XON")]
    MalformedXon,
}

/// XON/XOFF state of one stream (C's `edge_connection_t` flow-control fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamFlow {
    /// We sent XOFF and no XON since.
    pub xoff_sent: bool,
    /// The client sent XOFF and no XON since: do not package this stream's data.
    pub xoff_received: bool,
    grace_start: Option<Instant>,
    drain_start: Option<Instant>,
    drained_bytes: u64,
    prev_drained_bytes: u64,
    ewma_drain_rate: u32,
    ewma_rate_last_sent: u32,
}

impl StreamFlow {
    /// Data arrived for the destination and `buffered` bytes now wait to be written (C
    /// `flow_control_decide_xoff`). Returns XOFF once the buffer stayed above the limit
    /// past the grace period, or an advisory XON if the buffer is not draining and the
    /// rate changed.
    pub fn data_buffered(&mut self, buffered: u64, now: Instant, p: &CcParams) -> Option<FlowMsg> {
        let mut msg = None;
        if buffered > p.xoff_exit_bytes {
            if !self.xoff_sent {
                match self.grace_start {
                    None => self.grace_start = Some(now),
                    Some(start) if now > start + XOFF_GRACE_PERIOD => {
                        self.xoff_sent = true;
                        // The drain rate is wrong if we got all the way to XOFF.
                        self.ewma_drain_rate = 0;
                        self.grace_start = None;
                        msg = Some(FlowMsg::Xoff);
                    }
                    Some(_) => {}
                }
            }
        } else {
            self.grace_start = None;
        }
        if buffered > MAX_EXPECTED_CELL_BURST * u64::from(RELAY_PAYLOAD_SIZE) {
            // Writes happen only as the socket drains, so check the rate advice here too.
            if let Some(m) = self.drained(0, buffered, now, p) {
                msg = msg.or(Some(m));
            }
        }
        msg
    }

    /// `written` bytes went to the destination and `buffered` still wait (C
    /// `flow_control_decide_xon`). Returns XON when the buffer emptied after an XOFF, or
    /// when the measured drain rate moved by more than `cc_xon_change_pct`.
    pub fn drained(
        &mut self,
        written: u64,
        buffered: u64,
        now: Instant,
        p: &CcParams,
    ) -> Option<FlowMsg> {
        if self.drained_bytes >= u64::from(u32::MAX) - written {
            self.drained_bytes /= 2;
            if let Some(start) = self.drain_start {
                self.drain_start = Some(start + now.saturating_duration_since(start) / 2);
            }
        }
        self.drained_bytes += written;
        if self.drain_start.is_none() && buffered > 0 {
            self.drain_start = Some(now);
            self.drained_bytes = 0;
        }
        if let Some(start) = self.drain_start {
            if self.drained_bytes > p.xon_rate_bytes {
                if self.prev_drained_bytes == 0 {
                    self.prev_drained_bytes = self.drained_bytes;
                }
                let rate = drain_rate(self.prev_drained_bytes, start, now);
                self.prev_drained_bytes = self.drained_bytes;
                if rate != 0 {
                    self.ewma_drain_rate = n_count_ewma(
                        u64::from(rate),
                        u64::from(self.ewma_drain_rate),
                        p.xon_ewma_cnt,
                    )
                    .min(u64::from(u32::MAX)) as u32;
                    self.drained_bytes = 0;
                    self.drain_start = None;
                }
            }
        }
        let mut msg = None;
        if !self.xoff_sent {
            if self.rate_changed(p) {
                msg = Some(self.send_xon());
            }
        } else if buffered == 0 {
            msg = Some(self.send_xon());
        }
        if buffered == 0 {
            self.drain_start = None;
            // A buffer that stayed empty for xon_rate bytes: double the advice.
            if self.drained_bytes >= p.xon_rate_bytes && self.ewma_rate_last_sent != 0 {
                self.ewma_drain_rate = self.ewma_drain_rate.saturating_mul(2).min(i32::MAX as u32);
                self.prev_drained_bytes = self.drained_bytes;
                self.drained_bytes = 0;
            }
        }
        msg
    }

    fn send_xon(&mut self) -> FlowMsg {
        self.ewma_rate_last_sent = self.ewma_drain_rate;
        self.xoff_sent = false;
        FlowMsg::Xon {
            kbps_ewma: self.ewma_drain_rate,
        }
    }

    fn rate_changed(&self, p: &CcParams) -> bool {
        let last = u64::from(self.ewma_rate_last_sent);
        if last == 0 {
            return false;
        }
        let now = u64::from(self.ewma_drain_rate);
        now > (100 + p.xon_change_pct) * last / 100 || now < (100 - p.xon_change_pct) * last / 100
    }

    /// The client sent XOFF (C `circuit_process_stream_xoff`): stop packaging. `cc` says
    /// whether the circuit negotiated congestion control.
    pub fn xoff_received(&mut self, cc: bool) -> Result<(), XonXoffError> {
        if !cc {
            return Err(XonXoffError::NotCongestionControlled);
        }
        if self.xoff_received {
            return Err(XonXoffError::DuplicateXoff);
        }
        self.xoff_received = true;
        Ok(())
    }

    /// The client sent XON (C `circuit_process_stream_xon`). Returns whether packaging
    /// resumes (an XOFF was in force). The advised rate is not enforced by Fors.
    pub fn xon_received(&mut self, cc: bool) -> Result<bool, XonXoffError> {
        if !cc {
            return Err(XonXoffError::NotCongestionControlled);
        }
        Ok(::core::mem::take(&mut self.xoff_received))
    }
}

/// Bytes per µs × 1000 = kB/s, at least 1 (C `compute_drain_rate`).
fn drain_rate(bytes: u64, start: Instant, now: Instant) -> u32 {
    let usec = now.saturating_duration_since(start).as_micros() as u64;
    if usec == 0 {
        return 0;
    }
    if bytes > (i32::MAX / 1000) as u64 || bytes / usec > (i32::MAX / 1000) as u64 {
        return i32::MAX as u32;
    }
    ((bytes * 1000 / usec) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoff_after_grace_then_xon_when_drained() {
        let p = CcParams::default();
        let limit = p.xoff_exit_bytes;
        let mut f = StreamFlow::default();
        let t = Instant::now();
        assert_eq!(f.data_buffered(limit, t, &p), None);
        // Above the limit: the grace period starts; still above after 5 ms → XOFF.
        assert_eq!(f.data_buffered(limit + 1, t, &p), None);
        assert_eq!(
            f.data_buffered(limit + 2, t + Duration::from_millis(4), &p),
            None
        );
        let t6 = t + Duration::from_millis(6);
        assert_eq!(f.data_buffered(limit + 3, t6, &p), Some(FlowMsg::Xoff));
        assert!(f.xoff_sent);
        // No second XOFF while one is outstanding.
        assert_eq!(
            f.data_buffered(limit + 9, t6 + Duration::from_millis(20), &p),
            None
        );
        // Partial drain: still buffered, no XON. Full drain: XON with the measured rate.
        assert_eq!(
            f.drained(100_000, 200_000, t6 + Duration::from_millis(30), &p),
            None
        );
        let m = f.drained(300_000, 0, t6 + Duration::from_millis(50), &p);
        match m {
            Some(FlowMsg::Xon { kbps_ewma }) => assert!(kbps_ewma > 0, "{kbps_ewma}"),
            other => panic!("{other:?}"),
        }
        assert!(!f.xoff_sent);
    }

    #[test]
    fn dip_below_limit_resets_the_grace_period() {
        let p = CcParams::default();
        let mut f = StreamFlow::default();
        let t = Instant::now();
        f.data_buffered(p.xoff_exit_bytes + 1, t, &p);
        f.data_buffered(10, t + Duration::from_millis(3), &p);
        assert_eq!(
            f.data_buffered(p.xoff_exit_bytes + 1, t + Duration::from_millis(7), &p),
            None
        );
        assert_eq!(
            f.data_buffered(p.xoff_exit_bytes + 1, t + Duration::from_millis(13), &p),
            Some(FlowMsg::Xoff)
        );
    }

    #[test]
    fn drain_rate_in_kilobytes_per_second() {
        let t = Instant::now();
        // 1 MB in one second = 1000 kB/s.
        assert_eq!(drain_rate(1_000_000, t, t + Duration::from_secs(1)), 1000);
        assert_eq!(drain_rate(10, t, t + Duration::from_secs(10)), 1);
        assert_eq!(drain_rate(10, t, t), 0);
    }

    #[test]
    fn received_xon_xoff_rules() {
        let mut f = StreamFlow::default();
        assert_eq!(
            f.xoff_received(false),
            Err(XonXoffError::NotCongestionControlled)
        );
        assert_eq!(
            f.xon_received(false),
            Err(XonXoffError::NotCongestionControlled)
        );
        assert!(!f.xoff_received);
        f.xoff_received(true).unwrap();
        assert_eq!(f.xoff_received(true), Err(XonXoffError::DuplicateXoff));
        assert!(f.xoff_received);
        assert_eq!(f.xon_received(true), Ok(true));
        assert!(!f.xoff_received);
        // XON without XOFF: accepted, nothing to resume.
        assert_eq!(f.xon_received(true), Ok(false));
    }
}
