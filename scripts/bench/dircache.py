#!/usr/bin/env python3
"""Directory cache benchmark: a Fors relay and a C tor relay, both with DirCache and a DirPort,
mirror the same private network (scripts/testnet.py, loopback only); then the same requests
go to each over its DirPort and tunnelled (BEGIN_DIR on a one-hop circuit), in ABBA order:
consensus in both flavours, plain and `.z`; a consensus diff (X-Or-Diff-From-Consensus) from
the previous consensus; microdescriptors by digest, one batch. For each run: requests/s and
the server process's CPU seconds (utime+stime of every thread, /proc/PID/stat) per 1000
requests and per GB of answer bytes. Results in bench/RESULTS.md ("Directory cache").

    scripts/bench/dircache.py --fors-bin target/release/fors \\
        --dir-bench target/release/fors-dir-bench [--run run/dirbench] [--base-port 16300] \\
        [--requests 1000] [--duration 10] [--concurrency 4] [--rounds 2] [--json out.json]

Answers are checked before timing: both caches give the same consensus (digest-as-signed), the
same microdescriptors, and a diff that, applied to the previous consensus, gives the current
one (checked by its SHA3-256 as signed, as C tor's consdiff does). Every timed request must
succeed (status 200, decodable) and answer with a body seen in the check, or the run fails.
Each workload's ABBA runs start with both caches on the same consensus and are repeated (at
most twice more) when a new consensus arrived while they ran; every row records valid-after
before and after. Nothing leaves 127.0.0.1: testnet.py checks every torrc it writes, and the C tor cache's
torrc here goes through the same check. Every wait is bounded; every process this script
starts is stopped by pid (the network by testnet.py's `down`).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import relaystat  # noqa: E402
from benchutil import cpu_info, median, wait_until  # noqa: E402

_spec = importlib.util.spec_from_file_location("testnet", os.path.join(SCRIPTS, "testnet.py"))
testnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testnet)

MD = "/tor/status-vote/current/consensus-microdesc"
NS = "/tor/status-vote/current/consensus"


def log(msg):
    print(f"[dircache-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_get(port, url, headers=None, timeout=20):
    """(status, decoded body) from a DirPort on 127.0.0.1."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{url}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            enc = r.headers.get("Content-Encoding", "identity")
            status = r.status
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return None, b""
    if enc == "deflate":
        body = zlib.decompress(body)
    return status, body


def sha3_as_signed(text):
    """SHA3-256 of a consensus through the space after the first `directory-signature`
    (dir-spec "consensus diffs": how a client names its consensus)."""
    i = text.find(b"\ndirectory-signature ")
    if i < 0:
        return None
    return hashlib.sha3_256(text[:i + len(b"\ndirectory-signature ")]).hexdigest()


def valid_after(text):
    m = re.search(rb"^valid-after (.+)$", text, re.M)
    return m.group(1).decode() if m else None


def apply_diff(base, diff):
    """Applies a dir-spec consensus diff (ed-style commands, last lines first) to `base`."""
    lines = base.decode().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    d = diff.decode().split("\n")
    if not d[0].startswith("network-status-diff-version 1") or not d[1].startswith("hash "):
        raise ValueError("not a consensus diff")
    i = 2
    while i < len(d) and d[i] != "":
        m = re.fullmatch(r"(\d+)(?:,(\d+|\$))?([acd])", d[i])
        if not m:
            raise ValueError(f"bad diff command {d[i]!r}")
        a = int(m.group(1))
        b = len(lines) if m.group(2) == "$" else int(m.group(2) or a)
        i += 1
        new = []
        if m.group(3) in "ac":
            while d[i] != ".":
                new.append(d[i])
                i += 1
            i += 1
        if m.group(3) == "a":
            lines[a:a] = new
        else:
            lines[a - 1:b] = new
    return ("\n".join(lines) + "\n").encode()


def free_ports(start, n):
    out, p = [], start
    while len(out) < n and p < start + 500:
        if testnet.port_is_free(p):
            out.append(p)
        p += 1
    if len(out) < n:
        raise SystemExit(f"no {n} free ports from {start}")
    return out


def run_bench(dir_bench, target, requests, args, save=None):
    argv = [dir_bench, target[0], f"127.0.0.1:{target[1]}",
            "--requests", str(args.requests), "--duration", str(args.duration),
            "--concurrency", str(args.concurrency), "--timeout", "30", "--seed", str(args.seed)]
    for r in requests:
        argv += ["--request", r]
    if save:
        argv += ["--save", save]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 120)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr
    except (ValueError, IndexError):
        return None, p.stderr


def summarize(runs):
    """Per workload and transport: the median of each server's runs, and Fors / C tor."""
    out = []
    keys = []
    for r in runs:
        k = (r["workload"], r["transport"])
        if k not in keys:
            keys.append(k)
    for w, t in keys:
        row = {"workload": w, "transport": t}
        for srv in ("fors", "ctor"):
            rs = [r for r in runs if (r["workload"], r["transport"], r["server"]) == (w, t, srv)]
            row[srv] = {
                "req_per_s": median([r.get("req_per_s") for r in rs]),
                "cpu_s_per_1000": median([r.get("cpu_s_per_1000") for r in rs]),
                "cpu_s_per_gb": median([r.get("cpu_s_per_gb") for r in rs]),
                "answer_bytes": median([r["wire_bytes"] / r["requests"] for r in rs
                                        if r.get("requests")]),
            }
        f, c = row["fors"], row["ctor"]
        row["ratio_req_per_s"] = (f["req_per_s"] / c["req_per_s"]
                                  if f["req_per_s"] and c["req_per_s"] else None)
        row["ratio_cpu_per_req"] = (f["cpu_s_per_1000"] / c["cpu_s_per_1000"]
                                    if f["cpu_s_per_1000"] and c["cpu_s_per_1000"] else None)
        out.append(row)
    return out


def render_summary(results):
    def n(v, fmt):
        return "—" if v is None else format(v, fmt)
    lines = [f"CPU: {results['cpu']['model']} ({results['cpu']['cores']} cores; "
             f"{' '.join(results['cpu']['features'])})",
             "| workload | transport | answer B | Fors req/s | C tor req/s | Fors/C tor req/s "
             "| Fors CPU-s/1000 | C tor CPU-s/1000 | Fors/C tor CPU | Fors CPU-s/GB | "
             "C tor CPU-s/GB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["summary"]:
        f, c = r["fors"], r["ctor"]
        lines.append(
            f"| {r['workload']} | {r['transport']} | {n(f['answer_bytes'], '.0f')} "
            f"| {n(f['req_per_s'], '.0f')} | {n(c['req_per_s'], '.0f')} "
            f"| {n(r['ratio_req_per_s'], '.2f')} | {n(f['cpu_s_per_1000'], '.3f')} "
            f"| {n(c['cpu_s_per_1000'], '.3f')} | {n(r['ratio_cpu_per_req'], '.2f')} "
            f"| {n(f['cpu_s_per_gb'], '.0f')} | {n(c['cpu_s_per_gb'], '.0f')} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fors-bin", required=True)
    ap.add_argument("--dir-bench", required=True, help="the fors-dir-bench binary")
    ap.add_argument("--tor", default=os.environ.get("TOR_BIN", testnet.TOR_BIN_DEFAULT))
    ap.add_argument("--run", default="run/dirbench")
    ap.add_argument("--base-port", type=int, default=16300)
    ap.add_argument("--requests", type=int, default=1000, help="per run (default 1000)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per run at most")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, choices=range(1, 4),
                    help="ABBA rounds per workload and transport (default 1: A B B A)")
    ap.add_argument("--voting-interval", type=int, default=60)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--wait-bin", type=int, default=0,
                    help="seconds to wait for --dir-bench to appear (default 0)")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--keep", action="store_true", help="leave the network running")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    log(f"seed {args.seed}")
    run = os.path.abspath(args.run)
    fors_dirport, ctor_or, ctor_dir = free_ports(args.base_port + 80, 3)
    tn = [sys.executable, os.path.join(SCRIPTS, "testnet.py"), "--dir", run]
    up = tn + ["up", "--base-port", str(args.base_port), "--middles", "1", "--exits", "1",
               "--no-server", "--fors", "middle", "--fors-bin", args.fors_bin, "--tor", args.tor,
               "--voting-interval", str(args.voting_interval),
               "--slot-option", "forsmiddle1 DirCache 1",
               "--slot-option", f"forsmiddle1 DirPort 127.0.0.1:{fors_dirport}"]
    ctor_proc = node = None
    results = {"cpu": cpu_info(), "seed": args.seed, "args": vars(args), "runs": [],
               "checks": {}}
    try:
        log("starting the private network: " + " ".join(up[2:]))
        subprocess.run(up, check=True, timeout=600)
        with open(os.path.join(run, "network.json")) as f:
            net = json.load(f)
        fors = next(r for r in net["relays"] if r["nick"] == "forsmiddle1")
        # The C tor cache: a middle relay of this network with a DirPort, torrc made by
        # testnet.py's own functions and checked by its locality check.
        node = {"nick": "ctorcache1", "role": "middle", "orport": ctor_or,
                "data_dir": os.path.join(run, "ctorcache1"),
                "torrc": os.path.join(run, "ctorcache1", "torrc")}
        os.makedirs(node["data_dir"], mode=0o700, exist_ok=True)
        lines = testnet.relay_core_lines(net, node) + [
            "DirCache 1", f"DirPort 127.0.0.1:{ctor_dir}"] + testnet.relay_ctor_extra_lines(node)
        testnet.write_torrc(node["torrc"], lines)
        testnet.check_torrc_is_local(node["torrc"])
        empty = os.path.join(run, "ctorcache1", "empty-defaults")
        open(empty, "w").close()
        logf = open(os.path.join(node["data_dir"], "stdout.log"), "ab")
        ctor_proc = subprocess.Popen([args.tor, "--defaults-torrc", empty, "-f", node["torrc"]],
                                     stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        servers = {"fors": {"pid": fors["pid"], "dirport": fors_dirport, "orport": fors["orport"]},
                   "ctor": {"pid": ctor_proc.pid, "dirport": ctor_dir, "orport": ctor_or}}
        log(f"Fors pid {fors['pid']} DirPort {fors_dirport}; C tor pid {ctor_proc.pid} "
            f"DirPort {ctor_dir}")

        def same_consensus():
            got = {}
            for name, s in servers.items():
                st, body = http_get(s["dirport"], MD)
                st2, body2 = http_get(s["dirport"], NS)
                if st != 200 or st2 != 200:
                    return None
                got[name] = (sha3_as_signed(body), sha3_as_signed(body2), body, body2)
            if got["fors"][:2] != got["ctor"][:2]:
                return None
            return got["fors"]

        md_digest, ns_digest, base_md, base_ns = wait_until(
            "both caches to serve the same consensus", same_consensus, 420)
        log(f"same consensus at both, valid-after {valid_after(base_md)}")
        mds = [m.decode() for m in re.findall(rb"^m (\S+)$", base_md, re.M)]
        md_url = "/tor/micro/d/" + "-".join(mds)

        def all_mds():
            bodies = {}
            for name, s in servers.items():
                st, body = http_get(s["dirport"], md_url)
                if st != 200 or body.count(b"onion-key\n") != len(mds):
                    return None
                bodies[name] = body
            return bodies

        bodies = wait_until(f"both caches to hold all {len(mds)} microdescriptors", all_mds, 240)

        def split_mds(b):
            return sorted(b"onion-key\n" + x for x in b.split(b"onion-key\n")[1:])
        if split_mds(bodies["fors"]) != split_mds(bodies["ctor"]):
            raise SystemExit("CHECK FAILED: the caches serve different microdescriptors")
        results["checks"]["microdescs"] = len(mds)

        log("waiting for the next consensus at both caches (for diffs)")

        def newer():
            g = same_consensus()
            return g if g and g[0] != md_digest and g[1] != ns_digest else None
        cur = wait_until("a newer consensus at both caches", newer, 3 * args.voting_interval + 120)
        log(f"new consensus, valid-after {valid_after(cur[2])}")

        def diffs_ready():
            out = {}
            for name, s in servers.items():
                st, body = http_get(s["dirport"], MD, {"X-Or-Diff-From-Consensus": md_digest})
                if st != 200 or not body.startswith(b"network-status-diff-version"):
                    return None
                out[name] = body
            return out
        diffs = wait_until("both caches to answer with a diff", diffs_ready, 180)
        for name, d in diffs.items():
            made = apply_diff(base_md, d)
            if sha3_as_signed(made) != cur[0]:
                raise SystemExit(f"CHECK FAILED: {name}'s diff does not give the new consensus")
        results["checks"]["diff_bytes"] = {n: len(d) for n, d in diffs.items()}
        results["checks"]["diffs_identical"] = diffs["fors"] == diffs["ctor"]
        log(f"diffs check out (Fors {len(diffs['fors'])} B, C tor {len(diffs['ctor'])} B, "
            f"identical: {diffs['fors'] == diffs['ctor']})")

        workloads = [
            ("consensus-microdesc", [MD]),
            ("consensus-microdesc.z", [MD + ".z"]),
            ("consensus (ns)", [NS]),
            ("consensus (ns).z", [NS + ".z"]),
            ("microdesc diff", [f"{MD}|X-Or-Diff-From-Consensus: {md_digest}"]),
            (f"microdescs, batch of {len(mds)}", [md_url]),
        ]
        # Idle CPU of each server, for scale.
        c0 = {n: relaystat.cpu_seconds(s["pid"]) for n, s in servers.items()}
        time.sleep(10)
        results["idle_cpu_per_s"] = {n: (relaystat.cpu_seconds(s["pid"]) - c0[n]) / 10
                                     for n, s in servers.items()}
        log(f"idle CPU: {results['idle_cpu_per_s']}")
        # The load generator may still be building while the network comes up.
        wait_until(f"{args.dir_bench} to exist", lambda: os.access(args.dir_bench, os.X_OK),
                   args.wait_bin, step=10)
        order = ["fors", "ctor", "ctor", "fors"] * args.rounds

        def valid_afters():
            """The microdesc consensus's valid-after at each cache (None if it fails)."""
            out = []
            for s in servers.values():
                st, body = http_get(s["dirport"], MD)
                out.append(valid_after(body) if st == 200 else None)
            return tuple(out)

        def same_valid_after():
            v = valid_afters()
            return v[0] if v[0] is not None and len(set(v)) == 1 else None

        def run_group(wname, reqs, transport):
            rows, seen, bad = [], {}, False
            for name in order:
                s = servers[name]
                port = s["dirport"] if transport == "--dirport" else s["orport"]
                load = os.getloadavg()[0]
                c0 = relaystat.cpu_seconds(s["pid"])
                rep, err = run_bench(args.dir_bench, (transport, port), reqs, args)
                cpu = relaystat.cpu_seconds(s["pid"]) - c0
                row = {"workload": wname, "transport": transport[2:], "server": name,
                       "cpu_s": cpu, "load_before": load}
                if rep is None:
                    row["error"] = err[-500:]
                    bad = True
                else:
                    ok = rep["requests_ok"]
                    row.update({
                        "requests": ok, "errors": rep["errors"],
                        "error_kinds": rep["error_kinds"],
                        "elapsed_s": rep["elapsed_s"], "req_per_s": rep["requests_per_s"],
                        "wire_bytes": rep["wire_bytes"],
                        "cpu_s_per_1000": cpu / ok * 1000 if ok else None,
                        "cpu_s_per_gb": cpu / rep["wire_bytes"] * 1e9
                        if rep["wire_bytes"] else None,
                        "digests": rep["kinds"][0]["digests"],
                        "diffs": rep["kinds"][0]["diffs"],
                    })
                    for d in rep["kinds"][0]["digests"]:
                        seen.setdefault(d, set()).add(name)
                    if rep["errors"]:
                        bad = True
                rows.append(row)
                log(f"{wname:28} {transport[2:]:8} {name:4}: "
                    + (f"{row['req_per_s']:8.1f} req/s, CPU {cpu:6.2f} s "
                       f"({row['cpu_s_per_1000'] or 0:.3f} s/1000 req), "
                       f"errors {row['errors']}" if rep else f"FAILED {row['error'][-200:]}"))
            return rows, seen, bad

        # A new consensus during a group changes the answers mid-run (two runs failed their
        # answer check that way): each group starts with both caches on the same consensus
        # and is run again, right after the change (so with most of an interval ahead), when
        # the consensus changed while it ran; valid-after before and after is recorded.
        failed = False
        results["checks"]["consensus_changed_during_group"] = []
        for wname, reqs in workloads:
            for transport in ("--dirport", "--orport"):
                for attempt in range(3):
                    va0 = wait_until("both caches on the same consensus", same_valid_after, 180)
                    rows, seen, bad = run_group(wname, reqs, transport)
                    va1 = valid_afters()
                    held = va1 == (va0, va0)
                    for r in rows:
                        r.update({"valid_after_before": va0, "valid_after_after": list(va1),
                                  "consensus_held": held, "attempt": attempt})
                    if held:
                        break
                    results["checks"]["consensus_changed_during_group"].append(
                        [wname, transport[2:], attempt])
                    log(f"{wname} over {transport[2:]}: the consensus changed during the runs "
                        f"({va0} -> {va1}); " + ("running them again" if attempt < 2 else
                                                 "giving up, keeping these runs"))
                results["runs"].extend(rows)
                failed |= bad
                # The same answers from both (with the consensus held, the same documents).
                both = [d for d, who in seen.items() if who == {"fors", "ctor"}]
                if not both:
                    log(f"CHECK FAILED: {wname} over {transport[2:]}: no answer in common")
                    failed = True
        results["failed"] = failed
        results["summary"] = summarize(results["runs"])
        print(render_summary(results), flush=True)
        return 1 if failed else 0
    finally:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=list)
        if ctor_proc is not None and node is not None:
            testnet.stop_pids([("ctorcache1", ctor_proc.pid, node["torrc"])])
        if not args.keep:
            subprocess.run(tn + ["down"], timeout=120)


if __name__ == "__main__":
    sys.exit(main())
