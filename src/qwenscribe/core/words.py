"""Words for the forced aligner, and the punctuation put back into them afterwards.

The aligner times words, not characters or tokens, and the word boundaries must be the official
ones (the model was trained on them; shared/REFERENCE.md, "Forced aligner"). The rules, as the
official code and transformers' `Qwen3ASRProcessor.split_words_for_alignment` apply them:

- Default (every language but Japanese and Korean, and no language): each CJK ideograph is a word
  of its own; other text is split on whitespace, and a word keeps only its letters, digits and
  ASCII apostrophes (Unicode categories L*, N*, and "'"). Everything else, punctuation and
  symbols included, is dropped without splitting: "e-mail" is the word "email".
- Korean: the official code uses soynlp's `LTokenizer()` without trained scores, which then keeps
  every whitespace-separated token whole (checked against soynlp 0.0.493); so Korean is split on
  whitespace, then cleaned as above. That is done here directly, and gives the same words, with
  no dependency: CJK ideographs inside a Korean token stay in the token, unlike the default.
- Japanese: morphological words from nagisa when it is installed (`pip install nagisa`), cleaned
  as above. Without nagisa, a per-character fallback: each kana or CJK ideograph is a word,
  other text follows the default rule. The aligner then times characters instead of words,
  which still places every character but gives finer, less natural units than nagisa's.

Punctuation is never aligned, so the words the aligner returns have none. `attach_punctuation`
puts the original text's punctuation back around them for display.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import unicodedata
from collections.abc import Callable, Sequence

from qwenscribe.errors import InputError
from qwenscribe.model.prompt import language_name

log = logging.getLogger(__name__)

# CJK ideograph blocks, as the official aligner defines them (unified, extensions A-E,
# compatibility ideographs and their supplement). Kana and hangul are not among them.
_CJK_IDEOGRAPH_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Kana for the Japanese fallback: hiragana, katakana (with the prolonged sound mark),
# katakana phonetic extensions, half-width katakana.
_KANA_RANGES = ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
# Opening punctuation that has no Unicode "open" category: it belongs to the word after it.
_OPENERS = frozenset("¿¡")


def _in_ranges(char: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)


def is_cjk_ideograph(char: str) -> bool:
    return _in_ranges(char, _CJK_IDEOGRAPH_RANGES)


def is_word_char(char: str) -> bool:
    """Whether the aligner keeps `char` in a word: letters, digits, ASCII apostrophe."""
    if char == "'":
        return True
    category = unicodedata.category(char)
    return category[0] in "LN" or is_cjk_ideograph(char)


def _clean(token: str) -> str:
    return "".join(char for char in token if is_word_char(char))


def _split(text: str, is_single: Callable[[str], bool]) -> list[str]:
    """Whitespace-separated words of kept characters; characters `is_single` accepts are words
    of their own (and end the word before them)."""
    words: list[str] = []
    current: list[str] = []
    for char in text:
        if is_single(char):
            if current:
                words.append("".join(current))
                current = []
            words.append(char)
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        elif is_word_char(char):
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def _canonical_language(language: str | None) -> str | None:
    if not language:
        return None
    try:
        return language_name(language)
    except InputError:
        return language.strip()  # unknown names split by the default rule, as the reference does


def nagisa_available() -> bool:
    return importlib.util.find_spec("nagisa") is not None


_warned_no_nagisa = False


def _japanese_words(text: str) -> list[str]:
    global _warned_no_nagisa
    if nagisa_available():
        import nagisa

        return [word for token in nagisa.tagging(text).words if (word := _clean(token))]
    if not _warned_no_nagisa:
        log.warning(
            "nagisa is not installed: Japanese is aligned per character (pip install nagisa)"
        )
        _warned_no_nagisa = True
    return _split(text, lambda char: is_cjk_ideograph(char) or _in_ranges(char, _KANA_RANGES))


def split_words(text: str, language: str | None = None) -> list[str]:
    """The words the aligner times, by the official rules (see the module docstring).

    `language` is a name or code ("Japanese", "ja"); None or any other language uses the
    default rule.
    """
    text = text.strip()
    name = _canonical_language(language)
    if name == "Japanese":
        return _japanese_words(text)
    if name == "Korean":
        return [word for token in text.split() if (word := _clean(token))]
    return _split(text, is_cjk_ideograph)


# -- punctuation back into the words ------------


def _spans(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Where each word lies in `text`: from its first to just after its last character.

    Words are found in order, character by character; characters between them (punctuation,
    whitespace, or anything a splitter dropped) are skipped. A word that is not in the text
    in that order is a caller's mistake.
    """
    spans = []
    position = 0
    for word in words:
        start = None
        for char in word:
            found = text.find(char, position)
            if found < 0:
                raise ValueError(f"the word {word!r} does not occur in order in the text")
            if start is None:
                start = found
            position = found + 1
        if start is None:
            raise ValueError("empty word")
        spans.append((start, position))
    return spans


def _opens(text: str, index: int) -> bool:
    """Whether text[index] opens something (bracket, opening quote) and so belongs to the word
    after it. A straight double quote opens when an even number of them came before it."""
    char = text[index]
    if char == '"':
        return text.count('"', 0, index) % 2 == 0
    return unicodedata.category(char) in ("Ps", "Pi") or char in _OPENERS


def _split_gap(text: str, start: int, end: int) -> int:
    """Where the text between two words divides: before it goes to the word on the left, from
    it on to the word on the right.

    Without whitespace in between (CJK text, "word—word"), the division is the first opening
    character, else the end: trailing punctuation stays with its word ("好，" "世"). With
    whitespace, what touches the left word is the left word's ("Hello," "world"), what touches
    the right word is the right word's ('"world'), and a piece standing alone between spaces
    goes left ("wait -" "what") unless it opens ("(" "see").
    """
    spaced = any(char.isspace() for char in text[start:end])
    for index in range(start, end):
        if text[index].isspace():
            continue
        if not spaced:
            if _opens(text, index):
                return index
        elif text[index - 1].isspace():  # a piece begins after a space
            touches_right = not any(char.isspace() for char in text[index:end])
            if touches_right or _opens(text, index):
                return index
    return end


def attach_punctuation(text: str, words: Sequence[str]) -> list[str]:
    """Display forms of the aligned `words` (in order, as the splitter gave them for `text`):
    each with the text's own characters around and inside it put back.

    "Hello, world." -> ["Hello,", "world."]; '"Yes," she said.' -> ['"Yes,"', "she", "said."];
    "你好，世界。" -> ["你", "好，", "世", "界。"]. Every character of the text other than
    whitespace between words lands in exactly one display word, in order; text before the first
    word joins the first, text after the last joins the last. Spacing inside a display word is
    the text's own ("wait -" for "wait - what"). One display word per word; none for no words.
    """
    if not words:
        return []
    spans = _spans(text, words)
    bounds = [0]
    for (_, left_end), (right_start, _) in itertools.pairwise(spans):
        bounds.append(_split_gap(text, left_end, right_start))
    bounds.append(len(text))
    return [text[begin:end].strip() for begin, end in itertools.pairwise(bounds)]
