"""The aligner logic shared by the runtimes: input, monotonic repair, times, model files.

The repair and the input ids are compared with transformers' processor (the reference); the
rest runs over a scripted runtime that answers chosen timestamp classes and records what it was
handed. The tokenizer is the real one of the tiny aligner checkpoint. Expected prompts and times
are written out here from shared/REFERENCE.md ("Forced aligner"), not taken from the code.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qwenscribe.audio.decode import decode_audio
from qwenscribe.convert.convert import ConvertOptions, convert
from qwenscribe.core.align import (
    MAX_ALIGNED_S,
    AlignerConfig,
    ForcedAligner,
    aligner_checkpoint_files,
    aligner_input_ids,
    aligner_model_files,
    repair_timestamps,
    slot_times_ms,
    supports_language,
)
from qwenscribe.core.engine import ASREngineConfig
from qwenscribe.core.models import default_decoder_quant
from qwenscribe.errors import InputError, ModelError
from qwenscribe.model.architecture import audio_token_count
from qwenscribe.model.tokenizer import load_tokenizer
from qwenscribe.runtimes.aligner_hybrid import (
    HybridAligner,
    HybridAlignerSettings,
    LlamaSlotScorer,
)
from qwenscribe.runtimes.base import RuntimeTimes
from qwenscribe.runtimes.onnx_aligner import OnnxSlotScorer
from torchless import run_without_torch

RATE = 16000
HIDDEN = 8
CLASSES = 5000
# shared/REFERENCE.md
AUDIO_START, AUDIO_END, AUDIO_PAD, TIMESTAMP = 151669, 151670, 151676, 151705
MS_PER_CLASS = 80


# -- the monotonic repair ------------


def reference_fix(values: np.ndarray) -> list[int]:
    pytest.importorskip("torch")
    from transformers.models.qwen3_asr.processing_qwen3_asr import _fix_timestamps

    return _fix_timestamps(np.asarray(values, dtype=np.float32))


def repair_cases() -> list[np.ndarray]:
    """Slot times (ms) of every shape the repair meets: random, sorted with outliers of every
    run length at the start, middle and end, ties, constant, decreasing, single values."""
    rng = np.random.default_rng(0)
    cases = [
        np.array([0.0]),
        np.array([400.0, 80.0]),
        np.full(7, 160.0),
        np.arange(20, 0, -1) * 80.0,
        np.array([80, 400, 160, 240]) * 1.0,
        np.array([0, 900, 800, 700, 400]) * 1.0,
        np.array([500, 0, 80, 160, 240, 320]) * 1.0,
        np.array([0, 80, 160, 240, 40, 30, 20, 10]) * 1.0,
    ]
    for _ in range(150):
        count = int(rng.integers(1, 61))
        cases.append(rng.integers(0, CLASSES, count) * float(MS_PER_CLASS))
    for _ in range(300):
        count = int(rng.integers(2, 61))
        values = np.sort(rng.integers(0, 300, count)) * float(MS_PER_CLASS)
        for _ in range(int(rng.integers(1, 4))):
            run = int(rng.integers(1, 6))
            start = int(rng.choice([0, count - run, rng.integers(0, count)]))
            values[max(0, start) : start + run] = rng.integers(0, 300, 1)[0] * MS_PER_CLASS
        cases.append(values)
    for _ in range(50):  # arbitrary floats, with ties
        cases.append(rng.choice([0.0, 12.5, 99.9, 100.0, 1234.567], int(rng.integers(1, 30))))
    return cases


@pytest.mark.reference
def test_repair_equals_transformers() -> None:
    for values in repair_cases():
        assert repair_timestamps(values) == reference_fix(values), values.tolist()


def test_repair_gives_whole_non_decreasing_milliseconds() -> None:
    for values in repair_cases():
        repaired = repair_timestamps(values)
        assert len(repaired) == len(values)
        assert all(isinstance(value, int) for value in repaired)
        assert repaired == sorted(repaired)
        if list(values) == sorted(values):  # nothing out of order: only truncation
            assert repaired == [int(value) for value in values]
    assert repair_timestamps([]) == []


def test_repair_rules_by_hand() -> None:
    """Keep the longest non-decreasing run (of equally long ones, the one ending first); one or
    two outliers take the nearer kept neighbour (the left on a tie), longer runs are spread
    evenly between their neighbours; a run at an edge takes its one neighbour."""
    assert repair_timestamps([80, 400, 160, 240]) == [80, 80, 160, 240]
    assert repair_timestamps([0, 50, 40, 30, 400]) == [0, 50, 50, 400, 400]
    assert repair_timestamps([9, 8, 7, 100, 200]) == [9, 9, 100, 100, 200]
    assert repair_timestamps([0, 900, 800, 700, 100, 200]) == [0, 25, 50, 75, 100, 200]
    assert repair_timestamps([500, 400, 300, 0, 80, 160, 240]) == [0, 0, 0, 0, 80, 160, 240]
    # 0, 80, 999 ends before 0, 80, 160: the official choice keeps 999.
    assert repair_timestamps([0, 80, 999, 998, 160]) == [0, 80, 999, 999, 999]
    assert repair_timestamps([0, 100, 101, 102, 103, 50]) == [0, 100, 101, 102, 103, 103]
    assert repair_timestamps([0.0, 10.0, 9.9, 9.8, 9.7, 30.5]) == [0, 10, 15, 20, 25, 30]


def test_classes_are_80_ms() -> None:
    assert slot_times_ms([0, 1, 2, 4999]) == [0, 80, 160, 399_920]
    assert MAX_ALIGNED_S == 400.0


# -- the input ------------


@pytest.fixture(scope="module")
def tokenizer(checkpoints):
    return load_tokenizer(checkpoints[("aligner", "hf")])


WORD_LISTS = [
    ["The", "quick", "brown", "fox"],
    ["今", "天", "天", "气"],
    ["Python", "写", "了", "3", "个", "don't", "12345", "Ελληνικά", "오늘"],
    ["a"],
]


def test_input_ids_by_hand(tokenizer) -> None:
    words = ["Hello", "world"]
    ids = aligner_input_ids(tokenizer, 3, words).tolist()
    hello = tokenizer.encode("Hello", add_special_tokens=False).ids
    world = tokenizer.encode("world", add_special_tokens=False).ids
    assert ids == [
        AUDIO_START,
        *[AUDIO_PAD] * 3,
        AUDIO_END,
        *hello,
        TIMESTAMP,
        TIMESTAMP,
        *world,
        TIMESTAMP,
        TIMESTAMP,
    ]


@pytest.mark.reference
@pytest.mark.parametrize("layout", ["hf", "original"])
def test_input_ids_equal_prepare_forced_aligner_inputs(checkpoints, layout) -> None:
    """The ids transformers' processor builds for the same audio and words (its tokenizer, its
    chat template, its audio token count) equal ours, with either layout's tokenizer."""
    pytest.importorskip("torch")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoints[("aligner", "hf")])
    ours = load_tokenizer(checkpoints[("aligner", layout)])
    rng = np.random.default_rng(1)
    for seconds, words in zip((0.3, 1.0, 2.37, 7.0), WORD_LISTS, strict=True):
        samples = (0.1 * rng.standard_normal(round(seconds * RATE))).astype(np.float32)
        inputs, word_lists = processor.prepare_forced_aligner_inputs(
            audio=samples, transcript=" ".join(words), language="Chinese"
        )
        assert word_lists == [words]
        n_audio = audio_token_count(max(len(samples), 8000) // 160)
        expected = inputs["input_ids"][0].tolist()
        assert aligner_input_ids(ours, n_audio, words).tolist() == expected


# -- the aligner over a scripted runtime ------------


class ScriptedAligner:
    """An AlignerRuntime that answers scripted classes and records what it was given.

    `encode` returns one row per audio token (the project's count for the mel), each row's
    values its index; `score` returns logits whose argmax at slot i is `classes[i]` (a list, or
    a function of the number of slots).
    """

    name = "scripted"

    def __init__(self, classes=None) -> None:
        self.classes = classes
        self.times = RuntimeTimes()
        self.mels: list[np.ndarray] = []
        self.prompts: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.closed = False

    def encode(self, mel: np.ndarray) -> np.ndarray:
        assert mel.shape[0] == 128
        self.mels.append(mel)
        count = audio_token_count(mel.shape[1])
        return np.repeat(np.arange(count, dtype=np.float32)[:, None], HIDDEN, axis=1)

    def score(self, prompt_ids: np.ndarray, audio: np.ndarray) -> np.ndarray:
        self.prompts.append(np.asarray(prompt_ids))
        self.audio.append(audio)
        assert int(np.count_nonzero(prompt_ids == AUDIO_PAD)) == len(audio)
        slots = int(np.count_nonzero(prompt_ids == TIMESTAMP))
        classes = self.classes(slots) if callable(self.classes) else self.classes
        assert len(classes) == slots
        logits = np.zeros((slots, CLASSES), np.float32)
        logits[np.arange(slots), classes] = 1.0
        return logits

    def close(self) -> None:
        self.closed = True


def seconds(duration_s: float) -> np.ndarray:
    return np.zeros(round(duration_s * RATE), np.float32)


def test_align_maps_classes_to_times_on_the_file_timeline(tokenizer) -> None:
    runtime = ScriptedAligner([5, 10, 12, 20])
    aligner = ForcedAligner(runtime, tokenizer)
    words = aligner.align(seconds(3.0), "Hello, world.", "English", offset_s=100.0)
    assert [w.text for w in words] == ["Hello,", "world."]
    assert [(w.start, w.end) for w in words] == [
        (100.0 + 0.4, 100.0 + 0.8),
        (100.0 + 0.96, 100.0 + 1.6),
    ]
    # The runtime got the official input for this chunk and the encoder's rows.
    n_audio = audio_token_count(3 * RATE // 160)
    hello = tokenizer.encode("Hello", add_special_tokens=False).ids
    world = tokenizer.encode("world", add_special_tokens=False).ids
    assert runtime.prompts[0].tolist() == [
        AUDIO_START,
        *[AUDIO_PAD] * n_audio,
        AUDIO_END,
        *hello,
        TIMESTAMP,
        TIMESTAMP,
        *world,
        TIMESTAMP,
        TIMESTAMP,
    ]
    assert runtime.audio[0][:, 0].tolist() == list(range(n_audio))
    assert runtime.mels[0].shape == (128, 300)


def test_align_clamps_to_the_chunk(tokenizer) -> None:
    """Times past the chunk's end (the classes reach 400 s) end at the chunk's end."""
    aligner = ForcedAligner(ScriptedAligner([10, 30, 60, 4999]), tokenizer)
    words = aligner.align(seconds(2.0), "one two", None, offset_s=5.0)
    assert [(w.start, w.end) for w in words] == [(5.8, 7.0), (7.0, 7.0)]


def test_align_repairs_out_of_order_slots(tokenizer) -> None:
    aligner = ForcedAligner(ScriptedAligner([1, 50, 2, 3, 4, 5]), tokenizer)
    words = aligner.align(seconds(10.0), "a b c", None)
    assert [(w.start, w.end) for w in words] == [(0.08, 0.08), (0.16, 0.24), (0.32, 0.4)]


@pytest.mark.parametrize("seed", range(20))
def test_aligned_words_are_ordered_and_inside_the_chunk(tokenizer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = seconds(float(rng.uniform(0.2, 30.0)))
    duration = len(samples) / RATE
    offset = float(rng.uniform(0, 1000))
    runtime = ScriptedAligner(lambda slots: rng.integers(0, 600, slots).tolist())
    text = " ".join(rng.choice(["word,", "other.", "今天", "(aside)", "x"], rng.integers(1, 30)))
    words = ForcedAligner(runtime, tokenizer).align(samples, text, "zh", offset)
    assert words
    for word in words:
        assert offset <= word.start <= word.end <= offset + duration
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))


def test_nothing_to_align(tokenizer) -> None:
    runtime = ScriptedAligner([])
    aligner = ForcedAligner(runtime, tokenizer)
    assert aligner.align(seconds(2.0), "", "English") == []
    assert aligner.align(seconds(2.0), " ... !! ", "English") == []
    assert aligner.align(np.zeros(0, np.float32), "words", "English") == []
    assert runtime.prompts == []


def test_languages(tokenizer) -> None:
    for language in ("English", "ja", "yue", "Korean", None):
        assert supports_language(language)
    for language in ("Arabic", "th", "Klingon"):
        assert not supports_language(language)
    aligner = ForcedAligner(ScriptedAligner([0, 1]), tokenizer)
    with pytest.raises(InputError, match="does not support 'Arabic'"):
        aligner.align(seconds(1.0), "مرحبا", "Arabic")


def test_chunks_past_the_aligner_reach_are_refused(tokenizer) -> None:
    aligner = ForcedAligner(ScriptedAligner([0, 1]), tokenizer)
    with pytest.raises(InputError, match="too long to align"):
        aligner.align(seconds(MAX_ALIGNED_S + 1), "word", "English")


def test_a_wrong_encoder_count_is_a_model_error(tokenizer) -> None:
    runtime = ScriptedAligner([0, 1])
    runtime.encode = lambda mel: np.zeros((3, HIDDEN), np.float32)
    with pytest.raises(ModelError, match="audio embeddings"):
        ForcedAligner(runtime, tokenizer).align(seconds(2.0), "word", "English")


def test_close(tokenizer) -> None:
    runtime = ScriptedAligner([])
    with ForcedAligner(runtime, tokenizer):
        pass
    assert runtime.closed


# -- model files ------------


def test_model_files_convert_a_checkpoint_once(checkpoints, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path / "home"))
    source = str(checkpoints[("aligner", "original")])
    files = aligner_model_files(source, "fp32", "f32")
    assert files.manifest["kind"] == "aligner"
    assert (files.folder / "aligner.f32.gguf").is_file()
    assert (files.folder / "token_embeddings.npy").is_file()
    assert files.folder.is_relative_to(tmp_path / "home")
    stamp = (files.folder / "manifest.json").stat().st_mtime_ns
    again = aligner_model_files(source, "fp32", "f32")
    assert again.folder == files.folder
    assert (files.folder / "manifest.json").stat().st_mtime_ns == stamp
    # The converted folder itself is accepted, for the precision and quantization it holds.
    assert aligner_model_files(str(files.folder), "fp32", "f32").folder == files.folder
    with pytest.raises(ModelError, match=r"converted without aligner\.q8_0\.gguf"):
        aligner_model_files(str(files.folder), "fp32", "q8_0")
    with pytest.raises(ModelError, match="the transformers runtime needs the original checkpoint"):
        aligner_checkpoint_files(str(files.folder))


def test_model_files_refuse_a_recognizer(checkpoints, tmp_path) -> None:
    asr = checkpoints[("asr", "hf")]
    with pytest.raises(ModelError, match="not a forced aligner"):
        aligner_model_files(str(asr), "fp32", "f32")
    with pytest.raises(ModelError, match="not a forced aligner"):
        aligner_checkpoint_files(str(asr))
    converted = convert(asr, tmp_path / "asr", ConvertOptions(("fp32",), ("f32",))).folder
    with pytest.raises(ModelError, match="not a forced aligner"):
        aligner_model_files(str(converted), "fp32", "f32")
    with pytest.raises(ModelError, match="Unknown quantization 'q3'"):
        aligner_model_files(str(converted), "fp32", "q3")
    assert aligner_checkpoint_files(str(checkpoints[("aligner", "hf")])).manifest is None


# -- the hybrid aligner ------------


def test_the_decoder_default_follows_the_device() -> None:
    """ONNX Runtime's int8 decoder on a CPU; on a GPU the GGUF one, which llama.cpp offloads
    whole; the recognizer's and the aligner's alike."""
    assert default_decoder_quant("cpu") == "int8"
    for device in ("cuda", "cuda:1", "directml", "coreml"):
        assert default_decoder_quant(device) == "q8_0"
    assert ASREngineConfig().decoder_file_quant == "int8"
    assert ASREngineConfig(device="cuda").decoder_file_quant == "q8_0"
    assert ASREngineConfig(decoder_quant="q4_k").decoder_file_quant == "q4_k"


@pytest.mark.parametrize(
    ("quant", "scorer"),
    [(None, OnnxSlotScorer), ("q8_0", LlamaSlotScorer)],
    ids=["default", "gguf"],
)
def test_hybrid_aligner_end_to_end(
    quant, scorer, checkpoints, tmp_path, monkeypatch, data_dir
) -> None:
    """The defaults (int8 encoder, int8 ONNX decoder), and the q8_0 GGUF decoder with
    llama.cpp's default context: the checkpoint is converted into the cache, and a clip's words
    come back timed, in order, punctuated."""
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path))
    samples = decode_audio(data_dir / "en_speech.wav")
    text = "The quick brown fox jumps over the lazy dog. Subtitles should never cut a word in half."
    config = AlignerConfig(model=str(checkpoints[("aligner", "hf")]), threads=1)
    if quant is not None:
        config = replace(config, quant=quant)
    with ForcedAligner.load(config) as aligner:
        assert aligner.runtime.settings.quant == (quant or "int8")
        assert aligner.runtime.settings.encoder_precision == "int8"
        assert isinstance(aligner.runtime.scorer, scorer)
        words = aligner.align(samples, text, "en", offset_s=2.0)
    assert [word.text for word in words] == text.split()
    end = 2.0 + len(samples) / RATE
    assert all(2.0 <= w.start <= w.end <= end for w in words)
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))


@pytest.fixture(scope="module")
def converted_aligner(checkpoints, tmp_path_factory) -> Path:
    """The tiny aligner as unquantized hybrid files, its decoder as GGUF and as ONNX."""
    out = tmp_path_factory.mktemp("aligner") / "converted"
    options = ConvertOptions(("fp32",), ("f32", "fp32"))
    return convert(checkpoints[("aligner", "hf")], out, options).folder


def test_hybrid_scores_do_not_depend_on_the_batch_size(converted_aligner: Path) -> None:
    """An input longer than n_batch is fed in several decode calls; the slots' scores are the
    same, in order."""
    folder = converted_aligner
    tokenizer = load_tokenizer(folder)
    rng = np.random.default_rng(3)
    samples = (0.1 * rng.standard_normal(4 * RATE)).astype(np.float32)
    words = [f"w{index}" for index in range(40)]
    scores = []
    for n_batch in (512, 16):
        settings = HybridAlignerSettings(
            folder, quant="f32", encoder_precision="fp32", threads=1, n_batch=n_batch,
            flash_attention=False, f32_kv_cache=True,
        )  # fmt: skip
        with ForcedAligner(HybridAligner(settings), tokenizer) as aligner:
            scores.append(aligner.scores(samples, words))
    assert scores[0].shape == (80, 5000)
    np.testing.assert_allclose(scores[1], scores[0], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(scores[1].argmax(1), scores[0].argmax(1))


@pytest.mark.parametrize("quant", ["f32", "fp32"])
def test_hybrid_aligner_never_imports_torch(quant, converted_aligner: Path, data_dir: Path) -> None:
    code = f"""
import sys
from qwenscribe.audio.decode import decode_audio
from qwenscribe.core.align import AlignerConfig, ForcedAligner
config = AlignerConfig(model={str(converted_aligner)!r}, quant={quant!r}, encoder_precision="fp32",
                       threads=1)
with ForcedAligner.load(config) as aligner:
    samples = decode_audio({str(data_dir / "zh_speech.wav")!r})
    words = aligner.align(samples, "今天天气很好。", "zh", offset_s=1.0)
print("WORDS", " ".join(word.text for word in words))
print("TORCH", "torch" in sys.modules, "transformers" in sys.modules)
"""
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WORDS 今 天 天 气 很 好。" in done.stdout
    assert "TORCH False False" in done.stdout
    assert "load:" not in done.stderr  # llama.cpp's warnings about the placeholder vocabulary
