"""Where a cue's text breaks into lines.

Lines are balanced rather than filled greedily: "The quick brown fox / jumps over the lazy dog."
reads better than a full first line over a stub. Among the layouts with the fewest lines, the
one whose longest line is shortest wins; ties go to the longer last line (the bottom-heavy
shape subtitlers prefer, as it leaves the upper picture freer). Two lines may be a little less
even so as to break after a comma or full stop, where the reader pauses anyway. Breaks fall only
between units, so a word is never cut, CJK text breaks between characters, and no line starts
with closing punctuation. A unit wider than a line gets a line of its own rather than being cut.
"""

from __future__ import annotations

from itertools import accumulate, pairwise

from qwenscribe.subtitles.units import Unit, may_break_before
from qwenscribe.subtitles.width import ends_clause, ends_sentence


class LineWidths:
    """Columns of any run of units on one line, in constant time."""

    def __init__(self, units: list[Unit]) -> None:
        self.gaps = [int(index > 0 and unit.space_before) for index, unit in enumerate(units)]
        sizes = (gap + unit.width for gap, unit in zip(self.gaps, units, strict=True))
        self.ends = [0, *accumulate(sizes)]

    def line(self, first: int, stop: int) -> int:
        """Width of units[first:stop] as one line (the space before the first is not shown)."""
        return self.ends[stop] - self.ends[first] - self.gaps[first]


def break_lines(units: list[Unit], max_width: int, max_lines: int) -> list[list[Unit]] | None:
    """The units as balanced lines, or None when they need more than `max_lines` lines."""
    if not units:
        return []
    widths = LineWidths(units)
    starts = _pack_from_end(units, widths, max_width, max_lines)
    if starts is None:
        return None
    # The fewest lines are known; now the narrowest width that still needs no more of them.
    low, high = 1, max_width
    while low < high:
        middle = (low + high) // 2
        if _pack_from_end(units, widths, middle, len(starts)) is None:
            low = middle + 1
        else:
            high = middle
    starts = _pack_from_end(units, widths, low, len(starts)) or starts
    if len(starts) == 2:
        starts = [0, _at_punctuation(units, widths, starts[1], max_width)]
    bounds = [*starts, len(units)]
    return [units[first:stop] for first, stop in pairwise(bounds)]


def _at_punctuation(units: list[Unit], widths: LineWidths, balanced: int, max_width: int) -> int:
    """Where to start the second of two lines: after punctuation when that costs the longer line
    at most a quarter of `max_width` more than the balanced break, else the balanced break."""
    best_width = max(widths.line(0, balanced), widths.line(balanced, len(units)))
    allowance = best_width + max_width // 4
    chosen, chosen_width = balanced, None
    for index in range(1, len(units)):
        longer = max(widths.line(0, index), widths.line(index, len(units)))
        if (
            longer <= min(allowance, max_width)
            and may_break_before(units[index])
            and (ends_clause(units[index - 1].text) or ends_sentence(units[index - 1].text))
            and (chosen_width is None or longer < chosen_width)
        ):
            chosen, chosen_width = index, longer
    return chosen


def _pack_from_end(
    units: list[Unit], widths: LineWidths, limit: int, max_lines: int
) -> list[int] | None:
    """Start index of each line when lines are filled from the last one backwards, each as long
    as `limit` allows; None when that takes more than `max_lines` lines. Filling from the end
    gives the fewest lines possible and, with the narrowest workable limit, a bottom-heavy
    layout."""
    starts: list[int] = []
    stop = len(units)
    while stop > 0:
        if len(starts) == max_lines:
            return None
        first = None
        for candidate in range(stop - 1, -1, -1):
            fits = widths.line(candidate, stop) <= limit or candidate == stop - 1
            if not fits:
                break
            if candidate == 0 or may_break_before(units[candidate]):
                first = candidate
        if first is None:
            return None  # closing punctuation glued to a word makes a run wider than the limit
        starts.append(first)
        stop = first
    return starts[::-1]
