"""The decoder GGUF: metadata, tokenizer and tensors as llama.cpp needs them, logits equal to
transformers' (the reference), quantized files held to measured bounds and decoding batches
without crashing, both aligner forms (hidden states times the separate head; the timestamp
scorer) equal to transformers' token classification, no torch in the converter.

llama.cpp is driven through llama-cpp-python's low-level API, as the hybrid runtime will be.
Parity is measured with an f32 KV cache and flash attention off, so that what is compared is
the converted weights and not llama.cpp's runtime precision choices; the defaults (f16 KV
cache, flash attention) are measured too, with their own bound.
"""

from __future__ import annotations

import ctypes
import filecmp
import logging
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from tokenizers import Tokenizer

from qwenscribe.convert import gguf_decoder
from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.gguf_decoder import (
    QUANTS,
    TIMESTAMP_HEAD_FILE,
    TOKEN_EMBEDDINGS_FILE,
    write_aligner_gguf,
    write_aligner_head,
    write_decoder_gguf,
    write_token_embeddings,
)
from qwenscribe.model import architecture as architecture_module
from qwenscribe.model.architecture import Architecture, DecoderDims
from qwenscribe.testing import write_checkpoint
from torchless import run_without_torch

# Ids and constants from REFERENCE.md, typed here independently of the code under test.
ENDOFTEXT, IM_END, TIMESTAMP = 151643, 151645, 151705
ROPE_BASE, RMS_EPS = 1_000_000.0, 1e-6
TINY_HIDDEN, TINY_HEAD_DIM, TINY_HEADS, TINY_KV_HEADS, TINY_FFN, TINY_LAYERS = 64, 32, 4, 2, 128, 2

PROMPT = (
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|audio_start|>"
    + "<|audio_pad|>" * 6
    + "<|audio_end|><|im_end|>\n<|im_start|>assistant\nlanguage English<asr_text>"
    "The quick brown fox jumps over the lazy dog."
)
ALIGNER_INPUT = (
    "<|audio_start|>" + "<|audio_pad|>" * 6 + "<|audio_end|>"
    "The<timestamp><timestamp>quick<timestamp><timestamp>今天<timestamp><timestamp>"
)
TOKENIZER_TEXTS = [
    "Hello world! It's a test: don't worry, we'll see what they've said.",
    "今天天气很好。我们一起去公园散步吧。",
    PROMPT + "<|im_end|>",
    "  spaces   and\ttabs\n\nnew lines 12345 3.14",
    "Émile naïve café — «quotes» 😀 Привет, мир",
    "오늘 날씨가 좋네요. 今日はいい天気ですね。",
    "x<timestamp><timestamp>y<|endoftext|>",
]

# Quantized files are compared with the f32 file on a decoder whose matrices all have rows of a
# multiple of 256 values: on the tiny one (hidden 64) llama.cpp silently replaces every k-quant
# by a legacy type (q4_k -> q5_0, ...), and the test would measure the wrong thing.
KQUANT_DECODER = DecoderDims(
    hidden=256, ffn=512, layers=2, heads=4, kv_heads=2, head_dim=128, vocab=151936,
    tied_embeddings=True,
)  # fmt: skip
EXPECTED_MATRIX_TYPES = {
    "f16": {"F16"},
    "bf16": {"BF16"},
    "q8_0": {"Q8_0"},
    "q6_k": {"Q6_K"},
    "q5_k": {"Q5_K", "Q6_K"},  # the _M mix: some attn_v / ffn_down get Q6_K
    "q4_k": {"Q4_K", "Q6_K"},
    "q4_0": {"Q4_0", "Q6_K"},  # token_embd doubles as the tied output head: Q6_K
}
# Measured on the k-quant test decoder (logits reach ~75): max |logit - f32 logit| over 82
# positions (34 prompt tokens + 48 random embeddings), and the share of positions whose argmax
# equals the f32 file's. Bounds: about twice the measured error, agreement 0.1-0.15 below.
# Random weights have no structure for quantization to exploit and random inputs give small
# top-1 margins, so these errors are a pessimistic view of what real weights lose.
QUANT_BOUNDS = {  # quant: (max abs error bound, min top-1 agreement)   measured:
    "f16": (0.06, 0.95),  # 0.028, 1.00
    "bf16": (0.45, 0.9),  # 0.215, 0.99
    "q8_0": (2.2, 0.85),  # 1.08, 0.98
    "q6_k": (5.5, 0.75),  # 2.69, 0.89
    "q5_k": (9.0, 0.7),  # 4.57, 0.83
    "q4_k": (17.0, 0.65),  # 8.37, 0.80
    "q4_0": (20.0, 0.55),  # 10.3, 0.68
}


# ---------------------------------------------------------------------------------------------
# llama.cpp through its C API


LLAMA_LOGGER = logging.getLogger("llama-cpp-python")


@pytest.fixture(autouse=True, scope="module")
def quiet_llama_cpp() -> Iterator[None]:
    """llama-cpp-python prints llama.cpp's log unless its logger is raised this far."""
    level = LLAMA_LOGGER.level
    LLAMA_LOGGER.setLevel(logging.CRITICAL)
    llama_cpp.llama_backend_init()
    yield
    LLAMA_LOGGER.setLevel(level)


class Decoder:
    """One model and one context; every call decodes a fresh single sequence from position 0."""

    def __init__(
        self, path: Path, *, embeddings: bool = False, exact: bool = True, rope_base: float = 0.0
    ) -> None:
        model_params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        assert self.model, f"llama.cpp could not load {path}"
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = 128
        params.n_threads = params.n_threads_batch = 2
        if embeddings:
            params.embeddings = True
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE  # one row per position
        params.rope_freq_base = rope_base  # 0: the file's
        if exact:
            params.type_k = params.type_v = 0  # GGML_TYPE_F32
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        assert self.ctx
        self.n_embd = llama_cpp.llama_model_n_embd(self.model)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    def _decode(
        self, ids: list[int] | None, embeds: np.ndarray | None, outputs: list[int] | None
    ) -> list[int]:
        count = len(ids) if ids is not None else len(embeds)
        outputs = list(range(count)) if outputs is None else outputs
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        batch = llama_cpp.llama_batch_init(count, 0 if ids is not None else self.n_embd, 1)
        try:
            batch.n_tokens = count
            for index in range(count):
                batch.pos[index] = index
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = 0
                batch.logits[index] = index in outputs
            if ids is not None:
                for index, token in enumerate(ids):
                    batch.token[index] = token
            else:
                rows = np.ascontiguousarray(embeds, dtype=np.float32)
                ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
            assert llama_cpp.llama_decode(self.ctx, batch) == 0
        finally:
            llama_cpp.llama_batch_free(batch)
        return outputs

    def logits(
        self,
        ids: list[int] | None = None,
        embeds: np.ndarray | None = None,
        outputs: list[int] | None = None,
    ) -> np.ndarray:
        """Logits at the `outputs` positions (default: all), in that order."""
        rows = [
            llama_cpp.llama_get_logits_ith(self.ctx, i) for i in self._decode(ids, embeds, outputs)
        ]
        return np.stack([np.ctypeslib.as_array(row, shape=(self.n_vocab,)) for row in rows])

    def hidden(self, ids: list[int] | None = None, embeds: np.ndarray | None = None) -> np.ndarray:
        """Final-norm hidden states (embeddings mode, pooling NONE) at every position."""
        positions = self._decode(ids, embeds, None)
        rows = [llama_cpp.llama_get_embeddings_ith(self.ctx, i) for i in positions]
        return np.stack([np.ctypeslib.as_array(row, shape=(self.n_embd,)) for row in rows])


def llama_tokenize(vocab: llama_cpp.llama_vocab_p, text: str) -> list[int]:
    data = text.encode("utf-8")
    buffer = (llama_cpp.llama_token * (len(data) + 8))()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, len(buffer), False, True)
    assert count >= 0
    return list(buffer[:count])


def llama_detokenize(vocab: llama_cpp.llama_vocab_p, ids: list[int]) -> str:
    """Through llama_token_to_piece with a large buffer: `Llama.detokenize` uses 32 bytes per
    token and garbles longer tokens (this tokenizer has a 33-byte one)."""
    pieces = b""
    buffer = ctypes.create_string_buffer(256)
    for token in ids:
        count = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
        assert count >= 0
        pieces += buffer.raw[:count]
    return pieces.decode("utf-8")


# GGUF scalar value types -> struct formats (8 is a string, 9 an array).
_SCALARS = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True))


def tensor_types(path: Path) -> dict[str, str]:
    """Tensor name -> ggml type name, from the GGUF header read here directly.

    gguf.GGUFReader would do, but takes seconds per file to index 152k token strings.
    """
    with open(path, "rb") as handle:
        data = handle.read(16 * 1024 * 1024)
    magic, _version, n_tensors, n_kv = struct.unpack_from("<IIQQ", data, 0)
    assert magic == gguf.GGUF_MAGIC
    offset = 24

    def string() -> str:
        nonlocal offset
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + length
        return data[offset - length : offset].decode("utf-8")

    def skip(value_type: int) -> None:
        nonlocal offset
        if value_type == 8:
            string()
        elif value_type == 9:
            item_type, count = struct.unpack_from("<IQ", data, offset)
            offset += 12
            if item_type in _SCALARS:
                offset += count * struct.calcsize(_SCALARS[item_type])
            else:
                for _ in range(count):
                    skip(item_type)
        else:
            offset += struct.calcsize(_SCALARS[value_type])

    for _ in range(n_kv):
        string()
        (value_type,) = struct.unpack_from("<I", data, offset)
        offset += 4
        skip(value_type)
    types = {}
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", data, offset)
        offset += 4 + 8 * n_dims
        (type_id,) = struct.unpack_from("<I", data, offset)
        offset += 4 + 8  # type, data offset
        types[name] = gguf.GGMLQuantizationType(type_id).name
    return types


# ---------------------------------------------------------------------------------------------
# Files


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def hf_tokenizer(checkpoints: dict[tuple[str, str], Path]) -> Tokenizer:
    return Tokenizer.from_file(str(checkpoints[("asr", "hf")] / "tokenizer.json"))


@pytest.fixture(scope="module")
def asr_f32(checkpoints: dict[tuple[str, str], Path], out_dir: Path) -> Path:
    return write_decoder_gguf(Checkpoint(checkpoints[("asr", "hf")]), out_dir / "asr-hf", "f32")


@pytest.fixture(scope="module")
def aligner_files(checkpoints: dict[tuple[str, str], Path], out_dir: Path) -> tuple[Path, Path]:
    checkpoint = Checkpoint(checkpoints[("aligner", "hf")])
    folder = out_dir / "aligner-hf"
    return write_decoder_gguf(checkpoint, folder, "f32"), write_aligner_head(checkpoint, folder)


@pytest.fixture(scope="module")
def scorer_files(checkpoints: dict[tuple[str, str], Path], out_dir: Path) -> dict[str, Path]:
    """The aligner as a timestamp scorer (f32, and the types prone to llama.cpp's AMX crash)
    and its token embeddings."""
    checkpoint = Checkpoint(checkpoints[("aligner", "hf")])
    folder = out_dir / "scorer"
    files = {
        quant: write_aligner_gguf(checkpoint, folder, quant) for quant in ("f32", "q8_0", "q4_0")
    }
    files["embeddings"] = write_token_embeddings(checkpoint, folder)
    return files


@pytest.fixture(scope="module")
def kquant_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """A random ASR checkpoint with the k-quant friendly decoder (the tiny encoder)."""
    tiny = architecture_module.architecture("asr", "tiny")
    arch = Architecture("asr", "custom", tiny.encoder, KQUANT_DECODER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(architecture_module.ARCHITECTURES, ("asr", "custom"), arch)
        folder = write_checkpoint(tmp_path_factory.mktemp("kquant") / "asr", size="custom")
        return Checkpoint(folder)


@pytest.fixture(scope="module")
def kquant_files(kquant_checkpoint: Checkpoint, out_dir: Path) -> dict[str, Path]:
    folder = out_dir / "kquant"
    return {quant: write_decoder_gguf(kquant_checkpoint, folder, quant) for quant in QUANTS}


@pytest.fixture(scope="module")
def quantized_files_survive(kquant_files: dict[str, Path], scorer_files: dict[str, Path]) -> None:
    """Every quantized file decodes a 48-token batch, in a child process: a segfault there
    (llama.cpp's AMX path with Q8_0/Q4_0 and batches of more than one token, ENVIRONMENT.md)
    fails the tests that need this instead of killing the test run."""
    script = """
import sys
from llama_cpp import Llama
for path in sys.argv[1:]:
    llm = Llama(model_path=path, n_ctx=128, n_batch=64, n_threads=2, verbose=False)
    llm.eval(list(range(1000, 1048)))
    llm.close()
print("ok")
"""
    paths = [str(path) for quant, path in kquant_files.items() if quant != "f32"]
    paths += [str(scorer_files[quant]) for quant in ("q8_0", "q4_0")]
    result = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0 or result.stdout.strip() != "ok":
        pytest.fail(f"decoding a quantized file crashed: {result.returncode}, {result.stderr}")


@pytest.fixture(scope="module")
def asr_f32_reader(asr_f32: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(asr_f32)


def random_embeddings(rows: int, width: int, seed: int = 1) -> np.ndarray:
    # The scale of the test checkpoints' token embeddings (std 0.5).
    return np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32) * 0.5


# ---------------------------------------------------------------------------------------------
# Metadata, tensors, files


def test_metadata_has_every_key_llama_cpp_needs_for_qwen3(asr_f32_reader) -> None:
    reader = asr_f32_reader

    def value(key: str) -> object:
        field = reader.get_field(key)
        assert field is not None, f"{key} is missing"
        return field.contents()

    assert value("general.architecture") == "qwen3"
    assert value("qwen3.rope.freq_base") == pytest.approx(ROPE_BASE)
    assert value("qwen3.attention.key_length") == TINY_HEAD_DIM
    assert value("qwen3.attention.value_length") == TINY_HEAD_DIM
    assert TINY_HEAD_DIM != TINY_HIDDEN // TINY_HEADS  # what llama.cpp would derive otherwise
    assert value("qwen3.context_length") == 65536
    assert value("qwen3.embedding_length") == TINY_HIDDEN
    assert value("qwen3.block_count") == TINY_LAYERS
    assert value("qwen3.feed_forward_length") == TINY_FFN
    assert value("qwen3.attention.head_count") == TINY_HEADS
    assert value("qwen3.attention.head_count_kv") == TINY_KV_HEADS
    assert value("qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(RMS_EPS)
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "qwen2"
    assert value("tokenizer.ggml.eos_token_id") == IM_END
    assert value("tokenizer.ggml.padding_token_id") == ENDOFTEXT
    assert value("tokenizer.ggml.add_bos_token") is False
    assert value("qwenscribe.output") == "vocabulary"


def test_tokens_fill_the_vocabulary_with_types(asr_f32_reader, checkpoints) -> None:
    reader = asr_f32_reader
    texts = reader.get_field("tokenizer.ggml.tokens").contents()
    types = reader.get_field("tokenizer.ggml.token_type").contents()
    assert len(texts) == len(types) == 151936  # the model's vocab_size, not the tokenizer's
    assert (texts[IM_END], types[IM_END]) == ("<|im_end|>", gguf.TokenType.CONTROL)
    assert (texts[151704], types[151704]) == ("<asr_text>", gguf.TokenType.USER_DEFINED)
    assert (texts[TIMESTAMP], types[TIMESTAMP]) == ("<timestamp>", gguf.TokenType.CONTROL)
    assert (texts[151706], types[151706]) == ("[PAD151706]", gguf.TokenType.UNUSED)
    assert types[0] == types[151642] == gguf.TokenType.NORMAL
    assert len(set(texts)) == len(texts)
    merges = (checkpoints[("asr", "hf")] / "merges.txt").read_text("utf-8").splitlines()[1:]
    assert reader.get_field("tokenizer.ggml.merges").contents() == merges


def test_tensors_named_and_typed_for_llama_cpp(
    asr_f32: Path, asr_f32_reader, out_dir: Path, checkpoints
) -> None:
    f16 = write_decoder_gguf(Checkpoint(checkpoints[("asr", "hf")]), out_dir / "asr-f16", "f16")
    per_layer = [
        "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
        "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
    ]  # fmt: skip
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{layer}.{name}.weight" for layer in range(TINY_LAYERS) for name in per_layer
    }
    # No output.weight: the tied head is token_embd, which llama.cpp reuses (parity below).
    assert set(tensor_types(asr_f32)) == expected
    assert set(tensor_types(asr_f32).values()) == {"F32"}
    for name, kind in tensor_types(f16).items():
        assert kind == ("F32" if "norm" in name else "F16"), name
    shapes = {t.name: list(t.shape) for t in asr_f32_reader.tensors}
    # ggml order (columns first): q is [hidden -> heads * head_dim], not permuted or resized.
    assert shapes["blk.0.attn_q.weight"] == [TINY_HIDDEN, TINY_HEADS * TINY_HEAD_DIM]
    assert shapes["blk.0.attn_k.weight"] == [TINY_HIDDEN, TINY_KV_HEADS * TINY_HEAD_DIM]
    assert shapes["blk.0.attn_q_norm.weight"] == [TINY_HEAD_DIM]
    assert shapes["token_embd.weight"] == [TINY_HIDDEN, 151936]


def test_original_and_hf_layouts_give_identical_files(checkpoints, out_dir: Path) -> None:
    for kind in ("asr", "aligner"):
        files = [
            write_decoder_gguf(Checkpoint(checkpoints[(kind, layout)]), out_dir / layout, "f16")
            for layout in ("original", "hf")
        ]
        assert filecmp.cmp(*files, shallow=False), kind


def test_unknown_quant_names_the_choices(checkpoints, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="q4_k") as error:
        write_decoder_gguf(Checkpoint(checkpoints[("asr", "hf")]), tmp_path, "q3_k_xl")
    assert all(quant in str(error.value) for quant in QUANTS)
    assert not any(tmp_path.iterdir())


def test_failed_quantization_leaves_no_files(checkpoints, tmp_path: Path, monkeypatch) -> None:
    def broken(source: Path, target: Path, quant: str, scorer: bool) -> None:
        target.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_decoder, "_quantize", broken)
    with pytest.raises(OSError, match="disk full"):
        write_decoder_gguf(Checkpoint(checkpoints[("asr", "hf")]), tmp_path, "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_converter_imports_no_torch(checkpoints, tmp_path: Path) -> None:
    """A quantized file and the aligner files, with torch and transformers made unimportable."""
    script = f"""
import sys
from pathlib import Path
from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.convert.gguf_decoder import (
    write_aligner_gguf, write_aligner_head, write_decoder_gguf, write_token_embeddings
)
out = Path({str(tmp_path)!r})
write_decoder_gguf(Checkpoint({str(checkpoints[("asr", "original")])!r}), out, "q8_0")
aligner = Checkpoint({str(checkpoints[("aligner", "original")])!r})
write_aligner_head(aligner, out)
write_aligner_gguf(aligner, out, "q4_k")
write_token_embeddings(aligner, out)
assert not any(name.split(".")[0] in ("torch", "transformers") for name in sys.modules)
"""
    result = run_without_torch(script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "aligner.q4_k.gguf",
        "decoder.q8_0.gguf",
        TIMESTAMP_HEAD_FILE,
        TOKEN_EMBEDDINGS_FILE,
    ]


# ---------------------------------------------------------------------------------------------
# Tokenizer and the high-level class


def test_llama_cpp_tokenizes_like_the_hf_tokenizer(asr_f32: Path, hf_tokenizer) -> None:
    with Decoder(asr_f32) as decoder:
        for text in TOKENIZER_TEXTS:
            expected = hf_tokenizer.encode(text, add_special_tokens=False).ids
            assert llama_tokenize(decoder.vocab, text) == expected, text
            assert llama_detokenize(decoder.vocab, expected) == text


def test_loads_in_the_high_level_llama_class(asr_f32: Path, hf_tokenizer) -> None:
    llm = llama_cpp.Llama(model_path=str(asr_f32), n_ctx=256, n_threads=2, verbose=False)
    try:
        assert llm.n_vocab() == 151936
        assert llm.token_eos() == IM_END
        text = "Subtitles should never cut a word in half. 今日はいい天気ですね。"
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert ids == hf_tokenizer.encode(text, add_special_tokens=False).ids
        assert llm.detokenize(ids).decode() == text
        llm.eval(ids)  # a multi-token batch through the friendly class
        assert llm.n_tokens == len(ids)
    finally:
        llm.close()
        LLAMA_LOGGER.setLevel(logging.CRITICAL)  # verbose=False set it to ERROR


# ---------------------------------------------------------------------------------------------
# Parity with transformers


@pytest.fixture(scope="module")
def transformers_asr(checkpoints):
    torch = pytest.importorskip("torch")
    from transformers import Qwen3ASRForConditionalGeneration

    model = Qwen3ASRForConditionalGeneration.from_pretrained(
        checkpoints[("asr", "hf")], dtype=torch.float32
    )
    return model.eval()


def reference_logits(model, ids: list[int] | None = None, embeds: np.ndarray | None = None):
    import torch

    with torch.no_grad():
        if ids is not None:
            return model(input_ids=torch.tensor([ids])).logits[0].numpy()
        hidden = model.model.language_model(inputs_embeds=torch.from_numpy(embeds[None]))
        return model.lm_head(hidden.last_hidden_state)[0].numpy()


@pytest.mark.reference
def test_f32_logits_equal_transformers(asr_f32: Path, transformers_asr, hf_tokenizer) -> None:
    ids = hf_tokenizer.encode(PROMPT, add_special_tokens=False).ids
    assert 30 <= len(ids) <= 60
    embeds = random_embeddings(32, TINY_HIDDEN)
    expected_ids = reference_logits(transformers_asr, ids=ids)
    expected_embeds = reference_logits(transformers_asr, embeds=embeds)
    with Decoder(asr_f32) as decoder:
        got_ids, got_embeds = decoder.logits(ids=ids), decoder.logits(embeds=embeds)
    # Measured: 1.6e-5 (ids), 1.3e-5 (embeddings); logits reach ~25: float32 rounding.
    assert np.abs(got_ids - expected_ids).max() < 1e-4
    assert np.abs(got_embeds - expected_embeds).max() < 1e-4
    np.testing.assert_array_equal(got_ids.argmax(1), expected_ids.argmax(1))
    np.testing.assert_array_equal(got_embeds.argmax(1), expected_embeds.argmax(1))
    print(
        f"f32 parity: {np.abs(got_ids - expected_ids).max():.3g} (ids), "
        f"{np.abs(got_embeds - expected_embeds).max():.3g} (embeddings)"
    )
    # llama.cpp's default context (f16 KV cache, flash attention) costs some precision: enough
    # to flip a near-tie (measured: 0.019 max abs, 1 of 32 argmaxes, top-2 margin 0.003).
    with Decoder(asr_f32, exact=False) as decoder:
        default_embeds = decoder.logits(embeds=embeds)
    print(
        f"default context: {np.abs(default_embeds - expected_embeds).max():.3g}, agreement "
        f"{(default_embeds.argmax(1) == expected_embeds.argmax(1)).mean():.3f}"
    )
    assert np.abs(default_embeds - expected_embeds).max() < 0.06
    assert (default_embeds.argmax(1) == expected_embeds.argmax(1)).mean() >= 0.9
    # The comparison has teeth: llama.cpp's fallback RoPE base (10000) is far off.
    with Decoder(asr_f32, rope_base=10000.0) as decoder:
        wrong_base = decoder.logits(embeds=embeds)
    assert np.abs(wrong_base - expected_embeds).max() > 0.1


@pytest.fixture(scope="module")
def transformers_aligner(checkpoints):
    torch = pytest.importorskip("torch")
    from transformers import Qwen3ASRForTokenClassification

    model = Qwen3ASRForTokenClassification.from_pretrained(
        checkpoints[("aligner", "hf")], dtype=torch.float32
    )
    return model.eval()


def reference_scores(model, ids: list[int] | None = None, embeds: np.ndarray | None = None):
    import torch

    with torch.no_grad():
        if ids is not None:
            return model(input_ids=torch.tensor([ids])).logits[0].numpy()
        return model(inputs_embeds=torch.from_numpy(embeds[None])).logits[0].numpy()


def aligner_ids(hf_tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Aligner-style token ids and the positions of their <timestamp> slots."""
    ids = hf_tokenizer.encode(ALIGNER_INPUT, add_special_tokens=False).ids
    slots = [index for index, token in enumerate(ids) if token == TIMESTAMP]
    assert len(slots) == 6
    return ids, slots


@pytest.mark.reference
def test_aligner_hidden_states_times_head_equal_token_classification(
    aligner_files: tuple[Path, Path], transformers_aligner, hf_tokenizer
) -> None:
    gguf_path, head_path = aligner_files
    assert "output.weight" not in tensor_types(gguf_path)  # no 152k head in the file
    head = np.load(head_path)
    assert head.dtype == np.float32
    assert head.shape == (5000, TINY_HIDDEN)
    np.testing.assert_array_equal(head, transformers_aligner.score.weight.detach().numpy())

    ids, slots = aligner_ids(hf_tokenizer)
    embeds = random_embeddings(24, TINY_HIDDEN, seed=2)
    expected_ids = reference_scores(transformers_aligner, ids=ids)[slots]
    expected_embeds = reference_scores(transformers_aligner, embeds=embeds)
    with Decoder(gguf_path, embeddings=True) as decoder:
        got_ids = decoder.hidden(ids=ids)[slots] @ head.T
        got_embeds = decoder.hidden(embeds=embeds) @ head.T
    print(
        f"aligner head beside: {np.abs(got_ids - expected_ids).max():.3g} (ids), "
        f"{np.abs(got_embeds - expected_embeds).max():.3g} (embeddings)"
    )
    # Measured: 8.6e-6 (ids), 1.2e-5 (embeddings); scores reach ~18.
    assert np.abs(got_ids - expected_ids).max() < 1e-4
    assert np.abs(got_embeds - expected_embeds).max() < 1e-4
    np.testing.assert_array_equal(got_ids.argmax(1), expected_ids.argmax(1))
    np.testing.assert_array_equal(got_embeds.argmax(1), expected_embeds.argmax(1))


@pytest.mark.reference
def test_aligner_scorer_logits_equal_token_classification(
    scorer_files: dict[str, Path], transformers_aligner, hf_tokenizer
) -> None:
    """Token ids become embeddings through the written table; llama.cpp's logits at the
    flagged <timestamp> positions are the 5000 class scores."""
    types = tensor_types(scorer_files["f32"])
    assert "output.weight" not in types
    table = np.load(scorer_files["embeddings"], mmap_mode="r")
    assert table.dtype == np.float16
    assert table.shape == (152064, TINY_HIDDEN)
    embedding = transformers_aligner.get_input_embeddings().weight.detach().numpy()
    # float16 is exact for bfloat16 values above 2**-14; below, it rounds to a multiple of 2**-24.
    np.testing.assert_allclose(table.astype(np.float32), embedding, rtol=0, atol=2**-25)

    ids, slots = aligner_ids(hf_tokenizer)
    embeds = random_embeddings(24, TINY_HIDDEN, seed=2)
    expected_ids = reference_scores(transformers_aligner, ids=ids)[slots]
    expected_embeds = reference_scores(transformers_aligner, embeds=embeds)
    with Decoder(scorer_files["f32"]) as decoder:
        assert decoder.n_vocab == 5000
        got_ids = decoder.logits(embeds=table[ids].astype(np.float32), outputs=slots)
        got_embeds = decoder.logits(embeds=embeds)
    print(
        f"aligner scorer: {np.abs(got_ids - expected_ids).max():.3g} (ids), "
        f"{np.abs(got_embeds - expected_embeds).max():.3g} (embeddings)"
    )
    # Measured: 8.6e-6 (ids), 1.2e-5 (embeddings).
    assert np.abs(got_ids - expected_ids).max() < 1e-4
    assert np.abs(got_embeds - expected_embeds).max() < 1e-4
    np.testing.assert_array_equal(got_ids.argmax(1), expected_ids.argmax(1))
    np.testing.assert_array_equal(got_embeds.argmax(1), expected_embeds.argmax(1))


def test_aligner_scorer_file_layout_and_quantized_scores(
    scorer_files: dict[str, Path], quantized_files_survive: None
) -> None:
    reader = gguf.GGUFReader(scorer_files["f32"])
    assert reader.get_field("qwenscribe.output").contents() == "timestamp_classes"
    assert len(reader.get_field("tokenizer.ggml.tokens").contents()) == 5000
    shapes = {t.name: list(t.shape) for t in reader.tensors}
    assert shapes["token_embd.weight"] == [TINY_HIDDEN, 5000]  # the head, as llama.cpp's output
    assert "output.weight" not in shapes
    types = tensor_types(scorer_files["q8_0"])
    assert types["token_embd.weight"] == "F16"  # the head is kept out of the quantizer's way
    assert {kind for name, kind in types.items() if "norm" not in name and "embd" not in name} == {
        "Q8_0"
    }
    embeds = random_embeddings(40, TINY_HIDDEN, seed=4)
    with Decoder(scorer_files["f32"]) as decoder:
        expected = decoder.logits(embeds=embeds)
    with Decoder(scorer_files["q8_0"]) as decoder:
        got = decoder.logits(embeds=embeds)
    error = np.abs(got - expected).max()
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    print(f"scorer q8_0: max abs score error {error:.3g}, class agreement {agreement:.2f}")
    # Measured: 0.45 (scores reach ~18 on this 64-wide decoder), all 40 classes equal.
    assert error < 1.0
    assert agreement >= 0.85


def test_aligner_files_are_for_aligners_only(checkpoints, tmp_path: Path) -> None:
    asr = Checkpoint(checkpoints[("asr", "hf")])
    for write in (write_aligner_head, write_aligner_gguf):
        with pytest.raises(ValueError, match="not an aligner"):
            write(asr, tmp_path)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Quantized files


def test_quantized_files_decode_multi_token_batches_without_crashing(
    quantized_files_survive: None,
) -> None:
    """The probe (a fixture, so that the tests decoding quantized files in this process can
    depend on it) passed."""


@pytest.fixture(scope="module")
def kquant_reference(
    kquant_files: dict[str, Path], hf_tokenizer, quantized_files_survive: None
) -> dict[str, np.ndarray]:
    ids = hf_tokenizer.encode(PROMPT, add_special_tokens=False).ids
    embeds = random_embeddings(48, KQUANT_DECODER.hidden, seed=3)
    with Decoder(kquant_files["f32"]) as decoder:
        logits = np.concatenate([decoder.logits(ids=ids), decoder.logits(embeds=embeds)])
    return {"ids": np.array(ids), "embeds": embeds, "logits": logits}


@pytest.mark.parametrize("quant", list(QUANT_BOUNDS))
def test_quantized_logits_within_measured_bounds(
    quant: str, kquant_files: dict[str, Path], kquant_reference: dict[str, np.ndarray]
) -> None:
    path = kquant_files[quant]
    matrices = {kind for name, kind in tensor_types(path).items() if "norm" not in name}
    assert matrices == EXPECTED_MATRIX_TYPES[quant]
    with Decoder(path) as decoder:
        logits = np.concatenate(
            [
                decoder.logits(ids=kquant_reference["ids"].tolist()),
                decoder.logits(embeds=kquant_reference["embeds"]),
            ]
        )
    expected = kquant_reference["logits"]
    error = float(np.abs(logits - expected).max())
    agreement = float((logits.argmax(1) == expected.argmax(1)).mean())
    print(f"{quant}: max abs logit error {error:.3g}, top-1 agreement {agreement:.2f}")
    bound, minimum = QUANT_BOUNDS[quant]
    assert error < bound
    assert agreement >= minimum
