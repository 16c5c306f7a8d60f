"""A scripted Runtime for engine and pipeline tests (no model: answers are token ids the test
chooses), following the Runtime protocol the way the real runtimes do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qwenscribe.model.architecture import audio_token_count
from qwenscribe.runtimes.base import (
    GREEDY,
    DecodeRequest,
    Generation,
    RuntimeTimes,
    Sampling,
    StopCheck,
    TokenCallback,
)

HIDDEN = 16
# shared/REFERENCE.md, "Tokens and prompt"
IM_END, ENDOFTEXT, AUDIO_PAD = 151645, 151643, 151676

Script = Callable[[int, float], Iterable[int]]  # (chunk number, temperature) -> token ids


@dataclass
class Call:
    requests: list[DecodeRequest]
    sampling: Sampling
    generations: list[Generation] = field(default_factory=list)


class ScriptedRuntime:
    """A Runtime that answers scripted token streams and records what it was given.

    `encode` returns one row per audio token (the project's count for the mel it receives),
    every value equal to the number of the chunk (0, 1, 2... in encode order), so `generate`
    knows which chunk a request is for from its last audio row. A script may be endless: then
    only `should_stop` or the token budget ends the sequence; `max_tokens` is a safety cap so a
    broken guard fails the test instead of hanging it.
    """

    name = "scripted"
    hidden_size = HIDDEN

    def __init__(self, script: Script, max_tokens: int = 100_000) -> None:
        self.script = script
        self.max_tokens = max_tokens
        self.times = RuntimeTimes()
        self.mels: list[np.ndarray] = []
        self.calls: list[Call] = []
        self.stop_answers: list[bool] = []
        self.closed = False

    def encode(self, mel: np.ndarray) -> np.ndarray:
        assert mel.shape[0] == 128, mel.shape  # [mel bins, frames]
        chunk = len(self.mels)
        self.mels.append(mel)
        self.times.encoder_s += 0.01 + 0.001 * mel.shape[1] / 100
        return np.full((audio_token_count(mel.shape[1]), HIDDEN), float(chunk), np.float32)

    def generate(
        self,
        requests: Sequence[DecodeRequest],
        sampling: Sampling = GREEDY,
        should_stop: StopCheck | None = None,
        on_token: TokenCallback | None = None,
    ) -> list[Generation]:
        call = Call(list(requests), sampling)
        self.calls.append(call)
        for request in requests:
            pads = int(np.count_nonzero(np.asarray(request.prompt_ids) == AUDIO_PAD))
            assert pads == len(request.audio), "one audio row per <|audio_pad|>"
        self.times.prefill_s += 1e-4 * sum(len(r.prompt_ids) for r in requests)
        self.times.prefill_tokens += sum(len(r.prompt_ids) for r in requests)
        streams = [iter(self.script(int(r.audio[-1, 0]), sampling.temperature)) for r in requests]
        results = [Generation([], "length") for _ in requests]
        active = [row for row, r in enumerate(requests) if r.max_new_tokens > 0]
        while active:
            still = []
            for row in active:
                result = results[row]
                token = next(streams[row], None)
                assert token is not None, "a script must end with EOS or never end"
                if token in (IM_END, ENDOFTEXT):
                    result.finish = "eos"
                    continue
                result.tokens.append(token)
                assert len(result.tokens) <= self.max_tokens, "the sequence was never stopped"
                self.times.generation_s += 1e-3
                self.times.generated_tokens += 1
                if on_token is not None:
                    on_token(row, token)
                if should_stop is not None:
                    stop = should_stop(row, result.tokens)
                    self.stop_answers.append(stop)
                    if stop:
                        result.finish = "stopped"
                        continue
                if len(result.tokens) < requests[row].max_new_tokens:
                    still.append(row)
            active = still
        call.generations = list(results)  # the caller may reuse the list it is given
        return results

    def close(self) -> None:
        self.closed = True

    @property
    def requests(self) -> list[DecodeRequest]:
        return [request for call in self.calls for request in call.requests]
