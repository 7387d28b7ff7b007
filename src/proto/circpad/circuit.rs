//! One circuit's padding machine: the relay's answer to PADDING_NEGOTIATE (C
//! `circpad_handle_padding_negotiate`) and the machine framework driven by cell events and
//! a timer (C `circpad_machine_spec_transition`, `circpad_machine_schedule_padding`,
//! `circpad_send_padding_cell_for_callback`, `check_machine_token_supply`).
//!
//! What the circuit core reports, as C's call sites do (`relay.c`, `circuitpadding.c`):
//! * every relay cell that goes towards the client — relayed from the next hop or
//!   originated here, PADDING_NEGOTIATED included — is [`CircPadding::on_cell_sent`]
//!   with [`CellKind::NonPadding`] (C `circpad_deliver_sent_relay_cell_events` and
//!   `circpad_deliver_unrecognized_cell_events` inward). The DROP cells [`on_wakeup`]
//!   asks for are counted there, not again (C ignores DROP in the sent path too);
//! * every relay cell from the client — passed on (unrecognized) or for this hop — is
//!   [`CircPadding::on_cell_received`]: [`CellKind::Padding`] for a DROP addressed to this
//!   hop, [`CellKind::NonPadding`] otherwise, PADDING_NEGOTIATE included, before
//!   [`CircPadding::on_negotiate`] handles it (C delivers the event first);
//! * when [`CircPadding::next_wakeup`] is due (a delay of 0 is due at once: service it
//!   before the next cell), [`CircPadding::on_wakeup`].
//!
//! Per circuit: a counter and one machine slot (all relay machines of C tor sit in slot
//! 0), fixed size, nothing allocated.
//!
//! [`on_wakeup`]: CircPadding::on_wakeup

use std::time::{Duration, Instant};

use rand::Rng;

use super::cells::{CircpadCellError, Negotiate, Negotiated, PadCommand, PadResponse};
use super::machines::{by_number, RELAY_MACHINES};
use super::spec::{Event, LengthDist, MachineSpec, Next, StateNum, DELAY_INFINITE, STATE_START};
use super::ShardPadding;

/// `CIRCPAD_STATE_LENGTH_INFINITE`.
const LENGTH_INFINITE: u64 = u64::MAX;

/// Bound on transitions chained inside one event (a state that goes to itself on
/// INFINITY would recurse in C; none of the relay machines does).
const MAX_CHAIN: u8 = 16;

/// Padding or not: a DROP relay cell is padding, every other relay cell is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    Padding,
    NonPadding,
}

/// What a PADDING_NEGOTIATE came to (C `circpad_handle_padding_negotiate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// START for a machine this relay has: set up in the free slot; answered OK.
    /// `ctr_mismatch`: the client's counter differs from ours (C only logs it).
    Started { machine_num: u8, ctr_mismatch: bool },
    /// START while a machine occupies the slot: nothing new starts, yet C answers OK.
    SlotBusy,
    /// START for a machine number this relay does not have: answered ERR.
    UnknownMachine,
    /// STOP matched the running machine (same number; same counter unless the client's
    /// is 0): freed, answered OK.
    Stopped,
    /// STOP for no running machine with a counter not above ours: an old machine; no
    /// answer (no one on the other side waits for one).
    StopForOldMachine,
    /// STOP with a counter above any machine this circuit had: C treats it as a
    /// protocol error, but answers nothing either.
    StopForUnknownMachine,
    /// The body did not parse: dropped, no answer.
    Malformed(CircpadCellError),
}

/// The relay's reaction to one PADDING_NEGOTIATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiateOutcome {
    pub result: Negotiation,
    /// A STOP from a machine that reached END on the event the START delivers; send it
    /// first (never happens with C tor's machines, kept for order).
    pub ended: Option<Negotiated>,
    /// The PADDING_NEGOTIATED to send towards the client.
    pub reply: Option<Negotiated>,
}

/// What a due timer asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakeup {
    /// Originate one DROP relay cell towards the client (from this hop, as an edge).
    pub send_drop: bool,
    /// Then this PADDING_NEGOTIATED (a machine's STOP at its end).
    pub negotiated: Option<Negotiated>,
}

/// A running machine (C `circpad_machine_runtime_t`, the fields the relay machines use).
#[derive(Clone, Copy, Debug)]
struct Runtime {
    /// Index in [`RELAY_MACHINES`].
    machine: u8,
    state: StateNum,
    /// Cells left in this state; [`LENGTH_INFINITE`] for no limit. 0 at setup, as C's
    /// zeroed allocation leaves it (START never draws a length).
    state_length: u64,
    /// Scaled counts for the percentage limit: halved together at `u16::MAX`.
    padding_sent: u16,
    nonpadding_sent: u16,
    /// This circuit's counter when the machine was set up.
    machine_ctr: u32,
    /// When the next DROP is due.
    deadline: Option<Instant>,
}

impl Runtime {
    fn spec(&self) -> &'static MachineSpec {
        RELAY_MACHINES[usize::from(self.machine)]
    }

    /// C `circpad_choose_state_length`.
    fn choose_state_length(&mut self, rng: &mut impl Rng) {
        let Some(state) = self.spec().state(self.state) else {
            self.state_length = LENGTH_INFINITE;
            return;
        };
        let LengthDist::Uniform { low, high } = state.length_dist else {
            self.state_length = LENGTH_INFINITE;
            return;
        };
        // C draws on the closed interval [low, high].
        let x = if low < high {
            rng.gen_range(low..=high)
        } else {
            low
        };
        let mut len = x.max(0.0) + f64::from(state.start_length);
        if state.max_length != 0 {
            len = len.min(state.max_length as f64);
        }
        // Truncated, as C's `clamp_double_to_int64`; never the infinite marker.
        self.state_length = (len.min(i64::MAX as f64)) as u64;
    }

    /// C `circpad_machine_sample_delay` for an immutable histogram: a bin with probability
    /// by its tokens (C's comparison kept), then a delay uniform in the bin, in µs.
    fn sample_delay(&self, rng: &mut impl Rng) -> u32 {
        let Some(h) = self.spec().state(self.state).and_then(|s| s.histogram) else {
            return DELAY_INFINITE;
        };
        let total = u64::from(h.total_tokens);
        if total == 0 {
            return DELAY_INFINITE;
        }
        let choice = rng.gen_range(0..total);
        let len = h.tokens.len();
        let mut bin = 0;
        while bin < len && h.tokens[bin] == 0 {
            bin += 1;
        }
        if bin >= len {
            return DELAY_INFINITE;
        }
        let mut weight = u64::from(h.tokens[bin]);
        while weight < choice {
            bin += 1;
            if bin >= len {
                return DELAY_INFINITE;
            }
            weight += u64::from(h.tokens[bin]);
        }
        // The last bin is the infinity bin.
        if bin + 1 >= len {
            return DELAY_INFINITE;
        }
        let (start, end) = (h.edges_usec[bin], h.edges_usec[bin + 1]);
        if start >= end {
            return start;
        }
        rng.gen_range(start..end)
    }

    /// C `circpad_machine_count_padding_sent` (token removal: none).
    fn count_padding_sent(&mut self) {
        if self.state_length != LENGTH_INFINITE && self.state_length > 0 {
            self.state_length -= 1;
        }
        self.padding_sent += 1;
        if self.padding_sent == u16::MAX {
            self.padding_sent /= 2;
            self.nonpadding_sent /= 2;
        }
    }

    /// C `circpad_machine_count_nonpadding_sent` (token removal: none).
    fn count_nonpadding_sent(&mut self) {
        self.nonpadding_sent += 1;
        if self.nonpadding_sent == u16::MAX {
            self.padding_sent /= 2;
            self.nonpadding_sent /= 2;
        }
        if self.state_length == LENGTH_INFINITE {
            return;
        }
        if let Some(s) = self.spec().state(self.state) {
            if s.length_includes_nonpadding && self.state_length > 0 {
                self.state_length -= 1;
            }
        }
    }

    /// The machine half of C `circpad_machine_reached_padding_limit`.
    fn limit_reached(&self) -> bool {
        let spec = self.spec();
        if spec.max_padding_percent == 0 || self.padding_sent < spec.allowed_padding_count {
            return false;
        }
        let total = u32::from(self.padding_sent) + u32::from(self.nonpadding_sent);
        total != 0
            && 100 * u32::from(self.padding_sent) / total > u32::from(spec.max_padding_percent)
    }
}

/// One circuit's circuit-padding state.
#[derive(Clone, Copy, Debug, Default)]
pub struct CircPadding {
    /// C `circuit_t.padding_machine_ctr`: +1 per machine set up, 0 skipped.
    ctr: u32,
    /// Slot 0 (C `padding_machine[0]` and `padding_info[0]`, set and cleared together on
    /// the relay side).
    slot: Option<Runtime>,
}

impl CircPadding {
    pub const fn new() -> Self {
        CircPadding { ctr: 0, slot: None }
    }

    /// The running machine's name and state, if any.
    pub fn machine(&self) -> Option<(&'static str, StateNum)> {
        self.slot.map(|r| (r.spec().name, r.state))
    }

    /// Whether a machine occupies the slot (the only case where events do more than
    /// count).
    pub fn is_active(&self) -> bool {
        self.slot.is_some()
    }

    /// This circuit's machine counter (the last one set up).
    pub fn machine_ctr(&self) -> u32 {
        self.ctr
    }

    /// When the next DROP is due, if one is scheduled.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.slot.and_then(|r| r.deadline)
    }

    /// A PADDING_NEGOTIATE body addressed to this hop (C
    /// `circpad_handle_padding_negotiate`).
    pub fn on_negotiate(
        &mut self,
        g: &mut ShardPadding,
        body: &[u8],
        now: Instant,
        rng: &mut impl Rng,
    ) -> NegotiateOutcome {
        let n = match Negotiate::parse(body) {
            Ok(n) => n,
            Err(e) => {
                g.stats.negotiate_malformed += 1;
                return NegotiateOutcome {
                    result: Negotiation::Malformed(e),
                    ended: None,
                    reply: None,
                };
            }
        };
        let answer = |response| {
            Some(Negotiated {
                command: n.command,
                response,
                machine_type: n.machine_type,
                machine_ctr: n.machine_ctr,
            })
        };
        match n.command {
            PadCommand::Stop => {
                // C `free_circ_machineinfos_with_machine_num`: a nonzero counter must match
                // too, so that an old STOP cannot end a newer machine.
                let matches = self.slot.is_some_and(|r| {
                    r.spec().machine_num == n.machine_type
                        && (n.machine_ctr == 0 || r.machine_ctr == n.machine_ctr)
                });
                if matches {
                    self.slot = None;
                    g.stats.machines_running -= 1;
                    g.stats.negotiate_stopped += 1;
                    return NegotiateOutcome {
                        result: Negotiation::Stopped,
                        ended: None,
                        reply: answer(PadResponse::Ok),
                    };
                }
                g.stats.negotiate_stop_unmatched += 1;
                let result = if n.machine_ctr <= self.ctr {
                    Negotiation::StopForOldMachine
                } else {
                    Negotiation::StopForUnknownMachine
                };
                NegotiateOutcome {
                    result,
                    ended: None,
                    reply: None,
                }
            }
            PadCommand::Start => {
                let Some((idx, spec)) = by_number(n.machine_type) else {
                    g.stats.negotiate_unknown_machine += 1;
                    return NegotiateOutcome {
                        result: Negotiation::UnknownMachine,
                        ended: None,
                        reply: answer(PadResponse::Err),
                    };
                };
                // Every relay machine is in slot 0 (checked in the machines' tests).
                debug_assert_eq!(spec.machine_index, 0);
                let started = self.slot.is_none();
                if started {
                    // C `circpad_setup_machine_on_circ`: counters start at 1, 0 is "any".
                    self.ctr = self.ctr.wrapping_add(1).max(1);
                    self.slot = Some(Runtime {
                        machine: idx,
                        state: StateNum::State(STATE_START),
                        state_length: 0,
                        padding_sent: 0,
                        nonpadding_sent: 0,
                        machine_ctr: self.ctr,
                        deadline: None,
                    });
                    g.stats.machines_started += 1;
                    g.stats.machines_running += 1;
                } else {
                    g.stats.negotiate_slot_busy += 1;
                }
                let ctr_mismatch = n.machine_ctr != 0 && self.ctr != n.machine_ctr;
                // C then delivers a non-padding-received event to the circuit's machines.
                let mut fx = None;
                transition(
                    &mut self.slot,
                    g,
                    Event::NonPaddingRecv,
                    now,
                    rng,
                    &mut fx,
                    0,
                );
                NegotiateOutcome {
                    result: if started {
                        Negotiation::Started {
                            machine_num: n.machine_type,
                            ctr_mismatch,
                        }
                    } else {
                        Negotiation::SlotBusy
                    },
                    ended: fx,
                    reply: answer(PadResponse::Ok),
                }
            }
        }
    }

    /// A relay cell went towards the client. `Padding` is a no-op: DROP cells this module
    /// asked for are counted in [`on_wakeup`](Self::on_wakeup). Call it on every circuit,
    /// with or without a machine: the shard's non-padding count feeds the global limit.
    /// Returns a STOP to send if the machine ended.
    pub fn on_cell_sent(
        &mut self,
        g: &mut ShardPadding,
        kind: CellKind,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<Negotiated> {
        if kind == CellKind::Padding {
            return None;
        }
        g.global_nonpadding_sent += 1;
        let rt = self.slot.as_mut()?;
        rt.count_nonpadding_sent();
        let mut fx = None;
        if !check_token_supply(&mut self.slot, g, now, rng, &mut fx, 0) {
            transition(
                &mut self.slot,
                g,
                Event::NonPaddingSent,
                now,
                rng,
                &mut fx,
                0,
            );
        }
        fx
    }

    /// A relay cell came from the client (see the module doc for which).
    pub fn on_cell_received(
        &mut self,
        g: &mut ShardPadding,
        kind: CellKind,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<Negotiated> {
        self.slot?;
        let ev = match kind {
            CellKind::Padding => Event::PaddingRecv,
            CellKind::NonPadding => Event::NonPaddingRecv,
        };
        let mut fx = None;
        transition(&mut self.slot, g, ev, now, rng, &mut fx, 0);
        fx
    }

    /// The timer (C `circpad_send_padding_cell_for_callback`). `queued_cells`: cells
    /// waiting to go towards the client on this circuit (C `p_chan_cells.n`). Before the
    /// deadline, nothing. A DROP not sent because of the queue still counts as sent for
    /// the machine, as in C.
    pub fn on_wakeup(
        &mut self,
        g: &mut ShardPadding,
        now: Instant,
        queued_cells: u32,
        rng: &mut impl Rng,
    ) -> Wakeup {
        let Some(rt) = self.slot.as_mut() else {
            return Wakeup::default();
        };
        match rt.deadline {
            Some(at) if now >= at => {}
            _ => return Wakeup::default(),
        }
        rt.deadline = None;
        let before = rt.state;
        rt.count_padding_sent();
        g.global_padding_sent += 1;
        let send_drop = queued_cells <= g.params.max_circ_queued_cells;
        if send_drop {
            g.stats.padding_sent += 1;
        } else {
            g.stats.padding_suppressed_queue += 1;
        }
        // C `circpad_cell_event_padding_sent`, then the token supply once more if the
        // machine is still in the same state.
        let mut fx = None;
        if !check_token_supply(&mut self.slot, g, now, rng, &mut fx, 0) {
            transition(&mut self.slot, g, Event::PaddingSent, now, rng, &mut fx, 0);
        }
        if self.slot.is_some_and(|r| r.state == before) {
            check_token_supply(&mut self.slot, g, now, rng, &mut fx, 0);
        }
        Wakeup {
            send_drop,
            negotiated: fx,
        }
    }

    /// The circuit is closing: the machine and its timer go (C
    /// `circpad_circuit_free_all_machineinfos`).
    pub fn on_close(&mut self, g: &mut ShardPadding) {
        if self.slot.take().is_some() {
            g.stats.machines_running -= 1;
        }
    }
}

/// C `check_machine_token_supply` without token removal: a used-up length is an event.
/// True if the machine changed state.
fn check_token_supply(
    slot: &mut Option<Runtime>,
    g: &mut ShardPadding,
    now: Instant,
    rng: &mut impl Rng,
    fx: &mut Option<Negotiated>,
    depth: u8,
) -> bool {
    if slot.is_some_and(|r| r.state_length == 0) {
        return transition(slot, g, Event::LengthCount, now, rng, fx, depth);
    }
    false
}

/// C `circpad_machine_spec_transition`. True if the machine changed state.
fn transition(
    slot: &mut Option<Runtime>,
    g: &mut ShardPadding,
    ev: Event,
    now: Instant,
    rng: &mut impl Rng,
    fx: &mut Option<Negotiated>,
    depth: u8,
) -> bool {
    let Some(rt) = slot.as_mut() else {
        return false;
    };
    // END: no state, no reaction.
    let Some(state) = rt.spec().state(rt.state) else {
        return false;
    };
    let to = match state.next[ev as usize] {
        Next::Ignore => return false,
        Next::Cancel => {
            rt.deadline = None;
            return false;
        }
        Next::State(s) => StateNum::State(s),
        Next::End => StateNum::End,
    };
    if rt.state != to {
        rt.state = to;
        rt.choose_state_length(rng);
        if to == StateNum::End {
            transitioned_to_end(slot, g, fx);
            return true;
        }
        schedule_padding(slot, g, now, rng, fx, depth);
        return true;
    }
    // Back to the same state: a new delay.
    schedule_padding(slot, g, now, rng, fx, depth)
}

/// C `circpad_machine_spec_transitioned_to_end`, relay side.
fn transitioned_to_end(
    slot: &mut Option<Runtime>,
    g: &mut ShardPadding,
    fx: &mut Option<Negotiated>,
) {
    g.stats.machines_ended += 1;
    let Some(rt) = *slot else { return };
    let spec = rt.spec();
    if spec.should_negotiate_end {
        *slot = None;
        g.stats.machines_running -= 1;
        *fx = Some(Negotiated {
            command: PadCommand::Stop,
            response: PadResponse::Ok,
            machine_type: spec.machine_num,
            machine_ctr: rt.machine_ctr,
        });
    }
    // Otherwise the machine stays in END (its slot taken) until STOP or close, as in C.
}

/// C `circpad_machine_schedule_padding`. True if it led to a state change.
fn schedule_padding(
    slot: &mut Option<Runtime>,
    g: &mut ShardPadding,
    now: Instant,
    rng: &mut impl Rng,
    fx: &mut Option<Negotiated>,
    depth: u8,
) -> bool {
    let Some(rt) = slot.as_mut() else {
        return false;
    };
    if !g.padding_allowed() || rt.state == StateNum::End {
        return false;
    }
    // A limit leaves any pending timer alone, as C does.
    if rt.limit_reached() || g.global_limit_reached() {
        g.stats.padding_limited += 1;
        return false;
    }
    rt.deadline = None;
    let usec = rt.sample_delay(rng);
    if usec == DELAY_INFINITE {
        if depth >= MAX_CHAIN {
            return false;
        }
        return transition(slot, g, Event::Infinity, now, rng, fx, depth + 1);
    }
    if rt.state_length == 0 {
        return false;
    }
    // A delay of 0 is due now (C sends at once; the caller services due wake-ups first).
    rt.deadline = Some(now + Duration::from_micros(u64::from(usec)));
    false
}

#[cfg(test)]
mod tests;
