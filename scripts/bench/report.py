"""Turns bench-compare measurements into Markdown and splices them into bench/RESULTS.md.

A measurement row is a dict; `compute_row` derives the figures from one fors-loadgen JSON
object plus the subject relay's /proc deltas, and `render_*` format them.
"""

import re

SECTION_TITLE = "## Relay: Fors vs C tor, side by side"
SECTION_INTRO = """\
`scripts/bench-compare.sh` (see the script's `--help`) runs the same `fors-loadgen` workloads
against a Fors relay and a C tor relay that sit in the same role in one private loopback network
(`scripts/testnet.py`), each pinned to core 1 in turn while the load generator and the rest of
the network use core 0. CPU cost is the subject relay process's own `utime+stime` delta
(`/proc/PID/stat`, all threads) divided by the bytes the load generator verified (each direction
counted once). Peak RSS is `VmHWM`, reset before each workload (`clear_refs` = 5). Latency is the
load generator's: `sendme_rtt` when the workload uploads, else `download_cell_gap`; for circuit
creation it is the CREATE2→CREATED2 handshake time. RSS is only a rough figure: a C tor relay
is also a directory cache, and in the same network idle C tor relays sat at either ~14 or
~64 MiB depending on the directory requests they had served. Each run below is a separate subsection,
rewritten by the script for its mode; the machine is shared with other jobs, so compare rows of
the same run only.
"""

# Workload keys in report order, with the label shown in tables.
WORKLOADS = [
    ("exit-download", "exit download"),
    ("exit-upload", "exit upload"),
    ("middle-forward", "middle forward (down+up)"),
    ("create", "circuit creation"),
    ("flood-bulk", "flood + bulk download"),
    # The same bulk workloads with CGO circuits (`fors-loadgen --relay-crypto cgo`).
    ("exit-download-cgo", "exit download, CGO"),
    ("exit-upload-cgo", "exit upload, CGO"),
    ("middle-forward-cgo", "middle forward (down+up), CGO"),
]
WORKLOAD_LABEL = dict(WORKLOADS)

# CGO workloads: the index in the loadgen's path (its `hop_crypto`) of the subject relay.
CGO_SUBJECT_HOP = {"exit-download-cgo": 1, "exit-upload-cgo": 1, "middle-forward-cgo": 0}


def cgo_negotiation_problem(lg, workload, circuits):
    """None if every circuit of a CGO workload ran CGO at the subject's hop, as the loadgen
    recorded what the handshakes negotiated (`hop_crypto`); else what is wrong."""
    hop = CGO_SUBJECT_HOP[workload]
    per_hop = (lg or {}).get("hop_crypto") or []
    if len(per_hop) <= hop:
        return f"the loadgen recorded no relay crypto for hop {hop}"
    kinds = {k: v for k, v in per_hop[hop].items() if v}
    if set(kinds) != {"cgo"} or kinds["cgo"] < circuits:
        return (f"hop {hop} (the subject) negotiated {kinds or 'nothing'}, not CGO on all "
                f"{circuits} circuits")
    return None


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def split_cpu(cpu):
    """(total, user, sys) CPU seconds from a relaystat.CpuTimes-like (user, sys) pair, or
    (total, None, None) from a plain number (a caller that has only the sum)."""
    if cpu is None:
        return None, None, None
    if isinstance(cpu, (int, float)):
        return cpu, None, None
    user, sys_ = cpu
    return user + sys_, user, sys_


def compute_row(subject, workload, lg, cpu, rss_kib, elapsed_wall, rss_start_kib=None):
    """Figures for one workload run.  `lg` is the loadgen JSON, `cpu` the subject's CPU
    seconds over the run (a relaystat.CpuTimes, user and system apart, or just the sum),
    `rss_kib` its VmHWM afterwards."""
    row = {"subject": subject, "workload": workload, "status": "ok" if lg.get("ok") else "failed",
           "reason": None}
    nbytes = int(lg.get("bytes_verified") or 0)
    row["bytes"] = nbytes
    cpu_s, user_s, sys_s = split_cpu(cpu)
    row["relay_cpu_s"] = cpu_s
    row["relay_user_s"], row["relay_sys_s"] = user_s, sys_s
    per_gb = lambda v: v / (nbytes / 1e9) if nbytes > 0 and v is not None else None  # noqa: E731
    row["cpu_s_per_gb"] = per_gb(cpu_s)
    # User and kernel time apart (utime, stime): on loopback the kernel's share is TCP work a
    # user-space change cannot remove, so it bounds how far the total can fall (issue #13).
    row["user_s_per_gb"], row["sys_s_per_gb"] = per_gb(user_s), per_gb(sys_s)
    row["sys_share"] = sys_s / cpu_s if sys_s is not None and cpu_s else None
    hs = int(lg.get("handshakes") or 0)
    row["handshakes"] = hs
    row["cpu_ms_per_circuit"] = (cpu_s * 1e3 / hs) if hs > 0 and cpu_s is not None else None
    row["mb_per_s"] = _num(lg.get("mb_per_s"))
    row["cells_per_s"] = _num(lg.get("cells_per_s"))
    row["circuits_per_s"] = _num(lg.get("handshakes_per_s"))
    if workload == "create":
        h = lg.get("handshake_ms") or {}
        row["lat_kind"] = "handshake"
        row["lat_p50_ms"], row["lat_p99_ms"] = _num(h.get("p50")), _num(h.get("p99"))
    else:
        lat = lg.get("latency_us") or {}
        row["lat_kind"] = lat.get("kind")
        p50, p99 = _num(lat.get("p50")), _num(lat.get("p99"))
        row["lat_p50_ms"] = p50 / 1e3 if p50 is not None else None
        row["lat_p99_ms"] = p99 / 1e3 if p99 is not None else None
    row["peak_rss_mib"] = rss_kib / 1024 if rss_kib is not None else None
    row["rss_start_mib"] = rss_start_kib / 1024 if rss_start_kib is not None else None
    row["elapsed_s"] = _num(lg.get("elapsed_s")) or elapsed_wall
    el = row["elapsed_s"]
    row["relay_cores"] = cpu_s / el if cpu_s is not None and el else None
    row["loadgen_cores"] = _num(lg.get("loadgen_cpu_cores"))
    row["integrity_errors"] = lg.get("integrity_errors")
    errs = {k: v for k, v in (lg.get("errors") or {}).items() if v}
    if row["status"] != "ok":
        row["reason"] = ("loadgen not ok: " + ", ".join(f"{k}={v}" for k, v in sorted(errs.items()))
                         if errs else "loadgen not ok")
    row["errors"] = errs
    return row


def unusable_row(subject, workload, reason, status="not usable"):
    return {"subject": subject, "workload": workload, "status": status, "reason": reason}


def _f(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def lat_cell(ms):
    """Latency in ms, or in µs below 1 ms (cell gaps are µs-scale)."""
    if ms is None:
        return "–"
    return f"{ms * 1e3:.0f} µs" if ms < 1 else f"{ms:.1f} ms"


def cost_cell(row):
    if row["workload"] == "create":
        v = row.get("cpu_ms_per_circuit")
        return f"{_f(v, 3)} ms/circ" if v is not None else "–"
    return f"{_f(row.get('cpu_s_per_gb'), 2)} s/GB" if row.get("cpu_s_per_gb") is not None else "–"


def split_cell(row):
    """User / system CPU cost and the system share, e.g. `1.20 / 1.75 (59 %)`: s/GB for bulk
    workloads, ms per circuit for circuit creation."""
    user, sys_ = row.get("relay_user_s"), row.get("relay_sys_s")
    if user is None or sys_ is None:
        return "–"
    if row["workload"] == "create":
        hs = row.get("handshakes") or 0
        if not hs:
            return "–"
        u, k = user * 1e3 / hs, sys_ * 1e3 / hs
        digits = 3
    else:
        u, k = row.get("user_s_per_gb"), row.get("sys_s_per_gb")
        if u is None or k is None:
            return "–"
        digits = 2
    share = row.get("sys_share")
    return f"{_f(u, digits)} / {_f(k, digits)}" + (f" ({share * 100:.0f} %)" if share is not None
                                                   else "")


def _short(text, n=120):
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render_table(rows, labels):
    """The per-subject table.  `labels` maps subject key → display name."""
    out = ["| Workload | Relay | CPU cost | user / sys (sys share) | relay cores | MB/s | cells/s "
           "| latency p50 / p99 | circuits/s | peak RSS MiB (at start) |",
           "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    # A subject that failed every workload for one reason gets a single line.
    collapsed = {}
    for subj in labels:
        mine = [r for r in rows if r["subject"] == subj]
        if mine and all(r["status"] not in ("ok", "failed") for r in mine) \
                and len({(r["status"], r["reason"]) for r in mine}) == 1:
            collapsed[subj] = mine[0]
    for wl, wl_label in WORKLOADS:
        for subj in labels:
            row = next((r for r in rows if r["subject"] == subj and r["workload"] == wl), None)
            if row is None or subj in collapsed:
                continue
            name = labels[subj]
            if row["status"] not in ("ok", "failed"):
                out.append(f"| {wl_label} | {name} | {row['status']}: {_short(row['reason'])} "
                           "| | | | | | | |")
                continue
            lat = (f"{lat_cell(row.get('lat_p50_ms'))} / {lat_cell(row.get('lat_p99_ms'))}"
                   + (f" ({row['lat_kind']})" if row.get("lat_kind") else ""))
            cost = cost_cell(row)
            # Bulk workloads build only their few circuits: a rate there means nothing.
            circ = row.get("circuits_per_s") if wl in ("create", "flood-bulk") else None
            if row["status"] == "failed":
                cost = f"FAILED ({_short(row['reason'], 60)}) {cost}"
            out.append(
                f"| {wl_label} | {name} | {cost} | {split_cell(row)} | {_f(row.get('relay_cores'), 2)} "
                f"| {_f(row.get('mb_per_s'))} | {_f(row.get('cells_per_s'), 0)} | {lat} "
                f"| {_f(circ)} | {_f(row.get('peak_rss_mib'))} ({_f(row.get('rss_start_mib'))}) |")
    for subj, row in collapsed.items():
        out.append(f"| all workloads | {labels[subj]} | {row['status']}: {_short(row['reason'], 300)} "
                   "| | | | | | | |")
    return "\n".join(out)


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _per(row, key, unit):
    v, n = row.get(key), row.get(unit)
    return v / n if v is not None and n else None


def render_ratios(rows, base, others, labels):
    """Fors/C tor ratios for each of `others` against `base` (ok rows only).  CPU cost and
    latency: lower is better for Fors; MB/s, cells/s and circuits/s: higher is better."""
    out = ["| Workload | Relay | CPU cost ÷ | user ÷ | sys ÷ | MB/s ÷ | cells/s ÷ | p50 ÷ | p99 ÷ "
           "| circuits/s ÷ | peak RSS ÷ |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    dead = {s for s in others
            if all(r["status"] not in ("ok", "failed") for r in rows if r["subject"] == s)}
    for wl, wl_label in WORKLOADS:
        b = next((r for r in rows if r["subject"] == base and r["workload"] == wl), None)
        for subj in others:
            o = next((r for r in rows if r["subject"] == subj and r["workload"] == wl), None)
            if o is None or b is None or subj in dead:
                continue
            if o["status"] != "ok" or b["status"] != "ok":
                why = o if o["status"] != "ok" else b
                who = labels[why["subject"]]
                out.append(f"| {wl_label} | {labels[subj]} | n/a ({who} {why['status']}) "
                           "| | | | | | | | |")
                continue
            cost_key = "cpu_ms_per_circuit" if wl == "create" else "cpu_s_per_gb"
            cells = [ratio(o.get(k), b.get(k)) for k in
                     (cost_key, "mb_per_s", "cells_per_s", "lat_p50_ms", "lat_p99_ms",
                      "circuits_per_s", "peak_rss_mib")]
            if wl == "create":
                cells[1] = cells[2] = None  # no bulk data in this workload
            else:
                cells[5] = None if wl != "flood-bulk" else cells[5]
            # User and system time apart, each per unit of work (byte or handshake).
            unit = "handshakes" if wl == "create" else "bytes"
            cells[1:1] = [ratio(_per(o, k, unit), _per(b, k, unit))
                          for k in ("relay_user_s", "relay_sys_s")]
            out.append(f"| {wl_label} | {labels[subj]} | "
                       + " | ".join(_f(c, 2) for c in cells) + " |")
    for subj in sorted(dead):
        status = next(r["status"] for r in rows if r["subject"] == subj)
        out.append(f"| all workloads | {labels[subj]} | n/a ({status}) | | | | | | | | |")
    return "\n".join(out)


# Issue #13's goals: relay CPU per GB at least this many times below C tor's, exit and middle.
CPU_GOAL = {"exit-download": 4, "exit-upload": 4, "middle-forward": 5,
            "exit-download-cgo": 4, "exit-upload-cgo": 4, "middle-forward-cgo": 5}


def floor_figures(fors_row, ctor_row, goal):
    """What the kernel's share leaves for a CPU goal: the budget (C tor's total ÷ goal), the
    Fors user time that budget leaves once Fors's own system time is paid (negative: the goal
    is out of reach even with no user time at all), and the best ratio with user time zero
    (C tor's total ÷ Fors's system time).  Everything in s/GB; None where a figure is missing."""
    total, sys_ = ctor_row.get("cpu_s_per_gb"), fors_row.get("sys_s_per_gb")
    if total is None or sys_ is None:
        return None
    budget = total / goal
    return {"goal": goal, "ctor_s_per_gb": total, "budget": budget, "fors_sys": sys_,
            "fors_user": fors_row.get("user_s_per_gb"), "user_left": budget - sys_,
            "best_ratio": total / sys_ if sys_ > 0 else None, "reachable": sys_ < budget}


def render_floor(rows, base, others, labels):
    """The kernel floor against issue #13's goals, one line per Fors subject and bulk workload
    with a goal; empty when no row has the user/system split."""
    out = ["| Workload | Relay | goal | C tor s/GB | budget (C tor ÷ goal) | Fors sys s/GB "
           "| Fors user s/GB | user left for the goal | best ratio at user 0 |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for wl, wl_label in WORKLOADS:
        if wl not in CPU_GOAL:
            continue
        b = next((r for r in rows if r["subject"] == base and r["workload"] == wl), None)
        for subj in others:
            o = next((r for r in rows if r["subject"] == subj and r["workload"] == wl), None)
            if o is None or b is None or o["status"] != "ok" or b["status"] != "ok":
                continue
            f = floor_figures(o, b, CPU_GOAL[wl])
            if f is None:
                continue
            left = f"{f['user_left']:.2f}" if f["reachable"] else \
                f"{f['user_left']:.2f} (out of reach)"
            best = f"{f['best_ratio']:.2f}×" if f["best_ratio"] is not None else "–"
            out.append(f"| {wl_label} | {labels[subj]} | {f['goal']}× | {_f(f['ctor_s_per_gb'], 2)} "
                       f"| {f['budget']:.2f} | {_f(f['fors_sys'], 2)} | {_f(f['fors_user'], 2)} "
                       f"| {left} | {best} |")
    return "\n".join(out) if len(out) > 2 else ""


def splice_section(text, mode, body):
    """Puts `body` into RESULTS.md text as the `mode` subsection of the side-by-side section,
    replacing an earlier one of the same mode and refreshing the section's introduction; the
    other modes' subsections and every other section are left untouched."""
    block_re = re.compile(r"<!-- bench-compare:([\w-]+):begin -->\n.*?<!-- bench-compare:\1:end -->\n",
                          re.S)
    block = f"<!-- bench-compare:{mode}:begin -->\n{body.rstrip()}\n<!-- bench-compare:{mode}:end -->\n"
    start = text.find(SECTION_TITLE)
    if start < 0:
        sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{sep}{SECTION_TITLE}\n\n{SECTION_INTRO}\n{block}"
    nxt = re.search(r"^## ", text[start + len(SECTION_TITLE):], re.M)
    stop = start + len(SECTION_TITLE) + nxt.start() if nxt else len(text)
    blocks = [(m.group(1), m.group(0)) for m in block_re.finditer(text[start:stop])]
    if any(m == mode for m, _ in blocks):
        blocks = [(m, block if m == mode else b) for m, b in blocks]
    else:
        blocks.append((mode, block))
    section = f"{SECTION_TITLE}\n\n{SECTION_INTRO}\n" + "\n".join(b for _, b in blocks)
    if nxt:
        section += "\n"
    return text[:start] + section + text[stop:]
