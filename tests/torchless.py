"""Run Python code in a child process where torch and transformers cannot be imported.

The hybrid path promises never to import torch; tests prove it by running real work with an
import hook that makes any such import fail loudly.
"""

from __future__ import annotations

import subprocess
import sys

_BLOCK_TORCH = """
import sys
class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError("torch must not be imported here: " + name)
sys.meta_path.insert(0, _BlockTorch())
"""


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` (its last action should print or assert) and return the finished process."""
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH + code], capture_output=True, text=True
    )
