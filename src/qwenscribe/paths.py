"""Where qwenscribe keeps downloaded and converted models."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

HOME_ENV = "QWENSCRIBE_HOME"


def qwenscribe_home() -> Path:
    """`$QWENSCRIBE_HOME`, else the user's cache folder (e.g. ~/.cache/qwenscribe on Linux)."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path(user_cache_dir("qwenscribe"))


def hub_cache_dir() -> Path:
    """Checkpoints downloaded from the Hugging Face Hub (the hub's own cache layout)."""
    return qwenscribe_home() / "hub"


def converted_models_dir() -> Path:
    """Checkpoints converted to the hybrid format, one folder each."""
    return qwenscribe_home() / "models"


def bench_dir() -> Path:
    """Random-weight checkpoints and conversions the speed benchmark writes (several GB)."""
    return qwenscribe_home() / "bench"


def prepacked_dir() -> Path:
    """ONNX graphs with their weights laid out for this machine's kernels (safe to delete)."""
    return qwenscribe_home() / "prepacked"


def nearest_existing(path: Path) -> Path:
    """`path`, or the closest folder above it that exists (where it would be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
