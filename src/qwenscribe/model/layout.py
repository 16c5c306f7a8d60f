"""The two on-disk layouts users download, and the mapping between them.

- "original": the Qwen release (`Qwen/Qwen3-ASR-0.6B`, ...). `config.json` nests the encoder and
  decoder settings in `thinker_config`; weights are named `thinker.audio_tower.*`,
  `thinker.model.*`, `thinker.lm_head.*`.
- "hf": the transformers-native conversion (`...-hf` repos). A flat config with `audio_config`
  and `text_config`; weights named `model.audio_tower.*`, `model.multi_modal_projector.*`,
  `model.language_model.*`, and `lm_head.*` (ASR) or `score.*` (aligner).

Everything downstream (the converter, the reference tests) works in the hf naming; this module
is the one place that knows the original one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from qwenscribe.model import tokens
from qwenscribe.model.architecture import (
    ARCHITECTURES,
    MROPE_SECTION,
    N_WINDOW,
    N_WINDOW_INFER,
    RMS_NORM_EPS,
    ROPE_THETA,
    TIMESTAMP_CLASSES,
    TIMESTAMP_SEGMENT_MS,
    TOKENS_PER_CHUNK,
    Architecture,
    DecoderDims,
    EncoderDims,
    Kind,
)

Layout = Literal["original", "hf"]

# Original prefix -> hf prefix, applied in order (the most specific first).
_PREFIXES_ASR = (
    ("thinker.audio_tower.proj1.", "model.multi_modal_projector.linear_1."),
    ("thinker.audio_tower.proj2.", "model.multi_modal_projector.linear_2."),
    ("thinker.audio_tower.", "model.audio_tower."),
    ("thinker.model.", "model.language_model."),
    ("thinker.lm_head.", "lm_head."),
)
_PREFIXES_ALIGNER = (*_PREFIXES_ASR[:-1], ("thinker.lm_head.", "score."))


def _prefixes(kind: Kind) -> tuple[tuple[str, str], ...]:
    return _PREFIXES_ASR if kind == "asr" else _PREFIXES_ALIGNER


def hf_name(original_name: str, kind: Kind) -> str:
    """The hf-layout name of an original-layout tensor; KeyError for a name outside the model."""
    for old, new in _prefixes(kind):
        if original_name.startswith(old):
            return new + original_name[len(old) :]
    raise KeyError(f"{original_name!r} is not a tensor of a Qwen3-ASR {kind} checkpoint")


def original_name(hf_tensor_name: str, kind: Kind) -> str:
    """The original-layout name of an hf-layout tensor (the inverse of `hf_name`)."""
    for old, new in _prefixes(kind):
        if hf_tensor_name.startswith(new):
            return old + hf_tensor_name[len(new) :]
    raise KeyError(f"{hf_tensor_name!r} is not a tensor of a Qwen3-ASR {kind} checkpoint")


def hf_key_mapping(kind: Kind) -> dict[str, str]:
    """Original -> hf renames as the regular expressions of transformers' `key_mapping`."""
    return {"^" + re.escape(old): new for old, new in _prefixes(kind)}


def detect_layout(config: dict[str, Any]) -> Layout:
    """Which layout a `config.json` belongs to."""
    if "thinker_config" in config:
        return "original"
    if "audio_config" in config and "text_config" in config:
        return "hf"
    raise ValueError(
        "config.json is not a Qwen3-ASR config: it has neither `thinker_config` "
        "(original release) nor `audio_config` + `text_config` (transformers layout)"
    )


def detect_kind(config: dict[str, Any]) -> Kind:
    """ASR model or forced aligner, from a config of either layout."""
    if detect_layout(config) == "original":
        thinker = config["thinker_config"]
        is_aligner = (
            "classify_num" in thinker or thinker.get("model_type") == "qwen3_forced_aligner"
        )
    else:
        architectures = config.get("architectures") or []
        is_aligner = (
            "Qwen3ASRForTokenClassification" in architectures
            or (config.get("num_labels") or len(config.get("id2label") or {}) or 0)
            == TIMESTAMP_CLASSES
        )
    return "aligner" if is_aligner else "asr"


def read_config(folder: str | Path) -> dict[str, Any]:
    with open(Path(folder) / "config.json", encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------
# Configs of each layout, written from an Architecture.


def _audio_config(enc: EncoderDims) -> dict[str, Any]:
    return {
        "num_mel_bins": enc.mel_bins,
        "encoder_layers": enc.layers,
        "encoder_attention_heads": enc.heads,
        "encoder_ffn_dim": enc.ffn,
        "d_model": enc.d_model,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_function": "gelu",
        "activation_dropout": 0.0,
        "scale_embedding": False,
        "initializer_range": 0.02,
        "n_window": N_WINDOW,
        "output_dim": enc.output_dim,
        "n_window_infer": N_WINDOW_INFER,
        "downsample_hidden_size": enc.conv_channels,
    }


def _text_config(dec: DecoderDims) -> dict[str, Any]:
    return {
        "vocab_size": dec.vocab,
        "hidden_size": dec.hidden,
        "intermediate_size": dec.ffn,
        "num_hidden_layers": dec.layers,
        "num_attention_heads": dec.heads,
        "num_key_value_heads": dec.kv_heads,
        "head_dim": dec.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": dec.max_positions,
        "initializer_range": 0.02,
        "rms_norm_eps": RMS_NORM_EPS,
        "use_cache": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": dec.tied_embeddings,
    }


def original_config(arch: Architecture) -> dict[str, Any]:
    """`config.json` as the original Qwen release writes it."""
    audio = {
        "model_type": "qwen3_asr_audio_encoder",
        **_audio_config(arch.encoder),
        "max_source_positions": 1500,
        "conv_chunksize": 500,
    }
    text = {
        "model_type": "qwen3_asr_text",
        **_text_config(arch.decoder),
        "rope_theta": ROPE_THETA,
        "rope_scaling": {
            "interleaved": True,
            "mrope_interleaved": True,
            "mrope_section": list(MROPE_SECTION),
            "rope_type": "default",
            "type": "default",
        },
    }
    thinker: dict[str, Any] = {
        "model_type": "qwen3_asr_thinker" if arch.kind == "asr" else "qwen3_forced_aligner",
        "audio_config": audio,
        "text_config": text,
        "audio_token_id": tokens.AUDIO_PAD_ID,
        "audio_start_token_id": tokens.AUDIO_START_ID,
        "audio_end_token_id": tokens.AUDIO_END_ID,
        "initializer_range": 0.02,
        "dtype": "bfloat16",
    }
    config: dict[str, Any] = {
        "architectures": [
            "Qwen3ASRForConditionalGeneration"
            if arch.kind == "asr"
            else "Qwen3ForcedAlignerForConditionalGeneration"
        ],
        "model_type": "qwen3_asr",
        "thinker_config": thinker,
        "dtype": "bfloat16",
        "transformers_version": "4.57.6",
    }
    if arch.kind == "asr":
        config["support_languages"] = list(tokens.LANGUAGES.values())
    else:
        thinker["classify_num"] = TIMESTAMP_CLASSES
        config["timestamp_token_id"] = tokens.TIMESTAMP_ID
        config["timestamp_segment_time"] = TIMESTAMP_SEGMENT_MS
    return config


def hf_config_from_original(original: dict[str, Any]) -> dict[str, Any]:
    """The transformers-native config equivalent to an original-release config.

    The project's own mapping (used to load original checkpoints into transformers' native
    classes, and by the converter to read either layout the same way).
    """
    if detect_layout(original) != "original":
        raise ValueError("expected an original-release config with `thinker_config`")
    kind = detect_kind(original)
    thinker = original["thinker_config"]
    audio = {
        key: value
        for key, value in thinker["audio_config"].items()
        if key not in ("model_type", "max_source_positions", "conv_chunksize")
    }
    audio["model_type"] = "qwen3_asr_encoder"
    # Every 1-s chunk restarts its positions at 0, so 13 positions are all there is.
    audio["max_position_embeddings"] = TOKENS_PER_CHUNK
    text = {
        key: value
        for key, value in thinker["text_config"].items()
        if key not in ("model_type", "rope_theta", "rope_scaling")
    }
    text["model_type"] = "qwen3"
    # The M-RoPE sections collapse to plain 1-D RoPE for audio + text: only the base matters.
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": float(thinker["text_config"].get("rope_theta", ROPE_THETA)),
    }
    tied = bool(text.get("tie_word_embeddings", kind == "asr"))
    config: dict[str, Any] = {
        "architectures": [
            "Qwen3ASRForConditionalGeneration"
            if kind == "asr"
            else "Qwen3ASRForTokenClassification"
        ],
        "model_type": "qwen3_asr",
        "audio_config": audio,
        "text_config": text,
        "audio_token_id": thinker.get("audio_token_id", tokens.AUDIO_PAD_ID),
        "pad_token_id": tokens.IM_END_ID,
        "eos_token_id": [tokens.ENDOFTEXT_ID, tokens.IM_END_ID],
        "initializer_range": thinker.get("initializer_range", 0.02),
        "tie_word_embeddings": tied,
        "dtype": "bfloat16",
    }
    if kind == "aligner":
        classes = int(thinker.get("classify_num", TIMESTAMP_CLASSES))
        config["timestamp_token_id"] = original.get("timestamp_token_id", tokens.TIMESTAMP_ID)
        config["id2label"] = {str(index): f"LABEL_{index}" for index in range(classes)}
        config["label2id"] = {f"LABEL_{index}": index for index in range(classes)}
    return config


def hf_config(arch: Architecture) -> dict[str, Any]:
    """`config.json` as the transformers-native (`-hf`) repos hold it."""
    config = hf_config_from_original(original_config(arch))
    config["transformers_version"] = "5.13.0"
    return config


def architecture_from_config(config: dict[str, Any]) -> Architecture:
    """Read the dimensions back from a config of either layout.

    The size is that of the known model with the same dimensions, else "custom".
    """
    kind = detect_kind(config)
    if detect_layout(config) == "original":
        config = hf_config_from_original(config)
    audio, text = config["audio_config"], config["text_config"]
    heads = audio.get("encoder_attention_heads", audio.get("num_attention_heads"))
    encoder = EncoderDims(
        d_model=audio["d_model"],
        layers=audio["encoder_layers"],
        heads=heads,
        ffn=audio["encoder_ffn_dim"],
        conv_channels=audio["downsample_hidden_size"],
        output_dim=audio["output_dim"],
        mel_bins=audio.get("num_mel_bins", 128),
    )
    decoder = DecoderDims(
        hidden=text["hidden_size"],
        ffn=text["intermediate_size"],
        layers=text["num_hidden_layers"],
        heads=text["num_attention_heads"],
        kv_heads=text["num_key_value_heads"],
        head_dim=text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"],
        vocab=text["vocab_size"],
        tied_embeddings=bool(config.get("tie_word_embeddings")),
        max_positions=text.get("max_position_embeddings", 65536),
    )
    for known in ARCHITECTURES.values():
        if known.kind == kind and known.encoder == encoder and known.decoder == decoder:
            return known
    return Architecture(kind, "custom", encoder, decoder)
