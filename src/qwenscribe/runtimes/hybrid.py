"""The hybrid runtime: ONNX Runtime for the audio encoder; llama.cpp (a GGUF decoder) or ONNX
Runtime (an ONNX decoder, `onnx_decoder.OnnxSequences`) for the text decoder.

Both decoders decode several prompts side by side as parallel sequences, behind the same three
calls (`start`: prefill every prompt; `step`: one new token of each unfinished sequence;
`finish`: drop sequences), so the generation loop here serves both.

On llama.cpp a prompt mixes token ids and audio embeddings, but a batch holds one or the other,
so a prompt is fed as pieces in order (text, audio, text, ...) at consecutive positions of its
sequence; the KV cache makes that the same computation as one mixed batch. The sequences share
one context: each llama_decode call carries pieces of every sequence.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from qwenscribe.convert.gguf_decoder import decoder_filename
from qwenscribe.convert.onnx_graph import PRECISIONS
from qwenscribe.errors import ModelError
from qwenscribe.model.tokens import AUDIO_PAD_ID
from qwenscribe.runtimes.base import (
    GREEDY,
    DecodeRequest,
    Generation,
    RuntimeTimes,
    Sampling,
    StopCheck,
    TokenCallback,
    choose_tokens,
    is_eos,
    suppress_eos,
)
from qwenscribe.runtimes.devices import HybridPlacement, hybrid_placement
from qwenscribe.runtimes.llama_decoder import (
    ContextCache,
    ContextSettings,
    LlamaContext,
    LlamaModel,
)
from qwenscribe.runtimes.onnx_decoder import OnnxDecoder, OnnxSequences
from qwenscribe.runtimes.onnx_encoder import OnnxAudioEncoder


@dataclass(frozen=True)
class HybridSettings:
    folder: Path  # a converted folder (qwenscribe convert)
    decoder_quant: str = "int8"  # an ONNX precision (ONNX Runtime) or a GGUF quantization
    encoder_precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    n_batch: int = 512
    flash_attention: bool | None = None
    f32_kv_cache: bool = False
    # Close the encoder's sessions while the decoder runs (the engine's low-memory mode): their
    # weights and arenas (~270 MB for the 0.6B int8 encoder after a 30-s chunk) leave the peak,
    # for ~0.1-0.2 s to open them again at the next batch's first chunk.
    release_encoder: bool = False


@dataclass
class _Piece:
    """A run of one sequence's prompt: token ids or audio embeddings, from position `start`."""

    start: int
    token_ids: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.token_ids if self.token_ids is not None else self.embeddings)


def prompt_pieces(request: DecodeRequest) -> list[_Piece]:
    """Split a prompt at the edges of its audio placeholder runs."""
    ids = np.asarray(request.prompt_ids)
    is_audio = ids == AUDIO_PAD_ID
    if int(is_audio.sum()) != len(request.audio):
        raise ValueError(
            f"prompt has {int(is_audio.sum())} audio placeholders for {len(request.audio)} rows"
        )
    edges = [0, *(np.flatnonzero(np.diff(is_audio.astype(np.int8))) + 1).tolist(), len(ids)]
    pieces, audio_row = [], 0
    for start, end in itertools.pairwise(edges):
        if is_audio[start]:
            rows = request.audio[audio_row : audio_row + end - start]
            audio_row += end - start
            pieces.append(_Piece(start, embeddings=rows))
        else:
            pieces.append(_Piece(start, token_ids=ids[start:end]))
    return pieces


class SequenceDecoder(Protocol):
    """What the generation loop needs of a decoder (see the module's docstring)."""

    path: Path
    hidden_size: int

    def start(self, requests: Sequence[DecodeRequest]) -> list[np.ndarray]: ...

    def step(self, seqs: Sequence[int], token_ids: Sequence[int]) -> list[np.ndarray]: ...

    def finish(self, seqs: Sequence[int]) -> None: ...

    def close(self) -> None: ...


class LlamaSequences:
    """Prompts decoded side by side as parallel sequences of one llama.cpp context."""

    def __init__(self, model: LlamaModel, settings: ContextSettings) -> None:
        self.model = model
        self.path = model.path
        self.hidden_size = model.n_embd
        self._contexts = ContextCache(model, settings)
        self._ctx: LlamaContext | None = None
        self._positions: list[int] = []

    def start(self, requests: Sequence[DecodeRequest]) -> list[np.ndarray]:
        needed = sum(len(r.prompt_ids) + r.max_new_tokens for r in requests)
        self._ctx = self._contexts.get(len(requests), needed)
        self._positions = [len(r.prompt_ids) for r in requests]
        return self._prefill(self._ctx, requests)

    def _prefill(self, ctx: LlamaContext, requests: Sequence[DecodeRequest]) -> list[np.ndarray]:
        """Feed every prompt; the logits after each prompt's last token."""
        pieces = [prompt_pieces(request) for request in requests]
        last_logits: list[np.ndarray | None] = [None] * len(requests)
        for round_index in range(max(len(p) for p in pieces)):
            # Text rows and embedding rows of this round go in separate batches.
            for want_audio in (False, True):
                rows = [
                    (seq, piece, offset)
                    for seq, seq_pieces in enumerate(pieces)
                    if round_index < len(seq_pieces)
                    and ((piece := seq_pieces[round_index]).embeddings is not None) == want_audio
                    for offset in range(len(piece))
                ]
                for first in range(0, len(rows), ctx.settings.n_batch):
                    part = rows[first : first + ctx.settings.n_batch]
                    is_last = [
                        round_index == len(pieces[seq]) - 1 and offset == len(piece) - 1
                        for seq, piece, offset in part
                    ]
                    positions = [piece.start + offset for _, piece, offset in part]
                    seqs = [seq for seq, _, _ in part]
                    if want_audio:
                        logits = ctx.decode(
                            seqs,
                            positions,
                            is_last,
                            embeddings=np.stack([p.embeddings[o] for _, p, o in part]),
                        )
                    else:
                        logits = ctx.decode(
                            seqs,
                            positions,
                            is_last,
                            token_ids=[int(p.token_ids[o]) for _, p, o in part],
                        )
                    for row, values in logits.items():
                        last_logits[seqs[row]] = values
        return last_logits  # type: ignore[return-value]

    def step(self, seqs: Sequence[int], token_ids: Sequence[int]) -> list[np.ndarray]:
        positions = [self._positions[seq] for seq in seqs]
        logits = self._ctx.decode(seqs, positions, [True] * len(seqs), token_ids=token_ids)
        for seq in seqs:
            self._positions[seq] += 1
        return [logits[row] for row in range(len(seqs))]

    def finish(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._ctx.forget(seq)

    def close(self) -> None:
        self._contexts.close()
        self.model.close()


class HybridRuntime:
    name = "hybrid"

    def __init__(self, settings: HybridSettings) -> None:
        self.settings = settings
        placement = hybrid_placement(settings.device, settings.threads)
        self.threads = placement.threads
        self.decoder = self._open_decoder(settings.folder, settings.decoder_quant, placement)
        self.hidden_size = self.decoder.hidden_size
        self.encoder = OnnxAudioEncoder(
            settings.folder, settings.encoder_precision, placement.provider, self.threads
        )
        self.times = RuntimeTimes()

    def _open_decoder(
        self, folder: Path, quant: str, placement: HybridPlacement
    ) -> SequenceDecoder:
        """The decoder file `quant` names: an ONNX precision on ONNX Runtime, else a GGUF."""
        if quant in PRECISIONS:
            return OnnxSequences(OnnxDecoder(folder, quant, self.threads))
        gguf = folder / decoder_filename(quant)
        if not gguf.is_file():
            raise ModelError(f"{folder} has no decoder file {gguf.name}.", "Convert it again.")
        context = ContextSettings(
            threads=self.threads,
            n_batch=self.settings.n_batch,
            flash_attention=self.settings.flash_attention,
            f32_kv_cache=self.settings.f32_kv_cache,
        )
        return LlamaSequences(LlamaModel(gguf, placement.gpu_layers), context)

    # -- encoder ---------------------------------------------------------------------------------

    def encode(self, mel: np.ndarray) -> np.ndarray:
        before = self.encoder.seconds
        embeddings = self.encoder.encode(mel)
        self.times.encoder_s += self.encoder.seconds - before
        return embeddings

    # -- decoder ---------------------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[DecodeRequest],
        sampling: Sampling = GREEDY,
        should_stop: StopCheck | None = None,
        on_token: TokenCallback | None = None,
    ) -> list[Generation]:
        if not requests:
            return []
        rng = np.random.default_rng(sampling.seed)
        if self.settings.release_encoder:
            self.encoder.release()

        started = time.perf_counter()
        logits = self.decoder.start(requests)
        self.times.prefill_s += time.perf_counter() - started
        self.times.prefill_tokens += sum(len(r.prompt_ids) for r in requests)

        started = time.perf_counter()
        results = [Generation([], "length") for _ in requests]
        active = list(range(len(requests)))
        while active:
            scores = np.stack([logits[seq] for seq in active])
            if np.isnan(scores).any():  # damaged weights: argmax picks garbage, sampling fails
                raise ModelError(
                    f"The decoder {self.decoder.path} produced NaN scores: the file is damaged.",
                    "Convert the model again.",
                )
            scores = suppress_eos(scores, [requests[seq].suppress_eos for seq in active])
            chosen = choose_tokens(scores, sampling, rng)
            still = []
            for seq, token in zip(active, chosen.tolist(), strict=True):
                result = results[seq]
                if requests[seq].max_new_tokens <= 0:
                    continue
                if is_eos(token):
                    result.finish = "eos"
                    continue
                result.tokens.append(token)
                if on_token is not None:
                    on_token(seq, token)
                if should_stop is not None and should_stop(seq, result.tokens):
                    result.finish = "stopped"
                elif len(result.tokens) < requests[seq].max_new_tokens:
                    still.append(seq)
            self.decoder.finish([seq for seq in active if seq not in still])
            if not still:
                break
            step = self.decoder.step(still, [results[seq].tokens[-1] for seq in still])
            for seq, values in zip(still, step, strict=True):
                logits[seq] = values
            active = still
        self.times.generation_s += time.perf_counter() - started
        self.times.generated_tokens += sum(len(r.tokens) for r in results)
        return results

    def close(self) -> None:
        self.decoder.close()
        self.encoder.close()
