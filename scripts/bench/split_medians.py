#!/usr/bin/env python3
"""Medians of user and system CPU per GB over several bench-compare runs, and the kernel
floor under issue #13's goals (exit 4×, middle 5× less CPU per GB than C tor).

    scripts/bench/split_medians.py RUN1/results.json RUN2/results.json ... [--json]

Each `results.json` is one `scripts/bench-compare.py` run (its `--dir`). Per run and bulk
workload it takes each subject's total, user and system s/GB; the medians are over runs.
The floor is computed per run (Fors's system time against that run's C tor total, since the
machine's load moves both) and its median reported, beside the figures of the medians.
"""

import argparse
import json
import sys

import benchutil
import report

SUBJECTS = [("ctor", "C tor 0.4.9"), ("fors1", "Fors, 1 shard"), ("fors2", "Fors, 2 shards")]
KEYS = ("cpu_s_per_gb", "user_s_per_gb", "sys_s_per_gb")


def load(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    return runs


def ok_row(run, subject, workload):
    return next((r for r in run.get("rows", []) if r.get("subject") == subject
                 and r.get("workload") == workload and r.get("status") == "ok"
                 and r.get("sys_s_per_gb") is not None), None)


def medians(runs):
    """{(subject, workload): {key: (median, [per-run values])}} for the bulk workloads."""
    out = {}
    for wl, _ in report.WORKLOADS:
        if wl not in report.CPU_GOAL:
            continue
        for subj, _ in SUBJECTS:
            rows = [ok_row(run, subj, wl) for run in runs]
            rows = [r for r in rows if r]
            if not rows:
                continue
            out[(subj, wl)] = {k: (benchutil.median([r[k] for r in rows]), [r[k] for r in rows])
                               for k in KEYS}
    return out


def floors(runs, subject):
    """{workload: [floor_figures per run]} for one Fors subject against C tor of the same run."""
    out = {}
    for wl, goal in report.CPU_GOAL.items():
        per_run = []
        for run in runs:
            c, f = ok_row(run, "ctor", wl), ok_row(run, subject, wl)
            if c and f:
                per_run.append(report.floor_figures(f, c, goal))
        if per_run:
            out[wl] = per_run
    return out


def render(runs):
    med = medians(runs)
    lines = ["| Workload | Relay | total s/GB | user s/GB | sys s/GB | sys share | per run "
             "(total = user + sys) |", "|---|---|---:|---:|---:|---:|---|"]
    for wl, label in report.WORKLOADS:
        for subj, name in SUBJECTS:
            m = med.get((subj, wl))
            if not m:
                continue
            tot, user, sys_ = (m[k][0] for k in KEYS)
            runs_txt = "; ".join(f"{t:.2f} = {u:.2f} + {s:.2f}" for t, u, s in
                                 zip(*(m[k][1] for k in KEYS)))
            lines.append(f"| {label} | {name} | {tot:.2f} | {user:.2f} | {sys_:.2f} "
                         f"| {sys_ / tot * 100:.0f} % | {runs_txt} |")
    lines += ["", "| Workload | Relay | goal | budget (C tor ÷ goal), median | Fors sys, median "
              "| user left for the goal, median (per run) | best ratio at user 0, median "
              "(per run) | now (total ÷), median |",
              "|---|---|---:|---:|---:|---|---|---:|"]
    for subj, name in SUBJECTS[1:]:
        for wl, per_run in floors(runs, subj).items():
            label = dict(report.WORKLOADS)[wl]
            md = lambda k: benchutil.median([f[k] for f in per_run])  # noqa: E731
            now = benchutil.median([ok_row(r, subj, wl)["cpu_s_per_gb"]
                                    / ok_row(r, "ctor", wl)["cpu_s_per_gb"]
                                    for r in runs if ok_row(r, subj, wl) and ok_row(r, "ctor", wl)])
            lines.append(
                f"| {label} | {name} | {per_run[0]['goal']}× | {md('budget'):.2f} "
                f"| {md('fors_sys'):.2f} | {md('user_left'):.2f} ("
                + ", ".join(f"{f['user_left']:.2f}" for f in per_run) + ") "
                f"| {md('best_ratio'):.2f}× (" + ", ".join(f"{f['best_ratio']:.2f}" for f in per_run)
                + f") | {1 / now:.2f}× less ({now:.2f}) |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results.json of bench-compare runs")
    a = ap.parse_args(argv)
    try:
        runs = load(a.results)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(render(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
