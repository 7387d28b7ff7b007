#!/usr/bin/env python3
"""Kernel vs user time of a relay profile: `perf report` of a `perf record -g -p PID` file
(as `scripts/bench-compare.py --perf DIR` writes them), split by where each sample landed.

    scripts/bench/perf_split.py DIR/fors1-exit-download.perf.data [--top 15] [--json]

Each sample is counted once, at the function it was taken in (`--no-children`): `[k]` kernel
symbols against `[.]` user-space ones (the relay and its libraries). Prints both shares and
the top symbols of each side, as percentages of all the file's samples. This is the
cross-check of the utime/stime split bench-compare reports: both should tell the same share.
"""

import argparse
import json
import re
import subprocess
import sys

# `perf report --stdio --no-children --sort sym -g none -n` lines: "  12.34%   567  [k] symbol"
# (the sample count is optional: without -n only the rounded percentage is there).
LINE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(?:(\d+)\s+)?\[(.)\]\s+(.*?)\s*$")
SAMPLES_RE = re.compile(r"^# Samples: (\S+)\s+of event '([^']+)'")
MODES = {"k": "kernel", ".": "user", "g": "guest kernel", "u": "guest user", "H": "hypervisor"}


class PerfError(Exception):
    """perf could not read the file, or its report had no symbol lines."""


def parse_report(text):
    """(event, samples text, [(percent, mode, symbol)]) from `perf report` text.  With sample
    counts (`-n`) the percentages are recomputed from them: summing thousands of rounded
    percentages (each unresolved address is its own line) overshoots 100 % by several."""
    event, samples, rows, counts = None, None, [], []
    for line in text.splitlines():
        m = SAMPLES_RE.match(line)
        if m:
            samples, event = m.group(1), m.group(2)
            continue
        if line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        if m:
            rows.append((float(m.group(1)), MODES.get(m.group(3), m.group(3)), m.group(4)))
            counts.append(int(m.group(2)) if m.group(2) else None)
    if not rows:
        raise PerfError("no symbol lines in the perf report")
    total = sum(c for c in counts if c is not None)
    if total and None not in counts:
        rows = [(c * 100.0 / total, mode, sym) for c, (_, mode, sym) in zip(counts, rows)]
        samples = str(total)
    return event, samples, rows


def summarize(rows, top=15):
    """Shares (percent of all samples) per side and the `top` symbols of the kernel and the
    user side.  Samples of any mode but kernel count on the user side (none expected)."""
    kernel = [r for r in rows if r[1] == "kernel"]
    user = [r for r in rows if r[1] != "kernel"]
    by_pct = lambda v: sorted(v, key=lambda r: -r[0])  # noqa: E731
    return {"kernel_pct": sum(r[0] for r in kernel), "user_pct": sum(r[0] for r in user),
            "top_kernel": [(p, s) for p, _, s in by_pct(kernel)[:top]],
            "top_user": [(p, s) for p, _, s in by_pct(user)[:top]]}


def report_text(path, perf="/usr/bin/perf"):
    try:
        r = subprocess.run([perf, "report", "-i", path, "--stdio", "--no-children", "--sort",
                            "sym", "-g", "none", "-n", "--percent-limit", "0"],
                           capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PerfError(f"{perf} report -i {path}: {e}") from e
    if r.returncode != 0:
        raise PerfError(f"{perf} report -i {path} exited {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


def render(name, event, samples, s):
    out = [f"{name}: {samples or '?'} samples of {event or '?'}; kernel {s['kernel_pct']:.1f} %, "
           f"user {s['user_pct']:.1f} %", "",
           "| # | kernel symbol | % of samples | user symbol | % of samples |",
           "|---:|---|---:|---|---:|"]
    for i in range(max(len(s["top_kernel"]), len(s["top_user"]))):
        k = s["top_kernel"][i] if i < len(s["top_kernel"]) else None
        u = s["top_user"][i] if i < len(s["top_user"]) else None
        out.append(f"| {i + 1} | {'`' + k[1] + '`' if k else ''} | {f'{k[0]:.2f}' if k else ''} "
                   f"| {'`' + u[1] + '`' if u else ''} | {f'{u[0]:.2f}' if u else ''} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--perf", default="/usr/bin/perf")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    results, rc = {}, 0
    for path in a.files:
        try:
            event, samples, rows = parse_report(report_text(path, a.perf))
        except PerfError as e:
            print(f"{path}: {e}", file=sys.stderr)
            rc = 1
            continue
        s = summarize(rows, a.top)
        results[path] = dict(s, event=event, samples=samples)
        if not a.json:
            print(render(path, event, samples, s) + "\n")
    if a.json:
        print(json.dumps(results, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
