"""WebVTT (.vtt): the "WEBVTT" header, then cues like SubRip's with a full stop before the
milliseconds. Cue text is HTML-like, so "&", "<" and ">" are written as entities; that also keeps
a "-->" in the text from reading as a timing line. No cues make a file with the header alone.
"""

from __future__ import annotations

from collections.abc import Iterator

from qwenscribe.subtitles.shaping import Cue
from qwenscribe.subtitles.timecodes import vtt_time

HEADER = "WEBVTT\n"


def escape_vtt(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_pieces(cues: list[Cue]) -> Iterator[str]:
    yield HEADER
    for number, cue in enumerate(cues, start=1):
        lines = [escape_vtt(line) for line in cue.lines if line.strip()]
        yield f"\n{number}\n{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n"
        yield "".join(f"{line}\n" for line in lines)
