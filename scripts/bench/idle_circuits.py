#!/usr/bin/env python3
"""Memory of idle circuits and idle shards, Fors against C tor in one run (issue #13).

On a private loopback network (scripts/testnet.py: 3 authorities, C tor middles and exit, two
Fors middle slots with NumCPUs 1 and 2), it reads each subject's memory from /proc (VmRSS of
/proc/PID/status, Pss of /proc/PID/smaps_rollup):

  * idle, after the network settled: C tor, Fors with 1 shard, Fors with 2 shards;
  * while `fors-loadgen --idle-circuits STAGES` holds that many idle one-hop circuits on the
    subject (C tor, then Fors with 1 shard; `--two-shard-circuits` adds the 2-shard Fors),
    the last sample of each hold; and 10 s after the load generator closed its link.

RSS per idle circuit is the least-squares slope of RSS over open circuits (the idle point and
every stage).  Refused, failed and killed circuits are read from the load generator's lines
and reported, never dropped.  Every step is bounded in time; the network is torn down at the
end (also on error or Ctrl-C).  Only loopback is used.

Example (release builds): scripts/bench/idle_circuits.py --stages 1000,10000,100000
"""

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TESTNET = os.path.join(REPO, "scripts", "testnet.py")
sys.path.insert(0, HERE)
import benchutil  # noqa: E402

CTOR, FORS1, FORS2 = "middle2", "forsmiddle1", "forsmiddle2"
LABEL = {CTOR: "C tor 0.4.9", FORS1: "Fors, 1 shard", FORS2: "Fors, 2 shards"}


def log(msg):
    print(f"[idle_circuits] {msg}", file=sys.stderr, flush=True)


def read_kib(path, key):
    """`Key:  N kB` from a /proc file, in KiB (None if absent or unreadable)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    parts = line.split()
                    if len(parts) >= 2 and parts[1].isdigit():
                        return int(parts[1])
    except OSError:
        return None
    return None


def memory(pid):
    """{'rss_kib', 'pss_kib'} of a process (values None if it is gone)."""
    return {"rss_kib": read_kib(f"/proc/{pid}/status", "VmRSS"),
            "pss_kib": read_kib(f"/proc/{pid}/smaps_rollup", "Pss")}


def slope(points):
    """Least-squares slope of y over x for [(x, y), ...]; None with fewer than two distinct x."""
    pts = [(x, y) for x, y in points if x is not None and y is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def parse_line(line):
    """The load generator's `{"idle_stage": ...}` / `{"idle_hold_end": ...}` lines (and its
    final summary, any other JSON object): (key, value) or None for other text."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    for key in ("idle_stage", "idle_hold_end"):
        if key in obj:
            return key, obj[key]
    return "summary", obj


class Run:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.abspath(args.dir)
        self.deadline = time.monotonic() + args.budget
        self.net = None
        self.notes = []

    def left(self):
        return self.deadline - time.monotonic()

    def testnet(self, *argv, timeout):
        """Runs testnet.py bounded by `timeout`; (rc, output)."""
        cmd = [sys.executable, TESTNET, "--dir", self.dir, *argv]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5, timeout),
                               cwd=REPO, stdin=subprocess.DEVNULL)
            return p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f}s"

    def up(self):
        a = self.args
        argv = ["up", "--base-port", str(a.base_port), "--middles", "2", "--exits", "1",
                "--entry", "middle1", "--fors", "middle", "--fors", "middle",
                "--fors-bin", a.fors_bin,
                "--slot-option", f"{FORS1} NumCPUs 1", "--slot-option", f"{FORS2} NumCPUs 2"]
        opts = list(a.fors_option or [])
        if a.fors_max_circuits:
            opts.append(f"HardwareProfile {self.profile(a.fors_max_circuits)}")
        for opt in opts:
            argv += ["--slot-option", f"{FORS1} {opt}", "--slot-option", f"{FORS2} {opt}"]
        log("bringing the network up")
        rc, out = self.testnet(*argv, timeout=min(240, self.left()))
        if rc != 0:
            raise SystemExit("testnet up failed:\n" + out[-2000:])
        with open(os.path.join(self.dir, "network.json")) as f:
            self.net = json.load(f)
        rc, out = self.testnet("wait", "--relays", f"{CTOR},{FORS1},{FORS2}", "--timeout",
                               str(int(min(a.wait, self.left() - 60))),
                               timeout=min(a.wait, self.left() - 60) + 30)
        if rc != 0:
            last = (out.strip().splitlines() or ["no output"])[-1]
            self.notes.append(f"`testnet.py wait` did not see every subject Running: {last}")

    def profile(self, max_circuits):
        """hw-profiles/generic.toml with `max_circuits_per_shard` raised, written next to the
        run directory (`up` recreates that): the generic profile refuses circuits past 65,536
        per shard, and every circuit of one channel lives on that channel's shard."""
        with open(os.path.join(REPO, "hw-profiles", "generic.toml")) as f:
            text = f.read()
        lines = [f"max_circuits_per_shard = {max_circuits}"
                 if line.startswith("max_circuits_per_shard") else line
                 for line in text.splitlines()]
        path = self.dir.rstrip("/") + "-profile.toml"
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def pid(self, nick):
        for r in self.net["relays"]:
            if r["nick"] == nick:
                return r.get("pid")
        raise SystemExit(f"no relay {nick} in network.json")

    def idle(self):
        """Idle memory of every subject after `--idle-settle` seconds."""
        time.sleep(max(0, min(self.args.idle_settle, self.left() - 60)))
        return {s: memory(self.pid(s)) for s in (CTOR, FORS1, FORS2)}

    def hold(self, subject):
        """One load-generator run against `subject`: the memory at each stage's hold."""
        a = self.args
        pid = self.pid(subject)
        cmd = [a.loadgen, "--network", os.path.join(self.dir, "network.json"),
               "--path", subject, "--idle-circuits", a.stages, "--idle-rate", str(a.rate),
               "--settle", f"{a.settle}s", "--json"]
        log(f"{subject}: {' '.join(cmd)}")
        limit = time.monotonic() + max(10, self.left() - 30)
        errlog = open(os.path.join(self.dir, f"idle-{subject}.stderr.log"), "w")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
        stages, summary, current, last = [], None, None, None
        lines = queue.Queue()

        def reader():
            for line in p.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        eof = False
        try:
            while time.monotonic() < limit and not eof:
                try:
                    # Sample about once a second while a stage is held.
                    line = lines.get(timeout=1.0 if current is not None else 0.2)
                except queue.Empty:
                    line = ""
                if line is None:
                    eof = True
                    line = ""
                got = parse_line(line)
                if got:
                    key, val = got
                    if key == "idle_stage":
                        current = dict(val)
                        log(f"{subject}: stage {val['stage']}: open {val['open']}, refused "
                            f"{val['refused']}, failed {val['failed']}, killed {val['killed']}")
                    elif key == "idle_hold_end" and current is not None:
                        current.update(hold_end=val, mem=last)
                        stages.append(current)
                        current = None
                    elif key == "summary":
                        summary = val
                if current is not None:
                    last = memory(pid)  # the last sample before the hold ends is kept
        finally:
            if eof:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            if p.poll() is None:
                self.notes.append(f"{subject}: load generator stopped at the time budget")
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
            errlog.close()
        time.sleep(min(10, max(0, self.left() - 30)))
        after = memory(pid)
        # A second reading later on: Fors gives table chunks and buffer capacity back from
        # its once-a-second housekeeping, a buffer only after 10 s oversized (issue #15).
        late = None
        if self.args.after_close > 10:
            time.sleep(min(self.args.after_close - 10, max(0, self.left() - 30)))
            late = memory(pid)
        return {"stages": stages, "summary": summary, "after_release": after,
                "after_release_late": late, "loadgen_rc": p.returncode}

    def down(self):
        if not os.path.exists(os.path.join(self.dir, "network.json")):
            return
        rc, out = self.testnet("down", timeout=90)
        if rc != 0:
            log("testnet down: " + out.strip()[-300:])


def per_circuit(idle_mem, held):
    """Bytes of RSS per idle circuit: the least-squares slope over the stages (open circuits,
    RSS at the end of the hold), which leaves out one-time costs of the first circuits
    (first chunks, allocator arenas); with a single stage, over the idle point and it."""
    pts = [(s["hold_end"]["open"], (s.get("mem") or {}).get("rss_kib")) for s in held["stages"]]
    if len(pts) < 2:
        pts = [(0, idle_mem["rss_kib"])] + pts
    k = slope(pts)
    return None if k is None else k * 1024


def overall_per_circuit(idle_mem, held):
    """(RSS at the last stage - idle RSS) / open circuits there, in bytes."""
    if not held["stages"]:
        return None
    last = held["stages"][-1]
    rss, n = (last.get("mem") or {}).get("rss_kib"), last["hold_end"]["open"]
    if rss is None or idle_mem["rss_kib"] is None or not n:
        return None
    return (rss - idle_mem["rss_kib"]) * 1024 / n


def table(result):
    """Markdown rows: subject, idle RSS/PSS, RSS at each stage, slope, refusals."""
    stages = result["stages"]
    head = ["Subject", "idle RSS (PSS), MiB"] + [f"RSS at {n:,} circuits, MiB" for n in stages]
    head += ["after close, MiB", "RSS per idle circuit (slope over stages)",
             "(last - idle) / circuits", "refused / failed / killed"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mib = lambda k: "—" if k is None else f"{k / 1024:.1f}"  # noqa: E731
    for s in (CTOR, FORS1, FORS2):
        idle = result["idle"][s]
        cells = [LABEL[s], f"{mib(idle['rss_kib'])} ({mib(idle['pss_kib'])})"]
        held = result["held"].get(s)
        by_stage = {x["stage"]: x for x in (held or {}).get("stages", [])}
        for n in stages:
            x = by_stage.get(n)
            if x is None:
                cells.append("not run" if held is None else "not reached")
            else:
                open_n = x["hold_end"]["open"]
                note = "" if open_n == n else f" ({open_n:,} open)"
                cells.append(mib((x.get("mem") or {}).get("rss_kib")) + note)
        if held is None:
            cells += ["—", "—", "—", "—"]
        else:
            cells.append(mib(held["after_release"]["rss_kib"]))
            b = per_circuit(idle, held)
            cells.append("—" if b is None else f"{b / 1024:.2f} KiB")
            o = overall_per_circuit(idle, held)
            cells.append("—" if o is None else f"{o / 1024:.2f} KiB")
            last = (held["stages"] or [{}])[-1].get("hold_end") or {}
            cells.append(f"{last.get('refused', '—')} / {last.get('failed', '—')} / "
                         f"{last.get('killed', '—')}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def self_check():
    """Checks the pure helpers (no network); exits non-zero on a failure."""
    assert abs(slope([(0, 100), (1000, 104), (10000, 140)]) - 0.004) < 1e-9
    assert slope([(5, 1), (5, 2)]) is None
    assert parse_line('{"idle_stage": {"stage": 10, "open": 9}}') == \
        ("idle_stage", {"stage": 10, "open": 9})
    assert parse_line('{"ok": true}') == ("summary", {"ok": True})
    assert parse_line("[  1.0s] progress") is None
    assert memory(os.getpid())["rss_kib"] > 0
    print("self-check ok")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fors-bin", default=os.path.join(REPO, "target/release/fors"))
    ap.add_argument("--loadgen", default=os.path.join(REPO, "target/release/fors-loadgen"))
    ap.add_argument("--dir", default="./run/idle-circuits", help="testnet run directory")
    ap.add_argument("--base-port", type=int, default=19700)
    ap.add_argument("--stages", default="1000,10000,100000",
                    help="cumulative idle-circuit counts (fors-loadgen --idle-circuits)")
    ap.add_argument("--rate", type=int, default=500, help="circuits created per second")
    ap.add_argument("--settle", type=int, default=15, help="seconds held at each stage")
    ap.add_argument("--idle-settle", type=int, default=30,
                    help="seconds after the subjects are Running before the idle reading")
    ap.add_argument("--wait", type=int, default=180, help="bound on `testnet.py wait`")
    ap.add_argument("--budget", type=int, default=3600, help="bound on the whole run, seconds")
    ap.add_argument("--idle-only", action="store_true",
                    help="only the idle readings (no load generator): e.g. to compare binaries")
    ap.add_argument("--two-shard-circuits", action="store_true",
                    help="also hold the circuits on the 2-shard Fors")
    ap.add_argument("--fors-option", action="append",
                    help="extra torrc line for both Fors slots, e.g. 'HardwareProfile big'")
    ap.add_argument("--fors-max-circuits", type=int,
                    help="max_circuits_per_shard for both Fors slots (generic.toml otherwise)")
    ap.add_argument("--after-close", type=int, default=10,
                    help="seconds after the load generator closed its link of a second "
                         "memory reading (after_release_late in --out; none at 10 or less)")
    ap.add_argument("--out", help="write the result as JSON here")
    ap.add_argument("--self-check", action="store_true", help="test the helpers and exit")
    a = ap.parse_args(argv)
    if a.self_check:
        self_check()
        return 0
    for b in (a.fors_bin,) + (() if a.idle_only else (a.loadgen,)):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"{b} is not executable (cargo build --release)")
    stages = [int(x.replace("k", "000")) for x in a.stages.split(",")]
    r = Run(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    result = {"stages": stages, "rate": a.rate, "fors_max_circuits": a.fors_max_circuits, "settle_s": a.settle, "cpu": benchutil.cpu_info(),
              "held": {}}
    try:
        r.up()
        result["idle"] = r.idle()
        log("idle: " + json.dumps(result["idle"]))
        subjects = [] if a.idle_only else [CTOR, FORS1] + ([FORS2] if a.two_shard_circuits else [])
        for s in subjects:
            if r.left() < 120:
                r.notes.append(f"{s}: not run (time budget)")
                continue
            result["held"][s] = r.hold(s)
    finally:
        r.down()
    result["notes"] = r.notes
    result["elapsed_s"] = round(time.monotonic() - t0)
    for s, held in result["held"].items():
        b = per_circuit(result["idle"][s], held)
        result["held"][s]["bytes_per_circuit"] = b
        result["held"][s]["bytes_per_circuit_overall"] = overall_per_circuit(
            result["idle"][s], held)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(table(result))
    for n in r.notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
