//! SafeLogging on a live private network (scripts/testnet.py on loopback; nothing leaves the
//! machine): C tor 0.4.9 authorities and relays, a C tor client whose connections come from
//! its own loopback address (`OutboundBindAddress 127.0.0.5`), and three Fors relays logging
//! at debug level. The C tor client's traffic goes through the Fors middle and the Fors exit
//! to an HTTP server on 127.0.0.9. C tor clients take only directory caches as guards, which
//! Fors is not yet, so the first hop a client makes to Fors is a raw client link from the
//! same 127.0.0.5 (TLS, VERSIONS, NETINFO, CREATE_FAST), as a client's channel to its guard.
//!
//! * `forsmiddle2` has `SafeLogging 0`: the client's channel there must be logged with its
//!   address — the control that shows the log lines would carry it if nothing scrubbed it;
//! * `forsexit1` has the default (`SafeLogging 1`) and `forsmiddle1` has `SafeLogging relay`:
//!   neither the client's address nor its destination may appear in their logs or in their
//!   ControlPort log events, and `[scrubbed]` must; `relay` still shows relays' addresses.
//!
//! Skipped (SKIPPED printed) without `tor`, `tor-gencert` or python3, or with
//! `FORS_SKIP_TESTNET`; with `CI=true` a missing tool is a failure. The network is stopped
//! (by pid, by the script) when the test ends, pass or fail.

mod daemon_common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};

use daemon_common::private_net::{relay_record, testnet, testnet_skip_reason, TorControl};
use daemon_common::raw_link::{connect_tcp_from, fixed_cell, LinkRead, RawLink};
use daemon_common::{
    free_port, free_port_range_base, testnet_script, wait_for_file_line, TempDir, TestnetGuard,
};
use fors::cell::ChanCmd;

const CLIENT_ADDR: &str = "127.0.0.5";
const SERVER_ADDR: &str = "127.0.0.9";

/// Subscribes to every log severity on a Fors ControlPort and collects the events in a
/// thread until `stop` is set (bounded by `limit` whatever happens).
fn collect_log_events(
    port: u16,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> JoinHandle<Vec<String>> {
    let mut ctl = TorControl::connect(port);
    ctl.command("SETEVENTS DEBUG INFO NOTICE WARN ERR")
        .expect("SETEVENTS accepted");
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + limit;
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < end {
            let _ = ctl.wait_event(Duration::from_millis(500), |_| false);
        }
        ctl.events.into_iter().collect()
    })
}

/// A client's channel to `nick` from CLIENT_ADDR, up to its first circuit: once CREATED_FAST
/// is back, the relay has handled the channel's opening.
fn client_link_to(dir: &Path, nick: &str) {
    let port = relay_record(dir, nick)["orport"].as_u64().expect("orport") as u16;
    let relay = SocketAddr::from(([127, 0, 0, 1], port));
    let limit = Duration::from_secs(30);
    let from: IpAddr = CLIENT_ADDR.parse().unwrap();
    let mut link = RawLink::over_tcp(connect_tcp_from(from, relay, limit).unwrap(), limit)
        .and_then(|l| l.client_handshake(relay.ip(), limit))
        .unwrap_or_else(|e| panic!("client link to {nick}: {e}"));
    assert!(link.send(&fixed_cell(0x8000_0001, ChanCmd::CREATE_FAST, &[7u8; 20])));
    let end = std::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match link.read_cell(left) {
            LinkRead::Cell { cmd, .. } if cmd == ChanCmd::CREATED_FAST => return,
            LinkRead::Cell { .. } => {}
            other => panic!("client link to {nick}: {other:?} instead of CREATED_FAST"),
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of `text` that contain `needle`, for a failure message.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .collect()
}

#[test]
fn client_addresses_never_reach_logs_or_controller_events() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(
            "client_addresses_never_reach_logs_or_controller_events",
            &why,
        );
        return;
    }
    let tmp = TempDir::new("daemon-safelogging");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let ctl_m1 = free_port();
    let ctl_x1 = free_port();
    let slot = |nick: &str, line: String| ["--slot-option".to_string(), format!("{nick} {line}")];
    let mut args: Vec<String> = [
        "up",
        "--fors",
        "middle",
        "--fors",
        "middle",
        "--fors",
        "exit",
        "--middles",
        "1",
        "--exits",
        "1",
        "--server-addr",
        SERVER_ADDR,
    ]
    .map(String::from)
    .to_vec();
    for nick in ["forsmiddle1", "forsmiddle2", "forsexit1"] {
        args.extend(slot(nick, "Log debug stdout".into()));
    }
    args.extend(slot("forsmiddle1", "SafeLogging relay".into()));
    args.extend(slot("forsmiddle2", "SafeLogging 0".into()));
    for (nick, port) in [("forsmiddle1", ctl_m1), ("forsexit1", ctl_x1)] {
        args.extend(slot(nick, format!("ControlPort 127.0.0.1:{port}")));
        args.extend(slot(nick, "CookieAuthentication 1".into()));
    }
    args.extend([
        "--client-option".to_string(),
        format!("OutboundBindAddress {CLIENT_ADDR}"),
    ]);
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args(&args)
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    for nick in ["forsmiddle1", "forsmiddle2", "forsexit1"] {
        let log = dir.join(nick).join("stdout.log");
        wait_for_file_line(
            &log,
            "Fors is listed in the consensus",
            Duration::from_secs(240),
        );
    }
    let run = |args: &[&str]| testnet(&dir, args);
    run(&["wait", "--pluggable-only", "--timeout", "180"]);

    let stop = Arc::new(AtomicBool::new(false));
    let events_m1 = collect_log_events(ctl_m1, stop.clone(), Duration::from_secs(900));
    let events_x1 = collect_log_events(ctl_x1, stop.clone(), Duration::from_secs(900));

    // The C tor client's traffic: through the Fors middle (SafeLogging relay) to the Fors
    // exit (SafeLogging 1), which connects to the server the client named.
    run(&[
        "traffic",
        "--middle",
        "forsmiddle1",
        "--exit",
        "forsexit1",
        "--down-mb",
        "1",
        "--up-mb",
        "1",
    ]);
    // The client's own channels, as to a guard.
    for nick in ["forsmiddle2", "forsmiddle1", "forsexit1"] {
        client_link_to(&dir, nick);
    }
    // Let the ControlPort threads read what the last channels logged.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let events_m1 = events_m1.join().unwrap().join("\n");
    let events_x1 = events_x1.join().unwrap().join("\n");

    let m1 = read(&dir.join("forsmiddle1/stdout.log"));
    let m2 = read(&dir.join("forsmiddle2/stdout.log"));
    let x1 = read(&dir.join("forsexit1/stdout.log"));

    // SafeLogging 0: the address is there, so the lines checked below do carry it.
    assert!(
        m2.contains(&format!("channel open with a client at {CLIENT_ADDR}")),
        "forsmiddle2 (SafeLogging 0) never logged the client's channel: {:?}",
        lines_with(&m2, "client")
    );
    // SafeLogging relay and 1: the same line, scrubbed.
    for (nick, log, events) in [
        ("forsmiddle1", &m1, &events_m1),
        ("forsexit1", &x1, &events_x1),
    ] {
        assert!(
            log.contains("channel open with a client at [scrubbed]"),
            "{nick} did not log the client's channel: {:?}",
            lines_with(log, "client")
        );
        assert!(
            events.contains("channel open with a client at [scrubbed]"),
            "{nick}'s ControlPort gave no debug event for the client's channel"
        );
        for (what, text) in [("log", log), ("ControlPort events", events)] {
            for addr in [CLIENT_ADDR, SERVER_ADDR] {
                assert!(
                    !text.contains(addr),
                    "{addr} in {nick}'s {what}: {:?}",
                    lines_with(text, addr)
                );
            }
        }
    }
    // The exit logged its stream to the client's destination, scrubbed.
    assert!(
        x1.contains("exit stream connecting to [scrubbed]"),
        "forsexit1 did not log its exit streams: {:?}",
        lines_with(&x1, "exit stream")
    );
    // `relay` shows relays' addresses (the middle's channels with the C tor relays); `1`
    // scrubs them too.
    assert!(
        m1.contains("at 127.0.0.1 (link v"),
        "SafeLogging relay should show relays' addresses: {:?}",
        lines_with(&m1, "channel open with relay")
    );
    assert!(
        x1.contains("at [scrubbed] (link v"),
        "SafeLogging 1 should scrub relays' addresses: {:?}",
        lines_with(&x1, "channel open with relay")
    );
}
