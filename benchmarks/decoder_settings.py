"""llama.cpp settings per phase: which flash-attention, micro-batch and buffer choices are fastest
for the prefill (hundreds of audio embeddings at once) and for generation (one token per sequence
per step), for each decoder file given.

    .venv/bin/python benchmarks/decoder_settings.py DECODER.gguf [...] [--threads 2] [--quick]

Each setting runs in a fresh context of the same loaded model; figures are tokens per second.
The engine's defaults (runtimes/kernels.py) come from these measurements.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, machine, markdown_table, write_json

from qwenscribe.runtimes.llama_decoder import ContextSettings, LlamaModel

PROMPT_TOKENS = 420  # a 30-s chunk: 390 audio embeddings plus the prompt's text


def prefill_rate(model: LlamaModel, settings: ContextSettings, tokens: int, repeats: int) -> float:
    ctx = model.context(settings)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((tokens, model.n_embd)).astype(np.float32) * 0.05
    best = float("inf")
    try:
        for _ in range(repeats):
            ctx.clear()
            started = time.perf_counter()
            for first in range(0, tokens, settings.n_batch):
                part = range(first, min(tokens, first + settings.n_batch))
                ctx.decode(
                    [0] * len(part),
                    list(part),
                    [i == tokens - 1 for i in part],
                    embeddings=rows[first : first + len(part)],
                )
            best = min(best, time.perf_counter() - started)
    finally:
        ctx.close()
    return tokens / best


def generation_rate(
    model: LlamaModel, settings: ContextSettings, sequences: int, context_tokens: int, steps: int
) -> float:
    """Tokens per second of `sequences` sequences stepping together after a prefill each."""
    ctx = model.context(settings)
    rng = np.random.default_rng(0)
    try:
        for seq in range(sequences):
            ids = rng.integers(1000, 100000, context_tokens).tolist()
            for first in range(0, context_tokens, settings.n_batch):
                part = range(first, min(context_tokens, first + settings.n_batch))
                ctx.decode(
                    [seq] * len(part),
                    list(part),
                    [False] * len(part),
                    token_ids=[ids[i] for i in part],
                )
        started = time.perf_counter()
        for step in range(steps):
            ctx.decode(
                list(range(sequences)),
                [context_tokens + step] * sequences,
                [True] * sequences,
                token_ids=[1000 + step] * sequences,
            )
        return sequences * steps / (time.perf_counter() - started)
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("decoders", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer settings and steps")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "decoder_settings.json")
    args = parser.parse_args(argv)

    steps = 8 if args.quick else 48
    repeats = 1 if args.quick else 2
    ubatches = (512,) if args.quick else (128, 256, 512)
    flashes = (False, True)
    extras = (False, True)
    rows, results = [], []
    for path in args.decoders:
        for extra in extras:
            model = LlamaModel(path, extra_buffers=extra)
            try:
                for flash, ubatch in itertools.product(flashes, ubatches):
                    settings = ContextSettings(
                        threads=args.threads,
                        n_ctx=4096,
                        n_seq=8,
                        n_batch=512,
                        n_ubatch=ubatch,
                        flash_attention=flash,
                    )
                    prefill = prefill_rate(model, settings, PROMPT_TOKENS, repeats)
                    gen = {
                        n: generation_rate(model, settings, n, PROMPT_TOKENS, steps)
                        for n in ((1,) if args.quick else (1, 4))
                    }
                    result = {
                        "decoder": path.name,
                        "extra_buffers": extra,
                        "flash_attention": flash,
                        "n_ubatch": ubatch,
                        "prefill_tokens_per_s": prefill,
                        "generation_tokens_per_s": {str(n): v for n, v in gen.items()},
                    }
                    results.append(result)
                    rows.append([path.name, extra, flash, ubatch, prefill, gen[1], gen.get(4)])
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                model.close()
    headers = [
        "decoder",
        "extra buffers",
        "flash attn",
        "n_ubatch",
        "prefill tok/s",
        "gen tok/s 1 seq",
        "gen tok/s 4 seqs",
    ]
    print(markdown_table(headers, rows))
    write_json(args.out, {"machine": machine(), "threads": args.threads, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
