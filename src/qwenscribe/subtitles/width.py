"""How wide text is on screen, and which characters matter to line breaking.

Subtitle limits are counted in display columns rather than characters: a CJK or other full-width
character takes about the room of two Latin letters, so "42 columns" means the same screen width
whatever the script. `unicodedata.east_asian_width` (W and F are two columns) is all this needs;
combining marks and format characters (zero-width joiners, variation selectors) take none.
"""

from __future__ import annotations

import unicodedata

# Characters that end a sentence, and that end a clause. Closing quotes and brackets may follow
# either ("He said 'no.'"), so callers strip CLOSING first.
SENTENCE_END = frozenset(".!?…‼⁇⁈⁉。！？｡؟।॥")
CLAUSE_END = frozenset(",;:，、；：﹐﹑﹔﹕،؛")
# Punctuation that belongs to the text before it: a line may never start with one of these.
# Straight quotes are left out: they open as often as they close.
CLOSING = frozenset("”’»›)]}）］｝〉》」』】〕〗〙〛｠" + "".join(SENTENCE_END | CLAUSE_END))
# Punctuation that belongs to the text after it: a line may never end with one of these.
OPENING = frozenset("“‘«‹([{（［｛〈《「『【〔〖〘〚｟¿¡")


def char_width(char: str) -> int:
    """Columns one character takes: 2 for wide and full-width forms, 0 for marks, else 1."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns `text` takes on one line."""
    return sum(char_width(char) for char in text)


def breaks_between_chars(char: str) -> bool:
    """Whether a line may break on either side of `char` without a space: Han ideographs, kana
    and full-width forms. Hangul is not among them: Korean separates words with spaces."""
    code = ord(char)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0x31F0 <= code <= 0x31FF  # katakana extensions
        or 0x3400 <= code <= 0x4DBF  # ideographs, extension A
        or 0x4E00 <= code <= 0x9FFF  # unified ideographs
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width and half-width forms
        or 0x20000 <= code <= 0x3FFFF  # ideographs, supplementary planes
    )


def is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def ends_sentence(text: str) -> bool:
    """Whether `text` (a word with its punctuation) closes a sentence: "end." "好。" "'no!'"."""
    core = text.rstrip("".join(CLOSING - SENTENCE_END) + "\"'")
    return bool(core) and core[-1] in SENTENCE_END and not _is_abbreviation(core)


def ends_clause(text: str) -> bool:
    """Whether `text` closes a clause: "first," "然后，"."""
    core = text.rstrip("".join(CLOSING - CLAUSE_END - SENTENCE_END) + "\"'")
    return bool(core) and core[-1] in CLAUSE_END


# A full stop after these is usually not the end of a sentence.
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "e.g.", "i.e.", "jr.", "sr."}
)


def _is_abbreviation(word: str) -> bool:
    lowered = word.lower()
    if lowered in _ABBREVIATIONS:
        return True
    # An initial ("J.") or a dotted acronym ("U.S.") reads as part of a name, not a sentence end.
    letters = lowered.replace(".", "")
    return lowered.endswith(".") and letters.isalpha() and len(letters) == lowered.count(".")
