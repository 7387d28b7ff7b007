//! The circuit core's [`CircuitMetrics`] and the exit resolver's [`DnsMetrics`], field by
//! field, with their MetricsPort names and help.
//!
//! Each table destructures its struct without `..`: a field added to either struct is a
//! compile error here until it is exported (or listed as exported elsewhere, with why).
//! Several fields may share one family name with different `extra` labels (e.g.
//! `fors_relay_create_refused_total{reason=…}`); such entries stay adjacent so each family
//! is rendered in one block.

use super::shard::MetricKind;
use crate::exit::dns::DnsMetrics;
use crate::proto::circuit::CircuitMetrics;

/// One exported value of a per-shard struct.
#[derive(Clone, Copy, Debug)]
pub struct ExportedMetric {
    /// The struct field it comes from.
    pub field: &'static str,
    /// Prometheus family name.
    pub name: &'static str,
    /// Labels besides `shard`, e.g. `reason="table_full"`; empty for none.
    pub extra: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// Whether a relay-wide sum (`fors_relay_all_shards_*`) is rendered too.
    pub sum: bool,
}

macro_rules! exported_fields {
    (
        $ty:ident, $table:ident, $count:ident, $values:ident,
        { $( $field:ident => $name:literal [$extra:literal] $kind:ident $sum:literal $help:literal, )* }
        elsewhere { $( $other:ident ),* $(,)? }
    ) => {
        /// Exported fields of the struct, in slot order.
        pub const $table: &[ExportedMetric] = &[$(ExportedMetric {
            field: stringify!($field),
            name: $name,
            extra: $extra,
            kind: MetricKind::$kind,
            help: $help,
            sum: $sum,
        }),*];
        /// Number of exported fields.
        pub const $count: usize = $table.len();

        /// The exported values, in slot order.
        pub fn $values(m: &$ty) -> [u64; $count] {
            let $ty { $($field,)* $($other: _,)* } = m;
            [$(*$field),*]
        }
    };
}

exported_fields! {
    CircuitMetrics, CIRCUIT_METRICS, CIRCUIT_METRIC_COUNT, circuit_metric_values,
    {
        circuits_cgo_created => "fors_relay_circuits_cgo_total" [""]
            Counter true "Circuits that negotiated CGO relay crypto (proposal 359, Relay=6) in ntor-v3.",
        create_refused_table_full => "fors_relay_create_refused_total" ["reason=\"table_full\""]
            Counter true "CREATE cells refused (DESTROY RESOURCELIMIT), by bound hit: the circuit table or the onion queue.",
        create_refused_queue_full => "fors_relay_create_refused_total" ["reason=\"queue_full\""]
            Counter true "",
        onion_queue_len => "fors_relay_onion_queue_length" [""]
            Gauge true "Onionskins waiting for the batched handshake now.",
        onionskins_processed => "fors_relay_onionskins_processed_total" [""]
            Counter true "Onion handshakes (CREATE2/CREATE_FAST) run.",
        onionskins_expired => "fors_relay_onionskins_expired_total" [""]
            Counter true "Onionskins dropped because they waited in the queue longer than the configured delay.",
        handshake_failures => "fors_relay_handshake_failures_total" [""]
            Counter true "Onion handshakes that failed (bad onionskin, unknown key).",
        cells_recognized => "fors_relay_cells_recognized_total" [""]
            Counter false "Relay cells recognized and handled here.",
        cells_originated => "fors_relay_cells_originated_total" [""]
            Counter false "Relay cells this relay originated toward clients.",
        originate_multi_flushes => "fors_relay_originate_multi_calls_total" [""]
            Counter false "Batches of exit DATA crypted across several circuits in one multi-buffer SHA-1 call.",
        staged_cells_dropped => "fors_relay_staged_cells_dropped_total" [""]
            Counter false "Exit DATA cells staged for the multi-circuit crypto call whose circuit closed first.",
        relay_in_batches => "fors_relay_cell_batches_total" [""]
            Counter false "Channel reads whose RELAY cells were crypted together (fors_relay_cell_batch_cells_total over this is the mean batch size).",
        relay_in_cells => "fors_relay_cell_batch_cells_total" [""]
            Counter false "RELAY cells received in those batches.",
        relay_in_multi_calls => "fors_relay_forward_multi_calls_total" [""]
            Counter false "Multi-circuit crypto calls over received cells of several circuits at once (multi-buffer SHA-1 for tor1 circuits ending here; CGO circuits, each direction).",
        cgo_cells_grouped => "fors_relay_cgo_cells_grouped_total" [""]
            Counter false "Received CGO cells crypted in one interleaved kernel call with cells of other circuits.",
        cgo_originated_grouped => "fors_relay_cgo_originated_grouped_total" [""]
            Counter false "Exit DATA cells of CGO circuits originated in one interleaved kernel call with cells of other circuits.",
        cells_crypted_batched => "fors_relay_cells_crypted_total" ["call=\"batched\""]
            Counter true "Received RELAY cells by crypto call: with other cells (a run of one circuit, or several circuits), or alone.",
        cells_crypted_single => "fors_relay_cells_crypted_total" ["call=\"single\""]
            Counter true "",
        queued_cells => "fors_relay_queued_cells" [""]
            Gauge true "Cells held in circuit and stream queues now.",
        queued_cells_high_water => "fors_relay_queued_cells_peak" [""]
            Gauge false "Most cells ever held in circuit and stream queues at once.",
        cell_buffers_reserved => "fors_relay_cell_buffers_reserved" [""]
            Gauge true "Cell buffers held from the relay-wide MaxMemInQueues budget (in use or free in a shard's chunks).",
        circuit_slots_allocated => "fors_relay_table_slots_allocated" ["table=\"circuits\""]
            Gauge true "Slots a shard's table has allocated now, live or free (they grow in chunks with load and go back after a peak).",
        stream_slots_allocated => "fors_relay_table_slots_allocated" ["table=\"streams\""]
            Gauge true "",
        circuit_chunks_released => "fors_relay_table_chunks_released_total" ["table=\"circuits\""]
            Counter true "Chunks of table slots or cell buffers given back after a peak (empty chunks at a table's top; the cell pool's free chunks).",
        stream_chunks_released => "fors_relay_table_chunks_released_total" ["table=\"streams\""]
            Counter true "",
        cell_chunks_released => "fors_relay_table_chunks_released_total" ["table=\"cells\""]
            Counter true "",
        queue_overflow_kills => "fors_relay_circuits_killed_total" ["reason=\"queue_overflow\""]
            Counter true "Circuits closed by a bound: their queue overflowed, the memory cap (MaxMemInQueues), or a protocol violation.",
        oom_kills => "fors_relay_circuits_killed_total" ["reason=\"oom\""]
            Counter true "",
        protocol_closes => "fors_relay_circuits_killed_total" ["reason=\"protocol\""]
            Counter true "",
        destroys_received => "fors_relay_destroys_received_total" [""]
            Counter false "DESTROY cells received.",
        destroys_sent => "fors_relay_destroys_sent_total" [""]
            Counter false "DESTROY cells sent.",
        extends_requested => "fors_relay_extends_requested_total" [""]
            Counter false "EXTEND2 requests passed on to a next hop.",
        extends_refused => "fors_relay_extends_refused_total" [""]
            Counter false "EXTEND2 requests refused.",
        sendme_auth_failures => "fors_relay_sendme_auth_failures_total" [""]
            Counter false "Circuit SENDMEs whose authenticating tag did not verify (circuit closed).",
        streams_opened => "fors_relay_streams_opened_total" [""]
            Counter false "Exit streams opened (RELAY_CONNECTED sent).",
        streams_refused_policy => "fors_relay_streams_refused_total" ["reason=\"exitpolicy\""]
            Counter false "BEGINs refused, by cause: the exit policy or a full stream table.",
        streams_refused_full => "fors_relay_streams_refused_total" ["reason=\"table_full\""]
            Counter false "",
        streams => "fors_relay_streams_tracked" [""]
            Gauge true "Exit streams the circuit core tracks now (resolving, connecting and open).",
        resolves_requested => "fors_relay_resolves_requested_total" [""]
            Counter false "Hostname lookups the circuit core asked for (BEGIN and RESOLVE).",
        xoff_received => "fors_relay_stream_xoff_received_total" [""]
            Counter false "Stream XOFF cells received for a known stream.",
        xon_received => "fors_relay_stream_xon_received_total" [""]
            Counter false "Stream XON cells received for a known stream.",
        xon_xoff_ignored => "fors_relay_stream_xon_xoff_ignored_total" [""]
            Counter false "Stream XON/XOFF ignored with a protocol warning (no congestion control, repeated XOFF, malformed XON).",
        hs_est_intro_success => "fors_relay_hs_establish_intro_total" ["action=\"success\""]
            Counter true "ESTABLISH_INTRO cells received as introduction point, by outcome (C tor's words; verify_failed: bad signature or MAC; table_full: Fors's bound).",
        hs_est_intro_malformed => "fors_relay_hs_establish_intro_total" ["action=\"malformed\""]
            Counter true "",
        hs_est_intro_verify_failed => "fors_relay_hs_establish_intro_total" ["action=\"verify_failed\""]
            Counter true "",
        hs_est_intro_unsuitable => "fors_relay_hs_establish_intro_total" ["action=\"unsuitable_circuit\""]
            Counter true "",
        hs_est_intro_table_full => "fors_relay_hs_establish_intro_total" ["action=\"table_full\""]
            Counter true "",
        hs_est_intro_replaced => "fors_relay_hs_intro_replaced_total" [""]
            Counter false "Intro circuits closed because the same service key established a newer one (counted in action=success too).",
        hs_intro1_success => "fors_relay_hs_introduce1_total" ["action=\"success\""]
            Counter true "INTRODUCE1 cells received as introduction point, by outcome (success: INTRODUCE2 forwarded to the service).",
        hs_intro1_circuit_dead => "fors_relay_hs_introduce1_total" ["action=\"circuit_dead\""]
            Counter true "",
        hs_intro1_malformed => "fors_relay_hs_introduce1_total" ["action=\"malformed\""]
            Counter true "",
        hs_intro1_unknown_service => "fors_relay_hs_introduce1_total" ["action=\"unknown_service\""]
            Counter true "",
        hs_intro1_rate_limited => "fors_relay_hs_introduce1_total" ["action=\"rate_limited\""]
            Counter true "",
        hs_intro1_circuit_reused => "fors_relay_hs_introduce1_total" ["action=\"circuit_reused\""]
            Counter true "",
        hs_intro1_single_hop => "fors_relay_hs_introduce1_total" ["action=\"single_hop\""]
            Counter true "",
        hs_intro1_unsuitable => "fors_relay_hs_introduce1_total" ["action=\"unsuitable_circuit\""]
            Counter true "",
        hs_est_rend_success => "fors_relay_hs_establish_rendezvous_total" ["action=\"success\""]
            Counter true "ESTABLISH_RENDEZVOUS cells received as rendezvous point, by outcome (table_full: Fors's bound).",
        hs_est_rend_unsuitable => "fors_relay_hs_establish_rendezvous_total" ["action=\"unsuitable_circuit\""]
            Counter true "",
        hs_est_rend_single_hop => "fors_relay_hs_establish_rendezvous_total" ["action=\"single_hop\""]
            Counter true "",
        hs_est_rend_malformed => "fors_relay_hs_establish_rendezvous_total" ["action=\"malformed\""]
            Counter true "",
        hs_est_rend_duplicate_cookie => "fors_relay_hs_establish_rendezvous_total" ["action=\"duplicate_cookie\""]
            Counter true "",
        hs_est_rend_table_full => "fors_relay_hs_establish_rendezvous_total" ["action=\"table_full\""]
            Counter true "",
        hs_rend1_success => "fors_relay_hs_rendezvous1_total" ["action=\"success\""]
            Counter true "RENDEZVOUS1 cells received as rendezvous point, by outcome (success: circuits joined).",
        hs_rend1_unsuitable => "fors_relay_hs_rendezvous1_total" ["action=\"unsuitable_circuit\""]
            Counter true "",
        hs_rend1_malformed => "fors_relay_hs_rendezvous1_total" ["action=\"malformed\""]
            Counter true "",
        hs_rend1_unknown_cookie => "fors_relay_hs_rendezvous1_total" ["action=\"unknown_cookie\""]
            Counter true "",
        hs_rend1_circuit_dead => "fors_relay_hs_rendezvous1_total" ["action=\"circuit_dead\""]
            Counter true "",
        hs_splices_closed => "fors_relay_hs_splices_closed_total" [""]
            Counter false "Joined rendezvous circuits closed (both circuits of a pair count).",
        hs_intro_circuits => "fors_relay_hs_intro_circuits" [""]
            Gauge true "Introduction circuits (service keys) held now.",
        hs_rend_cookies => "fors_relay_hs_rend_cookies" [""]
            Gauge true "Rendezvous cookies held now: waiting for the service, or kept by a joined client circuit until it closes (as C tor keeps them).",
        hs_cross_shard_intros => "fors_relay_hs_cross_shard_total" ["kind=\"introduce\""]
            Counter true "Onion-service work that crossed shards (introduce: INTRODUCE1 and the intro circuit on different shards, and join: rendezvous circuits on different shards, counted on the key's or cookie's home shard; splice_cell: spliced cells sent to a partner on another shard, counted on the sending shard).",
        hs_cross_shard_joins => "fors_relay_hs_cross_shard_total" ["kind=\"join\""]
            Counter true "",
        hs_cross_shard_splice_cells => "fors_relay_hs_cross_shard_total" ["kind=\"splice_cell\""]
            Counter true "",
        hs_cross_shard_splice_overflow => "fors_relay_hs_splice_overflow_total" [""]
            Counter false "Spliced circuits closed (RESOURCELIMIT) because a cell for the partner's shard met a full cross-shard overflow.",
        hs_joining_held => "fors_relay_hs_rend_joining_cells_total" ["action=\"held\""]
            Counter true "Cells a service's rendezvous circuit sent between RENDEZVOUS1 and a cross-shard join (C tor joins at once and would splice them): held in the cell pool, then spliced at the join, or dropped when the join failed or a side closed first.",
        hs_joining_spliced => "fors_relay_hs_rend_joining_cells_total" ["action=\"spliced\""]
            Counter true "",
        hs_joining_dropped => "fors_relay_hs_rend_joining_cells_total" ["action=\"dropped\""]
            Counter true "",
        hs_joining_overflow => "fors_relay_hs_rend_joining_overflow_total" [""]
            Counter true "Joining service circuits closed (RESOURCELIMIT) past the per-circuit hold bound or with no cell buffer left.",
        hs_cross_overflow_introduce => "fors_relay_hs_cross_shard_refused_total" ["kind=\"introduce\""]
            Counter true "Onion-service messages with a body refused at the cross-shard overflow bound (introduce: the client got INTRODUCE_ACK UNKNOWN_ID; rendezvous: the circuits closed with RESOURCELIMIT).",
        hs_cross_overflow_rendezvous => "fors_relay_hs_cross_shard_refused_total" ["kind=\"rendezvous\""]
            Counter true "",
        conflux_sets => "fors_relay_conflux_sets" [""]
            Gauge true "Conflux sets (linked or linking) whose legs end here.",
        conflux_legs => "fors_relay_conflux_legs" [""]
            Gauge true "Conflux legs (circuits) in those sets.",
        conflux_held_cells => "fors_relay_conflux_ooo_cells" [""]
            Gauge true "Multiplexed cells held out of order, waiting for earlier sequence numbers.",
        conflux_ooo_pages => "fors_relay_conflux_ooo_pages" [""]
            Gauge true "Pages (64 sequence numbers, 260 bytes) of the out-of-order queues in use; each holds at least one of the cells held.",
        conflux_sets_linked => "fors_relay_conflux_linked_total" ["kind=\"set\""]
            Counter true "Conflux sets and legs linked (CONFLUX_LINKED sent).",
        conflux_legs_linked => "fors_relay_conflux_linked_total" ["kind=\"leg\""]
            Counter true "",
        conflux_links_refused => "fors_relay_conflux_links_refused_total" [""]
            Counter true "CONFLUX_LINK cells refused (the leg closed, as C tor).",
        conflux_switches_received => "fors_relay_conflux_switches_total" ["action=\"received\""]
            Counter true "CONFLUX_SWITCH cells received, refused as malformed, and sent.",
        conflux_switches_malformed => "fors_relay_conflux_switches_total" ["action=\"malformed\""]
            Counter true "",
        conflux_switches_sent => "fors_relay_conflux_switches_total" ["action=\"sent\""]
            Counter true "",
        conflux_ooo_overflow => "fors_relay_conflux_ooo_overflow_total" [""]
            Counter true "Sets torn down because their out-of-order queue reached its bound.",
        conflux_teardowns => "fors_relay_conflux_teardowns_total" [""]
            Counter true "Conflux sets torn down.",
        conflux_remote_legs_total => "fors_relay_conflux_remote_legs_total" [""]
            Counter true "Conflux legs linked to a set owned by another shard than the leg's circuit (counted by the set's shard).",
        conflux_remote_legs => "fors_relay_conflux_remote_legs" [""]
            Gauge true "Conflux legs now on another shard than their set.",
        conflux_dir_entries => "fors_relay_conflux_home_entries" [""]
            Gauge true "Conflux nonces this shard is the home (rendezvous) shard for.",
        conflux_lookups_sent => "fors_relay_conflux_lookups_total" [""]
            Counter true "CONFLUX_LINKs whose set's home shard was another shard.",
        conflux_table_full => "fors_relay_conflux_cross_refused_total" ["why=\"table_full\""]
            Counter true "CONFLUX_LINKs refused (RESOURCELIMIT) because a cross-shard table or queue was full, and sets torn down because a cross-shard queue could not take a cell.",
        conflux_cross_full_teardowns => "fors_relay_conflux_cross_refused_total" ["why=\"queue_full\""]
            Counter true "",
        conflux_stale_msgs => "fors_relay_conflux_cross_stale_total" [""]
            Counter true "Cross-shard conflux messages for a leg or set that was gone when they arrived.",
        conflux_pending_refused => "fors_relay_conflux_pending_refused_total" [""]
            Counter true "Legs closed (TORPROTOCOL) for a multiplexed, SWITCH or LINKED_ACK cell before their CONFLUX_LINKED.",
        conflux_forgets_owed => "fors_relay_conflux_forgets_owed" [""]
            Gauge true "Conflux home-directory releases a full cross-shard queue refused, to be sent again with this shard's next conflux message.",
        conflux_anchors => "fors_relay_conflux_stream_anchors" [""]
            Gauge true "Conflux sets whose shard lost its last local leg while legs on other shards keep the set: the closed leg's slot holds the streams (no channel, no keys).",
        conflux_anchors_total => "fors_relay_conflux_stream_anchors_total" [""]
            Counter true "Conflux stream anchors made (the set's shard lost its last local leg while legs on other shards lived).",
        circpad_negotiated => "fors_relay_circpad_negotiated_total" [""]
            Counter true "Circuit padding machines set up on a client's PADDING_NEGOTIATE START (padding-spec §3, Padding=2).",
        circpad_machines => "fors_relay_circpad_machines" [""]
            Gauge true "Circuit padding machines on circuits now.",
        circpad_stopped => "fors_relay_circpad_stopped_total" [""]
            Counter true "Circuit padding machines freed by the client's STOP.",
        circpad_ended => "fors_relay_circpad_ended_total" [""]
            Counter true "Circuit padding machines that reached their end state.",
        circpad_unknown_machine => "fors_relay_circpad_negotiate_refused_total" ["reason=\"unknown_machine\""]
            Counter true "PADDING_NEGOTIATE cells refused (ERR) or ignored (C tor's reasons).",
        circpad_slot_busy => "fors_relay_circpad_negotiate_refused_total" ["reason=\"slot_busy\""]
            Counter true "",
        circpad_stop_unmatched => "fors_relay_circpad_negotiate_refused_total" ["reason=\"stop_unmatched\""]
            Counter true "",
        circpad_malformed => "fors_relay_circpad_negotiate_refused_total" ["reason=\"malformed\""]
            Counter true "",
        circpad_padding_sent => "fors_relay_circpad_padding_sent_total" [""]
            Counter true "DROP cells the circuit padding machines sent towards the client.",
        circpad_padding_suppressed => "fors_relay_circpad_padding_skipped_total" ["reason=\"queue\""]
            Counter true "Padding the machines scheduled but did not send: too many cells queued (circpad_max_circ_queued_cells), or a padding limit reached.",
        circpad_padding_limited => "fors_relay_circpad_padding_skipped_total" ["reason=\"limit\""]
            Counter true "",
        circpad_padding_received => "fors_relay_circpad_padding_received_total" [""]
            Counter true "DROP cells received for this hop.",
        circpad_timers => "fors_relay_circpad_timers" [""]
            Gauge false "Entries in the shard's circuit padding timer heap (live and stale; bounded by twice the circuit table).",
    }
    // circuits (fors_relay_circuits_open), circuits_created, cc_circuits, cells_forwarded,
    // cells_backward, xoff_sent and xon_sent go out through `HandlerCounters`;
    // ends_sent is its own labelled family (`fors_relay_stream_end_sent_total`);
    // relay_in_cross_batches counts only what tests and benchmarks stage (the node does not).
    elsewhere {
        circuits, circuits_created, cc_circuits, cells_forwarded, cells_backward,
        xoff_sent, xon_sent, ends_sent, relay_in_cross_batches,
    }
}

exported_fields! {
    DnsMetrics, DNS_METRICS, DNS_METRIC_COUNT, dns_metric_values,
    {
        lookups => "fors_relay_dns_lookups_total" [""]
            Counter true "Lookups asked of the exit resolver (literals and cache hits included).",
        literals => "fors_relay_dns_literals_total" [""]
            Counter false "Lookups that were address literals (no query).",
        cache_hits => "fors_relay_dns_cache_hits_total" [""]
            Counter true "Lookups answered from the resolver cache.",
        cache_misses => "fors_relay_dns_cache_misses_total" [""]
            Counter false "Lookups not (fully) in the resolver cache.",
        coalesced => "fors_relay_dns_coalesced_total" [""]
            Counter false "Lookups that joined a query for the same name already in flight.",
        refused_name => "fors_relay_dns_refused_total" ["reason=\"name\""]
            Counter false "Lookups refused before any query: a hostname an exit does not resolve, or a bound hit.",
        refused_inflight_full => "fors_relay_dns_refused_total" ["reason=\"inflight_full\""]
            Counter false "",
        refused_waiters_full => "fors_relay_dns_refused_total" ["reason=\"waiters_full\""]
            Counter false "",
        refused_no_nameserver => "fors_relay_dns_refused_total" ["reason=\"no_nameserver\""]
            Counter false "",
        cancelled => "fors_relay_dns_cancelled_total" [""]
            Counter false "Lookups whose stream closed before the answer.",
        abandoned => "fors_relay_dns_abandoned_total" [""]
            Counter false "Names whose queries were dropped because every stream waiting on them closed.",
        queries_sent => "fors_relay_dns_queries_sent_total" [""]
            Counter true "DNS queries handed to the socket (retransmissions included).",
        retransmits => "fors_relay_dns_retransmits_total" [""]
            Counter false "DNS queries sent again after a timeout.",
        responses_accepted => "fors_relay_dns_responses_total" [""]
            Counter false "DNS responses that matched a query in flight.",
        ignored_unknown_id => "fors_relay_dns_responses_ignored_total" ["reason=\"unknown_id\""]
            Counter false "DNS datagrams dropped: no query with that id (late or spoofed), wrong source, question mismatch, malformed.",
        ignored_wrong_source => "fors_relay_dns_responses_ignored_total" ["reason=\"wrong_source\""]
            Counter false "",
        ignored_question_mismatch => "fors_relay_dns_responses_ignored_total" ["reason=\"question_mismatch\""]
            Counter false "",
        ignored_malformed => "fors_relay_dns_responses_ignored_total" ["reason=\"malformed\""]
            Counter false "",
        answers_found => "fors_relay_dns_answers_total" [""]
            Counter true "Record types looked up that yielded an answer.",
        failures_permanent => "fors_relay_dns_failures_permanent_total" [""]
            Counter false "Record types looked up that failed permanently (RESOLVED 0xF1).",
        failures_transient => "fors_relay_dns_failures_transient_total" [""]
            Counter false "Record types looked up that failed transiently (RESOLVED 0xF0).",
        failed_nxdomain => "fors_relay_dns_failures_total" ["cause=\"nxdomain\""]
            Counter true "Failed record-type lookups by cause.",
        failed_nodata => "fors_relay_dns_failures_total" ["cause=\"nodata\""]
            Counter true "",
        failed_servfail => "fors_relay_dns_failures_total" ["cause=\"servfail\""]
            Counter true "",
        timeouts => "fors_relay_dns_failures_total" ["cause=\"timeout\""]
            Counter true "",
        truncated => "fors_relay_dns_failures_total" ["cause=\"truncated\""]
            Counter true "",
        id_exhausted => "fors_relay_dns_failures_total" ["cause=\"no_query_id\""]
            Counter true "",
        cache_evictions => "fors_relay_dns_cache_evictions_total" [""]
            Counter false "Resolver cache entries evicted (expired or for room).",
        inflight => "fors_relay_dns_inflight" [""]
            Gauge true "Names being looked up now.",
        inflight_limit => "fors_relay_dns_inflight_limit" [""]
            Gauge false "Bound on names being looked up at once.",
        cache_len => "fors_relay_dns_cache_entries" [""]
            Gauge false "Names in the resolver cache now.",
        cache_limit => "fors_relay_dns_cache_limit" [""]
            Gauge false "Bound on names in the resolver cache.",
    }
    elsewhere {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Debug output lists the fields in declaration order; the tables must name exactly
    /// the exported ones, and every family's help sits on its first entry.
    fn check(table: &[ExportedMetric], debug: &str, elsewhere: &[&str]) {
        let fields: Vec<&str> = debug
            .split([',', '{'])
            .filter_map(|f| f.split_once(':').map(|(n, _)| n.trim()))
            .filter(|n| !n.is_empty() && !n.starts_with('['))
            .filter(|n| !elsewhere.contains(n))
            .collect();
        let exported: Vec<&str> = table.iter().map(|e| e.field).collect();
        let mut sorted_fields = fields.clone();
        sorted_fields.sort_unstable();
        let mut sorted_exported = exported.clone();
        sorted_exported.sort_unstable();
        assert_eq!(sorted_fields, sorted_exported);
        let mut seen = std::collections::HashSet::new();
        let mut prev = "";
        for e in table {
            assert!(e.name.starts_with("fors_relay_"), "{}", e.name);
            assert_eq!(
                e.name.ends_with("_total"),
                e.kind == MetricKind::Counter,
                "{}",
                e.name
            );
            if e.name != prev {
                assert!(seen.insert(e.name), "{} not adjacent", e.name);
                assert!(!e.help.is_empty(), "{} has no help", e.name);
            }
            prev = e.name;
        }
    }

    #[test]
    fn tables_cover_every_field() {
        let circuit = format!("{:?}", CircuitMetrics::default());
        check(
            CIRCUIT_METRICS,
            &circuit,
            &[
                "circuits",
                "circuits_created",
                "cc_circuits",
                "cells_forwarded",
                "cells_backward",
                "xoff_sent",
                "xon_sent",
                "ends_sent",
                "relay_in_cross_batches",
            ],
        );
        check(DNS_METRICS, &format!("{:?}", DnsMetrics::default()), &[]);
    }

    /// The onion-service counters reach their `fors_relay_hs_*` series with C tor's action
    /// words, per shard and summed.
    #[test]
    fn hs_counters_render_with_their_action() {
        use crate::metrics::registry::MetricsRegistry;
        use crate::proto::hs::intro::IntroCounters;
        use crate::proto::hs::rend::RendCounters;
        let intro = IntroCounters {
            est_intro_success: 3,
            est_intro_verify_failed: 1,
            intro1_success: 7,
            intro1_rate_limited: 2,
            ..IntroCounters::default()
        };
        let rend = RendCounters {
            est_rend_success: 5,
            rend1_success: 4,
            rend1_unknown_cookie: 6,
            splices_closed: 8,
            ..RendCounters::default()
        };
        let mut m = CircuitMetrics::default();
        m.set_hs(&intro, &rend, (2, 1));
        let t0 = std::time::Instant::now();
        let reg = MetricsRegistry::new(2, t0);
        reg.shard(1).unwrap().store_circuit(&m);
        let text = reg.render(t0);
        for line in [
            "fors_relay_hs_establish_intro_total{shard=\"1\",action=\"success\"} 3\n",
            "fors_relay_hs_establish_intro_total{shard=\"1\",action=\"verify_failed\"} 1\n",
            "fors_relay_hs_establish_intro_total{shard=\"0\",action=\"success\"} 0\n",
            "fors_relay_hs_introduce1_total{shard=\"1\",action=\"success\"} 7\n",
            "fors_relay_hs_introduce1_total{shard=\"1\",action=\"rate_limited\"} 2\n",
            "fors_relay_hs_establish_rendezvous_total{shard=\"1\",action=\"success\"} 5\n",
            "fors_relay_hs_rendezvous1_total{shard=\"1\",action=\"success\"} 4\n",
            "fors_relay_hs_rendezvous1_total{shard=\"1\",action=\"unknown_cookie\"} 6\n",
            "fors_relay_hs_splices_closed_total{shard=\"1\"} 8\n",
            "fors_relay_hs_intro_circuits{shard=\"1\"} 2\n",
            "fors_relay_hs_rend_cookies{shard=\"1\"} 1\n",
            "fors_relay_all_shards_hs_introduce1_total{action=\"success\"} 7\n",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }

    #[test]
    fn values_follow_the_table() {
        let m = CircuitMetrics {
            oom_kills: 5,
            streams: 9,
            ..CircuitMetrics::default()
        };
        let v = circuit_metric_values(&m);
        let at = |f: &str| CIRCUIT_METRICS.iter().position(|e| e.field == f).unwrap();
        assert_eq!(v[at("oom_kills")], 5);
        assert_eq!(v[at("streams")], 9);
        assert_eq!(v.iter().sum::<u64>(), 14);
        let d = DnsMetrics {
            timeouts: 3,
            ..DnsMetrics::default()
        };
        let v = dns_metric_values(&d);
        let at = |f: &str| DNS_METRICS.iter().position(|e| e.field == f).unwrap();
        assert_eq!(v[at("timeouts")], 3);
        assert_eq!(DNS_METRICS[at("timeouts")].extra, "cause=\"timeout\"");
    }
}
