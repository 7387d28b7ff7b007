#!/usr/bin/env python3
"""CGO and tor1 relay crypto per cell: Fors against C tor's own micro-benchmark, whose CGO runs
on OpenSSL's AES (issue #12 item 2: "CGO ns/cell vs tor1 vs an OpenSSL-based reference in the
same run").

Runs C tor's `src/test/bench cell_ops_tor1 cell_ops_cgo` and
`fors bench-crypto --json --only ...` alternately (`--runs`, default 3), then prints, per work
item, the median Fors ns/cell, the median C tor ns/cell and their ratio, with the CPU model,
its crypto flags and the load average before each run. It builds nothing and is not run in CI.

Building C tor's bench (not committed; Debian's tor 0.4.9 source package, outside the repo):

    apt-get source tor        # or any tor-0.4.9.x tarball
    apt-get install libevent-dev libssl-dev zlib1g-dev liblzma-dev libzstd-dev pkg-config
    cp -a tor-0.4.9.11 /work/ctor-bench && cd /work/ctor-bench
    ./configure --disable-asciidoc --disable-manpage --disable-html-manual
    nice -n 10 make src/test/bench

and the Fors side is a release build: `cargo build --release --bin fors`. Then

    python3 scripts/bench/cgo_ctor.py --ctor-bench /work/ctor-bench/src/test/bench \\
        --fors target/release/fors [--runs 3] [--json OUT.json]

What is compared (C tor 0.4.9 `src/test/bench.c`, `bench_cell_ops_cgo` / `bench_cell_ops_tor1`):
* CGO forward: C tor's "CGO outbound at relay" is `cgo_crypt_relay_forward`: the UIV+
  encryption *and* the constant-time compare of the new tag with the nonce (the check whether
  the cell is for this hop; it never is), like Fors's `cgo_forward_ns` (`recognize`).
* CGO backward: "CGO inbound at relay", `cgo_crypt_relay_backward` = `cgo_backward_ns`.
* CGO originate: "CGO originate at relay", `cgo_crypt_relay_originate` (nonce in the tag slot,
  encryption, key update) = `cgo_originate_ns`.
* tor1 forward: "Outbound cells", `relay_decrypt_cell` outbound at a relay (AES-CTR, then the
  `recognized` check; the digest is only run when `recognized` is zero, which a passing cell
  all but never has) = `middle_forward_ns`.
* tor1 backward: "Inbound cells", `relay_decrypt_cell` inbound at a relay (AES-CTR) =
  `middle_backward_ns`.
* tor1 originate: "originate inbound", `relay_encrypt_cell_inbound` (running SHA-1 digest, then
  AES-CTR) = `exit_originate_ns`.
Same work on both sides: one layer, 509-byte cell bodies, AES-128 (C tor's bench keys CGO with
`cgo_key_material_len(128)`; tor1 is AES-128 by definition), one circuit. Where they differ:
* the statistic: C tor times 2^20 calls on one cell buffer and divides the *process CPU time*
  (CLOCK_PROCESS_CPUTIME_ID) by the count, a mean that excludes time preempted but includes
  cache pollution from other processes; Fors reports the *fastest* of 201 wall-clock
  repetitions of 1024 calls over 1024 cells (0.5 MiB), which filters preemption and pollution.
  On a loaded machine the mean is pessimistic against the minimum, so the ratio favours Fors
  by some percent;
* the cell command (C tor's bench: 0, Fors: RELAY = 3; it is only a tweak byte);
* C tor has no batched (several circuits per call) path; Fors's batched figures are printed in
  a second table without a C tor column. The C tor `cpb` figures use the wall-clock TSC and
  are not used.
"""

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchutil import cpu_info, median  # noqa: E402

# (work, Fors key, C tor bench line prefix)
ITEMS = [
    ("CGO forward, passing cell (incl. tag check)", "cgo_forward_ns", "CGO outbound at relay"),
    ("CGO backward, relayed cell", "cgo_backward_ns", "CGO inbound at relay"),
    ("CGO originate (incl. key update)", "cgo_originate_ns", "CGO originate at relay"),
    ("tor1 forward, passing cell", "middle_forward_ns", "Outbound cells"),
    ("tor1 backward, relayed cell", "middle_backward_ns", "Inbound cells"),
    ("tor1 originate (SHA-1 + AES-CTR)", "exit_originate_ns", "originate inbound"),
]
# Fors-only batched figures (one cell each of N circuits per call).
BATCHED = [
    ("CGO forward", "cgo_forward_batched_ns"),
    ("CGO backward", "cgo_backward_batched_ns"),
    ("CGO originate", "cgo_originate_batched_ns"),
    ("tor1 forward", "middle_forward_batched_ns"),
    ("tor1 originate", "exit_originate_batched_ns"),
]
EXTRA_FLAGS = ["vpclmulqdq"]
TIMEOUT = 600


def parse_ctor(out):
    """{line prefix: ns per cell} from C tor's bench output."""
    got = {}
    for _, _, prefix in ITEMS:
        m = re.search(r"^\s*" + re.escape(prefix) + r"\s*:\s*([0-9.]+)", out, re.M)
        if m:
            got[prefix] = float(m.group(1))
    return got


def run_ctor(path):
    p = subprocess.run([path, "cell_ops_tor1", "cell_ops_cgo"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        sys.exit(f"{path} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    got = parse_ctor(p.stdout)
    missing = [pre for _, _, pre in ITEMS if pre not in got]
    if missing:
        sys.exit(f"{path}: no figure for {missing} in its output:\n{p.stdout}")
    return got


def run_fors(path, env):
    keys = [k for _, k, _ in ITEMS] + [k for _, k in BATCHED]
    cmd = [path, "bench-crypto", "--json"]
    for k in keys:
        cmd += ["--only", k]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if p.returncode != 0:
        sys.exit(f"{path} bench-crypto failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return json.loads(p.stdout)


def extra_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return [x for x in EXTRA_FLAGS if x in flags]
    except OSError:
        pass
    return []


def fmt(v, digits=1):
    return "—" if v is None else f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ctor-bench", required=True, help="C tor's built src/test/bench")
    ap.add_argument("--fors", required=True, help="a release build of the fors binary")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each (default 3)")
    ap.add_argument("--fors-env", action="append", default=[], metavar="VAR=VALUE",
                    help="environment for the Fors runs (e.g. FORS_CGO_INTERLEAVE=off)")
    ap.add_argument("--json", help="also write every run's figures here")
    a = ap.parse_args()
    if not 1 <= a.runs <= 20:
        sys.exit("--runs must be 1..20")
    env = dict(os.environ)
    for kv in a.fors_env:
        k, sep, v = kv.partition("=")
        if not sep:
            sys.exit(f"--fors-env {kv!r}: expected VAR=VALUE")
        env[k] = v

    cpu = cpu_info()
    runs = []
    for i in range(a.runs):
        load = os.getloadavg()[0]
        ctor = run_ctor(a.ctor_bench)
        fors = run_fors(a.fors, env)
        runs.append({"load1": load, "ctor": ctor, "fors": fors})
        print(f"run {i + 1}/{a.runs}: load average {load:.1f}", file=sys.stderr)

    print(f"CPU: {cpu['model']} ({cpu['cores']} logical CPUs); flags: "
          f"{' '.join(cpu['features'] + extra_flags())}")
    print("load average (1 min) before each run: "
          + ", ".join(f"{r['load1']:.1f}" for r in runs))
    aes = runs[-1]["fors"].get("cpu_features", {}).get("aes", "?")
    print(f"Fors AES path: {aes}; runs: {a.runs}, medians"
          + (f"; Fors env: {' '.join(a.fors_env)}" if a.fors_env else ""))
    print()
    print("| work | Fors key | Fors ns/cell | C tor (OpenSSL) ns/cell | Fors / C tor |")
    print("|---|---|---|---|---|")
    table = []
    for what, key, prefix in ITEMS:
        f = median([r["fors"].get(key) if isinstance(r["fors"].get(key), (int, float))
                    else None for r in runs])
        c = median([r["ctor"].get(prefix) for r in runs])
        ratio = f / c if f is not None and c else None
        table.append({"work": what, "fors_key": key, "fors_ns": f, "ctor_line": prefix,
                      "ctor_ns": c, "ratio": ratio})
        print(f"| {what} | `{key}` | {fmt(f)} | {fmt(c)} | {fmt(ratio, 2)} |")
    print()
    print("Fors only, one cell each of N circuits per call (C tor has no batched path):")
    print()
    sizes = None
    rows = []
    for what, key in BATCHED:
        per = [r["fors"].get(key) for r in runs]
        per = [p for p in per if isinstance(p, dict)]
        if not per:
            rows.append((what, key, {}))
            continue
        sizes = sizes or sorted((n for n in per[0] if n.isdigit()), key=int)
        rows.append((what, key, {n: median([p.get(n) for p in per]) for n in sizes}))
    sizes = sizes or []
    print("| work | Fors key | " + " / ".join(sizes) + " circuits, ns/cell |")
    print("|---|---|---|")
    for what, key, meds in rows:
        print(f"| {what} | `{key}` | " + " / ".join(fmt(meds.get(n)) for n in sizes) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu, "runs": runs, "table": table,
                       "batched": {k: m for _, k, m in rows}}, f, indent=1)


if __name__ == "__main__":
    main()
