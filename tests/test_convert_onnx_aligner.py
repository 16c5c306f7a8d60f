"""The aligner's decoder as ONNX: equal to transformers in fp32, close in every other precision,
and run in blocks by the runtime without changing a logit.

The reference is transformers' `Qwen3ASRForTokenClassification` on the suite's tiny aligner:
its language model on input embeddings, then its `score` head, at every row. The input is
random embeddings (unit scale), so every row's hidden state differs and the head picks many
different classes: an input in the wrong order or positions would change them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from onnx_graphs import op_counts, product_bits
from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.onnx_aligner import (
    aligner_decoder_filename,
    build_aligner_decoder,
    write_aligner_decoder_onnx,
)
from qwenscribe.errors import ModelError
from qwenscribe.runtimes import onnx_session
from qwenscribe.runtimes.onnx_aligner import OnnxSlotScorer
from qwenscribe.runtimes.onnx_session import MIN_BLOCK_ROWS, block_rows
from torchless import run_without_torch

ROWS = 300
# Quantized logits against transformers' float32 ones on ROWS random rows (logits reach ~22):
# relative RMS error and top-1 agreement bounds, about 2-3x the error and disagreement measured:
# int8 (per-row products) 0.0148 / 0.977, fp16 0.00036 / 0.997, int4 0.112 / 0.847.
QUANTIZED_BOUNDS = {"int8": (0.03, 0.95), "fp16": (0.001, 0.99), "int4": (0.3, 0.7)}


@pytest.fixture(scope="module")
def aligner(checkpoints) -> Path:
    return checkpoints[("aligner", "hf")]


@pytest.fixture(scope="module")
def decoders(aligner, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx-aligner")
    checkpoint = Checkpoint(aligner)
    for precision in ("fp32", "int8", "fp16", "int4"):
        write_aligner_decoder_onnx(checkpoint, folder, precision)
    return folder


@pytest.fixture(scope="module")
def rows(aligner) -> np.ndarray:
    hidden = Checkpoint(aligner).arch.decoder.hidden
    return np.random.default_rng(1).standard_normal((ROWS, hidden)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(aligner, rows) -> np.ndarray:
    """transformers' logits [ROWS, 5000] at every row."""
    torch = pytest.importorskip("torch")
    from transformers import Qwen3ASRForTokenClassification

    model = Qwen3ASRForTokenClassification.from_pretrained(aligner, dtype=torch.float32).eval()
    with torch.inference_mode():
        hidden = model.model.language_model(inputs_embeds=torch.from_numpy(rows)[None])
        return model.score(hidden.last_hidden_state)[0].numpy()


def scorer(folder: Path, precision: str) -> OnnxSlotScorer:
    return OnnxSlotScorer(folder, precision, "CPUExecutionProvider", threads=1)


def every_row() -> np.ndarray:
    return np.ones(ROWS, dtype=bool)


@pytest.mark.reference
def test_fp32_decoder_equals_transformers(decoders, rows, reference) -> None:
    logits = scorer(decoders, "fp32").score(rows, every_row())
    assert logits.shape == reference.shape == (ROWS, 5000)
    print(f"max |logit diff| {np.abs(logits - reference).max():.3g}")
    np.testing.assert_allclose(logits, reference, rtol=0, atol=5e-5)  # measured 9.5e-6
    np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))
    assert len(set(reference.argmax(1).tolist())) >= 50, "the rows should pick varied classes"


@pytest.mark.reference
def test_blocks_of_rows_give_the_same_logits(decoders, rows, reference, monkeypatch) -> None:
    """With a tiny attention budget the input runs in blocks of MIN_BLOCK_ROWS rows, each
    attending to the cache of the rows before it; the logits do not change."""
    monkeypatch.setattr(onnx_session, "ATTENTION_BUDGET_BYTES", 1)
    assert block_rows(ROWS, heads=4) == MIN_BLOCK_ROWS  # so 5 calls here
    model = scorer(decoders, "fp32")
    calls = []
    run = model.session.run
    model.session = SimpleNamespace(run=lambda *args: calls.append(1) or run(*args))
    logits = model.score(rows, every_row())
    assert len(calls) == -(-ROWS // MIN_BLOCK_ROWS)
    np.testing.assert_allclose(logits, reference, rtol=0, atol=5e-5)


def test_a_block_of_one_row_continues_the_cache(decoders, rows) -> None:
    """The graph itself, fed one row at a time after a first block: as in one call."""
    model = scorer(decoders, "fp32")
    whole = model.score(rows[:40], np.ones(40, dtype=bool))
    cache = model._empty_cache()
    pieces = []
    for first, last in [(0, 30), *((row, row + 1) for row in range(30, 40))]:
        feeds = {"embeddings": rows[first:last], "slot_rows": np.arange(last - first)} | cache
        results = dict(zip(model._outputs, model.session.run(None, feeds), strict=True))
        pieces.append(results.pop("slot_logits"))
        cache = {name.replace("present_", "past_"): value for name, value in results.items()}
        assert cache["past_key.0"].shape[2] == last
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=2e-5)


def test_only_the_slot_rows_are_scored_and_later_rows_change_nothing(decoders, rows) -> None:
    model = scorer(decoders, "fp32")
    all_logits = model.score(rows, every_row())
    is_slot = np.zeros(ROWS, dtype=bool)
    is_slot[[3, 50, 51, 199]] = True
    np.testing.assert_allclose(model.score(rows, is_slot), all_logits[is_slot], rtol=0, atol=2e-5)
    # Causal attention: rows after the last slot are never run.
    changed = rows.copy()
    changed[200:] = 0.0
    np.testing.assert_allclose(model.score(changed, is_slot), all_logits[is_slot], atol=2e-5)
    assert model.score(rows, np.zeros(ROWS, dtype=bool)).shape == (0, 5000)


@pytest.mark.reference
@pytest.mark.parametrize("precision", sorted(QUANTIZED_BOUNDS))
def test_quantized_decoders_stay_close(decoders, rows, reference, precision) -> None:
    logits = scorer(decoders, precision).score(rows, every_row())
    relative = float(np.sqrt(np.mean((logits - reference) ** 2) / np.mean(reference**2)))
    agree = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    print(f"{precision}: relative RMS error {relative:.3g}, top-1 agreement {agree:.3f}")
    worst_error, least_agreement = QUANTIZED_BOUNDS[precision]
    assert relative < worst_error
    assert agree >= least_agreement


@pytest.mark.parametrize(
    ("precision", "product", "bits"),
    [("fp32", "MatMul", None), ("int8", "MatMulIntegerToFloat", None), ("int4", "MatMulNBits", 4)],
)
def test_graph_holds_one_attention_and_four_products_per_layer(
    aligner, decoders, precision, product, bits
) -> None:
    """q/k/v fused and gate/up fused: 4 weight products a layer, quantized as asked (int8 as
    signed 8-bit weights with rows quantized per row); the timestamp head is a float MatMul in
    every precision (its argmax is the word time)."""
    layers = Checkpoint(aligner).arch.decoder.layers
    path = decoders / aligner_decoder_filename(precision)
    counts = op_counts(path)
    assert counts["GroupQueryAttention"] == layers
    head_products = 1
    assert counts.get(product, 0) == 4 * layers + (head_products if product == "MatMul" else 0)
    assert "MatMulInteger" not in counts
    if precision != "fp32":
        assert counts["MatMul"] == head_products
    if bits is not None:
        assert product_bits(path) == {bits}
    graph = onnx.load(decoders / aligner_decoder_filename(precision)).graph
    head = next(node for node in graph.node if node.name == "score/MatMul")
    weights = {tensor.name: tensor for tensor in graph.initializer}
    assert weights[head.input[1]].data_type == onnx.TensorProto.FLOAT
    if product == "MatMulIntegerToFloat":
        products = [node for node in graph.node if node.op_type == product]
        assert {weights[node.input[1]].data_type for node in products} == {onnx.TensorProto.INT8}
        assert counts["QuantizeLinear"] == 4 * layers  # one scale per row, per product


def test_block_rows_keep_attention_within_the_budget() -> None:
    assert block_rows(760, heads=16) == 760  # a default 30-s chunk: one call
    rows = block_rows(20_000, heads=16)
    assert MIN_BLOCK_ROWS <= rows < 20_000
    assert 16 * 4 * rows * 20_000 <= onnx_session.ATTENTION_BUDGET_BYTES
    assert block_rows(10, heads=16, budget=1) == MIN_BLOCK_ROWS
    assert block_rows(0, heads=16) == MIN_BLOCK_ROWS


def test_missing_or_damaged_files_are_model_errors(decoders, tmp_path) -> None:
    with pytest.raises(ModelError, match=r"has no aligner file aligner_decoder\.int8\.onnx"):
        scorer(tmp_path, "int8")
    graph = aligner_decoder_filename("fp32")
    damaged = tmp_path / graph
    damaged.write_bytes((decoders / graph).read_bytes()[:5000])
    with pytest.raises(ModelError, match="cannot load") as caught:
        scorer(tmp_path, "fp32")
    assert "Convert the model again" in str(caught.value)
    # The graph whole, its weights file missing.
    damaged.write_bytes((decoders / graph).read_bytes())
    with pytest.raises(ModelError, match="cannot load"):
        scorer(tmp_path, "fp32")


def test_an_asr_checkpoint_is_refused(checkpoints) -> None:
    with pytest.raises(ValueError, match="not an aligner"):
        build_aligner_decoder(Checkpoint(checkpoints[("asr", "hf")]))


def test_exporter_never_imports_torch(aligner, tmp_path) -> None:
    result = run_without_torch(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from qwenscribe.convert.checkpoint import Checkpoint
            from qwenscribe.convert.onnx_aligner import write_aligner_decoder_onnx
            checkpoint = Checkpoint({str(aligner)!r})
            for precision in ("fp32", "int8"):
                write_aligner_decoder_onnx(checkpoint, Path({str(tmp_path)!r}), precision)
            print("exported", len(list(Path({str(tmp_path)!r}).glob("*.onnx"))))
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "exported 2" in result.stdout
