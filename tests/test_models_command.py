"""`qwenscribe models`: list the cache, download-and-convert ahead of time, remove."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from qwenscribe import model_cache
from qwenscribe.cli import app as main_app
from qwenscribe.convert.convert import read_manifest

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    return main_app


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "home"


def test_list_with_an_empty_cache(app, home):
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "Qwen/Qwen3-ASR-0.6B" in result.output
    assert "Qwen/Qwen3-ForcedAligner-0.6B" in result.output
    assert "converted models: none" in result.output
    assert "downloaded checkpoints: none" in result.output

    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cache"] == str(home)
    assert [model["name"] for model in data["known"]] == ["0.6b", "1.7b", "aligner"]
    assert data["downloaded"] == data["converted"] == []


def test_download_of_a_local_checkpoint_converts_into_the_cache(app, home, checkpoints):
    source = checkpoints[("asr", "original")]
    result = runner.invoke(app, ["models", "download", str(source), "-e", "fp32", "-q", "q8_0"])
    assert result.exit_code == 0, result.output
    folder = next((home / "models").iterdir())
    assert str(folder) in result.output.replace("\n", "")
    manifest = read_manifest(folder)
    assert manifest["kind"] == "asr"
    assert manifest["options"] == {"encoder_precisions": ["fp32"], "decoder_quants": ["q8_0"]}

    # The aligner too, with two quantizations: one folder each.
    aligner = checkpoints[("aligner", "hf")]
    result = runner.invoke(
        app, ["models", "download", str(aligner), "-e", "fp32", "-q", "f16", "-q", "q8_0", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["folders"]) == 2

    data = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    kinds = sorted((m["kind"], tuple(m["decoder_quants"])) for m in data["converted"])
    assert kinds == [("aligner", ("f16",)), ("aligner", ("q8_0",)), ("asr", ("q8_0",))]
    assert all(m["bytes"] > 0 and m["size"] == "tiny" for m in data["converted"])

    table = runner.invoke(app, ["models"]).output
    assert "converted for the hybrid runtime" in table
    assert "q8_0" in table

    # A second download finds the conversion done.
    again = runner.invoke(app, ["models", "download", str(source), "-e", "fp32", "-q", "q8_0"])
    assert again.exit_code == 0
    assert len(list((home / "models").iterdir())) == 3

    # remove: by folder, and nothing outside the cache.
    result = runner.invoke(app, ["models", "remove", str(folder)])
    assert result.exit_code == 0, result.output
    assert not folder.exists()
    result = runner.invoke(app, ["models", "remove", str(source)])
    assert result.exit_code == 3
    assert source.exists()


def test_offline_hub_id_is_one_sentence_and_exit_3(app):
    result = runner.invoke(app, ["models", "download", "1.7b"])
    assert result.exit_code == 3
    assert "Cannot download the model Qwen/Qwen3-ASR-1.7B" in result.output
    assert "Traceback" not in result.output


def test_a_misspelt_precision_is_refused_before_any_download(app, monkeypatch):
    def download(*args, **kwargs):
        raise AssertionError("looked up the model before checking the options")

    monkeypatch.setattr("qwenscribe.model_cache.resolve_model", download)
    for option in (["-e", "int9"], ["-q", "q9_9"]):
        result = runner.invoke(app, ["models", "download", "1.7b", *option])
        assert result.exit_code == 3, result.output
        assert "Unknown" in result.output
        assert "Choose from" in result.output


def test_remove_by_name_removes_the_hub_entry_and_its_conversions(home, checkpoints):
    import shutil

    # A fake hub entry holding the tiny checkpoint, as snapshot_download leaves it.
    snapshot = home / "hub" / "models--Qwen--Qwen3-ASR-0.6B" / "snapshots" / "abc"
    shutil.copytree(checkpoints[("asr", "hf")], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    listed = model_cache.cached_checkpoints()
    assert [c.hub_id for c in listed] == ["Qwen/Qwen3-ASR-0.6B"]
    assert listed[0].path == str(snapshot)
    assert listed[0].bytes > 0
    folders = model_cache.download("0.6b", ("fp32",), ("f16",))
    assert folders[0].name.startswith("Qwen3-ASR-0.6B-")
    removed = model_cache.remove("0.6b")
    assert len(removed) == 2
    assert model_cache.cached_checkpoints() == []
    assert model_cache.converted_models() == []
    with pytest.raises(model_cache.ModelError, match="Nothing named"):
        model_cache.remove("0.6b")


def test_packed_copies_are_listed_and_go_with_their_model(app, home, checkpoints):
    """Packed weights (runtimes/prepacked.py) count in the listing, and removing a model removes
    the copies made from its graphs; a copy of another graph stays."""
    from qwenscribe.paths import prepacked_dir
    from qwenscribe.runtimes.prepacked import GRAPH, SOURCE

    [folder] = model_cache.download(str(checkpoints[("asr", "hf")]), ("fp32",), ("f16",))
    kept_source = home / "elsewhere.onnx"
    kept_source.write_bytes(b"graph")
    copies = {}
    for name, source in (("ours", folder / "encoder_backend.fp32.onnx"), ("kept", kept_source)):
        copy = prepacked_dir() / f"{name}-00000000-000000000000"
        copy.mkdir(parents=True)
        (copy / SOURCE).write_text(json.dumps({"source": str(source)}), encoding="utf-8")
        (copy / GRAPH).write_bytes(b"\0" * (1 << 20))
        copies[name] = copy

    listed = json.loads(runner.invoke(app, ["models", "--json"]).output)["prepacked"]
    written = sum(file.stat().st_size for copy in copies.values() for file in copy.iterdir())
    assert listed == {"path": str(prepacked_dir()), "copies": 2, "bytes": written}
    result = runner.invoke(app, ["models"], env={"COLUMNS": "300"})
    assert "weights packed for this CPU: 2 graphs, 2.0 MiB" in result.output

    removed = model_cache.remove(str(folder))
    assert removed == [folder, copies["ours"]]
    assert copies["kept"].is_dir()


def test_wired_into_the_main_cli():
    from qwenscribe.cli import app as main_app

    result = runner.invoke(main_app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["known"]


def test_download_without_a_quantization_prepares_what_the_engine_uses(home, checkpoints):
    """No -q: the engine's default files on a CPU for the model's kind, so a later offline run
    finds them: the int8 ONNX decoder for both the recognizer and the aligner."""
    from qwenscribe.core.engine import ASREngineConfig

    assert ASREngineConfig().decoder_file_quant == "int8"
    for kind in ("asr", "aligner"):
        (folder,) = model_cache.download(str(checkpoints[(kind, "hf")]), ("fp32",))
        assert read_manifest(folder)["options"]["decoder_quants"] == ["int8"]
