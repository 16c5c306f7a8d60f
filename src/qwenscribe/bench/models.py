"""The model files a benchmark runs on: random-weight checkpoints of the true architecture at a
given size, written once into a work folder, and their hybrid conversions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from qwenscribe.model import architecture as architecture_module
from qwenscribe.model.architecture import Architecture, DecoderDims, EncoderDims
from qwenscribe.testing import write_checkpoint

# A decoder whose matrices all have rows of a multiple of 256 values, so llama.cpp really writes
# k-quants (on the tiny size, hidden 64, it silently falls back to legacy types: q4_k -> q5_0...).
# Seconds to write and convert.
SMALL = Architecture(
    "asr",
    "custom",
    EncoderDims(d_model=256, layers=4, heads=4, ffn=1024, conv_channels=32, output_dim=256),
    DecoderDims(
        hidden=256,
        ffn=768,
        layers=4,
        heads=4,
        kv_heads=2,
        head_dim=128,
        vocab=151936,
        tied_embeddings=True,
    ),
)
CUSTOM_SIZES = {"small": SMALL}
SIZES = ("tiny", "small", "0.6b", "1.7b")


def size_architecture(size: str, kind: str = "asr") -> Architecture:
    if kind == "asr" and size in CUSTOM_SIZES:
        return CUSTOM_SIZES[size]
    return architecture_module.architecture(kind, size)  # type: ignore[arg-type]


def aligner_size(size: str) -> str:
    """The aligner that goes with an ASR size: the real one (0.6B) unless testing tiny."""
    return "tiny" if size in ("tiny", "small") else "0.6b"


def ensure_checkpoint(
    folder: Path, size: str, seed: int = 0, *, kind: str = "asr"
) -> tuple[Path, float]:
    """A random checkpoint of `kind` and `size` in `folder` (reused when there); seconds spent."""
    if (folder / "config.json").is_file():
        return folder, 0.0
    started = time.perf_counter()
    if kind == "asr" and size in CUSTOM_SIZES:
        # write_checkpoint only knows the listed sizes: list this one for the time of the write.
        key = ("asr", "custom")
        saved = architecture_module.ARCHITECTURES.get(key)
        architecture_module.ARCHITECTURES[key] = CUSTOM_SIZES[size]
        try:
            write_checkpoint(folder, size="custom", seed=seed, overwrite=True)
        finally:
            if saved is None:
                del architecture_module.ARCHITECTURES[key]
            else:
                architecture_module.ARCHITECTURES[key] = saved
    else:
        # kind and size are checked strings here, the Literal types write_checkpoint names.
        write_checkpoint(folder, kind, size, seed=seed, overwrite=True)  # type: ignore[arg-type]
    return folder, time.perf_counter() - started


def ensure_converted(
    checkpoint: Path, folder: Path, precisions: Sequence[str], quants: Sequence[str]
) -> tuple[Path, float, bool]:
    """The hybrid files of `checkpoint` (kept when already converted with these options)."""
    from qwenscribe.convert.convert import ConvertOptions, convert

    started = time.perf_counter()
    result = convert(checkpoint, folder, ConvertOptions(tuple(precisions), tuple(quants)))
    return result.folder, time.perf_counter() - started, result.skipped
