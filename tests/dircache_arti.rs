//! An arti client whose only fallback directory cache is a Fors relay with `DirCache 1`
//! bootstraps through it (issue #10): before it has a consensus arti downloads only from its
//! fallbacks, never from authorities, so its first consensus and the authority certificates
//! that verify it come from Fors over BEGIN_DIR (its microdescriptors may then come from any
//! cache the consensus lists). The authorities' download addresses in arti.toml point at
//! listeners of this test that count connections, and must stay at zero; the real
//! authorities run in scripts/testnet.py's private loopback network (nothing leaves the
//! machine).
//!
//! The arti binary: `ARTI_BIN`, else `arti` on PATH (arti 2.7; see
//! /work/shared/reference/arti-private-network.md for the configuration shape). Skipped
//! without it, `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET` (fails under
//! `CI=true`, see `tests/skip_common`). arti is this test's child, killed on drop.

mod daemon_common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use daemon_common::free_port;
use daemon_common::private_net::{start_counting_listener, PrivateNet};

struct ArtiGuard(Child);

impl Drop for ArtiGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arti_bin() -> String {
    std::env::var("ARTI_BIN").unwrap_or_else(|_| "arti".into())
}

/// Whether relay `nick` is listed with `flag` in the newest consensus authority 0 keeps.
fn listed_with(auth_dir: &Path, nick: &str, flag: &str) -> bool {
    let text = std::fs::read_to_string(auth_dir.join("cached-consensus")).unwrap_or_default();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(&format!("r {nick} ")) {
            return lines
                .find(|l| l.starts_with("s "))
                .is_some_and(|s| s.split(' ').any(|f| f == flag));
        }
    }
    false
}

#[test]
fn arti_bootstraps_through_its_only_fallback_a_fors_cache() {
    const NAME: &str = "arti_bootstraps_through_its_only_fallback_a_fors_cache";
    // arti: ARTI_BIN, or arti on PATH.
    let arti = arti_bin();
    let Some(pnet) = PrivateNet::prepare(NAME, "dircache-arti", &[(&arti, "--version")]) else {
        return;
    };
    pnet.up(&[
        "--fors",
        "middle",
        "--middles",
        "2",
        "--exits",
        "1",
        "--no-server",
        "--slot-option",
        "forsmiddle1 DirCache 1",
    ]);
    let net = pnet.json();
    let rec = pnet.relay("forsmiddle1");
    let fp = rec["fingerprint"].as_str().unwrap().to_string();
    let or_port = rec["orport"].as_u64().unwrap();
    pnet.wait_running(&["forsmiddle1"], Duration::from_secs(120));
    // The Fors mirror must hold a consensus listing itself (and every relay) before arti asks.
    let auth_dir = Path::new(net["authorities"][0]["data_dir"].as_str().unwrap()).to_owned();
    let end = Instant::now() + Duration::from_secs(240);
    while !["forsmiddle1", "middle1", "middle2", "exit1"]
        .iter()
        .all(|n| listed_with(&auth_dir, n, "Running"))
        || !listed_with(&auth_dir, "forsmiddle1", "V2Dir")
    {
        assert!(Instant::now() < end, "the network never listed every relay");
        std::thread::sleep(Duration::from_secs(2));
    }
    // One more voting round, so the Fors mirror has fetched that consensus too.
    std::thread::sleep(Duration::from_secs(25));

    // The ed25519 identity as arti wants it: the key of keys/ed25519_master_id_public_key
    // (a 32-byte header, then the key), base64 without padding.
    let data_dir = Path::new(rec["data_dir"].as_str().unwrap()).to_owned();
    let key = std::fs::read(data_dir.join("keys/ed25519_master_id_public_key")).unwrap();
    assert_eq!(key.len(), 64, "ed25519_master_id_public_key");
    let ed = fors::dir::netdoc::base64_nopad(&key[32..]);

    // Authorities' download addresses: counting listeners that nobody may reach.
    let mut v3idents = Vec::new();
    let mut decoys = Vec::new();
    let mut counts = Vec::new();
    for a in net["authorities"].as_array().unwrap() {
        v3idents.push(format!("\"{}\"", a["v3ident"].as_str().unwrap()));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        drop(l);
        counts.push(start_counting_listener(addr));
        decoys.push(format!("[ \"{addr}\" ]"));
    }
    let arti_dir = pnet.tmp().join("arti");
    std::fs::create_dir_all(&arti_dir).unwrap();
    let socks = free_port();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = if unsafe { libc::geteuid() } == 0 {
        "allow_running_as_root = true\n"
    } else {
        ""
    };
    let toml = format!(
        "[application]\n{root}watch_configuration = false\n\
         [logging]\nconsole = \"debug\"\n\
         [proxy]\nsocks_listen = \"127.0.0.1:{socks}\"\ndns_listen = 0\n\
         [storage]\ncache_dir = \"{d}/cache\"\nstate_dir = \"{d}/state\"\n\
         [storage.permissions]\ndangerously_trust_everyone = true\n\
         [tor_network]\nfallback_caches = [ {{ rsa_identity = \"{fp}\", ed_identity = \"{ed}\", \
         orports = [\"127.0.0.1:{or_port}\"] }} ]\n\
         [tor_network.authorities]\nv3idents = [ {ids} ]\nuploads = [ {dl} ]\n\
         downloads = [ {dl} ]\nvotes = [ {dl} ]\n\
         [path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n\
         [address_filter]\nallow_local_addrs = true\n",
        d = arti_dir.display(),
        ids = v3idents.join(", "),
        dl = decoys.join(", "),
    );
    let conf = arti_dir.join("arti.toml");
    std::fs::write(&conf, toml).unwrap();
    let mut child = Command::new(arti_bin())
        .args(["proxy", "-c"])
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start arti");
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
    }
    let _arti = ArtiGuard(child);
    let end = Instant::now() + Duration::from_secs(240);
    let mut seen = Vec::new();
    let done = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let ok = l.contains("Sufficiently bootstrapped");
                seen.push(l);
                if ok {
                    break true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
        if Instant::now() > end {
            break false;
        }
    };
    let tail = seen[seen.len().saturating_sub(60)..].join("\n");
    assert!(done, "arti did not bootstrap through Fors:\n{tail}");
    for l in seen
        .iter()
        .filter(|l| l.contains("consensus") || l.contains("microdesc") || l.contains("certificate"))
    {
        println!("arti: {l}");
    }
    let reached: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(
        reached, 0,
        "arti contacted an authority download address: {tail}"
    );
    // arti stored what it downloaded; the consensus is the network's (it lists Fors).
    let mut found = false;
    for e in walk(&arti_dir.join("cache")) {
        if let Ok(b) = std::fs::read(&e) {
            if String::from_utf8_lossy(&b).contains("\nr forsmiddle1 ") {
                found = true;
            }
        }
    }
    assert!(found, "arti's cache holds no consensus listing Fors");
}

/// Every file under `dir` (bounded depth).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_owned(), 0)];
    while let Some((d, depth)) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 4 {
                todo.push((p, depth + 1));
            } else {
                out.push(p);
            }
        }
    }
    out
}
