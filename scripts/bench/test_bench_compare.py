"""Unit tests for the bench-compare helpers: python3 -m unittest discover -s scripts/bench"""

import importlib.util
import os
import unittest

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
        self.assertEqual(cells[2:5], ["0.50", "2.00", "1.00"])  # cost, MB/s, cells/s
        self.assertEqual(cells[-1], "0.50")  # RSS

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


if __name__ == "__main__":
    unittest.main()
