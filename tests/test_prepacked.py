"""Packed copies of the ONNX graphs (runtimes/prepacked.py): written once per graph and machine,
equal in results to packing at load, and never in the way: an ONNX Runtime that cannot write
them or writes them misaligned, no room, a cache that cannot be written, a damaged or outdated
copy, a writer that fails.

The graphs: two products of 1024 x 1024 in 8-bit blocks (MatMulNBits, what pre-packing is
for, large enough that ONNX Runtime aligns them in the copy, as the real decoders'), and the
suite's tiny recognizer's int8 decoder, whose small packed weights it does not align."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.onnx_decoder import onnx_decoder_filename, write_recognizer_decoder
from qwenscribe.convert.onnx_graph import GraphBuilder
from qwenscribe.paths import prepacked_dir
from qwenscribe.runtimes import prepacked
from qwenscribe.runtimes.onnx_session import open_session

WIDTH = 1024


@pytest.fixture(scope="module")
def source_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("products")
    builder = GraphBuilder("int8", int8_products="blocks")
    rng = np.random.default_rng(0)
    x = "x"
    for index in range(2):
        weight = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) / 32
        x = builder.linear(x, f"layer{index}", weight, None)
    builder.op("Identity", [x], "y")
    model = builder.model(
        "products",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", WIDTH])],
        {},
    )
    model.save(folder / "products.onnx", external=True)
    return folder


@pytest.fixture
def graph(source_folder, tmp_path) -> Path:
    """A private copy of the graph (tests change, move and delete it)."""
    folder = tmp_path / "model"
    shutil.copytree(source_folder, folder)
    return folder / "products.onnx"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def writes(monkeypatch) -> list[Path]:
    """The copies written (the sources they were written for)."""
    written: list[Path] = []
    original = prepacked._write_copy

    def spy(path, folder, configure):
        written.append(path)
        return original(path, folder, configure)

    monkeypatch.setattr(prepacked, "_write_copy", spy)
    return written


def copies() -> list[Path]:
    root = prepacked_dir()
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def open_packing(path: Path, precision: str = "int8"):
    return open_session(path, precision, "CPUExecutionProvider", threads=1, prepack=True)


def run(session) -> np.ndarray:
    """The graph's outputs for fixed random inputs (dynamic sizes: 5)."""
    feeds = {}
    for spec in session.get_inputs():
        shape = [size if isinstance(size, int) else 5 for size in spec.shape]
        if spec.type == "tensor(int32)":  # the decoder's seqlens_k: all 5 rows are the prompt
            feeds[spec.name] = np.full(shape, 4, np.int32)
        elif spec.name.startswith("past_"):  # the decoder's empty cache (capacity 8)
            shape[2] = 8
            feeds[spec.name] = np.zeros(shape, np.float32)
        else:
            feeds[spec.name] = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return session.run(None, feeds)[0]


def packed_in_memory(path: Path):
    """The graph as ONNX Runtime packs it at load, without a copy."""
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_first_load_writes_a_copy_that_later_loads_use(graph, writes):
    first = open_packing(graph)
    [copy] = copies()
    assert prepacked.packed_weights_problem(copy / prepacked.GRAPH) is None
    assert oct((copy).stat().st_mode & 0o777) == oct(0o755)
    assert not [p for p in prepacked_dir().iterdir() if p.name.startswith(".writing-")]

    second = open_packing(graph)
    assert writes == [graph], "the second load wrote the copy again"
    assert copies() == [copy]
    # The same kernels on the same weights: the copy's results are the in-memory packing's.
    expected = run(packed_in_memory(graph))
    np.testing.assert_array_equal(run(first), expected)
    np.testing.assert_array_equal(run(second), expected)


def test_a_changed_graph_gets_a_new_copy_and_the_old_one_goes(graph, writes):
    open_packing(graph)
    [old] = copies()
    later = time.time() + 5
    os.utime(graph, (later, later))  # converted again
    open_packing(graph)
    [new] = copies()
    assert new != old
    assert not old.exists()
    assert len(writes) == 2


def test_copies_of_deleted_graphs_are_removed(graph, source_folder, tmp_path, writes):
    open_packing(graph)
    [orphan] = copies()
    shutil.rmtree(graph.parent)
    other = tmp_path / "other"
    shutil.copytree(source_folder, other)
    open_packing(other / graph.name)
    [kept] = copies()
    assert kept != orphan
    assert not orphan.exists()


def test_onnxruntime_that_writes_no_packed_weights(graph, writes, monkeypatch):
    monkeypatch.setattr(prepacked, "packed_weights_problem", lambda path: "writes none")
    session = open_packing(graph)
    np.testing.assert_array_equal(run(session), run(packed_in_memory(graph)))
    [record] = copies()
    assert sorted(p.name for p in record.iterdir()) == [prepacked.SOURCE, prepacked.UNSUPPORTED]
    assert (record / prepacked.UNSUPPORTED).read_text(encoding="utf-8") == "writes none\n"
    open_packing(graph)
    assert writes == [graph], "tried again to write what this ONNX Runtime cannot"


def test_a_cache_that_cannot_be_written(graph, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("QWENSCRIBE_HOME", str(blocker / "home"))
    session = open_packing(graph)
    np.testing.assert_array_equal(run(session), run(packed_in_memory(graph)))


def test_no_room_for_a_copy(graph, writes, monkeypatch, caplog):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(prepacked.shutil, "disk_usage", lambda path: usage(10, 10, 0))
    with caplog.at_level(logging.WARNING, logger="qwenscribe.runtimes.prepacked"):
        session = open_packing(graph)
    np.testing.assert_array_equal(run(session), run(packed_in_memory(graph)))
    assert writes == []
    assert copies() == []
    assert "Not enough free space" in caplog.text


def test_a_failing_writer_leaves_nothing_behind(graph, monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepacked, "_open_and_save", fail)
    with caplog.at_level(logging.WARNING, logger="qwenscribe.runtimes.prepacked"):
        session = open_packing(graph)
    np.testing.assert_array_equal(run(session), run(packed_in_memory(graph)))
    assert list(prepacked_dir().iterdir()) == []
    assert "disk full" in caplog.text


def test_a_damaged_copy_is_discarded_and_the_graph_still_loads(graph, writes, caplog):
    open_packing(graph)
    [copy] = copies()
    (copy / prepacked.GRAPH).write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING, logger="qwenscribe.runtimes.onnx_session"):
        session = open_packing(graph)
    np.testing.assert_array_equal(run(session), run(packed_in_memory(graph)))
    assert not copy.exists()
    assert "cannot be loaded" in caplog.text
    open_packing(graph)  # made again
    assert len(writes) == 2
    assert len(copies()) == 1


def test_abandoned_writes_are_cleared_after_a_day(graph):
    root = prepacked_dir()
    abandoned, recent = root / ".writing-old", root / ".writing-new"
    for folder in (abandoned, recent):
        folder.mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    os.utime(abandoned, (two_days_ago, two_days_ago))
    open_packing(graph)
    assert not abandoned.exists()
    assert recent.exists()


def test_only_sessions_that_pack_use_copies(graph):
    open_session(graph, "int8", "CPUExecutionProvider", threads=1, prepack=False)
    assert copies() == []


def test_a_copy_with_unaligned_packed_weights_is_not_used(checkpoints, tmp_path, writes):
    """ONNX Runtime writes the tiny decoder's small packed weights off 4096-byte boundaries; its
    kernels computed NaN from such a copy (onnxruntime 1.31.1). It must be refused and the
    weights packed in memory, with the same results as without any copy."""
    write_recognizer_decoder(Checkpoint(checkpoints[("asr", "hf")]), tmp_path, "int8")
    decoder = tmp_path / onnx_decoder_filename("int8")
    session = open_packing(decoder)
    [record] = copies()
    reason = (record / prepacked.UNSUPPORTED).read_text(encoding="utf-8")
    assert "not 4096-byte aligned" in reason
    assert not (record / prepacked.GRAPH).exists()
    got = run(session)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, run(packed_in_memory(decoder)))
    open_packing(decoder)
    assert writes == [decoder]


@pytest.mark.parametrize(
    ("value", "offset"),
    [("MatMulNBits+54252|4984832;5243006;0", 4984832), ("MatMulNBits+1|x;2;0", None), ("?", None)],
)
def test_packed_offsets_are_read_from_onnxruntime_entries(value, offset):
    assert prepacked._packed_offset(value) == offset
