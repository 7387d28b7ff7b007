#!/usr/bin/env python3
"""The kernel's own cost of relaying bytes over loopback TCP: a forwarder that does nothing
in user space but receive and send (issue #13's kernel floor, `bench/RESULTS.md`).

    scripts/bench/tcp_floor.py [--mb 1000] [--chunk-kib 64] [--core 1] [--other-core 0] [--json]

A sender writes the bytes to the forwarder, which relays them to a receiver: all on
127.0.0.1, plain TCP, the forwarder pinned to --core and the two ends to --other-core (as
bench-compare pins a subject and its load). The forwarder's own utime and stime over the
transfer (getrusage of its process) divided by the bytes relayed is what any relay pays on
this kernel to move a GB through one process with reads and writes of --chunk-kib: its
receive and send copies, TCP on both sockets, and (loopback) the softirq delivering what
it sends into the receiver's socket. A relay also adds TLS framing (~4 % more bytes for
cells) and its own user-space work; it cannot pay less kernel time per GB than this except
by using larger or fewer socket operations than the forwarder.

Every loop is bounded by the byte count and the --timeout; nothing leaves 127.0.0.1.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import time


def _pin(core):
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(core)})


def _listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def _receiver(lsock, core, nbytes, chunk, deadline, out):
    _pin(core)
    conn, _ = lsock.accept()
    conn.settimeout(max(1.0, deadline - time.monotonic()))
    buf = bytearray(chunk)
    got = 0
    while got < nbytes:
        n = conn.recv_into(buf)
        if n == 0:
            break
        got += n
    conn.close()
    out.put(("received", got))


def _sender(port, core, nbytes, chunk, deadline, rate_mbps):
    _pin(core)
    s = socket.create_connection(("127.0.0.1", port), timeout=max(1.0, deadline - time.monotonic()))
    data = os.urandom(chunk)
    sent, t0 = 0, time.monotonic()
    while sent < nbytes and time.monotonic() < deadline:
        n = min(chunk, nbytes - sent)
        s.sendall(data[:n] if n < chunk else data)
        sent += n
        if rate_mbps:
            # Paced like a relay under a load generator: the forwarder sleeps between reads.
            ahead = sent / (rate_mbps * 1e6) - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(min(ahead, 1.0))
    s.close()


def _forwarder(lsock, dst_port, core, nbytes, chunk, deadline, out):
    _pin(core)
    inc, _ = lsock.accept()
    outc = socket.create_connection(("127.0.0.1", dst_port))
    for c in (inc, outc):
        c.settimeout(max(1.0, deadline - time.monotonic()))
    buf = bytearray(chunk)
    view = memoryview(buf)
    moved = 0
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    while moved < nbytes:
        n = inc.recv_into(buf)
        if n == 0:
            break
        outc.sendall(view[:n])
        moved += n
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    outc.close()
    inc.close()
    out.put(("forwarded", {"bytes": moved, "user_s": r1.ru_utime - r0.ru_utime,
                           "sys_s": r1.ru_stime - r0.ru_stime, "wall_s": w1 - w0}))


def per_gb(result):
    """user, sys and total s/GB of a forwarder result (None without bytes)."""
    gb = result["bytes"] / 1e9
    if gb <= 0:
        return None
    u, k = result["user_s"] / gb, result["sys_s"] / gb
    return {"user_s_per_gb": u, "sys_s_per_gb": k, "cpu_s_per_gb": u + k,
            "mb_per_s": result["bytes"] / 1e6 / result["wall_s"] if result["wall_s"] else None}


def run(mb, chunk_kib, core, other_core, timeout, rate_mbps=None):
    """One transfer; returns the forwarder's result with per_gb figures, or raises
    RuntimeError (a process failed or the bytes did not all arrive)."""
    nbytes, chunk = int(mb * 1e6), chunk_kib * 1024
    deadline = time.monotonic() + timeout
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    recv_l, fwd_l = _listener(), _listener()
    procs = [
        ctx.Process(target=_receiver, args=(recv_l, other_core, nbytes, chunk, deadline, out)),
        ctx.Process(target=_forwarder, args=(fwd_l, recv_l.getsockname()[1], core, nbytes,
                                             chunk, deadline, out)),
    ]
    for p in procs:
        p.start()
    sender = ctx.Process(target=_sender, args=(fwd_l.getsockname()[1], other_core, nbytes, chunk,
                                               deadline, rate_mbps))
    sender.start()
    procs.append(sender)
    results = {}
    try:
        for _ in range(2):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            kind, value = out.get(timeout=left)
            results[kind] = value
    except Exception as e:  # queue.Empty: a process died or was too slow
        raise RuntimeError(f"transfer did not finish within {timeout:.0f}s ({e!r})") from e
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        recv_l.close()
        fwd_l.close()
    fwd = results.get("forwarded")
    if not fwd or results.get("received") != nbytes or fwd["bytes"] != nbytes:
        raise RuntimeError(f"incomplete transfer: {results}")
    fwd.update(per_gb(fwd))
    fwd["chunk_kib"] = chunk_kib
    fwd["rate_mbps"] = rate_mbps
    return fwd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1000.0, help="MB relayed (default 1000)")
    ap.add_argument("--chunk-kib", type=int, action="append",
                    help="read/write size in KiB (repeatable; default 16 and 64)")
    ap.add_argument("--core", type=int, default=1, help="CPU of the forwarder (default 1)")
    ap.add_argument("--other-core", type=int, default=0, help="CPU of sender and receiver")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate-mbps", type=float, action="append",
                    help="sender pace in MB/s (repeatable; 0 or none given: as fast as possible)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per transfer")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for rate, chunk in [(r, c) for r in (a.rate_mbps or [None]) for c in (a.chunk_kib or [16, 64])]:
        for i in range(max(1, min(a.repeat, 20))):
            try:
                r = run(a.mb, chunk, a.core, a.other_core, a.timeout, rate)
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            rows.append(r)
            if not a.json:
                print(f"chunk {chunk} KiB, pace {rate or 'none'}, run {i + 1}: "
                      f"{r['bytes'] / 1e6:.0f} MB at "
                      f"{r['mb_per_s']:.0f} MB/s; forwarder user {r['user_s_per_gb']:.2f} + "
                      f"sys {r['sys_s_per_gb']:.2f} = {r['cpu_s_per_gb']:.2f} s/GB", flush=True)
    if a.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
