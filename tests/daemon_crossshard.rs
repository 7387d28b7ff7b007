//! Cross-shard circuits on a live private network (scripts/testnet.py on loopback; nothing
//! leaves the machine): C tor 0.4.9 authorities, C tor relays and a C tor client, and a Fors
//! **middle** with 2 shards. The client's circuits are pinned entry → Fors → exit over
//! several entries and exits, every transfer on its own circuit (SOCKS isolation) and
//! SHA-256 checked by the script. The cross-shard queues are at their smallest bound, so
//! the transfers also meet full queues (backpressure) and must still arrive intact. Circuits live on the shard of their entry's channel; the
//! channel to the exit lives on the exit identity's owner shard (or is reused where it
//! already is), so some circuits cross shards. The Fors MetricsPort must then show
//! connections on both shards, cross-shard circuits and cells in both directions, and no
//! cell dropped; both shards agree on every cross-shard circuit, and once the exits stop,
//! the channel closes tear down every cross-shard circuit on both sides.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET`. The network
//! is stopped (by pid, by the script) when the test ends, pass or fail.

mod daemon_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_common::private_net::{pid_alive, testnet, testnet_skip_reason};
use daemon_common::{
    free_port, free_port_range_base, http_get, metric, testnet_script, wait_for_file_line, TempDir,
    TestnetGuard,
};
use fors_testkit::socks::Socks5;

const SHARDS: usize = 2;

/// The owner shard of a relay (`fors::relay::handler::cross::owner_shard`) from its hex
/// fingerprint.
fn owner(fp: &str) -> usize {
    let rsa = fors::util::hex::decode(fp).expect("hex fingerprint");
    let id = fors::crypto::ids::RsaIdentity(rsa.try_into().expect("20 bytes"));
    fors::relay::handler::cross::owner_shard(&id, SHARDS)
}

/// Every shard's value of a per-shard family.
fn per_shard(text: &str, family: &str) -> Vec<u64> {
    (0..SHARDS)
        .map(|s| metric(text, &format!("{family}{{shard=\"{s}\"}}")).unwrap_or(0))
        .collect()
}

fn sum(text: &str, family: &str) -> u64 {
    per_shard(text, family).iter().sum()
}

#[test]
fn circuits_cross_shards_on_a_two_shard_middle() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip("circuits_cross_shards_on_a_two_shard_middle", &why);
        return;
    }
    let tmp = TempDir::new("daemon-crossshard");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    // Two shards, and cross-shard queues at their smallest bound (64 cells) so that the
    // transfers also run into full queues: held cells, blocked remote channels, paused
    // reads, and their release.
    let profile = tmp.path().join("two-shards.toml");
    std::fs::write(
        &profile,
        "description = \"2 shards, small cross-shard queues\"\nshards = 2\n\
         cross_shard_queue_cells = 64\ncross_shard_batch = 8\n",
    )
    .unwrap();
    let m_port = free_port();
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--fors", "middle", "--middles", "2", "--exits", "4"])
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        .arg("--slot-option")
        .arg(format!("forsmiddle1 HardwareProfile {}", profile.display()))
        .arg("--slot-option")
        .arg(format!("forsmiddle1 MetricsPort 127.0.0.1:{m_port}"))
        .args([
            "--slot-option",
            "forsmiddle1 MetricsPortPolicy accept 127.0.0.1",
        ])
        // No circuit-build-timeout measurement circuits: every client circuit through Fors
        // then ends at a pinned exit, which the teardown check below relies on.
        .args(["--client-option", "LearnCircuitBuildTimeout 0"])
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    let log = dir.join("forsmiddle1/stdout.log");
    let l = wait_for_file_line(&log, "Opened ORPort", Duration::from_secs(120));
    assert!(l.contains("with 2 shards"), "{l}");
    let l = wait_for_file_line(
        &log,
        "Fors is listed in the consensus",
        Duration::from_secs(240),
    );
    assert!(l.contains(" Running"), "{l}");
    let run = |args: &[&str]| testnet(&dir, args);
    run(&["wait", "--pluggable-only", "--timeout", "180"]);

    // Exits ordered so that consecutive ones have different owner shards where possible:
    // a circuit crosses when its entry's channel is not on the exit's owner shard.
    let (entries, exits) = relays(&dir);
    let mut by_owner: Vec<Vec<String>> = vec![Vec::new(); SHARDS];
    for (nick, fp) in &exits {
        by_owner[owner(fp)].push(nick.clone());
    }
    let mut exit_order = Vec::new();
    for i in 0..exits.len() {
        for o in &by_owner {
            if let Some(n) = o.get(i) {
                exit_order.push(n.clone());
            }
        }
    }
    eprintln!("exit owner shards: {by_owner:?}");
    // The (entry, exit) pairs to try. The C tor middles first, each with one exit per owner
    // shard: whichever shard the entry's channel landed on, one of them crosses. If every
    // exit has the same owner (1 in 8), further entries are the other exits (their channels
    // to Fors are inbound, on a shard the kernel picks), with that exit: each is a fresh
    // chance that the entry's channel is on the other shard (all fail: 1 in 32).
    let used_exits: Vec<String> = by_owner.iter().filter_map(|o| o.first().cloned()).collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for e in &entries {
        for x in &used_exits {
            pairs.push((e.clone(), x.clone()));
        }
    }
    for (x, _) in &exits {
        if !used_exits.contains(x) {
            pairs.push((x.clone(), exit_order[0].clone()));
        }
    }

    // Several circuits of real traffic through the Fors middle (one per transfer, SOCKS
    // isolation). Whether a pair crosses depends on which shard the kernel put the entry's
    // channel on and on which channels to the exit exist where, so it is measured, not
    // assumed: passes over the pairs (bounded in count and time) go on until at least one
    // pair was seen crossing and at least 4 transfers ran. Before a later pass the C tor
    // relays are restarted, so their channels to Fors land on shards drawn again: each
    // pass is a fresh draw. If none crosses in the bound, the test fails saying so (with
    // what it tried), never by chance further down.
    const MAX_PASSES: usize = 3;
    // Declared after `_net`, so dropped (restarted relays stopped and reaped) before it.
    let mut restarted = Restarted(Vec::new());
    let restart: Vec<String> = entries
        .iter()
        .cloned()
        .chain(exits.iter().map(|(n, _)| n.clone()))
        .collect();
    let mut runs = 0;
    let mut last_cross = 0;
    let mut crossing: Vec<(String, String)> = Vec::new();
    let mut tried = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    // FORS_CROSSSHARD_RESTART=1 restarts them before the first pass too (to exercise it).
    let restart_first = std::env::var_os("FORS_CROSSSHARD_RESTART").is_some();
    'passes: for pass in 0..MAX_PASSES {
        if pass > 0 || restart_first {
            // The channels to Fors are where the last pass left them: restart the C tor
            // middles and exits (by pid, this network's own), so that their channels to
            // Fors are new connections, each on a shard the kernel picks again.
            eprintln!("pass {pass}: restarting {restart:?} (pairs crossed so far: none)");
            for nick in &restart {
                restarted.0.push(restart_ctor_relay(&dir, nick));
            }
        }
        for (entry, exit) in &pairs {
            run(&[
                "traffic",
                "--entry",
                entry,
                "--middle",
                "forsmiddle1",
                "--exit",
                exit,
                "--down-mb",
                "2",
                "--up-mb",
                "1",
                "--io-timeout",
                "120",
            ]);
            runs += 1;
            let text = metrics_after_tick(m_addr);
            let cross = sum(&text, "fors_relay_cross_shard_cells_sent_total");
            let delta = cross - last_cross;
            eprintln!(
                "pass {pass} run {runs}: entry {entry} exit {exit}: cross-shard cells sent \
                 {cross} (+{delta})"
            );
            tried.push(format!("{entry}->{exit}: +{delta}"));
            // 3 MB is about 6000 cells: this pair's circuits cross shards.
            if delta > 3000 && !crossing.contains(&(entry.clone(), exit.clone())) {
                crossing.push((entry.clone(), exit.clone()));
            }
            last_cross = cross;
            if (!crossing.is_empty() && runs >= 4) || Instant::now() > deadline {
                break 'passes;
            }
        }
    }
    assert!(
        !crossing.is_empty(),
        "no (entry, exit) pair crossed shards in {runs} transfers ({MAX_PASSES} passes at \
         most, 600 s): exit owner shards {by_owner:?}, tried {tried:?}"
    );

    let text = metrics_after_tick(m_addr);
    let show = |f: &str| format!("{f} {:?}", per_shard(&text, f));
    let report = [
        "fors_shard_accepted",
        "fors_shard_connected",
        "fors_relay_channels_open",
        "fors_relay_circuits_created_total",
        "fors_relay_cross_shard_extends_sent_total",
        "fors_relay_cross_shard_circuits_total",
        "fors_relay_cross_shard_circuits_open",
        "fors_relay_cross_shard_circuits_carried",
        "fors_relay_cross_shard_cells_sent_total",
        "fors_relay_cross_shard_cells_received_total",
        "fors_relay_cross_shard_queue_full_total",
        "fors_relay_cross_shard_overflow_depth",
        "fors_relay_cross_shard_overflow_kills_total",
        "fors_relay_cells_dropped_channel_full_total",
    ]
    .map(show)
    .join("\n");
    eprintln!("after {runs} runs:\n{report}");
    // Both shards hold connections (accepted on the shared ORPort, or opened as the owner
    // of an exit's identity).
    let accepted = per_shard(&text, "fors_shard_accepted");
    let connected = per_shard(&text, "fors_shard_connected");
    for s in 0..SHARDS {
        assert!(
            accepted[s] + connected[s] > 0,
            "shard {s} has no connection:\n{report}"
        );
    }
    assert!(
        sum(&text, "fors_relay_cross_shard_circuits_total") > 0,
        "no cross-shard circuit:\n{report}"
    );
    assert!(
        sum(&text, "fors_relay_cross_shard_extends_sent_total") > 0,
        "{report}"
    );
    // Cells went both ways between the shards: forward from the circuit's shard to the
    // exit channel's, backward the other way; each sent cell was received.
    let sent = per_shard(&text, "fors_relay_cross_shard_cells_sent_total");
    let received = per_shard(&text, "fors_relay_cross_shard_cells_received_total");
    assert!(sent.iter().sum::<u64>() > 0, "{report}");
    assert_eq!(
        sent.iter().sum::<u64>(),
        received.iter().sum::<u64>(),
        "cells lost between shards:\n{report}"
    );
    assert_eq!(
        sum(&text, "fors_relay_cells_dropped_channel_full_total"),
        0,
        "{report}"
    );
    assert_eq!(
        sum(&text, "fors_relay_cross_shard_overflow_kills_total"),
        0,
        "{report}"
    );
    // Both sides of every cross-shard circuit agree: circuits shard 0 holds with a next hop
    // on shard 1 are exactly those shard 1 carries for shard 0, and the other way round
    // (extends and DESTROYs were relayed both ways). Bounded wait: a reply may be in flight.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let t = metrics_after_tick(m_addr);
        let open = per_shard(&t, "fors_relay_cross_shard_circuits_open");
        let carried = per_shard(&t, "fors_relay_cross_shard_circuits_carried");
        if open[0] == carried[1] && open[1] == carried[0] {
            assert!(open[0] + open[1] > 0, "{open:?} {carried:?}");
            break;
        }
        assert!(
            Instant::now() < end,
            "origin and channel shards disagree: open {open:?} carried {carried:?}"
        );
    }

    // Channel close propagates across shards. A download is held open on a circuit that
    // crosses shards (a pair seen crossing above), then every C tor exit is stopped
    // (processes this test's network started, by pid): the channel shard must send DESTROY
    // to the circuit's origin shard, which closes it toward the client, which ends the
    // stream. (Relays' own testing circuits through Fors end at C tor relays that keep
    // running, so the cross-shard gauges need not drop to zero.) The pinned circuit is a
    // new one and may take another channel than the pair's earlier circuits did: each pair
    // seen crossing is tried in turn (3 attempts at most) until the held download crosses.
    let mut held_on = None;
    let mut attempts = Vec::new();
    for (entry, exit) in crossing.iter().cycle().take(3) {
        run(&[
            "pin",
            "--entry",
            entry,
            "--middle",
            "forsmiddle1",
            "--exit",
            exit,
        ]);
        let before = metrics_after_tick(m_addr);
        let user = format!("hold-open-{}", attempts.len());
        let mut held = socks5_connect(&dir, &user);
        held.write_all(
            b"GET /data/50000000?seed=hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        held.read_exact(&mut buf).unwrap();
        let during = metrics_after_tick(m_addr);
        let cells = |t: &str| sum(t, "fors_relay_cross_shard_cells_sent_total");
        let delta = cells(&during) - cells(&before);
        eprintln!("held download {entry} -> forsmiddle1 -> {exit}: cross-shard cells +{delta}");
        attempts.push(format!("{entry}->{exit}: +{delta}"));
        if delta >= 100 {
            held_on = Some((held, during));
            break;
        }
        // Not crossing: this stream ends here (dropped), and the next pair is tried.
    }
    let Some((mut held, during)) = held_on else {
        panic!(
            "no held download crossed shards (pairs seen crossing: {crossing:?}; \
             attempts: {attempts:?})"
        );
    };
    let mut buf = vec![0u8; 64 * 1024];
    let open_before: u64 = sum(&during, "fors_relay_cross_shard_circuits_open");
    for pid in exit_pids(&dir) {
        let st = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {pid}");
    }
    // The held stream ends (the data already in flight may still arrive first).
    held.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        match held.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(Instant::now() < end, "the held stream never ended"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the held stream is still open 60 s after its exit stopped")
            }
            Err(_) => break, // reset: ended too
        }
    }
    // Both shards dropped the circuits of the closed channels, and still agree.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let t = metrics_after_tick(m_addr);
        let open = per_shard(&t, "fors_relay_cross_shard_circuits_open");
        let carried = per_shard(&t, "fors_relay_cross_shard_circuits_carried");
        if open[0] == carried[1] && open[1] == carried[0] && open[0] + open[1] < open_before {
            break;
        }
        assert!(
            Instant::now() < end,
            "after the exits stopped: open {open:?} carried {carried:?} (before: {open_before})"
        );
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        daemon_common::unexpected_err_lines(&log_text).is_empty(),
        "{log_text}"
    );
}

/// Restarts C tor relay `nick` of this test's network: SIGTERM by its recorded pid (checked
/// against its command line), the same command line started again in its data directory,
/// the new pid recorded in network.json (so the script's `down` stops it), and a bounded
/// wait for it to bootstrap again (a new "Bootstrapped 100%" in its notice log).
fn restart_ctor_relay(dir: &Path, nick: &str) -> std::process::Child {
    let path = dir.join("network.json");
    let mut net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let relay = net["relays"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["nick"] == nick)
        .unwrap_or_else(|| panic!("no relay {nick} in network.json"));
    let pid = relay["pid"].as_u64().expect("pid");
    let torrc = relay["torrc"].as_str().unwrap().to_string();
    let data_dir = std::path::PathBuf::from(relay["data_dir"].as_str().unwrap());
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        pid_alive(pid) && argv.iter().any(|a| a.contains(&torrc)),
        "{nick} (pid {pid}) is not this network's relay: {argv:?}"
    );
    let notice = data_dir.join("notice.log");
    let boots = || {
        std::fs::read_to_string(&notice)
            .unwrap_or_default()
            .matches("Bootstrapped 100%")
            .count()
    };
    let before = boots();
    // SAFETY: kill(2) on a pid this test's network started (its command line names the
    // relay's torrc); no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(30);
    while pid_alive(pid) {
        assert!(Instant::now() < end, "{nick} (pid {pid}) did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(data_dir.join("stdout.log"))
        .unwrap();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(&data_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("restart {nick}: {e}"));
    relay["pid"] = serde_json::json!(child.id());
    let tmp = dir.join("network.json.restart");
    std::fs::write(&tmp, serde_json::to_string_pretty(&net).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let end = Instant::now() + Duration::from_secs(90);
    while boots() <= before {
        assert!(
            Instant::now() < end,
            "{nick} did not bootstrap again within 90 s (see {})",
            notice.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

/// The relays this test restarted (its own child processes): stopped and reaped on drop,
/// SIGTERM then, after 10 s, SIGKILL.
struct Restarted(Vec<std::process::Child>);

impl Drop for Restarted {
    fn drop(&mut self) {
        for c in &self.0 {
            // SAFETY: kill(2) on our own child process, not yet reaped (so its pid is not
            // reused); no memory is involved.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let end = Instant::now() + Duration::from_secs(10);
        for c in &mut self.0 {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// (C tor middles' nicks, C tor exits' (nick, fingerprint)) from the script's network.json.
fn relays(dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let text = std::fs::read_to_string(dir.join("network.json")).unwrap();
    let net: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut entries = Vec::new();
    let mut exits = Vec::new();
    for r in net["relays"].as_array().unwrap() {
        if r["pluggable"].as_bool() == Some(true) {
            continue;
        }
        let nick = r["nick"].as_str().unwrap().to_string();
        match r["role"].as_str() {
            Some("exit") => exits.push((nick, r["fingerprint"].as_str().unwrap().to_string())),
            _ => entries.push(nick),
        }
    }
    (entries, exits)
}

/// A SOCKS5 CONNECT (username/password, so the client isolates it on a circuit of its own)
/// through the client to the script's HTTP server.
fn socks5_connect(dir: &Path, user: &str) -> TcpStream {
    let text = std::fs::read_to_string(dir.join("network.json")).unwrap();
    let net: serde_json::Value = serde_json::from_str(&text).unwrap();
    let socks = net["client"]["socks_port"].as_u64().unwrap() as u16;
    let ip = net["http_server"]["address"].as_str().unwrap();
    let port = net["http_server"]["port"].as_u64().unwrap() as u16;
    Socks5::local(socks, Duration::from_secs(120))
        .isolated(user)
        .connect(ip, port)
        .unwrap_or_else(|e| panic!("SOCKS stream for {user}: {e}"))
}

/// Process ids of the C tor exits (from the script's network.json).
fn exit_pids(dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join("network.json")).unwrap();
    let net: serde_json::Value = serde_json::from_str(&text).unwrap();
    net["relays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"].as_str() == Some("exit") && r["pluggable"].as_bool() != Some(true))
        .map(|r| r["pid"].as_u64().expect("exit pid") as u32)
        .collect()
}

/// The metrics page once the shards mirrored their counters (they do every tick).
fn metrics_after_tick(addr: SocketAddr) -> String {
    std::thread::sleep(Duration::from_millis(600));
    let r = http_get(addr, "/metrics");
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    r
}
