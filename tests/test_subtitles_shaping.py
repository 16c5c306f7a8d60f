"""Cue shaping: where cues and lines break, and the invariants every cue list keeps, on
hand-built transcripts, the speech fixtures' texts, and random bad alignments."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from qwenscribe.core.transcript import Segment, Word
from qwenscribe.subtitles import CJK, LATIN, ShapingOptions, display_width, shape_cues
from test_subtitles_support import (
    check_cues,
    fixture_transcript,
    random_transcript,
    segment,
    spread,
    transcript,
)

SPEECH_FIXTURES = ["en_speech.wav", "en_long.flac", "zh_speech.wav", "video_with_audio.mp4"]


@pytest.mark.parametrize("words", [True, False], ids=["aligned", "text-only"])
@pytest.mark.parametrize("name", SPEECH_FIXTURES)
def test_fixture_sentences_become_one_cue_each(fixture_facts, name: str, words: bool) -> None:
    t = fixture_transcript(fixture_facts, name, words=words)
    options = CJK if t.language == "Chinese" else LATIN
    cues = shape_cues(t)  # the preset comes from the language
    check_cues(t, cues, options)
    speech = fixture_facts[name]["speech"]
    assert len(cues) == len(speech)  # each stretch is one short sentence
    for cue, item in zip(cues, speech, strict=True):
        assert cue.text == item["text"]
        assert cue.start == pytest.approx(item["start"])  # the speech starts the cue
        assert item["end"] - options.min_gap_s - 0.01 <= cue.end <= item["end"] + 1e-9


def test_lines_are_balanced_not_greedy(fixture_facts) -> None:
    cue = shape_cues(fixture_transcript(fixture_facts, "en_speech.wav"), LATIN)[0]
    # 44 columns: two lines, split near the middle rather than 42 + 2 or a stub.
    assert cue.lines == ["The quick brown fox", "jumps over the lazy dog."]


def test_two_line_cues_cannot_be_balanced_better() -> None:
    """Moving one word across the break of any two-line cue never shortens its longer line."""
    text = " ".join(["subtitle recognition words", "of various lengths appear", "x"] * 12)
    t = transcript(segment(text, 0.0, 60.0))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    two_line = [cue for cue in cues if len(cue.lines) == 2]
    assert two_line
    for cue in two_line:
        top, bottom = cue.lines[0].split(), cue.lines[1].split()
        longest = max(display_width(line) for line in cue.lines)
        moved_down = (" ".join(top[:-1]), " ".join([top[-1], *bottom]))
        moved_up = (" ".join([*top, bottom[0]]), " ".join(bottom[1:]))
        for first, second in (moved_down, moved_up):
            if first and second:
                alternative = max(display_width(first), display_width(second))
                assert alternative >= longest or alternative > LATIN.max_line_width


def test_sentences_split_first() -> None:
    t = transcript(segment("This is the first sentence. And here comes the second one!", 0, 5))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert [cue.text for cue in cues] == [
        "This is the first sentence.",
        "And here comes the second one!",
    ]


def test_abbreviations_and_numbers_do_not_end_sentences() -> None:
    text = "Dr. Smith paid 3.50 dollars for 1,234 apples in the U.S. today."
    t = transcript(segment(text, 0, 5))
    cues = shape_cues(t, replace_width(LATIN, 80))
    assert [cue.text for cue in cues] == [text]


def test_a_pause_splits_a_sentence() -> None:
    words = [*spread("we will stop here", 0.0, 1.6), *spread("and go on later", 2.6, 4.0)]
    t = transcript(Segment(0.0, 4.0, "we will stop here and go on later", "English", words=words))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert [cue.text for cue in cues] == ["we will stop here", "and go on later"]
    assert cues[0].end <= 1.6
    assert cues[1].start == pytest.approx(2.6)


def test_a_short_gap_does_not_split() -> None:
    words = [*spread("we will stop here", 0.0, 1.6), *spread("and go on later", 1.9, 3.2)]
    t = transcript(Segment(0.0, 3.2, "we will stop here and go on later", "English", words=words))
    assert len(shape_cues(t, LATIN)) == 1


def test_a_long_sentence_splits_at_the_clause_nearest_the_middle() -> None:
    text = (
        "When the recording is long, the engine cuts it into windows, "
        "and each window is decoded on its own before the words are aligned again."
    )
    t = transcript(segment(text, 0, 6))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert len(cues) == 2
    assert cues[0].text.endswith("windows,")


def test_width_splits_go_between_words_and_stay_within_the_limit() -> None:
    text = " ".join(f"word{i}" for i in range(60))  # no punctuation at all
    t = transcript(segment(text, 0, 30))
    for options in (LATIN, replace_width(LATIN, 20), ShapingOptions(max_lines=1)):
        cues = shape_cues(t, options)
        check_cues(t, cues, options)
        shown = [word for cue in cues for line in cue.lines for word in line.split()]
        assert shown == text.split()  # no word cut or joined


def test_long_cues_are_cut_by_duration() -> None:
    t = transcript(segment("slow " * 19 + "slow", 0, 40))  # 20 words over 40 s
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert len(cues) >= 6
    assert all(cue.end - cue.start <= LATIN.max_cue_s for cue in cues)


def test_cjk_breaks_between_characters_and_never_before_closing_punctuation() -> None:
    text = "今天天气很好，我们去公园散步吧，然后一起去吃饭，因为天气真的很好而且我们都有空。"
    for words in (True, False):
        t = transcript(segment(text, 0, 8, "Chinese", words=words), language="Chinese")
        cues = shape_cues(t, CJK)
        check_cues(t, cues, CJK)
        assert len(cues) > 1
        assert all(display_width(line) <= 32 for cue in cues for line in cue.lines)
        assert "".join(cue.text for cue in cues) == text  # no spaces inserted


def test_mixed_scripts_keep_the_text_spacing() -> None:
    text = "我用Python写代码，then I run the tests 再看结果。"
    t = transcript(segment(text, 0, 4, "Chinese"), language="Chinese")
    options = replace_width(CJK, 80)
    cues = shape_cues(t, options)
    check_cues(t, cues, options)
    assert [cue.text for cue in cues] == [text]


def test_punctuation_aligned_apart_is_folded_into_its_word() -> None:
    words = [
        Word(0.0, 0.4, "「"),
        Word(0.0, 0.4, "你"),
        Word(0.4, 0.8, "好"),
        Word(0.8, 0.8, "」"),
        Word(0.8, 0.8, "。"),
        Word(1.0, 1.3, "Hello"),
        Word(1.3, 1.3, ","),
        Word(1.4, 1.8, "world"),
    ]
    t = transcript(Segment(0.0, 1.8, "「你好」。Hello, world", "Chinese", words=words))
    cues = shape_cues(t, ShapingOptions(max_line_width=6))
    check_cues(t, cues, CJK)
    assert [cue.text for cue in cues] == ["「你好」。", "Hello, world"]


def test_an_over_wide_word_gets_a_line_of_its_own() -> None:
    giant = "Pneumonoultramicroscopicsilicovolcanoconiosis-and-then-some-more"
    t = transcript(segment(f"He said {giant} twice to me.", 0, 6))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert [line for cue in cues for line in cue.lines if giant in line] == [giant]


def test_a_short_cue_is_merged_into_its_neighbour() -> None:
    words = [Word(0.0, 0.3, "Yes."), *spread("I think that is right.", 0.35, 2.0)]
    t = transcript(Segment(0.0, 2.0, "Yes. I think that is right.", "English", words=words))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert [cue.text for cue in cues] == ["Yes. I think that is right."]
    unmerged = shape_cues(t, ShapingOptions(merge_short_below_s=0.0))
    assert [cue.text for cue in unmerged] == ["Yes.", "I think that is right."]


def test_a_short_cue_is_lengthened_into_silence_but_never_overlaps() -> None:
    lonely = transcript(
        Segment(1.0, 1.2, "Hi.", "English", words=[Word(1.0, 1.2, "Hi.")]),
        segment("After a long pause, more talk.", 5.0, 7.0),
    )
    cues = shape_cues(lonely, LATIN)
    check_cues(lonely, cues, LATIN)
    assert cues[0].start == pytest.approx(1.0)
    assert cues[0].end - cues[0].start == pytest.approx(LATIN.min_cue_s)

    squeezed = transcript(
        Segment(1.0, 1.2, "Hi.", "English", words=[Word(1.0, 1.2, "Hi.")]),
        segment("Right after it, more talk.", 1.4, 3.0),
    )
    cues = shape_cues(squeezed, ShapingOptions(merge_short_below_s=0.0))
    check_cues(squeezed, cues, LATIN)
    assert cues[0].end == pytest.approx(1.4 - LATIN.min_gap_s)  # all the silence after it
    assert cues[0].start == pytest.approx(1.4 - LATIN.min_gap_s - LATIN.min_cue_s)  # and before


def test_touching_segments_get_a_gap_and_no_overlap() -> None:
    t = transcript(
        segment("The first segment ends exactly here.", 0.0, 2.0),
        segment("The second one starts at that instant.", 2.0, 4.0),
    )
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)
    assert len(cues) == 2
    assert cues[1].start - cues[0].end == pytest.approx(LATIN.min_gap_s)


def test_degenerate_word_times_still_give_positive_cues() -> None:
    text = "zero length words. all of them. at one instant. really."
    words = [Word(3.0, 3.0, piece) for piece in text.split()]
    t = transcript(Segment(3.0, 3.0, text, "English", words=words))
    cues = shape_cues(t, ShapingOptions(merge_short_below_s=0.0))
    check_cues(t, cues, LATIN, well_formed=False)  # cues may pass the zero-length segment's end
    assert len(cues) == 4


def test_degenerate_times_stay_inside_the_speech_when_there_is_room() -> None:
    text = "one. two. three. four."
    words = [Word(1.0, 1.0, piece) for piece in text.split()]
    t = transcript(Segment(0.0, 2.0, text, "English", words=words))
    cues = shape_cues(t, ShapingOptions(merge_short_below_s=0.0))
    check_cues(t, cues, LATIN, well_formed=False)
    assert len(cues) == 4


def test_repeated_and_tiny_words_all_appear_once_in_order() -> None:
    text = " ".join(["no"] * 40)
    words = [Word(i * 0.01, i * 0.01 + 0.01, "no") for i in range(40)]
    t = transcript(Segment(0.0, 0.4, text, "English", words=words))
    cues = shape_cues(t, LATIN)
    check_cues(t, cues, LATIN)


def test_overlapping_word_times_from_a_bad_alignment() -> None:
    text = "these words overlap and even go backwards in time sometimes."
    rng = random.Random(7)
    words = []
    for index, piece in enumerate(text.split()):
        start = index * 0.3 + rng.uniform(-0.8, 0.8)
        words.append(Word(start, start + rng.uniform(-0.2, 1.5), piece))
    t = transcript(Segment(0.0, 3.0, text, "English", words=words))
    cues = shape_cues(t, replace_width(LATIN, 20))
    check_cues(t, cues, LATIN, well_formed=False)


def test_text_only_times_are_spread_by_width() -> None:
    """Without words, each cue gets time in proportion to its share of the text (approximate
    by design; here the speech is uniform, so the shares must match)."""
    first = "a " * 14 + "short opening sentence."
    second = "And a much longer second sentence that takes quite a bit more room on screen."
    t = transcript(segment(f"{first} {second}", 10.0, 20.0, words=False))
    options = ShapingOptions(max_line_width=60)
    cues = shape_cues(t, options)
    check_cues(t, cues, options)
    assert [cue.text for cue in cues] == [first, second]
    share = display_width(first) / (display_width(first) + 1 + display_width(second))
    assert cues[1].start == pytest.approx(10.0 + 10.0 * share, abs=0.02)
    assert cues[0].start == 10.0
    assert cues[1].end == 20.0


def test_segments_without_speech_are_skipped() -> None:
    t = transcript(Segment(0.0, 1.0, "", None), segment("Only this.", 1.0, 2.0))
    cues = shape_cues(t, LATIN)
    assert [cue.text for cue in cues] == ["Only this."]
    assert shape_cues(transcript(), LATIN) == []


@pytest.mark.parametrize("seed", range(150))
def test_random_transcripts_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    t = random_transcript(rng)
    options = rng.choice(
        [LATIN, CJK, ShapingOptions(max_line_width=12, max_lines=3, max_cue_s=2.0)]
    )
    check_cues(t, shape_cues(t, options), options, well_formed=False)


def replace_width(options: ShapingOptions, width: int) -> ShapingOptions:
    return replace(options, max_line_width=width)
