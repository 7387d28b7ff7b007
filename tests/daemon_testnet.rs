//! The daemon against real C tor 0.4.9 directory authorities on loopback (scripts/testnet.py,
//! a private network; nothing leaves the machine): the control plane builds, self-checks and
//! uploads the descriptor, every authority stores it (confirmed by fetching it back), their
//! reachability test opens a channel to our ORPort, and the relay fetches and verifies the
//! consensus and reports that it is listed as Running Valid; then a C tor client sends data
//! through a Fors middle and a Fors exit, checked byte for byte.
//!
//! Exit DNS: the Fors exit's `ServerDNSResolvConfFile` names a private unbound (loopback, no
//! recursion) serving `fors.test.`; a SOCKS connect to `web.fors.test` (→ 127.0.0.2) goes
//! through the Fors exit and echoes data, and `nope.fors.test` (NXDOMAIN) comes back as
//! SOCKS5 "host unreachable", which is what C tor makes of END RESOLVEFAILED.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET`. The network
//! is stopped (by pid, by the script) when the test ends, pass or fail.

mod daemon_common;
mod dns_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use daemon_common::private_net::{client_ports, start_echo_server, testnet, testnet_skip_reason};
use daemon_common::{
    free_port_range_base, testnet_script, wait_for_file_line, TempDir, TestnetGuard,
};
use fors_testkit::socks::{Socks5, SocksReply};

#[test]
fn publishes_to_c_tor_authorities_and_reports_its_listing() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(
            "publishes_to_c_tor_authorities_and_reports_its_listing",
            &why,
        );
        return;
    }
    let tmp = TempDir::new("daemon-testnet");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    // The exit's resolver: `web.fors.test` is where the echo server below listens.
    let zone = format!("{}web IN A 127.0.0.2\n", dns_common::FORS_TEST_ZONE);
    // Query logging shows the exit really asked (its 0x20 case is random: compare lowercased).
    let unbound = dns_common::Unbound::start(&zone, &["log-queries: yes"]);
    let resolv = tmp.path().join("exit-resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\n", unbound.addr)).unwrap();
    // On 127.0.0.2: not a relay address, inside the exits' policy.
    let echo = start_echo_server("127.0.0.2");
    // The middle's ControlPort (no authentication configured: NULL auth, loopback only).
    let control_port = daemon_common::free_port();
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args([
            "up",
            "--fors",
            "middle",
            "--fors",
            "exit",
            "--middles",
            "1",
            "--exits",
            "1",
        ])
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        // Replaces the script's own resolv.conf line (the last value wins).
        .arg("--slot-option")
        .arg(format!(
            "forsexit1 ServerDNSResolvConfFile {}",
            resolv.display()
        ))
        .arg("--slot-option")
        .arg(format!("forsmiddle1 ControlPort 127.0.0.1:{control_port}"))
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    let log = dir.join("forsmiddle1/stdout.log");
    let exit_log = dir.join("forsexit1/stdout.log");
    let t = Duration::from_secs(120);
    wait_for_file_line(&log, "the relay is running", t);
    for auth in ["auth0", "auth1", "auth2"] {
        let l = wait_for_file_line(&log, &format!("Authority {auth} ("), t);
        assert!(l.contains("descriptor accepted"), "{l}");
    }
    wait_for_file_line(&log, "Our descriptor is stored by 3 of 3 authorities", t);
    // The authorities' reachability test opens a channel to our ORPort (TLS + link
    // handshake); once it succeeds they vote us Running, and the relay says so.
    let l = wait_for_file_line(
        &log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    assert!(l.contains(" Running") && l.contains(" Valid"), "{l}");
    // The authorities' required-relay-protocols (C tor 0.4.9's list) against what Fors
    // implements: nothing is missing now that the onion-service roles work on every shard
    // count (`relay::publish::Directory::check_protocols` would say so at error level).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("listed as required in the consensus is not supported"),
        "{text}"
    );
    // What nyx reads: our own consensus entry through the ControlPort.
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("network.json")).unwrap()).unwrap();
    let fp = net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nick"] == "forsmiddle1")
        .and_then(|r| r["fingerprint"].as_str())
        .unwrap()
        .to_string();
    let ns = control_getinfo(control_port, &format!("ns/id/{fp}"));
    assert!(ns.contains("\nr forsmiddle1 "), "{ns}");
    let s_line = ns
        .lines()
        .find(|l| l.starts_with("s "))
        .unwrap_or_else(|| panic!("{ns}"));
    assert!(
        s_line.contains("Running") && s_line.contains("Valid"),
        "{ns}"
    );
    assert!(!s_line.contains("Exit"), "{ns}");
    let l = wait_for_file_line(
        &exit_log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    assert!(l.contains("Exit") && l.contains(" Running"), "{l}");

    // A C tor client's traffic through the Fors middle and the Fors exit to a loopback HTTP
    // server, SHA-256 checked both ways by the script.
    let run = |args: &[&str]| testnet(&dir, args);
    run(&["wait", "--pluggable-only", "--timeout", "180"]);
    run(&[
        "traffic",
        "--middle",
        "forsmiddle1",
        "--exit",
        "forsexit1",
        "--down-mb",
        "4",
        "--up-mb",
        "4",
        "--io-timeout",
        "120",
    ]);
    // Exit DNS through the real relay. `traffic` left the client pinned to the Fors middle
    // and exit, so these streams leave through forsexit1.
    let l = wait_for_file_line(&exit_log, "Exit DNS: nameserver", Duration::from_secs(1));
    assert!(l.contains(&unbound.addr.to_string()), "{l}");
    let (socks, _) = client_ports(&dir);
    for round in 0..2 {
        // The second round is answered from the exit's cache.
        let mut s = Socks5::local(socks, Duration::from_secs(180))
            .connect("web.fors.test", echo.port())
            .unwrap_or_else(|e| panic!("round {round}: {e} for web.fors.test"));
        let msg = format!("hello through a hostname, round {round}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    // NXDOMAIN → END RESOLVEFAILED → SOCKS5 reply 4 ("host unreachable").
    match Socks5::local(socks, Duration::from_secs(180)).connect("nope.fors.test", echo.port()) {
        Ok(_) => panic!("nope.fors.test connected"),
        Err(e) => assert_eq!(
            e.reply(),
            Some(SocksReply::HostUnreachable),
            "SOCKS answer for an NXDOMAIN name: {e}"
        ),
    }
    let ub_log = std::fs::read_to_string(unbound.dir.join("unbound.log"))
        .unwrap()
        .to_ascii_lowercase();
    for q in ["web.fors.test. a in", "nope.fors.test. a in"] {
        assert!(ub_log.contains(q), "unbound never saw {q:?}:\n{ub_log}");
    }
    assert_eq!(unbound.stop_and_count_recursions(), 0, "unbound recursed");

    for l in [&log, &exit_log] {
        let text = std::fs::read_to_string(l).unwrap();
        assert!(
            daemon_common::unexpected_err_lines(&text).is_empty(),
            "{text}"
        );
        assert!(!text.contains("does not serve our descriptor"), "{text}");
    }
}

/// `AUTHENTICATE` (NULL) then `GETINFO key` on a ControlPort; the whole reply text.
fn control_getinfo(port: u16, key: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "AUTHENTICATE\r\nGETINFO {key}\r\nQUIT\r\n").unwrap();
    let mut out = String::new();
    // QUIT makes the server close after its answers; a timeout ends the read too.
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("250 OK\r\n"), "{out}");
    out.replace("\r\n", "\n")
}
