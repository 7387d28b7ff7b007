#!/usr/bin/env bash
# Unit tests of the scripts themselves: the network scripts (scripts/testnet.py,
# scripts/netns.py: exit policies, torrc checks, port plan, exit-knowledge wait, namespace
# isolation check) and the benchmark tools' arithmetic and parsing (scripts/bench: CPU per GB,
# user/system split, kernel floor, saturation, idle circuits). No tor runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m unittest discover -s scripts/tests -p 'test_*.py' -v
python3 -m unittest discover -s scripts/bench -t scripts/bench -p 'test_*.py' -v
