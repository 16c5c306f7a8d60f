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
from qwenscribe.errors import ModelError
from qwenscribe.model.architecture import audio_token_count

# 1-s chunks per front-end call. The first convolution's output is 6 MB per chunk at the real
# sizes (the int8 graph's 3 x 3 patches 14 MB) and ONNX Runtime's arena keeps the largest it
# saw. Measured on the 0.6B front end, 60 s of audio, 2 threads: int8 635 / 648 / 732 ms and
# 141 / 210 / 349 MB peak for 1 / 2 / 4 chunks a call (float Convs: no difference in speed).
FRONTEND_BATCH = 1


class OnnxAudioEncoder:
    def __init__(self, folder: Path, precision: str, provider: str, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        # Pre-packing copies weights into a second layout: for the 0.6B encoder 140 MB more at
        # int8 (and 10 % slower), 370 MB at fp32 (5 % faster); int4's MatMulNBits needs it
        # (40 % slower without).
        if precision != "int4":
            options.add_session_config_entry("session.disable_prepacking", "1")
        self.sessions = []
        for filename in (frontend_filename(precision), backend_filename(precision)):
            try:
                self.sessions.append(
                    onnxruntime.InferenceSession(
                        str(folder / filename), options, providers=[provider]
                    )
                )
            except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ModelError(
                    f"ONNX Runtime cannot load {folder / filename} ({error}).",
                    "Convert the model again.",
                ) from error
        self.frontend, self.backend = self.sessions
        self.seconds = 0.0

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Audio embeddings [tokens, hidden] of one log-mel [128, frames]."""
        started = time.perf_counter()
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

    def close(self) -> None:
        """Let ONNX Runtime free the sessions (their weights and arena) now."""
        self.sessions = []
        self.frontend = self.backend = None
