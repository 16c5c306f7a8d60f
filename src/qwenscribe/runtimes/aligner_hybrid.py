"""The forced aligner on the hybrid runtime: ONNX Runtime encodes, llama.cpp scores the slots.

The aligner's GGUF (`qwenscribe convert`, `aligner.<quant>.gguf`) has the 5000-class timestamp
head as its output head and a placeholder vocabulary of the classes, so it takes embeddings
only: text rows are looked up in `token_embeddings.npy` (float16, memory-mapped, so only the
rows used are read), audio rows come from the encoder. The input is fed in order, n_batch rows
per `llama_decode`, as one sequence; logits are asked for at the `<timestamp>` positions only,
which is where llama.cpp then computes the head.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwenscribe.convert.gguf_decoder import TOKEN_EMBEDDINGS_FILE, aligner_filename
from qwenscribe.errors import ModelError
from qwenscribe.model.architecture import TIMESTAMP_CLASSES
from qwenscribe.model.tokens import AUDIO_PAD_ID, TIMESTAMP_ID
from qwenscribe.runtimes.base import RuntimeTimes
from qwenscribe.runtimes.devices import hybrid_placement
from qwenscribe.runtimes.llama_decoder import ContextCache, ContextSettings, LlamaModel, llama_api
from qwenscribe.runtimes.onnx_encoder import OnnxAudioEncoder


@dataclass(frozen=True)
class HybridAlignerSettings:
    folder: Path  # a converted aligner folder (qwenscribe convert)
    quant: str = "q8_0"
    encoder_precision: str = "int8"
    device: str = "cpu"
    threads: int | None = None
    n_batch: int = 512
    flash_attention: bool | None = None
    f32_kv_cache: bool = False


@contextlib.contextmanager
def _quiet_llama_load() -> Iterator[None]:
    """Silence llama.cpp while it loads the scorer: it warns about the placeholder vocabulary
    (no newline token, no end-of-generation token), which is expected and not the user's
    business. Only CRITICAL silences warnings (see convert.gguf_decoder)."""
    llama_api()  # its first call sets the logger's level: it must come before ours
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class HybridAligner:
    name = "hybrid"

    def __init__(self, settings: HybridAlignerSettings) -> None:
        self.settings = settings
        placement = hybrid_placement(settings.device, settings.threads)
        self.threads = placement.threads
        folder = settings.folder
        scorer, table = folder / aligner_filename(settings.quant), folder / TOKEN_EMBEDDINGS_FILE
        for path in (scorer, table):
            if not path.is_file():
                raise ModelError(f"{folder} has no aligner file {path.name}.", "Convert it again.")
        self.encoder = OnnxAudioEncoder(
            folder, settings.encoder_precision, placement.provider, self.threads
        )
        with _quiet_llama_load():
            self.scorer = LlamaModel(scorer, placement.gpu_layers)
        if self.scorer.n_vocab != TIMESTAMP_CLASSES:
            raise ModelError(
                f"{scorer} scores {self.scorer.n_vocab} classes, not the aligner's "
                f"{TIMESTAMP_CLASSES}.",
                "Convert the forced aligner again.",
            )
        self.token_embeddings = np.load(table, mmap_mode="r")
        if self.token_embeddings.ndim != 2 or self.token_embeddings.shape[1] != self.scorer.n_embd:
            raise ModelError(
                f"{table} does not match {scorer.name} (shape {self.token_embeddings.shape}).",
                "Convert the forced aligner again.",
            )
        self.hidden_size = self.scorer.n_embd
        self.times = RuntimeTimes()
        self._contexts = ContextCache(
            self.scorer,
            ContextSettings(
                threads=self.threads,
                n_batch=settings.n_batch,
                flash_attention=settings.flash_attention,
                f32_kv_cache=settings.f32_kv_cache,
            ),
        )

    def encode(self, mel: np.ndarray) -> np.ndarray:
        before = self.encoder.seconds
        embeddings = self.encoder.encode(mel)
        self.times.encoder_s += self.encoder.seconds - before
        return embeddings

    def _rows(self, ids: np.ndarray, audio: np.ndarray, audio_index: np.ndarray) -> np.ndarray:
        """Input embeddings of a run of positions: the table's rows, audio rows where the
        prompt holds `<|audio_pad|>` (audio_index: each position's audio row, -1 for text)."""
        rows = np.asarray(self.token_embeddings[ids], dtype=np.float32)
        is_audio = audio_index >= 0
        rows[is_audio] = audio[audio_index[is_audio]]
        return rows

    def score(self, prompt_ids: np.ndarray, audio: np.ndarray) -> np.ndarray:
        ids = np.asarray(prompt_ids, dtype=np.int64)
        is_audio = ids == AUDIO_PAD_ID
        if int(is_audio.sum()) != len(audio):
            raise ValueError(
                f"prompt has {int(is_audio.sum())} audio placeholders for {len(audio)} rows"
            )
        audio_index = np.where(is_audio, np.cumsum(is_audio) - 1, -1)
        is_slot = ids == TIMESTAMP_ID
        started = time.perf_counter()
        ctx = self._contexts.get(1, len(ids))
        scores = []
        for first in range(0, len(ids), self.settings.n_batch):
            part = slice(first, min(first + self.settings.n_batch, len(ids)))
            count = part.stop - part.start
            logits = ctx.decode(
                [0] * count,
                list(range(part.start, part.stop)),
                is_slot[part].tolist(),
                embeddings=self._rows(ids[part], audio, audio_index[part]),
            )
            scores.extend(logits[row] for row in sorted(logits))
        self.times.prefill_s += time.perf_counter() - started
        self.times.prefill_tokens += len(ids)
        if not scores:
            return np.zeros((0, TIMESTAMP_CLASSES), dtype=np.float32)
        return np.stack(scores)

    def close(self) -> None:
        self._contexts.close()
        self.scorer.close()
        self.encoder.close()
