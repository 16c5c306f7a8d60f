"""The architecture tables agree with the published facts about the models (shared/REFERENCE.md)."""

from __future__ import annotations

import pytest

from qwenscribe.model.architecture import (
    ARCHITECTURES,
    architecture,
    encoder_tensors,
    model_tensors,
    parameter_count,
    projector_tensors,
)

# Published unique parameter counts and encoder sizes (REFERENCE.md), in millions.
PUBLISHED_TOTAL = {("asr", "0.6b"): 780, ("asr", "1.7b"): 2040, ("aligner", "0.6b"): 920}
PUBLISHED_ENCODER = {("asr", "0.6b"): 186, ("asr", "1.7b"): 317}


@pytest.mark.parametrize("key", sorted(PUBLISHED_TOTAL))
def test_unique_parameters_match_the_published_size(key):
    millions = parameter_count(ARCHITECTURES[key]) / 1e6
    assert millions == pytest.approx(PUBLISHED_TOTAL[key], rel=0.02)


@pytest.mark.parametrize("key", sorted(PUBLISHED_ENCODER))
def test_encoder_parameters_match_the_published_size(key):
    arch = ARCHITECTURES[key]
    specs = encoder_tensors(arch.encoder) + projector_tensors(arch.encoder)
    assert sum(spec.numel for spec in specs) / 1e6 == pytest.approx(
        PUBLISHED_ENCODER[key], rel=0.02
    )


def test_conv_front_end_flattens_480_channels_by_16_bins():
    # Three stride-2 convolutions take 128 mel bins to 16; 480 * 16 feeds the projection.
    assert architecture("asr", "0.6b").encoder.conv_out_features == 480 * 16


def test_encoder_output_width_is_the_decoder_hidden_size():
    for arch in ARCHITECTURES.values():
        assert arch.encoder.output_dim == arch.decoder.hidden


def test_only_the_aligner_is_untied_and_has_a_5000_class_head():
    for arch in ARCHITECTURES.values():
        head = next(spec for spec in model_tensors(arch) if spec.init == "head")
        if arch.kind == "asr":
            assert arch.decoder.tied_embeddings
            assert (head.name, head.shape) == (
                "lm_head.weight",
                (arch.decoder.vocab, arch.decoder.hidden),
            )
        else:
            assert not arch.decoder.tied_embeddings
            assert (head.name, head.shape) == ("score.weight", (5000, arch.decoder.hidden))


def test_tiny_models_keep_head_dim_apart_from_hidden_over_heads():
    # 0.6B and the aligner have head_dim 128 != 1024 / 16; tiny ones exercise the same trap.
    for kind in ("asr", "aligner"):
        tiny, real = architecture(kind, "tiny").decoder, architecture(kind, "0.6b").decoder
        assert real.head_dim != real.hidden // real.heads
        assert tiny.head_dim != tiny.hidden // tiny.heads


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"asr/0\.6b"):
        architecture("aligner", "1.7b")
