"""What a benchmark run measures: one `RunConfig` per process, grouped in three parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from qwenscribe.convert.onnx_graph import PRECISIONS

Part = Literal["matrix", "scaling", "parallel"]

# Every runtime decodes this many tokens per second of audio (end-of-sequence suppressed): about
# what speech needs (Qwen3-ASR writes ~3-4 tokens per second of English or Mandarin speech).
TOKENS_PER_SECOND = 4.0
CHUNK_S = 30.0  # the engine's default chunk length: the same chunk plan for everyone

# The recognizer's decoder: int8 on ONNX Runtime (the default on a CPU), GGUF files on llama.cpp.
DECODER_QUANTS = ("int8", "f16", "q8_0", "q4_k", "q4_0")
ENCODER_PRECISIONS = ("fp32", "int8", "int4")
DEFAULT_QUANT, DEFAULT_PRECISION = "int8", "int8"
GGUF_DEFAULT_QUANT = "q8_0"  # llama.cpp's file in the rows that compare both engines
# The aligner's decoder: int8 on ONNX Runtime (the default), q8_0 on llama.cpp beside it.
ALIGNER_QUANTS = ("int8", "q8_0")
DEFAULT_ALIGNER_QUANT = "int8"


@dataclass(frozen=True)
class RunConfig:
    """One measured configuration: which runtime and files, how much audio, how it is decoded."""

    part: Part
    size: str
    runtime: Literal["hybrid", "transformers"]
    audio_s: float
    threads: int
    decoder_quant: str | None = None  # hybrid
    encoder_precision: str | None = None  # hybrid
    aligner_quant: str | None = None  # hybrid: the aligner decoder's file (None: the default)
    dtype: str | None = None  # transformers
    parallel_sequences: int = 4
    align: bool = True
    low_memory: bool = False  # the engine's low_memory mode: one model loaded at a time
    flash_attention: bool | None = None  # llama.cpp: None lets it decide
    chunk_s: float = CHUNK_S
    tokens_per_second: float = TOKENS_PER_SECOND

    @property
    def label(self) -> str:
        if self.runtime == "hybrid":
            decoder = self.decoder_quant
            if decoder in PRECISIONS:  # an ONNX decoder; the other names are GGUF files
                decoder += " ONNX"
            name = f"hybrid {self.encoder_precision} + {decoder}"
            if self.align and self.aligner_quant not in (None, DEFAULT_ALIGNER_QUANT):
                name += f", aligner {self.aligner_quant}"
        else:
            name = f"transformers {self.dtype}"
        return name + (", low memory" if self.low_memory else "")

    def to_dict(self) -> dict:
        return asdict(self) | {"label": self.label}

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        values = {k: v for k, v in values.items() if k != "label"}
        return cls(**values)


@dataclass(frozen=True)
class PlanOptions:
    sizes: tuple[str, ...] = ("0.6b", "1.7b")
    audio_s: float = 60.0
    threads: int = 2
    parts: tuple[Part, ...] = ("matrix", "scaling", "parallel")
    scaling_s: tuple[float, ...] = (60.0, 600.0, 3600.0)
    parallel: tuple[int, ...] = (1, 2, 4, 8)
    parallel_audio_s: float = 600.0
    chunk_s: float = CHUNK_S
    transformers: bool = True  # include the transformers runtime (needs torch)
    decoder_quants: tuple[str, ...] = DECODER_QUANTS
    encoder_precisions: tuple[str, ...] = ENCODER_PRECISIONS
    aligner_quants: tuple[str, ...] = ALIGNER_QUANTS


QUICK = PlanOptions(
    sizes=("tiny",),
    audio_s=20.0,
    threads=1,
    scaling_s=(10.0, 20.0),
    parallel=(1, 2),
    parallel_audio_s=20.0,
    chunk_s=5.0,  # several chunks even in seconds of audio, so parallel sequences mean something
    decoder_quants=("int8", "q8_0"),
    encoder_precisions=("fp32", "int8"),
)


def plan_runs(options: PlanOptions) -> list[RunConfig]:
    """The configurations, in the order they run: per size the matrix (each decoder
    quantization with the default encoder, each encoder precision with the default decoder,
    each other aligner decoder with llama.cpp's recognizer, the low-memory mode, the
    transformers runtime at fp32 and bf16), then scaling and parallel sequences (the default
    hybrid files, first size only, recognition alone so the growth is the decoder's)."""
    runs: list[RunConfig] = []
    base = dict(threads=options.threads, chunk_s=options.chunk_s)
    for size in options.sizes:
        if "matrix" not in options.parts:
            break
        hybrid = RunConfig(
            "matrix",
            size,
            "hybrid",
            options.audio_s,
            options.threads,
            decoder_quant=DEFAULT_QUANT,
            encoder_precision=DEFAULT_PRECISION,
            aligner_quant=DEFAULT_ALIGNER_QUANT,
            chunk_s=options.chunk_s,
        )
        seen = set()
        for quant in options.decoder_quants:
            runs.append(replace(hybrid, decoder_quant=quant))
            seen.add((DEFAULT_PRECISION, quant))
        for precision in options.encoder_precisions:
            if (precision, DEFAULT_QUANT) not in seen:
                runs.append(replace(hybrid, encoder_precision=precision))
        # Every other aligner decoder with llama.cpp's recognizer: the whole pipeline on llama.cpp
        # (the default before ONNX decoders) beside the default.
        for aligner_quant in options.aligner_quants:
            if aligner_quant != DEFAULT_ALIGNER_QUANT:
                runs.append(
                    replace(hybrid, decoder_quant=GGUF_DEFAULT_QUANT, aligner_quant=aligner_quant)
                )
        runs.append(replace(hybrid, low_memory=True))
        if options.transformers:
            for dtype in ("float32", "bfloat16"):
                runs.append(
                    RunConfig("matrix", size, "transformers", options.audio_s, dtype=dtype, **base)
                )
    size = options.sizes[0]
    default = RunConfig(
        "scaling",
        size,
        "hybrid",
        options.audio_s,
        options.threads,
        decoder_quant=DEFAULT_QUANT,
        encoder_precision=DEFAULT_PRECISION,
        align=False,
        chunk_s=options.chunk_s,
    )
    if "scaling" in options.parts:
        runs += [replace(default, audio_s=seconds) for seconds in options.scaling_s]
    if "parallel" in options.parts:
        runs += [
            replace(
                default, part="parallel", audio_s=options.parallel_audio_s, parallel_sequences=n
            )
            for n in options.parallel
        ]
    return runs
