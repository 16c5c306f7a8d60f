"""The forced aligner on transformers: the native `Qwen3ASRForTokenClassification`.

Either checkpoint layout loads: the hf layout directly, the original one through the project's
config translation and tensor renames (as the transformers ASR runtime does). Audio goes through
the model's own audio tower and projector; the slots are scored by one forward pass on input
embeddings with the audio rows in place, the same input the hybrid aligner feeds llama.cpp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwenscribe.model.tokens import AUDIO_PAD_ID, TIMESTAMP_ID
from qwenscribe.runtimes.base import RuntimeTimes
from qwenscribe.runtimes.transformers_runtime import (
    encode_with_audio_tower,
    load_native_model,
)


@dataclass(frozen=True)
class TransformersAlignerSettings:
    folder: Path  # an aligner checkpoint in either layout
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "mps", ...
    dtype: str = "float32"
    attn_implementation: str | None = None
    threads: int | None = None


class TransformersAligner:
    name = "transformers"

    def __init__(self, settings: TransformersAlignerSettings) -> None:
        native = load_native_model(
            settings.folder,
            "aligner",
            device=settings.device,
            dtype=settings.dtype,
            attn_implementation=settings.attn_implementation,
            threads=settings.threads,
        )
        self.torch, self.model = native.torch, native.model
        self.device, self.dtype = native.device, native.dtype
        self.settings = settings
        self.hidden_size = self.model.config.text_config.hidden_size
        self.times = RuntimeTimes()

    def encode(self, mel: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        embeddings = encode_with_audio_tower(
            self.torch, self.model.model, mel, self.device, self.dtype
        )
        self.times.encoder_s += time.perf_counter() - started
        return embeddings

    def score(self, prompt_ids: np.ndarray, audio: np.ndarray) -> np.ndarray:
        torch = self.torch
        ids = torch.as_tensor(np.asarray(prompt_ids, dtype=np.int64), device=self.device)
        is_audio = ids == AUDIO_PAD_ID
        if int(is_audio.sum()) != len(audio):
            raise ValueError(
                f"prompt has {int(is_audio.sum())} audio placeholders for {len(audio)} rows"
            )
        started = time.perf_counter()
        with torch.inference_mode():
            embeds = self.model.get_input_embeddings()(ids)
            embeds[is_audio] = torch.from_numpy(np.asarray(audio)).to(self.device, embeds.dtype)
            logits = self.model(inputs_embeds=embeds[None]).logits[0]
            scores = logits[ids == TIMESTAMP_ID].float().cpu().numpy()
        self.times.prefill_s += time.perf_counter() - started
        self.times.prefill_tokens += len(ids)
        return scores

    def close(self) -> None:
        self.model = None
