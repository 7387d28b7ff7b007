//! Congestion control (prop 324) live: a C tor 0.4.9 client on the private loopback network
//! (scripts/testnet.py; nothing leaves the machine) downloads and uploads through a Fors
//! exit. The client asks an exit that advertises FlowCtrl=2 + Relay=4 for CC in ntor-v3;
//! Fors accepts (consensus `cc_alg` defaults to Vegas), so the client's CIRC_BW control
//! events for those circuits carry its CC state (`SS=… CWND=… RTT=…`, C
//! `congestion_control_get_control_port_fields`). The test collects them during the
//! transfers, SHA-256 checked by the script, and requires CC fields on a circuit whose exit
//! is the Fors relay.
//!
//! Size per direction: `FORS_CC_MB` (default 8). Skipped without `tor`, `tor-gencert` or
//! python3, or with `FORS_SKIP_TESTNET`. The network is stopped by pid when the test ends.

mod daemon_common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use daemon_common::private_net::{testnet, testnet_skip_reason};
use daemon_common::{
    free_port, free_port_range_base, http_get, testnet_script, wait_for_file_line, TempDir,
    TestnetGuard,
};

/// Collects the client's CIRC_BW events into `out` until `stop` exists, then appends the
/// client's circuit-status (`STATUS <id> <state> <path>`), using testnet.py's controller.
const COLLECTOR: &str = r#"
import os, socket, sys, time
scripts, run_dir, out_path, stop = sys.argv[1:5]
sys.path.insert(0, scripts)
import testnet
net = testnet.load_network(run_dir)
c = testnet.client_controller(net)
c.ok("SETEVENTS CIRC_BW")
c.sock.settimeout(0.5)
buf = b""
with open(out_path, "w") as out:
    out.write("READY\n"); out.flush()
    while not os.path.exists(stop):
        try:
            d = c.sock.recv(65536)
        except socket.timeout:
            continue
        if not d:
            break
        buf += d
        *lines, buf = buf.split(b"\r\n")
        for l in lines:
            out.write(l.decode(errors="replace") + "\n")
        out.flush()
    c.close()
    c = testnet.client_controller(net)
    for text, data in c.ok("GETINFO circuit-status"):
        for row in (data or "").splitlines():
            out.write("STATUS " + row + "\n")
    c.close()
"#;

struct Collector {
    child: Child,
    stop: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Collector {
    fn start(dir: &Path, tmp: &Path) -> Collector {
        let out = tmp.join("circ_bw.log");
        let stop = tmp.join("circ_bw.stop");
        let scripts = testnet_script().parent().unwrap().to_path_buf();
        let child = Command::new("python3")
            .arg("-c")
            .arg(COLLECTOR)
            .arg(&scripts)
            .arg(dir)
            .arg(&out)
            .arg(&stop)
            .spawn()
            .unwrap();
        wait_for_file_line(&out, "READY", Duration::from_secs(30));
        Collector { child, stop, out }
    }

    fn finish(mut self) -> String {
        std::fs::write(&self.stop, b"").unwrap();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out).unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn c_tor_client_runs_congestion_control_through_a_fors_exit() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(
            "c_tor_client_runs_congestion_control_through_a_fors_exit",
            &why,
        );
        return;
    }
    let mb = std::env::var("FORS_CC_MB").unwrap_or_else(|_| "8".into());
    let tmp = TempDir::new("daemon-cc");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let metrics_port = free_port();
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--fors", "exit", "--middles", "2", "--exits", "1"])
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(std::env::var("FORS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fors").into()))
        .arg("--slot-option")
        .arg(format!("forsexit1 MetricsPort 127.0.0.1:{metrics_port}"))
        .arg("--slot-option")
        .arg("forsexit1 MetricsPortPolicy accept 127.0.0.1")
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    let exit_log = dir.join("forsexit1/stdout.log");
    let l = wait_for_file_line(
        &exit_log,
        "Fors is listed in the consensus",
        Duration::from_secs(300),
    );
    assert!(l.contains("Exit") && l.contains(" Running"), "{l}");
    let run = |args: &[&str]| testnet(&dir, args);
    run(&["wait", "--pluggable-only", "--timeout", "240"]);

    let collector = Collector::start(&dir, tmp.path());
    run(&[
        "traffic",
        "--exit",
        "forsexit1",
        "--down-mb",
        &mb,
        "--up-mb",
        &mb,
        "--io-timeout",
        "300",
    ]);
    // CIRC_BW is emitted once a second for busy circuits; let the last one arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let events = collector.finish();

    // Circuits whose last hop is the Fors exit.
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("network.json")).unwrap()).unwrap();
    let fors_fp = net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nick"] == "forsexit1")
        .and_then(|r| r["fingerprint"].as_str())
        .unwrap()
        .to_ascii_uppercase();
    let fors_circs: Vec<&str> = events
        .lines()
        .filter_map(|l| l.strip_prefix("STATUS "))
        .filter_map(|row| {
            let mut it = row.split(' ');
            let id = it.next()?;
            let _state = it.next()?;
            let path = it.next()?;
            let last = path.rsplit(',').next()?;
            last.to_ascii_uppercase().contains(&fors_fp).then_some(id)
        })
        .collect();
    assert!(
        !fors_circs.is_empty(),
        "no circuit through forsexit1:\n{events}"
    );
    // CC fields on busy circuits through the Fors exit: the client negotiated CC with it.
    let cc_lines: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("650 CIRC_BW "))
        .filter(|l| field(l, "ID").is_some_and(|id| fors_circs.contains(&id)))
        .filter(|l| field(l, "CWND").is_some() && field(l, "SS").is_some())
        .collect();
    eprintln!(
        "CIRC_BW with CC fields through forsexit1 ({}):",
        cc_lines.len()
    );
    for l in cc_lines.iter().take(40) {
        eprintln!("  {l}");
    }
    assert!(
        !cc_lines.is_empty(),
        "no CIRC_BW with SS=/CWND= for circuits {fors_circs:?}:\n{events}"
    );
    // Data moved on such a circuit, and the window left its initial 124 cells.
    assert!(cc_lines.iter().any(|l| {
        field(l, "READ").and_then(|v| v.parse::<u64>().ok()) > Some(0)
            || field(l, "WRITTEN").and_then(|v| v.parse::<u64>().ok()) > Some(0)
    }));
    assert!(
        cc_lines
            .iter()
            .any(|l| field(l, "CWND").and_then(|v| v.parse::<u64>().ok()) != Some(124)),
        "cwnd never moved"
    );
    // The exit's own count: circuits that negotiated CC (summed over shards).
    let m = http_get(
        format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        "/metrics",
    );
    let sum = |name: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    eprintln!(
        "forsexit1 MetricsPort: circuits_created {} circuits_cc {} xoff_sent {} xon_sent {}",
        sum("fors_relay_circuits_created_total"),
        sum("fors_relay_circuits_cc_total"),
        sum("fors_relay_stream_xoff_sent_total"),
        sum("fors_relay_stream_xon_sent_total")
    );
    assert!(sum("fors_relay_circuits_cc_total") >= 2, "{m}");
    let text = std::fs::read_to_string(&exit_log).unwrap();
    assert!(
        daemon_common::unexpected_err_lines(&text).is_empty(),
        "{text}"
    );
}
