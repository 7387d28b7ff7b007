//! `fors probe` and `fors tune` as an operator runs them (docs/operating.md, "Probing and
//! tuning a box").
//!
//! * probe on this machine writes a profile `fors --verify-config` accepts in a torrc (and a
//!   broken copy of it is refused, so verification really loads it); its report names this
//!   CPU's model and the crypto paths the relay chooses here.
//! * `tune --only netns --apply` inside a fresh network namespace (`unshare -n`, as root;
//!   net.* sysctls there are the namespace's own) changes exactly the sysctls it printed, to
//!   the printed values, leaves every other net.core/net.ipv4 sysctl of the namespace as it
//!   was, and changes nothing outside the namespace. Nothing machine-wide (IRQs, fs.*,
//!   ethtool, limits) is applied. Skipped without root or unshare (a failure under CI=true).

mod skip_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FORS: &str = env!("CARGO_BIN_EXE_fors");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("fors-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cpu_model() -> String {
    fors::probe::parse::cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()).model
}

#[test]
fn probe_writes_a_profile_verify_config_accepts() {
    let dir = TempDir::new("cli-probe");
    let profile = dir.0.join("box.toml");
    let (code, report, err) = run(Command::new(FORS).args(["probe", "--write"]).arg(&profile));
    assert_eq!(code, 0, "fors probe failed: {err}");
    let model = cpu_model();
    assert!(
        report.contains(&format!("CPU:        {model}")),
        "report does not name the CPU {model:?}:\n{report}"
    );
    let engine = fors::crypto::relay::cpu::Tor1Engine::get();
    let crypto = format!(
        "Crypto:     AES {}, SHA-1 {:?}, SHA-1 across circuits {:?}",
        engine.aes.name(),
        engine.sha1,
        engine.sha1_multi
    );
    assert!(report.contains(&crypto), "want {crypto:?} in:\n{report}");
    assert!(report.contains("io_uring:   usable by Fors"), "{report}");

    // Every key of the written file has its reason in a comment right above it.
    let text = std::fs::read_to_string(&profile).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut keys = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.contains(" = ") && !l.starts_with('#') && !l.starts_with("description") {
            keys += 1;
            assert!(
                i > 0 && lines[i - 1].starts_with("# "),
                "no reason above {l:?}:\n{text}"
            );
        }
    }
    assert_eq!(keys, 19, "every key but description is set:\n{text}");

    // The torrc that uses it verifies.
    let torrc = dir.0.join("torrc");
    let write_torrc = |p: &Path| {
        std::fs::write(
            &torrc,
            format!(
                "DataDirectory {}\nORPort 127.0.0.1:9001\nHardwareProfile {}\n",
                dir.0.join("data").display(),
                p.display()
            ),
        )
        .unwrap();
    };
    write_torrc(&profile);
    let (code, out, err) = run(Command::new(FORS)
        .arg("--verify-config")
        .arg("-f")
        .arg(&torrc));
    assert_eq!(
        code, 0,
        "verify-config refused the probed profile: {out}{err}\n{text}"
    );
    assert!(out.contains("Configuration was valid"), "{out}");

    // A broken copy is refused: verification does load the file probe wrote.
    let broken = dir.0.join("broken.toml");
    std::fs::write(&broken, text.replace("sq_entries = ", "sq_entries = 3")).unwrap();
    write_torrc(&broken);
    let (code, _, err) = run(Command::new(FORS)
        .arg("--verify-config")
        .arg("-f")
        .arg(&torrc));
    assert_eq!(code, 1, "a bad profile verified");
    assert!(err.contains("sq_entries"), "{err}");

    // --json carries the same facts for machines.
    let (code, out, err) = run(Command::new(FORS).args(["probe", "--json"]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("probe --json is JSON");
    assert_eq!(v["machine"]["cpu"]["model"], model.as_str());
    assert_eq!(v["machine"]["crypto"]["aes"], engine.aes.name());
    // The JSON profile has exactly the keys of the TOML file (none forgotten on either side).
    let table: toml::Table = toml::from_str(&text).unwrap();
    let toml_keys: Vec<&String> = table.keys().collect();
    let json_keys: Vec<&String> = v["profile"].as_object().unwrap().keys().collect();
    let (mut a, mut b) = (toml_keys.clone(), json_keys.clone());
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "probe --json and --write disagree on the profile's keys"
    );
    assert_eq!(
        v["profile"]["shards"].as_u64(),
        Some(
            text.lines()
                .find_map(|l| l.strip_prefix("shards = "))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        )
    );

    // Bad arguments are errors, not ignored.
    let (code, _, err) = run(Command::new(FORS).args(["probe", "--bogus"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(Command::new(FORS).args(["tune", "--only", "everything"]));
    assert_eq!(code, 2, "{err}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Every readable file directly in /proc/sys/net/core and /proc/sys/net/ipv4, and its value
/// (whitespace collapsed), as the calling process's namespace shows it.
fn host_net_sysctls() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in ["/proc/sys/net/core", "/proc/sys/net/ipv4"] {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if !p.is_file() {
                continue;
            }
            if let Ok(v) = std::fs::read_to_string(&p) {
                out.insert(
                    p.display().to_string(),
                    fors::probe::parse::sysctl_value(&v),
                );
            }
        }
    }
    out
}

/// Run inside the namespace: dump, tune, dump. `$1` fors, `$2` profile, `$3` output dir.
const NETNS_SCRIPT: &str = r#"
dump() {
  for f in $(find /proc/sys/net/core /proc/sys/net/ipv4 -maxdepth 1 -type f); do
    if v=$(cat "$f" 2>/dev/null); then printf '%s=%s\n' "$f" "$(echo $v)"; fi
  done
}
dump > "$3/before"
"$1" tune --profile "$2" --only netns --apply > "$3/tune.out" 2>&1
echo $? > "$3/tune.rc"
dump > "$3/after"
"#;

fn parse_dump(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tune_apply_in_a_netns_changes_exactly_what_it_printed() {
    const TEST: &str = "tune_apply_in_a_netns_changes_exactly_what_it_printed";
    if !is_root() {
        return skip_common::skip(
            TEST,
            "root (to unshare a network namespace and write its sysctls)",
        );
    }
    if !skip_common::have("unshare", "--version") || !skip_common::have("timeout", "--version") {
        return skip_common::skip(TEST, "unshare or timeout (util-linux, coreutils)");
    }
    let dir = TempDir::new("cli-tune");
    let profile = dir.0.join("box.toml");
    let (code, _, err) = run(Command::new(FORS).args(["probe", "--write"]).arg(&profile));
    assert_eq!(code, 0, "{err}");

    let host_before = host_net_sysctls();
    let (code, out, err) = run(Command::new("timeout")
        .args([
            "120",
            "unshare",
            "-n",
            "--",
            "sh",
            "-c",
            NETNS_SCRIPT,
            "sh",
            FORS,
        ])
        .arg(&profile)
        .arg(&dir.0));
    let host_after = host_net_sysctls();
    assert_eq!(code, 0, "namespace script failed: {out}{err}");

    let tune_out = std::fs::read_to_string(dir.0.join("tune.out")).unwrap();
    let rc = std::fs::read_to_string(dir.0.join("tune.rc")).unwrap();
    eprintln!("fors tune output in the namespace:\n{tune_out}");
    assert_eq!(rc.trim(), "0", "fors tune --apply failed:\n{tune_out}");
    let before = parse_dump(&std::fs::read_to_string(dir.0.join("before")).unwrap());
    let after = parse_dump(&std::fs::read_to_string(dir.0.join("after")).unwrap());
    assert!(before.len() > 20, "too few sysctls read in the namespace");

    // What tune printed it would change: `sysctl -w NAME='VALUE'` lines.
    let printed: BTreeMap<String, String> = tune_out
        .lines()
        .filter_map(|l| l.strip_prefix("sysctl -w "))
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    // A fresh namespace has the kernel defaults (ip_local_port_range 32768 60999,
    // tcp_tw_reuse 2), which the recommendations raise: there is something to change.
    assert!(
        !printed.is_empty(),
        "tune printed no sysctl change:\n{tune_out}"
    );
    for bad in [
        "/proc/irq",
        "ethtool",
        "LimitNOFILE",
        "fs.",
        "rps_cpus",
        "xps_cpus",
    ] {
        assert!(
            !tune_out.contains(bad),
            "--only netns printed {bad}:\n{tune_out}"
        );
    }
    for (name, value) in &printed {
        assert!(
            fors::probe::tune::NETNS_SYSCTLS.contains(&name.as_str()),
            "{name} is not a per-namespace sysctl"
        );
        let path = fors::probe::parse::sysctl_path(name);
        assert_ne!(
            before.get(&path),
            Some(value),
            "{name} printed but already {value}"
        );
        assert_eq!(
            after.get(&path),
            Some(value),
            "{name} not set to what was printed"
        );
        assert!(
            tune_out.contains(&format!("ok: {name} = {value}")),
            "no ok line for {name}"
        );
    }
    assert!(!tune_out.contains("FAILED"), "{tune_out}");
    // Nothing else in the namespace changed.
    for (path, v) in &before {
        let name = path.trim_start_matches("/proc/sys/").replace('/', ".");
        if !printed.contains_key(&name) {
            assert_eq!(
                after.get(path),
                Some(v),
                "{path} changed but was not printed"
            );
        }
    }
    // And nothing outside it.
    assert_eq!(
        host_before, host_after,
        "a sysctl outside the namespace changed"
    );
    // The namespace really had its own values: what was set there is not the host's now
    // (unless the host already had it, in which case tune would have had nothing to print).
    for (name, value) in &printed {
        let path = fors::probe::parse::sysctl_path(name);
        if host_before.get(&path) != Some(value) {
            assert_ne!(host_after.get(&path), Some(value));
        }
    }
}

/// In a mount namespace, hides /sys (no NICs, NUMA, SMT topology) and /proc/interrupts and
/// /proc/meminfo (both read as empty), as a locked-down container may; `$1` fors, `$2` dir.
const HIDDEN_SCRIPT: &str = r#"
mount -t tmpfs none /sys || exit 97
mount --bind /dev/null /proc/interrupts || exit 97
mount --bind /dev/null /proc/meminfo || exit 97
"$1" probe --write "$2/hidden.toml" > "$2/hidden.out" 2>&1
echo $? > "$2/hidden.rc"
"#;

#[test]
fn probe_without_sys_reports_what_is_missing() {
    const TEST: &str = "probe_without_sys_reports_what_is_missing";
    if !is_root() {
        return skip_common::skip(TEST, "root (to unshare a mount namespace)");
    }
    if !skip_common::have("unshare", "--version") || !skip_common::have("timeout", "--version") {
        return skip_common::skip(TEST, "unshare or timeout (util-linux, coreutils)");
    }
    let dir = TempDir::new("cli-probe-hidden");
    let (code, out, err) = run(Command::new("timeout")
        .args([
            "120",
            "unshare",
            "-m",
            "--",
            "sh",
            "-c",
            HIDDEN_SCRIPT,
            "sh",
            FORS,
        ])
        .arg(&dir.0));
    assert_eq!(code, 0, "mount namespace script failed: {out}{err}");
    let report = std::fs::read_to_string(dir.0.join("hidden.out")).unwrap();
    let rc = std::fs::read_to_string(dir.0.join("hidden.rc")).unwrap();
    assert_eq!(rc.trim(), "0", "probe failed with /sys hidden:\n{report}");
    for want in [
        "NICs:       none besides lo",
        "NUMA:       no nodes shown",
        "Memory:     unknown (/proc/meminfo unreadable)",
    ] {
        assert!(report.contains(want), "want {want:?} in:\n{report}");
    }
    let text = std::fs::read_to_string(dir.0.join("hidden.toml")).unwrap();
    fors::config::HardwareProfile::from_toml(&text, "hidden.toml").expect("valid profile");
    assert!(text.contains("assuming 2.0 GiB"), "{text}");
}

/// In fresh network and mount namespaces, makes `tcp_tw_reuse` read-only, then applies.
const READONLY_SCRIPT: &str = r#"
f=/proc/sys/net/ipv4/tcp_tw_reuse
mount --bind $f $f && mount -o remount,bind,ro $f || exit 97
"$1" tune --only netns --apply > "$2/ro.out" 2>&1
echo $? > "$2/ro.rc"
"#;

#[test]
fn tune_apply_reports_each_failure() {
    const TEST: &str = "tune_apply_reports_each_failure";
    if !is_root() {
        return skip_common::skip(TEST, "root (to unshare network and mount namespaces)");
    }
    if !skip_common::have("unshare", "--version") || !skip_common::have("timeout", "--version") {
        return skip_common::skip(TEST, "unshare or timeout (util-linux, coreutils)");
    }
    let dir = TempDir::new("cli-tune-ro");
    let (code, out, err) = run(Command::new("timeout")
        .args([
            "120",
            "unshare",
            "-n",
            "-m",
            "--",
            "sh",
            "-c",
            READONLY_SCRIPT,
            "sh",
            FORS,
        ])
        .arg(&dir.0));
    assert_eq!(code, 0, "namespace script failed: {out}{err}");
    let tune_out = std::fs::read_to_string(dir.0.join("ro.out")).unwrap();
    let rc = std::fs::read_to_string(dir.0.join("ro.rc")).unwrap();
    assert_eq!(
        rc.trim(),
        "1",
        "a failed change must fail the run:\n{tune_out}"
    );
    assert!(
        tune_out.contains("FAILED: net.ipv4.tcp_tw_reuse: cannot write"),
        "{tune_out}"
    );
    // The other changes were still made and reported one by one.
    let oks = tune_out.lines().filter(|l| l.starts_with("ok: ")).count();
    assert!(oks >= 1, "{tune_out}");
    assert!(
        tune_out.contains(&format!("# {oks} applied, 1 failed")),
        "{tune_out}"
    );
}
