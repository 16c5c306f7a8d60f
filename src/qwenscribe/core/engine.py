"""The transcription engine: audio in, timed text out, the same way on every runtime.

Per input: decode to 16 kHz mono, optionally find speech with the VAD, plan chunks that end in
silences. Per chunk: log-mel, audio embeddings from the runtime, the official prompt, decoding
with a token budget scaled to the chunk's length. Chunks of one or several inputs are decoded as
parallel sequences; the repetition guard stops a looping sequence early and retries it with
sampling at rising temperatures before falling back to the official repetition collapse.

Memory stays flat as inputs grow: an input's samples are held while its chunks are decoded, but
mel features, embeddings and the KV cache only ever exist for the chunks in flight.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Union

import numpy as np
from tokenizers import Tokenizer

from qwenscribe.audio.decode import SAMPLE_RATE, decode_audio
from qwenscribe.audio.mel import log_mel_spectrogram
from qwenscribe.audio.vad import SileroVAD, VADOptions
from qwenscribe.core.align import MAX_ALIGNED_S, AlignerConfig, ForcedAligner, supports_language
from qwenscribe.core.chunking import Chunk, plan_chunks
from qwenscribe.core.models import (
    ModelFiles,
    checkpoint_files,
    default_decoder_quant,
    hybrid_model_files,
)
from qwenscribe.core.repetition import repeating_tail
from qwenscribe.core.resources import peak_rss_mb, release_freed_memory
from qwenscribe.core.transcript import ChunkRecord, Segment, Stats, Transcript, Word, main_language
from qwenscribe.errors import InputError, QwenScribeError
from qwenscribe.model.architecture import audio_token_count
from qwenscribe.model.prompt import (
    Exchange,
    answer_prefix,
    asr_prompt_ids,
    forced_language,
    parse_answer,
)
from qwenscribe.model.resolve import DEFAULT_MODEL
from qwenscribe.model.tokenizer import load_tokenizer
from qwenscribe.runtimes.base import GREEDY, DecodeRequest, Generation, Runtime, Sampling
from qwenscribe.runtimes.devices import device_kind

log = logging.getLogger(__name__)

# The text decoder's positions (max_position_embeddings of both released sizes).
TEXT_POSITIONS = 65536
# The system, user and assistant turns' own tokens around the context and the audio.
PROMPT_TEMPLATE_TOKENS = 32
# Beyond this the context costs noticeable time: it is prefilled again with every chunk.
LONG_CONTEXT_TOKENS = 1000
REPLACEMENT_CHARACTER = "\ufffd"  # what the bytes of an incomplete character decode to

AudioInput = Union[str, Path, bytes, tuple[np.ndarray, int]]  # noqa: UP007 (a runtime alias)
RuntimeName = Literal["hybrid", "transformers"]


@dataclass
class ASREngineConfig:
    """Everything that shapes how the engine runs. Defaults suit a CPU."""

    model: str = DEFAULT_MODEL  # short name, hub id, checkpoint folder or converted folder
    runtime: RuntimeName = "hybrid"
    device: str = "cpu"  # hybrid: cpu/cuda/directml/coreml; transformers: cpu/cuda[:n]/mps
    threads: int | None = None  # None: every core
    # hybrid runtime. decoder_quant: the decoder's file, an ONNX precision (int8, fp32...: ONNX
    # Runtime) or a GGUF quantization (q8_0, f16...: llama.cpp); None: int8 on a CPU, q8_0 on a
    # GPU (core.models.default_decoder_quant).
    decoder_quant: str | None = None
    encoder_precision: str = "int8"
    flash_attention: bool | None = None  # llama.cpp; None lets it decide
    exact_kv_cache: bool = False  # f32 keys/values in llama.cpp (parity tests; slower)
    # transformers runtime
    dtype: str = "float32"
    attn_implementation: str | None = None
    # audio and chunking
    vad: bool = True
    vad_options: VADOptions = field(default_factory=VADOptions)
    max_chunk_s: float = 30.0
    memory: bool = False  # carry the previous chunk's audio and text into the next prompt
    # word timing (Qwen3-ForcedAligner, same runtime and device)
    align: bool = False
    # One model in memory at a time: a call's inputs are recognized first, then the recognizer is
    # released and the aligner loaded for their word times (and released in turn; the next call
    # loads the recognizer again); the recognizer's encoder is closed while its decoder runs.
    # Peak memory of one model instead of two, ~2 s of loading a call, and segments arrive
    # (with their words) only after the whole call is recognized.
    low_memory: bool = False
    aligner_model: str = "aligner"
    # The aligner decoder's file, as decoder_quant; None: the same default.
    aligner_quant: str | None = None
    aligner_encoder_precision: str = "int8"
    # decoding
    parallel_sequences: int = 4
    tokens_per_second: float = 10.0  # token budget per second of chunk audio...
    min_new_tokens: int = 32  # ...plus this (the language header and short chunks)
    repetition_guard: bool = True
    # Benchmarks only: end-of-sequence is suppressed, so every chunk decodes its whole budget
    # (tokens_per_second x seconds + min_new_tokens) and runtimes compare on the same work.
    decode_full_budget: bool = False
    fallback_temperatures: tuple[float, ...] = (0.2, 0.4, 0.6)
    seed: int = 0

    def validate(self) -> None:
        if self.runtime not in ("hybrid", "transformers"):
            raise InputError(
                f"Unknown runtime {self.runtime!r}.", "Use 'hybrid' or 'transformers'."
            )
        if self.parallel_sequences < 1:
            raise InputError(
                f"parallel_sequences must be 1 or more, not {self.parallel_sequences}.",
                "Use 1 to decode one chunk at a time.",
            )
        if self.max_chunk_s < 1.0:
            raise InputError(
                f"max_chunk_s must be at least 1 second, not {self.max_chunk_s}.",
                "Use 1 s or more (the default is 30 s).",
            )
        if self.tokens_per_second <= 0 or self.min_new_tokens < 1:
            raise InputError(
                "tokens_per_second and min_new_tokens must be positive.",
                "Leave them at their defaults unless you are measuring the decoder.",
            )
        if self.threads is not None and self.threads < 1:
            raise InputError(
                f"threads must be 1 or more, not {self.threads}.",
                "Leave it unset to use every core.",
            )
        if self.align and self.max_chunk_s > MAX_ALIGNED_S:
            raise InputError(
                f"With word timing, chunks can be at most {MAX_ALIGNED_S:.0f} s long (the "
                f"aligner's reach), not {self.max_chunk_s:g} s.",
                "Lower max_chunk_s.",
            )

    @property
    def decoder_file_quant(self) -> str:
        """The decoder file the hybrid runtime opens: decoder_quant, or the device's default."""
        return self.decoder_quant or default_decoder_quant(self.device)

    def aligner_config(self) -> AlignerConfig:
        return AlignerConfig(
            model=self.aligner_model,
            runtime=self.runtime,
            device=self.device,
            threads=self.threads,
            quant=self.aligner_quant,
            encoder_precision=self.aligner_encoder_precision,
            flash_attention=self.flash_attention,
            exact_kv_cache=self.exact_kv_cache,
            dtype=self.dtype,
            attn_implementation=self.attn_implementation,
        )


# -- streaming events ------------


@dataclass(frozen=True)
class TextDelta:
    """New text of a chunk as it is decoded. Provisional: a retried chunk starts over."""

    input_index: int
    chunk_index: int
    text: str


@dataclass(frozen=True)
class ChunkRetried:
    """The chunk looped or ran out of budget; its text so far is void, a retry follows."""

    input_index: int
    chunk_index: int
    temperature: float


@dataclass(frozen=True)
class SegmentReady:
    input_index: int
    chunk_index: int
    segment: Segment | None  # None: the chunk held no speech


@dataclass(frozen=True)
class TranscriptReady:
    input_index: int
    transcript: Transcript


StreamEvent = Union[TextDelta, ChunkRetried, SegmentReady, TranscriptReady]  # noqa: UP007
Emit = Callable[[StreamEvent], None]


class CancelledError(QwenScribeError):
    """The caller stopped the transcription (closed the stream)."""


# -- work items ------------


@dataclass
class _Input:
    index: int
    name: str
    samples: np.ndarray
    chunks: list[Chunk]
    stats: Stats
    offset_s: float = 0.0  # where the decoded window starts in the file (start=)
    segments: dict[int, Segment | None] = field(default_factory=dict)
    records: dict[int, ChunkRecord] = field(default_factory=dict)
    history: tuple[Exchange, np.ndarray] | None = None  # memory mode: the previous chunk


@dataclass
class _Job:
    owner: _Input
    index: int
    chunk: Chunk
    request: DecodeRequest | None = None
    prefix: str = ""  # forced-language header, part of the answer but not generated
    n_audio_tokens: int = 0
    embeddings: np.ndarray | None = None


def describe_input(audio: AudioInput) -> str:
    """How an input is named in transcripts and messages."""
    if isinstance(audio, (str, Path)):
        return str(audio)
    return "<bytes>" if isinstance(audio, bytes) else "<samples>"


def _own_seconds(stats: Stats) -> float:
    """Time spent on one input alone (not shared with the inputs decoded beside it)."""
    return stats.decode_s + stats.vad_s + stats.mel_s + stats.align_s


def _trim_loop(tokens: list[int]) -> list[int]:
    """Keep one copy of the pattern a looping sequence ended in."""
    period = repeating_tail(tokens)
    if period is None:
        return tokens
    while len(tokens) >= 2 * period and tokens[-period:] == tokens[-2 * period : -period]:
        tokens = tokens[:-period]
    return tokens


class QwenASREngine:
    """Speech recognition with Qwen3-ASR on the hybrid or the transformers runtime.

    >>> engine = QwenASREngine(ASREngineConfig(model="0.6b"))
    >>> result = engine.transcribe("talk.mp4", language="en")
    >>> print(result.text, result.stats.real_time_factor)
    """

    def __init__(self, config: ASREngineConfig | None = None, **overrides: object) -> None:
        self.config = replace(config or ASREngineConfig(), **overrides)
        self.config.validate()
        started = time.perf_counter()
        self.runtime: Runtime | None
        self.aligner: ForcedAligner | None = None
        if self.config.align and not self.config.low_memory:
            self.runtime, self.aligner = self._load_both()
        else:
            self.runtime = self._load_runtime()
        self._owns_models = True  # loaded here, so they can be released and loaded again
        self.load_s = time.perf_counter() - started
        self._vad: SileroVAD | None = None
        self._unaligned_languages: set[str | None] = set()

    @classmethod
    def from_runtime(
        cls,
        runtime: Runtime,
        tokenizer: Tokenizer,
        config: ASREngineConfig | None = None,
        aligner: ForcedAligner | None = None,
    ) -> QwenASREngine:
        """An engine over a runtime made elsewhere (tests, custom runtimes); `config.model`
        and the runtime fields are then ignored."""
        engine = cls.__new__(cls)
        engine.config = config or ASREngineConfig()
        engine.config.validate()
        engine.runtime, engine.tokenizer = runtime, tokenizer
        engine.model_folder, engine.load_s, engine._vad = None, 0.0, None
        engine.aligner, engine._unaligned_languages = aligner, set()
        engine._owns_models = False
        return engine

    def _load_both(self) -> tuple[Runtime, ForcedAligner]:
        """The recognizer and the aligner; on a CPU with the hybrid runtime, side by side.

        Opening a model is mostly single-threaded work in ONNX Runtime (checking the graph,
        packing weights): the 0.6B pair opens in 1.4-1.5 s side by side against 2.3-2.5 s one
        after the other (2 cores, warm). Files are converted first, one model at a time, as
        converting takes far more memory than loading. The transformers runtime and GPUs load
        one model after the other."""
        config = self.config
        aligner_config = config.aligner_config()
        if config.runtime != "hybrid" or device_kind(config.device) != "cpu":
            return self._load_runtime(), ForcedAligner.load(aligner_config)
        files = self._model_files()
        aligner_files = ForcedAligner.files(aligner_config)
        with ThreadPoolExecutor(1, thread_name_prefix="qwenscribe-load") as pool:
            aligner = pool.submit(ForcedAligner.load, aligner_config, aligner_files)
            runtime = self._load_runtime(files)
            return runtime, aligner.result()

    def _model_files(self) -> ModelFiles:
        """The recognizer's files: converted (hybrid) or downloaded first where need be."""
        config = self.config
        if config.runtime == "hybrid":
            quant = config.decoder_file_quant
            return hybrid_model_files(config.model, config.encoder_precision, quant)
        return checkpoint_files(config.model)

    def _load_runtime(self, files: ModelFiles | None = None) -> Runtime:
        config = self.config
        files = files or self._model_files()
        if config.runtime == "hybrid":
            from qwenscribe.runtimes.hybrid import HybridRuntime, HybridSettings

            quant = config.decoder_file_quant
            runtime: Runtime = HybridRuntime(
                HybridSettings(
                    folder=files.folder,
                    decoder_quant=quant,
                    encoder_precision=config.encoder_precision,
                    device=config.device,
                    threads=config.threads,
                    flash_attention=config.flash_attention,
                    f32_kv_cache=config.exact_kv_cache,
                    release_encoder=config.low_memory,
                )
            )
        else:
            from qwenscribe.runtimes.transformers_runtime import (
                TransformersRuntime,
                TransformersSettings,
            )

            runtime = TransformersRuntime(
                TransformersSettings(
                    folder=files.folder,
                    device=config.device,
                    dtype=config.dtype,
                    attn_implementation=config.attn_implementation,
                    threads=config.threads,
                )
            )
        self.model_folder = files.folder
        self.tokenizer = load_tokenizer(files.folder)
        return runtime

    # -- public API ------------

    def transcribe(
        self,
        audio: AudioInput,
        *,
        language: str | None = None,
        context: str = "",
        start: float = 0.0,
        duration: float | None = None,
    ) -> Transcript:
        """Transcribe one input: a media path, the bytes of a media file, or (samples, rate)."""
        return self.transcribe_many(
            [audio], language=language, context=context, start=start, duration=duration
        )[0]

    def transcribe_many(
        self,
        audios: Sequence[AudioInput],
        *,
        language: str | None = None,
        context: str = "",
        start: float = 0.0,
        duration: float | None = None,
    ) -> list[Transcript]:
        """Transcribe several inputs in one run; their chunks share the parallel sequences.

        Stage times are shared by the inputs decoded together; each transcript's stats hold its
        share in proportion to its audio length (decode, VAD and mel times are its own).
        """
        return self._run(list(audios), language, context, start, duration, emit=None)

    def transcribe_stream(
        self,
        audio: AudioInput,
        *,
        language: str | None = None,
        context: str = "",
        start: float = 0.0,
        duration: float | None = None,
    ) -> Iterator[StreamEvent]:
        """Yield text as it is decoded, then each segment, then the finished transcript."""
        return self.stream_many(
            [audio], language=language, context=context, start=start, duration=duration
        )

    def stream_many(
        self,
        audios: Sequence[AudioInput],
        *,
        language: str | None = None,
        context: str = "",
        start: float = 0.0,
        duration: float | None = None,
    ) -> Iterator[StreamEvent]:
        """`transcribe_many` as a stream of events (`TextDelta`, `ChunkRetried`,
        `SegmentReady`, `TranscriptReady`).

        Decoding runs in a worker thread (llama.cpp and onnxruntime release the GIL); closing
        the iterator early cancels the work.
        """
        audios = list(audios)
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        done = object()

        def work() -> None:
            try:
                self._run(audios, language, context, start, duration, events.put, cancel)
            except BaseException as error:  # handed to the consumer's thread
                events.put(error)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="qwenscribe-engine", daemon=True)
        worker.start()
        try:
            while (item := events.get()) is not done:
                if isinstance(item, CancelledError):
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            worker.join()

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
        if self.aligner is not None:
            self.aligner.close()
        release_freed_memory()

    def __enter__(self) -> QwenASREngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the run ------------

    def _run(
        self,
        audios: list[AudioInput],
        language: str | None,
        context: str,
        start: float,
        duration: float | None,
        emit: Emit | None,
        cancel: threading.Event | None = None,
    ) -> list[Transcript]:
        forced = forced_language(language)
        self._check_context(context)
        started = time.perf_counter()
        if self.runtime is None:  # released by the previous low-memory call
            self.runtime = self._load_runtime()
        deferred = self._aligns_afterwards()
        runtime_before = replace(self.runtime.times)
        results: list[Transcript | None] = [None] * len(audios)
        inputs: list[_Input] = []
        width = 1 if self.config.memory else self.config.parallel_sequences

        jobs = self._jobs(audios, start, duration, inputs)
        while True:
            if cancel is not None and cancel.is_set():
                raise CancelledError("The transcription was cancelled.")
            batch = list(itertools.islice(jobs, width))
            for owner in inputs:  # inputs with no chunks at all finish at once
                if results[owner.index] is None and not owner.chunks:
                    results[owner.index] = self._finish(owner, emit)
            if not batch:
                break
            self._decode_batch(batch, forced, context, emit, cancel)
            for job in batch:
                owner = job.owner
                if len(owner.segments) == len(owner.chunks) and not deferred:
                    results[owner.index] = self._finish(owner, emit)
                    owner.samples = np.empty(0, np.float32)  # free the audio early
        runtime_after = replace(self.runtime.times)
        if deferred:
            self._align_afterwards(inputs, results, emit, cancel)
        self._share_times(inputs, runtime_before, runtime_after, time.perf_counter() - started)
        return results  # type: ignore[return-value]

    def _token_budget(self, seconds: float) -> int:
        """The most tokens a chunk of `seconds` may generate."""
        return math.ceil(self.config.min_new_tokens + self.config.tokens_per_second * seconds)

    def _check_context(self, context: str) -> None:
        """Refuse a context that would push a chunk's prompt past the model's positions (before
        any work), and warn when it is long enough to slow every chunk: it is prefilled again
        with each one."""
        if not context:
            return
        count = len(self.tokenizer.encode(context, add_special_tokens=False).ids)
        chunk_s = self.config.max_chunk_s
        longest = audio_token_count(round(chunk_s * 100)) + self._token_budget(chunk_s)
        room = TEXT_POSITIONS - longest * (2 if self.config.memory else 1) - PROMPT_TEMPLATE_TOKENS
        if count > room:
            raise InputError(
                f"The context is {count} tokens long; with {chunk_s:g}-s chunks a prompt holds "
                f"at most {room}.",
                "Give names, terms and a short description, not a whole document.",
            )
        if count > LONG_CONTEXT_TOKENS:
            log.warning(
                "The context is %d tokens long: it is decoded again with every chunk, which "
                "slows transcription; names, terms and a short description are what help.",
                count,
            )

    def _aligns_afterwards(self) -> bool:
        """Low-memory word timing: align once the recognizer is released (models we own)."""
        return self.config.align and self.config.low_memory and self._owns_models

    def _align_afterwards(
        self,
        inputs: list[_Input],
        results: list[Transcript | None],
        emit: Emit | None,
        cancel: threading.Event | None,
    ) -> None:
        """Release the recognizer, load the aligner, time every recognized segment, finish the
        inputs in order, release the aligner."""
        log.info("low memory: releasing the recognizer, loading the aligner")
        self.runtime.close()
        self.runtime = None
        release_freed_memory()  # or the aligner loads on top of what the recognizer held
        self.aligner = ForcedAligner.load(self.config.aligner_config())
        try:
            for owner in inputs:
                if results[owner.index] is not None:  # no chunks: finished already
                    continue
                for index, chunk in enumerate(owner.chunks):
                    if cancel is not None and cancel.is_set():
                        raise CancelledError("The transcription was cancelled.")
                    segment = owner.segments[index]
                    if segment is not None:
                        segment.words = self._align(owner, chunk, segment)
                    if emit is not None:
                        emit(SegmentReady(owner.index, index, segment))
                results[owner.index] = self._finish(owner, emit)
                owner.samples = np.empty(0, np.float32)
        finally:
            self.aligner.close()
            self.aligner = None
            release_freed_memory()

    def _jobs(
        self, audios: list[AudioInput], start: float, duration: float | None, inputs: list[_Input]
    ) -> Iterator[_Job]:
        """Chunks of every input in order, decoding an input only when its chunks are needed."""
        for index, audio in enumerate(audios):
            owner = self._prepare(index, audio, start, duration)
            inputs.append(owner)
            for chunk_index, chunk in enumerate(owner.chunks):
                yield _Job(owner, chunk_index, chunk)

    def _prepare(
        self, index: int, audio: AudioInput, start: float, duration: float | None
    ) -> _Input:
        if not isinstance(audio, (str, Path, bytes, tuple)):
            raise InputError(
                f"Cannot transcribe a {type(audio).__name__}: pass a path, the bytes of a media "
                "file, or (samples, sample_rate).",
                "Wrap sample arrays as (samples, 16000) with their real rate.",
            )
        stats = Stats()
        clock = time.perf_counter()
        samples = decode_audio(audio, start=start, duration=duration)
        stats.decode_s = time.perf_counter() - clock
        stats.audio_s = len(samples) / SAMPLE_RATE
        speech = None
        if self.config.vad:
            clock = time.perf_counter()
            if self._vad is None:
                self._vad = SileroVAD(threads=self.config.threads or 1)
            speech = self._vad.speech_segments(samples, self.config.vad_options)
            stats.vad_s = time.perf_counter() - clock
        chunks = plan_chunks(samples, max_chunk_s=self.config.max_chunk_s, speech=speech)
        # A chunk shorter than one mel frame carries no audio token.
        chunks = [chunk for chunk in chunks if audio_token_count(chunk.num_samples // 160) > 0]
        stats.chunks = len(chunks)
        log.info(
            "%s: %.1f s of audio, %d chunks", describe_input(audio), stats.audio_s, len(chunks)
        )
        return _Input(index, describe_input(audio), samples, chunks, stats, offset_s=start)

    # -- one batch of chunks ------------

    def _encode(self, job: _Job, forced: str | None, context: str) -> None:
        owner = job.owner
        clock = time.perf_counter()
        mel = log_mel_spectrogram(owner.samples[job.chunk.start : job.chunk.end])
        owner.stats.mel_s += time.perf_counter() - clock
        embeddings = self.runtime.encode(mel)
        job.n_audio_tokens = len(embeddings)
        job.embeddings = embeddings
        history: tuple[Exchange, ...] = ()
        audio = embeddings
        if self.config.memory and owner.history is not None:
            exchange, previous = owner.history
            history = (exchange,)
            audio = np.concatenate([previous, embeddings])
        ids = np.asarray(
            asr_prompt_ids(
                self.tokenizer, len(embeddings), context=context, language=forced, history=history
            ),
            np.int64,
        )
        budget = self._token_budget(job.chunk.duration_s)
        job.prefix = answer_prefix(forced)
        job.request = DecodeRequest(ids, audio, budget, suppress_eos=self.config.decode_full_budget)

    def _decode_batch(
        self,
        batch: list[_Job],
        forced: str | None,
        context: str,
        emit: Emit | None,
        cancel: threading.Event | None,
    ) -> None:
        for job in batch:
            self._encode(job, forced, context)
        requests = [job.request for job in batch]
        streams = [_TextStream(self.tokenizer, job.prefix) for job in batch]

        def should_stop(row: int, tokens: Sequence[int]) -> bool:
            if cancel is not None and cancel.is_set():
                return True
            return self.config.repetition_guard and repeating_tail(tokens) is not None

        def on_token(rows: list[int]) -> Callable[[int, int], None]:
            def report(row: int, token: int) -> None:
                job = batch[rows[row]]
                text = streams[rows[row]].push(token)
                if emit is not None and text:
                    emit(TextDelta(job.owner.index, job.index, text))

            return report

        everyone = list(range(len(batch)))
        generations = self.runtime.generate(requests, GREEDY, should_stop, on_token(everyone))
        temperatures = [0.0] * len(batch)
        failing = [row for row, g in enumerate(generations) if g.finish != "eos"]
        if self.config.repetition_guard:
            for attempt, temperature in enumerate(self.config.fallback_temperatures, start=1):
                if not failing or (cancel is not None and cancel.is_set()):
                    break
                for row in failing:
                    batch[row].owner.stats.retries += 1
                    streams[row] = _TextStream(self.tokenizer, batch[row].prefix)
                    if emit is not None:
                        emit(ChunkRetried(batch[row].owner.index, batch[row].index, temperature))
                sampling = Sampling(temperature, self.config.seed + attempt)
                retried = self.runtime.generate(
                    [requests[row] for row in failing], sampling, should_stop, on_token(failing)
                )
                for row, generation in zip(failing, retried, strict=True):
                    if generation.finish == "eos":
                        generations[row], temperatures[row] = generation, temperature
                failing = [row for row in failing if generations[row].finish != "eos"]
        if cancel is not None and cancel.is_set():
            raise CancelledError("The transcription was cancelled.")
        for row, job in enumerate(batch):
            self._record(job, generations[row], temperatures[row], row in failing, emit)

    def _record(
        self,
        job: _Job,
        generation: Generation,
        temperature: float,
        failed: bool,
        emit: Emit | None,
    ) -> None:
        tokens = generation.tokens
        if failed and self.config.repetition_guard:
            tokens = _trim_loop(tokens)
            log.warning(
                "%s: the chunk at %.1f-%.1f s %s even at temperature %.1f; its text may be cut",
                job.owner.name,
                job.owner.offset_s + job.chunk.start_s,
                job.owner.offset_s + job.chunk.end_s,
                "looped" if generation.finish == "stopped" else "ran out of tokens",
                self.config.fallback_temperatures[-1] if self.config.fallback_temperatures else 0,
            )
        elif generation.finish == "length" and not self.config.decode_full_budget:
            log.warning(
                "%s: the chunk at %.1f-%.1f s reached its budget of %d tokens; its text may be cut",
                job.owner.name,
                job.owner.offset_s + job.chunk.start_s,
                job.owner.offset_s + job.chunk.end_s,
                job.request.max_new_tokens,
            )
        answer = job.prefix + self.tokenizer.decode(tokens, skip_special_tokens=True)
        if (failed or generation.finish == "length") and answer.endswith(REPLACEMENT_CHARACTER):
            # Cut mid-character (a multi-byte character spans tokens): its first bytes decode
            # to one U+FFFD, which no subtitle should show.
            answer = answer[: -len(REPLACEMENT_CHARACTER)]
        parsed = parse_answer(answer)
        segment = None
        if parsed.text:
            segment = Segment(
                start=job.owner.offset_s + job.chunk.start_s,
                end=job.owner.offset_s + job.chunk.end_s,
                text=parsed.text,
                language=parsed.language,
                tokens=list(generation.tokens),
                finish=generation.finish,
                temperature=temperature,
                truncated=failed or generation.finish == "length",
            )
        owner = job.owner
        deferred = self._aligns_afterwards()  # words, and the segment's event, come later
        if segment is not None and self.aligner is not None and not deferred:
            segment.words = self._align(owner, job.chunk, segment)
        owner.segments[job.index] = segment
        owner.records[job.index] = ChunkRecord(
            start=owner.offset_s + job.chunk.start_s,
            end=owner.offset_s + job.chunk.end_s,
            tokens=list(generation.tokens),
            finish=generation.finish,
            temperature=temperature,
            max_new_tokens=job.request.max_new_tokens,
        )
        if self.config.memory:
            answer_ids = (*self.tokenizer.encode(job.prefix, add_special_tokens=False).ids, *tokens)
            owner.history = (Exchange(job.n_audio_tokens, answer, answer_ids), job.embeddings)
        job.embeddings = None
        job.request = None
        if emit is not None and not deferred:
            emit(SegmentReady(owner.index, job.index, segment))

    def _align(self, owner: _Input, chunk: Chunk, segment: Segment) -> list[Word]:
        """Word times for a segment, or none when the aligner does not know its language."""
        if not supports_language(segment.language):
            if segment.language not in self._unaligned_languages:
                self._unaligned_languages.add(segment.language)
                log.warning(
                    "the forced aligner does not support %s: its cues are timed from the chunks",
                    segment.language or "text without a detected language",
                )
            return []
        clock = time.perf_counter()
        words = self.aligner.align(
            owner.samples[chunk.start : chunk.end],
            segment.text,
            segment.language,
            offset_s=owner.offset_s + chunk.start_s,
        )
        owner.stats.align_s += time.perf_counter() - clock
        return words

    def _finish(self, owner: _Input, emit: Emit | None) -> Transcript:
        segments = [owner.segments[i] for i in range(len(owner.chunks))]
        kept = [segment for segment in segments if segment is not None]
        transcript = Transcript(
            segments=kept,
            duration=owner.stats.audio_s,
            language=main_language(kept),
            source=owner.name,
            stats=owner.stats,
            chunks=[owner.records[i] for i in range(len(owner.chunks))],
            model=self.config.model,
            options=self._options(),
        )
        if emit is not None:
            emit(TranscriptReady(owner.index, transcript))
        return transcript

    def _options(self) -> dict:
        """The settings that shaped a transcript, as plain JSON-able values."""
        config = self.config
        return {
            "runtime": self.runtime.name if self.runtime is not None else config.runtime,
            "decoder_quant": config.decoder_file_quant if config.runtime == "hybrid" else None,
            "encoder_precision": config.encoder_precision if config.runtime == "hybrid" else None,
            "dtype": config.dtype if config.runtime == "transformers" else None,
            "vad": config.vad,
            "max_chunk_s": config.max_chunk_s,
            "memory": config.memory,
            "repetition_guard": config.repetition_guard,
            "align": config.align,
            "aligner_model": config.aligner_model if config.align else None,
            "low_memory": config.low_memory,
        }

    def _share_times(self, inputs: list[_Input], before, now, wall_s: float) -> None:
        """Give each input its share of the runtime's time (`now` - `before`), by audio length."""
        total_audio = sum(owner.stats.audio_s for owner in inputs) or 1.0
        own = sum(
            o.stats.decode_s + o.stats.vad_s + o.stats.mel_s + o.stats.align_s for o in inputs
        )
        peak = peak_rss_mb()
        for owner in inputs:
            share = owner.stats.audio_s / total_audio
            stats = owner.stats
            stats.encoder_s = (now.encoder_s - before.encoder_s) * share
            stats.prefill_s = (now.prefill_s - before.prefill_s) * share
            stats.generation_s = (now.generation_s - before.generation_s) * share
            stats.prefill_tokens = round((now.prefill_tokens - before.prefill_tokens) * share)
            stats.generated_tokens = round((now.generated_tokens - before.generated_tokens) * share)
            stats.wall_s = _own_seconds(stats) + (wall_s - own) * share
            stats.peak_rss_mb = peak


class _TextStream:
    """Text of a growing token list, released only when complete (no half UTF-8 characters),
    and only what follows the `<asr_text>` marker (the language header is not transcript)."""

    def __init__(self, tokenizer, prefix: str) -> None:
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.tokens: list[int] = []
        self.sent = 0

    def push(self, token: int) -> str:
        self.tokens.append(token)
        answer = self.prefix + self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if answer.endswith(REPLACEMENT_CHARACTER):
            return ""  # an incomplete multi-byte character: wait for the next token
        marker = answer.find("<asr_text>")
        if marker < 0:
            return ""
        body = answer[marker + len("<asr_text>") :].lstrip()
        text = body[self.sent :]
        self.sent = len(body)
        return text
