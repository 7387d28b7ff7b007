//! Which DoS defences are on and with what thresholds: the torrc's `DoS*` options layered
//! over the consensus parameters, as C tor's `dos.c` `get_param_*` functions do.
//!
//! C tor's rule (dos_options.inc): the `…Enabled` options are auto-bools ("auto" = follow
//! the consensus); every other option means "follow the consensus" when it is 0, its default.
//! A non-zero torrc value is used as is, without the consensus parameter's bounds.

use crate::dir::params::DosParams;

/// What to do with a CREATE cell from a marked address (C `dos_cc_defense_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcDefenseType {
    /// 1: only detect and count.
    None,
    /// 2: answer CREATE* with DESTROY (RESOURCELIMIT) without doing the handshake.
    RefuseCell,
}

/// What to do with a new connection from a refused address (C `dos_conn_defense_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnDefenseType {
    /// 1: only detect and count.
    None,
    /// 2: close the new connection at once.
    Close,
}

impl CcDefenseType {
    /// C compares the configured number with `DOS_CC_DEFENSE_REFUSE_CELL` (2); any other
    /// value acts as "none".
    pub fn from_number(n: u32) -> Self {
        if n == 2 {
            CcDefenseType::RefuseCell
        } else {
            CcDefenseType::None
        }
    }
}

impl ConnDefenseType {
    /// C compares the configured number with `DOS_CONN_DEFENSE_CLOSE` (2).
    pub fn from_number(n: u32) -> Self {
        if n == 2 {
            ConnDefenseType::Close
        } else {
            ConnDefenseType::None
        }
    }
}

/// The torrc's `DoS*` options. `None` / 0 mean "use the consensus parameter".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DosOptions {
    /// `DoSCircuitCreationEnabled` (0, 1, auto).
    pub cc_enabled: Option<bool>,
    /// `DoSCircuitCreationMinConnections`.
    pub cc_min_concurrent_conn: u32,
    /// `DoSCircuitCreationRate` (circuits per second).
    pub cc_circuit_rate: u32,
    /// `DoSCircuitCreationBurst`.
    pub cc_circuit_burst: u32,
    /// `DoSCircuitCreationDefenseType` (1 none, 2 refuse).
    pub cc_defense_type: u32,
    /// `DoSCircuitCreationDefenseTimePeriod`, seconds.
    pub cc_defense_time_period: u32,
    /// `DoSConnectionEnabled` (0, 1, auto).
    pub conn_enabled: Option<bool>,
    /// `DoSConnectionMaxConcurrentCount`.
    pub conn_max_concurrent_count: u32,
    /// `DoSConnectionDefenseType` (1 none, 2 close).
    pub conn_defense_type: u32,
    /// `DoSConnectionConnectRate` (connections per second).
    pub conn_connect_rate: u32,
    /// `DoSConnectionConnectBurst`.
    pub conn_connect_burst: u32,
    /// `DoSConnectionConnectDefenseTimePeriod`, seconds.
    pub conn_connect_defense_time_period: u32,
}

impl DosOptions {
    /// The options for a relay that does (`public`) or does not publish its descriptor.
    /// C tor runs the DoS subsystem only in `public_server_mode()`: `options_act_relay_dos`
    /// calls `dos_init` only then and `dos_consensus_has_changed` returns early otherwise,
    /// so with `PublishServerDescriptor 0` both defences stay off whatever the torrc or the
    /// consensus say (even `DoSCircuitCreationEnabled 1`). Fors does the same.
    pub fn for_relay(self, public: bool) -> DosOptions {
        if public {
            self
        } else {
            DosOptions {
                cc_enabled: Some(false),
                conn_enabled: Some(false),
                ..self
            }
        }
    }
}

/// The thresholds in force: the torrc where it says so, else the consensus (or its
/// defaults before one arrives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DosConfig {
    pub cc_enabled: bool,
    pub cc_min_concurrent_conn: u32,
    pub cc_circuit_rate: u32,
    pub cc_circuit_burst: u32,
    pub cc_defense_type: CcDefenseType,
    pub cc_defense_time_period: u32,
    pub conn_enabled: bool,
    pub conn_max_concurrent_count: u32,
    pub conn_defense_type: ConnDefenseType,
    pub conn_connect_rate: u32,
    pub conn_connect_burst: u32,
    pub conn_connect_defense_time_period: u32,
}

/// A consensus value (already clamped to its C bounds, all ≥ 0) as u32.
fn u(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// The torrc value when non-zero, else the consensus one.
fn pick(torrc: u32, consensus: i32) -> u32 {
    if torrc != 0 {
        torrc
    } else {
        u(consensus)
    }
}

impl DosConfig {
    /// C `set_dos_parameters`: each value from the torrc when it sets one, else from the
    /// consensus parameters `params` (defaults and bounds applied by `dir::params`).
    pub fn resolve(torrc: &DosOptions, params: &DosParams) -> DosConfig {
        DosConfig {
            cc_enabled: torrc.cc_enabled.unwrap_or(params.cc_enabled),
            cc_min_concurrent_conn: pick(
                torrc.cc_min_concurrent_conn,
                params.cc_min_concurrent_conn,
            ),
            cc_circuit_rate: pick(torrc.cc_circuit_rate, params.cc_circuit_rate),
            cc_circuit_burst: pick(torrc.cc_circuit_burst, params.cc_circuit_burst),
            cc_defense_type: CcDefenseType::from_number(pick(
                torrc.cc_defense_type,
                params.cc_defense_type,
            )),
            cc_defense_time_period: pick(
                torrc.cc_defense_time_period,
                params.cc_defense_time_period,
            ),
            conn_enabled: torrc.conn_enabled.unwrap_or(params.conn_enabled),
            conn_max_concurrent_count: pick(
                torrc.conn_max_concurrent_count,
                params.conn_max_concurrent_count,
            ),
            conn_defense_type: ConnDefenseType::from_number(pick(
                torrc.conn_defense_type,
                params.conn_defense_type,
            )),
            conn_connect_rate: pick(torrc.conn_connect_rate, params.conn_connect_rate),
            conn_connect_burst: pick(torrc.conn_connect_burst, params.conn_connect_burst),
            conn_connect_defense_time_period: pick(
                torrc.conn_connect_defense_time_period,
                params.conn_connect_defense_time_period,
            ),
        }
    }

    /// [`DosConfig::resolve`] over a consensus's raw `params` (`KEY → value`), with
    /// `dir::params`' C defaults and bounds applied.
    pub fn from_raw_params(
        torrc: &DosOptions,
        raw: &std::collections::BTreeMap<String, i32>,
    ) -> DosConfig {
        let args: Vec<String> = raw.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let params = crate::dir::params::ConsensusParams::parse(&args).unwrap_or_default();
        DosConfig::resolve(torrc, &params.dos)
    }

    /// C `dos_is_enabled`: connections are tracked only while one defence is on.
    pub fn any_enabled(&self) -> bool {
        self.cc_enabled || self.conn_enabled
    }
}

impl Default for DosConfig {
    /// The consensus defaults with no torrc override (both defences off).
    fn default() -> Self {
        DosConfig::resolve(
            &DosOptions::default(),
            &crate::dir::params::ConsensusParams::default().dos,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::params::ConsensusParams;

    #[test]
    fn defaults_follow_c_tor() {
        let c = DosConfig::default();
        assert!(!c.cc_enabled && !c.conn_enabled && !c.any_enabled());
        assert_eq!(
            (
                c.cc_min_concurrent_conn,
                c.cc_circuit_rate,
                c.cc_circuit_burst
            ),
            (3, 3, 90)
        );
        assert_eq!(c.cc_defense_type, CcDefenseType::RefuseCell);
        assert_eq!(c.cc_defense_time_period, 3600);
        assert_eq!(c.conn_max_concurrent_count, 100);
        assert_eq!(c.conn_defense_type, ConnDefenseType::Close);
        assert_eq!((c.conn_connect_rate, c.conn_connect_burst), (20, 40));
        assert_eq!(c.conn_connect_defense_time_period, 86400);
    }

    #[test]
    fn consensus_then_torrc_precedence() {
        let p = ConsensusParams::parse(&[
            "DoSCircuitCreationEnabled=1",
            "DoSCircuitCreationBurst=30",
            "DoSConnectionEnabled=1",
            "DoSConnectionMaxConcurrentCount=50",
            "DoSConnectionDefenseType=1",
            "DoSConnectionConnectDefenseTimePeriod=3",
        ])
        .unwrap();
        // Consensus only: its values, clamped by dir::params (period min 10).
        let c = DosConfig::resolve(&DosOptions::default(), &p.dos);
        assert!(c.cc_enabled && c.conn_enabled);
        assert_eq!(c.cc_circuit_burst, 30);
        assert_eq!(c.conn_max_concurrent_count, 50);
        assert_eq!(c.conn_defense_type, ConnDefenseType::None);
        assert_eq!(c.conn_connect_defense_time_period, 10);
        // The torrc wins where it is set; "auto"/0 fall through to the consensus.
        let t = DosOptions {
            cc_enabled: Some(false),
            cc_circuit_burst: 5,
            conn_max_concurrent_count: 3,
            conn_defense_type: 2,
            conn_connect_defense_time_period: 5,
            ..DosOptions::default()
        };
        let c = DosConfig::resolve(&t, &p.dos);
        assert!(!c.cc_enabled && c.conn_enabled);
        assert_eq!(c.cc_circuit_burst, 5);
        assert_eq!(c.cc_circuit_rate, 3, "consensus default");
        assert_eq!(c.conn_max_concurrent_count, 3);
        assert_eq!(c.conn_defense_type, ConnDefenseType::Close);
        // A torrc value is not held to the consensus bound, as in C.
        assert_eq!(c.conn_connect_defense_time_period, 5);
        // The torrc can turn a defence on that the consensus leaves off.
        let on = DosOptions {
            conn_enabled: Some(true),
            ..DosOptions::default()
        };
        assert!(DosConfig::resolve(&on, &ConsensusParams::default().dos).conn_enabled);
    }

    #[test]
    fn raw_consensus_params_are_clamped_like_c() {
        let raw: std::collections::BTreeMap<String, i32> = [
            ("DoSConnectionEnabled", 1),
            ("DoSConnectionMaxConcurrentCount", 0),
            ("DoSCircuitCreationDefenseType", 9),
            ("DoSCircuitCreationRate", 6),
            ("circwindow", 500),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let c = DosConfig::from_raw_params(&DosOptions::default(), &raw);
        assert!(c.conn_enabled && !c.cc_enabled);
        // Clamped to C's bounds: MaxConcurrentCount ≥ 1, DefenseType ≤ 2.
        assert_eq!(c.conn_max_concurrent_count, 1);
        assert_eq!(c.cc_defense_type, CcDefenseType::RefuseCell);
        assert_eq!(c.cc_circuit_rate, 6);
        // The torrc still wins.
        let t = DosOptions {
            conn_enabled: Some(false),
            cc_circuit_rate: 2,
            ..DosOptions::default()
        };
        let c = DosConfig::from_raw_params(&t, &raw);
        assert!(!c.conn_enabled);
        assert_eq!(c.cc_circuit_rate, 2);
        // No consensus yet: the defaults.
        assert_eq!(
            DosConfig::from_raw_params(&DosOptions::default(), &Default::default()),
            DosConfig::default()
        );
    }

    #[test]
    fn defences_are_off_on_a_relay_that_does_not_publish() {
        let p = ConsensusParams::parse(&["DoSCircuitCreationEnabled=1", "DoSConnectionEnabled=1"])
            .unwrap();
        let t = DosOptions {
            cc_enabled: Some(true),
            conn_enabled: Some(true),
            cc_circuit_burst: 5,
            ..DosOptions::default()
        };
        let private = DosConfig::resolve(&t.for_relay(false), &p.dos);
        assert!(!private.any_enabled(), "torrc and consensus both say on");
        assert!(!DosConfig::resolve(&DosOptions::default().for_relay(false), &p.dos).any_enabled());
        let public = DosConfig::resolve(&t.for_relay(true), &p.dos);
        assert!(public.cc_enabled && public.conn_enabled);
        assert_eq!(public.cc_circuit_burst, 5);
    }

    #[test]
    fn defense_numbers() {
        assert_eq!(CcDefenseType::from_number(2), CcDefenseType::RefuseCell);
        assert_eq!(CcDefenseType::from_number(1), CcDefenseType::None);
        assert_eq!(ConnDefenseType::from_number(2), ConnDefenseType::Close);
        assert_eq!(ConnDefenseType::from_number(3), ConnDefenseType::None);
    }
}
