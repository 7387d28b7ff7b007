//! Congestion-control consensus parameters (prop 324 §6.5; param-spec), with C tor 0.4.9's
//! defaults and ranges (`congestion_control_common.c`, `congestion_control_vegas.c`,
//! `congestion_control_flow.c`). Values outside a range are clamped, as C's
//! `networkstatus_get_param` does.

/// Cells per TLS record: 16 KiB / 514-byte cells = 31 (C `TLS_RECORD_MAX_CELLS`).
pub const TLS_RECORD_MAX_CELLS: u32 = (16 * 1024) / 514;
/// RELAY_PAYLOAD_SIZE: the unit of `cc_xoff_*` and `cc_xon_rate` (counted in cells).
pub const RELAY_PAYLOAD_SIZE: u32 = 498;
/// Two TLS records of cells: the queue-size unit of the Vegas thresholds (C `OUTBUF_CELLS`).
const OUTBUF_CELLS: u32 = 2 * TLS_RECORD_MAX_CELLS;

/// Vegas thresholds for exit circuits (C `congestion_control_vegas_set_params`,
/// `CC_PATH_EXIT`: three hops, so three outbufs of cells). All in cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VegasParams {
    /// `cc_vegas_alpha_exit` (default 3*62 = 186, 0..=1000): queue use below which the
    /// steady state grows cwnd.
    pub alpha: u64,
    /// `cc_vegas_beta_exit` (default 4*62 = 248, 0..=1000): queue use above which it
    /// shrinks cwnd.
    pub beta: u64,
    /// `cc_vegas_gamma_exit` (default 3*62 = 186, 0..=1000): queue use that ends slow start.
    pub gamma: u64,
    /// `cc_vegas_delta_exit` (default 5*62 = 310, 0..=i32::MAX): queue use that cuts cwnd
    /// straight back to BDP + delta.
    pub delta: u64,
    /// `cc_sscap_exit` (default 600, 100..=i32::MAX): RFC 3742 limited slow start above it.
    pub ss_cwnd_cap: u64,
    /// `cc_ss_max` (default 5000, 500..=i32::MAX): slow start ends at this cwnd.
    pub ss_cwnd_max: u64,
    /// `cc_cwnd_full_gap` (default 4, 0..=i16::MAX): sendme_incs of slack for "cwnd full".
    pub cwnd_full_gap: u64,
    /// `cc_cwnd_full_minpct` (default 25, 0..=100): below this % used, cwnd is not full.
    pub cwnd_full_minpct: u64,
    /// `cc_cwnd_full_per_cwnd` (default 1, 0..=1): reset "cwnd full" once per cwnd of acks
    /// (1) or at every cwnd update (0).
    pub cwnd_full_per_cwnd: bool,
}

/// Everything a circuit's congestion control and its streams' XON/XOFF take from the
/// consensus. The shard rebuilds it when a new consensus arrives; circuits copy the
/// values they need at creation, as C caches them in `congestion_control_init_params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcParams {
    /// `cc_alg` (default 2 = Vegas, 0..=3). 0 (fixed SENDME windows) disables CC; C treats
    /// the unsupported 1 and 3 as its default, Vegas.
    pub alg: u8,
    /// `cc_sendme_inc` (default 31, 1..=254): cells per circuit SENDME, echoed in CC_RESPONSE.
    pub sendme_inc: u8,
    /// `cc_cwnd_init` (default 4*31 = 124, 31..=10000).
    pub cwnd_init: u64,
    /// `cc_cwnd_min` (default 124, 31..=1000).
    pub cwnd_min: u64,
    /// `cc_cwnd_max` (default i32::MAX, 500..=i32::MAX).
    pub cwnd_max: u64,
    /// `cc_cwnd_inc` (default 1, 1..=1000): steady-state step.
    pub cwnd_inc: u64,
    /// `cc_cwnd_inc_pct_ss` (default 100, 1..=500): slow-start step, % of sendme_inc.
    pub cwnd_inc_pct_ss: u64,
    /// `cc_cwnd_inc_rate` (default 31, 1..=250): cwnd updates per cwnd of acks.
    pub cwnd_inc_rate: u64,
    /// `cc_ewma_cwnd_pct` (default 50, 1..=255): RTT EWMA span as % of a cwnd of acks.
    pub ewma_cwnd_pct: u64,
    /// `cc_ewma_max` (default 10, 2..=i32::MAX).
    pub ewma_max: u64,
    /// `cc_ewma_ss` (default 2, 2..=i32::MAX): EWMA span in slow start.
    pub ewma_ss: u64,
    /// `cc_rtt_reset_pct` (default 100, 0..=100): how far min RTT moves toward the EWMA
    /// when cwnd sits at cwnd_min.
    pub rtt_reset_pct: u64,
    pub vegas: VegasParams,
    /// `cc_xoff_exit` (default 500 cells, 1..=10000) × 498 bytes: stream bytes buffered
    /// toward the destination before the exit sends XOFF.
    pub xoff_exit_bytes: u64,
    /// `cc_xon_change_pct` (default 25, 1..=99): drain-rate change that warrants a new XON.
    pub xon_change_pct: u64,
    /// `cc_xon_rate` (default 500 cells, 1..=5000) × 498 bytes drained between rate updates.
    pub xon_rate_bytes: u64,
    /// `cc_xon_ewma_cnt` (default 2, 2..=100).
    pub xon_ewma_cnt: u64,
}

impl Default for CcParams {
    fn default() -> Self {
        Self::from_lookup(|_| None)
    }
}

impl CcParams {
    /// Builds the parameters from a consensus `params` lookup (absent → C's default;
    /// out of range → clamped).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<i32>) -> Self {
        let g = |name: &str, default: i64, min: i64, max: i64| -> u64 {
            lookup(name)
                .map_or(default, |v| i64::from(v).clamp(min, max))
                .max(0) as u64
        };
        let imax = i64::from(i32::MAX);
        let inc = i64::from(TLS_RECORD_MAX_CELLS);
        let outbuf = i64::from(OUTBUF_CELLS);
        let payload = u64::from(RELAY_PAYLOAD_SIZE);
        let alg = g("cc_alg", 2, 0, 3) as u8;
        CcParams {
            // C: 1 (Westwood) and 3 (NOLA) are gone; warn and use Vegas.
            alg: if alg == 0 { 0 } else { 2 },
            sendme_inc: g("cc_sendme_inc", inc, 1, 254) as u8,
            cwnd_init: g("cc_cwnd_init", 4 * inc, inc, 10_000),
            cwnd_min: g("cc_cwnd_min", 4 * inc, inc, 1000),
            cwnd_max: g("cc_cwnd_max", imax, 500, imax),
            cwnd_inc: g("cc_cwnd_inc", 1, 1, 1000),
            cwnd_inc_pct_ss: g("cc_cwnd_inc_pct_ss", 100, 1, 500),
            cwnd_inc_rate: g("cc_cwnd_inc_rate", inc, 1, 250),
            ewma_cwnd_pct: g("cc_ewma_cwnd_pct", 50, 1, 255),
            ewma_max: g("cc_ewma_max", 10, 2, imax),
            ewma_ss: g("cc_ewma_ss", 2, 2, imax),
            rtt_reset_pct: g("cc_rtt_reset_pct", 100, 0, 100),
            vegas: VegasParams {
                alpha: g("cc_vegas_alpha_exit", 3 * outbuf, 0, 1000),
                beta: g("cc_vegas_beta_exit", 4 * outbuf, 0, 1000),
                gamma: g("cc_vegas_gamma_exit", 3 * outbuf, 0, 1000),
                delta: g("cc_vegas_delta_exit", 5 * outbuf, 0, imax),
                ss_cwnd_cap: g("cc_sscap_exit", 600, 100, imax),
                ss_cwnd_max: g("cc_ss_max", 5000, 500, imax),
                cwnd_full_gap: g("cc_cwnd_full_gap", 4, 0, i64::from(i16::MAX)),
                cwnd_full_minpct: g("cc_cwnd_full_minpct", 25, 0, 100),
                cwnd_full_per_cwnd: g("cc_cwnd_full_per_cwnd", 1, 0, 1) != 0,
            },
            xoff_exit_bytes: g("cc_xoff_exit", 500, 1, 10_000) * payload,
            xon_change_pct: g("cc_xon_change_pct", 25, 1, 99),
            xon_rate_bytes: g("cc_xon_rate", 500, 1, 5000) * payload,
            xon_ewma_cnt: g("cc_xon_ewma_cnt", 2, 2, 100),
        }
    }

    /// Whether CC is on in this consensus (C `congestion_control_enabled`: `cc_alg` is not
    /// 0; Fors has no `__AlwaysCongestionControl`).
    pub fn enabled(&self) -> bool {
        self.alg != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn defaults_are_c_tors() {
        let p = CcParams::default();
        assert!(p.enabled());
        assert_eq!(TLS_RECORD_MAX_CELLS, 31);
        assert_eq!(p.sendme_inc, 31);
        assert_eq!(
            (p.cwnd_init, p.cwnd_min, p.cwnd_max),
            (124, 124, i32::MAX as u64)
        );
        assert_eq!(
            (p.cwnd_inc, p.cwnd_inc_pct_ss, p.cwnd_inc_rate),
            (1, 100, 31)
        );
        assert_eq!((p.ewma_cwnd_pct, p.ewma_max, p.ewma_ss), (50, 10, 2));
        let v = p.vegas;
        assert_eq!((v.alpha, v.beta, v.gamma, v.delta), (186, 248, 186, 310));
        assert_eq!((v.ss_cwnd_cap, v.ss_cwnd_max), (600, 5000));
        assert_eq!((v.cwnd_full_gap, v.cwnd_full_minpct), (4, 25));
        assert!(v.cwnd_full_per_cwnd);
        assert_eq!(p.xoff_exit_bytes, 500 * 498);
        assert_eq!(p.xon_rate_bytes, 500 * 498);
        assert_eq!((p.xon_change_pct, p.xon_ewma_cnt), (25, 2));
    }

    #[test]
    fn consensus_values_are_clamped_and_alg_zero_disables() {
        let m: BTreeMap<&str, i32> = [
            ("cc_alg", 0),
            ("cc_sendme_inc", 300),
            ("cc_cwnd_min", 5),
            ("cc_xoff_exit", 10),
            ("cc_vegas_alpha_exit", -4),
        ]
        .into();
        let p = CcParams::from_lookup(|k| m.get(k).copied());
        assert!(!p.enabled());
        assert_eq!(p.sendme_inc, 254);
        assert_eq!(p.cwnd_min, 31);
        assert_eq!(p.xoff_exit_bytes, 4980);
        assert_eq!(p.vegas.alpha, 0);
        // Westwood / NOLA are not supported: C falls back to Vegas.
        let p = CcParams::from_lookup(|k| (k == "cc_alg").then_some(1));
        assert_eq!(p.alg, 2);
    }
}
