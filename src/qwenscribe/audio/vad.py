"""Voice activity detection: Silero VAD's ONNX model on onnxruntime, without torch.

The model file ships inside the `silero-vad` wheel, so VAD works offline. That package's own
Python code imports torch, which the hybrid runtime must never load, so only its data file is
used: it is located with `importlib.util.find_spec` (which does not execute the package) and run
here with onnxruntime.

Two stages, kept apart so each can be checked on its own:

- `SileroVAD.speech_probabilities` runs the recurrent model over the audio one 32 ms window at a
  time, carrying its state, and keeps nothing but one probability per window.
- `segments_from_probabilities` turns those probabilities into speech segments with the same
  rules as silero's `get_speech_timestamps` (hysteresis thresholds, minimum speech and silence,
  maximum segment length with a cut in the longest silence, padding), so that tuning advice
  written for silero applies unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qwenscribe.errors import InputError, ModelError

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The only rate supported: the engine resamples to 16 kHz before VAD."""

WINDOW_SAMPLES = 512
"""Samples the model judges per call (32 ms at 16 kHz): one probability each."""

CONTEXT_SAMPLES = 64
"""Tail of the previous window that the model expects in front of each new one."""

_STATE_SHAPE = (2, 1, 128)
_MODEL_FILE = Path("data") / "silero_vad.onnx"
_INSTALL_HINT = "Install it with `pip install silero-vad --no-deps`, or turn VAD off."


def _require_non_negative(name: str, value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise InputError(f"VAD {name} must be zero or more, not {value}.")


@dataclass(frozen=True)
class VADOptions:
    """How probabilities become speech segments; the defaults are silero's.

    threshold: a window at or above it is speech.
    neg_threshold: once in speech, only a window below it counts as silence (hysteresis keeps
        a segment from flickering around one threshold); None means `threshold - 0.15`.
    min_speech_ms: speech shorter than this is dropped (clicks, breaths).
    min_silence_ms: silence must last this long to end a segment (pauses between words).
    speech_pad_ms: each segment is widened by this on both sides, so soft word edges survive.
    max_speech_s: no segment is longer; a longer run is cut in its longest inner silence (or,
        with no silence to use, hard at the limit).
    min_silence_at_max_speech_ms: a silence must be longer than this to be a cut candidate.
    use_longest_silence_at_max_speech: cut in the longest candidate silence; False cuts in the
        most recent one (silero's older behaviour).
    """

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30
    max_speech_s: float = float("inf")
    neg_threshold: float | None = None
    min_silence_at_max_speech_ms: int = 98
    use_longest_silence_at_max_speech: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"VAD threshold must lie between 0 and 1, not {self.threshold}.")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise InputError(
                f"VAD neg_threshold must lie between 0 and the threshold ({self.threshold}), "
                f"not {self.neg_threshold}."
            )
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            _require_non_negative(name, getattr(self, name))
        _require_non_negative("min_silence_at_max_speech_ms", self.min_silence_at_max_speech_ms)
        # The limit must hold at least one window plus the padding added on both sides.
        shortest_s = (WINDOW_SAMPLES / SAMPLE_RATE) + 2 * self.speech_pad_ms / 1000
        if not self.max_speech_s > shortest_s:
            raise InputError(
                f"VAD max_speech_s must be longer than {shortest_s:g} s (one 32 ms window plus "
                f"the padding on both sides), not {self.max_speech_s}."
            )

    @property
    def effective_neg_threshold(self) -> float:
        """The exit threshold in use: silero's default when none was given."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


DEFAULT_OPTIONS = VADOptions()


def default_model_path() -> Path:
    """The ONNX model inside the installed silero-vad package, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelError(
            "The silero-vad package, which holds the VAD model, is not installed.", _INSTALL_HINT
        )
    path = Path(locations[0]) / _MODEL_FILE
    if not path.is_file():
        raise ModelError(f"The silero-vad package has no VAD model at {path}.", _INSTALL_HINT)
    return path


class SileroVAD:
    """Silero VAD on onnxruntime's CPU provider.

    The object holds only the loaded model: every call starts from a fresh state, so one
    instance may serve several threads (onnxruntime sessions allow concurrent runs).
    """

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        if threads < 1:
            raise InputError(f"VAD threads must be 1 or more, not {threads}.")
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not self.model_path.is_file():
            raise ModelError(
                f"The VAD model file {self.model_path} does not exist.",
                "Pass the path of silero_vad.onnx, or leave it out to use the installed one.",
            )
        self._session = _load_session(self.model_path, threads)
        self._sample_rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def speech_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """One speech probability per 512-sample window of 16 kHz mono audio.

        The last window is padded with zeros. The model is recurrent, so the windows run in
        order with the state carried from one to the next; memory stays flat whatever the
        length, since only the probabilities are kept.
        """
        samples = _as_mono_float32(samples)
        probabilities = np.empty(math.ceil(len(samples) / WINDOW_SAMPLES), dtype=np.float32)
        # One buffer, reused: [context | window]. Its tail becomes the next window's context,
        # as the model was trained; the first window sees zeros.
        frame = np.zeros((1, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        for index in range(len(probabilities)):
            window = samples[index * WINDOW_SAMPLES : (index + 1) * WINDOW_SAMPLES]
            frame[0, :CONTEXT_SAMPLES] = frame[0, -CONTEXT_SAMPLES:]
            frame[0, CONTEXT_SAMPLES : CONTEXT_SAMPLES + len(window)] = window
            frame[0, CONTEXT_SAMPLES + len(window) :] = 0.0
            output, state = self._session.run(
                None, {"input": frame, "state": state, "sr": self._sample_rate}
            )
            probabilities[index] = output[0, 0]
        return probabilities

    def speech_segments(
        self, samples: np.ndarray, options: VADOptions = DEFAULT_OPTIONS
    ) -> list[tuple[int, int]]:
        """Speech as `[start, end)` sample ranges of 16 kHz mono audio, in order."""
        probabilities = self.speech_probabilities(samples)
        return segments_from_probabilities(probabilities, len(samples), options)


def speech_segments(
    samples: np.ndarray, options: VADOptions = DEFAULT_OPTIONS, vad: SileroVAD | None = None
) -> list[tuple[int, int]]:
    """Speech ranges of 16 kHz mono audio, with a shared model loaded on first use."""
    return (vad if vad is not None else _shared_vad()).speech_segments(samples, options)


@functools.lru_cache(maxsize=1)
def _shared_vad() -> SileroVAD:
    return SileroVAD()


def _load_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """Open the model on the CPU provider and check it is the streaming Silero model."""
    import onnxruntime  # here, so options and segment rules import without it

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings are about graph details no user can act on
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own unrelated classes per failure
        raise ModelError(
            f"The VAD model {path} cannot be loaded by onnxruntime ({type(error).__name__}).",
            "Reinstall silero-vad (`pip install --force-reinstall silero-vad --no-deps`).",
        ) from error
    inputs = {node.name for node in session.get_inputs()}
    if inputs != {"input", "state", "sr"}:
        raise ModelError(
            f"{path} is not the streaming Silero VAD model (its inputs are {sorted(inputs)}).",
            "Use silero_vad.onnx from the silero-vad package.",
        )
    log.debug("Silero VAD loaded from %s (%d thread(s))", path, threads)
    return session


def _as_mono_float32(samples: np.ndarray) -> np.ndarray:
    """Check the audio is one channel of floats; integer PCM would need scaling first."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise InputError(f"VAD needs mono audio as a 1-D array; got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"VAD needs float samples in [-1, 1]; got {array.dtype} (scale integer PCM first)."
        )
    return array.astype(np.float32, copy=False)


def segments_from_probabilities(
    probabilities: np.ndarray, sample_count: int, options: VADOptions = DEFAULT_OPTIONS
) -> list[tuple[int, int]]:
    """Speech segments, as `[start, end)` samples, from per-window speech probabilities.

    `sample_count` is the length of the audio the probabilities came from: a segment still
    open at the end runs to it, and padding never passes it.
    """
    tracker = _SpeechTracker(options)
    for index, probability in enumerate(probabilities):
        tracker.step(index * WINDOW_SAMPLES, float(probability))
    raw = tracker.finish(sample_count)
    return _pad(raw, SAMPLE_RATE * options.speech_pad_ms / 1000, sample_count)


class _SpeechTracker:
    """The state machine that opens and closes segments window by window.

    Quantities in samples are floats where silero's are, so that comparisons with durations
    that are not whole samples round the same way.
    """

    def __init__(self, options: VADOptions) -> None:
        self.threshold = options.threshold
        self.neg_threshold = options.effective_neg_threshold
        self.use_longest = options.use_longest_silence_at_max_speech
        pad = SAMPLE_RATE * options.speech_pad_ms / 1000
        self.min_speech = SAMPLE_RATE * options.min_speech_ms / 1000
        self.min_silence = SAMPLE_RATE * options.min_silence_ms / 1000
        self.min_cut_silence = SAMPLE_RATE * options.min_silence_at_max_speech_ms / 1000
        # The limit applies before padding, and the window that crosses it is still taken.
        self.max_speech = SAMPLE_RATE * options.max_speech_s - WINDOW_SAMPLES - 2 * pad
        self.segments: list[tuple[int, int]] = []
        self.start: int | None = None  # the open segment's start; None when not in speech
        self._reset_silences()

    def _reset_silences(self) -> None:
        self.silence_start: int | None = None  # where the current run of silence began
        self.cut_silences: list[tuple[int, int]] = []  # (start, length): cut candidates
        # Older cut rule: the latest long-enough silence, and where speech resumed after it.
        self.last_cut: int | None = None
        self.resumed_at: int | None = None

    def step(self, sample: int, probability: float) -> None:
        """Take the window that starts at `sample`."""
        is_speech = probability >= self.threshold
        if is_speech and self.silence_start is not None:
            self._speech_resumes(sample)
        if self.start is None:
            if is_speech:
                self.start = sample
            return
        if sample - self.start > self.max_speech:
            self._cut_at_max_speech(sample)
            if self.start is None:
                return
        if probability < self.neg_threshold:
            self._silence(sample)

    def _speech_resumes(self, sample: int) -> None:
        """A pause ended: remember it as a cut candidate if it was long enough."""
        assert self.silence_start is not None
        length = sample - self.silence_start
        if length > self.min_cut_silence:
            self.cut_silences.append((self.silence_start, length))
        self.silence_start = None
        if self.last_cut is not None and (self.resumed_at or 0) < self.last_cut:
            self.resumed_at = sample

    def _cut_at_max_speech(self, sample: int) -> None:
        """The open segment reached the limit: end it in a pause if there is one."""
        assert self.start is not None
        if self.use_longest and self.cut_silences:
            # max() keeps the earliest of equally long pauses.
            cut, length = max(self.cut_silences, key=lambda silence: silence[1])
            self.segments.append((self.start, cut))
            self.start = cut + length  # speech resumed there and is still going on
        elif self.last_cut is not None:
            self.segments.append((self.start, self.last_cut))
            resumed = self.resumed_at is not None and self.resumed_at >= self.last_cut
            self.start = self.resumed_at if resumed else None
        else:
            # No pause to use: cut hard here and wait for the next window of speech.
            self.segments.append((self.start, sample))
            self.start = None
        self._reset_silences()

    def _silence(self, sample: int) -> None:
        """A window below the exit threshold inside speech: end the segment once it lasts."""
        assert self.start is not None
        if self.silence_start is None:
            self.silence_start = sample
        length = sample - self.silence_start
        if not self.use_longest and length > self.min_cut_silence:
            self.last_cut = self.silence_start
        if length < self.min_silence:
            return
        if self.silence_start - self.start > self.min_speech:
            self.segments.append((self.start, self.silence_start))
        self.start = None
        self._reset_silences()

    def finish(self, sample_count: int) -> list[tuple[int, int]]:
        """Close a segment still open at the end of the audio; the raw segments."""
        if self.start is not None and sample_count - self.start > self.min_speech:
            self.segments.append((self.start, sample_count))
        return self.segments


def _pad(segments: list[tuple[int, int]], pad: float, sample_count: int) -> list[tuple[int, int]]:
    """Widen each segment by `pad` samples; neighbours closer than two pads split the gap."""
    starts = [start for start, _ in segments]
    ends = [end for _, end in segments]
    if starts:
        starts[0] = int(max(0, starts[0] - pad))
    for index in range(len(segments) - 1):
        gap = starts[index + 1] - ends[index]
        if gap < 2 * pad:
            ends[index] += int(gap // 2)
            starts[index + 1] = int(max(0, starts[index + 1] - gap // 2))
        else:
            ends[index] = int(min(sample_count, ends[index] + pad))
            starts[index + 1] = int(max(0, starts[index + 1] - pad))
    if ends:
        ends[-1] = int(min(sample_count, ends[-1] + pad))
    return list(zip(starts, ends, strict=True))
