//! OutboundBindAddress* on a live private network, inside a network namespace the test makes
//! (scripts/netns.py: only `lo`, no route off the machine). C tor never binds a connection to
//! a loopback destination, and neither does Fors, so the addresses must not be loopback ones:
//! the namespace's `lo` gets documentation addresses (RFC 5737 TEST-NET-2), which nothing
//! outside it can reach. In it: C tor 0.4.9 authorities, relays and client, a Fors middle and
//! a Fors exit whose policy accepts port 80 (`--policy-exit`, allowed only in such a
//! namespace):
//!
//! * `forsexit1` has `OutboundBindAddressExit 198.51.100.7` (and `OutboundBindAddress
//!   198.51.100.6`): a server on 198.51.100.9:80, reached by the C tor client through it, sees
//!   the connection come from 198.51.100.7 (the Exit option wins for exit connections);
//! * `forsmiddle1` has `OutboundBindAddressOR 198.51.100.8`, but its channel to the exit goes
//!   to the exit's 127.0.0.1 ORPort, a loopback destination: the exit sees it come from
//!   127.0.0.1, unbound, as C tor would (`connection_connect`).
//!
//! Skipped (SKIPPED printed) without tor, tor-gencert, python3, unshare, nsenter or ip, or
//! without root where user namespaces are unavailable; with `CI=true` (run as root) that is a
//! failure. Everything started is stopped by pid (the TestnetGuard), then the namespace goes.

mod daemon_common;

use std::time::Duration;

use daemon_common::{
    isolated_netns_for, testnet_in as testnet, testnet_script, wait_for_file_line, TempDir,
    TestnetGuard,
};

const ANY_BIND: &str = "198.51.100.6";
const EXIT_BIND: &str = "198.51.100.7";
const OR_BIND: &str = "198.51.100.8";
const SERVER: &str = "198.51.100.9";

/// Inside the namespace: listens on SERVER:80, pins the client's path to the Fors middle and
/// exit, opens one stream to the server through it (`testnet.py probe`), and prints the
/// address every accepted connection came from. Bounded: the listener times out, the probe
/// has its own timeouts and the whole script a deadline.
const SCRIPT: &str = r#"
import socket, subprocess, sys, threading
testnet, netdir, server = sys.argv[1], sys.argv[2], sys.argv[3]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((server, 80))
l.listen(8)
l.settimeout(240)
peers = []
def accept():
    try:
        while True:
            c, a = l.accept()
            peers.append(a[0])
            c.close()
    except OSError:
        pass
threading.Thread(target=accept, daemon=True).start()
run = lambda *a: subprocess.run([sys.executable, testnet, "--dir", netdir] + list(a), timeout=240).returncode
print("PIN", run("pin", "--middle", "forsmiddle1", "--exit", "forsexit1", "--clear"), flush=True)
print("PROBE", run("probe", server + ":80", "--exit", "forsexit1", "--io-timeout", "120"), flush=True)
print("PEERS", " ".join(peers), flush=True)
"#;

#[test]
fn outgoing_connections_come_from_the_bind_addresses() {
    const TEST: &str = "outgoing_connections_come_from_the_bind_addresses";
    let Some(ns) = isolated_netns_for(
        TEST,
        &[
            ("tor", "--version"),
            ("tor-gencert", "--help"),
            ("ip", "-V"),
        ],
    ) else {
        return;
    };
    for addr in [ANY_BIND, EXIT_BIND, OR_BIND, SERVER] {
        let st = ns
            .command("ip")
            .args(["addr", "add", &format!("{addr}/32"), "dev", "lo"])
            .status()
            .unwrap();
        assert!(st.success(), "ip addr add {addr} in the namespace");
    }
    let tmp = TempDir::new("daemon-outbound");
    let dir = tmp.path().join("net");
    // Dropped before `ns`: stops every process of the network by pid.
    let _net = TestnetGuard { dir: &dir };
    let options = [
        format!("forsexit1 OutboundBindAddress {ANY_BIND}"),
        format!("forsexit1 OutboundBindAddressExit {EXIT_BIND}"),
        "forsexit1 Log debug stdout".into(),
        "forsexit1 SafeLogging 0".into(),
        format!("forsmiddle1 OutboundBindAddressOR {OR_BIND}"),
    ];
    let mut args: Vec<&str> = vec![
        "up",
        "--fors",
        "middle",
        "--fors",
        "exit",
        "--middles",
        "1",
        "--exits",
        "1",
        // Inside the namespace every port is free.
        "--base-port",
        "15100",
        "--fors-bin",
        env!("CARGO_BIN_EXE_fors"),
        "--policy-exit",
        "forsexit1 80",
    ];
    for o in &options {
        args.extend(["--slot-option", o.as_str()]);
    }
    let up = testnet(&ns, &dir, &args);
    assert!(up.status.success(), "testnet up failed");
    let w = testnet(&ns, &dir, &["wait", "--timeout", "300"]);
    assert!(w.status.success(), "testnet wait failed");

    let out = ns
        .command("python3")
        .args([
            "-c",
            SCRIPT,
            testnet_script().to_str().unwrap(),
            dir.to_str().unwrap(),
            SERVER,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("PIN 0"), "pinning failed: {text}");
    assert!(
        text.contains("PROBE 0"),
        "the stream through the Fors exit failed: {text}"
    );
    let peers = text
        .lines()
        .find_map(|l| l.strip_prefix("PEERS"))
        .expect("PEERS line")
        .split_whitespace()
        .collect::<Vec<_>>();
    assert!(!peers.is_empty(), "the server saw no connection: {text}");
    assert!(
        peers.iter().all(|p| *p == EXIT_BIND),
        "exit connections came from {peers:?}, not OutboundBindAddressExit {EXIT_BIND}"
    );

    // The middle's channel to the exit's loopback ORPort: not bound (C `connection_connect`).
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("network.json")).unwrap()).unwrap();
    let middle_fp = net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nick"] == "forsmiddle1")
        .and_then(|r| r["fingerprint"].as_str())
        .unwrap()
        .to_string();
    let line = wait_for_file_line(
        &dir.join("forsexit1/stdout.log"),
        &format!("channel open with relay ${middle_fp} at "),
        Duration::from_secs(30),
    );
    assert!(
        line.contains(" at 127.0.0.1 (link v"),
        "a channel to a loopback ORPort must not be bound: {line}"
    );
}
