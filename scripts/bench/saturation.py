#!/usr/bin/env python3
"""Saturation run (issue #13): how many cells/s does one Fors shard carry, and is it the
bottleneck?

It brings up a private loopback network with `scripts/testnet.py` (3 C tor authorities, C tor
middle1 and exit1, one Fors exit slot `forsexit1` with `NumCPUs --shards`, default 1), pins
every thread of the Fors relay to `--relay-core` (default 1; e.g. `0,1` with `--shards 2`)
and everything else, the load generator included, to `--other-cores` (default 0), then drives
Fors with `fors-loadgen`:

  exit     path middle1 -> forsexit1   download (Fors is the exit: it packages every DATA cell)
  middle   path forsexit1 -> exit1     download + upload (Fors forwards every cell, one layer)

for each `--circuits` value. While a workload runs, a sampler reads once a second (bounded by
the workload's timeout) the Fors process's utime+stime (`/proc/PID/stat`), each of its
threads' (`/proc/PID/task/TID/stat`, named by comm: `fors-shard-N` are the shards) and the
per-CPU busy time of the machine (`/proc/stat`, every process on that CPU, other jobs
included), so the report says how busy the relay's core was and how busy the core the load
generator shares with the C tor hops was. Before and after each workload it reads the
relay's MetricsPort (testnet.py gives Fors slots one on 127.0.0.1) for the cross-shard,
loop-iteration, wake-up and cell-batch counters, so a multi-shard run shows how many cells
crossed shards.

Per workload it reports cells/s (the load generator's: relay cells sent plus received, each
of which the Fors relay handles once), relay cores busy (the process's CPU-seconds over the
run / the load generator's elapsed transfer time, as bench-compare computes it), the shard
threads' share, the relay's CPU-ns per cell, and whether the relay was the bottleneck
(>= 0.9 of a core). When it was not, cells/s / relay cores is labelled *extrapolated*: the
cells/s of one fully busy core if the cost per cell stayed the same up to a full core (no
change in batching or queueing, which in fact grow with load).

With `--perf` (and `perf` installed) it records `perf record -g` of the Fors process for
`--perf-seconds` during the first exit workload and prints the top symbols (self time).

Everything listens on 127.0.0.1 and the network is always stopped (try/finally; SIGINT,
SIGTERM and SIGHUP raise into it). Every wait and loop is bounded in count and time, and the
whole run by `--budget`.

Usage: scripts/bench/saturation.py [--circuits 8,32] [--mb 1500] [--shards N --relay-core L]
       [--perf] [--json FILE] [--fors-bin PATH] [--loadgen PATH]
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import benchutil  # noqa: E402
import measure  # noqa: E402
import relaystat  # noqa: E402

TESTNET = os.path.join(REPO, "scripts", "testnet.py")
_spec = importlib.util.spec_from_file_location("testnet", TESTNET)
testnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testnet)

SUBJECT = "forsexit1"
MIDDLE = "middle1"
EXIT = "exit1"
BUSY = 0.9  # a core this busy counts as the bottleneck (issue #13)
LOADGEN_GRACE_S = 20.0
TEARDOWN_RESERVE_S = 45.0
MAX_SAMPLES = 3600


def log(msg):
    print(f"[saturation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# ---- /proc sampling -------------------------------------------------------------------

def thread_ticks(pid):
    """{tid: (comm, utime+stime ticks)} for every thread of `pid` (threads that exit between
    the listing and the read are skipped)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError as e:
        raise relaystat.ProcError(f"pid {pid}: {e}") from e
    for tid in tids[:4096]:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.find("(") + 1:text.rfind(")")]
        out[tid] = (comm, relaystat.parse_stat_cpu_ticks(text))
    return out


def cpu_busy_ticks():
    """{cpu: (busy ticks, total ticks)} from /proc/stat (busy = total - idle - iowait)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            vals = [int(x) for x in parts[1:]]
            total = sum(vals[:8])  # user..steal; guest is already inside user
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            out[parts[0][3:]] = (total - idle, total)
    return out


METRIC_WANTED = ("cross", "loop_iterations", "wakeups", "cell_batch")


def scrape_metrics(port):
    """{metric name: value summed over its labels} for the counters this report uses, from
    the relay's loopback MetricsPort (None if it cannot be read)."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    return parse_metrics(text)


def parse_metrics(text):
    """Sums the samples of each wanted metric over its labels (Prometheus text format)."""
    out = {}
    for line in text.splitlines()[:200_000]:
        if line.startswith("#") or not any(w in line for w in METRIC_WANTED):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0].strip()
        try:
            val = float(value)
        except ValueError:
            continue
        if name:
            out[name] = out.get(name, 0.0) + val
    return out


def per_core_figures(cells_per_s, elapsed_s, cpu_s, shard_cpu_s=None):
    """The row's derived figures: relay cores (CPU-seconds over the transfer time, as
    bench-compare), CPU-ns per cell, and cells/s per busy core, labelled measured only when
    the relay was the bottleneck (>= BUSY of a core). {} without the inputs."""
    if not cells_per_s or not elapsed_s or cpu_s is None:
        return {}
    rc = cpu_s / elapsed_s
    out = {"relay_cores": rc, "shard_cores": (shard_cpu_s or 0.0) / elapsed_s,
           "bottleneck": rc >= BUSY,
           "relay_ns_per_cell": cpu_s / (cells_per_s * elapsed_s) * 1e9}
    if cpu_s > 0:
        out["cells_per_s_per_busy_core"] = cells_per_s / rc
        out["per_core_figure"] = "measured" if rc >= BUSY else "extrapolated"
    return out


class Sampler:
    """Samples the relay's threads and the CPUs once a second until stopped (or MAX_SAMPLES)."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []  # (t, process ticks, {tid: (comm, ticks)}, cpu ticks)
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def take(self):
        return (time.monotonic(), relaystat.cpu_seconds(self.pid), thread_ticks(self.pid),
                cpu_busy_ticks())

    def run(self):
        for _ in range(MAX_SAMPLES):
            try:
                self.samples.append(self.take())
            except (relaystat.ProcError, OSError, ValueError) as e:
                self.error = str(e)
                return
            if self.stop.wait(1.0):
                break

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=10)
        try:
            self.samples.append(self.take())
        except (relaystat.ProcError, OSError, ValueError) as e:
            self.error = self.error or str(e)

    def summary(self, relay_core, other_cores):
        """Busy figures over the whole sampled span, and the busiest one-second interval of
        the shard thread."""
        s = self.samples
        if len(s) < 2:
            return {"error": self.error or "fewer than two samples"}
        (t0, p0, th0, c0), (t1, p1, th1, c1) = s[0], s[-1]
        span = t1 - t0
        tck = relaystat.CLK_TCK
        threads = {}
        for tid, (comm, ticks) in th1.items():
            base = th0.get(tid, (comm, 0))[1]
            d = (ticks - base) / tck / span
            threads[comm] = threads.get(comm, 0.0) + d
        shard = sum(v for k, v in threads.items() if k.startswith("fors-shard-")) or None
        peak = None
        for (ta, _, tha, _), (tb, _, thb, _) in zip(s, s[1:]):
            for tid, (comm, ticks) in thb.items():
                if comm.startswith("fors-shard-") and tid in tha and tb > ta:
                    v = (ticks - tha[tid][1]) / tck / (tb - ta)
                    peak = v if peak is None else max(peak, v)

        def cpu_share(cpu):
            if cpu not in c0 or cpu not in c1:
                return None
            busy = c1[cpu][0] - c0[cpu][0]
            total = c1[cpu][1] - c0[cpu][1]
            return busy / total if total > 0 else None

        shard_s = None
        for tid, (comm, ticks) in th1.items():
            if comm.startswith("fors-shard-"):
                shard_s = (shard_s or 0.0) + (ticks - th0.get(tid, (comm, 0))[1]) / tck
        return {
            "span_s": span,
            "relay_cpu_s": p1 - p0,
            "shard_cpu_s": shard_s,
            "threads_cores_over_span": {k: round(v, 3) for k, v in sorted(threads.items())
                                        if v >= 0.005},
            "shard_thread_cores_over_span": shard,
            "shard_thread_peak_1s": peak,
            "relay_cpus_busy": {c: cpu_share(c) for c in relay_core.split(",")},
            "other_cpus_busy": {c: cpu_share(c) for c in other_cores.split(",")},
            "samples": len(s),
            "error": self.error,
        }


# ---- the run --------------------------------------------------------------------------

class Run:
    def __init__(self, args):
        self.a = args
        self.run_dir = os.path.abspath(args.dir)
        self.deadline = time.monotonic() + args.budget
        self.child = None
        self.net = None
        self.pid = None
        self.token = None
        self.rows = []
        self.notes = []
        self.profile = None
        self.metrics_port = None

    def remaining(self):
        return self.deadline - time.monotonic()

    def run_child(self, cmd, timeout, stderr=subprocess.STDOUT):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr,
                             stdin=subprocess.DEVNULL, text=True, start_new_session=True, cwd=REPO)
        self.child = p
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout))
            return p.returncode, out or ""
        except subprocess.TimeoutExpired:
            self.stop_child(p)
            return None, f"timed out after {timeout:.0f}s"
        finally:
            self.child = None

    @staticmethod
    def stop_child(p):
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            if p.poll() is not None:
                return
            try:
                p.send_signal(sig)
                p.communicate(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def testnet(self, *argv, timeout):
        return self.run_child([sys.executable, TESTNET, "--dir", self.run_dir, *argv], timeout)

    def save(self, name, text):
        path = os.path.join(self.run_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text or "")

    def up(self):
        a = self.a
        argv = ["up", "--base-port", str(a.base_port), "--middles", "1", "--exits", "1",
                "--entry", MIDDLE, "--fors", "exit", "--fors-bin", os.path.abspath(a.fors_bin),
                "--slot-option", f"{SUBJECT} NumCPUs {a.shards}"]
        log("bringing the network up: " + " ".join(argv))
        rc, out = self.testnet(*argv, timeout=min(240, self.remaining() - TEARDOWN_RESERVE_S))
        self.save("up.log", out)
        if rc != 0:
            raise RuntimeError("testnet up failed: " + " | ".join(out.strip().splitlines()[-3:]))
        self.net = testnet.load_network(self.run_dir)
        for r in self.net["relays"]:
            if r["nick"] == SUBJECT:
                self.pid, self.token = r.get("pid"), r["torrc"]
                self.metrics_port = r.get("metrics_port")
        if not self.pid:
            raise RuntimeError(f"{SUBJECT} has no pid in network.json")

    def pin(self):
        for label, pid, token in testnet.all_processes(self.net):
            if not pid or not testnet.pid_is_ours(pid, token):
                continue
            cpus = str(self.a.relay_core) if label == SUBJECT else self.a.other_cores
            err = relaystat.pin(pid, cpus)
            if err:
                self.notes.append(f"could not pin {label} to CPU {cpus}: {err}")

    def wait_ready(self):
        t = max(10, min(self.a.wait_timeout, self.remaining() - 120))
        rc, out = self.testnet("wait", "--relays", f"{MIDDLE},{EXIT},{SUBJECT}",
                               "--timeout", str(int(t)), timeout=t + 30)
        self.save("wait.log", out)
        if rc != 0:
            self.notes.append("`testnet.py wait` failed; relying on the probe download")

    def loadgen(self, name, path, extra, timeout_s):
        cmd = ["taskset", "-c", self.a.other_cores] + measure.loadgen_argv(
            os.path.abspath(self.a.loadgen), os.path.join(self.run_dir, "network.json"), path,
            extra, timeout_s, threads=self.a.threads)
        self.save(f"bench/{name}.cmd", " ".join(cmd) + "\n")
        errlog = os.path.join(self.run_dir, "bench", f"{name}.stderr.log")
        with open(errlog, "w") as ef:
            rc, out = self.run_child(cmd, timeout_s + LOADGEN_GRACE_S, stderr=ef)
        self.save(f"bench/{name}.json", out)
        lg = measure.last_json(out)
        if lg is None:
            return None, f"loadgen exit {rc}, no JSON (see {errlog})"
        return lg, None

    def probe(self):
        limit = time.monotonic() + min(120, max(0, self.remaining() - 120))
        last = "no attempt"
        for attempt in range(1, 30):
            if time.monotonic() >= limit:
                break
            if not testnet.pid_is_ours(self.pid, self.token):
                return f"{SUBJECT} is not running"
            lg, err = self.loadgen(f"probe-{attempt}", [MIDDLE, SUBJECT],
                                   ["--circuits", "1", "--download", "256K"], 20)
            if lg is not None and lg.get("ok"):
                return None
            last = err or f"loadgen not ok: {lg.get('errors')}"
            time.sleep(3)
        return f"probe download failed: {last}"

    def perf(self, seconds):
        """perf record -g of the relay for `seconds`, in the background; returns the Popen."""
        if not shutil.which("perf"):
            self.profile = {"error": "perf is not installed"}
            return None
        data = os.path.join(self.run_dir, "perf.data")
        cmd = ["taskset", "-c", self.a.other_cores, "perf", "record", "-g", "-F", "499",
               "-p", str(self.pid), "-o", data, "--", "sleep", str(seconds)]
        self.save("perf.cmd", " ".join(cmd) + "\n")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def perf_report(self, p):
        try:
            _, err = p.communicate(timeout=self.a.perf_seconds + 60)
        except subprocess.TimeoutExpired:
            self.stop_child(p)
            self.profile = {"error": "perf record did not finish"}
            return
        data = os.path.join(self.run_dir, "perf.data")
        if p.returncode != 0 or not os.path.exists(data):
            self.profile = {"error": f"perf record exit {p.returncode}: {(err or '').strip()[-200:]}"}
            return
        cmd = ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol",
               "--percent-limit", "0.7", "-g", "none"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            self.profile = {"error": "perf report timed out"}
            return
        self.save("perf-report.txt", r.stdout)
        top = []
        for line in r.stdout.splitlines():
            s = line.strip()
            if not s or s.startswith("#") or "%" not in s:
                continue
            pct, _, rest = s.partition("%")
            try:
                top.append((float(pct), rest.strip()))
            except ValueError:
                continue
            if len(top) >= self.a.perf_top:
                break
        self.profile = {"seconds": self.a.perf_seconds, "top_self": top,
                        "report": os.path.join(self.run_dir, "perf-report.txt")}

    def workloads(self):
        mb = self.a.mb
        for c in self.a.circuits:
            per = max(1, int(mb * 1e6 / c / 1024))
            half = max(1, per // 2)
            yield ("exit", c, [MIDDLE, SUBJECT], ["--circuits", str(c), "--download", f"{per}K"])
            yield ("middle", c, [SUBJECT, EXIT],
                   ["--circuits", str(c), "--download", f"{half}K", "--upload", f"{half}K"])

    def measure(self):
        perf_done = not self.a.perf
        for role, circuits, path, extra in self.workloads():
            left = self.remaining() - TEARDOWN_RESERVE_S
            if left < LOADGEN_GRACE_S + 30:
                self.rows.append({"role": role, "circuits": circuits, "error": "time budget"})
                continue
            if not testnet.pid_is_ours(self.pid, self.token):
                self.rows.append({"role": role, "circuits": circuits,
                                  "error": f"{SUBJECT} exited"})
                continue
            err = relaystat.pin(self.pid, str(self.a.relay_core))  # threads started since
            if err:
                self.notes.append(f"could not re-pin {SUBJECT}: {err}")
            timeout_s = min(self.a.workload_timeout, left - LOADGEN_GRACE_S)
            name = f"{role}-{circuits}"
            log(f"{name}: path {','.join(path)} {' '.join(extra)} (timeout {timeout_s:.0f}s)")
            m0 = scrape_metrics(self.metrics_port) if self.metrics_port else None
            sampler = Sampler(self.pid)
            sampler.start()
            perf = []
            timer = None
            if not perf_done and role == "exit":
                # Started 2 s into the load (past circuit set-up), from a timer thread so the
                # load generator is already running.
                timer = threading.Timer(2.0, lambda: perf.append(self.perf(self.a.perf_seconds)))
                timer.start()
                perf_done = True
            lg, lerr = self.loadgen(name, path, extra, timeout_s)
            sampler.finish()
            if timer is not None:
                timer.join(timeout=10)
                if perf and perf[0] is not None:
                    self.perf_report(perf[0])
                elif not perf:
                    self.profile = {"error": "the workload ended before perf started"}
            m1 = scrape_metrics(self.metrics_port) if self.metrics_port else None
            row = {"role": role, "circuits": circuits, "shards": self.a.shards}
            row.update(sampler.summary(self.a.relay_core, self.a.other_cores))
            if m0 is not None and m1 is not None:
                row["metrics_delta"] = {k: v - m0.get(k, 0.0) for k, v in sorted(m1.items())
                                        if v - m0.get(k, 0.0)}
            if lg is None:
                row["error"] = lerr
            else:
                row["ok"] = bool(lg.get("ok"))
                row["cells_per_s"] = lg.get("cells_per_s")
                row["mb_per_s"] = lg.get("mb_per_s")
                row["bytes_verified"] = lg.get("bytes_verified")
                row["elapsed_s"] = el = lg.get("elapsed_s")
                row["loadgen_cores"] = lg.get("loadgen_cpu_cores")
                # As bench-compare: the relay's CPU over the whole run (set-up included)
                # against the load generator's transfer time and cell count.
                row.update(per_core_figures(row["cells_per_s"], el, row.get("relay_cpu_s"),
                                            row.get("shard_cpu_s")))
            self.rows.append(row)
            log("  -> " + summarize(row))

    def teardown(self):
        if not os.path.exists(os.path.join(self.run_dir, "network.json")):
            return
        rc, out = self.testnet("down", timeout=120)
        self.save("down.log", out)


def summarize(r):
    if r.get("error") and "cells_per_s" not in r:
        return "error: " + r["error"]
    f = lambda v, d=2: "?" if v is None else f"{v:.{d}f}"  # noqa: E731
    return (f"{f(r.get('cells_per_s'), 0)} cells/s, relay cores {f(r.get('relay_cores'))}, "
            f"shard thread {f(r.get('shard_cores'))} (peak 1 s {f(r.get('shard_thread_peak_1s'))}), "
            f"relay CPUs busy (all processes) {r.get('relay_cpus_busy')}, other CPUs busy "
            f"{r.get('other_cpus_busy')}, loadgen cores {f(r.get('loadgen_cores'))}, "
            f"bottleneck {r.get('bottleneck')}, {f(r.get('relay_ns_per_cell'), 0)} ns/cell, "
            f"{r.get('per_core_figure', '')} {f(r.get('cells_per_s_per_busy_core'), 0)} cells/s per busy core")


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=os.path.join(REPO, "run", "saturation"))
    p.add_argument("--fors-bin", default=os.path.join(REPO, "target", "release", "fors"))
    p.add_argument("--loadgen", default=os.path.join(REPO, "target", "release", "fors-loadgen"))
    p.add_argument("--base-port", type=int, default=17300)
    p.add_argument("--relay-core", default="1",
                   help="CPU list for every Fors thread (e.g. 0,1 with --shards 2)")
    p.add_argument("--shards", type=int, default=1, help="NumCPUs of the Fors relay")
    p.add_argument("--other-cores", default="0")
    p.add_argument("--circuits", default="8,32",
                   help="comma-separated circuit counts; each runs exit and middle")
    p.add_argument("--threads", type=int, default=1, help="fors-loadgen --threads")
    p.add_argument("--mb", type=float, default=1500.0, help="MB verified per workload")
    p.add_argument("--workload-timeout", type=float, default=120.0)
    p.add_argument("--wait-timeout", type=float, default=150.0)
    p.add_argument("--budget", type=float, default=1200.0, help="seconds for the whole run")
    p.add_argument("--perf", action="store_true", help="perf record -g during the first exit run")
    p.add_argument("--perf-seconds", type=int, default=10)
    p.add_argument("--perf-top", type=int, default=25)
    p.add_argument("--json", help="write the results here too")
    a = p.parse_args(argv)
    try:
        a.circuits = [int(x) for x in a.circuits.split(",") if x]
    except ValueError:
        p.error("--circuits takes comma-separated integers")
    if not a.circuits or any(c < 1 or c > 1000 for c in a.circuits):
        p.error("--circuits: each value in 1..1000")
    for path in (a.fors_bin, a.loadgen):
        if not os.access(path, os.X_OK):
            p.error(f"{path} is not an executable (cargo build --release)")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    run = Run(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = load_average()
    status = 0
    try:
        run.up()
        run.pin()
        run.wait_ready()
        run.pin()
        why = run.probe()
        if why:
            raise RuntimeError(why)
        run.measure()
    except (RuntimeError, Interrupted, testnet.TestnetError) as e:
        log(f"stopped: {e}")
        run.notes.append(f"stopped early: {e}")
        status = 1
    finally:
        try:
            run.teardown()
        except Interrupted:
            run.teardown()
    load1 = load_average()
    res = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": benchutil.cpu_info(),
        "kernel": platform.release(),
        "load_average_start": load0,
        "load_average_end": load1,
        "relay_core": a.relay_core,
        "other_cores": a.other_cores,
        "argv": sys.argv[1:] if argv is None else argv,
        "rows": run.rows,
        "profile": run.profile,
        "notes": run.notes,
    }
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    if any(r.get("error") and "cells_per_s" not in r for r in run.rows):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
