"""The forced aligner's decoder on ONNX Runtime: `aligner_decoder.<precision>.onnx`.

The aligner only prefills: one pass over its input, logits at the `<timestamp>` rows. The graph
(`convert.onnx_aligner`) takes the input's rows and the keys and values of the rows before them,
so a long input runs in blocks whose attention scores stay within a budget
(`onnx_session.block_rows`); a
default 30-s chunk (~760 rows) is one call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwenscribe.convert.onnx_aligner import aligner_decoder_filename
from qwenscribe.errors import ModelError
from qwenscribe.runtimes.onnx_session import block_rows, graph_facts, open_session


class OnnxSlotScorer:
    """Logits of the slot rows of one aligner input, on ONNX Runtime."""

    def __init__(self, folder: Path, precision: str, provider: str, threads: int) -> None:
        path = folder / aligner_decoder_filename(precision)
        if not path.is_file():
            raise ModelError(f"{folder} has no aligner file {path.name}.", "Convert it again.")
        # Pre-packed (the 0.6B int8 graph's packed copy, runtimes/prepacked.py): 760 rows in
        # 1.59 against 1.68 s unpacked, 0.2 s more to load, same peak; fp32 and int4 need it.
        self.session = open_session(path, precision, provider, threads, prepack=True)
        names = ("hidden", "layers", "heads", "kv_heads", "head_dim", "classes")
        facts = graph_facts(self.session, path, names, "an aligner decoder")
        self.hidden_size, self.layers, self.heads, self.kv_heads, self.head_dim = facts[:5]
        self.classes = facts[5]
        self._outputs = [output.name for output in self.session.get_outputs()]

    def _empty_cache(self) -> dict[str, np.ndarray]:
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)
        return {
            f"past_{kind}.{layer}": empty
            for layer in range(self.layers)
            for kind in ("key", "value")
        }

    def score(self, rows: np.ndarray, is_slot: np.ndarray) -> np.ndarray:
        """Logits [slots, classes] at the rows where `is_slot`, in order, of the input `rows`."""
        slots = np.flatnonzero(is_slot)
        if not len(slots):
            return np.zeros((0, self.classes), np.float32)
        total = int(slots[-1]) + 1  # attention is causal: later rows change nothing scored
        block = block_rows(total, self.heads)
        cache = self._empty_cache()
        scores = []
        for first in range(0, total, block):
            part = slice(first, min(first + block, total))
            wanted = np.flatnonzero(is_slot[part]).astype(np.int64)
            feeds = {"embeddings": np.ascontiguousarray(rows[part], np.float32)}
            feeds |= {"slot_rows": wanted} | cache
            results = dict(zip(self._outputs, self.session.run(None, feeds), strict=True))
            scores.append(results.pop("slot_logits"))
            cache = {name.replace("present_", "past_", 1): value for name, value in results.items()}
        return np.concatenate(scores)

    def close(self) -> None:
        self.session = None
