#!/usr/bin/env bash
# Set up the development environment (scripts/setup.sh dev) and run the whole test suite.
# Extra arguments go to pytest, e.g. ./test.sh -m "not slow" or ./test.sh tests/test_cli.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$root/scripts/setup.sh" dev
cd "$root"
exec "${QWENSCRIBE_VENV:-$root/.venv}/bin/python" -m pytest "$@"
