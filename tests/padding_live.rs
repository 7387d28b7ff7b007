//! Channel padding live, with C tor 0.4.9 clients on the private loopback network
//! (scripts/testnet.py; nothing leaves the machine). A Fors middle slot is the testnet
//! client's pinned guard. What C tor's clients do (C `channel_do_open_actions`): a default
//! client sends no PADDING_NEGOTIATE and expects its guard to pad the link once it carries
//! multi-hop circuits; a client with `ReducedConnectionPadding 1` sends STOP when its link
//! opens. So, on Fors's MetricsPort:
//! * after the default client's traffic through Fors, `fors_relay_padding_cells_sent_total`
//!   grows while the link is idle, and no START or STOP has arrived;
//! * a second client with `ReducedConnectionPadding 1` (same guard) makes
//!   `fors_relay_padding_negotiate_stop_total` reach 1.
//!
//! Skipped without `tor`, `tor-gencert` or python3 (fails under `CI=true`), or with
//! `FORS_SKIP_TESTNET`. The network is stopped by pid when the test ends; the second client
//! is killed by its pid.

mod daemon_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::private_net::{relay_record, testnet, testnet_skip_reason};
use daemon_common::{
    free_port, free_port_range_base, http_get, testnet_script, wait_for_file_line, TempDir,
    TestnetGuard,
};

const SLOT: &str = "forsmiddle1";

/// Sum over shards of a per-shard counter.
fn counter(metrics_port: u16, name: &str) -> u64 {
    let m = http_get(
        format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        "/metrics",
    );
    m.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Polls `name` until `ok` holds or `limit` passes; returns the last value.
fn wait_counter(port: u16, name: &str, limit: Duration, ok: impl Fn(u64) -> bool) -> u64 {
    let end = Instant::now() + limit;
    loop {
        let v = counter(port, name);
        if ok(v) || Instant::now() >= end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A second C tor client: the testnet client's torrc with its own DataDirectory and
/// ports, and `extra` lines. Killed by pid on drop.
struct SecondClient(Child);

impl SecondClient {
    fn start(net_dir: &Path, tmp: &Path, extra: &[&str]) -> SecondClient {
        let net = daemon_common::private_net::network_json(net_dir);
        let c = &net["client"];
        let old_dir = c["data_dir"].as_str().unwrap();
        let torrc = std::fs::read_to_string(c["torrc"].as_str().unwrap()).unwrap();
        let dir = tmp.join("client2");
        std::fs::create_dir_all(&dir).unwrap();
        let mut lines: Vec<String> = torrc
            .lines()
            .filter(|l| {
                !l.starts_with("SocksPort")
                    && !l.starts_with("ControlPort")
                    && !l.starts_with("CookieAuthentication")
            })
            .map(|l| l.replace(old_dir, dir.to_str().unwrap()))
            .collect();
        lines.push(format!("SocksPort 127.0.0.1:{}", free_port()));
        lines.extend(extra.iter().map(|s| s.to_string()));
        let path = dir.join("torrc");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let child = Command::new("tor")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        SecondClient(child)
    }
}

impl Drop for SecondClient {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn c_tor_clients_get_padding_from_their_fors_guard_and_can_stop_it() {
    let test = "c_tor_clients_get_padding_from_their_fors_guard_and_can_stop_it";
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(test, &why);
        return;
    }
    let started = Instant::now();
    let tmp = TempDir::new("padding-live");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let metrics_port = free_port();
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--fors", "middle", "--middles", "2", "--exits", "1"])
        .args(["--entry", SLOT])
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(std::env::var("FORS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fors").into()))
        // A client samples only directory caches as guards (C `node_is_possible_guard`).
        .args(["--slot-option", &format!("{SLOT} DirCache 1")])
        .arg("--slot-option")
        .arg(format!("{SLOT} MetricsPort 127.0.0.1:{metrics_port}"))
        .arg("--slot-option")
        .arg(format!("{SLOT} MetricsPortPolicy accept 127.0.0.1"))
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    let log = dir.join(format!("{SLOT}/stdout.log"));
    wait_for_file_line(
        &log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    testnet(&dir, &["wait", "--pluggable-only", "--timeout", "180"]);
    eprintln!("{test}: network up after {:?}", started.elapsed());

    // Multi-hop circuits through the Fors guard: its link with the client is "used".
    testnet(
        &dir,
        &[
            "traffic",
            "--down-mb",
            "0.05",
            "--up-mb",
            "0.05",
            "--io-timeout",
            "60",
        ],
    );
    let sent_before = counter(metrics_port, "fors_relay_padding_cells_sent_total");
    // A PADDING on the client link each time it stays idle for 1.5-9.5 s (padding-spec §2.3,
    // low + max(X, X)). The link is not idle for long, though: on this network (20 s voting
    // interval) the just-bootstrapped client fetches a consensus and descriptors from its
    // guard every 10-20 s and builds circuits through it, and it pads the link itself once
    // it is used; any cell restarts both ends' clocks (C `channel_timestamp_active`), and
    // each idle gap goes to whichever end's timeout is shorter. Fors wins a gap about half
    // the time and some gaps are too short for either, so one minute can pass without a
    // PADDING of ours (a C tor guard would do the same): wait up to 150 s for the first.
    let sent = wait_counter(
        metrics_port,
        "fors_relay_padding_cells_sent_total",
        Duration::from_secs(150),
        |v| v > sent_before,
    );
    let start = counter(metrics_port, "fors_relay_padding_negotiate_start_total");
    let stop = counter(metrics_port, "fors_relay_padding_negotiate_stop_total");
    eprintln!(
        "{test}: after traffic: padding sent {sent_before} -> {sent}, START {start}, STOP {stop}"
    );
    assert!(
        sent > sent_before,
        "Fors sent no PADDING cell in 150 s on a used client link"
    );
    assert_eq!(
        (start, stop),
        (0, 0),
        "a default C tor client and C tor relays negotiate nothing"
    );

    // A client that reduces padding: STOP on its link to the Fors guard.
    let fp = relay_record(&dir, SLOT)["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let _reduced = SecondClient::start(
        &dir,
        tmp.path(),
        &["ReducedConnectionPadding 1", &format!("EntryNodes ${fp}")],
    );
    let stop = wait_counter(
        metrics_port,
        "fors_relay_padding_negotiate_stop_total",
        Duration::from_secs(60),
        |v| v >= 1,
    );
    eprintln!(
        "{test}: reduced client: STOP {stop}; whole test {:?}",
        started.elapsed()
    );
    assert!(
        stop >= 1,
        "no PADDING_NEGOTIATE STOP from the reduced client"
    );
    assert_eq!(
        counter(metrics_port, "fors_relay_padding_negotiate_start_total"),
        0
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        daemon_common::unexpected_err_lines(&text).is_empty(),
        "{text}"
    );
}
