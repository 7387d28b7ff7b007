//! The packaged `fors.service` under a real systemd: systemd runs as PID 1 of a throw-away
//! PID, mount, cgroup, network, UTS and IPC namespace (`unshare`), with a private cgroup2
//! subtree, a private /run and /tmp, and overlays that lay the .deb's files over the host's
//! /usr, /etc and /var (every write lands in the test's scratch directory, never on the
//! host). Its unit path holds only the .deb's own `fors.service` and a target that wants it,
//! so none of the host's units can start. The relay listens on 127.0.0.1 in the namespace's
//! own network (only `lo`); its authorities are unused loopback ports and
//! `PublishServerDescriptor 0`.
//!
//! Checked with `systemctl`: the service becomes active/running only through its READY=1
//! (Type=notify), its STATUS= line shows, WATCHDOG=1 pings move `WatchdogTimestamp`, a
//! reload (ExecReload, SIGHUP) leaves it running and is logged, a stop ends it with
//! status 0, and a relay with a stuck shard (FORS_TESTING_STALL_SHARD, TestingTorNetwork
//! only) is killed by systemd's watchdog and restarted (Restart=on-failure).
//!
//! Needs root, systemd, unshare, nsenter, dpkg-deb and a writable cgroup2 hierarchy; without
//! them the test fails under CI=true and prints SKIPPED: otherwise. Every wait is bounded;
//! systemd is ended (immediate power-off) and its cgroups removed when the test ends, even
//! on failure.

mod daemon_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{skip_common, TempDir};

const SYSTEMD: &str = "/lib/systemd/systemd";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`; its stdout, or a panic with everything it said.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Inside the new namespaces (as root, before systemd): overlays, private /run and /tmp,
/// a fresh cgroup2 mount, `lo` up, the test's torrc and the _fors user; then systemd.
const INNER: &str = r#"
set -eu
W=$1
mount --make-rprivate /
for d in usr etc var; do
    mkdir -p "$W/pkg/$d" "$W/work-$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/pkg/$d,workdir=$W/work-$d" "/$d"
done
# What the package's postinst makes (adduser is not run here).
echo "_fors:x:990:990:Fors Tor relay:/var/lib/fors:/usr/sbin/nologin" >>/etc/passwd
echo "_fors:x:990:" >>/etc/group
cp "$W/torrc" /etc/fors/torrc
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/fors-units
cp /usr/lib/systemd/system/fors.service "$W/fors-live.target" /run/fors-units/
# The targets the unit's default dependencies and ordering name, empty: none of the host's.
for t in sysinit basic shutdown network-online nss-lookup; do
    printf '[Unit]\nDescription=%s (empty, for the test)\n' "$t" >"/run/fors-units/$t.target"
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
export SYSTEMD_UNIT_PATH=/run/fors-units container=fors-test
exec /lib/systemd/systemd --system --unit=fors-live.target --show-status=no \
    --default-standard-output=null </dev/null
"#;

/// The cgroup2 hierarchy (unified or hybrid) and our own cgroup in it.
fn cgroup2() -> Option<(PathBuf, String)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let root = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
    Some((root, path))
}

/// systemd in its namespaces; ended and cleaned up on drop.
struct Box_ {
    unshare: Child,
    systemd: u32,
    cgroup: PathBuf,
}

impl Box_ {
    fn systemctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.systemd.to_string(),
                "-m",
                "-p",
                "-n",
                "systemctl",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `systemctl show -p NAME --value fors.service`.
    fn prop(&self, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", "fors.service"])
            .1
            .trim()
            .to_string()
    }

    /// Waits (bounded) until `ok` holds for the unit's properties; the last values.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Self) -> bool) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "{what} not reached in {limit:?}: {}",
            self.systemctl(&["status", "--no-pager", "fors.service"]).1
        );
    }
}

impl Drop for Box_ {
    fn drop(&mut self) {
        // SIGRTMIN+14: systemd's immediate power-off; as a container's PID 1 it exits.
        let _ = Command::new("kill")
            .args(["-s", "RTMIN+14", &self.systemd.to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.unshare.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.unshare.try_wait().ok().flatten().is_none() {
            // PID 1 of the namespace: SIGKILL from outside takes every process in it.
            let _ = Command::new("kill")
                .args(["-KILL", &self.systemd.to_string()])
                .status();
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
        remove_cgroup(&self.cgroup);
    }
}

/// Removes a cgroup subtree, deepest first (only empty cgroups can go).
fn remove_cgroup(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

fn torrc(port: u16) -> String {
    format!(
        "Nickname ForsSystemd\n\
         ContactInfo test@example.invalid\n\
         ORPort 127.0.0.1:{port}\n\
         Address 127.0.0.1\n\
         DataDirectory /var/lib/fors\n\
         HardwareProfile generic\n\
         Log notice file /var/log/fors/notices.log\n\
         NumCPUs 2\n\
         TestingTorNetwork 1\n\
         PublishServerDescriptor 0\n\
         DirAuthority auth1 orport=9 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:9 89ABCDEF0123456789ABCDEF0123456789ABCDEF\n\
         DirAuthority auth2 orport=9 no-v2 v3ident=1123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:9 99ABCDEF0123456789ABCDEF0123456789ABCDEF\n"
    )
}

#[test]
fn packaged_unit_runs_under_a_real_systemd() {
    let test = "packaged_unit_runs_under_a_real_systemd";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_common::skip(test, "root (unshare, mounts, cgroups)");
    }
    if !Path::new(SYSTEMD).exists() {
        return skip_common::skip(test, "systemd (/lib/systemd/systemd)");
    }
    for (cmd, arg) in [
        ("unshare", "--version"),
        ("nsenter", "--version"),
        ("systemctl", "--version"),
        ("dpkg-deb", "--version"),
        ("ip", "-V"),
    ] {
        if !skip_common::have(cmd, arg) {
            return skip_common::skip(test, cmd);
        }
    }
    let Some((cg_root, own)) = cgroup2() else {
        return skip_common::skip(test, "a cgroup2 hierarchy");
    };
    let scratch = TempDir::new("systemd-live");
    let w = &scratch.0;

    // The package, unpacked: its files become the overlays' upper layers.
    let deb = run(Command::new(repo().join("packaging/build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_fors"), "--out"])
        .arg(w.join("out")));
    run(Command::new("dpkg-deb")
        .args(["-x", deb.trim()])
        .arg(w.join("pkg")));
    assert!(w.join("pkg/usr/lib/systemd/system/fors.service").is_file());
    // Any port: the namespace's network is its own.
    std::fs::write(w.join("torrc"), torrc(9001)).unwrap();
    std::fs::write(
        w.join("fors-live.target"),
        "[Unit]\nDescription=Fors under test\nWants=fors.service\n",
    )
    .unwrap();
    std::fs::write(w.join("inner.sh"), INNER).unwrap();

    // A cgroup of our own for the namespace's systemd (its cgroup namespace root).
    let cgroup = cg_root
        .join(own.trim_start_matches('/'))
        .join(format!("fors-systemd-live-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&cgroup) {
        return skip_common::skip(test, &format!("a writable cgroup2 ({e})"));
    }
    let unshare = Command::new("sh")
        .arg("-c")
        .arg(
            "echo $$ >\"$1/cgroup.procs\" && exec unshare --pid --fork --mount --cgroup --net \
             --uts --ipc --mount-proc sh \"$2/inner.sh\" \"$2\"",
        )
        .arg("sh")
        .arg(&cgroup)
        .arg(w)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.join("inner.log")).unwrap())
        .spawn()
        .unwrap();
    // systemd is unshare's only child.
    let upid = unshare.id();
    let mut systemd = None;
    let end = Instant::now() + Duration::from_secs(20);
    while systemd.is_none() && Instant::now() < end {
        let kids = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
            .unwrap_or_default();
        systemd = kids.split_whitespace().next().and_then(|p| p.parse().ok());
        if systemd.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let sd = Box_ {
        unshare,
        systemd: systemd.unwrap_or(0),
        cgroup,
    };
    assert_ne!(
        sd.systemd,
        0,
        "no systemd: {}",
        std::fs::read_to_string(w.join("inner.log")).unwrap_or_default()
    );
    let log =
        || std::fs::read_to_string(w.join("pkg/var/log/fors/notices.log")).unwrap_or_default();

    // READY=1 makes it active/running (Type=notify); STATUS= shows.
    sd.wait_for("fors.service active", Duration::from_secs(120), |b| {
        b.prop("SubState") == "running"
    });
    assert_eq!(sd.prop("ActiveState"), "active");
    assert_eq!(sd.prop("Type"), "notify");
    let status = sd.prop("StatusText");
    assert!(status.contains("2 shards running"), "StatusText={status}");
    assert!(log().contains("the relay is running"), "{}", log());
    assert_eq!(sd.prop("User"), "_fors");

    // WATCHDOG=1: pings every half WatchdogSec (30 s) move the timestamp.
    assert_eq!(sd.prop("WatchdogUSec"), "30s");
    let first = sd.prop("WatchdogTimestampMonotonic");
    sd.wait_for("a watchdog ping", Duration::from_secs(40), |b| {
        b.prop("WatchdogTimestampMonotonic") != first
    });

    // Reload: ExecReload sends SIGHUP; Fors says RELOADING=1 then READY=1 and runs on.
    let pid = sd.prop("MainPID");
    let (ok, said) = sd.systemctl(&["reload", "fors.service"]);
    assert!(ok, "reload: {said}");
    let end = Instant::now() + Duration::from_secs(30);
    while !log().contains("Received reload signal") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(log().contains("Received reload signal"), "{}", log());
    sd.wait_for("running after the reload", Duration::from_secs(30), |b| {
        b.prop("SubState") == "running"
    });
    assert_eq!(sd.prop("MainPID"), pid, "a reload is not a restart");

    // Stop: SIGTERM, a clean exit.
    let (ok, said) = sd.systemctl(&["stop", "fors.service"]);
    assert!(ok, "stop: {said}");
    assert_eq!(sd.prop("ActiveState"), "inactive");
    assert_eq!(sd.prop("Result"), "success");
    assert_eq!(sd.prop("ExecMainStatus"), "0");

    // A stuck shard stops the pings: systemd's watchdog kills the relay and restarts it.
    let dropin = "mkdir -p /run/fors-units/fors.service.d && printf \
        '[Service]\\nEnvironment=FORS_TESTING_STALL_SHARD=1\\nWatchdogSec=4\\nRestartSec=1\\n' \
        >/run/fors-units/fors.service.d/stall.conf";
    run(Command::new("nsenter").args([
        "-t",
        &sd.systemd.to_string(),
        "-m",
        "-p",
        "sh",
        "-c",
        dropin,
    ]));
    let (ok, said) = sd.systemctl(&["daemon-reload"]);
    assert!(ok, "daemon-reload: {said}");
    let (ok, said) = sd.systemctl(&["start", "fors.service"]);
    assert!(ok, "start: {said}");
    // Fors stops pinging (and says why); systemd kills it and starts it again.
    sd.wait_for("a watchdog restart", Duration::from_secs(90), |b| {
        b.prop("NRestarts").parse::<u32>().unwrap_or(0) >= 1
    });
    assert!(
        log().contains("withholding the watchdog ping"),
        "the relay said nothing of its stalled shard:\n{}",
        log()
    );
    eprintln!(
        "{}",
        sd.systemctl(&["status", "--no-pager", "fors.service"]).1
    );
    let (ok, said) = sd.systemctl(&["stop", "fors.service"]);
    assert!(ok, "stop: {said}");
}
