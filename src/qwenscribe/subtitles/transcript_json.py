"""The transcript as JSON: everything the engine returned, so subtitles can be made again later
(other formats, other line lengths) without running the model.

The file says what it is (`format`), which layout of that format it uses (`format_version`, raised
only when a reader of the old layout would misread the new one), and which qwenscribe wrote it
(`version`, for the record). Floats are written with Python's shortest round-trip repr, so every
time reads back exactly. A `text` field (the whole transcript) and derived statistics are added
for people and other programs; they are ignored on reading.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from qwenscribe import __version__
from qwenscribe.core.transcript import ChunkRecord, Segment, Stats, Transcript, Word
from qwenscribe.errors import InputError
from qwenscribe.subtitles.atomic import write_text_atomically

FORMAT = "qwenscribe-transcript"
FORMAT_VERSION = 1


def transcript_to_dict(transcript: Transcript) -> dict[str, Any]:
    """The transcript as plain JSON-ready values, with the format's header first."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "source": transcript.source,
        "duration": transcript.duration,
        "language": transcript.language,
        "model": transcript.model,
        "text": _text(transcript),
        "segments": [_segment_to_dict(segment) for segment in transcript.segments],
        "options": transcript.options,
        "stats": transcript.stats.as_dict(),
        "chunks": [asdict(chunk) for chunk in transcript.chunks],
    }


def transcript_from_dict(data: Any, *, origin: str = "The data") -> Transcript:
    """The transcript a `transcript_to_dict` dict holds; InputError for anything else.
    `origin` names the data in messages (a file's path)."""
    _check_header(data, origin)
    try:
        return Transcript(
            segments=[_segment_from_dict(item) for item in data["segments"]],
            duration=data["duration"],
            language=data["language"],
            source=data["source"],
            stats=_build(Stats, data.get("stats", {})),
            chunks=[_build(ChunkRecord, item) for item in data.get("chunks", [])],
            model=data.get("model", ""),
            options=data.get("options", {}),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{origin} is a damaged qwenscribe transcript ({type(error).__name__}: {error}).",
            "Write it again from the media file.",
        ) from error


def write_json(transcript: Transcript, path: str | os.PathLike[str]) -> Path:
    """Writes the transcript as JSON (UTF-8, indented), atomically."""
    return write_text_atomically(path, [transcript_to_json(transcript)])


def transcript_to_json(transcript: Transcript) -> str:
    data = transcript_to_dict(transcript)
    return json.dumps(data, ensure_ascii=False, indent=2, default=_plain) + "\n"


def read_json(path: str | os.PathLike[str]) -> Transcript:
    """The transcript a `write_json` file holds; InputError when it is missing or not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise InputError(
            f"{path} does not exist.", "Pass the .json file qwenscribe wrote."
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path} cannot be read as a qwenscribe transcript ({error}).",
            "Pass the .json file qwenscribe wrote.",
        ) from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path} is not a qwenscribe transcript: it is not valid JSON ({error}).",
            "Pass the .json file qwenscribe wrote.",
        ) from error
    return transcript_from_dict(data, origin=str(path))


def _check_header(data: Any, origin: str) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"{origin} is not a qwenscribe transcript (its format is not {FORMAT!r}).",
            "Pass a .json file written by qwenscribe with JSON output.",
        )
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(
            f"{origin} has no valid format_version, so it cannot be read safely.",
            "Write it again from the media file.",
        )
    if version > FORMAT_VERSION:
        raise InputError(
            f"{origin} uses transcript format version {version}, newer than this qwenscribe "
            f"({__version__}) reads (version {FORMAT_VERSION}).",
            "Upgrade qwenscribe to read it.",
        )


def _text(transcript: Transcript) -> str:
    """The whole text, segments joined as Transcript.text joins them; segments without speech
    are left out first (Transcript.text cannot join an empty segment)."""
    spoken = [segment for segment in transcript.segments if segment.text]
    return replace(transcript, segments=spoken).text


def _segment_to_dict(segment: Segment) -> dict[str, Any]:
    data = {item.name: getattr(segment, item.name) for item in fields(segment)}
    data["words"] = [asdict(word) for word in segment.words]
    return data


def _segment_from_dict(data: dict[str, Any]) -> Segment:
    segment = _build(Segment, {key: value for key, value in data.items() if key != "words"})
    segment.words = [_build(Word, item) for item in data.get("words", [])]
    return segment


def _build(kind: type, data: dict[str, Any]) -> Any:
    """An instance from the keys `kind` knows: later versions may add keys, and fields added
    to `kind` since the file was written keep their defaults."""
    known = {item.name for item in fields(kind)}
    return kind(**{key: value for key, value in data.items() if key in known})


def _plain(value: Any) -> Any:
    """JSON for the odd values `options` may hold; the rest stays as JSON writes it."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)
