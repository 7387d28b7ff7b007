#!/usr/bin/env python3
"""An isolated network namespace for the private test network (Python 3 stdlib only).

A fresh network namespace has one interface, `lo`, and no routes: nothing started in it can
reach another machine, whatever its exit policy says.  That is what lets the test network give
a relay a real exit policy (ports 80 and 443 to every address) and have the C tor authorities
decide the Exit flag from the descriptor, without breaking the rule that nothing leaves the
machine.  See scripts/README.md, "Exit flag from the policy".

Commands:
  hold [--max-seconds N]   create a namespace (`unshare --net` as root, otherwise
                           `unshare --user --map-root-user --net`), bring `lo` up, check the
                           isolation, print `netns ready: pid=PID ...` and sleep until SIGTERM
                           (at most N seconds, default 3600).  The namespace lives as long as
                           this process or anything started in it.
  enter PID -- CMD...      run CMD in the namespace of PID (via nsenter), after checking
                           again that it is isolated.
  run -- CMD...            create a namespace, check it and run CMD in it; exits with CMD's
                           status.  Whatever CMD leaves running keeps the namespace alive.
  check [-- CMD...]        check that the current namespace is isolated; then exec CMD if given.

The isolation check (`isolation_problems`) demands: the only interface is `lo`, it is up, every
IPv4 and IPv6 route goes through `lo`, there is no default route, and the namespace is not the
one of pid 1.  Any failure aborts loudly (exit status 3) before anything is started.
"""

import argparse
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
# Exit status when no namespace can be created here (no unshare, user namespaces disabled):
# callers treat it as "skip", and say why.
EXIT_UNAVAILABLE = 77
EXIT_NOT_ISOLATED = 3


class NetnsError(Exception):
    """A failure, with the exit status it maps to."""

    def __init__(self, msg, status=1):
        super().__init__(msg)
        self.status = status


class NotIsolated(NetnsError):
    def __init__(self, msg):
        super().__init__(f"ISOLATION CHECK FAILED: {msg}", EXIT_NOT_ISOLATED)


def log(msg):
    print(msg, flush=True)


def netns_inode(pid="self"):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def userns_inode(pid="self"):
    return os.stat(f"/proc/{pid}/ns/user").st_ino


def _ifreq(name, flags=0):
    # struct ifreq: 16-byte name, then a union whose first member is `short ifr_flags`;
    # the kernel copies the whole 40-byte struct.
    return struct.pack("16sH", name.encode(), flags).ljust(40, b"\0")


def interface_flags(name):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(name))
    return struct.unpack("16sH", res[:18])[1]


def bring_lo_up():
    """`ip link set lo up`, without depending on iproute2."""
    flags = interface_flags("lo")
    if not flags & IFF_UP:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq("lo", flags | IFF_UP))


def interfaces():
    """Interface names of the current network namespace (netlink, via libc)."""
    return sorted(name for _, name in socket.if_nameindex())


# rtnetlink RTF_REJECT: an "unreachable" route, which sends nothing anywhere.  The kernel
# lists its IPv6 null entry (::/0, metric -1, on lo) in /proc/net/ipv6_route even in a fresh
# namespace; it is the absence of a route, not a default route.
RTF_REJECT = 0x0200


def ipv4_routes(path="/proc/net/route"):
    """(iface, destination, prefix length) of the main IPv4 table, reject routes left out."""
    out = []
    with open(path) as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if len(cols) < 8 or int(cols[3], 16) & RTF_REJECT:
                continue
            dest = socket.inet_ntoa(struct.pack("<I", int(cols[1], 16)))
            mask = bin(int(cols[7], 16)).count("1")
            out.append((cols[0], dest, mask))
    return out


def ipv6_routes(path="/proc/net/ipv6_route"):
    """(iface, destination, prefix length) of every IPv6 table (local table included),
    reject routes left out."""
    out = []
    try:
        with open(path) as f:
            rows = f.read().splitlines()
    except FileNotFoundError:  # IPv6 disabled: no IPv6 routes at all
        return out
    for row in rows:
        cols = row.split()
        if len(cols) < 10 or int(cols[8], 16) & RTF_REJECT:
            continue
        dest = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(cols[0]))
        out.append((cols[9], dest, int(cols[1], 16)))
    return out


def isolation_problems(ifaces, routes4, routes6, lo_up, ns, init_ns):
    """Why this namespace is not isolated ([] if it is).  Pure, for the unit tests."""
    problems = []
    if ifaces != ["lo"]:
        problems.append(f"interfaces are {ifaces}, want only ['lo']")
    if not lo_up:
        problems.append("lo is down")
    for family, routes in (("IPv4", routes4), ("IPv6", routes6)):
        for iface, dest, plen in routes:
            if plen == 0:
                problems.append(f"{family} default route {dest}/0 via {iface}")
            elif iface != "lo":
                problems.append(f"{family} route {dest}/{plen} via {iface}")
    if init_ns is not None and ns == init_ns:
        problems.append("this is the network namespace of pid 1 (the host's), not a fresh one")
    return problems


def init_netns_inode():
    try:
        return netns_inode(1)
    except OSError:  # no permission to look at pid 1: the interface check still holds
        return None


def check_isolated():
    """Raise NetnsError unless the current network namespace is isolated; return a summary."""
    ifaces = interfaces()
    lo_up = "lo" in ifaces and bool(interface_flags("lo") & IFF_UP)
    r4, r6 = ipv4_routes(), ipv6_routes()
    ns = netns_inode()
    problems = isolation_problems(ifaces, r4, r6, lo_up, ns, init_netns_inode())
    if problems:
        raise NotIsolated("network namespace is NOT isolated: " + "; ".join(problems))
    routes = [f"{d}/{p}" for _, d, p in r4 + r6]
    return f"netns={ns} interfaces=lo(up) routes={','.join(routes) or 'none'} (all via lo)"


def unshare_cmds():
    """Command prefixes that put the rest of a command line in a fresh namespace, best first:
    `unshare --net` as root; `unshare --user --map-root-user --net` otherwise, and also as a
    fallback for a root without CAP_SYS_ADMIN (e.g. in a container)."""
    unshare = shutil.which("unshare")
    if not unshare:
        raise NetnsError("unshare (util-linux) is not installed", EXIT_UNAVAILABLE)
    userns = [unshare, "--user", "--map-root-user", "--net", "--"]
    if os.geteuid() == 0 and not os.environ.get("FORS_NETNS_USERNS"):
        return [[unshare, "--net", "--"], userns]
    return [userns]


def reexec_inside(argv):
    """Replace this process by itself inside a fresh namespace (`--inside` marks the copy),
    so that our pid is the namespace's holder.  A trial run first turns "cannot create a
    namespace here" into EXIT_UNAVAILABLE with unshare's reason."""
    failures = []
    for prefix in unshare_cmds():
        try:
            trial = subprocess.run(prefix + ["true"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            failures.append(f"{' '.join(prefix[:-1])}: {e}")
            continue
        if trial.returncode == 0:
            cmd = prefix + [sys.executable, os.path.abspath(__file__), "--inside"] + argv
            os.execv(cmd[0], cmd)
        failures.append(f"{' '.join(prefix[:-1])}: {trial.stderr.strip() or trial.returncode}")
    raise NetnsError("cannot create a network namespace here: " + "; ".join(failures),
                     EXIT_UNAVAILABLE)


def prepare_inside():
    bring_lo_up()
    return check_isolated()


def cmd_hold(args):
    summary = prepare_inside()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    log(f"netns ready: pid={os.getpid()} {summary}")
    end = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < end:
        time.sleep(0.2)
    return 0


def cmd_run(args):
    summary = prepare_inside()
    log(f"netns: {summary}")
    if not args.cmd:
        raise NetnsError("run: no command given")
    rc = os.spawnvp(os.P_WAIT, args.cmd[0], args.cmd)
    return rc if rc >= 0 else 128 - rc  # killed by a signal: the shell's convention


def cmd_check(args):
    summary = check_isolated()
    if args.cmd:
        os.execvp(args.cmd[0], args.cmd)
    log(f"isolated: {summary}")
    return 0


def cmd_enter(args):
    nsenter = shutil.which("nsenter")
    if not nsenter:
        raise NetnsError("nsenter (util-linux) is not installed", EXIT_UNAVAILABLE)
    if not args.cmd:
        raise NetnsError("enter: no command given")
    pid = args.pid
    try:
        target_ns = netns_inode(pid)
    except OSError as e:
        raise NetnsError(f"cannot see the namespace of pid {pid}: {e}")
    cmd = [nsenter, f"--target={pid}", "--net"]
    if userns_inode(pid) != userns_inode():
        # The namespace belongs to a user namespace we made (rootless): enter it too.  Keep
        # our uid/gid (it maps to root there): setgroups is denied in such a namespace.
        cmd += ["--user", "--preserve-credentials"]
    cmd += ["--", sys.executable, os.path.abspath(__file__), "check", "--expect", str(target_ns),
            "--"] + args.cmd
    os.execv(cmd[0], cmd)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    inside = bool(argv) and argv[0] == "--inside"
    if inside:
        argv = argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd_name", required=True)
    p = sub.add_parser("hold", help="create an isolated namespace and keep it until SIGTERM")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p = sub.add_parser("run", help="run a command in a fresh isolated namespace")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("enter", help="run a command in the namespace of PID")
    p.add_argument("pid", type=int)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("check", help="check that this namespace is isolated (then exec CMD)")
    p.add_argument("--expect", type=int, help="the namespace inode we must be in")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if getattr(args, "cmd", None) and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    try:
        if args.cmd_name in ("hold", "run") and not inside:
            try:
                reexec_inside(argv)
            except OSError as e:
                raise NetnsError(f"cannot run unshare: {e}", EXIT_UNAVAILABLE)
        if args.cmd_name == "check" and args.expect is not None and netns_inode() != args.expect:
            raise NotIsolated(f"in network namespace {netns_inode()}, expected {args.expect}")
        return {"hold": cmd_hold, "run": cmd_run, "enter": cmd_enter,
                "check": cmd_check}[args.cmd_name](args)
    except NetnsError as e:
        log(f"netns.py: {e}")
        return e.status


if __name__ == "__main__":
    sys.exit(main())
