//! Metrics: per-shard counters readable without stopping the shards, relay-wide gauges, and
//! the Prometheus MetricsPort.
//!
//! - [`shard`]: [`ShardStats`], the shard's `ShardMetrics` mirrored into relaxed atomics once
//!   per tick, plus the relay handler's own counters.
//! - [`core_counters`]: which fields of the circuit core's and the exit resolver's counters
//!   are exported, under which names.
//! - [`registry`]: [`MetricsRegistry`], all of it together, rendered as Prometheus text.
//! - [`http`]: [`MetricsServer`], the `MetricsPort` listener, with `MetricsPortPolicy`.
//!
//! - [`ctor`]: C tor's own `tor_relay_*` families, where Fors counts the same thing.
//! - [`cpu`]: each shard thread's CPU time, read from procfs at scrape time.
//! - [`histogram`]: per-shard latency histograms with fixed buckets (onion-skin batches,
//!   exit connects, cell queueing delay), each exported once something was observed in it.
//!
//! Names: `fors_shard_<ShardMetrics field>{shard="N"}` and `fors_relay_*`, plus C tor's
//! `tor_relay_*` families where Fors can fill them truthfully; see docs/operating.md.

#![forbid(unsafe_code)]

pub mod core_counters;
pub mod cpu;
pub mod ctor;
pub mod histogram;
pub mod http;
pub mod registry;
pub mod shard;

pub use http::{MetricsPolicy, MetricsPolicyError, MetricsServer};
pub use registry::{MetricsRegistry, RelayGauges};
pub use shard::{HandlerCounters, MetricKind, ShardStats, SHARD_METRIC_NAMES};
