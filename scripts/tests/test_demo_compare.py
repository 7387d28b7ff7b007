"""Tests of the side-by-side that ends `testnet.py demo` (scripts/demo.sh), without tor: a fake
fors-loadgen and stand-in relay processes drive the real measuring and rendering code, so a
side-by-side that prints no ratio, or prints one from bad figures, fails here.

Run: python3 -m unittest discover -s scripts/tests -p 'test_*.py'   (or scripts/tests/testnet-unit.sh)
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))

import measure  # noqa: E402
import testnet  # noqa: E402

# Prints one loadgen JSON line for the bytes it was asked for (circuits x streams x (down+up)),
# or, with FAKE_LOADGEN_BROKEN set, fails every measured (multi-stream) run without JSON.
FAKE_LOADGEN = r'''#!/usr/bin/env python3
import json, os, sys, time
a = sys.argv[1:]
def opt(name, default):
    return a[a.index(name) + 1] if name in a else default
def kib(v):
    return int(v[:-1]) * 1024 if v.endswith("K") else int(v)
measured = "--streams" in a
if measured and os.environ.get("FAKE_LOADGEN_BROKEN"):
    sys.stderr.write("error: circuit 1 destroyed\n")
    sys.exit(3)
n = int(opt("--circuits", "1")) * int(opt("--streams", "1")) * (kib(opt("--download", "0")) + kib(opt("--upload", "0")))
time.sleep(0.4 if measured else 0.05)
with open(os.environ["FAKE_LOADGEN_LOG"], "a") as f:
    f.write(" ".join(a) + "\n")
print(json.dumps({"ok": True, "bytes_verified": n, "elapsed_s": 0.4, "mb_per_s": n / 1e6 / 0.4,
                  "errors": {}}))
'''

# Stand-in relays for at most 60 s (argv[1] is the "torrc"): one burns CPU, one uses none.
BUSY_RELAY = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"
IDLE_RELAY = "import time\ntime.sleep(60)\n"


class Rendering(unittest.TestCase):
    def row(self, nbytes, cpu, elapsed):
        return {"bytes": nbytes, "relay_cpu_s": cpu, "elapsed_s": elapsed}

    def test_combine_weighs_every_byte(self):
        c = testnet.combine_rows([self.row(100e6, 0.5, 1.0), self.row(300e6, 1.5, 3.0)])
        self.assertEqual(c["bytes"], 400e6)
        self.assertAlmostEqual(c["mb_per_s"], 100.0)
        self.assertAlmostEqual(c["cpu_s_per_gb"], 5.0)

    def test_table_has_both_exits_and_the_ratios(self):
        ctor = testnet.combine_rows([self.row(400e6, 2.72, 6.0)])  # 6.80 s/GB, 66.7 MB/s
        fors = testnet.combine_rows([self.row(400e6, 1.48, 5.0)])  # 3.70 s/GB, 80.0 MB/s
        lines = testnet.render_side_by_side(ctor, fors, "C tor 0.4.9 (exit1)", "Fors (forsexit1)")
        text = "\n".join(lines)
        self.assertRegex(lines[1], r"^C tor 0\.4\.9 \(exit1\)\s+66\.7\s+400\.0\s+2\.72\s+6\.80$")
        self.assertRegex(lines[2], r"^Fors \(forsexit1\)\s+80\.0\s+400\.0\s+1\.48\s+3\.70$")
        self.assertRegex(lines[3], r"^Fors / C tor\s+1\.20x\s+0\.54x$")
        self.assertIn("Fors spent 0.54x the CPU time C tor spent per GB", text)
        self.assertIn("vary by machine", text)

    def test_a_costlier_fors_is_said_plainly(self):
        ctor = testnet.combine_rows([self.row(400e6, 1.0, 5.0)])
        fors = testnet.combine_rows([self.row(400e6, 2.0, 5.0)])
        text = "\n".join(testnet.render_side_by_side(ctor, fors, "C tor", "Fors"))
        self.assertIn("2.00x", text)
        self.assertIn("no gain here", text)

    def test_missing_figures_are_an_error_not_a_table(self):
        good = testnet.combine_rows([self.row(400e6, 1.0, 5.0)])
        for bad in (testnet.combine_rows([]), testnet.combine_rows([self.row(0, 0.0, 1.0)]),
                    testnet.combine_rows([self.row(400e6, 0.0, 5.0)])):
            with self.assertRaises(testnet.TestnetError):
                testnet.render_side_by_side(good, bad, "C tor", "Fors")
            with self.assertRaises(testnet.TestnetError):
                testnet.render_side_by_side(bad, good, "C tor", "Fors")

    def test_workload_splits_the_bytes_over_streams_and_directions(self):
        args = types.SimpleNamespace(compare_mb=200.0, compare_circuits=4, compare_streams=2)
        self.assertEqual(testnet.compare_workload(args),
                         ["--circuits", "4", "--streams", "2", "--download", "12207K",
                          "--upload", "12207K"])

    def test_last_json(self):
        self.assertEqual(measure.last_json('noise\n{"ok": true}\n'), {"ok": True})
        self.assertIsNone(measure.last_json("noise\n{not json\n"))
        self.assertIsNone(measure.last_json(""))


class SideBySide(unittest.TestCase):
    """side_by_side() end to end against a fake loadgen and stand-in relay processes."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.loadgen = os.path.join(d, "fors-loadgen")
        with open(self.loadgen, "w") as f:
            f.write(FAKE_LOADGEN)
        os.chmod(self.loadgen, 0o755)
        self.calls = os.path.join(d, "calls.log")
        self.env = {k: os.environ.get(k) for k in ("FAKE_LOADGEN_LOG", "FAKE_LOADGEN_BROKEN")}
        os.environ["FAKE_LOADGEN_LOG"] = self.calls
        os.environ.pop("FAKE_LOADGEN_BROKEN", None)
        self.procs = []
        self.args = types.SimpleNamespace(loadgen=self.loadgen, compare_mb=8.0,
                                          compare_circuits=4, compare_streams=2,
                                          compare_rounds=2, compare_seed=7)

    def tearDown(self):
        for p in self.procs:
            p.kill()
            p.wait(timeout=10)
        for k, v in self.env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.tmp.cleanup()

    def relay(self, nick, kind, busy=True):
        torrc = os.path.join(self.tmp.name, nick, "torrc")
        p = subprocess.Popen([sys.executable, "-c", BUSY_RELAY if busy else IDLE_RELAY, torrc])
        self.procs.append(p)
        return {"nick": nick, "kind": kind, "fingerprint": "%040X" % len(self.procs),
                "pid": p.pid, "torrc": torrc}

    def net(self, fors_busy=True, fors_kind="fors"):
        return {"run_dir": self.tmp.name, "tor": os.path.join(self.tmp.name, "no-tor"),
                "authorities": [],
                "relays": [self.relay("middle1", "ctor", busy=False), self.relay("exit1", "ctor"),
                           self.relay("forsexit1", fors_kind, busy=fors_busy)]}

    def test_prints_the_table_with_a_ratio(self):
        lines = testnet.side_by_side(self.args, self.net())
        print("\n".join(lines))
        self.assertIn("seed 7", lines[0])
        self.assertIn("4 circuits x 2 streams", lines[0])
        self.assertTrue(lines[2].startswith("C tor (exit1)"), lines)
        self.assertTrue(lines[3].startswith("Fors (forsexit1)"), lines)
        m = re.match(r"^Fors / C tor\s+(\d+\.\d\d)x\s+(\d+\.\d\d)x$", lines[4])
        self.assertIsNotNone(m, lines)
        self.assertGreater(float(m.group(2)), 0)
        with open(self.calls) as f:
            calls = [c.split() for c in f.read().splitlines()]
        measured = [c for c in calls if "--streams" in c]
        # ABBA over two rounds, each run over middle1 -> exit, with the printed seed.
        self.assertEqual([c[c.index("--path") + 1] for c in measured],
                         ["middle1,exit1", "middle1,forsexit1", "middle1,forsexit1",
                          "middle1,exit1"])
        for c in measured:
            self.assertEqual(c[c.index("--seed") + 1], "7")
        self.assertEqual(len(calls), len(measured) + 2)  # one warm-up per exit

    def test_a_failed_run_fails_the_demo(self):
        os.environ["FAKE_LOADGEN_BROKEN"] = "1"
        with self.assertRaisesRegex(testnet.TestnetError, "circuit 1 destroyed"):
            testnet.side_by_side(self.args, self.net())

    def test_an_exit_without_measurable_cpu_fails(self):
        with self.assertRaisesRegex(testnet.TestnetError, "no measurable CPU"):
            testnet.side_by_side(self.args, self.net(fors_busy=False))

    def test_needs_a_fors_exit(self):
        with self.assertRaisesRegex(testnet.TestnetError, "Fors exit slot"):
            testnet.side_by_side(self.args, self.net(fors_kind="ctor"))

    def test_a_dead_exit_fails(self):
        net = self.net()
        self.procs[1].kill()
        self.procs[1].wait(timeout=10)
        with self.assertRaisesRegex(testnet.TestnetError, "exit1 is not running|exit1 failed"):
            testnet.side_by_side(self.args, net)

    def test_bad_sizes_are_refused(self):
        self.args.compare_mb = 0
        with self.assertRaisesRegex(testnet.TestnetError, "--compare-mb"):
            testnet.side_by_side(self.args, self.net())


if __name__ == "__main__":
    unittest.main()
