#!/usr/bin/env python3
"""Private Tor test network on loopback (chutney-style), Python 3 stdlib only.

Commands: up, wait, pin, traffic, serve, status, down, demo.  See scripts/README.md.

Safety rules enforced here (nothing may leave the machine):
  * every tor gets `TestingTorNetwork 1` and explicit `DirAuthority` lines on
    127.0.0.1, plus `UseDefaultFallbackDirs 0`, so no public authority or
    fallback directory is ever contacted;
  * every listener is bound to 127.0.0.1 and every relay advertises
    `Address 127.0.0.1`;
  * exit policies accept only 127.0.0.0/8 and reject everything else -- except
    `--policy-exit` slots, which get a real ports-80/443 policy and are allowed
    only inside an isolated network namespace (scripts/netns.py: only `lo`, no
    route), checked before anything starts;
  * exit DNS goes to a generated resolv.conf that names only 127.0.0.1;
  * `check_torrc_is_local` re-reads every generated torrc and refuses to start
    anything whose addresses are not loopback;
  * every process started is recorded by pid and stopped by pid.
"""

import argparse
import base64
import binascii
import concurrent.futures
import hashlib
import http.server
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

TOR_BIN_DEFAULT = shutil.which("tor") or "/usr/sbin/tor"
TOR_GENCERT_DEFAULT = shutil.which("tor-gencert") or "/usr/bin/tor-gencert"
# Fixed passphrase for the authority identity keys: this network is throwaway.
AUTH_PASSPHRASE = "fors-testnet-passphrase"
MARKER = ".fors-testnet"
LOOPBACK = "127.0.0.1"
# The HTTP server listens on a different loopback address than the relays.
# A C tor client whose SOCKS target equals a relay's address "exit-enclaves":
# it silently makes that relay the exit (connection_edge.c,
# router_find_exact_exit_enclave), which would override ExitNodes pins and
# add a fourth hop.  127.0.0.2 is still inside the exits' 127.0.0.0/8 policy.
SERVER_ADDR_DEFAULT = "127.0.0.2"

# Consensus parameters voted by our authorities.  Values mirror the live
# network where C tor's defaults differ (tor-relay-protocol.md §10):
#   sendme_accept_min_version=1  relays/clients require authenticated (v1)
#                                SENDMEs, so a relay that sends v0 SENDMEs
#                                fails here as it would on the live network;
#   ExtendByEd25519ID=1          relays extend by ed25519 identity too, so
#                                EXTEND2 carries the ed25519 link specifier.
DEFAULT_CONSENSUS_PARAMS = "sendme_accept_min_version=1 ExtendByEd25519ID=1"

# Exit policy of every exit: first match wins, so an IPv4 address outside
# 127.0.0.0/8 always hits one of the two /1 rejects and IPv6 hits the final
# reject -- exactly "127.0.0.0/8 only".  Why not just "accept 127.0.0.0/8:*,
# reject *:*"?  C tor 0.4.9 clients (connection_ap_can_use_exit) compare
# `0 == tor_addr_parse(...)`, but tor_addr_parse returns the address family,
# so they judge every exit as if the target address were unknown
# (compare_unknown_tor_addr_to_addr_policy).  For that judgement the first
# whole-address-space rule decides: "reject *:*" gives PROBABLY_REJECTED and
# the exit is never chosen, while the unreachable "accept *4:*" gives
# PROBABLY_ACCEPTED.  (Only an exit-enclave, i.e. a target equal to the relay's
# own address, escapes this, and that would defeat ExitNodes pins.)
EXIT_POLICY = [
    "accept 127.0.0.0/8:*",
    "reject 0.0.0.0/1:*",
    "reject 128.0.0.0/1:*",
    "accept *4:*",
    "reject *:*",
]
NON_EXIT_POLICY = ["reject *:*"]
# --fors-only without --fors: the relays it runs.  A C tor onion-service circuit has up to four
# distinct hops (guard, vanguard, middle, intro or rendezvous point), and the service wants
# three intro points besides, so six relays leave C tor a choice on every hop.
FORS_ONLY_DEFAULT_SLOTS = ["exit", "exit", "middle", "middle", "middle", "middle"]
FORS_ONLY_MIN_RELAYS = 4
# The onion service's virtual port (HiddenServicePort), in front of the HTTP data server.
ONION_VIRTUAL_PORT = 80
# Ports a --policy-exit slot may open to every address (only inside an isolated network
# namespace).  C tor authorities give Exit only to a policy that allows both 80 and 443 to
# at least one whole /8 (policies.c exit_policy_is_general_exit).
POLICY_EXIT_PORTS = (80, 443)


def policy_exit_rules(ports):
    """Exit policy of a --policy-exit slot: `accept *:P` for each P, then the loopback rules
    of EXIT_POLICY with the loopback accept narrowed to ports 1024-65535.  The narrowing
    matters: in a TestingTorNetwork the authorities count 127.0.0.0/8 as a /8 for the Exit
    flag (DirAllowPrivateAddresses 1, policies.c exit_policy_is_general_exit_helper), so
    `accept 127.0.0.0/8:*` alone would earn Exit; with the narrowing only the `accept *:P`
    rules decide, and a slot given just port 80 must not get Exit.  The data server's port
    is always above 1023."""
    return [f"accept *:{p}" for p in ports] + ["accept 127.0.0.0/8:1024-65535"] + EXIT_POLICY[1:]


class TestnetError(Exception):
    """A failure the user should see as one clear line."""


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Process helpers (pid-based, never by name)
# --------------------------------------------------------------------------

def pid_state(pid):
    """Return the /proc state letter of `pid`, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    # comm may contain spaces/parens; the state follows the last ')'.
    return data[data.rfind(")") + 2:].split(" ", 1)[0]


def pid_alive(pid):
    state = pid_state(pid)
    return state is not None and state not in ("Z", "X")


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_is_ours(pid, token):
    """True if `pid` is alive and its command line mentions `token` (the
    torrc path or run dir), which guards against killing a reused pid."""
    return pid_alive(pid) and token in pid_cmdline(pid)


def reap_children():
    """Collect exited children of this process so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_pids(entries, term_wait=15.0, kill_wait=5.0):
    """Stop processes given as (label, pid, token): SIGTERM, bounded wait,
    then SIGKILL and another bounded wait.  Returns labels still alive."""
    targets = [(l, p, t) for (l, p, t) in entries if p and pid_is_ours(p, t)]
    for label, pid, _ in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + term_wait
    while time.monotonic() < deadline:
        reap_children()
        if not any(pid_alive(p) for _, p, _ in targets):
            break
        time.sleep(0.2)
    for label, pid, tok in targets:
        if pid_alive(pid) and tok in pid_cmdline(pid):
            log(f"  {label} (pid {pid}) ignored SIGTERM; sending SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + kill_wait
    while time.monotonic() < deadline:
        reap_children()
        if not any(pid_alive(p) for _, p, _ in targets):
            break
        time.sleep(0.2)
    return [l for l, p, _ in targets if pid_alive(p)]


def port_is_free(port, addr=LOOPBACK):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Same as tor's listeners: TIME_WAIT leftovers from a previous run do not
    # block the port, a live listener or bound socket does.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --------------------------------------------------------------------------
# Network description (network.json)
# --------------------------------------------------------------------------

def load_network(run_dir):
    path = os.path.join(run_dir, "network.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise TestnetError(f"no network at {run_dir} (missing network.json); run `up` first")
    except json.JSONDecodeError as e:
        raise TestnetError(f"{path} is not valid JSON: {e}")


def save_network(net):
    path = os.path.join(net["run_dir"], "network.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(net, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def all_processes(net):
    """(label, pid, token) for every process recorded in `net`."""
    out = []
    for node in net.get("authorities", []) + net.get("relays", []):
        out.append((node["nick"], node.get("pid"), node["torrc"]))
    client = net.get("client")
    if client:
        out.append(("client", client.get("pid"), client["torrc"]))
    service = net.get("onion_service")
    if service:
        out.append(("service", service.get("pid"), service["torrc"]))
    server = net.get("http_server")
    if server:
        out.append(("http-server", server.get("pid"), net["run_dir"]))
    return out


def find_relay(net, name):
    """Resolve a nickname or $FINGERPRINT to a relay/authority record."""
    key = name.lstrip("$").upper()
    for node in net["relays"] + net["authorities"]:
        if node["nick"].upper() == key or node["fingerprint"] == key:
            return node
    raise TestnetError(f"no relay named {name!r} in this network")


# --------------------------------------------------------------------------
# torrc generation
# --------------------------------------------------------------------------

def dirauthority_lines(authorities):
    # Format per tor(1) DirAuthority: nick orport=N no-v2 v3ident=HEX addr:dirport FP
    return [
        f"DirAuthority {a['nick']} orport={a['orport']} no-v2 v3ident={a['v3ident']} "
        f"{LOOPBACK}:{a['dirport']} {a['fingerprint']}"
        for a in authorities
    ]


def common_ctor_lines(data_dir):
    """Options only C tor understands; appended to every C tor torrc.
    TESTNET_CTOR_INFO_LOG=1 in the environment adds an info-level log, info.log, to every
    C tor node (authorities, relays, client), for diagnosing a failure."""
    extra = []
    if os.environ.get("TESTNET_CTOR_INFO_LOG") == "1":
        extra.append(f"Log info file {data_dir}/info.log")
    return extra + [
        f"Log notice file {data_dir}/notice.log",
        "SafeLogging 0",
        "LogTimeGranularity 1",
        # Exit promptly on SIGTERM (default waits 30s with an ORPort open).
        "ShutdownWaitLength 0",
        "UseDefaultFallbackDirs 0",
        "ClientUseIPv6 0",
        "ClientPreferIPv6ORPort 0",
        # chutney: with 3+ relays, try hard to get >= 2/3 of descriptors.
        "PathsNeededToBuildCircuits 0.67",
        "ProtocolWarnings 1",
    ]


def relay_core_lines(net, node):
    """The options every relay needs, whatever its implementation.  This is the
    whole torrc a Fors relay receives, so Fors must understand each line."""
    lines = [
        "# generated by scripts/testnet.py -- private loopback test network",
        "TestingTorNetwork 1",
        f"DataDirectory {node['data_dir']}",
        f"Nickname {node['nick']}",
        f"Address {LOOPBACK}",
        f"ORPort {LOOPBACK}:{node['orport']} IPv4Only",
        "SocksPort 0",
        f"ContactInfo {node['nick']}@testnet.invalid",
        # Skip the self-test circuit to our own ORPort and publish at once:
        # saves a consensus round (the authorities still test reachability).
        "AssumeReachable 1",
    ]
    if node["role"] == "exit":
        lines += [
            "ExitRelay 1",
            # testnet.inc already sets ExitPolicyRejectPrivate 0; be explicit,
            # since 127.0.0.0/8 is "private" and must stay reachable.
            "ExitPolicyRejectPrivate 0",
            "ExitPolicyRejectLocalInterfaces 0",
        ] + [f"ExitPolicy {rule}" for rule in exit_policy_of(net, node)] + [
            "IPv6Exit 0",
            f"ServerDNSResolvConfFile {net['run_dir']}/resolv.conf",
        ]
    else:
        lines += ["ExitRelay 0", "ExitPolicy reject *:*"]
    # --slot-option: extra lines for one pluggable slot (e.g. `NumCPUs 2` for a benchmark).
    lines += [line for nick, line in net.get("slot_options", []) if nick == node["nick"]]
    lines += dirauthority_lines(net["authorities"])
    return lines


def exit_policy_of(net, node):
    """The exit policy rules of an exit-role relay (see EXIT_POLICY and --policy-exit)."""
    ports = net.get("policy_exits", {}).get(node["nick"])
    return policy_exit_rules(ports) if ports else EXIT_POLICY


def metrics_args(node):
    """A loopback MetricsPort for Fors slots: `wait` reads its consensus-fetch counter to
    know when the relay has a consensus listing every relay.  Given on the command line
    (`--Option value`, as C tor), so the torrc stays the plain core options and a copy of it
    (tests/daemon_identity.rs runs an impostor from one) does not clash on the port."""
    if not node.get("metrics_port"):
        return []
    args = []
    if not node.get("metrics_port_in_torrc"):
        args += ["--MetricsPort", f"{LOOPBACK}:{node['metrics_port']}"]
    if not node.get("metrics_policy_in_torrc"):
        args += ["--MetricsPortPolicy", f"accept {LOOPBACK}"]
    return args


def slot_metrics_port(net, nick):
    """(port, policy given) when --slot-option already gives this slot a MetricsPort: a test
    that reads the relay's metrics itself keeps its port, and `wait` reads the same one."""
    port, policy = None, False
    for n, line in net.get("slot_options", []):
        if n != nick:
            continue
        key, _, value = line.partition(" ")
        if key.lower() == "metricsport":
            port = int(value.strip().rsplit(":", 1)[-1])
        elif key.lower() == "metricsportpolicy":
            policy = True
    return port, policy


def relay_ctor_extra_lines(net, node):
    lines = ["", "# C tor only"] + common_ctor_lines(node["data_dir"])
    lines += net.get("ctor_options", [])
    if node["role"] == "exit":
        # Never probe public names to detect DNS hijacking.
        lines += ["ServerDNSDetectHijacking 0", "ServerDNSTestAddresses"]
    return lines


def authority_lines(net, node, exit_fps):
    vi = net["voting"]
    lines = [
        "# generated by scripts/testnet.py -- private loopback test network",
        "TestingTorNetwork 1",
        f"DataDirectory {node['data_dir']}",
        f"Nickname {node['nick']}",
        f"Address {LOOPBACK}",
        f"ORPort {LOOPBACK}:{node['orport']} IPv4Only",
        f"DirPort {LOOPBACK}:{node['dirport']} IPv4Only",
        "SocksPort 0",
        f"ContactInfo {node['nick']}@testnet.invalid",
        "ExitRelay 0",
        "ExitPolicy reject *:*",
        "AuthoritativeDirectory 1",
        "V3AuthoritativeDirectory 1",
        "AssumeReachable 1",
        # Fast consensus (chutney's values): intervals must divide 30 min and
        # vote+dist delay must be < interval/2.
        f"TestingV3AuthInitialVotingInterval {vi['interval']}",
        f"TestingV3AuthInitialVoteDelay {vi['vote_delay']}",
        f"TestingV3AuthInitialDistDelay {vi['dist_delay']}",
        f"V3AuthVotingInterval {vi['interval']}",
        f"V3AuthVoteDelay {vi['vote_delay']}",
        f"V3AuthDistDelay {vi['dist_delay']}",
        "V3AuthNIntervalsValid 2",
        # Flags by fiat (voteflags.c dirserv_set_routerstatus_testing): Exit
        # for our loopback-policy exits, so that it never depends on the policy
        # details; Guard/HSDir below (by fiat, or by the rules with --real-flags).
        f"TestingDirAuthVoteExit {','.join('$' + fp for fp in exit_fps)}",
        # Strict: nobody else gets Exit -- unless --policy-exit slots exist, whose
        # Exit flag the authorities must decide from the descriptor alone
        # (voteflags.c dirserv_compute_performance_thresholds: policy not
        # reject-all and exit_policy_is_general_exit); a strict list would
        # strip it from them.
        f"TestingDirAuthVoteExitIsStrict {0 if net.get('policy_exits') else 1}",
    ]
    if net.get("fors_only"):
        # Only the Fors relays are HSDirs: a C tor onion service uploads its descriptor to
        # every responsible HSDir whatever its ExcludeNodes (hs_service.c
        # upload_descriptor_to_all takes hs_get_responsible_hsdirs as it is), so the
        # authorities -- relays too in a test network -- must not be in the hash ring.
        # `wait` also checks each Fors descriptor says `hidden-service-dir`, i.e. would earn
        # the flag by voteflags.c's rules (dirserv_thinks_router_is_hs_dir).
        fors_fps = [r["fingerprint"] for r in net["relays"] if r.get("kind") == "fors"]
        lines += [f"TestingDirAuthVoteHSDir {','.join('$' + fp for fp in fors_fps)}",
                  "TestingDirAuthVoteHSDirIsStrict 1"]
    if net.get("real_flags"):
        # Guard and HSDir by voteflags.c's own rules, with only the thresholds moved so that a
        # young network can meet them (no relay is named): Stable, Fast, the Guard bandwidth
        # test, time-known and WFU all pass for a reachable relay, so what remains is what the
        # relay's descriptor must earn -- `tunnelled-dir-server` (V2Dir; Guard needs it) and
        # `hidden-service-dir` (HSDir), and being Running and Valid (voteflags.c
        # dirauth_set_routerstatus_from_routerinfo, dirserv_thinks_router_is_hs_dir).
        # TestingTorNetwork already sets MinUptimeHidServDirectoryV2 0.
        lines += [
            "AuthDirVoteStableGuaranteeMTBF 0 seconds",
            "AuthDirGuardBWGuarantee 1 bytes",
            "AuthDirVoteGuardBwThresholdFraction 0",
            "AuthDirVoteGuardGuaranteeTimeKnown 0 seconds",
            "AuthDirVoteGuardGuaranteeWFU 0",
        ]
    else:
        # Flags by fiat: every relay is a guard and an HSDir, whatever it publishes.
        lines += ["TestingDirAuthVoteGuard *"]
        if not net.get("fors_only"):
            lines += ["TestingDirAuthVoteHSDir *"]
    lines += [
        "TestingMinExitFlagThreshold 0",
        # Fast is otherwise relative (the slowest 1/8 by advertised bandwidth
        # lose it), so in a small net some relay always lacks it and C tor
        # clients refuse it for exit circuits (need_capacity).  Capping the
        # threshold at 1 byte/s gives Fast to every running relay, including
        # a new relay that has not measured its bandwidth yet (voteflags.c).
        "AuthDirFastGuarantee 1 byte",
        # Stable likewise needs median uptime; grant it from the start so
        # flags do not flap (it matters for LongLivedPorts only).
        "AuthDirVoteStableGuaranteeMinUptime 0",
    ]
    if net["consensus_params"]:
        lines.append(f"ConsensusParams {net['consensus_params']}")
    lines += dirauthority_lines(net["authorities"])
    lines += ["", "# C tor only"] + common_ctor_lines(node["data_dir"])
    lines += net.get("ctor_options", [])
    return lines


def client_lines(net, pins):
    c = net["client"]
    lines = [
        "# generated by scripts/testnet.py -- private loopback test network",
        "TestingTorNetwork 1",
        f"DataDirectory {c['data_dir']}",
        f"SocksPort {LOOPBACK}:{c['socks_port']}",
        f"ControlPort {LOOPBACK}:{c['control_port']}",
        "CookieAuthentication 1",
        # Full descriptors, not microdescriptors: a microdesc policy summary
        # only counts `accept *:port` rules, so our loopback-only exits would
        # summarise as "reject 1-65535" and never be picked (policies.c
        # policy_summary_add_item; chutney exit-v4.i, tor #11264).
        "UseMicrodescriptors 0",
        # Fixed circuit build timeout: our 2 shared cores are slow under load.
        "LearnCircuitBuildTimeout 0",
        "CircuitBuildTimeout 60",
    ]
    for opt, fp in (("EntryNodes", pins.get("entry")), ("MiddleNodes", pins.get("middle")),
                    ("ExitNodes", pins.get("exit"))):
        if fp:
            lines.append(f"{opt} ${fp}")
    lines += fors_only_lines(net)
    lines += net.get("client_options", [])
    lines += dirauthority_lines(net["authorities"])
    lines += ["", "# C tor only"] + common_ctor_lines(c["data_dir"])
    return lines


def fors_only_lines(net):
    """--fors-only: the C tor client and service keep every circuit hop off the authorities,
    the only C tor relays.  ExcludeNodes is honoured for guards, middles, exits, the
    service's intro points (hs_service.c pick_intro_point) and the client's rendezvous point
    (circuitbuild.c choose_good_exit_server), HSDirs (hs_common.c hs_pick_hsdir) and intro
    points (hs_client.c) taken from a descriptor.  StrictNodes starts at 0 because the
    authorities are the only directory sources a fresh client knows: with 1 it would never
    fetch a first consensus (node_select.c RETRY_WITHOUT_EXCLUDE); `wait` sets it to 1 once
    the client and the service have bootstrapped, and from then on they fetch directory
    documents from the Fors caches too."""
    if not net.get("fors_only"):
        return []
    return [
        f"ExcludeNodes {','.join('$' + a['fingerprint'] for a in net['authorities'])}",
        "StrictNodes 0",
        # TestingTorNetwork's default already (testnet.inc), explicit as in chutney: every
        # relay is on 127.0.0.1, one /16.
        "EnforceDistinctSubnets 0",
    ]


def service_lines(net):
    """torrc of the C tor onion service (--onion-service): a HiddenServiceDir whose virtual
    port leads to the HTTP data server."""
    s = net["onion_service"]
    srv = net["http_server"]
    lines = [
        "# generated by scripts/testnet.py -- private loopback test network",
        "TestingTorNetwork 1",
        f"DataDirectory {s['data_dir']}",
        "SocksPort 0",
        f"ControlPort {LOOPBACK}:{s['control_port']}",
        "CookieAuthentication 1",
        f"HiddenServiceDir {s['hs_dir']}",
        f"HiddenServicePort {ONION_VIRTUAL_PORT} {srv['address']}:{srv['port']}",
        "LearnCircuitBuildTimeout 0",
        "CircuitBuildTimeout 60",
    ]
    lines += fors_only_lines(net)
    lines += dirauthority_lines(net["authorities"])
    lines += ["", "# C tor only"] + common_ctor_lines(s["data_dir"])
    return lines


# Source addresses too: a loopback OutboundBindAddress (a test giving the client its own
# 127.0.0.x) is fine, any other address is refused like a listener's.
_BIND_OPTS = ("OutboundBindAddress", "OutboundBindAddressOR", "OutboundBindAddressExit")
_ADDR_OPTS = ("Address", "ORPort", "DirPort", "SocksPort", "ControlPort", "DirAuthority",
              "MetricsPort") + _BIND_OPTS


def check_torrc_is_local(path, extra_policies=(), isolated=False):
    """Refuse any torrc that could reach beyond loopback.  `extra_policies` are further
    exit policies to allow; only `up` passes them, for --policy-exit slots, after it has
    checked that it runs in an isolated network namespace.  `isolated` (also only after that
    check) lets OutboundBindAddress* name a non-loopback source address: there, addresses on
    `lo` are all that exists."""
    problems = []
    policy = []
    has_testing = has_auth = has_orport = False
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, _, val = line.partition(" ")
            if key == "TestingTorNetwork" and val.strip() == "1":
                has_testing = True
            if key == "DirAuthority":
                has_auth = True
            if key == "ORPort":
                has_orport = True
            if key in ("FallbackDir", "Bridge", "UseBridges", "HTTPSProxy", "Socks5Proxy",
                       "Socks4Proxy", "HTTPProxy"):
                problems.append(f"forbidden option {key}")
            if key in _ADDR_OPTS:
                for tok in val.split():
                    m = re.match(r"^\[?([0-9a-fA-F.:]+?)\]?:(\d+)$", tok)
                    # Bind addresses have no port ("::1" is not ":" port 1).
                    cand = tok.strip("[]") if key in _BIND_OPTS else (m.group(1) if m else tok)
                    try:
                        ip = ipaddress.ip_address(cand)
                    except ValueError:
                        if key in ("ORPort", "DirPort", "SocksPort", "ControlPort") + _BIND_OPTS \
                                and tok not in ("0", "IPv4Only", "NoAdvertise", "NoListen"):
                            problems.append(f"{key} {val!r} does not name a loopback address")
                        continue
                    if not ip.is_loopback and not (isolated and key in _BIND_OPTS):
                        problems.append(f"{key} names non-loopback {ip}")
            if key == "HiddenServicePort":
                # `VIRTPORT [TARGET]`: the target must be a loopback address:port.
                toks = val.split()
                target = toks[1] if len(toks) > 1 else ""
                m = re.match(r"^\[?([0-9a-fA-F.:]+?)\]?:(\d+)$", target)
                try:
                    ok = bool(m) and ipaddress.ip_address(m.group(1)).is_loopback
                except ValueError:
                    ok = False
                if not ok:
                    problems.append(f"HiddenServicePort {val!r} does not lead to a loopback address")
            if key == "ExitPolicy":
                policy += [r.strip() for r in val.split(",")]
    if policy not in [EXIT_POLICY, NON_EXIT_POLICY] + list(extra_policies) and \
            not (policy == [] and not has_orport):
        problems.append(f"unexpected ExitPolicy {policy}")
    if not has_testing:
        problems.append("missing TestingTorNetwork 1")
    if not has_auth:
        problems.append("missing DirAuthority lines (would use the public authorities)")
    if problems:
        raise TestnetError(f"{path}: refusing unsafe torrc: " + "; ".join(problems))


def policy_accepts(policy, addr, port):
    """Exact first-match evaluation of a tor exit policy (dir-spec §2.1.3
    accept/reject lines), for the self-check below."""
    ip = ipaddress.ip_address(addr)
    for rule in policy:
        action, target = rule.split(" ", 1)
        net, _, ports = target.rpartition(":")
        if ports != "*":
            lo, _, hi = ports.partition("-")
            if not int(lo) <= port <= int(hi or lo):
                continue
        if net == "*" or (net == "*4" and ip.version == 4) or (net == "*6" and ip.version == 6):
            return action == "accept"
        if net in ("*4", "*6"):
            continue
        n = ipaddress.ip_network(net, strict=False)
        if n.version == ip.version and ip in n:
            return action == "accept"
    return True  # tor's implicit default; our policies always end in reject *:*


def self_check_exit_policy():
    """Prove EXIT_POLICY accepts loopback only (run before anything starts)."""
    for addr in ("127.0.0.1", "127.0.0.2", "127.255.255.254"):
        if not policy_accepts(EXIT_POLICY, addr, 443):
            raise TestnetError(f"exit policy does not accept {addr}")
    for addr in ("0.0.0.0", "1.1.1.1", "10.0.0.1", "126.255.255.255", "128.0.0.0",
                 "128.0.0.1", "169.254.1.1", "192.168.1.1", "255.255.255.255",
                 "::1", "::", "2001:db8::1", "::ffff:127.0.0.1"):
        if policy_accepts(EXIT_POLICY, addr, 443):
            raise TestnetError(f"exit policy would accept non-loopback {addr}")


def self_check_policy_exit(ports):
    """A --policy-exit policy accepts its web ports everywhere and loopback above 1023, and
    nothing else (run before anything starts)."""
    rules = policy_exit_rules(ports)
    for addr in ("192.0.2.1", "1.1.1.1", "127.0.0.2"):
        for port in ports:
            if not policy_accepts(rules, addr, port):
                raise TestnetError(f"policy-exit policy does not accept {addr}:{port}")
    for port in set(POLICY_EXIT_PORTS) - set(ports):
        if policy_accepts(rules, "192.0.2.1", port) or policy_accepts(rules, "127.0.0.2", port):
            raise TestnetError(f"policy-exit policy for ports {ports} accepts port {port}")
    if not policy_accepts(rules, "127.0.0.2", 15000):
        raise TestnetError("policy-exit policy does not accept loopback high ports")
    for addr, port in (("192.0.2.1", 22), ("192.0.2.1", 15000), ("10.0.0.1", 8080),
                       ("127.0.0.2", 22), ("::1", 15000), ("2001:db8::1", 22)):
        if policy_accepts(rules, addr, port):
            raise TestnetError(f"policy-exit policy would accept {addr}:{port}")


def write_torrc(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------
# Key generation
# --------------------------------------------------------------------------

_FP_LINE = re.compile(r"^(\S+) ((?:[0-9A-F]{4} ?){10})\s*$")


def parse_list_fingerprint(output, nick):
    for line in reversed(output.splitlines()):
        m = _FP_LINE.match(line.strip())
        if m and m.group(1) == nick:
            return m.group(2).replace(" ", "")
    raise TestnetError(f"could not find '{nick} <fingerprint>' in --list-fingerprint output:\n{output}")


def list_fingerprint(cmd, nick, cwd):
    try:
        res = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise TestnetError(f"{' '.join(cmd)} timed out")
    except OSError as e:
        raise TestnetError(f"cannot run {cmd[0]}: {e}")
    if res.returncode != 0:
        raise TestnetError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return parse_list_fingerprint(res.stdout, nick)


def read_ed25519_file(data_dir):
    """C tor writes DataDirectory/fingerprint-ed25519 as 'nick base64id'."""
    try:
        with open(os.path.join(data_dir, "fingerprint-ed25519")) as f:
            parts = f.read().split()
        return parts[1] if len(parts) == 2 else None
    except OSError:
        return None


def make_authority_keys(net, node, empty_defaults):
    keys = os.path.join(node["data_dir"], "keys")
    os.makedirs(keys, mode=0o700, exist_ok=True)
    cmd = [net["tor_gencert"], "--create-identity-key", "--passphrase-fd", "0",
           "-i", os.path.join(keys, "authority_identity_key"),
           "-s", os.path.join(keys, "authority_signing_key"),
           "-c", os.path.join(keys, "authority_certificate"),
           "-m", "12", "-a", f"{LOOPBACK}:{node['dirport']}"]
    try:
        res = subprocess.run(cmd, input=AUTH_PASSPHRASE + "\n", capture_output=True, text=True,
                             timeout=120, cwd=node["data_dir"])
    except subprocess.TimeoutExpired:
        raise TestnetError("tor-gencert timed out")
    if res.returncode != 0:
        raise TestnetError(f"tor-gencert failed:\n{res.stdout}{res.stderr}")
    with open(os.path.join(keys, "authority_certificate")) as f:
        for line in f:
            if line.startswith("fingerprint "):
                node["v3ident"] = line.split()[1].strip()
                break
    if not node.get("v3ident"):
        raise TestnetError("authority_certificate has no fingerprint line")
    # The relay identity needs a torrc without DirAuthority lines (they do not
    # exist yet), hence without TestingTorNetwork: --list-fingerprint is offline.
    keygen = os.path.join(node["data_dir"], "keygen.torrc")
    write_torrc(keygen, [f"DataDirectory {node['data_dir']}", f"Nickname {node['nick']}",
                         f"ORPort {LOOPBACK}:{node['orport']}", "SocksPort 0",
                         f"ContactInfo {node['nick']}@testnet.invalid"])
    node["fingerprint"] = list_fingerprint(
        [net["tor"], "--defaults-torrc", empty_defaults, "-f", keygen, "--list-fingerprint"],
        node["nick"], node["data_dir"])
    node["ed25519_id"] = read_ed25519_file(node["data_dir"])


# --------------------------------------------------------------------------
# up
# --------------------------------------------------------------------------

def with_arti_time_period(params, voting_interval):
    """`params` plus `hsdir_interval=M` (unless given), M = one shared-random protocol run
    (24 voting intervals) in minutes.  C tor in a TestingTorNetwork takes the onion-service
    time period from that run and ignores `hsdir_interval` (hs_common.c
    get_time_period_length); arti always reads `hsdir_interval` (default 1440, accepted
    5..14400), so without it arti derives other blinded keys and HSDirs and never finds a C
    tor service's descriptor."""
    minutes, rest = divmod(24 * voting_interval, 60)
    if rest or minutes < 5 or "hsdir_interval=" in (params or ""):
        return params
    return " ".join(p for p in ((params or "").strip(), f"hsdir_interval={minutes}") if p)


def plan_network(args):
    run_dir = os.path.abspath(args.dir)
    port = args.base_port
    used = []

    def next_port():
        nonlocal port
        p = port
        port += 1
        used.append(p)
        return p

    consensus_params = args.consensus_params
    if getattr(args, "fors_only", False):
        consensus_params = with_arti_time_period(consensus_params, args.voting_interval)
    net = {
        "run_dir": run_dir,
        "tor": args.tor,
        "tor_gencert": args.tor_gencert,
        "consensus_params": consensus_params,
        "voting": {"interval": args.voting_interval, "vote_delay": args.vote_delay,
                   "dist_delay": args.dist_delay},
        "client_options": args.client_option or [],
        "ctor_options": getattr(args, "ctor_option", None) or [],
        "real_flags": bool(getattr(args, "real_flags", False)),
        "fors_only": bool(getattr(args, "fors_only", False)),
        "authorities": [],
        "relays": [],
    }
    for i in range(args.authorities):
        nick = f"auth{i}"
        net["authorities"].append({
            "nick": nick, "address": LOOPBACK, "orport": next_port(), "dirport": next_port(),
            "data_dir": os.path.join(run_dir, nick), "torrc": os.path.join(run_dir, nick, "torrc"),
        })

    def add_relay(nick, role, kind, binary, pluggable):
        net["relays"].append({
            "nick": nick, "kind": kind, "role": role, "pluggable": pluggable, "bin": binary,
            "address": LOOPBACK, "orport": next_port(),
            "data_dir": os.path.join(run_dir, nick), "torrc": os.path.join(run_dir, nick, "torrc"),
        })

    fors_only = net["fors_only"]
    # C tor relays: 2 middles and 2 exits unless given; none at all with --fors-only.
    middles = args.middles if args.middles is not None else (0 if fors_only else 2)
    exits = args.exits if args.exits is not None else (0 if fors_only else 2)
    fors_roles = list(args.fors or [])
    if fors_only:
        if not args.fors_bin:
            raise TestnetError("--fors-only needs --fors-bin (env FORS_BIN): every relay is Fors")
        if middles or exits:
            raise TestnetError("--fors-only runs no C tor relay: drop --middles/--exits "
                               f"(got --middles {middles} --exits {exits})")
        fors_roles = fors_roles or list(FORS_ONLY_DEFAULT_SLOTS)
        if "exit" not in fors_roles or len(fors_roles) < FORS_ONLY_MIN_RELAYS:
            raise TestnetError(f"--fors-only needs at least {FORS_ONLY_MIN_RELAYS} Fors relays, "
                               f"one of them an exit (got --fors {' '.join(fors_roles)}): a C tor "
                               "onion-service circuit has four distinct hops")
    for i in range(middles):
        add_relay(f"middle{i + 1}", "middle", "ctor", args.tor, False)
    for i in range(exits):
        add_relay(f"exit{i + 1}", "exit", "ctor", args.tor, False)
    counts = {"exit": 0, "middle": 0}
    for role in fors_roles:
        counts[role] += 1
        kind = "fors" if args.fors_bin else "ctor"
        binary = os.path.abspath(args.fors_bin) if args.fors_bin else args.tor
        add_relay(f"fors{role}{counts[role]}", role, kind, binary, True)
    slots = {r["nick"] for r in net["relays"] if r["pluggable"]}
    for opt in args.slot_option or []:
        nick, _, line = opt.strip().partition(" ")
        if nick not in slots or not line.strip():
            raise TestnetError(f"--slot-option {opt!r}: expected 'SLOT Key Value' with SLOT one of "
                               f"{sorted(slots) or 'the --fors slots (none given)'}")
        net.setdefault("slot_options", []).append((nick, line.strip()))
    shards = getattr(args, "fors_shards", None)
    if shards is not None:
        if shards < 1:
            raise TestnetError(f"--fors-shards {shards}: expected a shard count of at least 1")
        if not slots:
            raise TestnetError("--fors-shards: this network has no --fors slots")
        # `NumCPUs N` (Fors: N shards) for every slot whose --slot-option does not set it.
        given = {n for n, line in net.get("slot_options", [])
                 if line.split()[0].lower() == "numcpus"}
        for r in net["relays"]:
            if r["pluggable"] and r["nick"] not in given:
                net.setdefault("slot_options", []).append((r["nick"], f"NumCPUs {shards}"))
    for opt in args.slot_keys or []:
        nick, _, src = opt.strip().partition(" ")
        src = src.strip()
        if nick not in slots or not src:
            raise TestnetError(f"--slot-keys {opt!r}: expected 'SLOT DIR' with SLOT one of "
                               f"{sorted(slots) or 'the --fors slots (none given)'}")
        if not os.path.isdir(src):
            raise TestnetError(f"--slot-keys {opt!r}: {src} is not a directory")
        net.setdefault("slot_keys", {})[nick] = os.path.abspath(src)
    for opt in args.policy_exit or []:
        nick, _, ports_txt = opt.strip().partition(" ")
        exits = {r["nick"] for r in net["relays"] if r["pluggable"] and r["role"] == "exit"}
        try:
            ports = sorted({int(p) for p in ports_txt.replace(",", " ").split()})
        except ValueError:
            ports = []
        if nick not in exits or not ports or not set(ports) <= set(POLICY_EXIT_PORTS):
            raise TestnetError(f"--policy-exit {opt!r}: expected 'SLOT PORTS' with SLOT one of "
                               f"{sorted(exits) or 'the --fors exit slots (none given)'} and "
                               f"PORTS from {','.join(map(str, POLICY_EXIT_PORTS))}, e.g. "
                               "'forsexit1 80,443'")
        net.setdefault("policy_exits", {})[nick] = ports
    client_dir = os.path.join(run_dir, "client")
    net["client"] = {"nick": "client", "socks_port": next_port(), "control_port": next_port(),
                     "data_dir": client_dir, "torrc": os.path.join(client_dir, "torrc")}
    net["server_address"] = args.server_addr
    if not args.no_server:
        net["http_server"] = {"address": args.server_addr, "port": next_port(), "pid": None}
    if getattr(args, "onion_service", False):
        if args.no_server:
            raise TestnetError("--onion-service leads to the HTTP server: drop --no-server")
        sdir = os.path.join(run_dir, "service")
        net["onion_service"] = {"nick": "service", "control_port": next_port(), "data_dir": sdir,
                                "torrc": os.path.join(sdir, "torrc"),
                                "hs_dir": os.path.join(sdir, "hs"),
                                "virtual_port": ONION_VIRTUAL_PORT}
    # Allocated last, so the ports above do not move when MetricsPorts are added.
    for r in net["relays"]:
        if r["kind"] == "fors":
            given, policy = slot_metrics_port(net, r["nick"])
            if given:
                r["metrics_port"] = given
                r["metrics_port_in_torrc"] = True
                r["metrics_policy_in_torrc"] = policy
            else:
                r["metrics_port"] = next_port()
    busy = [p for p in used if not port_is_free(p)]
    if "http_server" in net and not port_is_free(net["http_server"]["port"], args.server_addr):
        busy.append(net["http_server"]["port"])
    if busy:
        raise TestnetError(f"ports already in use on {LOOPBACK}: {busy}; pick another --base-port")
    return net


def prepare_run_dir(run_dir):
    if os.path.exists(run_dir):
        entries = os.listdir(run_dir)
        if entries and MARKER not in entries:
            raise TestnetError(f"{run_dir} exists, is not empty and was not made by this script; "
                               "refusing to delete it (use another --dir)")
        net_path = os.path.join(run_dir, "network.json")
        if os.path.exists(net_path):
            try:
                with open(net_path) as f:
                    old = json.load(f)
                alive = [l for l, p, t in all_processes(old) if p and pid_is_ours(p, t)]
            except (OSError, ValueError, KeyError):
                alive = []
            if alive:
                raise TestnetError(f"a network is still running in {run_dir} ({', '.join(alive)}); "
                                   "run `down` first")
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, mode=0o700)
    open(os.path.join(run_dir, MARKER), "w").close()


class Launcher:
    """Starts processes and remembers them so any failure can stop them."""

    def __init__(self):
        self.procs = []  # (label, Popen, token)

    def start(self, label, cmd, cwd, log_path, token):
        logf = open(log_path, "ab")
        try:
            p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise TestnetError(f"cannot start {label} ({cmd[0]}): {e}")
        finally:
            logf.close()
        self.procs.append((label, p, token))
        return p.pid

    def stop_all(self):
        left = stop_pids([(l, p.pid, t) for l, p, t in self.procs])
        for _, p, _ in self.procs:
            try:
                p.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        return left


def tor_cmd(net, torrc):
    return [net["tor"], "--defaults-torrc", os.path.join(net["run_dir"], "empty-defaults"),
            "-f", torrc]


def node_cmd(net, node):
    if node.get("kind") == "fors":
        return [node["bin"], "-f", node["torrc"]] + metrics_args(node)
    return tor_cmd(net, node["torrc"])


def cmd_up(args, launcher):
    for b in (args.tor, args.tor_gencert):
        if not os.access(b, os.X_OK):
            raise TestnetError(f"{b} is not executable")
    if args.fors_bin and not os.access(args.fors_bin, os.X_OK):
        raise TestnetError(f"--fors-bin {args.fors_bin} is not executable")
    if args.authorities < 1:
        raise TestnetError("need at least one authority")
    self_check_exit_policy()
    t0 = time.time()
    net = plan_network(args)
    if not any(r["role"] == "exit" for r in net["relays"]):
        raise TestnetError("need at least one exit relay")
    extra_policies = []
    if net.get("policy_exits"):
        # A real exit policy is safe only where nothing can leave: demand an isolated
        # network namespace (only `lo`, no route off it) before anything is written/started.
        net["netns"] = require_isolated_netns("--policy-exit")
        for nick, ports in sorted(net["policy_exits"].items()):
            self_check_policy_exit(ports)
            extra_policies.append(policy_exit_rules(ports))
            log(f"{nick}: exit policy {', '.join(policy_exit_rules(ports))} (Exit flag decided "
                "by the authorities from this policy)")
    run_dir = net["run_dir"]
    prepare_run_dir(run_dir)
    empty_defaults = os.path.join(run_dir, "empty-defaults")
    # An empty defaults file: keep /etc/tor/torrc-defaults of a system tor out.
    open(empty_defaults, "w").close()
    with open(os.path.join(run_dir, "resolv.conf"), "w") as f:
        f.write("# exits resolve only via loopback (nothing listens there)\nnameserver 127.0.0.1\n")
    for node in net["authorities"] + net["relays"] + [net["client"]] + service_list(net):
        os.makedirs(node["data_dir"], mode=0o700, exist_ok=True)
    # --slot-keys: the slot starts with existing keys (e.g. made by C tor), so the
    # --list-fingerprint below loads them instead of generating new ones.
    for nick, src in net.get("slot_keys", {}).items():
        slot = next(r for r in net["relays"] if r["nick"] == nick)
        keys = os.path.join(slot["data_dir"], "keys")
        shutil.copytree(src, keys)
        os.chmod(keys, 0o700)
        for name in os.listdir(keys):
            os.chmod(os.path.join(keys, name), 0o600)

    log(f"generating keys for {len(net['authorities'])} authorities and {len(net['relays'])} relays in {run_dir}")
    # RSA key generation dominates setup time; run the tools concurrently.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for f in [pool.submit(make_authority_keys, net, a, empty_defaults) for a in net["authorities"]]:
            f.result()
        for r in net["relays"]:
            lines = relay_core_lines(net, r)
            if r["kind"] == "ctor":
                lines += relay_ctor_extra_lines(net, r)
            write_torrc(r["torrc"], lines)
            check_torrc_is_local(r["torrc"], extra_policies, isolated=bool(net.get("netns")))

        def relay_identity(r):
            cmd = ([r["bin"], "--list-fingerprint", "-f", r["torrc"]] if r["kind"] == "fors"
                   else tor_cmd(net, r["torrc"]) + ["--list-fingerprint"])
            r["fingerprint"] = list_fingerprint(cmd, r["nick"], r["data_dir"])
            r["ed25519_id"] = read_ed25519_file(r["data_dir"])

        for f in [pool.submit(relay_identity, r) for r in net["relays"]]:
            f.result()
    # Forced Exit for every exit except the --policy-exit slots (the policy decides those).
    exit_fps = [r["fingerprint"] for r in net["relays"]
                if r["role"] == "exit" and r["nick"] not in net.get("policy_exits", {})]
    for a in net["authorities"]:
        write_torrc(a["torrc"], authority_lines(net, a, exit_fps))
        check_torrc_is_local(a["torrc"])
    pins = {}
    for role in ("entry", "middle", "exit"):
        name = getattr(args, role, None)
        if name:
            pins[role] = find_relay(net, name)["fingerprint"]
    auto_pin_entry(net, pins)
    net["client"]["pins"] = pins
    write_torrc(net["client"]["torrc"], client_lines(net, pins))
    check_torrc_is_local(net["client"]["torrc"])
    for s in service_list(net):
        write_torrc(s["torrc"], service_lines(net))
        check_torrc_is_local(s["torrc"])

    net["started_at"] = t0
    save_network(net)
    for node in net["authorities"] + net["relays"]:
        node["pid"] = launcher.start(node["nick"], node_cmd(net, node), node["data_dir"],
                                     os.path.join(node["data_dir"], "stdout.log"), node["torrc"])
    save_network(net)
    wait_first_consensus(net, launcher)
    c = net["client"]
    c["pid"] = launcher.start("client", tor_cmd(net, c["torrc"]), c["data_dir"],
                              os.path.join(c["data_dir"], "stdout.log"), c["torrc"])
    if "http_server" in net:
        s = net["http_server"]
        s["pid"] = launcher.start(
            "http-server",
            [sys.executable, os.path.abspath(__file__), "--dir", run_dir, "serve",
             "--address", s["address"], "--port", str(s["port"])],
            run_dir, os.path.join(run_dir, "http-server.log"), run_dir)
    for s in service_list(net):
        s["pid"] = launcher.start("service", tor_cmd(net, s["torrc"]), s["data_dir"],
                                  os.path.join(s["data_dir"], "stdout.log"), s["torrc"])
    save_network(net)
    # Catch immediate startup failures (bad torrc, port clash) early.
    time.sleep(1.5)
    dead = [(l, p) for l, p, _ in launcher.procs if p.poll() is not None]
    if dead:
        details = []
        for label, p in dead:
            node = next((n for n in net["authorities"] + net["relays"] + [c] + service_list(net)
                         if n["nick"] == label), None)
            tail = tail_file(os.path.join(node["data_dir"], "stdout.log") if node
                             else os.path.join(run_dir, "http-server.log"))
            details.append(f"{label} exited with {p.returncode}:\n{tail}")
        raise TestnetError("processes died at startup:\n" + "\n".join(details))
    for s in service_list(net):
        s["hostname"] = read_onion_hostname(s)
        log(f"onion service http://{s['hostname']}:{s['virtual_port']}/ -> "
            f"{net['http_server']['address']}:{net['http_server']['port']}")
    save_network(net)
    log(f"started {len(launcher.procs)} processes (pids recorded in {run_dir}/network.json)")
    for line in describe_nodes(net):
        log("  " + line)
    return net


def service_list(net):
    """The onion service node (--onion-service) as a list: empty or one."""
    return [net["onion_service"]] if net.get("onion_service") else []


def read_onion_hostname(service, limit=20.0):
    """The service's `<56 base32>.onion`, from HiddenServiceDir/hostname, which tor writes
    at start-up (bounded wait)."""
    path = os.path.join(service["hs_dir"], "hostname")
    for _ in range(int(limit / 0.25) + 1):
        try:
            with open(path) as f:
                name = f.read().strip()
            if re.fullmatch(r"[a-z2-7]{56}\.onion", name):
                return name
        except OSError:
            pass
        time.sleep(0.25)
    raise TestnetError(f"the onion service wrote no hostname to {path} within {limit:.0f}s; "
                       f"see {service['data_dir']}/notice.log")


def consensus_running_fps(path):
    """Fingerprints listed Running in a cached (ns) consensus file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return {fp for fp, e in parse_ns(text).items() if "Running" in e["flags"]}


def wait_first_consensus(net, launcher):
    """Block until an authority has published a consensus listing every C tor
    relay as Running (pluggable slots are left to `wait`).

    The client is started only then: a client that starts earlier gets 404s
    or a partial consensus and backs off its fetches, which cost 20-40s in
    our measurements.  If the consensus stays partial past the limit we go
    on anyway and let `wait` report what is missing.
    """
    limit = 6 * net["voting"]["interval"] + 30
    t0 = time.monotonic()
    want = {n["fingerprint"] for n in net["authorities"] + net["relays"] if not n.get("pluggable")}
    paths = [os.path.join(a["data_dir"], "cached-consensus") for a in net["authorities"]]
    seen_any = False
    for _ in range(int(limit / 0.5) + 1):
        best = 0
        for p in paths:
            fps = consensus_running_fps(p)
            if fps is None:
                continue
            seen_any = True
            best = max(best, len(want & fps))
            if want <= fps:
                log(f"consensus with all {len(want)} C tor relays Running published "
                    f"{time.monotonic() - t0:.1f}s after start")
                return
        dead = [l for l, p, _ in launcher.procs if p.poll() is not None]
        if dead:
            raise TestnetError(f"processes died while waiting for the first consensus: {', '.join(dead)}\n"
                               + "\n".join(f"--- {l}:\n" + tail_file(os.path.join(net['run_dir'], l, 'stdout.log'))
                                           for l in dead))
        if time.monotonic() - t0 > limit:
            break
        time.sleep(0.5)
    if seen_any:
        log(f"warning: after {limit}s the authorities' consensus lists only {best}/{len(want)} "
            "C tor relays as Running; starting the client anyway")
        return
    raise TestnetError(f"no consensus from the authorities within {limit}s; see {net['run_dir']}/auth*/notice.log")


def require_isolated_netns(why):
    """Check (scripts/netns.py) that this process runs in an isolated network namespace:
    only `lo`, up, no route through anything else, no default route.  Raises otherwise."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import netns
    except ImportError as e:
        raise TestnetError(f"{why}: cannot load scripts/netns.py: {e}")
    try:
        summary = netns.check_isolated()
    except (netns.NetnsError, OSError) as e:
        raise TestnetError(f"{why} needs an isolated network namespace; refusing to start anything. "
                           f"{e}. Run inside `scripts/netns.py run -- ...` or `scripts/netns.py "
                           "enter PID -- ...`")
    log(f"isolated network namespace: {summary}")
    return {"inode": netns.netns_inode(), "isolated": True}


def check_same_netns(net):
    """A network started in an isolated namespace is reachable only from inside it."""
    ns = net.get("netns")
    if not ns:
        return
    here = os.stat("/proc/self/ns/net").st_ino
    if here != ns["inode"]:
        pid = next((p for _, p, t in all_processes(net) if p and pid_is_ours(p, t)), None)
        raise TestnetError(f"this network runs in the isolated network namespace {ns['inode']}, this "
                           f"command in {here}; run it inside: scripts/netns.py enter "
                           f"{pid or 'PID'} -- scripts/testnet.py --dir {net['run_dir']} ...")


def tail_file(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def describe_nodes(net):
    out = []
    for a in net["authorities"]:
        out.append(f"{a['nick']:<14} authority  or={a['orport']} dir={a['dirport']} fp={a['fingerprint']} pid={a.get('pid')}")
    for r in net["relays"]:
        slot = " [pluggable]" if r.get("pluggable") else ""
        out.append(f"{r['nick']:<14} {r['role']:<6} {r['kind']:<4} or={r['orport']} fp={r['fingerprint']} pid={r.get('pid')}{slot}")
    c = net["client"]
    out.append(f"{'client':<14} socks={c['socks_port']} control={c['control_port']} pid={c.get('pid')}")
    if net.get("http_server"):
        s = net["http_server"]
        out.append(f"{'http-server':<14} http://{s['address']}:{s['port']}/ pid={s.get('pid')}")
    for s in service_list(net):
        out.append(f"{'service':<14} onion={s.get('hostname', '?')} control={s['control_port']} "
                   f"pid={s.get('pid')}")
    return out


# --------------------------------------------------------------------------
# Control port client (control-spec §2/§3: line-based, cookie auth)
# --------------------------------------------------------------------------

class ControlError(TestnetError):
    pass


class Controller:
    """A control connection.  Asynchronous events (650) that arrive while a command waits
    for its reply are kept in `events`, one string per event."""

    def __init__(self, port, timeout=10.0):
        self.events = []
        try:
            self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        except OSError as e:
            raise ControlError(f"cannot connect to control port {port}: {e}")
        self.rfile = self.sock.makefile("rb")
        self._authenticate()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _readline(self):
        line = self.rfile.readline()
        if not line:
            raise ControlError("control connection closed")
        return line.decode(errors="replace").rstrip("\r\n")

    def command(self, cmd):
        """Send one command; return (code, [(text, data_or_None)])."""
        self.sock.sendall(cmd.encode() + b"\r\n")
        lines = []
        while True:
            line = self._readline()
            if len(line) < 4:
                raise ControlError(f"malformed control reply {line!r}")
            code, sep, text = line[:3], line[3], line[4:]
            if code == "650":
                if sep == "+":  # multi-line event data: keep the first line only
                    while self._readline() != ".":
                        pass
                self.events.append(text)
                continue
            data = None
            if sep == "+":
                buf = []
                while True:
                    d = self._readline()
                    if d == ".":
                        break
                    buf.append(d[1:] if d.startswith("..") else d)
                data = "\n".join(buf)
            lines.append((text, data))
            if sep == " ":
                return code, lines

    def ok(self, cmd):
        code, lines = self.command(cmd)
        if code != "250":
            raise ControlError(f"{cmd.split()[0]} failed: {code} {lines[-1][0]}")
        return lines

    def _authenticate(self):
        lines = self.ok("PROTOCOLINFO 1")
        cookie_path = None
        for text, _ in lines:
            m = re.search(r'COOKIEFILE="((?:[^"\\]|\\.)*)"', text)
            if m:
                cookie_path = m.group(1).replace('\\"', '"').replace("\\\\", "\\")
        if not cookie_path:
            raise ControlError("control port offers no cookie file")
        with open(cookie_path, "rb") as f:
            cookie = f.read()
        self.ok("AUTHENTICATE " + binascii.hexlify(cookie).decode())

    def getinfo(self, key):
        """Return the value of one GETINFO key, or None if tor does not know it."""
        code, lines = self.command(f"GETINFO {key}")
        if code != "250":
            return None
        for text, data in lines:
            if text.startswith(key + "="):
                return data if data is not None else text[len(key) + 1:]
        return None


def parse_ns(text):
    """Parse `GETINFO ns/all` (v3 router status entries) into fp -> entry."""
    out = {}
    cur = None
    for line in (text or "").splitlines():
        if line.startswith("r "):
            parts = line.split()
            ident = parts[2]
            fp = base64.b64decode(ident + "=" * (-len(ident) % 4)).hex().upper()
            cur = {"nick": parts[1], "fingerprint": fp, "address": parts[6],
                   "orport": int(parts[7]), "flags": set()}
            out[fp] = cur
        elif line.startswith("s ") and cur is not None:
            cur["flags"] = set(line.split()[1:])
    return out


def client_controller(net):
    return Controller(net["client"]["control_port"])


# --------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------

def required_flags(node, net=None):
    # Fast: C tor clients need it on every hop of a circuit for exit streams.
    flags = {"Running", "Valid", "Fast"}
    if node.get("role") == "exit":
        # A --policy-exit slot earns Exit only if its policy opens both 80 and 443
        # (policies.c exit_policy_is_general_exit); the others are forced.
        ports = (net or {}).get("policy_exits", {}).get(node["nick"])
        if ports is None or set(POLICY_EXIT_PORTS) <= set(ports):
            flags.add("Exit")
    if (net or {}).get("fors_only") and node.get("kind") == "fors":
        # Every guard and HSDir is Fors: the client needs guards, the service HSDirs.
        flags |= {"Guard", "HSDir"}
    return flags


def select_targets(net, args):
    if getattr(args, "relays", None):
        return [find_relay(net, n) for n in args.relays.split(",") if n]
    if getattr(args, "pluggable_only", False):
        t = [r for r in net["relays"] if r.get("pluggable")]
        if not t:
            raise TestnetError("--pluggable-only: this network has no pluggable (--fors) relays")
        return t
    return net["authorities"] + net["relays"]


def check_processes(net):
    dead = [l for l, p, t in all_processes(net) if p and not pid_is_ours(p, t)]
    if dead:
        msgs = []
        for label in dead:
            node = next((n for n in net["authorities"] + net["relays"] + [net["client"]]
                         + service_list(net)
                         if n["nick"] == label), None)
            if node:
                msgs.append(f"--- {label} log tail:\n" + tail_file(os.path.join(node["data_dir"], "stdout.log")))
        raise TestnetError(f"processes not running: {', '.join(dead)}\n" + "\n".join(msgs))


def consensus_listed_fps(path):
    """Every fingerprint listed (any flags) in a cached consensus file, or None."""
    try:
        with open(path) as f:
            return set(parse_ns(f.read()))
    except OSError:
        return None


def metrics_text(port, timeout=2.0):
    """A loopback MetricsPort's GET /metrics body as text, or None if it cannot be read."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            status, _, body = read_http_head(c)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                body += d
    except (OSError, TestnetError, ValueError, IndexError):
        return None
    return body.decode(errors="replace") if status == 200 else None


def scrape_metric(port, name, timeout=2.0):
    """One sample `name value` from a MetricsPort's GET /metrics, or None."""
    text = metrics_text(port, timeout)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            try:
                return int(float(parts[1]))
            except ValueError:
                return None
    return None


def scrape_sums(port, names, timeout=2.0):
    """{name: value summed over its label sets} for each of `names` from a MetricsPort's
    GET /metrics (a name absent counts 0), or None if the port cannot be read."""
    text = metrics_text(port, timeout)
    if text is None:
        return None
    sums = {n: 0 for n in names}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        name = parts[0].split("{", 1)[0]
        if name in sums:
            try:
                sums[name] += int(float(parts[1]))
            except ValueError:
                return None
    return sums


class ExitKnowledge:
    """Does every exit know every relay the client may put before it?

    A relay refuses BEGIN from a previous hop it does not know (C tor
    connection_exit_begin_conn with refuseunknownexits, and Fors likewise), so right after
    the client's consensus is complete a stream can still fail until each exit has a
    consensus listing every relay.  C tor exits: their DataDirectory/cached-consensus.
    Fors exits have no cached consensus on disk; their MetricsPort counts consensus fetches,
    and a fetch completed after the client held a consensus listing everyone (so the
    authorities served one) brings them up to date.  (A fetch already under way at that
    moment could still return the older document; `transfer` keeps a short retry for
    that.)"""

    FETCH_METRIC = "fors_relay_consensus_fetches_ok_total"

    def __init__(self, net):
        self.exits = [r for r in net["relays"] if r["role"] == "exit"]
        self.baseline = {}  # nick -> (relays wanted, fetch count when they were all listed)

    def missing(self, want):
        out = []
        for r in self.exits:
            nick = r["nick"]
            if r.get("kind") == "fors":
                if not r.get("metrics_port"):
                    continue  # network.json from before MetricsPorts: cannot tell
                n = scrape_metric(r["metrics_port"], self.FETCH_METRIC)
                if n is None:
                    out.append(f"{nick}(metrics unavailable)")
                    continue
                key = frozenset(want)
                base = self.baseline.get(nick)
                if base is None or base[0] != key:
                    self.baseline[nick] = (key, n)
                    out.append(f"{nick}(awaiting a consensus fetch)")
                elif n <= base[1]:
                    out.append(f"{nick}(awaiting a consensus fetch)")
                continue
            data_dir = r["data_dir"]
            fps = None
            for name in ("cached-consensus", "cached-microdesc-consensus"):
                fps = consensus_listed_fps(os.path.join(data_dir, name))
                if fps is not None:
                    break
            if fps is None:
                out.append(f"{nick}(no consensus yet)")
            elif not want <= fps:
                out.append(f"{nick}(knows {len(want & fps)}/{len(want)} relays)")
        return out


def cmd_wait(args, net=None):
    net = net or load_network(args.dir)
    check_same_netns(net)
    targets = select_targets(net, args)
    knowledge = ExitKnowledge(net)
    t_start = time.monotonic()
    deadline = t_start + args.timeout
    interactive = sys.stdout.isatty()
    ctl = None
    last_print = 0.0
    status = "starting"
    polls = 0
    max_polls = int(args.timeout / 0.5) + 10  # hard bound besides the clock
    while polls < max_polls and time.monotonic() < deadline:
        polls += 1
        check_processes(net)
        missing = []
        boot = "?"
        try:
            if ctl is None:
                ctl = client_controller(net)
            phase = ctl.getinfo("status/bootstrap-phase") or ""
            m = re.search(r"PROGRESS=(\d+)", phase)
            boot = m.group(1) if m else "?"
            ns = parse_ns(ctl.getinfo("ns/all"))
            for node in targets:
                entry = ns.get(node["fingerprint"])
                if entry is None:
                    missing.append(f"{node['nick']}(absent)")
                    continue
                lack = required_flags(node, net) - entry["flags"]
                if lack:
                    missing.append(f"{node['nick']}(no {'/'.join(sorted(lack))})")
                    continue
                desc = ctl.getinfo(f"desc/id/{node['fingerprint']}")
                if not desc:
                    missing.append(f"{node['nick']}(no descriptor)")
                    continue
                if "HSDir" in required_flags(node, net) and \
                        not re.search(r"^hidden-service-dir$", desc, re.M):
                    # The flag is voted by fiat; the relay must also ask for it.
                    missing.append(f"{node['nick']}(descriptor lacks hidden-service-dir)")
                    continue
                m = re.search(r"^master-key-ed25519 (\S+)", desc, re.M)
                if m and not node.get("ed25519_id"):
                    node["ed25519_id"] = m.group(1)
            circ_ok = ctl.getinfo("status/circuit-established") == "1"
            # Only once the client's view is complete: the exits must know all of it.
            unaware = knowledge.missing(set(ns)) if not missing else []
            status = (f"bootstrap {boot}%, {len(targets) - len(missing)}/{len(targets)} relays ready"
                      + (f"; waiting: {' '.join(missing)}" if missing else "")
                      + ("" if circ_ok else "; no circuit yet")
                      + (f"; exits not up to date: {' '.join(unaware)}" if unaware else ""))
            if not missing and not unaware and boot == "100" and circ_ok:
                fors_only_strict(net, deadline)
                took = time.monotonic() - t_start
                since_up = time.time() - net.get("started_at", time.time())
                net["ready_after_seconds"] = round(since_up, 1)
                save_network(net)
                if interactive:
                    sys.stdout.write("\n")
                log(f"network ready: waited {took:.1f}s, {since_up:.1f}s since `up` started "
                    f"({len(targets)} relays Running+Valid, exits also Exit; every exit knows "
                    f"all {len(ns)} relays)")
                ctl.close()
                return took
        except (ControlError, OSError) as e:
            if ctl is not None:
                ctl.close()
            ctl = None
            status = f"control port not ready ({e})"
        now = time.monotonic()
        if interactive:
            sys.stdout.write(f"\r[{now - t_start:5.1f}s] {status}"[:200].ljust(120))
            sys.stdout.flush()
        elif now - last_print >= 5:
            log(f"[{now - t_start:5.1f}s] {status}")
            last_print = now
        time.sleep(0.5)
    if ctl:
        ctl.close()
    if interactive:
        sys.stdout.write("\n")
    raise TestnetError(f"timed out after {args.timeout}s waiting for the network: {status}")


HSDIR_STORED_METRIC = "fors_hsdir_stored_total"


def fors_hsdir_stored(net):
    """Onion-service descriptors the Fors relays have stored (MetricsPorts, summed)."""
    return sum(scrape_metric(r["metrics_port"], HSDIR_STORED_METRIC) or 0
               for r in net["relays"] if r.get("kind") == "fors" and r.get("metrics_port"))


def fors_only_strict(net, deadline):
    """--fors-only, once the client is ready: `StrictNodes 1` on the client and the service
    (see fors_only_lines), then, with an onion service, wait until a Fors HSDir has stored
    its descriptor (only Fors relays are HSDirs here, so the upload can land nowhere else)."""
    if not net.get("fors_only"):
        return
    for label, port in [("client", net["client"]["control_port"])] + \
            [("service", s["control_port"]) for s in service_list(net)]:
        ctl = Controller(port)
        try:
            ctl.ok("SETCONF StrictNodes=1")
        finally:
            ctl.close()
        log(f"{label}: StrictNodes 1 (ExcludeNodes = the authorities)")
    if not service_list(net):
        return
    polls = 0
    while polls < 400 and time.monotonic() < deadline:
        polls += 1
        n = fors_hsdir_stored(net)
        if n >= 1:
            log(f"onion service descriptor stored at the Fors HSDirs ({HSDIR_STORED_METRIC} {n})")
            return
        check_processes(net)
        time.sleep(0.5)
    raise TestnetError("the onion service's descriptor reached no Fors HSDir in time; see "
                       f"{net['onion_service']['data_dir']}/notice.log")


# --------------------------------------------------------------------------
# Path pinning
# --------------------------------------------------------------------------

def auto_pin_entry(net, pins):
    """C tor picks the guard before the middle and does not keep it out of
    MiddleNodes, so if the guard is the pinned middle no path exists and
    circuits fail forever.  Pin the entry too, to a C tor relay (preferably a
    plain middle) that is neither pinned middle nor exit."""
    if "middle" not in pins or "entry" in pins:
        return
    taken = {pins.get("middle"), pins.get("exit")}
    if net.get("fors_only"):
        # The authorities are excluded from every path: another Fors relay is the entry.
        cands = ([r for r in net["relays"] if r["role"] == "middle"]
                 + [r for r in net["relays"] if r["role"] == "exit"])
    else:
        plain = [r for r in net["relays"] if r["kind"] == "ctor" and not r.get("pluggable")]
        cands = ([r for r in plain if r["role"] == "middle"] + net["authorities"]
                 + [r for r in plain if r["role"] == "exit"])
    for cand in cands:
        if cand["fingerprint"] not in taken:
            pins["entry"] = cand["fingerprint"]
            log(f"pinning entry to {cand['nick']} so the guard cannot collide with the pinned middle")
            return
    raise TestnetError("no relay left to use as entry with these pins")


def apply_pins(net, ctl, entry=None, middle=None, exit_=None, clear=False):
    """SETCONF EntryNodes/MiddleNodes/ExitNodes on the running client.
    Returns the pinned fingerprints by role."""
    pins = {} if clear else dict(net["client"].get("pins", {}))
    for role, name in (("entry", entry), ("middle", middle), ("exit", exit_)):
        if name:
            pins[role] = find_relay(net, name)["fingerprint"]
    auto_pin_entry(net, pins)
    parts = []
    for role, opt in (("entry", "EntryNodes"), ("middle", "MiddleNodes"), ("exit", "ExitNodes")):
        parts.append(f'{opt}="${pins[role]}"' if role in pins else opt)
    # SETCONF with a bare key resets it to default (control-spec SETCONF).
    ctl.ok("SETCONF " + " ".join(parts))
    # Changing node restrictions marks old circuits unusable; NEWNYM makes
    # sure no dirty circuit is reused for new streams.
    ctl.ok("SIGNAL NEWNYM")
    net["client"]["pins"] = pins
    save_network(net)
    return pins


def cmd_pin(args):
    net = load_network(args.dir)
    check_same_netns(net)
    ctl = client_controller(net)
    try:
        pins = apply_pins(net, ctl, args.entry, args.middle, args.exit, args.clear)
    finally:
        ctl.close()
    names = {r["fingerprint"]: r["nick"] for r in net["relays"] + net["authorities"]}
    log("client pins: " + (", ".join(f"{k}={names.get(v, v)}" for k, v in pins.items()) or "none"))


# --------------------------------------------------------------------------
# HTTP server (data source / sink)
# --------------------------------------------------------------------------

CHUNK = 64 * 1024


def data_chunks(seed, nbytes):
    """Deterministic pseudo-random bytes, so both ends can hash independently."""
    rng = random.Random(seed)
    left = nbytes
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def expected_sha256(seed, nbytes):
    h = hashlib.sha256()
    for c in data_chunks(seed, nbytes):
        h.update(c)
    return h.hexdigest()


class DataHandler(http.server.BaseHTTPRequestHandler):
    """GET /data/<bytes>?seed=S -> random bytes; POST /upload -> sha256 JSON."""
    protocol_version = "HTTP/1.1"
    server_version = "fors-testnet"

    def log_message(self, fmt, *a):  # keep quiet; errors still go to stderr
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        m = re.fullmatch(r"/data/(\d+)", url.path)
        if not m:
            self.send_error(404)
            return
        nbytes = int(m.group(1))
        if nbytes > 1 << 34:
            self.send_error(400, "too large")
            return
        q = urllib.parse.parse_qs(url.query)
        seed = q.get("seed", ["0"])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(nbytes))
        self.end_headers()
        try:
            for c in data_chunks(seed, nbytes):
                self.wfile.write(c)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        if self.path != "/upload":
            self.send_error(404)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send_error(411)
            return
        h = hashlib.sha256()
        got = 0
        while got < length:
            c = self.rfile.read(min(CHUNK, length - got))
            if not c:
                break
            h.update(c)
            got += len(c)
        body = json.dumps({"bytes": got, "sha256": h.hexdigest()}).encode()
        self.send_response(200 if got == length else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DataServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_server_thread(addr, port):
    srv = DataServer((addr, port), DataHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


def check_server_addr(addr):
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise TestnetError(f"server address {addr!r} is not an IP address")
    if ip.version != 4 or not ip.is_loopback:
        raise TestnetError(f"server address {addr} must be in 127.0.0.0/8")
    if addr == LOOPBACK:
        log(f"warning: serving on the relays' address {LOOPBACK}: C tor clients will "
            "exit-enclave to a relay and ignore ExitNodes pins")


def cmd_serve(args):
    check_server_addr(args.address)
    srv = DataServer((args.address, args.port), DataHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    log(f"serving on http://{args.address}:{args.port}/ (GET /data/<bytes>?seed=S, POST /upload)")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


# --------------------------------------------------------------------------
# SOCKS5 client (RFC 1928/1929) and HTTP over it
# --------------------------------------------------------------------------

class SocksReplyError(TestnetError):
    """The SOCKS server answered CONNECT with a failure `code` (RFC 1928 §6)."""

    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code


SOCKS5_ERRORS = {1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
                 4: "host unreachable", 5: "connection refused", 6: "TTL expired",
                 7: "command not supported", 8: "address type not supported"}


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        c = sock.recv(n - len(buf))
        if not c:
            raise TestnetError("connection closed during SOCKS handshake")
        buf += c
    return buf


def socks5_connect(socks_port, host, port, username, password, timeout):
    s = socket.create_connection((LOOPBACK, socks_port), timeout=timeout)
    try:
        # Offer username/password only: tor uses it for stream isolation
        # (IsolateSOCKSAuth), giving each test its own circuit.
        s.sendall(b"\x05\x01\x02")
        ver, method = recv_exact(s, 2)
        if ver != 5 or method != 2:
            raise TestnetError(f"SOCKS server chose method {method}")
        u, p = username.encode(), password.encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        if recv_exact(s, 2)[1] != 0:
            raise TestnetError("SOCKS authentication refused")
        try:
            addr = b"\x01" + socket.inet_aton(host)
        except OSError:  # a name (an onion address): ATYP 3, resolved by tor
            addr = b"\x03" + bytes([len(host)]) + host.encode()
        s.sendall(b"\x05\x01\x00" + addr + struct.pack(">H", port))
        ver, rep, _, atyp = recv_exact(s, 4)
        if rep != 0:
            raise SocksReplyError(f"SOCKS CONNECT to {host}:{port} failed: "
                                  f"{SOCKS5_ERRORS.get(rep, rep)}", rep)
        if atyp == 1:
            recv_exact(s, 6)
        elif atyp == 4:
            recv_exact(s, 18)
        elif atyp == 3:
            recv_exact(s, recv_exact(s, 1)[0] + 2)
        return s
    except BaseException:
        s.close()
        raise


def read_http_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = sock.recv(4096)
        if not c:
            raise TestnetError("connection closed before HTTP response headers")
        buf += c
        if len(buf) > 65536:
            raise TestnetError("HTTP response headers too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


# --------------------------------------------------------------------------
# traffic
# --------------------------------------------------------------------------

def circuit_paths_for(ctl, username, target):
    """Circuit paths (list of fingerprints) carrying our stream, found by our
    SOCKS username (circuit-status SOCKS_USERNAME) or else the stream target."""
    circs = {}
    by_user = []
    for line in (ctl.getinfo("circuit-status") or "").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        path = [h.split("~")[0].lstrip("$") for h in parts[2].split(",")]
        circs[parts[0]] = path
        if f'SOCKS_USERNAME="{username}"' in line:
            by_user.append(path)
    if by_user:
        return by_user
    paths = []
    for line in (ctl.getinfo("stream-status") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3] == target and parts[2] in circs:
            paths.append(circs[parts[2]])
    return paths


# A last-resort safety net: `wait` already waits until every exit knows every relay.
CONNECT_ATTEMPTS = 3
CONNECT_RETRY_DELAY = 5


def transfer(net, ctl, server, direction, nbytes, timeout, pins):
    server_addr, server_port = server
    socks = net["client"]["socks_port"]
    tag = f"{direction}-{os.getpid()}-{random.getrandbits(32):08x}"
    seed = tag
    target = f"{server_addr}:{server_port}"
    t_conn = time.monotonic()
    try:
        # An exit that does not know the relay before it refuses BEGIN (END MISC, C tor's
        # refuseunknownexits, and Fors does the same) and the client gives up with a SOCKS
        # general failure. `wait` waits until every exit knows every relay, so this retry
        # only covers a consensus fetch that was under way at that moment (ExitKnowledge).
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                s = socks5_connect(socks, server_addr, server_port, f"{tag}-{attempt}", "x", timeout)
                tag = f"{tag}-{attempt}"
                break
            except TestnetError as e:
                if attempt == CONNECT_ATTEMPTS or "CONNECT" not in str(e):
                    raise
                log(f"{direction}: {e}; retrying on a new circuit in {CONNECT_RETRY_DELAY}s "
                    f"(attempt {attempt}/{CONNECT_ATTEMPTS}; unexpected after `wait`)")
                time.sleep(CONNECT_RETRY_DELAY)
    except OSError as e:
        raise TestnetError(f"{direction}: SOCKS connect to {target} via {LOOPBACK}:{socks} failed "
                           f"after {time.monotonic() - t_conn:.0f}s: {e} (see client/notice.log; "
                           "pinned relays must be Running/Valid/Fast and Exit for the exit)")
    connect_s = time.monotonic() - t_conn
    paths = circuit_paths_for(ctl, tag, target)
    try:
        if direction == "down":
            want = expected_sha256(seed, nbytes)
            t0 = time.monotonic()
            s.sendall(f"GET /data/{nbytes}?seed={urllib.parse.quote(seed)} HTTP/1.1\r\n"
                      f"Host: {target}\r\nConnection: close\r\n\r\n".encode())
            status, headers, rest = read_http_head(s)
            if status != 200:
                raise TestnetError(f"download: HTTP {status}")
            h = hashlib.sha256(rest)
            got = len(rest)
            while got < nbytes:
                c = s.recv(256 * 1024)
                if not c:
                    break
                h.update(c)
                got += len(c)
            elapsed = time.monotonic() - t0
            ok = got == nbytes and h.hexdigest() == want
            detail = f"got {got}/{nbytes} bytes sha256 {h.hexdigest()[:16]}.. want {want[:16]}.."
        else:
            h = hashlib.sha256()
            t0 = time.monotonic()
            s.sendall(f"POST /upload HTTP/1.1\r\nHost: {target}\r\nContent-Length: {nbytes}\r\n"
                      f"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n".encode())
            for c in data_chunks(seed, nbytes):
                h.update(c)
                s.sendall(c)
            status, headers, rest = read_http_head(s)
            clen = int(headers.get("content-length", "0"))
            while len(rest) < clen:
                c = s.recv(4096)
                if not c:
                    break
                rest += c
            elapsed = time.monotonic() - t0
            try:
                reply = json.loads(rest.decode())
            except ValueError:
                raise TestnetError(f"upload: bad server reply {rest[:200]!r}")
            ok = status == 200 and reply.get("bytes") == nbytes and reply.get("sha256") == h.hexdigest()
            detail = f"server got {reply.get('bytes')}/{nbytes} bytes sha256 {str(reply.get('sha256'))[:16]}.. sent {h.hexdigest()[:16]}.."
    finally:
        s.close()
    mbps = nbytes / 1e6 / elapsed if elapsed > 0 else float("inf")
    names = {r["fingerprint"]: r["nick"] for r in net["relays"] + net["authorities"]}
    path_txt = " | ".join(" -> ".join(names.get(fp, fp[:8]) for fp in p) for p in paths) or "unknown"
    pin_ok = True
    if paths and pins:
        for p in paths:
            if len(p) < 3:
                pin_ok = False
                continue
            for role, idx in (("entry", 0), ("middle", 1), ("exit", -1)):
                if role in pins and p[idx] != pins[role]:
                    pin_ok = False
    elif pins and not paths:
        pin_ok = False
    fors_ok = True
    if net.get("fors_only"):
        # Every hop of the circuit carrying the stream is a Fors relay.
        fors = {r["fingerprint"] for r in net["relays"] if r.get("kind") == "fors"}
        fors_ok = bool(paths) and all(fp in fors for p in paths for fp in p)
    res = {"direction": direction, "bytes": nbytes, "seconds": round(elapsed, 3),
           "connect_seconds": round(connect_s, 3), "mb_per_s": round(mbps, 2),
           "checksum_ok": ok, "path": path_txt, "pins_honoured": pin_ok, "fors_only_ok": fors_ok,
           "detail": detail}
    log(f"{direction:>4}: {nbytes / 1e6:.1f} MB in {elapsed:.2f}s = {mbps:.2f} MB/s "
        f"(SOCKS connect {connect_s:.2f}s) checksum {'OK' if ok else 'MISMATCH'}; path {path_txt}"
        + ("" if pin_ok else "  ** PATH DOES NOT MATCH PINS **")
        + ("" if fors_ok else "  ** PATH IS NOT FORS ONLY **"))
    if not ok:
        log(f"      {detail}")
    return res


def server_running(net):
    s = net.get("http_server")
    if not s or not s.get("pid") or not pid_is_ours(s["pid"], net["run_dir"]):
        return None
    try:
        with socket.create_connection((s["address"], s["port"]), timeout=2) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, _ = read_http_head(c)
            return (s["address"], s["port"]) if status == 200 else None
    except (OSError, TestnetError):
        return None


def pick_free_port(net, addr):
    used = {n.get(k) for n in net["authorities"] + net["relays"] for k in ("orport", "dirport")}
    used |= {net["client"]["socks_port"], net["client"]["control_port"]}
    for p in range(net["client"]["control_port"] + 1, net["client"]["control_port"] + 200):
        if p not in used and port_is_free(p, addr):
            return p
    raise TestnetError("no free port for the HTTP server")


def cmd_traffic(args, net=None):
    net = net or load_network(args.dir)
    check_same_netns(net)
    check_processes(net)
    ctl = client_controller(net)
    srv = None
    results = []
    try:
        pins = net["client"].get("pins", {})
        if args.entry or args.middle or args.exit or args.clear_pins:
            # Pins given here replace earlier ones rather than merge with them.
            pins = apply_pins(net, ctl, args.entry, args.middle, args.exit, clear=True)
        server = server_running(net)
        if server is None:
            addr = net.get("server_address", SERVER_ADDR_DEFAULT)
            check_server_addr(addr)
            server = (addr, pick_free_port(net, addr))
            srv = start_server_thread(*server)
            log(f"started in-process HTTP server on {server[0]}:{server[1]}")
        relay_eps = {(LOOPBACK, n.get("orport")) for n in net["relays"] + net["authorities"]}
        if getattr(args, "onion", False):
            if not service_list(net):
                raise TestnetError("--onion: this network has no onion service (up --onion-service)")
            if server != (net["http_server"]["address"], net["http_server"]["port"]):
                raise TestnetError("--onion: the HTTP server the onion service leads to is not running")
            s = net["onion_service"]
            server = (s["hostname"], s["virtual_port"])
        elif server in relay_eps:
            raise TestnetError("HTTP server address:port is a relay ORPort (exits refuse re-entry)")
        for i in range(args.repeat):
            if args.down_mb > 0:
                results.append(transfer(net, ctl, server, "down", int(args.down_mb * 1e6), args.io_timeout, pins))
            if args.up_mb > 0:
                results.append(transfer(net, ctl, server, "up", int(args.up_mb * 1e6), args.io_timeout, pins))
    finally:
        ctl.close()
        if srv:
            srv.shutdown()
            srv.server_close()
    bad = [r for r in results
           if not r["checksum_ok"] or not r["pins_honoured"] or not r["fors_only_ok"]]
    if bad:
        raise TestnetError(f"{len(bad)} of {len(results)} transfers failed verification")
    if net.get("fors_only"):
        others = non_fors_circuits(net)
        if others:
            raise TestnetError("--fors-only: circuits through a C tor relay:\n  " + "\n  ".join(others))
        log("fors-only: every built circuit of the client" + (" and the service" if service_list(net)
                                                              else "") + " has only Fors hops")
    return results


def non_fors_circuits(net):
    """--fors-only: the BUILT circuits of the client and the service with a hop that is not a
    Fors relay (GETINFO circuit-status), as `who id: path` lines."""
    fors = {r["fingerprint"] for r in net["relays"] if r.get("kind") == "fors"}
    names = {r["fingerprint"]: r["nick"] for r in net["relays"] + net["authorities"]}
    out = []
    for label, port in [("client", net["client"]["control_port"])] + \
            [("service", s["control_port"]) for s in service_list(net)]:
        ctl = Controller(port)
        try:
            text = ctl.getinfo("circuit-status") or ""
        finally:
            ctl.close()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] != "BUILT":
                continue
            hops = [h.split("~")[0].lstrip("$") for h in parts[2].split(",")]
            if "ONEHOP_TUNNEL" in line:
                # A BEGIN_DIR tunnel for a directory fetch, never a relayed stream: from
                # before StrictNodes 1 it may still lead to an authority (the first consensus
                # can come from nowhere else).
                continue
            if any(h not in fors for h in hops):
                out.append(f"{label} {parts[0]}: " + " -> ".join(names.get(h, h[:8]) for h in hops)
                           + " " + " ".join(parts[3:5]))
    return out


# --------------------------------------------------------------------------
# probe: one stream, and what became of it
# --------------------------------------------------------------------------

def parse_hostport(text):
    host, _, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        port = int(port)
    except ValueError:
        raise TestnetError(f"expected IPv4:PORT, got {text!r}")
    if not 0 < port < 65536:
        raise TestnetError(f"bad port in {text!r}")
    return host, port


def circuit_paths_from(ctl):
    """circuit id -> [fingerprints] from circuit-status and the CIRC events seen so far."""
    out = {}
    lines = (ctl.getinfo("circuit-status") or "").splitlines()
    lines += [e[len("CIRC "):] for e in ctl.events if e.startswith("CIRC ")]
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("$"):  # LAUNCHED circuits have no path yet
            out[parts[0]] = [h.split("~")[0].lstrip("$") for h in parts[2].split(",")]
    return out


def cmd_probe(args):
    """Open one SOCKS stream to HOST:PORT (optionally pinning the exit) and report how it
    ended: connected, or the SOCKS reply plus the exit's END reasons from the client's
    STREAM events (REMOTE_REASON, control-spec §4.1.2)."""
    net = load_network(args.dir)
    check_same_netns(net)
    check_processes(net)
    host, port = parse_hostport(args.target)
    ctl = client_controller(net)
    result = {"target": f"{host}:{port}"}
    try:
        if args.exit:
            apply_pins(net, ctl, exit_=args.exit)
        ctl.ok("SETEVENTS STREAM CIRC")
        user = f"probe-{os.getpid()}-{random.getrandbits(32):08x}"
        t0 = time.monotonic()
        try:
            s = socks5_connect(net["client"]["socks_port"], host, port, user, "x", args.io_timeout)
            s.close()
            result.update(connected=True, socks_reply=0)
        except SocksReplyError as e:
            result.update(connected=False, socks_reply=e.code, error=str(e))
        except (OSError, TestnetError) as e:
            result.update(connected=False, socks_reply=None, error=str(e))
        result["seconds"] = round(time.monotonic() - t0, 2)
        ctl.ok("GETINFO version")  # collects the events that arrived meanwhile
        paths = circuit_paths_from(ctl)
        ctl.ok("SETEVENTS")
    finally:
        ctl.close()
    names = {r["fingerprint"]: r["nick"] for r in net["relays"] + net["authorities"]}
    target_txt = f"{host}:{port}"
    remote, exits, statuses = [], [], []
    for e in ctl.events:
        parts = e.split()
        if len(parts) < 5 or parts[0] != "STREAM" or parts[4] != target_txt:
            continue
        statuses.append(parts[2])
        m = re.search(r"REMOTE_REASON=(\S+)", e)
        if m:
            remote.append(m.group(1))
        if parts[2] in ("SENTCONNECT", "SUCCEEDED") and parts[3] in paths:
            exit_fp = paths[parts[3]][-1]
            exits.append(names.get(exit_fp, exit_fp))
    result.update(remote_reasons=remote, exits=sorted(set(exits)), stream_statuses=statuses)
    want_connect = args.expect == "connect"
    ok = result["connected"] == want_connect
    if result["connected"]:
        log(f"probe {target_txt}: connected in {result['seconds']}s via exit {','.join(result['exits']) or '?'}")
    else:
        log(f"probe {target_txt}: failed after {result['seconds']}s: {result.get('error')}; exit END "
            f"reasons {','.join(remote) or 'none'}; exits tried {','.join(result['exits']) or 'none'}")
    if args.json:
        print(json.dumps(result), flush=True)
    if not ok:
        raise TestnetError(f"probe {target_txt}: expected {args.expect}")
    return 0


# --------------------------------------------------------------------------
# status / leak check / down
# --------------------------------------------------------------------------

def _hex_ip(h):
    if len(h) == 8:
        return ipaddress.IPv4Address(struct.pack("<I", int(h, 16)))
    raw = b"".join(struct.pack("<I", int(h[i:i + 8], 16)) for i in range(0, 32, 8))
    return ipaddress.IPv6Address(raw)


def _is_local(ip):
    if ip.is_loopback or ip.is_unspecified:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(mapped and (mapped.is_loopback or mapped.is_unspecified))


def leak_check(net):
    """Inspect the sockets of our processes: every remote address must be
    loopback (or unset), every bound address loopback.  Returns problems."""
    inodes = {}
    for label, pid, tok in all_processes(net):
        if not pid or not pid_is_ours(pid, tok):
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = label
        except OSError:
            continue
    problems = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{proto}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            (lip, lport), (rip, rport) = [c.split(":") for c in cols[1:3]]
            laddr, raddr = _hex_ip(lip), _hex_ip(rip)
            if proto.startswith("udp") and laddr.is_unspecified and raddr.is_unspecified:
                # An unconnected UDP socket (the exit's DNS resolver): where
                # it sends is set by resolv.conf, which names only 127.0.0.1.
                continue
            if not _is_local(raddr) or not _is_local(laddr) or laddr.is_unspecified:
                problems.append(f"{inodes[cols[9]]}: {proto} {laddr}:{int(lport, 16)} -> {raddr}:{int(rport, 16)}")
    return problems


def cmd_status(args):
    net = load_network(args.dir)
    check_same_netns(net)
    for (label, pid, tok), line in zip(all_processes(net), describe_nodes(net)):
        state = "running" if pid and pid_is_ours(pid, tok) else "STOPPED"
        log(f"  {state:<8} {line}")
    try:
        ctl = client_controller(net)
        try:
            phase = ctl.getinfo("status/bootstrap-phase") or "?"
            ns = parse_ns(ctl.getinfo("ns/all"))
            log(f"client: {phase}")
            log(f"client consensus lists {len(ns)} relays:")
            for e in sorted(ns.values(), key=lambda e: e["nick"]):
                log(f"  {e['nick']:<14} {' '.join(sorted(e['flags']))}")
            pins = net["client"].get("pins", {})
            if pins:
                names = {r["fingerprint"]: r["nick"] for r in net["relays"] + net["authorities"]}
                log("pins: " + ", ".join(f"{k}={names.get(v, v)}" for k, v in pins.items()))
        finally:
            ctl.close()
    except TestnetError as e:
        log(f"client control port: {e}")
    problems = leak_check(net)
    log("socket check: " + ("all sockets loopback-only" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


def cmd_down(args):
    try:
        net = load_network(args.dir)
    except TestnetError as e:
        log(str(e))
        return 0
    procs = all_processes(net)
    running = [(l, p, t) for l, p, t in procs if p and pid_is_ours(p, t)]
    log(f"stopping {len(running)} processes in {net['run_dir']}")
    left = stop_pids(running)
    if left:
        raise TestnetError(f"could not stop: {', '.join(left)}")
    for node in net["authorities"] + net["relays"] + [net["client"]] + service_list(net):
        node["pid"] = None
    if net.get("http_server"):
        net["http_server"]["pid"] = None
    save_network(net)
    log("network stopped")
    return 0


# --------------------------------------------------------------------------
# demo: up -> wait -> traffic -> down
# --------------------------------------------------------------------------

# The side-by-side that ends the demo: the same verified load through a C tor exit and the
# Fors exit of one network, with each relay's CPU cost (scripts/bench/measure.py, shared with
# scripts/bench-compare.py).
COMPARE_FIRST_HOP = "middle1"
COMPARE_CTOR_EXIT = "exit1"
COMPARE_FORS_EXIT = "forsexit1"
COMPARE_RUN_TIMEOUT_S = 90  # per measured loadgen run
COMPARE_WARMUP_TRIES = 6  # a fresh C tor exit refuses BEGIN for a few seconds


def _bench_modules():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
    import measure
    return measure


def compare_workload(args):
    """fors-loadgen options for one measured run: `--compare-mb` split over circuits x
    streams, half downloaded and half uploaded (each byte is verified by the loadgen)."""
    streams = args.compare_circuits * args.compare_streams
    per = max(1, int(args.compare_mb * 1e6 / 2 / streams / 1024))
    return ["--circuits", str(args.compare_circuits), "--streams", str(args.compare_streams),
            "--download", f"{per}K", "--upload", f"{per}K"]


def combine_rows(rows):
    """One exit's figures over its measured runs: total verified bytes, relay CPU seconds and
    loadgen elapsed time, so MB/s and CPU-s per GB weigh every byte equally."""
    nbytes = sum(r.get("bytes") or 0 for r in rows)
    cpu = sum(r.get("relay_cpu_s") or 0.0 for r in rows)
    elapsed = sum(r.get("elapsed_s") or 0.0 for r in rows)
    return {"bytes": nbytes, "cpu_s": cpu, "elapsed_s": elapsed,
            "mb_per_s": nbytes / 1e6 / elapsed if elapsed > 0 else None,
            "cpu_s_per_gb": cpu / (nbytes / 1e9) if nbytes > 0 else None}


def render_side_by_side(ctor, fors, ctor_label, fors_label):
    """The demo's closing table and the line that says what it means.  `ctor` and `fors` are
    combine_rows() results; raises TestnetError when a figure is missing (no silent table)."""
    for name, c in ((ctor_label, ctor), (fors_label, fors)):
        if not c["bytes"] or c["mb_per_s"] is None or c["cpu_s_per_gb"] is None:
            raise TestnetError(f"side-by-side: no verified bytes through {name}")
        if c["cpu_s"] <= 0:
            raise TestnetError(f"side-by-side: {name} used no measurable CPU time "
                               "(/proc/PID/stat did not move); cannot compute its cost")
    w = max(len(ctor_label), len(fors_label), len("Fors / C tor"))
    speed = fors["mb_per_s"] / ctor["mb_per_s"]
    cost = fors["cpu_s_per_gb"] / ctor["cpu_s_per_gb"]
    lines = [f"{'exit':<{w}}  {'MB/s':>7}  {'MB verified':>11}  {'relay CPU-s':>11}  "
             f"{'CPU-s per GB':>12}"]
    for label, c in ((ctor_label, ctor), (fors_label, fors)):
        lines.append(f"{label:<{w}}  {c['mb_per_s']:7.1f}  {c['bytes'] / 1e6:11.1f}  "
                     f"{c['cpu_s']:11.2f}  {c['cpu_s_per_gb']:12.2f}")
    lines.append(f"{'Fors / C tor':<{w}}  {speed:6.2f}x  {'':>11}  {'':>11}  {cost:11.2f}x")
    if cost < 1:
        what = f"Fors spent {cost:.2f}x the CPU time C tor spent per GB carried"
    else:
        what = f"Fors spent {cost:.2f}x the CPU time C tor spent per GB carried (no gain here)"
    lines.append(f"{what}: CPU per GB sets how much traffic a relay's cores can carry, while "
                 "MB/s here is capped by the test machine, which runs every relay, client and "
                 "the load generator at once; figures vary by machine (this one: "
                 f"{os.cpu_count()} CPUs, shared).")
    return lines


def side_by_side(args, net):
    """Measured loadgen runs through COMPARE_FIRST_HOP -> exit for the C tor exit and the Fors
    exit, in ABBA order over --compare-rounds rounds so drift on the shared machine cancels.
    Returns the table lines; raises TestnetError on any failed run."""
    measure = _bench_modules()
    if not 1 <= args.compare_mb <= 2000:
        raise TestnetError(f"--compare-mb {args.compare_mb}: expected 1..2000")
    if not os.access(args.loadgen, os.X_OK):
        raise TestnetError(f"--loadgen {args.loadgen} is not executable "
                           "(cargo build --release -p fors-bench)")
    exits = {}
    for nick in (COMPARE_FIRST_HOP, COMPARE_CTOR_EXIT, COMPARE_FORS_EXIT):
        node = find_relay(net, nick)
        if nick == COMPARE_FORS_EXIT and node.get("kind") != "fors":
            raise TestnetError(f"side-by-side needs a Fors exit slot ({nick}): give --fors exit "
                               "and --fors-bin")
        exits[nick] = node
    netjson = os.path.join(net["run_dir"], "network.json")
    outdir = os.path.join(net["run_dir"], "side-by-side")
    os.makedirs(outdir, exist_ok=True)
    seed = args.compare_seed if args.compare_seed is not None else random.randrange(1 << 32)

    def run(name, exit_nick, extra, timeout_s):
        argv = measure.loadgen_argv(args.loadgen, netjson, [COMPARE_FIRST_HOP, exit_nick],
                                    extra + ["--seed", str(seed)], timeout_s)
        with open(os.path.join(outdir, f"{name}.cmd"), "w") as f:
            f.write(" ".join(argv) + "\n")
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 20,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None, f"fors-loadgen did not finish within {timeout_s + 20}s"
        with open(os.path.join(outdir, f"{name}.json"), "w") as f:
            f.write(p.stdout)
        with open(os.path.join(outdir, f"{name}.stderr.log"), "w") as f:
            f.write(p.stderr)
        lg = measure.last_json(p.stdout)
        if lg is None:
            tail = " | ".join(p.stderr.strip().splitlines()[-2:]) or "no output"
            return None, f"fors-loadgen exit {p.returncode}: {tail}"
        return lg, None

    for nick in (COMPARE_CTOR_EXIT, COMPARE_FORS_EXIT):
        last = "no attempt"
        for attempt in range(1, COMPARE_WARMUP_TRIES + 1):
            lg, err = run(f"warmup-{nick}-{attempt}", nick,
                          ["--circuits", "1", "--download", "256K", "--upload", "256K"], 20)
            if lg is not None and lg.get("ok"):
                break
            last = err or f"loadgen not ok: {lg.get('errors')}"
            time.sleep(3)
        else:
            raise TestnetError(f"side-by-side: warm-up through {nick} failed {COMPARE_WARMUP_TRIES} "
                               f"times: {last} (see {outdir})")
    extra = compare_workload(args)
    log(f"side-by-side: {args.compare_rounds} round(s) per exit of {' '.join(extra)} over "
        f"{COMPARE_FIRST_HOP} -> EXIT -> loadgen server, seed {seed}")
    rows = {COMPARE_CTOR_EXIT: [], COMPARE_FORS_EXIT: []}
    order = []
    for i in range(args.compare_rounds):
        pair = [COMPARE_CTOR_EXIT, COMPARE_FORS_EXIT]
        order += pair if i % 2 == 0 else pair[::-1]
    for i, nick in enumerate(order):
        node = exits[nick]
        if not node.get("pid") or not pid_is_ours(node["pid"], node["torrc"]):
            raise TestnetError(f"side-by-side: {nick} is not running")
        row = measure.measure_row(
            nick, "exit-down+up", node["pid"],
            lambda: run(f"run{i + 1}-{nick}", nick, extra, COMPARE_RUN_TIMEOUT_S))
        if row["status"] != "ok":
            raise TestnetError(f"side-by-side run through {nick} failed: {row['reason']} "
                               f"(see {outdir})")
        log(f"  {nick}: {row['bytes'] / 1e6:.1f} MB verified, {row['mb_per_s'] or 0:.1f} MB/s, "
            f"relay {row['relay_cpu_s']:.2f} CPU-s")
        rows[nick].append(row)
    tor_v = ""
    try:
        tor_v = subprocess.run([net["tor"], "--version"], capture_output=True, text=True,
                               timeout=20).stdout.split("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    m = re.search(r"Tor version (\S+?)\.?\s*$", tor_v) or re.search(r"Tor version (\S+)", tor_v)
    ctor_label = f"C tor {m.group(1).rstrip('.')} ({COMPARE_CTOR_EXIT})" if m \
        else f"C tor ({COMPARE_CTOR_EXIT})"
    table = render_side_by_side(combine_rows(rows[COMPARE_CTOR_EXIT]),
                                combine_rows(rows[COMPARE_FORS_EXIT]),
                                ctor_label, f"Fors ({COMPARE_FORS_EXIT})")
    head = (f"same load through each exit: {args.compare_circuits} circuits x "
            f"{args.compare_streams} streams, {args.compare_mb:.0f} MB per run (half down, half "
            f"up, every byte verified), {args.compare_rounds} run(s) per exit, path "
            f"{COMPARE_FIRST_HOP} -> exit, seed {seed}")
    return [head] + table


def cmd_demo(args, launcher):
    t0 = time.monotonic()
    ok = False
    net = None
    try:
        net = cmd_up(args, launcher)
        t_up = time.monotonic() - t0
        waited = cmd_wait(args, net)
        boot = time.monotonic() - t0
        results = cmd_traffic(args, net)
        # Then route through each pluggable (Fors) slot on purpose.
        for r in [r for r in net["relays"] if r.get("pluggable")]:
            log(f"--- traffic pinned through {r['nick']} as {r['role']}")
            args.clear_pins = False
            args.entry = None
            args.exit = r["nick"] if r["role"] == "exit" else None
            args.middle = r["nick"] if r["role"] == "middle" else None
            results += cmd_traffic(args, net)
        compare = side_by_side(args, net) if args.loadgen else None
        problems = leak_check(net)
        if problems:
            raise TestnetError("sockets outside loopback:\n  " + "\n  ".join(problems))
        log("")
        log("=== demo summary ===")
        log(f"setup (keys + start): {t_up:.1f}s; wait for consensus: {waited:.1f}s; "
            f"bootstrap total: {boot:.1f}s")
        log("functional checks: each transfer is one stream through the C tor client, SHA-256 "
            "checked" + ("; the speed comparison is the side-by-side below" if args.loadgen else ""))
        for r in results:
            log(f"{r['direction']:>4}: {r['bytes'] / 1e6:.1f} MB {r['mb_per_s']:.2f} MB/s "
                f"checksum {'OK' if r['checksum_ok'] else 'BAD'} path {r['path']}")
        log("socket check: all sockets loopback-only")
        if compare:
            log("")
            log("=== side by side: Fors exit vs C tor exit ===")
            for line in compare:
                log(line)
        else:
            log("side-by-side: not run (no --loadgen)")
        ok = True
    finally:
        if args.keep and ok:
            log(f"--keep: network left running in {args.dir}; stop it with `testnet.py down`")
        else:
            left = launcher.stop_all()
            if net:
                for node in net["authorities"] + net["relays"] + [net["client"]] + service_list(net):
                    node["pid"] = None
                if net.get("http_server"):
                    net["http_server"]["pid"] = None
                save_network(net)
            if left:
                log(f"WARNING: could not stop {left}")
            else:
                log("network stopped")
        log(f"demo {'PASSED' if ok else 'FAILED'} in {time.monotonic() - t0:.1f}s")
    return 0


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def add_up_args(p):
    p.add_argument("--base-port", type=int, default=int(os.environ.get("TESTNET_BASE_PORT", 15100)),
                   help="first port; ports are allocated consecutively on 127.0.0.1 (default 15100)")
    p.add_argument("--authorities", type=int, default=3)
    p.add_argument("--middles", type=int, default=None,
                   help="C tor middle relays (default 2; 0 with --fors-only)")
    p.add_argument("--exits", type=int, default=None,
                   help="C tor exit relays (default 2; 0 with --fors-only)")
    p.add_argument("--fors-only", action="store_true",
                   help="every relay is Fors (default slots: 2 exits, 4 middles); C tor runs only "
                        "the authorities, the client and the onion service, which exclude the "
                        "authorities from their circuits")
    p.add_argument("--fors-shards", type=int, default=None,
                   help="NumCPUs N (shards) for every Fors slot without its own NumCPUs "
                        "--slot-option")
    p.add_argument("--onion-service", action="store_true",
                   help="run a C tor onion service (HiddenServiceDir) in front of the HTTP server")
    p.add_argument("--fors", action="append", choices=["exit", "middle"],
                   help="add a pluggable relay slot with this role (repeatable); runs --fors-bin, "
                        "or C tor if no --fors-bin is given")
    p.add_argument("--fors-bin", default=os.environ.get("FORS_BIN"),
                   help="binary for --fors slots, started as `BIN -f torrc` (env FORS_BIN)")
    p.add_argument("--tor", default=os.environ.get("TOR_BIN", TOR_BIN_DEFAULT))
    p.add_argument("--tor-gencert", default=os.environ.get("TOR_GENCERT", TOR_GENCERT_DEFAULT))
    p.add_argument("--consensus-params", default=DEFAULT_CONSENSUS_PARAMS,
                   help=f"authorities' ConsensusParams (default {DEFAULT_CONSENSUS_PARAMS!r}; '' for none)")
    p.add_argument("--real-flags", action="store_true",
                   help="authorities vote Guard/HSDir by voteflags.c's rules (thresholds moved, "
                        "no relay named) instead of TestingDirAuthVoteGuard/HSDir *")
    p.add_argument("--voting-interval", type=int, default=20,
                   help="seconds; must divide 1800 (default 20, as chutney)")
    p.add_argument("--vote-delay", type=int, default=4)
    p.add_argument("--dist-delay", type=int, default=4)
    p.add_argument("--client-option", action="append",
                   help="extra client torrc line, e.g. 'ConfluxEnabled 0' (repeatable)")
    p.add_argument("--ctor-option", action="append",
                   help="extra torrc line for every C tor authority and relay (not the client), "
                        "e.g. 'ConfluxEnabled 0' (repeatable)")
    p.add_argument("--slot-option", action="append",
                   help="extra torrc line for one --fors slot: 'SLOT Key Value', e.g. "
                        "'forsexit1 NumCPUs 2' (repeatable)")
    p.add_argument("--slot-keys", action="append",
                   help="'SLOT DIR': copy the files of DIR into the slot's DataDirectory/keys "
                        "before its keys are listed, so it keeps that identity (repeatable)")
    p.add_argument("--policy-exit", action="append",
                   help="'SLOT PORTS': give exit slot SLOT the policy `accept *:P` for PORTS "
                        "(from 80,443) plus loopback, and let the authorities decide its Exit "
                        "flag from it; only inside an isolated network namespace "
                        "(scripts/netns.py), checked before anything starts (repeatable)")
    p.add_argument("--no-server", action="store_true", help="do not start the HTTP server process")
    p.add_argument("--server-addr", default=SERVER_ADDR_DEFAULT,
                   help=f"loopback address of the HTTP server (default {SERVER_ADDR_DEFAULT}; "
                        "not the relays' 127.0.0.1, see exit enclaves in README)")
    add_pin_args(p)


def add_pin_args(p):
    p.add_argument("--entry", help="pin the client's EntryNodes to this relay (nick or $FP)")
    p.add_argument("--middle", help="pin MiddleNodes")
    p.add_argument("--exit", help="pin ExitNodes")


def add_wait_args(p):
    p.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    p.add_argument("--relays", help="comma-separated nicks to wait for (default: all relays)")
    p.add_argument("--pluggable-only", action="store_true",
                   help="wait only for the --fors slots")


def add_traffic_args(p, pins=True):
    p.add_argument("--down-mb", type=float, default=20.0, help="MB to download (default 20)")
    p.add_argument("--up-mb", type=float, default=20.0, help="MB to upload (default 20)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--clear-pins", action="store_true", help="reset all pins first")
    p.add_argument("--onion", action="store_true",
                   help="go to the onion service (up --onion-service) instead of the server")
    p.add_argument("--io-timeout", type=float, default=120.0,
                   help="socket timeout in seconds for SOCKS connect and each read")
    if pins:
        add_pin_args(p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.environ.get("TESTNET_DIR", "./run/net"),
                    help="run directory (default ./run/net)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_up_args(sub.add_parser("up", help="generate keys/torrcs and start the network"))
    add_wait_args(sub.add_parser("wait", help="wait until relays are in the client's consensus"))
    p = sub.add_parser("pin", help="pin client paths via the ControlPort")
    add_pin_args(p)
    p.add_argument("--clear", action="store_true", help="remove pins not given now")
    add_traffic_args(sub.add_parser("traffic", help="download/upload through the client and verify"))
    p = sub.add_parser("serve", help="run the HTTP data server in the foreground")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--address", default=SERVER_ADDR_DEFAULT)
    p = sub.add_parser("probe", help="open one SOCKS stream to IPv4:PORT and report how it ended")
    p.add_argument("target", help="IPv4:PORT")
    p.add_argument("--exit", help="pin ExitNodes to this relay first (merges with other pins)")
    p.add_argument("--expect", choices=["connect", "fail"], default="connect",
                   help="exit status 0 only if the stream connects / fails (default connect)")
    p.add_argument("--io-timeout", type=float, default=120.0)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    sub.add_parser("status", help="show processes, consensus flags and the socket check")
    sub.add_parser("down", help="stop every recorded process")
    p = sub.add_parser("demo", help="up -> wait -> traffic -> down, non-zero exit on failure")
    add_up_args(p)
    add_wait_args(p)
    add_traffic_args(p, pins=False)
    p.set_defaults(entry=None, middle=None, exit=None)
    p.add_argument("--keep", action="store_true", help="leave the network running on success")
    p.add_argument("--loadgen", help="fors-loadgen binary: end with the Fors-vs-C-tor exit "
                   "side-by-side (MB/s and relay CPU-s per GB)")
    p.add_argument("--compare-mb", type=float, default=200.0,
                   help="MB per side-by-side run, half down and half up (default 200)")
    p.add_argument("--compare-circuits", type=int, default=4, choices=range(1, 17),
                   metavar="1..16", help="circuits per side-by-side run (default 4)")
    p.add_argument("--compare-streams", type=int, default=2, choices=range(1, 9),
                   metavar="1..8", help="streams per circuit and direction (default 2)")
    p.add_argument("--compare-rounds", type=int, default=2, choices=range(1, 5),
                   metavar="1..4", help="measured runs per exit, ABBA order (default 2)")
    p.add_argument("--compare-seed", type=int, help="loadgen pattern seed (default: random, printed)")
    args = ap.parse_args(argv)
    if hasattr(args, "dir"):
        args.dir = os.path.abspath(args.dir)

    launcher = Launcher()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if args.cmd != "serve":
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGHUP, on_signal)
    try:
        if args.cmd == "up":
            try:
                cmd_up(args, launcher)
            except BaseException:
                log("up failed; stopping what was started")
                launcher.stop_all()
                raise
            return 0
        if args.cmd == "wait":
            cmd_wait(args)
            return 0
        if args.cmd == "pin":
            cmd_pin(args)
            return 0
        if args.cmd == "traffic":
            cmd_traffic(args)
            return 0
        if args.cmd == "serve":
            cmd_serve(args)
            return 0
        if args.cmd == "probe":
            return cmd_probe(args)
        if args.cmd == "status":
            return cmd_status(args)
        if args.cmd == "down":
            return cmd_down(args)
        if args.cmd == "demo":
            return cmd_demo(args, launcher)
    except TestnetError as e:
        log(f"error: {e}")
        return 1
    except OSError as e:
        log(f"error: {type(e).__name__}: {e}")
        return 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e or 'Ctrl-C'}); stopped everything this command started")
        launcher.stop_all()
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
