//! Per-shard counters of the circuit core. Plain integers: the shard copies them into its
//! relaxed atomics between batches.

use crate::cell::relay::msg::EndReason;
use crate::proto::hs::intro::IntroCounters;
use crate::proto::hs::rend::RendCounters;

/// Slots of [`CircuitMetrics::ends_sent`]: one per END reason code 1..=14 (tor-spec §6.3),
/// slot 0 for any other code.
pub const END_REASON_SLOTS: usize = 15;

/// Label of each [`CircuitMetrics::ends_sent`] slot: C tor's control-port names for the
/// reasons, in lower case.
pub const END_REASON_LABELS: [&str; END_REASON_SLOTS] = [
    "other",
    "misc",
    "resolvefailed",
    "connectrefused",
    "exitpolicy",
    "destroy",
    "done",
    "timeout",
    "noroute",
    "hibernating",
    "internal",
    "resourcelimit",
    "connreset",
    "torprotocol",
    "notdirectory",
];

/// Counters and gauges of one [`super::RelayCore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitMetrics {
    /// Circuits currently in the table (pending handshakes included).
    pub circuits: u64,
    /// Circuits whose handshake completed.
    pub circuits_created: u64,
    /// Of those, circuits whose ntor-v3 handshake negotiated CGO relay crypto (Relay=6).
    pub circuits_cgo_created: u64,
    /// CREATE* refused because the circuit table was full.
    pub create_refused_table_full: u64,
    /// CREATE2 refused because the onion queue was full.
    pub create_refused_queue_full: u64,
    /// Onionskins that waited longer than the configured delay and were dropped.
    pub onionskins_expired: u64,
    /// Onion handshakes run.
    pub onionskins_processed: u64,
    /// Handshakes that failed (bad onionskin, wrong key...).
    pub handshake_failures: u64,
    /// Onionskins waiting now.
    pub onion_queue_len: u64,
    /// Relay cells passed on toward the next hop.
    pub cells_forwarded: u64,
    /// Relay cells from the next hop passed toward the client.
    pub cells_backward: u64,
    /// Relay cells recognized and handled here.
    pub cells_recognized: u64,
    /// Relay cells we originated (toward the client).
    pub cells_originated: u64,
    /// Multi-circuit originate calls that crypted cells of several circuits at once.
    pub originate_multi_flushes: u64,
    /// Staged exit DATA cells dropped because their circuit closed before the flush.
    pub staged_cells_dropped: u64,
    /// Reads whose RELAY cells were crypted together (`RelayCore::flush_relay_cells`), and
    /// the cells they held (their ratio is the mean batch size).
    pub relay_in_batches: u64,
    pub relay_in_cells: u64,
    /// Of those batches, the ones of backward cells another shard delivered in one drain
    /// (`RelayCore::queue_next_hop_cell`; the node does not stage them, so only tests and
    /// `fors-relay-batch cross` count here; not on the MetricsPort).
    pub relay_in_cross_batches: u64,
    /// Multi-circuit crypto calls over received cells (multi-buffer SHA-1 across tor1
    /// circuits ending here; CGO circuits' cells, each direction).
    pub relay_in_multi_calls: u64,
    /// Received CGO cells crypted in an interleaved group with other circuits' cells.
    pub cgo_cells_grouped: u64,
    /// Exit DATA cells of CGO circuits originated in an interleaved group with other
    /// circuits' cells (`staged`).
    pub cgo_originated_grouped: u64,
    /// Received RELAY cells crypted in a call with other cells (a run of one circuit or a
    /// multi-circuit call), and crypted alone.
    pub cells_crypted_batched: u64,
    pub cells_crypted_single: u64,
    /// Cells held in queues now, and the most ever.
    pub queued_cells: u64,
    pub queued_cells_high_water: u64,
    /// Cell buffers this shard holds from the relay-wide budget (in use or free in its
    /// chunks); the sum over shards is what counts against `MaxMemInQueues`.
    pub cell_buffers_reserved: u64,
    /// Circuit-table and stream-table slots allocated now (live or free), and the chunks
    /// of them, and of the cell pool, given back after a peak (`proto::slab`, `pool.rs`).
    pub circuit_slots_allocated: u64,
    pub stream_slots_allocated: u64,
    pub circuit_chunks_released: u64,
    pub stream_chunks_released: u64,
    pub cell_chunks_released: u64,
    /// Circuits closed because their queue exceeded its bound.
    pub queue_overflow_kills: u64,
    /// Circuits closed by the memory cap (MaxMemInQueues), oldest queued cell first.
    pub oom_kills: u64,
    /// Circuits closed for a protocol violation.
    pub protocol_closes: u64,
    /// DESTROY cells received / sent.
    pub destroys_received: u64,
    pub destroys_sent: u64,
    /// EXTEND2 turned into an `Action::Extend`, and refused.
    pub extends_requested: u64,
    pub extends_refused: u64,
    /// Circuit SENDMEs whose v1 tag did not verify.
    pub sendme_auth_failures: u64,
    /// Exit streams opened (CONNECTED sent), refused by policy, and live now.
    pub streams_opened: u64,
    pub streams_refused_policy: u64,
    pub streams: u64,
    /// BEGINs refused because the stream table was full.
    pub streams_refused_full: u64,
    /// DNS lookups requested.
    pub resolves_requested: u64,
    /// Circuits that negotiated congestion control (prop 324) in ntor-v3.
    pub cc_circuits: u64,
    /// Stream XOFF/XON we sent (our buffer toward a destination filled / drained).
    pub xoff_sent: u64,
    pub xon_sent: u64,
    /// Stream XOFF/XON the client sent us for a known stream.
    pub xoff_received: u64,
    pub xon_received: u64,
    /// XON/XOFF ignored with a protocol warning: no CC on the circuit, a second XOFF, a
    /// malformed XON (C `circuit_process_stream_xoff`/`_xon`).
    pub xon_xoff_ignored: u64,
    /// RELAY_END cells we sent, by reason code (see [`END_REASON_LABELS`]).
    pub ends_sent: [u64; END_REASON_SLOTS],
    /// The intro point's and rendezvous point's counters (`IntroCounters`, `RendCounters`),
    /// copied by [`CircuitMetrics::set_hs`] after each onion-service cell or close.
    pub hs_est_intro_success: u64,
    pub hs_est_intro_malformed: u64,
    pub hs_est_intro_verify_failed: u64,
    pub hs_est_intro_unsuitable: u64,
    pub hs_est_intro_table_full: u64,
    pub hs_est_intro_replaced: u64,
    pub hs_intro1_success: u64,
    pub hs_intro1_malformed: u64,
    pub hs_intro1_unknown_service: u64,
    pub hs_intro1_rate_limited: u64,
    pub hs_intro1_circuit_reused: u64,
    pub hs_intro1_single_hop: u64,
    pub hs_intro1_unsuitable: u64,
    pub hs_intro1_circuit_dead: u64,
    pub hs_est_rend_success: u64,
    pub hs_est_rend_unsuitable: u64,
    pub hs_est_rend_single_hop: u64,
    pub hs_est_rend_malformed: u64,
    pub hs_est_rend_duplicate_cookie: u64,
    pub hs_est_rend_table_full: u64,
    pub hs_rend1_success: u64,
    pub hs_rend1_unsuitable: u64,
    pub hs_rend1_malformed: u64,
    pub hs_rend1_unknown_cookie: u64,
    pub hs_rend1_circuit_dead: u64,
    pub hs_splices_closed: u64,
    /// Intro circuits (service keys) and rendezvous cookies held now.
    pub hs_intro_circuits: u64,
    pub hs_rend_cookies: u64,
    /// Across shards (`hs_cross.rs`), counted on the key's or cookie's home shard:
    /// INTRODUCE1s whose intro circuit is on another shard than the client's circuit, and
    /// rendezvous joins of two circuits on different shards.
    pub hs_cross_shard_intros: u64,
    pub hs_cross_shard_joins: u64,
    /// Spliced cells sent to a partner on another shard, and circuits closed because such
    /// a cell met a full cross-shard overflow (RESOURCELIMIT).
    pub hs_cross_shard_splice_cells: u64,
    pub hs_cross_shard_splice_overflow: u64,
    /// A joining service circuit's cells (`proto::circuit::hs_cross::HsCrossCounters`,
    /// copied by `set_hs_cross`): held until the join, spliced then, dropped; circuits
    /// closed past the hold bound; HS bodies refused at the cross-shard overflow bound.
    pub hs_joining_held: u64,
    pub hs_joining_spliced: u64,
    pub hs_joining_dropped: u64,
    pub hs_joining_overflow: u64,
    pub hs_cross_overflow_introduce: u64,
    pub hs_cross_overflow_rendezvous: u64,
    /// Conflux at the exit (`proto::conflux::ConfluxStats`, copied by `set_conflux`).
    pub conflux_sets: u64,
    pub conflux_legs: u64,
    pub conflux_held_cells: u64,
    pub conflux_ooo_pages: u64,
    pub conflux_sets_linked: u64,
    pub conflux_legs_linked: u64,
    pub conflux_links_refused: u64,
    pub conflux_switches_received: u64,
    pub conflux_switches_malformed: u64,
    pub conflux_switches_sent: u64,
    pub conflux_ooo_overflow: u64,
    pub conflux_teardowns: u64,
    /// Conflux across shards (`proto::conflux::cross::CrossStats`, `set_conflux_cross`).
    pub conflux_remote_legs_total: u64,
    pub conflux_remote_legs: u64,
    pub conflux_dir_entries: u64,
    pub conflux_lookups_sent: u64,
    pub conflux_table_full: u64,
    pub conflux_cross_full_teardowns: u64,
    pub conflux_stale_msgs: u64,
    pub conflux_pending_refused: u64,
    pub conflux_forgets_owed: u64,
    /// Conflux stream anchors now, and ever made (`proto::circuit::conflux`).
    pub conflux_anchors: u64,
    pub conflux_anchors_total: u64,
    /// Circuit padding (`proto::circpad::CircpadStats`, copied by `set_circpad`): machines
    /// set up on PADDING_NEGOTIATE START, running now, STOPs that freed one, machines that
    /// reached their end; negotiations refused (unknown machine: ERR), ignored (slot busy,
    /// unmatched STOP, malformed); DROP cells sent, suppressed (queue), limited.
    pub circpad_negotiated: u64,
    pub circpad_machines: u64,
    pub circpad_stopped: u64,
    pub circpad_ended: u64,
    pub circpad_unknown_machine: u64,
    pub circpad_slot_busy: u64,
    pub circpad_stop_unmatched: u64,
    pub circpad_malformed: u64,
    pub circpad_padding_sent: u64,
    pub circpad_padding_suppressed: u64,
    pub circpad_padding_limited: u64,
    /// DROP cells received for this hop (counted on every circuit, as C's padding stats).
    pub circpad_padding_received: u64,
    /// Entries in the shard's padding timer heap (live and stale).
    pub circpad_timers: u64,
}

impl CircuitMetrics {
    /// Counts one END we originate.
    pub fn count_end_sent(&mut self, reason: EndReason) {
        let code = usize::from(u8::from(reason));
        let slot = if code < END_REASON_SLOTS { code } else { 0 };
        self.ends_sent[slot] += 1;
    }

    /// Copies the cross-shard onion-service counters. Destructures without `..`, as
    /// `set_hs`.
    pub fn set_hs_cross(&mut self, c: &super::hs_cross::HsCrossCounters) {
        let super::hs_cross::HsCrossCounters {
            joining_held,
            joining_spliced,
            joining_dropped,
            joining_overflow,
            overflow_introduce,
            overflow_rendezvous,
        } = *c;
        self.hs_joining_held = joining_held;
        self.hs_joining_spliced = joining_spliced;
        self.hs_joining_dropped = joining_dropped;
        self.hs_joining_overflow = joining_overflow;
        self.hs_cross_overflow_introduce = overflow_introduce;
        self.hs_cross_overflow_rendezvous = overflow_rendezvous;
    }

    /// Copies the onion-service counters and table sizes. Destructures without `..`: a
    /// counter added to either struct is a compile error here until it is exported.
    pub fn set_hs(&mut self, intro: &IntroCounters, rend: &RendCounters, tables: (usize, usize)) {
        let IntroCounters {
            est_intro_success,
            est_intro_malformed,
            est_intro_verify_failed,
            est_intro_unsuitable,
            est_intro_replaced,
            est_intro_table_full,
            intro1_success,
            intro1_malformed,
            intro1_unknown_service,
            intro1_rate_limited,
            intro1_circuit_reused,
            intro1_single_hop,
            intro1_unsuitable,
            intro1_circuit_dead,
        } = *intro;
        let RendCounters {
            est_rend_success,
            est_rend_unsuitable,
            est_rend_single_hop,
            est_rend_malformed,
            est_rend_duplicate_cookie,
            est_rend_table_full,
            rend1_success,
            rend1_unsuitable,
            rend1_malformed,
            rend1_unknown_cookie,
            rend1_circuit_dead,
            splices_closed,
        } = *rend;
        self.hs_est_intro_success = est_intro_success;
        self.hs_est_intro_malformed = est_intro_malformed;
        self.hs_est_intro_verify_failed = est_intro_verify_failed;
        self.hs_est_intro_unsuitable = est_intro_unsuitable;
        self.hs_est_intro_table_full = est_intro_table_full;
        self.hs_est_intro_replaced = est_intro_replaced;
        self.hs_intro1_success = intro1_success;
        self.hs_intro1_malformed = intro1_malformed;
        self.hs_intro1_unknown_service = intro1_unknown_service;
        self.hs_intro1_rate_limited = intro1_rate_limited;
        self.hs_intro1_circuit_reused = intro1_circuit_reused;
        self.hs_intro1_single_hop = intro1_single_hop;
        self.hs_intro1_unsuitable = intro1_unsuitable;
        self.hs_intro1_circuit_dead = intro1_circuit_dead;
        self.hs_est_rend_success = est_rend_success;
        self.hs_est_rend_unsuitable = est_rend_unsuitable;
        self.hs_est_rend_single_hop = est_rend_single_hop;
        self.hs_est_rend_malformed = est_rend_malformed;
        self.hs_est_rend_duplicate_cookie = est_rend_duplicate_cookie;
        self.hs_est_rend_table_full = est_rend_table_full;
        self.hs_rend1_success = rend1_success;
        self.hs_rend1_unsuitable = rend1_unsuitable;
        self.hs_rend1_malformed = rend1_malformed;
        self.hs_rend1_unknown_cookie = rend1_unknown_cookie;
        self.hs_rend1_circuit_dead = rend1_circuit_dead;
        self.hs_splices_closed = splices_closed;
        self.hs_intro_circuits = tables.0 as u64;
        self.hs_rend_cookies = tables.1 as u64;
    }

    /// Copies one shard's conflux counters and table sizes (destructured without `..`).
    pub fn set_conflux(&mut self, s: &crate::proto::conflux::ConfluxStats) {
        let crate::proto::conflux::ConfluxStats {
            sets,
            legs,
            held_cells,
            ooo_pages,
            sets_linked_total,
            legs_linked_total,
            links_refused_total,
            switches_received_total,
            switches_malformed_total,
            switches_sent_total,
            ooo_overflow_total,
            teardowns_total,
        } = *s;
        self.conflux_sets = sets as u64;
        self.conflux_legs = legs as u64;
        self.conflux_held_cells = held_cells as u64;
        self.conflux_ooo_pages = ooo_pages as u64;
        self.conflux_sets_linked = sets_linked_total;
        self.conflux_legs_linked = legs_linked_total;
        self.conflux_links_refused = links_refused_total;
        self.conflux_switches_received = switches_received_total;
        self.conflux_switches_malformed = switches_malformed_total;
        self.conflux_switches_sent = switches_sent_total;
        self.conflux_ooo_overflow = ooo_overflow_total;
        self.conflux_teardowns = teardowns_total;
    }

    /// Copies one shard's cross-shard conflux counters (destructured without `..`).
    pub fn set_conflux_cross(&mut self, s: &crate::proto::conflux::cross::CrossStats) {
        let crate::proto::conflux::cross::CrossStats {
            remote_legs_total,
            remote_legs,
            lookups_sent_total,
            dir_entries,
            table_full_total,
            cross_full_teardowns_total,
            stale_msgs_total,
            pending_refused_total,
            forgets_owed,
        } = *s;
        self.conflux_remote_legs_total = remote_legs_total;
        self.conflux_remote_legs = remote_legs as u64;
        self.conflux_dir_entries = dir_entries as u64;
        self.conflux_lookups_sent = lookups_sent_total;
        self.conflux_table_full = table_full_total;
        self.conflux_cross_full_teardowns = cross_full_teardowns_total;
        self.conflux_stale_msgs = stale_msgs_total;
        self.conflux_pending_refused = pending_refused_total;
        self.conflux_forgets_owed = forgets_owed as u64;
    }

    /// Copies one shard's circuit-padding counters (destructured without `..`) and its
    /// timer heap's length. `padding_received` is counted by the core itself.
    pub fn set_circpad(&mut self, s: &crate::proto::circpad::CircpadStats, timers: usize) {
        let crate::proto::circpad::CircpadStats {
            machines_started,
            machines_running,
            negotiate_unknown_machine,
            negotiate_slot_busy,
            negotiate_stopped,
            negotiate_stop_unmatched,
            negotiate_malformed,
            padding_sent,
            padding_suppressed_queue,
            padding_limited,
            machines_ended,
        } = *s;
        self.circpad_negotiated = machines_started;
        self.circpad_machines = machines_running;
        self.circpad_stopped = negotiate_stopped;
        self.circpad_ended = machines_ended;
        self.circpad_unknown_machine = negotiate_unknown_machine;
        self.circpad_slot_busy = negotiate_slot_busy;
        self.circpad_stop_unmatched = negotiate_stop_unmatched;
        self.circpad_malformed = negotiate_malformed;
        self.circpad_padding_sent = padding_sent;
        self.circpad_padding_suppressed = padding_suppressed_queue;
        self.circpad_padding_limited = padding_limited;
        self.circpad_timers = timers as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_land_in_their_labelled_slot() {
        let mut m = CircuitMetrics::default();
        for code in 0..=255u8 {
            m.count_end_sent(EndReason::from(code));
        }
        m.count_end_sent(EndReason::ExitPolicy);
        assert_eq!(m.ends_sent[4], 2);
        assert_eq!(END_REASON_LABELS[4], "exitpolicy");
        assert_eq!(
            END_REASON_LABELS[usize::from(u8::from(EndReason::NotDirectory))],
            "notdirectory"
        );
        assert_eq!(
            END_REASON_LABELS[usize::from(u8::from(EndReason::Misc))],
            "misc"
        );
        // Codes 0 and 15..=255 are "other".
        assert_eq!(m.ends_sent[0], 1 + (255 - 14));
        assert!(m.ends_sent[1..]
            .iter()
            .enumerate()
            .all(|(i, &n)| n == 1 + u64::from(i == 3)));
    }
}
