"""Export the recognizer's text decoder to ONNX from numpy weights: `decoder.<precision>.onnx`.

Why a second engine for the decoder beside llama.cpp's GGUF: in int8 (8-bit blocks, as q8_0; see
`onnx_qwen3`) onnxruntime runs the 0.6B recognizer's prefill 1.5x as fast as llama.cpp's q8_0
on our CPU, and a generation step of several sequences costs little more than a step of one,
where llama.cpp's grows with each sequence (60 s of audio, 2 threads: prefill 3.2 against 4.7 s,
generation 4.5 against 7.8 s). GGUF stays the choice on a GPU.

The graph is the Qwen3 decoder (`onnx_qwen3`), its final norm and its vocabulary head (the
token embeddings when tied), evaluated at the last row of each sequence only:

- inputs: ``embeddings [batch, rows, hidden]`` (the runtime looks text rows up in
  ``token_embeddings.npy`` and puts the audio rows in), ``seqlens_k [batch]`` int32: per
  sequence, its length after this call minus one; and per layer the cache,
  ``past_key.<i>`` / ``past_value.<i>`` ``[batch, kv_heads, capacity, head_dim]``;
- outputs: ``logits [batch, vocab]`` after each sequence's last row, and ``present_key.<i>`` /
  ``present_value.<i>``, the same cache with this call's rows written in.

The cache is a buffer of fixed `capacity` holding each sequence's rows from position 0 (the
lengths say how many are real), so the runtime binds each ``present`` to the memory of its
``past`` and onnxruntime writes the new rows in place: nothing is copied per step. A call
carries either one sequence with any number of rows (a prompt, or a block of one) or several
sequences with one row each (a generation step), as GroupQueryAttention requires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.gguf_decoder import (
    QUANTS,
    decoder_filename,
    write_decoder_gguf,
    write_token_embeddings,
)
from qwenscribe.convert.onnx_graph import (
    PRECISIONS,
    BuiltModel,
    GraphBuilder,
    weights_file_name,
    write_models,
)
from qwenscribe.convert.onnx_qwen3 import (
    PREFIX,
    Positions,
    cache_values,
    decoder_layers,
    dims_metadata,
    final_norm,
    rope_tables,
)
from qwenscribe.model.architecture import DecoderDims

# What a decoder (the recognizer's or the aligner's) can be converted to: an ONNX precision
# (ONNX Runtime) or a GGUF quantization (llama.cpp). The names do not overlap (int8 / q8_0,
# fp32 / f32, fp16 / f16).
DECODER_QUANTS = (*PRECISIONS, *QUANTS)


def onnx_decoder_filename(precision: str) -> str:
    return f"decoder.{precision}.onnx"


def recognizer_decoder_files(quant: str) -> list[str]:
    """The files the recognizer's decoder in `quant` is made of (see DECODER_QUANTS)."""
    if quant in PRECISIONS:
        name = onnx_decoder_filename(quant)
        return [name, weights_file_name(name)]
    return [decoder_filename(quant)]


def write_recognizer_decoder(checkpoint: Checkpoint, folder: Path, quant: str) -> Path:
    """Write the recognizer's decoder in `quant`: ONNX (and the token table it is fed from) or
    GGUF, by the name."""
    if quant in PRECISIONS:
        write_token_embeddings(checkpoint, folder)
        return write_decoder_onnx(checkpoint, folder, quant)
    return write_decoder_gguf(checkpoint, folder, quant)


def _positions(g: GraphBuilder, dims: DecoderDims) -> Positions:
    """Where this call's rows are, from the sequence lengths the runtime gives."""
    one = g.constant("one_int32", np.array(1, np.int32))
    longest = g.op("ReduceMax", ["seqlens_k"], "longest_last_row", keepdims=0)
    total = g.op("Add", [longest, one], "total_int32")
    length = g.op("Cast", [total], "total", to=TensorProto.INT64)
    cos, sin = rope_tables(g, dims, length)
    return Positions(last_rows="seqlens_k", total=total, cos=cos, sin=sin)


def _head_weight(checkpoint: Checkpoint) -> np.ndarray:
    if checkpoint.arch.decoder.tied_embeddings:
        return checkpoint.tensor(f"{PREFIX}embed_tokens.weight")
    return checkpoint.tensor("lm_head.weight")


def build_recognizer_decoder(checkpoint: Checkpoint, precision: str = "fp32") -> BuiltModel:
    """The recognizer's decoder and head: embeddings (+ cache) -> logits of each last row."""
    if checkpoint.arch.kind != "asr":
        raise ValueError(f"{checkpoint.folder} is an {checkpoint.arch.kind} model, not an ASR one.")
    dims = checkpoint.arch.decoder
    g = GraphBuilder(precision, int8_products="blocks")  # see onnx_qwen3: outliers
    positions = _positions(g, dims)
    x = decoder_layers(g, checkpoint, g.to_compute("embeddings", "x"), positions)
    # Only each sequence's last row goes on: the final norm and the head are row-wise, and the
    # head (a vocabulary of 152k) is the largest product of all.
    starts, ends = (
        g.constant(n, np.array([v], np.int64)) for n, v in (("last", -1), ("end", 1 << 62))
    )
    axis = g.constant("row_axis", np.array([1], np.int64))
    x = g.op("Slice", [x, starts, ends, axis], "last_rows_hidden")
    rows = g.constant("rows_shape", np.array([-1, dims.hidden], np.int64))
    x = final_norm(g, checkpoint, g.op("Reshape", [x, rows], "last_hidden"))
    x = g.linear(x, "lm_head", _head_weight(checkpoint), None)
    g.op("Identity", [g.to_float32(x, "logits_float")], "logits")
    past, present = cache_values(dims, "batch", "capacity")
    inputs = [
        helper.make_tensor_value_info(
            "embeddings", TensorProto.FLOAT, ["batch", "rows", dims.hidden]
        ),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        *past,
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", dims.vocab]),
        *present,
    ]
    metadata = {
        "qwenscribe.part": "decoder",
        "qwenscribe.precision": precision,
        "qwenscribe.kind": checkpoint.arch.kind,
        **dims_metadata(dims),
        "qwenscribe.vocab": str(dims.vocab),
    }
    return g.model("qwen3_asr_decoder", inputs, outputs, metadata)


def write_decoder_onnx(checkpoint: Checkpoint, folder: Path, precision: str = "int8") -> Path:
    """Write `decoder.<precision>.onnx` and its weights, `<that>.data`; return its path."""
    # Weights in a side file: memory-mapped by ONNX Runtime instead of parsed out of protobuf.
    (path,) = write_models(
        checkpoint,
        Path(folder),
        precision,
        [(onnx_decoder_filename(precision), build_recognizer_decoder)],
        "decoder",
        external=True,
    )
    return path
