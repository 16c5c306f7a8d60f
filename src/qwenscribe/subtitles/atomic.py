"""Writing a file so that it is either complete or not there: never half-written.

The text goes to a temporary file in the destination's folder (so the final rename stays on one
file system and is atomic), is flushed to disk, and only then replaces the destination. If
anything fails on the way, including the code producing the text, the temporary file is removed
and an earlier file at the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from qwenscribe.errors import QwenScribeError


def write_text_atomically(path: str | os.PathLike[str], pieces: Iterable[str]) -> Path:
    """Writes the pieces, in order, as UTF-8 with "\\n" line ends; returns the path written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".part", dir=path.parent
        )
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); an output file is as readable as any other.
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise
    _sync_folder(path.parent)
    return path


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or the usual rw-r--r-- for a new one."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


def _sync_folder(folder: Path) -> None:
    """Makes the rename itself durable where the platform allows it (not on Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_error(path: Path, error: OSError) -> QwenScribeError:
    reason = error.strerror or str(error)
    return QwenScribeError(
        f"Could not write {path}: {reason}.",
        "Check that the folder exists and is writable and that the disk has free space.",
    )
