"""Subtitles again from a saved transcript, without running any model: other formats, other
line lengths or cue limits from the JSON a transcription wrote."""

from __future__ import annotations

import os
from pathlib import Path

from qwenscribe.subtitles.shaping import ShapingOptions
from qwenscribe.subtitles.transcript_json import read_json
from qwenscribe.subtitles.writers import write_subtitles


def rerender(
    json_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    fmt: str | None = None,
    options: ShapingOptions | None = None,
    *,
    karaoke: bool = False,
    word_lrc: bool = False,
) -> Path:
    """Reads a transcript JSON file and writes it as `fmt` (default: from `out_path`'s suffix);
    InputError when the JSON is missing or not a qwenscribe transcript."""
    transcript = read_json(json_path)
    return write_subtitles(transcript, out_path, fmt, options, karaoke=karaoke, word_lrc=word_lrc)
