//! A real C tor 0.4.9 client whose only guard is a Fors relay with `DirCache 1` (issue #10),
//! in the private loopback network of scripts/testnet.py (nothing leaves the machine):
//!
//! * the client (`EntryNodes $FORS`, `UseEntryGuards 1`, `UseMicrodescriptors 1`) is
//!   restarted without its microdescriptors once the network is up, and fetches them all from
//!   Fors through BEGIN_DIR, bootstraps to 100 %, and at the next consensus (every 20 s)
//!   downloads a consensus **diff** from Fors and applies it — shown by the client's own
//!   `info` log (dirclient.c names the server it got each answer from) and by Fors's
//!   MetricsPort (`fors_dircache_diffs` kept, `fors_dirserver_requests_total` of kinds
//!   `microdesc` and `consensus_diff` served);
//! * then, switched to full descriptors (which it also fetches from Fors, its only directory
//!   guard), it carries a SHA-256-checked transfer through the network;
//! * `curl` to Fors's DirPort gets the signed microdesc consensus, plain and `.z`, the same
//!   bytes once inflated, and identical to the one Fors keeps on disk.
//!
//! Skipped without `tor`, `tor-gencert`, python3 or `curl`, or with `FORS_SKIP_TESTNET`
//! (fails under `CI=true`, see `tests/skip_common`). The network is stopped by the script's
//! recorded pids when the test ends; the restarted client is this test's child, killed on drop.

mod daemon_common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::private_net::{client_ports, network_json, testnet, PrivateNet, TorControl};
use daemon_common::{free_port, http_get, metric};
use fors::dircache::disk;

/// The restarted C tor client; killed when the test ends, pass or fail.
struct ClientGuard(Child);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` for `url`: (status line and headers, body bytes).
fn curl(url: &str) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-D", "-", url])
        .output()
        .expect("run curl");
    let pos = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head from {url}: {:?}", out));
    let head = String::from_utf8_lossy(&out.stdout[..pos]).into_owned();
    (head, out.stdout[pos + 4..].to_vec())
}

/// zlib-inflates a `.z` body.
fn inflate(z: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(z)
        .read_to_end(&mut out)
        .expect("the .z body inflates");
    out
}

/// Waits (bounded) for a line of `path` that contains every one of `needles`.
fn wait_for_line_with(path: &Path, needles: &[&str], limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no line with {needles:?} in {} within {limit:?}; its dir lines:\n{}",
            path.display(),
            text.lines()
                .filter(|l| l.contains("from server") || l.contains("Bootstrapped"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn c_tor_client_bootstraps_and_fetches_diffs_and_microdescs_from_fors() {
    const NAME: &str = "c_tor_client_bootstraps_and_fetches_diffs_and_microdescs_from_fors";
    let Some(pnet) = PrivateNet::prepare(NAME, "dircache-client", &[("curl", "--version")]) else {
        return;
    };
    let dir = pnet.dir();
    let client_log = pnet.tmp().join("client-info.log");
    let dir_port = free_port();
    let dirport_opt = format!("forsmiddle1 DirPort 127.0.0.1:{dir_port}");
    let client_log_opt = format!("Log info file {}", client_log.display());
    pnet.up(&[
        "--fors",
        "middle",
        "--middles",
        "2",
        "--exits",
        "1",
        "--entry",
        "forsmiddle1",
        "--slot-option",
        "forsmiddle1 DirCache 1",
        "--slot-option",
        &dirport_opt,
        "--client-option",
        "UseEntryGuards 1",
        // The last value wins over the script's `UseMicrodescriptors 0`.
        "--client-option",
        "UseMicrodescriptors 1",
        "--client-option",
        &client_log_opt,
    ]);
    let rec = pnet.relay("forsmiddle1");
    let fp = rec["fingerprint"].as_str().unwrap().to_string();
    let or_port = rec["orport"].as_u64().unwrap();
    let metrics_port = rec["metrics_port"].as_u64().unwrap() as u16;
    let data_dir = Path::new(rec["data_dir"].as_str().unwrap()).to_owned();
    pnet.wait_running(&["forsmiddle1"], Duration::from_secs(120));
    // Fors listed with V2Dir (so clients use it as a directory guard) and Guard, and the
    // client has a circuit. (`testnet.py wait` reads server descriptors, which a
    // microdescriptor client does not have.)
    let mut ctl = TorControl::connect(client_ports(dir).1);
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        let ns = ctl
            .command(&format!("GETINFO ns/id/{fp}"))
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        let flags = ns.lines().find(|l| l.starts_with("s ")).unwrap_or("");
        let circ = ctl
            .command("GETINFO status/circuit-established")
            .unwrap()
            .join(" ");
        if flags.contains(" V2Dir") && flags.contains(" Guard") && circ.contains("=1") {
            break;
        }
        assert!(
            Instant::now() < end,
            "Fors never listed as a V2Dir guard with a client circuit: {ns} / {circ}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(ctl);

    // Restart the client without its microdescriptors: with a live consensus, its only
    // directory guard (Fors) must supply them, and later consensuses, as diffs.
    let mut net = network_json(dir);
    let client_pid = net["client"]["pid"].as_u64().unwrap() as i32;
    let client_dir = Path::new(net["client"]["data_dir"].as_str().unwrap()).to_owned();
    let client_torrc = net["client"]["torrc"].as_str().unwrap().to_owned();
    // SAFETY: kill(2) on the pid testnet.py recorded for the client this test started.
    assert_eq!(unsafe { libc::kill(client_pid, libc::SIGTERM) }, 0);
    let end = Instant::now() + Duration::from_secs(30);
    while daemon_common::private_net::pid_alive(client_pid as u64) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!daemon_common::private_net::pid_alive(client_pid as u64));
    for f in ["cached-microdescs", "cached-microdescs.new"] {
        let _ = std::fs::remove_file(client_dir.join(f));
    }
    std::fs::write(&client_log, "").unwrap();
    let run_dir = dir.canonicalize().unwrap();
    let child = Command::new("tor")
        .arg("--defaults-torrc")
        .arg(run_dir.join("empty-defaults"))
        .arg("-f")
        .arg(&client_torrc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restart the client");
    net["client"]["pid"] = child.id().into();
    std::fs::write(
        dir.join("network.json"),
        serde_json::to_string_pretty(&net).unwrap(),
    )
    .unwrap();
    let _client = ClientGuard(child);

    // dirclient.c names the server of each answer; a BEGIN_DIR fetch names the relay's
    // ORPort (or its fingerprint).
    let fors_addr = format!("127.0.0.1:{or_port}");
    let from_fors = |l: &str| l.contains(&fors_addr) || l.contains(&fp);
    let l = wait_for_line_with(
        &client_log,
        &["Received answer to microdescriptor request (status 200"],
        Duration::from_secs(120),
    );
    assert!(from_fors(&l), "microdescs not from Fors: {l}");
    wait_for_line_with(
        &client_log,
        &["Bootstrapped 100%"],
        Duration::from_secs(120),
    );
    let l = wait_for_line_with(
        &client_log,
        &["Applied consensus diff"],
        Duration::from_secs(120),
    );
    assert!(from_fors(&l), "diff not from Fors: {l}");
    let text = std::fs::read_to_string(&client_log).unwrap();
    for l in text.lines().filter(|l| {
        l.contains("Received answer to microdescriptor request")
            || l.contains("Applied consensus diff")
            || l.contains("Received consensus directory")
    }) {
        assert!(from_fors(l), "a directory answer not from Fors: {l}");
    }
    assert!(
        !text.contains("Could not apply consensus diff"),
        "{}",
        text.lines()
            .filter(|l| l.contains("diff"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let m = http_get(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/metrics");
    let diffs = metric(&m, "fors_dircache_diffs").unwrap_or(0);
    assert!(diffs > 0, "no diffs kept: {m}");
    // Fors's own counters of what it served (issue #10: "shown by Fors's counters").
    let served = |kind: &str| {
        metric(
            &m,
            &format!("fors_dirserver_requests_total{{kind=\"{kind}\"}}"),
        )
        .unwrap_or(0)
    };
    let (md_served, diffs_served) = (served("microdesc"), served("consensus_diff"));
    assert!(md_served > 0, "no microdescriptor answers counted: {m}");
    assert!(diffs_served > 0, "no diff answers counted: {m}");
    // C tor clients ask for compressed answers (Accept-Encoding): counted by encoding.
    let compressed: u64 = ["deflate", "gzip", "x-zstd", "x-tor-lzma"]
        .iter()
        .map(|e| {
            metric(
                &m,
                &format!("fors_dirserver_answers_by_encoding_total{{encoding=\"{e}\"}}"),
            )
            .unwrap_or(0)
        })
        .sum();
    assert!(compressed > 0, "no compressed answers counted: {m}");
    println!(
        "client fetched through Fors; Fors keeps {diffs} diffs, served {md_served} \
         microdescriptor and {diffs_served} diff answers"
    );

    // Traffic: full descriptors (fetched from Fors too), then a checked transfer.
    let mut ctl = TorControl::connect(client_ports(dir).1);
    ctl.command("SETCONF UseMicrodescriptors=0").unwrap();
    drop(ctl);
    testnet(dir, &["wait", "--timeout", "240"]);
    testnet(
        dir,
        &[
            "traffic",
            "--entry",
            "forsmiddle1",
            "--down-mb",
            "1",
            "--up-mb",
            "1",
            "--io-timeout",
            "120",
        ],
    );
    // The server descriptors came from Fors as well, its only directory guard.
    let text = std::fs::read_to_string(&client_log).unwrap();
    let got: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Received server info"))
        .collect();
    assert!(!got.is_empty(), "no server descriptors fetched");
    for l in &got {
        assert!(from_fors(l), "server descriptors not from Fors: {l}");
    }
    for l in text.lines().filter(|l| {
        l.contains("Received answer to microdescriptor request")
            || l.contains("consensus diff")
            || l.contains("Received server info")
    }) {
        println!("client: {l}");
    }

    // The DirPort: the signed microdesc consensus, plain and `.z`, equal to the stored one.
    // A new consensus may land between two requests: try a few times.
    let base = format!("http://127.0.0.1:{dir_port}/tor/status-vote/current/consensus-microdesc");
    let stored = disk::cache_dir(&data_dir).join("cached-microdesc-consensus");
    let mut agreed = false;
    for _ in 0..5 {
        let (head, plain) = curl(&base);
        assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
        let (head_z, z) = curl(&format!("{base}.z"));
        assert!(head_z.starts_with("HTTP/1.0 200 OK"), "{head_z}");
        let text = String::from_utf8(plain.clone()).unwrap();
        assert!(text.starts_with("network-status-version 3 microdesc\n"));
        assert!(text.contains("\ndirectory-signature "), "unsigned");
        assert!(
            text.contains(&format!(" {}", "forsmiddle1")),
            "Fors not listed"
        );
        let disk_copy = std::fs::read(&stored).unwrap_or_default();
        if inflate(&z) == plain && disk_copy == plain {
            agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(agreed, "plain, .z and the stored consensus never agreed");
}
