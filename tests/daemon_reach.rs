//! Reachability and identity on the network, as C tor 0.4.9 (issue #9 point 8), on loopback
//! only:
//! * the ORPort self-test before publishing (`AssumeReachable 0`): a listening ORPort is
//!   found reachable and the descriptor goes out; an advertised address nobody serves is
//!   reported and nothing is uploaded;
//! * address discovery without `Address`: a directory authority's `X-Your-Address-Is` is
//!   taken (internal suggestions are refused, as C does) and published;
//! * in a private network of C tor authorities (scripts/testnet.py), the Fors relay gets
//!   `Stable` whenever the C tor relays started with it do.
//!
//! The fake authorities are plain HTTP servers on 127.0.0.1 that record what they receive.

mod daemon_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_common::private_net::{testnet_skip_reason, TorControl};
use daemon_common::{free_port, free_port_range_base, testnet_script, Fors, TempDir, TestnetGuard};
use fors_testkit::torrc::{DirAuthority, Torrc};

const START: Duration = Duration::from_secs(60);

/// A fake authority DirPort: answers every GET with 200, a junk body and
/// `X-Your-Address-Is: <hint>` (when set), every POST with `200 OK`; records requests.
struct FakeAuthority {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    hint: Arc<Mutex<Option<String>>>,
}

impl FakeAuthority {
    fn start(hint: Option<&str>) -> FakeAuthority {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hint = Arc::new(Mutex::new(hint.map(str::to_owned)));
        let (r, h) = (requests.clone(), hint.clone());
        std::thread::spawn(move || {
            // Bounded: no test here makes more than a few hundred requests.
            for s in l.incoming().take(1000) {
                let Ok(mut s) = s else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the headers, then Content-Length bytes of body (bounded by the timeout
                // and by 1 MiB).
                let (head, body) = loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break (String::from_utf8_lossy(&buf).into_owned(), ""),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let want = text[..i]
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + want || buf.len() > 1 << 20 {
                            break (text, "");
                        }
                    }
                };
                let _ = body;
                let first = head.lines().next().unwrap_or("").to_string();
                r.lock().unwrap().push((first.clone(), head.clone()));
                let answer = if first.starts_with("POST") {
                    "HTTP/1.0 200 OK\r\n\r\n".to_string()
                } else {
                    let hint = h
                        .lock()
                        .unwrap()
                        .as_ref()
                        .map(|a| format!("X-Your-Address-Is: {a}\r\n"))
                        .unwrap_or_default();
                    format!("HTTP/1.0 200 OK\r\n{hint}Content-Length: 5\r\n\r\njunk\n")
                };
                let _ = s.write_all(answer.as_bytes());
            }
        });
        FakeAuthority {
            addr,
            requests,
            hint,
        }
    }

    /// The POSTs received so far (whole request text).
    fn posts(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(first, _)| first.starts_with("POST"))
            .map(|(_, all)| all.clone())
            .collect()
    }

    fn set_hint(&self, hint: &str) {
        *self.hint.lock().unwrap() = Some(hint.to_owned());
    }

    /// A `DirAuthority` line for this server (its ORPort is a dead loopback port).
    fn line(&self, n: u8) -> String {
        let auth = DirAuthority::fake_at(n, self.addr, free_port());
        format!("DirAuthority {auth}\n")
    }
}

fn start_relay(dir: &Path, lines: &str) -> Fors {
    // The tests give the Address (or none) themselves.
    let rc = Torrc::test_relay("ForsReach", dir)
        .unset("Address")
        .num_cpus(1)
        .publish_server_descriptor(true)
        .raw(lines)
        .write_to(dir);
    Fors::start(&["-f", rc.to_str().unwrap()])
}

/// Waits up to `limit` for `pred` on the fake authority; bounded polling.
fn wait_until(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pred()
}

#[test]
fn self_test_finds_a_listening_orport_reachable_then_publishes() {
    let tmp = TempDir::new("reach-ok");
    let auth = FakeAuthority::start(None);
    let p = free_port();
    let mut f = start_relay(
        tmp.path(),
        &format!(
            "Address 127.0.0.1\nORPort 127.0.0.1:{p}\nAssumeReachable 0\n{}",
            auth.line(1)
        ),
    );
    f.wait_for(
        &format!("Now checking whether IPv4 ORPort 127.0.0.1:{p} is reachable"),
        START,
    );
    let l = f.wait_for("Self-testing indicates your ORPort", START);
    assert!(
        l.contains(&format!(
            "Self-testing indicates your ORPort 127.0.0.1:{p} is reachable from the outside. \
             Excellent. Publishing server descriptor."
        )),
        "{l}"
    );
    f.wait_for("Uploading our descriptor", START);
    assert!(
        wait_until(Duration::from_secs(30), || !auth.posts().is_empty()),
        "no upload reached the authority"
    );
    let post = &auth.posts()[0];
    assert!(
        post.contains(&format!("\nrouter ForsReach 127.0.0.1 {p} 0 0\n")),
        "{post}"
    );
    // The self-test came before the upload.
    let pos = |needle: &str| f.log.iter().position(|l| l.contains(needle)).unwrap();
    assert!(pos("Self-testing indicates") < pos("Uploading our descriptor"));
}

#[test]
fn self_test_failure_is_reported_and_nothing_is_uploaded() {
    let tmp = TempDir::new("reach-fail");
    let auth = FakeAuthority::start(None);
    let p = free_port();
    // We advertise 127.0.0.9:P, but the ORPort listens on 127.0.0.1:P only: nothing of ours
    // answers at the published address.
    let mut f = start_relay(
        tmp.path(),
        &format!(
            "Address 127.0.0.9\nORPort 127.0.0.1:{p}\nAssumeReachable 0\n{}",
            auth.line(1)
        ),
    );
    f.wait_for("the relay is running", START);
    let l = f.wait_for("ORPort self-test of", START);
    assert!(
        l.contains(&format!("ORPort self-test of 127.0.0.9:{p} failed"))
            && l.contains("Not publishing a descriptor until it passes"),
        "{l}"
    );
    // Several publish checks pass (the first is immediate); none may upload.
    f.drain(Duration::from_secs(8));
    assert!(auth.posts().is_empty(), "uploaded: {:?}", auth.posts());
    assert!(
        !f.log.iter().any(|l| l.contains("Uploading our descriptor")
            || l.contains("Self-testing indicates")),
        "{}",
        f.log.join("\n")
    );
}

#[test]
fn assume_reachable_publishes_without_a_self_test() {
    let tmp = TempDir::new("reach-assume");
    let auth = FakeAuthority::start(None);
    let p = free_port();
    let mut f = start_relay(
        tmp.path(),
        &format!(
            "Address 127.0.0.9\nORPort 127.0.0.1:{p}\nAssumeReachable 1\n{}",
            auth.line(1)
        ),
    );
    f.wait_for("Uploading our descriptor", START);
    assert!(wait_until(Duration::from_secs(30), || !auth
        .posts()
        .is_empty()));
    assert!(
        !f.log.iter().any(|l| l.contains("Now checking whether")),
        "{}",
        f.log.join("\n")
    );
}

#[test]
fn learns_its_address_from_an_authority_and_publishes_it() {
    let tmp = TempDir::new("reach-addr");
    // First an internal suggestion, which C tor refuses ("Do not believe anyone who says our
    // address is internal"); then a public-looking one (TEST-NET-2, never contacted: with
    // AssumeReachable 1 there is no self-test to it).
    let auth = FakeAuthority::start(Some("127.0.0.1"));
    let p = free_port();
    // Listen on loopback without advertising that address; the advertised ORPort has no
    // address, so the torrc gives none at all. An exit that rejects its own addresses, to see
    // the learned one in the policy (the resolver is never asked: no stream is opened).
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let mut f = start_relay(
        tmp.path(),
        &format!(
            "ORPort 127.0.0.1:{p} NoAdvertise\nORPort {p} NoListen\nAssumeReachable 1\n\
             ExitRelay 1\nExitPolicyRejectPrivate 1\nExitPolicy accept *:80\n\
             ExitPolicy reject *:*\nServerDNSResolvConfFile {}\n{}",
            resolv.display(),
            auth.line(1)
        ),
    );
    f.wait_for("Unable to find IPv4 address for ORPort", START);
    // A few consensus attempts with the internal suggestion: nothing is published.
    assert!(wait_until(Duration::from_secs(20), || {
        auth.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(first, _)| first.starts_with("GET"))
            .count()
            >= 2
    }));
    assert!(auth.posts().is_empty(), "{:?}", auth.posts());
    auth.set_hint("198.51.100.7");
    let l = f.wait_for("Guessed our IP address as", Duration::from_secs(60));
    assert!(
        l.contains("Guessed our IP address as 198.51.100.7 (source: X-Your-Address-Is"),
        "{l}"
    );
    assert!(wait_until(Duration::from_secs(60), || !auth
        .posts()
        .is_empty()));
    let post = &auth.posts()[0];
    assert!(
        post.contains(&format!("\nrouter ForsReach 198.51.100.7 {p} 0 0\n")),
        "{post}"
    );
    // C tor's ExitPolicyRejectPrivate also rejects the address it publishes.
    assert!(post.contains("\nreject 198.51.100.7:*\n"), "{post}");
    assert!(!f
        .log
        .iter()
        .any(|l| l.contains("Guessed our IP address as 127.")));
}

/// Flags of every relay in the client's consensus, by nickname.
fn consensus_flags(ctl: &mut TorControl) -> Vec<(String, String)> {
    let lines = ctl.command("GETINFO ns/all").unwrap_or_default();
    let mut out = Vec::new();
    let mut nick = None;
    for l in lines {
        if let Some(r) = l.strip_prefix("r ") {
            nick = r.split(' ').next().map(str::to_owned);
        } else if let (Some(s), Some(n)) = (l.strip_prefix("s "), nick.take()) {
            out.push((n, s.to_owned()));
        }
    }
    out
}

#[test]
fn fors_gets_stable_like_the_c_tor_relays() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip("fors_gets_stable_like_the_c_tor_relays", &why);
        return;
    }
    let tmp = TempDir::new("reach-stable");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let status = std::process::Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--fors", "exit", "--middles", "1", "--exits", "1"])
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        // The real self-test against C tor authorities: the script's `AssumeReachable 1` is
        // overridden (the last value wins).
        .args(["--slot-option", "forsexit1 AssumeReachable 0"])
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");
    let log = dir.join("forsexit1/stdout.log");
    let l = daemon_common::wait_for_file_line(
        &log,
        "Self-testing indicates your ORPort",
        Duration::from_secs(120),
    );
    assert!(l.contains("Excellent."), "{l}");
    let (_, control) = daemon_common::private_net::client_ports(&dir);
    let mut ctl = TorControl::connect(control);
    // Three looks one voting interval (20 s) apart once the C tor relays are Stable and Fors
    // is Running: Fors must be Stable in each.
    let mut seen = 0;
    let end = Instant::now() + Duration::from_secs(300);
    let mut last = Vec::new();
    while seen < 3 && Instant::now() < end {
        let flags = consensus_flags(&mut ctl);
        let get = |n: &str| flags.iter().find(|(k, _)| k == n).map(|(_, f)| f.clone());
        if let (Some(fors), Some(exit), Some(middle)) =
            (get("forsexit1"), get("exit1"), get("middle1"))
        {
            let stable = |f: &str| f.split(' ').any(|w| w == "Stable");
            if stable(&exit) && stable(&middle) && fors.contains("Running") {
                assert!(stable(&fors), "C tor relays Stable, Fors not: {flags:?}");
                seen += 1;
                eprintln!("look {seen}: {flags:?}");
                last = flags;
                std::thread::sleep(Duration::from_secs(20));
                continue;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        seen, 3,
        "fewer than 3 consensuses with Fors Running: {last:?}"
    );
}

/// The consensus parameter `allow-network-reentry=1` reaches the Fors exit's shards: a C tor
/// client's stream through it to a relay's ORPort connects. Without the parameter the C tor
/// client itself refuses such a stream, so only the allowing side can be seen end to end;
/// tests/circuit_core.rs covers both settings in the core.
#[test]
fn consensus_allow_network_reentry_reaches_the_exit() {
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip("consensus_allow_network_reentry_reaches_the_exit", &why);
        return;
    }
    let tmp = TempDir::new("reach-reentry");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let run = |args: &[&str]| daemon_common::private_net::testnet(&dir, args);
    let base = free_port_range_base().to_string();
    let fors_bin = env!("CARGO_BIN_EXE_fors");
    run(&[
        "up",
        "--fors",
        "exit",
        "--middles",
        "2",
        // The Fors relay is the only exit: a refusal there cannot be retried elsewhere.
        "--exits",
        "0",
        "--base-port",
        &base,
        "--fors-bin",
        fors_bin,
        "--consensus-params",
        "sendme_accept_min_version=1 ExtendByEd25519ID=1 allow-network-reentry=1",
    ]);
    run(&["wait", "--pluggable-only", "--timeout", "180"]);
    let middle = daemon_common::private_net::relay_record(&dir, "middle1");
    let target = format!("127.0.0.1:{}", middle["orport"].as_u64().unwrap());
    run(&[
        "probe",
        &target,
        "--exit",
        "forsexit1",
        "--expect",
        "connect",
        "--io-timeout",
        "60",
    ]);
}

/// The NETINFO path of address discovery, against a real Tor link: relay B (no address in
/// its torrc) names relay A's ORPort and identity as an authority's `orport=`; B opens a link
/// to it, reads our address from A's NETINFO (127.0.0.1 as A sees it) and, as C tor, does not
/// believe an internal address.
#[test]
fn learns_from_an_authority_netinfo_and_refuses_an_internal_answer() {
    let tmp_a = TempDir::new("reach-netinfo-a");
    let tmp_b = TempDir::new("reach-netinfo-b");
    let pa = free_port();
    // A: an ordinary relay that publishes nothing; it only answers the link.
    let mut a = start_relay(
        tmp_a.path(),
        &format!(
            "Address 127.0.0.1\nORPort 127.0.0.1:{pa}\nPublishServerDescriptor 0\n{}",
            FakeAuthority::start(None).line(1)
        ),
    );
    let fp_line = a.wait_for("identity key fingerprint is", START);
    let fp: String = fp_line
        .split("ForsReach ")
        .nth(1)
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(fp.len(), 40, "{fp_line}");
    a.wait_for("the relay is running", START);
    let dir = FakeAuthority::start(None);
    let pb = free_port();
    let mut b = start_relay(
        tmp_b.path(),
        &format!(
            "Log info stdout\nORPort 127.0.0.1:{pb} NoAdvertise\nORPort {pb} NoListen\n\
             AssumeReachable 1\n\
             DirAuthority authA orport={pa} no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 \
             {} {fp}\n",
            dir.addr
        ),
    );
    let l = b.wait_for("(NETINFO)", START);
    assert!(
        l.contains("Ignoring our address 127.0.0.1 as directory authority authA suggests it (NETINFO): Internal"),
        "{l}"
    );
    assert!(!b.log.iter().any(|l| l.contains("Guessed our IP address")));
    assert!(dir.posts().is_empty());
}
