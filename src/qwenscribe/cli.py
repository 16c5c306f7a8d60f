"""The `qwenscribe` command line (typer + rich).

Library code raises `QwenScribeError`s; this layer turns them into one red sentence and an exit
code, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.logging import RichHandler
from rich.table import Table

from qwenscribe import __version__
from qwenscribe.audio.vad import VADOptions
from qwenscribe.batch import check_destinations, expand_inputs, plan_outputs
from qwenscribe.cli_common import DecoderQuantsOption, EncoderPrecisionsOption, stderr, stdout
from qwenscribe.cli_report import (
    FileProgress,
    FileResult,
    OutputMode,
    Tally,
    audio_lengths,
)
from qwenscribe.errors import InputError, NoAudioError, QwenScribeError
from qwenscribe.model.prompt import forced_language
from qwenscribe.model.resolve import DEFAULT_MODEL
from qwenscribe.paths import qwenscribe_home
from qwenscribe.subtitles.shaping import CJK, LATIN, ShapingOptions, preset_for_language
from qwenscribe.subtitles.writers import FORMATS, normalize_format

if TYPE_CHECKING:
    from qwenscribe.core.engine import QwenASREngine
    from qwenscribe.core.transcript import Transcript

log = logging.getLogger(__name__)

app = typer.Typer(
    name="qwenscribe",
    help="Local, offline speech recognition and subtitles with Qwen3-ASR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., object])

BROKEN_PIPE_EXIT = 141  # what a shell reports for a program ended by SIGPIPE (128 + 13)


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
        except BrokenPipeError:
            # Whoever read stdout went away (`... --json | head -1`): stop quietly, as other
            # tools do, and keep Python from complaining when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(BROKEN_PIPE_EXIT) from None
        except OSError as error:  # the disk or the permissions, not a bug: no traceback
            log.info("where the operating-system error happened:", exc_info=True)
            stderr.print(f"[bold red]error:[/] {_describe_os_error(error)}", highlight=False)
            stderr.print(
                "[yellow]what to do:[/] Check the path, its permissions and the free disk "
                "space (-v shows where it happened).",
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _describe_os_error(error: OSError) -> str:
    reason = error.strerror or str(error)
    if error.filename is None:
        return f"{reason}."
    return f"{reason}: {error.filename}."


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
    # Through rich on the same console as the progress bars, so log lines print above them.
    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[handler],
        force=True,
    )


def _quiet_log_handlers() -> None:
    """Show only errors from now on, on this command's own log handlers (the loggers keep their
    levels: library callers and other handlers still see the warnings)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            handler.setLevel(logging.ERROR)


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
MaxCueOption = Annotated[
    float | None, typer.Option("--max-cue", min=0.1, help="Longest cue, in seconds (7).")
]
MinCueOption = Annotated[
    float | None,
    typer.Option("--min-cue", min=0.0, help="Shortest cue, in seconds (0.7); grown into silence."),
]
MinGapOption = Annotated[
    float | None, typer.Option("--min-gap", min=0.0, help="Gap between cues, in seconds (0.08).")
]
PauseSplitOption = Annotated[
    float | None,
    typer.Option("--pause-split", min=0.0, help="A pause this long starts a new cue (0.6 s)."),
]
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
    max_cue_s: float | None = None
    min_cue_s: float | None = None
    min_gap_s: float | None = None
    pause_split_s: float | None = None

    def for_language(self, language: str | None) -> ShapingOptions:
        if self.preset is Preset.latin:
            base = LATIN
        elif self.preset is Preset.cjk:
            base = CJK
        else:
            base = preset_for_language(language)
        changes = {
            name: value
            for name in (
                "max_line_width", "max_lines", "max_cue_s", "min_cue_s", "min_gap_s",
                "pause_split_s",
            )
            if (value := getattr(self, name)) is not None
        }  # fmt: skip
        try:
            return replace(base, **changes)
        except ValueError as error:
            raise InputError(f"The cue settings do not fit together: {error}.") from None

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


def _transcribe_streaming(
    engine: QwenASREngine,
    path: Path,
    language: str | None,
    context: str,
    on_event: Callable[[object], None],
    window: tuple[float, float | None] = (0.0, None),
) -> Transcript:
    """The transcript of one file, passing the engine's events on as they come; a file without
    audio gives an empty transcript, as in `pipeline.transcribe_or_empty`."""
    from qwenscribe.core.engine import TranscriptReady
    from qwenscribe.pipeline import empty_transcript

    start, duration = window
    options = {"language": language, "context": context, "start": start, "duration": duration}
    try:
        for event in engine.transcribe_stream(path, **options):
            if isinstance(event, TranscriptReady):
                return event.transcript
            on_event(event)
    except NoAudioError as error:  # reported once, not decoded a second time
        return empty_transcript(engine, path, error)
    raise AssertionError("the engine's stream ended without its transcript")


def _context_text(given: str) -> str:
    """--context as given, or read from the file after an @ (a leading @@ stands for @)."""
    if given.startswith("@@"):
        return given[1:]
    if not given.startswith("@") or len(given) == 1:
        return given
    path = Path(given[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(
            f"The context file {path} is not UTF-8 text.", "Save it as UTF-8."
        ) from None
    except OSError as error:
        raise InputError(
            f"Cannot read the context file {path}: {error.strerror or error}.",
            "Give the path of a text file after @, or the text itself (@@ for a leading @).",
        ) from None


def _touch(folder: Path | None) -> None:
    if folder is None:
        return
    try:
        os.utime(folder, None)
    except OSError as error:
        log.warning("Could not set the modification time of %s: %s", folder, error)


@app.command()
@friendly_errors
def transcribe(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Audio or video files, folders, glob patterns, @list.txt files."),
    ],
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
            help="Force the language (name or code, e.g. English or en); default or auto: detect.",
        ),
    ] = None,
    context: Annotated[
        str,
        typer.Option(
            "--context",
            "-c",
            help="Background text or hotwords for the model; @FILE reads them from a UTF-8 text "
            "file (@@ for text that starts with @).",
        ),
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
        int | None, typer.Option("--threads", "-t", min=1, help="CPU threads; default: all cores.")
    ] = None,
    decoder_quant: Annotated[
        str | None,
        typer.Option(
            "--decoder-quant",
            "-q",
            help="Decoder file (hybrid): int8, fp16, fp32, int4 (ONNX Runtime) or q8_0, f16, "
            "q4_k, q4_0... (llama.cpp). Default: int8 on a CPU, q8_0 on a GPU.",
        ),
    ] = None,
    encoder_precision: Annotated[
        str, typer.Option("--encoder-precision", "-e", help="Encoder ONNX precision (hybrid).")
    ] = "int8",
    vad: Annotated[
        bool, typer.Option("--vad/--no-vad", help="Skip non-speech with Silero VAD.")
    ] = True,
    vad_threshold: Annotated[
        float, typer.Option("--vad-threshold", min=0.01, max=0.99, help="Speech probability.")
    ] = 0.5,
    vad_min_speech: Annotated[
        int, typer.Option("--vad-min-speech", min=0, help="Shortest speech kept, in ms.")
    ] = 250,
    vad_min_silence: Annotated[
        int, typer.Option("--vad-min-silence", min=0, help="Shortest pause that ends speech, ms.")
    ] = 100,
    vad_pad: Annotated[
        int, typer.Option("--vad-pad", min=0, help="Audio kept around speech, in ms.")
    ] = 30,
    vad_max_speech: Annotated[
        float | None,
        typer.Option("--vad-max-speech", min=0.5, help="Longest speech run, in seconds."),
    ] = None,
    start: Annotated[
        float, typer.Option("--start", min=0.0, help="Start this many seconds into each input.")
    ] = 0.0,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0.01, help="Transcribe only this many seconds."),
    ] = None,
    max_chunk: Annotated[
        float,
        typer.Option("--max-chunk", min=1.0, help="Longest chunk decoded at once, in seconds."),
    ] = 30.0,
    parallel: Annotated[
        int,
        typer.Option("--parallel", min=1, help="Chunks decoded together as parallel sequences."),
    ] = 4,
    low_memory: Annotated[
        bool,
        typer.Option(
            "--low-memory",
            help="One model in memory at a time: recognize, then load the aligner (about half "
            "the peak memory with word timing; ~2 s more per file).",
        ),
    ] = False,
    max_line_width: MaxLineWidthOption = None,
    max_lines: MaxLinesOption = None,
    max_cue: MaxCueOption = None,
    min_cue: MinCueOption = None,
    min_gap: MinGapOption = None,
    pause_split: PauseSplitOption = None,
    preset: PresetOption = Preset.auto,
    karaoke: KaraokeOption = False,
    word_lrc: WordLrcOption = False,
    overwrite: OverwriteOption = False,
    print_text: Annotated[
        bool, typer.Option("--print-text", help="Also print each file's text to stdout.")
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look for media in subfolders too.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the text as it is decoded.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print errors only.")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per file on stdout (errors only on stderr)."),
    ] = False,
    touch_album: Annotated[
        bool,
        typer.Option(
            "--touch-album",
            help="After writing, set the modification time of the input's first-level "
            "subfolder (below the folder argument) to now.",
        ),
    ] = False,
) -> None:
    """Transcribe audio and video files into subtitle files (default: SRT beside each input).

    Inputs are files, folders (their media files; --recursive descends), glob patterns, and
    @list.txt files (one path per line). An input whose files all exist is skipped unless
    --overwrite; an input that fails is reported and the others go on (the exit status is then
    the first failure's). Ctrl-C stops cleanly with status 130, leaving no partial files.
    """
    from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
    from qwenscribe.pipeline import SubtitleOptions, write_outputs

    mode = OutputMode.json if as_json else OutputMode.quiet if quiet else OutputMode.normal
    if mode is not OutputMode.normal:
        _quiet_log_handlers()  # warnings are not errors
    items = expand_inputs(inputs, recursive=recursive)
    if not items:
        raise InputError(
            f"No media files found in {', '.join(map(str, inputs))}.",
            "Add --recursive to look in subfolders, or name the files.",
        )
    wanted = _formats(formats)
    shaping = _Shaping(preset, max_line_width, max_lines, max_cue, min_cue, min_gap, pause_split)
    shaping.for_language(None)  # contradictory settings fail here, before any work
    forced = forced_language(language)
    context = _context_text(context)
    plans = plan_outputs(items, wanted, output_dir)
    check_destinations(plans)
    config = ASREngineConfig(
        model=model,
        runtime=runtime,  # type: ignore[arg-type]
        device=device,
        threads=threads,
        decoder_quant=decoder_quant,
        encoder_precision=encoder_precision,
        vad=vad,
        vad_options=VADOptions(
            threshold=vad_threshold,
            min_speech_ms=vad_min_speech,
            min_silence_ms=vad_min_silence,
            speech_pad_ms=vad_pad,
            max_speech_s=vad_max_speech if vad_max_speech is not None else float("inf"),
        ),
        max_chunk_s=max_chunk,
        parallel_sequences=parallel,
        align=align,
        aligner_model=aligner_model,
        low_memory=low_memory,
    )
    if mode is OutputMode.normal:
        table = Table(title="qwenscribe", show_header=False)
        shown = ", ".join(map(str, inputs))
        if len(items) != len(inputs):
            shown += f" ({len(items)} files)"
        table.add_row("inputs", shown)
        table.add_row("model", model)
        table.add_row("runtime", f"{runtime} on {device}")
        if runtime == "hybrid":
            decoder = config.decoder_file_quant
            table.add_row("precision", f"encoder {encoder_precision}, decoder {decoder}")
        table.add_row("language", forced or "detect")
        timing = aligner_model
        if runtime == "hybrid":
            from qwenscribe.core.models import default_decoder_quant

            timing += f" (decoder {default_decoder_quant(device)})"
        if low_memory:
            timing += ", after recognition (low memory)"
        table.add_row("word timing", timing if align else "off")
        where = output_dir or "the folder of each input"
        table.add_row("output", f"{', '.join(wanted)} in {where}")
        table.add_row("layout", shaping.describe())
        table.add_row("cache", str(qwenscribe_home()))
        stderr.print(table)

    tally = Tally(mode)
    todo = []
    for plan in plans:
        targets = list(plan.outputs.values())
        if not overwrite and all(target.exists() for target in targets):
            tally.add(FileResult(plan.input.path, targets, "skipped"))
        else:
            todo.append(plan)
    if todo:
        lengths = audio_lengths([plan.input.path for plan in todo])
        with stderr.status("loading the model ...") if mode is OutputMode.normal else nullcontext():
            engine = QwenASREngine(config)
        with (
            engine,
            FileProgress(lengths, enabled=mode is OutputMode.normal, verbose=verbose) as progress,
        ):
            for index, plan in enumerate(todo):
                path, targets = plan.input.path, list(plan.outputs.values())
                progress.start_file(index, path)
                try:
                    result = _transcribe_streaming(
                        engine,
                        path,
                        forced,
                        context,
                        progress.on_event,
                        (start, duration),
                    )
                    options = SubtitleOptions(
                        shaping=shaping.for_language(result.language),
                        karaoke=karaoke,
                        word_lrc=word_lrc,
                    )
                    written = write_outputs(result, plan.outputs, options)
                except QwenScribeError as error:
                    tally.fail(path, targets, error)
                    continue
                except KeyboardInterrupt:
                    tally.interrupt(path, targets)
                    break
                finally:
                    progress.finish_file()
                if touch_album:
                    _touch(plan.input.album_folder)
                tally.add(FileResult(path, written, "written", stats=result.stats))
                if print_text and mode is not OutputMode.json:
                    stdout.print(result.text, soft_wrap=True, markup=False, highlight=False)
                if mode is OutputMode.normal:
                    stats = result.stats
                    progress.print(
                        f"{path}: {stats.audio_s:.1f} s of audio in {stats.wall_s:.1f} s "
                        f"(real-time factor {stats.real_time_factor or 0:.3f}), "
                        f"language {result.language or 'none'} -> "
                        + ", ".join(str(target) for target in written),
                        highlight=False,
                    )
    tally.finish(table=True)


@app.command()
@friendly_errors
def render(
    transcripts: Annotated[
        list[str],
        typer.Argument(help="Transcript .json files written by qwenscribe (or their folders)."),
    ],
    formats: FormatOption = None,
    output_dir: OutputDirOption = None,
    max_line_width: MaxLineWidthOption = None,
    max_lines: MaxLinesOption = None,
    max_cue: MaxCueOption = None,
    min_cue: MinCueOption = None,
    min_gap: MinGapOption = None,
    pause_split: PauseSplitOption = None,
    preset: PresetOption = Preset.auto,
    karaoke: KaraokeOption = False,
    word_lrc: WordLrcOption = False,
    overwrite: OverwriteOption = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look for .json files in subfolders too.")
    ] = False,
) -> None:
    """Subtitles again from transcript JSON files, without running any model."""
    from qwenscribe.subtitles.transcript_json import read_json
    from qwenscribe.subtitles.writers import write_subtitles

    items = expand_inputs(transcripts, recursive=recursive, extensions=(".json",))
    if not items:
        raise InputError(
            f"No transcript JSON files found in {', '.join(map(str, transcripts))}.",
            "Add --recursive to look in subfolders, or name the files "
            "(transcribe writes them with -f json).",
        )
    wanted = _formats(formats)
    shaping = _Shaping(preset, max_line_width, max_lines, max_cue, min_cue, min_gap, pause_split)
    shaping.for_language(None)  # contradictory settings fail here, before any work
    plans = plan_outputs(items, wanted, output_dir)
    check_destinations(plans)
    tally = Tally()
    for plan in plans:
        path, targets = plan.input.path, list(plan.outputs.values())
        if not overwrite and all(target.exists() for target in targets):
            tally.add(FileResult(path, targets, "skipped"))
            continue
        try:
            transcript = read_json(path)
            options = shaping.for_language(transcript.language)
            written = [
                write_subtitles(
                    transcript, target, fmt, options, karaoke=karaoke, word_lrc=word_lrc
                )
                for fmt, target in plan.outputs.items()
            ]
        except QwenScribeError as error:
            tally.fail(path, targets, error)
            continue
        tally.add(FileResult(path, written, "written"))
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
    encoder_precision: EncoderPrecisionsOption = None,
    decoder_quant: DecoderQuantsOption = None,
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


# `models` and `doctor` live in their own module; registered here so `app` has every command.
from qwenscribe.cli_extra import register as _register_extra  # noqa: E402

_register_extra(app, friendly_errors)

from qwenscribe.cli_bench import register as _register_bench  # noqa: E402

_register_bench(app, friendly_errors)


def main() -> None:
    app()
