"""Silero VAD on onnxruntime: parity with silero's own code, behaviour on the fixtures, no torch."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from qwenscribe.audio import vad as vad_module
from qwenscribe.audio.vad import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SileroVAD,
    VADOptions,
    default_model_path,
    segments_from_probabilities,
    speech_segments,
)
from qwenscribe.errors import InputError, ModelError
from torchless import run_without_torch

CLIPS = ["en_speech", "zh_speech", "en_long", "long_speech"]
FILES = {"en_speech": "en_speech.wav", "zh_speech": "zh_speech.wav", "en_long": "en_long.flac"}

# Our options and the same settings in silero's keyword arguments. The 1.5-s limit with the
# older cut rule and the zero-duration set reach the branches the defaults never take.
OPTION_SETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "defaults": ({}, {}),
    "threshold-0.3": ({"threshold": 0.3}, {"threshold": 0.3}),
    "silence-300-pad-100": (
        {"min_silence_ms": 300, "speech_pad_ms": 100},
        {"min_silence_duration_ms": 300, "speech_pad_ms": 100},
    ),
    "max-speech-3s": ({"max_speech_s": 3.0}, {"max_speech_duration_s": 3.0}),
    "max-speech-1.5s-last-silence": (
        {"max_speech_s": 1.5, "use_longest_silence_at_max_speech": False},
        {"max_speech_duration_s": 1.5, "use_max_poss_sil_at_max_speech": False},
    ),
    "zero-durations-neg-0.45": (
        {"min_speech_ms": 0, "min_silence_ms": 0, "speech_pad_ms": 0, "neg_threshold": 0.45},
        {
            "min_speech_duration_ms": 0,
            "min_silence_duration_ms": 0,
            "speech_pad_ms": 0,
            "neg_threshold": 0.45,
        },
    ),
}


def decode(path: Path) -> np.ndarray:
    """A lossless file (WAV, FLAC) as 16 kHz mono float32 in [-1, 1], decoded with PyAV."""
    to_float = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path)) as container:
        frames = [out for frame in container.decode(audio=0) for out in to_float.resample(frame)]
    frames += to_float.resample(None)
    return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])


@pytest.fixture(scope="module")
def clips(data_dir: Path, en_speech: np.ndarray, long_speech: np.ndarray) -> dict[str, Any]:
    return {
        "en_speech": en_speech,
        "zh_speech": decode(data_dir / "zh_speech.wav"),
        "en_long": decode(data_dir / "en_long.flac"),
        "long_speech": long_speech,
    }


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def silero() -> SimpleNamespace:
    """silero's own torch-based wrapper and segment functions, the reference."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    from silero_vad.utils_vad import (
        OnnxWrapper,
        get_speech_timestamps,
        get_speech_timestamps_from_probs,
    )

    torch.set_num_threads(threads)  # importing silero_vad pins torch to one thread for all
    return SimpleNamespace(
        torch=torch,
        model=OnnxWrapper(str(default_model_path()), force_onnx_cpu=True),
        timestamps=get_speech_timestamps,
        timestamps_from_probs=get_speech_timestamps_from_probs,
    )


def as_pairs(speeches: list[dict[str, int]]) -> list[tuple[int, int]]:
    return [(speech["start"], speech["end"]) for speech in speeches]


def assert_well_formed(segments: list[tuple[int, int]], sample_count: int) -> None:
    """In order, not overlapping, non-empty, inside the audio."""
    for start, end in segments:
        assert 0 <= start < end <= sample_count
    for (_, end), (start, _) in pairwise(segments):
        assert end <= start


# (a) parity with silero


@pytest.mark.parametrize("clip", CLIPS)
def test_probabilities_match_silero(
    clip: str, clips: dict[str, np.ndarray], vad: SileroVAD, silero: SimpleNamespace
) -> None:
    samples = clips[clip]
    ours = vad.speech_probabilities(samples)
    theirs = silero.model.audio_forward(silero.torch.from_numpy(samples), SAMPLE_RATE)
    theirs = theirs.numpy().reshape(-1)
    assert ours.dtype == np.float32
    assert ours.shape == (math.ceil(len(samples) / WINDOW_SAMPLES),) == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5


@pytest.mark.parametrize("option_set", OPTION_SETS)
@pytest.mark.parametrize("clip", CLIPS)
def test_segments_match_silero(
    clip: str,
    option_set: str,
    clips: dict[str, np.ndarray],
    vad: SileroVAD,
    silero: SimpleNamespace,
) -> None:
    ours_kwargs, their_kwargs = OPTION_SETS[option_set]
    samples = clips[clip]
    ours = vad.speech_segments(samples, VADOptions(**ours_kwargs))
    theirs = silero.timestamps(silero.torch.from_numpy(samples), silero.model, **their_kwargs)
    assert ours
    assert ours == as_pairs(theirs)


def random_probabilities(rng: np.random.Generator) -> np.ndarray:
    """Runs of speech, silence and in-between values, of random lengths, like a real track."""
    levels = {"speech": (0.5, 1.0), "silence": (0.0, 0.35), "unsure": (0.3, 0.6)}
    runs = []
    while sum(len(run) for run in runs) < 600:
        low, high = levels[rng.choice(list(levels), p=[0.45, 0.4, 0.15])]
        runs.append(rng.uniform(low, high, size=rng.geometric(1 / 12)))
    return np.concatenate(runs).astype(np.float32)


def random_options(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    threshold = float(rng.choice([0.3, 0.5, 0.6]))
    neg = None if rng.random() < 0.5 else float(rng.uniform(0.05, threshold))
    # 64 ms is exactly two windows: it tells "longer than" from "at least" in every rule.
    speech = int(rng.choice([0, 64, 100, 250]))
    silence = int(rng.choice([0, 64, 100, 300]))
    pad = int(rng.choice([0, 30, 45, 100]))
    max_s = float(rng.choice([math.inf, 1.0, 2.5, 4.0]))
    cut_silence = int(rng.choice([0, 64, 98, 200]))
    longest = bool(rng.random() < 0.5)
    ours = {
        "threshold": threshold,
        "neg_threshold": neg,
        "min_speech_ms": speech,
        "min_silence_ms": silence,
        "speech_pad_ms": pad,
        "max_speech_s": max_s,
        "min_silence_at_max_speech_ms": cut_silence,
        "use_longest_silence_at_max_speech": longest,
    }
    theirs = {
        "threshold": threshold,
        "neg_threshold": neg,
        "min_speech_duration_ms": speech,
        "min_silence_duration_ms": silence,
        "speech_pad_ms": pad,
        "max_speech_duration_s": max_s,
        "min_silence_at_max_speech": cut_silence,
        "use_max_poss_sil_at_max_speech": longest,
    }
    return ours, theirs


def test_segment_rules_match_silero_on_random_probabilities(silero: SimpleNamespace) -> None:
    """The segment rules alone, over far more situations than four clips reach."""
    rng = np.random.default_rng(0)
    limited_cases_cut = {True: 0, False: 0}
    for _ in range(400):
        probabilities = random_probabilities(rng)
        sample_count = len(probabilities) * WINDOW_SAMPLES - int(rng.integers(0, WINDOW_SAMPLES))
        ours_kwargs, their_kwargs = random_options(rng)
        ours = segments_from_probabilities(probabilities, sample_count, VADOptions(**ours_kwargs))
        theirs = silero.timestamps_from_probs(
            probabilities.tolist(), audio_length_samples=sample_count, **their_kwargs
        )
        assert ours == as_pairs(theirs), (ours_kwargs, probabilities.tolist())
        assert_well_formed(ours, sample_count)
        if ours_kwargs["max_speech_s"] < math.inf:
            unlimited = VADOptions(**{**ours_kwargs, "max_speech_s": math.inf})
            if ours != segments_from_probabilities(probabilities, sample_count, unlimited):
                limited_cases_cut[ours_kwargs["use_longest_silence_at_max_speech"]] += 1
    # Both cut rules were exercised, not just the easy paths.
    assert min(limited_cases_cut.values()) > 20


EDGE_CASES = {
    "speech-from-first-window": ([0.9] * 40 + [0.0] * 20, {}),
    "all-speech": ([0.9] * 200, {}),
    "all-speech-hard-cuts": ([0.9] * 200, {"max_speech_s": 1.0}),
    "all-speech-hard-cuts-last-silence": (
        [0.9] * 200,
        {"max_speech_s": 1.0, "use_longest_silence_at_max_speech": False},
    ),
    "trailing-speech-exactly-min-speech": ([0.0] * 10 + [0.9] * 2, {"min_speech_ms": 64}),
    "trailing-speech-just-over-min-speech": ([0.0] * 10 + [0.9] * 3, {"min_speech_ms": 64}),
    "between-thresholds-keeps-speech": ([0.9] * 10 + [0.4] * 30 + [0.0] * 10, {}),
    "nothing": ([0.0] * 50, {}),
}
SILERO_NAMES = {
    "min_speech_ms": "min_speech_duration_ms",
    "max_speech_s": "max_speech_duration_s",
    "use_longest_silence_at_max_speech": "use_max_poss_sil_at_max_speech",
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_segment_rules_match_silero_at_the_edges(case: str, silero: SimpleNamespace) -> None:
    """Exact boundaries (whole windows, audio ending on a window edge) random runs rarely hit."""
    probabilities, options = EDGE_CASES[case]
    sample_count = len(probabilities) * WINDOW_SAMPLES
    ours = segments_from_probabilities(
        np.array(probabilities, dtype=np.float32), sample_count, VADOptions(**options)
    )
    theirs = silero.timestamps_from_probs(
        probabilities,
        audio_length_samples=sample_count,
        **{SILERO_NAMES[name]: value for name, value in options.items()},
    )
    assert ours == as_pairs(theirs)
    assert_well_formed(ours, sample_count)


# (b) behaviour on the fixtures


@pytest.mark.parametrize("clip", FILES)
def test_segments_cover_speech_and_avoid_silence(
    clip: str, clips: dict[str, np.ndarray], vad: SileroVAD, fixture_facts: dict[str, Any]
) -> None:
    facts = fixture_facts[FILES[clip]]
    found = vad.speech_segments(clips[clip])
    assert_well_formed(found, len(clips[clip]))
    segments = [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in found]
    for speech in facts["speech"]:
        assert any(start < speech["end"] and speech["start"] < end for start, end in segments)
    for silence_start, silence_end in facts["silences"]:
        if silence_end - silence_start >= 0.5:
            assert not any(silence_start <= start and end <= silence_end for start, end in segments)
    for start, end in segments:  # and nothing but speech is found
        assert any(start < speech["end"] and speech["start"] < end for speech in facts["speech"])


@pytest.mark.parametrize("clip", FILES)
def test_long_enough_minimum_silence_finds_exactly_the_recorded_pauses(
    clip: str, clips: dict[str, np.ndarray], vad: SileroVAD, fixture_facts: dict[str, Any]
) -> None:
    """The fixtures' pauses inside speech are all short, so 300 ms splits only at real gaps."""
    facts = fixture_facts[FILES[clip]]
    segments = vad.speech_segments(clips[clip], VADOptions(min_silence_ms=300))
    assert len(segments) == len(facts["speech"])
    for (start, end), speech in zip(segments, facts["speech"], strict=True):
        assert abs(start / SAMPLE_RATE - speech["start"]) < 0.25
        assert abs(end / SAMPLE_RATE - speech["end"]) < 0.25


def test_digital_silence_has_no_speech(data_dir: Path, vad: SileroVAD) -> None:
    samples = decode(data_dir / "silence.wav")
    assert vad.speech_probabilities(samples).max() < 0.1
    assert vad.speech_segments(samples) == []
    assert vad.speech_segments(samples, VADOptions(threshold=0.2, min_speech_ms=0)) == []


@pytest.mark.parametrize("use_longest", [True, False])
@pytest.mark.parametrize(
    ("clip", "max_speech_s"),  # each limit is below the clip's longest unlimited segment
    [("en_long", 1.0), ("en_long", 1.5), ("en_long", 3.0), ("long_speech", 1.5)],
)
def test_max_speech_is_respected(
    clip: str, max_speech_s: float, use_longest: bool, clips: dict[str, np.ndarray], vad: SileroVAD
) -> None:
    samples = clips[clip]
    probabilities = vad.speech_probabilities(samples)
    unlimited = segments_from_probabilities(probabilities, len(samples))
    options = VADOptions(max_speech_s=max_speech_s, use_longest_silence_at_max_speech=use_longest)
    limited = segments_from_probabilities(probabilities, len(samples), options)
    assert_well_formed(limited, len(samples))
    assert max(end - start for start, end in unlimited) > max_speech_s * SAMPLE_RATE
    assert max(end - start for start, end in limited) <= max_speech_s * SAMPLE_RATE
    assert len(limited) > len(unlimited)


def test_empty_and_short_audio(vad: SileroVAD) -> None:
    assert vad.speech_probabilities(np.zeros(0, dtype=np.float32)).shape == (0,)
    assert vad.speech_segments(np.zeros(0, dtype=np.float32)) == []
    assert vad.speech_probabilities(np.zeros(100, dtype=np.float32)).shape == (1,)


def test_threads_and_float64_give_the_same_probabilities(
    clips: dict[str, np.ndarray], vad: SileroVAD
) -> None:
    samples = clips["en_speech"]
    expected = vad.speech_probabilities(samples)
    two_threads = SileroVAD(threads=2).speech_probabilities(samples)
    np.testing.assert_allclose(two_threads, expected, atol=1e-5)
    np.testing.assert_array_equal(vad.speech_probabilities(samples.astype(np.float64)), expected)


def test_module_function_shares_one_model(clips: dict[str, np.ndarray], vad: SileroVAD) -> None:
    samples = clips["en_speech"]
    options = VADOptions(speech_pad_ms=50)
    assert speech_segments(samples, options) == vad.speech_segments(samples, options)
    assert speech_segments(samples, options, vad=vad) == vad.speech_segments(samples, options)
    assert vad_module._shared_vad() is vad_module._shared_vad()


# (c) no torch


def test_vad_runs_without_torch() -> None:
    result = run_without_torch(
        """
import sys
import numpy as np
from qwenscribe.audio.vad import SileroVAD, speech_segments
noise = (np.random.default_rng(0).standard_normal(3 * 16000) * 0.1).astype(np.float32)
vad = SileroVAD()
probabilities = vad.speech_probabilities(noise)
assert probabilities.shape == (94,), probabilities.shape
assert ((probabilities >= 0) & (probabilities <= 1)).all()
speech_segments(noise, vad=vad)
print("ok", "torch" in sys.modules)
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "False"]


# (d) errors


def test_missing_model_path_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        SileroVAD(model_path=tmp_path / "nowhere.onnx")


def test_missing_package_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as caught:
        SileroVAD()
    assert "pip install silero-vad --no-deps" in str(caught.value)


def test_package_without_model_file_is_a_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.machinery.ModuleSpec("silero_vad", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelError, match="no VAD model") as caught:
        SileroVAD()
    assert "pip install silero-vad --no-deps" in str(caught.value)


def test_unreadable_or_wrong_model_is_a_model_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a model" * 50)
    with pytest.raises(ModelError, match="cannot be loaded"):
        SileroVAD(model_path=corrupt)
    sequence_model = default_model_path().parent / "silero_vad_16k_sequence.onnx"
    if sequence_model.is_file():
        with pytest.raises(ModelError, match="not the streaming Silero VAD model"):
            SileroVAD(model_path=sequence_model)


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": -0.2},
        {"threshold": math.nan},
        {"neg_threshold": 0.6},
        {"neg_threshold": -0.1},
        {"min_speech_ms": -1},
        {"min_silence_ms": -1},
        {"speech_pad_ms": -5},
        {"min_silence_at_max_speech_ms": -1},
        {"max_speech_s": 0.0},
        {"max_speech_s": -3.0},
        {"max_speech_s": 0.05},
        {"max_speech_s": math.nan},
    ],
)
def test_bad_options_are_input_errors(options: dict[str, float]) -> None:
    with pytest.raises(InputError, match="VAD"):
        VADOptions(**options)


@pytest.mark.parametrize(
    "samples",
    [np.zeros((2, 16000), dtype=np.float32), np.zeros(16000, dtype=np.int16)],
)
def test_bad_samples_are_input_errors(samples: np.ndarray, vad: SileroVAD) -> None:
    with pytest.raises(InputError):
        vad.speech_probabilities(samples)


def test_bad_thread_count_is_an_input_error() -> None:
    with pytest.raises(InputError, match="threads"):
        SileroVAD(threads=0)
