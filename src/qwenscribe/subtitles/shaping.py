"""Cues from a transcript: which words are shown together, on which lines, and when.

Where a cue ends is decided in this order, each rule used only as far as it is needed:
1. at the end of a sentence (. ! ? 。！？… and the like), always;
2. at a pause: a silence longer than `pause_split_s` between two words, always;
3. at the end of a clause (, ; : ，、；：) when the text is still too long or too wide: the
   clause end nearest the middle, so the halves are alike;
4. by width and duration, into as few even pieces as fit.
Segments (the engine's chunks, cut in silences) always end a cue. Cues shorter than
`merge_short_below_s` are then joined to a neighbour when the joint cue still fits and no pause
separates them. Times are settled last (see timing.py): in order, never overlapping, at least
one tick long, lengthened into silence up to `min_cue_s`, inside [0, end of the last segment].

Without aligned words the same rules cut the segment's text, and times are spread over the text
in proportion to its width: an approximation (see units.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import pairwise

from qwenscribe.core.transcript import Transcript, Word
from qwenscribe.model.tokens import LANGUAGES
from qwenscribe.subtitles.line_breaking import LineWidths, break_lines
from qwenscribe.subtitles.timing import fit_times, to_seconds
from qwenscribe.subtitles.units import (
    Unit,
    join_units,
    may_break_before,
    timeline_end,
    units_by_segment,
)
from qwenscribe.subtitles.width import ends_clause, ends_sentence


@dataclass(frozen=True)
class ShapingOptions:
    """How cues are cut and laid out. Widths are display columns: a CJK character counts 2."""

    max_line_width: int = 42
    max_lines: int = 2
    max_cue_s: float = 7.0  # longer than this is hard to follow and hides the picture
    min_cue_s: float = 0.7  # shorter cannot be read; extended into silence when there is some
    min_gap_s: float = 0.08  # two frames at 25 fps, so a change of cue is visible
    pause_split_s: float = 0.6  # a silence this long between words starts a new cue
    merge_short_below_s: float = 0.5  # a cue this short is joined to a neighbour if it fits

    def __post_init__(self) -> None:
        if self.max_line_width < 1 or self.max_lines < 1:
            raise ValueError("max_line_width and max_lines must be at least 1")
        if not self.max_cue_s > 0 or self.min_cue_s < 0 or self.min_gap_s < 0:
            raise ValueError("max_cue_s must be positive, min_cue_s and min_gap_s not negative")
        if self.min_cue_s > self.max_cue_s:
            raise ValueError(
                f"the shortest cue ({self.min_cue_s:g} s) is longer than the longest "
                f"({self.max_cue_s:g} s)"
            )


# 42 columns by 2 lines: the common limit of broadcast and streaming style guides for Latin
# scripts, which a 1080p frame shows at a readable size.
LATIN = ShapingOptions(max_line_width=42, max_lines=2)
# 16 full-width characters per line: the limit the same guides give for Chinese and Korean (and
# close to Japanese's 13). Ideographs carry about a word each, so 16 of them hold as much as 42
# Latin columns, and a line this short is taken in at a glance.
CJK = replace(LATIN, max_line_width=32)

_CJK_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})
_CODES_BY_NAME = {name.lower(): code for code, name in LANGUAGES.items()}


def preset_for_language(language: str | None) -> ShapingOptions:
    """CJK for Chinese, Japanese, Korean and Cantonese; LATIN for anything else or unknown.
    Takes an ISO code ("zh", "zh-TW", "yue"), or a name as the model prints it ("Chinese")."""
    if not language:
        return LATIN
    key = language.strip().lower()
    code = _CODES_BY_NAME.get(key, key.replace("_", "-").split("-")[0])
    return CJK if code in _CJK_LANGUAGES or key == "zh-yue" else LATIN


@dataclass
class CueToken:
    """One unit of a cue line with its time, for word-timed formats (karaoke, enhanced LRC)."""

    text: str
    start: float
    end: float
    space_before: bool  # shown after a space (at a line start: when the lines are joined)


@dataclass
class Cue:
    """One subtitle: its lines as shown, and the aligned words it shows ([] without aligner)."""

    start: float
    end: float
    lines: list[str]
    words: list[Word] = field(default_factory=list)
    tokens: list[list[CueToken]] = field(default_factory=list)  # per line

    @property
    def text(self) -> str:
        """The lines as one line of text (a space between them, none between CJK ones)."""
        if not self.tokens:
            return " ".join(self.lines)
        return "".join(
            (" " if index and tokens[0].space_before else "") + line
            for index, (line, tokens) in enumerate(zip(self.lines, self.tokens, strict=True))
        )


def shape_cues(transcript: Transcript, options: ShapingOptions | None = None) -> list[Cue]:
    """The transcript's subtitle cues; `options` default to the preset for its language."""
    options = options or preset_for_language(transcript.language)
    pieces: list[list[Unit]] = []
    for units in units_by_segment(transcript):
        for sentence in _split_after(units, lambda unit, _next: ends_sentence(unit.text)):
            for phrase in _split_after(sentence, _pause_between(options.pause_split_s)):
                pieces.extend(_fit(phrase, options))
    pieces = _merge_short(pieces, options)
    ticks = fit_times(
        [(piece[0].start, piece[-1].end) for piece in pieces],
        timeline_end(transcript),
        min_cue_s=options.min_cue_s,
        min_gap_s=options.min_gap_s,
    )
    return [
        _make_cue(piece, to_seconds(start), to_seconds(end), options)
        for piece, (start, end) in zip(pieces, ticks, strict=True)
    ]


def _split_after(units: list[Unit], ends_here: Callable[[Unit, Unit], bool]) -> list[list[Unit]]:
    """Cuts after every unit for which `ends_here(unit, next_unit)` holds."""
    pieces: list[list[Unit]] = [units[:1]]
    for unit, following in pairwise(units):
        if may_break_before(following) and ends_here(unit, following):
            pieces.append([])
        pieces[-1].append(following)
    return pieces


def _pause_between(threshold: float) -> Callable[[Unit, Unit], bool]:
    return lambda unit, following: following.start - unit.end > threshold


def _duration(units: list[Unit]) -> float:
    return units[-1].end - units[0].start


def _fits(units: list[Unit], options: ShapingOptions) -> bool:
    """One cue can show these units: within the line limits, and not too long (a single unit
    always fits; nothing smaller can be made of it)."""
    if len(units) == 1:
        return True
    if _duration(units) > options.max_cue_s:
        return False
    return break_lines(units, options.max_line_width, options.max_lines) is not None


def _fit(units: list[Unit], options: ShapingOptions) -> list[list[Unit]]:
    """Cuts a phrase into pieces that fit: at clause ends first, then evenly."""
    if _fits(units, options):
        return [units]
    # A clause end is used when both sides keep at least a quarter line, so that "So," or
    # "是，" does not become a cue of its own.
    smallest = options.max_line_width // 4
    widths = LineWidths(units)
    count = len(units)
    candidates = [
        index
        for index in range(1, count)
        if ends_clause(units[index - 1].text)
        and may_break_before(units[index])
        and min(widths.line(0, index), widths.line(index, count)) >= smallest
    ]
    if candidates:
        middle = widths.line(0, count) / 2
        index = min(candidates, key=lambda i: abs(widths.line(0, i) - middle))
        return _fit(units[:index], options) + _fit(units[index:], options)
    return _split_evenly(units, options)


def _split_evenly(units: list[Unit], options: ShapingOptions) -> list[list[Unit]]:
    """Cuts into as few pieces as width and duration require, at even positions (by width, or
    by time when duration is what forces the cut); pieces that still do not fit are cut again."""
    allowed = [index for index in range(1, len(units)) if may_break_before(units[index])]
    if not allowed:
        return [units]
    widths = LineWidths(units)
    total_width = widths.line(0, len(units))
    by_width = math.ceil(total_width / (options.max_line_width * options.max_lines))
    by_time = math.ceil(_duration(units) / options.max_cue_s)
    count = min(max(2, by_width, by_time), len(allowed) + 1)
    if by_time > by_width:
        position = {index: units[index].start - units[0].start for index in allowed}
        total: float = _duration(units)
    else:
        position = {index: widths.line(0, index) for index in allowed}
        total = total_width
    cuts: list[int] = []
    for step in range(1, count):
        target = total * step / count
        later = (index for index in allowed if not cuts or index > cuts[-1])
        best = min(later, key=lambda i: abs(position[i] - target), default=None)
        if best is None:
            break
        cuts.append(best)
    bounds = [0, *cuts, len(units)]
    pieces: list[list[Unit]] = []
    for first, stop in pairwise(bounds):
        piece = units[first:stop]
        pieces.extend(_fit(piece, options) if len(piece) < len(units) else [piece])
    return pieces


def _merge_short(pieces: list[list[Unit]], options: ShapingOptions) -> list[list[Unit]]:
    """Joins each cue shorter than `merge_short_below_s` to the nearer neighbour (in time) with
    which it still fits, unless a pause separates them."""
    pieces = list(pieces)
    index = 0
    while index < len(pieces):
        if _duration(pieces[index]) >= options.merge_short_below_s:
            index += 1
            continue
        neighbours = []  # (silence between, index of the first of the two)
        if index > 0:
            neighbours.append((pieces[index][0].start - pieces[index - 1][-1].end, index - 1))
        if index + 1 < len(pieces):
            neighbours.append((pieces[index + 1][0].start - pieces[index][-1].end, index))
        for silence, first in sorted(neighbours):
            joined = pieces[first] + pieces[first + 1]
            if silence <= options.pause_split_s and _fits(joined, options):
                pieces[first : first + 2] = [joined]
                index = first
                break
        else:
            index += 1
    return pieces


def _make_cue(units: list[Unit], start: float, end: float, options: ShapingOptions) -> Cue:
    lines = break_lines(units, options.max_line_width, options.max_lines) or [units]
    return Cue(
        start=start,
        end=end,
        lines=[join_units(line) for line in lines],
        words=[word for unit in units for word in unit.words],
        tokens=[
            [CueToken(unit.text, unit.start, unit.end, unit.space_before) for unit in line]
            for line in lines
        ],
    )
