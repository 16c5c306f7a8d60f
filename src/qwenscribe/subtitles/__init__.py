"""Subtitles from a transcript: cue shaping, the writers (SRT, WebVTT, LRC, ASS, JSON, TXT) and
the transcript's JSON form, from which subtitles can be rendered again without the model."""

from __future__ import annotations

from qwenscribe.subtitles.render import rerender
from qwenscribe.subtitles.shaping import (
    CJK,
    LATIN,
    Cue,
    CueToken,
    ShapingOptions,
    preset_for_language,
    shape_cues,
)
from qwenscribe.subtitles.transcript_json import (
    read_json,
    transcript_from_dict,
    transcript_to_dict,
    write_json,
)
from qwenscribe.subtitles.width import display_width
from qwenscribe.subtitles.writers import FORMATS, render, write_subtitles

__all__ = [
    "CJK",
    "FORMATS",
    "LATIN",
    "Cue",
    "CueToken",
    "ShapingOptions",
    "display_width",
    "preset_for_language",
    "read_json",
    "render",
    "rerender",
    "shape_cues",
    "transcript_from_dict",
    "transcript_to_dict",
    "write_json",
    "write_subtitles",
]
