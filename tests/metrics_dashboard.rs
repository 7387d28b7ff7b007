//! The Grafana dashboard (`contrib/grafana/fors.json`) queries only series Fors exports.
//!
//! Every PromQL expression of the dashboard (panel targets and the templating query) is
//! reduced to the metric names it reads; each must be a family the MetricsPort renders
//! (the registry with every optional part switched on: bandwidth buckets, directory cache,
//! directory server, and a thread named like a shard so that the CPU family appears).
//! The checker itself is tested on expressions that name families Fors does not have.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use fors::metrics::MetricsRegistry;

mod skip_common;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/fors.json");

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// Aggregation operators: they may be followed by `by (…)` before their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// Removes every `open … close` span (not nested across kinds; `{}` and `[]` never nest in
/// PromQL, and quoted strings are removed first).
fn strip_spans(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// Removes `"…"` strings (label values, regexes).
fn strip_strings(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_str = false;
    let mut escaped = false;
    for c in s.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let s = strip_strings(expr);
    let s = strip_spans(&s, '{', '}');
    let s = strip_spans(&s, '[', ']');
    let chars: Vec<char> = s.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The label list after `by`/`without`/`on`/`ignoring`/`group_*` is not metric names.
    let mut skip_next_parens = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number or a duration (1e9, 0.5, 5m).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let is_call = chars.get(j) == Some(&'(');
            if KEYWORDS.contains(&word.as_str()) {
                skip_next_parens = is_call
                    || matches!(
                        word.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
            } else if !is_call && !AGGREGATIONS.contains(&word.as_str()) {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_next_parens {
            // Skip the label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_next_parens = false;
        }
        i += 1;
    }
    names
}

/// Every PromQL expression in the dashboard: targets' `expr`, and the metric of
/// `label_values(metric, label)` template queries.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        ("definition", serde_json::Value::String(d)) => {
                            if let Some(rest) = d.strip_prefix("label_values(") {
                                let metric = rest.split([',', ')']).next().unwrap_or("");
                                out.push(metric.trim().to_string());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

/// Family names the MetricsPort renders, with histogram sample suffixes (the latency
/// histograms as a relay renders them once they have observations).
fn exported_names() -> BTreeSet<String> {
    let text = full_render(true);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The MetricsPort's text with every optional part on; with `histograms`, an observation
/// in each latency histogram too (a family is rendered only once observed).
fn full_render(histograms: bool) -> String {
    use fors::shard::{BwRates, SharedBudget};
    let rates = BwRates {
        rate: 1 << 20,
        burst: 2 << 20,
        relay_rate: 0,
        relay_burst: 0,
    };
    let reg = MetricsRegistry::new(2, Instant::now()).with_bandwidth(SharedBudget::new(
        2,
        rates,
        Instant::now(),
    ));
    reg.set_dircache(fors::dircache::SharedStore::default());
    reg.set_dir_server(Arc::new(fors::relay::dirserver::DirServerStats::default()));
    // The CPU family is read from procfs for threads named like shards.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let shard = std::thread::Builder::new()
        .name("fors-shard-0".into())
        .spawn(move || {
            let t = Instant::now();
            while t.elapsed().as_millis() < 5 {}
            ready_tx.send(()).unwrap();
            let _ = done_rx.recv();
        })
        .unwrap();
    ready_rx.recv().unwrap();
    if histograms {
        let l = reg.latency(1).unwrap();
        l.onionskin_batch
            .observe(std::time::Duration::from_micros(700));
        l.exit_connect.observe(std::time::Duration::from_secs(9));
        l.cell_queue_delay
            .observe_n(std::time::Duration::from_micros(40), 64);
    }
    let text = reg.render(Instant::now());
    done_tx.send(()).unwrap();
    shard.join().unwrap();
    text
}

/// Prometheus's own parser (`promtool check metrics`) reads the whole exposition: it may
/// complain about naming conventions (C tor's `tor_relay_traffic_bytes` is a counter
/// without `_total`, by C tor's choice) but must find no parse error.
#[test]
fn promtool_parses_the_whole_exposition() {
    if !skip_common::have("promtool", "--version") {
        skip_common::skip(
            "promtool_parses_the_whole_exposition",
            "promtool is not installed (apt-get install prometheus)",
        );
        return;
    }
    let text = full_render(true);
    assert!(text.contains("# TYPE fors_relay_exit_connect_seconds histogram"));
    assert!(text.contains("# TYPE fors_relay_cell_queue_delay_seconds histogram"));
    assert!(text.contains("fors_shard_cpu_seconds_total{shard=\"0\"} "));
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool:\n{report}");
    // Exit 0: clean; 3: lint remarks only; 1: the text did not parse.
    assert!(
        !report.contains("error while linting") && out.status.code() != Some(1),
        "promtool could not parse the exposition: {report}"
    );
    // Newer names follow the conventions: any lint remark is about a name kept as it is
    // (C tor's families; the fors_shard_* counters, named after ShardMetrics fields).
    for remark in report.lines().filter(|l| !l.trim().is_empty()) {
        let name = remark.split_whitespace().next().unwrap_or("");
        assert!(
            name.starts_with("tor_relay_")
                || (name.starts_with("fors_shard_") && !name.contains("_seconds")),
            "unexpected promtool remark: {remark}"
        );
    }
}

/// Names queried by `exprs` that `exported` lacks.
fn unknown_names(exprs: &[String], exported: &BTreeSet<String>) -> BTreeSet<String> {
    exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|n| !exported.contains(n))
        .collect()
}

#[test]
fn the_checker_reads_promql() {
    let n = metric_names(
        r#"sum by (reason, shard) (rate(fors_relay_all_shards_circuits_killed_total{instance=~"$instance",reason!="x"}[5m])) / 1e9 > 0.5 and on (instance) tor_relay_flag{type="Running"} unless ignoring(shard) fors_x:y offset 5m"#,
    );
    let want: BTreeSet<String> = [
        "fors_relay_all_shards_circuits_killed_total",
        "tor_relay_flag",
        "fors_x:y",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(n, want);
    // A name Fors does not export is reported: the check can fail.
    let exported = exported_names();
    let bad = unknown_names(
        &[
            "rate(tor_relay_load_onionskins_total[5m])".to_string(),
            "fors_relay_circuits_open".to_string(),
        ],
        &exported,
    );
    assert_eq!(
        bad.into_iter().collect::<Vec<_>>(),
        ["tor_relay_load_onionskins_total"]
    );
}

#[test]
fn every_series_the_dashboard_queries_is_exported() {
    let text = std::fs::read_to_string(DASHBOARD).expect("contrib/grafana/fors.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 30, "only {} expressions", exprs.len());
    for e in &exprs {
        assert!(!metric_names(e).is_empty(), "expression reads nothing: {e}");
    }
    let exported = exported_names();
    let unknown = unknown_names(&exprs, &exported);
    assert!(
        unknown.is_empty(),
        "the dashboard queries series Fors does not export: {unknown:?}"
    );
    // The areas the dashboard is for are all there.
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for needed in [
        "tor_relay_traffic_bytes",
        "fors_shard_cpu_seconds_total",
        "tor_relay_circuits_total",
        "fors_relay_exit_streams_open",
        "tor_relay_dos_total",
        "fors_dircache_documents",
        "fors_shard_slots_authenticated_in_use",
        "tor_relay_flag",
        "fors_relay_all_shards_cell_queue_delay_seconds_bucket",
        "fors_relay_cell_queue_delay_seconds_bucket",
    ] {
        assert!(queried.contains(needed), "dashboard lacks {needed}");
    }
    // Every panel with targets has a title and the dashboard's data source variable, and
    // every variable an expression uses is defined.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"instance"),
        "{vars:?}"
    );
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p.get("targets").is_some()) {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
    for e in &exprs {
        for (i, _) in e.match_indices('$') {
            let var: String = e[i + 1..]
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(vars.contains(&var.as_str()), "undefined ${var} in {e}");
        }
    }
}
