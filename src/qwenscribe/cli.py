"""The `qwenscribe` command line (typer + rich).

Library code raises `QwenScribeError`s; this layer turns them into one red sentence and an exit
code, never a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from qwenscribe import __version__
from qwenscribe.errors import InputError, QwenScribeError
from qwenscribe.model.prompt import language_name
from qwenscribe.model.resolve import DEFAULT_MODEL
from qwenscribe.paths import qwenscribe_home

app = typer.Typer(
    name="qwenscribe",
    help="Local, offline speech recognition and subtitles with Qwen3-ASR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., object])


def friendly_errors(command: F) -> F:
    """Show project errors as one sentence and exit with their code; Ctrl-C exits 130."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except QwenScribeError as error:
            stderr.print(f"[bold red]error:[/] {error.message}", highlight=False)
            if error.hint:
                stderr.print(f"[yellow]what to do:[/] {error.hint}", highlight=False)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        stdout.print(f"qwenscribe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _check_inputs(inputs: list[Path]) -> list[Path]:
    missing = [str(path) for path in inputs if not path.exists()]
    if missing:
        raise InputError(
            f"No such file or folder: {', '.join(missing)}.",
            "Check the path (quote names that contain spaces).",
        )
    return inputs


@app.command()
@friendly_errors
def transcribe(
    inputs: Annotated[list[Path], typer.Argument(help="Audio or video files.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="0.6b, 1.7b, a Hugging Face id, a checkpoint folder or a converted folder.",
        ),
    ] = DEFAULT_MODEL,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            "-l",
            help="Force the language (name or code, e.g. English or en); default: detect.",
        ),
    ] = None,
    context: Annotated[
        str,
        typer.Option("--context", "-c", help="Background text or hotwords for the model."),
    ] = "",
    runtime: Annotated[
        str, typer.Option("--runtime", help="hybrid (ONNX Runtime + llama.cpp) or transformers.")
    ] = "hybrid",
    device: Annotated[
        str,
        typer.Option(
            "--device", help="hybrid: cpu, cuda, directml, coreml; transformers: cpu, cuda, mps."
        ),
    ] = "cpu",
    threads: Annotated[
        int | None, typer.Option("--threads", "-t", help="CPU threads; default: all cores.")
    ] = None,
    decoder_quant: Annotated[
        str, typer.Option("--decoder-quant", "-q", help="Decoder GGUF quantization (hybrid).")
    ] = "q8_0",
    encoder_precision: Annotated[
        str, typer.Option("--encoder-precision", "-e", help="Encoder ONNX precision (hybrid).")
    ] = "int8",
    vad: Annotated[
        bool, typer.Option("--vad/--no-vad", help="Skip non-speech with Silero VAD.")
    ] = True,
    max_chunk: Annotated[
        float, typer.Option("--max-chunk", help="Longest chunk decoded at once, in seconds.")
    ] = 30.0,
    parallel: Annotated[
        int, typer.Option("--parallel", help="Chunks decoded together as parallel sequences.")
    ] = 4,
) -> None:
    """Transcribe audio and video files; the text goes to stdout, one block per file.

    (Subtitle files and folders of inputs come with the subtitle writers.)
    """
    from qwenscribe.core.engine import ASREngineConfig, QwenASREngine

    _check_inputs(inputs)
    forced_language = language_name(language) if language else None
    config = ASREngineConfig(
        model=model,
        runtime=runtime,  # type: ignore[arg-type]
        device=device,
        threads=threads,
        decoder_quant=decoder_quant,
        encoder_precision=encoder_precision,
        vad=vad,
        max_chunk_s=max_chunk,
        parallel_sequences=parallel,
    )
    table = Table(title="qwenscribe", show_header=False)
    table.add_row("inputs", ", ".join(str(path) for path in inputs))
    table.add_row("model", model)
    table.add_row("runtime", f"{runtime} on {device}")
    if runtime == "hybrid":
        table.add_row("precision", f"encoder {encoder_precision}, decoder {decoder_quant}")
    table.add_row("language", forced_language or "detect")
    table.add_row("cache", str(qwenscribe_home()))
    stderr.print(table)
    with stderr.status("loading the model ..."):
        engine = QwenASREngine(config)
    with engine:
        for path in inputs:
            with stderr.status(f"transcribing {path} ..."):
                result = engine.transcribe(path, language=forced_language, context=context)
            stdout.print(result.text, soft_wrap=True, markup=False, highlight=False)
            stats = result.stats
            stderr.print(
                f"{path}: {stats.audio_s:.1f} s of audio in {stats.wall_s:.1f} s "
                f"(real-time factor {stats.real_time_factor or 0:.3f}), "
                f"language {result.language or 'none'}"
            )


@app.command()
@friendly_errors
def convert(
    source: Annotated[
        str,
        typer.Argument(
            help=(
                "A checkpoint folder (original or -hf layout), a Hugging Face id, or 0.6b / 1.7b / "
                "aligner."
            )
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The folder to write.")],
    encoder_precision: Annotated[
        list[str] | None,
        typer.Option(
            "--encoder-precision", "-e", help="fp32, fp16, int8 or int4; repeat for several."
        ),
    ] = None,
    decoder_quant: Annotated[
        list[str] | None,
        typer.Option(
            "--decoder-quant",
            "-q",
            help="f32, f16, bf16, q8_0, q6_k, q5_k or q4_k; repeat for several.",
        ),
    ] = None,
) -> None:
    """Convert a checkpoint to the hybrid format (ONNX encoder + GGUF decoder)."""
    from qwenscribe.convert.convert import ConvertOptions
    from qwenscribe.convert.convert import convert as run_convert

    options = ConvertOptions(
        encoder_precisions=tuple(encoder_precision or ("fp32",)),
        decoder_quants=tuple(decoder_quant or ("f16",)),
    )
    with stderr.status(f"converting {source} ..."):
        result = run_convert(source, out, options)
    if result.skipped:
        stderr.print(f"{result.folder} is already converted with these options: nothing to do.")
        return
    table = Table(title=f"converted {result.manifest['kind']} ({result.manifest['size']})")
    table.add_column("file")
    table.add_column("MiB", justify="right")
    for name, info in result.manifest["files"].items():
        table.add_row(name, f"{info['bytes'] / 2**20:.1f}")
    stderr.print(table)
    stdout.print(str(result.folder))


def main() -> None:
    app()
