"""The forced aligner on the hybrid runtime: ONNX Runtime encodes, a slot scorer scores.

The aligner's decoder only prefills (one pass, logits at the `<timestamp>` rows), so it can run
on either engine of the hybrid runtime, chosen by the file asked for (`quant`):

- an ONNX precision (int8, fp32, fp16, int4): `aligner_decoder.<precision>.onnx` on ONNX
  Runtime (`runtimes.onnx_aligner`), whose int8 products prefill about twice as fast as
  llama.cpp's q8_0 on a CPU;
- a GGUF quantization (q8_0, f32, ...): `aligner.<quant>.gguf` on llama.cpp, whose output head
  is the 5000-class timestamp head (with a placeholder vocabulary of the classes).

Both take embeddings only: text rows are looked up in `token_embeddings.npy` (float16,
memory-mapped, so only the rows used are read), audio rows come from the encoder.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from qwenscribe.convert.gguf_decoder import aligner_filename
from qwenscribe.convert.onnx_graph import PRECISIONS
from qwenscribe.errors import ModelError
from qwenscribe.log_levels import logger_level
from qwenscribe.model.architecture import TIMESTAMP_CLASSES
from qwenscribe.model.tokens import TIMESTAMP_ID
from qwenscribe.runtimes.base import RuntimeTimes
from qwenscribe.runtimes.devices import hybrid_placement
from qwenscribe.runtimes.llama_decoder import ContextCache, ContextSettings, LlamaModel, llama_api
from qwenscribe.runtimes.onnx_aligner import OnnxSlotScorer
from qwenscribe.runtimes.onnx_encoder import OnnxAudioEncoder
from qwenscribe.runtimes.token_table import TokenTable


@dataclass(frozen=True)
class HybridAlignerSettings:
    folder: Path  # a converted aligner folder (qwenscribe convert)
    # The decoder's file: an ONNX precision (ONNX Runtime) or a GGUF quantization (llama.cpp).
    quant: str = "int8"
    encoder_precision: str = "int8"
    device: str = "cpu"
    threads: int | None = None
    # llama.cpp only
    n_batch: int = 512
    flash_attention: bool | None = None
    f32_kv_cache: bool = False


class SlotScorer(Protocol):
    hidden_size: int

    def score(self, rows: np.ndarray, is_slot: np.ndarray) -> np.ndarray:
        """Logits [slots, classes] at the rows where `is_slot`, in order, of the input `rows`."""
        ...

    def close(self) -> None: ...


@contextlib.contextmanager
def _quiet_llama_load() -> Iterator[None]:
    """Silence llama.cpp while it loads the scorer: it warns about the placeholder vocabulary
    (no newline token, no end-of-generation token), which is expected and not the user's
    business. Only CRITICAL silences warnings (see convert.gguf_decoder)."""
    llama_api()  # its first call sets the logger's level: it must come before ours
    with logger_level("llama-cpp-python", logging.CRITICAL):
        yield


class LlamaSlotScorer:
    """Logits of the slot rows of one aligner input, on llama.cpp (`aligner.<quant>.gguf`).

    The input is fed in order, n_batch rows per `llama_decode`, as one sequence; logits are
    asked for at the slot rows only, which is where llama.cpp then computes the head.
    """

    def __init__(self, folder: Path, settings: HybridAlignerSettings, gpu_layers: int) -> None:
        path = folder / aligner_filename(settings.quant)
        if not path.is_file():
            raise ModelError(f"{folder} has no aligner file {path.name}.", "Convert it again.")
        with _quiet_llama_load():
            self.model = LlamaModel(path, gpu_layers)
        if self.model.n_vocab != TIMESTAMP_CLASSES:
            raise ModelError(
                f"{path} scores {self.model.n_vocab} classes, not the aligner's "
                f"{TIMESTAMP_CLASSES}.",
                "Convert the forced aligner again.",
            )
        self.hidden_size = self.model.n_embd
        self.n_batch = settings.n_batch
        self._contexts = ContextCache(
            self.model,
            ContextSettings(
                threads=settings.threads,
                n_batch=settings.n_batch,
                flash_attention=settings.flash_attention,
                f32_kv_cache=settings.f32_kv_cache,
            ),
        )

    def score(self, rows: np.ndarray, is_slot: np.ndarray) -> np.ndarray:
        """Logits [slots, classes] at the rows where `is_slot`, in order, of the input `rows`."""
        ctx = self._contexts.get(1, len(rows))
        scores = []
        for first in range(0, len(rows), self.n_batch):
            part = slice(first, min(first + self.n_batch, len(rows)))
            count = part.stop - part.start
            logits = ctx.decode(
                [0] * count,
                list(range(part.start, part.stop)),
                is_slot[part].tolist(),
                embeddings=rows[part],
            )
            scores.extend(logits[row] for row in sorted(logits))
        if not scores:
            return np.zeros((0, TIMESTAMP_CLASSES), dtype=np.float32)
        return np.stack(scores)

    def close(self) -> None:
        self._contexts.close()
        self.model.close()


class HybridAligner:
    name = "hybrid"

    def __init__(self, settings: HybridAlignerSettings) -> None:
        placement = hybrid_placement(settings.device, settings.threads)
        self.threads = placement.threads
        self.settings = settings = replace(settings, threads=self.threads)
        folder = settings.folder
        self.encoder = OnnxAudioEncoder(
            folder, settings.encoder_precision, placement.provider, self.threads
        )
        if settings.quant in PRECISIONS:
            self.scorer: SlotScorer = OnnxSlotScorer(
                folder, settings.quant, placement.provider, self.threads
            )
        else:
            self.scorer = LlamaSlotScorer(folder, settings, placement.gpu_layers)
        self.tokens = TokenTable(folder, self.scorer.hidden_size)
        self.hidden_size = self.scorer.hidden_size
        self.times = RuntimeTimes()

    def encode(self, mel: np.ndarray) -> np.ndarray:
        before = self.encoder.seconds
        embeddings = self.encoder.encode(mel)
        self.times.encoder_s += self.encoder.seconds - before
        return embeddings

    def score(self, prompt_ids: np.ndarray, audio: np.ndarray) -> np.ndarray:
        ids = np.asarray(prompt_ids, dtype=np.int64)
        rows = self.tokens.prompt_rows(ids, audio)
        started = time.perf_counter()
        scores = self.scorer.score(rows, ids == TIMESTAMP_ID)
        self.times.prefill_s += time.perf_counter() - started
        self.times.prefill_tokens += len(ids)
        return scores

    def close(self) -> None:
        self.scorer.close()
        self.tokens.close()
        self.encoder.close()
