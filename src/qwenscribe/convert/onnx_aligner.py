"""Export the forced aligner's decoder and timestamp head to ONNX, built from numpy weights.

Why ONNX for the aligner: it never generates, it only runs its decoder once over the whole input
(audio and words) and scores the `<timestamp>` rows. That is prefill, matrix products above all,
which onnxruntime's int8 blocks (`onnx_qwen3`) run 1.35x as fast as llama.cpp's q8_0 on the
same CPU (the 0.6B aligner on 760 rows, 2 threads: 3.0 against 4.05 s).

``aligner_decoder.<precision>.onnx`` (weights in ``<that>.data``) is the Qwen3 decoder
(`onnx_qwen3`) plus the final norm and the 5000-class head, evaluated at the rows asked for
only:

- inputs: ``embeddings [rows, hidden]`` (the runtime looks up text rows and puts the audio rows
  in, as for llama.cpp), ``slot_rows [slots]`` (which of these rows to score), and per layer the
  keys and values of the rows before them, ``past_key.<i>`` and ``past_value.<i>``
  ``[1, kv_heads, past, head_dim]`` (``past`` = 0 on the first call);
- outputs: ``slot_logits [slots, 5000]`` and ``present_key.<i>`` / ``present_value.<i>``, the
  keys and values of all rows so far.

The positions are past .. past + rows - 1, taken from the keys' length, so a long input can be
fed in blocks of rows: the attention probabilities of one call are [heads, rows, past + rows],
and the runtime picks the block size that keeps them within a memory budget. Everything is
float32 at the interface, whatever the precision. The head stays float in every precision: it
is 0.5 % of the work and its argmax is the word time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.gguf_decoder import aligner_filename, write_aligner_gguf
from qwenscribe.convert.onnx_graph import PRECISIONS, BuiltModel, GraphBuilder, write_models
from qwenscribe.convert.onnx_qwen3 import (
    Positions,
    cache_values,
    decoder_layers,
    dims_metadata,
    final_norm,
    rope_tables,
)
from qwenscribe.model.architecture import DecoderDims

_HEAD = "score.weight"


def aligner_decoder_filename(precision: str) -> str:
    return f"aligner_decoder.{precision}.onnx"


def aligner_scorer_filename(quant: str) -> str:
    """The file holding the aligner's decoder and head in `quant` (an ONNX precision or a GGUF
    quantization, as `onnx_decoder.DECODER_QUANTS`)."""
    return aligner_decoder_filename(quant) if quant in PRECISIONS else aligner_filename(quant)


def write_aligner_scorer(checkpoint: Checkpoint, folder: Path, quant: str) -> Path:
    """Write the aligner's decoder and head in `quant`: ONNX or GGUF, by the name."""
    if quant in PRECISIONS:
        return write_aligner_decoder_onnx(checkpoint, folder, quant)
    return write_aligner_gguf(checkpoint, folder, quant)


def _positions(g: GraphBuilder, dims: DecoderDims) -> Positions:
    """Where this call's rows are: after the `past` rows whose keys the cache holds."""
    one = g.constant("one", np.array(1, np.int64))
    scalar = g.constant("scalar_shape", np.array([], np.int64))
    axis_one = g.constant("axis_one", np.array([1], np.int64))
    past = g.op("Shape", ["past_key.0"], "past_count", start=2, end=3)  # [past]
    rows = g.op("Shape", ["embeddings"], "row_count", start=0, end=1)  # [rows]
    total = g.op("Reshape", [g.op("Add", [past, rows], "total_1d"), scalar], "total")
    # GroupQueryAttention's sequence facts, int32: the total length and, for the one sequence,
    # the index of its last row.
    last = g.op("Reshape", [g.op("Sub", [total, one], "last_row"), axis_one], "last_row_1d")
    cos, sin = rope_tables(g, dims, total)
    return Positions(
        last_rows=g.op("Cast", [last], "last_rows", to=TensorProto.INT32),
        total=g.op("Cast", [total], "total_int32", to=TensorProto.INT32),
        cos=cos,
        sin=sin,
    )


def build_aligner_decoder(checkpoint: Checkpoint, precision: str = "fp32") -> BuiltModel:
    """The aligner's decoder and head: embeddings (+ cache) -> logits of the slot rows."""
    if checkpoint.arch.kind != "aligner":
        raise ValueError(f"{checkpoint.folder} is an {checkpoint.arch.kind} model, not an aligner.")
    dims = checkpoint.arch.decoder
    classes = checkpoint.arch.head_outputs
    g = GraphBuilder(precision, int8_products="rows")  # see GraphBuilder._matmul_int8_rows
    positions = _positions(g, dims)
    batch_of_one = g.constant("batch_of_one", np.array([1, -1, dims.hidden], np.int64))
    x = g.op("Reshape", [g.to_compute("embeddings", "embeddings_compute"), batch_of_one], "x")
    x = decoder_layers(g, checkpoint, x, positions)
    # Only the slot rows go on: the final norm and the head are row-wise.
    rows = g.constant("rows_shape", np.array([-1, dims.hidden], np.int64))
    x = g.op("Reshape", [x, rows], "hidden_rows")
    x = final_norm(g, checkpoint, g.op("Gather", [x, "slot_rows"], "slot_hidden", axis=0))
    x = g.linear(x, "score", checkpoint.tensor(_HEAD), None, keep_float=True)
    g.op("Identity", [g.to_float32(x, "slot_logits_float")], "slot_logits")
    past, present = cache_values(dims, 1, "past")
    inputs = [
        helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["rows", dims.hidden]),
        helper.make_tensor_value_info("slot_rows", TensorProto.INT64, ["slots"]),
        *past,
    ]
    outputs = [
        helper.make_tensor_value_info("slot_logits", TensorProto.FLOAT, ["slots", classes]),
        *present,
    ]
    metadata = {
        "qwenscribe.part": "aligner_decoder",
        "qwenscribe.precision": precision,
        "qwenscribe.kind": checkpoint.arch.kind,
        **dims_metadata(dims),
        "qwenscribe.classes": str(classes),
    }
    return g.model("qwen3_forced_aligner_decoder", inputs, outputs, metadata)


def write_aligner_decoder_onnx(
    checkpoint: Checkpoint, folder: Path, precision: str = "int8"
) -> Path:
    """Write `aligner_decoder.<precision>.onnx` and its weights, `<that>.data`; return its path."""
    filename = aligner_decoder_filename(precision)
    # The weights go beside the graph in every precision: ONNX Runtime memory-maps such a file
    # and uses it in place instead of parsing it out of the protobuf: the 0.6B int8 decoder
    # loads in 0.2 s instead of 0.7 s.
    (path,) = write_models(
        checkpoint,
        Path(folder),
        precision,
        [(filename, build_aligner_decoder)],
        "aligner-decoder",
        external=True,
    )
    return path
