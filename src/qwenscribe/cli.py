"""The `qwenscribe` command line (typer + rich).

Library code raises `QwenScribeError`s; this layer turns them into one red sentence and an exit
code, never a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from qwenscribe import __version__
from qwenscribe.errors import InputError, QwenScribeError
from qwenscribe.model.prompt import language_name
from qwenscribe.model.resolve import DEFAULT_MODEL
from qwenscribe.paths import qwenscribe_home
from qwenscribe.subtitles.shaping import CJK, LATIN, ShapingOptions, preset_for_language
from qwenscribe.subtitles.writers import FORMATS, normalize_format

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


class Preset(str, Enum):
    latin = "latin"
    cjk = "cjk"
    auto = "auto"


FormatOption = Annotated[
    list[str] | None,
    typer.Option(
        "--format",
        "-f",
        help=f"Subtitle format: {', '.join(FORMATS)}; repeat for several. Default: srt.",
    ),
]
OutputDirOption = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        help="Folder for the files (created if missing); default: beside each input.",
    ),
]
MaxLineWidthOption = Annotated[
    int | None,
    typer.Option("--max-line-width", min=1, help="Columns per line (a CJK character counts 2)."),
]
MaxLinesOption = Annotated[int | None, typer.Option("--max-lines", min=1, help="Lines per cue.")]
PresetOption = Annotated[
    Preset,
    typer.Option(
        "--preset",
        help="Line layout: latin (42x2), cjk (32 columns), auto (from the language).",
    ),
]
KaraokeOption = Annotated[
    bool, typer.Option("--karaoke", help="ASS: per-word karaoke timing (needs word timing).")
]
WordLrcOption = Annotated[
    bool, typer.Option("--word-lrc", help="LRC: word-timed (enhanced) lines (needs word timing).")
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Write again even when all the files exist.")
]


@dataclass(frozen=True)
class _Shaping:
    """The shaping options asked for; `auto` picks LATIN or CJK from the language heard."""

    preset: Preset
    max_line_width: int | None
    max_lines: int | None

    def for_language(self, language: str | None) -> ShapingOptions:
        if self.preset is Preset.latin:
            base = LATIN
        elif self.preset is Preset.cjk:
            base = CJK
        else:
            base = preset_for_language(language)
        changes: dict[str, int] = {}
        if self.max_line_width is not None:
            changes["max_line_width"] = self.max_line_width
        if self.max_lines is not None:
            changes["max_lines"] = self.max_lines
        return replace(base, **changes)

    def describe(self) -> str:
        text = self.preset.value
        if self.max_line_width is not None:
            text += f", {self.max_line_width} columns"
        if self.max_lines is not None:
            text += f", {self.max_lines} lines"
        return text


def _formats(given: list[str] | None) -> list[str]:
    """The formats asked for, normalized, without repeats; srt when none."""
    return list(dict.fromkeys(normalize_format(fmt) for fmt in given or ["srt"]))


def _plan_outputs(
    inputs: list[Path], formats: list[str], output_dir: Path | None
) -> list[dict[str, Path]]:
    """{format: path} for each input: its stem and the format's suffix, in `output_dir` or
    beside it. Two inputs that would write the same file are refused before any work."""
    plans = [
        {fmt: (output_dir or path.parent) / f"{path.stem}.{fmt}" for fmt in formats}
        for path in inputs
    ]
    seen: dict[Path, Path] = {}
    for path, plan in zip(inputs, plans, strict=True):
        for target in plan.values():
            key = target.resolve()
            if key == path.resolve():
                raise InputError(
                    f"Writing {target} would replace the input {path}.",
                    "Choose another --output-dir or format.",
                )
            if key in seen and seen[key] != path:
                raise InputError(
                    f"{seen[key]} and {path} would both be written to {target}.",
                    "Give them different names, or transcribe them into different folders.",
                )
            seen[key] = path
    return plans


class _Tally:
    """Counts of inputs written, skipped and failed, and the exit code of the first failure."""

    def __init__(self) -> None:
        self.written = self.skipped = self.failed = 0
        self.exit_code = 0

    def fail(self, path: Path, error: QwenScribeError) -> None:
        self.failed += 1
        self.exit_code = self.exit_code or error.exit_code
        # The message usually names the file already.
        where = "" if str(path) in error.message else f"{path}: "
        stderr.print(Text(f"failed: {where}{error.message}", style="red"))

    def finish(self) -> None:
        stderr.print(f"{self.written} written, {self.skipped} skipped, {self.failed} failed")
        if self.exit_code:
            raise typer.Exit(self.exit_code)


@app.command()
@friendly_errors
def transcribe(
    inputs: Annotated[list[Path], typer.Argument(help="Audio or video files.")],
    formats: FormatOption = None,
    output_dir: OutputDirOption = None,
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
    align: Annotated[
        bool,
        typer.Option("--align/--no-align", help="Word timing with Qwen3-ForcedAligner."),
    ] = True,
    aligner_model: Annotated[
        str,
        typer.Option(
            "--aligner-model",
            help="aligner, a Hugging Face id, or a checkpoint or converted folder.",
        ),
    ] = "aligner",
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
    max_line_width: MaxLineWidthOption = None,
    max_lines: MaxLinesOption = None,
    preset: PresetOption = Preset.auto,
    karaoke: KaraokeOption = False,
    word_lrc: WordLrcOption = False,
    overwrite: OverwriteOption = False,
    print_text: Annotated[
        bool, typer.Option("--print-text", help="Also print each file's text to stdout.")
    ] = False,
) -> None:
    """Transcribe audio and video files into subtitle files (default: SRT beside each input).

    An input whose files all exist is skipped unless --overwrite; an input that fails is
    reported and the others go on (the exit status is then the first failure's).
    """
    from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
    from qwenscribe.pipeline import SubtitleOptions, transcribe_or_empty, write_outputs

    _check_inputs(inputs)
    wanted = _formats(formats)
    shaping = _Shaping(preset, max_line_width, max_lines)
    forced_language = language_name(language) if language else None
    plans = _plan_outputs(inputs, wanted, output_dir)
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
        align=align,
        aligner_model=aligner_model,
    )
    table = Table(title="qwenscribe", show_header=False)
    table.add_row("inputs", ", ".join(str(path) for path in inputs))
    table.add_row("model", model)
    table.add_row("runtime", f"{runtime} on {device}")
    if runtime == "hybrid":
        table.add_row("precision", f"encoder {encoder_precision}, decoder {decoder_quant}")
    table.add_row("language", forced_language or "detect")
    table.add_row("word timing", aligner_model if align else "off")
    table.add_row("output", f"{', '.join(wanted)} in {output_dir or 'the folder of each input'}")
    table.add_row("layout", shaping.describe())
    table.add_row("cache", str(qwenscribe_home()))
    stderr.print(table)

    tally = _Tally()
    todo = []
    for path, plan in zip(inputs, plans, strict=True):
        if not overwrite and all(target.exists() for target in plan.values()):
            stderr.print(f"{path}: skipped (exists)", highlight=False)
            tally.skipped += 1
        else:
            todo.append((path, plan))
    if todo:
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        with stderr.status("loading the model ..."):
            engine = QwenASREngine(config)
        with engine:
            for path, plan in todo:
                try:
                    with stderr.status(f"transcribing {path} ..."):
                        result = transcribe_or_empty(
                            engine, path, language=forced_language, context=context
                        )
                    options = SubtitleOptions(
                        shaping=shaping.for_language(result.language),
                        karaoke=karaoke,
                        word_lrc=word_lrc,
                    )
                    written = write_outputs(result, plan, options)
                except QwenScribeError as error:
                    tally.fail(path, error)
                    continue
                tally.written += 1
                if print_text:
                    stdout.print(result.text, soft_wrap=True, markup=False, highlight=False)
                stats = result.stats
                stderr.print(
                    f"{path}: {stats.audio_s:.1f} s of audio in {stats.wall_s:.1f} s "
                    f"(real-time factor {stats.real_time_factor or 0:.3f}), "
                    f"language {result.language or 'none'} -> "
                    + ", ".join(str(target) for target in written),
                    highlight=False,
                )
    tally.finish()


@app.command()
@friendly_errors
def render(
    transcripts: Annotated[
        list[Path], typer.Argument(help="Transcript .json files written by qwenscribe.")
    ],
    formats: FormatOption = None,
    output_dir: OutputDirOption = None,
    max_line_width: MaxLineWidthOption = None,
    max_lines: MaxLinesOption = None,
    preset: PresetOption = Preset.auto,
    karaoke: KaraokeOption = False,
    word_lrc: WordLrcOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Subtitles again from transcript JSON files, without running any model."""
    from qwenscribe.subtitles.transcript_json import read_json
    from qwenscribe.subtitles.writers import write_subtitles

    _check_inputs(transcripts)
    wanted = _formats(formats)
    shaping = _Shaping(preset, max_line_width, max_lines)
    plans = _plan_outputs(transcripts, wanted, output_dir)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    tally = _Tally()
    for path, plan in zip(transcripts, plans, strict=True):
        if not overwrite and all(target.exists() for target in plan.values()):
            stderr.print(f"{path}: skipped (exists)", highlight=False)
            tally.skipped += 1
            continue
        try:
            transcript = read_json(path)
            options = shaping.for_language(transcript.language)
            written = [
                write_subtitles(
                    transcript, target, fmt, options, karaoke=karaoke, word_lrc=word_lrc
                )
                for fmt, target in plan.items()
            ]
        except QwenScribeError as error:
            tally.fail(path, error)
            continue
        tally.written += 1
        stderr.print(f"{path} -> " + ", ".join(str(target) for target in written), highlight=False)
    tally.finish()


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
