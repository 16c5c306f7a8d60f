"""Transcribe files with the Python API and print the text and where the time went.

    python examples/transcribe.py talk.mp4 [more files] [--model 0.6b] [--runtime hybrid]
    python examples/transcribe.py talk.mp4 --stream      # text as it is decoded

Any `ASREngineConfig` field can be set as --field value (e.g. --decoder_quant q4_k --vad false).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from qwenscribe import ASREngineConfig, QwenASREngine
from qwenscribe.core.engine import TextDelta, TranscriptReady
from qwenscribe.errors import QwenScribeError

STAGES = ("decode_s", "vad_s", "mel_s", "encoder_s", "prefill_s", "generation_s", "wall_s")


def _parse() -> tuple[argparse.Namespace, ASREngineConfig]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--language", default=None)
    parser.add_argument("--context", default="")
    parser.add_argument("--stream", action="store_true")
    simple = (int, float, str, bool, "int", "float", "str", "bool", "int | None", "str | None")
    fields = [f for f in dataclasses.fields(ASREngineConfig) if f.type in simple]
    for field in fields:
        parser.add_argument(f"--{field.name}", default=None)
    args = parser.parse_args()
    overrides = {}
    for field in fields:
        value = getattr(args, field.name)
        if value is None:
            continue
        kind = str(field.type)
        if "bool" in kind:
            overrides[field.name] = value.lower() in ("1", "true", "yes", "on")
        elif "int" in kind:
            overrides[field.name] = int(value)
        elif "float" in kind:
            overrides[field.name] = float(value)
        else:
            overrides[field.name] = value
    return args, ASREngineConfig(**overrides)


def _print_stats(name: str, stats) -> None:
    figures = stats.as_dict()
    print(
        f"\n{name}: {stats.audio_s:.1f} s of audio, {stats.chunks} chunks, {stats.retries} retries"
    )
    print("  " + "  ".join(f"{stage[:-2]} {figures[stage]:.2f}s" for stage in STAGES))
    prefill_rate, generation_rate = stats.prefill_tokens_per_s, stats.generation_tokens_per_s
    print(
        f"  prefill {stats.prefill_tokens} tok ({prefill_rate or 0:.0f} tok/s), "
        f"generation {stats.generated_tokens} tok ({generation_rate or 0:.1f} tok/s), "
        f"real-time factor {stats.real_time_factor or 0:.3f}, "
        f"peak RSS {stats.peak_rss_mb or 0:.0f} MB"
    )


def main() -> int:
    args, config = _parse()
    try:
        with QwenASREngine(config) as engine:
            print(f"model loaded in {engine.load_s:.2f} s ({config.runtime})", file=sys.stderr)
            if args.stream:
                events = engine.stream_many(
                    args.files, language=args.language, context=args.context
                )
                for event in events:
                    if isinstance(event, TextDelta):
                        print(event.text, end="", flush=True)
                    elif isinstance(event, TranscriptReady):
                        _print_stats(event.transcript.source, event.transcript.stats)
                return 0
            results = engine.transcribe_many(
                args.files, language=args.language, context=args.context
            )
            for result in results:
                print(f"\n[{result.source}] ({result.language or 'no speech'})\n{result.text}")
                _print_stats(result.source, result.stats)
    except QwenScribeError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
