"""What the engine's memory mode costs against the default, on the same audio and files.

Memory mode (`ASREngineConfig(memory=True)`) carries the previous chunk's audio and text into
the next chunk's prompt: every prompt grows by the previous chunk (more prefill), and chunks of
one input must be decoded one after the other (one sequence at a time). The default decodes
chunks independently, `parallel_sequences` at a time (4; 1 is measured too, to separate the
cost of the longer prompts from the cost of losing parallel sequences).

Each configuration runs in its own process, so its peak RSS is its own. The decode length is
fixed as far as random weights allow: the repetition guard is off and the token budget is small
and scaled to the chunk (`--tokens-per-second`, about real speech's rate, plus
`--min-new-tokens`); a sequence that meets an end-of-sequence token stops early, so the
generated tokens are reported with the times.

Random weights cannot show what memory mode is for (the text of long audio staying consistent
across chunk boundaries); this measures only its cost.

    .venv/bin/python benchmarks/memory_mode.py                 # tiny size
    .venv/bin/python benchmarks/memory_mode.py --size 0.6b     # the real 0.6B size
    .venv/bin/python benchmarks/memory_mode.py --quick         # seconds (the test)
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    RATE,
    RESULTS_DIR,
    SIZES,
    architecture_summary,
    ensure_checkpoint,
    ensure_converted,
    machine,
    markdown_table,
    speech,
    work_folder,
    write_json,
)

# name: (memory, parallel_sequences)
MODES = {
    "memory": (True, 1),
    "parallel 4": (False, 4),
    "parallel 1": (False, 1),
}
RANDOM_WEIGHTS_NOTE = (
    "Random weights cannot show the accuracy benefit of memory mode (consistent text across "
    "chunk boundaries); these figures are its cost only. They also inflate the carried text: "
    "the previous answer is carried as text and tokenized again, and random weights generate "
    "fragments of multi-byte characters that come back as several tokens each. In brackets: "
    "the carried text tokens real text would give (the answers' generated tokens plus the "
    "template), and memory mode's time against parallel 4 had its prefill been that much "
    "shorter (its prefill time scaled by tokens: an estimate)."
)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this process: load the engine, transcribe, report the stats."""
    from qwenscribe import ASREngineConfig, QwenASREngine

    logging.basicConfig(level=logging.ERROR)  # the engine warns of every chunk cut at budget
    samples = speech(spec["seconds"])
    memory, parallel = MODES[spec["mode"]]
    config = ASREngineConfig(
        model=spec["model"],
        decoder_quant=spec["decoder_quant"],
        encoder_precision=spec["encoder_precision"],
        threads=spec["threads"],
        vad=False,
        repetition_guard=False,
        max_chunk_s=spec["chunk_s"],
        memory=memory,
        parallel_sequences=parallel,
        tokens_per_second=spec["tokens_per_second"],
        min_new_tokens=spec["min_new_tokens"],
    )
    with QwenASREngine(config) as engine:
        load_s = engine.load_s
        loading_peak, loaded_rss = _proc_status_mb("VmHWM"), _proc_status_mb("VmRSS")
        # The process's peak so far is the loading's; restart it, so that VmHWM afterwards is
        # the transcription's own peak (Linux; elsewhere only the whole run's peak is known).
        reset = _reset_peak_rss()
        prompts = _record_prompts(engine.runtime)
        transcript = engine.transcribe((samples, RATE))
        transcribe_peak = _proc_status_mb("VmHWM") if reset else None
    stats = transcript.stats
    # What memory mode carried: the prompt's audio rows beyond the chunk's own, and its text
    # tokens beyond a prompt without history (the previous answers and their template).
    own_audio, sizes, generated = prompts["own_audio"], prompts["sizes"], prompts["generated"]
    base_text = sizes[0][0] - sizes[0][1]
    carried_audio = sum(audio - own for (_, audio), own in zip(sizes, own_audio, strict=True))
    carried_text = sum(prompt - audio - base_text for prompt, audio in sizes)
    # With real weights the answer's text tokenizes back to about the tokens generated; random
    # weights pick fragments of multi-byte characters, which decode to U+FFFD and come back as
    # several tokens each. The prompt tokens memory mode would carry with real text:
    exchanges = sum(1 for prompt, audio in sizes if prompt - audio > base_text)
    answers = sum(generated[:-1]) if memory else 0
    real_text = answers + exchanges * _history_template_tokens(engine.tokenizer)
    return {
        "load_s": load_s,
        "audio_s": stats.audio_s,
        "chunks": stats.chunks,
        "wall_s": stats.wall_s,
        "real_time_factor": stats.real_time_factor,
        "encoder_s": stats.encoder_s,
        "prefill_tokens": stats.prefill_tokens,
        "prefill_s": stats.prefill_s,
        "generated_tokens": stats.generated_tokens,
        "generation_s": stats.generation_s,
        "token_budget": sum(record.max_new_tokens for record in transcript.chunks),
        "finishes": dict(Counter(record.finish for record in transcript.chunks)),
        # The engine's own figure (getrusage): on Linux the reset above restarts it too.
        "engine_peak_rss_mb": stats.peak_rss_mb,
        "peak_rss_loading_mb": loading_peak,
        "rss_after_load_mb": loaded_rss,
        "peak_rss_transcribing_mb": transcribe_peak,
        "carried_audio_tokens": carried_audio,
        "carried_text_tokens": carried_text,
        "carried_answers_generated_tokens": answers,
        "carried_text_tokens_if_real_text": real_text,
        "prefill_tokens_if_real_text": stats.prefill_tokens - carried_text + real_text,
    }


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (proc(5))
        return True
    except OSError:
        return False


def _history_template_tokens(tokenizer) -> int:
    """Tokens one carried exchange adds to a prompt beside its audio and its answer."""
    from qwenscribe.model.prompt import Exchange, asr_prompt

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count(asr_prompt(1, history=(Exchange(1, ""),))) - count(asr_prompt(1)) - 1


def _record_prompts(runtime) -> dict[str, list]:
    """Wrap the runtime's encode and generate to note each chunk's own audio tokens, each
    prompt's (tokens, audio rows) and each generation's length, in decoding order."""
    noted: dict[str, list] = {"own_audio": [], "sizes": [], "generated": []}
    encode, generate = runtime.encode, runtime.generate

    def noting_encode(mel):
        embeddings = encode(mel)
        noted["own_audio"].append(len(embeddings))
        return embeddings

    def noting_generate(requests, *args, **kwargs):
        noted["sizes"] += [(len(r.prompt_ids), len(r.audio)) for r in requests]
        generations = generate(requests, *args, **kwargs)
        noted["generated"] += [len(g.tokens) for g in generations]
        return generations

    runtime.encode, runtime.generate = noting_encode, noting_generate
    return noted


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{spec['mode']} at {spec['chunk_s']} s failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seconds", type=float, default=None, help="audio length (default 90)")
    parser.add_argument("--chunk-s", default=None, help="max chunk lengths, comma-separated")
    parser.add_argument("--tokens-per-second", type=float, default=3.0)
    parser.add_argument("--min-new-tokens", type=int, default=8)
    parser.add_argument("--decoder-quant", default="q8_0", help="default: the engine's")
    parser.add_argument("--encoder-precision", default="int8", help="default: the engine's")
    # One thread by default: llama.cpp's threads spin while they wait for each other, and two
    # of them on two cores slow down many times over (0.5 s became 9 s, measured) whenever
    # another process wants a core; one thread gives comparable figures on a busy machine.
    parser.add_argument("--threads", type=int, default=1, help="threads (1); 0: every core")
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration")
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed")
    parser.add_argument("--work-dir", default=None, help="keep (and reuse) model files here")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "memory_mode.json")
    parser.add_argument("--quick", action="store_true", help="tiny size, 8 s of audio")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick_defaults = {"seconds": 8.0, "chunk_s": "4", "repeats": 1}
    full_defaults = {"seconds": 90.0, "chunk_s": "30,10", "repeats": 3}
    for name, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.chunk_lengths = [float(part) for part in str(args.chunk_s).split(",")]
    args.threads = args.threads or None  # None: the engine takes every core
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with work_folder(args.work_dir) as work:
        checkpoint, write_s = ensure_checkpoint(
            work / f"checkpoint-{args.size}", args.size, args.seed
        )
        print(f"checkpoint ({args.size}): {write_s:.1f} s", flush=True)
        folder, convert_s, reused = ensure_converted(
            checkpoint,
            work / f"converted-{args.size}-{args.encoder_precision}-{args.decoder_quant}",
            [args.encoder_precision],
            [args.decoder_quant],
        )
        print(f"convert: {convert_s:.1f} s", flush=True)
        runs: dict[tuple[float, str], list[dict[str, Any]]] = {}
        # Repeats go round all configurations, so a slow spell of the machine is shared.
        for _ in range(args.repeats):
            for chunk_s in args.chunk_lengths:
                for mode in MODES:
                    spec = {
                        "model": str(folder),
                        "mode": mode,
                        "chunk_s": chunk_s,
                        "seconds": args.seconds,
                        "threads": args.threads,
                        "decoder_quant": args.decoder_quant,
                        "encoder_precision": args.encoder_precision,
                        "tokens_per_second": args.tokens_per_second,
                        "min_new_tokens": args.min_new_tokens,
                    }
                    result = run_worker(spec)
                    runs.setdefault((chunk_s, mode), []).append(result)
                    print(
                        f"{chunk_s:g} s chunks, {mode}: wall {result['wall_s']:.2f} s", flush=True
                    )
    for (chunk_s, mode), results in runs.items():
        fastest = min(results, key=lambda r: r["wall_s"])
        memory, parallel = MODES[mode]
        rows.append(
            {
                "chunk_s": chunk_s,
                "mode": mode,
                "memory": memory,
                "parallel_sequences": parallel,
                **fastest,
                "wall_s_all_runs": [r["wall_s"] for r in results],
            }
        )
    for row in rows:
        # Memory mode's times had the carried text been real text: prefill time scaled by its
        # tokens (a slight underestimate of the saving: attention grows faster than linearly).
        scale = row["prefill_tokens_if_real_text"] / row["prefill_tokens"]
        row["estimated_wall_s_if_real_text"] = row["wall_s"] - row["prefill_s"] * (1 - scale)
    for row in rows:
        base = next(r for r in rows if r["chunk_s"] == row["chunk_s"] and r["mode"] == "parallel 4")
        row["wall_vs_parallel_4"] = row["wall_s"] / base["wall_s"]
        row["estimated_wall_vs_parallel_4_if_real_text"] = (
            row["estimated_wall_s_if_real_text"] / base["wall_s"]
        )
    total_s = time.perf_counter() - started
    result = {
        "benchmark": "memory_mode",
        "quick": args.quick,
        "note": RANDOM_WEIGHTS_NOTE,
        "architecture": architecture_summary(args.size),
        "weights": f"random, seed {args.seed}",
        "files": {"encoder": args.encoder_precision, "decoder": args.decoder_quant},
        "audio": {"seconds": args.seconds, "source": "tests/data clips (en, zh, en) repeated"},
        "engine": {
            "vad": False,
            "repetition_guard": False,
            "tokens_per_second": args.tokens_per_second,
            "min_new_tokens": args.min_new_tokens,
            "threads": args.threads,
            "llama_cpp": "defaults (f16 KV cache, flash attention as llama.cpp decides)",
            "repeats": args.repeats,
            "kept": "the fastest run of each configuration",
        },
        "runs": rows,
        "setup": {"checkpoint_write_s": write_s, "convert_s": convert_s, "reused": reused},
        "machine": machine(),
        "total_s": total_s,
    }
    write_json(args.out, result)
    print()
    print(table(result))
    print(f"\n{RANDOM_WEIGHTS_NOTE}\nTotal {total_s:.0f} s; JSON: {args.out}")
    return 0


def table(result: dict[str, Any]) -> str:
    headers = [
        "chunks",
        "mode",
        "prefill tokens",
        "carried audio + text (real text)",
        "prefill s",
        "generated / budget",
        "generation s",
        "encoder s",
        "wall s",
        "RTF",
        "x parallel 4 (real text, est.)",
        "RSS MB: loading peak / loaded / transcribing peak",
    ]
    rows = [
        [
            f"{row['chunks']} x <={row['chunk_s']:g} s",
            row["mode"],
            row["prefill_tokens"],
            f"{row['carried_audio_tokens']} + {row['carried_text_tokens']}"
            + (f" ({row['carried_text_tokens_if_real_text']})" if row["memory"] else ""),
            row["prefill_s"],
            f"{row['generated_tokens']} / {row['token_budget']}",
            row["generation_s"],
            row["encoder_s"],
            row["wall_s"],
            row["real_time_factor"],
            f"{row['wall_vs_parallel_4']:.2f}"
            + (
                f" ({row['estimated_wall_vs_parallel_4_if_real_text']:.2f})"
                if row["memory"]
                else ""
            ),
            " / ".join(
                "-" if value is None else f"{value:.0f}"
                for value in (
                    row["peak_rss_loading_mb"],
                    row["rss_after_load_mb"],
                    row["peak_rss_transcribing_mb"],
                )
            ),
        ]
        for row in result["runs"]
    ]
    return markdown_table(headers, rows)


if __name__ == "__main__":
    sys.exit(main())
