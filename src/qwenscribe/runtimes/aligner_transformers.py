"""The forced aligner on transformers: the native `Qwen3ASRForTokenClassification`.

Either checkpoint layout loads: the hf layout directly, the original one through the project's
config translation and tensor renames (as the transformers ASR runtime does). Audio goes through
the model's own audio tower and projector; the slots are scored by one forward pass on input
embeddings with the audio rows in place, the same input the hybrid aligner feeds llama.cpp.
"""

from __future__ import annotations

import time

import numpy as np

from qwenscribe.model.architecture import Kind
from qwenscribe.model.tokens import AUDIO_PAD_ID, TIMESTAMP_ID
from qwenscribe.runtimes.transformers_runtime import (
    NativeRuntime,
    TransformersSettings,
)

# The aligner needs the same settings as the recognizer.
TransformersAlignerSettings = TransformersSettings


class TransformersAligner(NativeRuntime):
    kind: Kind = "aligner"

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
