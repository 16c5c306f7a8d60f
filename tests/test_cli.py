"""The command line: help, version, model resolution and the errors a user can meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from qwenscribe import __version__
from qwenscribe.cli import app
from qwenscribe.errors import InputError, ModelError, ModelUnavailableError
from qwenscribe.model import resolve
from qwenscribe.model.prompt import language_name
from qwenscribe.model.resolve import resolve_model
from qwenscribe.subtitles.transcript_json import read_json

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline_home(tmp_path, monkeypatch):
    """An empty cache and no hub: what a fresh offline machine looks like."""
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "transcribe" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_default_model_offline_says_to_pass_a_path(data_dir):
    result = runner.invoke(app, ["transcribe", str(data_dir / "en_speech.wav")])
    assert result.exit_code == 3
    assert "Cannot download the model Qwen/Qwen3-ASR-0.6B" in result.output
    assert "--model PATH" in result.output
    assert "Traceback" not in result.output


def test_no_network_at_all_gives_the_same_message(data_dir, monkeypatch):
    # Not offline by setting, but nothing answers: an unresolvable endpoint.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-host.invalid")
    with pytest.raises(ModelUnavailableError, match="--model PATH") as caught:
        resolve_model("1.7b")
    assert "the mirror https://no-such-host.invalid (HF_ENDPOINT) is not reachable" in str(
        caught.value
    )
    assert "check the mirror's address" in caught.value.hint


def test_the_offline_message_says_what_this_machine_is_set_to(monkeypatch):
    with pytest.raises(ModelUnavailableError) as offline:  # HF_HUB_OFFLINE=1 (the fixture)
        resolve_model("0.6b")
    assert "HF_HUB_OFFLINE is set" in offline.value.message
    assert "unset HF_HUB_OFFLINE" in offline.value.hint

    def no_answer(repo_id, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_answer)
    with pytest.raises(ModelUnavailableError) as unreachable:
        resolve_model("0.6b")
    assert "the Hugging Face Hub is not reachable from this machine" in unreachable.value.message
    assert "set HF_ENDPOINT to a mirror" in unreachable.value.hint
    assert "hf download Qwen/Qwen3-ASR-0.6B --local-dir DIR" in unreachable.value.hint


def test_cached_hub_model_is_used_without_network(tmp_path, monkeypatch, checkpoints):
    # A model already in the cache resolves offline: the hub's cache layout is honoured.
    calls = []

    def fake_snapshot(repo_id, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return str(checkpoints[("asr", "original")])

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    resolved = resolve_model("0.6b")
    assert resolved.source == "Qwen/Qwen3-ASR-0.6B"
    assert (resolved.kind, resolved.layout) == ("asr", "original")
    assert calls == [True]


def test_local_checkpoint_is_recognised(checkpoints):
    folder = checkpoints[("aligner", "hf")]
    resolved = resolve_model(str(folder))
    assert (resolved.kind, resolved.layout, resolved.path) == ("aligner", "hf", folder)


def _transcribe(checkpoints, tmp_path, *args):
    """`qwenscribe transcribe` with the tiny checkpoints, the cache in tmp_path/home."""
    command = [
        "transcribe",
        *map(str, args),
        "--model",
        str(checkpoints[("asr", "original")]),
        "--aligner-model",
        str(checkpoints[("aligner", "hf")]),
        "--threads",
        "1",
    ]
    env = {"COLUMNS": "300", "QWENSCRIBE_HOME": str(tmp_path / "home")}
    return runner.invoke(app, command, env=env)


def test_transcribe_prints_the_text_of_each_file(data_dir, checkpoints, tmp_path):
    """A checkpoint is converted once into the cache; --print-text sends the text to stdout."""
    out = tmp_path / "out"
    result = _transcribe(
        checkpoints,
        tmp_path,
        data_dir / "en_speech.wav",
        data_dir / "video_with_audio.mp4",
        "-l",
        "en",
        "--no-align",
        "--print-text",
        "-f",
        "json",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "English" in result.output
    assert "en_speech.wav: 5.8 s of audio" in result.output
    assert "video_with_audio.mp4: 3.2 s of audio" in result.output
    assert len(list((tmp_path / "home" / "models").iterdir())) == 1  # the conversion, made once
    texts = []
    for name in ("en_speech", "video_with_audio"):
        transcript = read_json(out / f"{name}.json")
        assert all(not segment.words for segment in transcript.segments)  # --no-align
        assert transcript.text in result.stdout
        texts.append(transcript.text)
    # Random weights say anything (here stray bytes, one of them cut at the budget and
    # dropped): at least one file has text to print.
    assert any(texts)


def test_text_is_not_printed_unless_asked(data_dir, checkpoints, tmp_path):
    result = _transcribe(
        checkpoints,
        tmp_path,
        data_dir / "en_speech.wav",
        "--no-align",
        "-f",
        "json",
        "-o",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    text = read_json(tmp_path / "en_speech.json").text
    assert text
    assert text not in result.stdout


def test_transcribe_refuses_an_aligner_as_the_model(data_dir, checkpoints, tmp_path):
    args = [
        "transcribe",
        str(data_dir / "en_speech.wav"),
        "-m",
        str(checkpoints[("aligner", "hf")]),
    ]
    result = runner.invoke(app, args, env={"QWENSCRIBE_HOME": str(tmp_path), "COLUMNS": "300"})
    assert result.exit_code == 3
    assert "forced aligner, not a speech recognizer" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("2b", "Unknown model '2b'"),
        ("", "No model given"),
    ],
)
def test_bad_model_names(model, message):
    with pytest.raises(ModelError, match=message):
        resolve_model(model)


def test_folder_without_config_is_not_a_model(tmp_path, data_dir):
    with pytest.raises(ModelError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ModelError, match="not a Qwen3-ASR config"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    result = runner.invoke(
        app, ["transcribe", str(data_dir / "en_speech.wav"), "-m", str(tmp_path)]
    )
    assert result.exit_code == 3
    assert "not a Qwen3-ASR config" in result.output


def test_missing_input_is_named(tmp_path):
    result = runner.invoke(app, ["transcribe", str(tmp_path / "nope.wav")])
    assert result.exit_code == 4
    assert "No such file or folder" in result.output
    assert "nope.wav" in result.output


@pytest.mark.parametrize(
    ("given", "name"),
    [("en", "English"), ("english", "English"), ("ZH", "Chinese"), ("yue", "Cantonese")],
)
def test_languages_by_name_or_code(given, name):
    assert language_name(given) == name


def test_unknown_language_lists_the_choices(data_dir):
    with pytest.raises(InputError, match="Klingon"):
        language_name("Klingon")
    result = runner.invoke(app, ["transcribe", str(data_dir / "en_speech.wav"), "-l", "xx"])
    assert result.exit_code == 4
    assert "en (English)" in result.output


def test_download_patterns_fetch_only_model_files():
    assert "*.safetensors" in resolve._DOWNLOAD_PATTERNS
    assert not any(
        pattern.endswith((".bin", ".pt", ".md")) for pattern in resolve._DOWNLOAD_PATTERNS
    )


def test_console_script_runs_as_a_program(data_dir, tmp_path):
    # The installed entry point, as a person runs it: one sentence on stderr, exit status 3.
    env = dict(os.environ, QWENSCRIBE_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "qwenscribe", "transcribe", str(data_dir / "en_speech.wav")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 3
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_transcribe_writes_each_format_into_the_output_folder(data_dir, checkpoints, tmp_path):
    out = tmp_path / "new" / "folder"  # created
    inputs = [data_dir / "en_speech.wav", data_dir / "video_with_audio.mp4"]
    formats = ["srt", "vtt", "ass", "lrc", "json"]
    result = _transcribe(
        checkpoints, tmp_path, *inputs, *[arg for fmt in formats for arg in ("-f", fmt)], "-o", out
    )
    assert result.exit_code == 0, result.output
    expected = {f"{path.stem}.{fmt}" for path in inputs for fmt in formats}
    assert {path.name for path in out.iterdir()} == expected
    assert "2 written, 0 skipped, 0 failed" in result.output
    assert (out / "en_speech.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    assert "[Script Info]" in (out / "en_speech.ass").read_text(encoding="utf-8")
    # Word timing is on by default: the aligner's words are in the transcript.
    transcript = read_json(out / "en_speech.json")
    assert any(segment.words for segment in transcript.segments)


def test_default_output_is_srt_beside_the_input(data_dir, checkpoints, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    clip = media / "talk.wav"
    clip.write_bytes((data_dir / "en_speech.wav").read_bytes())
    result = _transcribe(checkpoints, tmp_path, clip, "--no-align")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in media.iterdir()) == ["talk.srt", "talk.wav"]
    assert "-->" in (media / "talk.srt").read_text(encoding="utf-8")


def test_existing_outputs_are_skipped_unless_overwrite(data_dir, checkpoints, tmp_path):
    out = tmp_path / "out"
    clip = data_dir / "en_speech.wav"
    first = _transcribe(checkpoints, tmp_path, clip, "-f", "srt", "-f", "txt", "-o", out)
    assert first.exit_code == 0, first.output
    srt = out / "en_speech.srt"
    os.utime(srt, (1_000_000, 1_000_000))  # an old file, so a rewrite shows in its mtime

    again = _transcribe(checkpoints, tmp_path, clip, "-f", "srt", "-f", "txt", "-o", out)
    assert again.exit_code == 0, again.output
    assert "skipped (exists)" in again.output
    assert "0 written, 1 skipped, 0 failed" in again.output
    assert srt.stat().st_mtime == 1_000_000

    # One requested format missing: the input is done again.
    partly = _transcribe(checkpoints, tmp_path, clip, "-f", "srt", "-f", "vtt", "-o", out)
    assert "1 written, 0 skipped" in partly.output
    assert (out / "en_speech.vtt").exists()

    os.utime(srt, (1_000_000, 1_000_000))
    forced = _transcribe(checkpoints, tmp_path, clip, "-o", out, "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert "1 written, 0 skipped, 0 failed" in forced.output
    assert srt.stat().st_mtime != 1_000_000


def test_a_corrupt_file_fails_alone(data_dir, checkpoints, tmp_path):
    out = tmp_path / "out"
    result = _transcribe(
        checkpoints,
        tmp_path,
        data_dir / "en_speech.wav",
        data_dir / "corrupt.mp3",
        data_dir / "video_with_audio.mp4",
        "--no-align",
        "-o",
        out,
    )
    assert result.exit_code == 4
    assert sorted(path.name for path in out.iterdir()) == ["en_speech.srt", "video_with_audio.srt"]
    failures = [line for line in result.output.splitlines() if "corrupt.mp3" in line]
    # The inputs row of the table, one line saying what went wrong, its row in the summary.
    assert len(failures) == 3
    assert "failed" in failures[1]
    assert failures[2].split()[-1] == "failed"
    assert "2 written, 0 skipped, 1 failed" in result.output
    assert "what to do: " in result.output  # the error's advice, under its line


def test_a_start_past_the_end_fails_instead_of_writing_empty_subtitles(
    data_dir, checkpoints, tmp_path
):
    out = tmp_path / "out"
    args = [data_dir / "en_speech.wav", "--start", "60", "--no-align", "-o", out]
    result = _transcribe(checkpoints, tmp_path, *args)
    assert result.exit_code == 4, result.output
    assert "has no audio after the requested start of 60 s" in result.output
    assert "Pass a start time inside the recording" in result.output
    assert not out.exists() or not any(out.iterdir())
    assert "Traceback" not in result.output


def test_inputs_without_audio_give_empty_subtitles(data_dir, checkpoints, tmp_path):
    out = tmp_path / "out"
    result = _transcribe(
        checkpoints,
        tmp_path,
        data_dir / "silence.wav",
        data_dir / "video_no_audio.mp4",
        "-f",
        "srt",
        "-f",
        "vtt",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert (out / "silence.srt").read_text(encoding="utf-8").strip() == ""
    assert (out / "video_no_audio.srt").read_text(encoding="utf-8").strip() == ""
    assert (out / "silence.vtt").read_text(encoding="utf-8").strip() == "WEBVTT"


def test_two_inputs_with_one_output_name_are_refused(data_dir, checkpoints, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    twin = other / "en_speech.wav"
    twin.write_bytes((data_dir / "en_speech.wav").read_bytes())
    result = _transcribe(checkpoints, tmp_path, data_dir / "en_speech.wav", twin, "-o", tmp_path)
    assert result.exit_code == 4
    assert "would both be written to" in result.output


def test_a_file_as_output_folder_is_refused_before_any_model_loads(data_dir, tmp_path):
    blocker = tmp_path / "out.srt"
    blocker.write_text("", encoding="utf-8")
    speech = data_dir / "en_speech.wav"
    absent = tmp_path / "no-such-model"  # a model problem would exit 3: the output comes first
    args = ["transcribe", str(speech), "-o", str(blocker), "--model", str(absent)]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 4, result.output
    assert "is a file, not a folder" in result.output
    assert "Traceback" not in result.output

    transcript = tmp_path / "talk.json"
    transcript.write_text("{}", encoding="utf-8")  # not read: the output folder is refused first
    render = runner.invoke(
        app, ["render", str(transcript), "-o", str(blocker)], env={"COLUMNS": "300"}
    )
    assert render.exit_code == 4
    assert "is a file, not a folder" in render.output


@pytest.mark.parametrize(
    "option", [["--threads", "0"], ["--parallel", "0"], ["--max-chunk", "0.5"]]
)
def test_out_of_range_numbers_are_usage_errors(data_dir, option):
    args = ["transcribe", str(data_dir / "en_speech.wav"), *option]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option[0]}'" in result.output


def test_context_from_a_file(data_dir, checkpoints, tmp_path, monkeypatch):
    from qwenscribe.core.engine import QwenASREngine

    given = []
    real = QwenASREngine.transcribe_stream

    def recorded(self, audio, **kwargs):
        given.append(kwargs["context"])
        return real(self, audio, **kwargs)

    monkeypatch.setattr(QwenASREngine, "transcribe_stream", recorded)
    terms = tmp_path / "terms.txt"
    terms.write_text("Qwen3-ASR, llama.cpp, 通义\n", encoding="utf-8")
    speech = data_dir / "en_speech.wav"
    for context, expected in ((f"@{terms}", "Qwen3-ASR, llama.cpp, 通义"), ("@@qwen", "@qwen")):
        args = [speech, "--no-align", "-c", context, "-o", tmp_path / "out", "--overwrite"]
        result = _transcribe(checkpoints, tmp_path, *args)
        assert result.exit_code == 0, result.output
        assert given[-1] == expected

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Müller".encode("latin-1"))
    for context, message in ((f"@{tmp_path / 'gone.txt'}", "Cannot read the context file"),
                             (f"@{latin1}", "is not UTF-8 text")):  # fmt: skip
        result = _transcribe(checkpoints, tmp_path, speech, "-c", context)
        assert result.exit_code == 4, result.output
        assert message in result.output
    assert len(given) == 2  # the bad files were refused before any work


def test_render_from_the_json_transcribe_wrote(data_dir, checkpoints, tmp_path):
    out = tmp_path / "out"
    made = _transcribe(checkpoints, tmp_path, data_dir / "en_speech.wav", "-f", "json", "-o", out)
    assert made.exit_code == 0, made.output
    transcript = out / "en_speech.json"
    subs = tmp_path / "subs"
    args = ["render", str(transcript), "-f", "vtt", "-f", "ass", "-o", str(subs), "--karaoke"]
    args += ["--max-line-width", "20", "--max-lines", "1"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in subs.iterdir()) == ["en_speech.ass", "en_speech.vtt"]
    vtt = (subs / "en_speech.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT")
    assert read_json(transcript).text.strip()
    assert "-->" in vtt
    assert "\\k" in (subs / "en_speech.ass").read_text(encoding="utf-8")  # karaoke timing
    again = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert "0 written, 1 skipped, 0 failed" in again.output


def test_render_a_file_that_is_not_a_transcript(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": "world"}', encoding="utf-8")
    result = runner.invoke(app, ["render", str(bad), "-f", "srt"], env={"COLUMNS": "300"})
    assert result.exit_code == 4
    assert "is not a qwenscribe transcript" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "notes.srt").exists()

    missing = runner.invoke(app, ["render", str(tmp_path / "gone.json")], env={"COLUMNS": "300"})
    assert missing.exit_code == 4
    assert "No such file or folder" in missing.output

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "talk.srt").write_text("", encoding="utf-8")
    nothing = runner.invoke(app, ["render", str(empty)], env={"COLUMNS": "300"})
    assert nothing.exit_code == 4
    assert "No transcript JSON files found in" in nothing.output


# -- many inputs: folders, lists, globs, naming, scripting output, Ctrl-C ------------


def _copy(source, *targets):
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())


def _tree(root):
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_a_folder_tree_is_mirrored_into_the_output_folder(data_dir, checkpoints, tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    _copy(data_dir / "en_speech.wav", lib / "top.wav", lib / "album" / "cd1" / "one.wav")
    (lib / "album" / "cover.jpg").write_bytes(b"not media")
    flat = _transcribe(checkpoints, tmp_path, lib, "--no-align", "-o", out)
    assert flat.exit_code == 0, flat.output
    assert _tree(out) == ["top.srt"]  # without --recursive, only the folder itself
    deep = _transcribe(checkpoints, tmp_path, lib, "--recursive", "--no-align", "-o", out)
    assert deep.exit_code == 0, deep.output
    assert _tree(out) == ["album/cd1/one.srt", "top.srt"]
    assert "1 written, 1 skipped, 0 failed" in deep.output
    assert "summary" in deep.output  # the closing table


def test_list_file_and_glob_inputs(data_dir, checkpoints, tmp_path, monkeypatch):
    media = tmp_path / "media"
    _copy(data_dir / "en_speech.wav", media / "a.wav", media / "b.wav", media / "c.wav")
    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text("# first batch\n\n../media/b.wav\n", encoding="utf-8")
    monkeypatch.chdir(media)  # the list's entries are relative to the list, not here
    listed = _transcribe(checkpoints, tmp_path, f"@{listing}", "--no-align")
    assert listed.exit_code == 0, listed.output
    assert _tree(media) == ["a.wav", "b.srt", "b.wav", "c.wav"]
    globbed = _transcribe(checkpoints, tmp_path, str(media / "[ac].wav"), "--no-align")
    assert globbed.exit_code == 0, globbed.output
    assert _tree(media) == ["a.srt", "a.wav", "b.srt", "b.wav", "c.srt", "c.wav"]


def test_same_stem_inputs_keep_their_extension(data_dir, checkpoints, tmp_path):
    media = tmp_path / "media"
    _copy(data_dir / "en_speech.wav", media / "a.wav")
    _copy(data_dir / "en_long.flac", media / "a.flac")
    result = _transcribe(checkpoints, tmp_path, media, "--no-align", "-f", "json")
    assert result.exit_code == 0, result.output
    assert _tree(media) == ["a.flac", "a.flac.json", "a.wav", "a.wav.json"]
    assert read_json(media / "a.wav.json").duration != read_json(media / "a.flac.json").duration


def test_json_lines_carry_outputs_and_stats(data_dir, checkpoints, tmp_path):
    out = tmp_path / "out"
    inputs = [data_dir / "en_speech.wav", data_dir / "corrupt.mp3"]
    result = _transcribe(checkpoints, tmp_path, *inputs, "--no-align", "--json", "-o", out)
    assert result.exit_code == 4
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == [str(path) for path in inputs]
    good, bad = lines
    assert (good["status"], good["error"]) == ("written", None)
    assert good["outputs"] == [str(out / "en_speech.srt")]
    assert good["stats"]["audio_s"] == pytest.approx(5.8, abs=0.1)
    assert good["stats"]["wall_s"] > 0
    assert bad["status"] == "failed"
    assert "corrupt.mp3" in bad["error"]
    assert bad["hint"]  # what to do, as on the terminal
    assert good["hint"] is None
    assert bad["stats"] is None
    again = _transcribe(checkpoints, tmp_path, inputs[0], "--no-align", "--json", "-o", out)
    assert json.loads(again.stdout)["status"] == "skipped"


def test_quiet_prints_nothing_on_success(data_dir, checkpoints, tmp_path):
    result = _transcribe(
        checkpoints, tmp_path, data_dir / "en_speech.wav", "--no-align", "--quiet", "-o", tmp_path
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert (tmp_path / "en_speech.srt").exists()


def test_verbose_prints_the_segments_as_they_come(data_dir, checkpoints, tmp_path):
    result = _transcribe(
        checkpoints,
        tmp_path,
        data_dir / "en_speech.wav",
        "--no-align",
        "-v",
        "-o",
        tmp_path,
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.output
    for segment in read_json(tmp_path / "en_speech.json").segments:
        assert segment.text.strip() in result.stderr
    assert result.stdout == ""


def test_ctrl_c_stops_cleanly_after_the_finished_files(
    data_dir, checkpoints, tmp_path, monkeypatch
):
    from qwenscribe.core.engine import QwenASREngine

    calls = []
    real = QwenASREngine.transcribe_stream

    def interrupted_on_second(self, audio, **kwargs):
        calls.append(audio)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, audio, **kwargs)

    monkeypatch.setattr(QwenASREngine, "transcribe_stream", interrupted_on_second)
    media, out = tmp_path / "media", tmp_path / "out"
    _copy(data_dir / "en_speech.wav", media / "a.wav", media / "b.wav", media / "c.wav")
    result = _transcribe(
        checkpoints, tmp_path, media, "--no-align", "-f", "srt", "-f", "vtt", "-o", out
    )
    assert result.exit_code == 130
    assert len(calls) == 2  # nothing after the interruption
    assert _tree(out) == ["a.srt", "a.vtt"]  # complete files only, no temporary ones
    assert "-->" in (out / "a.srt").read_text(encoding="utf-8")
    assert "1 written, 0 skipped, 0 failed, interrupted" in result.output
    assert "Traceback" not in result.output

    calls.clear()
    scripted = _transcribe(
        checkpoints, tmp_path, media, "--no-align", "--json", "-o", tmp_path / "j"
    )
    assert scripted.exit_code == 130
    assert [json.loads(line)["status"] for line in scripted.stdout.splitlines()] == [
        "written",
        "interrupted",
    ]


def test_touch_album_sets_the_first_level_folder_mtime(data_dir, checkpoints, tmp_path):
    lib = tmp_path / "lib"
    song = lib / "album" / "cd1" / "one.wav"
    _copy(data_dir / "en_speech.wav", song)
    for folder in (lib / "album", lib / "album" / "cd1"):
        os.utime(folder, (1_000_000, 1_000_000))
    plain = _transcribe(checkpoints, tmp_path, lib, "-r", "--no-align", "-o", tmp_path / "a")
    assert plain.exit_code == 0, plain.output
    assert (lib / "album").stat().st_mtime == 1_000_000  # untouched without the option
    touched = _transcribe(
        checkpoints, tmp_path, lib, "-r", "--no-align", "-o", tmp_path / "b", "--touch-album"
    )
    assert touched.exit_code == 0, touched.output
    assert (lib / "album").stat().st_mtime > 1_000_000
    assert (lib / "album" / "cd1").stat().st_mtime == 1_000_000  # only the first level


def test_a_folder_without_media_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    result = runner.invoke(app, ["transcribe", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 4
    assert "No media files found" in result.output


def test_a_closed_output_pipe_stops_quietly(data_dir, checkpoints, tmp_path):
    """`qwenscribe transcribe --json ... | head -1`: the reader leaves after one line."""
    media = tmp_path / "media"
    _copy(data_dir / "en_speech.wav", media / "a.wav", media / "b.wav", media / "c.wav")
    env = dict(os.environ, QWENSCRIBE_HOME=str(tmp_path / "home"))
    command = [
        sys.executable, "-m", "qwenscribe", "transcribe", str(media), "--json", "--no-align",
        "-m", str(checkpoints[("asr", "original")]), "--threads", "1", "-o", str(tmp_path / "out"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    first = json.loads(process.stdout.readline())
    process.stdout.close()  # as `head -1` does
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr
    assert first["status"] == "written"
    assert stderr == ""  # no traceback, no "Exception ignored", no error line


def test_ctrl_c_in_a_real_process_leaves_no_partial_output(data_dir, checkpoints, tmp_path):
    """SIGINT while a long input is being decoded: exit 130, and only complete files remain."""
    import signal
    import time
    import wave

    import numpy as np

    long_wav = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(16000 * 240) * 3000).astype("<i2")
    with wave.open(str(long_wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(samples.tobytes())
    out = tmp_path / "out"
    env = dict(os.environ, QWENSCRIBE_HOME=str(tmp_path / "home"))
    command = [
        sys.executable, "-m", "qwenscribe", "transcribe", str(data_dir / "en_speech.wav"),
        str(long_wav), "-m", str(checkpoints[("asr", "original")]), "--no-align", "--no-vad",
        "--threads", "1", "-o", str(out), "-f", "srt", "-f", "json", "--json",
    ]  # fmt: skip
    # A shell's background job ignores SIGINT, and the child would inherit that: restore it.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "en_speech.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the first input is done: the long one is being decoded now
    assert (out / "en_speech.json").exists(), process.communicate()[1]
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    statuses = {json.loads(line)["input"].rsplit("/", 1)[-1]: json.loads(line)["status"]
                for line in stdout.splitlines()}  # fmt: skip
    assert statuses == {"en_speech.wav": "written", "long.wav": "interrupted"}
    assert sorted(path.name for path in out.iterdir()) == ["en_speech.json", "en_speech.srt"]


def test_window_vad_and_cue_settings_reach_the_engine_and_the_files(
    data_dir, checkpoints, tmp_path
):
    """--start/--duration pick a window whose times stay on the file's timeline; the VAD and
    cue settings are accepted; contradictory cue settings are one clear input error."""
    out = tmp_path / "out"
    args = ["--start", "1", "--duration", "3", "--vad-threshold", "0.4", "--vad-min-silence"]
    args += ["300", "--vad-pad", "50", "--vad-max-speech", "20", "--max-cue", "2.5"]
    args += ["--min-cue", "0.5", "--min-gap", "0.2", "--pause-split", "0.4", "--no-align"]
    result = _transcribe(
        checkpoints, tmp_path, data_dir / "en_long.flac", *args, "-f", "json", "-o", out
    )
    assert result.exit_code == 0, result.output
    transcript = read_json(out / "en_long.json")
    assert transcript.duration == pytest.approx(3.0)
    for segment in transcript.segments:
        assert 1.0 <= segment.start <= segment.end <= 4.0 + 1e-6
    bad = _transcribe(
        checkpoints, tmp_path, data_dir / "en_long.flac", "--min-cue", "5", "--max-cue", "1"
    )
    assert bad.exit_code == 4
    assert "The cue settings do not fit together" in bad.output
    assert "Traceback" not in bad.output


def test_low_memory_gives_the_same_words_as_two_models(data_dir, checkpoints, tmp_path):
    """--low-memory aligns after recognition with one model loaded at a time: same files."""
    words = {}
    for flag in ([], ["--low-memory"]):
        out = tmp_path / ("low" if flag else "both")
        result = _transcribe(
            checkpoints, tmp_path, data_dir / "en_speech.wav", "-l", "en", "-f", "json",
            "-o", out, "--no-vad", "--max-chunk", "3", *flag,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        if flag:
            assert "after recognition (low memory)" in result.output
        transcript = read_json(out / "en_speech.json")
        assert transcript.options["low_memory"] is bool(flag)
        words[bool(flag)] = [(w.text, w.start, w.end) for s in transcript.segments for w in s.words]
    assert words[True] == words[False]
    assert words[True]
