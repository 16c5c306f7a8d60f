"""Builders for subtitle tests (transcripts by hand and from the speech fixtures) and the
invariants every list of cues must satisfy; the tests here check that the checker catches
broken cues, so a passing invariant test means something."""

from __future__ import annotations

import itertools
import random
import unicodedata
from dataclasses import replace

import pytest

from qwenscribe.core.transcript import Segment, Transcript, Word
from qwenscribe.subtitles import Cue, ShapingOptions, display_width, shape_cues

# What no line may start or end with, written out here independently of the code under test.
NEVER_STARTS_LINE = set(",.!?;:，。！？、；：）」』】》…")
NEVER_ENDS_LINE = set("（「『【《")


def is_cjk(char: str) -> bool:
    return "CJK" in unicodedata.name(char, "") or "HIRAGANA" in unicodedata.name(char, "")


def split_words(text: str) -> list[str]:
    """Words as an aligner gives them: by spaces, and one per CJK character, punctuation
    attached to the character before it ("我用Python写" -> 我 用 Python 写)."""
    words: list[str] = []
    for token in text.split():
        if not any(is_cjk(char) for char in token):
            words.append(token)
            continue
        latin_run = False
        for char in token:
            if unicodedata.category(char).startswith("P") and words:
                words[-1] += char
                latin_run = False
            elif latin_run and not is_cjk(char):
                words[-1] += char
            else:
                words.append(char)
                latin_run = not is_cjk(char)
    return words


def spread(text: str, start: float, end: float) -> list[Word]:
    """The text's words spread evenly over [start, end], each touching the next."""
    pieces = split_words(text)
    step = (end - start) / len(pieces)
    return [Word(start + i * step, start + (i + 1) * step, piece) for i, piece in enumerate(pieces)]


def segment(
    text: str, start: float, end: float, language: str = "English", *, words: bool = True
) -> Segment:
    return Segment(start, end, text, language, words=spread(text, start, end) if words else [])


def transcript(*segments: Segment, language: str | None = "English") -> Transcript:
    duration = max((s.end for s in segments), default=0.0) + 0.5
    return Transcript(list(segments), duration, language, "test.wav", model="test")


def fixture_transcript(facts: dict, name: str, *, words: bool = True) -> Transcript:
    """A transcript of a speech fixture as a perfect engine would return it: one segment per
    speech stretch, its words spread over it."""
    info = facts[name]
    language = {"en": "English", "zh": "Chinese"}[info["language"]]
    segments = [
        segment(item["text"], item["start"], item["end"], language, words=words)
        for item in info["speech"]
    ]
    return Transcript(segments, info["duration_s"], language, name, model="test")


def without_space(text: str) -> str:
    return "".join(text.split())


def check_cues(
    t: Transcript, cues: list[Cue], options: ShapingOptions, *, well_formed: bool = True
) -> None:
    """Every invariant of shaped cues. `well_formed`: word times are sane, so each cue must
    also cover its words (give or take the gap it leaves before the next cue)."""
    limit = max((s.end for s in t.segments), default=0.0)
    previous_end = 0.0
    for cue in cues:
        assert cue.end > cue.start, cue
        assert cue.start >= previous_end, (cue, previous_end)
        assert cue.start >= 0.0, cue
        assert cue.end <= limit + 1e-9, (cue, limit)
        for time in (cue.start, cue.end):
            assert abs(time * 100 - round(time * 100)) < 1e-6, time  # whole centiseconds
        previous_end = cue.end
        assert 1 <= len(cue.lines) <= options.max_lines, cue.lines
        for line in cue.lines:
            assert line, cue.lines
            assert line == line.strip(), cue.lines
            assert line[0] not in NEVER_STARTS_LINE, cue.lines
            assert line[-1] not in NEVER_ENDS_LINE, cue.lines
            if display_width(line) > options.max_line_width:
                assert len(line.split()) == 1, line  # a single over-wide word
                assert not any(is_cjk(c) for c in line), line
        if well_formed and cue.words:
            assert cue.start <= cue.words[0].start + 0.006, cue
            assert cue.end >= max(w.end for w in cue.words) - options.min_gap_s - 0.006, cue
    # Every word with text is in exactly one cue, in order; nothing is lost or added.
    shown_words = [w for s in t.segments for w in s.words if w.text.strip()]
    cue_words = [w for cue in cues for w in cue.words]
    assert [id(w) for w in cue_words] == [id(w) for w in shown_words]
    expected = "".join(
        without_space(" ".join(w.text for w in s.words) if s.words else s.text) for s in t.segments
    )
    assert "".join(without_space("".join(cue.lines)) for cue in cues) == expected


def random_transcript(rng: random.Random) -> Transcript:
    """A transcript with whatever a model and a bad alignment can produce: mixed scripts,
    numbers, repeats, tiny, zero-length, overlapping and backwards word times, touching
    segments, segments with and without words."""
    vocabulary = [
        "the", "a", "word", "subtitle", "recognition", "3.5%", "1,234.56", "no", "no", "no",
        "end.", "really?", "wait,", "so;", "中", "文", "好。", "你们，", "Python", "「引用」",
        "ok!", "Extraordinarily-long-hyphenated-compound-word-that-will-not-fit-anywhere",
        "(aside)", "“quoted”", "tiny", "x",
    ]  # fmt: skip
    segments = []
    time = rng.uniform(0, 2)
    for _ in range(rng.randint(0, 6)):
        pieces = [rng.choice(vocabulary) for _ in range(rng.randint(1, 40))]
        text = " ".join(pieces)
        length = rng.choice([0.0, 0.05, rng.uniform(0.5, 30)])
        start, end = time, time + length
        seg = Segment(start, end, text, "English")
        if rng.random() < 0.7:
            words = []
            cursor = start
            for piece in pieces:
                mode = rng.random()
                if mode < 0.1:
                    w_start, w_end = cursor, cursor  # zero length
                elif mode < 0.2:
                    w_start = cursor - rng.uniform(0, 1)  # backwards, overlapping
                    w_end = w_start + rng.uniform(0, 2)
                else:
                    w_start = cursor + rng.choice([0.0, 0.0, rng.uniform(0, 1.5)])
                    w_end = w_start + rng.uniform(0.01, 0.8)
                words.append(Word(w_start, w_end, piece))
                cursor = max(cursor, w_end)
            seg.words = words
        segments.append(seg)
        time = end + rng.choice([0.0, 0.0, rng.uniform(0, 3)])  # touching or apart
    language = rng.choice(["English", "Chinese", None])
    return Transcript(segments, time + 1, language, "random.wav")


def test_split_words_attaches_punctuation_to_cjk_characters() -> None:
    assert split_words("今天很好。我们, go") == ["今", "天", "很", "好。", "我", "们,", "go"]
    assert split_words("我用Python写，then") == ["我", "用", "Python", "写，", "then"]


def test_spread_covers_the_interval_in_order() -> None:
    words = spread("one two three four", 1.0, 3.0)
    assert [w.text for w in words] == ["one", "two", "three", "four"]
    assert words[0].start == 1.0
    assert words[-1].end == pytest.approx(3.0)
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(words))


def test_checker_rejects_broken_cues() -> None:
    """The invariant checker must fail on overlap, zero length, lost words and wide lines."""
    t = transcript(segment("Hello there my friend.", 0.0, 2.0))
    options = ShapingOptions()
    good = shape_cues(t, options)
    check_cues(t, good, options)
    cue = good[0]
    broken = [
        [replace(cue, end=cue.start)],  # zero length
        [cue, replace(cue, start=cue.end - 0.5, end=cue.end + 0.5)],  # overlap
        [replace(cue, words=cue.words[1:])],  # a word lost
        [replace(cue, lines=[cue.lines[0] + " and more" * 10])],  # too wide
        [replace(cue, end=5.0)],  # past the speech
        [replace(cue, lines=["Hello there my friend", ". "])],  # line starts with "."
    ]
    for cues in broken:
        with pytest.raises(AssertionError):
            check_cues(t, cues, options)
