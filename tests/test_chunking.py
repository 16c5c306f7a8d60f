"""The chunk plan: chunks fit the model, cut in silences, and cover what they should."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from qwenscribe.core.chunking import Chunk, plan_chunks
from qwenscribe.errors import InputError
from torchless import run_without_torch

RATE = 16000
WINDOW_S = 0.1  # the quiet window a cut is centred in


def seconds(value: float) -> int:
    return round(value * RATE)


def read_audio(path: Path) -> np.ndarray:
    """A mono file as float32 samples in [-1, 1], decoded with PyAV."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    samples = np.concatenate(frames)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32)


def merge_touching(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1e-9:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def assert_tiles(chunks: list[Chunk], num_samples: int, max_chunk_s: float) -> None:
    """No gap, no overlap, the whole file, every chunk non-empty and within the limit."""
    assert chunks[0].start == 0
    assert chunks[-1].end == num_samples
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
    for chunk in chunks:
        assert 0 < chunk.num_samples <= max_chunk_s * RATE
        assert chunk.duration_s <= max_chunk_s


def assert_bounds_s(chunks: list[Chunk], expected_s: list[tuple[float, float]]) -> None:
    """Chunk bounds in seconds, to within the 10-ms grid cuts are placed on."""
    actual = np.array([(chunk.start_s, chunk.end_s) for chunk in chunks])
    np.testing.assert_allclose(actual, np.array(expected_s, dtype=float), atol=0.011)


def in_some(value: float, intervals: list[tuple[float, float]]) -> bool:
    return any(start < value < end for start, end in intervals)


# --- the committed recordings -------------------------------------------------------------------


@pytest.fixture(scope="module")
def en_long(data_dir: Path) -> np.ndarray:
    return read_audio(data_dir / "en_long.flac")


@pytest.fixture(scope="module")
def long_speech_silences(
    fixture_facts: dict[str, dict[str, Any]], en_speech: np.ndarray, long_speech: np.ndarray
) -> list[tuple[float, float]]:
    """The recorded silences of conftest's `long_speech`: the clips alternate en, zh, en, ..."""
    clips = [("en_speech.wav", len(en_speech)), ("zh_speech.wav", None)]
    zh_len = round(fixture_facts["zh_speech.wav"]["duration_s"] * RATE)
    silences: list[tuple[float, float]] = []
    offset = 0
    index = 0
    while offset < len(long_speech):
        name, length = clips[index % 2]
        length = length or zh_len
        for start, end in fixture_facts[name]["silences"]:
            silences.append((offset / RATE + start, offset / RATE + end))
        offset += length
        index += 1
    assert offset == len(long_speech)  # the rebuilt layout matches the fixture
    return merge_touching(silences)


@pytest.mark.parametrize("max_chunk_s", [4.0, 5.0, 6.0])
def test_cuts_in_en_long_fall_in_recorded_silences(
    en_long: np.ndarray, fixture_facts: dict[str, dict[str, Any]], max_chunk_s: float
) -> None:
    silences = [tuple(pair) for pair in fixture_facts["en_long.flac"]["silences"]]
    chunks = plan_chunks(en_long, max_chunk_s=max_chunk_s)
    assert len(chunks) >= 2  # the limit forces cuts
    assert_tiles(chunks, len(en_long), max_chunk_s)
    for chunk in chunks[:-1]:
        assert in_some(chunk.end_s, silences), (chunk, silences)


@pytest.mark.parametrize("max_chunk_s", [10.0, 15.0, 20.0])
def test_cuts_in_long_speech_fall_in_recorded_silences(
    long_speech: np.ndarray, long_speech_silences: list[tuple[float, float]], max_chunk_s: float
) -> None:
    chunks = plan_chunks(long_speech, max_chunk_s=max_chunk_s)
    assert len(chunks) >= math.ceil(len(long_speech) / RATE / max_chunk_s)
    assert_tiles(chunks, len(long_speech), max_chunk_s)
    for chunk in chunks[:-1]:
        assert in_some(chunk.end_s, long_speech_silences), chunk
        assert chunk.duration_s >= max_chunk_s / 2  # the default minimum chunk length


def test_vad_plan_on_en_long_follows_the_speech(
    en_long: np.ndarray, fixture_facts: dict[str, dict[str, Any]]
) -> None:
    speech_s = [(seg["start"], seg["end"]) for seg in fixture_facts["en_long.flac"]["speech"]]
    speech = [(seconds(start), seconds(end)) for start, end in speech_s]
    # 4 s: no two sentences fit together, so each is its own chunk and the silences are skipped.
    assert plan_chunks(en_long, max_chunk_s=4.0, speech=speech) == [Chunk(*pair) for pair in speech]
    # 7 s: the first two sentences (0.5 .. 7.25) fit in one chunk, the third does not join them.
    assert plan_chunks(en_long, max_chunk_s=7.0, speech=speech) == [
        Chunk(speech[0][0], speech[1][1]),
        Chunk(*speech[2]),
    ]
    # 11 s: all three fit (0.5 .. 11.05 is 10.55 s).
    assert plan_chunks(en_long, max_chunk_s=11.0, speech=speech) == [
        Chunk(speech[0][0], speech[2][1])
    ]


def test_cut_goes_to_the_middle_of_a_pause_inside_the_search_region(en_long: np.ndarray) -> None:
    """With 6 s chunks the whole 3.85-4.65 pause lies in the search region [3, 6]."""
    first = plan_chunks(en_long, max_chunk_s=6.0)[0]
    assert first.end_s == pytest.approx(4.25, abs=0.011)


# --- synthetic signals ---------------------------------------------------------------------------


def tone_with_pauses(duration_s: float, pauses_s: list[tuple[float, float]], seed: int = 0):
    """A loud tone (with a little noise) that is exactly silent in the given pauses."""
    rng = np.random.default_rng(seed)
    time = np.arange(seconds(duration_s)) / RATE
    signal = 0.5 * np.sin(2 * np.pi * 220 * time) + 0.01 * rng.standard_normal(len(time))
    for start, end in pauses_s:
        signal[seconds(start) : seconds(end)] = 0.0
    return signal.astype(np.float32)


def test_synthetic_speech_intervals_follow_the_rules() -> None:
    """Merging while it fits, touching intervals, an overlong interval, one at the very end."""
    # The overlong interval 20..45 s has short dips at 27-27.5 s and 35-35.5 s to cut in.
    samples = tone_with_pauses(60.0, [(27.0, 27.5), (35.0, 35.5)])
    speech_s = [
        (1, 3), (3.5, 6), (6.2, 9),  # 8 s from first start to last end: one chunk
        (12, 14), (14, 15),  # touching: one stretch of speech
        (20, 45),  # longer than 10 s: cut at its dips
        (45.5, 47),  # would make 35.25 .. 47 = 11.75 s: a new chunk
        (58, 60),  # ends at the end of the file
    ]  # fmt: skip
    speech = [(seconds(start), seconds(end)) for start, end in speech_s]
    chunks = plan_chunks(samples, max_chunk_s=10.0, speech=speech)
    expected_s = [(1, 9), (12, 15), (20, 27.25), (27.25, 35.25), (35.25, 45), (45.5, 47), (58, 60)]
    assert_bounds_s(chunks, expected_s)
    assert chunks[0] == Chunk(seconds(1), seconds(9))
    assert chunks[-1] == Chunk(seconds(58), len(samples))


def test_last_piece_of_an_overlong_interval_merges_with_the_next() -> None:
    samples = tone_with_pauses(20.0, [(7.0, 7.5)])
    speech = [(0, seconds(14)), (seconds(14.5), seconds(16))]
    chunks = plan_chunks(samples, max_chunk_s=10.0, speech=speech)
    assert_bounds_s(chunks, [(0, 7.25), (7.25, 16)])


def test_touching_intervals_are_one_stretch_cut_at_its_quietest_point() -> None:
    """A VAD that splits long speech itself leaves no silence at the split: do not cut there."""
    samples = tone_with_pauses(12.0, [(8.0, 8.5)])
    chunks = plan_chunks(
        samples, max_chunk_s=10.0, speech=[(0, seconds(6)), (seconds(6), seconds(12))]
    )
    assert_bounds_s(chunks, [(0, 8.25), (8.25, 12)])


def test_equally_long_pauses_tie_to_the_latest() -> None:
    """Fewer, longer chunks: of two identical pauses in the search region, cut in the later."""
    samples = tone_with_pauses(15.0, [(5.5, 6.0), (8.0, 8.5)])
    assert_bounds_s(plan_chunks(samples, max_chunk_s=10.0), [(0, 8.25), (8.25, 15)])


def test_speech_intervals_are_sorted_clipped_and_merged() -> None:
    samples = np.zeros(seconds(10), dtype=np.float32)
    speech = [(seconds(6), seconds(12)), (seconds(-1), seconds(1)), (seconds(0.5), seconds(2))]
    # -> 0..2 and 6..10 (clipped to the file); together 10 s, which fits a 10-s chunk
    assert plan_chunks(samples, max_chunk_s=10.0, speech=speech) == [Chunk(0, seconds(10))]
    assert plan_chunks(samples, max_chunk_s=5.0, speech=speech) == [
        Chunk(0, seconds(2)),
        Chunk(seconds(6), seconds(10)),
    ]
    assert plan_chunks(samples, speech=[(seconds(11), seconds(12)), (5, 5)]) == []


def random_bursts(rng: np.random.Generator, duration_s: float, noise_floor: float):
    """Tone bursts (random pitch, level, length) separated by pauses of random length.

    Returns the signal and its pauses in seconds. Some pauses are shorter than a 100-ms window,
    so they cannot hold a quiet window and the test must not count on them.
    """
    num_samples = seconds(duration_s)
    signal = noise_floor * rng.standard_normal(num_samples)
    pauses: list[tuple[float, float]] = []
    position = 0
    while position < num_samples:
        burst = seconds(rng.uniform(0.2, 6.0))
        time = np.arange(min(burst, num_samples - position)) / RATE
        freq, level, phase = rng.uniform(80, 3000), rng.uniform(0.05, 0.9), rng.uniform(0, 6.3)
        signal[position : position + len(time)] += level * np.sin(2 * np.pi * freq * time + phase)
        position += len(time)
        pause = seconds(rng.uniform(0.03, 1.5))
        if position < num_samples:
            pauses.append((position / RATE, min(position + pause, num_samples) / RATE))
        position += pause
    return signal.astype(np.float32), pauses


@pytest.mark.parametrize("noise_floor", [0.0, 1e-4])
def test_cuts_fall_in_pauses_when_the_search_region_holds_one(noise_floor: float) -> None:
    """Property over random signals: a pause that can hold a 100-ms window on the 10-ms grid
    (overlap >= 120 ms with the search region) means the cut lands in a pause."""
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(60):
        max_chunk_s = float(rng.uniform(2.0, 12.0))
        samples, pauses = random_bursts(rng, rng.uniform(5.0, 60.0), noise_floor)
        chunks = plan_chunks(samples, max_chunk_s=max_chunk_s)
        assert_tiles(chunks, len(samples), max_chunk_s)
        for chunk in chunks[:-1]:
            lo, hi = chunk.start_s + max_chunk_s / 2, chunk.start_s + max_chunk_s
            assert lo <= chunk.end_s <= hi
            usable = [(a, b) for a, b in pauses if min(b, hi) - max(a, lo) >= 0.12]
            if usable:
                checked += 1
                assert in_some(chunk.end_s, pauses), (chunk, usable)
    assert checked > 50  # the property was exercised, not vacuously true


def test_random_vad_plans_keep_the_rules() -> None:
    """Property over random VAD output: all speech covered, limits kept, merging greedy."""
    rng = np.random.default_rng(99)
    for _ in range(100):
        max_chunk_s = float(rng.uniform(1.0, 8.0))
        edges = np.cumsum(rng.integers(1, seconds(5), size=2 * int(rng.integers(1, 15))))
        speech = [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]
        samples = rng.standard_normal(int(edges[-1]) + int(rng.integers(0, 3))).astype(np.float32)
        chunks = plan_chunks(samples, max_chunk_s=max_chunk_s, speech=speech)
        starts = {a for a, _ in speech}
        ends = {b for _, b in speech}
        for before, after in itertools.pairwise(chunks):
            assert before.end <= after.start
            if before.end in ends and after.start in starts:  # a boundary between intervals
                first_end = next(b for a, b in speech if a == after.start)
                assert (first_end - before.start) / RATE > max_chunk_s  # it would not fit
        for chunk in chunks:
            assert chunk.num_samples > 0
            assert chunk.duration_s <= max_chunk_s
            inside = [(a, b) for a, b in speech if a < chunk.start < b or a < chunk.end < b]
            assert all((b - a) / RATE > max_chunk_s for a, b in inside)  # cut: overlong only
        for start, end in speech:  # chunks are disjoint, so this is "covered exactly once"
            assert sum(max(0, min(end, c.end) - max(start, c.start)) for c in chunks) == end - start


# --- options and edge cases ----------------------------------------------------------------------


def test_min_chunk_and_search_length_bound_the_cut() -> None:
    samples = tone_with_pauses(25.0, [(3.0, 3.8), (6.0, 6.5)])
    # Default region [5, 10]: the pause at 6 s.
    assert plan_chunks(samples, max_chunk_s=10.0)[0].end_s == pytest.approx(6.25, abs=0.011)
    # A 2-s search region [8, 10] holds no pause: the cut stays in it.
    assert 8.0 <= plan_chunks(samples, max_chunk_s=10.0, search_s=2.0)[0].end_s <= 10.0
    # A short minimum with a long search lets the cut reach the longer pause at 3.0-3.8 s.
    chunks = plan_chunks(samples, max_chunk_s=10.0, min_chunk_s=1.0, search_s=9.0)
    assert chunks[0].end_s == pytest.approx(3.4, abs=0.011)
    assert plan_chunks(samples, max_chunk_s=10.0, min_chunk_s=7.0)[0].end_s >= 7.0


def test_a_region_too_small_for_a_window_cuts_hard_at_the_limit() -> None:
    samples = tone_with_pauses(5.0, [])
    chunks = plan_chunks(samples, max_chunk_s=2.0, search_s=0.05)
    assert [c.num_samples for c in chunks] == [seconds(2), seconds(2), seconds(1)]


@pytest.mark.parametrize(
    ("max_chunk_s", "max_len"), [(1.15, 18400), (2.0, 32000), (1.00001, 16000)]
)
def test_a_hard_cut_is_as_long_as_the_limit_allows(max_chunk_s: float, max_len: int) -> None:
    """The longest chunk is the most whole samples not lasting longer than the limit."""
    chunks = plan_chunks(tone_with_pauses(5.0, []), max_chunk_s=max_chunk_s, search_s=0.01)
    assert chunks[0].num_samples == max_len
    assert chunks[0].duration_s <= max_chunk_s


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [
        (0, []),
        (1, [Chunk(0, 1)]),
        (seconds(3.7), [Chunk(0, seconds(3.7))]),
        (seconds(4.0), [Chunk(0, seconds(4.0))]),
    ],
)
def test_short_files_are_one_chunk(num_samples: int, expected: list[Chunk]) -> None:
    samples = np.ones(num_samples, dtype=np.float32)
    assert plan_chunks(samples, max_chunk_s=4.0) == expected


def test_an_infinite_limit_means_one_chunk() -> None:
    samples = np.ones(seconds(50), dtype=np.float32)
    assert plan_chunks(samples, max_chunk_s=math.inf) == [Chunk(0, len(samples))]


def test_one_sample_over_the_limit_makes_two_chunks() -> None:
    samples = tone_with_pauses(4.0, [(3.0, 3.4)])
    samples = np.concatenate([samples, samples[:1]])
    chunks = plan_chunks(samples, max_chunk_s=4.0)
    assert len(chunks) == 2
    assert chunks[0].end_s == pytest.approx(3.2, abs=0.011)
    assert_tiles(chunks, len(samples), 4.0)


def test_empty_speech_or_empty_audio_gives_an_empty_plan() -> None:
    assert plan_chunks(np.zeros(seconds(5), dtype=np.float32), speech=[]) == []
    assert plan_chunks(np.zeros(0, dtype=np.float32), speech=[(0, 10)]) == []


def test_multichannel_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="mono"):
        plan_chunks(np.zeros((2, seconds(40)), dtype=np.float32))


def test_int16_samples_are_planned_like_floats(en_long: np.ndarray) -> None:
    as_int16 = np.round(en_long * 32767).astype(np.int16)
    assert plan_chunks(as_int16, max_chunk_s=4.0) == plan_chunks(en_long, max_chunk_s=4.0)


@pytest.mark.parametrize("max_chunk_s", [0.0, 0.99, -5.0, float("nan")])
def test_too_short_a_chunk_limit_is_an_input_error(max_chunk_s: float) -> None:
    with pytest.raises(InputError, match="at least 1 s"):
        plan_chunks(np.zeros(100, dtype=np.float32), max_chunk_s=max_chunk_s)


@pytest.mark.parametrize(("min_chunk_s", "search_s"), [(10.0, None), (-1.0, None), (None, 0.0)])
def test_inconsistent_options_are_input_errors(
    min_chunk_s: float | None, search_s: float | None
) -> None:
    with pytest.raises(InputError):
        plan_chunks(
            np.zeros(100, dtype=np.float32),
            max_chunk_s=10.0,
            min_chunk_s=min_chunk_s,
            search_s=search_s,
        )


def test_chunk_times_are_in_seconds() -> None:
    chunk = Chunk(8000, 40000)
    assert (chunk.start_s, chunk.end_s, chunk.duration_s, chunk.num_samples) == (
        0.5,
        2.5,
        2.0,
        32000,
    )
    assert Chunk(8000, 40000, sample_rate=8000).duration_s == 4.0


def test_chunking_never_imports_torch() -> None:
    result = run_without_torch(
        "import numpy as np\n"
        "from qwenscribe.core.chunking import plan_chunks\n"
        "from qwenscribe.core.repetition import collapse_repetitions, repeating_tail\n"
        "print(len(plan_chunks(np.random.default_rng(0).standard_normal(160000), max_chunk_s=3)))"
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 4
