"""One measured fors-loadgen run against one relay: the code bench-compare.py and the
side-by-side at the end of `testnet.py demo` share, so both compute CPU cost the same way.

The relay's cost is its own process's utime+stime delta over the run (`/proc/PID/stat`, every
thread: relaystat.cpu_times) divided by the bytes the load generator verified
(report.compute_row); utime and stime are also kept apart (user and kernel time).
"""

import json
import os
import re
import time

import relaystat
import report


def loadgen_argv(loadgen, network_json, path, extra, timeout_s, threads=1):
    """The fors-loadgen command line for one run over `path` (nicknames of network.json)."""
    return [loadgen, "--network", network_json, "--path", ",".join(path),
            "--threads", str(threads), "--json", "--timeout", f"{int(timeout_s)}s"] + list(extra)


def last_json(out):
    """The loadgen's JSON report: its last output line, when that line is a JSON object."""
    for line in reversed((out or "").splitlines()):
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                return None
            return obj if isinstance(obj, dict) else None
    return None


def measured_run(pid, run):
    """Calls `run()` -> (loadgen JSON or None, error text) between two reads of the relay's
    CPU times.  Returns (lg, err, cpu, wall_s, peak_rss_kib), `cpu` a relaystat.CpuTimes
    (user, sys) of the run; raises relaystat.ProcError when the relay process is gone."""
    cpu0 = relaystat.cpu_times(pid)
    w0 = time.monotonic()
    lg, err = run()
    wall = time.monotonic() - w0
    cpu1 = relaystat.cpu_times(pid)
    rss = relaystat.peak_rss_kib(pid)
    return lg, err, relaystat.cpu_delta(cpu0, cpu1), wall, rss


def measure_row(subject, workload, pid, run, rss_start_kib=None):
    """A report row (report.compute_row) for one measured run, or an unusable row that says
    why there are no figures."""
    try:
        lg, err, cpu, wall, rss = measured_run(pid, run)
    except relaystat.ProcError as e:
        return report.unusable_row(subject, workload, f"relay process exited during the run ({e})",
                                   status="failed")
    if lg is None:
        return report.unusable_row(subject, workload, err or "no loadgen output", status="failed")
    return report.compute_row(subject, workload, lg, cpu, rss, wall, rss_start_kib)


def parse_allocator_evidence(thread_names, mapped_paths, preload):
    """What a process shows of its allocator: `thread_names` (the threads' comm), the file
    paths in its maps and the LD_PRELOAD value it was started with.  Returns (text, missing):
    `missing` lists the LD_PRELOAD libraries that are not mapped."""
    wanted = [p for p in preload.replace(":", " ").split() if p]
    names = {os.path.basename(p) for p in mapped_paths}
    # The maps name the file a symlink like libmimalloc.so.2 resolves to.
    missing = [p for p in wanted
               if not {p, os.path.realpath(p)} & set(mapped_paths)
               and os.path.basename(p) not in names]
    seen = []
    if any(n.startswith("jemalloc_bg_thd") for n in thread_names):
        seen.append("jemalloc (its background thread `jemalloc_bg_thd` runs)")
    libs = sorted(n for n in names if re.match(r"lib(je|mi|tc)malloc\b", n))
    if libs:
        seen.append("mapped " + ", ".join(f"`{n}`" for n in libs))
    if not seen:
        seen.append("no jemalloc thread and no malloc library mapped: glibc malloc")
    return "; ".join(seen), missing


def allocator_evidence(pid, preload=""):
    """parse_allocator_evidence for the running process `pid` (/proc/PID/task/*/comm and
    /proc/PID/maps); raises relaystat.ProcError when it is gone."""
    try:
        names = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                continue  # a thread that exited meanwhile
        with open(f"/proc/{pid}/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError as e:
        raise relaystat.ProcError(f"pid {pid}: {e}") from e
    return parse_allocator_evidence(names, paths, preload)
