"""What the benchmark scripts share: random checkpoints by size, the test speech, tables, JSON.

Imported by the scripts in this folder as `common` (they run as `python benchmarks/<name>.py`,
which puts this folder first on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# The sizes, model files and speech are the speed benchmark's (qwenscribe.bench), shared here.
from qwenscribe.bench.audio import speech
from qwenscribe.bench.models import (
    CUSTOM_SIZES,
    SIZES,
    SMALL,
    ensure_checkpoint,
    ensure_converted,
    size_architecture,
)

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "data"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RATE = 16000

__all__ = [
    "CUSTOM_SIZES", "SIZES", "SMALL", "ensure_checkpoint", "ensure_converted", "size_architecture",
    "speech",
]  # fmt: skip


@contextlib.contextmanager
def work_folder(given: str | None) -> Iterator[Path]:
    """The given folder (kept, so a later run reuses its files) or a temporary one."""
    if given:
        path = Path(given).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="qwenscribe-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average_1m": round(load[0], 2) if load else None,
    }


def architecture_summary(size: str) -> dict[str, Any]:
    arch = size_architecture(size)
    return {"size": size, "encoder": asdict(arch.encoder), "decoder": asdict(arch.decoder)}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if value == 0:
                return "0"
            if abs(value) >= 100:
                return f"{value:.0f}"
            if abs(value) >= 1:
                return f"{value:.2f}"
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def gguf_matrix_types(path: Path) -> dict[str, int]:
    """How many 2-D tensors of a GGUF file are stored in each ggml type, from its header.

    Read here directly: gguf.GGUFReader takes seconds per file to index 152k token strings.
    """
    import gguf

    with open(path, "rb") as handle:
        data = handle.read(32 * 1024 * 1024)  # the header: metadata and tensor infos
    magic, _version, n_tensors, n_kv = struct.unpack_from("<IIQQ", data, 0)
    if magic != gguf.GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file")
    offset = 24

    def skip_string() -> None:
        nonlocal offset
        offset += 8 + struct.unpack_from("<Q", data, offset)[0]

    def skip_value(kind: int) -> None:
        nonlocal offset
        if kind == _STRING:
            skip_string()
        elif kind == _ARRAY:
            item_kind, count = struct.unpack_from("<IQ", data, offset)
            offset += 12
            if item_kind in _SCALAR_SIZES:
                offset += count * _SCALAR_SIZES[item_kind]
            else:
                for _ in range(count):
                    skip_value(item_kind)
        else:
            offset += _SCALAR_SIZES[kind]

    for _ in range(n_kv):
        skip_string()
        kind = struct.unpack_from("<I", data, offset)[0]
        offset += 4
        skip_value(kind)
    counts: dict[str, int] = {}
    for _ in range(n_tensors):
        skip_string()
        n_dims = struct.unpack_from("<I", data, offset)[0]
        offset += 4 + 8 * n_dims
        kind = struct.unpack_from("<I", data, offset)[0]
        offset += 4 + 8  # the type, then the data offset
        if n_dims == 2:
            name = gguf.GGMLQuantizationType(kind).name
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON through a temporary file, so a stopped run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", "utf-8")
    temporary.replace(path)
