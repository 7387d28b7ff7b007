//! Issue #4: C tor 0.4.9 directory authorities list Fors as Running, Valid, Fast and Exit
//! because its exit policy allows ports 80 and 443 — decided from the descriptor alone, with
//! no `TestingDirAuthVoteExit` for the Fors relays.
//!
//! A real 80/443 policy may only run where nothing can leave the machine, so the whole
//! private network (scripts/testnet.py) runs in a network namespace this test creates
//! (scripts/netns.py: `unshare --net` as root, `unshare --user --map-root-user --net`
//! otherwise). Before anything starts, netns.py and testnet.py both check that it has no
//! interface but `lo`, no route through anything else and no default route; they abort
//! otherwise.
//!
//! Three Fors relays, each checked against C tor's own rules (see `ctor_rules`):
//! * `forsexit1`, policy `accept *:80, accept *:443` (plus loopback ports ≥ 1024): Exit;
//! * `forsexit2`, policy `accept *:80` only (plus loopback ports ≥ 1024): no Exit, since the
//!   flag needs both 80 and 443;
//! * `forsmiddle1`, `reject *:*`: no Exit.
//!
//! All three must be Running, Valid and Fast in every authority's consensus and in the C tor
//! client's. Then isolation: a stream through `forsexit1` to 192.0.2.1:80 (TEST-NET-1) fails
//! with the exit's END reason NOROUTE, while a 2 MB download and upload through the same exit
//! to the loopback data server succeed with matching SHA-256 checksums.
//!
//! Skipped (saying why) with `FORS_SKIP_TESTNET`, without tor / tor-gencert / python3 /
//! unshare / nsenter, or when not root and user namespaces are unavailable. As root (CI) a
//! namespace that cannot be created is a failure, not a skip. Everything started in the
//! namespace is stopped by pid when the test ends, pass or fail, and the namespace goes with
//! its last process.

mod daemon_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use daemon_common::{isolated_netns_for, testnet_in as testnet, TempDir, TestnetGuard};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn c_tor_authorities_grant_exit_from_the_policy_in_an_isolated_netns() {
    const TEST: &str = "c_tor_authorities_grant_exit_from_the_policy_in_an_isolated_netns";
    let Some(ns) = isolated_netns_for(TEST, &[("tor", "--version"), ("tor-gencert", "--help")])
    else {
        return;
    };
    let tmp = TempDir::new("daemon-exitflag");
    let dir = tmp.path().join("net");
    // Dropped before `ns`: stops every process of the network by pid.
    let _net = TestnetGuard { dir: &dir };

    let up = testnet(
        &ns,
        &dir,
        &[
            "up",
            "--fors",
            "exit",
            "--fors",
            "middle",
            "--fors",
            "exit",
            "--middles",
            "1",
            "--exits",
            "1",
            // Inside the namespace every port is free.
            "--base-port",
            "15100",
            "--fors-bin",
            env!("CARGO_BIN_EXE_fors"),
            "--policy-exit",
            "forsexit1 80,443",
            "--policy-exit",
            "forsexit2 80",
        ],
    );
    assert!(up.status.success(), "testnet up failed");
    // testnet.py checked the namespace itself, and it is the one netns.py made.
    let ns_inode = ns
        .ready_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("netns="))
        .unwrap();
    assert!(
        stdout(&up).contains(&format!("isolated network namespace: netns={ns_inode} ")),
        "{}",
        stdout(&up)
    );

    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("network.json")).unwrap()).unwrap();
    let node = |nick: &str| -> serde_json::Value {
        net["relays"]
            .as_array()
            .unwrap()
            .iter()
            .chain(net["authorities"].as_array().unwrap())
            .find(|r| r["nick"] == nick)
            .unwrap_or_else(|| panic!("{nick} not in network.json"))
            .clone()
    };
    let fors = ["forsexit1", "forsexit2", "forsmiddle1"];
    let fp = |nick: &str| node(nick)["fingerprint"].as_str().unwrap().to_owned();
    let auth_dirs: Vec<PathBuf> = net["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| PathBuf::from(a["data_dir"].as_str().unwrap()))
        .collect();

    // No flag by fiat for the Fors relays: the authorities vote Exit from the policy.
    for a in &auth_dirs {
        let torrc = std::fs::read_to_string(a.join("torrc")).unwrap();
        let forced = torrc
            .lines()
            .find(|l| l.starts_with("TestingDirAuthVoteExit "))
            .unwrap();
        for nick in fors {
            assert!(!forced.contains(&fp(nick)), "{nick} forced: {forced}");
        }
        assert!(
            torrc.contains("\nTestingDirAuthVoteExitIsStrict 0\n"),
            "{torrc}"
        );
        assert!(torrc.contains("\nTestingTorNetwork 1\n"), "{torrc}");
        assert!(!torrc.contains("DirAllowPrivateAddresses"), "{torrc}");
        assert!(!torrc.contains("AuthDirListBadExits 1"), "{torrc}");
    }

    // `wait` returns once the client's consensus has every relay with Running, Valid, Fast
    // (and Exit for the exits the rules grant it), and every exit knows every relay.
    let w = testnet(&ns, &dir, &["wait", "--timeout", "300"]);
    assert!(w.status.success(), "testnet wait failed");
    assert!(
        stdout(&w).contains("every exit knows all"),
        "{}",
        stdout(&w)
    );

    // What C tor's rules say each Fors relay deserves, from the descriptors the authorities
    // hold and the thresholds in their votes.
    let descs = ctor_rules::descriptors(&auth_dirs[0]);
    let votes = ctor_rules::votes(&auth_dirs[0], auth_dirs.len());
    let mut expected = BTreeMap::new();
    for nick in fors {
        let d = descs
            .get(nick)
            .unwrap_or_else(|| panic!("no descriptor for {nick}"));
        // TestingTorNetwork sets DirAllowPrivateAddresses 1 (config testnet.inc).
        let exit = ctor_rules::is_exit(&d.policy, true);
        let fast = votes
            .iter()
            .all(|v| d.credible_bw_kb() >= v.fast_speed / 1000);
        eprintln!(
            "{nick}: policy {:?}, bandwidth {:?}, fast-speed {:?} => Exit {exit}, Fast {fast}",
            d.policy,
            d.bandwidth,
            votes.iter().map(|v| v.fast_speed).collect::<Vec<_>>()
        );
        expected.insert(nick, (exit, fast));
    }
    // The rules agree with the intent of the three policies.
    assert_eq!(expected["forsexit1"], (true, true));
    assert_eq!(expected["forsexit2"], (false, true));
    assert_eq!(expected["forsmiddle1"], (false, true));

    let check = |what: &str, flags: &BTreeMap<String, BTreeSet<String>>| {
        for nick in fors {
            let f = flags
                .get(nick)
                .unwrap_or_else(|| panic!("{what}: {nick} not listed"));
            let (exit, fast) = expected[nick];
            for want in ["Running", "Valid"] {
                assert!(f.contains(want), "{what}: {nick} lacks {want}: {f:?}");
            }
            assert_eq!(f.contains("Fast"), fast, "{what}: {nick} Fast: {f:?}");
            assert_eq!(f.contains("Exit"), exit, "{what}: {nick} Exit: {f:?}");
            assert!(!f.contains("BadExit"), "{what}: {nick}: {f:?}");
            eprintln!(
                "{what}: {nick}: {}",
                f.iter().cloned().collect::<Vec<_>>().join(" ")
            );
        }
    };
    // Every authority's own vote, then the consensus of every authority and of the client.
    for (i, v) in votes.iter().enumerate() {
        check(&format!("vote {i}"), &v.flags);
    }
    for a in &auth_dirs {
        let text = std::fs::read_to_string(a.join("cached-consensus")).unwrap();
        check(
            &format!("consensus at {}", a.display()),
            &ctor_rules::flags(&text),
        );
    }
    let client_consensus = std::fs::read_to_string(dir.join("client/cached-consensus")).unwrap();
    check("client consensus", &ctor_rules::flags(&client_consensus));

    // Fors reads the same from the consensus it fetched: its latest listing line (logged when
    // its flags change), once that consensus has it Running.
    for nick in fors {
        let log = dir.join(nick).join("stdout.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let l = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text
                .lines()
                .rfind(|l| l.contains("Fors is listed in the consensus"))
                .map(str::to_owned);
            match last {
                Some(l) if l.contains(" Running") => break l,
                _ if std::time::Instant::now() > deadline => {
                    panic!("{nick} never logged a Running listing:\n{text}")
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        assert!(l.contains("Fast") && l.contains("Valid"), "{nick}: {l}");
        assert_eq!(l.contains("Exit"), expected[nick].0, "{nick}: {l}");
    }

    // Isolation: through the Fors exit to a public-looking address, nothing gets out; the
    // exit's connect fails for want of a route (END NOROUTE, SOCKS5 "host unreachable").
    let p = testnet(
        &ns,
        &dir,
        &[
            "probe",
            "192.0.2.1:80",
            "--exit",
            "forsexit1",
            "--expect",
            "fail",
            "--json",
            "--io-timeout",
            "120",
        ],
    );
    assert!(p.status.success(), "probe to 192.0.2.1:80 did not fail");
    let probe: serde_json::Value =
        serde_json::from_str(stdout(&p).lines().last().unwrap()).unwrap();
    assert_eq!(probe["connected"], false, "{probe}");
    assert_eq!(probe["socks_reply"], 4, "{probe}");
    assert_eq!(probe["exits"], serde_json::json!(["forsexit1"]), "{probe}");
    let reasons = probe["remote_reasons"].as_array().unwrap();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| r == "NOROUTE"),
        "{probe}"
    );

    // ... while loopback traffic through the same exit works, checksums matching (the script
    // fails on a mismatch or a path that does not end at the pinned exit).
    let t = testnet(
        &ns,
        &dir,
        &[
            "traffic",
            "--exit",
            "forsexit1",
            "--down-mb",
            "2",
            "--up-mb",
            "2",
            "--io-timeout",
            "120",
        ],
    );
    assert!(t.status.success(), "traffic through forsexit1 failed");
    let out = stdout(&t);
    assert_eq!(out.matches("checksum OK").count(), 2, "{out}");
    assert!(out.matches("-> forsexit1").count() >= 2, "{out}");

    // Every socket of every process is loopback-only.
    let s = testnet(&ns, &dir, &["status"]);
    assert!(s.status.success(), "status failed");
    assert!(
        stdout(&s).contains("socket check: all sockets loopback-only"),
        "{}",
        stdout(&s)
    );
    for nick in fors {
        let text = std::fs::read_to_string(dir.join(nick).join("stdout.log")).unwrap();
        assert!(
            daemon_common::unexpected_err_lines(&text).is_empty(),
            "{nick}: {text}"
        );
    }
}

/// C tor 0.4.9's flag rules, restated from its source (our own code) so that the test demands
/// exactly what the authorities require, nothing looser.
mod ctor_rules {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// One `accept`/`reject` line of a router descriptor (dir-spec §2.1.3). In a descriptor,
    /// `*` is every IPv4 address.
    #[derive(Debug)]
    pub struct Rule {
        pub accept: bool,
        pub addr: u32,
        pub maskbits: u32,
        pub ports: (u16, u16),
    }

    pub fn parse_rule(line: &str) -> Option<Rule> {
        let (action, pattern) = line.split_once(' ')?;
        let accept = match action {
            "accept" => true,
            "reject" => false,
            _ => return None,
        };
        let (addr, ports) = pattern.rsplit_once(':')?;
        let (addr, maskbits) = match addr {
            "*" => (0, 0),
            a => match a.split_once('/') {
                Some((ip, bits)) => (u32::from(ip.parse::<Ipv4Addr>().ok()?), bits.parse().ok()?),
                None => (u32::from(a.parse::<Ipv4Addr>().ok()?), 32),
            },
        };
        let ports = match ports {
            "*" => (1, 65535),
            p => match p.split_once('-') {
                Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                None => (p.parse().ok()?, p.parse().ok()?),
            },
        };
        Some(Rule {
            accept,
            addr,
            maskbits,
            ports,
        })
    }

    /// `tor_addr_is_internal` for the first address of a /8 (0/8, 10/8, 127/8; the other
    /// private ranges do not start on a /8 boundary).
    fn slash8_is_internal(i: u32) -> bool {
        matches!(i, 0 | 10 | 127)
    }

    /// policies.c `exit_policy_is_general_exit_helper`: some accept rule at least as wide
    /// as a /8 covers `port` for a /8 that no earlier rule for that port rejected any part
    /// of; internal /8s count only with `DirAllowPrivateAddresses`.
    fn general_exit_for(policy: &[Rule], port: u16, allow_private: bool) -> bool {
        let mut rejected = [false; 256];
        for r in policy {
            if r.ports.0 > port || r.ports.1 < port {
                continue;
            }
            let mask = if r.maskbits == 0 {
                0
            } else {
                u32::MAX << (32 - r.maskbits)
            };
            let first = (r.addr & mask) >> 24;
            let last = ((r.addr & mask) | !mask) >> 24;
            for i in first..=last {
                let i = i as usize;
                if rejected[i] || (slash8_is_internal(i as u32) && !allow_private) {
                    continue;
                }
                if r.accept {
                    if r.maskbits > 8 {
                        continue;
                    }
                    return true;
                }
                rejected[i] = true;
            }
        }
        false
    }

    /// `policy_is_reject_star` for IPv4: nothing is accepted before a `reject *:*`.
    fn rejects_all(policy: &[Rule]) -> bool {
        for r in policy {
            if r.accept {
                return false;
            }
            if r.maskbits == 0 && r.ports == (1, 65535) {
                return true;
            }
        }
        true
    }

    /// voteflags.c `dirserv_compute_performance_thresholds`: `node->is_exit =
    /// !router_exit_policy_rejects_all(ri) && exit_policy_is_general_exit(ri->exit_policy)`,
    /// and `exit_policy_is_general_exit` needs both port 80 and port 443. (BadExit is only
    /// voted with AuthDirListBadExits, which these authorities do not set.)
    pub fn is_exit(policy: &[Rule], allow_private: bool) -> bool {
        !rejects_all(policy)
            && general_exit_for(policy, 80, allow_private)
            && general_exit_for(policy, 443, allow_private)
    }

    #[derive(Debug)]
    pub struct Descriptor {
        pub published: String,
        /// `bandwidth` line: average, burst, observed (bytes/s).
        pub bandwidth: (u64, u64, u64),
        pub policy: Vec<Rule>,
    }

    impl Descriptor {
        /// bwauth.c `dirserv_get_credible_bandwidth_kb` without measurements:
        /// `router_get_advertised_bandwidth_capped` (min of rate and observed capacity,
        /// capped at 10 MB/s) / 1000.
        pub fn credible_bw_kb(&self) -> u64 {
            self.bandwidth.0.min(self.bandwidth.2).min(10_000_000) / 1000
        }
    }

    /// The newest descriptor of each nickname in an authority's descriptor store.
    pub fn descriptors(auth_dir: &Path) -> BTreeMap<String, Descriptor> {
        let mut text = String::new();
        for f in ["cached-descriptors", "cached-descriptors.new"] {
            text += &std::fs::read_to_string(auth_dir.join(f)).unwrap_or_default();
        }
        let mut out: BTreeMap<String, Descriptor> = BTreeMap::new();
        let mut cur: Option<(String, Descriptor)> = None;
        let mut finish = |cur: Option<(String, Descriptor)>| {
            if let Some((nick, d)) = cur {
                if out
                    .get(&nick)
                    .is_none_or(|old| old.published <= d.published)
                {
                    out.insert(nick, d);
                }
            }
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("router ") {
                finish(cur.take());
                let nick = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                cur = Some((
                    nick,
                    Descriptor {
                        published: String::new(),
                        bandwidth: (0, 0, 0),
                        policy: Vec::new(),
                    },
                ));
                continue;
            }
            let Some((_, d)) = cur.as_mut() else { continue };
            if let Some(p) = line.strip_prefix("published ") {
                d.published = p.to_owned();
            } else if let Some(b) = line.strip_prefix("bandwidth ") {
                let v: Vec<u64> = b
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if v.len() == 3 {
                    d.bandwidth = (v[0], v[1], v[2]);
                }
            } else if let Some(r) = parse_rule(line) {
                d.policy.push(r);
            }
        }
        finish(cur);
        out
    }

    /// Flags by nickname from the `r`/`s` lines of a vote or consensus.
    pub fn flags(text: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        let mut nick = None;
        for line in text.lines() {
            if let Some(r) = line.strip_prefix("r ") {
                nick = r.split_whitespace().next().map(str::to_owned);
            } else if let (Some(s), Some(n)) = (line.strip_prefix("s "), nick.take()) {
                out.insert(n, s.split_whitespace().map(str::to_owned).collect());
            }
        }
        out
    }

    pub struct Vote {
        /// `flag-thresholds ... fast-speed=N` (bytes/s; voteflags.c
        /// `dirserv_get_flag_thresholds_line`).
        pub fast_speed: u64,
        pub flags: BTreeMap<String, BTreeSet<String>>,
    }

    /// The `n` votes of the current period, as an authority keeps them (v3-status-votes).
    /// The file is rewritten as each vote arrives, so it may briefly hold fewer: wait
    /// (bounded) for all of them.
    pub fn votes(auth_dir: &Path, n: usize) -> Vec<Vote> {
        let path = auth_dir.join("v3-status-votes");
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let votes: Option<Vec<Vote>> = text
                .split("network-status-version 3")
                .skip(1)
                .map(|v| {
                    let fast_speed = v
                        .lines()
                        .find_map(|l| l.strip_prefix("flag-thresholds "))?
                        .split_whitespace()
                        .find_map(|kv| kv.strip_prefix("fast-speed="))?
                        .parse()
                        .ok()?;
                    Some(Vote {
                        fast_speed,
                        flags: flags(v),
                    })
                })
                .collect();
            match votes {
                Some(v) if v.len() == n => return v,
                _ if Instant::now() > end => {
                    panic!("{} never held {n} complete votes:\n{text}", path.display())
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    #[test]
    fn exit_rule_matches_c_tor() {
        let p = |rules: &[&str]| -> Vec<Rule> {
            rules.iter().map(|r| parse_rule(r).unwrap()).collect()
        };
        let web = p(&[
            "accept *:80",
            "accept *:443",
            "accept 127.0.0.0/8:1024-65535",
            "reject 0.0.0.0/1:*",
            "reject 128.0.0.0/1:*",
            "accept *:*",
            "reject *:*",
        ]);
        assert!(is_exit(&web, true) && is_exit(&web, false));
        let only80 = p(&["accept *:80", "accept 127.0.0.0/8:1024-65535", "reject *:*"]);
        assert!(!is_exit(&only80, true));
        // Loopback counts as a /8 only with DirAllowPrivateAddresses (TestingTorNetwork).
        let lo = p(&["accept 127.0.0.0/8:*", "reject *:*"]);
        assert!(is_exit(&lo, true) && !is_exit(&lo, false));
        // Narrower than a /8 never counts; a reject of part of a /8 spoils it.
        assert!(!is_exit(&p(&["accept 1.2.0.0/16:*", "reject *:*"]), true));
        assert!(!is_exit(
            &p(&["reject 8.8.8.8:*", "accept 8.0.0.0/8:*", "reject *:*"]),
            false
        ));
        assert!(is_exit(&p(&["reject 8.8.8.8:*", "accept *:*"]), false));
        assert!(!is_exit(&p(&["reject *:*"]), true));
    }
}
