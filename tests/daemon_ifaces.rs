//! ExitPolicyRejectLocalInterfaces on a running relay, in a network namespace the test makes
//! (scripts/netns.py: only `lo`, no route off the machine). The namespace's `lo` gets a
//! public-looking documentation address, 198.51.100.7/32 (RFC 5737 TEST-NET-2, nothing can
//! reach it from there). A Fors exit started there with `ExitPolicy accept *:80` and
//! `ExitPolicyRejectLocalInterfaces 1` must reject it (its ControlPort's
//! `GETINFO exit-policy/full`, as C tor's `get_interface_address6_list` feeds its policy);
//! without the option it must not. Everything inside the namespace is driven by one bounded
//! python3 script, which stops the relay it started.
//!
//! Skipped (SKIPPED printed) without python3, unshare or nsenter, or without root where user
//! namespaces are unavailable; with `CI=true` (run as root) that is a failure.

mod daemon_common;

use std::net::SocketAddr;
use std::process::Output;

use daemon_common::{free_port, isolated_netns_for, IsolatedNetns, TempDir};
use fors_testkit::torrc::{DirAuthority, Torrc};

const IFACE_ADDR: &str = "198.51.100.7";

/// Adds the address to the namespace's `lo`, runs fors with `extra` in its torrc, asks its
/// ControlPort for the exit policy, stops it; prints the policy (or what went wrong).
const SCRIPT: &str = r#"
import os, signal, socket, subprocess, sys, time
fors, torrc_dir, addr, ctl = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
subprocess.run(["ip", "addr", "add", addr + "/32", "dev", "lo"], check=False)
log = open(os.path.join(torrc_dir, "fors.log"), "w")
p = subprocess.Popen([fors, "-f", os.path.join(torrc_dir, "torrc")], stdout=log, stderr=log)
try:
    end = time.time() + 60
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", ctl), timeout=2)
            break
        except OSError:
            if time.time() > end or p.poll() is not None:
                print("NO CONTROLPORT"); sys.exit(3)
            time.sleep(0.2)
    s.settimeout(10)
    s.sendall(b"AUTHENTICATE\r\nGETINFO exit-policy/full\r\nQUIT\r\n")
    out = b""
    end = time.time() + 20
    while time.time() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    print(out.decode(errors="replace"))
finally:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
"#;

fn policy_in_namespace(ns: &IsolatedNetns, extra: &str) -> String {
    let tmp = TempDir::new("daemon-ifaces");
    let ctl = free_port();
    let torrc = Torrc::test_relay("ForsIfaces", tmp.path())
        .or_port(free_port())
        .num_cpus(1)
        .dir_authority(&DirAuthority::fake_at(
            0,
            SocketAddr::from(([127, 0, 0, 1], 1)),
            1,
        ))
        .control_port(ctl)
        .exit_relay(true)
        .exit_policy("accept *:80")
        .exit_policy("reject *:*")
        .raw(extra)
        .render();
    std::fs::write(tmp.path().join("torrc"), torrc).unwrap();
    let out: Output = ns
        .command("python3")
        .args([
            "-c",
            SCRIPT,
            env!("CARGO_BIN_EXE_fors"),
            tmp.path().to_str().unwrap(),
            IFACE_ADDR,
            &ctl.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = std::fs::read_to_string(tmp.path().join("fors.log")).unwrap_or_default();
    assert!(
        text.contains("250-exit-policy/full") || text.contains("250+exit-policy/full"),
        "no exit policy from the ControlPort:\n{text}\nstderr: {}\nfors log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn interface_addresses_are_rejected_on_request() {
    const TEST: &str = "interface_addresses_are_rejected_on_request";
    let Some(ns) = isolated_netns_for(TEST, &[("ip", "-V")]) else {
        return;
    };
    let reject = format!("reject {IFACE_ADDR}:*");
    let with = policy_in_namespace(&ns, "ExitPolicyRejectLocalInterfaces 1\n");
    assert!(with.contains(&reject), "{reject} missing:\n{with}");
    let without = policy_in_namespace(&ns, "");
    assert!(
        !without.contains(&reject),
        "{reject} present without the option:\n{without}"
    );
    assert!(without.contains("accept *4:80"), "{without}");
}
