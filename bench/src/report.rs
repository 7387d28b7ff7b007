//! The end-of-run summary: a human-readable block and the `--json` object.
//!
//! JSON keys (all always present):
//! * `ok`: no integrity error, no failed stream or circuit, and some work was done.
//! * `bytes_verified`: download bytes checked against the pattern plus upload bytes the server
//!   confirmed (`OK`); `bytes_down`, `bytes_up` split it.
//! * `integrity_errors`: streams whose bytes differed from the pattern (either direction).
//! * `mb_per_s`: `bytes_verified / elapsed_s / 10^6`; `cells_per_s`: relay cells sent plus
//!   received per second.
//! * `latency_us` {`kind`, `p50`, `p99`, `p999`, `max`, `count`}: with uploads, `kind` is
//!   `"sendme_rtt"`: from sending the DATA cell a circuit SENDME v1 authenticates (every
//!   100th) to receiving that SENDME, a round trip through every hop including queueing.
//!   Download-only runs use `"download_cell_gap"`: the time between consecutive DATA cells
//!   of one circuit, timestamped per socket read (cells of one read count as 0 → 1 µs).
//!   Both are also given separately as `cell_gap_us` and `sendme_rtt_us`.
//! * `handshakes_per_s`, `handshakes`, `handshake_ms` {p50, p99}: completed circuit
//!   handshakes (CREATED2/EXTENDED2/CREATED_FAST verified).
//! * `ttfb_ms` {p50, p99, max}: BEGIN sent → first DATA byte received, per stream.
//! * `loadgen_cpu_s`: this process's user+system CPU time; `loadgen_cpu_cores`: that over
//!   the elapsed time (≈ threads used when the generator itself is the bottleneck). It is
//!   split (roughly: threads are sampled, not stopped) into `workers_cpu_s`, the io_uring
//!   worker threads (TLS, relay crypto, pattern checks), and `sink_cpu_s`, the built-in
//!   sink/source server's threads (`null` with an external `--target`); the rest is the
//!   main thread and start-up (descriptor fetches).
//! * `errors`: counts by reason.
//! * `hop_crypto`: per hop of the path (first hop first), how many circuits opened with each
//!   relay crypto, `{"tor1": n}` or `{"cgo": n}` (`--relay-crypto`): what the handshakes
//!   negotiated, so a caller can check a relay really ran CGO.
//! * `histograms` {`cell_gap_us`, `sendme_rtt_us`, `ttfb_us`, `handshake_us`}: each
//!   histogram's recorded buckets as `[[value, count], ...]` (value in µs, the highest
//!   equivalent value of the bucket), so `fors-loadgen merge` can compute exact percentiles
//!   over several hosts.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::merge::histogram_pairs;
use crate::stats::WorkerStats;

/// One progress sample (once a second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t_s: f64,
    pub mb_per_s: f64,
    pub cells_per_s: f64,
}

/// Everything the summary needs.
#[derive(Debug, Clone)]
pub struct Summary {
    pub stats: WorkerStats,
    pub elapsed_s: f64,
    pub cpu_s: f64,
    /// CPU of the worker (shard) threads.
    pub workers_cpu_s: f64,
    /// CPU of the built-in server's threads; `None` with an external sink.
    pub sink_cpu_s: Option<f64>,
    pub timeline: Vec<Sample>,
    pub path: Vec<String>,
}

fn pct(h: &Histogram<u64>, div: f64) -> Value {
    if h.is_empty() {
        return json!({"p50": null, "p99": null, "p999": null, "max": null, "count": 0});
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / div;
    json!({
        "p50": q(0.5), "p99": q(0.99), "p999": q(0.999),
        "max": h.max() as f64 / div, "count": h.len(),
    })
}

impl Summary {
    pub fn bytes_verified(&self) -> u64 {
        self.stats.bytes_down + self.stats.bytes_up
    }

    /// Whether the run passed: all streams finished intact and nothing failed.
    pub fn ok(&self) -> bool {
        let s = &self.stats;
        s.integrity_errors == 0
            && s.errors.values().all(|&n| n == 0)
            && s.streams_done >= self.stats.streams_expected
            && (self.bytes_verified() > 0 || s.handshakes > 0)
    }

    fn per_s(&self, n: f64) -> f64 {
        if self.elapsed_s > 0.0 {
            n / self.elapsed_s
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let (kind, lat) = if !s.sendme_rtt_us.is_empty() {
            ("sendme_rtt", &s.sendme_rtt_us)
        } else {
            ("download_cell_gap", &s.cell_gap_us)
        };
        let mut latency = pct(lat, 1.0);
        latency["kind"] = json!(kind);
        json!({
            "ok": self.ok(),
            "bytes_verified": self.bytes_verified(),
            "bytes_down": s.bytes_down,
            "bytes_up": s.bytes_up,
            "integrity_errors": s.integrity_errors,
            "elapsed_s": self.elapsed_s,
            "mb_per_s": self.per_s(self.bytes_verified() as f64) / 1e6,
            "cells_per_s": self.per_s((s.cells_sent + s.cells_received) as f64),
            "cells_sent": s.cells_sent,
            "cells_received": s.cells_received,
            "latency_us": latency,
            "cell_gap_us": pct(&s.cell_gap_us, 1.0),
            "sendme_rtt_us": pct(&s.sendme_rtt_us, 1.0),
            "handshakes": s.handshakes,
            "handshakes_per_s": self.per_s(s.handshakes as f64),
            "handshake_ms": pct(&s.handshake_us, 1000.0),
            "circuits_built": s.circuits_built,
            "streams_done": s.streams_done,
            "streams_expected": self.stats.streams_expected,
            "ttfb_ms": pct(&s.ttfb_us, 1000.0),
            "loadgen_cpu_s": self.cpu_s,
            "loadgen_cpu_cores": self.per_s(self.cpu_s),
            "workers_cpu_s": self.workers_cpu_s,
            "sink_cpu_s": self.sink_cpu_s,
            "errors": s.errors,
            "hop_crypto": s.hop_crypto,
            "path": self.path,
            "timeline": self.timeline.iter().map(|x| json!([x.t_s, x.mb_per_s, x.cells_per_s])).collect::<Vec<_>>(),
            "histograms": {
                "cell_gap_us": histogram_pairs(&s.cell_gap_us),
                "sendme_rtt_us": histogram_pairs(&s.sendme_rtt_us),
                "ttfb_us": histogram_pairs(&s.ttfb_us),
                "handshake_us": histogram_pairs(&s.handshake_us),
            },
        })
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let j = self.to_json();
        let s = &self.stats;
        let f = |v: &Value| v.as_f64().map(|x| format!("{x:.1}")).unwrap_or("-".into());
        format!(
            "{}: {} bytes verified ({} down, {} up) in {:.1}s = {:.2} MB/s, {:.0} cells/s\n\
             latency ({}) p50 {} µs p99 {} µs p99.9 {} µs; ttfb p50 {} ms\n\
             circuits {} handshakes {} ({:.1}/s); streams {}/{}; integrity errors {}; errors {:?}\n\
             loadgen CPU {:.2}s ({:.2} cores; workers {:.2}s, built-in sink {})\n",
            if self.ok() { "OK" } else { "FAILED" },
            self.bytes_verified(),
            s.bytes_down,
            s.bytes_up,
            self.elapsed_s,
            j["mb_per_s"].as_f64().unwrap_or(0.0),
            j["cells_per_s"].as_f64().unwrap_or(0.0),
            j["latency_us"]["kind"].as_str().unwrap_or(""),
            f(&j["latency_us"]["p50"]),
            f(&j["latency_us"]["p99"]),
            f(&j["latency_us"]["p999"]),
            f(&j["ttfb_ms"]["p50"]),
            s.circuits_built,
            s.handshakes,
            j["handshakes_per_s"].as_f64().unwrap_or(0.0),
            s.streams_done,
            self.stats.streams_expected,
            s.integrity_errors,
            s.errors,
            self.cpu_s,
            j["loadgen_cpu_cores"].as_f64().unwrap_or(0.0),
            self.workers_cpu_s,
            self.sink_cpu_s
                .map(|c| format!("{c:.2}s"))
                .unwrap_or_else(|| "-".into()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        let mut st = WorkerStats {
            bytes_down: 3_000_000,
            bytes_up: 1_000_000,
            cells_sent: 100,
            cells_received: 300,
            streams_done: 2,
            streams_expected: 2,
            handshakes: 4,
            ..Default::default()
        };
        for v in 1..=1000 {
            WorkerStats::record(&mut st.cell_gap_us, v);
        }
        WorkerStats::record(&mut st.ttfb_us, 5_000);
        Summary {
            stats: st,
            elapsed_s: 2.0,
            cpu_s: 0.5,
            workers_cpu_s: 0.3,
            sink_cpu_s: Some(0.1),
            timeline: vec![Sample {
                t_s: 1.0,
                mb_per_s: 2.0,
                cells_per_s: 200.0,
            }],
            path: vec!["m".into(), "e".into()],
        }
    }

    #[test]
    fn json_has_the_documented_schema() {
        let j = summary().to_json();
        for k in [
            "ok",
            "bytes_verified",
            "integrity_errors",
            "mb_per_s",
            "cells_per_s",
            "latency_us",
            "handshakes_per_s",
            "ttfb_ms",
            "loadgen_cpu_s",
            "workers_cpu_s",
            "sink_cpu_s",
            "errors",
        ] {
            assert!(j.get(k).is_some(), "missing {k}");
        }
        assert_eq!(j["ok"], json!(true));
        assert_eq!(j["bytes_verified"], json!(4_000_000));
        assert_eq!(j["mb_per_s"], json!(2.0));
        assert_eq!(j["cells_per_s"], json!(200.0));
        assert_eq!(j["handshakes_per_s"], json!(2.0));
        assert_eq!(j["latency_us"]["kind"], json!("download_cell_gap"));
        let p50 = j["latency_us"]["p50"].as_f64().unwrap();
        let p99 = j["latency_us"]["p99"].as_f64().unwrap();
        let p999 = j["latency_us"]["p999"].as_f64().unwrap();
        assert!((495.0..=505.0).contains(&p50), "{p50}");
        assert!(p50 <= p99 && p99 <= p999 && p999 <= 1001.0);
        assert_eq!(j["ttfb_ms"]["p50"].as_f64().map(|v| v.round()), Some(5.0));
        assert!(j["errors"].is_object());
        // The text form agrees.
        assert!(summary().text().starts_with("OK: 4000000 bytes verified"));
    }

    #[test]
    fn integrity_error_or_missing_stream_fails_the_run() {
        let mut s = summary();
        s.stats.integrity_errors = 1;
        assert_eq!(s.to_json()["ok"], json!(false));
        let mut s = summary();
        s.stats.streams_expected = 3;
        assert!(!s.ok());
        let mut s = summary();
        s.stats.error("destroy");
        assert!(!s.ok());
        let mut s = summary();
        s.stats = WorkerStats::default();
        assert!(!s.ok(), "nothing done is not a pass");
        assert_eq!(s.to_json()["latency_us"]["p50"], Value::Null);
    }
}
