#!/usr/bin/env bash
# Run qwenscribe from a clone: sets up .venv on first use (scripts/setup.sh), then runs the CLI.
#   ./qwenscribe.sh transcribe talk.mp4
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$root/scripts/setup.sh" runtime
exec "${QWENSCRIBE_VENV:-$root/.venv}/bin/qwenscribe" "$@"
