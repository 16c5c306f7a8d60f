"""Word timing with Qwen3-ForcedAligner, the same way on every runtime.

For one chunk of audio and its transcript (shared/REFERENCE.md, "Forced aligner"): the words by
the official rules (`core.words`), one input `<|audio_start|>` + the chunk's audio embeddings +
`<|audio_end|>` and, per word, its tokens and `<timestamp><timestamp>`; one forward pass scores
5000 classes at every `<timestamp>` (class k is k x 80 ms; even slots are word starts, odd slots
word ends); the official monotonic repair; then times on the file's timeline, with the
punctuation of the transcript put back into the words.

How much fits in one pass: the classes reach 5000 x 80 ms = 400 s, so a chunk of up to 400 s
can be timed (longer ones are refused: their ends could not be expressed); the engine's chunks
are 30 s at most by default. Words need no limit of their own: a 30-s chunk is ~390 audio
tokens and speech is ~3 words (~5-10 tokens) a second, far below the decoder's 65536 positions,
so every word of a chunk goes into the one pass, as in the official code.

A runtime (`AlignerRuntime`) only encodes mel features and scores the slots; everything else
is here, shared by the hybrid (`runtimes.aligner_hybrid`) and the transformers
(`runtimes.aligner_transformers`) runtimes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from tokenizers import Tokenizer

from qwenscribe.audio.decode import SAMPLE_RATE
from qwenscribe.audio.mel import log_mel_spectrogram
from qwenscribe.core.models import (
    ModelFiles,
    checkpoint_files,
    default_decoder_quant,
    hybrid_model_files,
)
from qwenscribe.core.transcript import Word
from qwenscribe.core.words import attach_punctuation, split_words
from qwenscribe.errors import InputError, ModelError
from qwenscribe.model.architecture import (
    TIMESTAMP_CLASSES,
    TIMESTAMP_SEGMENT_MS,
    audio_token_count,
)
from qwenscribe.model.prompt import language_name
from qwenscribe.model.resolve import DEFAULT_ALIGNER
from qwenscribe.model.tokens import (
    ALIGNER_LANGUAGES,
    AUDIO_END,
    AUDIO_PAD,
    AUDIO_START,
    TIMESTAMP,
)
from qwenscribe.runtimes.base import RuntimeTimes

log = logging.getLogger(__name__)

MAX_ALIGNED_S = TIMESTAMP_CLASSES * TIMESTAMP_SEGMENT_MS / 1000  # 400 s: the last class's reach

AlignerRuntimeName = Literal["hybrid", "transformers"]


class AlignerRuntime(Protocol):
    """What an aligner runtime does: encode audio, score the `<timestamp>` slots of one input."""

    name: str
    times: RuntimeTimes  # encoder_s; prefill_s / prefill_tokens for the scoring pass

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Audio embeddings [tokens, hidden] of one chunk's log-mel [128, frames]."""
        ...

    def score(self, prompt_ids: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Logits [number of `<timestamp>` in prompt_ids, 5000], in prompt order, of the input
        whose `<|audio_pad|>` positions `audio` fills in order."""
        ...

    def close(self) -> None: ...


# -- the input ------------


def aligner_prompt(n_audio_tokens: int, words: Sequence[str]) -> str:
    """The aligner's input text: no chat markup, the audio, each word and its two slots."""
    audio = AUDIO_START + AUDIO_PAD * n_audio_tokens + AUDIO_END
    return audio + "".join(word + TIMESTAMP + TIMESTAMP for word in words)


def aligner_input_ids(
    tokenizer: Tokenizer, n_audio_tokens: int, words: Sequence[str]
) -> np.ndarray:
    """Token ids of the aligner input. The whole text is tokenized at once, as the official
    chat template renders it; the special tokens between the words keep each word's tokens
    the same as if it were tokenized alone."""
    prompt = aligner_prompt(n_audio_tokens, words)
    return np.asarray(tokenizer.encode(prompt, add_special_tokens=False).ids, dtype=np.int64)


# -- classes to times ------------


def _longest_non_decreasing(values: np.ndarray) -> np.ndarray:
    """Mask of the longest non-decreasing subsequence, the official one among equals.

    The official code extends each value from the earliest predecessor with the longest chain,
    and ends at the earliest position where the longest chain ends; so does this (argmax takes
    the first maximum), which decides which of several equally long chains is kept.
    """
    count = len(values)
    length = np.ones(count, dtype=np.int64)
    parent = np.full(count, -1, dtype=np.int64)
    for index in range(1, count):
        eligible = np.where(values[:index] <= values[index], length[:index], 0)
        best = int(np.argmax(eligible))
        if eligible[best] > 0:
            length[index] = eligible[best] + 1
            parent[index] = best
    keep = np.zeros(count, dtype=bool)
    index = int(np.argmax(length))
    while index >= 0:
        keep[index] = True
        index = int(parent[index])
    return keep


def _fill_block(
    result: list[float], left: float | None, right: float | None, start: int, end: int
) -> None:
    """Replace the outliers result[start:end] from their kept neighbours' values.

    One or two outliers take the nearer neighbour's value (the left one on a tie); longer runs
    are spread evenly between the neighbours, or take the only neighbour there is.
    """
    count = end - start
    if left is None or right is None:
        for position in range(start, end):
            result[position] = right if left is None else left
    elif count <= 2:
        for position in range(start, end):
            nearer_left = position - (start - 1) <= end - position
            result[position] = left if nearer_left else right
    else:
        step = (right - left) / (count + 1)
        for position in range(start, end):
            result[position] = left + step * (position - start + 1)


def repair_timestamps(values_ms: Sequence[float]) -> list[int]:
    """The official monotonic repair of slot times (milliseconds), as whole milliseconds.

    The model may predict times out of order. The longest non-decreasing subsequence is kept;
    each run of other values is filled from its kept neighbours (see `_fill_block`); values are
    then truncated to whole milliseconds, as the official code does. The result never decreases.
    """
    values = np.asarray(values_ms, dtype=np.float64)
    if len(values) == 0:
        return []
    keep = _longest_non_decreasing(values)
    result = values.tolist()
    start = 0
    while start < len(result):
        if keep[start]:
            start += 1
            continue
        end = start
        while end < len(result) and not keep[end]:
            end += 1
        # The run is maximal, so its neighbours (where there are any) are kept values.
        left = result[start - 1] if start > 0 else None
        right = result[end] if end < len(result) else None
        _fill_block(result, left, right, start, end)
        start = end
    return [int(value) for value in result]


def slot_times_ms(classes: Sequence[int] | np.ndarray) -> list[int]:
    """Repaired times (ms) of the slots from their predicted classes (class k is k x 80 ms)."""
    return repair_timestamps(np.asarray(classes, dtype=np.float64) * TIMESTAMP_SEGMENT_MS)


def timed_words(
    display: Sequence[str], times_ms: Sequence[int], duration_s: float, offset_s: float
) -> list[Word]:
    """Words on the file's timeline: slot 2i is word i's start, slot 2i + 1 its end.

    Times are clamped to the chunk (0..duration_s; a model may place a word past the audio's
    end) and an end is never before its start; `offset_s` is where the chunk starts in the file.
    """
    if len(times_ms) != 2 * len(display):
        raise ValueError(f"{len(times_ms)} slot times for {len(display)} words")
    words = []
    for index, text in enumerate(display):
        start = min(max(times_ms[2 * index] / 1000, 0.0), duration_s)
        end = min(max(times_ms[2 * index + 1] / 1000, start), duration_s)
        words.append(Word(start=offset_s + start, end=offset_s + end, text=text))
    return words


# -- the aligner ------------


def supports_language(language: str | None) -> bool:
    """Whether the aligner was trained for `language` (a name or code); None: unknown, tried."""
    if language is None:
        return True
    try:
        return language_name(language) in ALIGNER_LANGUAGES
    except InputError:
        return False


def _check_language(language: str | None) -> None:
    if not supports_language(language):
        raise InputError(
            f"The forced aligner does not support {language!r}.",
            "It supports " + ", ".join(sorted(ALIGNER_LANGUAGES)) + "; turn word timing off "
            "for other languages.",
        )


class ForcedAligner:
    """Word times for chunks of audio and their transcripts.

    >>> aligner = ForcedAligner.load(AlignerConfig())
    >>> words = aligner.align(samples, "Hello, world.", "English", offset_s=12.0)
    """

    def __init__(self, runtime: AlignerRuntime, tokenizer: Tokenizer) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer

    @classmethod
    def load(
        cls, config: AlignerConfig | None = None, files: ModelFiles | None = None
    ) -> ForcedAligner:
        """An aligner on the runtime `config` names, its model found or converted as needed
        (`files`: found already, by `ForcedAligner.files`)."""
        from qwenscribe.model.tokenizer import load_tokenizer

        config = config or AlignerConfig()
        files = files or cls.files(config)
        return cls(_load_runtime(config, files), load_tokenizer(files.folder))

    @staticmethod
    def files(config: AlignerConfig) -> ModelFiles:
        """The files the runtime `config` names reads: converted (hybrid) or downloaded first
        where need be."""
        if config.runtime == "hybrid":
            quant = config.decoder_file_quant
            return aligner_model_files(config.model, config.encoder_precision, quant)
        if config.runtime == "transformers":
            return aligner_checkpoint_files(config.model)
        raise InputError(f"Unknown runtime {config.runtime!r}.", "Use 'hybrid' or 'transformers'.")

    def scores(self, samples: np.ndarray, words: Sequence[str]) -> np.ndarray:
        """The aligner's logits [2 x len(words), 5000] for the chunk `samples` (16 kHz)."""
        mel = log_mel_spectrogram(samples)
        audio = self.runtime.encode(mel)
        if len(audio) != audio_token_count(mel.shape[1]):
            raise ModelError(
                f"The aligner's encoder gave {len(audio)} audio embeddings for "
                f"{mel.shape[1]} mel frames, not {audio_token_count(mel.shape[1])}.",
                "The model files are damaged; convert the aligner again.",
            )
        ids = aligner_input_ids(self.tokenizer, len(audio), words)
        logits = self.runtime.score(ids, audio)
        if logits.shape != (2 * len(words), TIMESTAMP_CLASSES):
            raise ModelError(
                f"The aligner scored {logits.shape} for {len(words)} words.",
                "Use a Qwen3-ForcedAligner model.",
            )
        return logits

    def align(
        self,
        samples: np.ndarray,
        text: str,
        language: str | None = None,
        offset_s: float = 0.0,
    ) -> list[Word]:
        """Timed words of `text` in the chunk `samples` (16 kHz mono), which starts at
        `offset_s` in the file. Punctuation is attached to the words; no words, no times."""
        _check_language(language)
        duration_s = len(samples) / SAMPLE_RATE
        if duration_s > MAX_ALIGNED_S:
            raise InputError(
                f"A chunk of {duration_s:.0f} s is too long to align: the aligner's times reach "
                f"{MAX_ALIGNED_S:.0f} s.",
                f"Use chunks of at most {MAX_ALIGNED_S:.0f} s (max_chunk_s).",
            )
        words = split_words(text, language)
        if not words or len(samples) == 0:
            return []
        display = attach_punctuation(text, words)
        classes = self.scores(samples, words).argmax(axis=1)
        return timed_words(display, slot_times_ms(classes), duration_s, offset_s)

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> ForcedAligner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- model files and runtimes ------------


@dataclass(frozen=True)
class AlignerConfig:
    """How to run the aligner. Defaults suit a CPU (like the engine's)."""

    model: str = DEFAULT_ALIGNER  # short name, hub id, checkpoint folder or converted folder
    runtime: AlignerRuntimeName = "hybrid"
    device: str = "cpu"
    threads: int | None = None
    # hybrid runtime. quant: the decoder's file, an ONNX precision (ONNX Runtime) or a GGUF
    # quantization (llama.cpp); None: `core.models.default_decoder_quant(device)`.
    quant: str | None = None
    encoder_precision: str = "int8"
    flash_attention: bool | None = None
    exact_kv_cache: bool = False  # f32 keys/values in llama.cpp (parity tests; slower)
    # transformers runtime
    dtype: str = "float32"
    attn_implementation: str | None = None

    @property
    def decoder_file_quant(self) -> str:
        """The decoder file the hybrid runtime opens: quant, or the device's default."""
        return self.quant or default_decoder_quant(self.device)


def aligner_model_files(
    model: str = DEFAULT_ALIGNER, precision: str = "int8", quant: str = "int8"
) -> ModelFiles:
    """The converted aligner folder for `model`, converting a checkpoint once into the cache."""
    return hybrid_model_files(model, precision, quant, kind="aligner")


def aligner_checkpoint_files(model: str = DEFAULT_ALIGNER) -> ModelFiles:
    """The aligner checkpoint for the transformers runtime (it cannot read converted files)."""
    return checkpoint_files(model, kind="aligner")


def _load_runtime(config: AlignerConfig, files: ModelFiles) -> AlignerRuntime:
    if config.runtime == "hybrid":
        from qwenscribe.runtimes.aligner_hybrid import HybridAligner, HybridAlignerSettings

        settings = HybridAlignerSettings(
            folder=files.folder,
            quant=config.decoder_file_quant,
            encoder_precision=config.encoder_precision,
            device=config.device,
            threads=config.threads,
            flash_attention=config.flash_attention,
            f32_kv_cache=config.exact_kv_cache,
        )
        return HybridAligner(settings)
    from qwenscribe.runtimes.aligner_transformers import (
        TransformersAligner,
        TransformersAlignerSettings,
    )

    settings = TransformersAlignerSettings(
        folder=files.folder,
        device=config.device,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
        threads=config.threads,
    )
    return TransformersAligner(settings)
