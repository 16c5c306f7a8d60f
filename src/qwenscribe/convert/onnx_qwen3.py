"""The Qwen3 text decoder's layers as an ONNX graph: what the recognizer's and the aligner's
decoder graphs (`onnx_decoder`, `onnx_aligner`) have in common.

Each layer is pre-norm: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)). Attention
normalizes query and key per head (Qwen3's q/k norm) and hands them to onnxruntime's
GroupQueryAttention (com.microsoft), which rotates them (rotate-half RoPE, theta 1e6), applies
the causal mask over the grouped heads and keeps the keys and values of earlier rows (the cache)
in one kernel: 12 % faster than the same in standard operators on the 0.6B aligner, and with no
[heads, rows, total] mask to build. Hidden states are [batch, rows, hidden] throughout; the
cache is float32 [batch, kv_heads, length, head_dim] per layer in every precision.

In int8 the weight products are 8-bit blocks of 32 weights with a scale each (MatMulNBits,
as llama.cpp's q8_0), the activations quantized per block of 32 by the kernel. Not onnxruntime's
dynamic int8 (MatMulInteger), though its prefill is 1.8x as fast: it quantizes all the rows of
a call with one scale, and decoder LLMs carry a few huge activations (the first token's, in a
few channels) that would take the precision of every other row: on a 420 x 1024 x 6144
product with one channel 50x the others, 18 % relative error against 1.2 % in blocks.

Where the rows are is told by `Positions`: each graph makes its own from its inputs (the
aligner from the length of the cache it is given, the recognizer from explicit sequence lengths,
so that its cache can be a preallocated buffer the runtime reuses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.onnx_graph import GraphBuilder
from qwenscribe.model.architecture import RMS_NORM_EPS, ROPE_THETA, DecoderDims

PREFIX = "model.language_model."


def rope_inverse_frequencies(head_dim: int, theta: float = ROPE_THETA) -> np.ndarray:
    """transformers' default RoPE frequencies, computed in float32 as it does."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / np.power(np.float32(theta), exponents)).astype(np.float32)


@dataclass(frozen=True)
class Positions:
    """Graph values every layer's attention needs: per sequence of the batch the index of its
    last row after this call (`last_rows`, int32 [batch]), the longest such length (`total`,
    int32 scalar), and cos/sin tables of at least `total` positions ([positions, head_dim/2])."""

    last_rows: str
    total: str
    cos: str
    sin: str


def rope_tables(g: GraphBuilder, dims: DecoderDims, length: str) -> tuple[str, str]:
    """cos and sin of p * inv_freq for p in 0 .. length - 1 (`length`: an int64 scalar)."""
    zero = g.constant("rope.zero", np.array(0, np.int64))
    one = g.constant("rope.one", np.array(1, np.int64))
    axis_one = g.constant("rope.axis_one", np.array([1], np.int64))
    positions = g.op("Range", [zero, length, one], "rope/positions")
    positions = g.op("Cast", [positions], "rope/positions_float", to=TensorProto.FLOAT)
    positions = g.op("Unsqueeze", [positions, axis_one], "rope/positions_column")
    frequencies = g.constant("rope.inv_freq", rope_inverse_frequencies(dims.head_dim))
    angles = g.op("Mul", [positions, frequencies], "rope/angles")
    return g.op("Cos", [angles], "rope/cos"), g.op("Sin", [angles], "rope/sin")


def _split_outputs(g: GraphBuilder, x: str, widths: list[int], name: str) -> list[str]:
    """Split x's last axis into pieces of `widths`."""
    outputs = [f"{name}/{index}" for index in range(len(widths))]
    sizes = g.constant(f"{name}.widths", np.array(widths, np.int64))
    return g.op_outputs("Split", [x, sizes], outputs, axis=-1)


def _attention(
    g: GraphBuilder, checkpoint: Checkpoint, x: str, layer: int, positions: Positions
) -> str:
    """Causal grouped-query self-attention of the rows, after the cache of earlier rows."""
    dims = checkpoint.arch.decoder
    source = f"{PREFIX}layers.{layer}.self_attn"
    name = f"layers.{layer}.self_attn"
    q_width, kv_width = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    # q, k and v in one product: one pass over x instead of three.
    fused = np.concatenate(
        [checkpoint.tensor(f"{source}.{part}_proj.weight") for part in ("q", "k", "v")]
    )
    qkv = g.linear(x, f"{name}.qkv_proj", fused, None)
    q, k, v = _split_outputs(g, qkv, [q_width, kv_width, kv_width], f"{name}/qkv")
    # [batch, rows, heads * hd] -> [batch, rows, heads, hd] for the per-head norms, and back.
    q_heads = g.constant(f"{name}.q_heads", np.array([0, 0, dims.heads, dims.head_dim], np.int64))
    kv_heads = g.constant(
        f"{name}.kv_heads", np.array([0, 0, dims.kv_heads, dims.head_dim], np.int64)
    )
    q = g.op("Reshape", [q, q_heads], f"{name}/q_heads")
    k = g.op("Reshape", [k, kv_heads], f"{name}/k_heads")
    q = g.rms_norm(q, f"{name}.q_norm", checkpoint.tensor(f"{source}.q_norm.weight"), RMS_NORM_EPS)
    k = g.rms_norm(k, f"{name}.k_norm", checkpoint.tensor(f"{source}.k_norm.weight"), RMS_NORM_EPS)
    inputs = []
    for value, width, part in ((q, q_width, "q"), (k, kv_width, "k"), (v, kv_width, "v")):
        shape = g.constant(f"{name}.{part}_bsh", np.array([0, 0, width], np.int64))
        value = g.op("Reshape", [value, shape], f"{name}/{part}_bsh")
        inputs.append(g.to_float32(value, f"{name}/{part}_bsh32"))  # the kernel is float32
    context, _, _ = g.op_outputs(
        "GroupQueryAttention",
        [
            *inputs,
            f"past_key.{layer}",
            f"past_value.{layer}",
            positions.last_rows,
            positions.total,
            positions.cos,
            positions.sin,
        ],
        [f"{name}/context", f"present_key.{layer}", f"present_value.{layer}"],
        domain="com.microsoft",
        num_heads=dims.heads,
        kv_num_heads=dims.kv_heads,
        scale=float(dims.head_dim**-0.5),
        do_rotary=1,
        rotary_interleaved=0,
    )
    context = g.to_compute(context, f"{name}/context_compute")
    return g.linear(context, f"{name}.o_proj", checkpoint.tensor(f"{source}.o_proj.weight"), None)


def _mlp(g: GraphBuilder, checkpoint: Checkpoint, x: str, layer: int) -> str:
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up in one product."""
    dims = checkpoint.arch.decoder
    source = f"{PREFIX}layers.{layer}.mlp"
    name = f"layers.{layer}.mlp"
    fused = np.concatenate(
        [checkpoint.tensor(f"{source}.{part}_proj.weight") for part in ("gate", "up")]
    )
    gate, up = _split_outputs(
        g, g.linear(x, f"{name}.gate_up_proj", fused, None), [dims.ffn, dims.ffn], f"{name}/split"
    )
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{name}/sigmoid")], f"{name}/silu")
    hidden = g.op("Mul", [silu, up], f"{name}/gated")
    return g.linear(
        hidden, f"{name}.down_proj", checkpoint.tensor(f"{source}.down_proj.weight"), None
    )


def decoder_layers(g: GraphBuilder, checkpoint: Checkpoint, x: str, positions: Positions) -> str:
    """Every layer of the decoder over x [batch, rows, hidden]; the final norm is not applied."""
    for layer in range(checkpoint.arch.decoder.layers):
        source = f"{PREFIX}layers.{layer}"
        name = f"layers.{layer}"
        weight = checkpoint.tensor(f"{source}.input_layernorm.weight")
        h = g.rms_norm(x, f"{name}.input_norm", weight, RMS_NORM_EPS)
        attention = _attention(g, checkpoint, h, layer, positions)
        x = g.op("Add", [x, attention], f"{name}/attn_residual")
        weight = checkpoint.tensor(f"{source}.post_attention_layernorm.weight")
        h = g.rms_norm(x, f"{name}.post_attention_norm", weight, RMS_NORM_EPS)
        x = g.op("Add", [x, _mlp(g, checkpoint, h, layer)], f"{name}/mlp_residual")
    return x


def final_norm(g: GraphBuilder, checkpoint: Checkpoint, x: str) -> str:
    return g.rms_norm(x, "final_norm", checkpoint.tensor(f"{PREFIX}norm.weight"), RMS_NORM_EPS)


def cache_values(
    dims: DecoderDims, batch: str | int, length: str
) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The graph's cache inputs (past_*) and outputs (present_*), one key and one value a layer,
    [batch, kv_heads, length, head_dim] each (the outputs' length named `length`_out)."""
    inputs, outputs = [], []
    for layer in range(dims.layers):
        for kind in ("key", "value"):
            past = [batch, dims.kv_heads, length, dims.head_dim]
            present = [batch, dims.kv_heads, f"{length}_out", dims.head_dim]
            inputs.append(
                helper.make_tensor_value_info(f"past_{kind}.{layer}", TensorProto.FLOAT, past)
            )
            outputs.append(
                helper.make_tensor_value_info(f"present_{kind}.{layer}", TensorProto.FLOAT, present)
            )
    return inputs, outputs


def dims_metadata(dims: DecoderDims) -> dict[str, str]:
    """What a runtime needs to know of the decoder to allocate its cache and feed it."""
    return {
        "qwenscribe.hidden": str(dims.hidden),
        "qwenscribe.layers": str(dims.layers),
        "qwenscribe.heads": str(dims.heads),
        "qwenscribe.kv_heads": str(dims.kv_heads),
        "qwenscribe.head_dim": str(dims.head_dim),
    }
