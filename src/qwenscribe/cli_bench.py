"""The `qwenscribe bench` command: the speed benchmark (`qwenscribe.bench`), registered on the
main typer app by `register(app, friendly_errors)` (called from `qwenscribe.cli`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from qwenscribe.cli_common import stderr

PARTS = ("matrix", "scaling", "parallel")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def report_paths(out: Path) -> tuple[Path, Path]:
    """OUT.json and OUT.md: `out` as given, a .json or .md ending dropped first (a name with
    other dots, like speed_0.6b, keeps them)."""
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    return out.with_name(f"{out.name}.json"), out.with_name(f"{out.name}.md")


def register(app: typer.Typer, friendly_errors: Callable) -> None:
    @app.command()
    @friendly_errors
    def bench(
        sizes: Annotated[str, typer.Option(help="Model sizes, comma-separated.")] = "0.6b,1.7b",
        seconds: Annotated[float, typer.Option(help="Audio for the side-by-side runs.")] = 60.0,
        threads: Annotated[
            int | None, typer.Option(help="CPU threads (default: all cores).")
        ] = None,
        parts: Annotated[str, typer.Option(help="matrix, scaling, parallel.")] = ",".join(PARTS),
        scaling: Annotated[
            str, typer.Option(help="Audio lengths for scaling, seconds.")
        ] = "60,600,3600",
        parallel: Annotated[str, typer.Option(help="Parallel sequences to try.")] = "1,2,4,8",
        # Defaults for these three: the plan's (qwenscribe.bench.plan), not imported here because
        # it pulls in onnx, which every other command would then load at start-up.
        quants: Annotated[
            str | None,
            typer.Option(help="Recognizer decoders (default: int8,f16,q8_0,q4_k,q4_0)."),
        ] = None,
        precisions: Annotated[
            str | None, typer.Option(help="Encoder precisions (default: fp32,int8,int4).")
        ] = None,
        aligner_quants: Annotated[
            str | None, typer.Option(help="Aligner decoders (default: int8,q8_0).")
        ] = None,
        transformers: Annotated[
            bool, typer.Option(help="Include the transformers runtime.")
        ] = True,
        audio: Annotated[
            Path | None,
            typer.Option(help="A media file to use as the speech.", exists=True, dir_okay=False),
        ] = None,
        quick: Annotated[
            bool, typer.Option(help="Tiny model, seconds of audio: checks the harness.")
        ] = False,
        work_dir: Annotated[
            Path | None, typer.Option(help="Where checkpoints and conversions are kept.")
        ] = None,
        out: Annotated[
            Path, typer.Option(help="Report path without extension (.json and .md).")
        ] = Path("qwenscribe-bench"),
    ) -> None:
        """Measure every runtime and model file variant side by side on this machine.

        Random-weight checkpoints of the real sizes are written once into the work
        folder and converted; each configuration runs in its own process on the same
        audio, decoding the same number of tokens. Writes OUT.json and OUT.md.
        """
        from dataclasses import replace

        from qwenscribe.bench.harness import BenchOptions, run_benchmark
        from qwenscribe.bench.models import SIZES
        from qwenscribe.bench.plan import QUICK, PlanOptions
        from qwenscribe.convert.onnx_decoder import DECODER_QUANTS
        from qwenscribe.convert.onnx_graph import PRECISIONS
        from qwenscribe.errors import InputError
        from qwenscribe.paths import bench_dir

        chosen_parts = _names(parts)
        start = QUICK if quick else PlanOptions()
        decoders = _names(quants) if quants is not None else start.decoder_quants
        encoders = _names(precisions) if precisions is not None else start.encoder_precisions
        aligners = _names(aligner_quants) if aligner_quants is not None else start.aligner_quants
        for what, given, known in (
            ("part", chosen_parts, PARTS),
            ("size", _names(sizes), SIZES),
            ("decoder quantization", decoders, DECODER_QUANTS),
            ("encoder precision", encoders, PRECISIONS),
            ("aligner decoder", aligners, DECODER_QUANTS),
        ):
            unknown = [name for name in given if name not in known]
            if unknown or not given:
                raise InputError(
                    f"Unknown {what}: {', '.join(unknown) or 'none given'}.",
                    f"Use {', '.join(known)}.",
                )
        try:
            lengths, sequences = _floats(scaling), [int(n) for n in _floats(parallel)]
        except ValueError as error:
            raise InputError(
                f"--scaling and --parallel take comma-separated numbers ({error}).",
                "For example --scaling 60,600 --parallel 1,4.",
            ) from error
        if quick:
            plan = replace(QUICK, parts=chosen_parts, transformers=transformers)
            plan = replace(plan, decoder_quants=decoders, encoder_precisions=encoders)
            plan = replace(plan, aligner_quants=aligners)
            if threads:
                plan = replace(plan, threads=threads)
        else:
            plan = PlanOptions(
                sizes=_names(sizes),
                audio_s=seconds,
                threads=threads or os.cpu_count() or 1,
                parts=chosen_parts,  # type: ignore[arg-type]
                scaling_s=lengths,
                parallel=tuple(sequences),
                transformers=transformers,
                decoder_quants=decoders,
                encoder_precisions=encoders,
                aligner_quants=aligners,
            )
        out_json, out_markdown = report_paths(out)
        options = BenchOptions(
            plan=plan,
            work_dir=work_dir or bench_dir(),
            out_json=out_json,
            out_markdown=out_markdown,
            audio=audio,
        )
        report = run_benchmark(options, say=lambda line: stderr.print(line, highlight=False))
        print(options.out_markdown.read_text("utf-8"))  # plain: a markdown table must not wrap
        failed = sum("error" in result for result in report["results"])
        stderr.print(
            f"report: {options.out_json} and {options.out_markdown}"
            + (f" ({failed} configurations failed)" if failed else "")
        )
