//! The `fors` relay process end to end, on loopback only: start-up (keys, PidFile, ORPort,
//! MetricsPort), SIGHUP reload, SIGTERM clean exit, configuration errors, and keeping the
//! identity across a SIGKILL. DirAuthority lines point at unused 127.0.0.1 ports, so nothing
//! leaves the machine; every child is killed when its test ends.

mod daemon_common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::{
    free_port, http_get, metric, open_channel_and_create, standalone_torrc, Fors, TempDir,
};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::metrics::SHARD_METRIC_NAMES;

const START: Duration = Duration::from_secs(60);

/// A torrc for a 2-shard relay on loopback. Authorities are fake (nothing listens there).
fn torrc(dir: &Path, or_port: u16, metrics_port: u16, extra: &str) -> String {
    standalone_torrc("ForsTest", dir, or_port, metrics_port)
        .raw(extra)
        .render()
}

fn fingerprint_line(f: &mut Fors) -> String {
    let l = f.wait_for("identity key fingerprint is", START);
    l.split("is '")
        .nth(1)
        .unwrap()
        .trim_end_matches('\'')
        .to_string()
}

#[test]
fn starts_serves_metrics_reloads_and_exits_cleanly() {
    let tmp = TempDir::new("daemon-life");
    let (or_port, m_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let torrc_text = torrc(
        tmp.path(),
        or_port,
        m_port,
        "MetricsPortPolicy accept 127.0.0.1\n",
    );
    std::fs::write(&rc, &torrc_text).unwrap();
    let mut f = Fors::start_in(tmp.path());
    f.wait_for("the relay is running", START);
    let fp = fingerprint_line(&mut f);
    assert!(fp.starts_with("ForsTest "), "{fp}");

    // Keys in C tor's layout, fingerprint files, the PidFile.
    let data = tmp.path().join("data");
    for k in [
        "keys/secret_id_key",
        "keys/ed25519_master_id_secret_key",
        "keys/ed25519_signing_secret_key",
        "keys/ed25519_signing_cert",
        "keys/secret_onion_key_ntor",
        "fingerprint",
        "fingerprint-ed25519",
    ] {
        assert!(data.join(k).is_file(), "{k} missing");
    }
    let fp_file = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    assert_eq!(
        fp_file.trim(),
        fp.replace(' ', "").replacen("ForsTest", "ForsTest ", 1)
    );
    let pid = std::fs::read_to_string(tmp.path().join("fors.pid")).unwrap();
    assert_eq!(pid.trim(), f.child.id().to_string());

    // The ORPort speaks the link protocol: a channel opens with the relay's identities, and
    // a CREATE_FAST is answered with CREATED_FAST by the circuit core. A bare TCP connection
    // that sends nothing is also taken (and times out in the handshake later).
    let or_addr = SocketAddr::from(([127, 0, 0, 1], or_port));
    let rsa = RsaIdentity::from_hex(fp_file.split_whitespace().nth(1).unwrap()).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();
    let client_dir = tmp.path().join("client");
    for _ in 0..3 {
        let (cmd, _) = open_channel_and_create(or_addr, rsa, ed, &client_dir);
        assert_eq!(cmd, fors::cell::ChanCmd::CREATED_FAST);
    }
    let _idle = TcpStream::connect_timeout(&or_addr, Duration::from_secs(5)).unwrap();

    // /metrics: every shard counter for both shards; counters catch up within a few ticks.
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));
    let end = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let r = http_get(m_addr, "/metrics");
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
        let accepted: u64 = (0..2)
            .map(|s| metric(&r, &format!("fors_shard_accepted{{shard=\"{s}\"}}")).unwrap())
            .sum();
        let open: u64 = (0..2)
            .map(|s| metric(&r, &format!("fors_relay_channels_open{{shard=\"{s}\"}}")).unwrap())
            .sum();
        if (accepted >= 4 && open == 0) || Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for name in SHARD_METRIC_NAMES {
        for s in 0..2 {
            let series = format!("fors_shard_{name}{{shard=\"{s}\"}}");
            assert!(metric(&text, &series).is_some(), "missing {series}");
        }
    }
    // The circuit core's and the exit resolver's counters, per shard and summed.
    let core = fors::metrics::core_counters::CIRCUIT_METRICS.iter();
    for e in core.chain(fors::metrics::core_counters::DNS_METRICS) {
        for s in 0..2 {
            let labels = match e.extra {
                "" => format!("shard=\"{s}\""),
                extra => format!("shard=\"{s}\",{extra}"),
            };
            let series = format!("{}{{{labels}}}", e.name);
            assert!(metric(&text, &series).is_some(), "missing {series}");
        }
    }
    for series in [
        "fors_relay_stream_end_sent_total{shard=\"1\",reason=\"exitpolicy\"}",
        "fors_relay_all_shards_stream_end_sent_total{reason=\"done\"}",
        "fors_relay_all_shards_create_refused_total{reason=\"table_full\"}",
        "fors_relay_all_shards_dns_inflight",
        "fors_relay_dns_send_errors_total{shard=\"0\"}",
    ] {
        assert_eq!(metric(&text, series), Some(0), "{series}");
    }
    let sum = |family: &str| -> u64 {
        (0..2)
            .map(|s| metric(&text, &format!("{family}{{shard=\"{s}\"}}")).unwrap())
            .sum()
    };
    assert_eq!(sum("fors_shard_accepted"), 4);
    assert_eq!(sum("fors_relay_connections_seen_total"), 4);
    assert_eq!(sum("fors_relay_circuits_created_total"), 3);
    assert_eq!(sum("fors_relay_channels_open"), 0);
    assert_eq!(sum("fors_relay_connections_closed_unserved_total"), 0);
    assert_eq!(metric(&text, "fors_relay_shards"), Some(2));
    assert!(http_get(m_addr, "/other").starts_with("HTTP/1.0 404"));

    // SIGUSR1: a status summary, one line per shard.
    f.signal(libc::SIGUSR1);
    f.wait_for("Status: shard 1:", START);

    // The fake authorities do not answer: the relay says so and keeps running.
    f.wait_for("Fetching the consensus failed", START);

    // SIGHUP: a changed nickname is applied to the next descriptor; a changed ORPort needs
    // a restart and says so.
    std::fs::write(
        &rc,
        torrc_text
            .replace("Nickname ForsTest", "Nickname ForsRenamed")
            .replace(&format!("ORPort 127.0.0.1:{or_port}"), "ORPort 127.0.0.1:1"),
    )
    .unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for("Received reload signal", START);
    f.wait_for("Reload: Nickname changed", START);
    f.wait_for(
        "Reload: ORPort changed since start-up; Fors must be restarted",
        START,
    );
    // The counter is bumped just after the log lines above: poll briefly.
    let end = Instant::now() + Duration::from_secs(5);
    let mut reloads = None;
    while reloads != Some(1) && Instant::now() < end {
        reloads = metric(
            &http_get(m_addr, "/metrics"),
            "fors_relay_reloads_applied_total",
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reloads, Some(1));
    // A broken torrc on reload is refused and the relay keeps running.
    std::fs::write(&rc, "ORPortt 1\n").unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for(
        "Reloading the configuration failed; keeping the running one",
        START,
    );
    assert!(f.child.try_wait().unwrap().is_none());

    // SIGTERM: clean exit, PidFile gone.
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(f.log.iter().any(|l| l.contains("Fors exited cleanly")));
    assert!(!tmp.path().join("fors.pid").exists(), "PidFile left behind");
    // Log lines look like C tor's: "Nov 24 21:00:00.000 [notice] ...".
    let first = &f.log[0];
    assert_eq!(&first[15..16], ".", "{first}");
    assert_eq!(&first[19..28], " [notice]", "{first}");
}

#[test]
fn configuration_errors_exit_1_naming_the_line() {
    let tmp = TempDir::new("daemon-err");
    let rc = tmp.path().join("torrc");
    let cases = [
        (
            "ORPort 127.0.0.1:9\nDataDirectory /nonexistent\nORPortt 9001\n",
            "torrc:3",
            "unknown option",
        ),
        (
            "ORPort 127.0.0.1:9\nDataDirectory /nonexistent\nExitPolicy accept *:80\nExitPolicy acept *:443\n",
            "torrc:4",
            "bad ExitPolicy item",
        ),
        (
            "ORPort 127.0.0.1:9\nDataDirectory /nonexistent\nMetricsPort 127.0.0.1:9\nMetricsPortPolicy allow 127.0.0.1\n",
            "torrc:4",
            "MetricsPortPolicy",
        ),
    ];
    for (text, line, what) in cases {
        std::fs::write(&rc, text).unwrap();
        let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
        let code = f.wait_exit(Duration::from_secs(30));
        assert_eq!(code, Some(1), "{text}");
        let msg = f
            .log
            .iter()
            .find(|l| l.contains("[err]"))
            .unwrap_or_else(|| panic!("no [err] line: {:?}", f.log));
        assert!(msg.contains(&format!("{line}: ")), "{msg}");
        assert!(msg.contains(what), "{msg}");
    }
    // Options on the command line are named by argument position.
    std::fs::write(&rc, "ORPort 127.0.0.1:9\nDataDirectory /nonexistent\n").unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap(), "--NumCPUs", "many"]);
    assert_eq!(f.wait_exit(Duration::from_secs(30)), Some(1));
    assert!(
        f.log.iter().any(|l| l.contains("command line:3")),
        "{:?}",
        f.log
    );
}

#[test]
fn identity_survives_sigkill_and_empty_metrics_policy_refuses_everyone() {
    let tmp = TempDir::new("daemon-kill");
    let (or_port, m_port) = (free_port(), free_port());
    std::fs::write(
        tmp.path().join("torrc"),
        torrc(tmp.path(), or_port, m_port, ""),
    )
    .unwrap();
    let mut f = Fors::start_in(tmp.path());
    f.wait_for("the relay is running", START);
    let first = fingerprint_line(&mut f);
    // No MetricsPortPolicy: as in C tor, nobody may read the port, and the log says so.
    f.wait_for("MetricsPortPolicy is empty", START);
    assert_eq!(
        http_get(SocketAddr::from(([127, 0, 0, 1], m_port)), "/metrics"),
        ""
    );
    f.signal(libc::SIGKILL);
    assert_eq!(f.wait_exit(Duration::from_secs(30)), None);
    drop(f);
    // The stale PidFile is overwritten; the same keys are loaded.
    let mut g = Fors::start_in(tmp.path());
    g.wait_for("the relay is running", START);
    assert_eq!(fingerprint_line(&mut g), first);
    let pid = std::fs::read_to_string(tmp.path().join("fors.pid")).unwrap();
    assert_eq!(pid.trim(), g.child.id().to_string());
    // SIGINT starts the ShutdownWaitLength (30 s by default) countdown; a second one exits.
    g.signal(libc::SIGINT);
    g.wait_for("shutting down cleanly in 30 seconds", START);
    assert!(g.child.try_wait().unwrap().is_none());
    g.signal(libc::SIGINT);
    assert_eq!(g.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(!tmp.path().join("fors.pid").exists());
}

#[test]
fn busy_orport_fails_start_up_and_cleans_up() {
    let tmp = TempDir::new("daemon-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let or_port = taken.local_addr().unwrap().port();
    std::fs::write(
        tmp.path().join("torrc"),
        torrc(tmp.path(), or_port, free_port(), ""),
    )
    .unwrap();
    let mut f = Fors::start_in(tmp.path());
    assert_eq!(f.wait_exit(Duration::from_secs(60)), Some(1));
    let msg = f.log.iter().find(|l| l.contains("[err]")).unwrap();
    assert!(
        msg.contains(&format!(
            "cannot start the shards on ORPort 127.0.0.1:{or_port}"
        )),
        "{msg}"
    );
    assert!(!tmp.path().join("fors.pid").exists(), "PidFile left behind");
}

/// An exit needs a usable resolv.conf at start-up (an error names the file and line); a
/// non-exit never reads it.
#[test]
fn exit_resolv_conf_is_checked_at_start_up_only_for_exits() {
    let tmp = TempDir::new("daemon-resolv");
    let bad = tmp.path().join("bad-resolv.conf");
    std::fs::write(&bad, "search example\nnameserver 127.0.0.1:bad\n").unwrap();
    let rc = tmp.path().join("torrc");
    let exit = format!(
        "ExitRelay 1\nExitPolicy accept *:*\nServerDNSResolvConfFile {}\n",
        bad.display()
    );
    std::fs::write(&rc, torrc(tmp.path(), free_port(), free_port(), &exit)).unwrap();
    let mut f = Fors::start_in(tmp.path());
    assert_eq!(f.wait_exit(START), Some(1), "{:?}", f.log);
    let msg = f
        .log
        .iter()
        .find(|l| l.contains("[err]"))
        .unwrap_or_else(|| panic!("no [err] line: {:?}", f.log));
    assert!(
        msg.contains("bad-resolv.conf") && msg.contains("line 2"),
        "{msg}"
    );

    // The same file on a non-exit: never read, the relay runs.
    let non_exit = format!("ServerDNSResolvConfFile {}\n", bad.display());
    std::fs::write(&rc, torrc(tmp.path(), free_port(), free_port(), &non_exit)).unwrap();
    let mut f = Fors::start_in(tmp.path());
    f.wait_for("Not an exit relay", START);
    f.wait_for("the relay is running", START);
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(START), Some(0));
}
