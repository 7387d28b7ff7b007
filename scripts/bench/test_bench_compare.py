"""Unit tests for the bench-compare helpers: python3 -m unittest discover -s scripts/bench"""

import importlib.util
import os
import subprocess
import tempfile
import unittest

import alloc_compare
import measure
import perf_split
import split_medians
import tcp_floor
import relaystat
import report

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "bench_compare", os.path.join(os.path.dirname(HERE), "bench-compare.py"))
bench_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_compare)


def loadgen_json(**kw):
    j = {"ok": True, "bytes_verified": 200_000_000, "mb_per_s": 40.0, "cells_per_s": 80000.0,
         "latency_us": {"kind": "sendme_rtt", "p50": 1500.0, "p99": 9000.0},
         "handshake_ms": {"p50": 2.0, "p99": 7.5}, "handshakes": 8, "handshakes_per_s": 1.6,
         "elapsed_s": 5.0, "loadgen_cpu_cores": 0.9, "integrity_errors": 0, "errors": {}}
    j.update(kw)
    return j


class ProcParsing(unittest.TestCase):
    def test_stat_fields_after_a_comm_with_parens_and_spaces(self):
        # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime ...
        line = "4242 (tor (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 3 0"
        self.assertEqual(relaystat.parse_stat_cpu_ticks(line), 175)

    def test_short_stat_is_an_error(self):
        with self.assertRaises(relaystat.ProcError):
            relaystat.parse_stat_cpu_ticks("1 (x) S 1 2")

    def test_status_kib(self):
        text = "Name:\ttor\nVmPeak:\t  9000 kB\nVmHWM:\t   73412 kB\nVmRSS:\t 1024 kB\n"
        self.assertEqual(relaystat.parse_status_kib(text, "VmHWM"), 73412)
        self.assertEqual(relaystat.parse_status_kib(text, "VmRSS"), 1024)
        self.assertIsNone(relaystat.parse_status_kib(text, "VmSwap"))

    def test_stat_user_and_system_apart(self):
        line = "4242 (tor (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 3 0"
        self.assertEqual(relaystat.parse_stat_cpu_split(line), (150, 25))
        for bad in ("4242 tor S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s 0 0",
                    "1 (x) S 1 2 3 4 5 6 7 8 9 10 150"):
            with self.assertRaises(relaystat.ProcError, msg=bad):
                relaystat.parse_stat_cpu_split(bad)
        d = relaystat.cpu_delta(relaystat.CpuTimes(1.0, 2.0), relaystat.CpuTimes(1.5, 2.25))
        self.assertEqual(d, relaystat.CpuTimes(0.5, 0.25))

    def test_own_process_user_and_system_times(self):
        t0 = relaystat.cpu_times(os.getpid())
        sum(i * i for i in range(300_000))  # some user time
        t1 = relaystat.cpu_times(os.getpid())
        self.assertGreaterEqual(t1.user, t0.user)
        self.assertGreaterEqual(t1.sys, t0.sys)
        self.assertAlmostEqual(relaystat.cpu_seconds(os.getpid()), t1.user + t1.sys, delta=0.5)

    def test_own_process_is_readable(self):
        self.assertGreaterEqual(relaystat.cpu_seconds(os.getpid()), 0.0)
        self.assertGreater(relaystat.peak_rss_kib(os.getpid()), 0)
        self.assertTrue(relaystat.thread_cpus(os.getpid()))


class Rows(unittest.TestCase):
    def test_bulk_row(self):
        r = report.compute_row("ctor", "exit-upload", loadgen_json(), 1.0, 20480, 6.0, 10240)
        self.assertEqual(r["status"], "ok")
        self.assertAlmostEqual(r["cpu_s_per_gb"], 5.0)
        self.assertAlmostEqual(r["lat_p50_ms"], 1.5)
        self.assertAlmostEqual(r["lat_p99_ms"], 9.0)
        self.assertAlmostEqual(r["peak_rss_mib"], 20.0)
        self.assertAlmostEqual(r["rss_start_mib"], 10.0)
        self.assertAlmostEqual(r["relay_cores"], 0.2)  # 1 CPU-s over the loadgen's 5 s

    def test_bulk_row_user_and_system(self):
        cpu = relaystat.CpuTimes(user=0.4, sys=0.6)
        r = report.compute_row("fors1", "exit-download", loadgen_json(), cpu, 1024, 5)
        self.assertAlmostEqual(r["relay_cpu_s"], 1.0)
        self.assertAlmostEqual(r["cpu_s_per_gb"], 5.0)  # 1 CPU-s over 0.2 GB
        self.assertAlmostEqual(r["user_s_per_gb"], 2.0)
        self.assertAlmostEqual(r["sys_s_per_gb"], 3.0)
        self.assertAlmostEqual(r["sys_share"], 0.6)
        self.assertEqual(report.split_cell(r), "2.00 / 3.00 (60 %)")
        table = report.render_table([r], {"fors1": "F"})
        self.assertIn("| 5.00 s/GB | 2.00 / 3.00 (60 %) |", table)
        # Every line of the table has the same number of cells as its header.
        widths = {l.count("|") for l in table.splitlines()}
        self.assertEqual(len(widths), 1, table)

    def test_a_sum_only_row_has_no_split(self):
        r = report.compute_row("fors1", "exit-download", loadgen_json(), 1.0, 1024, 5)
        self.assertIsNone(r["user_s_per_gb"])
        self.assertIsNone(r["sys_share"])
        self.assertEqual(report.split_cell(r), "–")

    def test_create_row_split_per_circuit(self):
        lg = loadgen_json(bytes_verified=0, handshakes=1000, handshakes_per_s=200.0)
        r = report.compute_row("fors1", "create", lg, relaystat.CpuTimes(0.3, 0.2), None, 5.0)
        self.assertEqual(report.split_cell(r), "0.300 / 0.200 (40 %)")

    def test_create_row_uses_handshakes(self):
        lg = loadgen_json(bytes_verified=0, handshakes=1000, handshakes_per_s=200.0)
        r = report.compute_row("fors1", "create", lg, 0.5, None, 5.0)
        self.assertIsNone(r["cpu_s_per_gb"])
        self.assertAlmostEqual(r["cpu_ms_per_circuit"], 0.5)
        self.assertEqual((r["lat_p50_ms"], r["lat_p99_ms"]), (2.0, 7.5))
        self.assertEqual(report.cost_cell(r), "0.500 ms/circ")

    def test_failed_run_says_why(self):
        lg = loadgen_json(ok=False, errors={"destroy_received": 3, "begin_refused": 0})
        r = report.compute_row("fors1", "exit-download", lg, 0.1, None, 1.0)
        self.assertEqual(r["status"], "failed")
        self.assertIn("destroy_received=3", r["reason"])
        self.assertNotIn("begin_refused", r["reason"])

    def test_ratios(self):
        rows = [report.compute_row("ctor", "exit-download", loadgen_json(), 1.0, 20480, 5),
                report.compute_row("fors1", "exit-download",
                                   loadgen_json(mb_per_s=80.0), 0.5, 10240, 5)]
        table = report.render_ratios(rows, "ctor", ["fors1"], {"ctor": "C", "fors1": "F"})
        line = [l for l in table.splitlines() if l.startswith("| exit download")][0]
        cells = [c.strip() for c in line.strip("|").split("|")]
        self.assertEqual(cells[2:7], ["0.50", "–", "–", "2.00", "1.00"])
        # cost, user, sys (none: only the sums were given), MB/s, cells/s
        self.assertEqual(cells[-1], "0.50")  # RSS

    def test_ratios_of_user_and_system_time(self):
        rows = [report.compute_row("ctor", "middle-forward", loadgen_json(),
                                   relaystat.CpuTimes(0.5, 0.5), 1024, 5),
                # Half the bytes: per GB, user 1.6× and sys 0.4× of C tor's.
                report.compute_row("fors1", "middle-forward",
                                   loadgen_json(bytes_verified=100_000_000),
                                   relaystat.CpuTimes(0.4, 0.1), 1024, 5)]
        table = report.render_ratios(rows, "ctor", ["fors1"], {"ctor": "C", "fors1": "F"})
        line = [l for l in table.splitlines() if l.startswith("| middle forward")][0]
        cells = [c.strip() for c in line.strip("|").split("|")]
        self.assertEqual(cells[2:5], ["1.00", "1.60", "0.40"])  # total, user, sys
        widths = {l.count("|") for l in table.splitlines()}
        self.assertEqual(len(widths), 1, table)

    def test_kernel_floor(self):
        # C tor 4 s/GB at the exit; Fors spends 1.5 s/GB in the kernel: the 4× budget is
        # 1 s/GB, so even with no user time the best is 4 / 1.5 = 2.67×.
        ctor = report.compute_row("ctor", "exit-download", loadgen_json(),
                                  relaystat.CpuTimes(0.5, 0.3), 1024, 5)
        fors = report.compute_row("fors1", "exit-download", loadgen_json(),
                                  relaystat.CpuTimes(0.2, 0.3), 1024, 5)
        f = report.floor_figures(fors, ctor, 4)
        self.assertAlmostEqual(f["budget"], 1.0)
        self.assertAlmostEqual(f["user_left"], -0.5)
        self.assertAlmostEqual(f["best_ratio"], 4.0 / 1.5)
        self.assertFalse(f["reachable"])
        # At the middle (goal 5×) with a small kernel share the goal is reachable.
        ctor_m = report.compute_row("ctor", "middle-forward", loadgen_json(),
                                    relaystat.CpuTimes(0.8, 0.2), 1024, 5)
        fors_m = report.compute_row("fors1", "middle-forward", loadgen_json(),
                                    relaystat.CpuTimes(0.3, 0.02), 1024, 5)
        m = report.floor_figures(fors_m, ctor_m, 5)
        self.assertTrue(m["reachable"])
        self.assertAlmostEqual(m["user_left"], 1.0 - 0.1)
        t = report.render_floor([ctor, fors, ctor_m, fors_m], "ctor", ["fors1"],
                                {"ctor": "C", "fors1": "F"})
        self.assertIn("| exit download | F | 4× | 4.00 | 1.00 | 1.50 | 1.00 | -0.50 (out of reach) "
                      "| 2.67× |", t)
        self.assertIn("| middle forward (down+up) | F | 5× | 5.00 | 1.00 | 0.10 | 1.50 | 0.90 "
                      "| 50.00× |", t)
        # Without the split there is nothing to say.
        plain = [report.compute_row(s, "exit-download", loadgen_json(), 1.0, 1024, 5)
                 for s in ("ctor", "fors1")]
        self.assertEqual(report.render_floor(plain, "ctor", ["fors1"], {"ctor": "C", "fors1": "F"}),
                         "")

    def test_unusable_subject_is_one_line(self):
        rows = [report.compute_row("ctor", wl, loadgen_json(), 1.0, 1024, 5)
                for wl, _ in report.WORKLOADS]
        rows += [report.unusable_row("fors1", wl, "exited at startup") for wl, _ in report.WORKLOADS]
        labels = {"ctor": "C", "fors1": "F"}
        t = report.render_table(rows, labels)
        self.assertEqual(t.count("exited at startup"), 1)
        self.assertEqual(t.count("| C |"), len(report.WORKLOADS))
        r = report.render_ratios(rows, "ctor", ["fors1"], labels)
        self.assertEqual(r.count("n/a (not usable)"), 1)


class PerfSplit(unittest.TestCase):
    REPORT = """# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 12K  of event 'cpu-clock:pppH'
# Event count (approx.): 3000000000
#
# Overhead  Symbol
# ........  ......
#
    20.50%  [k] copy_user_enhanced_fast_string
    10.00%  [.] fors::crypto::aes::ctr_xor
     9.50%  [k] tcp_sendmsg_locked
     5.00%  [.] 0x00007f0000001234
     0.00%  [k] unrelated
    55.00%  [k] native_queued_spin_lock_slowpath
"""

    def test_parse_and_split(self):
        event, samples, rows = perf_split.parse_report(self.REPORT)
        self.assertEqual((event, samples), ("cpu-clock:pppH", "12K"))
        self.assertEqual(len(rows), 6)
        s = perf_split.summarize(rows, top=2)
        self.assertAlmostEqual(s["kernel_pct"], 85.0)
        self.assertAlmostEqual(s["user_pct"], 15.0)
        self.assertEqual(s["top_kernel"], [(55.0, "native_queued_spin_lock_slowpath"),
                                           (20.5, "copy_user_enhanced_fast_string")])
        self.assertEqual(s["top_user"], [(10.0, "fors::crypto::aes::ctr_xor"),
                                         (5.0, "0x00007f0000001234")])
        t = perf_split.render("x", event, samples, s)
        self.assertIn("kernel 85.0 %, user 15.0 %", t)
        self.assertIn("| 1 | `native_queued_spin_lock_slowpath` | 55.00 | "
                      "`fors::crypto::aes::ctr_xor` | 10.00 |", t)

    def test_sample_counts_replace_the_rounded_percentages(self):
        # Three lines of 1 sample in 3 print as 33.33 % each; the counts give exact shares.
        text = ("# Samples: 3  of event 'cpu-clock:pppH'\n"
                "    33.33%             1  [k] a\n"
                "    33.33%             1  [.] b\n"
                "    33.33%             1  [.] 0x0000000000001234\n")
        event, samples, rows = perf_split.parse_report(text)
        self.assertEqual(samples, "3")
        s = perf_split.summarize(rows)
        self.assertAlmostEqual(s["kernel_pct"] + s["user_pct"], 100.0)
        self.assertAlmostEqual(s["kernel_pct"], 100.0 / 3)

    def test_a_report_without_symbols_is_an_error(self):
        with self.assertRaises(perf_split.PerfError):
            perf_split.parse_report("# Samples: 0 of event 'cycles'\n#\n")


class SplitMedians(unittest.TestCase):
    def test_medians_and_floor_over_runs(self):
        def run(ctor, fors):
            return {"rows": [report.compute_row("ctor", "exit-download", loadgen_json(),
                                                relaystat.CpuTimes(*ctor), 1024, 5),
                             report.compute_row("fors1", "exit-download", loadgen_json(),
                                                relaystat.CpuTimes(*fors), 1024, 5)]}
        # 0.2 GB each: C tor 4, 5, 6 s/GB; Fors sys 1.0, 1.5, 0.5 s/GB.
        runs = [run((0.6, 0.2), (0.3, 0.2)), run((0.7, 0.3), (0.2, 0.3)),
                run((0.9, 0.3), (0.4, 0.1))]
        m = split_medians.medians(runs)
        self.assertAlmostEqual(m[("fors1", "exit-download")]["sys_s_per_gb"][0], 1.0)
        self.assertAlmostEqual(m[("ctor", "exit-download")]["cpu_s_per_gb"][0], 5.0)
        f = split_medians.floors(runs, "fors1")["exit-download"]
        self.assertEqual([round(x["user_left"], 2) for x in f], [0.0, -0.25, 1.0])
        t = split_medians.render(runs)
        self.assertIn("| exit download | Fors, 1 shard | 4× | 1.25 | 1.00 | 0.00 "
                      "(0.00, -0.25, 1.00) | 4.00× (4.00, 3.33, 12.00) |", t)
        # A failed row is left out, not counted as zero.
        runs[2]["rows"][1]["status"] = "failed"
        self.assertEqual(len(split_medians.floors(runs, "fors1")["exit-download"]), 2)


class TcpFloor(unittest.TestCase):
    def test_per_gb(self):
        r = tcp_floor.per_gb({"bytes": 500_000_000, "user_s": 0.1, "sys_s": 0.4, "wall_s": 2.0})
        self.assertAlmostEqual(r["user_s_per_gb"], 0.2)
        self.assertAlmostEqual(r["sys_s_per_gb"], 0.8)
        self.assertAlmostEqual(r["cpu_s_per_gb"], 1.0)
        self.assertAlmostEqual(r["mb_per_s"], 250.0)
        self.assertIsNone(tcp_floor.per_gb({"bytes": 0, "user_s": 0, "sys_s": 0, "wall_s": 1}))

    def test_a_small_transfer_is_relayed_whole(self):
        cpus = sorted(os.sched_getaffinity(0))
        r = tcp_floor.run(4, 16, cpus[-1], cpus[0], timeout=60)
        self.assertEqual(r["bytes"], 4_000_000)
        self.assertGreaterEqual(r["sys_s"], 0.0)
        self.assertEqual(r["chunk_kib"], 16)


class Splice(unittest.TestCase):
    BEFORE = "# Results\n\n## Relay crypto\n\ntext\n"

    def test_appends_the_section_then_replaces_only_its_mode(self):
        t1 = report.splice_section(self.BEFORE, "fors", "### run A\n")
        self.assertTrue(t1.startswith(self.BEFORE))
        self.assertIn(report.SECTION_TITLE, t1)
        t2 = report.splice_section(t1, "ctor-validation", "### run V\n")
        t3 = report.splice_section(t2, "fors", "### run B\n")
        self.assertNotIn("run A", t3)
        self.assertIn("run B", t3)
        self.assertIn("run V", t3)
        self.assertEqual(t3.count(report.SECTION_TITLE), 1)
        self.assertLess(t3.index("run B"), t3.index("run V"))  # kept in place
        self.assertTrue(t3.startswith(self.BEFORE))

    def test_a_later_section_is_kept(self):
        t = report.splice_section(self.BEFORE, "fors", "### run A\n") + "\n## Later\n\nkeep\n"
        t2 = report.splice_section(t, "fors", "### run B\n")
        self.assertTrue(t2.endswith("## Later\n\nkeep\n"))
        self.assertNotIn("run A", t2)
        t3 = report.splice_section(t2, "ctor-validation", "### run V\n")
        self.assertLess(t3.index("run V"), t3.index("## Later"))


    def test_the_introduction_is_refreshed(self):
        t = report.splice_section(self.BEFORE, "fors", "### run A\n")
        old = t.replace(report.SECTION_INTRO, "old words\n")
        t2 = report.splice_section(old, "fors", "### run B\n")
        self.assertNotIn("old words", t2)
        self.assertEqual(t2.count(report.SECTION_INTRO), 1)


class UpFailure(unittest.TestCase):
    def test_reason_quotes_the_dead_process(self):
        out = ("generating keys\nup failed; stopping what was started\n"
               "error: processes died while waiting for the first consensus: forsexit1\n"
               "--- forsexit1:\nusage: fors -f TORRC [--defaults-torrc FILE]\n"
               "       fors --verify-config -f TORRC\n       fors --version\n")
        r = bench_compare.up_failure_reason(out)
        self.assertTrue(r.startswith("processes died while waiting for the first consensus"))
        self.assertIn("usage: fors -f TORRC", r)
        self.assertNotIn("fors --version", r)


class ForsEnv(unittest.TestCase):
    def test_parse_env(self):
        self.assertEqual(bench_compare.parse_env(["LD_PRELOAD=/a/b.so", "X=1=2", "E="]),
                         {"LD_PRELOAD": "/a/b.so", "X": "1=2", "E": ""})
        self.assertEqual(bench_compare.parse_env(None), {})
        for bad in ("LD_PRELOAD", "=x", "1A=x", "A B=x"):
            with self.assertRaises(ValueError):
                bench_compare.parse_env([bad])

    def test_wrapper_passes_env_args_and_keeps_the_pid(self):
        with tempfile.TemporaryDirectory() as d:
            fake = os.path.join(d, "fake fors")  # a space: the quoting must hold
            with open(fake, "w") as f:
                f.write('#!/bin/sh\necho "$$ $FOO|$BAR|$*"\n')
            os.chmod(fake, 0o755)
            wrapper = os.path.join(d, "w.sh")
            with open(wrapper, "w") as f:
                f.write(bench_compare.wrapper_script(fake, {"FOO": "it's $HOME", "BAR": "b"}))
            os.chmod(wrapper, 0o755)
            p = subprocess.Popen([wrapper, "-f", "/x/torrc"], stdout=subprocess.PIPE, text=True,
                                 env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            out, _ = p.communicate(timeout=10)
            pid, rest = out.strip().split(" ", 1)
            self.assertEqual(int(pid), p.pid)  # exec, not a child: testnet.py's pid is Fors's
            self.assertEqual(rest, "it's $HOME|b|-f /x/torrc")

    def test_workload_subset(self):
        class A:
            workloads = None
        every = [k for k, _ in report.WORKLOADS]
        self.assertEqual(bench_compare.selected_workloads(A), every)
        A.workloads = "exit-upload, exit-download"
        self.assertEqual(bench_compare.selected_workloads(A), ["exit-upload", "exit-download"])
        for bad in ("exit", ",", "create,nope"):
            A.workloads = bad
            with self.assertRaises(ValueError):
                bench_compare.selected_workloads(A)

    def test_cgo_rows_need_cgo_at_the_subject_hop_on_every_circuit(self):
        ok = {"hop_crypto": [{"cgo": 4}, {"cgo": 4}]}
        self.assertIsNone(report.cgo_negotiation_problem(ok, "exit-download-cgo", 4))
        self.assertIsNone(report.cgo_negotiation_problem(ok, "middle-forward-cgo", 4))
        # The subject (hop 1 on exit paths, hop 0 on middle paths) ran tor1 on a circuit.
        mixed = {"hop_crypto": [{"cgo": 4}, {"cgo": 3, "tor1": 1}]}
        self.assertIn("hop 1", report.cgo_negotiation_problem(mixed, "exit-upload-cgo", 4))
        self.assertIsNone(report.cgo_negotiation_problem(
            {"hop_crypto": [{"cgo": 4}, {"tor1": 4}]}, "middle-forward-cgo", 4))
        self.assertIsNotNone(report.cgo_negotiation_problem(
            {"hop_crypto": [{"cgo": 2}]}, "middle-forward-cgo", 4))
        # A loadgen that recorded nothing (an older one, or no circuit opened) fails too.
        self.assertIsNotNone(report.cgo_negotiation_problem({}, "exit-download-cgo", 4))
        self.assertIsNotNone(report.cgo_negotiation_problem(None, "exit-download-cgo", 4))
        # Every CGO workload is a known workload, and its base workload exists.
        keys = [k for k, _ in report.WORKLOADS]
        for wl in report.CGO_SUBJECT_HOP:
            self.assertIn(wl, keys)
            self.assertIn(wl[:-len("-cgo")], keys)

    def test_shell_quote_of_a_quote(self):
        self.assertEqual(bench_compare.shell_quote("a'b"), "'a'\\''b'")


class AllocatorEvidence(unittest.TestCase):
    def test_jemalloc_thread(self):
        text, missing = measure.parse_allocator_evidence(
            ["fors", "shard-0", "jemalloc_bg_thd"], {"/usr/lib/libc.so.6"}, "")
        self.assertIn("jemalloc", text)
        self.assertEqual(missing, [])

    def test_preloaded_library_found_under_its_real_name(self):
        text, missing = measure.parse_allocator_evidence(
            ["fors"], {"/nonexistent/libmimalloc.so.2.0", "/usr/lib/libc.so.6"},
            "/nonexistent/libmimalloc.so.2.0")
        self.assertIn("libmimalloc.so.2.0", text)
        self.assertEqual(missing, [])

    def test_preload_not_mapped_is_reported(self):
        text, missing = measure.parse_allocator_evidence(
            ["fors"], {"/usr/lib/libc.so.6"}, "/nonexistent/libmimalloc.so.2")
        self.assertEqual(missing, ["/nonexistent/libmimalloc.so.2"])
        self.assertIn("glibc malloc", text)

    def test_own_process(self):
        text, missing = measure.allocator_evidence(os.getpid(), "")
        self.assertEqual(missing, [])
        self.assertTrue(text)


class AllocCompare(unittest.TestCase):
    def test_order_is_abc_cba(self):
        self.assertEqual(alloc_compare.run_order(["a", "b", "c"], 2),
                         [("a", 1), ("b", 1), ("c", 1), ("c", 2), ("b", 2), ("a", 2)])
        self.assertEqual(alloc_compare.run_order(["a", "b"], 1), [("a", 1), ("b", 1)])

    def test_mimalloc_runs_the_glibc_binary_with_ld_preload(self):
        class A:
            glibc_bin, jemalloc_bin, mimalloc_lib = "/g", "/j", "/lib/mi.so"
        argv = alloc_compare.bench_argv("mimalloc", "/run", A, ["--bulk-mb", "50"])
        self.assertIn("--no-write", argv)
        self.assertEqual(argv[argv.index("--fors-bin") + 1], "/g")
        self.assertEqual(argv[argv.index("--fors-env") + 1], "LD_PRELOAD=/lib/mi.so")
        self.assertEqual(argv[-2:], ["--bulk-mb", "50"])
        j = alloc_compare.bench_argv("jemalloc", "/run", A, [])
        self.assertEqual(j[j.index("--fors-bin") + 1], "/j")
        self.assertNotIn("--fors-env", j)

    def test_summary_ratios_are_per_run(self):
        def run(ctor_cpu, fors_cpu):
            return {"rows": [report.compute_row("ctor", "exit-download", loadgen_json(),
                                                ctor_cpu, 1024, 5),
                             report.compute_row("fors1", "exit-download", loadgen_json(),
                                                fors_cpu, 1024, 5)],
                    "env": {"loadavg": [1.0, 1.0, 1.0], "loadavg_end": [2.0, 1.0, 1.0]}}
        # Round 2 ran on a machine twice as loaded: the ratio, not the raw cost, is compared.
        runs = [("glibc", 1, run(1.0, 0.6)), ("jemalloc", 1, run(1.0, 0.5)),
                ("jemalloc", 2, run(2.0, 1.2)), ("glibc", 2, run(2.0, 1.0))]
        t = alloc_compare.render_summary(runs)
        line = [l for l in t.splitlines() if l.startswith("| exit download | 1 shard")][0]
        cells = [c.strip() for c in line.strip("|").split("|")]
        self.assertEqual(cells[2], "**0.55** (0.60, 0.50)")  # glibc
        self.assertEqual(cells[3], "**0.55** (0.50, 0.60)")  # jemalloc
        self.assertEqual(cells[4], "–")  # mimalloc not run
        self.assertNotIn("2 shards", t)  # no fors2 rows at all
        per_run = alloc_compare.render_runs(runs)
        self.assertIn("| 1.00 → 2.00 |", per_run)
        self.assertIn("3.00 s/GB (0.60)", per_run)  # glibc round 1: 0.6 CPU-s over 0.2 GB


if __name__ == "__main__":
    unittest.main()
