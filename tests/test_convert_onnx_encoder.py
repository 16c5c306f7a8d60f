"""The ONNX audio encoder (front end + windowed back end) against transformers' Qwen3-ASR encoder.

Reference tests run transformers' own modules on the same tiny random checkpoint; the rest check
properties that need no reference: dynamic shapes, window independence, layouts, precisions, and
that the exporter never imports torch.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.onnx_encoder import (
    backend_filename,
    build_frontend,
    encoder_files,
    write_encoder_onnx,
)
from qwenscribe.convert.onnx_graph import PRECISIONS

SAMPLE_RATE = 16000
CHUNK = 100  # mel frames per front-end chunk
WINDOW = 104  # tokens per attention window: 13 tokens/s x 8 s (REFERENCE.md)


def post_cnn_length(frames: int) -> int:
    """Tokens a chunk of `frames` valid mel frames yields (three k3 s2 p1 convolutions)."""
    for _ in range(3):
        frames = 0 if frames == 0 else (frames - 1) // 2 + 1
    return frames


class OnnxEncoder:
    """The two exported files of one precision, run the way the runtime will run them."""

    def __init__(self, frontend: Path, backend: Path) -> None:
        options = ["CPUExecutionProvider"]
        self.frontend = ort.InferenceSession(str(frontend), providers=options)
        self.backend = ort.InferenceSession(str(backend), providers=options)

    def chunk_embeddings(self, chunks: np.ndarray) -> np.ndarray:
        return self.frontend.run(None, {"mel_chunks": chunks.astype(np.float32)})[0]

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return self.backend.run(None, {"audio_tokens": tokens.astype(np.float32)})[0]

    def encode(self, features: np.ndarray, valid_frames: int) -> np.ndarray:
        """features [128, frames padded to a multiple of 100] -> embeddings [T, output_dim]."""
        mel_bins, frames = features.shape
        chunks = features.reshape(mel_bins, frames // CHUNK, CHUNK).transpose(1, 0, 2)
        embedded = self.chunk_embeddings(np.ascontiguousarray(chunks))
        kept = []
        for index, chunk in enumerate(embedded):
            chunk_frames = min(max(valid_frames - index * CHUNK, 0), CHUNK)
            kept.append(chunk[: post_cnn_length(chunk_frames)])
        return self.encode_tokens(np.concatenate(kept))


def export(checkpoint_folder: Path, folder: Path, precision: str) -> OnnxEncoder:
    paths = write_encoder_onnx(Checkpoint(checkpoint_folder), folder, precision)
    assert [path.name for path in paths] == [
        f"encoder_frontend.{precision}.onnx",
        f"encoder_backend.{precision}.onnx",
    ]
    return OnnxEncoder(*paths)


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory, checkpoints) -> Path:
    folder = tmp_path_factory.mktemp("onnx_encoder")
    checkpoint = Checkpoint(checkpoints[("asr", "hf")])
    for precision in PRECISIONS:
        write_encoder_onnx(checkpoint, folder, precision)
    return folder


@pytest.fixture(scope="module")
def encoders(onnx_folder: Path) -> dict[str, OnnxEncoder]:
    return {
        precision: OnnxEncoder(
            onnx_folder / f"encoder_frontend.{precision}.onnx",
            onnx_folder / f"encoder_backend.{precision}.onnx",
        )
        for precision in PRECISIONS
    }


@pytest.fixture(scope="module")
def hf_model(checkpoints):
    import torch
    from transformers import Qwen3ASRForConditionalGeneration

    model = Qwen3ASRForConditionalGeneration.from_pretrained(
        checkpoints[("asr", "hf")], dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="module")
def feature_extractor(checkpoints):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(checkpoints[("asr", "hf")]).feature_extractor


def log_mel(feature_extractor, samples: np.ndarray) -> tuple[np.ndarray, int]:
    """transformers' features for one clip: [128, frames padded to 100s] and the valid frames."""
    out = feature_extractor(
        samples,
        sampling_rate=SAMPLE_RATE,
        padding=True,
        return_attention_mask=True,
        n_window=50,
        return_tensors="np",
    )
    return out["input_features"][0], int(out["attention_mask"][0].sum())


def reference_embeddings(hf_model, features: np.ndarray, valid_frames: int, **kwargs) -> np.ndarray:
    """transformers' full path: audio tower (windowed attention) + projector."""
    import torch

    mask = np.zeros((1, features.shape[1]), np.int64)
    mask[0, :valid_frames] = 1
    with torch.no_grad():
        out = hf_model.model.get_audio_features(
            torch.from_numpy(features[None]), torch.from_numpy(mask), **kwargs
        )
    return out.pooler_output.numpy()


def reference_chunk_embeddings(hf_model, chunks: np.ndarray) -> np.ndarray:
    """The tower's own modules on [N, 128, 100] chunks, as its forward applies them."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    tower = hf_model.model.audio_tower
    with torch.no_grad():
        x = torch.from_numpy(chunks[:, None].astype(np.float32))
        for conv in (tower.conv2d1, tower.conv2d2, tower.conv2d3):
            x = F.gelu(conv(x))
        count, channels, freq, time = x.shape
        x = tower.conv_out(x.permute(0, 3, 1, 2).reshape(count, time, channels * freq))
        x = x + tower.positional_embedding.positional_embedding[:time]
    return x.numpy()


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the two outputs as flat vectors."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def speech(long_speech: np.ndarray, seconds: float) -> np.ndarray:
    return long_speech[: round(seconds * SAMPLE_RATE)]


# --- parity with transformers ------------------------------------------------------------------


@pytest.mark.reference
def test_frontend_matches_transformers_on_random_and_real_mel(
    encoders, hf_model, feature_extractor, en_speech
):
    rng = np.random.default_rng(1)
    # Random chunks on the scale of real log-mel features ((log10 + 4) / 4 lies in about [-1, 2]).
    random_chunks = rng.normal(0.0, 0.7, size=(6, 128, CHUNK)).astype(np.float32)
    features, _ = log_mel(feature_extractor, en_speech)
    real_chunks = np.ascontiguousarray(features.reshape(128, -1, CHUNK).transpose(1, 0, 2))
    for chunks in (random_chunks, real_chunks):
        expected = reference_chunk_embeddings(hf_model, chunks)
        actual = encoders["fp32"].chunk_embeddings(chunks)
        assert actual.shape == expected.shape == (len(chunks), 13, 64)
        scale = float(np.abs(expected).max())
        error = max_abs(actual, expected)
        print(f"front end, {len(chunks)} chunks: max abs {error:.2e} (output scale {scale:.2f})")
        # float32 rounding alone stays near 1e-7 of the scale; a wrong flatten order, position
        # or GELU would be of the order of the scale itself.
        assert error < 1e-5 * scale


@pytest.mark.reference
def test_patch_products_of_the_int8_front_end_are_the_convolutions(
    checkpoints, hf_model, feature_extractor, en_speech, tmp_path
):
    """The int8 front end computes conv2d2 and conv2d3 as products over 3 x 3 patches (its
    quantizer only makes MatMuls fast). Before quantization that graph is float32 and must be
    the same function as transformers' convolutions, to float32 rounding."""
    path = tmp_path / "frontend_patches_float.onnx"
    build_frontend(Checkpoint(checkpoints[("asr", "hf")]), "int8").save(path)
    assert sorted(op for op in _op_list(path) if op == "Conv") == ["Conv"]  # conv2d1 only
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    random_chunks = rng.normal(0.0, 0.7, size=(5, 128, CHUNK)).astype(np.float32)
    features, _ = log_mel(feature_extractor, en_speech)
    real_chunks = np.ascontiguousarray(features.reshape(128, -1, CHUNK).transpose(1, 0, 2))
    for chunks in (random_chunks, real_chunks, real_chunks[:1]):
        expected = reference_chunk_embeddings(hf_model, chunks)
        actual = session.run(None, {"mel_chunks": chunks.astype(np.float32)})[0]
        scale = float(np.abs(expected).max())
        error = max_abs(actual, expected)
        print(f"patch front end, {len(chunks)} chunks: max abs {error:.2e} (scale {scale:.2f})")
        # A tap in the wrong place or a wrong weight order is an error of the order of the scale.
        assert error < 1e-5 * scale


@pytest.mark.reference
@pytest.mark.parametrize("seconds", [3, 8, 12, 12.34, 45])
def test_encoder_matches_transformers(encoders, hf_model, feature_extractor, long_speech, seconds):
    features, valid = log_mel(feature_extractor, speech(long_speech, seconds))
    expected = reference_embeddings(hf_model, features, valid)
    actual = encoders["fp32"].encode(features, valid)
    assert actual.shape == expected.shape
    if seconds == 8:
        assert actual.shape[0] == WINDOW  # exactly one full window: the boundary case
    scale = float(np.abs(expected).max())
    error = max_abs(actual, expected)
    print(f"{seconds} s, {actual.shape[0]} tokens: max abs {error:.2e} (scale {scale:.2f})")
    assert error < 1e-5 * scale


@pytest.mark.reference
@pytest.mark.parametrize("seconds", [12, 45])
def test_windowed_attention_is_what_matches(
    encoders, hf_model, feature_extractor, long_speech, seconds
):
    """Full attention over the audio gives clearly different embeddings; the ONNX model's don't."""
    import torch

    features, valid = log_mel(feature_extractor, speech(long_speech, seconds))
    windowed = reference_embeddings(hf_model, features, valid)
    tokens = windowed.shape[0]
    assert tokens > WINDOW
    full = reference_embeddings(
        hf_model, features, valid, cu_seqlens=torch.tensor([0, tokens], dtype=torch.int32)
    )
    ours = encoders["fp32"].encode(features, valid)
    full_error, our_error = max_abs(full, windowed), max_abs(ours, windowed)
    print(f"{seconds} s: full attention differs by {full_error:.2e}, ONNX by {our_error:.2e}")
    assert full_error > 1000 * our_error
    assert full_error > 0.01 * float(np.abs(windowed).max())


# --- properties that need no reference ---------------------------------------------------------


def test_windows_are_independent_blocks_of_104_tokens(encoders):
    tokens = np.random.default_rng(2).normal(size=(300, 64)).astype(np.float32)
    whole = encoders["fp32"].encode_tokens(tokens)
    # 300 tokens are windows [0, 104), [104, 208), [208, 300): each alone gives the same rows.
    for start, stop in ((0, 104), (104, 208), (208, 300)):
        alone = encoders["fp32"].encode_tokens(tokens[start:stop])
        np.testing.assert_allclose(alone, whole[start:stop], rtol=0, atol=1e-5)
    # A slice across a window boundary sees other neighbours, so its rows change.
    straddling = encoders["fp32"].encode_tokens(tokens[50:150])
    assert max_abs(straddling, whole[50:150]) > 0.05


@pytest.mark.parametrize("precision", PRECISIONS)
def test_files_load_on_cpu_with_dynamic_chunks_and_tokens(onnx_folder, encoders, precision):
    for part in ("frontend", "backend"):
        onnx.checker.check_model(str(onnx_folder / f"encoder_{part}.{precision}.onnx"))
    encoder = encoders[precision]
    rng = np.random.default_rng(3)
    for count in (0, 1, 7):
        out = encoder.chunk_embeddings(rng.normal(size=(count, 128, CHUNK)))
        assert out.shape == (count, 13, 64)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
    for count in (0, 5, 300):
        out = encoder.encode_tokens(rng.normal(size=(count, 64)))
        assert out.shape == (count, 64)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()


def test_both_layouts_give_identical_outputs(checkpoints, tmp_path):
    original = export(checkpoints[("asr", "original")], tmp_path / "original", "fp32")
    hf = export(checkpoints[("asr", "hf")], tmp_path / "hf", "fp32")
    rng = np.random.default_rng(4)
    chunks = rng.normal(size=(3, 128, CHUNK))
    tokens = rng.normal(size=(130, 64))
    np.testing.assert_array_equal(original.chunk_embeddings(chunks), hf.chunk_embeddings(chunks))
    np.testing.assert_array_equal(original.encode_tokens(tokens), hf.encode_tokens(tokens))


def test_unknown_precision_names_the_choices(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="fp32, fp16, int8, int4") as raised:
        write_encoder_onnx(Checkpoint(checkpoints[("asr", "hf")]), tmp_path, "fp8")
    assert "fp8" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def _op_list(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _ops(path: Path) -> set[str]:
    return set(_op_list(path))


def test_precisions_are_really_different_files(onnx_folder):
    """Each precision stores what it says: fp16 weights, int8 and int4 matrix products."""
    for part in ("frontend", "backend"):
        fp16 = onnx.load(str(onnx_folder / f"encoder_{part}.fp16.onnx"))
        assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in fp16.graph.initializer)
        # Only 0-d constants (the attention mask's 0 and -inf) may stay float32.
        big_float32 = [
            init.name
            for init in fp16.graph.initializer
            if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 0
        ]
        assert big_float32 == []
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(
            onnx_folder / f"encoder_{part}.int8.onnx"
        )
        assert "MatMulNBits" in _ops(onnx_folder / f"encoder_{part}.int4.onnx")
    # The quantized front ends: conv2d1 stays a float Conv, conv2d2 and conv2d3 are int8 patch
    # products in both (onnxruntime's ConvInteger would be 3.5x slower than float).
    int8_frontend = _op_list(onnx_folder / "encoder_frontend.int8.onnx")
    int4_frontend = _op_list(onnx_folder / "encoder_frontend.int4.onnx")
    for ops in (int8_frontend, int4_frontend):
        assert ops.count("Conv") == 1
        assert "ConvInteger" not in ops
    assert int8_frontend.count("MatMulInteger") == 3  # conv2d2, conv2d3, conv_out
    assert int4_frontend.count("MatMulInteger") == 2  # conv2d2, conv2d3
    assert int4_frontend.count("MatMulNBits") == 1  # conv_out
    # The attention products (both inputs computed) stay float MatMuls in the quantized files.
    assert "MatMul" in _ops(onnx_folder / "encoder_backend.int4.onnx")
    sizes = {p: _weight_bytes(onnx_folder / backend_filename(p)) for p in PRECISIONS}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["int4"]


def _weight_bytes(path: Path) -> int:
    """The bytes of a graph's weights, inside the file or beside it (not the side file's size,
    which holds the gaps that align each weight)."""
    model = onnx.load(str(path), load_external_data=False)
    return sum(
        int({e.key: e.value for e in t.external_data}["length"])
        if t.data_location == onnx.TensorProto.EXTERNAL
        else len(t.raw_data)
        for t in model.graph.initializer
    )


def test_encoder_weights_are_mapped_from_aligned_side_files(onnx_folder: Path) -> None:
    """Every precision, the quantizer's (int8, int4) included: each weight of 1 KiB or more is
    in the side file, on a 64 KiB boundary, and nothing else is in the file."""
    for precision in PRECISIONS:
        names = encoder_files(precision)
        for graph_name, data_name in zip(names[::2], names[1::2], strict=True):
            model = onnx.load(str(onnx_folder / graph_name), load_external_data=False)
            spans = []
            for tensor in model.graph.initializer:
                if tensor.data_location != onnx.TensorProto.EXTERNAL:
                    assert len(tensor.raw_data) < 1024, (graph_name, tensor.name)
                    continue
                entry = {item.key: item.value for item in tensor.external_data}
                assert entry["location"] == data_name
                spans.append((int(entry["offset"]), int(entry["length"])))
            assert spans, graph_name
            assert all(offset % 65536 == 0 for offset, _ in spans), graph_name
            spans.sort()
            assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(spans))
            end = spans[-1][0] + spans[-1][1]
            assert (onnx_folder / data_name).stat().st_size == end


# (min cosine, max abs error) against fp32 on 12 s of speech, tiny random checkpoint (seed 0).
# Measured: fp16 cosine 1 - 1e-7, max abs 1.5e-3; int8 0.99986, 0.056 (its wide convolutions as
# int8 patch products; 0.99987, 0.045 with float convolutions); int4 0.9893, 0.46 (0.9892, 0.49)
# (output scale about 2). The bounds leave a margin of about 3x on the error. The tiny model's
# matrices are 64 wide, so these guard against a broken precision; they do not predict the
# real encoders' figures.
QUANTIZED_BOUNDS = {
    "fp16": (0.99999, 0.01),
    "int8": (0.9995, 0.15),
    "int4": (0.98, 1.0),
}


@pytest.mark.reference
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_quantized_encoder_stays_close_to_fp32(encoders, feature_extractor, long_speech, precision):
    features, valid = log_mel(feature_extractor, speech(long_speech, 12))
    exact = encoders["fp32"].encode(features, valid)
    approx = encoders[precision].encode(features, valid)
    similarity, error = cosine(approx, exact), max_abs(approx, exact)
    first_chunk = features[None, :, :CHUNK]
    front_error = max_abs(
        encoders[precision].chunk_embeddings(first_chunk),
        encoders["fp32"].chunk_embeddings(first_chunk),
    )
    print(
        f"{precision} vs fp32 on 12 s: cosine 1 - {1 - similarity:.2e}, max abs {error:.3e} "
        f"(scale {np.abs(exact).max():.2f}); front end alone max abs {front_error:.3e}"
    )
    min_cosine, max_error = QUANTIZED_BOUNDS[precision]
    assert similarity > min_cosine
    assert error < max_error
    assert error > 0  # the file really is a different precision


def test_exporter_never_imports_torch(checkpoints, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        for blocked in ("torch", "transformers"):
            sys.modules[blocked] = None  # any import of them now raises ImportError
        from pathlib import Path
        from qwenscribe.convert.checkpoint import Checkpoint
        from qwenscribe.convert.onnx_encoder import write_encoder_onnx
        from qwenscribe.convert.onnx_graph import PRECISIONS
        checkpoint = Checkpoint({str(checkpoints[("asr", "original")])!r})
        for precision in PRECISIONS:
            write_encoder_onnx(checkpoint, Path({str(tmp_path)!r}), precision)
        print("exported", len(list(Path({str(tmp_path)!r}).glob("*.onnx"))))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "exported 8" in result.stdout


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_models_over_the_protobuf_limit_convert_the_same(
    checkpoints, tmp_path, monkeypatch, encoders, precision
):
    """Above 2 GiB even the float graph handed to the int8 quantizer keeps its weights beside
    it; the encoder written is the same, and writing it again leaves only its own files."""
    import qwenscribe.convert.onnx_graph as onnx_graph

    monkeypatch.setattr(onnx_graph, "_SINGLE_FILE_LIMIT", 10_000)  # the tiny model is larger
    big = export(checkpoints[("asr", "hf")], tmp_path, precision)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(encoder_files(precision))
    rng = np.random.default_rng(5)
    chunks, tokens = rng.normal(size=(2, 128, CHUNK)), rng.normal(size=(120, 64))
    single = encoders[precision]
    np.testing.assert_array_equal(big.chunk_embeddings(chunks), single.chunk_embeddings(chunks))
    np.testing.assert_array_equal(big.encode_tokens(tokens), single.encode_tokens(tokens))
    monkeypatch.setattr(onnx_graph, "_SINGLE_FILE_LIMIT", 1 << 40)
    export(checkpoints[("asr", "hf")], tmp_path, precision)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(encoder_files(precision))
