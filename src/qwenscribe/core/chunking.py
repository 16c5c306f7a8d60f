"""The long-audio chunk plan: where to cut a file so that every piece fits the model.

Qwen3-ASR transcribes one chunk per prompt, and accuracy and memory both suffer on very long
prompts, so long audio is cut into chunks of at most `max_chunk_s` seconds. A cut through a word
damages that word in both chunks, so cuts are placed in silences. The rules:

* Chunks never exceed `max_chunk_s`, never overlap, and come in file order. Their sample indices
  are on the file's timeline, so a chunk's output times only need its `start` added.
* Without VAD (`speech=None`) the chunks tile the whole file, `[0, len)`, with no gap or overlap.
  While the remainder is longer than `max_chunk_s`, the next cut goes at the centre of the
  quietest 100-ms window (lowest energy) whose whole extent lies in a search region that ends at
  `start + max_chunk_s` and begins at `start + max(min_chunk_s, max_chunk_s - search_s)`.
  The official qwen-asr package cuts its long inputs the same way, near its limit.
* With VAD (`speech`, `[start, end)` sample intervals) only speech is chunked, so long silences
  cost nothing. Consecutive intervals are merged into one chunk while the chunk, from its first
  interval's start to its last interval's end, stays within `max_chunk_s`; so the boundary
  between two chunks lies in the silence between two intervals. An interval longer than
  `max_chunk_s` is cut by the quietest-window rule, and its last piece may merge with the
  intervals after it. Touching or overlapping intervals are merged first: there is no silence
  between them to cut in, so they are one stretch of speech.

Defaults, and why:

* `min_chunk_s = max_chunk_s / 2`: a cut never makes a chunk shorter than half the maximum, so
  a file needs at most about twice the minimum number of chunks, and no chunk is so short that
  the model loses context (each chunk is also a new prompt with its fixed overhead).
* `search_s = max_chunk_s / 2`: the search region is then the second half of the allowed span.
  Natural speech pauses every few seconds, so a region that wide nearly always holds a real
  pause, while one hugging the limit (a second or two) often does not and would force a cut
  in the middle of speech.

The energy of every 100-ms window is computed once per file, on a 10-ms grid, from a cumulative
sum of squares, so each cut only looks up a slice of it. Ties (digital silence is exactly zero)
go to the longest run of equally quiet windows, the latest if several are as long, and the cut
is placed at that run's centre: mid-pause rather than hugging the next word, and as late as the
quietest choice allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qwenscribe.errors import InputError

SAMPLE_RATE = 16000
WINDOW_S = 0.1
"""The quiet window a cut is centred in (as in the official implementation)."""
HOP_S = 0.01
"""Spacing of the candidate windows: cut points are placed to within 10 ms."""
MIN_MAX_CHUNK_S = 1.0
NO_LIMIT_S = 1e9
"""Longer than any recording: what an infinite `max_chunk_s` is taken to be."""


@dataclass(frozen=True)
class Chunk:
    """A `[start, end)` stretch of samples on the file's timeline."""

    start: int
    end: int
    sample_rate: int = SAMPLE_RATE

    @property
    def num_samples(self) -> int:
        return self.end - self.start

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def plan_chunks(
    samples: np.ndarray,
    *,
    max_chunk_s: float = 30.0,
    speech: Sequence[tuple[int, int]] | None = None,
    sample_rate: int = SAMPLE_RATE,
    min_chunk_s: float | None = None,
    search_s: float | None = None,
) -> list[Chunk]:
    """Cut `samples` into chunks of at most `max_chunk_s`, in silences (see the module rules).

    `speech` is the VAD's `[start, end)` sample intervals; None means no VAD (tile the whole
    file), an empty list means no speech (no chunks). `min_chunk_s` and `search_s` default to
    half of `max_chunk_s`.
    """
    limits = _Limits.from_seconds(max_chunk_s, min_chunk_s, search_s, sample_rate)
    if np.ndim(samples) != 1:
        raise ValueError(f"plan_chunks needs mono samples (1-D), not shape {np.shape(samples)}")
    num_samples = len(samples)
    if num_samples == 0:
        return []
    spans = [(0, num_samples)] if speech is None else _normalise_speech(speech, num_samples)
    if not spans:
        return []
    energy = _LazyWindowEnergy(samples, sample_rate)
    return _group_spans(spans, limits, energy, sample_rate)


@dataclass(frozen=True)
class _Limits:
    """The chunk limits in samples."""

    max_len: int
    min_len: int
    search_len: int

    @classmethod
    def from_seconds(
        cls, max_chunk_s: float, min_chunk_s: float | None, search_s: float | None, rate: int
    ) -> _Limits:
        if not max_chunk_s >= MIN_MAX_CHUNK_S:  # also rejects NaN
            raise InputError(
                f"The chunk length must be at least {MIN_MAX_CHUNK_S:g} s, not {max_chunk_s!r}.",
                "Pass a longer maximum chunk length (the default is 30 s).",
            )
        max_chunk_s = min(max_chunk_s, NO_LIMIT_S)  # float("inf") means one chunk per span
        min_chunk_s = max_chunk_s / 2 if min_chunk_s is None else min_chunk_s
        search_s = max_chunk_s / 2 if search_s is None else search_s
        if not 0 <= min_chunk_s < max_chunk_s:
            raise InputError(
                f"The minimum chunk length ({min_chunk_s!r} s) must be at least 0 and shorter "
                f"than the maximum ({max_chunk_s:g} s)."
            )
        if not search_s > 0:
            raise InputError(f"The cut search region must be longer than 0 s, not {search_s!r}.")
        return cls(
            max_len=_samples_within(max_chunk_s, rate),
            min_len=round(min_chunk_s * rate),
            search_len=round(search_s * rate),
        )

    def search_region(self, start: int) -> tuple[int, int]:
        """Where the cut after a chunk starting at `start` may go, as `[lo, hi]`."""
        return start + max(self.min_len, self.max_len - self.search_len), start + self.max_len


def _samples_within(duration_s: float, rate: int) -> int:
    """The most samples that last no longer than `duration_s` (so chunks never exceed it).

    `math.floor` alone can land one short: 1.15 * 16000 is 18399.999..., yet 18400 samples
    last exactly 1.15 s in floating point.
    """
    count = math.floor(duration_s * rate)
    return count + 1 if (count + 1) / rate <= duration_s else count


def _normalise_speech(speech: Sequence[tuple[int, int]], num_samples: int) -> list[tuple[int, int]]:
    """Sorted, clipped to the file, empty ones dropped, touching or overlapping ones merged."""
    clipped = sorted(
        (max(0, int(start)), min(num_samples, int(end)))
        for start, end in speech
        if min(num_samples, int(end)) > max(0, int(start))
    )
    merged: list[tuple[int, int]] = []
    for start, end in clipped:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _group_spans(
    spans: list[tuple[int, int]], limits: _Limits, energy: _LazyWindowEnergy, rate: int
) -> list[Chunk]:
    """Merge consecutive spans greedily into chunks; cut the spans too long for one chunk."""
    chunks: list[Chunk] = []
    open_start: int | None = None  # the chunk being grown: spans from open_start to open_end
    open_end = 0
    for start, end in spans:
        if open_start is not None and end - open_start <= limits.max_len:
            open_end = end
            continue
        if open_start is not None:
            chunks.append(Chunk(open_start, open_end, rate))
        pieces = _cut_span(start, end, limits, energy)
        chunks.extend(Chunk(a, b, rate) for a, b in pieces[:-1])
        open_start, open_end = pieces[-1]
    if open_start is not None:
        chunks.append(Chunk(open_start, open_end, rate))
    return chunks


def _cut_span(
    start: int, end: int, limits: _Limits, energy: _LazyWindowEnergy
) -> list[tuple[int, int]]:
    """Tile `[start, end)` with pieces of at most max_len, each cut at the quietest window."""
    pieces = []
    while end - start > limits.max_len:
        cut = energy.quietest_cut(*limits.search_region(start))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


class _LazyWindowEnergy:
    """The energy of every 100-ms window of a file, on a 10-ms grid, computed on first use.

    Most files (and most VAD plans) need no cut at all, so nothing is computed until one does.
    Energies are summed per 10-ms hop first (one float per hop, no full-size float64 copy of the
    file), then a cumulative sum over hops gives each window's energy as one subtraction.
    """

    def __init__(self, samples: np.ndarray, sample_rate: int) -> None:
        self._samples = samples
        self.hop = max(1, round(HOP_S * sample_rate))
        self.hops_per_window = max(1, round(WINDOW_S / HOP_S))
        self.window = self.hop * self.hops_per_window
        self._energies: np.ndarray | None = None

    @property
    def energies(self) -> np.ndarray:
        """`energies[h]`: sum of squares of the window starting at sample `h * hop`."""
        if self._energies is None:
            self._energies = self._compute()
        return self._energies

    def _compute(self) -> np.ndarray:
        num_hops = len(self._samples) // self.hop
        frames = np.asarray(self._samples[: num_hops * self.hop], dtype=np.float32)
        frames = frames.reshape(num_hops, self.hop)
        hop_energy = np.einsum("ij,ij->i", frames, frames).astype(np.float64)
        cumulative = np.concatenate(([0.0], np.cumsum(hop_energy)))
        windows = cumulative[self.hops_per_window :] - cumulative[: -self.hops_per_window]
        return np.maximum(windows, 0.0)  # rounding in a long cumsum must not go negative

    def quietest_cut(self, lo: int, hi: int) -> int:
        """The cut point in `[lo, hi]`: centre of the quietest window lying wholly inside.

        Falls back to `hi` (a hard cut at the limit) when no whole window fits the region.
        """
        first = -(-lo // self.hop)  # the first window starting at or after lo
        last = min((hi - self.window) // self.hop, len(self.energies) - 1)
        if last < first:
            return hi
        run_start, run_end = _longest_quietest_run(self.energies[first : last + 1])
        # The centre of the run's middle window: (first + (run_start + run_end) / 2) hops in,
        # plus half a window; computed in whole samples with one division.
        twice_hops = 2 * first + run_start + run_end
        return (twice_hops * self.hop) // 2 + self.window // 2


def _longest_quietest_run(energies: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest run of windows at the minimum energy (latest wins)."""
    quietest = np.concatenate(([False], energies == energies.min(), [False]))
    edges = np.flatnonzero(np.diff(quietest.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]  # each run is [start, end) in window indices
    lengths = ends - starts
    best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
    return int(starts[best]), int(ends[best]) - 1
