//! Congestion control of one circuit at the data sender (prop 324 §2-3, TOR_VEGAS; C tor
//! `congestion_control_common.c`, `congestion_control_vegas.c`).
//!
//! On a circuit that negotiated CC the sender may have `cwnd` DATA cells in flight (sent,
//! not yet acknowledged). The receiver sends an authenticated circuit SENDME for every
//! `sendme_inc` DATA cells; each SENDME acknowledges `sendme_inc` cells. The sender times
//! the cell that will prompt each SENDME and measures the RTT when the SENDME arrives. From
//! the RTT (min and N-count EWMA) it estimates the bandwidth-delay product
//! (`bdp = cwnd * min_rtt / ewma_rtt`), and `cwnd - bdp` is the queue its data builds in the
//! network. Vegas grows cwnd while that queue is small and shrinks it when it is large.
//!
//! Sans-IO: every input takes `now`. No allocation per cell: the FIFO of prompting cells
//! (tag + send time, one per `sendme_inc` cells in flight) starts with room for the initial
//! window and grows by doubling as cwnd grows, so its allocations are rare and bounded by
//! cwnd / sendme_inc.

use std::collections::VecDeque;
use std::time::Instant;

use super::params::CcParams;
use super::{FlowError, SENDME_TAG_LEN};

/// An RTT this many times smaller or larger than the EWMA is a clock jump, not a
/// measurement (C `DELTA_DISCREPENCY_RATIO_MAX`).
const DELTA_DISCREPANCY_RATIO_MAX: u64 = 5000;

/// N-count EWMA: `(2*curr + (N-1)*prev) / (N+1)`, or `curr` when there is no history
/// (C `n_count_ewma`).
pub fn n_count_ewma(curr: u64, prev: u64, n: u64) -> u64 {
    if prev == 0 {
        curr
    } else {
        (2 * curr + (n - 1) * prev) / (n + 1)
    }
}

/// Weighted mix of two values: `pct_max`% of the larger plus the rest of the smaller
/// (C `percent_max_mix`).
pub fn percent_max_mix(a: u64, b: u64, pct_max: u64) -> u64 {
    let pct = pct_max.min(100);
    let (max, min) = (a.max(b), a.min(b));
    pct * max / 100 + (100 - pct) * min / 100
}

/// What the circuit's channel toward the receiver looks like when a SENDME arrives: a
/// blocked channel is itself a congestion signal (C `circuit_blocked_on_p_chan`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChanState {
    pub blocked: bool,
    /// Cells queued for that channel on this circuit.
    pub queued: u64,
}

/// TOR_VEGAS congestion control of one circuit (C `congestion_control_t`).
#[derive(Debug, Clone)]
pub struct CongestionControl {
    sendme_inc: u64,
    cwnd: u64,
    inflight: u64,
    ewma_rtt_usec: u64,
    min_rtt_usec: u64,
    max_rtt_usec: u64,
    bdp: u64,
    /// SENDMEs until the steady state may react again (once per cwnd / cwnd_inc_rate).
    next_cc_event: u64,
    /// SENDMEs until a full cwnd has been acknowledged.
    next_cwnd_event: u64,
    in_slow_start: bool,
    cwnd_full: bool,
    blocked_chan: bool,
    /// The last RTT sample looked like a stalled clock (C `is_monotime_clock_broken`,
    /// kept per circuit here).
    clock_stalled: bool,
    /// Tags and send times of the cells that will each prompt one SENDME, oldest first.
    pending: VecDeque<([u8; SENDME_TAG_LEN], Instant)>,
    p: CcParams,
    /// Counters for the shard's metrics.
    pub rtt_samples_discarded: u64,
}

impl CongestionControl {
    /// A new circuit's state with the negotiated `sendme_inc` (C `congestion_control_new`
    /// with `CC_PATH_EXIT`): slow start from `cc_cwnd_init`.
    pub fn new(params: &CcParams, sendme_inc: u8) -> Self {
        let sendme_inc = u64::from(sendme_inc.max(1));
        // Room for the initial window; it grows (rarely, amortized) with cwnd.
        let cap = (params.cwnd_init / sendme_inc + 2).min(1024) as usize;
        let mut cc = CongestionControl {
            sendme_inc,
            cwnd: params.cwnd_init,
            inflight: 0,
            ewma_rtt_usec: 0,
            min_rtt_usec: 0,
            max_rtt_usec: 0,
            bdp: 0,
            next_cc_event: 0,
            next_cwnd_event: 0,
            in_slow_start: true,
            cwnd_full: false,
            blocked_chan: false,
            clock_stalled: false,
            pending: VecDeque::with_capacity(cap),
            p: *params,
            rtt_samples_discarded: 0,
        };
        cc.next_cc_event = cc.cwnd_update_rate();
        cc
    }

    pub fn sendme_inc(&self) -> u64 {
        self.sendme_inc
    }
    pub fn cwnd(&self) -> u64 {
        self.cwnd
    }
    pub fn inflight(&self) -> u64 {
        self.inflight
    }
    pub fn in_slow_start(&self) -> bool {
        self.in_slow_start
    }
    pub fn min_rtt_usec(&self) -> u64 {
        self.min_rtt_usec
    }
    pub fn ewma_rtt_usec(&self) -> u64 {
        self.ewma_rtt_usec
    }
    pub fn bdp(&self) -> u64 {
        self.bdp
    }
    /// SENDMEs we are waiting for.
    pub fn outstanding_sendmes(&self) -> usize {
        self.pending.len()
    }

    /// DATA cells we may still send (C `congestion_control_get_package_window`).
    pub fn package_window(&self) -> u64 {
        self.cwnd.saturating_sub(self.inflight)
    }

    pub fn can_send(&self) -> bool {
        self.inflight < self.cwnd
    }

    /// Whether the next DATA cell is the one whose arrival prompts a SENDME: it makes the
    /// in-flight count a multiple of `sendme_inc` (C `circuit_sent_cell_for_sendme`; C also
    /// returns false at inflight 0, which only differs for `sendme_inc` = 1, where its
    /// receiver would still send a SENDME after the first cell).
    pub fn next_cell_prompts_sendme(&self) -> bool {
        (self.inflight + 1).is_multiple_of(self.sendme_inc)
    }

    /// A DATA cell with SENDME tag `tag` was sent at `now` (C
    /// `congestion_control_note_cell_sent` + `sendme_record_cell_digest_on_circ`).
    pub fn data_sent(&mut self, tag: &[u8; SENDME_TAG_LEN], now: Instant) {
        if self.note_cell_packaged() {
            self.record_prompting_cell(tag, now);
        }
    }

    /// The first half of [`CongestionControl::data_sent`], for a cell whose tag is known
    /// only later (staged for a multi-circuit crypto call): counts it in flight and returns
    /// whether it prompts a SENDME, i.e. whether its tag must be recorded.
    pub fn note_cell_packaged(&mut self) -> bool {
        let prompts = self.next_cell_prompts_sendme();
        self.inflight += 1;
        prompts
    }

    /// The second half: the tag of a prompting cell, sent at `now`. Tags must be recorded in
    /// the order their cells are sent.
    pub fn record_prompting_cell(&mut self, tag: &[u8; SENDME_TAG_LEN], now: Instant) {
        self.pending.push_back((*tag, now));
    }

    /// A circuit SENDME arrived at `now` carrying `tag` (`None` for a v0 or unparsable
    /// SENDME, which cannot authenticate). Checks it against the oldest prompting cell,
    /// then updates RTT, BDP and cwnd (C `sendme_process_circuit_level` →
    /// `congestion_control_vegas_process_sendme`). An error closes the circuit.
    pub fn sendme_received(
        &mut self,
        tag: Option<&[u8]>,
        now: Instant,
        chan: ChanState,
    ) -> Result<(), FlowError> {
        let Some((want, sent_at)) = self.pending.pop_front() else {
            return Err(FlowError::UnexpectedSendme);
        };
        use subtle::ConstantTimeEq;
        match tag {
            Some(t) if t.len() == SENDME_TAG_LEN && bool::from(want.ct_eq(t)) => {}
            _ => return Err(FlowError::SendmeTagMismatch),
        }
        self.process_sendme(sent_at, now, chan);
        Ok(())
    }

    /// RTT, BDP and the Vegas update for one acknowledged `sendme_inc` of cells.
    fn process_sendme(&mut self, sent_at: Instant, now: Instant, chan: ChanState) {
        let v = self.p.vegas;
        self.next_cc_event = self.next_cc_event.saturating_sub(1);
        self.next_cwnd_event = self.next_cwnd_event.saturating_sub(1);

        let rtt = self.update_rtt(sent_at, now);
        if !self.update_bdp(rtt, chan) {
            self.inflight = self.inflight.saturating_sub(self.sendme_inc);
            return;
        }
        let queue_use = self.cwnd.saturating_sub(self.bdp);

        if self.cwnd_became_full() {
            self.cwnd_full = true;
        } else if self.cwnd_became_nonfull() {
            self.cwnd_full = false;
        }

        if self.in_slow_start {
            if queue_use < v.gamma && !self.blocked_chan {
                // Grow only while the window is actually used.
                if self.cwnd_full {
                    let inc = self.rfc3742_ss_inc();
                    self.cwnd += inc;
                    // Slow start slower than the steady state's step: leave it.
                    if inc * self.sendme_per_cwnd() <= self.p.cwnd_inc * self.p.cwnd_inc_rate {
                        self.in_slow_start = false;
                    }
                }
            } else {
                // Congestion signal: cwnd to the gamma threshold, slow start ends.
                self.cwnd = self.bdp + v.gamma;
                self.in_slow_start = false;
            }
            if self.cwnd >= v.ss_cwnd_max {
                self.cwnd = v.ss_cwnd_max;
                self.in_slow_start = false;
            }
        } else if self.next_cc_event == 0 {
            // Steady state: react once per cwnd_update_rate acks.
            if queue_use > v.delta {
                self.cwnd = (self.bdp + v.delta).saturating_sub(self.p.cwnd_inc);
            } else if queue_use > v.beta || self.blocked_chan {
                self.cwnd = self.cwnd.saturating_sub(self.p.cwnd_inc);
            } else if self.cwnd_full && queue_use < v.alpha {
                self.cwnd += self.p.cwnd_inc;
            }
            self.cwnd = self.cwnd.max(self.p.cwnd_min);
        }

        if self.next_cwnd_event == 0 {
            self.next_cwnd_event = self.sendme_per_cwnd();
        }
        if self.next_cc_event == 0 {
            self.next_cc_event = self.cwnd_update_rate();
        }
        let reset = if v.cwnd_full_per_cwnd {
            self.next_cwnd_event == self.sendme_per_cwnd()
        } else {
            self.next_cc_event == self.cwnd_update_rate()
        };
        if reset {
            self.cwnd_full = false;
        }
        self.inflight = self.inflight.saturating_sub(self.sendme_inc);
        // C `congestion_control_dispatch_cc_alg`.
        self.cwnd = self.cwnd.min(self.p.cwnd_max);
    }

    /// Acks between cwnd updates: 1 in slow start, else a cwnd of acks divided by
    /// `cwnd_inc_rate`, rounded (C `CWND_UPDATE_RATE`).
    fn cwnd_update_rate(&self) -> u64 {
        if self.in_slow_start {
            1
        } else {
            let per = self.p.cwnd_inc_rate * self.sendme_inc;
            (self.cwnd + per / 2) / per
        }
    }

    /// SENDMEs in a cwnd, rounded (C `SENDME_PER_CWND`).
    fn sendme_per_cwnd(&self) -> u64 {
        (self.cwnd + self.sendme_inc / 2) / self.sendme_inc
    }

    /// RFC 3742 limited slow start (C `rfc3742_ss_inc`).
    fn rfc3742_ss_inc(&self) -> u64 {
        let cap = self.p.vegas.ss_cwnd_cap;
        if self.cwnd <= cap {
            (self.p.cwnd_inc_pct_ss * self.sendme_inc + 50) / 100
        } else {
            ((self.sendme_inc * cap + self.cwnd) / (2 * self.cwnd)).max(1)
        }
    }

    fn cwnd_became_full(&self) -> bool {
        self.inflight + self.p.vegas.cwnd_full_gap * self.sendme_inc >= self.cwnd
    }

    fn cwnd_became_nonfull(&self) -> bool {
        100 * self.inflight < self.p.vegas.cwnd_full_minpct * self.cwnd
    }

    /// EWMA span: `cc_ewma_ss` in slow start, else a share of a cwnd of acks capped at
    /// `cc_ewma_max`; at least 2 (C `n_ewma_count`).
    fn n_ewma_count(&self) -> u64 {
        let n = if self.in_slow_start {
            self.p.ewma_ss
        } else {
            (self.cwnd_update_rate() * self.p.ewma_cwnd_pct / 100).min(self.p.ewma_max)
        };
        n.max(2)
    }

    /// Whether a sample of `new` µs, against the EWMA `old`, comes from a stalled or jumping
    /// clock (C `time_delta_stalled_or_jumped`). Zero is always a stall; the ratio tests
    /// need a settled EWMA (after slow start).
    fn stalled_or_jumped(&mut self, old: u64, new: u64) -> bool {
        if new == 0 {
            self.clock_stalled = true;
            return true;
        }
        if self.in_slow_start || old == 0 {
            return false;
        }
        if old > new.saturating_mul(DELTA_DISCREPANCY_RATIO_MAX) {
            // Sudden decrease: trusted unless the clock was just seen stalled.
            return self.clock_stalled;
        }
        if new > old.saturating_mul(DELTA_DISCREPANCY_RATIO_MAX) {
            return true;
        }
        self.clock_stalled = false;
        false
    }

    /// Updates min/max/EWMA RTT from one sample; returns the sample in µs, or 0 if it was
    /// discarded (C `congestion_control_update_circuit_rtt`).
    fn update_rtt(&mut self, sent_at: Instant, now: Instant) -> u64 {
        let rtt = now.saturating_duration_since(sent_at).as_micros() as u64;
        if self.stalled_or_jumped(self.ewma_rtt_usec, rtt) {
            self.rtt_samples_discarded += 1;
            return 0;
        }
        let n = self.n_ewma_count();
        self.ewma_rtt_usec = n_count_ewma(rtt, self.ewma_rtt_usec, n);
        self.max_rtt_usec = self.max_rtt_usec.max(rtt);
        if self.min_rtt_usec == 0 {
            self.min_rtt_usec = self.ewma_rtt_usec;
        } else if self.cwnd == self.p.cwnd_min && !self.in_slow_start {
            // Stuck at cwnd_min (maybe from an abnormally low min RTT): let min RTT rise.
            self.min_rtt_usec =
                percent_max_mix(self.ewma_rtt_usec, self.min_rtt_usec, self.p.rtt_reset_pct);
        } else if self.ewma_rtt_usec < self.min_rtt_usec {
            self.min_rtt_usec = self.ewma_rtt_usec;
        }
        rtt
    }

    /// Updates the BDP estimate; false if there is nothing to act on (no RTT sample and no
    /// blocked channel) (C `congestion_control_update_circuit_bdp`).
    fn update_bdp(&mut self, rtt: u64, chan: ChanState) -> bool {
        if self.ewma_rtt_usec == 0 {
            // The clock has been stalled for the whole circuit: BDP from cwnd alone.
            let mut cwnd = self.cwnd;
            if chan.blocked {
                cwnd = if chan.queued >= cwnd {
                    self.p.cwnd_min
                } else {
                    (cwnd - chan.queued).max(self.p.cwnd_min)
                };
                self.blocked_chan = true;
            } else {
                self.blocked_chan = false;
            }
            self.bdp = cwnd;
            return chan.blocked;
        }
        self.bdp = self.cwnd * self.min_rtt_usec / self.ewma_rtt_usec;
        // A blocked channel is an immediate signal, as is its unblocking; both once.
        if chan.blocked != self.blocked_chan {
            self.blocked_chan = chan.blocked;
            self.next_cc_event = 0;
        }
        chan.blocked || rtt != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cc() -> CongestionControl {
        CongestionControl::new(&CcParams::default(), 31)
    }

    fn tag(n: u64) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[..8].copy_from_slice(&n.to_be_bytes());
        t
    }

    /// Sends as many cells as cwnd allows at `now`, numbering tags by cell; returns the
    /// tags of prompting cells in order.
    fn fill(cc: &mut CongestionControl, sent: &mut u64, now: Instant) -> Vec<[u8; 20]> {
        let mut prompts = vec![];
        while cc.can_send() {
            *sent += 1;
            if cc.next_cell_prompts_sendme() {
                prompts.push(tag(*sent));
            }
            cc.data_sent(&tag(*sent), now);
        }
        prompts
    }

    #[test]
    fn helpers_match_c_arithmetic() {
        assert_eq!(n_count_ewma(100, 0, 2), 100);
        assert_eq!(n_count_ewma(100, 40, 2), (200 + 40) / 3);
        assert_eq!(n_count_ewma(10, 100, 10), (20 + 900) / 11);
        assert_eq!(percent_max_mix(10, 30, 100), 30);
        assert_eq!(percent_max_mix(10, 30, 0), 10);
        assert_eq!(percent_max_mix(30, 10, 50), 20);
    }

    #[test]
    fn every_sendme_inc_th_cell_prompts_and_is_timed() {
        let mut c = cc();
        let t0 = Instant::now();
        let mut sent = 0;
        let prompts = fill(&mut c, &mut sent, t0);
        assert_eq!(sent, 124);
        assert_eq!(c.package_window(), 0);
        // Cells 31, 62, 93 prompt SENDMEs; cell 124 would too.
        assert_eq!(prompts, vec![tag(31), tag(62), tag(93), tag(124)]);
        assert_eq!(c.outstanding_sendmes(), 4);
        // Forged, v0 and unexpected SENDMEs are errors.
        let mut f = c.clone();
        let now = t0 + Duration::from_millis(10);
        assert_eq!(
            f.sendme_received(Some(&tag(62)), now, ChanState::default()),
            Err(FlowError::SendmeTagMismatch)
        );
        assert_eq!(
            f.sendme_received(None, now, ChanState::default()),
            Err(FlowError::SendmeTagMismatch)
        );
        let mut e = cc();
        assert_eq!(
            e.sendme_received(Some(&tag(1)), now, ChanState::default()),
            Err(FlowError::UnexpectedSendme)
        );
        // The genuine first SENDME acknowledges 31 cells; RTT = 10 ms.
        c.sendme_received(Some(&tag(31)), now, ChanState::default())
            .unwrap();
        assert_eq!(c.ewma_rtt_usec(), 10_000);
        assert_eq!(c.min_rtt_usec(), 10_000);
        // Full window at 10 ms RTT, no queue: slow start adds sendme_inc (100 %).
        assert_eq!(c.cwnd(), 124 + 31);
        assert_eq!(c.inflight(), 93);
        assert!(c.in_slow_start());
    }

    #[test]
    fn sendme_inc_other_than_31() {
        let mut c = CongestionControl::new(&CcParams::default(), 33);
        let mut sent = 0;
        let prompts = fill(&mut c, &mut sent, Instant::now());
        assert_eq!(prompts, vec![tag(33), tag(66), tag(99)]);
        let mut one = CongestionControl::new(&CcParams::default(), 1);
        assert!(one.next_cell_prompts_sendme());
        one.data_sent(&tag(1), Instant::now());
        assert_eq!(one.outstanding_sendmes(), 1);
    }

    /// A sender that always has data, over a path with a fixed `rtt`: each prompting
    /// cell's SENDME arrives `rtt` after it was sent. Runs `acks` SENDMEs; returns cwnd
    /// after each.
    fn run(c: &mut CongestionControl, t: &mut Instant, rtt: Duration, acks: usize) -> Vec<u64> {
        let mut sent = 0u64;
        let mut out = vec![];
        let mut outstanding: VecDeque<([u8; 20], Instant)> = VecDeque::new();
        // Anything still in flight from an earlier run is acknowledged at the new RTT.
        c.pending
            .iter()
            .for_each(|(p, at)| outstanding.push_back((*p, *at)));
        for _ in 0..acks {
            for p in fill(c, &mut sent, *t) {
                outstanding.push_back((p, *t));
            }
            let (p, at) = outstanding.pop_front().expect("in flight");
            *t = (*t).max(at + rtt);
            c.sendme_received(Some(&p), *t, ChanState::default())
                .unwrap();
            out.push(c.cwnd());
        }
        out
    }

    #[test]
    fn slow_start_grows_then_exits_on_rtt_increase() {
        let mut c = cc();
        let mut t = Instant::now();
        let grow = run(&mut c, &mut t, Duration::from_millis(20), 6);
        assert!(c.in_slow_start(), "{grow:?}");
        // A full window and no queue: +sendme_inc (cc_cwnd_inc_pct_ss = 100 %) per ack.
        assert_eq!(grow, (1..=6).map(|k| 124 + 31 * k).collect::<Vec<_>>());
        let before = c.cwnd();
        // Queueing: the RTT triples, so cwnd - BDP exceeds gamma and slow start ends with
        // cwnd = BDP + gamma.
        let mut acks = 0;
        while c.in_slow_start() {
            run(&mut c, &mut t, Duration::from_millis(60), 1);
            acks += 1;
            assert!(acks < 10, "slow start did not end");
        }
        assert_eq!(c.cwnd(), c.bdp() + 186);
        assert!(c.bdp() < before);
        assert!(c.min_rtt_usec() <= 20_000 && c.ewma_rtt_usec() > 40_000);
    }

    #[test]
    fn slow_start_is_capped_at_ss_max() {
        let p = CcParams {
            vegas: super::super::params::VegasParams {
                ss_cwnd_max: 600,
                ..CcParams::default().vegas
            },
            ..CcParams::default()
        };
        let mut c = CongestionControl::new(&p, 31);
        let mut t = Instant::now();
        let s = run(&mut c, &mut t, Duration::from_millis(5), 40);
        assert!(!c.in_slow_start());
        assert!(s.contains(&600), "{s:?}");
        // From then on the steady state moves by cwnd_inc (1) per update at most.
        assert!(s.windows(2).all(|w| w[1] <= w[0] + 31), "{s:?}");
        let w = c.cwnd();
        assert!((600..=640).contains(&w), "{s:?}");
    }

    fn with_vegas(f: impl FnOnce(&mut super::super::params::VegasParams)) -> CcParams {
        let mut p = CcParams::default();
        f(&mut p.vegas);
        p
    }

    #[test]
    fn steady_state_steps_and_cwnd_min() {
        // With the defaults a constant RTT after slow start leaves the queue estimate
        // between alpha and beta: cwnd holds still.
        let mut c = cc();
        let mut t = Instant::now();
        run(&mut c, &mut t, Duration::from_millis(10), 3);
        let flat = run(&mut c, &mut t, Duration::from_millis(200), 60);
        assert!(!c.in_slow_start());
        assert!(flat[20..].windows(2).all(|w| w[0] == w[1]), "{flat:?}");

        // A small beta: the queue stays above it, cwnd steps down by cwnd_inc per update
        // to cwnd_min and no further.
        let mut c = CongestionControl::new(
            &with_vegas(|v| {
                v.alpha = 5;
                v.beta = 10;
            }),
            31,
        );
        run(&mut c, &mut t, Duration::from_millis(10), 3);
        let down = run(&mut c, &mut t, Duration::from_millis(200), 150);
        assert!(down.iter().all(|&w| w >= 124), "{down:?}");
        let at_min = down
            .iter()
            .position(|&w| w == 124)
            .expect("reaches cwnd_min");
        assert!(
            down[5..at_min].windows(2).all(|w| w[1] + 1 == w[0]),
            "{down:?}"
        );
        // Stuck at cwnd_min, min RTT is reset to the EWMA (cc_rtt_reset_pct = 100 %), so
        // the queue estimate is 0 and the window grows by cwnd_inc per update again.
        assert!(c.min_rtt_usec() >= 150_000, "{}", c.min_rtt_usec());
        let up = run(&mut c, &mut t, Duration::from_millis(200), 30);
        assert!(up.windows(2).all(|w| w[1] == w[0] + 1), "{up:?}");
    }

    #[test]
    fn queue_above_delta_cuts_cwnd_to_bdp_plus_delta() {
        let mut c = CongestionControl::new(&with_vegas(|v| v.delta = 50), 31);
        let mut t = Instant::now();
        run(&mut c, &mut t, Duration::from_millis(10), 3);
        let mut acks = 0;
        while c.in_slow_start() {
            run(&mut c, &mut t, Duration::from_millis(100), 1);
            acks += 1;
            assert!(acks < 10);
        }
        // Steady state: the next update sees queue > delta.
        run(&mut c, &mut t, Duration::from_millis(100), 1);
        assert_eq!(c.cwnd(), (c.bdp() + 50 - 1).max(124));
    }

    #[test]
    fn blocked_channel_is_a_congestion_signal() {
        let mut c = cc();
        let mut t = Instant::now();
        let mut sent = 0;
        let prompts = fill(&mut c, &mut sent, t);
        t += Duration::from_millis(10);
        c.sendme_received(
            Some(&prompts[0]),
            t,
            ChanState {
                blocked: true,
                queued: 50,
            },
        )
        .unwrap();
        // In slow start a blocked channel ends slow start at BDP + gamma.
        assert!(!c.in_slow_start());
        assert_eq!(c.cwnd(), c.bdp() + 186);
    }

    #[test]
    fn zero_rtt_samples_are_discarded_as_clock_stalls() {
        let mut c = cc();
        let t = Instant::now();
        let mut sent = 0;
        let prompts = fill(&mut c, &mut sent, t);
        // SENDME "arrives" at the same instant: a stalled clock. No RTT, no cwnd change,
        // but the cells are acknowledged.
        c.sendme_received(Some(&prompts[0]), t, ChanState::default())
            .unwrap();
        assert_eq!(c.ewma_rtt_usec(), 0);
        assert_eq!(c.rtt_samples_discarded, 1);
        assert_eq!(c.cwnd(), 124);
        assert_eq!(c.inflight(), 124 - 31);
    }

    #[test]
    fn clock_jumps_after_slow_start_are_discarded() {
        let mut c = cc();
        let mut t = Instant::now();
        run(&mut c, &mut t, Duration::from_millis(10), 3);
        run(&mut c, &mut t, Duration::from_millis(100), 3);
        assert!(!c.in_slow_start());
        let ewma = c.ewma_rtt_usec();
        let (p, at) = *c.pending.front().unwrap();
        // A 5000x longer "RTT" is a clock jump (or suspended peer): ignored.
        let discarded = c.rtt_samples_discarded;
        c.sendme_received(
            Some(&p),
            at + Duration::from_micros(ewma * 5001),
            ChanState::default(),
        )
        .unwrap();
        assert_eq!(c.rtt_samples_discarded, discarded + 1);
        assert_eq!(c.ewma_rtt_usec(), ewma);
    }
}
