"""The acceptance test of word timing: both aligner runtimes give transformers' timestamps.

The reference is transformers' own pipeline on each speech fixture and its text:
`AutoProcessor.prepare_forced_aligner_inputs` (its word splitting, tokenizer, feature extractor),
`Qwen3ASRForTokenClassification` forward, `decode_forced_alignment` (argmax, the monotonic
repair, seconds). The hybrid aligner runs with the unquantized files, its decoder either on
llama.cpp ("hybrid-gguf": f32 GGUF, f32 KV cache, flash attention off) or on ONNX Runtime
("hybrid-onnx": the fp32 ONNX decoder); the encoder is the fp32 ONNX one for both. The
transformers aligner runs in float32. At every `<timestamp>`
slot the class (argmax) must be the same and the logits close; the words' times must be the
reference's, clamped to the clip.

Two kinds of tiny checkpoint: the suite's own ("plain"), and the same weights with sharper
attention ("sharp": the query and key norm weights x4). The plain aligner gives nearly the same
class at every slot (a few distinct classes per clip: the slots differ only through attention,
which averages over the whole input), so equal classes there prove little beyond the logits.
With sharper attention each slot looks at different positions, and the classes vary from slot
to slot (dozens of distinct classes), so that an input in the wrong order or place, or audio
rows in the wrong slots, changes them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen3ASRForTokenClassification

from qwenscribe.audio.decode import decode_audio
from qwenscribe.convert.convert import ConvertOptions, convert
from qwenscribe.core.align import AlignerConfig, ForcedAligner, slot_times_ms
from qwenscribe.core.words import attach_punctuation, split_words
from qwenscribe.model.layout import original_name
from qwenscribe.testing import write_checkpoint

pytestmark = pytest.mark.reference

RATE = 16000
TIMESTAMP = 151705  # shared/REFERENCE.md
CLIPS = ("en_speech.wav", "zh_speech.wav", "en_long.flac")
OFFSET_S = 61.5  # where the clips are placed on a file's timeline
SHARPNESS = 4.0
# Max |logit - reference logit| allowed (logits reach ~19), about 3x what was measured on these
# clips: plain 9.5e-6 (hybrid-gguf) / 1.1e-5 (hybrid-onnx) / 9.1e-6 (transformers); sharp
# 1.2e-3 / 2.9e-4 / 1.6e-4. Both runtimes
# differ from the reference by the mel (float64 here, float32 there); the hybrid also by
# llama.cpp's float32 sums, which sharp attention amplifies (2.6e-4 on one clip with the very
# same audio rows fed to both). The sharp reference's smallest top-2 margin is 0.004.
LOGIT_BOUNDS = {
    ("plain", "hybrid-gguf"): 5e-5,
    ("plain", "hybrid-onnx"): 5e-5,
    ("plain", "transformers"): 5e-5,
    ("sharp", "hybrid-gguf"): 3e-3,
    ("sharp", "hybrid-onnx"): 1e-3,
    ("sharp", "transformers"): 5e-4,
}
CASES = [(variant, layout) for variant in ("plain", "sharp") for layout in ("hf", "original")]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run best on one thread, and then a busy machine does not stall them; torch's
    thread count is process-wide (the transformers aligner sets it too), so it is put back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- checkpoints ------------


def scale_tensors(path: Path, names: list[str], factor: float) -> None:
    """Multiply bfloat16 tensors of a safetensors file in place (header: 8-byte length, JSON)."""
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        for name in names:
            begin, end = header[name]["data_offsets"]
            handle.seek(8 + length + begin)
            values = np.frombuffer(handle.read(end - begin), ml_dtypes.bfloat16).astype(np.float32)
            handle.seek(8 + length + begin)
            handle.write((values * factor).astype(ml_dtypes.bfloat16).tobytes())


def sharp_checkpoint(folder: Path, layout: str) -> Path:
    """The suite's tiny aligner (seed 0) with its attention sharpened (q/k norm weights x4)."""
    write_checkpoint(folder, kind="aligner", layout=layout, seed=0)
    names = [
        f"model.language_model.layers.{layer}.self_attn.{which}_norm.weight"
        for layer in range(2)
        for which in ("q", "k")
    ]
    if layout == "original":
        names = [original_name(name, "aligner") for name in names]
    scale_tensors(folder / "model.safetensors", names, SHARPNESS)
    return folder


@pytest.fixture(scope="module")
def aligner_checkpoints(checkpoints, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("sharp")
    found = {("plain", layout): checkpoints[("aligner", layout)] for layout in ("hf", "original")}
    for layout in ("hf", "original"):
        found[("sharp", layout)] = sharp_checkpoint(root / layout, layout)
    return found


@pytest.fixture(scope="module")
def converted(aligner_checkpoints, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("converted-aligners")
    options = ConvertOptions(encoder_precisions=("fp32",), decoder_quants=("f32", "fp32"))
    return {
        key: convert(folder, root / "-".join(key), options).folder
        for key, folder in aligner_checkpoints.items()
    }


# -- the reference ------------


@dataclass
class Clip:
    name: str
    samples: np.ndarray
    text: str
    language: str


@dataclass
class Reference:
    words: list[str]
    logits: np.ndarray  # [slots, 5000]
    times_s: list[tuple[float, float]]  # decode_forced_alignment's, per word


@pytest.fixture(scope="module")
def clips(data_dir, fixture_facts) -> list[Clip]:
    return [
        Clip(
            name,
            decode_audio(data_dir / name),
            fixture_facts[name]["text"],
            fixture_facts[name]["language"],
        )
        for name in CLIPS
    ]


@pytest.fixture(scope="module")
def references(aligner_checkpoints, clips) -> dict[str, list[Reference]]:
    results = {}
    for variant in ("plain", "sharp"):
        folder = aligner_checkpoints[(variant, "hf")]
        processor = AutoProcessor.from_pretrained(folder)
        model = Qwen3ASRForTokenClassification.from_pretrained(folder, dtype=torch.float32).eval()
        results[variant] = [reference_alignment(processor, model, clip) for clip in clips]
    return results


def reference_alignment(processor, model, clip: Clip) -> Reference:
    inputs, word_lists = processor.prepare_forced_aligner_inputs(
        audio=clip.samples, transcript=clip.text, language=clip.language
    )
    with torch.inference_mode():
        logits = model(**inputs).logits
    decoded = processor.decode_forced_alignment(
        logits, inputs["input_ids"], word_lists, timestamp_token_id=TIMESTAMP
    )[0]
    slots = inputs["input_ids"][0] == TIMESTAMP
    return Reference(
        word_lists[0],
        logits[0][slots].numpy(),
        [(item["start_time"], item["end_time"]) for item in decoded],
    )


def clamped(times_s: list[tuple[float, float]], duration_s: float) -> list[tuple[float, float]]:
    """Reference times as the file's timeline shows them: inside the clip, then offset."""

    def inside(value: float) -> float:
        return min(max(value, 0.0), duration_s)

    return [(OFFSET_S + inside(start), OFFSET_S + inside(end)) for start, end in times_s]


# -- the runtimes ------------


def open_aligner(runtime: str, folder: Path) -> ForcedAligner:
    if runtime.startswith("hybrid"):
        config = AlignerConfig(
            model=str(folder),
            quant="f32" if runtime == "hybrid-gguf" else "fp32",
            encoder_precision="fp32",
            exact_kv_cache=True,
            flash_attention=False,
            threads=1,  # tiny models: one thread is plenty, and immune to a busy machine
        )
    else:
        config = AlignerConfig(model=str(folder), runtime="transformers", threads=1)
    return ForcedAligner.load(config)


@pytest.mark.parametrize("runtime", ["hybrid-gguf", "hybrid-onnx", "transformers"])
@pytest.mark.parametrize(("variant", "layout"), CASES)
def test_aligner_equals_transformers(
    variant, layout, runtime, aligner_checkpoints, converted, references, clips
) -> None:
    folder = (
        converted[(variant, layout)]
        if runtime.startswith("hybrid")
        else aligner_checkpoints[(variant, layout)]
    )
    worst, classes = 0.0, set()
    with open_aligner(runtime, folder) as aligner:
        for clip, reference in zip(clips, references[variant], strict=True):
            words = split_words(clip.text, clip.language)
            assert words == reference.words
            logits = aligner.scores(clip.samples, words)
            assert logits.shape == reference.logits.shape
            worst = max(worst, float(np.abs(logits - reference.logits).max()))
            chosen = logits.argmax(axis=1)
            np.testing.assert_array_equal(chosen, reference.logits.argmax(axis=1), clip.name)
            classes.update(chosen.tolist())
            # Unclamped slot times are the reference's decode, in whole milliseconds.
            ms = slot_times_ms(chosen)
            assert [(ms[2 * i] / 1000, ms[2 * i + 1] / 1000) for i in range(len(words))] == (
                reference.times_s
            )
            # The words on the file's timeline: the reference's times inside the clip.
            aligned = aligner.align(clip.samples, clip.text, clip.language, offset_s=OFFSET_S)
            duration = len(clip.samples) / RATE
            assert [(w.start, w.end) for w in aligned] == clamped(reference.times_s, duration)
            assert [w.text for w in aligned] == attach_punctuation(clip.text, words)
    print(
        f"{variant}/{layout}/{runtime}: max |logit diff| {worst:.3g}, "
        f"{len(classes)} distinct classes over {len(CLIPS)} clips"
    )
    assert worst < LOGIT_BOUNDS[(variant, runtime)]
    if variant == "sharp":
        assert len(classes) >= 30, "the sharp checkpoint should give varied classes"
