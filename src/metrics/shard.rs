//! Per-shard counters readable from other threads.
//!
//! The shard runtime keeps its [`ShardMetrics`] as plain `u64`s on the shard thread. The
//! relay handler copies them into a [`ShardStats`] once per tick with relaxed atomic stores
//! (the shard never waits on anything); the MetricsPort and the control plane read them with
//! relaxed loads. Values may be up to one tick old, and fields of one shard are not a
//! consistent cut: fine for monitoring and bandwidth estimates.

use std::sync::atomic::{AtomicU64, Ordering};

use super::core_counters::{
    circuit_metric_values, dns_metric_values, CIRCUIT_METRIC_COUNT, DNS_METRIC_COUNT,
};
use crate::exit::dns::DnsMetrics;
use crate::proto::circuit::metrics::END_REASON_SLOTS;
use crate::proto::circuit::CircuitMetrics;
use crate::shard::ShardMetrics;

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

macro_rules! shard_metric_fields {
    ($( $name:ident : $kind:ident ),* $(,)?) => {
        /// Names of the [`ShardMetrics`] fields, in the order of [`ShardStats`] slots.
        pub const SHARD_METRIC_NAMES: &[&str] = &[$(stringify!($name)),*];
        /// Their Prometheus types (peaks and open counts are gauges).
        pub const SHARD_METRIC_KINDS: &[MetricKind] = &[$(MetricKind::$kind),*];
        /// Number of exported shard counters.
        pub const SHARD_METRIC_COUNT: usize = SHARD_METRIC_NAMES.len();

        /// Every field's value, in slot order. The struct pattern has no `..`, so a field
        /// added to `ShardMetrics` is a compile error here until it is exported too.
        pub fn shard_metric_values(m: &ShardMetrics) -> [u64; SHARD_METRIC_COUNT] {
            let ShardMetrics { $($name),* } = m;
            [$(*$name),*]
        }
    };
}

shard_metric_fields! {
    accepted: Counter,
    accept_rejected_table_full: Counter,
    accept_rejected_evicting: Counter,
    accept_errors: Counter,
    connected: Counter,
    connect_failed: Counter,
    closed: Counter,
    conns_open: Gauge,
    conns_peak: Gauge,
    conn_slots_allocated: Gauge,
    conn_chunks_released: Counter,
    recv_completions: Counter,
    recv_bytes: Counter,
    recv_no_buffers: Counter,
    recv_rearms: Counter,
    recv_capped: Counter,
    send_ops: Counter,
    send_zc_ops: Counter,
    send_zc_copied: Counter,
    send_bytes: Counter,
    send_backpressure: Counter,
    send_pool_exhausted: Counter,
    send_queue_peak_bufs: Gauge,
    send_pool_peak_bufs: Gauge,
    writable_events: Counter,
    read_pauses: Counter,
    read_resumes: Counter,
    cross_pushed: Counter,
    cross_push_full: Counter,
    cross_popped: Counter,
    cross_wakeups_sent: Counter,
    wakeups_received: Counter,
    ticks: Counter,
    slots_outbound_in_use: Gauge,
    slots_authenticated_in_use: Gauge,
    slots_handshake_in_use: Gauge,
    slots_outbound_refused: Counter,
    slots_authenticated_refused: Counter,
    slots_handshake_refused: Counter,
    slots_handshake_evicted: Counter,
    slots_handshake_expired: Counter,
    sq_full_flushes: Counter,
    completions: Counter,
    loop_iterations: Counter,
    shutdown_leaked_ops: Counter,
    held_open_expired: Counter,
    bw_global_read_empty: Counter,
    bw_global_write_empty: Counter,
    bw_relayed_read_empty: Counter,
    bw_relayed_write_empty: Counter,
    bw_read_pauses: Counter,
    bw_write_waits: Counter,
    bw_global_read_tokens: Gauge,
    bw_global_write_tokens: Gauge,
    bw_relayed_read_tokens: Gauge,
    bw_relayed_write_tokens: Gauge,
}

/// Index of a field in [`SHARD_METRIC_NAMES`].
pub fn shard_metric_index(name: &str) -> Option<usize> {
    SHARD_METRIC_NAMES.iter().position(|n| *n == name)
}

/// Counters the relay handler keeps itself (protocol level, not socket level).
#[derive(Debug, Default)]
pub struct HandlerCounters {
    /// Connections the handler was given.
    pub connections_seen: AtomicU64,
    /// Of those, connections on an IPv6 socket (the rest are IPv4): C tor's `family` label
    /// of `tor_relay_connections_total` (`rep_hist_note_conn_opened` by socket family).
    pub connections_seen_ipv6: AtomicU64,
    /// Of `connections_seen`, those the DoS gate closed at accept, IPv4 / IPv6 (C
    /// `rep_hist_note_conn_rejected`, only when the defence closes the connection).
    pub connections_dos_closed_ipv4: AtomicU64,
    pub connections_dos_closed_ipv6: AtomicU64,
    /// Connections closed at once because no channel could be started for them.
    pub connections_closed_unserved: AtomicU64,
    /// Circuits whose handshake completed here.
    pub circuits_created: AtomicU64,
    /// Of those, circuits that negotiated congestion control (prop 324).
    pub circuits_cc: AtomicU64,
    /// Stream XOFF / XON sent on CC circuits (buffer toward a destination full / drained).
    pub stream_xoff_sent: AtomicU64,
    pub stream_xon_sent: AtomicU64,
    /// Relay cells passed on away from the client / toward the client.
    pub cells_forwarded: AtomicU64,
    pub cells_backward: AtomicU64,
    /// Cells dropped because their channel's output queue was full.
    pub cells_dropped: AtomicU64,
    /// Open exit streams.
    pub exit_streams: AtomicU64,
    /// Open channels (TLS links past the handshake).
    pub channels_open: AtomicU64,
    /// Open circuits.
    pub circuits_open: AtomicU64,
    /// Snapshots from the control plane picked up.
    pub snapshots_taken: AtomicU64,
    /// Our circuits whose next hop's channel lives on another shard.
    pub cross_circuits_open: AtomicU64,
    /// Other shards' circuits whose next-hop channel lives here.
    pub cross_circuits_carried: AtomicU64,
    /// Circuits extended here for another shard (channel side).
    pub cross_circuits_total: AtomicU64,
    /// Extends handed to the identity's owner shard.
    pub cross_extends_sent: AtomicU64,
    /// Relay cells given to / taken from other shards' queues.
    pub cross_cells_sent: AtomicU64,
    pub cross_cells_received: AtomicU64,
    /// Times a queue toward another shard was found full.
    pub cross_queue_full: AtomicU64,
    /// Messages waiting in the overflows toward other shards.
    pub cross_overflow_depth: AtomicU64,
    /// Circuits closed because an overflow toward another shard was at its bound.
    pub cross_overflow_kills: AtomicU64,
    /// Requests (extends, stray non-RELAY cells of proxied circuits) an overflow toward
    /// another shard refused at its request cap (`relay::cross::Hold::Request`).
    pub cross_requests_refused: AtomicU64,
    /// Channel blocked/unblocked notices and conflux leg states folded into one already
    /// waiting in an overflow.
    pub cross_notices_collapsed: AtomicU64,
    /// Bytes of channel buffer capacity given back after bursts (`Channel::trim_buffers`).
    pub channel_buffer_bytes_released: AtomicU64,
    /// Channels switched to Fors's TLS 1.3 record layer after their link handshake.
    pub channels_tls_record_layer: AtomicU64,
    /// Open channels left on rustls because the link negotiated TLS 1.2.
    pub channels_tls_rustls_tls12: AtomicU64,
    /// Open TLS 1.3 channels left on rustls because the handover was refused.
    pub channels_tls_rustls_refused: AtomicU64,
    /// TLS records opened in the receive buffer behind a header that ended the read
    /// before (reads capped at the next record's header: no copy).
    pub tls_records_split: AtomicU64,
    /// TLS records split across reads and gathered in the channel's record buffer first.
    pub tls_records_gathered: AtomicU64,
    /// Their bytes, copied to be whole: over the bytes a channel read, the copies per cell
    /// these gathers add.
    pub tls_record_bytes_gathered: AtomicU64,
    /// Times a channel stopped capping its reads for a while because most capped reads
    /// still cut a record (record lengths it could not guess).
    pub tls_read_hint_pauses: AtomicU64,
    /// Answers and teardowns held in an overflow past its uncharged cap (never refused).
    pub cross_uncharged_over_cap: AtomicU64,
    /// DNS queries the resolver socket refused to send (retried on the query's timeout).
    pub dns_send_errors: AtomicU64,
    /// Channel padding: PADDING cells sent on idle channels, and PADDING_NEGOTIATE START /
    /// STOP cells received (padding-spec §2).
    pub padding_cells_sent: AtomicU64,
    pub padding_negotiate_start: AtomicU64,
    pub padding_negotiate_stop: AtomicU64,
    /// `KeepalivePeriod` PADDING cells (C `run_connection_housekeeping`), and channels
    /// closed as stuck (output waiting, nothing written, for ten periods).
    pub keepalive_cells_sent: AtomicU64,
    pub channels_closed_stuck: AtomicU64,
}

/// One shard's exported state.
#[derive(Debug)]
pub struct ShardStats {
    values: [AtomicU64; SHARD_METRIC_COUNT],
    pub handler: HandlerCounters,
    /// The circuit core's counters, in `core_counters::CIRCUIT_METRICS` order.
    circuit: [AtomicU64; CIRCUIT_METRIC_COUNT],
    /// END cells sent, by `END_REASON_LABELS` slot.
    ends_sent: [AtomicU64; END_REASON_SLOTS],
    /// The exit resolver's counters, in `core_counters::DNS_METRICS` order.
    dns: [AtomicU64; DNS_METRIC_COUNT],
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            handler: HandlerCounters::default(),
            circuit: std::array::from_fn(|_| AtomicU64::new(0)),
            ends_sent: std::array::from_fn(|_| AtomicU64::new(0)),
            dns: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn store_all<const N: usize>(slots: &[AtomicU64; N], values: [u64; N]) {
    for (slot, v) in slots.iter().zip(values) {
        slot.store(v, Ordering::Relaxed);
    }
}

fn load_all<const N: usize>(slots: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| slots[i].load(Ordering::Relaxed))
}

impl ShardStats {
    /// Copies the shard's counters (shard thread, once per tick).
    pub fn store(&self, m: &ShardMetrics) {
        for (slot, v) in self.values.iter().zip(shard_metric_values(m)) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// Copies the circuit core's counters (shard thread, once per tick).
    pub fn store_circuit(&self, m: &CircuitMetrics) {
        store_all(&self.circuit, circuit_metric_values(m));
        store_all(&self.ends_sent, m.ends_sent);
    }

    /// Copies the exit resolver's counters (shard thread, once per tick).
    pub fn store_dns(&self, m: &DnsMetrics) {
        store_all(&self.dns, dns_metric_values(m));
    }

    /// The circuit core's counters, in `CIRCUIT_METRICS` order.
    pub fn circuit_values(&self) -> [u64; CIRCUIT_METRIC_COUNT] {
        load_all(&self.circuit)
    }

    /// END cells sent, by `END_REASON_LABELS` slot.
    pub fn ends_sent(&self) -> [u64; END_REASON_SLOTS] {
        load_all(&self.ends_sent)
    }

    /// The exit resolver's counters, in `DNS_METRICS` order.
    pub fn dns_values(&self) -> [u64; DNS_METRIC_COUNT] {
        load_all(&self.dns)
    }

    /// One counter by slot.
    pub fn get(&self, index: usize) -> u64 {
        self.values
            .get(index)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    /// All counters, in slot order.
    pub fn values(&self) -> [u64; SHARD_METRIC_COUNT] {
        load_all(&self.values)
    }

    /// Bytes received and sent on this shard's sockets so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.get(RECV_BYTES), self.get(SEND_BYTES))
    }
}

const RECV_BYTES: usize = const_index("recv_bytes");
const SEND_BYTES: usize = const_index("send_bytes");

/// A field's slot, found at compile time (a field added before it moves it).
const fn const_index(name: &str) -> usize {
    let mut i = 0;
    while i < SHARD_METRIC_NAMES.len() {
        let (a, b) = (SHARD_METRIC_NAMES[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("no such shard metric")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_shard_metrics_debug_output() {
        // The Debug output lists every field in declaration order: the exported list must be
        // exactly that (the destructuring already guarantees completeness at compile time).
        let dbg = format!("{:?}", ShardMetrics::default());
        let inner = dbg
            .trim_start_matches("ShardMetrics {")
            .trim_end_matches('}');
        let fields: Vec<&str> = inner
            .split(',')
            .filter_map(|f| f.split(':').next())
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(fields, SHARD_METRIC_NAMES);
        assert_eq!(SHARD_METRIC_KINDS.len(), SHARD_METRIC_COUNT);
        assert_eq!(shard_metric_index("recv_bytes"), Some(RECV_BYTES));
        assert_eq!(shard_metric_index("send_bytes"), Some(SEND_BYTES));
    }

    #[test]
    fn store_copies_every_field() {
        let m = ShardMetrics {
            accepted: 3,
            recv_bytes: 1000,
            send_bytes: 2000,
            bw_relayed_write_tokens: 7,
            ..ShardMetrics::default()
        };
        let s = ShardStats::default();
        s.store(&m);
        assert_eq!(s.get(0), 3);
        assert_eq!(s.bytes(), (1000, 2000));
        assert_eq!(s.values()[SHARD_METRIC_COUNT - 1], 7);
        assert_eq!(s.values(), shard_metric_values(&m));
    }
}
