//! Circuit padding at this hop (padding-spec §3, prop 254; C tor `circuitpadding.c` call
//! sites in `relay.c`): the relay machines of [`crate::proto::circpad`] wired into the
//! shard's circuits.
//!
//! * Each circuit carries a [`PadState`]: its [`CircPadding`] (counter and machine slot),
//!   the deadline it has in the shard's timer heap, and a STOP waiting to go out.
//! * The core has one [`ShardPadding`] (consensus parameters, the shard's padding and
//!   non-padding counts, counters) and one [`PadTimers`] heap.
//! * Events, as C's call sites: every RELAY cell sent towards the client
//!   (`send_to_prev`, relayed or originated, PADDING_NEGOTIATED included; not our DROP) is
//!   a non-padding-sent event — on every circuit, since the shard's count feeds the global
//!   limit; every relay cell from the client (passed on, or recognized here) is a
//!   received event, DROP being padding. Circuits without a machine pay one branch.
//! * PADDING_NEGOTIATE → `on_negotiate` → PADDING_NEGOTIATED from this hop.
//! * The shard asks [`RelayCore::circpad_next_deadline`] after each batch and calls
//!   [`RelayCore::circpad_timers`] when it is due: a DROP from this hop, then any STOP.
//!   A STOP a cell-sent event produced is not sent from inside `send_to_prev` (which may
//!   run inside another origination): it waits in the circuit and is due at once. C sends
//!   it inside the event, before the cell that triggered it; here it follows that cell. A
//!   START arriving in between is answered before the old STOP — harmless, since the
//!   client matches a STOP by its `machine_ctr`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::core::{CoreIo, RelayCore};
use super::crypto::HopCrypto;
use super::table::CircuitTable;
use super::NetworkView;
use crate::cell::relay::RelayCmd;
use crate::proto::circpad::{CellKind, CircPadding, CircpadParams, Negotiated, ShardPadding};

/// One circuit's padding state.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PadState {
    pub machine: CircPadding,
    /// The deadline of this circuit's live entry in [`PadTimers`] (entries that differ
    /// are stale and skipped).
    pub armed: Option<Instant>,
    /// A STOP a cell-sent event produced, to send at the next timer service.
    pub stop: Option<Negotiated>,
}

/// The shard's padding deadlines: a min-heap of (deadline, circuit slot, generation).
/// Each circuit has at most one live entry (its `armed`); stale ones (circuit closed or
/// re-armed earlier) are skipped when popped and dropped when the heap reaches its bound.
pub(super) struct PadTimers {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Twice the circuit table: live entries never exceed the circuits.
    cap: usize,
}

impl PadTimers {
    pub fn new(max_circuits: usize) -> Self {
        let cap = 2 * max_circuits.max(1);
        PadTimers {
            // Grows (rarely) up to `cap`; never per cell.
            heap: BinaryHeap::with_capacity(cap.min(1024)),
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

fn live<C>(table: &CircuitTable<C>, at: Instant, idx: u32, gen: u32) -> bool {
    table.handle(idx).gen == gen && table.get(idx).is_some_and(|c| c.pad.armed == Some(at))
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// A new consensus's circuit-padding parameters (C `circpad_new_consensus_params`).
    pub fn set_circpad_params(&mut self, raw: &std::collections::BTreeMap<String, i32>) {
        self.circpad
            .set_params(CircpadParams::from_consensus(|k| raw.get(k).copied()));
    }

    /// This shard's circuit-padding state (parameters, counts, counters).
    pub fn circpad(&self) -> &ShardPadding {
        &self.circpad
    }

    /// The earliest padding deadline (possibly of a stale entry: an early wake-up finds
    /// nothing due and costs one pop).
    pub fn circpad_next_deadline(&self) -> Option<Instant> {
        self.pad_timers.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Services the padding deadlines due at `io.now`: DROP cells and STOPs. Entries made
    /// due while servicing (a zero delay) wait for the next call, so one call is bounded
    /// by the heap's length.
    pub fn circpad_timers(&mut self, io: &mut CoreIo<'_>) {
        let mut budget = self.pad_timers.heap.len();
        while budget > 0 {
            budget -= 1;
            let Some(&Reverse((at, idx, gen))) = self.pad_timers.heap.peek() else {
                break;
            };
            if at > io.now {
                break;
            }
            self.pad_timers.heap.pop();
            if !live(&self.table, at, idx, gen) {
                continue;
            }
            if let Some(c) = self.table.get_mut(idx) {
                c.pad.armed = None;
            }
            self.circpad_service(idx, io);
        }
        self.sync_circpad_metrics();
    }

    /// One circuit's due work: a waiting STOP, then the machine's timer.
    fn circpad_service(&mut self, idx: u32, io: &mut CoreIo<'_>) {
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        if let Some(stop) = c.pad.stop.take() {
            if !self.send_negotiated(idx, stop, io) {
                return;
            }
        }
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        let queued = c.q_prev.len() as u32;
        let w = c
            .pad
            .machine
            .on_wakeup(&mut self.circpad, io.now, queued, &mut &mut *io.rng);
        if w.send_drop {
            // Counted by `on_wakeup` already: not a cell-sent event (C sends the padding
            // event from the callback, and ignores DROP in the sent path).
            // Staged cells go out first, as non-padding sent events of their own.
            self.flush_originated(io);
            self.pad_sending_drop = true;
            let sent = self.originate(idx, RelayCmd::DROP, 0, |_| Ok(0), io);
            self.pad_sending_drop = false;
            if sent.is_none() {
                return;
            }
        }
        if let Some(n) = w.negotiated {
            if !self.send_negotiated(idx, n, io) {
                return;
            }
        }
        self.circpad_rearm(idx, io.now);
    }

    fn send_negotiated(&mut self, idx: u32, n: Negotiated, io: &mut CoreIo<'_>) -> bool {
        let body = n.encode();
        self.originate(
            idx,
            RelayCmd::PADDING_NEGOTIATED,
            0,
            |out| {
                out[..body.len()].copy_from_slice(&body);
                Ok(body.len())
            },
            io,
        )
        .is_some()
    }

    /// Puts the circuit's deadline (a waiting STOP is due now) in the heap unless an
    /// entry at or before it is there already (that one finds it not due and re-arms).
    fn circpad_rearm(&mut self, idx: u32, now: Instant) {
        let gen = self.table.handle(idx).gen;
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        let due = if c.pad.stop.is_some() {
            Some(now)
        } else {
            c.pad.machine.next_wakeup()
        };
        let Some(at) = due else {
            return;
        };
        if c.pad.armed.is_some_and(|a| a <= at) {
            return;
        }
        c.pad.armed = Some(at);
        if self.pad_timers.heap.len() >= self.pad_timers.cap {
            let table = &self.table;
            self.pad_timers
                .heap
                .retain(|Reverse((at, idx, gen))| live(table, *at, *idx, *gen));
        }
        if self.pad_timers.heap.len() < self.pad_timers.cap {
            self.pad_timers.heap.push(Reverse((at, idx, gen)));
        } else if let Some(c) = self.table.get_mut(idx) {
            // Unreachable (live entries ≤ circuits < cap); the machine then waits for
            // its next event rather than growing the heap.
            c.pad.armed = None;
        }
    }

    /// A RELAY cell went towards the client on `idx` (C
    /// `circpad_deliver_sent_relay_cell_events` / unrecognized inbound). The common case
    /// (no machine) is a count and one branch.
    #[inline]
    pub(super) fn circpad_cell_sent(&mut self, idx: u32, io: &mut CoreIo<'_>) {
        if self.pad_sending_drop {
            return;
        }
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        let stop = c.pad.machine.on_cell_sent(
            &mut self.circpad,
            CellKind::NonPadding,
            io.now,
            &mut &mut *io.rng,
        );
        if stop.is_none() && !c.pad.machine.is_active() {
            return;
        }
        if stop.is_some() {
            c.pad.stop = stop;
        }
        self.circpad_rearm(idx, io.now);
    }

    /// A relay cell came from the client on `idx`: passed on, or recognized here (C
    /// `circpad_deliver_unrecognized_cell_events` outward and
    /// `circpad_deliver_recognized_relay_cell_events`). `drop`: a DROP for this hop.
    #[inline]
    pub(super) fn circpad_cell_received(&mut self, idx: u32, drop: bool, io: &mut CoreIo<'_>) {
        if drop {
            self.metrics.circpad_padding_received += 1;
        }
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        if !c.pad.machine.is_active() {
            return;
        }
        let kind = if drop {
            CellKind::Padding
        } else {
            CellKind::NonPadding
        };
        let stop =
            c.pad
                .machine
                .on_cell_received(&mut self.circpad, kind, io.now, &mut &mut *io.rng);
        if stop.is_some() {
            c.pad.stop = stop;
        }
        self.circpad_rearm(idx, io.now);
    }

    /// The circuit is closing: its machine goes (C `circpad_circuit_free_all_machineinfos`);
    /// its heap entry turns stale.
    pub(super) fn circpad_closed(&mut self, pad: &mut PadState) {
        if pad.machine.is_active() {
            pad.machine.on_close(&mut self.circpad);
            self.sync_circpad_metrics();
        }
    }

    /// A recognized DROP, PADDING_NEGOTIATE or PADDING_NEGOTIATED for this hop (the
    /// received event was delivered before, in `handle_local`). Returns false if the
    /// circuit closed.
    pub(super) fn handle_circpad(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        // DROP: padding, counted. PADDING_NEGOTIATED: only a client gets one; C ignores it
        // at a relay (`circpad_handle_padding_negotiated` needs an origin circuit).
        if cmd != RelayCmd::PADDING_NEGOTIATE {
            return true;
        }
        let Some(c) = self.table.get_mut(idx) else {
            return false;
        };
        let o = c
            .pad
            .machine
            .on_negotiate(&mut self.circpad, data, io.now, &mut &mut *io.rng);
        let mut alive = true;
        for n in [o.ended, o.reply].into_iter().flatten() {
            if !self.send_negotiated(idx, n, io) {
                alive = false;
                break;
            }
        }
        if alive {
            self.circpad_rearm(idx, io.now);
        }
        self.sync_circpad_metrics();
        // Sending a reply that fails only means the circuit is gone.
        alive || self.table.get(idx).is_some()
    }

    /// Copies the shard's circuit-padding counters into the core's metrics.
    pub(super) fn sync_circpad_metrics(&mut self) {
        let s = self.circpad.stats();
        self.metrics.set_circpad(s, self.pad_timers.len());
    }
}
