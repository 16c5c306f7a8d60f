"""The transcript's JSON form: lossless round trip, a header that says what the file is, and
clear refusals of files that are not (or not yet) readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import qwenscribe
from qwenscribe.core.transcript import ChunkRecord, Segment, Stats, Transcript, Word
from qwenscribe.errors import InputError
from qwenscribe.subtitles import read_json, transcript_from_dict, transcript_to_dict, write_json
from test_subtitles_support import segment


def full_transcript() -> Transcript:
    """Every field set, with floats that have no short decimal form."""
    first = segment("Hello there, world.", 0.1 + 0.2, 2.0 / 3.0 + 1.0)
    first.tokens = [151669, 9707, 1052, 11, 1879, 13]
    first.temperature = 0.2
    second = Segment(
        2.5, 5.123456789012345, "你好。", "Chinese", [1, 2], "length", 0.4, True,
        [Word(2.5, 2.5, "你"), Word(2.5, 3.0000000000000004, "好。")],
    )  # fmt: skip
    return Transcript(
        segments=[first, second, Segment(5.2, 6.0, "", None, finish="eos")],
        duration=6.000000000000001,
        language="English",
        source="/media/talk (1).mp4",
        stats=Stats(
            audio_s=6.0,
            decode_s=0.01,
            wall_s=0.9,
            chunks=3,
            retries=1,
            prefill_tokens=120,
            generated_tokens=12,
            peak_rss_mb=512.5,
        ),
        chunks=[ChunkRecord(0.0, 2.4, [1, 2, 3], "eos", 0.0, 448)],
        model="0.6b",
        options={"language": None, "context": "names: Ada", "beam": [1, 2], "nested": {"a": 1}},
    )


def test_round_trip_through_a_dict_is_exact() -> None:
    t = full_transcript()
    assert transcript_from_dict(transcript_to_dict(t)) == t


def test_round_trip_through_a_file_is_exact(tmp_path: Path) -> None:
    t = full_transcript()
    path = write_json(t, tmp_path / "talk.json")
    back = read_json(path)
    assert back == t
    assert back.segments[0].start == 0.1 + 0.2  # floats exact, not rounded
    assert back.segments[1].words[1].end == 3.0000000000000004
    assert isinstance(back.stats, Stats)
    assert isinstance(back.chunks[0], ChunkRecord)
    assert isinstance(back.segments[0].words[0], Word)


def test_the_file_says_what_it_is(tmp_path: Path) -> None:
    t = full_transcript()
    data = json.loads(write_json(t, tmp_path / "t.json").read_text(encoding="utf-8"))
    assert data["format"] == "qwenscribe-transcript"
    assert data["format_version"] == 1
    assert data["version"] == qwenscribe.__version__
    assert data["text"] == "Hello there, world. 你好。"  # the segment without speech left out
    assert data["segments"][1]["words"][0] == {"start": 2.5, "end": 2.5, "text": "你"}
    assert data["stats"]["real_time_factor"] == pytest.approx(0.9 / 6.0)
    assert "你好" in (tmp_path / "t.json").read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_empty_transcript_round_trips(tmp_path: Path) -> None:
    t = Transcript([], 3.0, None, "silence.wav")
    data = json.loads(write_json(t, tmp_path / "e.json").read_text(encoding="utf-8"))
    assert data["segments"] == []
    assert read_json(tmp_path / "e.json") == t


def test_odd_option_values_are_written_as_plain_json(tmp_path: Path) -> None:
    t = Transcript([], 1.0, None, "x.wav", options={"out": Path("/tmp/a"), "tags": {"b", "a"}})
    back = read_json(write_json(t, tmp_path / "o.json"))
    assert back.options == {"out": "/tmp/a", "tags": ["a", "b"]}


def test_keys_from_a_later_minor_writer_are_ignored() -> None:
    data = transcript_to_dict(full_transcript())
    data["something_new"] = 1
    data["segments"][0]["speaker"] = "A"
    data["segments"][0]["words"][0]["confidence"] = 0.9
    assert transcript_from_dict(data) == full_transcript()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "not a qwenscribe transcript"),
        ({"format_version": 2}, "newer than this qwenscribe"),
        ({"format_version": "1"}, "no valid format_version"),
        ({"segments": None}, "damaged"),
    ],
)
def test_unreadable_data_is_refused_clearly(change: dict, message: str) -> None:
    data = {**transcript_to_dict(full_transcript()), **change}
    with pytest.raises(InputError, match=message) as caught:
        transcript_from_dict(data)
    assert caught.value.hint  # says what to do
    assert str(caught.value).count(".") >= 2  # a sentence and a hint


def test_a_newer_format_says_to_upgrade(tmp_path: Path) -> None:
    data = {**transcript_to_dict(full_transcript()), "format_version": 99}
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="version 99") as caught:
        read_json(path)
    assert "Upgrade" in caught.value.hint


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a qwenscribe transcript"),
        ('{"format": "qwenscribe-transcript", "format_version": 1}', "damaged"),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_json(path)
