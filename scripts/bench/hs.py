#!/usr/bin/env python3
"""Onion-service relay roles benchmark (issue #11): introductions/s and rendezvous splices/s
through one relay under test R, for Fors on 1 shard, Fors on 2 shards and a C tor relay, in
one private network and one run. Results in bench/RESULTS.md ("Onion-service roles").

    scripts/bench/hs.py --fors-bin target/release/fors --hs-bench target/release/fors-hs-bench \\
        [--run run/hsbench] [--base-port 16500] [--count 3000] [--duration 15] \\
        [--workers 16] [--services 2] [--splice-cells 8] [--rounds 1] [--json out.json]

The network (`scripts/testnet.py up`, loopback only, every torrc checked by its locality
check): 3 C tor authorities, C tor middle1 (the clients' first hop), C tor middle2 (the C tor
subject), C tor exit1, and Fors slots forsmiddle1 (`NumCPUs 1`) and forsmiddle2 (`NumCPUs 2`).
Workloads, each run by `fors-hs-bench` against each subject in A B B A order (Fors 1 shard,
Fors 2 shards, C tor, C tor, Fors 2 shards, Fors 1 shard) per round:

  extend  client circuit middle1 -> R (CREATE_FAST, then EXTEND2 ntor), destroyed: the
          circuit cost included in every introduction and join below
  intro   INTRODUCE1 on a fresh client circuit through middle1 -> INTRODUCE_ACK(SUCCESS) and
          INTRODUCE2 (same bytes) on a service's intro circuit (one-hop ntor to R,
          ESTABLISH_INTRO with a real ed25519 key, signature and KH MAC, set up before timing)
  rend    ESTABLISH_RENDEZVOUS on a client circuit through middle1, RENDEZVOUS1 on a one-hop
          ntor service circuit, RENDEZVOUS2; then --splice-cells DROP cells each way through
          an end-to-end hop R does not hold (payload checked at the far end)

CPU: R's utime+stime (all threads, /proc/PID/stat) over the timed part, measured by the tool
after every worker's setup. Pinning as scripts/bench-compare.py: C tor and 1-shard Fors on
core 1, 2-shard Fors on cores 0,1, everything else (the load generator and middle1 included)
on core 0 (`--no-pin` to skip). For Fors, `fors_relay_hs_cross_shard_total` and the HS
counters are read from its MetricsPort before and after each run. Every wait is bounded;
the network is always stopped by testnet.py's `down`.
"""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import relaystat  # noqa: E402
from benchutil import cpu_info, median, wait_until  # noqa: E402

_spec = importlib.util.spec_from_file_location("testnet", os.path.join(SCRIPTS, "testnet.py"))
testnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testnet)

FIRST_HOP = "middle1"
SUBJECTS = [  # (key, nick, shards, label)
    ("fors1", "forsmiddle1", 1, "Fors, 1 shard"),
    ("fors2", "forsmiddle2", 2, "Fors, 2 shards"),
    ("ctor", "middle2", 1, "C tor"),
]
CORES = {"fors1": "1", "fors2": "0,1", "ctor": "1"}
OTHER_CORE = "0"
WORKLOADS = ["extend", "intro", "rend"]
METRICS = ["fors_relay_hs_cross_shard_total", "fors_relay_hs_introduce1_total",
           "fors_relay_hs_rendezvous1_total", "fors_relay_hs_establish_intro_total",
           "fors_relay_hs_splice_overflow_total", "fors_relay_hs_splices_closed_total"]


def log(msg):
    print(f"[hs-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def scrape(port):
    """{series: value} of the HS metrics from a Fors MetricsPort on 127.0.0.1 ({} if down)."""
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m and m.group(1) in METRICS:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def delta(after, before):
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


class Bench:
    def __init__(self, args, run):
        self.args, self.run = args, run
        self.net = None
        self.notes = []

    def load_net(self):
        with open(os.path.join(self.run, "network.json")) as f:
            self.net = json.load(f)

    def relay(self, nick):
        return next(r for r in self.net["relays"] if r["nick"] == nick)

    def pin_all(self):
        subj = {nick: key for key, nick, _, _ in SUBJECTS}
        for label, pid, token in testnet.all_processes(self.net):
            if not pid or not testnet.pid_is_ours(pid, token):
                continue
            cpus = CORES[subj[label]] if label in subj else OTHER_CORE
            err = relaystat.pin(pid, cpus)
            if err:
                self.notes.append(f"could not pin {label} to CPU {cpus}: {err}")

    def tool(self, nick, workload, count, duration, pid=None):
        a = self.args
        argv = [a.hs_bench, "--network", os.path.join(self.run, "network.json"),
                "--relay", nick, "--first-hop", FIRST_HOP, "--workload", workload,
                "--workers", str(a.workers), "--services", str(a.services),
                "--count", str(count), "--duration", str(duration),
                "--splice-cells", str(a.splice_cells), "--timeout", "20",
                "--seed", str(a.seed)]
        if pid:
            argv += ["--relay-pid", str(pid)]
        if not a.no_pin:
            argv = ["taskset", "-c", OTHER_CORE] + argv
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 180)
        except subprocess.TimeoutExpired:
            return None, "fors-hs-bench did not finish"
        try:
            return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr
        except (ValueError, IndexError):
            return None, p.stderr


def summarize(runs):
    rows = []
    for w in WORKLOADS:
        row = {"workload": w}
        for key, _, shards, _ in SUBJECTS:
            rs = [r for r in runs if r["workload"] == w and r["subject"] == key and r.get("ok")]
            per_s = median([r["per_s"] for r in rs])
            row[key] = {
                "per_s": per_s,
                "per_s_per_shard": per_s / shards if per_s is not None else None,
                "cpu_s_per_1000": median([r.get("relay_cpu_s_per_1000") for r in rs]),
                "cpu_per_wall": median([r.get("relay_cpu_per_wall") for r in rs]),
                "splice_cells_per_s": median([r.get("splice_cells_per_s") for r in rs]),
                "latency_ms": median([r.get("mean_latency_ms") for r in rs]),
                "runs": len(rs),
            }
        c = row["ctor"]
        for key in ("fors1", "fors2"):
            f = row[key]
            row[key]["ratio_per_s"] = (f["per_s"] / c["per_s"]
                                       if f["per_s"] and c["per_s"] else None)
            row[key]["ratio_cpu_per_op"] = (f["cpu_s_per_1000"] / c["cpu_s_per_1000"]
                                            if f["cpu_s_per_1000"] and c["cpu_s_per_1000"]
                                            else None)
        rows.append(row)
    return rows


def render(results):
    def n(v, fmt):
        return "—" if v is None else format(v, fmt)
    lines = [f"CPU: {results['cpu']['model']} ({results['cpu']['cores']} cores; "
             f"{' '.join(results['cpu']['features'])})",
             "| workload | relay | ops/s | ops/s per shard | × C tor ops/s | R CPU-s/1000 ops "
             "| × C tor CPU/op | R CPU/wall | spliced cells/s | mean latency ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["summary"]:
        for key, _, _, label in SUBJECTS:
            s = r[key]
            lines.append(
                f"| {r['workload']} | {label} | {n(s['per_s'], '.0f')} "
                f"| {n(s['per_s_per_shard'], '.0f')} | {n(s.get('ratio_per_s'), '.2f')} "
                f"| {n(s['cpu_s_per_1000'], '.3f')} | {n(s.get('ratio_cpu_per_op'), '.2f')} "
                f"| {n(s['cpu_per_wall'], '.2f')} "
                f"| {n(s['splice_cells_per_s'] if r['workload'] == 'rend' else None, '.0f')} "
                f"| {n(s['latency_ms'], '.1f')} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fors-bin", required=True)
    ap.add_argument("--hs-bench", required=True, help="the fors-hs-bench binary")
    ap.add_argument("--tor", default=os.environ.get("TOR_BIN", testnet.TOR_BIN_DEFAULT))
    ap.add_argument("--run", default="run/hsbench")
    ap.add_argument("--base-port", type=int, default=16500)
    ap.add_argument("--count", type=int, default=3000, help="operations per run at most")
    ap.add_argument("--duration", type=int, default=15, help="seconds per run at most")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--services", type=int, default=2, help="intro circuits per worker")
    ap.add_argument("--splice-cells", type=int, default=8, help="DROP cells each way per join")
    ap.add_argument("--rounds", type=int, default=1, choices=range(1, 4))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--keep", action="store_true", help="leave the network running")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    log(f"seed {args.seed}")
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"--workloads: unknown {w!r}")
    run = os.path.abspath(args.run)
    tn = [sys.executable, os.path.join(SCRIPTS, "testnet.py"), "--dir", run]
    up = tn + ["up", "--base-port", str(args.base_port), "--middles", "2", "--exits", "1",
               "--no-server", "--fors", "middle", "--fors", "middle",
               "--fors-bin", args.fors_bin, "--tor", args.tor,
               "--slot-option", "forsmiddle1 NumCPUs 1",
               "--slot-option", "forsmiddle2 NumCPUs 2"]
    b = Bench(args, run)
    results = {"cpu": cpu_info(), "seed": args.seed, "args": vars(args), "runs": [],
               "notes": b.notes}
    failed = False
    try:
        log("starting the private network: " + " ".join(up[2:]))
        subprocess.run(up, check=True, timeout=600)
        b.load_net()
        nicks = ",".join([FIRST_HOP] + [nick for _, nick, _, _ in SUBJECTS])
        r = subprocess.run(tn + ["wait", "--relays", nicks, "--timeout", "300"],
                           capture_output=True, text=True, timeout=400)
        if r.returncode != 0:
            b.notes.append("`testnet.py wait` failed; relying on the probe: "
                           + (r.stdout + r.stderr).strip()[-300:])
        # The tool reads each relay's descriptor from the authorities and needs the relays
        # up: a small probe per subject, retried (bounded) until it works.
        for key, nick, _, _ in SUBJECTS:
            def probe():
                rep, err = b.tool(nick, "intro", 4, 5)
                return rep if rep and rep["errors"] == 0 and rep["ok"] == 4 else None
            wait_until(f"a working introduction through {nick}", probe, 300, step=10)
            log(f"{nick}: probe ok")
        if not args.no_pin:
            b.pin_all()
        pids = {key: b.relay(nick)["pid"] for key, nick, _, _ in SUBJECTS}
        mports = {key: b.relay(nick).get("metrics_port") for key, nick, _, _ in SUBJECTS
                  if key != "ctor"}
        idle0 = {k: relaystat.cpu_seconds(p) for k, p in pids.items()}
        time.sleep(5)
        results["idle_cpu_per_s"] = {k: (relaystat.cpu_seconds(p) - idle0[k]) / 5
                                     for k, p in pids.items()}
        log(f"idle CPU (cores): {results['idle_cpu_per_s']}")
        order = ["fors1", "fors2", "ctor", "ctor", "fors2", "fors1"] * args.rounds
        for w in workloads:
            for key in order:
                nick = next(n for k, n, _, _ in SUBJECTS if k == key)
                if not args.no_pin:
                    b.pin_all()  # threads started since (C tor cpuworkers, shards)
                load = os.getloadavg()
                m0 = scrape(mports.get(key))
                rep, err = b.tool(nick, w, args.count, args.duration, pids[key])
                m1 = scrape(mports.get(key))
                row = {"workload": w, "subject": key, "relay": nick, "load_before": load}
                if rep is None:
                    row["error"] = err[-500:]
                    failed = True
                    log(f"{w:6} {nick:12}: FAILED {err[-300:]}")
                else:
                    row.update(rep)
                    row["metrics_delta"] = delta(m1, m0)
                    if rep["errors"]:
                        failed = True
                    cross = {k: v for k, v in row["metrics_delta"].items()
                             if k.startswith("fors_relay_hs_cross_shard_total")}
                    log(f"{w:6} {nick:12}: {rep['ok']:5} ok, {rep['per_s']:7.1f}/s, "
                        f"R CPU {rep['relay_cpu_s'] or 0:6.2f} s "
                        f"({rep['relay_cpu_s_per_1000'] or 0:.3f} s/1000, "
                        f"{rep['relay_cpu_per_wall'] or 0:.2f} of a core), "
                        f"errors {rep['errors']} {rep['error_kinds'] or ''} "
                        f"load {load[0]:.1f} {cross if cross else ''}")
                results["runs"].append(row)
        results["summary"] = summarize(results["runs"])
        results["failed"] = failed
        print(render(results), flush=True)
        for note in b.notes:
            log("note: " + note)
        return 1 if failed else 0
    finally:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=list)
        if not args.keep:
            subprocess.run(tn + ["down"], timeout=180)


if __name__ == "__main__":
    sys.exit(main())
