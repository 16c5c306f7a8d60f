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

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.model.architecture import (
    N_WINDOW,
    N_WINDOW_INFER,
    TOKENS_PER_CHUNK,
    EncoderDims,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int4")

CHUNK_FRAMES = 2 * N_WINDOW  # mel frames per front-end chunk (1 s)
# Tokens per attention window: transformers' get_audio_cu_seqlens uses the longest post-CNN chunk
# (13 for any audio of at least 1 s) times n_window_infer // (2 * n_window). Shorter audio has a
# single window either way.
WINDOW_TOKENS = TOKENS_PER_CHUNK * (N_WINDOW_INFER // CHUNK_FRAMES)

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which the encoder uses
INT4_BLOCK_SIZE = 32  # weights per int4 scale: the finer of the two usual sizes, for accuracy
# Scales tried per int4 block, as multiples of "largest magnitude -> -8" (see quantize_int4_blocks).
_INT4_SCALE_STRETCHES = tuple(np.linspace(0.8, 1.2, 9))
# Opset 20 is the first with the ONNX Gelu operator; onnxruntime >= 1.17 runs it. IR 10 is what
# onnxruntime >= 1.16 reads (onnx 1.23 would otherwise stamp a newer IR that older runtimes refuse).
OPSET = 20
IR_VERSION = 10
# protobuf cannot parse a message over 2 GiB; weights go to a side file above this size.
_SINGLE_FILE_LIMIT = 1_800_000_000
_EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the model file, as onnx does it
_EXTERNAL_ALIGNMENT = 65536  # lets onnxruntime memory-map the side file (Windows granularity)
_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
# In fp16 the residual stream is clamped like transformers does, so one overflow cannot turn the
# rest of the sequence into inf/NaN.
_FP16_CLAMP = float(np.finfo(np.float16).max) - 1000.0

_Builder = Callable[[Checkpoint, str], "BuiltModel"]

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


def quantize_int4_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A [N, K] float matrix as MatMulNBits wants it: packed int4 and one scale per block.

    Blocks run along K (a row of W, i.e. a column of W.T), symmetric around MatMulNBits' implicit
    zero point 8. Plain rounding maps each block's largest magnitude to -8; instead a few scales
    around that one are tried and, for each rounding, the least-squares scale is kept, choosing
    per block the one with the smallest squared error. On Gaussian weights this cuts the
    reconstruction error by about 6 %, and on the tiny test encoder the int4 output error by
    more than that (its errors compound through the layers). Returns uint8
    [N, blocks, block/2] (low nibble first) and float32 scales [N * blocks]; K is zero-padded
    to whole blocks.
    """
    rows, columns = weight.shape
    blocks = -(-columns // block_size)
    padded = np.zeros((rows, blocks * block_size), np.float32)
    padded[:, :columns] = weight
    grouped = padded.reshape(rows, blocks, block_size)
    extreme = np.take_along_axis(grouped, np.abs(grouped).argmax(axis=2)[..., None], axis=2)
    best_levels = best_scales = best_error = None
    for stretch in _INT4_SCALE_STRETCHES:
        trial = extreme / np.float32(-8.0 * stretch)
        trial = np.where(trial == 0, np.float32(1.0), trial)  # all-zero blocks stay zero
        levels = np.clip(np.rint(grouped / trial), -8, 7)
        # For fixed levels q the error |q * s - w|^2 is smallest at s = <q, w> / <q, q>.
        norm = (levels * levels).sum(axis=2, keepdims=True)
        scales = np.where(
            norm > 0, (levels * grouped).sum(axis=2, keepdims=True) / np.maximum(norm, 1), 0
        ).astype(np.float32)
        error = np.square(levels * scales - grouped).sum(axis=2, keepdims=True)
        if best_error is None:
            best_levels, best_scales, best_error = levels, scales, error
        else:
            better = error < best_error
            best_levels = np.where(better, levels, best_levels)
            best_scales = np.where(better, scales, best_scales)
            best_error = np.where(better, error, best_error)
    stored = (best_levels + 8).astype(np.uint8)
    packed = stored[..., 0::2] | (stored[..., 1::2] << 4)
    return np.ascontiguousarray(packed), best_scales.reshape(-1).astype(np.float32)


class _GraphBuilder:
    """Collects nodes and initializers of one graph, computing in float32 or float16.

    Weights are cast to the compute type as they are added, one tensor at a time, so the builder
    holds the converted weights and nothing else.
    """

    def __init__(self, precision: str) -> None:
        # int8 quantizes the float32 graph afterwards; int4 is written here, weight by weight.
        self.int4 = precision == "int4"
        self.compute = np.dtype(np.float16 if precision == "fp16" else np.float32)
        self.onnx_compute = helper.np_dtype_to_tensor_dtype(self.compute)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.int8_matmuls: list[str] = []  # left for the dynamic int8 quantizer (see `linear`)
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self._names:
            candidate, index = f"{name}_{index}", index + 1
        self._names.add(candidate)
        return candidate

    def constant(self, name: str, value: np.ndarray) -> str:
        """An initializer kept in its own dtype (shapes, indices, masks)."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        """An initializer in the compute dtype."""
        return self.constant(name, np.ascontiguousarray(value, dtype=self.compute))

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attributes: object) -> str:
        """Add one node with a single output, named after the node; returns the output name."""
        name = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def to_compute(self, value: str, name: str) -> str:
        if self.compute == np.float32:
            return value
        return self.op("Cast", [value], name, to=self.onnx_compute)

    def to_float32(self, value: str, name: str) -> str:
        if self.compute == np.float32:
            return value
        return self.op("Cast", [value], name, to=TensorProto.FLOAT)

    def linear(
        self,
        x: str,
        name: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        *,
        int8: bool = False,
    ) -> str:
        """y = x @ W.T + b as MatMul (+ Add) with W stored transposed.

        A plain MatMul on a constant [in, out] matrix is the pattern onnxruntime's dynamic int8
        quantizer looks for (Gemm would be skipped). For int4 the weight goes straight into a
        MatMulNBits node instead: onnxruntime's own int4 quantizer needs the `onnx_ir` package,
        and packing 4-bit blocks is a few lines of numpy.

        int8: a plain MatMul for the int8 quantizer whatever the precision, listed in
        `int8_matmuls` so an int4 graph has it quantized too (the front end's patch products).
        """
        if self.int4 and not int8:
            out = self._matmul_int4(x, name, weight)
        else:
            out = self.op(
                "MatMul", [x, self.weight(f"{name}.weight_t", weight.T)], f"{name}/MatMul"
            )
            if int8:
                self.int8_matmuls.append(out)  # a node and its output share one name
        if bias is None:
            return out
        return self.op("Add", [out, self.weight(f"{name}.bias", bias)], f"{name}/Add")

    def _matmul_int4(self, x: str, name: str, weight: np.ndarray) -> str:
        """x @ W.T with W stored as symmetric int4 blocks (com.microsoft.MatMulNBits)."""
        out_features, in_features = weight.shape
        packed, scales = quantize_int4_blocks(weight, INT4_BLOCK_SIZE)
        return self.op(
            "MatMulNBits",
            [
                x,
                self.constant(f"{name}.weight_q4", packed),
                self.constant(f"{name}.weight_scales", scales),
            ],
            f"{name}/MatMulNBits",
            domain="com.microsoft",
            K=in_features,
            N=out_features,
            bits=4,
            block_size=INT4_BLOCK_SIZE,
            # Level 4 lets the CPU kernel quantize activations to int8 per block and use integer
            # dot products: about 25 % faster than float accumulation on a 585 x 1024 x 4096
            # product, with no measurable change in the encoder's output error.
            accuracy_level=4,
        )

    def gelu(self, x: str, name: str) -> str:
        return self.op("Gelu", [x], name, approximate="none")  # exact erf GELU, as F.gelu

    def layer_norm(self, x: str, name: str, weight: np.ndarray, bias: np.ndarray) -> str:
        # stash_type 1 keeps mean and variance in float32 when computing in float16.
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{name}.weight", weight), self.weight(f"{name}.bias", bias)],
            name,
            axis=-1,
            epsilon=LAYER_NORM_EPS,
            stash_type=1,
        )

    def model(
        self,
        graph_name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        metadata: dict[str, str],
    ) -> BuiltModel:
        """The finished model; the builder hands its weights over and is empty afterwards."""
        opsets = [helper.make_opsetid("", OPSET)]
        if self.int4:
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        shell = helper.make_model(
            helper.make_graph(self.nodes, graph_name, inputs, outputs),
            opset_imports=opsets,
            producer_name="qwenscribe",
        )
        shell.ir_version = IR_VERSION
        helper.set_model_props(shell, metadata)
        weights, self.initializers = self.initializers, []
        return BuiltModel(shell, weights, self.int8_matmuls)


@dataclass
class BuiltModel:
    """A model as its graph without weights plus its weights, written to disk as a stream.

    Putting a billion-parameter graph into one ModelProto and serialising it holds the weights
    three times (the tensors, the message, the bytes); writing here holds them once. The file
    is an ordinary ONNX model: protobuf merges repeated occurrences of a message field, so the
    graph is written once without weights and then once more per weight, as a graph holding
    only that initializer.
    """

    shell: onnx.ModelProto
    weights: list[TensorProto]
    int8_matmuls: list[str] = field(default_factory=list)  # for the int8 quantizer in any graph

    @property
    def weight_bytes(self) -> int:
        return sum(len(tensor.raw_data) for tensor in self.weights)

    def save(self, path: Path, external: bool | None = None) -> None:
        """Write `path`, with the weights in `<name>.data` beside it when `external` (by default:
        when they would take the file past protobuf's 2 GiB limit)."""
        if external is None:
            external = self.weight_bytes > _SINGLE_FILE_LIMIT
        data_path = path.with_name(f"{path.name}.data")
        side = open(data_path, "wb") if external else nullcontext(None)  # noqa: SIM115
        with open(path, "wb") as model_file, side as data_file:
            model_file.write(self.shell.SerializeToString())
            for tensor in self.weights:
                if data_file is not None and len(tensor.raw_data) >= _EXTERNAL_MIN_BYTES:
                    tensor = _move_to_data_file(tensor, data_file, data_path.name)
                model_file.write(_as_graph_initializer(tensor))


def _field_header(number: int, length: int) -> bytes:
    """Protobuf key and length of a length-delimited field."""
    return _varint((number << 3) | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _as_graph_initializer(tensor: TensorProto) -> bytes:
    """ModelProto bytes that merge `tensor` into the graph's initializers."""
    record = tensor.SerializeToString()
    graph = _field_header(_INITIALIZER_FIELD, len(record)) + record
    return _field_header(_GRAPH_FIELD, len(graph)) + graph


def _move_to_data_file(tensor: TensorProto, data_file: BinaryIO, location: str) -> TensorProto:
    """A stub of `tensor` pointing at its bytes, appended (aligned) to the side file."""
    data_file.seek(-data_file.tell() % _EXTERNAL_ALIGNMENT, os.SEEK_CUR)
    offset = data_file.tell()
    data_file.write(tensor.raw_data)
    stub = TensorProto(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type)
    stub.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", location),
        ("offset", str(offset)),
        ("length", str(len(tensor.raw_data))),
    ):
        entry = stub.external_data.add()
        entry.key, entry.value = key, value
    return stub


def _linear(
    g: _GraphBuilder,
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


def _layer_norm(g: _GraphBuilder, checkpoint: Checkpoint, x: str, source: str, name: str) -> str:
    return g.layer_norm(
        x, name, checkpoint.tensor(f"{source}.weight"), checkpoint.tensor(f"{source}.bias")
    )


def _conv(g: _GraphBuilder, checkpoint: Checkpoint, x: str, name: str) -> str:
    """One of the front end's 3 x 3, stride-2, padded convolutions as an ONNX Conv (NCHW)."""
    weight = g.weight(f"{name}.weight", checkpoint.tensor(f"{_PREFIX}{name}.weight"))
    bias = g.weight(f"{name}.bias", checkpoint.tensor(f"{_PREFIX}{name}.bias"))
    return g.op("Conv", [x, weight, bias], name, kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)


def _conv_as_matmul(
    g: _GraphBuilder, checkpoint: Checkpoint, x: str, name: str, height: int, width: int
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
    g = _GraphBuilder(precision)
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

    def __init__(self, g: _GraphBuilder, tokens: str) -> None:
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


def _split_heads(g: _GraphBuilder, x: str, name: str, dims: EncoderDims, perm: list[int]) -> str:
    """[P, d] -> [windows, 104, heads, head_dim], then transposed by perm."""
    shape = np.array([-1, WINDOW_TOKENS, dims.heads, dims.d_model // dims.heads], np.int64)
    x = g.op("Reshape", [x, g.constant(f"{name}.shape", shape)], f"{name}/split")
    return g.op("Transpose", [x], f"{name}/heads", perm=perm)


def _attention(
    g: _GraphBuilder, checkpoint: Checkpoint, x: str, layer: int, windows: _Windows
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
    g: _GraphBuilder, checkpoint: Checkpoint, x: str, layer: int, windows: _Windows
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
    g = _GraphBuilder(precision)
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


def _quantize_int8(
    source: Path, path: Path, large: bool, nodes: Sequence[str] | None = None
) -> None:
    """Dynamic int8: MatMul weights as signed 8-bit, activations quantized per call.

    nodes: quantize only these MatMuls (an int4 graph's `int8_matmuls`); None: every one.

    Only MatMuls with a constant weight are quantized (the attention products stay float). The
    front end's wide convolutions are such MatMuls in an int8 graph (`_conv_as_matmul`); the
    first, with one input channel and 0.6 % of the front end's arithmetic, stays a float Conv.
    Weights get one scale per output column: as fast as one per tensor on onnxruntime's CPU
    kernel, and it halved the output error on the tiny test encoder (cosine 0.99966 -> 0.99986).
    The float model is read from a file: given a ModelProto, quantize_dynamic would deep-copy it
    and write it to the system temp folder, holding the float weights in memory twice.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_preprocess_advice():
        quantize_dynamic(
            source,
            path,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(nodes) if nodes is not None else None,
            use_external_data_format=large,
            extra_options={"MatMulConstBOnly": True},
        )


@contextmanager
def _quiet_preprocess_advice() -> Iterator[None]:
    """Drop quantize_dynamic's root-logger advice to run shape pre-processing.

    The advice is for graphs exported from frameworks; this graph is written with every shape it
    needs, and the warning would reach a user's terminal on every conversion.
    """

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _export(
    checkpoint: Checkpoint, build: _Builder, precision: str, staging: Path, filename: str
) -> None:
    """Build one model and write it as `staging / filename` (plus `.data` when it is large)."""
    model = build(checkpoint, precision)
    if precision != "int8" and not model.int8_matmuls:
        model.save(staging / filename)
        return
    large = model.weight_bytes > _SINGLE_FILE_LIMIT
    nodes = None if precision == "int8" else model.int8_matmuls
    source = staging / f"float-{filename}"
    model.save(source)
    del model  # the quantizer reads the weights back from the file
    _quantize_int8(source, staging / filename, large, nodes)


def write_encoder_onnx(checkpoint: Checkpoint, folder: Path, precision: str = "fp32") -> list[Path]:
    """Write `encoder_frontend.<precision>.onnx` and `encoder_backend.<precision>.onnx`.

    Files are written in a temporary folder inside `folder` and moved into place only when both
    are complete, so an interrupted export leaves nothing that looks finished.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"Unknown encoder precision {precision!r}; choose one of {', '.join(PRECISIONS)}."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    builders = (
        (frontend_filename(precision), build_frontend),
        (backend_filename(precision), build_backend),
    )
    staging = Path(tempfile.mkdtemp(prefix=".onnx-encoder-", dir=folder))
    try:
        for filename, build in builders:
            # One model at a time, so only one graph's weights are in memory at once.
            _export(checkpoint, build, precision, staging, filename)
            log.info("encoder %s: wrote %s", precision, filename)
        for filename, _ in builders:
            for name in (filename, f"{filename}.data"):
                if (staging / name).exists():
                    os.replace(staging / name, folder / name)
                else:  # a side file left by an earlier, larger export would be stale
                    (folder / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # intermediates (the float model for int8)
    return [folder / filename for filename, _ in builders]
