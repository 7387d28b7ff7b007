#!/usr/bin/env bash
# The main job: a private Tor network on 127.0.0.1 with Fors in it, carrying traffic.
#
# Installs what is missing (Debian's tor, python3, unbound; no system tor service is started),
# builds Fors in release mode, then runs scripts/testnet.py demo: three C tor directory
# authorities, C tor relays, one Fors exit and one Fors middle, and a C tor client. It waits
# until the client's consensus lists the Fors relays Running/Valid/Fast (and Exit), pushes data
# through paths pinned through each Fors relay to a local HTTP server, checks SHA-256 both ways,
# prints MB/s, and stops everything it started. Extra arguments go to `testnet.py demo`
# (e.g. --down-mb 100 --up-mb 100, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build --release --bin fors
exec python3 scripts/testnet.py --dir "${DEMO_DIR:-run/demo}" demo \
    --fors exit --fors middle --fors-bin "$PWD/target/release/fors" "$@"
