"""Write the Qwen3-ASR text decoder (a Qwen3 LLM) as a GGUF file that llama.cpp runs. No torch.

The decoder becomes llama.cpp's `qwen3` architecture with the full byte-level BPE tokenizer, so
the file also loads in stock llama.cpp tools. Decisions, each checked by parity tests against
transformers (tests/test_convert_gguf_decoder.py):

- q/k are not permuted: llama.cpp's qwen3 graph uses NEOX-style RoPE (rotate-half), the same as
  transformers, so the HF weights go in as they are. (Only the `llama` architecture wants them
  permuted to its interleaved RoPE.)
- RoPE base and key/value lengths are written explicitly: llama.cpp silently assumes base 10000,
  and derives head_dim from hidden / heads (64 for the 0.6B models, whose head_dim is 128).
- Tied ASR head: no `output.weight` is written. llama.cpp then multiplies by `token_embd`, which
  is exactly what a tied head is, and the file is one vocab x hidden matrix smaller (0.3-0.6 GB
  at f16). llama.cpp's quantizer also treats `token_embd` as the output tensor then and gives it
  the higher-precision type an output head gets.
- Aligner, two forms. Neither pads the 5000-class timestamp head to the 152k vocabulary, which
  would cost a 152k x hidden product per scored position, 30x the useful work.
  `write_decoder_gguf` gives the decoder without a head, plus `write_aligner_head`'s
  `timestamp_head.npy`: final-norm hidden states from embeddings mode (pooling NONE) times the
  head, at the `<timestamp>` positions. It takes token ids, but llama.cpp wastes work on it: in
  embeddings mode every position is an output, and each is still multiplied by a head, with
  `token_embd` standing in for the missing `output.weight` (measured: +33% on the 0.6B
  aligner's prefill, and a logits buffer of n_batch x 152064 floats).
  `write_aligner_gguf` gives the scorer, which costs only the useful work: the timestamp head is
  the file's output head (stored as `token_embd`, with a 5000-class placeholder vocabulary), so
  ordinary logits at the flagged `<timestamp>` positions are the class scores. Its input is
  embeddings only, looked up by the runtime in `write_token_embeddings`' table.
- f32/f16/bf16 are written here, tensor by tensor. Other types are made by llama.cpp's own
  quantizer (`llama_model_quantize`) from a lossless intermediate GGUF written beside the target
  and removed afterwards: bf16 for tensors whose values are bfloat16 (the released weights are),
  f32 otherwise, so the quantizer sees exactly the checkpoint's values.
- Memory: one source tensor is held at a time (the embedding is the largest: vocab x hidden x 4
  bytes, 0.6 GB for 0.6B, 1.2 GB for 1.7B); its conversion to f16/bf16 and the writing go in
  blocks of rows, so no second full-size copy is made. Measured peak RSS converting the 0.6B
  decoder: 0.96 GB (f32/f16/bf16), 1.13 GB (q8_0, llama.cpp's quantizer included).
- Every file is written under a temporary name in the target folder and renamed into place when
  complete: an interrupted conversion leaves no half-written model.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import gguf
import ml_dtypes
import numpy as np

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.errors import ModelError
from qwenscribe.log_levels import logger_level
from qwenscribe.model import tokens
from qwenscribe.model.architecture import RMS_NORM_EPS, ROPE_THETA, TIMESTAMP_CLASSES

log = logging.getLogger(__name__)

QUANTS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k", "q4_k", "q4_0")
TIMESTAMP_HEAD_FILE = "timestamp_head.npy"
TOKEN_EMBEDDINGS_FILE = "token_embeddings.npy"

ARCH = "qwen3"
_HF_PREFIX = "model.language_model."

# Types written directly: 2-D tensors in the named type; 1-D tensors (norm weights) always f32,
# as llama.cpp's converter does: they are tiny and ggml's elementwise ops want f32.
_DIRECT = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
}
_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
}
# The k-quants are the "_M" mixes, what people mean by q4_k / q5_k: attn_v and ffn_down of some
# layers and the output head get a higher type, which costs little and helps quality.
_LLAMA_FTYPES = {
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K,
    "q5_k": gguf.LlamaFileType.MOSTLY_Q5_K_M,
    "q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_M,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
}
_LOSSLESS = "lossless"  # the quantizer's input: bf16 where exact, else f32

_BLOCK_BYTES = 64 * 1024 * 1024  # rows are converted and written in blocks of about this size

# HF decoder-layer tensor -> llama.cpp tensor, named through gguf's own table for `qwen3`.
_LAYER_TENSORS = (
    ("input_layernorm", gguf.MODEL_TENSOR.ATTN_NORM),
    ("self_attn.q_proj", gguf.MODEL_TENSOR.ATTN_Q),
    ("self_attn.k_proj", gguf.MODEL_TENSOR.ATTN_K),
    ("self_attn.v_proj", gguf.MODEL_TENSOR.ATTN_V),
    ("self_attn.o_proj", gguf.MODEL_TENSOR.ATTN_OUT),
    ("self_attn.q_norm", gguf.MODEL_TENSOR.ATTN_Q_NORM),
    ("self_attn.k_norm", gguf.MODEL_TENSOR.ATTN_K_NORM),
    ("post_attention_layernorm", gguf.MODEL_TENSOR.FFN_NORM),
    ("mlp.gate_proj", gguf.MODEL_TENSOR.FFN_GATE),
    ("mlp.up_proj", gguf.MODEL_TENSOR.FFN_UP),
    ("mlp.down_proj", gguf.MODEL_TENSOR.FFN_DOWN),
)


def decoder_filename(quant: str) -> str:
    return f"decoder.{quant}.gguf"


def aligner_filename(quant: str) -> str:
    return f"aligner.{quant}.gguf"


def _check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise ValueError(
            f"Unknown decoder quantization {quant!r}; choose one of {', '.join(QUANTS)}."
        )


# ---------------------------------------------------------------------------------------------
# Tensors


@dataclass(frozen=True)
class _Tensor:
    gguf_name: str
    hf_name: str
    shape: tuple[int, ...]  # numpy order ([out, in]); gguf reverses it into ggml's ne order
    dtype: gguf.GGMLQuantizationType


def _gguf_name(tensor: gguf.MODEL_TENSOR, layer: int | None = None) -> str:
    if tensor not in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN3]:
        raise AssertionError(f"{tensor} is not a tensor of llama.cpp's qwen3")  # gguf changed
    return gguf.TENSOR_NAMES[tensor].format(bid=layer) + ".weight"


def _tensor_names(checkpoint: Checkpoint, scorer: bool = False) -> list[tuple[str, str]]:
    """(gguf name, hf name) of every tensor, in llama.cpp's usual order.

    scorer: the aligner's timestamp head stands in for `token_embd`, so that llama.cpp, finding
    no `output.weight`, uses it as the (5000-class) output head.
    """
    dec = checkpoint.arch.decoder
    embedding = "score.weight" if scorer else f"{_HF_PREFIX}embed_tokens.weight"
    names = [(_gguf_name(gguf.MODEL_TENSOR.TOKEN_EMBD), embedding)]
    for layer in range(dec.layers):
        for hf_part, tensor in _LAYER_TENSORS:
            names.append(
                (_gguf_name(tensor, layer), f"{_HF_PREFIX}layers.{layer}.{hf_part}.weight")
            )
    names.append((_gguf_name(gguf.MODEL_TENSOR.OUTPUT_NORM), f"{_HF_PREFIX}norm.weight"))
    # An untied ASR head (a fine-tune may untie it) must be written; the tied head and the
    # aligner's timestamp head are not (see the module docstring).
    if checkpoint.arch.kind == "asr" and not dec.tied_embeddings:
        names.append((_gguf_name(gguf.MODEL_TENSOR.OUTPUT), "lm_head.weight"))
    return names


def _row_blocks(values: np.ndarray) -> Iterator[np.ndarray]:
    """The rows of a tensor in blocks of about _BLOCK_BYTES (a 1-D tensor is one block)."""
    if values.ndim < 2:
        yield values
        return
    row_bytes = max(1, values[0].nbytes)
    step = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, values.shape[0], step):
        yield values[start : start + step]


def _is_bfloat16(values: np.ndarray) -> bool:
    """Whether every value survives a round trip through bfloat16 (NaN-free weights assumed)."""
    for block in _row_blocks(values):
        if not np.array_equal(block.astype(ml_dtypes.bfloat16).astype(np.float32), block):
            return False
    return True


def _storage(checkpoint: Checkpoint, hf_name: str, mode: str) -> gguf.GGMLQuantizationType:
    shape = checkpoint.shape(hf_name)
    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    if mode != _LOSSLESS:
        return _DIRECT[mode]
    # One extra read of the tensor, worth it: a bf16 intermediate is half the size of f32.
    if _is_bfloat16(checkpoint.tensor(hf_name)):
        return gguf.GGMLQuantizationType.BF16
    return gguf.GGMLQuantizationType.F32


def _plan(checkpoint: Checkpoint, mode: str, scorer: bool) -> list[_Tensor]:
    return [
        _Tensor(gguf_name, hf_name, checkpoint.shape(hf_name), _storage(checkpoint, hf_name, mode))
        for gguf_name, hf_name in _tensor_names(checkpoint, scorer)
    ]


def _nbytes(tensor: _Tensor) -> int:
    count = int(np.prod(tensor.shape))
    return count * (4 if tensor.dtype == gguf.GGMLQuantizationType.F32 else 2)


def _encode(block: np.ndarray, dtype: gguf.GGMLQuantizationType, name: str) -> np.ndarray:
    if dtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(block, dtype=np.float32)
    if dtype == gguf.GGMLQuantizationType.BF16:
        return block.astype(ml_dtypes.bfloat16).view(np.uint16)
    encoded = block.astype(np.float16)
    if not np.isfinite(encoded).all():
        raise ModelError(
            f"{name} has values outside the float16 range.", "Convert to bf16 or f32 instead."
        )
    return encoded


def _write_tensor_data(out: BinaryIO, checkpoint: Checkpoint, tensor: _Tensor) -> None:
    """One tensor's data, aligned as GGUF wants, converted and written in blocks of rows."""
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    out.write(b"\0" * (-out.tell() % alignment))
    written = 0
    values = checkpoint.tensor(tensor.hf_name)
    for block in _row_blocks(values):
        data = _encode(block, tensor.dtype, tensor.hf_name)
        out.write(memoryview(np.ascontiguousarray(data)))  # no copy of the block
        written += data.nbytes
    if written != _nbytes(tensor):
        raise AssertionError(
            f"{tensor.gguf_name}: wrote {written} bytes, declared {_nbytes(tensor)}"
        )


# ---------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class _Vocabulary:
    tokens: list[str]
    types: list[int]
    merges: list[str]


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _regular_vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[str]]:
    """The BPE vocabulary and merges, from vocab.json + merges.txt or else tokenizer.json."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = _read_json(folder / "vocab.json")
        lines = (folder / "merges.txt").read_text("utf-8").splitlines()
        merges = [line for line in lines if line and not line.startswith("#version")]
        return vocab, merges
    if (folder / "tokenizer.json").is_file():
        model = _read_json(folder / "tokenizer.json")["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return model["vocab"], merges
    raise ModelError(
        f"{folder} has no tokenizer (vocab.json + merges.txt, or tokenizer.json).",
        "Download the checkpoint again, all files.",
    )


def _added_tokens(folder: Path) -> dict[int, tuple[str, bool]]:
    """Added tokens by id as (text, special)."""
    config_path, json_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if config_path.is_file() and "added_tokens_decoder" in (config := _read_json(config_path)):
        return {
            int(token_id): (entry["content"], bool(entry.get("special", False)))
            for token_id, entry in config["added_tokens_decoder"].items()
        }
    if json_path.is_file():
        return {
            int(entry["id"]): (entry["content"], bool(entry.get("special", False)))
            for entry in _read_json(json_path).get("added_tokens", [])
        }
    return {}


def _vocabulary(folder: Path, vocab_size: int) -> _Vocabulary:
    """Token strings and types for every id below the model's vocab_size.

    Regular tokens stay in their byte-level form (llama.cpp decodes them); added tokens are
    plain text: CONTROL when special (only parsed from text when asked, not printed by
    default), USER_DEFINED otherwise (always matched, printed, like `<asr_text>`). Ids the
    tokenizer does not fill get "[PAD<id>]" placeholders, as llama.cpp's own converter does:
    the embedding matrix is larger than the tokenizer.
    """
    regular, merges = _regular_vocab_and_merges(folder)
    by_id: dict[int, tuple[str, int]] = {
        token_id: (text, gguf.TokenType.NORMAL) for text, token_id in regular.items()
    }
    for token_id, (text, special) in _added_tokens(folder).items():
        kind = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        by_id[token_id] = (text, kind)
    if by_id and max(by_id) >= vocab_size:
        raise ModelError(
            f"{folder}: the tokenizer has token id {max(by_id)}, beyond the model's "
            f"vocabulary of {vocab_size}.",
            "The tokenizer files do not belong to these weights; download the checkpoint again.",
        )
    texts, types = [], []
    for token_id in range(vocab_size):
        text, kind = by_id.get(token_id, (f"[PAD{token_id}]", gguf.TokenType.UNUSED))
        texts.append(text)
        types.append(int(kind))
    return _Vocabulary(texts, types, merges)


# ---------------------------------------------------------------------------------------------
# GGUF


def _output(checkpoint: Checkpoint, scorer: bool) -> str:
    """What the file's logits are, recorded for the runtime to check."""
    if scorer:
        return "timestamp_classes"
    return "vocabulary" if checkpoint.arch.kind == "asr" else "none"


def _add_metadata(
    writer: gguf.GGUFWriter, checkpoint: Checkpoint, file_type: int, scorer: bool
) -> None:
    dec = checkpoint.arch.decoder
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"Qwen3-ASR {checkpoint.arch.kind} decoder")
    writer.add_file_type(file_type)
    writer.add_context_length(dec.max_positions)
    writer.add_embedding_length(dec.hidden)
    writer.add_block_count(dec.layers)
    writer.add_feed_forward_length(dec.ffn)
    writer.add_head_count(dec.heads)
    writer.add_head_count_kv(dec.kv_heads)
    writer.add_key_length(dec.head_dim)
    writer.add_value_length(dec.head_dim)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_vocab_size(TIMESTAMP_CLASSES if scorer else dec.vocab)
    # Not llama.cpp's: let the runtime check it was given the right file.
    writer.add_string("qwenscribe.kind", checkpoint.arch.kind)
    writer.add_string("qwenscribe.output", _output(checkpoint, scorer))


def _add_tokenizer(writer: gguf.GGUFWriter, checkpoint: Checkpoint) -> None:
    vocabulary = _vocabulary(checkpoint.folder, checkpoint.arch.decoder.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")  # llama.cpp's name for Qwen2's split pattern
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.types)
    writer.add_token_merges(vocabulary.merges)
    # The gpt2 tokenizer defaults to BOS = EOS = 11; Qwen adds no BOS at all.
    writer.add_bos_token_id(tokens.ENDOFTEXT_ID)
    writer.add_eos_token_id(tokens.IM_END_ID)
    writer.add_eot_token_id(tokens.IM_END_ID)
    writer.add_pad_token_id(tokens.ENDOFTEXT_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _add_class_vocabulary(writer: gguf.GGUFWriter) -> None:
    """One placeholder token per timestamp class: llama.cpp sizes its output head by the
    vocabulary. Nothing is ever tokenized with it (the scorer takes embeddings only); the
    single merge is there because llama.cpp refuses a gpt2 vocabulary without merges."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([f"[CLASS{index}]" for index in range(TIMESTAMP_CLASSES)])
    writer.add_token_types([int(gguf.TokenType.NORMAL)] * TIMESTAMP_CLASSES)
    writer.add_token_merges(["[CLASS0] [CLASS1]"])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _write_gguf(checkpoint: Checkpoint, path: Path, mode: str, scorer: bool) -> None:
    plan = _plan(checkpoint, mode, scorer)
    file_type = _FILE_TYPES.get(mode, gguf.LlamaFileType.MOSTLY_BF16)
    writer = gguf.GGUFWriter(path, ARCH)
    _add_metadata(writer, checkpoint, int(file_type), scorer)
    if scorer:
        _add_class_vocabulary(writer)
    else:
        _add_tokenizer(writer, checkpoint)
    for tensor in plan:
        # Declared up front (the header lists every tensor); data follows one at a time.
        storage = np.float32 if tensor.dtype == gguf.GGMLQuantizationType.F32 else np.uint16
        writer.add_tensor_info(
            tensor.gguf_name, tensor.shape, np.dtype(storage), _nbytes(tensor), tensor.dtype
        )
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        (out,) = writer.fout
        for tensor in plan:
            _write_tensor_data(out, checkpoint, tensor)
    finally:
        writer.close()


@contextlib.contextmanager
def _temporary_path(folder: Path, suffix: str) -> Iterator[Path]:
    """A fresh path in `folder` (same file system, so renaming is atomic), removed if left.

    Only the name is made here (not the file, as mkstemp would, with mode 0600): the model
    files get the user's usual permissions.
    """
    path = folder / f".qwenscribe-{uuid.uuid4().hex}{suffix}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_llama_cpp() -> Iterator[None]:
    """Silence llama.cpp's per-tensor quantization log for the duration.

    llama-cpp-python prints llama.cpp's log to stderr unless its logger's level is above the
    message's; its level table predates ggml's renumbering, so warnings arrive as ERROR and
    only CRITICAL silences them. Failure is reported by the quantizer's status, not the log.
    """
    with logger_level("llama-cpp-python", logging.CRITICAL):
        yield


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _quantize(source: Path, target: Path, quant: str, scorer: bool) -> None:
    import llama_cpp  # heavy (loads the shared library); only quantization needs it

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(_LLAMA_FTYPES[quant])
    params.nthread = _usable_cpus()
    if scorer:
        # The timestamp head is small (5000 x hidden) and decides between classes 80 ms apart:
        # keep it f16 rather than the output type the quantizer would pick (q6_k, q8_0).
        params.output_tensor_type = params.token_embedding_type = llama_cpp.GGML_TYPE_F16
    with _quiet_llama_cpp():
        llama_cpp.llama_backend_init()
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(target).encode(), ctypes.byref(params)
        )
    if status != 0:
        raise ModelError(
            f"llama.cpp could not quantize the decoder to {quant} (status {status}).",
            "Try another quantization, or check free disk space.",
        )


def _convert(checkpoint: Checkpoint, target: Path, quant: str, scorer: bool) -> Path:
    _check_quant(quant)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_path(target.parent, ".gguf.part") as partial:
        if quant in _DIRECT:
            _write_gguf(checkpoint, partial, quant, scorer)
        else:
            with _temporary_path(target.parent, ".lossless.gguf") as source:
                _write_gguf(checkpoint, source, _LOSSLESS, scorer)
                _quantize(source, partial, quant, scorer)
        os.replace(partial, target)
    log.info("wrote %s", target)
    return target


def write_decoder_gguf(checkpoint: Checkpoint, folder: Path, quant: str = "f16") -> Path:
    """Write the decoder as `folder/decoder.<quant>.gguf` and return its path.

    quant: one of QUANTS. f32/f16/bf16 are written directly; the others are made by llama.cpp's
    quantizer (k-quants as the `_M` mixes). ValueError names the valid choices otherwise.
    For an aligner this is the decoder without its head (hidden states come from embeddings
    mode, to be scored with `write_aligner_head`'s file); llama.cpp then still computes a
    vocabulary-wide product with `token_embd` at every position (see `write_aligner_gguf`).
    """
    return _convert(checkpoint, Path(folder) / decoder_filename(quant), quant, scorer=False)


def write_aligner_gguf(checkpoint: Checkpoint, folder: Path, quant: str = "f16") -> Path:
    """Write the aligner as a timestamp scorer, `folder/aligner.<quant>.gguf`; return its path.

    The decoder with the 5000-class timestamp head as its output head (and a placeholder
    vocabulary of 5000 classes): in ordinary logits mode, llama.cpp's logits at the positions
    flagged for output are the timestamp scores, and the head is computed at those positions
    only. Input must be embeddings (the token embeddings come from `write_token_embeddings`).
    The head stays f16 in quantized files. Why this form: see the module docstring (the
    decoder form makes llama.cpp compute a 152k-wide product at every position).
    """
    _require_aligner(checkpoint)
    return _convert(checkpoint, Path(folder) / aligner_filename(quant), quant, scorer=True)


def _require_aligner(checkpoint: Checkpoint) -> None:
    if checkpoint.arch.kind != "aligner":
        raise ValueError(f"{checkpoint.folder} is an {checkpoint.arch.kind} model, not an aligner.")


def _save_npy(folder: Path, name: str, values: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    with _temporary_path(folder, ".npy.part") as partial:
        with open(partial, "wb") as handle:
            np.save(handle, values, allow_pickle=False)
        os.replace(partial, target)
    return target


def write_aligner_head(checkpoint: Checkpoint, folder: Path) -> Path:
    """Write the aligner's timestamp head, float32 [5000, hidden], as `folder/timestamp_head.npy`.

    Scores are `hidden_states[timestamp positions] @ head.T`, with the final-norm hidden states
    from the decoder GGUF in embeddings mode. float32 keeps the head exact (the checkpoint's
    bf16 values widen losslessly); it is small (20 MB at hidden 1024).
    """
    _require_aligner(checkpoint)
    head = np.ascontiguousarray(checkpoint.tensor("score.weight"), dtype=np.float32)
    return _save_npy(Path(folder), TIMESTAMP_HEAD_FILE, head)


def write_token_embeddings(checkpoint: Checkpoint, folder: Path) -> Path:
    """Write the input token embeddings, float16 [vocab, hidden], as `folder/token_embeddings.npy`.

    For models whose GGUF takes embeddings only (`write_aligner_gguf`): the runtime looks rows
    up itself (memory-mapped, only the rows used are read). float16 holds every bfloat16 value
    of ordinary size exactly; 311 MB for the 0.6B aligner.
    """
    name = f"{_HF_PREFIX}embed_tokens.weight"
    encoded = _encode(checkpoint.tensor(name), gguf.GGMLQuantizationType.F16, name)
    return _save_npy(Path(folder), TOKEN_EMBEDDINGS_FILE, encoded)
