"""The speed benchmark: every runtime and model file variant, side by side, on this machine.

The same as `qwenscribe bench` (which see for the options); kept here with the other benchmark
scripts. The report goes to benchmarks/results/speed.{json,md} unless --out says otherwise.

    .venv/bin/python benchmarks/speed.py [--sizes 0.6b,1.7b] [--parts matrix,scaling,parallel]
    .venv/bin/python benchmarks/speed.py --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

from qwenscribe.cli import app

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "speed"

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--out" not in arguments:
        arguments += ["--out", str(DEFAULT_OUT)]
    app(["bench", *arguments], prog_name="benchmarks/speed.py")
