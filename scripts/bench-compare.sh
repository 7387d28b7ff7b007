#!/usr/bin/env bash
# Side-by-side relay benchmark, Fors vs C tor (see scripts/bench-compare.py --help).
# Builds the release binaries it needs, then runs the Python driver with the given options.
# Set BENCH_COMPARE_NO_BUILD=1 to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${BENCH_COMPARE_NO_BUILD:-}" ]]; then
    cargo build --release -p fors-bench -p fors
fi
exec python3 scripts/bench-compare.py "$@"
