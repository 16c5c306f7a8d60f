"""The audio every configuration hears: the same samples, built the same way in each process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 16000
# The repository's speech clips (English, Mandarin, English), when the benchmark runs from a clone.
CLIPS = ("en_speech.wav", "zh_speech.wav", "en_long.flac")
REPO_DATA = Path(__file__).resolve().parents[3] / "tests" / "data"

# Words for the aligner: the recognizer's text from random weights is not language, so every
# configuration aligns this English passage, cut to a natural pace (2.5 words per second).
PASSAGE = [
    "The",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "the",
    "patient",
    "teacher",
    "reads",
    "a",
    "short",
    "story",
    "about",
    "rivers,",
    "mountains",
    "and",
    "the",
    "people",
    "who",
    "travel",
    "between",
    "them",
    "every",
    "spring.",
]
WORDS_PER_SECOND = 2.5


def speech(seconds: float, source: Path | None = None) -> np.ndarray:
    """`seconds` of speech, repeated and cut: a given media file, else the repository's clips,
    else a synthetic voice-like signal (random weights do not care what is said)."""
    from qwenscribe.audio.decode import decode_audio

    wanted = round(seconds * RATE)
    if source is not None:
        pieces = [decode_audio(source)]
    elif all((REPO_DATA / name).is_file() for name in CLIPS):
        pieces = [decode_audio(REPO_DATA / name) for name in CLIPS]
    else:
        pieces = [_synthetic(20.0)]
    repeats = -(-wanted // sum(len(piece) for piece in pieces))
    return np.concatenate(pieces * repeats)[:wanted].astype(np.float32)


def _synthetic(seconds: float) -> np.ndarray:
    """Syllable-like bursts of a few harmonics with pauses: enough for timing the model."""
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * RATE)) / RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / RATE) / k for k in range(1, 6))
    envelope = (np.sin(2 * np.pi * 4 * t) > -0.2) * (np.sin(2 * np.pi * 0.25 * t) > -0.6)
    return (0.2 * voice * envelope + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def passage(seconds: float) -> str:
    """The aligner's text for a chunk of `seconds`."""
    count = max(1, round(seconds * WORDS_PER_SECOND))
    return " ".join(PASSAGE[i % len(PASSAGE)] for i in range(count)) + "."
