//! Everything the MetricsPort exports, and its Prometheus text rendering
//! (Prometheus "text-based exposition format" 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::core_counters::{ExportedMetric, CIRCUIT_METRICS, DNS_METRICS};
use super::histogram::ShardLatency;
use super::shard::{MetricKind, ShardStats, SHARD_METRIC_KINDS, SHARD_METRIC_NAMES};
use crate::dos::DosCounters;
use crate::proto::circuit::metrics::END_REASON_LABELS;
use crate::shard::ratelimit::POOL_LABELS;
use crate::shard::SharedBudget;

/// Relay-wide values kept by the control plane.
#[derive(Debug, Default)]
pub struct RelayGauges {
    /// Observed bandwidth as the descriptor would publish it (bytes/s).
    pub observed_bandwidth: AtomicU64,
    /// Bytes read / written over all shards (sum of the shards' socket counters).
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    /// Configuration reloads (SIGHUP) that were applied / refused.
    pub reloads_applied: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Key maintenance runs that changed keys / failed.
    pub key_changes: AtomicU64,
    pub key_maintenance_failures: AtomicU64,
    /// Descriptor uploads the authorities accepted / refused or that failed.
    pub descriptor_uploads_accepted: AtomicU64,
    pub descriptor_uploads_failed: AtomicU64,
    /// Consensus fetches that succeeded / failed.
    pub consensus_fetches_ok: AtomicU64,
    pub consensus_fetches_failed: AtomicU64,
    /// 1 when the latest consensus lists us.
    pub listed_in_consensus: AtomicU64,
    /// MetricsPort connections held now; connections closed to make room (they had not
    /// sent their request), turned away with 503 (every slot answering), timed out.
    pub metricsport_connections: AtomicU64,
    pub metricsport_evicted: AtomicU64,
    pub metricsport_refused: AtomicU64,
    pub metricsport_timeouts: AtomicU64,
    /// ControlPort connections held now; unauthenticated ones closed to make room; ones
    /// refused because every slot held an authenticated controller.
    pub controlport_connections: AtomicU64,
    pub controlport_evicted: AtomicU64,
    pub controlport_refused: AtomicU64,
    /// ORCONN facts the shards' queue dropped (full), and connections the ControlPort's
    /// `orconn-status` table could not track (full) — `fors_controlport_orconn_lost_total`.
    pub controlport_orconn_events_dropped: AtomicU64,
    pub controlport_orconn_untracked: AtomicU64,
    /// Our flags in the latest consensus (`RelayFlags` bits; 0 when not listed), for C
    /// tor's `tor_relay_flag`.
    pub consensus_flags: AtomicU64,
}

/// The MetricsPort's view of the relay.
#[derive(Debug)]
pub struct MetricsRegistry {
    started: Instant,
    shards: Vec<Arc<ShardStats>>,
    /// Each shard's latency histograms (exported once something records into them).
    latency: Vec<Arc<ShardLatency>>,
    pub relay: RelayGauges,
    /// The DoS defences' counters, shared with the DoS table.
    pub dos: Arc<DosCounters>,
    /// The bandwidth buckets the shards draw from, if the relay set them up.
    bandwidth: Option<Arc<SharedBudget>>,
    /// The directory cache's store, with `DirCache 1` (its counters are exported).
    dircache: std::sync::OnceLock<crate::dircache::SharedStore>,
    dir_server: std::sync::OnceLock<Arc<crate::relay::dirserver::DirServerStats>>,
}

/// Writes families into the exposition text.
pub(super) struct Family<'a> {
    pub(super) out: &'a mut String,
}

impl Family<'_> {
    pub(super) fn header(&mut self, name: &str, kind: MetricKind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }
    pub(super) fn value(&mut self, name: &str, labels: &str, v: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {v}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {v}");
        }
    }
    pub(super) fn single(&mut self, name: &str, kind: MetricKind, help: &str, v: u64) {
        self.header(name, kind, help);
        self.value(name, "", v);
    }

    /// One series per shard for each entry of `table` (values from `per_shard`, in table
    /// order); entries sharing a name form one family told apart by their extra labels.
    fn table<const N: usize>(&mut self, table: &[ExportedMetric], per_shard: &[[u64; N]]) {
        let mut prev = "";
        for (i, e) in table.iter().enumerate() {
            if e.name != prev {
                self.header(e.name, e.kind, e.help);
                prev = e.name;
            }
            for (s, values) in per_shard.iter().enumerate() {
                self.value(e.name, &shard_labels(s, e.extra), values[i]);
            }
        }
    }

    /// Relay-wide sums of the entries marked `sum`, as `fors_relay_all_shards_*`.
    fn sums<const N: usize>(&mut self, table: &[ExportedMetric], per_shard: &[[u64; N]]) {
        let mut prev = "";
        for (i, e) in table.iter().enumerate().filter(|(_, e)| e.sum) {
            let name = all_shards_name(e.name);
            if e.name != prev {
                let help = format!("{} Sum over all shards.", e.help);
                self.header(&name, e.kind, &help);
                prev = e.name;
            }
            let total = per_shard.iter().map(|v| v[i]).sum();
            self.value(&name, e.extra, total);
        }
    }
}

/// `shard="N"`, followed by `extra` labels if any.
fn shard_labels(shard: usize, extra: &str) -> String {
    if extra.is_empty() {
        format!("shard=\"{shard}\"")
    } else {
        format!("shard=\"{shard}\",{extra}")
    }
}

/// The relay-wide name of a per-shard family: `fors_relay_x` → `fors_relay_all_shards_x`.
fn all_shards_name(name: &str) -> String {
    format!(
        "fors_relay_all_shards_{}",
        name.strip_prefix("fors_relay_").unwrap_or(name)
    )
}

const END_SENT: &str = "fors_relay_stream_end_sent_total";

impl MetricsRegistry {
    /// A registry for `shards` shards, each with fresh counters.
    pub fn new(shards: usize, started: Instant) -> MetricsRegistry {
        MetricsRegistry {
            started,
            shards: (0..shards)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            latency: (0..shards)
                .map(|_| Arc::new(ShardLatency::default()))
                .collect(),
            relay: RelayGauges::default(),
            dos: Arc::new(DosCounters::default()),
            bandwidth: None,
            dircache: std::sync::OnceLock::new(),
            dir_server: std::sync::OnceLock::new(),
        }
    }

    /// Exports the directory cache's counters (set once, when the mirror starts).
    pub fn set_dircache(&self, store: crate::dircache::SharedStore) {
        let _ = self.dircache.set(store);
    }

    /// Exports the directory server's and its HSDir cache's counters (set once, when the
    /// server starts).
    pub fn set_dir_server(&self, stats: Arc<crate::relay::dirserver::DirServerStats>) {
        let _ = self.dir_server.set(stats);
    }

    /// Exports the bandwidth buckets' state too.
    pub fn with_bandwidth(mut self, budget: Arc<SharedBudget>) -> MetricsRegistry {
        self.bandwidth = Some(budget);
        self
    }

    /// The stats slot a shard writes to.
    pub fn shard(&self, index: usize) -> Option<&Arc<ShardStats>> {
        self.shards.get(index)
    }

    /// The latency histograms a shard records into.
    pub fn latency(&self, index: usize) -> Option<&Arc<ShardLatency>> {
        self.latency.get(index)
    }

    pub fn shards(&self) -> &[Arc<ShardStats>] {
        &self.shards
    }

    /// Bytes (read, written) over all shards.
    pub fn total_bytes(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(r, w), s| {
            let (sr, sw) = s.bytes();
            (r + sr, w + sw)
        })
    }

    /// The whole exposition text.
    pub fn render(&self, now: Instant) -> String {
        let mut out = String::with_capacity(8192 + 4096 * self.shards.len());
        let mut f = Family { out: &mut out };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            f.out,
            "# HELP fors_build_info Fors version.\n# TYPE fors_build_info gauge\n\
             fors_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        f.single(
            "fors_relay_uptime_seconds",
            MetricKind::Gauge,
            "Seconds since the relay started.",
            now.saturating_duration_since(self.started).as_secs(),
        );
        f.single(
            "fors_relay_shards",
            MetricKind::Gauge,
            "Number of shards (data-path threads).",
            self.shards.len() as u64,
        );

        // Per-shard handler counters, then their sums where a relay-wide number is natural.
        type Pick = fn(&ShardStats) -> &AtomicU64;
        let handler: [(&str, MetricKind, &str, Pick); 39] = [
            (
                "fors_relay_connections_seen_total",
                MetricKind::Counter,
                "ORPort connections given to the relay handler.",
                |s| &s.handler.connections_seen,
            ),
            (
                "fors_relay_connections_closed_unserved_total",
                MetricKind::Counter,
                "Connections closed at once because no channel could be started for them.",
                |s| &s.handler.connections_closed_unserved,
            ),
            (
                "fors_relay_channels_open",
                MetricKind::Gauge,
                "Open channels (TLS links past the link handshake).",
                |s| &s.handler.channels_open,
            ),
            (
                "fors_relay_circuits_open",
                MetricKind::Gauge,
                "Open circuits.",
                |s| &s.handler.circuits_open,
            ),
            (
                "fors_relay_circuits_created_total",
                MetricKind::Counter,
                "Circuits whose CREATE handshake completed here.",
                |s| &s.handler.circuits_created,
            ),
            (
                "fors_relay_circuits_cc_total",
                MetricKind::Counter,
                "Circuits that negotiated congestion control (prop 324) in ntor-v3.",
                |s| &s.handler.circuits_cc,
            ),
            (
                "fors_relay_stream_xoff_sent_total",
                MetricKind::Counter,
                "Stream XOFF cells sent (exit buffer toward a destination full).",
                |s| &s.handler.stream_xoff_sent,
            ),
            (
                "fors_relay_stream_xon_sent_total",
                MetricKind::Counter,
                "Stream XON cells sent (exit buffer drained, or a new drain-rate advice).",
                |s| &s.handler.stream_xon_sent,
            ),
            (
                "fors_relay_cells_forwarded_total",
                MetricKind::Counter,
                "Relay cells passed on away from the client.",
                |s| &s.handler.cells_forwarded,
            ),
            (
                "fors_relay_cells_backward_total",
                MetricKind::Counter,
                "Relay cells passed on toward the client.",
                |s| &s.handler.cells_backward,
            ),
            (
                "fors_relay_cells_dropped_channel_full_total",
                MetricKind::Counter,
                "Cells dropped because their channel's output queue was full.",
                |s| &s.handler.cells_dropped,
            ),
            (
                "fors_relay_exit_streams_open",
                MetricKind::Gauge,
                "Open exit streams.",
                |s| &s.handler.exit_streams,
            ),
            (
                "fors_relay_snapshots_taken_total",
                MetricKind::Counter,
                "Control-plane snapshots (consensus, onion keys) picked up by the shard.",
                |s| &s.handler.snapshots_taken,
            ),
            (
                "fors_relay_cross_shard_circuits_open",
                MetricKind::Gauge,
                "Circuits of this shard whose next-hop channel lives on another shard.",
                |s| &s.handler.cross_circuits_open,
            ),
            (
                "fors_relay_cross_shard_circuits_carried",
                MetricKind::Gauge,
                "Other shards' circuits whose next-hop channel lives on this shard.",
                |s| &s.handler.cross_circuits_carried,
            ),
            (
                "fors_relay_cross_shard_circuits_total",
                MetricKind::Counter,
                "Circuits this shard extended for another shard.",
                |s| &s.handler.cross_circuits_total,
            ),
            (
                "fors_relay_cross_shard_extends_sent_total",
                MetricKind::Counter,
                "Extends handed to the shard that owns the next relay's identity.",
                |s| &s.handler.cross_extends_sent,
            ),
            (
                "fors_relay_cross_shard_cells_sent_total",
                MetricKind::Counter,
                "Relay cells sent to other shards.",
                |s| &s.handler.cross_cells_sent,
            ),
            (
                "fors_relay_cross_shard_cells_received_total",
                MetricKind::Counter,
                "Relay cells received from other shards.",
                |s| &s.handler.cross_cells_received,
            ),
            (
                "fors_relay_cross_shard_queue_full_total",
                MetricKind::Counter,
                "Times a queue toward another shard was full.",
                |s| &s.handler.cross_queue_full,
            ),
            (
                "fors_relay_cross_shard_overflow_depth",
                MetricKind::Gauge,
                "Messages waiting in the overflows toward other shards.",
                |s| &s.handler.cross_overflow_depth,
            ),
            (
                "fors_relay_cross_shard_overflow_kills_total",
                MetricKind::Counter,
                "Circuits closed because an overflow toward another shard was at its bound.",
                |s| &s.handler.cross_overflow_kills,
            ),
            (
                "fors_relay_cross_shard_requests_refused_total",
                MetricKind::Counter,
                "Extends and stray circuit cells refused at an overflow's request cap toward another shard.",
                |s| &s.handler.cross_requests_refused,
            ),
            (
                "fors_relay_cross_shard_notices_collapsed_total",
                MetricKind::Counter,
                "Channel blocked/unblocked notices and conflux leg states folded into one waiting toward another shard.",
                |s| &s.handler.cross_notices_collapsed,
            ),
            (
                "fors_relay_channel_buffer_bytes_released_total",
                MetricKind::Counter,
                "Bytes of channel buffer room given back after a burst (buffers grow with use).",
                |s| &s.handler.channel_buffer_bytes_released,
            ),
            (
                "fors_relay_channels_tls_record_layer_total",
                MetricKind::Counter,
                "Channels switched to Fors's own TLS 1.3 record layer after their link handshake.",
                |s| &s.handler.channels_tls_record_layer,
            ),
            (
                "fors_relay_channels_tls12_rustls_total",
                MetricKind::Counter,
                "Open channels left on rustls because the link negotiated TLS 1.2.",
                |s| &s.handler.channels_tls_rustls_tls12,
            ),
            (
                "fors_relay_channels_tls_handover_refused_total",
                MetricKind::Counter,
                "Open TLS 1.3 channels left on rustls because the record layer refused the handover.",
                |s| &s.handler.channels_tls_rustls_refused,
            ),
            (
                "fors_relay_tls_records_split_total",
                MetricKind::Counter,
                "TLS records opened where they lie behind a header that ended the read before (reads end after the next record's header).",
                |s| &s.handler.tls_records_split,
            ),
            (
                "fors_relay_tls_records_gathered_total",
                MetricKind::Counter,
                "TLS records split across reads and copied whole into the channel's record buffer before opening.",
                |s| &s.handler.tls_records_gathered,
            ),
            (
                "fors_relay_tls_record_bytes_gathered_total",
                MetricKind::Counter,
                "Bytes of those records copied to be whole (per byte read on TLS 1.3 channels: the copies per cell gathers add).",
                |s| &s.handler.tls_record_bytes_gathered,
            ),
            (
                "fors_relay_tls_read_hint_pauses_total",
                MetricKind::Counter,
                "Times a channel stopped asking for reads that end on a record boundary for a while, because most such reads still cut a record.",
                |s| &s.handler.tls_read_hint_pauses,
            ),
            (
                "fors_relay_cross_shard_uncharged_over_cap_total",
                MetricKind::Counter,
                "Answers and teardowns held past an overflow's uncharged cap toward another shard.",
                |s| &s.handler.cross_uncharged_over_cap,
            ),
            (
                "fors_relay_dns_send_errors_total",
                MetricKind::Counter,
                "DNS queries the resolver socket refused to send (retried on timeout).",
                |s| &s.handler.dns_send_errors,
            ),
            (
                "fors_relay_padding_cells_sent_total",
                MetricKind::Counter,
                "PADDING cells sent on idle channels (netflow padding, padding-spec 2).",
                |s| &s.handler.padding_cells_sent,
            ),
            (
                "fors_relay_padding_negotiate_start_total",
                MetricKind::Counter,
                "PADDING_NEGOTIATE START cells received.",
                |s| &s.handler.padding_negotiate_start,
            ),
            (
                "fors_relay_padding_negotiate_stop_total",
                MetricKind::Counter,
                "PADDING_NEGOTIATE STOP cells received.",
                |s| &s.handler.padding_negotiate_stop,
            ),
            (
                "fors_relay_keepalive_cells_sent_total",
                MetricKind::Counter,
                "PADDING cells sent on channels with nothing written for KeepalivePeriod.",
                |s| &s.handler.keepalive_cells_sent,
            ),
            (
                "fors_relay_channels_closed_stuck_total",
                MetricKind::Counter,
                "Channels closed after ten KeepalivePeriods with output waiting and nothing written.",
                |s| &s.handler.channels_closed_stuck,
            ),
        ];
        for (name, kind, help, pick) in handler {
            f.header(name, kind, help);
            for (i, s) in self.shards.iter().enumerate() {
                f.value(name, &format!("shard=\"{i}\""), g(pick(s)));
            }
        }

        // The circuit core's and the exit resolver's counters (`core_counters`), END cells
        // by reason, then the relay-wide sums of those.
        let circuit: Vec<_> = self.shards.iter().map(|s| s.circuit_values()).collect();
        let ends: Vec<_> = self.shards.iter().map(|s| s.ends_sent()).collect();
        let dns: Vec<_> = self.shards.iter().map(|s| s.dns_values()).collect();
        f.table(CIRCUIT_METRICS, &circuit);
        f.header(
            END_SENT,
            MetricKind::Counter,
            "RELAY_END cells sent, by reason (\"other\": codes outside tor-spec 6.3's list).",
        );
        for (s, by_reason) in ends.iter().enumerate() {
            for (label, v) in END_REASON_LABELS.iter().zip(by_reason) {
                let labels = shard_labels(s, &format!("reason=\"{label}\""));
                f.value(END_SENT, &labels, *v);
            }
        }
        f.table(DNS_METRICS, &dns);
        f.sums(CIRCUIT_METRICS, &circuit);
        let end_sum = all_shards_name(END_SENT);
        f.header(
            &end_sum,
            MetricKind::Counter,
            "RELAY_END cells sent, by reason. Sum over all shards.",
        );
        for (r, label) in END_REASON_LABELS.iter().enumerate() {
            let total = ends.iter().map(|v| v[r]).sum();
            f.value(&end_sum, &format!("reason=\"{label}\""), total);
        }
        f.sums(DNS_METRICS, &dns);

        let (read, written) = self.total_bytes();
        f.single(
            "fors_relay_read_bytes_total",
            MetricKind::Counter,
            "Bytes received on ORPort and outbound sockets, all shards.",
            read,
        );
        f.single(
            "fors_relay_written_bytes_total",
            MetricKind::Counter,
            "Bytes sent on ORPort and outbound sockets, all shards.",
            written,
        );
        let r = &self.relay;
        let relay: [(&str, MetricKind, &str, &AtomicU64); 17] = [
            (
                "fors_relay_observed_bandwidth_bytes",
                MetricKind::Gauge,
                "Observed bandwidth for the descriptor: min of the best 10-second read and write rates, bytes/s.",
                &r.observed_bandwidth,
            ),
            ("fors_relay_reloads_applied_total", MetricKind::Counter, "Configuration reloads applied.", &r.reloads_applied),
            ("fors_relay_reloads_failed_total", MetricKind::Counter, "Configuration reloads refused (bad configuration).", &r.reloads_failed),
            ("fors_relay_key_changes_total", MetricKind::Counter, "Key maintenance runs that renewed or rotated keys.", &r.key_changes),
            ("fors_relay_key_maintenance_failures_total", MetricKind::Counter, "Key maintenance runs that failed.", &r.key_maintenance_failures),
            ("fors_relay_descriptor_uploads_accepted_total", MetricKind::Counter, "Descriptor uploads an authority accepted.", &r.descriptor_uploads_accepted),
            ("fors_relay_descriptor_uploads_failed_total", MetricKind::Counter, "Descriptor uploads refused or failed.", &r.descriptor_uploads_failed),
            ("fors_relay_consensus_fetches_ok_total", MetricKind::Counter, "Consensus documents fetched and verified.", &r.consensus_fetches_ok),
            ("fors_relay_consensus_fetches_failed_total", MetricKind::Counter, "Consensus fetches that failed.", &r.consensus_fetches_failed),
            ("fors_relay_listed_in_consensus", MetricKind::Gauge, "1 if the latest consensus lists this relay.", &r.listed_in_consensus),
            ("fors_metricsport_connections", MetricKind::Gauge, "MetricsPort connections held now.", &r.metricsport_connections),
            ("fors_metricsport_evicted_total", MetricKind::Counter, "MetricsPort connections closed to make room: the table was full and they had not sent their request.", &r.metricsport_evicted),
            ("fors_metricsport_refused_total", MetricKind::Counter, "MetricsPort connections answered 503: every slot was answering a request.", &r.metricsport_refused),
            ("fors_metricsport_timeouts_total", MetricKind::Counter, "MetricsPort connections closed because a request or answer took longer than 5 s.", &r.metricsport_timeouts),
            ("fors_controlport_connections", MetricKind::Gauge, "ControlPort connections held now.", &r.controlport_connections),
            ("fors_controlport_evicted_total", MetricKind::Counter, "Unauthenticated ControlPort connections closed to make room for a new one.", &r.controlport_evicted),
            ("fors_controlport_refused_total", MetricKind::Counter, "ControlPort connections refused: every slot held an authenticated controller.", &r.controlport_refused),
        ];
        for (name, kind, help, v) in relay {
            f.single(name, kind, help, g(v));
        }
        let name = "fors_controlport_orconn_lost_total";
        f.header(name, MetricKind::Counter, "ORCONN bookkeeping lost: what=\"event\" counts facts the shards' queue dropped when full (events never sent; orconn-status heals at the next resync), what=\"connection\" counts connections orconn-status could not list because its table held 65536.");
        f.value(
            name,
            "what=\"event\"",
            g(&r.controlport_orconn_events_dropped),
        );
        f.value(
            name,
            "what=\"connection\"",
            g(&r.controlport_orconn_untracked),
        );
        render_dos(&mut f, &self.dos);
        super::ctor::render(&mut f, self);
        if let Some(b) = &self.bandwidth {
            render_bandwidth(&mut f, b, &self.shards);
        }
        if let Some(store) = self.dircache.get() {
            let stats = store.read().unwrap_or_else(|p| p.into_inner()).stats();
            render_dircache(&mut f, &stats);
        }
        if let Some(s) = self.dir_server.get() {
            render_dir_server(&mut f, s);
        }

        let per_shard: Vec<[u64; super::shard::SHARD_METRIC_COUNT]> =
            self.shards.iter().map(|s| s.values()).collect();
        for (i, (field, kind)) in SHARD_METRIC_NAMES
            .iter()
            .zip(SHARD_METRIC_KINDS)
            .enumerate()
        {
            let name = format!("fors_shard_{field}");
            f.header(
                &name,
                *kind,
                &format!("Shard runtime counter {field} (see ShardMetrics)."),
            );
            for (s, values) in per_shard.iter().enumerate() {
                f.value(&name, &format!("shard=\"{s}\""), values[i]);
            }
        }
        let latency: Vec<&ShardLatency> = self.latency.iter().map(|l| &**l).collect();
        super::histogram::render(f.out, &latency);
        render_shard_cpu(&mut f, &super::cpu::own_shard_cpu_ns(), self.shards.len());
        out
    }
}

/// Each shard thread's CPU time, `(shard, nanoseconds)` from [`super::cpu`]; nothing when
/// procfs cannot tell.
fn render_shard_cpu(f: &mut Family<'_>, cpu: &[(usize, u64)], shards: usize) {
    let name = "fors_shard_cpu_seconds_total";
    let mut rows = cpu.iter().filter(|(s, _)| *s < shards).peekable();
    if rows.peek().is_none() {
        return;
    }
    f.header(
        name,
        MetricKind::Counter,
        "CPU time the shard's thread has run (user and system), seconds.",
    );
    for (s, ns) in rows {
        let _ = writeln!(
            f.out,
            "{name}{{shard=\"{s}\"}} {}.{:09}",
            ns / 1_000_000_000,
            ns % 1_000_000_000
        );
    }
}

/// The token buckets of BandwidthRate/Burst ("global") and RelayBandwidthRate/Burst
/// ("relayed"): limits in force, tokens left in the shared budget, and how often a shard
/// found a bucket empty (summed over shards; per shard in `fors_shard_bw_*`).
fn render_bandwidth(f: &mut Family<'_>, b: &SharedBudget, shards: &[Arc<ShardStats>]) {
    let r = b.rates();
    let (relay_rate, relay_burst) = if r.relay_rate == 0 {
        (r.rate, r.burst)
    } else {
        (r.relay_rate, r.relay_burst)
    };
    for (name, help, g, rl) in [
        (
            "fors_relay_bandwidth_rate_bytes",
            "Token bucket rate in force, bytes/s each way (relayed: RelayBandwidthRate, or BandwidthRate when 0).",
            r.rate,
            relay_rate,
        ),
        (
            "fors_relay_bandwidth_burst_bytes",
            "Token bucket size in force, bytes each way.",
            r.burst,
            relay_burst,
        ),
    ] {
        f.header(name, MetricKind::Gauge, help);
        f.value(name, "bucket=\"global\"", g);
        f.value(name, "bucket=\"relayed\"", rl);
    }
    let tokens = b.tokens();
    let name = "fors_relay_bandwidth_shared_tokens";
    f.header(
        name,
        MetricKind::Gauge,
        "Tokens left in the budget shared by the shards (not yet taken into a shard's bucket).",
    );
    for ((bucket, dir), t) in POOL_LABELS.iter().zip(tokens) {
        let labels = format!("bucket=\"{bucket}\",direction=\"{dir}\"");
        f.value(name, &labels, t.max(0) as u64);
    }
    let name = "fors_relay_bandwidth_empty_total";
    f.header(
        name,
        MetricKind::Counter,
        "Times a shard's bucket ran dry and it paused reading or writing until the next refill.",
    );
    for (bucket, dir) in POOL_LABELS {
        let field = format!("bw_{bucket}_{dir}_empty");
        let idx = super::shard::shard_metric_index(&field);
        let total: u64 = shards.iter().map(|s| idx.map_or(0, |i| s.get(i))).sum();
        let labels = format!("bucket=\"{bucket}\",direction=\"{dir}\"");
        f.value(name, &labels, total);
    }
}

/// The directory server (requests by kind, answers by status class, bytes, connections)
/// and its HSDir cache. No URL, key or address: only counts (SafeLogging).
fn render_dir_server(f: &mut Family<'_>, s: &crate::relay::dirserver::DirServerStats) {
    use crate::dircache::hsdir::cache::REJECT_REASONS;
    use crate::dircache::serve::Kind;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let name = "fors_dirserver_requests_total";
    f.header(
        name,
        MetricKind::Counter,
        "Directory requests answered, by kind.",
    );
    for (i, k) in Kind::ALL.iter().enumerate() {
        f.value(name, &format!("kind=\"{}\"", k.label()), g(&s.requests[i]));
    }
    let name = "fors_dirserver_responses_total";
    f.header(
        name,
        MetricKind::Counter,
        "Directory answers by HTTP status class.",
    );
    for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        f.value(name, &format!("status=\"{class}\""), g(&s.status[i]));
    }
    let name = "fors_dirserver_answers_by_encoding_total";
    f.header(
        name,
        MetricKind::Counter,
        "Successful directory answers by Content-Encoding (identity, deflate, gzip, x-zstd, x-tor-lzma).",
    );
    for (i, m) in crate::dircache::compress::Method::ALL.iter().enumerate() {
        f.value(
            name,
            &format!("encoding=\"{}\"", m.name()),
            g(&s.encodings[i]),
        );
    }
    for (name, mk, help, v) in [
        (
            "fors_dirserver_written_bytes_total",
            MetricKind::Counter,
            "Bytes of directory answers written.",
            &s.bytes_written,
        ),
        (
            "fors_dirserver_evicted_total",
            MetricKind::Counter,
            "Connections still sending their request closed to admit a new one (server full).",
            &s.evicted,
        ),
        (
            "fors_dirserver_timeouts_total",
            MetricKind::Counter,
            "Connections closed because a request or an answer took too long.",
            &s.timeouts,
        ),
        (
            "fors_dirserver_closed_bad_total",
            MetricKind::Counter,
            "Requests closed without an answer (oversized, unknown command), as C tor.",
            &s.closed_bad,
        ),
        (
            "fors_dirserver_connections",
            MetricKind::Gauge,
            "Open directory connections (DirPort and BEGIN_DIR).",
            &s.connections,
        ),
        (
            "fors_hsdir_descriptors",
            MetricKind::Gauge,
            "Onion-service descriptors the HSDir cache holds.",
            &s.hsdir_entries,
        ),
        (
            "fors_hsdir_bytes",
            MetricKind::Gauge,
            "Bytes accounted to the HSDir cache (the quantity MaxHSDirCacheBytes bounds).",
            &s.hsdir_bytes,
        ),
    ] {
        f.single(name, mk, help, g(v));
    }
    let c = s.hsdir.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let name = "fors_hsdir_rejected_total";
    f.header(
        name,
        MetricKind::Counter,
        "Onion-service descriptor uploads refused, by reason.",
    );
    for (i, r) in REJECT_REASONS.iter().enumerate() {
        f.value(name, &format!("reason=\"{r}\""), c.rejected[i]);
    }
    f.value(name, "reason=\"single_hop\"", c.single_hop_rejected);
    let name = "fors_hsdir_fetches_total";
    f.header(
        name,
        MetricKind::Counter,
        "Onion-service descriptor fetches, by result (single-hop refusals are counted under \
         fors_hsdir_rejected_total).",
    );
    f.value(name, "result=\"hit\"", c.fetch_hit);
    f.value(name, "result=\"miss\"", c.fetch_miss);
    for (name, help, v) in [
        (
            "fors_hsdir_stored_total",
            "Onion-service descriptors stored (new, or a newer revision).",
            c.stored,
        ),
        (
            "fors_hsdir_expired_total",
            "Onion-service descriptors dropped past their lifetime.",
            c.expired_entries,
        ),
        (
            "fors_hsdir_evicted_total",
            "Onion-service descriptors evicted under the cache's byte bound.",
            c.evicted_entries,
        ),
        (
            "fors_hsdir_evicted_bytes_total",
            "Bytes of onion-service descriptors evicted under the cache's byte bound.",
            c.evicted_bytes,
        ),
    ] {
        f.single(name, MetricKind::Counter, help, v);
    }
}

/// The directory cache's store and mirror, per document kind (`dircache::StoreStats`).
fn render_dircache(f: &mut Family<'_>, s: &crate::dircache::StoreStats) {
    use crate::dircache::{DocKind, KindStats};
    type Pick = fn(&KindStats) -> u64;
    let families: [(&str, MetricKind, &str, Pick); 6] = [
        (
            "fors_dircache_documents",
            MetricKind::Gauge,
            "Verified documents the directory cache keeps.",
            |k| k.documents,
        ),
        (
            "fors_dircache_bytes",
            MetricKind::Gauge,
            "Bytes of the documents the directory cache keeps.",
            |k| k.bytes,
        ),
        (
            "fors_dircache_fetch_failures_total",
            MetricKind::Counter,
            "Directory cache fetches that got no usable answer.",
            |k| k.fetches_failed,
        ),
        (
            "fors_dircache_rejected_total",
            MetricKind::Counter,
            "Fetched documents that did not verify (signature, digest, format) and were dropped.",
            |k| k.rejected,
        ),
        (
            "fors_dircache_over_limit_total",
            MetricKind::Counter,
            "Verified documents refused because the cache's bound for their kind was reached.",
            |k| k.over_limit,
        ),
        (
            "fors_dircache_evicted_total",
            MetricKind::Counter,
            "Documents dropped because no consensus lists them any more, or expired.",
            |k| k.evicted,
        ),
    ];
    f.header(
        "fors_dircache_fetches_total",
        MetricKind::Counter,
        "Directory cache fetches that got an answer.",
    );
    for kind in DocKind::ALL {
        let labels = format!("kind=\"{}\"", kind.name());
        f.value(
            "fors_dircache_fetches_total",
            &labels,
            s.get(kind).fetches_ok,
        );
    }
    f.header(
        "fors_dircache_source_fetches_total",
        MetricKind::Counter,
        "Directory cache fetches by source (an authority, or another cache) and result.",
    );
    for (i, source) in ["authority", "cache"].iter().enumerate() {
        for (j, result) in ["answered", "failed"].iter().enumerate() {
            f.value(
                "fors_dircache_source_fetches_total",
                &format!("source=\"{source}\",result=\"{result}\""),
                s.source_fetches[i][j],
            );
        }
    }
    for (name, mk, help, pick) in families {
        f.header(name, mk, help);
        for kind in DocKind::ALL {
            let labels = format!("kind=\"{}\"", kind.name());
            f.value(name, &labels, pick(s.get(kind)));
        }
    }
    for (name, mk, help, v) in [
        (
            "fors_dircache_diffs",
            MetricKind::Gauge,
            "Consensus diffs kept, from an earlier consensus to the current one.",
            s.diffs,
        ),
        (
            "fors_dircache_diff_bytes",
            MetricKind::Gauge,
            "Bytes of the consensus diffs kept.",
            s.diff_bytes,
        ),
        (
            "fors_dircache_diff_failures_total",
            MetricKind::Counter,
            "Consensus diffs that could not be generated (the whole consensus is served instead).",
            s.diff_failures,
        ),
        (
            "fors_dircache_compressed",
            MetricKind::Gauge,
            "Compressed forms kept of the current consensuses and their diffs (made once each).",
            s.compressed,
        ),
        (
            "fors_dircache_compressed_bytes",
            MetricKind::Gauge,
            "Bytes of the compressed forms of the current consensuses and their diffs.",
            s.compressed_bytes,
        ),
        (
            "fors_dircache_compress_failures_total",
            MetricKind::Counter,
            "Compressed forms the compressor could not make (the text is served instead).",
            s.compress_failures,
        ),
        (
            "fors_dircache_compressed_over_limit_total",
            MetricKind::Counter,
            "Compressed forms not kept: their bound was reached (the text is served instead).",
            s.compressed_over_limit,
        ),
    ] {
        f.header(name, mk, help);
        f.value(name, "", v);
    }
}

/// C tor's `tor_relay_dos_total{type=…}` (relay_metrics.c, same type labels where Fors has
/// the counter), plus the shared table's use.
fn render_dos(f: &mut Family<'_>, d: &DosCounters) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let gs = |a: &crate::dos::StripedCounter| a.load(Ordering::Relaxed);
    f.header(
        "tor_relay_dos_total",
        MetricKind::Counter,
        "DoS defence actions (C tor names): circuits and connections refused, addresses marked.",
    );
    for (t, v) in [
        ("circuit_rejected", gs(&d.cc_rejected_cells)),
        ("marked_address", g(&d.cc_marked_addrs)),
        ("conn_rejected", gs(&d.conn_connect_rejected)),
        ("concurrent_conn_rejected", gs(&d.conn_concurrent_rejected)),
        ("conn_marked_address", g(&d.conn_marked_addrs)),
    ] {
        f.value("tor_relay_dos_total", &format!("type=\"{t}\""), v);
    }
    let gauges: [(&str, MetricKind, &str, u64); 6] = [
        (
            "fors_relay_dos_table_entries",
            MetricKind::Gauge,
            "Slots of the shared DoS address table holding an address.",
            g(&d.table_entries),
        ),
        (
            "fors_relay_dos_table_slots",
            MetricKind::Gauge,
            "Slots of the shared DoS address table.",
            g(&d.table_slots),
        ),
        (
            "fors_relay_dos_tracked_connections",
            MetricKind::Gauge,
            "Incoming connections counted by the DoS defences now.",
            gs(&d.tracked_connections),
        ),
        (
            "fors_relay_dos_table_full_total",
            MetricKind::Counter,
            "Connections served untracked: every slot of their DoS table probe window held \
             open connections (fail open).",
            gs(&d.table_full),
        ),
        (
            "fors_relay_dos_table_reclaims_total",
            MetricKind::Counter,
            "Idle DoS table slots given to another address.",
            g(&d.table_reclaims),
        ),
        (
            "fors_relay_dos_table_evictions_total",
            MetricKind::Counter,
            "DoS table slots taken from an address without connections but still marked \
             (or with a partly drained bucket): that address lost its mark.",
            g(&d.table_evictions),
        ),
    ];
    for (name, kind, help, v) in gauges {
        f.single(name, kind, help, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardMetrics;

    #[test]
    fn core_and_resolver_counters_render_per_shard_and_summed() {
        use crate::exit::dns::DnsMetrics;
        use crate::proto::circuit::CircuitMetrics;
        let t0 = Instant::now();
        let reg = MetricsRegistry::new(2, t0);
        let mut m = CircuitMetrics {
            create_refused_queue_full: 4,
            oom_kills: 2,
            onion_queue_len: 7,
            ..CircuitMetrics::default()
        };
        m.count_end_sent(crate::cell::relay::msg::EndReason::ExitPolicy);
        reg.shard(0).unwrap().store_circuit(&m);
        m.count_end_sent(crate::cell::relay::msg::EndReason::ExitPolicy);
        reg.shard(1).unwrap().store_circuit(&m);
        reg.shard(1).unwrap().store_dns(&DnsMetrics {
            timeouts: 3,
            inflight: 5,
            inflight_limit: 1024,
            ..DnsMetrics::default()
        });
        reg.shard(1)
            .unwrap()
            .handler
            .dns_send_errors
            .store(6, Ordering::Relaxed);
        let text = reg.render(t0);
        for line in [
            "fors_relay_create_refused_total{shard=\"1\",reason=\"queue_full\"} 4",
            "fors_relay_create_refused_total{shard=\"1\",reason=\"table_full\"} 0",
            "fors_relay_all_shards_create_refused_total{reason=\"queue_full\"} 8",
            "fors_relay_circuits_killed_total{shard=\"0\",reason=\"oom\"} 2",
            "fors_relay_onion_queue_length{shard=\"0\"} 7",
            "fors_relay_all_shards_onion_queue_length 14",
            "fors_relay_stream_end_sent_total{shard=\"0\",reason=\"exitpolicy\"} 1",
            "fors_relay_stream_end_sent_total{shard=\"1\",reason=\"exitpolicy\"} 2",
            "fors_relay_stream_end_sent_total{shard=\"1\",reason=\"misc\"} 0",
            "fors_relay_all_shards_stream_end_sent_total{reason=\"exitpolicy\"} 3",
            "fors_relay_dns_failures_total{shard=\"1\",cause=\"timeout\"} 3",
            "fors_relay_all_shards_dns_failures_total{cause=\"timeout\"} 3",
            "fors_relay_dns_inflight{shard=\"1\"} 5",
            "fors_relay_dns_inflight_limit{shard=\"1\"} 1024",
            "fors_relay_dns_send_errors_total{shard=\"1\"} 6",
            "# TYPE fors_relay_dns_inflight gauge",
            "# TYPE fors_relay_create_refused_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        // One HELP/TYPE per family, even when several fields share it.
        assert_eq!(
            text.matches("# TYPE fors_relay_create_refused_total ")
                .count(),
            1
        );
    }

    #[test]
    fn renders_the_directory_cache_counters_once_set() {
        let reg = MetricsRegistry::new(1, Instant::now());
        assert!(!reg.render(Instant::now()).contains("fors_dircache_"));
        let store = crate::dircache::SharedStore::default();
        store
            .write()
            .unwrap()
            .record_fetch(crate::dircache::DocKind::Microdesc, false);
        reg.set_dircache(store);
        let text = reg.render(Instant::now());
        for line in [
            "fors_dircache_fetch_failures_total{kind=\"microdesc\"} 1",
            "fors_dircache_fetches_total{kind=\"consensus\"} 0",
            "fors_dircache_documents{kind=\"server_descriptor\"} 0",
            "# TYPE fors_dircache_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
    }

    #[test]
    fn renders_the_directory_server_and_hsdir_counters_once_set() {
        let reg = MetricsRegistry::new(1, Instant::now());
        assert!(!reg.render(Instant::now()).contains("fors_hsdir_"));
        let stats = Arc::new(crate::relay::dirserver::DirServerStats::default());
        let hs = crate::dircache::serve::Kind::ALL
            .iter()
            .position(|k| *k == crate::dircache::serve::Kind::HsDescriptor)
            .unwrap();
        stats.requests[hs].store(3, Ordering::Relaxed);
        stats.status[3].store(2, Ordering::Relaxed);
        stats.encodings[3].store(6, Ordering::Relaxed);
        stats.hsdir_entries.store(4, Ordering::Relaxed);
        {
            let mut c = stats.hsdir.lock().unwrap();
            c.stored = 5;
            c.rejected[5] = 6;
            c.single_hop_rejected = 7;
            c.fetch_hit = 8;
        }
        reg.set_dir_server(stats);
        let text = reg.render(Instant::now());
        for line in [
            "fors_dirserver_requests_total{kind=\"hs_descriptor\"} 3",
            "fors_dirserver_requests_total{kind=\"consensus\"} 0",
            "fors_dirserver_responses_total{status=\"5xx\"} 2",
            "fors_dirserver_answers_by_encoding_total{encoding=\"x-zstd\"} 6",
            "fors_dirserver_answers_by_encoding_total{encoding=\"identity\"} 0",
            "fors_hsdir_descriptors 4",
            "fors_hsdir_stored_total 5",
            "fors_hsdir_rejected_total{reason=\"old_revision\"} 6",
            "fors_hsdir_rejected_total{reason=\"single_hop\"} 7",
            "fors_hsdir_fetches_total{result=\"hit\"} 8",
            "# TYPE fors_hsdir_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
    }

    #[test]
    fn renders_every_shard_counter_for_every_shard() {
        let t0 = Instant::now();
        let reg = MetricsRegistry::new(3, t0);
        reg.shard(1).unwrap().store(&ShardMetrics {
            accepted: 42,
            recv_bytes: 10,
            ..ShardMetrics::default()
        });
        reg.shard(2).unwrap().store(&ShardMetrics {
            recv_bytes: 5,
            send_bytes: 7,
            ..ShardMetrics::default()
        });
        reg.relay.observed_bandwidth.store(12345, Ordering::Relaxed);
        let text = reg.render(t0 + std::time::Duration::from_secs(9));
        assert!(text.contains("fors_shard_accepted{shard=\"1\"} 42\n"));
        assert!(text.contains("fors_relay_uptime_seconds 9\n"));
        assert!(text.contains("fors_relay_read_bytes_total 15\n"));
        assert!(text.contains("fors_relay_written_bytes_total 7\n"));
        assert!(text.contains("fors_relay_observed_bandwidth_bytes 12345\n"));
        assert!(text.contains("# TYPE fors_shard_conns_open gauge\n"));
        for e in CIRCUIT_METRICS.iter().chain(DNS_METRICS) {
            for s in 0..3 {
                let series = format!("{}{{{}}} ", e.name, shard_labels(s, e.extra));
                assert!(text.contains(&series), "missing {series}");
            }
        }
        for name in SHARD_METRIC_NAMES {
            for s in 0..3 {
                let line = format!("fors_shard_{name}{{shard=\"{s}\"}} ");
                assert!(text.contains(&line), "missing {line}");
            }
        }
        // Every sample line is `name{labels} value` or `name value`, and every family has
        // one TYPE line.
        let mut types = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(types.insert(rest.split(' ').next().unwrap().to_string()));
            } else if !line.starts_with("# HELP ") {
                let (name, value) = line.rsplit_once(' ').unwrap();
                value.parse::<f64>().unwrap();
                let family = name.split('{').next().unwrap();
                assert!(types.contains(family), "sample before TYPE: {line}");
            }
        }
    }

    #[test]
    fn latency_histograms_render_once_recorded() {
        let t0 = Instant::now();
        let reg = MetricsRegistry::new(2, t0);
        assert!(!reg.render(t0).contains("_seconds_bucket"));
        reg.latency(1)
            .unwrap()
            .exit_connect
            .observe(std::time::Duration::from_millis(7));
        let text = reg.render(t0);
        for line in [
            "# TYPE fors_relay_exit_connect_seconds histogram",
            "fors_relay_exit_connect_seconds_bucket{shard=\"0\",le=\"+Inf\"} 0",
            "fors_relay_exit_connect_seconds_bucket{shard=\"1\",le=\"0.010000\"} 1",
            "fors_relay_all_shards_exit_connect_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        assert!(reg.latency(2).is_none());
    }

    #[test]
    fn shard_cpu_renders_as_seconds_for_known_shards_only() {
        let mut out = String::new();
        let mut f = Family { out: &mut out };
        render_shard_cpu(&mut f, &[(0, 1_500_000_000), (1, 7), (5, 9)], 2);
        assert!(out.contains("# TYPE fors_shard_cpu_seconds_total counter\n"));
        assert!(out.contains("fors_shard_cpu_seconds_total{shard=\"0\"} 1.500000000\n"));
        assert!(out.contains("fors_shard_cpu_seconds_total{shard=\"1\"} 0.000000007\n"));
        assert!(!out.contains("shard=\"5\""));
        let mut none = String::new();
        render_shard_cpu(&mut Family { out: &mut none }, &[], 2);
        assert!(none.is_empty());
    }

    #[test]
    fn dos_counters_render_with_c_tor_type_labels() {
        let reg = MetricsRegistry::new(1, Instant::now());
        reg.dos.cc_rejected_cells.store(7, Ordering::Relaxed);
        reg.dos.cc_marked_addrs.store(2, Ordering::Relaxed);
        reg.dos.conn_concurrent_rejected.store(3, Ordering::Relaxed);
        reg.dos.conn_connect_rejected.store(4, Ordering::Relaxed);
        reg.dos.table_slots.store(1024, Ordering::Relaxed);
        reg.dos.table_full.store(1, Ordering::Relaxed);
        let text = reg.render(Instant::now());
        for line in [
            "# TYPE tor_relay_dos_total counter",
            "tor_relay_dos_total{type=\"circuit_rejected\"} 7",
            "tor_relay_dos_total{type=\"marked_address\"} 2",
            "tor_relay_dos_total{type=\"concurrent_conn_rejected\"} 3",
            "tor_relay_dos_total{type=\"conn_rejected\"} 4",
            "tor_relay_dos_total{type=\"conn_marked_address\"} 0",
            "fors_relay_dos_table_slots 1024",
            "fors_relay_dos_table_full_total 1",
            "fors_relay_dos_table_entries 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }

    #[test]
    fn bandwidth_buckets_render_with_bucket_and_direction_labels() {
        use crate::shard::{BwRates, ShardMetrics};
        let rates = BwRates {
            rate: 4 << 20,
            burst: 8 << 20,
            relay_rate: 2 << 20,
            relay_burst: 4 << 20,
        };
        let budget = SharedBudget::new(2, rates, Instant::now());
        let reg = MetricsRegistry::new(2, Instant::now()).with_bandwidth(budget);
        for s in reg.shards() {
            s.store(&ShardMetrics {
                bw_relayed_write_empty: 3,
                bw_global_read_empty: 1,
                ..ShardMetrics::default()
            });
        }
        let text = reg.render(Instant::now());
        for line in [
            "# TYPE fors_relay_bandwidth_rate_bytes gauge",
            "fors_relay_bandwidth_rate_bytes{bucket=\"global\"} 4194304",
            "fors_relay_bandwidth_rate_bytes{bucket=\"relayed\"} 2097152",
            "fors_relay_bandwidth_burst_bytes{bucket=\"global\"} 8388608",
            "fors_relay_bandwidth_burst_bytes{bucket=\"relayed\"} 4194304",
            // Full at start: the whole burst is in the shared budget.
            "fors_relay_bandwidth_shared_tokens{bucket=\"global\",direction=\"read\"} 8388608",
            "fors_relay_bandwidth_shared_tokens{bucket=\"relayed\",direction=\"write\"} 4194304",
            "# TYPE fors_relay_bandwidth_empty_total counter",
            "fors_relay_bandwidth_empty_total{bucket=\"relayed\",direction=\"write\"} 6",
            "fors_relay_bandwidth_empty_total{bucket=\"global\",direction=\"read\"} 2",
            "fors_relay_bandwidth_empty_total{bucket=\"global\",direction=\"write\"} 0",
            "fors_shard_bw_relayed_write_empty{shard=\"1\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }
}
