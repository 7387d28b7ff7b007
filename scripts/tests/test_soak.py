"""Unit tests of scripts/soak.py's parsers and verdict (pure functions over sample lists). No
network, no tor."""
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import soak  # noqa: E402

SEED = int(os.environ.get("SOAK_TEST_SEED", random.SystemRandom().randrange(1 << 31)))
print(f"test_soak seed {SEED}", file=sys.stderr)

OPTS = {"warmup": 0.2, "rss_ratio": 1.25, "rss_trend": 1.10, "fd_margin": 16,
        "queue_slack": 64.0, "interval": 10}


def run(rss, fds, depth, load_s=600, cooldown=2, noise=0.0, rng=None):
    """A relay's samples every 10 s: rss(t), fds(t), depth(t) given as functions of t."""
    rng = rng or random.Random(SEED)
    out = []
    t = 0
    while t <= load_s + cooldown * 10:
        out.append({"t": t, "rss_kb": int(rss(t) * (1 + noise * (rng.random() - 0.5))),
                    "fds": fds(t), "metrics": {"fors_relay_queued_cells": depth(t),
                                               "fors_relay_circuits_open": 5.0,
                                               "fors_relay_queued_cells_peak": t * 10.0}})
        t += 10
    return out


def good_loadgen(name="bulk"):
    return {"name": name, "rc": 0, "summary": {"ok": True, "integrity_errors": 0,
                                                "bytes_verified": 123}}


def data_for(samples, loadgen=None, alive=True, load_s=600):
    return {"load_s": load_s, "relays": {"forsexit1": {"samples": samples, "alive_at_end": alive}},
            "loadgen": loadgen if loadgen is not None else [good_loadgen()]}


def failed(result):
    return [n for n, ok, _ in result["checks"] if not ok]


class Parsers(unittest.TestCase):
    def test_vmrss(self):
        self.assertEqual(soak.parse_vmrss_kb("Name:\tfors\nVmRSS:\t  123456 kB\nVmSwap: 0 kB\n"),
                         123456)
        self.assertIsNone(soak.parse_vmrss_kb("Name:\tfors\n"))

    def test_prometheus(self):
        text = ("# HELP fors_relay_queued_cells cells\n# TYPE fors_relay_queued_cells gauge\n"
                "fors_relay_queued_cells{shard=\"0\"} 12\nfors_relay_queued_cells{shard=\"1\"} 3\n"
                "fors_relay_circuits_open 7\nfors_relay_uptime_seconds 99\n"
                "fors_relay_cells_relayed_total 1e3\nfors_relay_onion_queue_length NaN\n")
        m = soak.parse_prometheus(text)
        self.assertEqual(m['fors_relay_queued_cells{shard="0"}'], 12)
        self.assertEqual(m['fors_relay_queued_cells{shard="1"}'], 3)
        self.assertEqual(m["fors_relay_circuits_open"], 7)
        self.assertEqual(m["fors_relay_cells_relayed_total"], 1000)
        self.assertNotIn("fors_relay_uptime_seconds", m)

    def test_depth_metric(self):
        self.assertTrue(soak.is_depth_metric("fors_relay_onion_queue_length"))
        self.assertTrue(soak.is_depth_metric("fors_relay_cross_shard_overflow_depth"))
        self.assertFalse(soak.is_depth_metric("fors_relay_cross_shard_queue_full_total"))
        self.assertFalse(soak.is_depth_metric("fors_relay_queued_cells_peak"))
        self.assertFalse(soak.is_depth_metric("fors_shard_send_queue_peak_bufs"))
        # A histogram's series are cumulative counts, not depths (the cell queueing delay).
        for h in ('fors_relay_all_shards_cell_queue_delay_seconds_bucket{le="+Inf"}',
                  "fors_relay_cell_queue_delay_seconds_sum",
                  'fors_relay_cell_queue_delay_seconds_count{shard="0"}'):
            self.assertFalse(soak.is_depth_metric(h), h)
            self.assertFalse(soak.is_watched_metric(h), h)

    def test_progress(self):
        self.assertEqual(soak.parse_progress(
            "[  12.0s]     3.01 MB/s      6000 cells/s  circuits    2  handshakes      2"
            "  errors 0"),
            (12.0, 3.01))
        self.assertIsNone(soak.parse_progress("fors-loadgen: oops"))

    def test_duration(self):
        self.assertEqual(soak.parse_duration("30m"), 1800)
        self.assertEqual(soak.parse_duration("90s"), 90)
        self.assertEqual(soak.parse_duration("120"), 120)
        with self.assertRaises(ValueError):
            soak.parse_duration("soon")


class Verdict(unittest.TestCase):
    def test_flat_run_passes(self):
        # RSS grows during warm-up, then stays flat with 4 % noise; fds and depths steady.
        s = run(lambda t: 100_000 if t < 60 else 150_000, lambda t: 40, lambda t: 10.0,
                noise=0.04)
        r = soak.judge(data_for(s), OPTS)
        self.assertTrue(r["ok"], r["checks"])

    def test_growth_after_warmup_fails(self):
        # A steady leak: +20 % between the second and the last quarter.
        s = run(lambda t: 150_000 + 100 * t, lambda t: 40, lambda t: 10.0)
        r = soak.judge(data_for(s), OPTS)
        self.assertFalse(r["ok"])
        self.assertEqual(failed(r), ["forsexit1 RSS flat"])

    def test_slow_growth_within_ratio_but_trending_fails(self):
        # max/min stays under 1.25, but the last quarter is > 10 % above the second.
        s = run(lambda t: 150_000 + 60 * t, lambda t: 40, lambda t: 10.0)
        ok, d = soak.judge_rss([x["rss_kb"] for x in s if 120 <= x["t"] <= 600],
                               [x["rss_kb"] for x in s if 150 <= x["t"] < 300],
                               [x["rss_kb"] for x in s if 450 <= x["t"] <= 600], 1.25, 1.10)
        self.assertLess(d["max_over_min"], 1.25)
        self.assertFalse(ok)

    def test_ramp_into_the_second_quarter_then_flat_passes(self):
        # The soak-short's shape (2026-12-07): a 40 % warm-up, RSS ramping until ~60 % of the
        # load, then flat. The second quarter (inside the warm-up) was compared with the last
        # and failed a flat relay; the first half after warm-up is what counts.
        s = run(lambda t: 43_000 + 600 * min(t, 60) if t < 60 else 79_000 + 20 * min(t - 60, 60),
                lambda t: 36, lambda t: 0.0, load_s=120)
        opts = dict(OPTS, warmup=0.4)
        r = soak.judge(data_for(s, load_s=120), opts)
        self.assertTrue(r["ok"], r["checks"])

    def test_growth_after_a_long_warmup_fails(self):
        # The same 40 % warm-up with a steady leak after it still fails.
        s = run(lambda t: 60_000 + 200 * t, lambda t: 36, lambda t: 0.0, load_s=120)
        opts = dict(OPTS, warmup=0.4)
        r = soak.judge(data_for(s, load_s=120), opts)
        self.assertEqual(failed(r), ["forsexit1 RSS flat"])

    def test_slope(self):
        self.assertAlmostEqual(soak.slope_per_min([(0, 100), (60, 110), (120, 120)]), 10.0)
        self.assertIsNone(soak.slope_per_min([(0, 1)]))
        s = run(lambda t: 150_000 + 10 * t, lambda t: 40, lambda t: 10.0)
        d = dict((n, det) for n, _, det in soak.judge(data_for(s), OPTS)["checks"])
        self.assertAlmostEqual(d["forsexit1 RSS flat"]["slope_kb_per_min"], 600.0, delta=1)

    def test_fd_leak_fails(self):
        s = run(lambda t: 150_000, lambda t: 40 + t // 10, lambda t: 10.0)
        r = soak.judge(data_for(s), OPTS)
        self.assertEqual(failed(r), ["forsexit1 fds back"])

    def test_fds_back_within_margin_pass(self):
        ok, d = soak.judge_fds(100, 110, 16)
        self.assertTrue(ok)
        self.assertFalse(soak.judge_fds(100, 117, 16)[0])
        self.assertFalse(soak.judge_fds(None, 10, 16)[0])

    def test_growing_queue_fails(self):
        s = run(lambda t: 150_000, lambda t: 40, lambda t: float(t * 5))
        r = soak.judge(data_for(s), OPTS)
        self.assertEqual(failed(r), ["forsexit1 queues bounded"])

    def test_queue_not_drained_after_cooldown_fails(self):
        samples = [{"fors_relay_queued_cells": 10.0}] * 5
        ok, d = soak.judge_queues(samples, samples, samples, {"fors_relay_queued_cells": 500.0},
                                  64)
        self.assertFalse(ok)
        ok, _ = soak.judge_queues(samples, samples, samples, {"fors_relay_queued_cells": 0.0}, 64)
        self.assertTrue(ok)

    def test_no_depth_gauge_is_a_failure(self):
        s = run(lambda t: 150_000, lambda t: 40, lambda t: 1.0)
        for x in s:
            x["metrics"] = {}
        r = soak.judge(data_for(s), OPTS)
        self.assertIn("forsexit1 queues bounded", failed(r))

    def test_loadgen_failures(self):
        s = run(lambda t: 150_000, lambda t: 40, lambda t: 1.0)
        bad = {"name": "bulk", "rc": 1, "summary": {"ok": False, "integrity_errors": 1}}
        self.assertEqual(failed(soak.judge(data_for(s, [bad]), OPTS)), ["loadgen bulk"])
        none = {"name": "flood", "rc": None, "summary": None}
        self.assertEqual(failed(soak.judge(data_for(s, [none]), OPTS)), ["loadgen flood"])
        lying = {"name": "x", "rc": 0, "summary": {"ok": True, "integrity_errors": 2}}
        self.assertEqual(failed(soak.judge(data_for(s, [lying]), OPTS)), ["loadgen x"])

    def test_dead_relay_fails(self):
        s = run(lambda t: 150_000, lambda t: 40, lambda t: 1.0)
        self.assertEqual(failed(soak.judge(data_for(s, alive=False), OPTS)), ["forsexit1 alive"])

    def test_too_few_samples_fails(self):
        r = soak.judge(data_for([{"t": 0, "rss_kb": 1, "fds": 1, "metrics": {}}]), OPTS)
        self.assertFalse(r["ok"])


if __name__ == "__main__":
    unittest.main()
