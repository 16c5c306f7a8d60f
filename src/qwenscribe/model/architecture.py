"""The dimensions of Qwen3-ASR and Qwen3-ForcedAligner, and the tensors a checkpoint holds.

One `Architecture` describes one model: its audio encoder, its Qwen3 text decoder, and its head
(the tied vocabulary head for ASR, the 5000-class timestamp head for the aligner). The real
released sizes are listed here, together with a tiny size of the same shape for tests.
Tensor names are given in the transformers-native ("hf") layout; `layout.py` maps them to the
original release layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["asr", "aligner"]
Size = Literal["tiny", "0.6b", "1.7b", "custom"]  # "custom": read from a config, not known

MEL_BINS = 128
N_WINDOW = 50  # a conv chunk is 2 * N_WINDOW = 100 mel frames (1 s)
N_WINDOW_INFER = 800  # the encoder attends inside 8-s windows
TOKENS_PER_CHUNK = 13  # a full 100-frame chunk becomes 13 audio tokens
TIMESTAMP_CLASSES = 5000
TIMESTAMP_SEGMENT_MS = 80
ROPE_THETA = 1_000_000.0
RMS_NORM_EPS = 1e-6
MROPE_SECTION = (24, 20, 20)


@dataclass(frozen=True)
class EncoderDims:
    d_model: int
    layers: int
    heads: int
    ffn: int
    conv_channels: int  # `downsample_hidden_size`
    output_dim: int  # equals the decoder's hidden size
    mel_bins: int = MEL_BINS

    @property
    def conv_out_features(self) -> int:
        """Channels x frequency bins after three stride-2 convolutions (128 bins -> 16)."""
        freq = self.mel_bins
        for _ in range(3):
            freq = (freq + 1) // 2
        return self.conv_channels * freq


@dataclass(frozen=True)
class DecoderDims:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    max_positions: int = 65536


@dataclass(frozen=True)
class Architecture:
    kind: Kind
    size: Size
    encoder: EncoderDims
    decoder: DecoderDims

    @property
    def head_outputs(self) -> int:
        """Output head width: the vocabulary (ASR) or the timestamp classes (aligner)."""
        return self.decoder.vocab if self.kind == "asr" else TIMESTAMP_CLASSES

    def to_dict(self) -> dict:
        return asdict(self)


_TINY_ENCODER = EncoderDims(d_model=64, layers=2, heads=4, ffn=128, conv_channels=16, output_dim=64)
# head_dim (32) differs from hidden / heads (16), as in the real models (1024 / 16 = 64 != 128):
# a converter that derives one from the other fails on the tiny checkpoints too.
_TINY_DECODER = dict(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, head_dim=32)

# The released sizes (REFERENCE.md). All decoders: 28 layers, 16 heads, 8 kv heads, head_dim 128.
_ENCODER_896 = EncoderDims(
    d_model=896, layers=18, heads=14, ffn=3584, conv_channels=480, output_dim=1024
)
_ENCODER_1024_TO_2048 = EncoderDims(
    d_model=1024, layers=24, heads=16, ffn=4096, conv_channels=480, output_dim=2048
)
_ENCODER_1024_TO_1024 = EncoderDims(
    d_model=1024, layers=24, heads=16, ffn=4096, conv_channels=480, output_dim=1024
)
_DECODER_1024 = dict(hidden=1024, ffn=3072, layers=28, heads=16, kv_heads=8, head_dim=128)
_DECODER_2048 = dict(hidden=2048, ffn=6144, layers=28, heads=16, kv_heads=8, head_dim=128)

ARCHITECTURES: dict[tuple[Kind, Size], Architecture] = {
    ("asr", "tiny"): Architecture(
        "asr",
        "tiny",
        _TINY_ENCODER,
        DecoderDims(**_TINY_DECODER, vocab=151936, tied_embeddings=True),
    ),
    ("aligner", "tiny"): Architecture(
        "aligner",
        "tiny",
        _TINY_ENCODER,
        DecoderDims(**_TINY_DECODER, vocab=152064, tied_embeddings=False),
    ),
    ("asr", "0.6b"): Architecture(
        "asr",
        "0.6b",
        _ENCODER_896,
        DecoderDims(**_DECODER_1024, vocab=151936, tied_embeddings=True),
    ),
    ("asr", "1.7b"): Architecture(
        "asr",
        "1.7b",
        _ENCODER_1024_TO_2048,
        DecoderDims(**_DECODER_2048, vocab=151936, tied_embeddings=True),
    ),
    # The aligner pairs the 1.7B model's encoder width with the 0.6B model's decoder.
    ("aligner", "0.6b"): Architecture(
        "aligner",
        "0.6b",
        _ENCODER_1024_TO_1024,
        DecoderDims(**_DECODER_1024, vocab=152064, tied_embeddings=False),
    ),
}


def architecture(kind: Kind, size: Size) -> Architecture:
    """The architecture of a known model; ValueError names the valid choices otherwise."""
    try:
        return ARCHITECTURES[(kind, size)]
    except KeyError:
        valid = ", ".join(f"{k}/{s}" for k, s in ARCHITECTURES)
        raise ValueError(f"No {kind} model of size {size!r}; known models: {valid}.") from None


@dataclass(frozen=True)
class TensorSpec:
    """One weight tensor: its hf-layout name, shape, and how a random checkpoint fills it."""

    name: str
    shape: tuple[int, ...]
    init: Literal["matrix", "embedding", "head", "norm", "bias"]

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def _linear(name: str, out_features: int, in_features: int, bias: bool) -> list[TensorSpec]:
    specs = [TensorSpec(f"{name}.weight", (out_features, in_features), "matrix")]
    if bias:
        specs.append(TensorSpec(f"{name}.bias", (out_features,), "bias"))
    return specs


def _layer_norm(name: str, width: int) -> list[TensorSpec]:
    return [
        TensorSpec(f"{name}.weight", (width,), "norm"),
        TensorSpec(f"{name}.bias", (width,), "bias"),
    ]


def encoder_tensors(enc: EncoderDims, prefix: str = "model.audio_tower.") -> list[TensorSpec]:
    """The audio encoder: three convolutions, conv_out, the transformer layers, ln_post."""
    specs: list[TensorSpec] = []
    in_channels = 1
    for index in (1, 2, 3):
        specs.append(
            TensorSpec(
                f"{prefix}conv2d{index}.weight", (enc.conv_channels, in_channels, 3, 3), "matrix"
            )
        )
        specs.append(TensorSpec(f"{prefix}conv2d{index}.bias", (enc.conv_channels,), "bias"))
        in_channels = enc.conv_channels
    specs += _linear(f"{prefix}conv_out", enc.d_model, enc.conv_out_features, bias=False)
    for layer in range(enc.layers):
        base = f"{prefix}layers.{layer}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            specs += _linear(f"{base}self_attn.{proj}", enc.d_model, enc.d_model, bias=True)
        specs += _layer_norm(f"{base}self_attn_layer_norm", enc.d_model)
        specs += _linear(f"{base}fc1", enc.ffn, enc.d_model, bias=True)
        specs += _linear(f"{base}fc2", enc.d_model, enc.ffn, bias=True)
        specs += _layer_norm(f"{base}final_layer_norm", enc.d_model)
    specs += _layer_norm(f"{prefix}ln_post", enc.d_model)
    return specs


def projector_tensors(
    enc: EncoderDims, prefix: str = "model.multi_modal_projector."
) -> list[TensorSpec]:
    return _linear(f"{prefix}linear_1", enc.d_model, enc.d_model, bias=True) + _linear(
        f"{prefix}linear_2", enc.output_dim, enc.d_model, bias=True
    )


def decoder_tensors(dec: DecoderDims, prefix: str = "model.language_model.") -> list[TensorSpec]:
    """The Qwen3 decoder: embeddings, layers with per-head q/k RMSNorm, final norm."""
    specs = [TensorSpec(f"{prefix}embed_tokens.weight", (dec.vocab, dec.hidden), "embedding")]
    q_width = dec.heads * dec.head_dim
    kv_width = dec.kv_heads * dec.head_dim
    for layer in range(dec.layers):
        base = f"{prefix}layers.{layer}."
        specs.append(TensorSpec(f"{base}input_layernorm.weight", (dec.hidden,), "norm"))
        specs += _linear(f"{base}self_attn.q_proj", q_width, dec.hidden, bias=False)
        specs += _linear(f"{base}self_attn.k_proj", kv_width, dec.hidden, bias=False)
        specs += _linear(f"{base}self_attn.v_proj", kv_width, dec.hidden, bias=False)
        specs += _linear(f"{base}self_attn.o_proj", dec.hidden, q_width, bias=False)
        specs.append(TensorSpec(f"{base}self_attn.q_norm.weight", (dec.head_dim,), "norm"))
        specs.append(TensorSpec(f"{base}self_attn.k_norm.weight", (dec.head_dim,), "norm"))
        specs.append(TensorSpec(f"{base}post_attention_layernorm.weight", (dec.hidden,), "norm"))
        specs += _linear(f"{base}mlp.gate_proj", dec.ffn, dec.hidden, bias=False)
        specs += _linear(f"{base}mlp.up_proj", dec.ffn, dec.hidden, bias=False)
        specs += _linear(f"{base}mlp.down_proj", dec.hidden, dec.ffn, bias=False)
    specs.append(TensorSpec(f"{prefix}norm.weight", (dec.hidden,), "norm"))
    return specs


def head_tensor(arch: Architecture) -> TensorSpec:
    """The output head as the hf layout names it (`lm_head` for ASR, `score` for the aligner)."""
    name = "lm_head.weight" if arch.kind == "asr" else "score.weight"
    return TensorSpec(name, (arch.head_outputs, arch.decoder.hidden), "head")


def model_tensors(arch: Architecture) -> list[TensorSpec]:
    """Every tensor of the model in the hf layout, head included (tied or not)."""
    return (
        encoder_tensors(arch.encoder)
        + projector_tensors(arch.encoder)
        + decoder_tensors(arch.decoder)
        + [head_tensor(arch)]
    )


def parameter_count(arch: Architecture) -> int:
    """Unique parameters: a tied head shares the embedding and is not counted twice."""
    total = sum(spec.numel for spec in model_tensors(arch))
    if arch.decoder.tied_embeddings:
        total -= head_tensor(arch).numel
    return total


def _after_convolutions(frames: int) -> int:
    """Positions left from `frames` mel frames after the three stride-2 convolutions."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1
    return frames


def audio_token_count(mel_frames: int) -> int:
    """Audio tokens for `mel_frames` frames: 13 per whole 1-s chunk plus the partial chunk's."""
    whole, remainder = divmod(mel_frames, 2 * N_WINDOW)
    return TOKENS_PER_CHUNK * whole + (_after_convolutions(remainder) if remainder else 0)
