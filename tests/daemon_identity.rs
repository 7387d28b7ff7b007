//! A Fors relay's identity against real C tor 0.4.9 directory authorities on loopback
//! (scripts/testnet.py, a private network; nothing leaves the machine), on one shared network:
//!
//! 1. keys made offline by Debian's tor, seeded into a Fors exit slot (`--slot-keys`), keep
//!    their identity: the authorities' consensus lists that RSA fingerprint Running Valid
//!    Exit, and the descriptor they hold carries the Ed25519 identity C tor printed;
//! 2. an impostor with the same RSA key but a fresh Ed25519 identity is refused by the
//!    authorities (key pinning), and its log shows their reason at warn level;
//! 3. after SIGKILL and a restart with the same torrc, the relay keeps its fingerprint, its
//!    new descriptor is stored by every authority and it is listed Running again;
//! 4. a Fors middle is listed without the Exit flag.
//!
//! Skipped only with `FORS_SKIP_TESTNET`. Every wait is bounded. The network is stopped (by
//! pid, by the script) when the test ends, and processes the test started are SIGKILLed.

mod daemon_common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_common::{
    free_port, free_port_range_base, http_get, testnet_script, wait_for_file_line, TempDir,
    TestnetGuard,
};
use fors::dir::consensus::{Consensus, RelayFlags, RouterStatus};

const TOR: &str = "/usr/sbin/tor";

/// A `fors -f torrc` the test started itself (logging to a file); SIGKILLed on drop.
struct Spawned(Child);

impl Spawned {
    fn start(torrc: &Path, cwd: &Path, log: &Path) -> Spawned {
        let out = File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fors"))
            .arg("-f")
            .arg(torrc)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn fors");
        Spawned(child)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tor --list-fingerprint [ed25519]` on an offline DataDirectory: (nickname, identity).
fn ctor_list_fingerprint(which: Option<&str>, data: &Path, torrc: &Path) -> (String, String) {
    let out = Command::new(TOR)
        .arg("--quiet")
        .arg("--list-fingerprint")
        .args(which)
        .arg("--DataDirectory")
        .arg(data)
        .args(["--ORPort", "9999", "--Nickname", "CtorKeys", "-f"])
        .arg(torrc)
        // tor must never touch the network here.
        .args(["--DisableNetwork", "1"])
        .output()
        .expect("run tor");
    assert!(
        out.status.success(),
        "tor --list-fingerprint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (nick, id) = text.trim().split_once(' ').expect("'<nick> <id>'");
    (nick.to_owned(), id.replace(' ', ""))
}

/// The body of `GET path` from a DirPort; panics unless the answer is 200.
fn dir_get(addr: SocketAddr, path: &str) -> String {
    let resp = http_get(addr, path);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(
        head.starts_with("HTTP/1.0 200"),
        "GET {path} from {addr}: {head}"
    );
    body.to_owned()
}

/// The relay's entry in an authority's current consensus, once one valid after
/// `not_before` (unix seconds) lists it with all of `flags`.
fn wait_listed(
    dirport: SocketAddr,
    fp: &str,
    flags: RelayFlags,
    not_before: u64,
    timeout: Duration,
) -> RouterStatus {
    let end = Instant::now() + timeout;
    loop {
        let text = dir_get(dirport, "/tor/status-vote/current/consensus");
        let cons = Consensus::parse(&text).expect("authority's consensus parses");
        let fresh = cons.valid_after >= not_before;
        let entry = cons
            .relays
            .into_iter()
            .find(|r| r.rsa_identity.to_hex().eq_ignore_ascii_case(fp));
        if let Some(r) = entry.as_ref().filter(|r| fresh && r.flags.contains(flags)) {
            return r.clone();
        }
        if Instant::now() > end {
            panic!(
                "{fp} not listed with {:?} in time: {entry:?}",
                flags.names()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `(published, master-key-ed25519)` of the descriptor an authority holds for `fp`.
fn descriptor_identity(dirport: SocketAddr, fp: &str) -> (String, String) {
    let desc = dir_get(dirport, &format!("/tor/server/fp/{fp}"));
    let field = |kw: &str| {
        desc.lines()
            .find_map(|l| l.strip_prefix(kw))
            .unwrap_or_else(|| panic!("no {kw:?} in descriptor:\n{desc}"))
            .trim()
            .to_owned()
    };
    (field("published "), field("master-key-ed25519 "))
}

fn flags(all: &[RelayFlags]) -> RelayFlags {
    let mut f = RelayFlags::default();
    for &x in all {
        f.insert(x);
    }
    f
}

fn pid_alive(pid: i32) -> bool {
    // A zombie (reparented, not yet reaped) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn identity_survives_c_tor_keys_restart_and_rejects_an_impostor() {
    if std::env::var_os("FORS_SKIP_TESTNET").is_some() {
        daemon_common::skip_common::skip(
            "identity_survives_c_tor_keys_restart_and_rejects_an_impostor",
            "FORS_SKIP_TESTNET is set",
        );
        return;
    }
    let tmp = TempDir::new("daemon-identity");

    // Keys made by C tor, offline.
    let ctor = tmp.path().join("ctor");
    std::fs::create_dir_all(&ctor).unwrap();
    let empty = tmp.path().join("empty-torrc");
    std::fs::write(&empty, "").unwrap();
    let (_, ctor_fp) = ctor_list_fingerprint(None, &ctor, &empty);
    let (_, ctor_ed) = ctor_list_fingerprint(Some("ed25519"), &ctor, &empty);
    assert_eq!(ctor_fp.len(), 40, "{ctor_fp}");
    assert_eq!(
        std::fs::read_to_string(ctor.join("fingerprint-ed25519")).unwrap(),
        format!("CtorKeys {ctor_ed}\n")
    );

    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let status = Command::new("python3")
        .arg(testnet_script())
        .arg("--dir")
        .arg(&dir)
        .args([
            "up",
            "--fors",
            "exit",
            "--fors",
            "middle",
            "--middles",
            "1",
            "--exits",
            "1",
            "--no-server",
            "--slot-keys",
        ])
        .arg(format!("forsexit1 {}", ctor.join("keys").display()))
        .arg("--base-port")
        .arg(free_port_range_base().to_string())
        .arg("--fors-bin")
        .arg(env!("CARGO_BIN_EXE_fors"))
        .status()
        .unwrap();
    assert!(status.success(), "testnet up failed");

    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("network.json")).unwrap()).unwrap();
    let relay = |nick: &str| {
        net["relays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["nick"] == nick)
            .unwrap_or_else(|| panic!("{nick} not in network.json"))
            .clone()
    };
    let exit = relay("forsexit1");
    let middle = relay("forsmiddle1");
    let auth0 = &net["authorities"][0];
    let dirport: SocketAddr = format!("127.0.0.1:{}", auth0["dirport"].as_u64().unwrap())
        .parse()
        .unwrap();
    let exit_fp = exit["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(exit_fp, ctor_fp, "Fors must load C tor's RSA identity");
    let exit_dir = PathBuf::from(exit["data_dir"].as_str().unwrap());
    let exit_torrc = PathBuf::from(exit["torrc"].as_str().unwrap());
    let exit_log = exit_dir.join("stdout.log");

    // 1. C tor's identity, listed by the authorities.
    let t = Duration::from_secs(240);
    let l = wait_for_file_line(&exit_log, "Fors is listed in the consensus", t);
    assert!(l.contains(" Running") && l.contains("Exit"), "{l}");
    let entry = wait_listed(
        dirport,
        &exit_fp,
        flags(&[RelayFlags::RUNNING, RelayFlags::VALID, RelayFlags::EXIT]),
        0,
        Duration::from_secs(60),
    );
    assert_eq!(entry.nickname, "forsexit1");
    let (published_before, ed) = descriptor_identity(dirport, &exit_fp);
    assert_eq!(ed, ctor_ed, "the authorities hold C tor's Ed25519 identity");

    // 4. The middle is listed, without Exit.
    let middle_fp = middle["fingerprint"].as_str().unwrap();
    let middle_log = PathBuf::from(middle["data_dir"].as_str().unwrap()).join("stdout.log");
    let l = wait_for_file_line(&middle_log, "Fors is listed in the consensus", t);
    assert!(l.contains(" Running") && !l.contains("Exit"), "{l}");
    let m = wait_listed(
        dirport,
        middle_fp,
        flags(&[RelayFlags::RUNNING, RelayFlags::VALID]),
        0,
        Duration::from_secs(60),
    );
    assert!(!m.flags.contains(RelayFlags::EXIT), "{:?}", m.flags.names());

    // 2. An impostor: same RSA identity key, fresh Ed25519 identity. The authorities pinned
    // the first pairing and refuse the new one (dir-spec §3.1; C tor keypin.c).
    let imp_dir = tmp.path().join("impostor");
    std::fs::create_dir_all(imp_dir.join("keys")).unwrap();
    std::fs::copy(
        ctor.join("keys/secret_id_key"),
        imp_dir.join("keys/secret_id_key"),
    )
    .unwrap();
    let imp_port = free_port();
    let torrc_text = std::fs::read_to_string(&exit_torrc).unwrap();
    let imp_torrc: String = torrc_text
        .lines()
        .map(|l| match l.split_whitespace().next() {
            Some("DataDirectory") => format!("DataDirectory {}", imp_dir.display()),
            Some("Nickname") => "Nickname forsimpostor".to_owned(),
            Some("ORPort") => format!("ORPort 127.0.0.1:{imp_port} IPv4Only"),
            Some("ContactInfo") => "ContactInfo impostor@testnet.invalid".to_owned(),
            _ => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    assert!(imp_torrc.contains("DirAuthority"), "{imp_torrc}");
    let imp_torrc_path = imp_dir.join("torrc");
    std::fs::write(&imp_torrc_path, imp_torrc).unwrap();
    let imp_log = imp_dir.join("stdout.log");
    {
        let _impostor = Spawned::start(&imp_torrc_path, &imp_dir, &imp_log);
        // Every authority refuses it, at warn level, and the log carries C tor's reason.
        for auth in ["auth0", "auth1", "auth2"] {
            let l = wait_for_file_line(
                &imp_log,
                &format!("Authority {auth} ("),
                Duration::from_secs(90),
            );
            eprintln!("impostor: {l}");
            assert!(l.contains("[warn]"), "{l}");
            assert!(l.contains("rejected with HTTP 400"), "{l}");
            assert!(l.contains("Looks like your keypair has changed?"), "{l}");
        }
        let text = std::fs::read_to_string(&imp_log).unwrap();
        assert!(!text.contains("stored by"), "{text}");
        let imp_ed = std::fs::read_to_string(imp_dir.join("fingerprint-ed25519")).unwrap();
        assert!(
            !imp_ed.contains(&ctor_ed),
            "impostor must have a fresh Ed25519 id"
        );
    }
    // The authorities still hold the real relay's pairing.
    assert_eq!(descriptor_identity(dirport, &exit_fp).1, ctor_ed);

    // 3. SIGKILL and restart with the same torrc.
    let pid = exit["pid"].as_i64().unwrap() as i32;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(exit_torrc.to_str().unwrap()),
        "pid {pid} is not our Fors exit"
    );
    // SAFETY: kill(2) on a pid just checked to be our relay.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let end = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) {
        assert!(Instant::now() < end, "pid {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarted_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let restart_log = exit_dir.join("restart.log");
    let _restarted = Spawned::start(&exit_torrc, &exit_dir, &restart_log);
    wait_for_file_line(
        &restart_log,
        "the relay is running",
        Duration::from_secs(60),
    );
    wait_for_file_line(
        &restart_log,
        "Our descriptor is stored by 3 of 3 authorities",
        Duration::from_secs(90),
    );
    let text = std::fs::read_to_string(&restart_log).unwrap();
    // A restart soon after the first start may change nothing but uptime and publication
    // time: C's authorities then keep the descriptor they have ("not new",
    // router_differences_are_cosmetic), which is as good.
    let accepted = text
        .lines()
        .filter(|l| l.contains("): descriptor accepted"))
        .count();
    let kept = text
        .lines()
        .filter(|l| l.contains("it keeps the descriptor it has for us"))
        .count();
    assert_eq!(accepted + kept, 3, "{text}");
    // Same identity on disk and at the authorities, with a descriptor published after restart.
    let fp_file = std::fs::read_to_string(exit_dir.join("fingerprint")).unwrap();
    assert_eq!(fp_file.split_whitespace().nth(1), Some(ctor_fp.as_str()));
    let ed_file = std::fs::read_to_string(exit_dir.join("fingerprint-ed25519")).unwrap();
    assert_eq!(ed_file.split_whitespace().nth(1), Some(ctor_ed.as_str()));
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (published, ed) = descriptor_identity(dirport, &exit_fp);
        assert_eq!(ed, ctor_ed);
        if published > published_before || kept > 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "authority still serves the descriptor published {published}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let l = wait_for_file_line(
        &restart_log,
        "Fors is listed in the consensus",
        Duration::from_secs(120),
    );
    assert!(l.contains(" Running") && l.contains("Exit"), "{l}");
    // A consensus voted after the restart lists it Running again (the authorities'
    // reachability test reached the new process).
    wait_listed(
        dirport,
        &exit_fp,
        flags(&[RelayFlags::RUNNING, RelayFlags::VALID, RelayFlags::EXIT]),
        restarted_at,
        Duration::from_secs(120),
    );
    let text = std::fs::read_to_string(&restart_log).unwrap();
    assert!(
        daemon_common::unexpected_err_lines(&text).is_empty(),
        "{text}"
    );
}
