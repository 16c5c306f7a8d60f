"""What the ONNX graph tests read of a graph: its operators and its MatMulNBits widths."""

from __future__ import annotations

from pathlib import Path

import onnx


def op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def product_bits(path: Path) -> set[int]:
    """The `bits` of every MatMulNBits in the graph."""
    graph = onnx.load(path, load_external_data=False).graph
    return {
        attribute.i
        for node in graph.node
        if node.op_type == "MatMulNBits"
        for attribute in node.attribute
        if attribute.name == "bits"
    }
