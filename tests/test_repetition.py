"""Repetition guards: the official text collapse (checked against transformers) and the loop
detector the decoding loop calls after every token."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest

from qwenscribe.core.repetition import collapse_repetitions, repeating_tail

# --- collapse_repetitions: behaviour -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("plain text, nothing repeated", "plain text, nothing repeated"),
        ("wait" + "!" * 21 + " ok", "wait! ok"),  # one character more than 20 times
        ("wait" + "!" * 20 + " ok", "wait" + "!" * 20 + " ok"),  # 20 times, too short a text
        ("我" + "哈" * 30 + "。", "我哈。"),
        ("the end " + "ab" * 25 + " fin" + " " * 40, "the end ab fin" + " "),
        ("x" + "na " * 20 + "y" * 19 + "!" * 21, "xna " + "y" * 19 + "!"),
        ("谢谢" * 20 + "大家" * 5 + "。" * 30, "谢" + "大家" * 5 + "。"),  # 40 x 谢: one run
    ],
)
def test_collapse_examples(text: str, expected: str) -> None:
    assert collapse_repetitions(text) == expected


def test_a_pattern_needs_the_threshold_number_of_repeats() -> None:
    tail = " and then it stopped, as real speech does."  # keeps the run far from the end
    for repeats in (18, 19):
        assert collapse_repetitions("ok " * repeats + tail) == "ok " * repeats + tail
    for repeats in (20, 21, 50):
        assert collapse_repetitions("ok " * repeats + tail) == "ok " + tail


def test_patterns_up_to_twenty_characters_collapse_longer_ones_do_not() -> None:
    tail = "".join(chr(0x4E00 + i) for i in range(45))  # no repetition in it
    for length in range(1, 22):
        pattern = "".join(chr(ord("a") + i % 26) for i in range(length - 1)) + "Z"
        text = pattern * 20 + tail
        expected = pattern + tail if length <= 20 else text
        assert collapse_repetitions(text) == expected, length


def test_thresholds_are_parameters() -> None:
    assert collapse_repetitions("abcabcabc" + "." * 10, threshold=3) == "abc" + "."
    assert collapse_repetitions("aaaa-bbb", threshold=3) == "a-bbb"
    counting = "0123456789" * 20 + "x" * 40
    assert collapse_repetitions(counting) == "0123456789" + "x"
    assert collapse_repetitions(counting, max_pattern_len=9) == "0123456789" * 20 + "x"


def test_runs_near_the_end_of_the_text_survive_like_the_official_scan() -> None:
    """The official pattern scan stops 2 * threshold characters before the end."""
    assert collapse_repetitions("ab" * 20) == "ab"  # 40 characters: scanned from position 0
    assert (
        collapse_repetitions("the start of a sentence, " + "ab" * 20)
        == "the start of a sentence, ab"
    )
    # Twenty "!" are collapsed by the pattern pass only where 40 characters remain.
    assert collapse_repetitions("!" * 20 + " and a long enough sentence after") == (
        "! and a long enough sentence after"
    )
    assert collapse_repetitions("hello there, " + "!" * 20) == "hello there, " + "!" * 20


# --- collapse_repetitions: parity with transformers ---------------------------------------------


@pytest.fixture(scope="module")
def reference() -> Callable[[str], str]:
    """transformers' own copy of the official collapse."""
    module = pytest.importorskip("transformers.models.qwen3_asr.processing_qwen3_asr")
    return module._detect_and_fix_repetitions


def hand_made_cases() -> list[str]:
    """Runs of one character, of short patterns, CJK, mixed, at and around the thresholds."""
    cases = ["", "a", "abc", "你好", " ", "\n\n"]
    cases += ["a" * n for n in range(1, 46)]
    cases += ["哈" * n for n in (19, 20, 21, 22, 40, 41)]
    fillers = ["", "x", "hello world, ", "前面的文字。", "z" * 39, "mixed 中文 text! " * 3]
    for length in range(1, 23):
        pattern = "".join("abcdefghijklmnopqrstuvw"[i] for i in range(length))
        for repeats in (1, 2, 19, 20, 21, 25):
            for before in fillers[:4]:
                for after in fillers:
                    cases.append(before + pattern * repeats + after)
    overlapping = ["ab" * 30 + "a", "aab" * 20, "aaab" * 21, "abcab" * 20, "abaaba" * 22]
    overlapping += [("ab" * 3 + "c") * 20, "a" * 20 + "b" * 20 + "a" * 20, "xyx" * 7 + "y" * 41]
    cjk = ["谢谢" * 20, "对不起" * 21, "好的，" * 25, "嗯" * 21 + "好" * 21, "啊 " * 20]
    mixed = ["ok 好 " * 20, "language English<asr_text>" + "the " * 30, "1, 2, " * 20 + "3"]
    boundaries = ["q" * k + "ab" * 20 for k in range(0, 45, 3)]
    boundaries += ["ab" * 20 + "q" * k for k in range(0, 45, 3)]
    two_runs = ["na" * 20 + " hey " + "la" * 20 + "!", "ab" * 20 + "ba" * 20, "ab" * 20 + "cd" * 20]
    return cases + overlapping + cjk + mixed + boundaries + two_runs


def random_cases(count: int, seed: int) -> list[str]:
    """Small-alphabet strings with one or two injected runs near the thresholds."""
    rng = random.Random(seed)
    alphabet = "ab c哈啊。"
    cases = []
    for _ in range(count):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for _ in range(rng.randint(0, 2)):
            pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 22)))
            run = pattern * rng.randint(15, 24)
            position = rng.randint(0, len(text))
            text = text[:position] + run + text[position:]
        cases.append(text)
    return cases


@pytest.mark.reference
def test_matches_transformers_on_hand_made_strings(reference: Callable[[str], str]) -> None:
    cases = hand_made_cases()
    assert len(cases) > 2000
    ours = [collapse_repetitions(text) for text in cases]
    mismatches = [text for text, out in zip(cases, ours, strict=True) if out != reference(text)]
    assert mismatches == []
    changed = sum(out != text for text, out in zip(cases, ours, strict=True))
    assert changed > len(cases) // 4  # the cases exercise the collapse, not just pass through


@pytest.mark.reference
def test_matches_transformers_on_random_strings(reference: Callable[[str], str]) -> None:
    cases = random_cases(3000, seed=20240521)
    ours = [collapse_repetitions(text) for text in cases]
    mismatches = [text for text, out in zip(cases, ours, strict=True) if out != reference(text)]
    assert mismatches == []
    changed = sum(out != text for text, out in zip(cases, ours, strict=True))
    assert changed > 500


@pytest.mark.reference
@pytest.mark.parametrize("threshold", [2, 3, 5])
def test_matches_transformers_at_other_thresholds(
    reference: Callable[..., str], threshold: int
) -> None:
    for text in random_cases(300, seed=threshold):
        assert collapse_repetitions(text, threshold=threshold) == reference(text, threshold), text


# --- repeating_tail ------------------------------------------------------------------------------

NORMAL_TEXT = list(range(1000, 1100))  # a transcript's tokens: no loop in them


def required_repeats(period: int) -> int:
    """What the defaults ask of a loop (8 repeats and 48 tokens), restated for the tests."""
    return max(8, math.ceil(48 / period))


def loop_pattern(period: int) -> list[int]:
    return list(range(1, period + 1))  # distinct tokens: the pattern has no shorter period


@pytest.mark.parametrize("period", range(1, 9))
def test_a_loop_of_every_period_up_to_the_maximum_is_found(period: int) -> None:
    pattern = loop_pattern(period)
    enough = NORMAL_TEXT + pattern * required_repeats(period)
    assert repeating_tail(enough) == period
    assert repeating_tail(enough + pattern[:1]) == period  # part-way into the next copy
    one_short = NORMAL_TEXT + pattern * (required_repeats(period) - 1)
    assert repeating_tail(one_short) is None
    assert repeating_tail(one_short + pattern * 30) == period


def test_a_loop_is_found_however_it_lines_up_with_the_text_before() -> None:
    pattern = [5, 6, 7, 8]
    for shift in range(4):
        tokens = NORMAL_TEXT + pattern[shift:] + pattern * 12
        assert repeating_tail(tokens) == 4


def test_the_smallest_period_is_reported() -> None:
    assert repeating_tail([7] * 200) == 1
    assert repeating_tail([7, 8] * 100) == 2
    assert repeating_tail([7, 8, 7, 9] * 50) == 4


@pytest.mark.parametrize(
    "tokens",
    [
        NORMAL_TEXT + [42] * 12,  # "ha ha ha ha ..." laughter, a dozen times
        NORMAL_TEXT + [42] * 47,  # one token short of the period-1 minimum
        NORMAL_TEXT + [42] * 60 + [7],  # the loop is over: the model moved on
        NORMAL_TEXT + [42, 11] * 10,  # "no, no, no, ..." ten times
        NORMAL_TEXT + [3, 4, 5, 6, 7, 11] * 4,  # a song line sung four times
        NORMAL_TEXT + [3, 4, 5, 6, 7, 8, 9, 11] * 7,  # a chanted phrase, seven times
        NORMAL_TEXT + [9, 10, 11, 12, 13, 14, 15, 16, 17] * 20,  # period 9: beyond max_period
        list(range(1, 60)),  # counting: no repetition at all
        [],
        [1],
    ],
)
def test_natural_repetition_and_short_inputs_are_not_loops(tokens: list[int]) -> None:
    assert repeating_tail(tokens) is None


def test_longer_periods_when_asked_for() -> None:
    tokens = NORMAL_TEXT + list(range(1, 11)) * 8
    assert repeating_tail(tokens) is None
    assert repeating_tail(tokens, max_period=12) == 10


def test_the_thresholds_are_parameters() -> None:
    laughter = NORMAL_TEXT + [42] * 12
    assert repeating_tail(laughter, min_tokens=12) == 1
    assert repeating_tail(laughter, min_tokens=13) is None
    phrase = NORMAL_TEXT + [1, 2, 3] * 5
    assert repeating_tail(phrase, min_repeats=5, min_tokens=1) == 3
    assert repeating_tail(phrase, min_repeats=6, min_tokens=1) is None


def test_numpy_and_tuple_inputs() -> None:
    tokens = NORMAL_TEXT + [3, 4] * 30
    assert repeating_tail(np.array(tokens, dtype=np.int64)) == 2
    assert repeating_tail(tuple(tokens)) == 2


class RecordingTokens(list):
    """A token list that remembers the lowest index it was read from."""

    lowest = math.inf

    def __getitem__(self, key):  # type: ignore[override]
        start = key.indices(len(self))[0] if isinstance(key, slice) else key % len(self)
        self.lowest = min(self.lowest, start)
        return super().__getitem__(key)

    def __iter__(self):
        self.lowest = 0
        return super().__iter__()


def test_only_the_tail_is_read() -> None:
    """Called after every token, its cost must not grow with the transcript's length."""
    longest_tail = 8 * 8  # period 8, 8 repeats: the longest tail the defaults compare
    plain = RecordingTokens(range(100_000))
    assert repeating_tail(plain) is None
    assert plain.lowest >= len(plain) - longest_tail
    looping = RecordingTokens([*range(100_000), *[5, 6, 7] * 16])
    assert repeating_tail(looping) == 3
    assert looping.lowest >= len(looping) - longest_tail


@pytest.mark.parametrize("options", [{"max_period": 0}, {"min_repeats": 1}, {"min_tokens": 0}])
def test_nonsense_settings_are_rejected(options: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_period"):
        repeating_tail([1, 2, 3], **options)
