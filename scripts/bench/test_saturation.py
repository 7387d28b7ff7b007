"""Unit tests for scripts/bench/saturation.py: python3 -m unittest discover -s scripts/bench"""

import unittest

import saturation as sat


class Helpers(unittest.TestCase):
    def test_metrics_are_summed_over_labels(self):
        text = "\n".join([
            "# HELP fors_shard_cross_pushed pushed",
            'fors_shard_cross_pushed{shard="0"} 10',
            'fors_shard_cross_pushed{shard="1"} 5',
            "fors_shard_loop_iterations 7",
            'fors_relay_circuits_open{shard="0"} 99',  # not wanted
            "fors_shard_cross_popped{shard=\"0\"} not-a-number",
        ])
        self.assertEqual(sat.parse_metrics(text),
                         {"fors_shard_cross_pushed": 15.0, "fors_shard_loop_iterations": 7.0})

    def test_stat_comm_with_spaces_and_parens(self):
        # comm "fors (x) y"; utime 30, stime 12 are fields 14 and 15.
        line = "123 (fors (x) y) S " + " ".join(["0"] * 10) + " 30 12 0 0"
        self.assertEqual(sat.relaystat.parse_stat_cpu_ticks(line), 42)

    def test_per_core_figures_label_extrapolated_below_busy(self):
        f = sat.per_core_figures(200_000, 10.0, 2.0)
        self.assertAlmostEqual(f["relay_cores"], 0.2)
        self.assertAlmostEqual(f["relay_ns_per_cell"], 1000.0)
        self.assertAlmostEqual(f["cells_per_s_per_busy_core"], 1_000_000)
        self.assertFalse(f["bottleneck"])
        self.assertEqual(f["per_core_figure"], "extrapolated")
        busy = sat.per_core_figures(900_000, 10.0, 9.5)
        self.assertTrue(busy["bottleneck"])
        self.assertEqual(busy["per_core_figure"], "measured")
        self.assertEqual(sat.per_core_figures(None, 10.0, 1.0), {})
        self.assertEqual(sat.per_core_figures(1000, 10.0, None), {})


if __name__ == "__main__":
    unittest.main()
