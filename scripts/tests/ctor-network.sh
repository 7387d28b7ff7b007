#!/usr/bin/env bash
# Private-network smoke test of the test harness itself: C tor authorities, relays and client
# on 127.0.0.1 carry 10 MB each way with checksums. Fors-specific network tests sit beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 scripts/testnet.py --dir "target/testnet/ctor" demo --base-port 16100 \
    --down-mb 10 --up-mb 10
