"""The work each stage does, from the architecture: multiply-adds of the encoder and of the
decoder's prefill, and the bytes a generation step must read. The benchmark divides measured
times into these to compare against the machine's limits."""

from __future__ import annotations

from qwenscribe.model.architecture import (
    Architecture,
    audio_token_count,
    decoder_tensors,
    encoder_tensors,
    head_tensor,
    projector_tensors,
)

FRAMES_PER_SECOND = 100
CHUNK_FRAMES = 100  # the encoder's front end runs on 1-s chunks of mel


def _matrix_params(specs, inside: str) -> int:
    return sum(
        s.numel for s in specs if s.init == "matrix" and inside in s.name and len(s.shape) == 2
    )


def encoder_flops(arch: Architecture, audio_s: float) -> float:
    """FLOPs (2 per multiply-add) of the audio encoder and projector on `audio_s` of audio."""
    enc = arch.encoder
    chunks = audio_s * FRAMES_PER_SECOND / CHUNK_FRAMES
    # Three 3x3 stride-2 convolutions per 1-s chunk: 128 bins x 100 frames -> 64x50 -> 32x25
    # -> 16x13.
    c = enc.conv_channels
    conv_macs = 9 * c * (64 * 50) + 9 * c * c * (32 * 25) + 9 * c * c * (16 * 13)
    tokens = audio_token_count(round(audio_s * FRAMES_PER_SECOND))
    linear = _matrix_params(encoder_tensors(enc), "layers.") + _matrix_params(
        encoder_tensors(enc), "conv_out"
    )
    linear += _matrix_params(projector_tensors(enc), "linear_")
    return 2.0 * (conv_macs * chunks + linear * tokens)


def decoder_matrix_params(arch: Architecture) -> int:
    """Parameters of the decoder's layer matrices (what every prompt position multiplies)."""
    return _matrix_params(decoder_tensors(arch.decoder), "layers.")


def prefill_flops(arch: Architecture, tokens: int) -> float:
    return 2.0 * decoder_matrix_params(arch) * tokens


def generation_step_params(arch: Architecture) -> int:
    """Parameters one generation step reads: the layer matrices and the output head."""
    return decoder_matrix_params(arch) + head_tensor(arch).numel
