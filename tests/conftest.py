"""Shared test fixtures: the committed media facts and tiny random checkpoints."""

from __future__ import annotations

import json
import os
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwenscribe.paths import HOME_ENV
from qwenscribe.testing import write_checkpoint

DATA_DIR = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks print figures and never run unless asked for with `-m benchmark`."""
    if "benchmark" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="benchmark: run with -m benchmark")
    for item in items:
        if "benchmark" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """qwenscribe's cache (models, packed weights) in a folder of the run's own: the suite
    never writes into the user's, and every run starts without copies from an earlier one."""
    home = tmp_path_factory.mktemp("qwenscribe-home")
    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    yield home
    if previous is None:
        os.environ.pop(HOME_ENV, None)
    else:
        os.environ[HOME_ENV] = previous


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def fixture_facts() -> dict[str, dict[str, Any]]:
    """What tests/data/fixtures.json records: durations, silences, texts of each clip."""
    return json.loads((DATA_DIR / "fixtures.json").read_text(encoding="utf-8"))


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV file as float32 samples in [-1, 1]."""
    with wave.open(str(path), "rb") as handle:
        frames = handle.readframes(handle.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="session")
def en_speech() -> np.ndarray:
    return read_wav(DATA_DIR / "en_speech.wav")


@pytest.fixture(scope="session")
def long_speech() -> np.ndarray:
    """Over 60 s of speech with pauses, built by concatenating the committed clips."""
    english, mandarin = read_wav(DATA_DIR / "en_speech.wav"), read_wav(DATA_DIR / "zh_speech.wav")
    pieces = []
    while sum(len(piece) for piece in pieces) < 62 * 16000:
        pieces += [english, mandarin]
    return np.concatenate(pieces)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Tiny random checkpoints, seed 0, for every (kind, layout)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        (kind, layout): write_checkpoint(root / f"{kind}-{layout}", kind=kind, layout=layout)
        for kind in ("asr", "aligner")
        for layout in ("original", "hf")
    }
