"""Word splitting for the aligner (the official rules) and the punctuation put back afterwards.

The splitter is compared with transformers' `Qwen3ASRProcessor.split_words_for_alignment` (the
reference) on written and random strings; without transformers, the rules of
shared/REFERENCE.md are checked on examples written out here. Japanese and Korean need nagisa /
soynlp in the reference; those comparisons run where the packages are installed, and the
fallbacks are tested everywhere.
"""

from __future__ import annotations

import importlib.util
import random
import re
import unicodedata

import pytest

from qwenscribe.core import words as words_module
from qwenscribe.core.words import attach_punctuation, split_words

TEXTS = [
    "",
    "   ",
    "Hello world",
    "Hello, world. How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "don't stop: it's 3.14, not 42 — e-mail me@example.com!",
    "rock'n'roll 'quoted' ‘curly’ “double” «guillemets»",
    "今天天气很好。我们一起去公园散步吧。",
    "我用Python写了3个程序，GPT-4也行。",
    "A股和B股 2024年12月31日",
    "𠀀𠀁 extension B, 豈 compatibility, ⺀ radical",
    "오늘 날씨가 좋네요. 안녕하세요, 세계!",
    "今日はいい天気ですね。カタカナー、ひらがな",
    "Привет, мир! Ελληνικά. עברית. مرحبا بالعالم",
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",  # full-width letters and digits, ideographic spaces
    "emoji 😀👍🏽 between words 🎉end",
    "tabs\tand\nnew\r\nlines\u00a0nbsp\u2003em space",
    "café naïve e\u0301 (combining accent) Ωmega",
    "१२३ हिन्दी ไทย ภาษา",
    "___---...!!!???",
    "x'y ' lone apostrophe '' double",
    "¿Qué tal? ¡Muy bien!",
    "他说：「你好」，然后走了。",
]
LANGUAGES = [None, "English", "Chinese", "zh", "French", "Cantonese", "Arabic"]

# Characters for random strings: every kind the rules distinguish.
POOL = (
    "abcXYZ' 0123456789\t\n"
    ".,;:!?-—…()[]{}\"'“”‘’«»「」『』，。！？、：；"
    "今天天气很好中文字𠀀豈"
    "ひらがなカタカナー한국어éüñßΩжλ١٢"
    "😀🎉+=/@#%&*_~\u00a0\u3000\u0301"
)


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def kept(text: str) -> str:
    """The characters the aligner keeps (letters, numbers, ASCII apostrophe), from the rules."""
    return "".join(c for c in text if c == "'" or unicodedata.category(c)[0] in "LN")


def reference_split(text: str, language: str | None) -> list[str]:
    pytest.importorskip("torch")
    from transformers.models.qwen3_asr.processing_qwen3_asr import Qwen3ASRProcessor

    # The method uses nothing of the processor itself.
    return Qwen3ASRProcessor.split_words_for_alignment(None, text, language)


# -- the splitter ------------


@pytest.mark.reference
@pytest.mark.parametrize("language", LANGUAGES)
def test_splitter_equals_transformers(language: str | None) -> None:
    texts = TEXTS + random_texts(300, seed=LANGUAGES.index(language))
    for text in texts:
        assert split_words(text, language) == reference_split(text, language), repr(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world.", ["Hello", "world"]),
        ("don't e-mail me at 3.14", ["don't", "email", "me", "at", "314"]),
        ("今天天气", ["今", "天", "天", "气"]),
        ("我用Python写了3个", ["我", "用", "Python", "写", "了", "3", "个"]),
        ("ひらがな カタカナ", ["ひらがな", "カタカナ"]),  # kana are not ideographs
        ("한국어 텍스트", ["한국어", "텍스트"]),
        ("😀 ... !!", []),
        ("", []),
    ],
)
def test_default_rule_examples(text: str, expected: list[str]) -> None:
    """shared/REFERENCE.md: CJK ideographs one per word; other scripts split on whitespace,
    keeping letters, digits and apostrophes."""
    assert split_words(text) == expected
    assert split_words(text, "English") == expected


def test_korean_splits_on_whitespace_only() -> None:
    """soynlp's LTokenizer without scores keeps whitespace tokens whole, ideographs included."""
    assert split_words("오늘 날씨가 좋네요. 漢字도 좋아요!", "Korean") == [
        "오늘",
        "날씨가",
        "좋네요",
        "漢字도",
        "좋아요",
    ]
    assert split_words("漢字도", "ko") == ["漢字도"]
    assert split_words("漢字도") == ["漢", "字", "도"]


@pytest.mark.reference
@pytest.mark.skipif(importlib.util.find_spec("soynlp") is None, reason="soynlp not installed")
def test_korean_equals_transformers_with_soynlp() -> None:
    for text in [*TEXTS, *random_texts(200, seed=7)]:
        assert split_words(text, "Korean") == reference_split(text, "Korean"), repr(text)


def test_japanese_fallback_is_one_word_per_kana_or_ideograph(monkeypatch) -> None:
    monkeypatch.setattr(words_module, "nagisa_available", lambda: False)
    assert split_words("今日はいい天気。Python 3 です", "Japanese") == [
        *"今日はいい天気",
        "Python",
        "3",
        *"です",
    ]
    assert split_words("ｶﾀｶﾅ カタカナー", "ja") == [*"ｶﾀｶﾅ", *"カタカナー"]


@pytest.mark.reference
@pytest.mark.skipif(importlib.util.find_spec("nagisa") is None, reason="nagisa not installed")
def test_japanese_equals_transformers_with_nagisa() -> None:
    texts = ["今日はいい天気ですね。", "東京タワーに行きました！Pythonも3つ。", "", "ー、。"]
    for text in texts:
        words = split_words(text, "Japanese")
        assert words == reference_split(text, "Japanese"), repr(text)
        display = attach_punctuation(text, words)
        assert [kept(word) for word in display] == words


# -- punctuation back into the words ------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world.", ["Hello,", "world."]),
        ('"Yes," she said.', ['"Yes,"', "she", "said."]),
        ("你好，世界。", ["你", "好，", "世", "界。"]),
        ("他说：「你好」。", ["他", "说：", "「你", "好」。"]),
        ("(see note) ok", ["(see", "note)", "ok"]),
        ("wait - what?", ["wait -", "what?"]),
        ("wait ( what )", ["wait", "( what )"]),
        ("don't e-mail 3.14!", ["don't", "e-mail", "3.14!"]),
        ("¿Qué tal? ¡Bien!", ["¿Qué", "tal?", "¡Bien!"]),
        ("  «Bonjour»,  dit-il…  ", ["«Bonjour»,", "dit-il…"]),
        ('said:"Hi","Yo"', ["said:", '"Hi",', '"Yo"']),
        ("...Hello", ["...Hello"]),
        ("Hi 😀 there", ["Hi 😀", "there"]),
    ],
)
def test_attach_punctuation_examples(text: str, expected: list[str]) -> None:
    words = [kept(word) for word in expected]  # what the aligner times: no punctuation
    assert attach_punctuation(text, words) == expected


def test_attach_punctuation_without_words_is_empty() -> None:
    assert attach_punctuation("...!", []) == []
    assert attach_punctuation("", []) == []


def test_attach_punctuation_refuses_words_not_in_the_text() -> None:
    with pytest.raises(ValueError, match="does not occur"):
        attach_punctuation("Hello world", ["Hello", "there"])
    with pytest.raises(ValueError, match="does not occur"):
        attach_punctuation("Hello world", ["world", "Hello"])


@pytest.mark.parametrize("language", [None, "Korean", "Japanese"])
def test_attach_punctuation_keeps_every_character_once_in_order(language, monkeypatch) -> None:
    """Property: the display words hold every character of the text but the whitespace between
    them, in order, each once; each display word is its aligned word plus non-word characters."""
    monkeypatch.setattr(words_module, "nagisa_available", lambda: False)
    for text in [*TEXTS, *random_texts(500, seed=11)]:
        words = split_words(text, language)
        display = attach_punctuation(text, words)
        assert len(display) == len(words)
        if not words:
            continue
        assert re.sub(r"\s", "", "".join(display)) == re.sub(r"\s", "", text), repr(text)
        # Each display word is a piece of the text, and the pieces follow each other.
        position = 0
        for shown in display:
            found = text.find(shown, position)
            assert found >= position, (text, display)
            assert not text[position:found].strip(), (text, display)
            position = found + len(shown)
        assert not text[position:].strip()
        for word, shown in zip(words, display, strict=True):
            assert shown
            assert shown == shown.strip()
            assert kept(shown) == kept(word)
