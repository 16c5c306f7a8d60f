"""Export the Qwen3-ASR audio encoder to two ONNX models, built from numpy weights. No torch.

The encoder is split where its data changes shape:

- the front end (``encoder_frontend.<precision>.onnx``) maps 1-s mel chunks ``[N, 128, 100]`` to
  ``[N, 13, d_model]``: three stride-2 convolutions with GELU, the flatten transformers does,
  ``conv_out`` and the sinusoidal positions 0..12 that restart in every chunk. It returns all 13
  positions of every chunk; the caller drops the padded positions of the last chunk.
- the back end (``encoder_backend.<precision>.onnx``) maps the concatenated valid tokens
  ``[T, d_model]`` of one audio to ``[T, output_dim]``: the pre-LN transformer layers with the
  official windowed attention (block-diagonal windows of 104 tokens, the last one shorter), then
  ``ln_post`` and the multi-modal projector.

Splitting there keeps the caller's job (dropping padding, concatenating chunks) in numpy, where it
is trivial, and lets the front end run on any batch of chunks. Both graphs take and return float32
whatever the precision, so the runtime never needs to know how a file was quantized.

The windows are built inside the back-end graph from T: the tokens are zero-padded to a multiple
of 104, reshaped to ``[windows, 104, d_model]`` and each window attends only to itself, with the
padded keys masked. Attention then costs O(T * 104) rather than O(T^2): a full T x T mask for
20 minutes of audio would need gigabytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.onnx_graph import BuiltModel, GraphBuilder, weights_file_name, write_models
from qwenscribe.model.architecture import (
    N_WINDOW,
    N_WINDOW_INFER,
    TOKENS_PER_CHUNK,
    EncoderDims,
)

CHUNK_FRAMES = 2 * N_WINDOW  # mel frames per front-end chunk (1 s)
# Tokens per attention window: transformers' get_audio_cu_seqlens uses the longest post-CNN chunk
# (13 for any audio of at least 1 s) times n_window_infer // (2 * n_window). Shorter audio has a
# single window either way.
WINDOW_TOKENS = TOKENS_PER_CHUNK * (N_WINDOW_INFER // CHUNK_FRAMES)

# In fp16 the residual stream is clamped like transformers does, so one overflow cannot turn the
# rest of the sequence into inf/NaN.
_FP16_CLAMP = float(np.finfo(np.float16).max) - 1000.0

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which the encoder uses
_PREFIX = "model.audio_tower."
_PROJECTOR = "model.multi_modal_projector."


def frontend_filename(precision: str) -> str:
    return f"encoder_frontend.{precision}.onnx"


def backend_filename(precision: str) -> str:
    return f"encoder_backend.{precision}.onnx"


def sinusoid_positions(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """transformers' SinusoidsPositionEmbedding: sin of every timescale, then cos; float32."""
    half = channels // 2
    increment = math.log(max_timescale) / (half - 1)
    inv_timescales = np.exp(-increment * np.arange(half, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _linear(
    g: GraphBuilder,
    checkpoint: Checkpoint,
    x: str,
    source: str,
    name: str,
    scale: float = 1.0,
    bias: bool = True,
) -> str:
    """The checkpoint's Linear `source` (hf name without `.weight`) applied to x."""
    weight = checkpoint.tensor(f"{source}.weight")
    offset = checkpoint.tensor(f"{source}.bias") if bias else None
    if scale != 1.0:  # not in place: a float32 checkpoint hands out read-only memory maps
        weight = weight * np.float32(scale)
        offset = None if offset is None else offset * np.float32(scale)
    return g.linear(x, name, weight, offset)


def _layer_norm(g: GraphBuilder, checkpoint: Checkpoint, x: str, source: str, name: str) -> str:
    weight, bias = checkpoint.tensor(f"{source}.weight"), checkpoint.tensor(f"{source}.bias")
    return g.layer_norm(x, name, weight, bias, LAYER_NORM_EPS)


def _conv(g: GraphBuilder, checkpoint: Checkpoint, x: str, name: str) -> str:
    """One of the front end's 3 x 3, stride-2, padded convolutions as an ONNX Conv (NCHW)."""
    weight = g.weight(f"{name}.weight", checkpoint.tensor(f"{_PREFIX}{name}.weight"))
    bias = g.weight(f"{name}.bias", checkpoint.tensor(f"{_PREFIX}{name}.bias"))
    return g.op("Conv", [x, weight, bias], name, kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)


def _conv_as_matmul(
    g: GraphBuilder, checkpoint: Checkpoint, x: str, name: str, height: int, width: int
) -> tuple[str, int, int]:
    """The same convolution on channels-last x [N, height, width, in] as one linear map of each
    output position's 3 x 3 input patch; returns [N, out_height, out_width, out] and its size.

    Why: onnxruntime's int8 convolution (ConvInteger) is 3.5x slower than its float32 Conv on
    the real front end, while its int8 MatMul is more than twice as fast as float32. The
    second and third convolutions are 95 % of the front end's arithmetic (conv2d1 has a single
    input channel), and the front end ran 73 % of the 0.6B encoder's time with float32 Convs.
    The patches are the nine stride-2 slices of the padded input, concatenated along channels,
    so patch feature (3 * i + j) * in + c holds input channel c at kernel tap (i, j).
    """
    weight = checkpoint.tensor(f"{_PREFIX}{name}.weight")  # [out, in, 3, 3]
    out_height, out_width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    pads = np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64)  # one row and column on each side
    padded = g.op("Pad", [x, g.constant(f"{name}.pads", pads)], f"{name}/pad")
    axes = g.constant(f"{name}.axes", np.array([1, 2], np.int64))
    steps = g.constant(f"{name}.steps", np.array([2, 2], np.int64))
    taps = []
    for i in range(3):
        for j in range(3):
            starts = np.array([i, j], np.int64)
            ends = starts + 2 * np.array([out_height - 1, out_width - 1], np.int64) + 1
            taps.append(
                g.op(
                    "Slice",
                    [
                        padded,
                        g.constant(f"{name}.tap{i}{j}.starts", starts),
                        g.constant(f"{name}.tap{i}{j}.ends", ends),
                        axes,
                        steps,
                    ],
                    f"{name}/tap{i}{j}",
                )
            )
    patches = g.op("Concat", taps, f"{name}/patches", axis=-1)
    patch_weight = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    bias = checkpoint.tensor(f"{_PREFIX}{name}.bias")
    return g.linear(patches, name, patch_weight, bias, int8=True), out_height, out_width


def build_frontend(checkpoint: Checkpoint, precision: str = "fp32") -> BuiltModel:
    """The convolutional front end: mel_chunks [N, 128, 100] -> chunk_embeddings [N, 13, d]."""
    dims = checkpoint.arch.encoder
    g = GraphBuilder(precision)
    x = g.to_compute("mel_chunks", "mel_chunks_compute")
    x = g.op("Unsqueeze", [x, g.constant("channel_axis", np.array([1], np.int64))], "add_channel")
    x = g.gelu(_conv(g, checkpoint, x, "conv2d1"), "conv2d1/gelu")
    if precision not in ("int8", "int4"):
        # Float Convs: faster than the patch products in float (1367 against 1869 ms a minute).
        for name in ("conv2d2", "conv2d3"):
            x = g.gelu(_conv(g, checkpoint, x, name), f"{name}/gelu")
        # [N, channels, freq, time] -> [N, time, channels * freq], conv_out's input order.
        x = g.op("Transpose", [x], "time_first", perm=[0, 3, 1, 2])
    else:
        # Quantized: the two wide convolutions as int8 products over 3 x 3 patches (int8 in the
        # int4 graph too: as int4 they ran slower than float Convs with 5x the error).
        x = g.op("Transpose", [x], "channels_last", perm=[0, 2, 3, 1])  # [N, freq, time, ch]
        height, width = dims.mel_bins // 2, CHUNK_FRAMES // 2  # after conv2d1
        for name in ("conv2d2", "conv2d3"):
            x, height, width = _conv_as_matmul(g, checkpoint, x, name, height, width)
            x = g.gelu(x, f"{name}/gelu")
        # [N, freq, time, channels] -> [N, time, channels, freq], conv_out's input order.
        x = g.op("Transpose", [x], "time_first", perm=[0, 2, 3, 1])
    # The width is spelled out: Reshape cannot infer a -1 from an empty batch (N = 0).
    flat = np.array([0, 0, dims.conv_out_features], np.int64)
    x = g.op("Reshape", [x, g.constant("flat_shape", flat)], "flatten")
    x = _linear(g, checkpoint, x, f"{_PREFIX}conv_out", "conv_out", bias=False)
    positions = sinusoid_positions(TOKENS_PER_CHUNK, dims.d_model)
    x = g.op("Add", [x, g.weight("positions", positions)], "add_positions")
    g.op("Identity", [g.to_float32(x, "chunk_embeddings_float")], "chunk_embeddings")
    shape_in = ["chunks", dims.mel_bins, CHUNK_FRAMES]
    shape_out = ["chunks", TOKENS_PER_CHUNK, dims.d_model]
    return g.model(
        "qwen3_asr_encoder_frontend",
        [helper.make_tensor_value_info("mel_chunks", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("chunk_embeddings", TensorProto.FLOAT, shape_out)],
        _metadata(checkpoint, precision, "frontend"),
    )


class _Windows:
    """Graph values describing the attention windows of one call, derived from T at run time."""

    def __init__(self, g: GraphBuilder, tokens: str) -> None:
        window = g.constant("window_tokens", np.array([WINDOW_TOKENS], np.int64))
        self.count = g.op("Shape", [tokens], "token_count", start=0, end=1)  # [T]
        rounded_up = g.op(
            "Add",
            [self.count, g.constant("window_minus_one", np.array([WINDOW_TOKENS - 1], np.int64))],
            "token_count_round_up",
        )
        windows = g.op("Div", [rounded_up, window], "window_count")  # ceil(T / 104)
        padded = g.op("Mul", [windows, window], "padded_count")
        self.pad = g.op("Sub", [padded, self.count], "pad_count")
        # Additive key mask [windows, 1, 1, 104]: 0 for real tokens, -inf for padding. Every
        # window holds at least one real token, so no softmax row is all -inf.
        zero, one = (
            g.constant("zero", np.array(0, np.int64)),
            g.constant("one", np.array(1, np.int64)),
        )
        end = g.op("Squeeze", [padded], "padded_scalar")
        position = g.op("Range", [zero, end, one], "padded_positions")
        real = g.op("Less", [position, self.count], "is_real_token")
        keep = g.constant("mask_keep", np.array(0.0, np.float32))
        drop = g.constant("mask_drop", np.array(-np.inf, np.float32))
        bias = g.op("Where", [real, keep, drop], "key_bias_flat")
        shape = g.constant("key_bias_shape", np.array([-1, 1, 1, WINDOW_TOKENS], np.int64))
        self.key_bias = g.op("Reshape", [bias, shape], "key_bias")


def _split_heads(g: GraphBuilder, x: str, name: str, dims: EncoderDims, perm: list[int]) -> str:
    """[P, d] -> [windows, 104, heads, head_dim], then transposed by perm."""
    shape = np.array([-1, WINDOW_TOKENS, dims.heads, dims.d_model // dims.heads], np.int64)
    x = g.op("Reshape", [x, g.constant(f"{name}.shape", shape)], f"{name}/split")
    return g.op("Transpose", [x], f"{name}/heads", perm=perm)


def _attention(
    g: GraphBuilder, checkpoint: Checkpoint, x: str, layer: int, windows: _Windows
) -> str:
    """Self-attention of every window with itself: x [P, d] (P a multiple of 104) -> [P, d]."""
    dims = checkpoint.arch.encoder
    source = f"{_PREFIX}layers.{layer}.self_attn"
    name = f"layers.{layer}.self_attn"
    # The score scaling is folded into q_proj: head_dim ** -0.5 is a power of two for the released
    # sizes (and the tiny one), so this is exact and saves a pass over the score tensor.
    scaling = (dims.d_model // dims.heads) ** -0.5
    q = _linear(g, checkpoint, x, f"{source}.q_proj", f"{name}.q_proj", scale=scaling)
    k = _linear(g, checkpoint, x, f"{source}.k_proj", f"{name}.k_proj")
    v = _linear(g, checkpoint, x, f"{source}.v_proj", f"{name}.v_proj")
    q = _split_heads(g, q, f"{name}/q", dims, [0, 2, 1, 3])  # [W, H, 104, hd]
    k = _split_heads(g, k, f"{name}/k", dims, [0, 2, 3, 1])  # [W, H, hd, 104]
    v = _split_heads(g, v, f"{name}/v", dims, [0, 2, 1, 3])  # [W, H, 104, hd]
    scores = g.to_float32(g.op("MatMul", [q, k], f"{name}/scores"), f"{name}/scores_float")
    # Masking and softmax in float32 whatever the compute type: -inf and the exponentials are
    # where float16 would lose the most.
    scores = g.op("Add", [scores, windows.key_bias], f"{name}/masked_scores")
    probs = g.to_compute(g.op("Softmax", [scores], f"{name}/softmax", axis=-1), f"{name}/probs")
    context = g.op("MatMul", [probs, v], f"{name}/context")
    context = g.op("Transpose", [context], f"{name}/context_tokens", perm=[0, 2, 1, 3])
    merge = g.constant(f"{name}.merge_shape", np.array([-1, dims.d_model], np.int64))
    context = g.op("Reshape", [context, merge], f"{name}/merge_heads")
    return _linear(g, checkpoint, context, f"{source}.out_proj", f"{name}.out_proj")


def _encoder_layer(
    g: GraphBuilder, checkpoint: Checkpoint, x: str, layer: int, windows: _Windows
) -> str:
    """One pre-LN layer: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""
    source = f"{_PREFIX}layers.{layer}"
    name = f"layers.{layer}"
    h = _layer_norm(g, checkpoint, x, f"{source}.self_attn_layer_norm", f"{name}.attn_norm")
    h = _attention(g, checkpoint, h, layer, windows)
    x = g.op("Add", [x, h], f"{name}/attn_residual")
    h = _layer_norm(g, checkpoint, x, f"{source}.final_layer_norm", f"{name}.ffn_norm")
    h = _linear(g, checkpoint, h, f"{source}.fc1", f"{name}.fc1")
    h = _linear(g, checkpoint, g.gelu(h, f"{name}.fc1/gelu"), f"{source}.fc2", f"{name}.fc2")
    x = g.op("Add", [x, h], f"{name}/ffn_residual")
    if g.compute == np.float16:
        low = g.weight(f"{name}.clamp_min", np.array(-_FP16_CLAMP))
        high = g.weight(f"{name}.clamp_max", np.array(_FP16_CLAMP))
        x = g.op("Clip", [x, low, high], f"{name}/clamp")
    return x


def build_backend(checkpoint: Checkpoint, precision: str = "fp32") -> BuiltModel:
    """The windowed transformer, ln_post and projector: audio_tokens [T, d] -> [T, output_dim]."""
    dims = checkpoint.arch.encoder
    g = GraphBuilder(precision)
    windows = _Windows(g, "audio_tokens")
    x = g.to_compute("audio_tokens", "audio_tokens_compute")
    # Pad to whole windows once: padded rows never reach a real token (they are masked as keys,
    # and everything else is row-wise), and they are cut off after the last layer.
    before = g.constant("pad_before", np.array([0, 0], np.int64))
    after = g.constant("pad_after", np.array([0], np.int64))
    pads = g.op("Concat", [before, windows.pad, after], "pads", axis=0)
    x = g.op("Pad", [x, pads], "pad_to_windows", mode="constant")
    for layer in range(dims.layers):
        x = _encoder_layer(g, checkpoint, x, layer, windows)
    start = g.constant("slice_start", np.array([0], np.int64))
    x = g.op("Slice", [x, start, windows.count], "drop_padding")
    x = _layer_norm(g, checkpoint, x, f"{_PREFIX}ln_post", "ln_post")
    x = _linear(g, checkpoint, x, f"{_PROJECTOR}linear_1", "projector.linear_1")
    x = g.gelu(x, "projector/gelu")
    x = _linear(g, checkpoint, x, f"{_PROJECTOR}linear_2", "projector.linear_2")
    g.op("Identity", [g.to_float32(x, "audio_embeddings_float")], "audio_embeddings")
    shape_in, shape_out = ["tokens", dims.d_model], ["tokens", dims.output_dim]
    return g.model(
        "qwen3_asr_encoder_backend",
        [helper.make_tensor_value_info("audio_tokens", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("audio_embeddings", TensorProto.FLOAT, shape_out)],
        _metadata(checkpoint, precision, "backend"),
    )


def _metadata(checkpoint: Checkpoint, precision: str, part: str) -> dict[str, str]:
    """What a runtime needs to use the file without reading the checkpoint again."""
    dims: EncoderDims = checkpoint.arch.encoder
    return {
        "qwenscribe.part": f"encoder_{part}",
        "qwenscribe.precision": precision,
        "qwenscribe.kind": checkpoint.arch.kind,
        "qwenscribe.d_model": str(dims.d_model),
        "qwenscribe.output_dim": str(dims.output_dim),
        "qwenscribe.chunk_frames": str(CHUNK_FRAMES),
        "qwenscribe.tokens_per_chunk": str(TOKENS_PER_CHUNK),
        "qwenscribe.window_tokens": str(WINDOW_TOKENS),
    }


def encoder_files(precision: str) -> list[str]:
    """The files of the encoder in `precision`: each graph and its weights beside it."""
    graphs = (frontend_filename(precision), backend_filename(precision))
    return [name for graph in graphs for name in (graph, weights_file_name(graph))]


def write_encoder_onnx(checkpoint: Checkpoint, folder: Path, precision: str = "fp32") -> list[Path]:
    """Write `encoder_frontend.<precision>.onnx` and `encoder_backend.<precision>.onnx`.

    Both are moved into place only when both are complete (see `onnx_graph.write_models`).
    The weights go to a side file beside each graph, which onnxruntime maps rather than parses:
    measured with the 0.6B models' int8 encoders, 0.30 -> 0.08 s to open the recognizer's back
    end and 0.6-1.1 -> 0.2 s the aligner's, and their weights are pages of the file (the system
    can drop them; a closed session's leave at once) instead of a heap copy of the message.
    """
    builders = (
        (frontend_filename(precision), build_frontend),
        (backend_filename(precision), build_backend),
    )
    return write_models(checkpoint, Path(folder), precision, builders, "encoder", external=True)
