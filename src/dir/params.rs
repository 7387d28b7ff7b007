//! Consensus parameters (dir-spec §3.4.1 `params`, param-spec) that a relay acts on, with C
//! tor's defaults and ranges. Out-of-range values are clamped, as C's
//! `networkstatus_get_param` does.

use std::collections::BTreeMap;

/// Why a `params` line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("params entry {0:?} is not KEY=INT32")]
    BadEntry(String),
}

/// The parameters Fors uses, plus every raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusParams {
    /// `circwindow`: initial circuit SENDME window (C `CIRCWINDOW_START`, 100..=1000).
    pub circwindow: i32,
    /// `sendme_emit_min_version` (default 1, 0..=255).
    pub sendme_emit_min_version: i32,
    /// `sendme_accept_min_version` (default 0, 0..=255).
    pub sendme_accept_min_version: i32,
    /// `cc_alg`: 0 SENDME, 2 Vegas (default), 0..=3.
    pub cc_alg: i32,
    /// `cc_sendme_inc` (default 31 = TLS_RECORD_MAX_CELLS, 1..=254).
    pub cc_sendme_inc: i32,
    /// `refuseunknownexits` (default 1).
    pub refuse_unknown_exits: bool,
    /// `allow-network-reentry` (default 0).
    pub allow_network_reentry: bool,
    /// `ExtendByEd25519ID` (default 0).
    pub extend_by_ed25519_id: bool,
    /// `onion-key-rotation-days` (default 28, 1..=90).
    pub onion_key_rotation_days: i32,
    /// `onion-key-grace-period-days` (default 7, 1..=rotation days).
    pub onion_key_grace_period_days: i32,
    pub dos: DosParams,
    /// Every `KEY=VALUE` on the `params` line.
    pub raw: BTreeMap<String, i32>,
}

/// DoS mitigation parameters (C `dos.c`, `dos.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DosParams {
    pub cc_enabled: bool,
    pub cc_min_concurrent_conn: i32,
    pub cc_circuit_rate: i32,
    pub cc_circuit_burst: i32,
    /// 1 none, 2 refuse CREATE cells.
    pub cc_defense_type: i32,
    pub cc_defense_time_period: i32,
    pub conn_enabled: bool,
    pub conn_max_concurrent_count: i32,
    /// 1 none, 2 close.
    pub conn_defense_type: i32,
    pub conn_connect_rate: i32,
    pub conn_connect_burst: i32,
    pub conn_connect_defense_time_period: i32,
    pub refuse_single_hop_client_rendezvous: bool,
    /// `dos_num_circ_max_outq` (default 3).
    pub num_circ_max_outq: i32,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        Self::from_raw(BTreeMap::new())
    }
}

impl ConsensusParams {
    /// Parses the arguments of a `params` line (`KEY=INT32` separated by spaces).
    pub fn parse(args: &[&str]) -> Result<Self, ParamsError> {
        let mut raw = BTreeMap::new();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ParamsError::BadEntry(a.to_string()))?;
            let v: i32 = v
                .parse()
                .map_err(|_| ParamsError::BadEntry(a.to_string()))?;
            raw.insert(k.to_owned(), v);
        }
        Ok(Self::from_raw(raw))
    }

    /// A raw parameter clamped to `[min, max]`, or `default` when absent.
    pub fn get(&self, name: &str, default: i32, min: i32, max: i32) -> i32 {
        get(&self.raw, name, default, min, max)
    }

    /// The parameters of a raw `KEY → value` map (as the network snapshot keeps them).
    pub fn from_raw(raw: BTreeMap<String, i32>) -> Self {
        let g = |n: &str, d: i32, lo: i32, hi: i32| get(&raw, n, d, lo, hi);
        let max = i32::MAX;
        let rotation = g("onion-key-rotation-days", 28, 1, 90);
        let dos = DosParams {
            cc_enabled: g("DoSCircuitCreationEnabled", 0, 0, 1) != 0,
            cc_min_concurrent_conn: g("DoSCircuitCreationMinConnections", 3, 1, max),
            cc_circuit_rate: g("DoSCircuitCreationRate", 3, 1, max),
            cc_circuit_burst: g("DoSCircuitCreationBurst", 90, 1, max),
            cc_defense_type: g("DoSCircuitCreationDefenseType", 2, 1, 2),
            cc_defense_time_period: g("DoSCircuitCreationDefenseTimePeriod", 3600, 0, max),
            conn_enabled: g("DoSConnectionEnabled", 0, 0, 1) != 0,
            conn_max_concurrent_count: g("DoSConnectionMaxConcurrentCount", 100, 1, max),
            conn_defense_type: g("DoSConnectionDefenseType", 2, 1, 2),
            conn_connect_rate: g("DoSConnectionConnectRate", 20, 1, max),
            conn_connect_burst: g("DoSConnectionConnectBurst", 40, 1, max),
            conn_connect_defense_time_period: g(
                "DoSConnectionConnectDefenseTimePeriod",
                24 * 3600,
                10,
                max,
            ),
            refuse_single_hop_client_rendezvous: g("DoSRefuseSingleHopClientRendezvous", 0, 0, 1)
                != 0,
            num_circ_max_outq: g("dos_num_circ_max_outq", 3, 0, max),
        };
        Self {
            circwindow: g("circwindow", 1000, 100, 1000),
            sendme_emit_min_version: g("sendme_emit_min_version", 1, 0, 255),
            sendme_accept_min_version: g("sendme_accept_min_version", 0, 0, 255),
            cc_alg: g("cc_alg", 2, 0, 3),
            cc_sendme_inc: g("cc_sendme_inc", 31, 1, 254),
            refuse_unknown_exits: g("refuseunknownexits", 1, 0, 1) != 0,
            allow_network_reentry: g("allow-network-reentry", 0, 0, 1) != 0,
            extend_by_ed25519_id: g("ExtendByEd25519ID", 0, 0, 1) != 0,
            onion_key_rotation_days: rotation,
            onion_key_grace_period_days: g("onion-key-grace-period-days", 7, 1, rotation),
            dos,
            raw,
        }
    }
}

fn get(raw: &BTreeMap<String, i32>, name: &str, default: i32, min: i32, max: i32) -> i32 {
    raw.get(name).map_or(default, |&v| v.clamp(min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_c_tor() {
        let p = ConsensusParams::default();
        assert_eq!(p.circwindow, 1000);
        assert_eq!(p.sendme_emit_min_version, 1);
        assert_eq!(p.sendme_accept_min_version, 0);
        assert_eq!((p.cc_alg, p.cc_sendme_inc), (2, 31));
        assert!(p.refuse_unknown_exits);
        assert!(!p.allow_network_reentry && !p.extend_by_ed25519_id);
        assert_eq!(
            (p.onion_key_rotation_days, p.onion_key_grace_period_days),
            (28, 7)
        );
        assert!(!p.dos.cc_enabled && !p.dos.conn_enabled);
        assert_eq!(p.dos.cc_circuit_burst, 90);
        assert_eq!(p.dos.conn_connect_defense_time_period, 86400);
    }

    #[test]
    fn parses_and_clamps() {
        let p = ConsensusParams::parse(&[
            "circwindow=50",
            "cc_sendme_inc=33",
            "refuseunknownexits=0",
            "allow-network-reentry=1",
            "onion-key-rotation-days=3",
            "onion-key-grace-period-days=9",
            "DoSCircuitCreationEnabled=1",
            "unknown=-5",
        ])
        .unwrap();
        assert_eq!(p.circwindow, 100);
        assert_eq!(p.cc_sendme_inc, 33);
        assert!(!p.refuse_unknown_exits && p.allow_network_reentry);
        assert_eq!(
            (p.onion_key_rotation_days, p.onion_key_grace_period_days),
            (3, 3)
        );
        assert!(p.dos.cc_enabled);
        assert_eq!(p.get("unknown", 0, -10, 10), -5);
        assert_eq!(p.get("absent", 7, 0, 10), 7);
        for bad in ["x", "=3", "a=b", "a=99999999999"] {
            assert!(ConsensusParams::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
