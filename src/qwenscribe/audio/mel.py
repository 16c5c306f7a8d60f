"""Qwen3-ASR's log-mel features in numpy, equal to transformers' ``Qwen3ASRFeatureExtractor``.

The recipe (Whisper's, without the 30-s window):

- clips shorter than ``MIN_SAMPLES`` (0.5 s) are zero-padded to it first, as the extractor and
  the official package do; the model sees the padded frames as audio;
- a centred STFT: the signal is reflect-padded by ``N_FFT // 2`` on both sides, framed every
  ``HOP_LENGTH`` samples with a periodic Hann window of ``N_FFT``, no dither;
- the power spectrum through 128 Slaney-normalised mel filters on the Slaney mel scale,
  0-8000 Hz;
- ``log10(max(x, 1e-10))``, floored at ``max - 8`` and mapped by ``(x + 4) / 4``;
- the STFT's last frame is dropped, so ``n`` samples give ``n // HOP_LENGTH`` frames.

The ``max - 8`` floor takes the maximum over the whole call. In the reference one call is one
request's audio, so the engine computes the mel once per chunk it sends to the model, never once
per file: the loudest moment of a film must not set the floor of a quiet chunk an hour later.

Computed in float64 (the reference uses float32), so the result is at least as close to the
exact value as the reference is; the two differ by float32 rounding.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 128
MIN_SAMPLES = 8000  # the extractor's min_length: shorter clips are zero-padded to this
CHUNK_FRAMES = 100  # the encoder's front end takes 1-s chunks of mel frames

_LOG_FLOOR = 1e-10
_DYNAMIC_RANGE = 8.0  # decades of power kept below the loudest bin
_BLOCK_FRAMES = 512  # frames per FFT block: keeps temporaries at a few MB for any input


def log_mel_spectrogram(samples: np.ndarray, *, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """Log-mel features ``[N_MELS, frames]`` (float32) of 16-kHz mono samples.

    ``frames`` is ``max(len(samples), min_samples) // HOP_LENGTH``: exactly the valid frames the
    reference extractor gives for the same samples (before it pads a batch to whole chunks).
    """
    signal = np.asarray(samples)
    if signal.ndim != 1:
        raise ValueError(f"log_mel_spectrogram takes 1-D mono samples, not shape {signal.shape}")
    # Round to float32 first, as the reference does, then compute in float64.
    signal = signal.astype(np.float32).astype(np.float64)
    if len(signal) < min_samples:
        signal = np.pad(signal, (0, min_samples - len(signal)))
    frames = len(signal) // HOP_LENGTH
    if frames == 0:
        return np.zeros((N_MELS, 0), np.float32)
    log_mel = np.log10(np.maximum(_mel_power(signal, frames), _LOG_FLOOR))
    log_mel = np.maximum(log_mel, log_mel.max() - _DYNAMIC_RANGE)
    return ((log_mel + 4.0) / 4.0).T.astype(np.float32)


def pad_to_chunks(mel: np.ndarray, frames_per_chunk: int = CHUNK_FRAMES) -> np.ndarray:
    """Cut ``[N_MELS, frames]`` into ``[n_chunks, N_MELS, frames_per_chunk]`` float32 chunks.

    The last chunk is padded with 0.0, the value the reference extractor pads its mel with; the
    encoder front end drops the positions that come from padding.
    """
    bins, frames = mel.shape
    n_chunks = -(-frames // frames_per_chunk)
    padded = np.zeros((bins, n_chunks * frames_per_chunk), np.float32)
    padded[:, :frames] = mel
    chunks = padded.reshape(bins, n_chunks, frames_per_chunk).transpose(1, 0, 2)
    return np.ascontiguousarray(chunks)


@functools.cache
def mel_filters() -> np.ndarray:
    """The mel filter bank ``[N_MELS, N_FFT // 2 + 1]``, float64 holding float32 values.

    Slaney mel scale and Slaney area normalisation over 0-8000 Hz; the weights are rounded to
    float32 as the reference applies them. Read-only: it is cached and shared.
    """
    bins = np.linspace(0.0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), N_MELS + 2)
    edges = _mel_to_hz(mels)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)  # equal area: each filter sums the same energy
    filters = weights.astype(np.float32).astype(np.float64)
    filters.flags.writeable = False
    return filters


def _mel_power(signal: np.ndarray, frames: int) -> np.ndarray:
    """Mel power ``[frames, N_MELS]`` of a centred STFT, computed a block of frames at a time."""
    padded = np.pad(signal, N_FFT // 2, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:frames]
    hann = _periodic_hann()
    filters_t = mel_filters().T
    out = np.empty((frames, N_MELS))
    for first in range(0, frames, _BLOCK_FRAMES):
        spectrum = np.fft.rfft(windows[first : first + _BLOCK_FRAMES] * hann, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        out[first : first + _BLOCK_FRAMES] = power @ filters_t
    return out


@functools.cache
def _periodic_hann() -> np.ndarray:
    """Hann window of N_FFT for spectral analysis: periodic, i.e. without its final zero."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


# The Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_MELS_PER_LOG_HZ = 27.0 / np.log(6.4)


def _hz_to_mel(hz: float) -> float:
    if hz < _LOG_START_HZ:
        return hz / _LINEAR_HZ_PER_MEL
    return _LOG_START_MEL + float(np.log(hz / _LOG_START_HZ)) * _MELS_PER_LOG_HZ


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = mels * _LINEAR_HZ_PER_MEL
    logarithmic = _LOG_START_HZ * np.exp((mels - _LOG_START_MEL) / _MELS_PER_LOG_HZ)
    return np.where(mels >= _LOG_START_MEL, logarithmic, linear)
