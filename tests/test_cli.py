"""The command line: help, version, model resolution and the errors a user can meet."""

from __future__ import annotations

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
    with pytest.raises(ModelUnavailableError, match="--model PATH"):
        resolve_model("1.7b")


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


def test_transcribe_prints_the_text_of_each_file(data_dir, checkpoints, tmp_path):
    """A checkpoint is converted once into the cache, then each file's text goes to stdout."""
    args = [
        "transcribe",
        str(data_dir / "en_speech.wav"),
        str(data_dir / "video_with_audio.mp4"),
        "--model",
        str(checkpoints[("asr", "original")]),
        "-l",
        "en",
        "--threads",
        "2",
    ]
    env = {"COLUMNS": "300", "QWENSCRIBE_HOME": str(tmp_path)}
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "English" in result.output
    assert "en_speech.wav: 5.8 s of audio" in result.output
    assert "video_with_audio.mp4: 3.2 s of audio" in result.output
    assert len(list((tmp_path / "models").iterdir())) == 1  # the conversion, made once


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
