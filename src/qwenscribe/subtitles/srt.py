"""SubRip (.srt): numbered cues, "00:00:01,000 --> 00:00:02,500", text, a blank line.

A blank line ends a cue, so text lines are never blank; SubRip has no escaping beyond that.
No cues make an empty file.
"""

from __future__ import annotations

from collections.abc import Iterator

from qwenscribe.subtitles.shaping import Cue
from qwenscribe.subtitles.timecodes import srt_time


def srt_pieces(cues: list[Cue]) -> Iterator[str]:
    for number, cue in enumerate(cues, start=1):
        lines = [line for line in cue.lines if line.strip()]
        yield f"{number}\n{srt_time(cue.start)} --> {srt_time(cue.end)}\n"
        yield "".join(f"{line}\n" for line in lines) + "\n"
