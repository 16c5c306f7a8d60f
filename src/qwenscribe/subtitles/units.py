"""The pieces cue shaping moves around: words with their times, whether or not an aligner ran.

A unit is the smallest thing that may start a cue or a line. With aligned words it is one word;
punctuation the aligner returned as a word of its own is folded into its neighbour so that no line
starts with a closing mark or ends with an opening one. Without words (the aligner was not run) a
segment's text is cut the same way: at spaces, and between CJK characters, which may break
anywhere; the segment's time is then spread over the units in proportion to their display width.
That is an approximation (speech is not uniformly fast), good enough to place a cue within a
second or so, and the reason karaoke and word-timed formats need the aligner.

Times are made usable here, once: inside [0, limit], starts never going back, and no word ending
after the next one starts (a bad alignment can give overlapping or backwards words).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from itertools import pairwise

from qwenscribe.core.transcript import Segment, Transcript, Word
from qwenscribe.subtitles.width import (
    CLOSING,
    OPENING,
    breaks_between_chars,
    display_width,
    is_punctuation,
)


@dataclass
class Unit:
    text: str  # as shown, without surrounding spaces
    start: float
    end: float
    space_before: bool  # False: joins the unit before it directly (CJK, folded punctuation)
    words: list[Word] = field(default_factory=list)  # the aligned words it shows; [] from text
    width: int = field(init=False)

    def __post_init__(self) -> None:
        self.width = display_width(self.text)


def units_by_segment(transcript: Transcript) -> list[list[Unit]]:
    """Each segment's units (segments with nothing to show are left out), times made usable."""
    groups: list[list[Unit]] = []
    for segment in transcript.segments:
        units = _units_from_words(segment) if segment.words else _units_from_text(segment)
        if units:
            groups.append(units)
    # A segment's first unit joins the previous segment's last as the two scripts would.
    for previous, current in pairwise(groups):
        current[0].space_before = _spaced(previous[-1].text, current[0].text)
    flat = [unit for units in groups for unit in units]
    _sanitize_times(flat, limit=timeline_end(transcript))
    return groups


def timeline_end(transcript: Transcript) -> float:
    """Where cues must end by: the end of the last segment (the speech, not the trailing
    silence the transcript's duration may include)."""
    ends = [segment.end for segment in transcript.segments if math.isfinite(segment.end)]
    return max(0.0, *ends) if ends else 0.0


def join_units(units: list[Unit]) -> str:
    """The units as one line of text."""
    text = ""
    for index, unit in enumerate(units):
        text += (" " if index and unit.space_before else "") + unit.text
    return text


def may_break_before(unit: Unit) -> bool:
    """A cue or line may start with this unit: it does not begin with closing punctuation."""
    return unit.text[0] not in CLOSING


def _units_from_words(segment: Segment) -> list[Unit]:
    units: list[Unit] = []
    waiting: list[Word] = []  # words to show with the next unit (opening marks, empty words)
    prefix, prefix_spaced = "", False
    cursor = 0  # how far into the segment's text the words have been found
    for word in segment.words:
        shown = " ".join(word.text.split())
        if not shown:
            if units:
                _absorb(units[-1], word, "")
            else:
                waiting.append(word)
            continue
        found, cursor, spaced = _locate(segment.text, cursor, shown)
        if units and _is_trailing_punctuation(shown):
            # Kept with the word before it, and spaced as the text has it ("Vraiment ?").
            _absorb(units[-1], word, (" " if found and spaced else "") + shown)
            continue
        if prefix and found and spaced:
            prefix += " "  # "« Bonjour": the mark stays with its word, the space too
        if not found:
            spaced = bool(units) and _spaced(units[-1].text, shown)
        if _is_leading_punctuation(shown):
            prefix_spaced = prefix_spaced if prefix else spaced
            prefix += shown
            waiting.append(word)
            continue
        words = [*waiting, word]
        units.append(
            Unit(
                prefix + shown,
                min(w.start for w in words),
                max(w.end for w in words),
                prefix_spaced if prefix else spaced,
                words,
            )
        )
        waiting, prefix = [], ""
    if units:
        for word in waiting:  # an opening mark or empty word at the very end
            _absorb(units[-1], word, "")
        units[-1].text += prefix
        units[-1].width = display_width(units[-1].text)
    elif segment.text.strip() or prefix:
        # Only opening marks or empty words: show the segment's text with all of them.
        words = segment.words
        units.append(
            Unit(
                " ".join(segment.text.split()) or prefix,
                min(w.start for w in words),
                max(w.end for w in words),
                False,
                list(words),
            )
        )
    return units


def _absorb(unit: Unit, word: Word, shown: str) -> None:
    unit.text += shown
    unit.width = display_width(unit.text)
    unit.words.append(word)
    unit.end = max(unit.end, word.end)


def _locate(text: str, cursor: int, shown: str) -> tuple[bool, int, bool]:
    """Finds a word in the segment's text after `cursor`, so the text can say whether a space
    precedes it ("我用Python写" has none, "Hello, world" has one). Only punctuation and spaces
    may lie between; otherwise the word is treated as not found and the cursor stays."""
    position = text.find(shown, cursor)
    if position < 0:
        return False, cursor, False
    skipped = text[cursor:position]
    if any(char.isalnum() for char in skipped):
        return False, cursor, False
    return True, position + len(shown), any(char.isspace() for char in skipped)


def _spaced(before: str, after: str) -> bool:
    """Whether two words are written with a space between them, judged by script alone."""
    return not (breaks_between_chars(before[-1]) and breaks_between_chars(after[0]))


def _is_trailing_punctuation(text: str) -> bool:
    """Punctuation that closes the word before it ("," "。" "」"), not a dash or an opener."""
    return (
        all(is_punctuation(char) for char in text)
        and text[0] not in OPENING
        and unicodedata.category(text[0]) in ("Po", "Pe", "Pf")
    )


def _is_leading_punctuation(text: str) -> bool:
    return all(is_punctuation(char) for char in text) and (
        text[0] in OPENING or unicodedata.category(text[0]) in ("Ps", "Pi")
    )


def _units_from_text(segment: Segment) -> list[Unit]:
    pieces: list[tuple[str, bool]] = []  # (text, space before)
    for token_index, token in enumerate(segment.text.split()):
        for piece_index, piece in enumerate(_cut_between_cjk(token)):
            pieces.append((piece, token_index > 0 and piece_index == 0))
    if not pieces:
        return []
    # Spread the segment's time in proportion to the room each piece takes, its space included.
    weights = [max(1, display_width(text) + int(spaced)) for text, spaced in pieces]
    total = sum(weights)
    start, span = segment.start, max(0.0, segment.end - segment.start)
    units: list[Unit] = []
    done = 0
    for (text, spaced), weight in zip(pieces, weights, strict=True):
        unit_start = start + span * done / total
        done += weight
        units.append(Unit(text, unit_start, start + span * done / total, spaced))
    return units


def _cut_between_cjk(token: str) -> list[str]:
    """Cuts a space-free token where a line could break: on either side of a CJK character,
    keeping punctuation with the character it belongs to ("「你好」。" -> "「你", "好」。")."""
    pieces = [token[0]]
    for before, char in pairwise(token):
        breakable = breaks_between_chars(before) or breaks_between_chars(char)
        closes = char not in OPENING and unicodedata.category(char) in ("Po", "Pe", "Pf")
        opens = before in OPENING or unicodedata.category(before) in ("Ps", "Pi")
        if breakable and not closes and not opens:
            pieces.append(char)
        else:
            pieces[-1] += char
    return pieces


def _sanitize_times(units: list[Unit], limit: float) -> None:
    """In place: inside [0, limit], starts in order, each end between its start and the next
    start. A word may keep zero length here; cues get their minimum length later."""
    previous_start = 0.0
    for unit in units:
        start = unit.start if math.isfinite(unit.start) else previous_start
        end = unit.end if math.isfinite(unit.end) else start
        unit.start = min(max(start, previous_start, 0.0), limit)
        unit.end = min(max(end, unit.start), limit)
        previous_start = unit.start
    for unit, following in pairwise(units):
        unit.end = min(unit.end, following.start)
