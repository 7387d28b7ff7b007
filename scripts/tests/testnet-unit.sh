#!/usr/bin/env bash
# Unit tests of the network scripts themselves (scripts/testnet.py, scripts/netns.py): exit
# policies, torrc checks, port plan, exit-knowledge wait, namespace isolation check. No tor runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 -m unittest discover -s scripts/tests -p 'test_*.py' -v
