"""The writers: every file read back by an independent parser (srt, webvtt-py, pysubs2, and a
small LRC parser here) must give the shaped cues' count, times and text; empty transcripts give
valid empty files; writing is atomic; JSON re-renders without a model."""

from __future__ import annotations

import html
import io
import itertools
import os
import random
import re
from dataclasses import replace
from pathlib import Path

import pysubs2
import pytest
import srt
import webvtt

from qwenscribe.core.transcript import Segment, Transcript
from qwenscribe.errors import InputError, QwenScribeError
from qwenscribe.subtitles import (
    FORMATS,
    LATIN,
    ShapingOptions,
    preset_for_language,
    read_json,
    render,
    rerender,
    shape_cues,
    write_json,
    write_subtitles,
)
from qwenscribe.subtitles import writers as writers_module
from test_subtitles_support import (
    fixture_transcript,
    random_transcript,
    segment,
    transcript,
)

TRICKY = [
    "Use {braces} and a back\\slash, then 1 --> 2 & <b>bold</b> text.",
    "[laughs] A literal \\N stays as it is.",
    "你好 world, 3.5% of 1,234 people.",
]


def tricky_transcript() -> Transcript:
    segments = [segment(text, 2.0 * i, 2.0 * i + 1.8) for i, text in enumerate(TRICKY)]
    # Without words: a blank line inside the text must not end an SRT cue.
    segments.append(Segment(7.0, 9.0, "Blank\n\nline inside.", "English"))
    return transcript(*segments)


def cases(facts) -> dict[str, Transcript]:
    return {
        "en_long": fixture_transcript(facts, "en_long.flac"),
        "en_text_only": fixture_transcript(facts, "en_speech.wav", words=False),
        "zh": fixture_transcript(facts, "zh_speech.wav"),
        "tricky": tricky_transcript(),
        **{f"random{seed}": random_transcript(random.Random(seed)) for seed in range(12)},
    }


CASE_NAMES = ["en_long", "en_text_only", "zh", "tricky"] + [f"random{s}" for s in range(12)]


@pytest.fixture(params=CASE_NAMES)
def case(request, fixture_facts) -> Transcript:
    return cases(fixture_facts)[request.param]


def expected_cues(t: Transcript):
    return shape_cues(t, preset_for_language(t.language))


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def has_markup(text: str) -> bool:
    return any(char in text for char in "{}<>\\")


def check_order(times: list[tuple[int, int]]) -> None:
    for (start, end), (next_start, _) in itertools.pairwise(times):
        assert start < end <= next_start
    assert all(start < end for start, end in times)


def test_srt_read_back(case: Transcript) -> None:
    cues = expected_cues(case)
    text = render(case, "srt")
    parsed = list(srt.parse(text))
    assert len(parsed) == len(cues)
    for sub, cue in zip(parsed, cues, strict=True):
        assert ms(sub.start.total_seconds()) == ms(cue.start)
        assert ms(sub.end.total_seconds()) == ms(cue.end)
        assert sub.content == "\n".join(cue.lines)
        assert "" not in sub.content.split("\n")  # no blank line inside a cue
    events = pysubs2.SSAFile.from_string(text, format_="srt").events
    assert [(e.start, e.end) for e in events] == [(ms(c.start), ms(c.end)) for c in cues]
    for event, cue in zip(events, cues, strict=True):
        if not has_markup(cue.text):
            assert event.plaintext == "\n".join(cue.lines)
    check_order([(e.start, e.end) for e in events])


def test_vtt_read_back(case: Transcript) -> None:
    cues = expected_cues(case)
    text = render(case, "vtt")
    assert text.startswith("WEBVTT\n")
    captions = webvtt.from_buffer(io.StringIO(text)).captions
    assert len(captions) == len(cues)
    for caption, cue in zip(captions, cues, strict=True):
        assert caption.start_time.in_milliseconds() == ms(cue.start)
        assert caption.end_time.in_milliseconds() == ms(cue.end)
        assert html.unescape(caption.raw_text) == "\n".join(cue.lines)
    events = pysubs2.SSAFile.from_string(text, format_="vtt").events
    assert [(e.start, e.end) for e in events] == [(ms(c.start), ms(c.end)) for c in cues]
    check_order([(e.start, e.end) for e in events])
    # "-->" appears in timing lines only.
    assert all(" --> " in line for line in text.splitlines() if "-->" in line)
    assert text.count("-->") == len(cues)


def ass_text(line: str) -> str:
    """How the ASS writer must show a line: braces and backslashes as full-width look-alikes."""
    return line.replace("\\", "＼").replace("{", "｛").replace("}", "｝")


def test_ass_read_back(case: Transcript) -> None:
    cues = expected_cues(case)
    subs = pysubs2.SSAFile.from_string(render(case, "ass"), format_="ass")
    assert subs.info["PlayResX"] == "1920"
    assert subs.info["PlayResY"] == "1080"
    assert subs.info["WrapStyle"] == "2"
    style = subs.styles["Default"]
    assert style.fontname == ("Noto Sans CJK SC" if case.language == "Chinese" else "Arial")
    assert len(subs.events) == len(cues)
    for event, cue in zip(subs.events, cues, strict=True):
        assert (event.start, event.end) == (ms(cue.start), ms(cue.end))
        assert event.style == "Default"
        assert event.text.split("\\N") == [ass_text(line) for line in cue.lines]
        assert event.plaintext == "\n".join(ass_text(line) for line in cue.lines)
    check_order([(e.start, e.end) for e in subs.events])


KARAOKE_TAG = re.compile(r"\{\\k(\d+)\}")


def test_ass_karaoke_times_every_word(case: Transcript) -> None:
    cues = expected_cues(case)
    subs = pysubs2.SSAFile.from_string(render(case, "ass", karaoke=True), format_="ass")
    assert len(subs.events) == len(cues)
    for event, cue in zip(subs.events, cues, strict=True):
        lines = event.text.split("\\N")
        assert [KARAOKE_TAG.sub("", line) for line in lines] == [ass_text(x) for x in cue.lines]
        durations = [int(value) for value in KARAOKE_TAG.findall(event.text)]
        if not cue.words:
            assert durations == []  # text without aligned words stays plain
            continue
        tokens = sum(len(line) for line in cue.tokens)
        assert len(durations) in (tokens, tokens + 1)  # one per word, and maybe a lead-in
        assert sum(durations) == round((cue.end - cue.start) * 100)
        assert all(value >= 0 for value in durations)


LRC_TIMED = re.compile(r"^\[(\d{2,}):(\d{2})\.(\d{2})\](.*)$")
LRC_TAG = re.compile(r"^\[([a-z]+):(.*)\]$")
LRC_WORD = re.compile(r"( ?)<(\d{2,}):(\d{2})\.(\d{2})>([^<]*)")


def parse_lrc(text: str) -> tuple[dict[str, str], list[tuple[float, str]]]:
    """Tags and timed lines of an LRC file; fails on any other line."""
    tags: dict[str, str] = {}
    timed: list[tuple[float, str]] = []
    for line in text.splitlines():
        if match := LRC_TIMED.match(line):
            minutes, seconds, centis, rest = match.groups()
            timed.append((int(minutes) * 60 + int(seconds) + int(centis) / 100, rest))
        elif match := LRC_TAG.match(line):
            tags[match.group(1)] = match.group(2)
        else:
            pytest.fail(f"not an LRC line: {line!r}")
    return tags, timed


def test_lrc_read_back(case: Transcript) -> None:
    cues = expected_cues(case)
    tags, timed = parse_lrc(render(case, "lrc"))
    assert tags["re"] == "qwenscribe"
    texts = [(time, text) for time, text in timed if text]
    assert [text for _, text in texts] == [cue.text for cue in cues]
    assert [round(time * 100) for time, _ in texts] == [round(c.start * 100) for c in cues]
    # An empty line clears the text at the end of a cue before a long silence, and at the end.
    clears = [round(time * 100) for time, text in timed if not text]
    ends_before_silence = [
        round(cue.end * 100)
        for index, cue in enumerate(cues)
        if index == len(cues) - 1 or cues[index + 1].start - cue.end >= 1.0
    ]
    assert clears == ends_before_silence
    assert [t for t, _ in timed] == sorted(t for t, _ in timed)


def test_word_timed_lrc(case: Transcript) -> None:
    cues = expected_cues(case)
    _, timed = parse_lrc(render(case, "lrc", word_lrc=True))
    texts = [text for _, text in timed if text]
    assert len(texts) == len(cues)
    for text, cue in zip(texts, cues, strict=True):
        words = LRC_WORD.findall(text)
        if not cue.words:
            assert words == []
            assert text == cue.text
            continue
        assert LRC_WORD.sub(lambda m: m.group(1) + m.group(5), text) == cue.text
        times = [int(m) * 60 + int(s) + int(c) / 100 for _, m, s, c, _ in words]
        assert times == sorted(times)
        assert cue.start - 1e-9 <= times[0]
        assert times[-1] <= cue.end + 1e-9
        assert len(words) == sum(len(line) for line in cue.tokens)


def test_json_read_back(case: Transcript, tmp_path: Path) -> None:
    path = write_subtitles(case, tmp_path / "out.json")
    assert read_json(path) == case
    assert render(case, "json") == path.read_text(encoding="utf-8")


def test_txt_has_one_line_per_segment(case: Transcript) -> None:
    expected = [" ".join(s.text.split()) for s in case.segments if s.text.strip()]
    assert render(case, "txt").splitlines() == expected


def test_tricky_text_is_escaped_where_the_format_needs_it() -> None:
    t = tricky_transcript()
    vtt_text = render(t, "vtt")
    assert "1 --&gt; 2 &amp; &lt;b&gt;bold&lt;/b&gt;" in vtt_text
    ass = render(t, "ass")
    events = [line for line in ass.splitlines() if line.startswith("Dialogue:")]
    assert not any("{" in line or "\\N stays" in line for line in events)
    assert "｛braces｝" in ass
    assert "A literal ＼N stays" in ass
    srt_text = render(t, "srt")
    assert "Blank line inside." in srt_text.replace("\n", " ")


def test_empty_transcript_gives_valid_empty_files(tmp_path: Path) -> None:
    empty = Transcript([], 3.0, None, "silence.wav")
    silent = Transcript([Segment(0.0, 3.0, "", None)], 3.0, None, "silence.wav")
    for t in (empty, silent):
        files = {fmt: write_subtitles(t, tmp_path / f"out.{fmt}") for fmt in FORMATS}
        texts = {fmt: path.read_text(encoding="utf-8") for fmt, path in files.items()}
        assert texts["srt"] == ""
        assert list(srt.parse(texts["srt"])) == []
        assert texts["vtt"] == "WEBVTT\n"
        assert len(webvtt.read(files["vtt"]).captions) == 0
        for fmt in ("srt", "vtt", "ass"):
            assert len(pysubs2.load(str(files[fmt]), format_=fmt).events) == 0
        ass = pysubs2.load(str(files["ass"]))
        assert ass.info["PlayResY"] == "1080"
        assert "Default" in ass.styles
        assert "[Events]\nFormat: Layer" in texts["ass"]
        tags, timed = parse_lrc(texts["lrc"])
        assert timed == []
        assert "re" in tags
        assert read_json(files["json"]) == t
        assert texts["txt"] == ""


def test_times_are_never_rounded_into_overlap() -> None:
    """Word times on half centiseconds and a touching segment: after rounding, every format
    still has cues in order, none of zero length."""
    segments = []
    for index in range(30):
        start = index * 0.105 + 0.005
        segments.append(Segment(start, start + 0.105, f"w{index}.", "English", words=[]))
        segments[-1].words = segment(f"w{index}.", start, start + 0.105).words
    t = transcript(*segments)
    unmerged = ShapingOptions(merge_short_below_s=0.0)
    subs = list(srt.parse(render(t, "srt", unmerged)))
    assert len(subs) == 30
    check_order([(ms(s.start.total_seconds()), ms(s.end.total_seconds())) for s in subs])
    events = pysubs2.SSAFile.from_string(render(t, "ass", unmerged), format_="ass").events
    assert len(events) == 30
    check_order([(e.start, e.end) for e in events])


def test_formats_are_named_by_name_or_suffix(tmp_path: Path) -> None:
    t = transcript(segment("Hello there.", 0.0, 1.0))
    assert render(t, "SRT") == render(t, ".srt") == render(t, "srt")
    assert render(t, "webvtt") == render(t, "vtt")
    path = write_subtitles(t, tmp_path / "name.VTT")
    assert path.read_text(encoding="utf-8") == render(t, "vtt")
    with pytest.raises(InputError, match="cannot write subtitles as 'docx'") as caught:
        render(t, "docx")
    assert "srt" in caught.value.hint
    with pytest.raises(InputError, match="no suffix"):
        write_subtitles(t, tmp_path / "no_suffix")


def test_options_shape_the_output() -> None:
    t = transcript(segment(" ".join(["word"] * 30) + ".", 0.0, 6.0))
    narrow = ShapingOptions(max_line_width=20, max_lines=1)
    lines = [s.content for s in srt.parse(render(t, "srt", narrow))]
    assert all(len(line) <= 20 and "\n" not in line for line in lines)
    assert len(lines) > len(list(srt.parse(render(t, "srt", LATIN))))


def test_a_failing_writer_leaves_nothing_half_written(tmp_path: Path, monkeypatch) -> None:
    t = transcript(segment("Hello there, world.", 0.0, 2.0))
    target = tmp_path / "out.srt"

    def broken_pieces(cues):
        yield "1\n00:00:00,000 --> "
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers_module, "srt_pieces", broken_pieces)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_subtitles(t, target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one

    target.write_text("the earlier file\n", encoding="utf-8")
    target.chmod(0o600)
    with pytest.raises(RuntimeError):
        write_subtitles(t, target)
    assert target.read_text(encoding="utf-8") == "the earlier file\n"
    assert list(tmp_path.iterdir()) == [target]

    monkeypatch.undo()
    write_subtitles(t, target)
    assert len(list(srt.parse(target.read_text(encoding="utf-8")))) == 1
    assert list(tmp_path.iterdir()) == [target]
    assert os.stat(target).st_mode & 0o777 == 0o600  # kept from the file it replaced
    fresh = write_subtitles(t, tmp_path / "fresh.srt")
    assert os.stat(fresh).st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x", encoding="utf-8")
    t = transcript(segment("Hello.", 0.0, 1.0))
    with pytest.raises(QwenScribeError, match="Could not write") as caught:
        write_subtitles(t, blocker / "out.srt")
    assert caught.value.hint


def test_rerender_from_json_needs_no_model(tmp_path: Path, fixture_facts) -> None:
    t = fixture_transcript(fixture_facts, "en_long.flac")
    json_path = write_json(t, tmp_path / "en_long.json")
    narrow = replace(LATIN, max_line_width=16)
    for fmt in ("srt", "vtt", "lrc", "ass", "txt", "json"):
        out = rerender(json_path, tmp_path / f"again.{fmt}", options=narrow)
        assert out.read_text(encoding="utf-8") == render(t, fmt, narrow)
    out = rerender(json_path, tmp_path / "karaoke.ass", "ass", karaoke=True)
    assert "{\\k" in out.read_text(encoding="utf-8")
    with pytest.raises(InputError, match="does not exist"):
        rerender(tmp_path / "missing.json", tmp_path / "x.srt")
