"""What qwenscribe keeps in its cache: known models, downloaded checkpoints, converted folders.

Backs `qwenscribe models`: list, download-and-convert ahead of time, remove. The cache is
`QWENSCRIBE_HOME` (see `qwenscribe.paths`): downloaded checkpoints under `hub/` (the Hugging
Face cache layout), hybrid-format folders under `models/` (one per source, precision and
quantization, each with its manifest), and under `prepacked/` graphs whose weights are laid out
for this machine's kernels (made on a graph's first load, safe to delete).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qwenscribe.convert.convert import read_manifest
from qwenscribe.errors import ModelError
from qwenscribe.model.resolve import KNOWN_MODELS, resolve_model
from qwenscribe.paths import converted_models_dir, hub_cache_dir, prepacked_dir, qwenscribe_home
from qwenscribe.runtimes.prepacked import remove_outdated_copies, stored_copies

_DESCRIPTIONS = {
    "0.6b": "speech recognizer, 0.6B parameters (default)",
    "1.7b": "speech recognizer, 1.7B parameters (more accurate, slower)",
    "aligner": "forced aligner for word timing, 0.6B parameters",
}
# What the engine uses by default (ASREngineConfig): the encoders' precision (the decoders':
# core.models.default_decoder_quant).
DEFAULT_PRECISION = "int8"


@dataclass(frozen=True)
class KnownModel:
    name: str
    hub_id: str
    what: str


@dataclass(frozen=True)
class CachedCheckpoint:
    hub_id: str
    path: str  # the newest snapshot folder ("" when the entry holds none)
    bytes: int


@dataclass(frozen=True)
class ConvertedModel:
    path: str
    kind: str
    size: str
    source: str
    encoder_precisions: list[str]
    decoder_quants: list[str]
    bytes: int


def known_models() -> list[KnownModel]:
    return [
        KnownModel(name, hub_id, _DESCRIPTIONS.get(name, ""))
        for name, hub_id in KNOWN_MODELS.items()
    ]


def _folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (hub snapshots are symlinks into blobs/)."""
    return sum(
        path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


def cached_checkpoints() -> list[CachedCheckpoint]:
    """Checkpoints downloaded from the hub, in the hub cache layout (models--owner--name)."""
    root = hub_cache_dir()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.glob("models--*")):
        if not entry.is_dir():
            continue
        hub_id = entry.name.removeprefix("models--").replace("--", "/", 1)
        snapshots = sorted(
            (path for path in (entry / "snapshots").glob("*") if path.is_dir()),
            key=lambda path: path.stat().st_mtime,
        )
        path = str(snapshots[-1]) if snapshots else ""
        found.append(CachedCheckpoint(hub_id, path, _folder_bytes(entry)))
    return found


def converted_models() -> list[ConvertedModel]:
    """Hybrid-format folders under the cache's models/ (only complete ones: with a manifest)."""
    root = converted_models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        manifest = read_manifest(folder)
        if manifest is None:
            continue
        options = manifest.get("options", {})
        found.append(
            ConvertedModel(
                path=str(folder),
                kind=str(manifest.get("kind", "?")),
                size=str(manifest.get("size", "?")),
                source=str(manifest.get("source", {}).get("given", "?")),
                encoder_precisions=list(options.get("encoder_precisions", [])),
                decoder_quants=list(options.get("decoder_quants", [])),
                bytes=sum(
                    int(facts.get("bytes", 0)) for facts in manifest.get("files", {}).values()
                ),
            )
        )
    return found


def cache_summary() -> dict[str, Any]:
    """Everything `qwenscribe models` shows, as plain data (its --json output)."""
    return {
        "cache": str(qwenscribe_home()),
        "known": [asdict(model) for model in known_models()],
        "downloaded": [asdict(model) for model in cached_checkpoints()],
        "converted": [asdict(model) for model in converted_models()],
        "prepacked": _prepacked_summary(),
    }


def _prepacked_summary() -> dict[str, Any]:
    """The graphs whose weights are kept packed for this machine (runtimes/prepacked.py)."""
    copies, size = stored_copies()
    return {"path": str(prepacked_dir()), "copies": copies, "bytes": size}


def download(
    model: str,
    encoder_precisions: Sequence[str] = (DEFAULT_PRECISION,),
    decoder_quants: Sequence[str] = (),
) -> list[Path]:
    """Resolve `model` (downloading a hub id if needed) and convert it into the cache for each
    (precision, quantization) asked for (none: the engine's default for the model's kind); the
    converted folders."""
    from qwenscribe.convert.convert import ConvertOptions, check_options
    from qwenscribe.core.models import default_decoder_quant, hybrid_model_files

    precisions = tuple(dict.fromkeys(encoder_precisions or (DEFAULT_PRECISION,)))
    quants = tuple(dict.fromkeys(decoder_quants or (default_decoder_quant("cpu"),)))
    # A misspelt precision is refused before a download of gigabytes, not after it.
    check_options(ConvertOptions(precisions, quants))
    resolved = resolve_model(model)
    folders = []
    for precision in precisions:
        for quant in quants:
            # The name as given, so the folder is the one `transcribe --model NAME` looks for.
            files = hybrid_model_files(model, precision, quant, resolved.kind)
            folders.append(files.folder)
    return folders


def _inside_cache(path: Path) -> bool:
    try:
        path.resolve().relative_to(qwenscribe_home().resolve())
    except ValueError:
        return False
    return path.resolve() != qwenscribe_home().resolve()


def remove(target: str) -> list[Path]:
    """Remove from the cache a folder (a converted folder or hub entry, by path) or everything
    cached for a model name / hub id: its download and the folders converted from it."""
    given = Path(target).expanduser()
    if given.exists():
        if not _inside_cache(given):
            raise ModelError(
                f"{given} is not inside the qwenscribe cache ({qwenscribe_home()}).",
                "Only cached models can be removed; delete other folders yourself.",
            )
        shutil.rmtree(given)
        return [given, *remove_outdated_copies()]
    hub_id = KNOWN_MODELS.get(target.lower(), target)
    removed = []
    entry = hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    snapshots = {str(path) for path in (entry / "snapshots").glob("*")} if entry.is_dir() else set()
    for converted in converted_models():
        manifest = read_manifest(Path(converted.path)) or {}
        source = manifest.get("source", {})
        if source.get("given") in (hub_id, target) or source.get("path") in snapshots:
            shutil.rmtree(converted.path)
            removed.append(Path(converted.path))
    if entry.is_dir():
        shutil.rmtree(entry)
        removed.append(entry)
    if not removed:
        raise ModelError(
            f"Nothing named {target!r} is in the qwenscribe cache.",
            "Run `qwenscribe models` to see what is cached.",
        )
    return removed + remove_outdated_copies()  # the packed copies of the graphs removed
