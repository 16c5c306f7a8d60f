"""How far quantized hybrid files are from the unquantized ones, on the same speech and chunks.

The unquantized files (fp32 ONNX encoder, f32 GGUF decoder, run with an f32 KV cache and flash
attention off) give transformers' tokens exactly (tests/test_engine_parity.py): they are the
reference here. Each variant changes one thing (the decoder quantization with the fp32 encoder,
or the encoder precision with the f32 decoder), or is the engine's default pair (int8 + q8_0);
all run with the reference's llama.cpp settings, and the f32 and default pairs once more with
llama.cpp's own defaults (f16 KV cache, flash attention as llama.cpp decides), as users run them.
The reference runs twice: its second run shows that a run is deterministic. Per variant:

- tokens, from the engine's greedy decoding of every chunk: the share of chunks whose tokens
  equal the reference's; the mean common prefix as a share of the reference's length;
  position-wise agreement (equal tokens at equal positions, over the longer of the two
  lengths, summed over chunks);
- the logits after each chunk's prompt (the first generated position), as the engine decoded
  them: the largest absolute difference from the reference's, that over the standard deviation
  of the reference's logits, and whether the top-1 token agrees;
- the encoder's output (the audio embeddings) against the reference's: the norm of the
  difference over the norm of the reference's embeddings;
- teacher forcing, in one sequence per chunk: the variant's own prompt (its own encoder's audio
  embeddings), then the reference's tokens. Compared with the reference's logits at the same
  positions: the top-1 agreement at every generated position (free of earlier disagreements),
  and the top-1 agreement and error at every audio position of the prompt.

Random weights (no real ones can be downloaded here) make the greedy output degenerate: after
its first token the model repeats that token, with a margin far beyond any quantization error,
so the token figures reduce to "is the first token the same" (one sample per chunk) and the
teacher-forced top-1 at generated positions is nearly trivially 1. The figures that carry
over are the logit errors relative to the logits' spread, and the audio positions: there the
random model's top-1 is an uncertain choice among many tokens (a near-tie, as in a hard
position of a real transcript), so their top-1 agreement is a pessimistic view of flips.

    .venv/bin/python benchmarks/quantization_agreement.py                # small size, ~2 min
    .venv/bin/python benchmarks/quantization_agreement.py --size 0.6b    # the real 0.6B size
    .venv/bin/python benchmarks/quantization_agreement.py --quick        # seconds (the test)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RATE,
    RESULTS_DIR,
    SIZES,
    architecture_summary,
    ensure_checkpoint,
    ensure_converted,
    gguf_matrix_types,
    machine,
    markdown_table,
    speech,
    work_folder,
    write_json,
)

from qwenscribe import ASREngineConfig, QwenASREngine
from qwenscribe.convert.convert import read_manifest
from qwenscribe.runtimes.base import DecodeRequest
from qwenscribe.runtimes.hybrid import HybridRuntime, prompt_pieces

DECODER_QUANTS = ("f16", "q8_0", "q6_k", "q5_k", "q4_k", "q4_0")
ENCODER_PRECISIONS = ("fp16", "int8", "int4")


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    encoder_precision: str
    decoder_quant: str
    exact_runtime: bool = True  # f32 KV cache and flash attention off, as the reference


REFERENCE = Variant("fp32 + f32", "reference", "fp32", "f32")


def variants(quick: bool) -> list[Variant]:
    again = Variant("fp32 + f32 (again)", "reference", "fp32", "f32")
    pair = Variant("int8 + q8_0", "default pair", "int8", "q8_0")
    if quick:
        return [again, pair]
    return [
        again,
        *(Variant(f"fp32 + {q}", "decoder", "fp32", q) for q in DECODER_QUANTS),
        *(Variant(f"{p} + f32", "encoder", p, "f32") for p in ENCODER_PRECISIONS),
        pair,
        Variant("fp32 + f32, llama.cpp defaults", "runtime defaults", "fp32", "f32", False),
        Variant("int8 + q8_0, llama.cpp defaults", "runtime defaults", "int8", "q8_0", False),
    ]


@dataclass
class Probe:
    """Logits of one chunk under teacher forcing (see `probe_logits`)."""

    audio: np.ndarray  # [audio positions of the prompt, vocab]
    generated: np.ndarray  # [reference tokens, vocab]: the logits that predict each of them
    embeddings: np.ndarray  # the audio embeddings the encoder gave [audio positions, hidden]


@dataclass
class Run:
    chunks: list[tuple[float, float]]
    tokens: list[list[int]]
    first_logits: list[np.ndarray]  # after each chunk's prompt, as the engine decoded it
    finishes: list[str]
    seconds: float
    generated_stats: list[dict[str, np.ndarray]] = field(default_factory=list)  # per chunk
    embedding_errors: list[np.ndarray] = field(default_factory=list)  # per chunk: differences
    audio_stats: list[dict[str, np.ndarray]] = field(default_factory=list)  # per chunk
    # The share of the run's own tokens that are the argmax of its teacher-forced logits: 1 but
    # for near-ties (one position at a time and a batch of positions round differently).
    forced_self_agreement: float = 1.0


def engine_config(args: argparse.Namespace, folder: Path, variant: Variant) -> ASREngineConfig:
    return ASREngineConfig(
        model=str(folder),
        decoder_quant=variant.decoder_quant,
        encoder_precision=variant.encoder_precision,
        exact_kv_cache=variant.exact_runtime,
        flash_attention=False if variant.exact_runtime else None,
        vad=False,
        repetition_guard=False,
        max_chunk_s=args.chunk_s,
        parallel_sequences=args.parallel,
        threads=args.threads,
    )


def probe_logits(runtime: HybridRuntime, request: DecodeRequest, tokens: list[int]) -> Probe:
    """Feed one prompt, then `tokens` (teacher forcing), as one sequence; keep the logits at
    every audio position and those predicting each of `tokens`."""
    n_prompt = len(request.prompt_ids)
    # A private method, as the recording of the prefill in `run_variant`: this is a measuring
    # instrument that needs the runtime's context, not a use of the runtime's API.
    ctx = runtime.decoder._contexts.get(1, n_prompt + len(tokens))
    n_batch = ctx.settings.n_batch
    audio, generated = [], []
    for piece in prompt_pieces(request):
        is_audio = piece.embeddings is not None
        for first in range(0, len(piece), n_batch):
            count = min(n_batch, len(piece) - first)
            positions = list(range(piece.start + first, piece.start + first + count))
            wanted = [is_audio or position == n_prompt - 1 for position in positions]
            if is_audio:
                rows = piece.embeddings[first : first + count]
                out = ctx.decode([0] * count, positions, wanted, embeddings=rows)
                audio += [out[row] for row in range(count)]
            else:
                ids = [int(token) for token in piece.token_ids[first : first + count]]
                out = ctx.decode([0] * count, positions, wanted, token_ids=ids)
                generated += [out[row] for row in sorted(out)]
    fed = [int(token) for token in tokens[:-1]]
    for first in range(0, len(fed), n_batch):
        part = fed[first : first + n_batch]
        positions = list(range(n_prompt + first, n_prompt + first + len(part)))
        out = ctx.decode([0] * len(part), positions, [True] * len(part), token_ids=part)
        generated += [out[row] for row in range(len(part))]
    return Probe(np.stack(audio), np.stack(generated), np.asarray(request.audio, np.float32))


def position_stats(reference: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Per position (row): max |difference|, that over the reference's std, top-1 equal."""
    max_abs = np.abs(other - reference).max(axis=1)
    return {
        "max_abs": max_abs,
        "relative": max_abs / reference.std(axis=1),
        "top1": reference.argmax(axis=1) == other.argmax(axis=1),
    }


def run_variant(
    args: argparse.Namespace,
    folder: Path,
    variant: Variant,
    samples: np.ndarray,
    reference_probes: list[Probe],
    reference_tokens: list[list[int]] | None = None,
) -> Run:
    """Transcribe with `variant`, then probe every chunk with the reference's tokens and compare
    with `reference_probes`. The reference itself (no `reference_tokens`) probes with its own
    tokens and fills `reference_probes`."""
    started = time.perf_counter()
    with QwenASREngine(engine_config(args, folder, variant)) as engine:
        # The logits after each prompt are what the hybrid runtime's prefill returns: record
        # them, and the prompts, as the engine decodes (one generate call per batch, chunks in
        # order, no retries with the repetition guard off).
        decoder = engine.runtime.decoder
        start = decoder.start
        first_logits: list[np.ndarray] = []
        requests: list[DecodeRequest] = []

        def recording_start(batch):
            logits = start(batch)
            first_logits.extend(np.array(values, np.float32) for values in logits)
            requests.extend(batch)
            return logits

        decoder.start = recording_start
        transcript = engine.transcribe((samples, RATE))
        seconds = time.perf_counter() - started
        decoder.start = start
        tokens = [list(record.tokens) for record in transcript.chunks]
        if len(requests) != len(tokens):
            raise RuntimeError(f"{len(requests)} prompts were prefilled for {len(tokens)} chunks")
        run = Run(
            chunks=[(record.start, record.end) for record in transcript.chunks],
            tokens=tokens,
            first_logits=first_logits,
            finishes=[record.finish for record in transcript.chunks],
            seconds=seconds,
        )
        is_reference = reference_tokens is None
        own_argmax = []
        for index, request in enumerate(requests):
            fed = tokens[index] if is_reference else reference_tokens[index]
            if not fed:  # the reference stopped at once: nothing to force
                fed = [0]
            probe = probe_logits(engine.runtime, request, fed)
            if is_reference:
                reference_probes.append(probe)
                if tokens[index]:
                    own_argmax.append(probe.generated.argmax(axis=1) == np.asarray(fed))
            expected = reference_probes[index]
            run.generated_stats.append(position_stats(expected.generated, probe.generated))
            run.audio_stats.append(position_stats(expected.audio, probe.audio))
            run.embedding_errors.append(probe.embeddings - expected.embeddings)
        if own_argmax:
            run.forced_self_agreement = float(np.concatenate(own_argmax).mean())
    return run


def common_prefix(a: list[int], b: list[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def token_agreement(reference: list[list[int]], other: list[list[int]]) -> dict[str, float]:
    pairs = list(zip(reference, other, strict=True))
    prefix = [common_prefix(a, b) / len(a) if a else float(not b) for a, b in pairs]
    matches = sum(sum(x == y for x, y in zip(a, b, strict=False)) for a, b in pairs)
    positions = sum(max(len(a), len(b)) for a, b in pairs)
    return {
        "identical_chunks": float(np.mean([a == b for a, b in pairs])),
        "mean_common_prefix": float(np.mean(prefix)),
        "positionwise": matches / positions if positions else 1.0,
    }


def summary(stats: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per-position statistics of every chunk, pooled."""
    max_abs = np.concatenate([chunk["max_abs"] for chunk in stats])
    relative = np.concatenate([chunk["relative"] for chunk in stats])
    top1 = np.concatenate([chunk["top1"] for chunk in stats])
    return {
        "positions": len(top1),
        "top1_agreement": float(top1.mean()),
        "max_abs": float(max_abs.max()),
        "mean_max_abs": float(max_abs.mean()),
        "relative": float(relative.max()),
        "mean_relative": float(relative.mean()),
    }


def embedding_error(errors: list[np.ndarray], probes: list[Probe]) -> dict[str, float]:
    """The encoder's output against the reference's: the norm of the difference over the norm
    of the reference, over every audio embedding (root mean square), and its largest value."""
    difference = np.concatenate(errors)
    expected = np.concatenate([probe.embeddings for probe in probes])
    per_row = np.linalg.norm(difference, axis=1) / np.linalg.norm(expected, axis=1)
    return {
        "relative_rms": float(np.linalg.norm(difference) / np.linalg.norm(expected)),
        "max_relative": float(per_row.max()),
    }


def top_margin(logits: np.ndarray) -> float:
    second, first = np.partition(logits, -2, axis=-1)[..., -2:].T
    return float(np.median(first - second))


def file_facts(folder: Path, variant: Variant, manifest: dict[str, Any]) -> dict[str, Any]:
    files = manifest["files"]
    encoder_names = (
        f"encoder_frontend.{variant.encoder_precision}.onnx",
        f"encoder_backend.{variant.encoder_precision}.onnx",
    )
    encoder_bytes = sum(f["bytes"] for name, f in files.items() if name.startswith(encoder_names))
    decoder_name = f"decoder.{variant.decoder_quant}.gguf"
    return {
        "encoder_mb": encoder_bytes / 1e6,
        "decoder_mb": files[decoder_name]["bytes"] / 1e6,
        "decoder_matrix_types": gguf_matrix_types(folder / decoder_name),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default=None, help="default: small (tiny --quick)")
    parser.add_argument("--seconds", type=float, default=None, help="speech length (default 60)")
    parser.add_argument("--chunk-s", type=float, default=None, help="max chunk length (10)")
    parser.add_argument("--parallel", type=int, default=4, help="parallel sequences (4)")
    # One thread by default: these are agreement figures, not speed, and llama.cpp's two
    # spinning threads slow down many times over when another process shares the two cores.
    parser.add_argument("--threads", type=int, default=1, help="threads (1)")
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed")
    parser.add_argument("--work-dir", default=None, help="keep (and reuse) model files here")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "quantization_agreement.json")
    parser.add_argument("--quick", action="store_true", help="tiny size, 2 variants, 6 s")
    args = parser.parse_args(argv)
    quick_defaults = {"size": "tiny", "seconds": 6.0, "chunk_s": 3.0}
    full_defaults = {"size": "small", "seconds": 60.0, "chunk_s": 10.0}
    for name, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the engine warns of every chunk cut at budget
    started = time.perf_counter()
    chosen = variants(args.quick)
    precisions = sorted({v.encoder_precision for v in [REFERENCE, *chosen]})
    quants = sorted({v.decoder_quant for v in [REFERENCE, *chosen]})
    samples = speech(args.seconds)
    rows = []
    with work_folder(args.work_dir) as work:
        checkpoint, write_s = ensure_checkpoint(
            work / f"checkpoint-{args.size}", args.size, args.seed
        )
        print(f"checkpoint ({args.size}): {write_s:.1f} s", flush=True)
        folder, convert_s, reused = ensure_converted(
            checkpoint, work / f"converted-{args.size}", precisions, quants
        )
        print(f"convert {precisions} + {quants}: {convert_s:.1f} s", flush=True)
        manifest = read_manifest(folder)
        reference_probes: list[Probe] = []
        reference = run_variant(args, folder, REFERENCE, samples, reference_probes)
        reference_facts = {
            **asdict(REFERENCE),
            **file_facts(folder, REFERENCE, manifest),
            "chunks": [list(chunk) for chunk in reference.chunks],
            "tokens_per_chunk": [len(t) for t in reference.tokens],
            "distinct_tokens_per_chunk": [len(set(t)) for t in reference.tokens],
            "finishes": dict(Counter(reference.finishes)),
            "first_position_logit_std": [float(a.std()) for a in reference.first_logits],
            "first_position_top1_margin": [top_margin(a) for a in reference.first_logits],
            "median_top1_margin_generated": top_margin(
                np.concatenate([p.generated for p in reference_probes])
            ),
            "median_top1_margin_audio": top_margin(
                np.concatenate([p.audio for p in reference_probes])
            ),
            "forced_argmax_equals_own_tokens": reference.forced_self_agreement,
            "seconds": reference.seconds,
        }
        print(f"reference: {len(reference.chunks)} chunks, {reference.seconds:.1f} s", flush=True)
        for variant in chosen:
            run = run_variant(args, folder, variant, samples, reference_probes, reference.tokens)
            if run.chunks != reference.chunks:
                raise RuntimeError(f"{variant.name}: the chunk plan differs from the reference")
            row = {
                **asdict(variant),
                **file_facts(folder, variant, manifest),
                "tokens": token_agreement(reference.tokens, run.tokens),
                "first_position_logits": summary(
                    [
                        position_stats(a[None], b[None])
                        for a, b in zip(reference.first_logits, run.first_logits, strict=True)
                    ]
                ),
                "teacher_forced_generated_positions": summary(run.generated_stats),
                "teacher_forced_audio_positions": summary(run.audio_stats),
                "encoder_output": embedding_error(run.embedding_errors, reference_probes),
                "generated_tokens": sum(len(t) for t in run.tokens),
                "finishes": dict(Counter(run.finishes)),
                "seconds": run.seconds,
            }
            rows.append(row)
            print(
                f"{variant.name}: identical chunks {row['tokens']['identical_chunks']:.2f}, "
                f"audio-position top-1 "
                f"{row['teacher_forced_audio_positions']['top1_agreement']:.3f}, "
                f"{run.seconds:.1f} s",
                flush=True,
            )
        del reference_probes
    total_s = time.perf_counter() - started
    result = {
        "benchmark": "quantization_agreement",
        "quick": args.quick,
        "architecture": architecture_summary(args.size),
        "weights": f"random, seed {args.seed}",
        "audio": {"seconds": args.seconds, "source": "tests/data clips (en, zh, en) repeated"},
        "engine": {
            "vad": False,
            "repetition_guard": False,
            "max_chunk_s": args.chunk_s,
            "parallel_sequences": args.parallel,
            "threads": args.threads,
            "token_budget": "engine default: 32 + 10 per second of chunk",
            "exact_runtime": "f32 KV cache, flash attention off (the reference's settings)",
            "llama_cpp_defaults": "f16 KV cache, flash attention as llama.cpp decides",
        },
        "reference": reference_facts,
        "variants": rows,
        "setup": {"checkpoint_write_s": write_s, "convert_s": convert_s, "reused": reused},
        "machine": machine(),
        "total_s": total_s,
    }
    write_json(args.out, result)
    print()
    print(table(result))
    print(
        f"\n{len(reference.chunks)} chunks of {args.seconds:g} s of speech (max {args.chunk_s:g} "
        f"s each), {reference_facts['distinct_tokens_per_chunk']} distinct tokens per reference "
        f"chunk; random weights; total {total_s:.0f} s; JSON: {args.out}"
    )
    return 0


def table(result: dict[str, Any]) -> str:
    headers = [
        "encoder + decoder",
        "llama.cpp",
        "enc MB",
        "dec MB",
        "enc. out err",
        "identical chunks",
        "common prefix",
        "position-wise",
        "1st pos. max abs err",
        "/ std",
        "1st pos. top-1",
        "forced top-1",
        "audio pos. top-1",
        "audio pos. mean err / std",
    ]
    rows = []
    for row in result["variants"]:
        tokens, first = row["tokens"], row["first_position_logits"]
        generated = row["teacher_forced_generated_positions"]
        audio = row["teacher_forced_audio_positions"]
        rows.append(
            [
                row["name"].removesuffix(", llama.cpp defaults"),
                "exact" if row["exact_runtime"] else "defaults",
                row["encoder_mb"],
                row["decoder_mb"],
                row["encoder_output"]["relative_rms"],
                tokens["identical_chunks"],
                tokens["mean_common_prefix"],
                tokens["positionwise"],
                first["max_abs"],
                first["relative"],
                first["top1_agreement"],
                generated["top1_agreement"],
                audio["top1_agreement"],
                audio["mean_relative"],
            ]
        )
    return markdown_table(headers, rows)


if __name__ == "__main__":
    sys.exit(main())
