"""Every output format behind one call: `render` to a string, `write_subtitles` to a file.

Each format's module yields its text piece by piece; `write_subtitles` streams the pieces into a
temporary file and renames it into place only when all went well (see atomic.py), so a failure
half-way leaves no partial file behind. All files are UTF-8 without a byte-order mark, with "\\n"
line ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from qwenscribe.core.transcript import Transcript
from qwenscribe.errors import InputError
from qwenscribe.subtitles.ass import ass_pieces, style_for_language
from qwenscribe.subtitles.atomic import write_text_atomically
from qwenscribe.subtitles.lrc import lrc_pieces
from qwenscribe.subtitles.shaping import ShapingOptions, preset_for_language, shape_cues
from qwenscribe.subtitles.srt import srt_pieces
from qwenscribe.subtitles.transcript_json import transcript_to_json
from qwenscribe.subtitles.txt import txt_pieces
from qwenscribe.subtitles.vtt import vtt_pieces

FORMATS = ("srt", "vtt", "lrc", "ass", "json", "txt")


def normalize_format(fmt: str) -> str:
    """A format name from a name or file suffix in any case ("SRT", ".vtt"); InputError if
    qwenscribe does not write it."""
    name = fmt.strip().lower().lstrip(".")
    if name == "webvtt":
        name = "vtt"
    if name not in FORMATS:
        raise InputError(
            f"qwenscribe cannot write subtitles as {fmt!r}.",
            f"Use one of: {', '.join(FORMATS)}.",
        )
    return name


def render_pieces(
    transcript: Transcript,
    fmt: str,
    options: ShapingOptions | None = None,
    *,
    karaoke: bool = False,
    word_lrc: bool = False,
) -> Iterator[str]:
    """The file's text in pieces. `options` default to the preset for the transcript's
    language; `karaoke` applies to ASS and `word_lrc` to LRC, both only where words are
    aligned; JSON and TXT take no shaping."""
    fmt = normalize_format(fmt)
    if fmt == "json":
        return iter([transcript_to_json(transcript)])
    if fmt == "txt":
        return txt_pieces(transcript)
    cues = shape_cues(transcript, options or preset_for_language(transcript.language))
    if fmt == "srt":
        return srt_pieces(cues)
    if fmt == "vtt":
        return vtt_pieces(cues)
    if fmt == "lrc":
        return lrc_pieces(cues, word_timed=word_lrc)
    style = style_for_language(transcript.language_code)
    return ass_pieces(cues, title=transcript.source, style=style, karaoke=karaoke)


def render(
    transcript: Transcript,
    fmt: str,
    options: ShapingOptions | None = None,
    *,
    karaoke: bool = False,
    word_lrc: bool = False,
) -> str:
    """The transcript as the text of a `fmt` file (one of FORMATS)."""
    return "".join(render_pieces(transcript, fmt, options, karaoke=karaoke, word_lrc=word_lrc))


def write_subtitles(
    transcript: Transcript,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    options: ShapingOptions | None = None,
    *,
    karaoke: bool = False,
    word_lrc: bool = False,
) -> Path:
    """Writes the transcript as `fmt` (default: from the path's suffix) atomically; returns the
    path. An earlier file at `path` is replaced only once the new one is complete."""
    path = Path(path)
    if fmt is None:
        if not path.suffix:
            raise InputError(
                f"Cannot tell which format to write {path} in: it has no suffix.",
                f"Name the format, or end the file name in one of: {', '.join(FORMATS)}.",
            )
        fmt = path.suffix
    pieces = render_pieces(transcript, fmt, options, karaoke=karaoke, word_lrc=word_lrc)
    return write_text_atomically(path, pieces)
