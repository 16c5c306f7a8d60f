"""Write a safetensors file one tensor (and one block of rows) at a time.

The safetensors library writes a file from tensors that are all in memory at once; a random
checkpoint of the real 1.7B dimensions would need gigabytes for that. The format is a
little-endian u64 header length, a JSON header of names, dtypes, shapes and byte offsets, and
the raw data: knowing every shape up front, the header can be written first and the data
streamed after it, so memory stays at one block whatever the model size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# dtype name in the safetensors header -> bytes per element
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}


@dataclass(frozen=True)
class StreamedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "BF16", "F16" or "F32"
    blocks: Callable[[], Iterator[bytes]]  # yields the tensor's bytes, row-major, in order

    @property
    def nbytes(self) -> int:
        count = _DTYPE_BYTES[self.dtype]
        for dim in self.shape:
            count *= dim
        return count


def write_safetensors(
    path: Path, tensors: Iterable[StreamedTensor], metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` to `path`; the blocks of each must add up to exactly its size."""
    tensors = list(tensors)
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for tensor in tensors:
            written = 0
            for block in tensor.blocks():
                handle.write(block)
                written += len(block)
            if written != tensor.nbytes:
                raise ValueError(f"{tensor.name}: wrote {written} bytes, expected {tensor.nbytes}")
