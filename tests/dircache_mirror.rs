//! The directory cache's mirror against real C tor 0.4.9 authorities (scripts/testnet.py, a
//! private loopback network; nothing leaves the machine): a Fors relay with `DirCache 1`
//! fills `DataDirectory/dircache/` with both consensus flavours, the authority certificates,
//! and every microdescriptor and server descriptor the consensuses list — checked here by
//! loading the files through Fors's own verification, which must keep every document. Then
//! the relay is stopped, one byte of a stored microdescriptor is changed, and the restarted
//! relay loads the rest from disk, drops (and counts) the bad one, and fetches it again.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET` (fails under
//! `CI=true`, see `tests/skip_common`). The network is stopped by the script's recorded pids
//! when the test ends; the restarted Fors is this test's own child, killed on drop.

mod daemon_common;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use daemon_common::private_net::PrivateNet;
use daemon_common::{wait_for_file_line, Fors};
use fors::crypto::ids::RsaIdentity;
use fors::dircache::disk::{self, LoadReport};
use fors::dircache::mirror::Mirror;
use fors::dircache::{ConsensusFlavor, DirStore};
use rand::SeedableRng;

/// Loads `cache` the way Fors does at start-up, into a fresh store; the report and the
/// number of relays each consensus lists.
fn load_cache(cache: &Path, trusted: &[RsaIdentity], seed: u64) -> (LoadReport, usize, usize) {
    let store = Arc::new(RwLock::new(DirStore::new()));
    let mut m = Mirror::new(store, trusted.to_vec());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let r = disk::load(cache, &mut m, SystemTime::now(), &mut rng);
    let n = |f| m.consensus(f).map_or(0, |c| c.relays.len());
    let (md, ns) = (n(ConsensusFlavor::Microdesc), n(ConsensusFlavor::Ns));
    (r, md, ns)
}

/// Waits (bounded) until the cache on disk is complete: both consensuses verify, and every
/// microdesc and server descriptor they list is there and verifies.
fn wait_complete(cache: &Path, trusted: &[RsaIdentity], seed: u64, limit: Duration) -> LoadReport {
    let end = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < end {
        let (r, md, ns) = load_cache(cache, trusted, seed);
        if r.consensuses == 2 && md > 0 && r.microdescs == md && r.server_descriptors == ns {
            return r;
        }
        last = Some((r, md, ns));
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!(
        "the cache in {} never became complete: {last:?}",
        cache.display()
    );
}

#[test]
fn mirrors_verifies_and_keeps_the_directory_across_a_restart() {
    let Some(pnet) = PrivateNet::prepare(
        "mirrors_verifies_and_keeps_the_directory_across_a_restart",
        "dircache-mirror",
        &[],
    ) else {
        return;
    };
    let seed: u64 = rand::random();
    println!("seed {seed}");
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
    let trusted: Vec<RsaIdentity> = net["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| RsaIdentity::from_hex(a["v3ident"].as_str().unwrap()).unwrap())
        .collect();
    let rec = pnet.relay("forsmiddle1");
    let data_dir = Path::new(rec["data_dir"].as_str().unwrap()).to_owned();
    let torrc = rec["torrc"].as_str().unwrap().to_owned();
    let cache = disk::cache_dir(&data_dir);
    let log = pnet.log("forsmiddle1");
    wait_for_file_line(&log, "the relay is running", Duration::from_secs(120));
    wait_for_file_line(
        &log,
        "Directory cache: loaded 0 consensuses",
        Duration::from_secs(5),
    );

    // Every relay of the network (3 authorities, 3 C tor relays, Fors) once all are listed.
    let r = wait_complete(&cache, &trusted, seed, Duration::from_secs(240));
    println!("complete: {r:?}");
    assert_eq!(r.certs, 3);
    // Old microdescs of relays that republished may be on disk too (kept a week, as in C),
    // but nothing stored fails verification.
    assert_eq!(r.rejected, 0, "{r:?}");
    assert!(r.problems.is_empty(), "{r:?}");

    // Stop the slot's Fors (by its recorded pid), break one stored microdesc, restart it.
    let pid = rec["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on the pid testnet.py recorded for the Fors process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let end = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = cache.join("cached-microdescs");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("ntor-onion-key ", "ntor-onion-key Z", 1)).unwrap();
    let (r, md, _) = load_cache(&cache, &trusted, seed);
    assert_eq!(r.microdescs + 1, md, "{r:?}");

    let mut fors = Fors::start(&["-f", &torrc]);
    let l = fors.wait_for("Directory cache: loaded", Duration::from_secs(60));
    // Everything else came back from disk (the consensuses may have expired by now only if
    // the network stopped voting, which it does not).
    assert!(l.contains("loaded 2 consensuses, 3 certificates"), "{l}");
    assert!(
        l.contains(&format!("certificates, {} microdescriptors", md - 1)),
        "{l}"
    );
    // The dropped one is fetched again and the cache is whole (and verifies) once more.
    let r = wait_complete(&cache, &trusted, seed, Duration::from_secs(120));
    assert_eq!(r.rejected, 0, "{r:?}");
    fors.signal(libc::SIGTERM);
    fors.wait_exit(Duration::from_secs(30));
}
