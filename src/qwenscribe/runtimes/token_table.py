"""`token_embeddings.npy`: the input embedding of every token, for the decoders fed embeddings
only (the ONNX decoders and the aligner's GGUF), and the prompts built from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qwenscribe.convert.gguf_decoder import TOKEN_EMBEDDINGS_FILE
from qwenscribe.errors import ModelError
from qwenscribe.model.tokens import AUDIO_PAD_ID


class TokenTable:
    """The table of a converted folder, float16 [vocab, hidden] and memory-mapped: only the rows
    of the tokens used are ever read."""

    def __init__(self, folder: Path, hidden_size: int, vocab: int | None = None) -> None:
        """vocab: the rows the decoder expects, when it says (None: not checked)."""
        path = folder / TOKEN_EMBEDDINGS_FILE
        try:
            self.rows = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise ModelError(
                f"The token table {path} is missing or damaged ({error}).",
                "Convert the model again.",
            ) from error
        expected = (vocab if vocab is not None else self.rows.shape[0], hidden_size)
        if self.rows.ndim != 2 or self.rows.shape != expected:
            raise ModelError(
                f"The token table {path} has the shape {self.rows.shape}, not {expected}: it "
                "belongs to another model.",
                "Convert the model again.",
            )

    def embed(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.rows[np.asarray(token_ids)], np.float32)

    def prompt_rows(self, prompt_ids: Sequence[int] | np.ndarray, audio: np.ndarray) -> np.ndarray:
        """A prompt as embedding rows: the table's rows, and the audio rows, in order, in place
        of its `<|audio_pad|>` placeholders."""
        ids = np.asarray(prompt_ids, np.int64)
        is_audio = ids == AUDIO_PAD_ID
        if int(is_audio.sum()) != len(audio):
            raise ValueError(
                f"prompt has {int(is_audio.sum())} audio placeholders for {len(audio)} rows"
            )
        rows = self.embed(ids)
        rows[is_audio] = audio
        return rows

    def close(self) -> None:
        self.rows = None
