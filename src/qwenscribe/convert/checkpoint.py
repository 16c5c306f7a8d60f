"""Read a Qwen3-ASR checkpoint of either layout, tensor by tensor, as numpy, without torch.

The released weights are bfloat16. The safetensors library refuses bf16 tensors for numpy, so
the files are memory-mapped here and viewed through `ml_dtypes.bfloat16`: a tensor is read only
when asked for, and converting a model never holds more than the tensor at hand.
Every problem a user can meet (no weights, a missing or misshapen tensor, a truncated file) is a
`ModelError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from qwenscribe.errors import ModelError
from qwenscribe.model.architecture import Architecture, TensorSpec, head_tensor, model_tensors
from qwenscribe.model.layout import (
    Layout,
    architecture_from_config,
    detect_layout,
    hf_name,
    read_config,
)

_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    end: int


def _read_header(path: Path) -> dict[str, _Entry]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ModelError(
                f"{path} is not a safetensors file (it is {size} bytes long).",
                "Download the checkpoint again.",
            )
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER, size - 8):
            raise ModelError(
                f"{path} is not a valid safetensors file (bad header length).",
                "Download the checkpoint again.",
            )
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise ModelError(
                f"{path} has a damaged header.", "Download the checkpoint again."
            ) from None
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        entry = _Entry(
            path, info["dtype"], tuple(info["shape"]), 8 + length + start, 8 + length + end
        )
        if entry.end > size:
            raise ModelError(
                f"{path} is truncated: tensor {name} ends past the end of the file.",
                "The download was interrupted; download the checkpoint again.",
            )
        entries[name] = entry
    return entries


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text("utf-8"))["weight_map"]
        files = sorted({folder / name for name in weight_map.values()})
        missing = [path.name for path in files if not path.is_file()]
        if missing:
            raise ModelError(
                f"{folder} is incomplete: {', '.join(missing)} listed in the index "
                "but not present.",
                "Download the missing files.",
            )
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(
            f"{folder} holds no *.safetensors weights.",
            "Pass the folder with the model's safetensors files.",
        )
    return files


class Checkpoint:
    """A checkpoint folder: its architecture and its tensors under hf-layout names."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        config = read_config(self.folder)
        self.config = config
        self.layout: Layout = detect_layout(config)
        self.arch: Architecture = architecture_from_config(config)
        self._entries: dict[str, _Entry] = {}
        for path in _weight_files(self.folder):
            for name, entry in _read_header(path).items():
                if self.layout == "original":
                    try:
                        name = hf_name(name, self.arch.kind)
                    except KeyError:
                        continue  # tensors outside the thinker are not ours
                self._entries[name] = entry
        self._check_complete()

    @property
    def kind(self) -> str:
        return self.arch.kind

    def _expected(self) -> list[TensorSpec]:
        return model_tensors(self.arch)

    def _check_complete(self) -> None:
        problems = []
        for spec in self._expected():
            entry = self._entries.get(spec.name)
            if entry is None:
                tied_head = spec.init == "head" and self.arch.decoder.tied_embeddings
                if not tied_head:
                    problems.append(f"{spec.name} is missing")
            elif entry.shape != spec.shape:
                problems.append(
                    f"{spec.name} has shape {list(entry.shape)}, "
                    f"the config implies {list(spec.shape)}"
                )
            elif entry.dtype not in _DTYPES:
                problems.append(f"{spec.name} has unsupported dtype {entry.dtype}")
        if problems:
            shown = "; ".join(problems[:5]) + (
                f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            )
            raise ModelError(
                f"{self.folder} is not a complete {self.arch.kind} checkpoint: {shown}.",
                "Download the checkpoint again, all files.",
            )

    def names(self) -> list[str]:
        """Tensor names in the hf layout, in architecture order (a tied head is not listed)."""
        return [spec.name for spec in self._expected() if spec.name in self._entries]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32 (a tied head reads the embedding)."""
        tied_head = self.arch.decoder.tied_embeddings and name == head_tensor(self.arch).name
        if tied_head and name not in self._entries:
            name = "model.language_model.embed_tokens.weight"
        entry = self._entries[name]
        dtype = np.dtype(_DTYPES[entry.dtype])
        mapped = np.memmap(entry.path, dtype=dtype, mode="r", offset=entry.start, shape=entry.shape)
        return np.asarray(mapped, dtype=np.float32)

    def tensors(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name in self.names():
            if name.startswith(prefix):
                yield name, self.tensor(name)
