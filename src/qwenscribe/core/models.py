"""Find the model files a runtime needs, converting a checkpoint once when the hybrid runtime
asks for it, and check them before any work starts.

`model` may be a short name, a hub id, a checkpoint folder (either layout) or a folder written by
`qwenscribe convert`. The hybrid runtime needs the converted files for the requested encoder
precision and decoder (or aligner) quantization; they are made once and kept under the cache
(`QWENSCRIBE_HOME/models`). The transformers runtime needs the checkpoint itself. The same rules
serve the recognizer (kind "asr") and the forced aligner (kind "aligner").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenscribe.convert.convert import (
    ConvertOptions,
    convert,
    damaged_files,
    read_manifest,
    source_fingerprint,
)
from qwenscribe.convert.gguf_decoder import TOKEN_EMBEDDINGS_FILE
from qwenscribe.convert.onnx_aligner import aligner_scorer_filename
from qwenscribe.convert.onnx_decoder import DECODER_QUANTS, recognizer_decoder_files
from qwenscribe.convert.onnx_encoder import encoder_files
from qwenscribe.convert.onnx_graph import PRECISIONS
from qwenscribe.errors import ModelError
from qwenscribe.model.architecture import Kind
from qwenscribe.model.resolve import ResolvedModel, resolve_model
from qwenscribe.paths import converted_models_dir
from qwenscribe.runtimes.devices import device_kind

log = logging.getLogger(__name__)

_WHAT = {"asr": "a speech recognizer", "aligner": "a forced aligner"}
_PASS = {
    "asr": "Pass a Qwen3-ASR model (0.6b, 1.7b or its folder).",
    "aligner": "Pass a Qwen3-ForcedAligner model (aligner, Qwen/Qwen3-ForcedAligner-0.6B or its "
    "folder).",
}


@dataclass(frozen=True)
class ModelFiles:
    folder: Path  # where the runtime reads its files
    source: str  # what the user named
    manifest: dict[str, Any] | None  # for converted folders


def default_decoder_quant(device: str) -> str:
    """A decoder's file by default (the recognizer's and the aligner's): int8 ONNX on a CPU,
    where ONNX Runtime's 8-bit blocks prefill faster than llama.cpp's q8_0 and step several
    sequences for little more than one (60 s on the 0.6B, benchmark: recognizer prefill 3.5
    against 4.4-4.8 s, generation 3.9-4.1 against 7.2-7.4 s; alignment 8.3-9.6 against
    10.4-12.0 s), for ~1.5 s more loading per decoder (pre-packing its weights) once per
    process; q8_0 GGUF on a GPU, where llama.cpp offloads every layer (the recognizer's ONNX
    decoder runs on the CPU)."""
    return "int8" if device_kind(device) == "cpu" else "q8_0"


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ModelError(f"Unknown {what} {value!r}.", f"Use one of: {', '.join(choices)}.")


def _wrong_kind(model: str | Path, found: str | None, kind: Kind) -> ModelError:
    other = _WHAT.get(found or "", f"a {found} model")
    return ModelError(f"{model} is {other}, not {_WHAT[kind]}.", _PASS[kind])


def hybrid_files(kind: Kind, precision: str, quant: str) -> list[str]:
    """The files the hybrid runtime opens for a model of `kind`."""
    encoder = encoder_files(precision)
    if kind == "asr":
        if quant in PRECISIONS:  # an ONNX decoder is fed embeddings looked up in the table
            return [*encoder, *recognizer_decoder_files(quant), TOKEN_EMBEDDINGS_FILE]
        return [*encoder, *recognizer_decoder_files(quant)]
    return [*encoder, aligner_scorer_filename(quant), TOKEN_EMBEDDINGS_FILE]


def check_converted(
    folder: Path, manifest: dict[str, Any], precision: str, quant: str, kind: Kind = "asr"
) -> None:
    """Every file the hybrid runtime will open is listed in the manifest and has its size."""
    if manifest.get("kind") != kind:
        raise _wrong_kind(folder, manifest.get("kind"), kind)
    listed = manifest.get("files", {})
    for name in hybrid_files(kind, precision, quant):
        if name not in listed:
            options = manifest.get("options", {})
            raise ModelError(
                f"{folder} was converted without {name} (it has encoder precisions "
                f"{options.get('encoder_precisions')} and quantizations "
                f"{options.get('decoder_quants')}).",
                "Choose one of those, or convert again with the one you want.",
            )
    damaged = damaged_files(folder, manifest)
    if damaged:
        raise ModelError(
            f"The model file {folder / damaged[0]} is missing or has the wrong size (damaged or "
            "incomplete copy).",
            "Convert the model again.",
        )


def _cache_folder(resolved: ResolvedModel, precision: str, quant: str) -> Path:
    name = re.sub(r"[^\w.-]+", "_", Path(resolved.source).name or resolved.source)
    fingerprint = source_fingerprint(resolved.path)[:12]
    return converted_models_dir() / f"{name}-{fingerprint}-{precision}-{quant}"


def hybrid_model_files(model: str, precision: str, quant: str, kind: Kind = "asr") -> ModelFiles:
    """The converted folder for `model`, converting (once) when given a checkpoint."""
    _check_choice(precision, PRECISIONS, "encoder precision")
    _check_choice(quant, DECODER_QUANTS, "quantization")
    given = Path(model).expanduser()
    manifest = read_manifest(given) if given.is_dir() else None
    if manifest is None:
        resolved = resolve_model(model)
        if resolved.kind != kind:
            raise _wrong_kind(model, resolved.kind, kind)
        given = _cache_folder(resolved, precision, quant)
        if read_manifest(given) is None:
            log.info("converting %s for the hybrid runtime into %s", model, given)
        convert(resolved.path, given, ConvertOptions((precision,), (quant,)))
        manifest = read_manifest(given)
    check_converted(given, manifest, precision, quant, kind)
    return ModelFiles(given, model, manifest)


def checkpoint_files(model: str, kind: Kind = "asr") -> ModelFiles:
    """The checkpoint folder for the transformers runtime (which cannot read converted files)."""
    given = Path(model).expanduser()
    if given.is_dir() and (manifest := read_manifest(given)) is not None:
        raise ModelError(
            f"{given} is converted for the hybrid runtime; the transformers runtime needs the "
            "original checkpoint.",
            f"Pass the checkpoint folder (it was converted from {manifest['source']['path']}) "
            "or a model name.",
        )
    resolved = resolve_model(model)
    if resolved.kind != kind:
        raise _wrong_kind(model, resolved.kind, kind)
    return ModelFiles(resolved.path, model, None)
