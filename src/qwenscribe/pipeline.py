"""One input in, a Transcript and its subtitle files out.

The layer between the engine and the interfaces (CLI, jobs, web): it turns "this file has no
audio" into valid empty subtitles rather than an error, picks the shaping preset for the language
that was heard, and writes every requested format atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qwenscribe.audio.decode import audio_duration
from qwenscribe.core.engine import AudioInput, QwenASREngine, describe_input
from qwenscribe.core.transcript import Transcript
from qwenscribe.errors import NoAudioError, QwenScribeError
from qwenscribe.subtitles.shaping import ShapingOptions
from qwenscribe.subtitles.writers import normalize_format, write_subtitles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubtitleOptions:
    shaping: ShapingOptions | None = None  # None: the preset for the detected language
    karaoke: bool = False  # ASS: per-word \\k timing where words are aligned
    word_lrc: bool = False  # LRC: word-timed (enhanced) lines where words are aligned


def transcribe_or_empty(
    engine: QwenASREngine,
    audio: AudioInput,
    *,
    language: str | None = None,
    context: str = "",
    start: float = 0.0,
    duration: float | None = None,
) -> Transcript:
    """The engine's transcript; an input without audio gives an empty one, not an error."""
    try:
        return engine.transcribe(
            audio, language=language, context=context, start=start, duration=duration
        )
    except NoAudioError as error:
        return empty_transcript(engine, audio, error)


def empty_transcript(engine: QwenASREngine, audio: AudioInput, error: NoAudioError) -> Transcript:
    """What an input without audio gives: no segments, its stated length where it has one."""
    log.info("%s", error.message)
    return Transcript(
        segments=[],
        duration=_duration_or_none(audio) or 0.0,
        language=None,
        source=describe_input(audio),
        model=engine.config.model,
    )


def _duration_or_none(audio: AudioInput) -> float | None:
    """The container's stated length, if it has one (a video without sound still does)."""
    if not isinstance(audio, (str, Path)):
        return None
    try:
        return audio_duration(audio)
    except QwenScribeError:
        return None


def write_outputs(
    transcript: Transcript,
    outputs: Mapping[str, str | Path],
    options: SubtitleOptions = SubtitleOptions(),
) -> list[Path]:
    """Write `transcript` in every format of `outputs` ({format: path}); the paths written."""
    written = []
    for fmt, path in outputs.items():
        written.append(
            write_subtitles(
                transcript,
                path,
                normalize_format(fmt),
                options.shaping,
                karaoke=options.karaoke,
                word_lrc=options.word_lrc,
            )
        )
    return written


def transcribe_to_files(
    engine: QwenASREngine,
    audio: AudioInput,
    outputs: Mapping[str, str | Path],
    options: SubtitleOptions = SubtitleOptions(),
    **transcribe_options: object,
) -> tuple[Transcript, list[Path]]:
    """Transcribe one input (empty subtitles when it has no audio) and write its files."""
    transcript = transcribe_or_empty(engine, audio, **transcribe_options)  # type: ignore[arg-type]
    return transcript, write_outputs(transcript, outputs, options)
