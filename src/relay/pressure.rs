//! Making pressure visible (issue #15): when the relay refuses or drops work — a full
//! connection table, a full onion-skin queue, the memory cap, the DoS defences, a closed
//! control-surface connection — an operator must see it in the log, not only in a counter.
//!
//! The control plane reads the relay-wide sums once a second ([`PressureCounts::read`]);
//! [`PressureLog`] turns what rose into at most one line per [`INTERVAL`] (as C tor's
//! `ratelim_t`: a flood gives one line a minute, with the numbers since the last one), and the
//! heartbeat adds the totals since start ([`PressureCounts::since_start_line`]). Never on the
//! data path: shards only bump their counters.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::metrics::core_counters::CIRCUIT_METRICS;
use crate::metrics::shard::shard_metric_index;
use crate::metrics::MetricsRegistry;

/// At most one pressure line per this long.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// One counted kind of refused or dropped work: its sum over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PressureCounts {
    /// Inbound connections refused: the shard's connection table was full.
    pub conns_table_full: u64,
    /// Inbound connections refused because evicted handshakes still held their slots while
    /// closing (a burst of accepts).
    pub conns_refused_evicting: u64,
    /// Unauthenticated link handshakes closed by the shard: the oldest, to admit a new
    /// connection to a full handshake class, or for outliving the shortened handshake
    /// timeout under pressure (`shard::slots`).
    pub handshakes_evicted: u64,
    /// Outbound connections (exit streams, channels we open) refused: their class of the
    /// connection table was full.
    pub outbound_refused: u64,
    /// Connections closed at once without a channel. Not in the line: it also counts DoS
    /// refusals and refusals while hibernating, and the line names each cause once.
    pub conns_unserved: u64,
    /// CREATE cells refused: circuit table full / onion-skin queue full.
    pub creates_table_full: u64,
    pub creates_queue_full: u64,
    /// Onion skins that waited too long in the queue.
    pub onionskins_expired: u64,
    /// Circuits closed by the memory cap (MaxMemInQueues) / a full queue / a protocol
    /// violation.
    pub circuits_oom: u64,
    pub circuits_overflow: u64,
    pub circuits_protocol: u64,
    /// CREATE cells and connections refused by the DoS defences.
    pub dos_creates: u64,
    pub dos_conns: u64,
    /// MetricsPort and ControlPort connections closed to make room.
    pub metrics_evicted: u64,
    pub control_evicted: u64,
}

/// The circuit core's counter `field`, summed over shards.
fn circuit_sum(reg: &MetricsRegistry, field: &str) -> u64 {
    CIRCUIT_METRICS
        .iter()
        .position(|e| e.field == field)
        .map_or(0, |i| {
            reg.shards().iter().map(|s| s.circuit_values()[i]).sum()
        })
}

fn shard_sum(reg: &MetricsRegistry, name: &str) -> u64 {
    shard_metric_index(name).map_or(0, |i| reg.shards().iter().map(|s| s.get(i)).sum())
}

impl PressureCounts {
    /// The relay-wide sums now.
    pub fn read(reg: &MetricsRegistry) -> PressureCounts {
        let r = &reg.relay;
        let d = &reg.dos;
        PressureCounts {
            conns_table_full: shard_sum(reg, "accept_rejected_table_full"),
            conns_refused_evicting: shard_sum(reg, "accept_rejected_evicting"),
            handshakes_evicted: shard_sum(reg, "slots_handshake_evicted")
                + shard_sum(reg, "slots_handshake_expired"),
            outbound_refused: shard_sum(reg, "slots_outbound_refused"),
            conns_unserved: reg
                .shards()
                .iter()
                .map(|s| {
                    s.handler
                        .connections_closed_unserved
                        .load(Ordering::Relaxed)
                })
                .sum(),
            creates_table_full: circuit_sum(reg, "create_refused_table_full"),
            creates_queue_full: circuit_sum(reg, "create_refused_queue_full"),
            onionskins_expired: circuit_sum(reg, "onionskins_expired"),
            circuits_oom: circuit_sum(reg, "oom_kills"),
            circuits_overflow: circuit_sum(reg, "queue_overflow_kills"),
            circuits_protocol: circuit_sum(reg, "protocol_closes"),
            dos_creates: d.cc_rejected_cells.load(Ordering::Relaxed),
            dos_conns: d.conn_concurrent_rejected.load(Ordering::Relaxed)
                + d.conn_connect_rejected.load(Ordering::Relaxed),
            metrics_evicted: r.metricsport_evicted.load(Ordering::Relaxed),
            control_evicted: r.controlport_evicted.load(Ordering::Relaxed),
        }
    }

    /// What rose since `earlier` (counters never go down; a reset reads as 0).
    pub fn since(&self, earlier: &PressureCounts) -> PressureCounts {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        PressureCounts {
            conns_table_full: d(self.conns_table_full, earlier.conns_table_full),
            conns_refused_evicting: d(self.conns_refused_evicting, earlier.conns_refused_evicting),
            handshakes_evicted: d(self.handshakes_evicted, earlier.handshakes_evicted),
            outbound_refused: d(self.outbound_refused, earlier.outbound_refused),
            conns_unserved: d(self.conns_unserved, earlier.conns_unserved),
            creates_table_full: d(self.creates_table_full, earlier.creates_table_full),
            creates_queue_full: d(self.creates_queue_full, earlier.creates_queue_full),
            onionskins_expired: d(self.onionskins_expired, earlier.onionskins_expired),
            circuits_oom: d(self.circuits_oom, earlier.circuits_oom),
            circuits_overflow: d(self.circuits_overflow, earlier.circuits_overflow),
            circuits_protocol: d(self.circuits_protocol, earlier.circuits_protocol),
            dos_creates: d(self.dos_creates, earlier.dos_creates),
            dos_conns: d(self.dos_conns, earlier.dos_conns),
            metrics_evicted: d(self.metrics_evicted, earlier.metrics_evicted),
            control_evicted: d(self.control_evicted, earlier.control_evicted),
        }
    }

    /// Each non-zero count with what it means, in a fixed order.
    fn items(&self) -> Vec<String> {
        let all = [
            (
                self.conns_table_full,
                "connections refused (connection table full: raise the open-files limit)",
            ),
            (
                self.conns_refused_evicting,
                "connections refused while evicted handshakes were closing (a burst of \
                 new connections)",
            ),
            (
                self.handshakes_evicted,
                "unauthenticated connections closed to make room (handshake slots full: \
                 many idle connections, an attack or a surge)",
            ),
            (
                self.outbound_refused,
                "outbound connections refused (outbound slots full: raise the open-files \
                 limit)",
            ),
            (
                self.creates_table_full,
                "CREATE cells refused (circuit table full)",
            ),
            (
                self.creates_queue_full,
                "CREATE cells refused (onion-skin queue full: this CPU cannot keep up)",
            ),
            (self.onionskins_expired, "onion skins expired in the queue"),
            (self.circuits_oom, "circuits closed by MaxMemInQueues"),
            (self.circuits_overflow, "circuits closed (queue bound)"),
            (
                self.circuits_protocol,
                "circuits closed for protocol violations",
            ),
            (self.dos_creates, "CREATE cells refused by the DoS defences"),
            (self.dos_conns, "connections refused by the DoS defences"),
            (
                self.metrics_evicted,
                "idle MetricsPort connections closed to make room",
            ),
            (
                self.control_evicted,
                "unauthenticated ControlPort connections closed to make room",
            ),
        ];
        all.iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect()
    }

    /// Whether legitimate work was refused (a WARN, as C tor's table-full and
    /// onion-queue-full messages), rather than only attack traffic turned away.
    pub fn refused_work(&self) -> bool {
        self.conns_table_full
            + self.outbound_refused
            + self.creates_table_full
            + self.creates_queue_full
            + self.circuits_oom
            > 0
    }

    /// The heartbeat's line: every non-zero total since start.
    pub fn since_start_line(&self) -> String {
        let items = self.items();
        if items.is_empty() {
            "Heartbeat: since start, nothing was refused or dropped under load.".into()
        } else {
            format!("Heartbeat: since start, {}.", items.join(", "))
        }
    }
}

/// The rate-limited pressure line.
#[derive(Debug)]
pub struct PressureLog {
    /// Counts at the last line (or at start).
    logged: PressureCounts,
    last_line: Option<Instant>,
}

impl PressureLog {
    pub fn new(now_counts: PressureCounts) -> PressureLog {
        PressureLog {
            logged: now_counts,
            last_line: None,
        }
    }

    /// With the counts `now_counts` read at `now`: the line to log, if anything rose and the
    /// last line is at least [`INTERVAL`] old; (is it a warning, the text).
    pub fn tick(&mut self, now_counts: PressureCounts, now: Instant) -> Option<(bool, String)> {
        if self
            .last_line
            .is_some_and(|t| now.saturating_duration_since(t) < INTERVAL)
        {
            return None;
        }
        let rose = now_counts.since(&self.logged);
        let items = rose.items();
        if items.is_empty() {
            return None;
        }
        let span = match self.last_line {
            Some(t) => format!(
                "in the last {} s",
                now.saturating_duration_since(t).as_secs()
            ),
            None => "since start".into(),
        };
        self.logged = now_counts;
        self.last_line = Some(now);
        Some((
            rose.refused_work(),
            format!(
                "Under pressure {span}: {}. (At most one such line a minute; totals in the \
                 heartbeat and on the MetricsPort.)",
                items.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_numbers_since_the_last() {
        let t0 = Instant::now();
        let mut log = PressureLog::new(PressureCounts::default());
        assert_eq!(
            log.tick(PressureCounts::default(), t0),
            None,
            "nothing rose"
        );
        let mut c = PressureCounts {
            conns_table_full: 5,
            ..Default::default()
        };
        let (warn, line) = log.tick(c, t0 + Duration::from_secs(1)).unwrap();
        assert!(warn);
        assert!(
            line.starts_with(
                "Under pressure since start: 5 connections refused (connection table full"
            ),
            "{line}"
        );
        // A flood: no second line within the interval, whatever happens.
        c.conns_table_full = 5000;
        c.metrics_evicted = 7;
        for s in 2..60 {
            assert_eq!(log.tick(c, t0 + Duration::from_secs(s)), None);
        }
        let (warn, line) = log.tick(c, t0 + Duration::from_secs(61)).unwrap();
        assert!(warn);
        assert!(
            line.starts_with(
                "Under pressure in the last 60 s: 4995 connections refused (connection table \
                 full"
            ),
            "{line}"
        );
        assert!(
            line.contains(", 7 idle MetricsPort connections closed to make room."),
            "{line}"
        );
        // Only attack traffic turned away: a notice, not a warning.
        let mut d = c;
        d.dos_conns = 3;
        let (warn, line) = log.tick(d, t0 + Duration::from_secs(200)).unwrap();
        assert!(!warn, "{line}");
        assert!(
            line.contains(": 3 connections refused by the DoS defences."),
            "{line}"
        );
        // Idle handshakes evicted: said, but a notice; outbound work refused: a warning.
        let mut e = d;
        e.handshakes_evicted = 40;
        let (warn, line) = log.tick(e, t0 + Duration::from_secs(300)).unwrap();
        assert!(!warn, "{line}");
        assert!(
            line.contains(": 40 unauthenticated connections closed to make room (handshake"),
            "{line}"
        );
        let mut f = e;
        f.outbound_refused = 2;
        let (warn, line) = log.tick(f, t0 + Duration::from_secs(400)).unwrap();
        assert!(warn, "{line}");
        assert!(line.contains(": 2 outbound connections refused"), "{line}");
    }

    #[test]
    fn heartbeat_lists_totals() {
        assert_eq!(
            PressureCounts::default().since_start_line(),
            "Heartbeat: since start, nothing was refused or dropped under load."
        );
        let c = PressureCounts {
            creates_queue_full: 2,
            circuits_oom: 1,
            ..Default::default()
        };
        assert_eq!(
            c.since_start_line(),
            "Heartbeat: since start, 2 CREATE cells refused (onion-skin queue full: this CPU \
             cannot keep up), 1 circuits closed by MaxMemInQueues."
        );
    }

    #[test]
    fn every_circuit_field_read_exists() {
        for f in [
            "create_refused_table_full",
            "create_refused_queue_full",
            "onionskins_expired",
            "oom_kills",
            "queue_overflow_kills",
            "protocol_closes",
        ] {
            assert!(CIRCUIT_METRICS.iter().any(|e| e.field == f), "{f}");
        }
        for f in [
            "accept_rejected_table_full",
            "accept_rejected_evicting",
            "slots_handshake_evicted",
            "slots_handshake_expired",
            "slots_outbound_refused",
        ] {
            assert!(shard_metric_index(f).is_some(), "{f}");
        }
    }

    #[test]
    fn reads_the_registry() {
        let reg = MetricsRegistry::new(2, Instant::now());
        reg.relay.metricsport_evicted.store(4, Ordering::Relaxed);
        reg.shards()[1]
            .handler
            .connections_closed_unserved
            .store(3, Ordering::Relaxed);
        let c = PressureCounts::read(&reg);
        assert_eq!(c.metrics_evicted, 4);
        assert_eq!(c.conns_unserved, 3);
        assert_eq!(c.conns_table_full, 0);
    }
}
