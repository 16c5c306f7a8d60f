"""Convert a checkpoint into a hybrid-format folder: ONNX encoder + GGUF decoder + manifest.

The output folder is assembled in a hidden staging folder beside it and renamed into place at
the end; `manifest.json` is written last, so a conversion stopped half-way leaves nothing that
looks complete. Re-running with the same source and options finds the same manifest and does
nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from qwenscribe import __version__
from qwenscribe.convert.checkpoint import Checkpoint
from qwenscribe.errors import ModelError
from qwenscribe.model.resolve import resolve_model
from qwenscribe.paths import qwenscribe_home

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "qwenscribe-hybrid"
FORMAT_VERSION = 1
# Raised whenever the files written change while the runtime can still read the old ones
# (FORMAT_VERSION is what it can read): an older conversion is then written again on next use,
# so a user gets the better files without asking. 2: the int8 and int4 encoders' front ends
# compute their wide convolutions as int8 products (2-2.4x as fast as float convolutions).
# 3: the decoders' int8 ONNX graphs hold 8-bit blocks (MatMulNBits) instead of products the
# dynamic quantizer made (one activation scale per call, which outliers ruin). 4: the aligner's
# int8 decoder quantizes each row with its own scale into onnxruntime's int8 GEMM (prefill 1.7x
# as fast as the blocks on the 0.6B aligner). 5: the encoders' weights are in side files, which
# onnxruntime maps (0.2 s less to open the 0.6B int8 back end, 90 MB less resident).
CONVERTER_REVISION = 5
# Files copied from the checkpoint when present: the tokenizer and the audio front-end settings.
_COPIED = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclass(frozen=True)
class ConvertOptions:
    encoder_precisions: Sequence[str] = ("fp32",)
    decoder_quants: Sequence[str] = ("f16",)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "encoder_precisions": sorted(set(self.encoder_precisions)),
            "decoder_quants": sorted(set(self.decoder_quants)),
        }


@dataclass
class ConvertResult:
    folder: Path
    manifest: dict[str, Any]
    skipped: bool  # True when an identical conversion was already there
    written: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(folder: Path) -> str:
    """Cheap identity of a checkpoint: its config and the names and sizes of its weight files."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except ValueError:
        return None
    return manifest if manifest.get("format") == FORMAT else None


def _up_to_date(manifest: dict[str, Any] | None, fingerprint: str, options: ConvertOptions) -> bool:
    return (
        bool(manifest)
        and manifest["source"]["fingerprint"] == fingerprint
        and manifest["options"] == options.as_dict()
        and manifest["converter_version"] == __version__
        and manifest.get("converter_revision") == CONVERTER_REVISION
    )


def damaged_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The manifest's files that are gone or no longer their recorded size (a deleted file, a
    copy cut short); sizes, not hashes, so that checking costs no reading."""
    damaged = []
    for name, facts in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != facts["bytes"]:
            damaged.append(name)
    return damaged


def _writers(
    kind: str,
) -> tuple[Callable[..., list[Path]], Callable[..., Path], Callable[..., Path] | None]:
    """The encoder writer, the decoder writer for `kind`, and what the aligner needs beside it.

    The aligner's decoder is written with its 5000-class timestamp head, as ONNX or as GGUF
    (`onnx_aligner.write_aligner_scorer`), so only the flagged timestamp positions are scored;
    a decoder GGUF with the head kept apart made llama.cpp compute the 152k-wide vocabulary head
    at every position (+33 % prefill time, measured). Its text tokens are embedded from
    `token_embeddings.npy` by the runtime.
    """
    # Imported on use: each pulls in onnx / gguf, which `import qwenscribe` should not.
    from qwenscribe.convert import gguf_decoder
    from qwenscribe.convert.onnx_aligner import write_aligner_scorer
    from qwenscribe.convert.onnx_decoder import write_recognizer_decoder
    from qwenscribe.convert.onnx_encoder import write_encoder_onnx

    if kind == "aligner":
        return write_encoder_onnx, write_aligner_scorer, gguf_decoder.write_token_embeddings
    # An ONNX decoder writes the token table it needs itself.
    return write_encoder_onnx, write_recognizer_decoder, None


def check_options(options: ConvertOptions) -> None:
    """Refuse unknown choices (both kinds of model take the same ones)."""
    from qwenscribe.convert.onnx_decoder import DECODER_QUANTS
    from qwenscribe.convert.onnx_graph import PRECISIONS

    bad_encoder = [p for p in options.encoder_precisions if p not in PRECISIONS]
    bad_decoder = [q for q in options.decoder_quants if q not in DECODER_QUANTS]
    if bad_encoder or not options.encoder_precisions:
        raise ModelError(
            f"Unknown encoder precision {', '.join(bad_encoder) or '(none)'}.",
            f"Choose from {', '.join(PRECISIONS)}.",
        )
    if bad_decoder or not options.decoder_quants:
        raise ModelError(
            f"Unknown decoder quantization {', '.join(bad_decoder) or '(none)'}.",
            f"Choose from {', '.join(DECODER_QUANTS)}.",
        )


def _build(checkpoint: Checkpoint, staging: Path, options: ConvertOptions) -> None:
    write_encoder, write_decoder, write_extra = _writers(checkpoint.kind)
    for precision in sorted(set(options.encoder_precisions)):
        log.info("encoder %s", precision)
        write_encoder(checkpoint, staging, precision)
    for quant in sorted(set(options.decoder_quants)):
        log.info("decoder %s", quant)
        write_decoder(checkpoint, staging, quant)
    if write_extra is not None:
        write_extra(checkpoint, staging)
    for name in _COPIED:
        if (checkpoint.folder / name).is_file():
            shutil.copy2(checkpoint.folder / name, staging / name)


def _manifest(
    checkpoint: Checkpoint, staging: Path, given: str, fingerprint: str, options: ConvertOptions
) -> dict[str, Any]:
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(staging.iterdir())
        if path.is_file()
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "converter_version": __version__,
        "converter_revision": CONVERTER_REVISION,
        "kind": checkpoint.kind,
        "size": checkpoint.arch.size,
        "architecture": checkpoint.arch.to_dict(),
        "source": {
            "given": given,
            "path": str(checkpoint.folder),
            "layout": checkpoint.layout,
            "fingerprint": fingerprint,
        },
        "options": options.as_dict(),
        "files": files,
    }


def _replace(staging: Path, out: Path) -> None:
    """Put `staging` at `out`; an existing `out` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert(
    source: str | Path, out: str | Path, options: ConvertOptions | None = None
) -> ConvertResult:
    """Convert `source` (a checkpoint folder or hub id / short name) into the folder `out`."""
    options = options or ConvertOptions()
    check_options(options)  # before anything is looked up or downloaded
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out} is a file, not a folder.", "Choose a new folder for --out.")
    resolved = resolve_model(str(source))
    checkpoint = Checkpoint(resolved.path)
    fingerprint = source_fingerprint(checkpoint.folder)
    with _conversion_lock(out):
        return _convert_locked(checkpoint, resolved.source, fingerprint, out, options)


@contextmanager
def _conversion_lock(out: Path) -> Iterator[None]:
    """One conversion into `out` at a time, across processes: two `transcribe` runs that both
    need the same model converted do it once (the second waits, then finds it done).

    The lock files live in the cache (`locks/`, one per output folder), not beside `out`, and
    stay there: removing a lock file while another process waits on it would let a third take a
    new one at the same time. Where that folder cannot be written, conversions are not locked."""
    lock = _acquired_lock(out)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _acquired_lock(out: Path) -> FileLock | None:
    key = hashlib.sha256(str(out.resolve()).encode("utf-8")).hexdigest()[:16]
    try:
        locks = qwenscribe_home() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(locks / f"convert-{key}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("Another qwenscribe is converting into %s; waiting for it.", out)
            lock.acquire()
    except OSError as error:
        log.info("converting into %s without a lock (%s)", out, error)
        return None
    return lock


def _convert_locked(
    checkpoint: Checkpoint, source: str, fingerprint: str, out: Path, options: ConvertOptions
) -> ConvertResult:
    existing = read_manifest(out)
    if _up_to_date(existing, fingerprint, options):
        damaged = damaged_files(out, existing)  # type: ignore[arg-type]
        if not damaged:
            log.info("%s is already converted with these options", out)
            return ConvertResult(out, existing, skipped=True)  # type: ignore[arg-type]
        log.warning(
            "%s: %s missing or of the wrong size; converting it again.", out, ", ".join(damaged)
        )
    elif existing is not None and existing.get("converter_revision") != CONVERTER_REVISION:
        log.info("%s was converted by an older qwenscribe; converting it again", out)
    if out.exists() and existing is None and any(out.iterdir()):
        raise ModelError(
            f"{out} exists and is not a qwenscribe model folder.",
            "Choose an empty or new folder for --out.",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _build(checkpoint, staging, options)
        manifest = _manifest(checkpoint, staging, source, fingerprint, options)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConvertResult(out, manifest, skipped=False, written=sorted(manifest["files"]))
