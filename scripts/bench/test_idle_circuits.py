"""Unit tests for scripts/bench/idle_circuits.py: python3 -m unittest discover -s scripts/bench"""

import os
import unittest

import idle_circuits as ic


class Helpers(unittest.TestCase):
    def test_slope_is_bytes_per_circuit_when_fed_kib(self):
        # 4 KiB more per 1000 circuits: 4.096 bytes per circuit.
        pts = [(0, 100_000), (1000, 100_004), (10_000, 100_040)]
        self.assertAlmostEqual(ic.slope(pts) * 1024, 4.096)
        self.assertIsNone(ic.slope([(0, 1)]))
        self.assertIsNone(ic.slope([(0, None), (10, 5)]))

    def test_loadgen_lines(self):
        self.assertEqual(ic.parse_line('{"idle_hold_end": {"stage": 5, "open": 4}}\n'),
                         ("idle_hold_end", {"stage": 5, "open": 4}))
        self.assertEqual(ic.parse_line('{"ok": false, "errors": {}}')[0], "summary")
        self.assertIsNone(ic.parse_line("{not json"))
        self.assertIsNone(ic.parse_line("fors-loadgen: error"))

    def test_table_reports_refusals_and_partial_stages(self):
        idle = {"rss_kib": 100 * 1024, "pss_kib": 90 * 1024}
        held = {"stages": [
            {"stage": 1000, "hold_end": {"open": 1000, "refused": 0, "failed": 0, "killed": 0},
             "mem": {"rss_kib": 104 * 1024}},
            {"stage": 2000, "hold_end": {"open": 1990, "refused": 10, "failed": 0, "killed": 0},
             "mem": {"rss_kib": 108 * 1024}}],
            "after_release": {"rss_kib": 101 * 1024}}
        result = {"stages": [1000, 2000, 3000],
                  "idle": {ic.CTOR: idle, ic.FORS1: idle, ic.FORS2: idle},
                  "held": {ic.FORS1: held}}
        t = ic.table(result)
        row = next(line for line in t.splitlines() if line.startswith("| Fors, 1 shard"))
        self.assertIn("(1,990 open)", row)
        self.assertIn("not reached", row)
        self.assertIn("10 / 0 / 0", row)
        self.assertIn("not run", next(line for line in t.splitlines() if "C tor" in line))
        # Over the stages: 4 MiB more for 990 more circuits.
        self.assertAlmostEqual(ic.per_circuit(idle, held) / 1024, 4096 / 990, places=3)
        # Overall: 8 MiB over 1990 circuits.
        self.assertAlmostEqual(ic.overall_per_circuit(idle, held) / 1024, 8192 / 1990, places=3)
        # One stage: the idle point and it.
        one = {"stages": held["stages"][:1], "after_release": held["after_release"]}
        self.assertAlmostEqual(ic.per_circuit(idle, one) / 1024, 4096 / 1000, places=3)

    def test_own_memory_is_readable(self):
        m = ic.memory(os.getpid())
        self.assertGreater(m["rss_kib"], 0)


if __name__ == "__main__":
    unittest.main()
