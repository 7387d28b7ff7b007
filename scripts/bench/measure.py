"""One measured fors-loadgen run against one relay: the code bench-compare.py and the
side-by-side at the end of `testnet.py demo` share, so both compute CPU cost the same way.

The relay's cost is its own process's utime+stime delta over the run (`/proc/PID/stat`, every
thread: relaystat.cpu_seconds) divided by the bytes the load generator verified
(report.compute_row).
"""

import json
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
    CPU seconds.  Returns (lg, err, cpu_s, wall_s, peak_rss_kib); raises relaystat.ProcError
    when the relay process is gone."""
    cpu0 = relaystat.cpu_seconds(pid)
    w0 = time.monotonic()
    lg, err = run()
    wall = time.monotonic() - w0
    cpu1 = relaystat.cpu_seconds(pid)
    rss = relaystat.peak_rss_kib(pid)
    return lg, err, cpu1 - cpu0, wall, rss


def measure_row(subject, workload, pid, run, rss_start_kib=None):
    """A report row (report.compute_row) for one measured run, or an unusable row that says
    why there are no figures."""
    try:
        lg, err, cpu_s, wall, rss = measured_run(pid, run)
    except relaystat.ProcError as e:
        return report.unusable_row(subject, workload, f"relay process exited during the run ({e})",
                                   status="failed")
    if lg is None:
        return report.unusable_row(subject, workload, err or "no loadgen output", status="failed")
    return report.compute_row(subject, workload, lg, cpu_s, rss, wall, rss_start_kib)
