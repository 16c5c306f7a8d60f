"""Random-weight checkpoints of the true Qwen3-ASR architecture, in both download layouts.

No machine of ours can download the real weights, so correctness is shown by equivalence with
transformers on checkpoints the project writes itself: the real tensor names, shapes and dtype
(bfloat16, sharded above a size), the real config files, and a tokenizer whose special tokens
sit at the real ids. Values are random but deterministic from the seed, tensor by tensor.
No torch: numpy, ml_dtypes, tokenizers and a streaming safetensors writer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

from qwenscribe.model import tokens
from qwenscribe.model.architecture import (
    N_WINDOW,
    TIMESTAMP_SEGMENT_MS,
    Architecture,
    Kind,
    Size,
    TensorSpec,
    architecture,
    model_tensors,
)
from qwenscribe.model.layout import Layout, hf_config, original_config, original_name
from qwenscribe.testing import chat_templates
from qwenscribe.testing.safetensors_stream import StreamedTensor, write_safetensors
from qwenscribe.testing.tokenizer import build_tokenizer, write_tokenizer

DEFAULT_MAX_SHARD_BYTES = 4 * 1024**3
_BLOCK_ELEMENTS = 1 << 22  # rows are generated in blocks of about this many values

# Standard deviations of the random values. The embedding and the output head are large so
# that the winning token's logit margin dwarfs float noise between two correct runtimes
# (shared/DESIGN.md, "near-ties"); matrices are scaled by 1/sqrt(fan_in) so activations stay
# of order one through every layer and a parity test compares meaningful numbers.
_EMBEDDING_STD = 0.5
_NORM_STD = 0.1
_BIAS_STD = 0.02


def _values_key(spec: TensorSpec, arch: Architecture) -> str:
    """The name whose seed fills a tensor: a tied head repeats the embedding exactly."""
    if spec.init == "head" and arch.decoder.tied_embeddings:
        return "model.language_model.embed_tokens.weight"
    return spec.name


def _blocks(spec: TensorSpec, key: str, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))
    rows = spec.shape[0]
    row_size = spec.numel // rows
    block_rows = max(1, _BLOCK_ELEMENTS // row_size)
    if spec.init in ("embedding", "head"):
        scale, offset = _EMBEDDING_STD, 0.0
    elif spec.init == "matrix":
        scale, offset = row_size**-0.5, 0.0
    elif spec.init == "norm":
        scale, offset = _NORM_STD, 1.0
    else:
        scale, offset = _BIAS_STD, 0.0
    for start in range(0, rows, block_rows):
        count = min(block_rows, rows - start)
        values = rng.standard_normal((count, row_size), dtype=np.float32)
        values *= np.float32(scale)
        values += np.float32(offset)
        yield values.astype(ml_dtypes.bfloat16).tobytes()


def _streamed(arch: Architecture, layout: Layout, seed: int) -> list[StreamedTensor]:
    streamed = []
    for spec in model_tensors(arch):
        if layout == "hf" and spec.init == "head" and arch.decoder.tied_embeddings:
            continue  # transformers does not save a tied head; the original release does
        name = spec.name if layout == "hf" else original_name(spec.name, arch.kind)
        key = _values_key(spec, arch)
        streamed.append(
            StreamedTensor(
                name, spec.shape, "BF16", lambda spec=spec, key=key: _blocks(spec, key, seed)
            )
        )
    return streamed


def _shard(tensors: list[StreamedTensor], max_bytes: int) -> list[list[StreamedTensor]]:
    shards: list[list[StreamedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def _write_weights(folder: Path, tensors: list[StreamedTensor], max_shard_bytes: int) -> None:
    shards = _shard(tensors, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors(folder / "model.safetensors", shards[0])
        return
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / filename, shard)
        weight_map.update({tensor.name: filename for tensor in shard})
    index_json = {
        "metadata": {"total_size": sum(t.nbytes for t in tensors)},
        "weight_map": weight_map,
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2), "utf-8")


def _feature_extractor_config() -> dict:
    return {
        "feature_extractor_type": "Qwen3ASRFeatureExtractor",
        "feature_size": 128,
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 30,
        "n_window": N_WINDOW,
        "padding_side": "right",
        "padding_value": 0.0,
        "dither": 0.0,
        "return_attention_mask": True,
        "processor_class": "Qwen3ASRProcessor",
    }


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _write_processing_files(folder: Path, arch: Architecture, layout: Layout) -> None:
    template = chat_templates.ASR if arch.kind == "asr" else chat_templates.ALIGNER
    _write_json(folder / "preprocessor_config.json", _feature_extractor_config())
    if layout == "original":
        _write_json(folder / "chat_template.json", {"chat_template": template})
    else:
        (folder / "chat_template.jinja").write_text(template, "utf-8")
        _write_json(
            folder / "processor_config.json",
            {
                "processor_class": "Qwen3ASRProcessor",
                "timestamp_segment_time": TIMESTAMP_SEGMENT_MS,
            },
        )
    if arch.kind == "asr":
        _write_json(
            folder / "generation_config.json",
            {
                "eos_token_id": list(tokens.EOS_IDS[::-1]),
                "pad_token_id": tokens.IM_END_ID,
                "do_sample": False,
                "max_new_tokens": 512,
            },
        )


def write_checkpoint(
    path: str | os.PathLike[str],
    kind: Kind = "asr",
    size: Size = "tiny",
    layout: Layout = "original",
    seed: int = 0,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Write a random-weight checkpoint of a Qwen3-ASR model and return its folder.

    kind: "asr" or "aligner"; size: "tiny" (tests), "0.6b" or "1.7b" (the real dimensions);
    layout: "original" (the Qwen release) or "hf" (transformers-native). Weights are bfloat16,
    split into shards of at most `max_shard_bytes` with an index file when they do not fit one.
    The folder appears whole or not at all: it is written beside and renamed into place.
    """
    if layout not in ("original", "hf"):
        raise ValueError(f"layout must be 'original' or 'hf', not {layout!r}")
    arch = architecture(kind, size)
    target = Path(path)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty (pass overwrite=True)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        config = original_config(arch) if layout == "original" else hf_config(arch)
        _write_json(staging / "config.json", config)
        write_tokenizer(staging, build_tokenizer(), with_tokenizer_json=layout == "hf")
        _write_processing_files(staging, arch, layout)
        _write_weights(staging, _streamed(arch, layout, seed), max_shard_bytes)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
