"""Unit tests of scripts/testnet.py and scripts/netns.py (no tor, no network started).

Run: python3 -m unittest discover -s scripts/tests -p 'test_*.py'   (or scripts/tests/testnet-unit.sh)
"""

import http.server
import os
import sys
import tempfile
import threading
import types
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import netns  # noqa: E402
import testnet  # noqa: E402


def consensus_text(fps):
    """A minimal ns consensus body: one r/s pair per fingerprint."""
    import base64
    lines = []
    for i, fp in enumerate(fps):
        ident = base64.b64encode(bytes.fromhex(fp)).decode().rstrip("=")
        lines.append(f"r relay{i} {ident} AAAA 2026-01-01 00:00:00 127.0.0.1 {9000 + i} 0")
        lines.append("s Fast Running Valid")
    return "\n".join(lines) + "\n"


FP = ["%040X" % (i + 1) for i in range(4)]


class PolicyTests(unittest.TestCase):
    def test_loopback_policy_self_check_passes(self):
        testnet.self_check_exit_policy()

    def test_policy_exit_rules(self):
        rules = testnet.policy_exit_rules([80, 443])
        self.assertEqual(rules[:3], ["accept *:80", "accept *:443", "accept 127.0.0.0/8:1024-65535"])
        self.assertEqual(rules[-1], "reject *:*")
        acc = testnet.policy_accepts
        self.assertTrue(acc(rules, "192.0.2.1", 80))
        self.assertTrue(acc(rules, "198.51.100.7", 443))
        self.assertTrue(acc(rules, "127.0.0.2", 15113))
        self.assertFalse(acc(rules, "127.0.0.2", 22))
        self.assertFalse(acc(rules, "192.0.2.1", 8080))
        self.assertFalse(acc(rules, "::1", 15113))
        testnet.self_check_policy_exit([80, 443])
        testnet.self_check_policy_exit([80])
        only80 = testnet.policy_exit_rules([80])
        self.assertFalse(acc(only80, "192.0.2.1", 443))
        self.assertFalse(acc(only80, "127.0.0.2", 443))

    def test_required_flags(self):
        net = {"policy_exits": {"forsexit1": [80, 443], "forsexit2": [80]}}
        rf = testnet.required_flags
        self.assertIn("Exit", rf({"nick": "exit1", "role": "exit"}, net))
        self.assertIn("Exit", rf({"nick": "forsexit1", "role": "exit"}, net))
        self.assertNotIn("Exit", rf({"nick": "forsexit2", "role": "exit"}, net))
        self.assertNotIn("Exit", rf({"nick": "middle1", "role": "middle"}, net))
        self.assertEqual(rf({"nick": "m", "role": "middle"}), {"Running", "Valid", "Fast"})

    def test_parse_hostport(self):
        self.assertEqual(testnet.parse_hostport("192.0.2.1:80"), ("192.0.2.1", 80))
        for bad in ("192.0.2.1", "host:80", "192.0.2.1:0", "192.0.2.1:70000"):
            with self.assertRaises(testnet.TestnetError):
                testnet.parse_hostport(bad)


class TorrcCheckTests(unittest.TestCase):
    def write(self, lines):
        fd, path = tempfile.mkstemp(suffix=".torrc")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.addCleanup(os.unlink, path)
        return path

    def base(self, policy, extra=()):
        return (["TestingTorNetwork 1", "ORPort 127.0.0.1:5000",
                 "DirAuthority a orport=1 no-v2 v3ident=AA 127.0.0.1:2 BB"]
                + [f"ExitPolicy {r}" for r in policy] + list(extra))

    def test_known_policies_pass(self):
        testnet.check_torrc_is_local(self.write(self.base(testnet.EXIT_POLICY)))
        testnet.check_torrc_is_local(self.write(self.base(testnet.NON_EXIT_POLICY)))

    def test_policy_exit_only_when_allowed(self):
        rules = testnet.policy_exit_rules([80, 443])
        path = self.write(self.base(rules))
        with self.assertRaises(testnet.TestnetError):
            testnet.check_torrc_is_local(path)
        testnet.check_torrc_is_local(path, [rules])

    def test_non_loopback_metrics_port_refused(self):
        path = self.write(self.base(testnet.NON_EXIT_POLICY, ["MetricsPort 10.0.0.1:9035"]))
        with self.assertRaises(testnet.TestnetError):
            testnet.check_torrc_is_local(path)
        testnet.check_torrc_is_local(
            self.write(self.base(testnet.NON_EXIT_POLICY, ["MetricsPort 127.0.0.1:9035"])))

    def test_outbound_bind_only_on_loopback(self):
        for line in ["OutboundBindAddress 10.0.0.1", "OutboundBindAddressExit 192.0.2.1",
                     "OutboundBindAddressOR ::2", "OutboundBindAddress example.org"]:
            path = self.write(self.base(testnet.NON_EXIT_POLICY, [line]))
            with self.assertRaises(testnet.TestnetError, msg=line):
                testnet.check_torrc_is_local(path)
        testnet.check_torrc_is_local(self.write(self.base(
            testnet.NON_EXIT_POLICY, ["OutboundBindAddress 127.0.0.5", "OutboundBindAddress ::1"])))
        # Inside a checked isolated namespace a documentation address on lo is fine.
        testnet.check_torrc_is_local(self.write(self.base(
            testnet.NON_EXIT_POLICY, ["OutboundBindAddressExit 198.51.100.7"])), isolated=True)

    def test_relay_lines_carry_slot_policy_and_cmd_the_metrics_port(self):
        net = {"run_dir": "/r", "authorities": [], "policy_exits": {"forsexit1": [80, 443]}}
        node = {"nick": "forsexit1", "role": "exit", "data_dir": "/r/x", "orport": 5000,
                "metrics_port": 5001, "kind": "fors", "bin": "/b/fors", "torrc": "/r/x/torrc"}
        lines = testnet.relay_core_lines(net, node)
        self.assertIn("ExitPolicy accept *:443", lines)
        self.assertFalse(any(l.startswith("MetricsPort") for l in lines))
        self.assertEqual(testnet.node_cmd(net, node),
                         ["/b/fors", "-f", "/r/x/torrc", "--MetricsPort", "127.0.0.1:5001",
                          "--MetricsPortPolicy", "accept 127.0.0.1"])
        node2 = dict(node, nick="forsexit2")
        del node2["metrics_port"]
        self.assertIn("ExitPolicy accept 127.0.0.0/8:*", testnet.relay_core_lines(net, node2))
        self.assertEqual(testnet.node_cmd(net, node2), ["/b/fors", "-f", "/r/x/torrc"])


def free_base(n=20):
    """A base port with n free loopback ports after it (plan_network checks them)."""
    for base in range(39100, 60000, 97):
        if all(testnet.port_is_free(base + i) for i in range(n)) and \
                all(testnet.port_is_free(base + i, "127.0.0.2") for i in range(n)):
            return base
    # The skip rule of tests/skip_common: under CI=true a test that cannot run fails.
    why = "no free loopback port range from 39100"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        raise AssertionError(f"{why}; CI=true, so this is a failure, not a skip")
    print(f"SKIPPED: PlanTests: {why}", file=sys.stderr)
    raise unittest.SkipTest(why)


class PlanTests(unittest.TestCase):
    def args(self, **kw):
        a = dict(dir=tempfile.gettempdir() + "/fors-plan-test", base_port=free_base(), tor="tor",
                 tor_gencert="tor-gencert", consensus_params="", voting_interval=20,
                 vote_delay=4, dist_delay=4, client_option=None, authorities=3, middles=1,
                 exits=1, fors=["exit", "middle", "exit"], fors_bin="/bin/true",
                 slot_option=None, slot_keys=None, policy_exit=None, no_server=False,
                 server_addr="127.0.0.2")
        a.update(kw)
        return types.SimpleNamespace(**a)

    def test_policy_exit_parsed_and_validated(self):
        net = testnet.plan_network(self.args(policy_exit=["forsexit1 80,443", "forsexit2 80"]))
        self.assertEqual(net["policy_exits"], {"forsexit1": [80, 443], "forsexit2": [80]})
        for bad in ("forsmiddle1 80,443", "exit1 80", "forsexit1 22", "forsexit1", "nope 80"):
            with self.assertRaises(testnet.TestnetError, msg=bad):
                testnet.plan_network(self.args(policy_exit=[bad]))

    def test_metrics_ports_come_last_and_only_for_fors(self):
        net = testnet.plan_network(self.args())
        fors = [r for r in net["relays"] if r["kind"] == "fors"]
        self.assertEqual(len(fors), 3)
        last = net["http_server"]["port"]
        self.assertEqual(sorted(r["metrics_port"] for r in fors), [last + 1, last + 2, last + 3])
        self.assertFalse(any("metrics_port" in r for r in net["relays"] if r["kind"] == "ctor"))
        plain = testnet.plan_network(self.args(fors_bin=None))
        self.assertFalse(any("metrics_port" in r for r in plain["relays"]))


class ForsOnlyTests(unittest.TestCase):
    """--fors-only, --fors-shards and --onion-service: the plan and the torrcs."""

    def args(self, **kw):
        a = PlanTests.args(PlanTests(), fors_only=True, middles=None, exits=None, fors=None)
        for k, v in kw.items():
            setattr(a, k, v)
        return a

    def plan(self, **kw):
        net = testnet.plan_network(self.args(**kw))
        for i, a in enumerate(net["authorities"]):
            a["fingerprint"] = "%040X" % (0xA0 + i)
            a["v3ident"] = "%040X" % (0xB0 + i)
        for i, r in enumerate(net["relays"]):
            r["fingerprint"] = "%040X" % (0xF0 + i)
        return net

    def test_every_relay_is_fors_with_default_slots(self):
        net = self.plan()
        self.assertTrue(net["fors_only"])
        self.assertEqual([r["kind"] for r in net["relays"]], ["fors"] * 6)
        self.assertEqual(sorted(r["role"] for r in net["relays"]), ["exit"] * 2 + ["middle"] * 4)
        given = self.plan(fors=["exit", "middle", "middle", "middle", "middle"])
        self.assertEqual(len(given["relays"]), 5)
        # Without --fors-only the C tor relays stay the default.
        plain = testnet.plan_network(self.args(fors_only=False))
        self.assertEqual(sum(r["kind"] == "ctor" for r in plain["relays"]), 4)
        self.assertFalse(plain["fors_only"])

    def test_fors_only_refuses_what_would_not_be_fors_only(self):
        for kw in ({"fors_bin": None}, {"middles": 1}, {"exits": 2},
                   {"fors": ["middle"] * 5}, {"fors": ["exit", "middle", "middle"]}):
            with self.assertRaises(testnet.TestnetError, msg=kw):
                testnet.plan_network(self.args(**kw))

    def test_fors_shards_fill_in_numcpus_unless_a_slot_sets_it(self):
        net = self.plan(fors_shards=1, slot_option=["forsexit1 NumCPUs 2"])
        opts = net["slot_options"]
        self.assertIn(("forsexit1", "NumCPUs 2"), opts)
        self.assertNotIn(("forsexit1", "NumCPUs 1"), opts)
        for r in net["relays"]:
            if r["nick"] != "forsexit1":
                self.assertIn((r["nick"], "NumCPUs 1"), opts)
                self.assertIn("NumCPUs 1", testnet.relay_core_lines(net, r))
        with self.assertRaises(testnet.TestnetError):
            testnet.plan_network(self.args(fors_shards=0))
        with self.assertRaises(testnet.TestnetError):
            testnet.plan_network(self.args(fors_only=False, fors=None, fors_shards=2))

    def test_client_and_service_exclude_the_authorities(self):
        net = self.plan(onion_service=True)
        s = net["onion_service"]
        self.assertEqual(s["virtual_port"], 80)
        excl = "ExcludeNodes " + ",".join("$%040X" % (0xA0 + i) for i in range(3))
        for lines in (testnet.client_lines(net, {}), testnet.service_lines(net)):
            self.assertIn(excl, lines)
            self.assertIn("StrictNodes 0", lines)
            self.assertIn("EnforceDistinctSubnets 0", lines)
        srv = net["http_server"]
        self.assertIn(f"HiddenServicePort 80 {srv['address']}:{srv['port']}",
                      testnet.service_lines(net))
        self.assertIn(f"HiddenServiceDir {s['hs_dir']}", testnet.service_lines(net))
        plain = testnet.plan_network(self.args(fors_only=False))
        for a in plain["authorities"]:
            a["fingerprint"] = a["v3ident"] = "%040X" % 1
        self.assertFalse(any(l.startswith(("ExcludeNodes", "StrictNodes"))
                             for l in testnet.client_lines(plain, {})))
        with self.assertRaises(testnet.TestnetError):
            testnet.plan_network(self.args(onion_service=True, no_server=True))

    def test_service_torrc_passes_the_local_check_and_a_remote_target_does_not(self):
        net = self.plan(onion_service=True)
        fd, path = tempfile.mkstemp(suffix=".torrc")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        lines = testnet.service_lines(net)
        testnet.write_torrc(path, lines)
        testnet.check_torrc_is_local(path)
        bad = [l if not l.startswith("HiddenServicePort") else "HiddenServicePort 80 192.0.2.1:80"
               for l in lines]
        testnet.write_torrc(path, bad)
        with self.assertRaises(testnet.TestnetError):
            testnet.check_torrc_is_local(path)

    def test_only_fors_relays_are_voted_hsdir(self):
        net = self.plan()
        lines = testnet.authority_lines(net, net["authorities"][0], [])
        fors = ",".join("$" + r["fingerprint"] for r in net["relays"])
        self.assertIn(f"TestingDirAuthVoteHSDir {fors}", lines)
        self.assertIn("TestingDirAuthVoteHSDirIsStrict 1", lines)
        self.assertNotIn("TestingDirAuthVoteHSDir *", lines)
        self.assertIn("TestingDirAuthVoteGuard *", lines)
        plain = testnet.plan_network(self.args(fors_only=False))
        for i, a in enumerate(plain["authorities"]):
            a["fingerprint"] = a["v3ident"] = "%040X" % i
        self.assertIn("TestingDirAuthVoteHSDir *",
                      testnet.authority_lines(plain, plain["authorities"][0], []))

    def test_arti_time_period_matches_c_tor_test_networks(self):
        f = testnet.with_arti_time_period
        # 24 voting intervals of 20 s: C tor's TestingTorNetwork time period, 8 minutes.
        self.assertEqual(f("a=1", 20), "a=1 hsdir_interval=8")
        self.assertEqual(f("", 20), "hsdir_interval=8")
        self.assertEqual(f("hsdir_interval=30", 20), "hsdir_interval=30")
        self.assertEqual(f("a=1", 11), "a=1")  # 264 s: not whole minutes, arti cannot match
        self.assertIn("hsdir_interval=8", self.plan()["consensus_params"])
        self.assertNotIn("hsdir_interval", testnet.plan_network(self.args(fors_only=False))
                         .get("consensus_params") or "")

    def test_pinned_middle_gets_a_fors_entry(self):
        net = self.plan()
        fps = {r["nick"]: r["fingerprint"] for r in net["relays"]}
        pins = {"middle": fps["forsmiddle1"]}
        testnet.auto_pin_entry(net, pins)
        self.assertEqual(pins["entry"], fps["forsmiddle2"])

    def test_wait_wants_guard_and_hsdir_of_fors_relays(self):
        net = {"fors_only": True}
        rf = testnet.required_flags
        self.assertEqual(rf({"nick": "forsmiddle1", "role": "middle", "kind": "fors"}, net),
                         {"Running", "Valid", "Fast", "Guard", "HSDir"})
        self.assertNotIn("HSDir", rf({"nick": "auth0", "role": None}, net))
        self.assertNotIn("HSDir", rf({"nick": "forsmiddle1", "role": "middle", "kind": "fors"}, {}))


class _Metrics(http.server.BaseHTTPRequestHandler):
    value = 0

    def do_GET(self):
        body = (f"# TYPE {testnet.ExitKnowledge.FETCH_METRIC} counter\n"
                f"{testnet.ExitKnowledge.FETCH_METRIC} {_Metrics.value}\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class ExitKnowledgeTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.srv = http.server.HTTPServer(("127.0.0.1", 0), _Metrics)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)

    def test_ctor_exit_needs_every_relay_in_its_cached_consensus(self):
        d = os.path.join(self.tmp.name, "exit1")
        os.makedirs(d)
        net = {"relays": [{"nick": "exit1", "role": "exit", "kind": "ctor", "data_dir": d}]}
        k = testnet.ExitKnowledge(net)
        self.assertEqual(k.missing(set(FP)), ["exit1(no consensus yet)"])
        with open(os.path.join(d, "cached-consensus"), "w") as f:
            f.write(consensus_text(FP[:3]))
        self.assertEqual(k.missing(set(FP)), ["exit1(knows 3/4 relays)"])
        with open(os.path.join(d, "cached-consensus"), "w") as f:
            f.write(consensus_text(FP))
        self.assertEqual(k.missing(set(FP)), [])

    def test_fors_exit_needs_a_fetch_after_everyone_is_listed(self):
        port = self.srv.server_address[1]
        net = {"relays": [{"nick": "forsexit1", "role": "exit", "kind": "fors",
                           "data_dir": self.tmp.name, "metrics_port": port},
                          {"nick": "m", "role": "middle", "kind": "fors", "metrics_port": 1}]}
        k = testnet.ExitKnowledge(net)
        _Metrics.value = 5
        self.assertEqual(k.missing(set(FP)), ["forsexit1(awaiting a consensus fetch)"])
        self.assertEqual(k.missing(set(FP)), ["forsexit1(awaiting a consensus fetch)"])
        _Metrics.value = 6
        self.assertEqual(k.missing(set(FP)), [])
        # A relay appears: the baseline starts again.
        self.assertEqual(k.missing(set(FP) | {"F" * 40}), ["forsexit1(awaiting a consensus fetch)"])
        _Metrics.value = 7
        self.assertEqual(k.missing(set(FP) | {"F" * 40}), [])

    def test_fors_exit_without_metrics(self):
        net = {"relays": [{"nick": "forsexit1", "role": "exit", "kind": "fors",
                           "data_dir": self.tmp.name, "metrics_port": 1}]}
        self.assertEqual(testnet.ExitKnowledge(net).missing(set(FP)),
                         ["forsexit1(metrics unavailable)"])
        old = {"relays": [{"nick": "forsexit1", "role": "exit", "kind": "fors",
                           "data_dir": self.tmp.name}]}
        self.assertEqual(testnet.ExitKnowledge(old).missing(set(FP)), [])


class RequireNetnsTests(unittest.TestCase):
    def test_policy_exit_refused_outside_an_isolated_namespace(self):
        def not_isolated():
            raise netns.NotIsolated("network namespace is NOT isolated: interfaces are ['eth0', 'lo']")
        orig = netns.check_isolated
        netns.check_isolated = not_isolated
        try:
            with self.assertRaises(testnet.TestnetError) as cm:
                testnet.require_isolated_netns("--policy-exit")
            self.assertIn("ISOLATION CHECK FAILED", str(cm.exception))
            self.assertIn("refusing to start anything", str(cm.exception))
        finally:
            netns.check_isolated = orig

    def test_commands_refused_from_another_namespace(self):
        net = {"netns": {"inode": 1, "isolated": True}, "run_dir": "/r", "authorities": [],
               "relays": [], "client": {"nick": "client", "torrc": "/r/c", "pid": None}}
        with self.assertRaises(testnet.TestnetError) as cm:
            testnet.check_same_netns(net)
        self.assertIn("scripts/netns.py enter", str(cm.exception))
        testnet.check_same_netns({"run_dir": "/r"})  # no namespace recorded: anywhere


class NetnsTests(unittest.TestCase):
    def test_fresh_namespace_is_isolated(self):
        self.assertEqual(netns.isolation_problems(["lo"], [], [("lo", "::1", 128)], True, 7, 1), [])
        self.assertEqual(netns.isolation_problems(["lo"], [], [], True, 7, None), [])

    def test_host_like_namespace_is_not(self):
        p = netns.isolation_problems(["eth0", "lo"], [("eth0", "0.0.0.0", 0), ("eth0", "192.0.2.0", 24)],
                                     [("eth0", "::", 0)], True, 7, 1)
        self.assertTrue(any("interfaces" in x for x in p))
        self.assertTrue(any("IPv4 default route" in x for x in p))
        self.assertTrue(any("192.0.2.0/24 via eth0" in x for x in p))
        self.assertTrue(any("IPv6 default route" in x for x in p))

    def test_each_problem_alone(self):
        self.assertTrue(netns.isolation_problems(["lo"], [], [], False, 7, 1))  # lo down
        self.assertTrue(netns.isolation_problems(["lo"], [("lo", "0.0.0.0", 0)], [], True, 7, 1))
        self.assertTrue(netns.isolation_problems(["lo"], [], [], True, 1, 1))  # pid 1's namespace
        self.assertTrue(netns.isolation_problems(["lo", "veth0"], [], [], True, 7, 1))

    def test_route_tables_parse_and_skip_reject_routes(self):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        r4 = os.path.join(d.name, "route")
        with open(r4, "w") as f:
            f.write("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
                    "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
                    "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
                    "lo\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0\n")
        self.assertEqual(netns.ipv4_routes(r4), [("eth0", "0.0.0.0", 0), ("eth0", "192.168.0.0", 24)])
        r6 = os.path.join(d.name, "ipv6_route")
        with open(r6, "w") as f:
            # The kernel's null entry (reject) and ::1 on lo, as in a fresh namespace.
            f.write("0" * 32 + " 00 " + "0" * 32 + " 00 " + "0" * 32 + " ffffffff 00000001 00000000 00200200       lo\n"
                    + "0" * 31 + "1 80 " + "0" * 32 + " 00 " + "0" * 32 + " 00000000 00000002 00000000 80200001       lo\n")
        self.assertEqual(netns.ipv6_routes(r6), [("lo", "::1", 128)])
        self.assertEqual(netns.ipv6_routes(os.path.join(d.name, "missing")), [])


class ScrapeSumsTests(unittest.TestCase):
    """scrape_sums against a loopback HTTP server serving a MetricsPort-like body."""

    BODY = (b"# HELP fors_shard_recv_capped x\n# TYPE fors_shard_recv_capped counter\n"
            b'fors_shard_recv_capped{shard="0"} 5\nfors_shard_recv_capped{shard="1"} 7\n'
            b'fors_relay_tls_records_split_total{shard="0"} 3\n'
            b"fors_relay_tls_records_split_total_other 100\n")

    def serve(self, status, body):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return srv.server_address[1]

    def test_sums_over_shards_and_absent_is_zero(self):
        port = self.serve(200, self.BODY)
        got = testnet.scrape_sums(port, ("fors_shard_recv_capped",
                                         "fors_relay_tls_records_split_total",
                                         "fors_relay_tls_records_gathered_total"))
        self.assertEqual(got, {"fors_shard_recv_capped": 12,
                               "fors_relay_tls_records_split_total": 3,
                               "fors_relay_tls_records_gathered_total": 0})

    def test_error_status_is_none(self):
        port = self.serve(503, b"busy")
        self.assertIsNone(testnet.scrape_sums(port, ("fors_shard_recv_capped",)))


if __name__ == "__main__":
    unittest.main()
