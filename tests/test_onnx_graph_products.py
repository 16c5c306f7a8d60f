"""The int8 weight products GraphBuilder writes itself, checked against numpy on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from qwenscribe.convert.onnx_graph import (
    OPSET,
    ROW_QUANTIZE_OPSET,
    GraphBuilder,
    quantize_int8_columns,
)

IN, OUT = 96, 40


def product_session(tmp_path: Path, weight: np.ndarray, int8_products: str):
    """A graph computing x @ weight.T for x [batch, rows, IN], saved and opened."""
    builder = GraphBuilder("int8", int8_products=int8_products)
    builder.op("Identity", [builder.linear("x", "proj", weight, None)], "y")
    model = builder.model(
        "product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "rows", OUT])],
        {},
    )
    path = tmp_path / f"{int8_products}.onnx"
    model.save(path)
    return path, onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def rows_in_numpy(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The per-row scheme written out: each row to the integers -127..127 by its own largest
    magnitude, the weights by each output's, integer products, then both scales."""
    row_scales = np.abs(x).max(axis=-1, keepdims=True).astype(np.float32) / np.float32(127)
    row_levels = np.rint(x / np.where(row_scales == 0, 1, row_scales)).astype(np.int64)
    weight_scales = np.abs(weight).max(axis=1).astype(np.float32) / np.float32(127)
    weight_levels = np.rint(weight / weight_scales[:, None]).astype(np.int64)
    integer = row_levels @ weight_levels.T
    return (integer * weight_scales * row_scales).astype(np.float32)


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((OUT, IN)).astype(np.float32)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 7, IN)).astype(np.float32)


def test_rows_compute_the_per_row_scheme(tmp_path, weight, x) -> None:
    _, session = product_session(tmp_path, weight, "rows")
    got = session.run(None, {"x": x})[0]
    expected = rows_in_numpy(x, weight)
    # A value exactly between two levels may round the other way: one level of one input.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3 * np.abs(expected).max())
    exact = x @ weight.T
    relative = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert 1e-4 < relative < 0.02  # quantized, and close


def test_a_huge_value_in_one_row_changes_no_other_row(tmp_path, weight, x) -> None:
    """The point of one scale per row: an LLM's first token can carry activations hundreds of
    times the others; with one scale per call they would take every row's precision."""
    _, session = product_session(tmp_path, weight, "rows")
    plain = session.run(None, {"x": x})[0]
    spiked = x.copy()
    spiked[0, 0, 5] = 3000.0
    changed = session.run(None, {"x": spiked})[0]
    np.testing.assert_array_equal(changed[0, 1:], plain[0, 1:])
    np.testing.assert_array_equal(changed[1], plain[1])


def test_a_row_of_zeros_gives_zeros(tmp_path, weight, x) -> None:
    _, session = product_session(tmp_path, weight, "rows")
    x = x.copy()
    x[1, 3] = 0.0
    got = session.run(None, {"x": x})[0]
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[1, 3], np.zeros(OUT, np.float32))


def test_only_graphs_with_per_row_products_need_the_newer_opset(tmp_path, weight) -> None:
    rows_path, _ = product_session(tmp_path, weight, "rows")
    blocks_path, _ = product_session(tmp_path, weight, "blocks")

    def default_opset(path: Path) -> int:
        imports = onnx.load(path).opset_import
        return next(entry.version for entry in imports if entry.domain in ("", "ai.onnx"))

    assert default_opset(rows_path) == ROW_QUANTIZE_OPSET
    assert default_opset(blocks_path) == OPSET


def test_column_quantization_keeps_each_output_to_its_own_scale() -> None:
    weight = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [100.0, 1.0, -50.0]], np.float32)
    levels, scales = quantize_int8_columns(weight)
    assert levels.dtype == np.int8
    assert levels.shape == (3, 3)
    np.testing.assert_array_equal(levels[:, 0], [64, -127, 32])
    np.testing.assert_array_equal(levels[:, 1], [0, 0, 0])  # all zero: scale 1, no NaN
    np.testing.assert_array_equal(levels[:, 2], [127, 1, -64])
    np.testing.assert_allclose(scales, [1 / 127, 1.0, 100 / 127], rtol=1e-6)


def test_an_unknown_product_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="int8_products"):
        GraphBuilder("int8", int8_products="columns")
