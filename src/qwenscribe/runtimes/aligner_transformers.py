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

from qwenscribe.errors import ModelError, QwenScribeError
from qwenscribe.model.layout import (
    detect_kind,
    detect_layout,
    hf_config_from_original,
    hf_key_mapping,
    read_config,
)
from qwenscribe.model.tokens import AUDIO_PAD_ID, TIMESTAMP_ID
from qwenscribe.runtimes.base import RuntimeTimes
from qwenscribe.runtimes.transformers_runtime import (
    DTYPES,
    check_torch_device,
    encode_with_audio_tower,
    import_torch,
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
        torch, transformers = import_torch()
        self.torch = torch
        check_torch_device(torch, settings.device)
        if settings.dtype not in DTYPES:
            raise QwenScribeError(
                f"Unknown dtype {settings.dtype!r}.", f"Use one of: {', '.join(DTYPES)}."
            )
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        self.device = torch.device(settings.device)
        self.dtype = getattr(torch, settings.dtype)
        self.model = self._load(transformers, settings)
        self.hidden_size = self.model.config.text_config.hidden_size
        self.times = RuntimeTimes()

    def _load(self, transformers, settings: TransformersAlignerSettings):
        config = read_config(settings.folder)
        if detect_kind(config) != "aligner":
            raise ModelError(
                f"{settings.folder} holds a speech recognizer, not a forced aligner.",
                "Pass a Qwen3-ForcedAligner checkpoint.",
            )
        options = {"dtype": self.dtype}
        if settings.attn_implementation:
            options["attn_implementation"] = settings.attn_implementation
        if detect_layout(config) == "original":
            options["config"] = transformers.Qwen3ASRConfig(**hf_config_from_original(config))
            options["key_mapping"] = hf_key_mapping("aligner")
        try:
            model = transformers.Qwen3ASRForTokenClassification.from_pretrained(
                settings.folder, **options
            )
        except (OSError, ValueError, ImportError) as error:
            raise ModelError(
                f"transformers cannot load the aligner in {settings.folder} ({error}).",
                "Check the checkpoint files, or the attention implementation asked for.",
            ) from error
        return model.to(self.device).eval()

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
