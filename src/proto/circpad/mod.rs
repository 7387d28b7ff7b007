//! Circuit-level padding, relay side (padding-spec §3, prop 254; C tor 0.4.9
//! `circuitpadding.c`, `circuitpadding_machines.c`): the machines a middle relay runs when a
//! client asks for them with PADDING_NEGOTIATE, to hide onion-service circuit setup
//! (`Padding=2`, "HS setup padding").
//!
//! * [`cells`]: PADDING_NEGOTIATE / PADDING_NEGOTIATED bodies;
//! * [`spec`]: what a machine is (states, histograms, length distributions, transitions);
//! * [`machines`]: the two relay machines, "relay_ip_circ" (0) and "relay_rp_circ" (1);
//! * [`circuit`]: [`CircPadding`], one circuit's machine slot, the negotiation rules of C
//!   `circpad_handle_padding_negotiate` and the event-driven framework.
//!
//! [`ShardPadding`] holds what C keeps process-wide: the consensus parameters and the
//! global padding / non-padding counts behind `circpad_global_max_padding_pct`. Fors keeps
//! one per shard, so the budget is per shard.
//!
//! Sans-IO: the caller passes `now`, an RNG and the facts (queued cells); the module
//! returns messages to send and a wake-up time. The circuit core runs it
//! (`proto::circuit` `padding.rs`; docs/architecture.md "Circuit padding machines").

pub mod cells;
pub mod circuit;
pub mod machines;
pub mod spec;

pub use cells::{CircpadCellError, Negotiate, Negotiated, PadCommand, PadResponse};
pub use circuit::{CellKind, CircPadding, NegotiateOutcome, Negotiation, Wakeup};

/// C `CIRCWINDOW_START_MAX`: the default of `circpad_max_circ_queued_cells`.
const CIRCWINDOW_START_MAX: i32 = 1000;

/// The consensus parameters of circuit padding, with C's defaults and bounds
/// (`circpad_new_consensus_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircpadParams {
    /// `circpad_padding_disabled` (0, 0..=1): no padding is scheduled (machines are
    /// still negotiated, as C does: the check is at scheduling time).
    pub disabled: bool,
    /// `circpad_padding_reduced` (0, 0..=1): C consults it only when a client picks its
    /// own machines, so it changes nothing on a relay; kept to read the full set.
    pub reduced: bool,
    /// `circpad_global_allowed_cells` (0, 0..=65534): padding cells sent before the
    /// global percentage applies.
    pub global_allowed_cells: u16,
    /// `circpad_global_max_padding_pct` (0 = no limit, 0..=100).
    pub global_max_padding_pct: u8,
    /// `circpad_max_circ_queued_cells` (1000, 0..=50000): no DROP while more cells than
    /// this wait to go towards the client.
    pub max_circ_queued_cells: u32,
}

impl Default for CircpadParams {
    fn default() -> Self {
        CircpadParams::from_consensus(|_| None)
    }
}

impl CircpadParams {
    /// From a consensus's `params` (`get` returns a parameter's value if present); out of
    /// range values are clamped as C `networkstatus_get_param` does.
    pub fn from_consensus(get: impl Fn(&str) -> Option<i32>) -> Self {
        let p = |name: &str, default: i32, min: i32, max: i32| -> i32 {
            get(name).unwrap_or(default).clamp(min, max)
        };
        CircpadParams {
            disabled: p("circpad_padding_disabled", 0, 0, 1) == 1,
            reduced: p("circpad_padding_reduced", 0, 0, 1) == 1,
            global_allowed_cells: p(
                "circpad_global_allowed_cells",
                0,
                0,
                i32::from(u16::MAX) - 1,
            ) as u16,
            global_max_padding_pct: p("circpad_global_max_padding_pct", 0, 0, 100) as u8,
            max_circ_queued_cells: p(
                "circpad_max_circ_queued_cells",
                CIRCWINDOW_START_MAX,
                0,
                50 * CIRCWINDOW_START_MAX,
            ) as u32,
        }
    }
}

/// Counters for metrics (exported as `fors_relay_circpad_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CircpadStats {
    /// Machines set up on a START.
    pub machines_started: u64,
    /// Machines on circuits now (gauge; at most one per circuit).
    pub machines_running: u64,
    /// START for a machine number this relay does not have (answered ERR).
    pub negotiate_unknown_machine: u64,
    /// START while the circuit's slot was taken (answered OK, nothing started, as C).
    pub negotiate_slot_busy: u64,
    /// STOP that freed a machine.
    pub negotiate_stopped: u64,
    /// STOP for no running machine (not answered).
    pub negotiate_stop_unmatched: u64,
    /// PADDING_NEGOTIATE bodies that did not parse (dropped).
    pub negotiate_malformed: u64,
    /// DROP cells the machines asked the circuit core to send.
    pub padding_sent: u64,
    /// Padding due but not sent: more than `max_circ_queued_cells` queued.
    pub padding_suppressed_queue: u64,
    /// Scheduling refused by a machine's or the shard's padding limit.
    pub padding_limited: u64,
    /// Machines that reached END.
    pub machines_ended: u64,
}

/// One shard's circuit-padding state: parameters, the global counts C keeps in
/// `circpad_global_padding_sent` / `circpad_global_nonpadding_sent`, and counters.
#[derive(Clone, Debug)]
pub struct ShardPadding {
    params: CircpadParams,
    /// torrc `CircuitPadding` (default 1).
    torrc_enabled: bool,
    global_padding_sent: u64,
    global_nonpadding_sent: u64,
    stats: CircpadStats,
}

impl ShardPadding {
    /// `torrc_enabled`: the `CircuitPadding` option (C's default is 1).
    pub fn new(params: CircpadParams, torrc_enabled: bool) -> Self {
        ShardPadding {
            params,
            torrc_enabled,
            global_padding_sent: 0,
            global_nonpadding_sent: 0,
            stats: CircpadStats::default(),
        }
    }

    /// A new consensus: the parameters apply from the next decision.
    pub fn set_params(&mut self, params: CircpadParams) {
        self.params = params;
    }

    pub fn params(&self) -> &CircpadParams {
        &self.params
    }

    pub fn stats(&self) -> &CircpadStats {
        &self.stats
    }

    /// (padding, non-padding) cells counted so far on this shard.
    pub fn global_counts(&self) -> (u64, u64) {
        (self.global_padding_sent, self.global_nonpadding_sent)
    }

    /// C `circpad_is_padding_allowed`. (C also stops while dormant; a relay never is.)
    fn padding_allowed(&self) -> bool {
        !self.params.disabled && self.torrc_enabled
    }

    /// The global half of C `circpad_machine_reached_padding_limit`.
    fn global_limit_reached(&self) -> bool {
        let pct = u64::from(self.params.global_max_padding_pct);
        if pct == 0 || self.global_padding_sent < u64::from(self.params.global_allowed_cells) {
            return false;
        }
        let total = self.global_padding_sent + self.global_nonpadding_sent;
        // C divides by the total unguarded; with nothing sent nothing is over the limit.
        total != 0 && 100 * self.global_padding_sent / total > pct
    }
}
