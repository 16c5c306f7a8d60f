"""`convert`: the output folder, its manifest, re-runs, interruptions and bad requests."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from qwenscribe import __version__
from qwenscribe.cli import app
from qwenscribe.convert import convert as convert_module
from qwenscribe.convert.convert import ConvertOptions, convert, read_manifest
from qwenscribe.core.models import hybrid_model_files
from qwenscribe.errors import ModelError, ModelUnavailableError
from torchless import run_without_torch

FAST = ConvertOptions(encoder_precisions=("fp32",), decoder_quants=("f16",))


@pytest.fixture(autouse=True)
def offline(tmp_path_factory, monkeypatch):
    # The cache (its locks/ folder) apart from tmp_path, whose listing the tests check.
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def converted_asr(tmp_path_factory, checkpoints):
    return convert(checkpoints[("asr", "original")], tmp_path_factory.mktemp("c") / "asr", FAST)


def test_output_holds_encoder_decoder_tokenizer_and_manifest(converted_asr):
    names = {path.name for path in converted_asr.folder.iterdir()}
    assert {
        "encoder_frontend.fp32.onnx",
        "encoder_backend.fp32.onnx",
        "decoder.f16.gguf",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "manifest.json",
    } <= names
    assert not converted_asr.skipped


def test_manifest_describes_and_hashes_every_file(converted_asr, checkpoints):
    folder = converted_asr.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "asr"
    assert manifest["size"] == "tiny"
    assert manifest["converter_version"] == __version__
    assert manifest["converter_revision"] == convert_module.CONVERTER_REVISION
    assert manifest["source"]["layout"] == "original"
    assert manifest["source"]["path"] == str(checkpoints[("asr", "original")])
    assert manifest["architecture"]["decoder"]["head_dim"] == 32
    assert manifest["options"] == {"encoder_precisions": ["fp32"], "decoder_quants": ["f16"]}
    on_disk = {path.name for path in folder.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, info in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert info["bytes"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()


def test_same_options_again_is_a_no_op(converted_asr, checkpoints):
    folder = converted_asr.folder
    before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = convert(checkpoints[("asr", "original")], folder, FAST)
    assert again.skipped
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == before


def test_a_conversion_by_an_older_converter_is_written_again(tmp_path, checkpoints, caplog):
    """Files an older revision wrote still load, but the next use gets the new ones."""
    folder = convert(checkpoints[("asr", "hf")], tmp_path / "m", FAST).folder
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["converter_revision"]  # as revision 1 wrote it
    manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level("INFO", logger="qwenscribe.convert.convert"):
        result = convert(checkpoints[("asr", "hf")], folder, FAST)
    assert not result.skipped
    assert read_manifest(folder)["converter_revision"] == convert_module.CONVERTER_REVISION
    assert "converted by an older qwenscribe" in caplog.text
    assert convert(checkpoints[("asr", "hf")], folder, FAST).skipped


def test_other_options_replace_the_folder(tmp_path, checkpoints):
    folder = convert(checkpoints[("asr", "hf")], tmp_path / "m", FAST).folder
    result = convert(
        checkpoints[("asr", "hf")],
        folder,
        ConvertOptions(encoder_precisions=("int8",), decoder_quants=("q8_0",)),
    )
    names = {path.name for path in folder.iterdir()}
    assert not result.skipped
    assert {"encoder_backend.int8.onnx", "decoder.q8_0.gguf"} <= names
    assert "decoder.f16.gguf" not in names
    assert [path.name for path in tmp_path.iterdir()] == ["m"]  # nothing left beside it


def test_aligner_gets_its_head(tmp_path, checkpoints):
    result = convert(checkpoints[("aligner", "hf")], tmp_path / "aligner", FAST)
    assert result.manifest["kind"] == "aligner"
    files = result.manifest["files"]
    assert {"aligner.f16.gguf", "token_embeddings.npy"} <= set(files)
    assert not any(name.startswith("decoder.") for name in files)


def test_aligner_decoder_as_onnx_and_gguf_side_by_side(tmp_path, checkpoints):
    """An ONNX precision among the aligner's decoder quantizations writes the ONNX decoder."""
    options = ConvertOptions(encoder_precisions=("fp32",), decoder_quants=("int8", "q8_0"))
    result = convert(checkpoints[("aligner", "hf")], tmp_path / "aligner", options)
    files = set(result.manifest["files"])
    assert {"aligner_decoder.int8.onnx", "aligner.q8_0.gguf", "token_embeddings.npy"} <= files
    assert "aligner_decoder.int8.onnx.data" in files  # memory-mapped weights: a faster load
    folder = result.folder
    graph, weights = folder / "aligner_decoder.int8.onnx", folder / "aligner_decoder.int8.onnx.data"
    assert weights.stat().st_mode == graph.stat().st_mode  # readable by whoever reads the graph
    assert not any(name.startswith("float-") for name in files)  # the quantizer's input is gone


def test_recognizer_decoder_as_onnx_and_gguf_side_by_side(tmp_path, checkpoints):
    """An ONNX precision among the recognizer's quantizations writes the ONNX decoder and the
    token table it is fed from; a GGUF one beside it is written as before."""
    options = ConvertOptions(encoder_precisions=("fp32",), decoder_quants=("int8", "q8_0"))
    result = convert(checkpoints[("asr", "hf")], tmp_path / "asr", options)
    files = set(result.manifest["files"])
    expected = {"decoder.int8.onnx", "decoder.int8.onnx.data", "token_embeddings.npy"}
    assert expected | {"decoder.q8_0.gguf"} <= files
    folder = result.folder
    graph, weights = folder / "decoder.int8.onnx", folder / "decoder.int8.onnx.data"
    assert weights.stat().st_mode == graph.stat().st_mode
    assert not any(name.startswith(("float-", "aligner")) for name in files)


def test_an_unknown_decoder_quantization_is_refused_before_any_work(tmp_path, checkpoints):
    options = ConvertOptions(encoder_precisions=("fp32",), decoder_quants=("int3",))
    with pytest.raises(ModelError, match="Unknown decoder quantization int3") as caught:
        convert(checkpoints[("asr", "hf")], tmp_path / "x", options)
    assert "int8" in caught.value.hint
    assert "q8_0" in caught.value.hint
    assert not (tmp_path / "x").exists()


def test_interrupted_conversion_leaves_nothing_that_looks_complete(
    tmp_path, checkpoints, monkeypatch
):
    previous = convert(checkpoints[("asr", "hf")], tmp_path / "m", FAST)
    before = read_manifest(previous.folder)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    real_writers = convert_module._writers

    def broken_writers(kind):
        encoder, _, extra = real_writers(kind)
        return encoder, crash, extra

    monkeypatch.setattr(convert_module, "_writers", broken_writers)
    with pytest.raises(KeyboardInterrupt):
        convert(
            checkpoints[("asr", "hf")], tmp_path / "m", ConvertOptions(decoder_quants=("q4_k",))
        )
    with pytest.raises(KeyboardInterrupt):
        convert(checkpoints[("asr", "hf")], tmp_path / "fresh", FAST)
    assert read_manifest(tmp_path / "m") == before  # the earlier conversion is untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m"]


CONVERT_ONCE = """
import json, sys
from qwenscribe.convert.convert import ConvertOptions, convert
result = convert(sys.argv[1], sys.argv[2], ConvertOptions(("fp32",), ("f16",)))
print(json.dumps({"skipped": result.skipped}))
"""


def test_two_processes_converting_into_one_folder_convert_once(tmp_path, checkpoints):
    """Two `transcribe` runs needing the same model at once: one converts, the other waits for
    it and finds the folder done (without the lock both converted, the second replacing the
    first's folder under it)."""
    out = tmp_path / "shared"
    command = [sys.executable, "-c", CONVERT_ONCE, str(checkpoints[("asr", "hf")]), str(out)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
    skipped = sorted(json.loads(stdout.splitlines()[-1])["skipped"] for stdout, _ in results)
    assert skipped == [False, True]
    waited = [stderr for _, stderr in results if "Another qwenscribe is converting" in stderr]
    assert len(waited) <= 1  # the second said why it waited (unless it started after the first)
    assert read_manifest(out) is not None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shared"]


def test_a_damaged_conversion_is_converted_again(tmp_path, checkpoints, caplog):
    """A file cut short or gone: the same request converts again instead of saying 'done'."""
    convert(checkpoints[("asr", "hf")], tmp_path / "m", FAST)
    decoder = tmp_path / "m" / "decoder.f16.gguf"
    size = decoder.stat().st_size
    decoder.write_bytes(decoder.read_bytes()[: size // 2])
    again = convert(checkpoints[("asr", "hf")], tmp_path / "m", FAST)
    assert not again.skipped
    assert decoder.stat().st_size == size
    assert "decoder.f16.gguf missing or of the wrong size; converting it again" in caplog.text
    assert convert(checkpoints[("asr", "hf")], tmp_path / "m", FAST).skipped


def test_a_damaged_cached_conversion_repairs_itself(checkpoints):
    """The cache's conversions are derived data: a file lost from one is made again on the next
    load, where a folder the user converted and named is refused (test_engine_failures)."""
    source = str(checkpoints[("asr", "hf")])
    files = hybrid_model_files(source, "fp32", "f16")
    lost = files.folder / "encoder_backend.fp32.onnx"
    size = lost.stat().st_size
    lost.unlink()
    again = hybrid_model_files(source, "fp32", "f16")
    assert again.folder == files.folder
    assert lost.stat().st_size == size


def test_a_foreign_folder_is_not_overwritten(tmp_path, checkpoints):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ModelError, match="not a qwenscribe model folder"):
        convert(checkpoints[("asr", "hf")], tmp_path / "mine", FAST)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_file_as_the_output_folder_is_refused_before_converting(tmp_path, checkpoints):
    blocker = tmp_path / "model.gguf"
    blocker.write_text("keep")
    with pytest.raises(ModelError, match=r"model\.gguf is a file, not a folder"):
        convert(checkpoints[("asr", "hf")], blocker, FAST)
    assert blocker.read_text() == "keep"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.gguf"]


def test_a_full_disk_is_one_sentence_not_a_traceback(tmp_path, checkpoints, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out"))

    monkeypatch.setattr(convert_module, "_build", full)
    args = ["convert", str(checkpoints[("asr", "hf")]), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert f"error: No space left on device: {tmp_path / 'out'}." in result.output
    assert "free disk space" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert not [path for path in tmp_path.iterdir() if ".partial-" in path.name]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ConvertOptions(encoder_precisions=("fp8",)), "Unknown encoder precision fp8"),
        (ConvertOptions(decoder_quants=("q3_xs",)), "Unknown decoder quantization q3_xs"),
    ],
)
def test_unknown_precisions_name_the_choices(tmp_path, checkpoints, options, message):
    with pytest.raises(ModelError, match=message):
        convert(checkpoints[("asr", "hf")], tmp_path / "x", options)
    assert not (tmp_path / "x").exists()


def test_hub_id_offline_says_what_to_pass(tmp_path):
    with pytest.raises(ModelUnavailableError, match="--model PATH"):
        convert("Qwen/Qwen3-ASR-1.7B", tmp_path / "x", FAST)


def test_cli_convert_then_nothing_to_do(tmp_path, checkpoints):
    runner = CliRunner()
    args = ["convert", str(checkpoints[("aligner", "original")]), "--out", str(tmp_path / "a")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "a" / "manifest.json").exists()
    second = runner.invoke(app, args)
    assert second.exit_code == 0
    assert "nothing to do" in second.output
    bad = runner.invoke(app, ["convert", str(tmp_path), "--out", str(tmp_path / "b")])
    assert bad.exit_code == 3
    assert "has no config.json" in bad.output


def test_conversion_never_imports_torch(tmp_path, checkpoints):
    result = run_without_torch(f"""
from qwenscribe.convert.convert import ConvertOptions, convert
convert({str(checkpoints[("aligner", "original")])!r}, {str(tmp_path / "out")!r},
        ConvertOptions(encoder_precisions=("fp32", "int8"), decoder_quants=("f16", "q8_0")))
print("ok")
""")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
