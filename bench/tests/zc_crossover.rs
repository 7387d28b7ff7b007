//! `fors-zc-crossover` end to end with a tiny volume: both modes are reported, every byte the
//! shard sent reached the sink, and the send counters match the mode (copying sends only with
//! zero-copy off; zero-copy sends, with at most one "copied" notification each, with it on),
//! and the kernel-verdict probe accounted for every zero-copy send it made.

use std::process::Command;

use serde_json::Value;

#[test]
fn crossover_tool_runs_both_modes_and_counts_every_byte() {
    let volume: u64 = 3 << 20;
    let sizes = [4096u64, 16384];
    let out = Command::new(env!("CARGO_BIN_EXE_fors-zc-crossover"))
        .args([
            "--sizes",
            "4096,16384",
            "--volume-mb",
            "3",
            "--repeats",
            "1",
            "--cap-secs",
            "60",
            "--json",
        ])
        .output()
        .expect("run fors-zc-crossover");
    assert!(
        out.status.success(),
        "tool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["volume_bytes"].as_u64(), Some(volume));
    let points = report["points"].as_array().expect("points");
    assert_eq!(points.len(), sizes.len() * 2, "one point per size and mode");
    // The kernel's own verdict, from MSG_ZEROCOPY notifications: every probe send notified.
    let probes = report["copy_probe"].as_array().expect("copy_probe");
    assert_eq!(probes.len(), sizes.len());
    for p in probes {
        // 256 writes; a partial send adds a call (seen under load: 257), each notified.
        let sends = p["sends"].as_u64().unwrap();
        assert!(sends >= 256, "fewer send calls than writes: {p}");
        let notified = p["sends_notified"].as_u64().unwrap();
        assert_eq!(
            notified, sends,
            "not every zero-copy send was notified: {p}"
        );
        assert!(p["sends_copied"].as_u64().unwrap() <= notified);
    }
    for &size in &sizes {
        for zero_copy in [false, true] {
            let p = points
                .iter()
                .find(|p| {
                    p["write_size"].as_u64() == Some(size)
                        && p["zero_copy"].as_bool() == Some(zero_copy)
                })
                .unwrap_or_else(|| panic!("no point for S={size} zero_copy={zero_copy}"));
            let runs = p["runs"].as_array().expect("runs");
            assert_eq!(runs.len(), 1);
            let r = &runs[0];
            let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} missing"));
            assert_eq!(r["capped"].as_bool(), Some(false), "hit the time cap: {r}");
            assert_eq!(n("bytes_sent"), volume, "shard sent all: {r}");
            assert_eq!(n("bytes_received"), volume, "sink got all: {r}");
            assert!(r["shard_cpu_secs"].as_f64().unwrap() > 0.0, "no CPU: {r}");
            assert!(r["mb_per_sec"].as_f64().unwrap() > 0.0);
            // Every send op carries at most S bytes (send buffers are S bytes).
            let ops = n("send_ops") + n("send_zc_ops");
            assert!(ops >= volume / size, "too few send ops for S={size}: {r}");
            if zero_copy {
                assert_eq!(n("send_ops"), 0, "copying send with threshold = S: {r}");
                assert!(n("send_zc_ops") > 0);
                assert!(n("send_zc_copied") <= n("send_zc_ops"));
            } else {
                assert_eq!(n("send_zc_ops"), 0, "zero-copy send while off: {r}");
                assert_eq!(n("send_zc_copied"), 0);
            }
        }
    }
}
