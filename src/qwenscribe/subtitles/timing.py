"""Cue times as every format can show them: whole centiseconds, in order, never overlapping.

Centiseconds are the finest step ASS and LRC can write, and SRT and VTT show them exactly, so
cue times are settled in integer ticks once, here. After that no writer rounds a time into an
overlap or a zero-length cue, and the same cue starts at the same instant in every format.
"""

from __future__ import annotations

import math

TICKS_PER_SECOND = 100


def to_ticks(seconds: float) -> int:
    return round(seconds * TICKS_PER_SECOND)


def to_seconds(ticks: int) -> float:
    return ticks / TICKS_PER_SECOND


def fit_times(
    spans: list[tuple[float, float]], limit_s: float, *, min_cue_s: float, min_gap_s: float
) -> list[tuple[int, int]]:
    """Cue (start, end) in ticks for spans that are in order: inside [0, limit] whenever the
    timeline has room for one tick per cue, each at least one tick long, none overlapping,
    `min_gap_s` apart where the earlier cue can give up the time, and lasting at least
    `min_cue_s` where the silence around them allows."""
    limit = max(0, math.floor(limit_s * TICKS_PER_SECOND + 1e-6))  # never rounded past the end
    starts = [min(max(0, to_ticks(start)), limit) for start, _ in spans]
    ends = [min(max(0, to_ticks(end)), limit) for _, end in spans]
    _at_least_one_tick(starts, ends, limit)
    _keep_gaps(starts, ends, to_ticks(min_gap_s))
    _extend_short(starts, ends, limit, to_ticks(min_cue_s), to_ticks(min_gap_s))
    return list(zip(starts, ends, strict=True))


def _at_least_one_tick(starts: list[int], ends: list[int], limit: int) -> None:
    """Pushes cues forward until none overlaps and each lasts a tick, then pulls them back
    under the limit; degenerate words (all at one instant) still get distinct cues."""
    _push_forward(starts, ends)
    if not ends or ends[-1] <= limit:
        return
    bound = limit
    for index in range(len(starts) - 1, -1, -1):
        ends[index] = min(ends[index], bound)
        starts[index] = min(starts[index], ends[index] - 1)
        bound = starts[index]
    if starts[0] < 0:  # more cues than ticks before the limit: let the last ones run past it
        starts[0] = 0
        _push_forward(starts, ends)


def _push_forward(starts: list[int], ends: list[int]) -> None:
    previous_end = 0
    for index in range(len(starts)):
        starts[index] = max(starts[index], previous_end)
        ends[index] = max(ends[index], starts[index] + 1)
        previous_end = ends[index]


def _keep_gaps(starts: list[int], ends: list[int], gap: int) -> None:
    """Leaves `gap` ticks between cues by ending the earlier one sooner, as far as it keeps a
    tick of its own: the next cue's start is when its speech starts, and stays."""
    for index in range(1, len(starts)):
        if starts[index] - ends[index - 1] < gap:
            trimmed = max(starts[index] - gap, starts[index - 1] + 1)
            ends[index - 1] = min(ends[index - 1], trimmed)


def _extend_short(starts: list[int], ends: list[int], limit: int, shortest: int, gap: int) -> None:
    """Gives a cue shorter than `shortest` time from the silence after it, then before it,
    keeping `gap` to its neighbours and staying inside [0, limit]."""
    count = len(starts)
    for index in range(count):
        if ends[index] - starts[index] >= shortest:
            continue
        room_after = starts[index + 1] - gap if index + 1 < count else limit
        ends[index] = max(ends[index], min(starts[index] + shortest, room_after))
        if ends[index] - starts[index] >= shortest:
            continue
        room_before = ends[index - 1] + gap if index else 0
        starts[index] = min(starts[index], max(ends[index] - shortest, room_before))
