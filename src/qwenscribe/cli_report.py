"""What a batch shows while it runs and when it ends: a progress bar per file, one line or JSON
object per input (written, skipped, failed with what to do, interrupted), the summary table and
the exit status of the first failure."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich import box
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from qwenscribe.cli_common import stderr
from qwenscribe.core.transcript import Stats
from qwenscribe.errors import QwenScribeError


class OutputMode(str, Enum):
    normal = "normal"
    quiet = "quiet"  # errors only
    json = "json"  # one JSON object per file on stdout; errors only on stderr


@dataclass
class FileResult:
    """What happened to one input: for the JSON lines and the closing table."""

    input: Path
    outputs: list[Path]
    status: str  # written, skipped, failed, interrupted
    error: str | None = None
    hint: str | None = None  # what to do about the error
    stats: Stats | None = None

    def as_json(self) -> str:
        return json.dumps(
            {
                "input": str(self.input),
                "outputs": [str(path) for path in self.outputs],
                "status": self.status,
                "error": self.error,
                "hint": self.hint,
                "stats": self.stats.as_dict() if self.stats is not None else None,
            },
            ensure_ascii=False,
        )


class Tally:
    """The results so far, counts of each outcome, and the exit code of the first failure."""

    def __init__(self, mode: OutputMode = OutputMode.normal) -> None:
        self.mode = mode
        self.results: list[FileResult] = []
        self.exit_code = 0
        self.interrupted = False

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    def add(self, result: FileResult) -> None:
        self.results.append(result)
        if self.mode is OutputMode.json:
            typer.echo(result.as_json())
        elif self.mode is OutputMode.normal and result.status == "skipped":
            stderr.print(f"{result.input}: skipped (exists)", highlight=False)

    def fail(self, path: Path, outputs: list[Path], error: QwenScribeError) -> None:
        self.exit_code = self.exit_code or error.exit_code
        # The message usually names the file already.
        where = "" if str(path) in error.message else f"{path}: "
        stderr.print(Text(f"failed: {where}{error.message}", style="red"))
        if error.hint:
            stderr.print(Text(f"  what to do: {error.hint}", style="yellow"))
        self.add(FileResult(path, outputs, "failed", error.message, error.hint))

    def interrupt(self, path: Path, outputs: list[Path]) -> None:
        self.interrupted = True
        self.add(FileResult(path, outputs, "interrupted"))

    def finish(self, table: bool = False) -> None:
        if self.mode is OutputMode.normal:
            if table and any(result.stats is not None for result in self.results):
                stderr.print(summary_table(self.results))
            line = (
                f"{self.count('written')} written, {self.count('skipped')} skipped, "
                f"{self.count('failed')} failed"
            )
            stderr.print(line + (", interrupted" if self.interrupted else ""), highlight=False)
        if self.interrupted:
            if self.mode is not OutputMode.normal:
                stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(130)
        if self.exit_code:
            raise typer.Exit(self.exit_code)


def _seconds(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_table(results: list[FileResult]) -> Table:
    """A row per input: its audio and wall time, the real-time factor and where the time went
    (seconds: media decoding with VAD and mel, encoder, decoder, aligner), and its status.
    Numbers carry no unit so that the table fits 80 columns; the file name folds instead."""
    table = Table(
        title="summary (times in seconds)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("file", overflow="fold", ratio=1, min_width=10)
    for name in ("audio", "wall", "RTF", "media", "encoder", "decoder", "align"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True, min_width=len("interrupted"))
    shown = _short_names([result.input for result in results])
    for result in results:
        stats = result.stats
        cells = [""] * 7
        if stats is not None:
            rtf = stats.real_time_factor
            cells = [
                _seconds(stats.audio_s),
                _seconds(stats.wall_s),
                "" if rtf is None else f"{rtf:.3f}",
                _seconds(stats.decode_s + stats.vad_s + stats.mel_s, 2),
                _seconds(stats.encoder_s),
                _seconds(stats.prefill_s + stats.generation_s),
                _seconds(stats.align_s),
            ]
        style = {"failed": "red", "interrupted": "yellow", "skipped": "dim"}.get(result.status)
        table.add_row(shown[result.input], *cells, Text(result.status, style=style or ""))
    return table


def _short_names(paths: list[Path]) -> dict[Path, str]:
    """Each file by its name (the lines above the table gave the whole paths), or by its whole
    path where two of them share a name."""
    names = Counter(path.name for path in paths)
    return {path: path.name if names[path.name] == 1 else str(path) for path in paths}


def audio_lengths(paths: list[Path]) -> list[float | None]:
    """Each file's stated audio length (for progress and ETA); None where unknown."""
    from qwenscribe.audio.decode import audio_duration

    lengths: list[float | None] = []
    for path in paths:
        try:
            lengths.append(audio_duration(path))
        except QwenScribeError:
            lengths.append(None)  # reported when it is transcribed
    return lengths


class FileProgress:
    """Rich progress: a bar per file (by audio seconds) and an overall bar with ETA (by audio
    seconds when every length is known, else by files). With `verbose`, the text as it is
    decoded shows beside the file's bar and each finished segment is printed."""

    def __init__(self, lengths: list[float | None], *, enabled: bool, verbose: bool) -> None:
        self.lengths = lengths
        self.by_seconds = bool(lengths) and all(length is not None for length in lengths)
        self.verbose = verbose and enabled
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tail]}", style="cyan"),
            console=stderr,
            transient=True,
            disable=not enabled,
        )
        total = sum(lengths) if self.by_seconds else len(lengths)  # type: ignore[arg-type]
        self.overall = self.progress.add_task(
            f"all {len(lengths)} files", total=total or None, tail=""
        )
        self.done = 0.0
        self.current: TaskID | None = None
        self.current_length: float | None = None
        self.chunks: dict[int, str] = {}

    def __enter__(self) -> FileProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def print(self, *args: object, **kwargs: object) -> None:
        self.progress.console.print(*args, **kwargs)  # type: ignore[arg-type]

    def start_file(self, index: int, path: Path) -> None:
        self.current_length = self.lengths[index]
        self.chunks = {}
        self.current = self.progress.add_task(path.name, total=self.current_length or None, tail="")

    def on_event(self, event: object) -> None:
        from qwenscribe.core.engine import ChunkRetried, SegmentReady, TextDelta

        if self.current is None:
            return
        if isinstance(event, TextDelta):
            self.chunks[event.chunk_index] = self.chunks.get(event.chunk_index, "") + event.text
            if self.verbose:
                tail = " ".join(self.chunks[event.chunk_index].split())[-60:]
                self.progress.update(self.current, tail=tail)
        elif isinstance(event, ChunkRetried):
            self.chunks.pop(event.chunk_index, None)
        elif isinstance(event, SegmentReady) and event.segment is not None:
            segment = event.segment
            if self.current_length:
                position = min(segment.end, self.current_length)
                self.progress.update(self.current, completed=position)
                if self.by_seconds:
                    self.progress.update(self.overall, completed=self.done + position)
            if self.verbose:
                self.print(
                    Text(f"[{segment.start:7.2f} → {segment.end:7.2f}] ", style="dim")
                    + Text(segment.text.strip())
                )

    def finish_file(self) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        self.done += (self.current_length or 0.0) if self.by_seconds else 1
        self.progress.update(self.overall, completed=self.done)
