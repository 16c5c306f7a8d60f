"""Advanced SubStation Alpha (.ass): a script header, one style, and a Dialogue event per cue.

The canvas is 1920x1080 (PlayResX/Y), so sizes and margins read as pixels of a 1080p frame;
renderers scale them to the video. Line breaks are qwenscribe's own: the cue's lines are joined
with \\N and WrapStyle 2 stops the renderer from wrapping them again.

ASS has no escape for text: "{" opens an override block and a backslash starts a tag, so those
three characters are written as their full-width look-alikes (｛ ｝ ＼). Karaoke events put
{\\kNN} (centiseconds) before each word: the word switches from the style's secondary colour
(grey, not yet spoken) to its primary colour (white) when it is spoken. Cues without aligned
words stay plain. No cues make a file with the header and an empty [Events] section.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from qwenscribe import __version__
from qwenscribe.subtitles.shaping import Cue
from qwenscribe.subtitles.timecodes import ass_time, word_ticks
from qwenscribe.subtitles.timing import to_ticks

# Noto Sans CJK covers Latin too; elsewhere Arial is everywhere. A renderer without the font
# falls back to one that has the glyphs.
_CJK_FONTS = {
    "zh": "Noto Sans CJK SC",
    "yue": "Noto Sans CJK HK",
    "ja": "Noto Sans CJK JP",
    "ko": "Noto Sans CJK KR",
}


@dataclass(frozen=True)
class AssStyle:
    """The one style every event uses. Colours are &HAABBGGRR (alpha 00 is opaque)."""

    font: str = "Arial"
    size: int = 60  # pixels of 1080: about 42 Latin columns fill two thirds of the width
    primary: str = "&H00FFFFFF"  # text, and karaoke words already spoken
    secondary: str = "&H00A0A0A0"  # karaoke words not yet spoken
    outline_colour: str = "&H00000000"
    back: str = "&H80000000"  # the shadow, half transparent
    outline: float = 3.0
    shadow: float = 1.0
    margin_h: int = 80
    margin_v: int = 50


def style_for_language(code: str | None) -> AssStyle:
    return AssStyle(font=_CJK_FONTS[code]) if code in _CJK_FONTS else AssStyle()


def escape_ass(text: str) -> str:
    return text.replace("\\", "＼").replace("{", "｛").replace("}", "｝")


def ass_pieces(
    cues: list[Cue], *, title: str = "", style: AssStyle | None = None, karaoke: bool = False
) -> Iterator[str]:
    yield _header(title, style or AssStyle())
    for cue in cues:
        text = _karaoke_text(cue) if karaoke and cue.words else _plain_text(cue)
        yield f"Dialogue: 0,{ass_time(cue.start)},{ass_time(cue.end)},Default,,0,0,0,,{text}\n"


def _header(title: str, style: AssStyle) -> str:
    name = " ".join(PurePath(title).name.split()) if title else ""
    return (
        "[Script Info]\n"
        f"; Written by qwenscribe {__version__}\n"
        f"Title: {name}\n"
        "ScriptType: v4.00+\n"
        "WrapStyle: 2\n"
        "ScaledBorderAndShadow: yes\n"
        "YCbCr Matrix: None\n"
        "PlayResX: 1920\n"
        "PlayResY: 1080\n"
        "\n"
        "[V4+ Styles]\n"
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
        f"Style: Default,{style.font},{style.size},{style.primary},{style.secondary},"
        f"{style.outline_colour},{style.back},0,0,0,0,100,100,0,0,1,{style.outline:g},"
        f"{style.shadow:g},2,{style.margin_h},{style.margin_h},{style.margin_v},1\n"
        "\n"
        "[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
    )


def _plain_text(cue: Cue) -> str:
    return "\\N".join(escape_ass(line) for line in cue.lines)


def _karaoke_text(cue: Cue) -> str:
    tokens = [token for line in cue.tokens for token in line]
    ticks = word_ticks(cue.start, cue.end, [token.start for token in tokens])
    boundaries = [*ticks, to_ticks(cue.end)]
    lead = ticks[0] - to_ticks(cue.start) if ticks else 0
    text = f"{{\\k{lead}}}" if lead else ""
    position = 0
    for line_index, line in enumerate(cue.tokens):
        if line_index:
            text += "\\N"
        for token_index, token in enumerate(line):
            length = boundaries[position + 1] - boundaries[position]
            space = " " if token_index and token.space_before else ""
            text += f"{space}{{\\k{length}}}{escape_ass(token.text)}"
            position += 1
    return text
