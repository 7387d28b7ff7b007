#!/usr/bin/env python3
"""Soak: a long mixed run against a private Tor network on loopback whose middle and exit are
Fors, with memory, fds, queues and throughput sampled, and a verdict at the end (issue #15).

    scripts/soak.py --fors-bin target/release/fors --loadgen target/release/fors-loadgen \
        --duration 30m --out run/soak-report

It brings up `scripts/testnet.py` with a Fors middle (`forsmiddle1`) and a 2-shard Fors exit
(`forsexit1`, `NumCPUs 2`), each with a MetricsPort on 127.0.0.1, and runs at the same time,
for --duration:

  * bulk: fors-loadgen through forsmiddle1 -> forsexit1, download and upload, paced by --rate
    (MB/s), every byte verified against its seeded pattern;
  * circuit churn: one-hop CREATE2 circuits built and torn down (--create-rate) at each Fors;
  * a CREATE2 flood phase (`--flood --create-rate 100`) for --flood-secs in the middle of the run,
    with a small verified bulk transfer beside it;
  * slow readers: streams through the testnet's C tor client, pinned to forsmiddle1 ->
    forsexit1, that download from the testnet's HTTP server and read 4 KB/s or nothing at all
    for --hold-secs (what they read is checked byte for byte), so the relays hold cells up to
    the stream and circuit windows; plus raw TLS connections to each ORPort that are held open
    without sending or reading for --hold-secs and then closed;
  * connection churn (like scripts/bench/churn.py): TLS and plain TCP connections to each Fors
    ORPort opened and closed in small batches.

Every 10 s (--interval) it samples each Fors's RSS (/proc/PID/status VmRSS), open fds
(/proc/PID/fd), the gauges and cell counters of its MetricsPort (queues, depths, open circuits,
streams and channels), and the verified throughput reported by the bulk load generator. After
the load it keeps sampling for --cooldown seconds, then judges (see `judge`):

  * every fors-loadgen run exited 0 with `ok: true` and `integrity_errors == 0`;
  * after warm-up (the first --warmup fraction of the run) RSS is flat: max/min <= --rss-ratio
    and the mean of the last quarter is at most --rss-trend times the mean of the first half
    after warm-up;
  * the fds after the cool-down are within --fd-margin (and 10 %) of the level at the end of
    warm-up;
  * every queue/depth gauge is bounded: its maximum in the last quarter is at most twice its
    maximum in the first half after warm-up plus --queue-slack, and after the cool-down it is back at or
    below its post-warm-up maximum;
  * both Fors processes are still alive at the end.

It writes soak.json (every sample, every loadgen summary, the verdict) and soak.txt (a short
report, with each relay's RSS slope after warm-up for information) into --out and exits 1 on
any failure, 2 on a setup error. `--judge soak.json` judges a recorded run again. Only
127.0.0.0/8 is used; every loop is bounded in count and time; everything started is stopped
by pid (`testnet.py down` for the network).
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTNET = os.path.join(HERE, "testnet.py")
MIDDLE, EXIT = "forsmiddle1", "forsexit1"
LOOPBACK = "127.0.0.1"


class SoakError(Exception):
    pass


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_duration(text):
    """'30m', '90s', '2h', '45' (seconds) -> seconds as float."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ValueError(f"bad duration {text!r} (e.g. 30m, 120s, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# --------------------------------------------------------------------------
# Sampling (pure parsers first, so the unit tests can drive them)
# --------------------------------------------------------------------------

def parse_vmrss_kb(status_text):
    """VmRSS in kB from the text of /proc/PID/status, or None."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def is_histogram_series(name):
    """A series of a Prometheus histogram (`_bucket`, `_sum`, `_count`): cumulative counts
    such as the cell queueing delay's, never a depth."""
    return name.split("{", 1)[0].endswith(("_bucket", "_sum", "_count"))


def is_watched_metric(name):
    """Gauges and counters the soak records: queues and depths, open circuits/streams/channels,
    tracked connections, and cell counters (histograms are not sampled)."""
    if is_histogram_series(name):
        return False
    if re.search(r"queue|depth|queued", name):
        return True
    if re.search(r"_open$|_tracked|_tracked_connections$", name):
        return True
    return bool(re.search(r"cells.*_total$", name))


def is_depth_metric(name):
    """A gauge that must stay bounded: queue lengths and depths (not `_total` counters, not
    `_peak` high-water marks, which only ever grow)."""
    return (bool(re.search(r"queue|depth|queued", name))
            and not name.endswith("_total") and "peak" not in name
            and not is_histogram_series(name))


def parse_prometheus(text):
    """{'name{labels}': value} for the watched samples of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or not is_watched_metric(m.group(1)):
            continue
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            continue
    return out


def scrape(port, timeout=5.0):
    """GET /metrics from 127.0.0.1:port -> (watched samples, None) or ({}, error)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as c:
            c.settimeout(timeout)
            c.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            buf = bytearray()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(buf) < 16 << 20:
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        return {}, f"scrape 127.0.0.1:{port}: {e}"
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    if " 200 " not in status + " ":
        return {}, f"scrape 127.0.0.1:{port}: {status or 'no answer'}"
    return parse_prometheus(body.decode("utf-8", "replace")), None


def proc_sample(pid):
    """(rss_kb, fds) of a live pid, or (None, None)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = parse_vmrss_kb(f.read())
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except OSError:
        return None, None


PROGRESS_RE = re.compile(r"^\[\s*([\d.]+)s\]\s+([\d.]+) MB/s")


def parse_progress(line):
    """(t_s, mb_per_s) from a fors-loadgen progress line, or None."""
    m = PROGRESS_RE.match(line.strip())
    return (float(m.group(1)), float(m.group(2))) if m else None


# --------------------------------------------------------------------------
# Verdict (pure functions over sample lists)
# --------------------------------------------------------------------------

def mean(xs):
    return sum(xs) / len(xs) if xs else None


def phase_slices(samples, load_s, warmup):
    """Split samples (dicts with 't', seconds since the load started) taken during the load
    into (post-warm-up, early, last quarter): "early" is the first half of the post-warm-up
    window, what the last quarter is compared with. (It was the run's second quarter, which
    lies partly inside a warm-up longer than 25 %: the soak-short's 40 % warm-up then judged
    the end of the ramp as growth.)"""
    during = [s for s in samples if s["t"] <= load_s]
    start = warmup * load_s
    post = [s for s in during if s["t"] >= start]
    mid = start + (load_s - start) / 2
    early = [s for s in post if s["t"] < mid]
    q4 = [s for s in during if s["t"] >= 0.75 * load_s]
    return post, early, q4


def slope_per_min(points):
    """Least-squares slope of [(t_s, value)] in value per minute, or None."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / var


def judge_rss(rss, q2, q4, ratio, trend):
    """rss: post-warm-up RSS values; q2/q4: those of the first half after warm-up and of the
    last quarter.
    -> (ok, details)."""
    if len(rss) < 2 or not q2 or not q4:
        return False, {"reason": "too few RSS samples after warm-up"}
    lo, hi = min(rss), max(rss)
    r = hi / lo if lo > 0 else float("inf")
    m2, m4 = mean(q2), mean(q4)
    tr = m4 / m2 if m2 > 0 else float("inf")
    ok = r <= ratio and tr <= trend
    return ok, {"min_kb": lo, "max_kb": hi, "max_over_min": round(r, 4), "bound": ratio,
                "early_mean_kb": round(m2), "q4_mean_kb": round(m4), "q4_over_early": round(tr, 4),
                "trend_bound": trend}


def judge_fds(warm_fds, end_fds, margin):
    """fds after the cool-down vs the level at the end of warm-up: within max(margin, 10 %)."""
    if warm_fds is None or end_fds is None:
        return False, {"reason": "no fd sample"}
    allowed = max(margin, int(0.10 * warm_fds))
    ok = end_fds <= warm_fds + allowed
    return ok, {"warmup_fds": warm_fds, "end_fds": end_fds, "allowed_above": allowed}


def judge_queues(post, q2, q4, end, slack):
    """Each arg is a list of {metric: value} dicts (end: the last sample after the cool-down).
    A depth gauge is bounded when its last-quarter maximum is at most 2 x its second-quarter
    maximum + slack and its value after the cool-down is at most its post-warm-up maximum
    (or slack). -> (ok, {metric: details})."""
    names = sorted({k for d in post for k in d if is_depth_metric(k.split("{")[0])})
    out, ok = {}, True
    for k in names:
        vpost = [d[k] for d in post if k in d]
        v2 = [d[k] for d in q2 if k in d] or [0.0]
        v4 = [d[k] for d in q4 if k in d] or [0.0]
        vend = end.get(k) if end else None
        good = max(v4) <= 2 * max(v2) + slack
        if vend is not None:
            good = good and vend <= max(max(vpost), slack)
        ok = ok and good
        out[k] = {"max_after_warmup": max(vpost), "early_max": max(v2), "q4_max": max(v4),
                  "end": vend, "ok": good}
    return ok, out


def judge_loadgen(run):
    """run: {'name', 'rc', 'summary' (parsed JSON or None)} -> (ok, reason)."""
    s = run.get("summary")
    if s is None:
        return False, f"{run['name']}: no JSON summary (exit {run.get('rc')})"
    if run.get("rc") != 0 or not s.get("ok"):
        return False, (f"{run['name']}: ok={s.get('ok')} exit {run.get('rc')} "
                       f"errors {s.get('errors')}")
    if s.get("integrity_errors", 1) != 0:
        return False, f"{run['name']}: integrity_errors {s.get('integrity_errors')}"
    return True, f"{run['name']}: ok, {s.get('bytes_verified', 0)} bytes verified"


def judge_slow_readers(stats):
    """stats: {'streams', 'bytes_checked', 'errors', ...} -> (ok, reason). Some streams must
    have run, and every one must have opened and read only the server's bytes."""
    if not stats.get("streams"):
        return False, "no slow-reader stream ran"
    if stats.get("errors"):
        return False, (f"{stats['errors']} of {stats['streams']} slow-reader streams failed: "
                       f"{stats.get('error_samples')}")
    return True, f"{stats['streams']} streams, {stats['bytes_checked']} bytes read and checked"


def judge(data, opts):
    """The whole verdict over the recorded run. data: {'load_s', 'relays': {nick: {'samples':
    [...], 'alive_at_end': bool}}, 'loadgen': [...]}. opts: warmup, rss_ratio, rss_trend,
    fd_margin, queue_slack. -> {'ok': bool, 'checks': [(name, ok, details)]}."""
    checks = []
    for run in data["loadgen"]:
        ok, why = judge_loadgen(run)
        checks.append((f"loadgen {run['name']}", ok, why))
    if "slow_readers" in data:
        ok, why = judge_slow_readers(data["slow_readers"])
        checks.append(("slow readers", ok, why))
    load_s = data["load_s"]
    for nick, rel in sorted(data["relays"].items()):
        samples = rel["samples"]
        post, q2, q4 = phase_slices(samples, load_s, opts["warmup"])
        rss = [s["rss_kb"] for s in post if s.get("rss_kb")]
        ok, d = judge_rss(rss, [s["rss_kb"] for s in q2 if s.get("rss_kb")],
                          [s["rss_kb"] for s in q4 if s.get("rss_kb")],
                          opts["rss_ratio"], opts["rss_trend"])
        # Reported, not judged: the trend rule above is what fails a run.
        sl = slope_per_min([(s["t"], s["rss_kb"]) for s in post if s.get("rss_kb")])
        d["slope_kb_per_min"] = None if sl is None else round(sl, 1)
        checks.append((f"{nick} RSS flat", ok, d))
        warm = [s for s in samples if s["t"] >= opts["warmup"] * load_s and s.get("fds")]
        end = [s for s in samples if s.get("fds")]
        ok, d = judge_fds(warm[0]["fds"] if warm else None, end[-1]["fds"] if end else None,
                          opts["fd_margin"])
        checks.append((f"{nick} fds back", ok, d))
        last = samples[-1]["metrics"] if samples else {}
        ok, d = judge_queues([s["metrics"] for s in post], [s["metrics"] for s in q2],
                             [s["metrics"] for s in q4], last, opts["queue_slack"])
        if not d:
            ok, d = False, {"reason": "no queue or depth gauge seen on the MetricsPort"}
        checks.append((f"{nick} queues bounded", ok, d))
        checks.append((f"{nick} alive", bool(rel.get("alive_at_end")),
                       "running at the end" if rel.get("alive_at_end") else "process gone"))
    return {"ok": all(c[1] for c in checks) and bool(checks), "checks": checks}


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

class Loadgen:
    """One fors-loadgen run in the background; keeps its JSON summary and counts the verified
    MB it reports per second (progress lines on stderr)."""

    def __init__(self, name, cmd, logdir):
        self.name, self.cmd = name, cmd
        self.mb_total = 0.0
        self.lock = threading.Lock()
        self.err_path = os.path.join(logdir, f"loadgen-{name}.stderr")
        self.out_path = os.path.join(logdir, f"loadgen-{name}.json")
        self.proc = None
        self.thread = None

    def start(self):
        log(f"start loadgen {self.name}: {' '.join(self.cmd)}")
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with open(self.err_path, "w") as err:
            for line in self.proc.stderr:
                err.write(line)
                p = parse_progress(line)
                if p:
                    with self.lock:
                        self.mb_total += p[1]  # one line a second: MB/s x 1 s

    def verified_mb(self):
        with self.lock:
            return self.mb_total

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"loadgen {self.name} (pid {self.proc.pid}) overran; stopping it")
            self.stop()
            rc = self.proc.wait()
        self.thread.join(timeout=10)
        self.out.close()
        summary = None
        try:
            with open(self.out_path) as f:
                summary = json.loads(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            pass
        return {"name": self.name, "cmd": self.cmd, "rc": rc, "summary": summary}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: only what we started
            except OSError:
                pass


def conn_churn(ports, stop, deadline, stats, rng, batch=20, pause=1.0):
    """Opens `batch` connections to each port (half of them complete a TLS handshake), holds
    them briefly, closes them; repeats until stop or deadline. Bounded by both."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    while not stop.is_set() and time.monotonic() < deadline:
        for port in ports:
            socks = []
            for i in range(batch):
                if stop.is_set():
                    break
                try:
                    s = socket.create_connection((LOOPBACK, port), timeout=5)
                    if rng.random() < 0.5:
                        s = ctx.wrap_socket(s)
                        stats["tls"] += 1
                    else:
                        stats["plain"] += 1
                    socks.append(s)
                except OSError:
                    stats["failed"] += 1
            time.sleep(0.2)
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass
        stop.wait(pause)


def slow_sockets(ports, stop, deadline, stats, hold_s, count=8):
    """Raw slow readers: `count` TLS connections per port that send nothing and never read,
    held for hold_s, then closed; repeats until stop or deadline."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    while not stop.is_set() and time.monotonic() < deadline:
        socks = []
        for port in ports:
            for _ in range(count):
                try:
                    s = socket.create_connection((LOOPBACK, port), timeout=5)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    socks.append(ctx.wrap_socket(s))
                    stats["held"] += 1
                except OSError:
                    stats["failed"] += 1
        stop.wait(min(hold_s, max(0.0, deadline - time.monotonic())))
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def socks_stream(socks_port, host, port, timeout=60.0):
    """A stream through the testnet's C tor client (SOCKS5, no auth, IPv4 CONNECT)."""
    s = socket.create_connection((LOOPBACK, socks_port), timeout=timeout)
    try:
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            raise OSError("SOCKS5 greeting refused")
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
        rep = b""
        while len(rep) < 10:
            chunk = s.recv(10 - len(rep))
            if not chunk:
                raise OSError("SOCKS5 reply cut short")
            rep += chunk
        if rep[1] != 0:
            raise OSError(f"SOCKS5 CONNECT failed, reply {rep[1]}")
        return s
    except BaseException:
        s.close()
        raise


def slow_reader_once(socks_port, host, port, seed, nbytes, read_bps, hold_s, stop, chunks_fn):
    """One slow reader: GET /data/N through the client and Fors middle + exit, read at
    read_bps (0: read nothing) for hold_s, check every byte read against the server's
    deterministic data, close. -> (bytes read and checked, error or None)."""
    s = socks_stream(socks_port, host, port)
    got = 0
    try:
        s.sendall(f"GET /data/{nbytes}?seed={seed} HTTP/1.1\r\nHost: {host}\r\n"
                  "Connection: close\r\n\r\n".encode())
        body, head_done, buf = bytearray(), False, bytearray()
        t_end = time.monotonic() + hold_s
        s.settimeout(1.0)
        while time.monotonic() < t_end and not stop.is_set():
            if not read_bps:
                stop.wait(min(1.0, max(0.0, t_end - time.monotonic())))
                continue
            try:
                chunk = s.recv(max(1, int(read_bps / 4)))
            except socket.timeout:
                continue
            if not chunk:
                break
            if head_done:
                body += chunk
            else:
                buf += chunk
                if b"\r\n\r\n" in buf:
                    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
                    if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
                        return 0, f"HTTP answer {head[:40]!r}"
                    head_done = True
                    body += rest
            stop.wait(0.25)
        got = len(body)
        expect = bytearray()
        for c in chunks_fn(str(seed), nbytes):
            if len(expect) >= got:
                break
            expect += c
        if bytes(body) != bytes(expect[:got]):
            bad = next(i for i in range(got) if body[i] != expect[i])
            return got, f"byte {bad} differs from the server's data"
        return got, None
    finally:
        s.close()


def slow_readers(net, stop, deadline, stats, hold_s, rng, count=4):
    """Streams through the C tor client pinned to forsmiddle1 -> forsexit1 that download from
    the testnet's HTTP server and read slowly (4 KB/s) or not at all, held hold_s, then closed;
    `count` at a time, until stop or deadline. The exit and middle must hold what the reader
    does not take (stream and circuit windows) and free it when the stream closes."""
    sys.path.insert(0, HERE)
    import testnet  # noqa: E402  the server's data generator, to check what was read
    srv = net["http_server"]
    socks_port = net["client"]["socks_port"]
    lock = threading.Lock()

    def one(i):
        seed = rng.randrange(1 << 30)
        rate = 0 if i % 2 else 4096
        try:
            got, err = slow_reader_once(socks_port, srv["address"], srv["port"], seed, 8 << 20,
                                        rate, hold_s, stop, testnet.data_chunks)
        except OSError as e:
            got, err = 0, str(e)
        with lock:
            stats["streams"] += 1
            stats["bytes_checked"] += got
            if err:
                stats["errors"] += 1
                if len(stats["error_samples"]) < 10:
                    stats["error_samples"].append(err)

    while not stop.is_set() and time.monotonic() < deadline - hold_s / 2:
        ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=hold_s + 120)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def testnet(args, *cmd, timeout=600):
    full = [sys.executable, TESTNET, "--dir", args.dir] + list(cmd)
    log("run " + " ".join(full))
    p = subprocess.run(full, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    with open(os.path.join(args.out, "testnet.log"), "a") as f:
        f.write(f"$ {' '.join(full)}\n{p.stdout}\n")
    if p.returncode != 0:
        raise SoakError(f"testnet.py {cmd[0]} failed (exit {p.returncode}): "
                        f"{p.stdout.strip().splitlines()[-3:]}")


def loadgen_cmd(args, net_json, extra):
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    return nice + [args.loadgen, "--network", net_json, "--json"] + extra


def report_text(result, data, opts):
    lines = [f"Fors soak: {data['load_s']:.0f} s of load + {data['cooldown_s']:.0f} s cool-down, "
             f"sampled every {opts['interval']:.0f} s; warm-up {opts['warmup'] * 100:.0f} %",
             f"bytes verified by fors-loadgen: {data['bytes_verified']} "
             f"({data['bytes_verified'] / 1e6:.1f} MB)",
             f"connection churn: {data['conn_churn']}; raw slow sockets: {data['slow_sockets']}",
             "slow readers: " + json.dumps({k: v for k, v in data["slow_readers"].items()
                                            if k != "error_samples"})]
    for nick, rel in sorted(data["relays"].items()):
        rs = [s for s in rel["samples"] if s.get("rss_kb")]
        if rs:
            pts = rs[:: max(1, len(rs) // 12)]
            lines.append(f"{nick} RSS MB over time: " + " ".join(
                f"{s['t']:.0f}s:{s['rss_kb'] / 1024:.0f}" for s in pts))
            lines.append(f"{nick} fds over time: " + " ".join(
                f"{s['t']:.0f}s:{s['fds']}" for s in pts if s.get("fds") is not None))
    for name, ok, d in result["checks"]:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: "
                     + (d if isinstance(d, str) else json.dumps(d, sort_keys=True)[:600]))
    lines.append(f"verdict: {'PASS' if result['ok'] else 'FAIL'}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fors-bin")
    ap.add_argument("--loadgen")
    ap.add_argument("--judge", metavar="SOAK_JSON",
                    help="only judge a recorded soak.json again (with the bounds given) and print "
                         "the report; runs nothing")
    ap.add_argument("--dir", default="run/soak", help="testnet run directory")
    ap.add_argument("--out", default="run/soak-report", help="where soak.json/soak.txt go")
    ap.add_argument("--base-port", type=int, default=17100)
    ap.add_argument("--duration", default="30m", help="load duration (default 30m)")
    ap.add_argument("--interval", type=float, default=10.0, help="sample period, s (default 10)")
    ap.add_argument("--cooldown", type=float, default=30.0, help="s sampled after the load")
    ap.add_argument("--rate", type=float, default=3.0, help="bulk MB/s, both directions together")
    ap.add_argument("--stream-size", default="16M", help="bytes per bulk stream (default 16M)")
    ap.add_argument("--create-rate", type=int, default=5, help="circuit churn, CREATE2/s per Fors")
    ap.add_argument("--flood-rate", type=int, default=100, help="CREATE2/s in the flood phase")
    ap.add_argument("--flood-secs", type=float, default=120.0, help="flood phase length")
    ap.add_argument("--churn-batch", type=int, default=20, help="connections per churn batch")
    ap.add_argument("--hold-secs", type=float, default=30.0, help="raw slow sockets hold time")
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--rss-ratio", type=float, default=1.25)
    ap.add_argument("--rss-trend", type=float, default=1.10)
    ap.add_argument("--fd-margin", type=int, default=16)
    ap.add_argument("--queue-slack", type=float, default=64.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="leave the network up")
    args = ap.parse_args(argv)
    opts = {"warmup": args.warmup, "rss_ratio": args.rss_ratio, "rss_trend": args.rss_trend,
            "fd_margin": args.fd_margin, "queue_slack": args.queue_slack,
            "interval": args.interval}
    if args.judge:
        with open(args.judge) as f:
            data = json.load(f)
        opts["interval"] = data.get("args", {}).get("interval", args.interval)
        result = judge(data, opts)
        sys.stdout.write(report_text(result, data, opts))
        return 0 if result["ok"] else 1
    if not args.fors_bin or not args.loadgen:
        ap.error("--fors-bin and --loadgen are required (unless --judge)")
    try:
        load_s = parse_duration(args.duration)
    except ValueError as e:
        ap.error(str(e))
    if load_s < 60:
        ap.error("--duration must be at least 60s (quarters of the run are compared)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    log(f"seed {seed}")
    rng = random.Random(seed)
    for b in (args.fors_bin, args.loadgen):
        if not os.access(b, os.X_OK):
            log(f"not executable: {b}")
            return 2
    args.dir, args.out = os.path.abspath(args.dir), os.path.abspath(args.out)
    args.fors_bin, args.loadgen = os.path.abspath(args.fors_bin), os.path.abspath(args.loadgen)
    os.makedirs(args.out, exist_ok=True)
    up = False
    runs, stop = [], threading.Event()
    try:
        testnet(args, "up", "--base-port", str(args.base_port), "--fors", "middle", "--fors",
                "exit", "--fors-bin", args.fors_bin, "--slot-option", f"{EXIT} NumCPUs 2")
        up = True
        testnet(args, "wait", "--timeout", "300", timeout=400)
        # The C tor client's streams (the slow readers) go through both Fors relays.
        testnet(args, "pin", "--middle", MIDDLE, "--exit", EXIT, timeout=120)
        net_json = os.path.join(args.dir, "network.json")
        with open(net_json) as f:
            net = json.load(f)
        relays = {r["nick"]: r for r in net["relays"] if r.get("kind") == "fors"}
        if set(relays) != {MIDDLE, EXIT}:
            raise SoakError(f"expected Fors relays {MIDDLE} and {EXIT}, got {sorted(relays)}")
        for nick, r in relays.items():
            if not r.get("pid") or not r.get("metrics_port"):
                raise SoakError(f"{nick}: no pid or MetricsPort in network.json")
        ports = [relays[MIDDLE]["orport"], relays[EXIT]["orport"]]
        dur = f"{int(load_s)}s"
        over = f"{int(load_s + 300)}s"
        path = f"{MIDDLE},{EXIT}"
        # Download and upload in separate runs, each with half the rate: one run's token
        # bucket serves circuit SENDMEs before upload cells, so paced uploads would starve.
        bulk = Loadgen("bulk-down", loadgen_cmd(args, net_json, [
            "--path", path, "--circuits", "1", "--streams", "2", "--download", args.stream_size,
            "--duration", dur, "--rate", str(args.rate / 2), "--threads", "1",
            "--timeout", over, "--seed", str(seed)]), args.out)
        bulk_up = Loadgen("bulk-up", loadgen_cmd(args, net_json, [
            "--path", path, "--circuits", "1", "--streams", "2", "--upload", args.stream_size,
            "--duration", dur, "--rate", str(args.rate / 2), "--threads", "1",
            "--timeout", over, "--seed", str(seed + 1)]), args.out)
        churn_m = Loadgen("circuit-churn-middle", loadgen_cmd(args, net_json, [
            "--path", path, "--create-rate", str(args.create_rate), "--duration", dur,
            "--timeout", over, "--seed", str(seed + 2)]), args.out)
        churn_e = Loadgen("circuit-churn-exit", loadgen_cmd(args, net_json, [
            "--path", f"{EXIT},{MIDDLE}", "--create-rate", str(args.create_rate),
            "--duration", dur, "--timeout", over, "--seed", str(seed + 3)]), args.out)
        flood_s = min(args.flood_secs, 0.2 * load_s)
        flood = Loadgen("create2-flood", loadgen_cmd(args, net_json, [
            "--path", path, "--flood", "--create-rate", str(args.flood_rate), "--circuits", "1",
            "--download", "4M", "--upload", "4M", "--duration", f"{int(flood_s)}s",
            "--threads", "1", "--timeout", f"{int(flood_s + 300)}s",
            "--seed", str(seed + 4)]), args.out)
        def bulk_mb():
            return bulk.verified_mb() + bulk_up.verified_mb()

        t0 = time.monotonic()
        deadline = t0 + load_s
        for lg in (bulk, bulk_up, churn_m, churn_e):
            lg.start()
        cstats = {"tls": 0, "plain": 0, "failed": 0}
        sstats = {"held": 0, "failed": 0}
        rstats = {"streams": 0, "bytes_checked": 0, "errors": 0, "error_samples": []}
        threads = [threading.Thread(target=conn_churn, args=(ports, stop, deadline, cstats, rng,
                                                             args.churn_batch), daemon=True),
                   threading.Thread(target=slow_sockets, args=(ports, stop, deadline, sstats,
                                                               args.hold_secs), daemon=True),
                   threading.Thread(target=slow_readers,
                                    args=(net, stop, deadline, rstats, args.hold_secs,
                                          random.Random(seed + 10)), daemon=True)]
        for t in threads:
            t.start()
        samples = {n: [] for n in relays}
        scrape_errors = []
        flood_started = False
        flood_at = 0.4 * load_s
        end = deadline + args.cooldown
        next_t = t0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if not flood_started and now - t0 >= flood_at:
                flood.start()
                flood_started = True
            if now >= next_t:
                t = now - t0
                for nick, r in relays.items():
                    rss, fds = proc_sample(r["pid"])
                    m, err = scrape(r["metrics_port"])
                    if err:
                        scrape_errors.append(f"{t:.0f}s {nick}: {err}")
                    samples[nick].append({"t": round(t, 1), "rss_kb": rss, "fds": fds,
                                          "metrics": m, "bulk_mb": round(bulk_mb(), 1)})
                q = max([v for k, v in samples[EXIT][-1]["metrics"].items()
                         if is_depth_metric(k.split("{")[0])] or [None])
                log(f"t={t:.0f}s " + "  ".join(
                    f"{n}: rss {(s[-1]['rss_kb'] or 0) / 1024:.0f} MB fds {s[-1]['fds']}"
                    for n, s in samples.items())
                    + f"  bulk {bulk_mb():.0f} MB  max exit depth gauge {q}")
                next_t += args.interval
            time.sleep(min(1.0, max(0.05, next_t - time.monotonic())))
        stop.set()
        for t in threads:
            t.join(timeout=60)
        runs = [lg.wait(timeout=400) for lg in (bulk, bulk_up, churn_m, churn_e)]
        if flood_started:
            runs.append(flood.wait(timeout=400))
        else:
            runs.append({"name": "create2-flood", "rc": None, "summary": None})
        alive = {n: proc_sample(r["pid"])[0] is not None for n, r in relays.items()}
        data = {"seed": seed, "load_s": load_s, "cooldown_s": args.cooldown,
                "relays": {n: {"pid": relays[n]["pid"], "samples": samples[n],
                               "alive_at_end": alive[n]} for n in relays},
                "loadgen": runs, "conn_churn": cstats, "slow_sockets": sstats,
                "slow_readers": rstats,
                "scrape_errors": scrape_errors[:200],
                "bytes_verified": sum((r["summary"] or {}).get("bytes_verified", 0) for r in runs),
                "cpu": cpu_model(), "args": vars(args)}
        result = judge(data, opts)
        data["verdict"] = {"ok": result["ok"],
                           "checks": [{"name": n, "ok": o, "details": d}
                                      for n, o, d in result["checks"]]}
        with open(os.path.join(args.out, "soak.json"), "w") as f:
            json.dump(data, f, indent=1, default=str)
        text = report_text(result, data, opts)
        with open(os.path.join(args.out, "soak.txt"), "w") as f:
            f.write(text)
        sys.stdout.write(text)
        return 0 if result["ok"] else 1
    except (SoakError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        log(f"setup error: {e}")
        return 2
    finally:
        stop.set()
        for lg in locals().get("bulk"), locals().get("bulk_up"), locals().get("churn_m"), \
                locals().get("churn_e"), locals().get("flood"):
            if lg is not None:
                lg.stop()
        if up and not args.keep:
            try:
                testnet(args, "down", timeout=120)
            except (SoakError, subprocess.TimeoutExpired) as e:
                log(f"down: {e}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cpus)"
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
