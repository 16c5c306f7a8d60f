"""A thin layer over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Only what the engine needs: load a GGUF, make a context with several sequences sharing one KV
cache, decode a batch of token ids or of embeddings for any sequences at given positions, read
the logits of chosen rows, and forget a sequence. The friendly parts (prompt pieces, parallel
generation) are in `qwenscribe.runtimes.hybrid`.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qwenscribe.errors import ModelError, QwenScribeError

_BACKEND_READY = False


def llama_api():
    """Import llama_cpp once, with llama.cpp's own log routed below the user's attention."""
    global _BACKEND_READY
    import llama_cpp

    if not _BACKEND_READY:
        # llama-cpp-python forwards llama.cpp's log (load banners, kernel notes) to this logger.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        _BACKEND_READY = True
    return llama_cpp


@dataclass(frozen=True)
class ContextSettings:
    threads: int
    n_ctx: int = 1024
    n_seq: int = 1
    n_batch: int = 512
    n_ubatch: int | None = None  # rows per compute pass; None: n_batch
    flash_attention: bool | None = None  # None: llama.cpp decides
    f32_kv_cache: bool = False  # exact runs (parity tests) need f32 keys/values


class LlamaModel:
    """A loaded GGUF; contexts are made from it on demand (they are cheap, the weights are not)."""

    def __init__(self, path: Path, gpu_layers: int = 0, extra_buffers: bool | None = None) -> None:
        """extra_buffers: let llama.cpp repack weights for its fastest CPU kernels; None
        decides from the CPU and the build (`qwenscribe.runtimes.cpu`)."""
        from qwenscribe.runtimes import cpu

        llama_cpp = llama_api()
        cpu.check_llama_build()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.use_extra_bufts = cpu.use_extra_buffers() if extra_buffers is None else extra_buffers
        self.path = path
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelError(
                f"llama.cpp cannot load {path}: the file is damaged or not a decoder GGUF.",
                "Convert the model again.",
            )
        self.n_embd = llama_cpp.llama_model_n_embd(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))

    def context(self, settings: ContextSettings) -> LlamaContext:
        return LlamaContext(self, settings)

    def close(self) -> None:
        if self.model:
            llama_api().llama_model_free(self.model)
            self.model = None


class ContextCache:
    """One context of a model, kept between calls and made anew only when a call needs more
    tokens or sequences than it holds (sized up in steps, so a slightly longer call reuses it).
    Creating a context allocates its KV cache and compute buffers: too slow to do per chunk."""

    STEP = 256  # 28 MB of f16 keys and values per step at the 0.6B size

    def __init__(self, model: LlamaModel, settings: ContextSettings) -> None:
        self.model = model
        self.settings = settings  # n_ctx and n_seq here are the least a context starts with
        self.context: LlamaContext | None = None

    def get(self, n_seq: int, n_tokens: int) -> LlamaContext:
        """A cleared context for `n_seq` sequences holding `n_tokens` tokens in all."""
        needed = -(-n_tokens // self.STEP) * self.STEP
        current = self.context
        if current is None or current.settings.n_ctx < needed or current.settings.n_seq < n_seq:
            if current is not None:
                current.close()
            seqs = max(n_seq, current.settings.n_seq if current else self.settings.n_seq)
            self.context = self.model.context(replace(self.settings, n_ctx=needed, n_seq=seqs))
        self.context.clear()
        return self.context

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None


class LlamaContext:
    def __init__(self, model: LlamaModel, settings: ContextSettings) -> None:
        llama_cpp = llama_api()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.n_ctx
        params.n_batch = settings.n_batch
        params.n_ubatch = settings.n_ubatch or settings.n_batch
        params.n_seq_max = settings.n_seq
        params.kv_unified = True  # sequences of different lengths share one pool of cells
        params.n_threads = params.n_threads_batch = settings.threads
        params.no_perf = True
        if settings.flash_attention is not None:
            params.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if settings.flash_attention
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        if settings.f32_kv_cache:
            params.type_k = params.type_v = 0  # GGML_TYPE_F32
        self.model = model
        self.settings = settings
        self.ctx = llama_cpp.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise QwenScribeError(
                f"llama.cpp could not create a context of {settings.n_ctx} tokens.",
                "Free some memory, or lower parallel_sequences or max_chunk_s.",
            )

    def clear(self) -> None:
        llama_cpp = llama_api()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def forget(self, seq: int) -> None:
        """Free a finished sequence's cells for the others."""
        llama_cpp = llama_api()
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.ctx), seq, -1, -1)

    def decode(
        self,
        seqs: Sequence[int],
        positions: Sequence[int],
        want_logits: Sequence[bool],
        token_ids: Sequence[int] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> dict[int, np.ndarray]:
        """Decode one batch (token ids or embedding rows); logits of the flagged rows by row."""
        llama_cpp = llama_api()
        count = len(seqs)
        if count > self.settings.n_batch:
            raise ValueError(f"batch of {count} exceeds n_batch {self.settings.n_batch}")
        width = 0 if embeddings is None else self.model.n_embd
        batch = llama_cpp.llama_batch_init(count, width, 1)
        try:
            batch.n_tokens = count
            for row in range(count):
                batch.pos[row] = positions[row]
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seqs[row]
                batch.logits[row] = bool(want_logits[row])
            if embeddings is None:
                for row, token in enumerate(token_ids):
                    batch.token[row] = int(token)
            else:
                rows = np.ascontiguousarray(embeddings, dtype=np.float32)
                ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
            status = llama_cpp.llama_decode(self.ctx, batch)
            if status != 0:
                raise QwenScribeError(
                    f"llama.cpp failed to decode a batch (status {status}"
                    + (": no room left in the context)." if status == 1 else ")."),
                    "Lower parallel_sequences or max_chunk_s; report it if it persists.",
                )
            return {
                row: np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(self.ctx, row), shape=(self.model.n_vocab,)
                ).copy()
                for row in range(count)
                if want_logits[row]
            }
        finally:
            llama_cpp.llama_batch_free(batch)

    def close(self) -> None:
        if self.ctx:
            llama_api().llama_free(self.ctx)
            self.ctx = None
