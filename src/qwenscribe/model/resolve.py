"""Turn what a user passes as `--model` into a local checkpoint folder.

Accepted: a short name (`0.6b`, `1.7b`, `aligner`), a Hugging Face id (`Qwen/Qwen3-ASR-0.6B`),
or a local folder holding a checkpoint in either layout. Hub ids are looked up in the local
cache first and downloaded only when missing; offline, the error says what to pass instead.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from qwenscribe.errors import ModelError, ModelUnavailableError
from qwenscribe.model.architecture import Kind
from qwenscribe.model.layout import Layout, detect_kind, detect_layout, read_config
from qwenscribe.paths import hub_cache_dir

log = logging.getLogger(__name__)

KNOWN_MODELS: dict[str, str] = {
    "0.6b": "Qwen/Qwen3-ASR-0.6B",
    "1.7b": "Qwen/Qwen3-ASR-1.7B",
    "aligner": "Qwen/Qwen3-ForcedAligner-0.6B",
}
DEFAULT_MODEL = "0.6b"
DEFAULT_ALIGNER = "aligner"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a checkpoint needs; README files and the like are not fetched.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    kind: Kind
    layout: Layout
    source: str  # what the user passed, or the hub id it stood for


def inspect_checkpoint(folder: Path, source: str | None = None) -> ResolvedModel:
    """Check that `folder` holds a Qwen3-ASR checkpoint and say which kind and layout."""
    if not folder.is_dir():
        raise ModelError(
            f"Model folder {folder} does not exist.",
            "Pass --model with a checkpoint folder, a Hugging Face id or 0.6b / 1.7b.",
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} is not a model folder: it has no config.json.",
            "Pass the folder that holds config.json and the *.safetensors files.",
        )
    try:
        config = read_config(folder)
        layout, kind = detect_layout(config), detect_kind(config)
    except (ValueError, KeyError, TypeError) as error:  # json errors are ValueErrors
        raise ModelError(
            f"{folder / 'config.json'} is not a Qwen3-ASR config ({error}).",
            "Pass a Qwen3-ASR or Qwen3-ForcedAligner checkpoint.",
        ) from None
    return ResolvedModel(folder, kind, layout, source or str(folder))


def _download(repo_id: str) -> Path:
    # Imported here: huggingface_hub is only needed when a hub id is actually resolved.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    cache = hub_cache_dir()
    try:
        return Path(
            snapshot_download(
                repo_id, cache_dir=cache, local_files_only=True, allow_patterns=_DOWNLOAD_PATTERNS
            )
        )
    except LocalEntryNotFoundError:
        log.info("%s is not cached in %s; downloading", repo_id, cache)
    except Exception as error:  # a damaged cache entry: download it again
        log.warning("cached copy of %s unusable (%s); downloading", repo_id, error)
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=_DOWNLOAD_PATTERNS))
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelUnavailableError(
            f"The Hugging Face Hub has no model {repo_id!r} that can be downloaded.",
            "Check the name, or pass --model 0.6b / 1.7b / PATH.",
        ) from None
    except Exception as error:  # offline, DNS, proxy, TLS, HF_HUB_OFFLINE=1
        log.debug("download of %s failed: %r", repo_id, error)
        raise _unreachable(repo_id) from None


def _unreachable(repo_id: str) -> ModelUnavailableError:
    """The hub could not be reached: said with what this machine is set to reach it by."""
    local_copy = (
        f"Pass --model PATH with a local copy of {repo_id} (download it where there is "
        f"internet access, e.g. `hf download {repo_id} --local-dir DIR`)"
    )
    mirror = os.environ.get("HF_ENDPOINT")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        where, otherwise = "HF_HUB_OFFLINE is set", "or unset HF_HUB_OFFLINE"
    elif mirror:
        where = f"the mirror {mirror} (HF_ENDPOINT) is not reachable"
        otherwise = "or check the mirror's address"
    else:
        where = "the Hugging Face Hub is not reachable from this machine"
        otherwise = "or set HF_ENDPOINT to a mirror"
    return ModelUnavailableError(
        f"Cannot download the model {repo_id}: {where} and the model is not in the cache.",
        f"{local_copy}, {otherwise}.",
    )


def resolve_model(model: str) -> ResolvedModel:
    """Resolve `--model` to a local checkpoint folder (downloading a hub id if needed)."""
    if not model or not model.strip():
        raise ModelError("No model given.", "Pass --model 0.6b, 1.7b, a hub id or a folder.")
    as_path = Path(model).expanduser()
    if as_path.exists():
        return inspect_checkpoint(as_path)
    repo_id = KNOWN_MODELS.get(model.lower(), model)
    if not _HUB_ID.match(repo_id):
        known = ", ".join(KNOWN_MODELS)
        raise ModelError(
            f"Unknown model {model!r}: it is neither a folder nor a known name.",
            f"Pass one of {known}, a Hugging Face id such as "
            f"{KNOWN_MODELS[DEFAULT_MODEL]}, or a checkpoint folder.",
        )
    try:
        return inspect_checkpoint(_download(repo_id), source=repo_id)
    except ModelUnavailableError as error:
        if repo_id == model and error.message.startswith("Cannot"):
            # "models/qwen" reads as a hub id too: say it is not a local folder either.
            first, rest = error.message[0].lower(), error.message[1:]
            error.message = f"There is no folder {model!r} here, and qwenscribe {first}{rest}"
        raise
