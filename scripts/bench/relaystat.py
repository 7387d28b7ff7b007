"""Per-process accounting from /proc for the relay under test (Linux only).

Only the subject relay's own process is measured: `/proc/PID/stat` utime+stime cover all of
its threads (proc(5)), so C tor's cpuworker threads and every Fors shard are included.

utime and stime are also read apart (`cpu_times`): on loopback stime holds the kernel's TCP
work for the relay's sockets, and for the data the relay sends also the receive side's
softirq (the loopback device delivers in the sender's context). How the kernel splits a
process's runtime into the two is sampled at its tick (CONFIG_TICK_CPU_ACCOUNTING: each tick
charges the running task's user or system time; the sum is the exact runtime and the split
is scaled to it), so the split of a short run carries a sampling error of a few percent.
"""

from collections import namedtuple

import os
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcError(Exception):
    """A /proc read failed: usually the process has exited."""


# CPU seconds of a process split as the kernel accounts them: user (utime) and system (stime).
CpuTimes = namedtuple("CpuTimes", "user sys")


def parse_stat_cpu_split(stat_text):
    """(utime, stime) in clock ticks from the text of /proc/PID/stat.

    comm (field 2) may hold spaces and parentheses, so fields are counted from the last ')':
    after it come state (field 3) ... utime (14) and stime (15)."""
    close = stat_text.rfind(")")
    tail = stat_text[close + 2:].split() if close >= 0 else []
    if len(tail) < 13:
        raise ProcError(f"short /proc stat line: {stat_text[:80]!r}")
    try:
        return int(tail[11]), int(tail[12])
    except ValueError as e:
        raise ProcError(f"/proc stat utime/stime not numbers: {tail[11:13]!r}") from e


def parse_stat_cpu_ticks(stat_text):
    """utime + stime (clock ticks) from the text of /proc/PID/stat."""
    utime, stime = parse_stat_cpu_split(stat_text)
    return utime + stime


def cpu_times(pid):
    """CpuTimes(user, sys): the CPU seconds every thread of `pid` has used so far, apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            utime, stime = parse_stat_cpu_split(f.read())
    except OSError as e:
        raise ProcError(f"pid {pid}: {e}") from e
    return CpuTimes(utime / CLK_TCK, stime / CLK_TCK)


def cpu_delta(before, after):
    """CpuTimes of the interval between two cpu_times readings."""
    return CpuTimes(after.user - before.user, after.sys - before.sys)


def cpu_seconds(pid):
    """User+system CPU seconds consumed so far by every thread of `pid`."""
    t = cpu_times(pid)
    return t.user + t.sys


def parse_status_kib(status_text, key):
    """A `Key:   N kB` value of /proc/PID/status, in KiB (None if absent)."""
    for line in status_text.splitlines():
        if line.startswith(key + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def peak_rss_kib(pid, key="VmHWM"):
    """VmHWM: the resident-set high-water mark (KiB); key="VmRSS" for the current RSS."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_status_kib(f.read(), key)
    except OSError as e:
        raise ProcError(f"pid {pid}: {e}") from e


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (proc(5): writing 5 to clear_refs, Linux >= 4.0), so
    each workload gets its own peak.  Returns False when the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def pin(pid, cpus):
    """Pins every thread of `pid` to `cpus` (e.g. "1" or "0,1") with taskset -a.  Returns
    None on success, else the error text."""
    try:
        r = subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.strip() or f"taskset exit {r.returncode}")


def thread_cpus(pid):
    """The distinct Cpus_allowed_list values of the threads of `pid` (to prove the pinning)."""
    out = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids[:4096]:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out.add(line.split(":", 1)[1].strip())
                        break
        except OSError:
            continue
    return out
