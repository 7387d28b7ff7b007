#!/bin/sh
# One command: private loopback Tor network up -> wait -> 20 MB down+up with
# SHA-256 check -> down.  Extra arguments go to `testnet.py demo`, e.g.
#   scripts/run-network.sh --fors exit --fors-bin target/debug/fors
set -eu
exec python3 "$(dirname "$0")/testnet.py" demo "$@"
