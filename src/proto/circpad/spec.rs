//! The shape of a padding machine: the subset of C tor's `circpad_machine_spec_t` and
//! `circpad_state_t` that the relay-side machines use (padding-spec §3, prop 254; C
//! `circuitpadding.h`).
//!
//! Machines are `'static` tables, shared by every circuit; a circuit keeps only a small
//! runtime (`circuit.rs`). What is left out, because no relay machine of C tor 0.4.9 uses it:
//! inter-arrival delay distributions (`iat_dist`), RTT estimates (`use_rtt_estimate`), token
//! removal other than NONE (it needs a mutable histogram copy per circuit), and the
//! origin-side fields (conditions, target hop, circuit lifetime management).

/// `CIRCPAD_EVENT_*`: what a machine reacts to. SENT and RECV are from this relay's view:
/// sent is towards the client, received is from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    NonPaddingRecv = 0,
    NonPaddingSent = 1,
    PaddingSent = 2,
    PaddingRecv = 3,
    /// The sampled delay fell in the infinity bin: no padding scheduled.
    Infinity = 4,
    /// All histogram bins are out of tokens (only with token removal; never here).
    BinsEmpty = 5,
    /// The state's length (in cells) is used up.
    LengthCount = 6,
}

/// `CIRCPAD_NUM_EVENTS`.
pub const NUM_EVENTS: usize = 7;

/// Where an event leads (C `next_state[]` with its pseudo-states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// `CIRCPAD_STATE_IGNORE`: the default for every event a state does not name.
    Ignore,
    /// `CIRCPAD_STATE_CANCEL`: cancel pending padding, stay.
    Cancel,
    /// A state of the machine; the same state means "schedule padding again".
    State(u16),
    /// `CIRCPAD_STATE_END`: stop padding; the machine may tell the client (below).
    End,
}

/// Which state a machine is in (C `circpad_statenum_t`, END a pseudo-state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateNum {
    State(u16),
    End,
}

/// `CIRCPAD_STATE_START`, the state every machine begins in.
pub const STATE_START: u16 = 0;

/// A histogram of inter-cell delays (C `histogram`, `histogram_edges`,
/// `histogram_total_tokens`). `edges_usec[i]` is the left edge of bin `i` in microseconds;
/// bin `i` ends where bin `i + 1` starts; the last bin is the infinity bin (choosing it
/// schedules nothing).
#[derive(Clone, Copy, Debug)]
pub struct Histogram {
    pub edges_usec: &'static [u32],
    pub tokens: &'static [u32],
    pub total_tokens: u32,
}

/// A state length distribution (C `length_dist`). Only the uniform one exists here: both
/// relay machines draw their length from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LengthDist {
    /// `CIRCPAD_DIST_NONE`: the state has no length limit.
    None,
    /// `CIRCPAD_DIST_UNIFORM`: uniform on `[low, high]`, truncated to whole cells.
    Uniform { low: f64, high: f64 },
}

/// Token removal strategy (C `circpad_removal_t`). Only NONE: both relay machines avoid
/// token removal on purpose (no per-circuit histogram copy, no clock read per cell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRemoval {
    None,
}

/// One state (C `circpad_state_t`, the fields used).
#[derive(Clone, Copy, Debug)]
pub struct StateSpec {
    /// `None`: no histogram (C `histogram_len == 0`); sampling a delay gives infinity.
    pub histogram: Option<Histogram>,
    pub length_dist: LengthDist,
    /// Added to the sampled length (C `start_length`).
    pub start_length: u16,
    /// Cap on the sampled length, 0 for none (C `max_length`).
    pub max_length: u64,
    /// Whether non-padding cells sent count against the length.
    pub length_includes_nonpadding: bool,
    pub token_removal: TokenRemoval,
    /// Indexed by [`Event`].
    pub next: [Next; NUM_EVENTS],
}

impl StateSpec {
    /// A state that ignores every event and has nothing to sample (C
    /// `circpad_machine_states_init`'s default).
    pub const IDLE: StateSpec = StateSpec {
        histogram: None,
        length_dist: LengthDist::None,
        start_length: 0,
        max_length: 0,
        length_includes_nonpadding: false,
        token_removal: TokenRemoval::None,
        next: [Next::Ignore; NUM_EVENTS],
    };
}

/// A relay-side padding machine (C `circpad_machine_spec_t`, the relay-side fields).
#[derive(Debug)]
pub struct MachineSpec {
    /// For logs (C `name`).
    pub name: &'static str,
    /// The number a client names in PADDING_NEGOTIATE (C `machine_num`).
    pub machine_num: u8,
    /// The slot on the circuit (C `machine_index`, 0 or 1).
    pub machine_index: u8,
    /// At END, free the machine and send PADDING_NEGOTIATED STOP to the client.
    pub should_negotiate_end: bool,
    /// Padding cells before `max_padding_percent` applies.
    pub allowed_padding_count: u16,
    /// Stop scheduling padding above this percentage of all cells sent; 0 = no limit.
    pub max_padding_percent: u8,
    pub states: &'static [StateSpec],
}

/// `CIRCPAD_DELAY_INFINITE`.
pub const DELAY_INFINITE: u32 = u32::MAX;

/// Why a machine definition is not usable (C `padding_machine_is_valid`, plus the checks
/// that keep sampling in bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("state {0}: a histogram needs at least 2 bins")]
    TooFewBins(usize),
    #[error("state {0}: histogram edges and tokens differ in length")]
    EdgesTokensMismatch(usize),
    #[error("state {0}: histogram edges are not strictly increasing")]
    EdgesNotIncreasing(usize),
    #[error("state {0}: histogram token total is wrong")]
    WrongTokenTotal(usize),
    #[error("state {0}: transition to state {1}, which does not exist")]
    NoSuchState(usize, u16),
    #[error("machine has no states")]
    NoStates,
}

impl MachineSpec {
    /// The checks C runs when it registers a machine, and that every transition names a
    /// state that exists.
    pub fn validate(&self) -> Result<(), MachineError> {
        if self.states.is_empty() {
            return Err(MachineError::NoStates);
        }
        for (i, s) in self.states.iter().enumerate() {
            if let Some(h) = &s.histogram {
                if h.edges_usec.len() < 2 {
                    return Err(MachineError::TooFewBins(i));
                }
                if h.edges_usec.len() != h.tokens.len() {
                    return Err(MachineError::EdgesTokensMismatch(i));
                }
                if h.edges_usec.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(MachineError::EdgesNotIncreasing(i));
                }
                let total: u64 = h.tokens.iter().map(|&t| u64::from(t)).sum();
                if total != u64::from(h.total_tokens) {
                    return Err(MachineError::WrongTokenTotal(i));
                }
            }
            for n in s.next {
                if let Next::State(t) = n {
                    if usize::from(t) >= self.states.len() {
                        return Err(MachineError::NoSuchState(i, t));
                    }
                }
            }
        }
        Ok(())
    }

    /// The spec of a state, `None` at END.
    pub fn state(&self, s: StateNum) -> Option<&StateSpec> {
        match s {
            StateNum::State(n) => self.states.get(usize::from(n)),
            StateNum::End => None,
        }
    }
}
