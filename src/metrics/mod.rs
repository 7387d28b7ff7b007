//! Metrics: per-shard counters and the Prometheus MetricsPort.
