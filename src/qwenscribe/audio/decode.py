"""Decode any media file (or bytes, or a sample array) to 16 kHz mono float32 samples.

Everything goes through PyAV (the FFmpeg it bundles): containers, codecs and the resampler, so
wav, flac, mp3, m4a, ogg/opus and the audio track of mp4/mkv/webm video all take the same road,
and an in-memory ``(samples, rate)`` array is resampled by the same FFmpeg resampler as a file.

Channels are mixed to mono by their plain mean, as the official Qwen3-ASR package does (librosa's
``mono=True``). FFmpeg's own float downmix is not used: it adds stereo channels at -3 dB each
(gain sqrt(2) on centred sound), which would push speech outside [-1, 1].

Decoding streams frame by frame; only numpy blocks are kept and joined once at the end. A
``start``/``duration`` window seeks near the start (with a little pre-roll for codecs that need
to warm up), drops the samples before it by the frames' timestamps, and stops decoding once the
window is full, so cutting a minute out of a film does not decode the film. The window is
sample-exact where timestamps are (wav, flac, mp4, ogg: measured equal to slicing a full decode
for lossless audio); Matroska/WebM stamp packets in whole milliseconds, so there a window can sit
up to about a millisecond off.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import av
import numpy as np

from qwenscribe.errors import AudioDecodeError, InputError, NoAudioError, StartPastEndError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# Seek this far before the requested start: lossy decoders (AAC, MP3, Opus) need a frame or
# more of history before their output is right, and the resampler's filter needs a few samples.
SEEK_PREROLL_S = 0.5
# An in-memory array is fed to the resampler in blocks of this many input samples.
ARRAY_BLOCK = 1 << 16

MediaPath: TypeAlias = "str | os.PathLike[str]"
AudioSource: TypeAlias = "str | os.PathLike[str] | bytes | tuple[np.ndarray, int]"

_FILE_HINT = "Check that the file plays in a media player, or convert it to WAV or FLAC first."
_ARRAY_DTYPES = {
    np.dtype(np.int16): 1 / 32768,
    np.dtype(np.int32): 1 / 2147483648,
    np.dtype(np.float32): 1.0,
    np.dtype(np.float64): 1.0,
}


@dataclass(frozen=True)
class _Window:
    """The requested samples at 16 kHz: ``[first, first + count)``; ``count`` None = to the end."""

    first: int
    count: int | None

    def clip(self, position: int, block: np.ndarray) -> np.ndarray:
        """The part of ``block`` (16-kHz samples from ``position`` on) inside the window."""
        lo = max(self.first - position, 0)
        hi = len(block) if self.count is None else self.first + self.count - position
        return block[lo : max(lo, hi)]

    def filled_by(self, position: int) -> bool:
        """Whether everything before ``position`` covers the whole window."""
        return self.count is not None and position >= self.first + self.count


MAX_PREALLOCATED_S = 2 * 3600


class _SampleBuffer:
    """16-kHz samples gathered block by block into one array, sized once from the expected length.

    Joining a list of blocks at the end would hold every sample twice at that moment (460 MB
    instead of 230 for an hour of audio). When the expected length is short (a container that
    understates its length, or states none), the array grows by half each time.
    """

    def __init__(self, expected: int) -> None:
        self._data = np.empty(max(expected, 0), np.float32)
        self._size = 0

    def append(self, block: np.ndarray) -> None:
        end = self._size + len(block)
        if end > len(self._data):
            grown = np.empty(max(end, len(self._data) * 3 // 2), np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = block
        self._size = end

    def samples(self) -> np.ndarray:
        """The samples gathered; the buffer is given up (shrunk in place, not copied)."""
        data, self._data = self._data, np.empty(0, np.float32)
        data.resize(self._size, refcheck=False)  # this buffer holds the only reference
        return data


def _expected_samples(seconds: float | None, window: _Window) -> int:
    """How many samples the window will hold: from the container's stated length (a second more:
    lossy codecs round it) and the window's, at most two hours' worth up front (a damaged header
    can claim anything); a minute when neither says."""
    stated = None
    if seconds is not None and math.isfinite(seconds):
        stated = max(round((seconds + 1.0) * SAMPLE_RATE) - window.first, 0)
    known = [count for count in (stated, window.count) if count is not None]
    expected = min(known) if known else 60 * SAMPLE_RATE
    return min(expected, MAX_PREALLOCATED_S * SAMPLE_RATE)


class _SeekMissedError(Exception):
    """A seek landed after the start, or nowhere known: decode from the beginning instead."""


def decode_audio(
    source: AudioSource, *, start: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """Decode ``source`` to float32 mono samples at 16 kHz, nominally in [-1, 1].

    ``source`` is a path (any container FFmpeg reads; the first audio stream is used), the bytes
    of such a file, or ``(samples, rate)`` with ``samples`` 1-D (mono) or 2-D
    ``[frames, channels]`` (the soundfile convention; transpose channels-first arrays), int16,
    int32 or float.

    ``start`` and ``duration`` (seconds) select samples ``round(start * 16000)`` onwards,
    ``round(duration * 16000)`` of them (fewer where the audio ends first): for lossless sources
    exactly what slicing the full decode gives, at any source rate. Lossy decoders (AAC, for
    one) give slightly different samples after a seek, because the seek resets their state.

    Raises ``InputError`` for a bad window or array, ``AudioDecodeError`` when the source cannot
    be read, ``NoAudioError`` when it holds no audio (no audio stream, zero samples),
    ``StartPastEndError`` when ``start`` is at or past the end. A 16-kHz float32 mono array
    comes back as is (it may share its memory).
    """
    window = _window(start, duration)
    if isinstance(source, tuple):
        samples, rate = _check_array(source)
        return _require_samples(_resample_array(samples, rate, window), "The sample array", start)
    name = _describe(source)
    try:
        samples = _decode_seeking(source, window)
    except _SeekMissedError:
        samples = _decode_from_beginning(source, window)
    return _require_samples(samples, name, start)


def audio_duration(source: AudioSource) -> float | None:
    """Length of the audio in seconds from the container's metadata, without decoding.

    For progress and ETA only: it is the container's claim, which lossy codecs round to whole
    frames. None when the container does not say. Raises like ``decode_audio`` when the source
    cannot be opened or has no audio stream.
    """
    if isinstance(source, tuple):
        samples, rate = _check_array_shape(source)
        return len(samples) / rate
    with _open(source) as (container, name):
        return _stated_seconds(container, _audio_stream(container, name))


def _stated_seconds(
    container: av.container.InputContainer, stream: av.audio.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


# --- the window and the source ------------------------------------------------------------------


def _window(start: float, duration: float | None) -> _Window:
    if not (math.isfinite(start) and start >= 0):
        raise InputError(
            f"The start time must be zero or a positive number of seconds, not {start}.",
            "Pass start=0 to decode from the beginning.",
        )
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise InputError(
            f"The duration must be a positive number of seconds, not {duration}.",
            "Pass duration=None to decode to the end.",
        )
    count = None if duration is None else max(round(duration * SAMPLE_RATE), 1)
    return _Window(round(start * SAMPLE_RATE), count)


def _describe(source: MediaPath | bytes) -> str:
    """How messages name the source: the path as given, or the size of the in-memory file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"The audio data ({len(source)} bytes)"
    return os.fspath(source)


def _require_samples(samples: np.ndarray, name: str, start: float) -> np.ndarray:
    if samples.size:
        return samples
    if start > 0:
        raise StartPastEndError(
            f"{name} has no audio after the requested start of {start:g} s.",
            "Pass a start time inside the recording.",
        )
    raise NoAudioError(
        f"{name} contains no audio samples.",
        "Check that the recording is not empty.",
    )


@contextmanager
def _open(source: MediaPath | bytes) -> Iterator[tuple[av.container.InputContainer, str]]:
    """Open a container, turning every way it can fail into one clear project error."""
    name = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise AudioDecodeError(f"{name} is empty.", "Pass the bytes of a media file.")
        target: str | io.BytesIO = io.BytesIO(bytes(source))
    else:
        path = Path(os.fspath(source))
        if not path.exists():
            raise AudioDecodeError(f"{name} does not exist.", "Check the path and the spelling.")
        if path.is_dir():
            raise AudioDecodeError(f"{name} is a folder, not a media file.", "Pass a file.")
        if path.stat().st_size == 0:  # a failed download or copy, commonly
            raise AudioDecodeError(f"{name} is empty (0 bytes).", "Copy or download it again.")
        # "file:" keeps FFmpeg from reading a name like "take:2.wav" as a protocol.
        target = "file:" + str(path.absolute())
    try:
        container = av.open(target, metadata_errors="replace")
    except PermissionError as error:
        raise AudioDecodeError(
            f"{name} cannot be read: permission denied.", "Check the file's permissions."
        ) from error
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise AudioDecodeError(
            f"{name} is not a media file that FFmpeg can read, or it is corrupt.", _FILE_HINT
        ) from error
    try:
        yield container, name
    finally:
        container.close()


def _audio_stream(container: av.container.InputContainer, name: str) -> av.audio.AudioStream:
    if not container.streams.audio:
        raise NoAudioError(
            f"{name} has no audio track.",
            "Check that the recording has sound; a video without an audio track cannot be "
            "transcribed.",
        )
    return container.streams.audio[0]


# --- decoding a file ----------------------------------------------------------------------------


def _decode_seeking(source: MediaPath | bytes, window: _Window) -> np.ndarray:
    """Decode the window, seeking near its start first when that is worth it."""
    with _open(source) as (container, name):
        stream = _audio_stream(container, name)
        seek_to = window.first / SAMPLE_RATE - SEEK_PREROLL_S
        if seek_to <= 0 or not _seek(container, stream, seek_to):
            return _decode_stream(container, stream, name, window, seeked=False)
        return _decode_stream(container, stream, name, window, seeked=True)


def _decode_from_beginning(source: MediaPath | bytes, window: _Window) -> np.ndarray:
    with _open(source) as (container, name):
        stream = _audio_stream(container, name)
        return _decode_stream(container, stream, name, window, seeked=False)


def _seek(container: av.container.InputContainer, stream: av.audio.AudioStream, t: float) -> bool:
    """Seek to a key point at or before ``t`` seconds; False if the container cannot seek."""
    if stream.time_base is None:
        return False
    origin = stream.start_time or 0
    try:
        container.seek(origin + int(t / stream.time_base), stream=stream, backward=True)
    except (av.error.FFmpegError, OSError, ValueError):
        logger.debug("seeking failed; decoding from the beginning", exc_info=True)
        return False
    return True


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.AudioStream,
    name: str,
    window: _Window,
    *,
    seeked: bool,
) -> np.ndarray:
    """Decode, resample and keep the window's samples, stopping once the window is full.

    Positions count 16-kHz output samples from the start of the stream. Without a seek, the
    first frame is position 0 and samples are counted from there, exactly as a full decode
    does; after a seek, the first frame's timestamp says where decoding resumed.
    """
    resampler = av.AudioResampler(format="fltp", layout=None, rate=SAMPLE_RATE)
    gathered = _SampleBuffer(_expected_samples(_stated_seconds(container, stream), window))
    position: int | None = None if seeked else 0
    for decoded in _decoded_frames(container, stream, name):
        frame: av.AudioFrame | None = decoded
        if position is None:
            frame, position = _place_after_seek(decoded, stream, window)
            if frame is None:
                continue
        for block in _resample(resampler, frame, name):
            gathered.append(window.clip(position, block))
            position += len(block)
        if window.filled_by(position):
            break
    else:
        if position is None:
            raise _SeekMissedError  # nothing after the seek point: make sure by decoding it all
        for block in _resample(resampler, None, name):
            gathered.append(window.clip(position, block))
            position += len(block)
    return gathered.samples()


def _place_after_seek(
    frame: av.AudioFrame, stream: av.audio.AudioStream, window: _Window
) -> tuple[av.AudioFrame | None, int | None]:
    """The first frame after a seek, trimmed to start on a 16-kHz sample, and its position.

    A source sample lies on the 16-kHz grid when its time is a whole number of output samples
    (every 3rd sample at 48 kHz, every 441st at 44.1 kHz). Starting the resampler there gives
    the same output instants as a full decode; starting anywhere else would shift the output
    by a fraction of a sample. Returns ``(None, None)`` when the whole frame lies before the
    next grid point, so the next frame is placed instead.
    """
    time_base = frame.time_base or stream.time_base
    if frame.pts is None or time_base is None:
        raise _SeekMissedError  # nothing to place it by
    rate = frame.sample_rate
    index = round((frame.pts - (stream.start_time or 0)) * time_base * rate)
    if index * SAMPLE_RATE > window.first * rate:
        raise _SeekMissedError  # landed after the start
    grid = rate // math.gcd(rate, SAMPLE_RATE)
    skip = -index % grid
    if skip >= frame.samples:
        return None, None
    if skip:
        frame = _without_leading_samples(frame, skip)
    return frame, (index + skip) * SAMPLE_RATE // rate


def _without_leading_samples(frame: av.AudioFrame, count: int) -> av.AudioFrame:
    """A copy of ``frame`` without its first ``count`` samples, in the same sample format."""
    data = frame.to_ndarray()  # planar: [channels, samples]; packed: [1, samples * channels]
    values_per_sample = 1 if frame.format.is_planar else len(frame.layout.channels)
    trimmed = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data[:, count * values_per_sample :]),
        format=frame.format.name,
        layout=frame.layout,
    )
    trimmed.sample_rate = frame.sample_rate
    return trimmed


def _decoded_frames(
    container: av.container.InputContainer, stream: av.audio.AudioStream, name: str
) -> Iterator[av.AudioFrame]:
    """The stream's frames; damaged packets are skipped, as FFmpeg's own tools do."""
    damaged = decoded = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                damaged += 1
                continue
            for frame in frames:
                decoded += 1
                yield frame
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise AudioDecodeError(f"{name} could not be decoded: {error}.", _FILE_HINT) from error
    if damaged and not decoded:
        raise AudioDecodeError(f"{name} has an audio track, but it is corrupt.", _FILE_HINT)
    if damaged:
        logger.warning("%s: skipped %d damaged audio packets", name, damaged)


def _resample(
    resampler: av.AudioResampler, frame: av.AudioFrame | None, name: str
) -> Iterator[np.ndarray]:
    """Resample one frame (None flushes) and mix each output frame down to mono."""
    try:
        resampled = resampler.resample(frame)
    except (av.error.FFmpegError, ValueError) as error:
        raise AudioDecodeError(
            f"{name} could not be converted to 16 kHz: {error}.", _FILE_HINT
        ) from error
    for out in resampled:
        planes = out.to_ndarray()
        yield planes[0] if len(planes) == 1 else planes.mean(axis=0, dtype=np.float32)


# --- an array in memory -------------------------------------------------------------------------


def _check_array(source: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """Validate ``(samples, rate)`` and return mono float32 samples (the mean of the channels)."""
    samples, rate = _check_array_shape(source)
    mono = _to_float32_mono(samples)
    if not np.isfinite(mono).all():
        raise InputError(
            "The sample array contains NaN or infinite values.", "Pass finite samples."
        )
    return mono, rate


def _check_array_shape(source: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """Check the rate, dtype and shape of ``(samples, rate)`` without touching the samples."""
    if len(source) != 2:
        raise InputError(
            "An in-memory audio source must be a (samples, rate) pair.",
            "Pass (numpy_array, sample_rate).",
        )
    samples, rate = np.asarray(source[0]), source[1]
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(
            f"The sample rate must be a positive whole number of Hz, not {rate!r}.",
            "Pass (samples, 16000) for 16-kHz audio.",
        )
    if samples.dtype not in _ARRAY_DTYPES:
        raise InputError(
            f"Audio samples of type {samples.dtype} are not supported.",
            "Pass int16, int32, float32 or float64 samples.",
        )
    if samples.ndim not in (1, 2):
        raise InputError(
            f"The sample array must be 1-D or 2-D [frames, channels], not {samples.ndim}-D.",
            "Pass mono samples or a [frames, channels] array.",
        )
    if samples.ndim == 2 and samples.shape[1] > samples.shape[0]:
        raise InputError(
            f"The sample array has shape {samples.shape}: more channels than frames.",
            "Pass [frames, channels]; transpose a channels-first array with .T.",
        )
    return samples, int(rate)


def _to_float32_mono(samples: np.ndarray) -> np.ndarray:
    scale = _ARRAY_DTYPES[samples.dtype]
    if samples.ndim == 2:
        if samples.shape[1] == 1:
            samples = samples[:, 0]
        else:
            mean = samples.mean(axis=1, dtype=np.float64)
            return (mean * scale).astype(np.float32) if scale != 1.0 else mean.astype(np.float32)
    if scale == 1.0:
        return samples.astype(np.float32, copy=False)
    return (samples.astype(np.float32) * np.float32(scale)).astype(np.float32)


def _resample_array(samples: np.ndarray, rate: int, window: _Window) -> np.ndarray:
    """Resample mono float32 samples to 16 kHz with FFmpeg's resampler, block by block."""
    if rate == SAMPLE_RATE:
        return window.clip(0, samples)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    name = "The sample array"
    gathered = _SampleBuffer(_expected_samples(len(samples) / rate, window))
    position = 0
    for offset in range(0, len(samples), ARRAY_BLOCK):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[None, offset : offset + ARRAY_BLOCK]),
            format="flt",
            layout="mono",
        )
        frame.sample_rate = rate
        for block in _resample(resampler, frame, name):
            gathered.append(window.clip(position, block))
            position += len(block)
        if window.filled_by(position):
            break
    else:
        for block in _resample(resampler, None, name):
            gathered.append(window.clip(position, block))
            position += len(block)
    return gathered.samples()
