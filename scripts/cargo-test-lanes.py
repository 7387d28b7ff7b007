#!/usr/bin/env python3
"""Runs the workspace's test binaries (`cargo test --workspace --all-targets`) in parallel lanes.

Most of the suite's wall time is daemon tests that wait for a private Tor network to bootstrap,
one binary after another (cargo runs test binaries sequentially). This script builds every
test binary once (`cargo test --no-run`), then runs them in FORS_TEST_LANES lanes (default 2),
longest first, each lane one binary at a time, so two binaries' waits overlap on CI's 2 cores.
The few binaries that compare throughput within a run (`SOLO`) run alone afterwards.

Its output has cargo's shape, which scripts/test.sh parses: per binary a
`     Running <src> (<binary>)` line, then the binary's own libtest output (kept together,
never interleaved with another binary's), and for a failed binary cargo's
`error: test failed, to rerun pass ...` line. Each binary runs as cargo runs it: from its
package's directory, with CARGO_MANIFEST_DIR set.

Weights (expected seconds per binary, for the lane plan) come from scripts/test-weights.txt;
the measured times of this run are written to test-weights.txt in FORS_TEST_LOG_DIR (default
target/test-logs) so the file can be refreshed. An unknown binary gets a default weight.

Environment: FORS_TEST_LANES (lanes, default 2), FORS_TEST_ONLY (a regex: run only the binaries
whose label, e.g. `tests/daemon_cc.rs`, matches), FORS_TEST_BINARY_TIMEOUT (seconds one binary
may run, default 1500: a wedged binary is killed and counted as failed, never waited on forever).
Exit status: 0 if everything built and every binary passed.
"""

import json
import os
import re
import signal
import tempfile
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WEIGHT = 5.0
# Binaries that compare throughput measured within one run (e.g. MB/s with and without
# idle connections held open): another lane's load during one phase skews the ratio, so
# they run alone, after the lanes.
SOLO = {"tests/daemon_slots.rs", "tests/daemon_bandwidth.rs"}


def build():
    """Builds every test binary; returns [(name, kind, src, exe, package_dir)]."""
    cmd = ["cargo", "test", "--workspace", "--all-targets", "--no-run",
           "--message-format=json-render-diagnostics"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    bins = []
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            print(line, end="")
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        kind = target["kind"][0]
        pkg_dir = package_dir(msg["package_id"], msg.get("manifest_path"))
        src = os.path.relpath(target["src_path"], pkg_dir)
        # cargo names a library's test binary "unittests src/lib.rs"
        label = f"unittests {src}" if kind in ("lib", "bin") else src
        bins.append((target["name"], kind, label, msg["executable"], pkg_dir))
    rc = proc.wait()
    sys.stdout.flush()
    return rc, bins


def package_dir(package_id, manifest_path):
    if manifest_path:
        return os.path.dirname(manifest_path)
    # "path+file:///work/main/bench#fors-bench@0.1.0" (cargo ≥ 1.77) or
    # "fors-bench 0.1.0 (path+file:///work/main/bench)" (older).
    for part in package_id.replace("(", " ").replace(")", " ").split():
        if part.startswith("path+file://"):
            return urllib.parse.unquote(part[len("path+file://"):].split("#")[0])
    return ROOT


def kill_marked(marker):
    """SIGKILLs every process whose environment holds `marker` (a test binary and all it
    started, wherever they were reparented)."""
    needle = marker.encode() + b"\0"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def weights():
    w = {}
    path = os.path.join(ROOT, "scripts", "test-weights.txt")
    try:
        with open(path) as f:
            for line in f:
                line = line.split("#")[0].split()
                if len(line) == 2:
                    w[line[1]] = float(line[0])
    except OSError:
        pass
    return w


def plan(bins, lanes, w):
    """Longest processing time first: each binary to the lane with the least work so far."""
    order = sorted(bins, key=lambda b: -w.get(b[2], DEFAULT_WEIGHT))
    load = [0.0] * lanes
    out = [[] for _ in range(lanes)]
    for b in order:
        i = load.index(min(load))
        out[i].append(b)
        load[i] += w.get(b[2], DEFAULT_WEIGHT)
    return out


def main():
    lanes = max(1, int(os.environ.get("FORS_TEST_LANES", "2")))
    timeout = int(os.environ.get("FORS_TEST_BINARY_TIMEOUT", "1500"))
    rc, bins = build()
    if rc != 0:
        print("error: could not compile the test binaries (cargo test --no-run failed)")
        return rc or 1
    only = os.environ.get("FORS_TEST_ONLY")
    if only:
        bins = [b for b in bins if re.search(only, b[2])]
    w = weights()
    lock = threading.Lock()
    measured = {}
    failed = []

    def run_lane(lane):
        for name, kind, label, exe, pkg_dir in lane:
            # Every process the binary starts inherits this marker, including daemons that
            # leave its process group or session, so a timeout kill can find them all.
            marker = f"FORS_LANE_RUN={os.getpid()}-{name}-{time.monotonic_ns()}"
            env = dict(os.environ, CARGO_MANIFEST_DIR=pkg_dir,
                       FORS_LANE_RUN=marker.split("=", 1)[1])
            t0 = time.monotonic()
            # Output goes to a file, not a pipe: a daemon a test leaves behind may keep the
            # descriptor open, and the lane waits for the binary's exit, not for that EOF.
            # A binary killed for running too long takes the tor and fors daemons it started
            # with it (they would hold ports for later binaries).
            with tempfile.TemporaryFile() as outf:
                p = subprocess.Popen([exe], cwd=pkg_dir, env=env, stdout=outf,
                                     stderr=subprocess.STDOUT)
                try:
                    code = p.wait(timeout=timeout)
                    killed = False
                except subprocess.TimeoutExpired:
                    kill_marked(marker)
                    p.wait()
                    code, killed = -9, True
                outf.seek(0)
                out = outf.read().decode(errors="replace")
            if killed:
                out += f"\nerror: {label} still running after {timeout} s: killed\n"
            secs = time.monotonic() - t0
            rel = os.path.relpath(exe, ROOT)
            flag = f"--lib" if kind == "lib" else f"--{kind} {name}"
            with lock:
                measured[label] = secs
                print(f"     Running {label} ({rel})")
                print(out, end="" if out.endswith("\n") else "\n")
                print(f"    lane: {label} took {secs:.1f} s")
                if code != 0:
                    failed.append(label)
                    print(f"error: test failed, to rerun pass `{flag}`")
                sys.stdout.flush()

    solo = [b for b in bins if b[2] in SOLO]
    shared = [b for b in bins if b[2] not in SOLO]
    threads = [threading.Thread(target=run_lane, args=(lane,))
               for lane in plan(shared, lanes, w)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_lane(solo)
    print(f"lanes: {len(bins)} test binaries in {lanes} lanes, {time.monotonic() - t0:.0f} s")
    logs = os.environ.get("FORS_TEST_LOG_DIR") or os.path.join(ROOT, "target", "test-logs")
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(logs, "test-weights.txt"), "w") as f:
        for label, secs in sorted(measured.items(), key=lambda kv: -kv[1]):
            f.write(f"{secs:.0f} {label}\n")
    if failed:
        print(f"error: {len(failed)} test binaries failed: {' '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
