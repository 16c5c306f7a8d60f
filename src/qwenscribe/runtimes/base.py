"""What every runtime does, and nothing more: encode audio, continue prompts.

Prompt building, chunking, language handling, repetition guards and retries live once, in the
engine (`qwenscribe.core.engine`); a runtime only turns mel features into audio embeddings and
continues a batch of token sequences whose `<|audio_pad|>` positions are filled by those
embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from qwenscribe.model.tokens import EOS_IDS

FinishReason = Literal["eos", "length", "stopped"]

# Called after each generated token with (request index, tokens so far); True stops that sequence.
StopCheck = Callable[[int, Sequence[int]], bool]
# Called with (request index, token id) for each generated token, in decoding order.
TokenCallback = Callable[[int, int], None]


@dataclass
class DecodeRequest:
    """One sequence to continue: prompt ids whose audio placeholders `audio` fills in order."""

    prompt_ids: np.ndarray  # int64 [n]
    audio: np.ndarray  # float32 [number of <|audio_pad|> in prompt_ids, decoder hidden]
    max_new_tokens: int
    # Benchmarks: end-of-sequence is never chosen, so the sequence decodes its whole budget and
    # every runtime does the same work whatever the (random) weights would say.
    suppress_eos: bool = False


@dataclass
class Generation:
    tokens: list[int]  # generated ids, end-of-sequence token excluded
    finish: FinishReason


@dataclass(frozen=True)
class Sampling:
    """Greedy at temperature 0; otherwise softmax sampling with a seeded generator."""

    temperature: float = 0.0
    seed: int = 0


GREEDY = Sampling()


@dataclass
class RuntimeTimes:
    """Seconds and token counts a runtime accumulated; the engine reads and resets them."""

    encoder_s: float = 0.0
    prefill_s: float = 0.0
    generation_s: float = 0.0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Runtime(Protocol):
    name: str
    hidden_size: int
    times: RuntimeTimes

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Audio embeddings [tokens, hidden] of one chunk's log-mel [128, frames]."""
        ...

    def generate(
        self,
        requests: Sequence[DecodeRequest],
        sampling: Sampling = GREEDY,
        should_stop: StopCheck | None = None,
        on_token: TokenCallback | None = None,
    ) -> list[Generation]:
        """Continue every request (as parallel sequences where the runtime can)."""
        ...

    def close(self) -> None: ...


def is_eos(token: int) -> bool:
    return token in EOS_IDS


def suppress_eos(scores: np.ndarray, rows: Sequence[bool]) -> np.ndarray:
    """`scores` [rows, vocab] with the end-of-sequence ids out of reach in the flagged rows."""
    if any(rows):
        scores = scores.copy()
        scores[np.ix_(np.flatnonzero(rows), list(EOS_IDS))] = -np.inf
    return scores


def choose_tokens(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Next token per row of `logits` [rows, vocab]: argmax, or a temperature sample."""
    if sampling.temperature <= 0.0:
        return np.argmax(logits, axis=-1)
    scaled = logits.astype(np.float64) / sampling.temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(row), p=row) for row in probabilities])
