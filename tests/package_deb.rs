//! The Debian package (`packaging/build-deb.sh`, docs/operating.md "Debian package"): built
//! from this test's `fors` binary, checked as an archive, then installed with
//! `dpkg --root` into a throw-away root — a private mount namespace (`unshare --mount`) in
//! which the host's /usr is the lower layer of an overlay (the package's files land in the
//! upper layer, never on the host) and /etc and /var/lib/dpkg are fresh. There the
//! maintainer scripts run chrooted, as dpkg runs them: the `_fors` user and /var/lib/fors
//! appear in the root's own /etc and /var. Then `systemd-analyze verify` on the installed
//! units, and the packaged binary started as `_fors` with only the unit's capability
//! (CAP_NET_BIND_SERVICE, no new privileges) on an ORPort below 1024, finding its hardware
//! profile in /usr/share/fors/hw-profiles and writing its DataDirectory. Last, a purge.
//!
//! The relay that runs here is a TestingTorNetwork relay with fake authorities on loopback;
//! the shipped torrc is only checked to refuse to start. Needs root, unshare, dpkg-deb,
//! objdump, strip and systemd-analyze (scripts/setup-debian.sh installs them): without
//! them the test fails under CI=true and prints SKIPPED: otherwise. The man page, fors(8), is
//! checked on its own (no root needed): it renders without warnings and covers the usage.

mod daemon_common;

use daemon_common::{skip_common, TempDir};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tools the test needs that are missing here, if any.
fn missing_tools(tools: &[(&str, &str)]) -> Option<String> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(cmd, arg)| !skip_common::have(cmd, arg))
        .map(|(cmd, _)| *cmd)
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Runs `cmd`; panics with its output unless it succeeds. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Builds the package from this test's binary into `out`; its path.
fn build_deb(out: &Path) -> PathBuf {
    let stdout = run(Command::new(repo().join("packaging/build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_fors"), "--out"])
        .arg(out));
    let deb = PathBuf::from(stdout.trim());
    let name = deb.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        name,
        format!("fors_{}_amd64.deb", env!("CARGO_PKG_VERSION")),
        "package file name"
    );
    deb
}

/// Prepares the throw-away root under `$W/root` (overlay of the host's /usr, fresh /etc and
/// dpkg database) inside the caller's private mount namespace, then runs the rest of the
/// script given after it. `$W` is the scratch directory; `$R` the root.
const ROOT_SETUP: &str = r#"
set -euo pipefail
W=$1; R=$W/root
mkdir -p "$R/usr" "$R/etc" "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/log" \
    "$R/tmp" "$R/proc" "$R/dev" "$R/run" "$W/usr-upper" "$W/usr-work"
chmod 1777 "$R/tmp"
for l in bin sbin lib lib64; do [ -L "$R/$l" ] || ln -s "usr/$l" "$R/$l"; done
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$W/usr-upper,workdir=$W/usr-work" "$R/usr"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
"#;

/// First run: fresh accounts and dpkg database, install, then the checks that need the
/// mounts (units, the relay running).
const INSTALL: &str = r#"
DEB=$2; PORT=$3
# Base accounts only, and what adduser and NSS read.
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nadm:x:4:\nnogroup:x:65534:\n' >"$R/etc/group"
printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' >"$R/etc/shadow"
printf 'root:*::\nadm:*::\nnogroup:*::\n' >"$R/etc/gshadow"
chmod 0640 "$R/etc/shadow" "$R/etc/gshadow"
for f in login.defs adduser.conf deluser.conf nsswitch.conf; do
    if [ -e "/etc/$f" ]; then cp "/etc/$f" "$R/etc/"; fi
done
# The packages fors depends on are there (the host's /usr): registered, not unpacked.
dpkg-query -s libc6 libgcc-s1 adduser >"$R/var/lib/dpkg/status"
touch "$R/var/lib/dpkg/available"
for p in $(dpkg-query -W -f '${binary:Package} ' libc6 libgcc-s1 adduser); do
    touch "$R/var/lib/dpkg/info/$p.list"
done
dpkg --root="$R" --log="$R/var/log/dpkg.log" -i "$DEB"
echo "installed"

for u in fors.service fors@probe.service; do
    if chroot "$R" systemd-analyze verify "$u" >"$W/verify-$u.txt" 2>&1; then
        echo "verify $u: ok"
    else
        echo "verify $u: failed"
    fi
done
chroot "$R" systemd-analyze security --offline=yes /usr/lib/systemd/system/fors.service \
    >"$W/security.txt" 2>&1 || true

# The shipped torrc is an inert example: Fors refuses it.
chroot "$R" /usr/bin/fors --verify-config -f /etc/fors/torrc >"$W/shipped-verify.txt" 2>&1 \
    && echo "shipped torrc: accepted" || echo "shipped torrc: refused"

# An instance as fors@probe.service would run it: user _fors, CAP_NET_BIND_SERVICE only.
mkdir -p "$R/etc/fors/instances/probe"
cat >"$R/etc/fors/instances/probe/torrc" <<TORRC
Nickname ForsPackaged
ContactInfo test@example.invalid
ORPort 127.0.0.1:$PORT
Address 127.0.0.1
DataDirectory /var/lib/fors-instances/probe
HardwareProfile generic
Log notice stdout
NumCPUs 2
TestingTorNetwork 1
PublishServerDescriptor 0
DirAuthority auth1 orport=9 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:9 89ABCDEF0123456789ABCDEF0123456789ABCDEF
DirAuthority auth2 orport=9 no-v2 v3ident=1123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:9 99ABCDEF0123456789ABCDEF0123456789ABCDEF
TORRC
# What StateDirectory=fors-instances/%i makes.
install -d -o "$(chroot "$R" id -u _fors)" -g "$(chroot "$R" id -g _fors)" -m 0700 \
    "$R/var/lib/fors-instances/probe"
# The unit's own command lines, for instance "probe".
unit_cmd() {
    grep "^$1=" "$R/usr/lib/systemd/system/fors@.service" | cut -d= -f2- | sed 's/%i/probe/g'
}
as_fors() {
    exec chroot "$R" setpriv --reuid=_fors --regid=_fors --init-groups \
        --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
        --bounding-set=-all,+net_bind_service --no-new-privs "$@"
}
# shellcheck disable=SC2046
if (as_fors $(unit_cmd ExecStartPre)) >"$W/execstartpre.txt" 2>&1; then
    echo "ExecStartPre: ok"
fi
# In a subshell that execs, so that $! is the relay itself.
# shellcheck disable=SC2046
(as_fors $(unit_cmd ExecStart)) >"$W/relay.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q "the relay is running" "$W/relay.log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "orport accepts"
fi
kill -TERM "$pid" 2>/dev/null || true
rc=0; wait "$pid" || rc=$?
echo "relay exit $rc"
"#;

/// Second run: purge, which removes the package's files, conffiles, keys and logs.
const PURGE: &str = r#"
dpkg --root="$R" --log="$R/var/log/dpkg.log" --purge fors
echo "purged"
"#;

/// Runs `ROOT_SETUP` + `body` in a private mount namespace with arguments `args`.
fn in_namespace(w: &Path, body: &str, args: &[&str]) -> String {
    let script = format!("{ROOT_SETUP}{body}");
    run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            &script,
            "bash",
        ])
        .arg(w)
        .args(args))
}

/// A loopback port below 1024 that nobody listens on (we are root here).
fn free_low_port() -> u16 {
    let start = 900 + (std::process::id() % 100) as u16;
    (start..1024)
        .chain(900..start)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("no free loopback port below 1024")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn package_installs_into_a_throwaway_root_and_the_relay_runs() {
    let test = "package_installs_into_a_throwaway_root_and_the_relay_runs";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_common::skip(test, "root (dpkg --root, unshare --mount, chroot)");
    }
    if let Some(m) = missing_tools(&[
        ("unshare", "--version"),
        ("dpkg-deb", "--version"),
        ("objdump", "--version"),
        ("strip", "--version"),
        ("systemd-analyze", "--version"),
        ("setpriv", "--version"),
    ]) {
        return skip_common::skip(test, &m);
    }
    let scratch = TempDir::new("package");
    let w = &scratch.0;
    let deb = build_deb(&w.join("out"));

    // The archive: control fields, conffiles, every file where and how it should be.
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in [
        "Package: fors",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Architecture: amd64",
        "Depends: libc6 (>= 2.",
        "adduser",
    ] {
        assert!(info.contains(field), "no {field:?} in\n{info}");
    }
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listed: BTreeMap<String, String> = contents
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.last()?.trim_start_matches('.').to_string(),
                format!("{} {}", f.first()?, f.get(1)?),
            ))
        })
        .collect();
    for (path, perms) in [
        ("/usr/bin/fors", "-rwxr-xr-x root/root"),
        ("/etc/fors/torrc", "-rw-r--r-- root/root"),
        ("/etc/logrotate.d/fors", "-rw-r--r-- root/root"),
        (
            "/usr/lib/systemd/system/fors.service",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/lib/systemd/system/fors@.service",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/fors/hw-profiles/generic.toml",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/fors/hw-profiles/epyc-2core.toml",
            "-rw-r--r-- root/root",
        ),
        ("/usr/share/doc/fors/operating.md", "-rw-r--r-- root/root"),
        ("/usr/share/doc/fors/copyright", "-rw-r--r-- root/root"),
        ("/usr/share/man/man8/fors.8.gz", "-rw-r--r-- root/root"),
    ] {
        assert_eq!(
            listed.get(path).map(String::as_str),
            Some(perms),
            "{path} in\n{contents}"
        );
    }

    // Install into the throw-away root and run what needs its mounts.
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    let port = free_low_port();
    let out = in_namespace(w, INSTALL, &[deb.to_str().unwrap(), &port.to_string()]);
    eprintln!("{out}");
    let root = w.join("root");
    let relay_log = std::fs::read_to_string(w.join("relay.log")).unwrap_or_default();
    eprintln!("relay.log:\n{relay_log}");
    assert!(out.contains("installed\n"), "{out}");

    // The _fors system user and group, in the root's own files (not the host's).
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("_fors:"))
        .unwrap_or_else(|| panic!("no _fors in the root's passwd:\n{passwd}"));
    let f: Vec<&str> = entry.split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    assert!((100..1000).contains(&uid), "not a system uid: {entry}");
    assert_eq!(f[5], "/var/lib/fors", "{entry}");
    assert_eq!(f[6], "/usr/sbin/nologin", "{entry}");
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("_fors:x:")?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no _fors group:\n{group}"));
    assert_eq!(f[3].parse::<u32>().unwrap(), gid, "primary group");
    assert_eq!(
        std::fs::read("/etc/passwd").unwrap(),
        host_passwd,
        "the host's /etc/passwd changed"
    );

    // Files and modes, as installed: the package's /usr files are in the overlay's upper
    // layer (the host's /usr is untouched), /etc and /var are the root's own.
    let upper = w.join("usr-upper");
    assert_eq!(mode(&upper.join("bin/fors")), 0o755);
    assert!(upper.join("share/fors/hw-profiles/generic.toml").is_file());
    assert!(upper.join("lib/systemd/system/fors@.service").is_file());
    // The installed man page renders without a warning.
    let page = render_man(&upper.join("share/man/man8/fors.8.gz"));
    assert!(page.contains("fors - thread-per-core Tor relay"), "{page}");
    assert_eq!(mode(&root.join("etc/fors/torrc")), 0o644);
    let data = std::fs::metadata(root.join("var/lib/fors")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (uid, gid, 0o700),
        "/var/lib/fors"
    );
    let logs = std::fs::metadata(root.join("var/log/fors")).unwrap();
    assert_eq!((logs.uid(), logs.mode() & 0o7777), (uid, 0o750));
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "fors"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let conffiles = status
        .split("Conffiles:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Conffiles in\n{status}"));
    assert!(conffiles.contains(" /etc/fors/torrc "), "{status}");
    assert!(conffiles.contains(" /etc/logrotate.d/fors "), "{status}");

    // The units: systemd-analyze verify says nothing at all (it warns about unknown keys
    // and bad values but still exits 0, so silence is the test).
    for u in ["fors.service", "fors@probe.service"] {
        let said = std::fs::read_to_string(w.join(format!("verify-{u}.txt"))).unwrap();
        assert!(
            out.contains(&format!("verify {u}: ok")) && said.trim().is_empty(),
            "systemd-analyze verify {u}:\n{said}"
        );
    }
    let security = std::fs::read_to_string(w.join("security.txt")).unwrap();
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for fors.service: ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in\n{security}"));
    eprintln!("systemd-analyze security: exposure {exposure} (0 = safest, 10 = unsafe)");
    assert!(exposure <= 2.0, "exposure {exposure}:\n{security}");

    // The shipped torrc never starts a relay by itself.
    let shipped = std::fs::read_to_string(w.join("shipped-verify.txt")).unwrap();
    assert!(
        out.contains("shipped torrc: refused") && shipped.contains("no ORPort is configured"),
        "{shipped}"
    );

    // The unit's ExecStartPre (the configuration check) passes on the instance's torrc.
    let pre = std::fs::read_to_string(w.join("execstartpre.txt")).unwrap();
    assert!(
        out.contains("ExecStartPre: ok") && pre.contains("Configuration was valid"),
        "{pre}"
    );
    // The unit's ExecStart ran the packaged relay as _fors with the unit's one capability.
    assert!(
        relay_log.contains(&format!(
            "Opened ORPort on 127.0.0.1:{port} with 2 shards (hardware profile generic;"
        )),
        "{relay_log}"
    );
    assert!(relay_log.contains("the relay is running"), "{relay_log}");
    assert!(out.contains("orport accepts"), "{out}");
    assert!(out.contains("relay exit 0"), "{out}");
    let keys = root.join("var/lib/fors-instances/probe/keys");
    let mut owned = BTreeSet::new();
    for e in std::fs::read_dir(&keys).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        owned.insert((m.uid(), m.gid()));
    }
    assert_eq!(
        owned,
        BTreeSet::from([(uid, gid)]),
        "keys not all owned by _fors"
    );

    // Purge: the package's files, conffiles, keys and logs go.
    let out = in_namespace(w, PURGE, &[]);
    assert!(out.contains("purged"), "{out}");
    assert!(!root.join("etc/fors/torrc").exists());
    assert!(!root.join("var/lib/fors").exists());
    assert!(!root.join("var/lib/fors-instances").exists());
    // Removed through the overlay: a whiteout (character device 0:0) hides the host's
    // nothing-there; either way the file is no longer a regular file in the upper layer.
    assert!(!upper.join("bin/fors").is_file());
}

/// `man --warnings -l PAGE` at 80 columns: the text, after checking that man (groff)
/// printed no warning at all.
fn render_man(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man runs");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "man --warnings -l {}: {warnings}",
        page.display()
    );
    // Overstrike bold/underline out, as `col -b` would.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain.replace('\u{2010}', "-")
}

/// fors(8) renders without warnings and documents every subcommand and option the binary's
/// usage lists, the signals and the exit statuses.
#[test]
fn man_page_renders_and_covers_the_command_line() {
    let test = "man_page_renders_and_covers_the_command_line";
    if let Some(m) = missing_tools(&[("man", "--version")]) {
        return skip_common::skip(test, &m);
    }
    let page = render_man(&repo().join("packaging/fors.8"));
    let usage = run(Command::new(env!("CARGO_BIN_EXE_fors")).arg("--help"));
    // Every word of the usage that names a subcommand or an option.
    let words: BTreeSet<&str> = usage
        .split(|c: char| c.is_whitespace() || "[]|.".contains(c))
        .filter(|w| w.starts_with('-') || ["bench-crypto", "probe", "tune"].contains(w))
        .collect();
    assert!(words.len() >= 12, "{usage}");
    for w in &words {
        assert!(page.contains(w), "fors(8) does not mention {w}:\n{page}");
    }
    for section in [
        "SYNOPSIS",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
        "CONFIGURATION",
    ] {
        assert!(page.contains(section), "no {section} in\n{page}");
    }
    for sig in ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2"] {
        assert!(page.contains(sig), "no {sig}");
    }
    assert!(page.contains("config.md"), "points at the option list");
}

/// The unit's SystemCallFilter, expanded by systemd-analyze, lets through every system call
/// Fors makes. The list was taken with `strace -f` of a relay starting, serving and
/// stopping (TestingTorNetwork, two shards), plus the calls of paths that run seldom
/// (notify socket, exit DNS, ControlPort signals, PidFile removal, log reopening).
#[test]
fn unit_syscall_filter_lets_through_what_fors_calls() {
    let test = "unit_syscall_filter_lets_through_what_fors_calls";
    if let Some(m) = missing_tools(&[("systemd-analyze", "--version")]) {
        return skip_common::skip(test, &m);
    }
    const FORS_CALLS: &[&str] = &[
        // strace of start-up, running and SIGTERM.
        "access",
        "arch_prctl",
        "bind",
        "brk",
        "clone3",
        "close",
        "connect",
        "eventfd2",
        "execve",
        "exit",
        "exit_group",
        "fcntl",
        "fsync",
        "futex",
        "getpid",
        "getrandom",
        "getsockname",
        "getsockopt",
        "gettid",
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
        "ioctl",
        "listen",
        "lseek",
        "madvise",
        "mkdir",
        "mmap",
        "mprotect",
        "munmap",
        "newfstatat",
        "openat",
        "poll",
        "prctl",
        "pread64",
        "prlimit64",
        "read",
        "readlink",
        "rename",
        "rseq",
        "rt_sigaction",
        "rt_sigprocmask",
        "sched_getaffinity",
        "sched_setaffinity",
        "set_robust_list",
        "set_tid_address",
        "setsockopt",
        "sigaltstack",
        "signalfd4",
        "socket",
        "statx",
        "sysinfo",
        "uname",
        "write",
        // Seldom paths.
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "tgkill",
        "kill",
        "unlink",
        "unlinkat",
        "getdents64",
        "fchmod",
        "chmod",
        "ftruncate",
        "setrlimit",
        "clock_gettime",
        "clock_nanosleep",
        "nanosleep",
        "accept4",
        "shutdown",
        "pipe2",
        "dup",
        "dup3",
    ];
    let unit = std::fs::read_to_string(repo().join("packaging/fors.service")).unwrap();
    // Every group and its members, as this systemd defines them.
    let table = run(Command::new("systemd-analyze").arg("syscall-filter"));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in table.lines() {
        let t = line.trim();
        if line.starts_with('@') {
            current = Some(t.to_string());
            groups.entry(t.to_string()).or_default();
        } else if !t.is_empty() && !t.starts_with('#') {
            if let Some(g) = &current {
                groups.get_mut(g).unwrap().push(t.to_string());
            }
        }
    }
    fn expand(name: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        if name.starts_with('@') {
            let members = groups
                .get(name)
                .unwrap_or_else(|| panic!("systemd knows no group {name}"));
            for m in members {
                expand(m, groups, out);
            }
        } else {
            out.insert(name.to_string());
        }
    }
    // systemd's rule: the first line without `~` is an allow-list; `~` lines remove.
    let mut allowed = BTreeSet::new();
    let mut lines = 0;
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        lines += 1;
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let mut set = BTreeSet::new();
        for item in list.split_whitespace() {
            expand(item, &groups, &mut set);
        }
        if deny {
            allowed.retain(|s| !set.contains(s));
        } else {
            allowed.extend(set);
        }
    }
    assert!(lines >= 2, "the unit has no SystemCallFilter");
    let blocked: Vec<&&str> = FORS_CALLS
        .iter()
        .filter(|c| !allowed.contains(**c))
        .collect();
    assert!(
        blocked.is_empty(),
        "fors.service's SystemCallFilter blocks {blocked:?}"
    );
    // And it is a filter: privileged calls Fors never makes stay out.
    for c in [
        "setuid",
        "setgroups",
        "chroot",
        "mount",
        "reboot",
        "init_module",
        "bpf",
    ] {
        assert!(!allowed.contains(c), "{c} is allowed");
    }
    // fors@.service is the same unit but for its paths.
    let instance = std::fs::read_to_string(repo().join("packaging/fors@.service")).unwrap();
    let strip = |u: &str| -> Vec<String> {
        u.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("%i") && !l.starts_with("Description"))
            .filter(|l| {
                !l.starts_with("StateDirectory=")
                    && !l.starts_with("LogsDirectory=")
                    && !l.starts_with("RuntimeDirectory=")
                    && !l.starts_with("ExecStart")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(strip(&unit), strip(&instance), "fors@.service drifted");
}
