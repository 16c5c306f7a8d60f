"""The project's checkpoints are the real architecture: transformers' native Qwen3-ASR classes
load them with no missing or unexpected weights, run them, and tokenize the official prompts.

The original layout is loaded through the project's own config and name mapping
(`qwenscribe.model.layout`); the hf layout through `from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Qwen3ASRConfig,
    Qwen3ASRForConditionalGeneration,
    Qwen3ASRForTokenClassification,
)

from qwenscribe.model.layout import hf_config_from_original, hf_name
from qwenscribe.testing import write_checkpoint

pytestmark = pytest.mark.reference

CLASSES = {"asr": Qwen3ASRForConditionalGeneration, "aligner": Qwen3ASRForTokenClassification}

# Ids from REFERENCE.md, typed here independently of the code under test.
IM_START, IM_END, AUDIO_START, AUDIO_END, AUDIO_PAD = 151644, 151645, 151669, 151670, 151676
ASR_TEXT, TIMESTAMP = 151704, 151705


def audio_tokens(mel_frames: int) -> int:
    """Tokens per audio for L mel frames (REFERENCE.md)."""

    def tail(rest: int) -> int:
        return 0 if rest == 0 else ((((rest - 1) // 2 + 1) - 1) // 2 + 1 - 1) // 2 + 1

    return 13 * (mel_frames // 100) + tail(mel_frames % 100)


def load_hf(folder: Path, kind: str):
    model, info = CLASSES[kind].from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )
    return model.eval(), info


def load_original(folder: Path, kind: str):
    """Through the project's mapping: config flattened, every tensor renamed, strict load."""
    config = Qwen3ASRConfig(
        **hf_config_from_original(json.loads((folder / "config.json").read_text()))
    )
    model = CLASSES[kind](config).to(torch.float32)
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update({hf_name(key, kind): value.float() for key, value in load_file(path).items()})
    result = model.load_state_dict(state, strict=True)
    return model.eval(), result


@pytest.mark.parametrize("kind", ["asr", "aligner"])
def test_hf_layout_loads_with_no_missing_or_unexpected_weights(checkpoints, kind):
    _, info = load_hf(checkpoints[(kind, "hf")], kind)
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]


@pytest.mark.parametrize("kind", ["asr", "aligner"])
def test_original_layout_loads_through_the_project_mapping(checkpoints, kind):
    model, result = load_original(checkpoints[(kind, "original")], kind)
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    text = model.config.text_config
    assert text.rope_parameters["rope_theta"] == 1e6
    assert text.head_dim == 32
    assert model.config.audio_config.n_window_infer == 800


@pytest.mark.parametrize("kind", ["asr", "aligner"])
def test_both_layouts_are_the_same_model(checkpoints, kind, en_speech):
    """Same seed, both layouts: identical outputs, so every tensor reached its place."""
    hf_model, _ = load_hf(checkpoints[(kind, "hf")], kind)
    original_model, _ = load_original(checkpoints[(kind, "original")], kind)
    processor = AutoProcessor.from_pretrained(checkpoints[(kind, "hf")])
    if kind == "asr":
        inputs = processor.apply_transcription_request(audio=en_speech[: 16000 * 3])
    else:
        inputs, _ = processor.prepare_forced_aligner_inputs(
            audio=en_speech[: 16000 * 3], transcript="the quick brown fox", language="English"
        )
    with torch.no_grad():
        first = hf_model(**inputs).logits
        second = original_model(**inputs).logits
    assert torch.equal(first, second)
    assert torch.isfinite(first).all()


def test_asr_forward_and_generate(checkpoints, en_speech):
    model, _ = load_hf(checkpoints[("asr", "hf")], "asr")
    processor = AutoProcessor.from_pretrained(checkpoints[("asr", "hf")])
    inputs = processor.apply_transcription_request(audio=en_speech, language="English")
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert logits.shape == (1, inputs["input_ids"].shape[1], 151936)
    new_tokens = generated[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new_tokens) <= 6
    assert int(new_tokens.max()) < 151936
    # Greedy generation is deterministic.
    again = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, again)


def test_aligner_scores_5000_timestamp_classes(checkpoints, en_speech):
    model, _ = load_hf(checkpoints[("aligner", "hf")], "aligner")
    processor = AutoProcessor.from_pretrained(checkpoints[("aligner", "hf")])
    inputs, (words,) = processor.prepare_forced_aligner_inputs(
        audio=en_speech, transcript="The quick brown fox jumps", language="English"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == 5000
    slots = inputs["input_ids"][0] == TIMESTAMP
    assert int(slots.sum()) == 2 * len(words) == 10
    stamps = processor.decode_forced_alignment(logits, inputs["input_ids"], [words], TIMESTAMP)[0]
    assert [item["text"] for item in stamps] == words
    assert all(0 <= item["start_time"] <= item["end_time"] <= 400 for item in stamps)


@pytest.mark.parametrize("language", [None, "English"])
def test_processor_builds_the_official_asr_prompt(checkpoints, en_speech, language):
    processor = AutoProcessor.from_pretrained(checkpoints[("asr", "hf")])
    tokenizer = processor.tokenizer
    context = "Qwen, qwenscribe"
    inputs = processor.apply_transcription_request(
        audio=en_speech, language=language, prompt=context
    )
    ids = inputs["input_ids"][0].tolist()
    frames = int(inputs["input_features_mask"].sum())
    assert frames == len(en_speech) // 160  # ~100 mel frames per second

    def text(value: str) -> list[int]:
        return tokenizer.encode(value, add_special_tokens=False)

    expected = (
        [IM_START]
        + text("system\n" + context)
        + [IM_END]
        + text("\n")
        + [IM_START]
        + text("user\n")
        + [AUDIO_START]
        + [AUDIO_PAD] * audio_tokens(frames)
        + [AUDIO_END, IM_END]
        + text("\n")
        + [IM_START]
        + text("assistant\n")
    )
    if language:
        expected += [*text(f"language {language}"), ASR_TEXT]
    assert ids == expected


def test_system_turn_is_present_without_context(checkpoints, en_speech):
    processor = AutoProcessor.from_pretrained(checkpoints[("asr", "hf")])
    prompt = processor.apply_transcription_request(audio=en_speech, tokenize=False)[0]
    assert prompt == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n"
        "<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_processor_builds_the_aligner_input(checkpoints, en_speech):
    processor = AutoProcessor.from_pretrained(checkpoints[("aligner", "hf")])
    inputs, (words,) = processor.prepare_forced_aligner_inputs(
        audio=en_speech, transcript="Hello, world! 你好。", language="Chinese"
    )
    assert words == ["Hello", "world", "你", "好"]
    frames = int(inputs["input_features_mask"].sum())
    expected = [AUDIO_START] + [AUDIO_PAD] * audio_tokens(frames) + [AUDIO_END]
    for word in words:
        expected += processor.tokenizer.encode(word, add_special_tokens=False)
        expected += [TIMESTAMP, TIMESTAMP]
    assert inputs["input_ids"][0].tolist() == expected


@pytest.mark.parametrize(
    "text",
    [
        "<|im_start|>system\nhot words<|im_end|>\nlanguage English<asr_text>It's 2026!",
        "今天天气很好。 language Chinese<asr_text>我们去公园散步吧",
        "<|audio_start|><|audio_pad|><|audio_pad|><|audio_end|>word<timestamp><timestamp>",
    ],
)
def test_original_and_hf_tokenizers_agree(checkpoints, text):
    original = AutoTokenizer.from_pretrained(checkpoints[("asr", "original")])
    hf = AutoTokenizer.from_pretrained(checkpoints[("asr", "hf")])
    assert original(text)["input_ids"] == hf(text)["input_ids"]
    assert original.decode(original(text)["input_ids"]) == text


def test_sharded_hf_checkpoint_loads(tmp_path):
    folder = write_checkpoint(
        tmp_path / "sharded", kind="asr", layout="hf", max_shard_bytes=4 * 1024 * 1024
    )
    assert (folder / "model.safetensors.index.json").exists()
    _, info = load_hf(folder, "asr")
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]


def test_audio_token_count_matches_the_encoder_output(checkpoints):
    """The formula the prompt relies on equals what the encoder really produces."""
    model, _ = load_hf(checkpoints[("asr", "hf")], "asr")
    for frames in (1, 99, 100, 101, 250, 813):
        padded = -(-frames // 100) * 100
        features = torch.zeros(1, 128, padded)
        mask = torch.zeros(1, padded, dtype=torch.long)
        mask[0, :frames] = 1
        with torch.no_grad():
            out = model.model.get_audio_features(features, mask, return_dict=True).pooler_output
        assert out.shape[0] == audio_tokens(frames), frames
    assert np.isfinite(out.numpy()).all()


def test_long_audio_is_not_cut_at_30_seconds(checkpoints, long_speech):
    """Unlike Whisper, Qwen3-ASR's features cover the whole input (REFERENCE.md)."""
    processor = AutoProcessor.from_pretrained(checkpoints[("asr", "hf")])
    assert len(long_speech) > 60 * 16000
    inputs = processor.apply_transcription_request(audio=long_speech)
    frames = int(inputs["input_features_mask"].sum())
    assert frames == len(long_speech) // 160
    assert inputs["input_features"].shape[-1] % 100 == 0  # padded to whole 1-s chunks
    assert inputs["input_ids"][0].tolist().count(AUDIO_PAD) == audio_tokens(frames)
