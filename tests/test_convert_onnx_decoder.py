"""The recognizer's decoder as ONNX: equal to transformers in fp32, step by step and side by side,
close in every other precision.

The reference is transformers' `Qwen3ASRForConditionalGeneration` on the suite's tiny recognizer:
its language model on input embeddings, then its head, at every row. Prompts are random audio
rows between text tokens, and generation steps feed chosen token ids, so the token table, the
audio rows' places, the cache written in place and the positions of each sequence all count.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from onnx_graphs import op_counts, product_bits
from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.gguf_decoder import TOKEN_EMBEDDINGS_FILE
from qwenscribe.convert.onnx_decoder import (
    build_recognizer_decoder,
    onnx_decoder_filename,
    write_recognizer_decoder,
)
from qwenscribe.errors import ModelError
from qwenscribe.model.tokens import AUDIO_PAD_ID
from qwenscribe.runtimes import onnx_session
from qwenscribe.runtimes.base import DecodeRequest
from qwenscribe.runtimes.onnx_decoder import OnnxDecoder, OnnxSequences
from qwenscribe.runtimes.onnx_session import MIN_BLOCK_ROWS
from torchless import run_without_torch

# Text tokens before and after the audio rows, as a prompt has them (any ids would do).
PROMPT_TEXT = [151644, 8948, 198, 151645, 198, 151644, 872, 198, 151669]
PROMPT_END = [151670, 151645, 198, 151644, 77091, 198]
STEPS = 24
# Quantized logits against transformers' float32 ones (relative RMS error, top-1 agreement),
# over 46 rows, bounds about 2-3x what was measured: int8 0.020 / 0.94, fp16 0.00036 / 1.0,
# int4 0.20 / 0.67 (the head is quantized too here, unlike the aligner's).
QUANTIZED_BOUNDS = {"int8": (0.06, 0.85), "fp16": (0.001, 0.97), "int4": (0.4, 0.5)}


@pytest.fixture(scope="module")
def recognizer(checkpoints) -> Path:
    return checkpoints[("asr", "hf")]


@pytest.fixture(scope="module")
def decoders(recognizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx-decoder")
    checkpoint = Checkpoint(recognizer)
    for precision in ("fp32", "int8", "fp16", "int4"):
        write_recognizer_decoder(checkpoint, folder, precision)
    return folder


@pytest.fixture(scope="module")
def table(recognizer) -> np.ndarray:
    name = "model.language_model.embed_tokens.weight"
    return np.asarray(Checkpoint(recognizer).tensor(name), np.float32)


def make_request(audio_rows: int, seed: int, hidden: int, max_new: int = STEPS) -> DecodeRequest:
    audio = np.random.default_rng(seed).standard_normal((audio_rows, hidden)).astype(np.float32)
    ids = [*PROMPT_TEXT, *([AUDIO_PAD_ID] * audio_rows), *PROMPT_END]
    return DecodeRequest(prompt_ids=ids, audio=audio, max_new_tokens=max_new)


def forced_tokens(seed: int) -> list[int]:
    """The tokens fed after the prompt: any ids (teacher forcing), varied per sequence."""
    return np.random.default_rng(seed).integers(0, 151000, STEPS).tolist()


@pytest.fixture(scope="module")
def reference_model(recognizer):
    torch = pytest.importorskip("torch")
    from transformers import Qwen3ASRForConditionalGeneration

    return Qwen3ASRForConditionalGeneration.from_pretrained(recognizer, dtype=torch.float32).eval()


def reference_logits(model, table, request: DecodeRequest, tokens: list[int]) -> np.ndarray:
    """transformers' logits after the prompt and after each of `tokens` but the last."""
    import torch

    ids = np.asarray(request.prompt_ids)
    rows = table[ids].copy()
    rows[ids == AUDIO_PAD_ID] = request.audio
    rows = np.concatenate([rows, table[tokens[:-1]]])
    with torch.inference_mode():
        hidden = model.model.language_model(inputs_embeds=torch.from_numpy(rows)[None])
        logits = model.lm_head(hidden.last_hidden_state)[0].numpy()
    return logits[len(ids) - 1 :]


def sequences(folder: Path, precision: str) -> OnnxSequences:
    return OnnxSequences(OnnxDecoder(folder, precision, threads=1))


def decode(decoder: OnnxSequences, requests, tokens, finish_after=None) -> list[list[np.ndarray]]:
    """Prefill `requests`, then step them together with their forced tokens; `finish_after`
    {seq: steps} drops a sequence after that many steps. Logits per sequence, in order."""
    finish_after = finish_after or {}
    logits = [[values] for values in decoder.start(requests)]
    active = list(range(len(requests)))
    for step in range(STEPS - 1):
        done = [seq for seq in active if finish_after.get(seq) == step]
        decoder.finish(done)
        active = [seq for seq in active if seq not in done]
        out = decoder.step(active, [tokens[seq][step] for seq in active])
        for seq, values in zip(active, out, strict=True):
            logits[seq].append(values)
    return logits


@pytest.mark.reference
def test_fp32_decoder_equals_transformers_prompt_and_steps(
    decoders, table, reference_model, recognizer
) -> None:
    hidden = Checkpoint(recognizer).arch.decoder.hidden
    request, tokens = make_request(40, 1, hidden), forced_tokens(1)
    (logits,) = decode(sequences(decoders, "fp32"), [request], [tokens])
    expected = reference_logits(reference_model, table, request, tokens)
    got = np.stack(logits)
    assert got.shape == expected.shape == (STEPS, 151936)
    print(f"max |logit diff| {np.abs(got - expected).max():.3g}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.reference
def test_sequences_side_by_side_equal_each_alone(
    decoders, table, reference_model, recognizer
) -> None:
    """Three prompts of different lengths stepped together, the middle one finishing early (the
    last one moves down a slot): every sequence's logits are transformers' for it alone."""
    hidden = Checkpoint(recognizer).arch.decoder.hidden
    requests = [make_request(rows, seed, hidden) for seed, rows in ((2, 12), (3, 55), (4, 30))]
    tokens = [forced_tokens(seed) for seed in (2, 3, 4)]
    logits = decode(sequences(decoders, "fp32"), requests, tokens, finish_after={1: 9})
    assert [len(values) for values in logits] == [STEPS, 10, STEPS]
    for seq, request in enumerate(requests):
        expected = reference_logits(reference_model, table, request, tokens[seq])
        got = np.stack(logits[seq])
        np.testing.assert_allclose(got, expected[: len(got)], rtol=0, atol=5e-5)


@pytest.mark.reference
def test_a_long_prompt_in_blocks_gives_the_same_logits(
    decoders, table, reference_model, recognizer, monkeypatch
) -> None:
    """With a tiny attention budget a prompt is prefilled in blocks of MIN_BLOCK_ROWS rows."""
    hidden = Checkpoint(recognizer).arch.decoder.hidden
    request, tokens = make_request(200, 5, hidden), forced_tokens(5)
    monkeypatch.setattr(onnx_session, "ATTENTION_BUDGET_BYTES", 1)
    decoder = sequences(decoders, "fp32")
    calls = []
    session = decoder.decoder.session
    run = session.run_with_iobinding
    decoder.decoder.session = SimpleNamespace(
        io_binding=session.io_binding, run_with_iobinding=lambda io: calls.append(1) or run(io)
    )
    (logits,) = decode(decoder, [request], [tokens])
    prompt = len(request.prompt_ids)
    assert len(calls) == -(-prompt // MIN_BLOCK_ROWS) + STEPS - 1
    expected = reference_logits(reference_model, table, request, tokens)
    np.testing.assert_allclose(np.stack(logits), expected, rtol=0, atol=5e-5)


@pytest.mark.reference
@pytest.mark.parametrize("precision", sorted(QUANTIZED_BOUNDS))
def test_quantized_decoders_stay_close(
    decoders, table, reference_model, recognizer, precision
) -> None:
    hidden = Checkpoint(recognizer).arch.decoder.hidden
    requests = [make_request(rows, seed, hidden) for seed, rows in ((6, 60), (7, 45))]
    tokens = [forced_tokens(6), forced_tokens(7)]
    logits = decode(sequences(decoders, precision), requests, tokens)
    got = np.concatenate([np.stack(values) for values in logits])
    expected = np.concatenate(
        [
            reference_logits(reference_model, table, r, t)
            for r, t in zip(requests, tokens, strict=True)
        ]
    )
    relative = float(np.sqrt(np.mean((got - expected) ** 2) / np.mean(expected**2)))
    agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
    print(f"{precision}: relative RMS error {relative:.3g}, top-1 agreement {agree:.3f}")
    worst_error, least_agreement = QUANTIZED_BOUNDS[precision]
    assert relative < worst_error
    assert agree >= least_agreement


def test_a_finished_decoder_frees_its_cache_and_starts_again_the_same(decoders) -> None:
    """The cache is one buffer (freed whole, it goes back to the system at once), dropped when
    the last sequence finishes; a new start builds it again and gives the same logits."""
    decoder = sequences(decoders, "fp32")
    width = decoder.hidden_size
    requests = [make_request(rows, seed, width) for seed, rows in ((8, 20), (9, 33))]
    tokens = [forced_tokens(8), forced_tokens(9)]
    logits = decoder.start(requests)
    buffers = decoder._keys + decoder._values
    assert all(buffer.base is buffers[0].base for buffer in buffers)
    decoder.finish([0, 1])
    assert decoder._keys == decoder._values == []
    first = decode(decoder, requests, tokens)
    assert decoder._keys != []  # not finished by `decode`
    again = decode(decoder, requests, tokens)
    for seq in range(2):
        np.testing.assert_array_equal(logits[seq], first[seq][0])
        np.testing.assert_array_equal(np.stack(first[seq]), np.stack(again[seq]))


def test_the_token_table_is_the_checkpoints_embeddings(decoders, table) -> None:
    """float16 holds every bfloat16 weight of ordinary size exactly; below float16's smallest
    normal number (6.1e-5) it keeps steps of 6e-8."""
    stored = np.load(decoders / TOKEN_EMBEDDINGS_FILE).astype(np.float32)
    ordinary = np.abs(table) >= np.finfo(np.float16).tiny
    np.testing.assert_array_equal(stored[ordinary], table[ordinary])
    np.testing.assert_allclose(stored, table, rtol=0, atol=3e-8)


@pytest.mark.parametrize(
    ("precision", "product", "bits"),
    [("fp32", "MatMul", None), ("int8", "MatMulNBits", 8), ("int4", "MatMulNBits", 4)],
)
def test_graph_holds_one_attention_and_four_products_per_layer_and_the_head(
    recognizer, decoders, precision, product, bits
) -> None:
    """q/k/v fused and gate/up fused: 4 weight products a layer plus the vocabulary head, all
    quantized as asked (llama.cpp's q8_0 quantizes the head too); int8 in 8-bit blocks, never
    the dynamic quantizer's one-scale-per-call MatMulInteger."""
    layers = Checkpoint(recognizer).arch.decoder.layers
    path = decoders / onnx_decoder_filename(precision)
    counts = op_counts(path)
    assert counts["GroupQueryAttention"] == layers
    assert counts[product] == 4 * layers + 1
    assert "MatMulInteger" not in counts
    if bits is not None:
        assert "MatMul" not in counts
        assert product_bits(path) == {bits}


def test_missing_or_damaged_files_are_model_errors(decoders, tmp_path) -> None:
    with pytest.raises(ModelError, match=r"has no decoder file decoder\.int8\.onnx"):
        OnnxDecoder(tmp_path, "int8", threads=1)
    graph = onnx_decoder_filename("fp32")
    for name in (graph, f"{graph}.data"):
        (tmp_path / name).write_bytes((decoders / name).read_bytes())
    with pytest.raises(ModelError, match=r"token table .* is missing") as caught:
        OnnxDecoder(tmp_path, "fp32", threads=1)
    assert "Convert the model again" in str(caught.value)
    np.save(tmp_path / TOKEN_EMBEDDINGS_FILE, np.zeros((10, 4), np.float16))
    with pytest.raises(ModelError, match="belongs to another model"):
        OnnxDecoder(tmp_path, "fp32", threads=1)
    (tmp_path / graph).write_bytes((decoders / graph).read_bytes()[:5000])
    with pytest.raises(ModelError, match="cannot load"):
        OnnxDecoder(tmp_path, "fp32", threads=1)


def test_an_aligner_checkpoint_is_refused(checkpoints) -> None:
    with pytest.raises(ValueError, match="not an ASR one"):
        build_recognizer_decoder(Checkpoint(checkpoints[("aligner", "hf")]))


def test_exporter_never_imports_torch(recognizer, tmp_path) -> None:
    result = run_without_torch(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from qwenscribe.convert.checkpoint import Checkpoint
            from qwenscribe.convert.onnx_decoder import write_recognizer_decoder
            checkpoint = Checkpoint({str(recognizer)!r})
            write_recognizer_decoder(checkpoint, Path({str(tmp_path)!r}), "int8")
            print("exported", sorted(p.name for p in Path({str(tmp_path)!r}).iterdir()))
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "decoder.int8.onnx.data" in result.stdout
    assert "token_embeddings.npy" in result.stdout


def test_closing_frees_the_cache_and_the_session(decoders):
    """The low-memory mode loads the aligner once the recognizer is closed: its session (weights,
    arena) must go then, not when the runtime object happens to be collected."""
    decoder = sequences(decoders, "fp32")
    decoder.start([make_request(6, seed=1, hidden=decoder.hidden_size, max_new=2)])
    decoder.close()
    assert decoder.decoder.session is None
    assert decoder.decoder.tokens.rows is None
    assert decoder._keys == []
