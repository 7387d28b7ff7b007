//! C tor's own MetricsPort families (`src/feature/relay/relay_metrics.c`, tor 0.4.8/0.4.9),
//! filled from Fors's counters where Fors counts the same thing, so that dashboards and
//! alerts written for a C tor relay work unchanged. Values are relay-wide (sums over the
//! shards), as in C tor, which has one main loop.
//!
//! A C tor family or label value that Fors cannot fill with the same meaning is left out,
//! never filled with zero or with a near miss; docs/operating.md lists them with why.
//! `tor_relay_dos_total` lives with the rest of the DoS counters (`registry::render_dos`).
//!
//! No label carries an address or a destination (SafeLogging): only C tor's fixed words.

use std::sync::atomic::{AtomicU64, Ordering};

use super::core_counters::{CIRCUIT_METRICS, DNS_METRICS};
use super::registry::{Family, MetricsRegistry};
use super::shard::{shard_metric_index, MetricKind};
use crate::dir::consensus::RelayFlags;

/// `CircuitMetrics` fields read here (checked against the table by a test).
const DESTROYS_RECEIVED: &str = "destroys_received";
const PROTOCOL_CLOSES: &str = "protocol_closes";
/// `DnsMetrics` fields read here.
const DNS_FIELDS: [&str; 8] = [
    "queries_sent",
    "retransmits",
    "answers_found",
    "failed_nxdomain",
    "failed_nodata",
    "truncated",
    "timeouts",
    "id_exhausted",
];
/// `ShardMetrics` fields read here.
const BW_GLOBAL_EMPTY: [(&str, &str); 2] = [
    ("read", "bw_global_read_empty"),
    ("write", "bw_global_write_empty"),
];

/// A C tor family name, its help, and `(action, CircuitMetrics field)` pairs.
pub type HsFamily = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// C tor's onion-service cell families (`fill_est_intro_cells` & co.): name, help, and each
/// `action` value with the `CircuitMetrics` field that counts the same outcome. Left out:
/// `circuit_dead` of ESTABLISH_INTRO/ESTABLISH_RENDEZVOUS (Fors does not count a failed
/// reply there) and ESTABLISH_INTRO `malformed` (Fors counts bad signatures apart).
pub const HS_FAMILIES: [HsFamily; 4] = [
    (
        "tor_relay_est_rend_total",
        "Total number of EST_REND cells we received",
        &[
            ("success", "hs_est_rend_success"),
            ("unsuitable_circuit", "hs_est_rend_unsuitable"),
            ("single_hop", "hs_est_rend_single_hop"),
            ("malformed", "hs_est_rend_malformed"),
            ("duplicate_cookie", "hs_est_rend_duplicate_cookie"),
        ],
    ),
    (
        "tor_relay_est_intro_total",
        "Total number of EST_INTRO cells we received",
        &[
            ("success", "hs_est_intro_success"),
            ("unsuitable_circuit", "hs_est_intro_unsuitable"),
        ],
    ),
    (
        "tor_relay_intro1_total",
        "Total number of INTRO1 cells we received",
        &[
            ("success", "hs_intro1_success"),
            ("circuit_dead", "hs_intro1_circuit_dead"),
            ("malformed", "hs_intro1_malformed"),
            ("unknown_service", "hs_intro1_unknown_service"),
            ("rate_limited", "hs_intro1_rate_limited"),
            ("circuit_reused", "hs_intro1_circuit_reused"),
            ("single_hop", "hs_intro1_single_hop"),
        ],
    ),
    (
        "tor_relay_rend1_total",
        "Total number of REND1 cells we received",
        &[
            ("success", "hs_rend1_success"),
            ("unsuitable_circuit", "hs_rend1_unsuitable"),
            ("malformed", "hs_rend1_malformed"),
            ("unknown_cookie", "hs_rend1_unknown_cookie"),
            ("circuit_dead", "hs_rend1_circuit_dead"),
        ],
    ),
];

/// C tor's `tor_relay_flag{type}` values (`fill_relay_flags`), with the consensus flag
/// each one reports. C's `Running` is `is_flagged_running`, the consensus flag.
pub const FLAG_TYPES: [(&str, RelayFlags); 9] = [
    ("Fast", RelayFlags::FAST),
    ("Exit", RelayFlags::EXIT),
    ("Authority", RelayFlags::AUTHORITY),
    ("Stable", RelayFlags::STABLE),
    ("HSDir", RelayFlags::HSDIR),
    ("Running", RelayFlags::RUNNING),
    ("V2Dir", RelayFlags::V2DIR),
    ("Sybil", RelayFlags::SYBIL),
    ("Guard", RelayFlags::GUARD),
];

/// Sum over shards of one `CircuitMetrics` field.
fn circuit_sum(reg: &MetricsRegistry, field: &str) -> u64 {
    let Some(i) = CIRCUIT_METRICS.iter().position(|e| e.field == field) else {
        return 0;
    };
    reg.shards().iter().map(|s| s.circuit_values()[i]).sum()
}

/// Sum over shards of one `DnsMetrics` field.
fn dns_sum(reg: &MetricsRegistry, field: &str) -> u64 {
    let Some(i) = DNS_METRICS.iter().position(|e| e.field == field) else {
        return 0;
    };
    reg.shards().iter().map(|s| s.dns_values()[i]).sum()
}

/// Sum over shards of one `ShardMetrics` field.
fn shard_sum(reg: &MetricsRegistry, field: &str) -> u64 {
    let Some(i) = shard_metric_index(field) else {
        return 0;
    };
    reg.shards().iter().map(|s| s.get(i)).sum()
}

/// Sum over shards of one relay-handler counter.
fn handler_sum(
    reg: &MetricsRegistry,
    pick: fn(&super::shard::HandlerCounters) -> &AtomicU64,
) -> u64 {
    reg.shards()
        .iter()
        .map(|s| pick(&s.handler).load(Ordering::Relaxed))
        .sum()
}

/// Renders every C tor family Fors fills (except `tor_relay_dos_total`).
pub(super) fn render(f: &mut Family<'_>, reg: &MetricsRegistry) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);

    // fill_traffic_values: bytes read and written (C `get_bytes_read`/`get_bytes_written`);
    // Fors counts every shard socket (ORPort, outbound OR and exit connections), internal
    // addresses included, which C leaves out unless CountPrivateBandwidth (the same
    // numbers as Fors's GETINFO traffic/* and BW events).
    let (read, written) = reg.total_bytes();
    let name = "tor_relay_traffic_bytes";
    f.header(name, MetricKind::Counter, "Traffic related counters");
    f.value(name, "direction=\"read\"", read);
    f.value(name, "direction=\"written\"", written);

    // fill_circuits_values: circuits open now.
    let name = "tor_relay_circuits_total";
    f.header(name, MetricKind::Gauge, "Total number of circuits");
    f.value(
        name,
        "state=\"opened\"",
        handler_sum(reg, |h| &h.circuits_open),
    );

    // fill_conn_counter_values, OR connections received, by socket family. C notes
    // "created" when an accepted connection is added to the main loop, after the DoS gate,
    // and "rejected" when the DoS gate closes it at accept (only then: a defence type that
    // does not close counts no rejection here, as in C).
    let seen = handler_sum(reg, |h| &h.connections_seen);
    let seen_v6 = handler_sum(reg, |h| &h.connections_seen_ipv6);
    let closed_v4 = handler_sum(reg, |h| &h.connections_dos_closed_ipv4);
    let closed_v6 = handler_sum(reg, |h| &h.connections_dos_closed_ipv6);
    let seen_v4 = seen.saturating_sub(seen_v6);
    // And OR connections we initiated (C `connection_add` of a connection not from a
    // listener: counted when the connect starts, whether or not it succeeds); C has no
    // "initiated"/"rejected" series. C's other connection types (Exit, Dir, …) are left out.
    let (init_v4, init_v6) = crate::relay::ctlevents::initiated();
    let rows = [
        ("initiated", "created", "ipv4", init_v4),
        ("initiated", "created", "ipv6", init_v6),
        (
            "received",
            "created",
            "ipv4",
            seen_v4.saturating_sub(closed_v4),
        ),
        (
            "received",
            "created",
            "ipv6",
            seen_v6.saturating_sub(closed_v6),
        ),
        ("received", "rejected", "ipv4", closed_v4),
        ("received", "rejected", "ipv6", closed_v6),
    ];
    let name = "tor_relay_connections_total";
    f.header(
        name,
        MetricKind::Counter,
        "Total number of created/rejected connections",
    );
    for (direction, state, family, v) in rows {
        let labels =
            format!("type=\"OR\",direction=\"{direction}\",state=\"{state}\",family=\"{family}\"");
        f.value(name, &labels, v);
    }

    // fill_relay_destroy_cell: DESTROY cells received (C stats_n_destroy_cells_processed).
    f.single(
        "tor_relay_destroy_cell_total",
        MetricKind::Counter,
        "Total number of DESTROY cell we received",
        circuit_sum(reg, DESTROYS_RECEIVED),
    );
    // fill_relay_circ_proto_violation: circuits closed for a protocol violation (C counts
    // circuit_mark_for_close with END_CIRC_REASON_TORPROTOCOL).
    f.single(
        "tor_relay_circ_proto_violation_total",
        MetricKind::Counter,
        "Total number of circuit protocol violation",
        circuit_sum(reg, PROTOCOL_CLOSES),
    );

    // fill_cc_counters_values, the flow-control counts (prop 344 XON/XOFF sent by the exit).
    // The other series are moving averages of C's Vegas state, which Fors does not keep.
    let name = "tor_relay_congestion_control_total";
    f.header(
        name,
        MetricKind::Counter,
        "Congestion control related counters",
    );
    f.value(
        name,
        "state=\"flow_control\",action=\"xoff_num_sent\"",
        handler_sum(reg, |h| &h.stream_xoff_sent),
    );
    f.value(
        name,
        "state=\"flow_control\",action=\"xon_num_sent\"",
        handler_sum(reg, |h| &h.stream_xon_sent),
    );

    // fill_global_bw_limit_values: the global (BandwidthRate) bucket found empty (C
    // rep_hist_note_overload(OVERLOAD_READ/WRITE), once per read-limit computation while
    // it is empty); here, once each time a shard's share of it runs dry, summed.
    let name = "tor_relay_load_global_rate_limit_reached_total";
    f.header(
        name,
        MetricKind::Counter,
        "Total number of global connection bucket limit reached",
    );
    for (side, field) in BW_GLOBAL_EMPTY {
        f.value(name, &format!("side=\"{side}\""), shard_sum(reg, field));
    }

    // fill_dns_query_values: queries launched (C notes each evdns request once; its
    // retransmissions happen inside libevent, so Fors's are taken out).
    let [sent, retransmits, found, nxdomain, nodata, truncated, timeouts, _no_id] =
        DNS_FIELDS.map(|field| dns_sum(reg, field));
    f.single(
        "tor_relay_exit_dns_query_total",
        MetricKind::Counter,
        "Total number of DNS queries done by this relay",
        sent.saturating_sub(retransmits),
    );
    // fill_dns_error_values: results by libevent error code, per record type asked. Only
    // the codes Fors tells apart: C's serverfailed/notimpl/refused/format are one counter
    // in Fors (any other RCODE), so none of them is exported.
    let name = "tor_relay_exit_dns_error_total";
    f.header(
        name,
        MetricKind::Counter,
        "Total number of DNS errors encountered by this relay",
    );
    for (reason, v) in [
        ("success", found),
        ("notexist", nxdomain),
        ("nodata", nodata),
        ("truncated", truncated),
        // C's DNS_ERR_TIMEOUT: real timeouts only (giving up for want of a free query id
        // is not one, and has no C code of its own).
        ("tor_timeout", timeouts),
    ] {
        f.value(name, &format!("reason=\"{reason}\""), v);
    }

    // fill_est_rend_cells, fill_est_intro_cells, fill_intro1_cells, fill_rend1_cells.
    for (name, help, actions) in HS_FAMILIES {
        f.header(name, MetricKind::Counter, help);
        for (action, field) in actions {
            f.value(
                name,
                &format!("action=\"{action}\""),
                circuit_sum(reg, field),
            );
        }
    }

    // fill_relay_flags: our consensus flags (all 0 when not listed, as C).
    let flags = RelayFlags(g(&reg.relay.consensus_flags) as u16);
    let name = "tor_relay_flag";
    f.header(name, MetricKind::Gauge, "Relay flags from consensus");
    for (t, flag) in FLAG_TYPES {
        f.value(
            name,
            &format!("type=\"{t}\""),
            u64::from(flags.contains(flag)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::dns::DnsMetrics;
    use crate::proto::circuit::CircuitMetrics;
    use crate::shard::ShardMetrics;
    use std::time::Instant;

    #[test]
    fn every_field_read_here_exists() {
        let hs = HS_FAMILIES
            .iter()
            .flat_map(|(_, _, a)| a.iter().map(|(_, f)| *f));
        for field in [DESTROYS_RECEIVED, PROTOCOL_CLOSES].into_iter().chain(hs) {
            assert!(CIRCUIT_METRICS.iter().any(|e| e.field == field), "{field}");
        }
        for field in DNS_FIELDS {
            assert!(DNS_METRICS.iter().any(|e| e.field == field), "{field}");
        }
        for (_, field) in BW_GLOBAL_EMPTY {
            assert!(shard_metric_index(field).is_some(), "{field}");
        }
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    /// The value of the series `prefix` in `text`.
    fn value_of(text: &str, prefix: &str) -> u64 {
        let l = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// (The family is rendered by the registry; tested here beside the ORCONN counters.)
    #[test]
    fn orconn_losses_are_two_series() {
        let reg = MetricsRegistry::new(1, Instant::now());
        reg.relay
            .controlport_orconn_events_dropped
            .store(5, Ordering::Relaxed);
        reg.relay
            .controlport_orconn_untracked
            .store(2, Ordering::Relaxed);
        let text = reg.render(Instant::now());
        assert!(
            has(
                &text,
                "fors_controlport_orconn_lost_total{what=\"event\"} 5"
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                "fors_controlport_orconn_lost_total{what=\"connection\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("orconn_events_dropped_total"));
    }

    #[test]
    fn initiated_or_connections_are_counted_by_family() {
        // The counters are process-wide (other tests launch connections too): compare
        // against what was counted before, by at least what this test adds.
        let reg = MetricsRegistry::new(1, Instant::now());
        let v4 = "tor_relay_connections_total{type=\"OR\",direction=\"initiated\",state=\"created\",family=\"ipv4\"} ";
        let v6 = "tor_relay_connections_total{type=\"OR\",direction=\"initiated\",state=\"created\",family=\"ipv6\"} ";
        let text = reg.render(Instant::now());
        let (b4, b6) = (value_of(&text, v4), value_of(&text, v6));
        // (`ctlevents::launched` counts through this; its own test checks that.)
        for a in ["192.0.2.1:9001", "192.0.2.2:443", "[2001:db8::1]:9001"] {
            crate::relay::ctlevents::count_initiated(a.parse().unwrap());
        }
        let text = reg.render(Instant::now());
        assert!(value_of(&text, v4) >= b4 + 2, "{text}");
        assert!(value_of(&text, v6) > b6, "{text}");
        // C tor exports no initiated+rejected series.
        assert!(!text.contains("direction=\"initiated\",state=\"rejected\""));
    }

    #[test]
    fn c_tor_families_are_relay_wide_sums_with_c_labels() {
        let t0 = Instant::now();
        let reg = MetricsRegistry::new(2, t0);
        for (i, s) in reg.shards().iter().enumerate() {
            let k = i as u64 + 1; // shard 0 counts 1, shard 1 counts 2
            s.store(&ShardMetrics {
                recv_bytes: 100 * k,
                send_bytes: 1000 * k,
                bw_global_read_empty: 3 * k,
                bw_global_write_empty: 5 * k,
                ..ShardMetrics::default()
            });
            s.store_circuit(&CircuitMetrics {
                destroys_received: 7 * k,
                protocol_closes: k,
                hs_intro1_success: 2 * k,
                hs_rend1_unknown_cookie: k,
                hs_est_rend_success: 5 * k,
                ..CircuitMetrics::default()
            });
            s.store_dns(&DnsMetrics {
                queries_sent: 10 * k,
                retransmits: k,
                answers_found: 6 * k,
                failed_nxdomain: 2 * k,
                failed_servfail: 9,
                timeouts: k,
                id_exhausted: 1,
                ..DnsMetrics::default()
            });
            s.handler.circuits_open.store(4 * k, Ordering::Relaxed);
            s.handler.connections_seen.store(20 * k, Ordering::Relaxed);
            s.handler
                .connections_seen_ipv6
                .store(6 * k, Ordering::Relaxed);
            s.handler
                .connections_dos_closed_ipv4
                .store(k, Ordering::Relaxed);
            s.handler
                .connections_dos_closed_ipv6
                .store(2 * k, Ordering::Relaxed);
            s.handler.stream_xoff_sent.store(k, Ordering::Relaxed);
            s.handler.stream_xon_sent.store(2 * k, Ordering::Relaxed);
        }
        reg.dos
            .conn_connect_rejected
            .fetch_add(4, Ordering::Relaxed);
        reg.dos
            .conn_concurrent_rejected
            .fetch_add(1, Ordering::Relaxed);
        let mut f = RelayFlags::default();
        f.insert(RelayFlags::RUNNING);
        f.insert(RelayFlags::GUARD);
        f.insert(RelayFlags::VALID);
        reg.relay
            .consensus_flags
            .store(u64::from(f.0), Ordering::Relaxed);
        let text = reg.render(t0);
        for line in [
            "# TYPE tor_relay_traffic_bytes counter",
            "tor_relay_traffic_bytes{direction=\"read\"} 300",
            "tor_relay_traffic_bytes{direction=\"written\"} 3000",
            "# TYPE tor_relay_circuits_total gauge",
            "tor_relay_circuits_total{state=\"opened\"} 12",
            // IPv4: 60 - 18 seen, 3 closed; IPv6: 18 seen, 6 closed.
            "tor_relay_connections_total{type=\"OR\",direction=\"received\",state=\"created\",family=\"ipv4\"} 39",
            "tor_relay_connections_total{type=\"OR\",direction=\"received\",state=\"created\",family=\"ipv6\"} 12",
            "tor_relay_connections_total{type=\"OR\",direction=\"received\",state=\"rejected\",family=\"ipv4\"} 3",
            "tor_relay_connections_total{type=\"OR\",direction=\"received\",state=\"rejected\",family=\"ipv6\"} 6",
            "tor_relay_destroy_cell_total 21",
            "# TYPE tor_relay_intro1_total counter",
            "tor_relay_intro1_total{action=\"success\"} 6",
            "tor_relay_intro1_total{action=\"rate_limited\"} 0",
            "tor_relay_rend1_total{action=\"unknown_cookie\"} 3",
            "tor_relay_est_rend_total{action=\"success\"} 15",
            "tor_relay_est_intro_total{action=\"unsuitable_circuit\"} 0",
            "tor_relay_circ_proto_violation_total 3",
            "tor_relay_congestion_control_total{state=\"flow_control\",action=\"xoff_num_sent\"} 3",
            "tor_relay_congestion_control_total{state=\"flow_control\",action=\"xon_num_sent\"} 6",
            "tor_relay_load_global_rate_limit_reached_total{side=\"read\"} 9",
            "tor_relay_load_global_rate_limit_reached_total{side=\"write\"} 15",
            "tor_relay_exit_dns_query_total 27",
            "tor_relay_exit_dns_error_total{reason=\"success\"} 18",
            "tor_relay_exit_dns_error_total{reason=\"notexist\"} 6",
            "tor_relay_exit_dns_error_total{reason=\"nodata\"} 0",
            "tor_relay_exit_dns_error_total{reason=\"tor_timeout\"} 3",
            "tor_relay_flag{type=\"Running\"} 1",
            "tor_relay_flag{type=\"Guard\"} 1",
            "tor_relay_flag{type=\"Exit\"} 0",
            "tor_relay_flag{type=\"Fast\"} 0",
        ] {
            assert!(has(&text, line), "missing {line:?}");
        }
        // Fors lumps every other RCODE together: no C reason is claimed for them.
        assert!(!text.contains("reason=\"serverfailed\""));
        // No shard label on C tor's families: they are relay-wide, as in C tor.
        for l in text.lines().filter(|l| l.starts_with("tor_")) {
            assert!(!l.contains("shard="), "{l}");
        }
    }
}
