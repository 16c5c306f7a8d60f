"""`write_checkpoint`: files, tensors, values, determinism, sharding, atomicity, no torch.

Tensors are read back with the safetensors library (names, shapes, dtypes) and by the file
format itself (raw values), never through the writer's own code.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer

from qwenscribe.model.architecture import architecture, model_tensors
from qwenscribe.model.layout import original_name
from qwenscribe.testing import checkpoint as checkpoint_module
from qwenscribe.testing import write_checkpoint
from torchless import run_without_torch

ORIGINAL_FILES = {
    "config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "chat_template.json",
}
HF_FILES = {
    "config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "tokenizer.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
}


def tensor_values(folder: Path, name: str) -> np.ndarray:
    """A bf16 tensor as float32, read by the safetensors format (header + raw bytes)."""
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
            if name not in header:
                continue
            start, end = header[name]["data_offsets"]
            handle.seek(8 + length + start)
            raw = handle.read(end - start)
        values = np.frombuffer(raw, dtype=ml_dtypes.bfloat16).astype(np.float32)
        return values.reshape(header[name]["shape"])
    raise KeyError(name)


def stored_tensors(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = handle.get_slice(key)
                found[key] = (tuple(tensor.get_shape()), tensor.get_dtype())
    return found


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("kind", "layout"),
    [("asr", "original"), ("asr", "hf"), ("aligner", "original"), ("aligner", "hf")],
)
def test_every_tensor_is_stored_with_its_name_shape_and_bf16(checkpoints, kind, layout):
    folder = checkpoints[(kind, layout)]
    arch = architecture(kind, "tiny")
    expected = {}
    for spec in model_tensors(arch):
        tied_head = spec.init == "head" and arch.decoder.tied_embeddings
        if layout == "hf" and tied_head:
            continue  # transformers saves a tied head once, as the embedding
        name = spec.name if layout == "hf" else original_name(spec.name, kind)
        expected[name] = (spec.shape, "BF16")
    assert stored_tensors(folder) == expected


@pytest.mark.parametrize(
    ("kind", "layout"),
    [("asr", "original"), ("asr", "hf"), ("aligner", "original"), ("aligner", "hf")],
)
def test_the_layout_has_its_files(checkpoints, kind, layout):
    names = {path.name for path in checkpoints[(kind, layout)].iterdir()}
    expected = ORIGINAL_FILES if layout == "original" else HF_FILES
    assert expected <= names
    assert ("generation_config.json" in names) == (kind == "asr")
    assert "model.safetensors" in names


def test_original_asr_stores_the_tied_head_as_a_copy_of_the_embedding(checkpoints):
    folder = checkpoints[("asr", "original")]
    head = tensor_values(folder, "thinker.lm_head.weight")
    embedding = tensor_values(folder, "thinker.model.embed_tokens.weight")
    assert np.array_equal(head, embedding)


def test_aligner_head_is_its_own_tensor(checkpoints):
    folder = checkpoints[("aligner", "original")]
    head = tensor_values(folder, "thinker.lm_head.weight")
    embedding = tensor_values(folder, "thinker.model.embed_tokens.weight")
    assert not np.array_equal(head, embedding[: head.shape[0]])


def test_both_layouts_of_one_seed_hold_the_same_values(checkpoints):
    original = checkpoints[("asr", "original")]
    hf = checkpoints[("asr", "hf")]
    for name in (
        "model.audio_tower.conv2d1.weight",
        "model.multi_modal_projector.linear_2.bias",
        "model.language_model.layers.1.mlp.down_proj.weight",
    ):
        assert np.array_equal(
            tensor_values(hf, name), tensor_values(original, original_name(name, "asr"))
        )


def test_value_scales_follow_the_design(checkpoints):
    folder = checkpoints[("asr", "hf")]
    embedding = tensor_values(folder, "model.language_model.embed_tokens.weight")
    # A large embedding / tied head keeps greedy choices clear of float noise (DESIGN.md).
    assert embedding.std() == pytest.approx(0.5, rel=0.02)
    down = tensor_values(folder, "model.language_model.layers.0.mlp.down_proj.weight")
    assert down.std() == pytest.approx(down.shape[1] ** -0.5, rel=0.05)
    norm = tensor_values(folder, "model.language_model.norm.weight")
    assert norm.mean() == pytest.approx(1.0, abs=0.05)
    assert 0.0 < norm.std() < 0.2  # not all ones: a swapped norm would show in parity tests


def test_same_seed_same_bytes_other_seed_other_values(tmp_path):
    first = write_checkpoint(tmp_path / "a", kind="aligner", layout="hf", seed=7)
    again = write_checkpoint(tmp_path / "b", kind="aligner", layout="hf", seed=7)
    other = write_checkpoint(tmp_path / "c", kind="aligner", layout="hf", seed=8)
    assert folder_digest(first) == folder_digest(again)
    name = "model.audio_tower.layers.0.fc1.weight"
    assert not np.array_equal(tensor_values(first, name), tensor_values(other, name))


def test_large_weights_are_sharded_with_an_index(tmp_path):
    folder = write_checkpoint(
        tmp_path / "sharded", kind="asr", layout="original", max_shard_bytes=8 * 1024 * 1024
    )
    shards = sorted(path.name for path in folder.glob("*.safetensors"))
    assert len(shards) > 1
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    stored = {}
    for shard in shards:
        with safe_open(folder / shard, framework="numpy") as handle:
            stored.update(dict.fromkeys(handle.keys(), shard))
    assert index["weight_map"] == stored
    sizes = sum((folder / shard).stat().st_size for shard in shards)
    assert index["metadata"]["total_size"] < sizes  # data only, headers excluded
    assert index["metadata"]["total_size"] > sizes - len(shards) * 64 * 1024


def test_an_existing_folder_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_checkpoint(target)
    assert (target / "keep.txt").read_text() == "mine"
    write_checkpoint(target, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert (target / "config.json").exists()


def test_a_failure_half_way_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "write_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


# Special token ids of the released tokenizer (REFERENCE.md).
REAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|audio_start|>": 151669,
    "<|audio_end|>": 151670,
    "<|audio_pad|>": 151676,
    "<asr_text>": 151704,
    "<timestamp>": 151705,
}


def test_tokenizer_special_tokens_sit_at_the_real_ids(checkpoints):
    tokenizer = Tokenizer.from_file(str(checkpoints[("asr", "hf")] / "tokenizer.json"))
    for text, token_id in REAL_IDS.items():
        assert tokenizer.token_to_id(text) == token_id
        assert tokenizer.encode(text).ids == [token_id]
    assert tokenizer.get_vocab_size(with_added_tokens=False) == 151643
    config = json.loads((checkpoints[("asr", "original")] / "tokenizer_config.json").read_text())
    decoder = {int(key): value["content"] for key, value in config["added_tokens_decoder"].items()}
    assert {text: decoder[token_id] for text, token_id in REAL_IDS.items()} == {
        text: text for text in REAL_IDS
    }
    vocab = json.loads((checkpoints[("asr", "original")] / "vocab.json").read_text())
    assert sorted(vocab.values()) == list(range(151643))


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox.",
        "今天天气很好。我们去公园散步吧。",
        "It's 2026, don't   panic!\n",
        "Ünïcödé ça va? Привет",
    ],
)
def test_tokenizer_round_trips_text_in_few_tokens(checkpoints, text):
    tokenizer = Tokenizer.from_file(str(checkpoints[("asr", "hf")] / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert len(ids) < len(text.encode("utf-8"))  # merges were learned: fewer tokens than bytes


def test_asr_text_survives_decoding_but_chat_markup_does_not(checkpoints):
    tokenizer = Tokenizer.from_file(str(checkpoints[("asr", "hf")] / "tokenizer.json"))
    ids = tokenizer.encode("<|im_start|>language English<asr_text>hello<|im_end|>").ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "language English<asr_text>hello"


def test_writer_and_package_never_import_torch(tmp_path):
    result = run_without_torch(f"""
import qwenscribe, qwenscribe.cli, qwenscribe.model.resolve
from qwenscribe.testing import write_checkpoint
write_checkpoint({str(tmp_path / "ckpt")!r}, kind="aligner", layout="original")
print("ok")
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_real_size_checkpoint_streams_in_bounded_memory(tmp_path):
    # 0.6B in the original layout: ~1.9 GB of bf16 on disk. Peak memory must stay far below it.
    # VmHWM is this process's own peak: ru_maxrss would include the parent's (pytest's) RSS,
    # which Linux carries into the child across fork + exec.
    script = f"""
from qwenscribe.testing import write_checkpoint
write_checkpoint({str(tmp_path / "real")!r}, kind="asr", size="0.6b", layout="original")
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_mib = int(result.stdout.strip()) / 1024
    folder = tmp_path / "real"
    on_disk = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    arch = architecture("asr", "0.6b")
    stored_elements = sum(spec.numel for spec in model_tensors(arch))  # head stored too
    assert on_disk == pytest.approx(2 * stored_elements, rel=0.001)
    assert peak_mib < 600, f"peak RSS {peak_mib:.0f} MiB for a {on_disk / 2**30:.2f} GiB checkpoint"
