#!/usr/bin/env bash
# Set up neuralab in ./.venv and train a real network on real MNIST (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[quickstart]'
exec .venv/bin/python examples/quickstart.py "$@"
