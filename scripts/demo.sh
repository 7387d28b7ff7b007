#!/usr/bin/env bash
# The main job: a private Tor network on 127.0.0.1 with Fors in it, carrying traffic, and what
# Fors is for: the same load through a Fors exit costs less relay CPU per GB than through C tor.
#
# Installs what is missing (Debian's tor, python3, unbound; no system tor service is started),
# builds Fors and the load generator (bench/, fors-loadgen) in release mode, then runs
# scripts/testnet.py demo: three C tor directory authorities, C tor relays, one Fors exit and one
# Fors middle, and a C tor client. It waits until the client's consensus lists the Fors relays
# Running/Valid/Fast (and Exit), pushes data through paths pinned through each Fors relay to a
# local HTTP server and checks SHA-256 both ways. Then it ends with a side-by-side: the same
# multi-circuit load (4 circuits x 2 streams, 200 MB a run, half down and half up, every byte
# verified by fors-loadgen) through the C tor exit `exit1` and the Fors exit `forsexit1`, two runs
# each in ABBA order, and prints MB/s and each exit process's CPU-seconds per GB
# (/proc/PID/stat utime+stime, before/after) with the Fors / C tor ratio. It stops everything it
# started. Extra arguments go to `testnet.py demo` (e.g. --down-mb 100 --up-mb 100,
# --compare-mb 400, --compare-seed 7, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build --release -p fors --bin fors -p fors-bench --bin fors-loadgen
target="${CARGO_TARGET_DIR:-$PWD/target}"
exec python3 scripts/testnet.py --dir "${DEMO_DIR:-run/demo}" demo \
    --fors exit --fors middle --fors-bin "$target/release/fors" \
    --loadgen "$target/release/fors-loadgen" "$@"
