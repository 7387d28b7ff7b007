//! END EXITPOLICY from a live Fors exit, seen by a C tor client (issue #3).
//!
//! A C tor client cannot judge a hostname against an exit's policy, so it sends the BEGIN for
//! any name to an exit whose policy might accept the port; the exit resolves the name and
//! must refuse the stream with RELAY_END reason EXITPOLICY (6) carrying the address and TTL
//! when the address is rejected (tor-spec §"Opening streams and transferring data"; C
//! `connection_exit_connect` → `connection_edge_end(edge, END_STREAM_REASON_EXITPOLICY)`).
//!
//! Setup, on the private loopback network of scripts/testnet.py (C tor authorities, relays
//! and client): the Fors exit's policy is the testnet's loopback-only policy with
//! `reject 127.0.0.3:*` in front (given as `--ExitPolicy` on its command line by a small
//! wrapper, since the script allows no other policy in a torrc). Its resolver is a private
//! unbound serving `web.fors.test` → 127.0.0.2 (an echo server) and `refused.fors.test` →
//! 127.0.0.3. The client is pinned to the Fors exit.
//!
//! The client's ControlPort (`SETEVENTS STREAM`) must show our stream to `refused.fors.test`
//! sent on a circuit ending at the Fors exit and coming back with `REMOTE_REASON=EXITPOLICY`;
//! nothing may connect to 127.0.0.3; `web.fors.test` through the same exit echoes data before
//! and after. The exit's MetricsPort must count the END EXITPOLICY it sent
//! (`fors_relay_stream_end_sent_total{reason="exitpolicy"}`), the policy refusal, and the
//! resolver's queries and answers.
//!
//! Skipped without tor, tor-gencert, python3 or unbound, or with `FORS_SKIP_TESTNET`.

mod daemon_common;
mod dns_common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use daemon_common::private_net::{
    client_ports, relay_record, start_counting_listener, start_echo_server, testnet,
    testnet_skip_reason, TorControl,
};
use daemon_common::{
    free_port_range_base, http_get, metric, wait_for_file_line, TempDir, TestnetGuard,
};
use fors_testkit::socks::{Socks5, SocksError};

/// The address the exit must refuse, and the rule that refuses it.
const REFUSED_ADDR: &str = "127.0.0.3";
const REFUSE_RULE: &str = "reject 127.0.0.3:*";
const EVENT_LIMIT: Duration = Duration::from_secs(180);

/// A wrapper for `--fors-bin`: runs Fors with `REFUSE_RULE` in front of the exit policy of
/// the torrc it is given. A command-line list option replaces the torrc's list, so the
/// wrapper repeats the torrc's rules after ours; a torrc without ExitPolicy lines is left
/// alone (an added reject alone would leave the default accept behind it).
fn policy_wrapper(dir: &Path) -> PathBuf {
    let path = dir.join("fors-with-refused-address");
    let script = format!(
        "#!/bin/sh\n\
         # Fors with `{REFUSE_RULE}` in front of the torrc's exit policy (test wrapper).\n\
         torrc=\"\"\n\
         prev=\"\"\n\
         for a in \"$@\"; do\n\
         \x20 if [ \"$prev\" = \"-f\" ]; then torrc=\"$a\"; fi\n\
         \x20 prev=\"$a\"\n\
         done\n\
         rules=\"\"\n\
         if [ -n \"$torrc\" ]; then\n\
         \x20 rules=$(awk '/^ExitPolicy /{{sub(/^ExitPolicy /, \"\"); printf \",%s\", $0}}' \"$torrc\")\n\
         fi\n\
         if [ -z \"$rules\" ]; then exec \"{bin}\" \"$@\"; fi\n\
         exec \"{bin}\" \"$@\" --ExitPolicy \"{REFUSE_RULE}$rules\"\n",
        bin = env!("CARGO_BIN_EXE_fors"),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The policy lines of a router descriptor, in order.
fn descriptor_policy(desc: &[String]) -> Vec<String> {
    desc.iter()
        .filter(|l| l.starts_with("accept ") || l.starts_with("reject "))
        .cloned()
        .collect()
}

/// The value of `KEY=` in a control event line.
fn field<'a>(event: &'a str, key: &str) -> Option<&'a str> {
    event
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// `650 STREAM <id> <status> <circ> <target> ...` split into its first fields.
fn stream_event(e: &str) -> Option<(&str, &str, &str, &str)> {
    let mut w = e.split_whitespace();
    if w.next()? != "650" || w.next()? != "STREAM" {
        return None;
    }
    Some((w.next()?, w.next()?, w.next()?, w.next()?))
}

/// Opens a SOCKS stream to `host:port`, follows it in the STREAM events: its id and the
/// circuit it was sent on, and the SOCKS result (joined, bounded by the SOCKS wait).
fn watch_stream(
    ctl: &mut TorControl,
    socks: u16,
    host: &str,
    port: u16,
) -> (
    String,
    String,
    std::thread::JoinHandle<Result<std::net::TcpStream, SocksError>>,
) {
    let h = host.to_string();
    let socks_thread = std::thread::spawn(move || {
        Socks5::local(socks, Duration::from_secs(150)).connect(&h, port)
    });
    let target = format!("{host}:{port}");
    let new = ctl
        .wait_event(EVENT_LIMIT, |e| {
            stream_event(e).is_some_and(|(_, st, _, t)| st == "NEW" && t == target)
        })
        .unwrap_or_else(|| panic!("no STREAM NEW for {target}: {:?}", ctl.events));
    let id = stream_event(&new).unwrap().0.to_string();
    let sent = ctl
        .wait_event(EVENT_LIMIT, |e| {
            stream_event(e).is_some_and(|(i, st, _, _)| i == id && st == "SENTCONNECT")
        })
        .unwrap_or_else(|| panic!("stream {id} to {target} never sent: {:?}", ctl.events));
    let circ = stream_event(&sent).unwrap().2.to_string();
    (id, circ, socks_thread)
}

/// An echo round trip over `s`.
fn echo_round_trip(s: &mut std::net::TcpStream, msg: &str) {
    s.write_all(msg.as_bytes()).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg.as_bytes());
}

#[test]
fn exit_policy_refusal_after_resolving_reaches_the_c_tor_client() {
    if let Some(why) = testnet_skip_reason(&[dns_common::UNBOUND_BIN]) {
        daemon_common::skip_common::skip(
            "exit_policy_refusal_after_resolving_reaches_the_c_tor_client",
            &why,
        );
        return;
    }
    let tmp = TempDir::new("exitpolicy-net");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let echo = start_echo_server("127.0.0.2");
    // If Fors wrongly let the refused address through, it would connect here.
    let refused_hits =
        start_counting_listener(SocketAddr::new(REFUSED_ADDR.parse().unwrap(), echo.port()));
    let zone = format!(
        "{}web IN A 127.0.0.2\nrefused IN A {REFUSED_ADDR}\n",
        dns_common::FORS_TEST_ZONE
    );
    let unbound = dns_common::Unbound::start(&zone, &["log-queries: yes"]);
    let resolv = tmp.path().join("exit-resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\n", unbound.addr)).unwrap();
    let wrapper = policy_wrapper(tmp.path());
    let base = free_port_range_base().to_string();
    let resolv_opt = format!("forsexit1 ServerDNSResolvConfFile {}", resolv.display());
    testnet(
        &dir,
        &[
            "up",
            "--fors",
            "exit",
            "--middles",
            "1",
            "--exits",
            "1",
            "--exit",
            "forsexit1",
            "--base-port",
            &base,
            "--fors-bin",
            wrapper.to_str().unwrap(),
            "--slot-option",
            &resolv_opt,
        ],
    );
    testnet(&dir, &["wait", "--pluggable-only", "--timeout", "240"]);
    let exit_log = dir.join("forsexit1/stdout.log");
    // The exit serves streams once it has the consensus (it checks re-entry against it).
    let l = wait_for_file_line(
        &exit_log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    assert!(l.contains("Exit") && l.contains(" Running"), "{l}");
    let exit = relay_record(&dir, "forsexit1");
    let exit_fp = exit["fingerprint"].as_str().unwrap().to_string();
    let (socks, control) = client_ports(&dir);
    let mut ctl = TorControl::connect(control);

    // The client knows the exit's real policy: our reject first, then the testnet's.
    let desc = ctl
        .command(&format!("GETINFO desc/id/{exit_fp}"))
        .expect("the client has the exit's descriptor");
    let policy = descriptor_policy(&desc);
    assert_eq!(
        policy.first().map(String::as_str),
        Some(REFUSE_RULE),
        "{policy:?}"
    );
    assert_eq!(
        policy.get(1).map(String::as_str),
        Some("accept 127.0.0.0/8:*"),
        "{policy:?}"
    );

    ctl.command("SETEVENTS STREAM CIRC").unwrap();
    let path_ends_at_exit = |ctl: &mut TorControl, circ: &str| {
        let path = ctl.circuit_path(circ);
        assert_eq!(
            path.last(),
            Some(&exit_fp),
            "circuit {circ} {path:?} does not end at the Fors exit"
        );
    };

    // An accepted name through the Fors exit works.
    let (id, circ, socks_thread) = watch_stream(&mut ctl, socks, "web.fors.test", echo.port());
    path_ends_at_exit(&mut ctl, &circ);
    let mut s = socks_thread.join().unwrap().unwrap_or_else(|rep| {
        let end = ctl.wait_event(Duration::from_secs(5), |e| {
            stream_event(e).is_some_and(|(i, st, _, _)| i == id && st != "SENTCONNECT")
        });
        panic!(
            "SOCKS reply {rep} for web.fors.test (stream {id}: {end:?}); exit log:\n{}",
            std::fs::read_to_string(&exit_log).unwrap_or_default()
        )
    });
    echo_round_trip(&mut s, "accepted before");
    drop(s);

    // The refused name: Fors resolves it, finds 127.0.0.3 rejected and ends the stream.
    let (id, circ, refused_socks) = watch_stream(&mut ctl, socks, "refused.fors.test", echo.port());
    path_ends_at_exit(&mut ctl, &circ);
    let ended = ctl
        .wait_event(EVENT_LIMIT, |e| {
            stream_event(e).is_some_and(|(i, st, c, _)| {
                i == id && c == circ && matches!(st, "DETACHED" | "FAILED" | "CLOSED")
            })
        })
        .unwrap_or_else(|| panic!("stream {id} did not end: {:?}", ctl.events));
    eprintln!("refused stream: {ended}");
    assert_eq!(
        field(&ended, "REMOTE_REASON"),
        Some("EXITPOLICY"),
        "{ended}"
    );
    assert_eq!(field(&ended, "REASON"), Some("END"), "{ended}");
    // The END carried the address (C tor remaps the name to it), so the client learned why.
    let remap = ctl.events.iter().find(|e| {
        stream_event(e).is_some_and(|(i, st, _, t)| {
            i == id && st == "REMAP" && t.starts_with(&format!("{REFUSED_ADDR}:"))
        })
    });
    assert!(
        remap.is_some(),
        "no REMAP of stream {id} to {REFUSED_ADDR}: {:?}",
        ctl.events
    );
    // The same exit still serves accepted names afterwards. This C tor client will not pick
    // it again by itself: a refusal whose address the exit's (exact) descriptor policy
    // rejects makes it mark the exit "more restrictive than its exit policy" and reject-all
    // for now (`adjust_exit_policy_from_exitpolicy_failure`: the remapped request now looks
    // like an address it should have judged). So the controller builds a circuit to the exit
    // and attaches the stream itself.
    let middle = relay_record(&dir, "middle1");
    let middle_fp = middle["fingerprint"].as_str().unwrap();
    let built = ctl
        .command(&format!("EXTENDCIRCUIT 0 ${middle_fp},${exit_fp}"))
        .expect("EXTENDCIRCUIT");
    let new_circ = built[0]
        .strip_prefix("EXTENDED ")
        .expect("EXTENDED <id>")
        .to_string();
    ctl.wait_event(EVENT_LIMIT, |e| {
        e.starts_with(&format!("650 CIRC {new_circ} BUILT "))
    })
    .unwrap_or_else(|| panic!("circuit {new_circ} to the exit not built: {:?}", ctl.events));
    ctl.command("SETCONF __LeaveStreamsUnattached=1").unwrap();
    let h = format!("web.fors.test:{}", echo.port());
    let port = echo.port();
    let socks_thread = std::thread::spawn(move || {
        Socks5::local(socks, Duration::from_secs(150)).connect("web.fors.test", port)
    });
    let new = ctl
        .wait_event(EVENT_LIMIT, |e| {
            stream_event(e).is_some_and(|(_, st, _, t)| st == "NEW" && t == h)
        })
        .unwrap_or_else(|| panic!("no STREAM NEW for {h}: {:?}", ctl.events));
    let sid = stream_event(&new).unwrap().0.to_string();
    ctl.command(&format!("ATTACHSTREAM {sid} {new_circ}"))
        .expect("ATTACHSTREAM");
    let mut s = socks_thread
        .join()
        .unwrap()
        .unwrap_or_else(|rep| panic!("SOCKS reply {rep} for web.fors.test afterwards"));
    echo_round_trip(&mut s, "accepted after");
    ctl.command("SETCONF __LeaveStreamsUnattached=0").unwrap();

    // The refused request itself: the client retried, but its only allowed exit now refuses
    // the address, so the SOCKS request must never succeed (it times out).
    match refused_socks.join().unwrap() {
        Ok(_) => panic!("refused.fors.test connected"),
        Err(rep) => eprintln!("SOCKS reply for refused.fors.test: {rep}"),
    }

    assert_eq!(
        refused_hits.load(Ordering::Relaxed),
        0,
        "something connected to the refused address"
    );
    // The exit's MetricsPort saw it too (counters are copied every 100 ms tick).
    let m_port = exit["metrics_port"]
        .as_u64()
        .expect("Fors slots have a MetricsPort") as u16;
    let text = http_get(SocketAddr::from(([127, 0, 0, 1], m_port)), "/metrics");
    let sum = |series: &str| {
        metric(&text, &format!("fors_relay_all_shards_{series}"))
            .unwrap_or_else(|| panic!("no fors_relay_all_shards_{series} in:\n{text}"))
    };
    assert!(sum("stream_end_sent_total{reason=\"exitpolicy\"}") >= 1);
    assert_eq!(sum("stream_end_sent_total{reason=\"torprotocol\"}"), 0);
    assert!(sum("dns_lookups_total") >= 2, "web and refused");
    assert!(sum("dns_queries_sent_total") >= 2);
    assert!(sum("dns_answers_total") >= 2);
    assert_eq!(sum("dns_inflight"), 0);
    assert!(
        metric(
            &text,
            "fors_relay_streams_refused_total{shard=\"0\",reason=\"exitpolicy\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(metric(&text, "fors_relay_dns_inflight_limit{shard=\"0\"}").is_some_and(|n| n > 0));
    let ub_log = std::fs::read_to_string(unbound.dir.join("unbound.log"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        ub_log.contains("refused.fors.test. a in"),
        "the exit never looked the refused name up:\n{ub_log}"
    );
    assert_eq!(unbound.stop_and_count_recursions(), 0, "unbound recursed");
    let log = std::fs::read_to_string(&exit_log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        daemon_common::unexpected_err_lines(&log).is_empty(),
        "{log}"
    );
}
