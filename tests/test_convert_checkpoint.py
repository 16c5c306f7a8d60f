"""Reading checkpoints of either layout for conversion, and the errors for broken ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.errors import ModelError
from qwenscribe.model.architecture import model_tensors
from qwenscribe.testing import write_checkpoint


@pytest.fixture
def broken(tmp_path, checkpoints):
    """A private copy of the tiny original ASR checkpoint to damage."""
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoints[("asr", "original")], target)
    return target


@pytest.mark.parametrize("kind", ["asr", "aligner"])
def test_both_layouts_read_the_same_tensors(checkpoints, kind):
    original = Checkpoint(checkpoints[(kind, "original")])
    hf = Checkpoint(checkpoints[(kind, "hf")])
    assert (original.layout, hf.layout) == ("original", "hf")
    assert original.arch == hf.arch
    assert original.arch.size == "tiny"
    for name in hf.names():
        first, second = original.tensor(name), hf.tensor(name)
        assert first.dtype == np.float32
        assert np.array_equal(first, second), name


def test_tied_head_reads_the_embedding(checkpoints):
    hf = Checkpoint(checkpoints[("asr", "hf")])
    assert "lm_head.weight" not in hf.names()
    embedding = hf.tensor("model.language_model.embed_tokens.weight")
    assert np.array_equal(hf.tensor("lm_head.weight"), embedding)


def test_every_expected_tensor_is_listed(checkpoints):
    aligner = Checkpoint(checkpoints[("aligner", "original")])
    assert aligner.names() == [spec.name for spec in model_tensors(aligner.arch)]
    assert aligner.shape("score.weight") == (5000, 64)


def test_sharded_checkpoint_reads_like_a_single_file(tmp_path, checkpoints):
    sharded = Checkpoint(
        write_checkpoint(tmp_path / "s", kind="asr", layout="hf", max_shard_bytes=4 * 1024 * 1024)
    )
    single = Checkpoint(checkpoints[("asr", "hf")])
    for name in single.names():
        assert np.array_equal(sharded.tensor(name), single.tensor(name))


def test_no_weights(broken):
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"no \*\.safetensors weights"):
        Checkpoint(broken)


def test_truncated_file(broken):
    path = broken / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        Checkpoint(broken)


def test_garbage_file(broken):
    (broken / "model.safetensors").write_bytes(b"\x00\x01not a model at all" * 10)
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        Checkpoint(broken)


def test_missing_shard_is_named(tmp_path):
    folder = write_checkpoint(
        tmp_path / "s", kind="asr", layout="original", max_shard_bytes=8 * 1024 * 1024
    )
    shards = sorted(folder.glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(ModelError, match=shards[-1].name):
        Checkpoint(folder)


def test_config_that_disagrees_with_the_weights(broken):
    config = json.loads((broken / "config.json").read_text())
    config["thinker_config"]["text_config"]["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"mlp\.gate_proj\.weight has shape \[128, 64\]"):
        Checkpoint(broken)


def test_config_with_more_layers_than_weights(broken):
    config = json.loads((broken / "config.json").read_text())
    config["thinker_config"]["audio_config"]["encoder_layers"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"layers\.2\..* is missing"):
        Checkpoint(broken)
