"""The audio encoder on ONNX Runtime: the two graphs `qwenscribe convert` writes.

The front end runs on 1-s mel chunks in small batches (memory stays bounded whatever the chunk
length), the padded positions of the last partial chunk are dropped here in numpy, and the
back end runs once on the concatenated tokens (its 8-s attention windows are inside the graph).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from qwenscribe.audio.mel import pad_to_chunks
from qwenscribe.convert.onnx_encoder import backend_filename, frontend_filename
from qwenscribe.model.architecture import audio_token_count
from qwenscribe.runtimes.onnx_session import open_session

# 1-s chunks per front-end call. The first convolution's output is 6 MB per chunk at the real
# sizes (the int8 graph's 3 x 3 patches 14 MB) and ONNX Runtime's arena keeps the largest it
# saw. Measured on the 0.6B front end, 60 s of audio, 2 threads: int8 635 / 648 / 732 ms and
# 141 / 210 / 349 MB peak for 1 / 2 / 4 chunks a call (float Convs: no difference in speed).
FRONTEND_BATCH = 1


class OnnxAudioEncoder:
    def __init__(self, folder: Path, precision: str, provider: str, threads: int) -> None:
        self._files = [
            folder / name for name in (frontend_filename(precision), backend_filename(precision))
        ]
        self._open_args = (precision, provider, threads)
        self.sessions: list = []
        self._open()  # now, so a missing or damaged file is reported at load
        self.seconds = 0.0

    def _open(self) -> None:
        self.sessions = [open_session(path, *self._open_args) for path in self._files]
        self.frontend, self.backend = self.sessions

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Audio embeddings [tokens, hidden] of one log-mel [128, frames]."""
        started = time.perf_counter()
        if not self.sessions:  # released (low memory): the weights are mapped again
            self._open()
        frames = mel.shape[1]
        chunks = pad_to_chunks(mel)
        pieces = [
            self.frontend.run(None, {"mel_chunks": chunks[i : i + FRONTEND_BATCH]})[0]
            for i in range(0, len(chunks), FRONTEND_BATCH)
        ]
        per_chunk = np.concatenate(pieces, axis=0)  # [chunks, 13, d]
        tokens = per_chunk.reshape(-1, per_chunk.shape[-1])
        # The last chunk's padded frames produced positions the reference drops.
        tokens = tokens[: audio_token_count(frames)]
        embeddings = self.backend.run(None, {"audio_tokens": tokens})[0]
        self.seconds += time.perf_counter() - started
        return embeddings

    def release(self) -> None:
        """Free the sessions (their weights' pages and arenas) until the next `encode` opens
        them again: ~0.1-0.2 s, the weights being mapped from their side files."""
        self.sessions = []
        self.frontend = self.backend = None

    def close(self) -> None:
        """Free the sessions now (as `release`: an encoder used again reopens them)."""
        self.release()
