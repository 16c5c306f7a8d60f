"""The acceptance test of the engine: the hybrid runtime gives exactly transformers' tokens.

For every chunk the engine decoded, the reference is transformers' own pipeline on that chunk's
samples: `AutoProcessor.apply_transcription_request` (the official prompt and its own feature
extractor) and `Qwen3ASRForConditionalGeneration.generate` (greedy) with the same token budget.
The engine runs with the unquantized files (fp32 ONNX encoder; the decoder as f32 GGUF on
llama.cpp with an f32 KV cache, or as fp32 ONNX on ONNX Runtime) and the repetition guard off, so
what it returns is the raw greedy decoding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration

from qwenscribe import ASREngineConfig, QwenASREngine
from qwenscribe.audio.decode import decode_audio
from qwenscribe.convert.convert import ConvertOptions, convert

pytestmark = pytest.mark.reference

RATE = 16000
EOS = {151645, 151643}  # REFERENCE.md
DECODERS = ("f32", "fp32")  # the unquantized GGUF (llama.cpp) and ONNX (ONNX Runtime) decoders


@pytest.fixture(scope="module")
def clips(data_dir) -> dict[str, np.ndarray]:
    """3, 8, 12 and 70 s of speech with pauses, cut from the committed clips."""
    pieces = [
        decode_audio(data_dir / name) for name in ("en_speech.wav", "zh_speech.wav", "en_long.flac")
    ]
    speech = np.concatenate(pieces * 4)
    assert len(speech) > 70 * RATE
    return {f"{s}s": speech[: s * RATE] for s in (3, 8, 12, 70)}


@pytest.fixture(scope="module")
def converted(checkpoints, tmp_path_factory) -> dict[str, str]:
    """Unquantized hybrid files from each checkpoint layout, with both decoders."""
    root = tmp_path_factory.mktemp("converted")
    return {
        layout: str(
            convert(
                checkpoints[("asr", layout)],
                root / layout,
                ConvertOptions(encoder_precisions=("fp32",), decoder_quants=DECODERS),
            ).folder
        )
        for layout in ("original", "hf")
    }


def exact_engine(model: str, **overrides) -> QwenASREngine:
    config = ASREngineConfig(
        model=model,
        decoder_quant="f32",
        encoder_precision="fp32",
        exact_kv_cache=True,
        flash_attention=False,
        vad=False,
        repetition_guard=False,
        max_chunk_s=30.0,
        parallel_sequences=4,
        threads=2,
    )
    return QwenASREngine(config, **overrides)


@pytest.fixture(scope="module")
def reference(checkpoints):
    folder = checkpoints[("asr", "hf")]
    model = Qwen3ASRForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return AutoProcessor.from_pretrained(folder), model


def reference_tokens(
    reference, samples, language, context, max_new_tokens, full_budget=False
) -> list[int]:
    processor, model = reference
    inputs = processor.apply_transcription_request(
        audio=samples, language=language, prompt=context or None, sampling_rate=RATE
    )
    # transformers' own way to hold end-of-sequence back: min_new_tokens.
    extra = {"min_new_tokens": max_new_tokens} if full_budget else {}
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **extra)
    tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    return tokens[:-1] if tokens and tokens[-1] in EOS else tokens


def assert_same_tokens(
    reference, samples, transcript, language, context, full_budget=False
) -> None:
    assert transcript.chunks, "the engine decoded no chunk"
    for record in transcript.chunks:
        piece = samples[round(record.start * RATE) : round(record.end * RATE)]
        expected = reference_tokens(
            reference, piece, language, context, record.max_new_tokens, full_budget
        )
        first_difference = next(
            (i for i, (a, b) in enumerate(zip(record.tokens, expected, strict=False)) if a != b),
            min(len(record.tokens), len(expected)),
        )
        assert record.tokens == expected, (
            f"chunk {record.start:.2f}-{record.end:.2f} s: first difference at token "
            f"{first_difference} of {len(record.tokens)} / {len(expected)}"
        )


PROMPTS = [
    pytest.param(None, "", id="detect"),
    pytest.param("English", "", id="forced-en"),
    pytest.param(None, "Qwen3-ASR, ONNX Runtime, llama.cpp", id="context"),
    pytest.param("zh", "热词：语音识别", id="forced-zh+context"),
]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("clip", ["3s", "8s", "12s", "70s"])
def test_hybrid_tokens_equal_transformers_generate(
    clip, decoder, clips, converted, reference
) -> None:
    samples = clips[clip]
    with exact_engine(converted["hf"], decoder_quant=decoder) as engine:
        transcript = engine.transcribe((samples, RATE))
    if clip == "70s":
        assert len(transcript.chunks) == 3, "70 s at 30-s chunks is three chunks"
    assert_same_tokens(reference, samples, transcript, None, "")


@pytest.mark.parametrize(("language", "context"), PROMPTS)
def test_forced_language_and_context(language, context, clips, converted, reference) -> None:
    samples = clips["8s"]
    with exact_engine(converted["original"]) as engine:
        transcript = engine.transcribe((samples, RATE), language=language, context=context)
    assert_same_tokens(reference, samples, transcript, language, context)


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_batch_of_files_as_parallel_sequences(decoder, clips, converted, reference) -> None:
    """Chunks of three inputs are decoded four at a time as parallel sequences (one llama.cpp
    context, or one ONNX cache whose slots move down as sequences finish)."""
    names = ["3s", "12s", "8s"]
    settings = {"max_chunk_s": 6.0, "parallel_sequences": 4, "decoder_quant": decoder}
    with exact_engine(converted["hf"], **settings) as engine:
        transcripts = engine.transcribe_many([(clips[name], RATE) for name in names])
    counts = [len(t.chunks) for t in transcripts]
    assert counts[0] == 1
    assert sum(counts) > 4  # more chunks than sequences: batches mix the inputs
    for name, transcript in zip(names, transcripts, strict=True):
        assert_same_tokens(reference, clips[name], transcript, None, "")


def test_both_layouts_give_the_same_tokens(clips, converted) -> None:
    results = []
    for layout in ("original", "hf"):
        with exact_engine(converted[layout]) as engine:
            results.append([c.tokens for c in engine.transcribe((clips["12s"], RATE)).chunks])
    assert results[0] == results[1]


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_transformers_runtime_equals_the_reference(layout, checkpoints, clips, reference) -> None:
    samples = clips["12s"]
    config = ASREngineConfig(
        model=str(checkpoints[("asr", layout)]),
        runtime="transformers",
        vad=False,
        repetition_guard=False,
        max_chunk_s=5.0,
        parallel_sequences=3,
    )
    with QwenASREngine(config) as engine:
        transcript = engine.transcribe((samples, RATE), language="en")
    assert len(transcript.chunks) >= 3
    assert_same_tokens(reference, samples, transcript, "en", "")


@pytest.fixture(scope="module")
def eos_prone(checkpoints, tmp_path_factory, clips) -> dict:
    """A copy of the tiny checkpoint whose free decoding ends early: the output row of
    <|endoftext|> is twice the row of the token it repeats, so end-of-sequence wins wherever
    that token would. (Tiny random weights never choose end-of-sequence by themselves.)"""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("eos-prone") / "asr-hf"
    shutil.copytree(checkpoints[("asr", "hf")], folder)
    processor = AutoProcessor.from_pretrained(folder)
    model = Qwen3ASRForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    repeated = reference_tokens((processor, model), clips["8s"][: 6 * RATE], None, "", 40)
    favourite = max(set(repeated), key=repeated.count)
    weights = load_file(folder / "model.safetensors")
    table = weights["model.language_model.embed_tokens.weight"]  # tied: also the output rows
    table[151643] = table[favourite] * 2
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    model = Qwen3ASRForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    converted_folder = convert(
        folder,
        folder.parent / "converted",
        ConvertOptions(encoder_precisions=("fp32",), decoder_quants=DECODERS),
    ).folder
    return {
        "checkpoint": str(folder),
        "converted": str(converted_folder),
        "reference": (processor, model),
    }


@pytest.mark.parametrize("runtime", ["hybrid", "hybrid-onnx", "transformers"])
def test_a_full_budget_decode_equals_generate_with_min_new_tokens(runtime, clips, eos_prone):
    """Benchmarks decode every chunk's whole budget (end-of-sequence suppressed): the same
    tokens as transformers' generate holding end-of-sequence back with min_new_tokens."""
    samples, reference = clips["12s"], eos_prone["reference"]
    budget = {"decode_full_budget": True, "tokens_per_second": 4.0, "min_new_tokens": 20}
    if runtime.startswith("hybrid"):
        decoder = "fp32" if runtime == "hybrid-onnx" else "f32"
        engine = exact_engine(
            eos_prone["converted"], max_chunk_s=6.0, decoder_quant=decoder, **budget
        )
    else:
        engine = QwenASREngine(
            ASREngineConfig(
                model=eos_prone["checkpoint"],
                runtime="transformers",
                vad=False,
                repetition_guard=False,
                max_chunk_s=6.0,
                **budget,
            )
        )
    with engine:
        transcript = engine.transcribe((samples, RATE))
    assert len(transcript.chunks) >= 2
    for record in transcript.chunks:
        assert record.finish == "length"
        assert len(record.tokens) == record.max_new_tokens
        assert not set(record.tokens) & EOS
    assert_same_tokens(reference, samples, transcript, None, "", full_budget=True)
    # Left free, the same model stops early: the suppression is what made the budget run out.
    for record in transcript.chunks:
        piece = samples[round(record.start * RATE) : round(record.end * RATE)]
        free = reference_tokens(reference, piece, None, "", record.max_new_tokens)
        assert len(free) < record.max_new_tokens
