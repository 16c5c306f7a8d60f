"""The transformers runtime: the native Qwen3-ASR classes, on CPU or GPU, batched.

It receives the same prompts and mel features as the hybrid runtime (the engine builds them), so
prompts, chunking, parsing and guards are shared; only the model underneath differs. Loading
either checkpoint layout: the hf layout directly, the original one through the project's config
translation and tensor renames (transformers' `key_mapping`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwenscribe.audio.mel import pad_to_chunks
from qwenscribe.errors import DeviceError, ModelError, QwenScribeError
from qwenscribe.model.architecture import Kind
from qwenscribe.model.layout import (
    detect_kind,
    detect_layout,
    hf_config_from_original,
    hf_key_mapping,
    read_config,
)
from qwenscribe.model.tokens import AUDIO_PAD_ID, ENDOFTEXT_ID, EOS_IDS
from qwenscribe.runtimes.base import (
    GREEDY,
    DecodeRequest,
    FinishReason,
    Generation,
    RuntimeTimes,
    Sampling,
    StopCheck,
    TokenCallback,
)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TransformersSettings:
    folder: Path  # a checkpoint in either layout (recognizer or aligner, as the runtime needs)
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "mps", ...
    dtype: str = "float32"
    attn_implementation: str | None = None  # "sdpa", "eager", "flash_attention_2", ...
    threads: int | None = None


def import_torch():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise QwenScribeError(
            "The transformers runtime needs torch and transformers, which are not installed.",
            "Install them (pip install 'qwenscribe[torch]') or use runtime 'hybrid'.",
        ) from error
    return torch, transformers


def check_torch_device(torch, device: str) -> None:
    kind = device.split(":", 1)[0]
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
    }
    if kind not in available:
        raise DeviceError(f"Unknown torch device {device!r}.", "Use 'cpu', 'cuda' or 'mps'.")
    if not available[kind]:
        raise DeviceError(
            f"torch cannot use {device!r} on this machine (no such device, or a torch build "
            "without its support).",
            "Install a torch build for it, or use device 'cpu'.",
        )


def encode_with_audio_tower(torch, model, mel: np.ndarray, device, dtype) -> np.ndarray:
    """Audio embeddings [tokens, hidden] from a native Qwen3ASRModel's encoder + projector.

    The native encoder takes whole 1-s chunks of mel and a mask of the real frames.
    """
    frames = mel.shape[1]
    padded = pad_to_chunks(mel).transpose(1, 0, 2).reshape(mel.shape[0], -1)
    mask = np.zeros((1, padded.shape[1]), dtype=np.int64)
    mask[0, :frames] = 1
    with torch.inference_mode():
        features = torch.from_numpy(np.ascontiguousarray(padded))[None].to(device, dtype)
        output = model.get_audio_features(features, torch.from_numpy(mask).to(device))
        return output.pooler_output.float().cpu().numpy()


class _Watcher:
    """A stopping criterion that enforces per-row budgets and the engine's checks.

    transformers calls it after every step with all tokens so far; it reports each row's new
    token, and returns per row whether that row is done.
    """

    def __init__(self, torch, requests, prompt_length, should_stop, on_token) -> None:
        self.torch = torch
        self.limits = [r.max_new_tokens for r in requests]
        self.prompt_length = prompt_length
        self.should_stop, self.on_token = should_stop, on_token
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.finish: list[FinishReason | None] = [None] * len(requests)
        self.first_token_at: float | None = None  # the end of the prefill

    def __call__(self, input_ids, scores, **kwargs):
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        done = []
        for row, ids in enumerate(input_ids.tolist()):
            if self.finish[row] is None:
                token = ids[-1]
                if token in EOS_IDS:
                    self.finish[row] = "eos"
                else:
                    self.tokens[row].append(token)
                    if self.on_token is not None:
                        self.on_token(row, token)
                    if self.should_stop is not None and self.should_stop(row, self.tokens[row]):
                        self.finish[row] = "stopped"
                    elif len(self.tokens[row]) >= self.limits[row]:
                        self.finish[row] = "length"
            done.append(self.finish[row] is not None)
        return self.torch.tensor(done, device=input_ids.device)


class _SuppressEos:
    """A logits processor that keeps end-of-sequence out of reach in the flagged rows
    (`DecodeRequest.suppress_eos`: benchmarks decode the whole budget)."""

    def __init__(self, torch, rows: Sequence[bool]) -> None:
        self.rows = torch.tensor([index for index, flag in enumerate(rows) if flag])
        self.eos = torch.tensor(list(EOS_IDS))

    def __call__(self, input_ids, scores):
        rows = self.rows.to(scores.device)
        scores[rows.unsqueeze(1), self.eos.to(scores.device)] = -float("inf")
        return scores


@dataclass
class NativeModel:
    """A native transformers model loaded for one of the runtimes, with its torch handles."""

    torch: object
    model: object
    device: object
    dtype: object


def load_native_model(
    folder: Path,
    kind: Kind,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str | None = None,
    threads: int | None = None,
) -> NativeModel:
    """`Qwen3ASRForConditionalGeneration` (asr) or `Qwen3ASRForTokenClassification` (aligner)
    from a checkpoint of either layout, on `device`, after checking that it can be done."""
    torch, transformers = import_torch()
    check_torch_device(torch, device)
    if dtype not in DTYPES:
        raise QwenScribeError(f"Unknown dtype {dtype!r}.", f"Use one of: {', '.join(DTYPES)}.")
    if threads:
        torch.set_num_threads(threads)
    config = read_config(folder)
    if detect_kind(config) != kind:
        wanted = "speech recognizer" if kind == "asr" else "forced aligner"
        raise ModelError(
            f"{folder} does not hold a Qwen3 {wanted}.",
            "Pass a Qwen3-ASR model for recognition, a Qwen3-ForcedAligner for word timing.",
        )
    options: dict = {"dtype": getattr(torch, dtype)}
    if attn_implementation:
        options["attn_implementation"] = attn_implementation
    if detect_layout(config) == "original":
        options["config"] = transformers.Qwen3ASRConfig(**hf_config_from_original(config))
        options["key_mapping"] = hf_key_mapping(kind)
    cls = (
        transformers.Qwen3ASRForConditionalGeneration
        if kind == "asr"
        else transformers.Qwen3ASRForTokenClassification
    )
    try:
        model = cls.from_pretrained(folder, **options)
    except (OSError, ValueError, ImportError) as error:
        raise ModelError(
            f"transformers cannot load the model in {folder} ({error}).",
            "Check the checkpoint files, or the attention implementation asked for.",
        ) from error
    target = torch.device(device)
    return NativeModel(torch, model.to(target).eval(), target, options["dtype"])


class NativeRuntime:
    """What both transformers runtimes share: the model of `kind` loaded from a checkpoint, and
    audio embeddings from its encoder."""

    name = "transformers"
    kind: Kind = "asr"

    def __init__(self, settings: TransformersSettings) -> None:
        native = load_native_model(
            settings.folder,
            self.kind,
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

    def close(self) -> None:
        self.model = None


class TransformersRuntime(NativeRuntime):
    kind: Kind = "asr"

    def _inputs(self, requests: Sequence[DecodeRequest]):
        """Left-padded prompt embeddings with the audio rows in place, and the attention mask."""
        torch = self.torch
        embed = self.model.get_input_embeddings()
        width = max(len(r.prompt_ids) for r in requests)
        rows, masks = [], []
        for request in requests:
            ids = torch.as_tensor(np.asarray(request.prompt_ids), device=self.device)
            row = embed(ids)
            audio_rows = ids == AUDIO_PAD_ID
            row[audio_rows] = torch.from_numpy(request.audio).to(self.device, row.dtype)
            pad = width - len(ids)
            rows.append(torch.cat([row.new_zeros(pad, row.shape[-1]), row]))
            masks.append(torch.cat([torch.zeros(pad), torch.ones(len(ids))]))
        return torch.stack(rows), torch.stack(masks).to(self.device, torch.long)

    def generate(
        self,
        requests: Sequence[DecodeRequest],
        sampling: Sampling = GREEDY,
        should_stop: StopCheck | None = None,
        on_token: TokenCallback | None = None,
    ) -> list[Generation]:
        if not requests:
            return []
        torch = self.torch
        watcher = _Watcher(torch, requests, None, should_stop, on_token)
        suppressed = [request.suppress_eos for request in requests]
        sample = sampling.temperature > 0
        started = time.perf_counter()
        with torch.inference_mode():
            embeds, mask = self._inputs(requests)
            if sample:
                torch.manual_seed(sampling.seed)
            self.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=max(1, max(r.max_new_tokens for r in requests)),
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=None,
                top_k=None,
                eos_token_id=list(EOS_IDS),
                pad_token_id=ENDOFTEXT_ID,
                logits_processor=[_SuppressEos(torch, suppressed)] if any(suppressed) else [],
                stopping_criteria=[watcher],
            )
        # The first stopping-criteria call comes right after the prefill's token.
        prefill_end = watcher.first_token_at or time.perf_counter()
        self.times.prefill_s += prefill_end - started
        self.times.generation_s += time.perf_counter() - prefill_end
        self.times.prefill_tokens += sum(len(r.prompt_ids) for r in requests)
        self.times.generated_tokens += sum(len(t) for t in watcher.tokens)
        return [
            Generation(tokens, finish or "length")
            for tokens, finish in zip(watcher.tokens, watcher.finish, strict=True)
        ]
