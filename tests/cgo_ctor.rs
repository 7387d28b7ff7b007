//! CGO relay crypto (proposal 359) with a real C tor 0.4.9 client on a private network
//! (scripts/testnet.py, loopback only): the client asks for CGO in ntor-v3 from a hop that
//! advertises `Relay=5-6` and `FlowCtrl=2` (C `versions.c` `supports_cgo`) *and* gets
//! congestion control, which C 0.4.9.11 asks only of an exit circuit's last hop
//! (`client_circ_negotiation_message`: `exit_supports_congestion_control`). So through a
//! Fors middle and a Fors exit, the exit runs CGO and the middle tor1; the script's traffic
//! is SHA-256 checked both ways, and the exit's MetricsPort counts its CGO circuits.
//!
//! Skipped without `tor`, `tor-gencert` or python3 (fails under `CI=true`), or with
//! `FORS_SKIP_TESTNET`. Every wait is bounded.

mod daemon_common;

use std::time::Duration;

use daemon_common::private_net::{metric_sum as sum, testnet, PrivateNet};
use daemon_common::{free_port, http_get, wait_for_file_line};

#[test]
fn c_tor_client_negotiates_cgo_with_a_fors_middle_and_exit() {
    let Some(net) = PrivateNet::prepare(
        "c_tor_client_negotiates_cgo_with_a_fors_middle_and_exit",
        "cgo-ctor",
        &[],
    ) else {
        return;
    };
    let (m_mid, m_exit) = (free_port(), free_port());
    let mid_metrics = format!("forsmiddle1 MetricsPort 127.0.0.1:{m_mid}");
    let exit_metrics = format!("forsexit1 MetricsPort 127.0.0.1:{m_exit}");
    net.up(&[
        "--fors",
        "middle",
        "--fors",
        "exit",
        "--middles",
        "1",
        "--exits",
        "1",
        "--slot-option",
        &mid_metrics,
        "--slot-option",
        "forsmiddle1 MetricsPortPolicy accept 127.0.0.1",
        "--slot-option",
        &exit_metrics,
        "--slot-option",
        "forsexit1 MetricsPortPolicy accept 127.0.0.1",
    ]);
    for nick in ["forsmiddle1", "forsexit1"] {
        let l = wait_for_file_line(
            &net.log(nick),
            "Fors is listed in the consensus",
            Duration::from_secs(300),
        );
        assert!(l.contains(" Running"), "{l}");
    }
    // What the client sees of us: our descriptors' proto line, through the consensus.
    let run = |args: &[&str]| testnet(net.dir(), args);
    run(&["wait", "--pluggable-only", "--timeout", "240"]);
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
        "180",
    ]);
    for (nick, port) in [("forsmiddle1", m_mid), ("forsexit1", m_exit)] {
        let m = http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/metrics");
        let cgo = sum(&m, "fors_relay_circuits_cgo_total");
        let all = sum(&m, "fors_relay_circuits_created_total");
        // Every peer here is C tor 0.4.9 or Fors, both TLS 1.3: the channels that carried
        // the traffic left rustls for Fors's own record layer after their link handshake.
        let switched = sum(&m, "fors_relay_channels_tls_record_layer_total");
        let tls12 = sum(&m, "fors_relay_channels_tls12_rustls_total");
        let refused = sum(&m, "fors_relay_channels_tls_handover_refused_total");
        eprintln!(
            "{nick}: circuits_created {all}, CGO {cgo}; channels on the record layer \
             {switched}, left on rustls {tls12} (TLS 1.2) + {refused} (refused)"
        );
        assert!(switched >= 1, "{nick}: no channel switched:\n{m}");
        assert_eq!((tls12, refused), (0, 0), "{nick}:\n{m}");
        if nick == "forsexit1" {
            assert!(cgo >= 1, "{nick} ran no CGO circuit:\n{m}");
        }
        let text = std::fs::read_to_string(net.log(nick)).unwrap();
        assert!(
            daemon_common::unexpected_err_lines(&text).is_empty(),
            "{text}"
        );
    }
}
