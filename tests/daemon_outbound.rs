//! OutboundBindAddress* on a live private network (scripts/testnet.py on loopback; nothing
//! leaves the machine): C tor 0.4.9 authorities, relays and client, a Fors middle and a Fors
//! exit, each binding its outgoing connections to its own 127.0.0.x (every 127/8 address is
//! local, so no namespace is needed):
//!
//! * `forsexit1`: `OutboundBindAddress 127.0.0.6` and `OutboundBindAddressExit 127.0.0.7`:
//!   the server the client connects to through it sees 127.0.0.7 (the Exit option wins for
//!   exit streams, tor-manual "OutboundBindAddressExit");
//! * `forsmiddle1`: `OutboundBindAddressOR 127.0.0.8`: the Fors exit, its next hop, sees the
//!   middle's channel come from 127.0.0.8 (its debug log, `SafeLogging 0`, shows the peer).
//!
//! Skipped (SKIPPED printed) without `tor`, `tor-gencert` or python3, or with
//! `FORS_SKIP_TESTNET`; with `CI=true` that is a failure. The network is stopped (by pid, by
//! the script) when the test ends, pass or fail.

mod daemon_common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use daemon_common::private_net::{
    client_ports, relay_record, socks5_connect, testnet, testnet_skip_reason,
};
use daemon_common::{
    free_port_range_base, testnet_script, wait_for_file_line, TempDir, TestnetGuard,
};

const EXIT_BIND: &str = "127.0.0.7";
const ANY_BIND: &str = "127.0.0.6";
const OR_BIND: &str = "127.0.0.8";

/// A listener on 127.0.0.9 that sends the peer address of each connection it accepts, and
/// echoes one line back so the client knows the stream went through.
fn start_peer_reporting_listener() -> (SocketAddr, mpsc::Receiver<SocketAddr>) {
    let l = TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().unwrap();
            if tx.send(peer).is_err() {
                return;
            }
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    (addr, rx)
}

#[test]
fn outgoing_connections_come_from_the_bind_addresses() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip("outgoing_connections_come_from_the_bind_addresses", &why);
        return;
    }
    let tmp = TempDir::new("daemon-outbound");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let slot = |line: &str| ["--slot-option".to_string(), line.to_string()];
    let mut args: Vec<String> = [
        "up",
        "--fors",
        "middle",
        "--fors",
        "exit",
        "--middles",
        "1",
        "--exits",
        "1",
    ]
    .map(String::from)
    .to_vec();
    for line in [
        format!("forsexit1 OutboundBindAddress {ANY_BIND}"),
        format!("forsexit1 OutboundBindAddressExit {EXIT_BIND}"),
        "forsexit1 Log debug stdout".into(),
        "forsexit1 SafeLogging 0".into(),
        format!("forsmiddle1 OutboundBindAddressOR {OR_BIND}"),
    ] {
        args.extend(slot(&line));
    }
    let st = std::process::Command::new("python3")
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
    assert!(st.success(), "testnet up failed");
    for nick in ["forsmiddle1", "forsexit1"] {
        wait_for_file_line(
            &dir.join(nick).join("stdout.log"),
            "Fors is listed in the consensus",
            Duration::from_secs(240),
        );
    }
    testnet(&dir, &["wait", "--pluggable-only", "--timeout", "180"]);
    testnet(
        &dir,
        &[
            "pin",
            "--middle",
            "forsmiddle1",
            "--exit",
            "forsexit1",
            "--clear",
        ],
    );

    let (server, peers) = start_peer_reporting_listener();
    let (socks, _) = client_ports(&dir);
    let mut s = socks5_connect(
        socks,
        &server.ip().to_string(),
        server.port(),
        Duration::from_secs(150),
    )
    .unwrap_or_else(|code| panic!("SOCKS connect through the Fors exit failed: reply {code}"));
    s.write_all(b"ping\n").unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping\n");
    let peer = peers
        .recv_timeout(Duration::from_secs(10))
        .expect("the server saw a connection");
    assert_eq!(
        peer.ip(),
        EXIT_BIND.parse::<IpAddr>().unwrap(),
        "the exit connection came from {peer}, not OutboundBindAddressExit"
    );

    // The middle's channel to the exit, as the exit saw it.
    let middle_fp = relay_record(&dir, "forsmiddle1")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let line = wait_for_file_line(
        &dir.join("forsexit1/stdout.log"),
        &format!("channel open with relay ${middle_fp} at "),
        Duration::from_secs(30),
    );
    assert!(
        line.contains(&format!(" at {OR_BIND} (link v")),
        "the middle's channel did not come from OutboundBindAddressOR: {line}"
    );
}
