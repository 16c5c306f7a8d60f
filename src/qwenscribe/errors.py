"""Errors a user can cause or meet, each with one clear sentence and what to do.

Library code raises these; the CLI prints them without a traceback and exits with the class's
exit code (documented in the README).
"""

from __future__ import annotations


class QwenScribeError(Exception):
    """Base class: `message` says what is wrong, `hint` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class InputError(QwenScribeError):
    """An input file or folder is missing, unreadable, or not media."""

    exit_code = 4


class ModelError(QwenScribeError):
    """A model name, folder or file is wrong or incomplete."""

    exit_code = 3


class ModelUnavailableError(ModelError):
    """The model is neither cached nor downloadable (offline, no such repository)."""


class NotImplementedYetError(QwenScribeError):
    """A feature this version does not have yet (the message says which)."""

    exit_code = 5


class AudioDecodeError(InputError):
    """A media file cannot be read or decoded (missing, corrupt, not media)."""


class NoAudioError(InputError):
    """The input holds no audio to transcribe: no audio track, or zero samples.

    The engine raises it; the subtitle pipeline catches it to write valid empty subtitles.
    """


class StartPastEndError(InputError):
    """The requested start is at or past the end of the audio.

    Not a `NoAudioError`: the recording has sound, the request missed it, so the subtitle
    pipeline reports it instead of writing empty subtitles that would look like a success.
    """


class DeviceError(QwenScribeError):
    """The requested device (GPU, provider) is not available with the installed packages."""

    exit_code = 6
