"""Write ONNX models from numpy weights, without torch: the graph builder both exporters share.

`GraphBuilder` collects the nodes and weights of one graph in float32 or float16 (int4 weights
are packed as they are added); `BuiltModel.save` streams the result to disk without holding the
weights twice; `export_model` saves a built model and, for int8, quantizes its matrix products
with onnxruntime's dynamic quantizer. The audio encoder (`onnx_encoder`) and the forced
aligner's decoder (`onnx_aligner`) are built with it.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int4")
INT4_BLOCK_SIZE = 32  # weights per int4 scale: the finer of the two usual sizes, for accuracy
INT8_BLOCK_SIZE = 32  # weights per 8-bit scale, as llama.cpp's q8_0
# Scales tried per int4 block, as multiples of "largest magnitude -> -8" (see quantize_int4_blocks).
_INT4_SCALE_STRETCHES = tuple(np.linspace(0.8, 1.2, 9))
# Opset 20 is the first with the ONNX Gelu operator; onnxruntime >= 1.17 runs it. IR 10 is what
# onnxruntime >= 1.16 reads (onnx 1.23 would otherwise stamp a newer IR that older runtimes refuse).
OPSET = 20
# A graph with per-row int8 products needs opset 21: its QuantizeLinear takes one scale per row
# as a block as long as the row (checked on onnxruntime 1.22, the floor, and 1.31).
ROW_QUANTIZE_OPSET = 21
# How an int8 graph computes its weight products (GraphBuilder's int8_products):
# - "dynamic": onnxruntime's dynamic quantizer afterwards, one activation scale per call
#   (MatMulInteger): the audio encoders.
# - "blocks": 8-bit weight blocks of 32 with activations quantized per block by the kernel
#   (MatMulNBits), as llama.cpp's q8_0: the recognizer's decoder.
# - "rows": one activation scale per row and one weight scale per output column, integer
#   products in onnxruntime's int8 GEMM (MatMulIntegerToFloat): the aligner's decoder.
INT8_PRODUCTS = ("dynamic", "blocks", "rows")
IR_VERSION = 10
# protobuf cannot parse a message over 2 GiB; weights go to a side file above this size.
_SINGLE_FILE_LIMIT = 1_800_000_000
_EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the model file, as onnx does it


def weights_file_name(graph_name: str) -> str:
    """The file beside a graph that holds its external weights, as qwenscribe writes them."""
    return f"{graph_name}.data"


_EXTERNAL_ALIGNMENT = 65536  # lets onnxruntime memory-map the side file (Windows granularity)
_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number

Builder = Callable[[Checkpoint, str], "BuiltModel"]


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


def quantize_int8_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A [N, K] float matrix as an 8-bit MatMulNBits wants it: one byte per weight, blocks along
    K, symmetric around the implicit zero point 128 (largest magnitude -> +-127). Returns uint8
    [N, blocks, block] and float32 scales [N * blocks]; K is zero-padded to whole blocks."""
    rows, columns = weight.shape
    blocks = -(-columns // block_size)
    padded = np.zeros((rows, blocks * block_size), np.float32)
    padded[:, :columns] = weight
    grouped = padded.reshape(rows, blocks, block_size)
    scales = np.abs(grouped).max(axis=2, keepdims=True) / np.float32(127)
    scales = np.where(scales == 0, np.float32(1), scales).astype(np.float32)
    levels = np.clip(np.rint(grouped / scales), -127, 127) + 128
    return np.ascontiguousarray(levels.astype(np.uint8)), scales.reshape(-1)


def quantize_int8_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A [N, K] float matrix as W.T in signed 8-bit with one scale per output column (largest
    magnitude -> +-127): int8 [K, N] and float32 scales [N]."""
    scales = np.abs(weight).max(axis=1) / np.float32(127)
    scales = np.where(scales == 0, np.float32(1), scales).astype(np.float32)
    levels = np.clip(np.rint(weight / scales[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(levels.T), scales


class GraphBuilder:
    """Collects nodes and initializers of one graph, computing in float32 or float16.

    Weights are cast to the compute type as they are added, one tensor at a time, so the builder
    holds the converted weights and nothing else.
    """

    def __init__(self, precision: str, int8_products: str = "dynamic") -> None:
        """int8_products: how an int8 graph's weight products are computed (INT8_PRODUCTS);
        "blocks" and "rows" are written here, "dynamic" by the quantizer afterwards."""
        if int8_products not in INT8_PRODUCTS:
            raise ValueError(f"int8_products must be one of {INT8_PRODUCTS}, not {int8_products!r}")
        # int4 is written here, weight by weight, as are int8 blocks and rows.
        self.int4 = precision == "int4"
        self.int8_products = int8_products if precision == "int8" else "dynamic"
        self.compute = np.dtype(np.float16 if precision == "fp16" else np.float32)
        self.onnx_compute = helper.np_dtype_to_tensor_dtype(self.compute)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.int8_matmuls: list[str] = []  # left for the dynamic int8 quantizer (see `linear`)
        self.float_matmuls: list[str] = []  # kept float in any precision (see `linear`)
        self._names: set[str] = set()
        self._shared: dict[str, str] = {}  # constants every product of a kind uses, by name

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

    def shared_constant(self, name: str, value: np.ndarray) -> str:
        """A constant added once per graph however many nodes use it (`value` must not vary)."""
        if name not in self._shared:
            self._shared[name] = self.constant(name, value)
        return self._shared[name]

    def weight(self, name: str, value: np.ndarray) -> str:
        """An initializer in the compute dtype."""
        return self.constant(name, np.ascontiguousarray(value, dtype=self.compute))

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attributes: object) -> str:
        """Add one node with a single output, named after the node; returns the output name."""
        name = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def op_outputs(
        self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attributes: object
    ) -> list[str]:
        """Add one node with several outputs, named as given; the node takes the first name."""
        for output in outputs:
            self._names.add(output)
        node = helper.make_node(op_type, list(inputs), list(outputs), name=outputs[0], **attributes)
        self.nodes.append(node)
        return list(outputs)

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
        keep_float: bool = False,
    ) -> str:
        """y = x @ W.T + b as MatMul (+ Add) with W stored transposed.

        A plain MatMul on a constant [in, out] matrix is the pattern onnxruntime's dynamic int8
        quantizer looks for (Gemm would be skipped). For int4 the weight goes straight into a
        MatMulNBits node instead: onnxruntime's own int4 quantizer needs the `onnx_ir` package,
        and packing 4-bit blocks is a few lines of numpy.

        int8: a plain MatMul for the int8 quantizer whatever the precision, listed in
        `int8_matmuls` so an int4 graph has it quantized too (the front end's patch products).
        keep_float: a float MatMul in every precision, listed in `float_matmuls` so the int8
        quantizer leaves it alone (a small product whose precision matters, like a head).
        """
        quantized_here = self.int4 or self.int8_products != "dynamic"
        if quantized_here and not (int8 or keep_float):
            if self.int8_products == "rows":
                out = self._matmul_int8_rows(x, name, weight)
            else:
                out = self._matmul_nbits(x, name, weight, 4 if self.int4 else 8)
        else:
            out = self.op(
                "MatMul", [x, self.weight(f"{name}.weight_t", weight.T)], f"{name}/MatMul"
            )
            # A node and its output share one name.
            if int8:
                self.int8_matmuls.append(out)
            elif keep_float:
                self.float_matmuls.append(out)
        if bias is None:
            return out
        return self.op("Add", [out, self.weight(f"{name}.bias", bias)], f"{name}/Add")

    def _matmul_nbits(self, x: str, name: str, weight: np.ndarray, bits: int) -> str:
        """x @ W.T with W stored as symmetric 4- or 8-bit blocks (com.microsoft.MatMulNBits)."""
        out_features, in_features = weight.shape
        if bits == 4:
            packed, scales = quantize_int4_blocks(weight, INT4_BLOCK_SIZE)
        else:
            packed, scales = quantize_int8_blocks(weight, INT8_BLOCK_SIZE)
        return self.op(
            "MatMulNBits",
            [
                x,
                self.constant(f"{name}.weight_q{bits}", packed),
                self.constant(f"{name}.weight_scales", scales),
            ],
            f"{name}/MatMulNBits",
            domain="com.microsoft",
            K=in_features,
            N=out_features,
            bits=bits,
            block_size=INT4_BLOCK_SIZE if bits == 4 else INT8_BLOCK_SIZE,
            # Level 4 lets the CPU kernel quantize activations to int8 per block and use integer
            # dot products: about 25 % faster than float accumulation on a 585 x 1024 x 4096
            # product, with no measurable change in the encoder's output error. Per block, an
            # outlier in one channel of the activations costs the precision of its own block
            # only (the dynamic quantizer's single scale per call loses every other value).
            accuracy_level=4,
        )

    def _matmul_int8_rows(self, x: str, name: str, weight: np.ndarray) -> str:
        """x @ W.T with W in int8 per output column and each row of x quantized to 8 bits with a
        scale of its own (symmetric: largest magnitude -> +-127, zero point 128).

        onnxruntime's int8 GEMM (the dynamic quantizer's kernel) runs a 512 x 1024 x 3072
        product 1.8x as fast as the 8-bit blocks of MatMulNBits on our AVX-512 VNNI machine,
        and a row of its own per scale keeps the few huge activations of some tokens (an LLM's
        first token) from costing every other row its precision, which one scale per call does
        (34 % against 1.1 % relative error on such a product). Channels that are large in every
        row still cost a row's precision (4.5 % against 1.1 % in blocks with three channels 20x
        the others): used where the outputs tolerate it, the aligner's timestamp classes.
        Unsigned activations: onnxruntime has no fast kernel for signed x signed 8-bit.
        """
        _, in_features = weight.shape
        levels, scales = quantize_int8_columns(weight)
        last_axis = self.shared_constant("int8_rows.last_axis", np.array([-1], np.int64))
        inverse_127 = self.shared_constant("int8_rows.inverse_127", np.array(1 / 127, np.float32))
        # A row of zeros gets a tiny scale instead of 0 (x / 0 would be NaN): it quantizes to 0.
        tiny = self.shared_constant("int8_rows.tiny", np.array(1e-30, np.float32))
        midpoint = self.shared_constant("int8_rows.zero_point", np.array(128, np.uint8))
        unit = self.shared_constant("int8_rows.unit_scale", np.array(1, np.float32))
        largest = self.op(
            "ReduceMax", [self.op("Abs", [x], f"{name}/abs"), last_axis], f"{name}/row_max"
        )
        row_scale = self.op(
            "Max",
            [self.op("Mul", [largest, inverse_127], f"{name}/row_step"), tiny],
            f"{name}/row_scale",
        )
        # A blocked QuantizeLinear wants a zero point of the scales' shape: 128 per row.
        zero_points = self.op(
            "Expand", [midpoint, self.op("Shape", [row_scale], f"{name}/rows")], f"{name}/row_zero"
        )
        quantized = self.op(
            "QuantizeLinear",
            [x, row_scale, zero_points],
            f"{name}/quantize_rows",
            axis=-1,
            block_size=in_features,
        )
        products = self.op(
            "MatMulIntegerToFloat",
            [
                quantized,
                self.constant(f"{name}.weight_int8", levels),
                unit,
                self.constant(f"{name}.weight_scales", scales),
                midpoint,
            ],
            f"{name}/MatMulIntegerToFloat",
            domain="com.microsoft",
        )
        return self.op("Mul", [products, row_scale], f"{name}/scale_rows")

    def gelu(self, x: str, name: str) -> str:
        return self.op("Gelu", [x], name, approximate="none")  # exact erf GELU, as F.gelu

    def layer_norm(
        self, x: str, name: str, weight: np.ndarray, bias: np.ndarray, epsilon: float
    ) -> str:
        # stash_type 1 keeps mean and variance in float32 when computing in float16.
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{name}.weight", weight), self.weight(f"{name}.bias", bias)],
            name,
            axis=-1,
            epsilon=epsilon,
            stash_type=1,
        )

    def rms_norm(self, x: str, name: str, weight: np.ndarray, epsilon: float) -> str:
        """x / sqrt(mean(x^2) + eps) * weight over the last axis, in float32 (as Qwen3RMSNorm).

        Written as Pow, ReduceMean, Add, Sqrt, Div, Mul: the pattern onnxruntime's graph
        optimizer fuses into its own RMS normalization kernel (opset 20 has no such operator).
        """
        x32 = self.to_float32(x, f"{name}/float")
        two = self.constant(f"{name}.two", np.array(2.0, np.float32))
        square = self.op("Pow", [x32, two], f"{name}/square")
        axes = self.constant(f"{name}.axes", np.array([-1], np.int64))
        mean = self.op("ReduceMean", [square, axes], f"{name}/mean", keepdims=1)
        eps = self.constant(f"{name}.epsilon", np.array(epsilon, np.float32))
        root = self.op("Sqrt", [self.op("Add", [mean, eps], f"{name}/add_eps")], f"{name}/rms")
        normed = self.to_compute(self.op("Div", [x32, root], f"{name}/normed"), f"{name}/back")
        return self.op("Mul", [normed, self.weight(f"{name}.weight", weight)], name)

    def model(
        self,
        graph_name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        metadata: dict[str, str],
    ) -> BuiltModel:
        """The finished model; the builder hands its weights over and is empty afterwards."""
        per_row = any(node.op_type == "QuantizeLinear" for node in self.nodes)
        opsets = [helper.make_opsetid("", ROW_QUANTIZE_OPSET if per_row else OPSET)]
        if any(node.domain == "com.microsoft" for node in self.nodes):  # int4, attention
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        shell = helper.make_model(
            helper.make_graph(self.nodes, graph_name, inputs, outputs),
            opset_imports=opsets,
            producer_name="qwenscribe",
        )
        shell.ir_version = IR_VERSION
        helper.set_model_props(shell, metadata)
        weights, self.initializers = self.initializers, []
        return BuiltModel(
            shell,
            weights,
            self.int8_matmuls,
            self.float_matmuls,
            quantized=self.int8_products != "dynamic",
        )


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
    float_matmuls: list[str] = field(default_factory=list)  # never quantized
    quantized: bool = False  # its int8 products are written already (blocks or rows)

    @property
    def weight_bytes(self) -> int:
        return sum(len(tensor.raw_data) for tensor in self.weights)

    def save(self, path: Path, external: bool | None = None) -> None:
        """Write `path`, with the weights in `<name>.data` beside it when `external` (by default:
        when they would take the file past protobuf's 2 GiB limit)."""
        if external is None:
            external = self.weight_bytes > _SINGLE_FILE_LIMIT
        data_path = path.with_name(weights_file_name(path.name))
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


def _quantize_int8(
    source: Path,
    path: Path,
    large: bool,
    nodes: Sequence[str] | None = None,
    excluded: Sequence[str] = (),
) -> None:
    """Dynamic int8: MatMul weights as signed 8-bit, activations quantized per call.

    nodes: quantize only these MatMuls (an int4 graph's `int8_matmuls`); None: every one but
    the `excluded` (a graph's `float_matmuls`).

    Only MatMuls with a constant weight are quantized (the attention products stay float). The
    encoder front end's wide convolutions are such MatMuls in an int8 graph
    (`onnx_encoder._conv_as_matmul`). Weights get one scale per output column: as fast as one
    per tensor on onnxruntime's CPU kernel, and it halved the output error on the tiny test
    encoder (cosine 0.99966 -> 0.99986). The float model is read from a file: given a
    ModelProto, quantize_dynamic would deep-copy it and write it to the system temp folder,
    holding the float weights in memory twice.
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
            nodes_to_exclude=list(excluded),
            use_external_data_format=large,
            # Shape inference cannot type the outputs of contrib operators; all are float32.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
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


def export_model(
    checkpoint: Checkpoint,
    build: Builder,
    precision: str,
    staging: Path,
    filename: str,
    external: bool | None = None,
) -> None:
    """Build one model and write it as `staging / filename`, with its weights in a `.data` file
    beside it when `external` (None: when they would pass protobuf's limit)."""
    model = build(checkpoint, precision)
    large = model.weight_bytes > _SINGLE_FILE_LIMIT if external is None else external
    if (precision != "int8" or model.quantized) and not model.int8_matmuls:
        model.save(staging / filename, large)
        return
    nodes = None if precision == "int8" else model.int8_matmuls
    excluded = model.float_matmuls
    source = staging / f"float-{filename}"
    model.save(source)
    del model  # the quantizer reads the weights back from the file
    _quantize_int8(source, staging / filename, large, nodes, excluded)
    if large:
        align_side_file(staging / filename)


def align_side_file(path: Path) -> None:
    """Write a graph the quantizer saved again in qwenscribe's layout: its weights in the side
    file, each on a 64 KiB boundary. onnx's writer packs them end to end, and the layout should
    not depend on which tool wrote a graph last."""
    model = onnx.load(str(path))  # reads the quantizer's side file, if it wrote one
    weights = list(model.graph.initializer)
    del model.graph.initializer[:]
    BuiltModel(shell=model, weights=weights, quantized=True).save(path, external=True)


def write_models(
    checkpoint: Checkpoint,
    folder: Path,
    precision: str,
    builders: Sequence[tuple[str, Builder]],
    what: str,
    external: bool | None = None,
) -> list[Path]:
    """Write each `(filename, build)` model of one precision into `folder`.

    Files are written in a temporary folder inside `folder` and moved into place only when all
    are complete, so an interrupted export leaves nothing that looks finished. `what` names
    the models in the log ("encoder"); `external` as for `export_model`.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"Unknown {what} precision {precision!r}; choose one of {', '.join(PRECISIONS)}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".onnx-{what}-", dir=folder))
    try:
        for filename, build in builders:
            # One model at a time, so only one graph's weights are in memory at once.
            export_model(checkpoint, build, precision, staging, filename, external)
            log.info("%s %s: wrote %s", what, precision, filename)
        for filename, _ in builders:
            side = staging / weights_file_name(filename)
            if side.exists():
                # onnx writes the quantizer's side file readable by its owner only; give it the
                # model file's permissions, or a cache shared between users breaks on it.
                shutil.copymode(staging / filename, side)
            for name in (filename, side.name):
                if (staging / name).exists():
                    os.replace(staging / name, folder / name)
                else:  # a side file left by an earlier, larger export would be stale
                    (folder / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # intermediates (the float model for int8)
    return [folder / filename for filename, _ in builders]
