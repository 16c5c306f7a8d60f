"""The recognizer's decoder on ONNX Runtime: `decoder.<precision>.onnx` (see convert.onnx_decoder).

`OnnxSequences` decodes several prompts side by side, as the llama.cpp path does with parallel
sequences: each prompt is prefilled on its own (one call, or blocks of rows for a long one), then
every generation step is one call carrying one new row of each unfinished sequence.

The keys and values live in one preallocated buffer per layer and kind, [sequences, kv_heads,
capacity, head_dim], bound with IOBinding as both the graph's `past_*` input and its `present_*`
output, so onnxruntime writes each call's rows in place and nothing is copied per step (feeding
the cache as an input and taking a new one as an output copied ~100 MB a step, as much time as
the step itself). A step's sequences must be one contiguous run of the buffer: when a sequence
finishes, the ones after it move down a slot (one copy per finished sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qwenscribe.convert.onnx_decoder import onnx_decoder_filename
from qwenscribe.errors import ModelError
from qwenscribe.runtimes.base import DecodeRequest
from qwenscribe.runtimes.devices import ONNX_PROVIDERS
from qwenscribe.runtimes.onnx_session import block_rows, graph_facts, open_session
from qwenscribe.runtimes.token_table import TokenTable

_CPU = ONNX_PROVIDERS["cpu"]


class OnnxDecoder:
    """A loaded `decoder.<precision>.onnx` and the token table it is fed from."""

    def __init__(self, folder: Path, precision: str, threads: int) -> None:
        self.path = folder / onnx_decoder_filename(precision)
        if not self.path.is_file():
            raise ModelError(f"{folder} has no decoder file {self.path.name}.", "Convert it again.")
        # The CPU provider always: the int8 graph's products have no GPU kernels, and on a GPU
        # the GGUF decoder (llama.cpp, offloaded whole) is the one to use.
        self.session = open_session(
            self.path, precision, _CPU, threads, prepack=True, spinning=True
        )
        names = ("hidden", "layers", "heads", "kv_heads", "head_dim", "vocab")
        facts = graph_facts(self.session, self.path, names, "a decoder")
        self.hidden_size, self.layers, self.heads, self.kv_heads, self.head_dim = facts[:5]
        self.vocab = facts[5]
        self.tokens = TokenTable(folder, self.hidden_size, self.vocab)

    def close(self) -> None:
        self.session = None
        self.tokens.close()


class OnnxSequences:
    """Prompts decoded side by side on an `OnnxDecoder`: the hybrid runtime's sequence decoder."""

    def __init__(self, decoder: OnnxDecoder) -> None:
        self.decoder = decoder
        self.path = decoder.path
        self.hidden_size = decoder.hidden_size
        self._keys: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._slots: list[int] = []  # the sequence in each slot of the buffers, in order
        self._lengths: list[int] = []  # rows held per slot

    def start(self, requests: Sequence[DecodeRequest]) -> list[np.ndarray]:
        """Prefill every prompt into a fresh cache; the logits after each prompt."""
        d = self.decoder
        capacity = max(len(r.prompt_ids) + r.max_new_tokens for r in requests)
        # One allocation for every layer's keys and values: over glibc's largest mmap threshold
        # (32 MB) it is always mapped on its own, so freeing it hands the pages back to the
        # system at once (a buffer per layer was left in the heap: 240 MB still resident).
        cache = np.zeros((2, d.layers, len(requests), d.kv_heads, capacity, d.head_dim), np.float32)
        self._keys, self._values = list(cache[0]), list(cache[1])
        self._slots = list(range(len(requests)))
        self._lengths = [0] * len(requests)
        logits = []
        for slot, request in enumerate(requests):
            rows = d.tokens.prompt_rows(request.prompt_ids, request.audio)
            block = block_rows(len(rows), d.heads, width=capacity)
            for first in range(0, len(rows), block):
                part = rows[first : first + block]
                last = self._run(slot, slot + 1, part[None], [first + len(part)])
            logits.append(last[0])
        return logits

    def step(self, seqs: Sequence[int], token_ids: Sequence[int]) -> list[np.ndarray]:
        """One new token for each of `seqs` (the unfinished sequences, in order); their logits."""
        if list(seqs) != self._slots:
            raise ValueError(f"step for sequences {list(seqs)}, holding {self._slots}")
        rows = self.decoder.tokens.embed(token_ids)[:, None, :]
        lengths = [length + 1 for length in self._lengths]
        return list(self._run(0, len(seqs), rows, lengths))

    def finish(self, seqs: Sequence[int]) -> None:
        """Drop finished sequences; the later ones move down so the rest stay contiguous."""
        for seq in seqs:
            slot = self._slots.index(seq)
            count = len(self._slots)
            for buffer in (*self._keys, *self._values):
                buffer[slot : count - 1] = buffer[slot + 1 : count]  # numpy handles the overlap
            del self._slots[slot], self._lengths[slot]
        if not self._slots:  # free the cache now, not at the next start (it is ~240 MB
            self._keys, self._values = [], []  # for two 30-s chunks of the 0.6B)

    def _run(self, first: int, end: int, rows: np.ndarray, lengths: list[int]) -> np.ndarray:
        """Feed `rows` [sequences, rows, hidden] to slots first .. end - 1, which then hold
        `lengths` rows; the logits after each one's last row."""
        io = self.decoder.session.io_binding()
        io.bind_cpu_input("embeddings", np.ascontiguousarray(rows, np.float32))
        io.bind_cpu_input("seqlens_k", np.asarray(lengths, np.int32) - 1)
        io.bind_output("logits")  # first, so it is the first of the outputs read back
        for layer in range(self.decoder.layers):
            for kind, buffers in (("key", self._keys), ("value", self._values)):
                view = buffers[layer][first:end]  # contiguous: slots are the outermost axis
                pointer = view.ctypes.data
                io.bind_input(f"past_{kind}.{layer}", "cpu", 0, np.float32, view.shape, pointer)
                io.bind_output(f"present_{kind}.{layer}", "cpu", 0, np.float32, view.shape, pointer)
        self.decoder.session.run_with_iobinding(io)
        self._lengths[first:end] = lengths
        return io.get_outputs()[0].numpy()

    def close(self) -> None:
        """Free the cache and the decoder's session (its weights and arena) now."""
        self._keys, self._values = [], []
        self.decoder.close()
