"""Small helpers the benchmark drivers share (scripts/bench/hs.py, scripts/bench/dircache.py):
the CPU line of a results section, medians, and a bounded poll."""

import os
import time

# The CPU features a result names (which crypto paths Fors can take).
FEATURES = ["aes", "vaes", "pclmulqdq", "avx2", "avx512f", "avx512bw", "avx512vl", "sha_ni",
            "bmi2"]


def cpu_info():
    """{'model', 'cores', 'features'} from /proc/cpuinfo (features: those of FEATURES present)."""
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(),
            "features": [f for f in FEATURES if f in flags]}


def median(v):
    """The median of the values that are not None (None if there are none)."""
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def wait_until(what, fn, limit, step=2.0):
    """Polls fn() until it returns a true value, at most `limit` seconds (and 10,000 polls)."""
    end = time.monotonic() + limit
    for _ in range(10_000):
        v = fn()
        if v:
            return v
        if time.monotonic() >= end:
            break
        time.sleep(step)
    raise SystemExit(f"timed out after {limit:.0f}s waiting for {what}")
