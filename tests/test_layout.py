"""The mapping between the original release layout and the transformers-native layout."""

from __future__ import annotations

import pytest

from qwenscribe.model.architecture import ARCHITECTURES, model_tensors
from qwenscribe.model.layout import (
    architecture_from_config,
    detect_kind,
    detect_layout,
    hf_config,
    hf_config_from_original,
    hf_name,
    original_config,
    original_name,
)

# Pairs stated by the reference (REFERENCE.md and transformers' own conversion script).
REFERENCE_PAIRS = [
    ("asr", "thinker.audio_tower.proj1.weight", "model.multi_modal_projector.linear_1.weight"),
    ("asr", "thinker.audio_tower.proj2.bias", "model.multi_modal_projector.linear_2.bias"),
    ("asr", "thinker.audio_tower.conv2d1.weight", "model.audio_tower.conv2d1.weight"),
    ("asr", "thinker.audio_tower.layers.3.fc1.weight", "model.audio_tower.layers.3.fc1.weight"),
    (
        "asr",
        "thinker.model.layers.0.self_attn.q_proj.weight",
        "model.language_model.layers.0.self_attn.q_proj.weight",
    ),
    ("asr", "thinker.model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
    ("asr", "thinker.lm_head.weight", "lm_head.weight"),
    ("aligner", "thinker.lm_head.weight", "score.weight"),
    ("aligner", "thinker.model.norm.weight", "model.language_model.norm.weight"),
]


@pytest.mark.parametrize(("kind", "original", "hf"), REFERENCE_PAIRS)
def test_names_map_as_the_reference_states(kind, original, hf):
    assert hf_name(original, kind) == hf
    assert original_name(hf, kind) == original


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_every_tensor_round_trips_and_stays_unique(key):
    arch = ARCHITECTURES[key]
    names = [spec.name for spec in model_tensors(arch)]
    originals = [original_name(name, arch.kind) for name in names]
    assert all(name.startswith("thinker.") for name in originals)
    assert len(set(originals)) == len(originals)
    assert [hf_name(name, arch.kind) for name in originals] == names


def test_names_outside_the_model_are_refused():
    with pytest.raises(KeyError):
        hf_name("talker.layers.0.weight", "asr")
    with pytest.raises(KeyError):
        original_name("visual.patch_embed.weight", "aligner")


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_configs_of_both_layouts_read_back_to_the_same_architecture(key):
    arch = ARCHITECTURES[key]
    for config, layout in ((original_config(arch), "original"), (hf_config(arch), "hf")):
        assert detect_layout(config) == layout
        assert detect_kind(config) == arch.kind
        assert architecture_from_config(config) == arch


def test_original_config_carries_the_released_values():
    config = original_config(ARCHITECTURES[("aligner", "0.6b")])
    thinker = config["thinker_config"]
    assert thinker["classify_num"] == 5000
    assert config["timestamp_token_id"] == 151705
    assert config["timestamp_segment_time"] == 80
    assert thinker["audio_config"]["n_window"] == 50
    assert thinker["audio_config"]["n_window_infer"] == 800
    assert thinker["text_config"]["rope_theta"] == 1e6
    assert thinker["text_config"]["rope_scaling"]["mrope_section"] == [24, 20, 20]


def test_hf_config_flattens_and_keeps_rope_base_and_windows():
    hf = hf_config_from_original(original_config(ARCHITECTURES[("asr", "1.7b")]))
    assert "thinker_config" not in hf
    assert hf["text_config"]["rope_parameters"]["rope_theta"] == 1e6
    assert hf["audio_config"]["n_window_infer"] == 800
    assert hf["audio_config"]["max_position_embeddings"] == 13
    assert hf["audio_token_id"] == 151676
    assert hf["tie_word_embeddings"] is True


def test_a_config_of_another_model_is_refused():
    with pytest.raises(ValueError, match="not a Qwen3-ASR config"):
        detect_layout({"model_type": "whisper", "d_model": 512})


def test_unknown_dimensions_read_as_custom():
    config = hf_config(ARCHITECTURES[("asr", "tiny")])
    config["text_config"]["num_hidden_layers"] = 3
    arch = architecture_from_config(config)
    assert arch.size == "custom"
    assert arch.decoder.layers == 3
