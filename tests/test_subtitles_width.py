"""Display width (a CJK character takes two columns) and the presets chosen per language."""

from __future__ import annotations

import pytest

from qwenscribe.subtitles import CJK, LATIN, ShapingOptions, display_width, preset_for_language


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("", 0),
        ("hello", 5),
        ("中文", 4),
        ("日本語です", 10),
        ("한국어", 6),
        ("ｆｕｌｌ", 8),  # full-width Latin
        ("，。", 4),  # full-width punctuation
        ("e\u0301", 1),  # e + combining acute accent
        ("a\u200db", 2),  # zero-width joiner
        ("Python写代码", 12),
        ("½ km", 4),  # ambiguous width counts as narrow
    ],
)
def test_display_width(text: str, columns: int) -> None:
    assert display_width(text) == columns


@pytest.mark.parametrize(
    "language",
    ["zh", "ja", "ko", "yue", "ZH", "zh-TW", "zh_Hant", "zh-yue", "Chinese", "Japanese",
     "Korean", "Cantonese"],
)  # fmt: skip
def test_cjk_languages_get_the_cjk_preset(language: str) -> None:
    assert preset_for_language(language) is CJK


@pytest.mark.parametrize("language", ["en", "English", "fr", "de-AT", "ru", "Thai", None, ""])
def test_other_languages_get_the_latin_preset(language: str | None) -> None:
    assert preset_for_language(language) is LATIN


def test_presets_hold_the_same_screen_width_of_text() -> None:
    assert LATIN.max_line_width == 42
    assert CJK.max_line_width == 32  # 16 full-width characters
    assert LATIN.max_lines == CJK.max_lines == 2
    assert display_width("好" * 16) == CJK.max_line_width


@pytest.mark.parametrize(
    "bad",
    [{"max_line_width": 0}, {"max_lines": 0}, {"max_cue_s": 0.0}, {"min_gap_s": -0.1}],
)
def test_nonsense_options_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        ShapingOptions(**bad)
