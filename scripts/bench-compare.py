#!/usr/bin/env python3
"""Side-by-side relay benchmark: Fors vs C tor in the same role, same core, same workloads.

It brings up a private loopback network with `scripts/testnet.py` (3 authorities, C tor
middle1/exit1/exit2, Fors slots forsexit1 with `NumCPUs 1` and forsexit2 with `NumCPUs 2`).
The subjects are exit1 (C tor), forsexit1 (Fors, 1 shard) and forsexit2 (Fors, 2 shards). Every
subject is an exit, which can also serve as a middle or first hop, so one relay per
implementation covers every workload:

  exit-download / exit-upload   path middle1 -> SUBJECT        (subject is the exit)
  middle-forward                path SUBJECT -> exit2          (subject forwards, one layer)
  create                        path SUBJECT                   (one-hop CREATE2, handshakes/s)
  flood-bulk                    path SUBJECT -> exit2, --flood (CREATE2 flood during a download)
  exit-download-cgo, exit-upload-cgo, middle-forward-cgo
                                the same with CGO circuits (`fors-loadgen --relay-crypto cgo`:
                                ntor-v3 asking every hop that advertises CGO for it and for
                                congestion control)

A CGO workload counts only if the subject really ran CGO: the loadgen's record of what each
hop's handshake negotiated (`hop_crypto`) must say CGO at the subject's hop on every circuit,
and for a Fors subject its MetricsPort counter `fors_relay_all_shards_circuits_cgo_total` must
grow by at least the number of circuits; otherwise the row fails.

C tor and 1-shard Fors are pinned to core 1 (`taskset -a -p -c 1`, all threads), 2-shard Fors
to cores 0,1; everything else, the load generator included, to core 0. Only one subject is
loaded at a time. For each run the subject's utime+stime delta comes from /proc/PID/stat and
its VmHWM from /proc/PID/status (reset before each run). utime and stime are also reported
apart (user and kernel time per GB), with the kernel floor this puts under issue #13's goals
(exit 4×, middle 5× less CPU per GB than C tor).

A Fors subject that does not come up, never gets usable, or fails a workload is reported as
"not usable (reason)"; the C tor rows and RESULTS.md are produced anyway. The exit status is 0
unless the C tor baseline failed, or (with --strict) anything failed. The network is always
stopped (try/finally; SIGINT, SIGTERM and SIGHUP raise into it).

`--ctor-in-fors-slots` runs C tor in the Fors slots: a validation of the whole pipeline whose
ratios should be ~1 (their spread is the measurement noise).

`--fors-env KEY=VALUE` (repeatable) starts only the Fors slots with that environment, e.g.
`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2` to try another allocator; C tor and
the load generator never see it. Each Fors subject's allocator as seen in the running process
(a jemalloc background thread, a preloaded library in its maps) is noted in the report.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

# Importing testnet.py must not rewrite the (tracked) scripts/__pycache__.
sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "bench"))
import measure  # noqa: E402
import relaystat  # noqa: E402
import report  # noqa: E402

TESTNET = os.path.join(HERE, "testnet.py")
_spec = importlib.util.spec_from_file_location("testnet", TESTNET)
testnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testnet)

CTOR, FORS1, FORS2 = "ctor", "fors1", "fors2"
NICK = {CTOR: "exit1", FORS1: "forsexit1", FORS2: "forsexit2"}
CORES = {CTOR: "1", FORS1: "1", FORS2: "0,1"}
PATH_MIDDLE, PATH_EXIT = "middle1", "exit2"
OTHER_CORE = "0"
# The relay-wide sum over shards of `fors_relay_circuits_cgo_total{shard=...}`.
CGO_METRIC = "fors_relay_all_shards_circuits_cgo_total"
# How a Fors subject read its TLS records during a workload (issue #13's copy map): opened
# where they lay behind a header from the read before, or gathered whole first; and the
# receives the shard armed with a cap (reads ending after the next record's header).
READ_METRICS = ("fors_relay_tls_records_split_total", "fors_relay_tls_records_gathered_total",
                "fors_relay_tls_record_bytes_gathered_total", "fors_relay_tls_read_hint_pauses_total",
                "fors_shard_recv_capped",
                "fors_shard_recv_bytes")
TEARDOWN_RESERVE_S = 45.0  # kept back from the budget for `down` and writing results
LOADGEN_GRACE_S = 20.0  # past its own --timeout before a loadgen run is stopped


def log(msg):
    print(f"[bench-compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


class Bench:
    def __init__(self, args):
        self.args = args
        self.run_dir = os.path.abspath(args.dir)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.child = None  # the subprocess currently running (up/wait/loadgen)
        self.net = None
        self.rows = []
        self.notes = []
        self.fors_state = {}  # subject -> None (usable) or reason text
        self.fors_slots = not args.no_fors
        self.fors_bin = args.fors_bin  # a wrapper script when --fors-env is given
        self.wrapper = None
        self.allocator_seen = {}  # Fors subject -> measure.allocator_evidence text
        name = args.fors_label or "Fors"
        self.labels = {CTOR: "C tor 0.4.9", FORS1: f"{name}, 1 shard", FORS2: f"{name}, 2 shards"}
        if args.ctor_in_fors_slots:
            self.labels[FORS1] = "slot 1 (C tor, NumCPUs 1)"
            self.labels[FORS2] = "slot 2 (C tor, NumCPUs 2)"

    # ---- time ------------------------------------------------------------
    def remaining(self):
        return self.deadline - time.monotonic()

    # ---- child processes -------------------------------------------------
    def run_child(self, cmd, timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT):
        """Runs `cmd` in its own session, bounded by `timeout`; returns (rc, stdout text).
        On timeout it is sent SIGTERM, then SIGKILL (by pid, ours)."""
        p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                             text=True, start_new_session=True, cwd=REPO)
        self.child = p
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout))
            return p.returncode, out or ""
        except subprocess.TimeoutExpired:
            self.stop_child()
            return None, f"timed out after {timeout:.0f}s"
        finally:
            self.child = None

    def stop_child(self):
        p = self.child
        if p is None or p.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                return
            try:
                p.communicate(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def testnet(self, *argv, timeout):
        return self.run_child([sys.executable, TESTNET, "--dir", self.run_dir, *argv], timeout)

    # ---- network ---------------------------------------------------------
    def up(self):
        a = self.args
        # The client's guard (and so its directory guard) is pinned to middle1: otherwise it may
        # pick a subject and make it serve directory documents, which inflates its RSS.
        base = ["up", "--base-port", str(a.base_port), "--middles", "1", "--exits", "2",
                "--entry", PATH_MIDDLE]
        fors = []
        if self.fors_slots:
            fors = ["--fors", "exit", "--fors", "exit",
                    "--slot-option", "forsexit1 NumCPUs 1", "--slot-option", "forsexit2 NumCPUs 2"]
            if not a.ctor_in_fors_slots:
                fors += ["--fors-bin", self.fors_bin]
        log("bringing the network up" + (" with the Fors slots" if fors else ""))
        up_limit = lambda: min(240, self.remaining() - TEARDOWN_RESERVE_S)  # noqa: E731
        rc, out = self.testnet(*(base + fors), timeout=up_limit())
        if rc != 0 and fors:
            reason = "`testnet.py up` failed with the Fors slots: " + up_failure_reason(out)
            log(reason + "; retrying with C tor only")
            for s in (FORS1, FORS2):
                self.fors_state[s] = reason
            self.fors_slots = False
            first = out
            rc, out = self.testnet(*base, timeout=up_limit())
            # The retry recreated the run dir, so the first attempt's log is written now.
            self.save_log("up-with-fors-slots.log", first)
        self.save_log("up.log", out)
        if rc != 0:
            raise RuntimeError("testnet up failed: " + tail_reason(out))
        self.net = testnet.load_network(self.run_dir)

    def write_wrapper(self):
        """With --fors-env, a script outside the run directory (`up` recreates that) which
        execs the Fors binary with the extra environment, so the relay keeps the wrapper's pid
        and a command line with its torrc (how testnet.py recognises its processes)."""
        env = parse_env(self.args.fors_env)
        if not env or self.args.ctor_in_fors_slots or not self.fors_slots:
            return
        fd, path = tempfile.mkstemp(prefix="bench-compare-fors-", suffix=".sh")
        with os.fdopen(fd, "w") as f:
            f.write(wrapper_script(os.path.abspath(self.args.fors_bin), env))
        os.chmod(path, 0o755)
        self.wrapper = self.fors_bin = path

    def remove_wrapper(self):
        if self.wrapper:
            try:
                os.unlink(self.wrapper)
            except OSError:
                pass

    def check_allocators(self):
        """Notes which allocator each running Fors subject shows; a library given in
        --fors-env LD_PRELOAD that is not mapped makes that subject not usable (its figures
        would be another allocator's under the wrong name)."""
        if not self.fors_slots or self.args.ctor_in_fors_slots:
            return
        preload = parse_env(self.args.fors_env).get("LD_PRELOAD", "")
        for s in (FORS1, FORS2):
            pid, token = self.pid_of(s)
            if self.fors_state.get(s) or not pid or not testnet.pid_is_ours(pid, token):
                continue
            seen, missing = measure.allocator_evidence(pid, preload)
            self.allocator_seen[s] = seen
            self.notes.append(f"{NICK[s]} allocator: {seen}")
            if missing:
                self.fors_state[s] = f"LD_PRELOAD library not mapped: {', '.join(missing)}"

    def pid_of(self, subject):
        nick = NICK[subject]
        for r in self.net["relays"]:
            if r["nick"] == nick:
                return r.get("pid"), r["torrc"]
        return None, None

    def pin_all(self):
        """Subjects to their cores, everything else to core 0 (best effort, logged)."""
        subj = {NICK[s]: s for s in NICK}
        for label, pid, token in testnet.all_processes(self.net):
            if not pid or not testnet.pid_is_ours(pid, token):
                continue
            cpus = CORES[subj[label]] if label in subj else OTHER_CORE
            err = relaystat.pin(pid, cpus)
            if err:
                self.notes.append(f"could not pin {label} to CPU {cpus}: {err}")

    def wait_ready(self):
        """`testnet.py wait` for the C tor relays, then a bounded wait per Fors slot."""
        t = min(self.args.wait_timeout, self.remaining() - 60)
        rc, out = self.testnet("wait", "--relays", f"{PATH_MIDDLE},{NICK[CTOR]},{PATH_EXIT}",
                               "--timeout", str(int(max(10, t))), timeout=t + 30)
        self.save_log("wait-ctor.log", out)
        if rc != 0:
            # `wait` also fails when any recorded process (e.g. a crashed Fors) is dead; the
            # loadgen probe below is the real test of the C tor relays.
            self.notes.append("`testnet.py wait` for the C tor relays failed ("
                              + tail_reason(out, 1) + "); relying on the loadgen probe")
        if not self.fors_slots:
            return
        for s in (FORS1, FORS2):
            if self.fors_state.get(s):
                continue
            t = min(self.args.fors_wait, self.remaining() - 60)
            if t < 5:
                self.fors_state[s] = "no time left to wait for it"
                continue
            log(f"waiting up to {t:.0f}s for {NICK[s]} to be Running in the consensus")
            rc, out = self.testnet("wait", "--relays", NICK[s], "--timeout", str(int(t)),
                                   timeout=t + 30)
            self.save_log(f"wait-{NICK[s]}.log", out)
            if rc != 0:
                # Not fatal by itself: the loadgen needs only the descriptor and the ORPort.
                self.notes.append(f"{NICK[s]} was not Running/Valid/Fast/Exit in the client's "
                                  f"consensus after {t:.0f}s: {tail_reason(out, 1)}")

    # ---- loadgen ---------------------------------------------------------
    def loadgen(self, name, path, extra, timeout_s, svg=False):
        """One fors-loadgen run pinned to core 0; returns (json or None, error text)."""
        a = self.args
        cmd = ["taskset", "-c", OTHER_CORE] + measure.loadgen_argv(
            a.loadgen, os.path.join(self.run_dir, "network.json"), path, extra, timeout_s)
        if svg and a.svg:
            cmd += ["--svg", os.path.join(os.path.abspath(a.svg), name)]
        errlog = os.path.join(self.run_dir, "bench", f"{name}.stderr.log")
        os.makedirs(os.path.dirname(errlog), exist_ok=True)
        self.save_log(f"bench/{name}.cmd", " ".join(cmd) + "\n")
        with open(errlog, "w") as ef:
            rc, out = self.run_child(cmd, timeout_s + LOADGEN_GRACE_S, stderr=ef)
        self.save_log(f"bench/{name}.json", out)
        obj = measure.last_json(out)
        if obj is not None:
            return obj, None
        try:
            with open(errlog) as ef:
                err = tail_reason(ef.read(), 2)
        except OSError:
            err = ""
        return None, (f"loadgen exit {rc}: {err}" if rc is not None else out) or "no output"

    def probe(self, subject):
        """Small verified download through middle1 -> subject, retried for a bounded time
        (a fresh C tor exit refuses BEGIN for a few seconds). Returns None or the reason."""
        pid, token = self.pid_of(subject)
        limit = time.monotonic() + min(self.args.probe_time, max(0, self.remaining() - 60))
        last = "no attempt (time budget)"
        for attempt in range(1, 30):
            if not pid or not testnet.pid_is_ours(pid, token):
                return f"relay process is not running ({tail_file(self.relay_log(subject))})"
            if time.monotonic() >= limit:
                break
            lg, err = self.loadgen(f"probe-{subject}-{attempt}", [PATH_MIDDLE, NICK[subject]],
                                   ["--circuits", "1", "--download", "256K", "--upload", "256K"],
                                   20)
            if lg is not None and lg.get("ok"):
                return None
            last = err or report.compute_row(subject, "probe", lg, 0, None, 0)["reason"]
            time.sleep(3)
        return f"probe download failed: {last}"

    def relay_log(self, subject):
        return os.path.join(self.run_dir, NICK[subject], "stdout.log")

    def workloads(self):
        a = self.args
        c = a.circuits
        per = max(1, int(a.bulk_mb * 1e6 / c / 1024))  # KiB per stream
        half = max(1, per // 2)
        every = [
            ("exit-download", lambda s: [PATH_MIDDLE, NICK[s]],
             ["--circuits", str(c), "--download", f"{per}K"]),
            ("exit-upload", lambda s: [PATH_MIDDLE, NICK[s]],
             ["--circuits", str(c), "--upload", f"{per}K"]),
            ("middle-forward", lambda s: [NICK[s], PATH_EXIT],
             ["--circuits", str(c), "--download", f"{half}K", "--upload", f"{half}K"]),
            ("create", lambda s: [NICK[s]],
             ["--create-rate", str(a.create_rate), "--duration", f"{a.create_seconds}s"]),
            ("flood-bulk", lambda s: [NICK[s], PATH_EXIT],
             ["--circuits", str(c), "--download", f"{half}K", "--flood",
              "--create-rate", str(a.flood_rate)]),
        ]
        cgo = ["--relay-crypto", "cgo"]
        every += [(f"{wl}-cgo", path_of, extra + cgo) for wl, path_of, extra in every
                  if f"{wl}-cgo" in report.CGO_SUBJECT_HOP]
        return [w for w in every if w[0] in selected_workloads(a)]

    def measure(self, subject):
        pid, token = self.pid_of(subject)
        for wl, path_of, extra in self.workloads():
            if subject != CTOR and self.fors_state.get(subject):
                self.rows.append(report.unusable_row(subject, wl, self.fors_state[subject]))
                continue
            left = self.remaining() - TEARDOWN_RESERVE_S
            if left < LOADGEN_GRACE_S + 20:
                self.rows.append(report.unusable_row(subject, wl, "time budget exhausted",
                                                     status="skipped"))
                continue
            if not pid or not testnet.pid_is_ours(pid, token):
                reason = f"relay process exited ({tail_file(self.relay_log(subject))})"
                self.rows.append(report.unusable_row(subject, wl, reason))
                if subject != CTOR:
                    self.fors_state[subject] = reason
                continue
            # Threads started since the last pinning (workers, shards) must be pinned too.
            err = relaystat.pin(pid, CORES[subject])
            if err:
                self.notes.append(f"could not pin {NICK[subject]}: {err}")
            cpus = sorted(relaystat.thread_cpus(pid))
            rss_reset = relaystat.reset_peak_rss(pid)
            try:
                rss0 = relaystat.peak_rss_kib(pid, "VmRSS")
            except relaystat.ProcError:
                rss0 = None
            timeout_s = min(self.args.workload_timeout, left - LOADGEN_GRACE_S)
            log(f"{self.labels[subject]}: {wl} (path {','.join(path_of(subject))}, threads on "
                f"CPU {'/'.join(cpus)}, timeout {timeout_s:.0f}s)")
            cgo0 = self.cgo_circuits(subject) if wl in report.CGO_SUBJECT_HOP else None
            reads0 = self.read_counters(subject)
            run = lambda: self.loadgen(f"{subject}-{wl}", path_of(subject), extra,  # noqa: E731
                                       timeout_s, svg=True)
            if self.args.perf:
                run = self.under_perf(pid, f"{subject}-{wl}", run)
            try:
                lg, err, cpu, wall, rss = measure.measured_run(pid, run)
            except relaystat.ProcError as e:
                lg, err = None, f"relay process exited during the run ({e}; " \
                                f"{tail_file(self.relay_log(subject))})"
            if lg is None:
                row = report.unusable_row(subject, wl, err,
                                          status="failed" if subject == CTOR else "not usable")
            else:
                row = report.compute_row(subject, wl, lg, cpu, rss, wall, rss0)
                row["rss_reset"] = rss_reset
                row["thread_cpus"] = cpus
                if subject != CTOR and row["status"] != "ok":
                    row["status"] = "not usable"
                if subject in self.allocator_seen:
                    row["allocator"] = self.allocator_seen[subject]
                if wl in report.CGO_SUBJECT_HOP:
                    self.check_cgo(subject, wl, lg, cgo0, row)
                reads1 = self.read_counters(subject)
                if reads0 is not None and reads1 is not None:
                    row["tls_reads"] = {k.removeprefix("fors_relay_").removeprefix("fors_"):
                                        reads1[k] - reads0[k] for k in READ_METRICS}
            self.rows.append(row)
            log("  -> " + summarize(row))

    def under_perf(self, pid, name, run):
        """`run` wrapped in `perf record -g -p PID` for its length (--perf): the profile of the
        subject during that workload, in DIR/NAME.perf.data. perf's sampling costs the subject
        CPU too (the sample interrupts land in its time), so CPU figures of a --perf run are
        not for comparison with a run without it."""
        out = os.path.join(os.path.abspath(self.args.perf), f"{name}.perf.data")
        os.makedirs(os.path.dirname(out), exist_ok=True)

        def wrapped():
            cmd = [self.args.perf_bin, "record", "--call-graph", self.args.perf_call_graph, "-F",
                   str(self.args.perf_freq), "-p", str(pid), "-o", out]
            with open(out + ".log", "w") as lf:
                perf = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            time.sleep(0.5)  # perf attaches to every thread before the load starts
            try:
                return run()
            finally:
                perf.send_signal(signal.SIGINT)
                try:
                    perf.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    perf.kill()
                    perf.wait(timeout=10)
                if perf.returncode not in (0, -signal.SIGINT):
                    self.notes.append(f"perf record for {name} exited {perf.returncode} "
                                      f"(see {out}.log)")
        return wrapped

    def metrics_port(self, subject):
        """A Fors subject's MetricsPort, or None (C tor, or no port)."""
        if subject == CTOR or self.args.ctor_in_fors_slots:
            return None
        return next((r.get("metrics_port") for r in self.net["relays"]
                     if r["nick"] == NICK[subject]), None)

    def read_counters(self, subject):
        """A Fors subject's READ_METRICS, summed over shards (MetricsPort), or None."""
        port = self.metrics_port(subject)
        return testnet.scrape_sums(port, READ_METRICS) if port else None

    def cgo_circuits(self, subject):
        """A Fors subject's CGO circuit counter (MetricsPort), or None (C tor, no port)."""
        port = self.metrics_port(subject)
        return testnet.scrape_metric(port, CGO_METRIC) if port else None

    def check_cgo(self, subject, wl, lg, cgo0, row):
        """Fails a CGO workload's row unless the subject really ran CGO on every circuit:
        the loadgen's record of each hop's negotiated crypto, and for Fors its own counter."""
        circuits = self.args.circuits
        problem = report.cgo_negotiation_problem(lg, wl, circuits)
        row["hop_crypto"] = lg.get("hop_crypto")
        if problem is None and subject != CTOR and not self.args.ctor_in_fors_slots:
            cgo1 = self.cgo_circuits(subject)
            if cgo0 is None or cgo1 is None:
                problem = f"could not read {CGO_METRIC} from {NICK[subject]}'s MetricsPort"
            elif cgo1 - cgo0 < circuits:
                problem = (f"{CGO_METRIC} grew by {cgo1 - cgo0}, fewer than the {circuits} "
                           "circuits")
            else:
                row["cgo_metric_delta"] = cgo1 - cgo0
        if problem:
            row["status"] = "failed" if subject == CTOR else "not usable"
            row["reason"] = "CGO not negotiated: " + problem

    # ---- output ----------------------------------------------------------
    def save_log(self, name, text):
        path = os.path.join(self.run_dir, name)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text or "")
        except OSError:
            pass


def parse_env(items):
    """`KEY=VALUE` strings (--fors-env) as a dict; ValueError names a malformed one."""
    env = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--fors-env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def shell_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def wrapper_script(binary, env):
    lines = ["#!/bin/sh", "# bench-compare --fors-env: the Fors binary with extra environment."]
    lines += [f"export {k}={shell_quote(v)}" for k, v in env.items()]
    lines.append(f'exec {shell_quote(binary)} "$@"')
    return "\n".join(lines) + "\n"


def selected_workloads(args):
    """The workload keys --workloads names (all by default); ValueError names an unknown one."""
    keys = [k for k, _ in report.WORKLOADS]
    if not args.workloads:
        return keys
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in keys]
    if unknown or not chosen:
        raise ValueError(f"--workloads {args.workloads!r}: expected some of {','.join(keys)}")
    return chosen


def tail_reason(text, n=3):
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"


def up_failure_reason(out):
    """The `error:` line of a failed `testnet.py up` and the first lines it quotes from the
    dead process's log (e.g. a usage message), in one line."""
    lines = [l.strip() for l in (out or "").splitlines() if l.strip()]
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            quoted = [l for l in lines[i + 1:i + 6] if not l.startswith("---")][:2]
            return "; ".join([line[len("error:"):].strip()] + quoted)
    return tail_reason(out)


def tail_file(path, n=2):
    try:
        with open(path, errors="replace") as f:
            return tail_reason(f.read()[-4000:], n)
    except OSError:
        return "no log"


def summarize(row):
    if row["status"] not in ("ok",):
        return f"{row['status']}: {row.get('reason')}"
    return (f"{report.cost_cell(row)} (user / sys {report.split_cell(row)}), "
            f"{row.get('mb_per_s') or 0:.1f} MB/s, "
            f"{row.get('cells_per_s') or 0:.0f} cells/s, {row.get('circuits_per_s') or 0:.0f} circ/s, "
            f"relay {row.get('relay_cpu_s') or 0:.2f} CPU-s, peak RSS "
            f"{row.get('peak_rss_mib') or 0:.1f} MiB"
            + ("; TLS records " + ", ".join(f"{k} {v}" for k, v in row["tls_reads"].items())
               if row.get("tls_reads") else ""))


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                              cwd=REPO).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# The cpuinfo flags that decide which crypto and copy kernels run (kept in results.json).
CPU_FLAGS = ("aes", "pclmulqdq", "avx2", "avx512f", "avx512bw", "vaes", "vpclmulqdq", "sha_ni")


def environment(args):
    model, flags, fam, num = "", [], "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("cpu family") and not fam:
                    fam = line.split(":", 1)[1].strip()
                elif re.match(r"model\s*:", line) and not num:
                    num = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    have = set(line.split(":", 1)[1].split())
                    flags = [fl for fl in CPU_FLAGS if fl in have]
    except OSError:
        pass
    commit = sh(["git", "rev-parse", "--short", "HEAD"])
    # RESULTS.md is what this script writes, so its own edits do not count as dirty.
    if sh(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
           ":(exclude)bench/RESULTS.md"]):
        commit += " (with uncommitted changes)"
    tor_v = sh([args.tor, "--version"]).splitlines()
    return {
        # The model name alone can be generic ("Intel(R) Xeon(R) Processor" in a VM).
        "cpu": f"{model}" + (f" (family {fam} model {num})" if fam and num else "")
               + f", {os.cpu_count()} CPUs",
        "kernel": platform.release(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "tor": tor_v[0].rstrip(".") if tor_v else "unknown",
        "commit": commit,
        "loadavg": os.getloadavg(),
        "cpu_flags": flags,
        "fors_env": list(args.fors_env or []),
    }


def render_markdown(b, env, argv, elapsed):
    a = b.args
    mode = "validation: C tor in the Fors slots" if a.ctor_in_fors_slots else \
        f"Fors binary `{os.path.relpath(os.path.abspath(a.fors_bin), REPO)}`"
    if a.fors_env and not a.ctor_in_fors_slots:
        mode += " with " + ", ".join(f"`{e}`" for e in a.fors_env)
    subjects = [CTOR, FORS1, FORS2]
    lines = [f"### Run ({mode}), {env['date']}", "",
             "```", " ".join(["scripts/bench-compare.sh"] + list(argv)), "```", "",
             f"* CPU: {env['cpu']}; kernel {env['kernel']}; {env['tor']}; Fors commit "
             f"`{env['commit']}`.",
             f"* CPU flags that pick the crypto and copy kernels: "
             f"{', '.join(env.get('cpu_flags') or []) or 'none of ' + ', '.join(CPU_FLAGS)}.",
             f"* Load average (1 min) {env['loadavg'][0]:.2f} at the start and "
             f"{os.getloadavg()[0]:.2f} at the end (the machine is shared); the run took "
             f"{elapsed:.0f} s.",
             f"* Bulk workloads: {a.circuits} circuits, about {a.bulk_mb:.0f} MB verified per "
             f"workload (middle forward: half down, half up; flood + bulk: half, with a "
             f"{a.flood_rate}/s CREATE2 flood on the subject). Circuit creation: one-hop ntor "
             f"CREATE2 at up to {a.create_rate}/s for {a.create_seconds} s (≤ 256 in flight). "
             f"Paths: exit = `{PATH_MIDDLE}` → subject, middle = subject → `{PATH_EXIT}`.",
             "* CGO rows: the same bulk workloads with `fors-loadgen --relay-crypto cgo`: ntor-v3 "
             "asking every hop that advertises CGO (Relay=6) for CGO and congestion control, so "
             "both hops of each path run CGO (relay cell format v1, 16-byte SENDME tags; with CC "
             "a circuit SENDME every `cc_sendme_inc` cells and no stream SENDMEs). A row counts "
             "only if the loadgen recorded CGO at the subject's hop on every circuit and, for "
             f"Fors, its `{CGO_METRIC}` grew by at least the circuit count. The tor1 rows ask "
             "for no CC (fixed windows).",
             f"* Pinning: C tor (`{NICK[CTOR]}`) and 1-shard Fors (`{NICK[FORS1]}`) on CPU 1; "
             f"2-shard Fors (`{NICK[FORS2]}`, `NumCPUs 2`) on CPUs 0,1; load generator and the "
             "rest of the network on CPU 0, so in the 2-shard rows the second shard competes "
             "with the load generator.",
             "* `user / sys` splits the CPU cost into the subject's utime and stime (same unit "
             "as CPU cost; the share is sys ÷ total). On loopback stime is the kernel's TCP work "
             "for the relay's sockets, with the loopback receive softirq of what it sends; the "
             "kernel splits runtime by sampling at its tick, so the split carries a few % of "
             "sampling error.",
             "* `relay cores` is the subject's CPU-seconds over the workload's elapsed time. "
             "Below 1.0 the subject was not the bottleneck (core 0, shared by the load generator "
             "and the C tor path relays, was), so MB/s, cells/s and circuits/s then describe the "
             "test bed and the CPU cost column is the figure to compare.",
             "", report.render_table(b.rows, {s: b.labels[s] for s in subjects}), "",
             "Ratios (Fors ÷ C tor; CPU cost, latency and RSS: lower is better for Fors; "
             "MB/s, cells/s, circuits/s: higher is better):", "",
             report.render_ratios(b.rows, CTOR, [FORS1, FORS2], b.labels)]
    floor = report.render_floor(b.rows, CTOR, [FORS1, FORS2], b.labels)
    if floor and not a.ctor_in_fors_slots:
        lines += ["", "The kernel floor (issue #13's goals: exit 4×, middle 5× less CPU per GB "
                  "than C tor): the budget is C tor's total ÷ the goal; Fors's system time "
                  "alone must fit in it, and what is left is the user time Fors may spend. "
                  "\"best ratio at user 0\" is C tor's total ÷ Fors's system time: the ratio "
                  "Fors would reach with no user time at all.", "", floor]
    if a.ctor_in_fors_slots:
        lines += ["", "Both sides of every ratio are C tor 0.4.9 here, so each ratio's distance "
                  "from 1.00 is this run's measurement noise: CPU cost is the stable figure, "
                  "throughput and latency move with whatever else runs on core 0."]
    if b.notes:
        lines += ["", "Notes:", ""] + [f"* {report._short(n, 300)}" for n in b.notes]
    if a.svg:
        lines += ["", f"Plots (`fors-loadgen --svg`): `{os.path.relpath(os.path.abspath(a.svg), REPO)}"
                  "/<subject>-<workload>/{throughput,latency-cdf}.svg`."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(REPO, "run", "bench-compare"),
                    help="run directory for the network (default run/bench-compare)")
    ap.add_argument("--base-port", type=int, default=18300)
    ap.add_argument("--fors-bin", default=os.path.join(REPO, "target", "release", "fors"))
    ap.add_argument("--fors-env", action="append", metavar="KEY=VALUE",
                    help="extra environment for the Fors slots only (repeatable), e.g. "
                         "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2")
    ap.add_argument("--fors-label", help="name of the Fors rows (default \"Fors\"), e.g. "
                                         "\"Fors (mimalloc)\"")
    ap.add_argument("--loadgen", default=os.path.join(REPO, "target", "release", "fors-loadgen"))
    ap.add_argument("--tor", default=os.environ.get("TOR_BIN", "/usr/sbin/tor"))
    ap.add_argument("--ctor-in-fors-slots", action="store_true",
                    help="run C tor in the Fors slots (validates the pipeline; ratios ~1)")
    ap.add_argument("--no-fors", action="store_true", help="measure the C tor subject only")
    ap.add_argument("--bulk-mb", type=float, default=200.0, help="MB per bulk workload")
    ap.add_argument("--circuits", type=int, default=4)
    ap.add_argument("--create-rate", type=int, default=10000,
                    help="CREATE2 per second asked for (default 10000: more than either side can do)")
    ap.add_argument("--create-seconds", type=int, default=8)
    ap.add_argument("--flood-rate", type=int, default=300)
    ap.add_argument("--workloads", help="comma-separated subset of "
                    + ",".join(k for k, _ in report.WORKLOADS) + " (default: all)")
    ap.add_argument("--workload-timeout", type=float, default=90.0)
    ap.add_argument("--wait-timeout", type=float, default=150.0)
    ap.add_argument("--fors-wait", type=float, default=60.0,
                    help="seconds to wait for a Fors slot to be Running (default 60)")
    ap.add_argument("--probe-time", type=float, default=45.0)
    ap.add_argument("--budget", type=float, default=780.0,
                    help="seconds for everything but the final teardown (default 780, so even a worst case ends within 15 minutes)")
    ap.add_argument("--results", default=os.path.join(REPO, "bench", "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print the Markdown only")
    ap.add_argument("--svg", help="directory for fors-loadgen --svg plots")
    ap.add_argument("--perf", metavar="DIR",
                    help="record each workload of each subject with `perf record -g` into "
                         "DIR/SUBJECT-WORKLOAD.perf.data (perf's own cost lands in the CPU "
                         "figures: profile in a run apart from the one you compare); summarize "
                         "with scripts/bench/perf_split.py")
    ap.add_argument("--perf-bin", default="/usr/bin/perf")
    ap.add_argument("--perf-freq", type=int, default=2000, help="samples per second (default 2000)")
    ap.add_argument("--perf-call-graph", default="fp", choices=["fp", "dwarf"],
                    help="how perf unwinds (default fp, as `perf record -g`; the release build "
                         "has no frame pointers, so the callers of a hot user function need dwarf)")
    ap.add_argument("--strict", action="store_true",
                    help="exit non-zero if any row (Fors included) is not ok")
    args = ap.parse_args(argv)
    try:
        parse_env(args.fors_env)
        selected_workloads(args)
    except ValueError as e:
        ap.error(str(e))
    for tool in (args.loadgen, args.tor) + ((args.perf_bin,) if args.perf else ()):
        if not os.access(tool, os.X_OK):
            ap.error(f"{tool} is not executable (build: cargo build --release -p fors-bench -p fors)")

    b = Bench(args)
    if args.perf:
        b.notes.append(f"every workload ran under `perf record --call-graph {args.perf_call_graph} "
                       f"-F {args.perf_freq}` (--perf): "
                       "its sampling cost is in these CPU figures; compare runs without it")
    if not args.ctor_in_fors_slots and not args.no_fors and not os.access(args.fors_bin, os.X_OK):
        b.fors_slots = False
        for s in (FORS1, FORS2):
            b.fors_state[s] = f"{args.fors_bin} is not executable"
    if args.no_fors:
        for s in (FORS1, FORS2):
            b.fors_state[s] = "not run (--no-fors)"
    env = environment(args)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    fatal = None
    try:
        b.write_wrapper()
        b.up()
        b.pin_all()
        b.wait_ready()
        b.pin_all()
        b.check_allocators()
        err = b.probe(CTOR)
        if err:
            raise RuntimeError(f"the C tor subject {NICK[CTOR]} is not usable: {err}")
        for s in (FORS1, FORS2):
            if not b.fors_state.get(s):
                b.fors_state[s] = b.probe(s)
                if b.fors_state[s]:
                    log(f"{NICK[s]} not usable: {b.fors_state[s]}")
        for s in (CTOR, FORS1, FORS2):
            b.measure(s)
    except (Interrupted, KeyboardInterrupt) as e:
        fatal = f"interrupted ({e})"
    except Exception as e:  # report, stop the network, still write what we have
        fatal = f"{type(e).__name__}: {e}"
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        b.stop_child()
        teardown(b)
        b.remove_wrapper()
    elapsed = time.monotonic() - b.t0
    if fatal:
        log(f"error: {fatal}")
        b.notes.insert(0, f"run aborted: {fatal}")
    ran = {r["subject"] + r["workload"] for r in b.rows}
    for s in (CTOR, FORS1, FORS2):
        for wl in selected_workloads(args):
            if s + wl not in ran:
                b.rows.append(report.unusable_row(
                    s, wl, b.fors_state.get(s) or fatal or "not run", status="not run"
                    if s == CTOR or not b.fors_state.get(s) else "not usable"))
    md = render_markdown(b, env, argv, elapsed)
    env["loadavg_end"] = os.getloadavg()
    env["elapsed_s"] = elapsed
    with open(os.path.join(b.run_dir, "results.json"), "w") as f:
        json.dump({"env": env, "rows": b.rows, "notes": b.notes}, f, indent=1, default=str)
    print(md)
    if not args.no_write:
        mode = "ctor-validation" if args.ctor_in_fors_slots else "fors"
        with open(args.results) as f:
            text = f.read()
        with open(args.results + ".tmp", "w") as f:
            f.write(report.splice_section(text, mode, md))
        os.replace(args.results + ".tmp", args.results)
        log(f"wrote the '{mode}' run into {args.results}")
    log(f"done in {elapsed:.0f}s")
    ctor_ok = all(r["status"] == "ok" for r in b.rows if r["subject"] == CTOR)
    all_ok = all(r["status"] == "ok" for r in b.rows)
    if fatal or not ctor_ok:
        return 1
    return 1 if args.strict and not all_ok else 0


def teardown(b):
    """`testnet.py down`, then a direct pid-based stop of anything still recorded alive."""
    if not os.path.exists(os.path.join(b.run_dir, "network.json")):
        return
    log("stopping the network")
    rc, out = b.testnet("down", timeout=90)
    if rc != 0:
        log("testnet down: " + tail_reason(out))
    try:
        net = testnet.load_network(b.run_dir)
        left = testnet.stop_pids(testnet.all_processes(net))
        if left:
            log(f"still running after down: {', '.join(left)}")
    except Exception as e:  # never let teardown hide the results
        log(f"checking the pids after down: {e}")


if __name__ == "__main__":
    sys.exit(main())
