#!/usr/bin/env python3
"""CPU per GB of the Fors relay under glibc malloc, jemalloc and mimalloc, each against C tor
in the same run (issue #15).

Runs `scripts/bench-compare.py --no-write` once per allocator and round, in the order
A B C C B A for two rounds (so a drift of the shared machine's load over the whole session
weighs on every allocator alike), each run in its own network directory:

  glibc     --glibc-bin     (a `cargo build --release --no-default-features` binary)
  jemalloc  --jemalloc-bin  (the default build: `tikv-jemallocator`, src/main.rs)
  mimalloc  --glibc-bin with LD_PRELOAD=--mimalloc-lib (Debian's libmimalloc2.0)

then reads each run's results.json and prints (and writes to OUT/summary.md) a per-run table
and a table of the Fors ÷ C tor CPU-cost ratios per allocator. Only ratios within one run are
compared: the C tor exit in the same network is the reference for the machine's state.

  python3 scripts/bench/alloc_compare.py --glibc-bin G --jemalloc-bin J [--rounds 2] \\
      [-- extra bench-compare options]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import report  # noqa: E402

ALLOCATORS = ("glibc", "jemalloc", "mimalloc")
SUBJECTS = (("fors1", "1 shard"), ("fors2", "2 shards"))


def run_order(allocators, rounds):
    """A B C, C B A, A B C, ...: each round reverses the previous one."""
    order = []
    for r in range(rounds):
        seq = list(allocators) if r % 2 == 0 else list(reversed(allocators))
        order += [(a, r + 1) for a in seq]
    return order


def bench_argv(alloc, run_dir, args, extra):
    """The bench-compare.py command line for one allocator."""
    binary = args.jemalloc_bin if alloc == "jemalloc" else args.glibc_bin
    argv = [sys.executable, os.path.join(REPO, "scripts", "bench-compare.py"), "--no-write",
            "--dir", run_dir, "--fors-bin", binary, "--fors-label", f"Fors ({alloc})"]
    if alloc == "mimalloc":
        argv += ["--fors-env", f"LD_PRELOAD={args.mimalloc_lib}"]
    return argv + list(extra)


def row(rows, subject, workload):
    return next((r for r in rows if r["subject"] == subject and r["workload"] == workload), None)


def cost(r):
    if r is None or r.get("status") != "ok":
        return None
    return r.get("cpu_ms_per_circuit") if r["workload"] == "create" else r.get("cpu_s_per_gb")


def ratio_of(rows, subject, workload):
    """Fors subject's CPU cost ÷ C tor's in the same run, or None."""
    return report.ratio(cost(row(rows, subject, workload)), cost(row(rows, "ctor", workload)))


def _cost_text(r):
    if r is None:
        return "–"
    if r.get("status") != "ok":
        return f"{r.get('status')}: {report._short(r.get('reason') or '', 60)}"
    return report.cost_cell(r)


def render_runs(runs):
    """One line per run and workload: C tor's cost, each Fors subject's cost and ratio, MB/s
    and peak RSS of the three."""
    out = ["| run | allocator | workload | C tor | Fors 1 shard (÷ C tor) | Fors 2 shards (÷ C tor) "
           "| MB/s C tor / 1 / 2 | peak RSS MiB C tor / 1 / 2 | load avg start → end |",
           "|---|---|---|---:|---:|---:|---|---|---|"]
    for n, (alloc, rnd, res) in enumerate(runs, 1):
        rows, env = res["rows"], res["env"]
        la = f"{env['loadavg'][0]:.2f} → {env.get('loadavg_end', [float('nan')])[0]:.2f}"
        for wl, label in report.WORKLOADS:
            c = row(rows, "ctor", wl)
            if c is None:
                continue
            cells = []
            for s, _ in SUBJECTS:
                q = ratio_of(rows, s, wl)
                cells.append(_cost_text(row(rows, s, wl))
                             + (f" ({report._f(q, 2)})" if q is not None else ""))
            mbs = " / ".join(report._f((row(rows, s, wl) or {}).get("mb_per_s"))
                             for s in ("ctor", "fors1", "fors2")) if wl != "create" else "–"
            rss = " / ".join(report._f((row(rows, s, wl) or {}).get("peak_rss_mib"))
                             for s in ("ctor", "fors1", "fors2"))
            out.append(f"| {n} | {alloc} (round {rnd}) | {label} | {_cost_text(c)} | "
                       f"{cells[0]} | {cells[1]} | {mbs} | {rss} | {la} |")
    return "\n".join(out)


def render_summary(runs):
    """Per workload and Fors subject: each allocator's Fors ÷ C tor CPU-cost ratios over its
    rounds (mean, and the single values)."""
    out = ["| workload | Fors | " + " | ".join(f"{a}: ratio to C tor" for a in ALLOCATORS) + " |",
           "|---|---|" + "---:|" * len(ALLOCATORS)]
    for wl, label in report.WORKLOADS:
        for s, s_label in SUBJECTS:
            cells, any_value = [], False
            for a in ALLOCATORS:
                vals = [ratio_of(res["rows"], s, wl) for al, _, res in runs if al == a]
                vals = [v for v in vals if v is not None]
                if vals:
                    any_value = True
                    each = ", ".join(report._f(v, 2) for v in vals)
                    cells.append(f"**{statistics.mean(vals):.2f}** ({each})" if len(vals) > 1
                                 else f"**{vals[0]:.2f}**")
                else:
                    cells.append("–")
            if any_value:
                out.append(f"| {label} | {s_label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--glibc-bin", required=True, help="fors built with --no-default-features")
    ap.add_argument("--jemalloc-bin", required=True, help="fors built with the default features")
    ap.add_argument("--mimalloc-lib", default="/usr/lib/x86_64-linux-gnu/libmimalloc.so.2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--allocators", default=",".join(ALLOCATORS),
                    help="comma-separated subset of glibc,jemalloc,mimalloc")
    ap.add_argument("--out", default=os.path.join(REPO, "run", "alloc-compare"))
    ap.add_argument("--summarize-only", action="store_true",
                    help="only re-read the results.json files of an earlier run of this script")
    args = ap.parse_args(argv)
    allocs = [a for a in args.allocators.split(",") if a]
    bad = [a for a in allocs if a not in ALLOCATORS]
    if bad or not allocs or args.rounds < 1:
        ap.error(f"--allocators: expected a subset of {','.join(ALLOCATORS)}; --rounds ≥ 1")
    for path in {args.glibc_bin, args.jemalloc_bin} | (
            {args.mimalloc_lib} if "mimalloc" in allocs else set()):
        if not os.path.exists(path):
            ap.error(f"{path} does not exist")
    os.makedirs(args.out, exist_ok=True)
    runs, failed = [], []
    for alloc, rnd in run_order(allocs, args.rounds):
        run_dir = os.path.join(args.out, f"{alloc}-round{rnd}")
        if not args.summarize_only:
            cmd = bench_argv(alloc, run_dir, args, extra)
            print(f"[alloc-compare {time.strftime('%H:%M:%S')}] {alloc} round {rnd}: "
                  + " ".join(cmd), flush=True)
            with open(run_dir + ".log", "w") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                    stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                failed.append(f"{alloc} round {rnd}: bench-compare exit {rc} (see {run_dir}.log)")
        try:
            with open(os.path.join(run_dir, "results.json")) as f:
                runs.append((alloc, rnd, json.load(f)))
        except (OSError, ValueError) as e:
            failed.append(f"{alloc} round {rnd}: no results.json ({e})")
    if not runs:
        print("no run produced results:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    env = runs[0][2]["env"]
    notes = [f"{a} round {r}: {n}" for a, r, res in runs for n in res.get("notes", [])
             if "allocator:" in n or "aborted" in n]
    md = "\n".join([
        f"* CPU: {env['cpu']} (flags {', '.join(env.get('cpu_flags') or []) or 'not read'}); "
        f"kernel {env['kernel']}; {env['tor']}; Fors commit `{env['commit']}`.",
        f"* Runs, in order: " + ", ".join(f"{a} {r}" for a, r, _ in runs) + ".",
        "", "Fors ÷ C tor CPU cost, same run (lower is better for Fors; mean of the rounds, "
        "single rounds in brackets):", "", render_summary(runs), "",
        "Every run:", "", render_runs(runs), "",
        "Allocator seen in the running Fors processes:", ""]
        + [f"* {n}" for n in notes] + ([""] + [f"* FAILED: {f}" for f in failed] if failed else []))
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
