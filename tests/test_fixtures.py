"""Check that the committed media fixtures in tests/data/ have the properties promised.

Other tests rely on these files (and on the facts in ``tests/data/fixtures.json``): where the
silences are, how long each clip is, which streams a container has. Everything here is
verified by decoding the files with PyAV, not by trusting ``scripts/make_fixtures.py``.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

DATA_DIR = Path(__file__).parent / "data"
FACTS: dict[str, dict[str, Any]] = json.loads(
    (DATA_DIR / "fixtures.json").read_text(encoding="utf-8")
)

SILENCE_RMS = 1e-4  # -80 dBFS: anything promised silent must be (near) digital zero
SPEECH_RMS = 0.02  # -34 dBFS: every promised speech segment must be clearly audible
ONSET_PEAK = 64 / 32768  # speech must start/end within a few ms of its recorded boundary
LOSSY_MARGIN_S = 0.05  # AAC smears transitions a little; stay this far from the boundaries

# Promised duration ranges (seconds), independent of what fixtures.json says.
DURATIONS = {
    "en_speech.wav": (4.0, 6.0),
    "zh_speech.wav": (4.0, 6.0),
    "en_long.flac": (8.0, 14.0),  # must exceed the encoder's 8-s attention window
    "silence.wav": (2.999, 3.001),
    "video_with_audio.mp4": (2.5, 4.0),
}
LOSSLESS = ["en_speech.wav", "zh_speech.wav", "en_long.flac", "silence.wav"]
SPEECH = ["en_speech.wav", "zh_speech.wav", "en_long.flac"]
WITH_AUDIO = [*LOSSLESS, "video_with_audio.mp4"]


def _decode_audio(path: Path) -> tuple[np.ndarray, int, int]:
    """Decode the first audio stream to float32 (channels, samples), without resampling."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, layout = stream.codec_context.sample_rate, stream.codec_context.layout.name
        to_float = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        blocks = [
            out.to_ndarray()
            for frame in container.decode(stream)
            for out in to_float.resample(frame)
        ]
        blocks += [out.to_ndarray() for out in to_float.resample(None)]
    samples = np.concatenate(blocks, axis=1).astype(np.float32)
    return samples, rate, samples.shape[0]


def _decode_everything(path: Path) -> int:
    """Open a file and decode every packet of every stream; return the frame count."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(*container.streams))


def _mono(name: str) -> tuple[np.ndarray, int]:
    samples, rate, _ = _decode_audio(DATA_DIR / name)
    return samples.mean(axis=0), rate


def _span(samples: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return samples[round(start * rate) : round(end * rate)]


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _margin(name: str) -> float:
    return 0.0 if name in LOSSLESS else LOSSY_MARGIN_S


def test_fixtures_json_matches_directory() -> None:
    on_disk = {p.name for p in DATA_DIR.iterdir()} - {"fixtures.json", "README.md"}
    assert on_disk == set(FACTS)


@pytest.mark.parametrize("name", WITH_AUDIO)
def test_audio_format_and_duration(name: str) -> None:
    samples, rate, channels = _decode_audio(DATA_DIR / name)
    facts = FACTS[name]
    assert rate == facts["sample_rate"]
    assert channels == facts["channels"]
    duration = samples.shape[1] / rate
    low, high = DURATIONS[name]
    assert low < duration < high
    tolerance = 0.0 if name in LOSSLESS else 0.05  # AAC rounds up to whole 1024-sample frames
    assert duration == pytest.approx(facts["duration_s"], abs=tolerance + 1e-6)


@pytest.mark.parametrize("name", LOSSLESS)
def test_plain_audio_is_16k_mono(name: str) -> None:
    _, rate, channels = _decode_audio(DATA_DIR / name)
    assert (rate, channels) == (16_000, 1)


@pytest.mark.parametrize("name", WITH_AUDIO)
def test_intervals_tile_the_clip(name: str) -> None:
    facts = FACTS[name]
    spans = sorted(
        [(a, b) for a, b in facts["silences"]] + [(s["start"], s["end"]) for s in facts["speech"]]
    )
    assert spans[0][0] == 0.0
    assert spans[-1][1] == pytest.approx(facts["duration_s"])
    for (_, end), (start, _) in pairwise(spans):
        assert end == pytest.approx(start)


@pytest.mark.parametrize("name", SPEECH)
def test_speech_clips_have_leading_inner_and_trailing_silence(name: str) -> None:
    facts = FACTS[name]
    silences, duration = facts["silences"], facts["duration_s"]
    lead, *inner, trail = silences
    assert lead[0] == 0.0
    eps = 1e-6  # the boundaries are decimal floats (e.g. 7.85 - 7.25 != 0.6 exactly)
    assert 0.5 - eps <= lead[1] - lead[0] <= 1.0 + eps
    assert trail[1] == pytest.approx(duration)
    assert 0.5 - eps <= trail[1] - trail[0] <= 1.0 + eps
    assert len(inner) >= (2 if name == "en_long.flac" else 1)
    assert all(0.6 - eps <= end - start <= 1.0 + eps for start, end in inner)


@pytest.mark.parametrize("name", WITH_AUDIO)
def test_promised_silences_are_silent(name: str) -> None:
    samples, rate = _mono(name)
    margin = _margin(name)
    for start, end in FACTS[name]["silences"]:
        region = _span(samples, rate, start + margin, end - margin)
        assert region.size > 0
        assert _rms(region) < SILENCE_RMS, f"{name}: {start}-{end} s is not silent"


@pytest.mark.parametrize("name", [*SPEECH, "video_with_audio.mp4"])
def test_speech_segments_are_audible(name: str) -> None:
    samples, rate = _mono(name)
    assert FACTS[name]["speech"]
    for segment in FACTS[name]["speech"]:
        region = _span(samples, rate, segment["start"], segment["end"])
        assert _rms(region) > SPEECH_RMS, f"{name}: {segment['text']!r} is too quiet"


@pytest.mark.parametrize("name", SPEECH)
def test_speech_boundaries_are_tight(name: str) -> None:
    """Speech starts right at its recorded start and ends within the 10 ms padding grid."""
    samples, rate = _mono(name)
    for segment in FACTS[name]["speech"]:
        start, end = segment["start"], segment["end"]
        assert np.abs(_span(samples, rate, start, start + 0.005)).max() >= ONSET_PEAK
        assert np.abs(_span(samples, rate, end - 0.015, end)).max() >= ONSET_PEAK


def _longest_quiet_run(samples: np.ndarray) -> int:
    quiet = np.concatenate([[False], np.abs(samples) < ONSET_PEAK, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return int((edges[1::2] - edges[0::2]).max(initial=0))


@pytest.mark.parametrize("name", SPEECH)
def test_gaps_inside_speech_are_short(name: str) -> None:
    """No pause inside a sentence is long enough to be mistaken for a listed silence."""
    samples, rate = _mono(name)
    longest = max(
        _longest_quiet_run(_span(samples, rate, s["start"], s["end"]))
        for s in FACTS[name]["speech"]
    )
    assert longest / rate == pytest.approx(FACTS[name]["max_gap_in_speech_s"], abs=1e-3)
    assert longest / rate < 0.2


def test_long_clip_exceeds_the_8s_window() -> None:
    samples, rate = _mono("en_long.flac")
    assert samples.size / rate > 8.0
    assert FACTS["en_long.flac"]["duration_s"] > 8.0


def test_languages_and_text() -> None:
    assert FACTS["en_speech.wav"]["language"] == "en"
    assert FACTS["en_long.flac"]["language"] == "en"
    assert FACTS["zh_speech.wav"]["language"] == "zh"
    assert "今天天气很好" in FACTS["zh_speech.wav"]["text"]
    assert "quick brown fox" in FACTS["en_speech.wav"]["text"]


def test_silence_wav_is_all_zeros() -> None:
    samples, rate, channels = _decode_audio(DATA_DIR / "silence.wav")
    assert (rate, channels, samples.shape[1]) == (16_000, 1, 3 * 16_000)
    assert not samples.any()


def test_video_with_audio_streams() -> None:
    facts = FACTS["video_with_audio.mp4"]
    with av.open(str(DATA_DIR / "video_with_audio.mp4")) as container:
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 1
        audio = container.streams.audio[0].codec_context
        assert audio.name == "aac"
        assert (audio.sample_rate, audio.channels) == (48_000, 2)
        video = container.streams.video[0].codec_context
        assert (video.width, video.height) == (facts["video"]["width"], facts["video"]["height"])
    samples, _, _ = _decode_audio(DATA_DIR / "video_with_audio.mp4")
    assert _rms(samples) > SPEECH_RMS


@pytest.mark.parametrize("name", ["video_with_audio.mp4", "video_no_audio.mp4"])
def test_video_frames_decode(name: str) -> None:
    expected = FACTS[name]["video"]
    with av.open(str(DATA_DIR / name)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == expected["frames"]
    assert (frames[0].width, frames[0].height) == (expected["width"], expected["height"])


def test_video_no_audio_has_no_audio_stream() -> None:
    with av.open(str(DATA_DIR / "video_no_audio.mp4")) as container:
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 0
    assert FACTS["video_no_audio.mp4"]["audio"] is False


def test_corrupt_mp3_is_rejected() -> None:
    path = DATA_DIR / "corrupt.mp3"
    assert path.stat().st_size == FACTS["corrupt.mp3"]["size_bytes"]
    with pytest.raises(av.error.FFmpegError):
        _decode_everything(path)
