"""LRC lyrics (.lrc): one line per cue, "[mm:ss.xx]text", the cue's lines joined into one.

LRC has no end times: a line stays until the next one. So that text does not linger over a long
silence, an empty "[mm:ss.xx]" line marks the end of a cue followed by at least `CLEAR_AFTER_S` of
silence, and the end of the last cue. Word-timed ("enhanced") LRC puts each word's start before
it: "[00:01.00]<00:01.00>Hello <00:01.40>world"; cues without aligned words stay plain.
The header names the program ([re:], [ve:]); no cues make a file with the header alone.
"""

from __future__ import annotations

from collections.abc import Iterator

from qwenscribe import __version__
from qwenscribe.subtitles.shaping import Cue
from qwenscribe.subtitles.timecodes import lrc_time, word_ticks
from qwenscribe.subtitles.timing import to_seconds

CLEAR_AFTER_S = 1.0


def lrc_pieces(cues: list[Cue], *, word_timed: bool = False) -> Iterator[str]:
    yield f"[re:qwenscribe]\n[ve:{__version__}]\n"
    for index, cue in enumerate(cues):
        text = _word_timed_text(cue) if word_timed and cue.words else _one_line(cue.text)
        yield f"[{lrc_time(cue.start)}]{text}\n"
        if index + 1 == len(cues) or cues[index + 1].start - cue.end >= CLEAR_AFTER_S:
            yield f"[{lrc_time(cue.end)}]\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _word_timed_text(cue: Cue) -> str:
    tokens = [token for line in cue.tokens for token in line]
    ticks = word_ticks(cue.start, cue.end, [token.start for token in tokens])
    return "".join(
        (" " if index and token.space_before else "")
        + f"<{lrc_time(to_seconds(tick))}>{_one_line(token.text)}"
        for index, (token, tick) in enumerate(zip(tokens, ticks, strict=True))
    )
