//! `fors-loadgen merge`: one report from the `--json` reports of several load-generator hosts
//! that drove the same relays at the same time (a rack: one relay box, N generator boxes).
//!
//! The merged object has every key of a single-host report (`report.rs`), computed the same
//! way from the summed counters and the merged histograms, so tools that read one report read
//! the merge too. The hosts are assumed to have run together (same start, e.g. the same
//! `--duration`): `elapsed_s` is the longest host's, so `mb_per_s` = all verified bytes /
//! that time, which never overstates the rack's rate when one host finished early.
//! Percentiles are exact to the histograms' precision, not averages of percentiles: each
//! report carries its histograms (`histograms`), and the merge adds them.
//!
//! Extra keys: `hosts` (one row per input: `host`, `ok`, `bytes_verified`, `mb_per_s`,
//! `elapsed_s`, `loadgen_cpu_s`, `integrity_errors`, `latency_us`, `path`), `merged_from`
//! (the number of inputs), and `relay_cpu_s` / `relay_cpu_s_per_gb`: the relay's CPU time
//! over the run, given once with `--relay-cpu-s` (it is measured on the relay box, which no
//! generator sees), per 10^9 verified bytes; both `null` without it.

use std::path::Path;

use serde_json::{json, Value};

use crate::report::{Sample, Summary};
use crate::stats::WorkerStats;

/// Largest report file read (a report is a few hundred KiB at most).
const MAX_REPORT_BYTES: u64 = 64 << 20;
/// Most reports merged at once.
pub const MAX_REPORTS: usize = 1024;

/// Why reports could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{file}: {why}")]
    Read { file: String, why: String },
    #[error("{file}: not a fors-loadgen --json report: {why}")]
    Schema { file: String, why: String },
    #[error("{0}")]
    Usage(String),
}

/// What `fors-loadgen merge` was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeArgs {
    pub files: Vec<String>,
    pub relay_cpu_s: Option<f64>,
    pub json: bool,
}

pub const USAGE: &str = "\
fors-loadgen merge [--relay-cpu-s S] [--json] A.json B.json ...
  Merges the --json reports of load generators that ran at the same time into one report.
  --relay-cpu-s S   the relay's CPU seconds over the run (measured on the relay host), for
                    relay_cpu_s_per_gb
  --json            print the merged report as JSON (default: text)
";

impl MergeArgs {
    pub fn parse(args: &[String]) -> Result<MergeArgs, MergeError> {
        let mut m = MergeArgs {
            files: Vec::new(),
            relay_cpu_s: None,
            json: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--json" => m.json = true,
                "--relay-cpu-s" => {
                    let v = it
                        .next()
                        .ok_or_else(|| MergeError::Usage("--relay-cpu-s needs a value".into()))?;
                    m.relay_cpu_s = Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|c| c.is_finite() && *c >= 0.0)
                            .ok_or_else(|| {
                                MergeError::Usage(format!(
                                    "--relay-cpu-s {v:?}: a non-negative number of seconds"
                                ))
                            })?,
                    );
                }
                "-h" | "--help" => return Err(MergeError::Usage(USAGE.into())),
                o if o.starts_with("--") => {
                    return Err(MergeError::Usage(format!("unknown merge option {o}")))
                }
                f => m.files.push(f.to_string()),
            }
        }
        if m.files.is_empty() {
            return Err(MergeError::Usage(format!("no reports given\n{USAGE}")));
        }
        if m.files.len() > MAX_REPORTS {
            return Err(MergeError::Usage(format!("at most {MAX_REPORTS} reports")));
        }
        Ok(m)
    }
}

fn schema(file: &str, why: impl Into<String>) -> MergeError {
    MergeError::Schema {
        file: file.into(),
        why: why.into(),
    }
}

fn u(file: &str, j: &Value, k: &str) -> Result<u64, MergeError> {
    j.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| schema(file, format!("{k} is missing or not a count")))
}

fn f(file: &str, j: &Value, k: &str) -> Result<f64, MergeError> {
    j.get(k)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| schema(file, format!("{k} is missing or not a non-negative number")))
}

/// Rebuilds one report's [`Summary`] from its JSON (`file` names it in errors).
pub fn summary_from_json(file: &str, j: &Value) -> Result<Summary, MergeError> {
    if !j.is_object() {
        return Err(schema(file, "not a JSON object"));
    }
    let mut st = WorkerStats {
        bytes_down: u(file, j, "bytes_down")?,
        bytes_up: u(file, j, "bytes_up")?,
        cells_sent: u(file, j, "cells_sent")?,
        cells_received: u(file, j, "cells_received")?,
        circuits_built: u(file, j, "circuits_built")?,
        streams_done: u(file, j, "streams_done")?,
        streams_expected: u(file, j, "streams_expected")?,
        handshakes: u(file, j, "handshakes")?,
        integrity_errors: u(file, j, "integrity_errors")?,
        ..WorkerStats::default()
    };
    if st.bytes_down.checked_add(st.bytes_up) != j["bytes_verified"].as_u64() {
        return Err(schema(file, "bytes_verified is not bytes_down + bytes_up"));
    }
    let errors = j["errors"]
        .as_object()
        .ok_or_else(|| schema(file, "errors is not an object"))?;
    for (k, v) in errors {
        let n = v
            .as_u64()
            .ok_or_else(|| schema(file, format!("errors.{k} is not a count")))?;
        *st.errors.entry(k.clone()).or_default() += n;
    }
    // Optional: reports from before `--relay-crypto` have no `hop_crypto`.
    if let Some(hops) = j.get("hop_crypto").and_then(Value::as_array) {
        for (hop, kinds) in hops.iter().enumerate() {
            let kinds = kinds
                .as_object()
                .ok_or_else(|| schema(file, format!("hop_crypto[{hop}] is not an object")))?;
            for (k, v) in kinds {
                let n = v
                    .as_u64()
                    .ok_or_else(|| schema(file, format!("hop_crypto[{hop}].{k} is not a count")))?;
                st.add_hop_crypto(hop, k, n);
            }
        }
    }
    let hists = j
        .get("histograms")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            schema(
                file,
                "no histograms (a report from an older fors-loadgen cannot be merged exactly)",
            )
        })?;
    for (name, h) in [
        ("cell_gap_us", &mut st.cell_gap_us),
        ("sendme_rtt_us", &mut st.sendme_rtt_us),
        ("ttfb_us", &mut st.ttfb_us),
        ("handshake_us", &mut st.handshake_us),
    ] {
        let pairs = hists
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| schema(file, format!("histograms.{name} is missing")))?;
        for p in pairs {
            let (v, n) = match p.as_array().map(Vec::as_slice) {
                Some([v, n]) => (v.as_u64(), n.as_u64()),
                _ => (None, None),
            };
            let (Some(v), Some(n)) = (v, n) else {
                return Err(schema(
                    file,
                    format!("histograms.{name}: {p} is not [value, count]"),
                ));
            };
            if v < 1 || v > h.high() {
                return Err(schema(
                    file,
                    format!("histograms.{name}: value {v} out of range"),
                ));
            }
            h.record_n(v, n)
                .map_err(|e| schema(file, format!("histograms.{name}: {e:?}")))?;
        }
    }
    let timeline = match j.get("timeline").and_then(Value::as_array) {
        Some(t) => t
            .iter()
            .map(|s| match s.as_array().map(Vec::as_slice) {
                Some([t, m, c]) => match (t.as_f64(), m.as_f64(), c.as_f64()) {
                    (Some(t_s), Some(mb_per_s), Some(cells_per_s)) => Ok(Sample {
                        t_s,
                        mb_per_s,
                        cells_per_s,
                    }),
                    _ => Err(schema(
                        file,
                        "timeline entries are [t_s, mb_per_s, cells_per_s]",
                    )),
                },
                _ => Err(schema(
                    file,
                    "timeline entries are [t_s, mb_per_s, cells_per_s]",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => return Err(schema(file, "timeline is missing")),
    };
    let path = j["path"]
        .as_array()
        .ok_or_else(|| schema(file, "path is missing"))?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| schema(file, "path holds a non-string"))?;
    let sink_cpu_s = match &j["sink_cpu_s"] {
        Value::Null => None,
        _ => Some(f(file, j, "sink_cpu_s")?),
    };
    Ok(Summary {
        stats: st,
        elapsed_s: f(file, j, "elapsed_s")?,
        cpu_s: f(file, j, "loadgen_cpu_s")?,
        workers_cpu_s: f(file, j, "workers_cpu_s")?,
        sink_cpu_s,
        timeline,
        path,
    })
}

/// Merges reports (label, report JSON as given), with the relay's CPU time if known.
/// Input reports that say `ok: false` make the merge not ok, whatever their counters say.
pub fn merge(inputs: &[(String, Value)], relay_cpu_s: Option<f64>) -> Result<Value, MergeError> {
    let mut stats = WorkerStats::default();
    let mut rows = Vec::with_capacity(inputs.len());
    let (mut elapsed_s, mut cpu_s, mut workers_cpu_s) = (0.0f64, 0.0, 0.0);
    let mut sink_cpu_s: Option<f64> = None;
    let mut timeline: Vec<Sample> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut all_ok = true;
    for (label, j) in inputs {
        let s = summary_from_json(label, j)?;
        let ok = j["ok"]
            .as_bool()
            .ok_or_else(|| schema(label, "ok is missing"))?;
        all_ok &= ok && s.ok();
        stats.merge(&s.stats);
        elapsed_s = elapsed_s.max(s.elapsed_s);
        cpu_s += s.cpu_s;
        workers_cpu_s += s.workers_cpu_s;
        if let Some(c) = s.sink_cpu_s {
            *sink_cpu_s.get_or_insert(0.0) += c;
        }
        // The hosts' n-th samples cover about the same second of the run.
        for (i, x) in s.timeline.iter().enumerate() {
            match timeline.get_mut(i) {
                Some(t) => {
                    t.t_s = t.t_s.max(x.t_s);
                    t.mb_per_s += x.mb_per_s;
                    t.cells_per_s += x.cells_per_s;
                }
                None => timeline.push(*x),
            }
        }
        for n in &s.path {
            if !path.contains(n) {
                path.push(n.clone());
            }
        }
        let one = s.to_json();
        rows.push(json!({
            "host": label,
            "ok": ok,
            "bytes_verified": one["bytes_verified"],
            "mb_per_s": one["mb_per_s"],
            "elapsed_s": one["elapsed_s"],
            "loadgen_cpu_s": one["loadgen_cpu_s"],
            "integrity_errors": one["integrity_errors"],
            "latency_us": one["latency_us"],
            "path": one["path"],
        }));
    }
    let merged = Summary {
        stats,
        elapsed_s,
        cpu_s,
        workers_cpu_s,
        sink_cpu_s,
        timeline,
        path,
    };
    let mut out = merged.to_json();
    out["ok"] = json!(all_ok && merged.ok());
    let gb = merged.bytes_verified() as f64 / 1e9;
    out["relay_cpu_s"] = json!(relay_cpu_s);
    out["relay_cpu_s_per_gb"] = match relay_cpu_s {
        Some(c) if gb > 0.0 => json!(c / gb),
        _ => Value::Null,
    };
    out["merged_from"] = json!(inputs.len());
    out["hosts"] = Value::Array(rows);
    Ok(out)
}

/// The merged report as text: the single-host summary, then one line per host.
pub fn text(m: &Value) -> String {
    let g = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut s = format!(
        "{}: {} hosts, {} bytes verified in {:.1}s = {:.2} MB/s; integrity errors {}; \
         loadgen CPU {:.2}s\n",
        if m["ok"] == json!(true) {
            "OK"
        } else {
            "FAILED"
        },
        m["merged_from"],
        m["bytes_verified"],
        g(&m["elapsed_s"]),
        g(&m["mb_per_s"]),
        m["integrity_errors"],
        g(&m["loadgen_cpu_s"]),
    );
    match m["relay_cpu_s_per_gb"].as_f64() {
        Some(c) => s += &format!("relay CPU {:.2}s = {c:.2} CPU-s/GB\n", g(&m["relay_cpu_s"])),
        None => s += "relay CPU: not given (--relay-cpu-s)\n",
    }
    s += &format!(
        "latency ({}) p50 {} µs p99 {} µs\n",
        m["latency_us"]["kind"].as_str().unwrap_or(""),
        m["latency_us"]["p50"],
        m["latency_us"]["p99"],
    );
    for h in m["hosts"].as_array().into_iter().flatten() {
        s += &format!(
            "  {}: {} {} bytes in {:.1}s = {:.2} MB/s, integrity errors {}\n",
            h["host"].as_str().unwrap_or("?"),
            if h["ok"] == json!(true) {
                "ok"
            } else {
                "FAILED"
            },
            h["bytes_verified"],
            g(&h["elapsed_s"]),
            g(&h["mb_per_s"]),
            h["integrity_errors"],
        );
    }
    s
}

/// Reads and parses one report file, with a size bound.
pub fn read_report(file: &str) -> Result<Value, MergeError> {
    let read = |why: String| MergeError::Read {
        file: file.into(),
        why,
    };
    let meta = std::fs::metadata(Path::new(file)).map_err(|e| read(e.to_string()))?;
    if meta.len() > MAX_REPORT_BYTES {
        return Err(read(format!("larger than {MAX_REPORT_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(file).map_err(|e| read(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| schema(file, format!("invalid JSON: {e}")))
}

/// `fors-loadgen merge ...`: the exit status (0 merged and ok, 1 merged but not ok, 2 error).
pub fn main(args: &[String]) -> i32 {
    let run = || -> Result<Value, MergeError> {
        let a = MergeArgs::parse(args)?;
        let inputs = a
            .files
            .iter()
            .map(|f| Ok((f.clone(), read_report(f)?)))
            .collect::<Result<Vec<_>, MergeError>>()?;
        let m = merge(&inputs, a.relay_cpu_s)?;
        if a.json {
            println!("{m}");
        } else {
            print!("{}", text(&m));
        }
        Ok(m)
    };
    match run() {
        Ok(m) if m["ok"] == json!(true) => 0,
        Ok(_) => 1,
        Err(MergeError::Usage(u)) if u == USAGE => {
            print!("{u}");
            0
        }
        Err(e) => {
            eprintln!("fors-loadgen merge: {e}");
            2
        }
    }
}

/// A histogram as `[[value, count], ...]` over its recorded buckets (the form in reports).
pub fn histogram_pairs(h: &hdrhistogram::Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    /// A host report as `fors-loadgen --json` prints it.
    fn host(bytes_down: u64, bytes_up: u64, elapsed_s: f64, gaps: &[u64]) -> Value {
        let mut st = WorkerStats {
            bytes_down,
            bytes_up,
            cells_sent: 10,
            cells_received: 30,
            circuits_built: 2,
            streams_done: 2,
            streams_expected: 2,
            handshakes: 4,
            ..Default::default()
        };
        for &g in gaps {
            WorkerStats::record(&mut st.cell_gap_us, g);
        }
        WorkerStats::record(&mut st.ttfb_us, 2_000);
        Summary {
            stats: st,
            elapsed_s,
            cpu_s: 1.0,
            workers_cpu_s: 0.8,
            sink_cpu_s: Some(0.1),
            timeline: vec![
                Sample {
                    t_s: 1.0,
                    mb_per_s: 3.0,
                    cells_per_s: 10.0,
                },
                Sample {
                    t_s: 2.0,
                    mb_per_s: 4.0,
                    cells_per_s: 20.0,
                },
            ],
            path: vec!["mid".into(), "exit".into()],
        }
        .to_json()
    }

    fn inputs(v: Vec<Value>) -> Vec<(String, Value)> {
        v.into_iter()
            .enumerate()
            .map(|(i, j)| (format!("host{i}.json"), j))
            .collect()
    }

    #[test]
    fn merged_report_has_every_single_host_key_and_the_totals() {
        let a = host(3_000_000, 1_000_000, 2.0, &(1..=500).collect::<Vec<_>>());
        let b = host(5_000_000, 1_000_000, 4.0, &(501..=1000).collect::<Vec<_>>());
        let m = merge(&inputs(vec![a.clone(), b]), Some(2.5)).unwrap();
        for k in a.as_object().unwrap().keys() {
            assert!(m.get(k).is_some(), "merged report lacks {k}");
        }
        assert_eq!(m["ok"], json!(true));
        assert_eq!(m["bytes_verified"], json!(10_000_000));
        assert_eq!(m["bytes_down"], json!(8_000_000));
        assert_eq!(m["elapsed_s"], json!(4.0), "the longest host's time");
        assert_eq!(m["mb_per_s"], json!(2.5), "10 MB over 4 s");
        assert_eq!(m["cells_sent"], json!(20));
        assert_eq!(m["handshakes"], json!(8));
        assert_eq!(m["streams_expected"], json!(4));
        assert_eq!(m["loadgen_cpu_s"], json!(2.0));
        assert_eq!(m["sink_cpu_s"], json!(0.2));
        // Relay CPU given once: 2.5 s over 0.01 GB.
        assert_eq!(m["relay_cpu_s"], json!(2.5));
        let per_gb = m["relay_cpu_s_per_gb"].as_f64().unwrap();
        assert!((per_gb - 250.0).abs() < 1e-9, "{per_gb}");
        // Percentiles of the union, not of either host: 1..=1000 has its median near 500,
        // where host a's is ~250 and host b's ~750.
        let p50 = m["latency_us"]["p50"].as_f64().unwrap();
        assert!((495.0..=505.0).contains(&p50), "{p50}");
        assert_eq!(m["cell_gap_us"]["count"], json!(1000));
        assert_eq!(m["ttfb_ms"]["count"], json!(2));
        // The timeline adds the hosts' rates second by second.
        assert_eq!(m["timeline"][1], json!([2.0, 8.0, 40.0]));
        assert_eq!(m["path"], json!(["mid", "exit"]));
        // One row per host.
        let rows = m["hosts"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["host"], json!("host1.json"));
        assert_eq!(rows[1]["bytes_verified"], json!(6_000_000));
        assert_eq!(rows[0]["mb_per_s"], json!(2.0));
        assert_eq!(m["merged_from"], json!(2));
        // A merge can itself be merged (it carries its histograms).
        let mm = merge(&inputs(vec![m.clone()]), None).unwrap();
        assert_eq!(mm["latency_us"], m["latency_us"]);
        assert_eq!(mm["relay_cpu_s_per_gb"], Value::Null);
        assert!(text(&m).contains("= 250.00 CPU-s/GB"), "{}", text(&m));
    }

    #[test]
    fn one_failed_host_fails_the_merge() {
        let good = host(1_000_000, 0, 1.0, &[10]);
        let mut bad = host(1_000_000, 0, 1.0, &[10]);
        bad["integrity_errors"] = json!(1);
        bad["ok"] = json!(false);
        let m = merge(&inputs(vec![good.clone(), bad]), None).unwrap();
        assert_eq!(m["ok"], json!(false));
        assert_eq!(m["integrity_errors"], json!(1));
        assert_eq!(m["hosts"][1]["ok"], json!(false));
        // A host that says it failed counts even if its counters look fine.
        let mut said = good.clone();
        said["ok"] = json!(false);
        assert_eq!(
            merge(&inputs(vec![good, said]), None).unwrap()["ok"],
            json!(false)
        );
    }

    #[test]
    fn bad_reports_are_refused_with_the_file_named() {
        let good = host(1_000_000, 0, 1.0, &[10]);
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "not a JSON object"),
            (
                {
                    let mut j = good.clone();
                    j.as_object_mut().unwrap().remove("histograms");
                    j
                },
                "no histograms",
            ),
            (
                {
                    let mut j = good.clone();
                    j["bytes_verified"] = json!(5);
                    j
                },
                "bytes_verified",
            ),
            (
                {
                    let mut j = good.clone();
                    j["histograms"]["cell_gap_us"] = json!([[0, 1]]);
                    j
                },
                "out of range",
            ),
            (
                {
                    let mut j = good.clone();
                    j["elapsed_s"] = json!(-1.0);
                    j
                },
                "elapsed_s",
            ),
            (
                {
                    let mut j = good.clone();
                    j["errors"] = json!({"x": "y"});
                    j
                },
                "errors.x",
            ),
        ];
        for (j, want) in cases {
            let e = merge(&[("rack-b.json".into(), j)], None).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("rack-b.json: "), "{msg}");
            assert!(msg.contains(want), "{msg} lacks {want}");
        }
    }

    #[test]
    fn arguments() {
        let a = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let m = MergeArgs::parse(&a("--relay-cpu-s 12.5 a.json --json b.json")).unwrap();
        assert_eq!(m.files, vec!["a.json", "b.json"]);
        assert_eq!(m.relay_cpu_s, Some(12.5));
        assert!(m.json);
        assert!(MergeArgs::parse(&a("")).is_err());
        assert!(MergeArgs::parse(&a("--relay-cpu-s -1 a.json")).is_err());
        assert!(MergeArgs::parse(&a("--relay-cpu-s NaN a.json")).is_err());
        assert!(MergeArgs::parse(&a("--bogus a.json")).is_err());
        assert!(matches!(
            read_report("/nonexistent/fors-merge.json"),
            Err(MergeError::Read { .. })
        ));
    }

    #[test]
    fn histogram_pairs_round_trip() {
        let mut h = new_histogram();
        for v in [1u64, 7, 7, 1000, 123_456] {
            WorkerStats::record(&mut h, v);
        }
        let mut j = host(1, 0, 1.0, &[]);
        j["histograms"]["cell_gap_us"] = histogram_pairs(&h);
        let s = summary_from_json("x", &j).unwrap();
        assert_eq!(s.stats.cell_gap_us.len(), 5);
        assert_eq!(s.stats.cell_gap_us.max(), h.max());
        assert_eq!(
            s.stats.cell_gap_us.value_at_quantile(0.5),
            h.value_at_quantile(0.5)
        );
    }
}
