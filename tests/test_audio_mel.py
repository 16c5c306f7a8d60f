"""The numpy log-mel against transformers' Qwen3ASRFeatureExtractor, and its own invariants.

Reference tests load the extractor from the tiny checkpoint's preprocessor_config.json (the
released values: n_fft 400, hop 160, 128 bins, 16 kHz, min_length 8000), call it the way
Qwen3ASRProcessor does (padding=True, n_window=50) and compare the valid frames and the 1-s
chunks the encoder cuts from its padded output.
"""

from __future__ import annotations

import numpy as np
import pytest

from qwenscribe.audio.decode import decode_audio
from qwenscribe.audio.mel import (
    HOP_LENGTH,
    MIN_SAMPLES,
    N_MELS,
    log_mel_spectrogram,
    mel_filters,
    pad_to_chunks,
)

SAMPLE_RATE = 16000
CHUNK = 100  # mel frames per encoder front-end chunk
TOLERANCE = 1e-4  # float32 STFT in the reference against float64 here


@pytest.fixture(scope="module")
def feature_extractor(checkpoints):
    from transformers import AutoFeatureExtractor

    return AutoFeatureExtractor.from_pretrained(checkpoints[("asr", "hf")])


def reference(feature_extractor, samples: np.ndarray) -> tuple[np.ndarray, int]:
    """The extractor's padded features [128, 100 * k] and how many frames are valid."""
    out = feature_extractor(
        samples,
        sampling_rate=SAMPLE_RATE,
        padding=True,
        return_attention_mask=True,
        n_window=50,
        return_tensors="np",
    )
    return out["input_features"][0], int(out["attention_mask"][0].sum())


def reference_chunks(features: np.ndarray) -> np.ndarray:
    """How Qwen3ASREncoder.forward cuts the padded features: [n_chunks, 128, 100]."""
    bins, frames = features.shape
    return features.reshape(bins, frames // CHUNK, CHUNK).transpose(1, 0, 2)


@pytest.fixture(scope="module")
def clips(data_dir, en_speech, long_speech) -> dict[str, np.ndarray]:
    return {
        "en_speech": en_speech,
        "zh_speech": decode_audio(data_dir / "zh_speech.wav"),
        "en_long": decode_audio(data_dir / "en_long.flac"),
        "silence": decode_audio(data_dir / "silence.wav"),
        "0.37 s": en_speech[8000 : 8000 + round(0.37 * SAMPLE_RATE)],
        "1 sample short of a frame": en_speech[: 101 * HOP_LENGTH - 1],
        "long_speech 62 s": long_speech,
    }


@pytest.mark.reference
@pytest.mark.parametrize(
    "name",
    [
        "en_speech",
        "zh_speech",
        "en_long",
        "silence",
        "0.37 s",
        "1 sample short of a frame",
        "long_speech 62 s",
    ],
)
def test_matches_transformers(name, clips, feature_extractor):
    samples = clips[name]
    expected, valid = reference(feature_extractor, samples)
    mel = log_mel_spectrogram(samples)
    assert mel.dtype == np.float32
    assert mel.shape == (N_MELS, valid)
    assert np.abs(mel - expected[:, :valid]).max() < TOLERANCE


@pytest.mark.reference
@pytest.mark.parametrize("length", [100, 7999, 8000, 8159, 8160, 16159, 16160, 16161])
def test_frame_count_matches_transformers(length, long_speech, feature_extractor):
    samples = long_speech[SAMPLE_RATE : SAMPLE_RATE + length]
    _, valid = reference(feature_extractor, samples)
    mel = log_mel_spectrogram(samples)
    assert mel.shape[1] == valid == max(length, MIN_SAMPLES) // HOP_LENGTH


@pytest.mark.reference
@pytest.mark.parametrize("seconds", [0.37, 1.0, 2.345, 12.0])
def test_chunks_match_what_the_encoder_gets(seconds, long_speech, feature_extractor):
    samples = long_speech[: round(seconds * SAMPLE_RATE)]
    expected, valid = reference(feature_extractor, samples)
    chunks = pad_to_chunks(log_mel_spectrogram(samples))
    encoder_input = reference_chunks(expected)
    assert chunks.shape == encoder_input.shape
    assert chunks.dtype == np.float32
    assert np.abs(chunks - encoder_input).max() < TOLERANCE
    # The padding after the valid frames is exactly 0.0 in both.
    last = valid - (len(chunks) - 1) * CHUNK
    assert np.all(chunks[-1, :, last:] == 0.0)
    assert np.all(encoder_input[-1, :, last:] == 0.0)


# --- invariants that need no reference ----------------------------------------------------------


def test_digital_silence_is_flat_at_the_floor():
    """All-zero power clamps to 1e-10 everywhere: log10 = -10, then (x + 4) / 4 = -1.5."""
    mel = log_mel_spectrogram(np.zeros(SAMPLE_RATE, np.float32))
    assert mel.shape == (N_MELS, SAMPLE_RATE // HOP_LENGTH)
    assert np.all(mel == -1.5)


def test_dynamic_range_is_eight_decades_per_call(en_speech):
    """Floor at max - 8 in log10, i.e. max - 2 after (x + 4) / 4, taken over the whole call.

    So the picture is relative to the call's loudest bin: 20 dB quieter input (two decades of
    power) shifts every value by 2 / 4, as long as the floor stays above the 1e-10 clamp.
    """
    mel = log_mel_spectrogram(en_speech)
    assert mel.min() == pytest.approx(mel.max() - 2.0, abs=1e-6)
    quiet = log_mel_spectrogram(en_speech * np.float32(0.1))
    assert quiet.min() * 4 - 4 > -10  # the floor, not the clamp, sets the minimum
    np.testing.assert_allclose(quiet, mel - 0.5, atol=1e-4)


@pytest.mark.parametrize("hz", [440.0, 1000.0, 3000.0, 6000.0])
def test_a_tone_lands_in_the_mel_bins_around_its_frequency(hz):
    """A tone peaks in the filter that weighs its FFT bin the most."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    mel = log_mel_spectrogram((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
    peak_bins = mel[:, 5:-5].argmax(axis=0)
    fft_bin = round(hz / (SAMPLE_RATE / 400))
    expected = mel_filters()[:, fft_bin].argmax()
    assert np.all(peak_bins == expected)


def test_short_clips_are_padded_to_half_a_second(en_speech):
    clip = en_speech[8000:8100]
    mel = log_mel_spectrogram(clip)
    assert mel.shape == (N_MELS, MIN_SAMPLES // HOP_LENGTH)
    padded = np.concatenate([clip, np.zeros(MIN_SAMPLES - len(clip), np.float32)])
    np.testing.assert_array_equal(mel, log_mel_spectrogram(padded))
    unpadded = log_mel_spectrogram(clip, min_samples=0)
    assert unpadded.shape == (N_MELS, 0)
    assert log_mel_spectrogram(np.zeros(0, np.float32), min_samples=0).shape == (N_MELS, 0)


def test_rejects_multichannel_input():
    with pytest.raises(ValueError, match="1-D"):
        log_mel_spectrogram(np.zeros((16000, 2), np.float32))


def test_mel_filters_shape_and_cache():
    filters = mel_filters()
    assert filters.shape == (N_MELS, 201)
    assert filters is mel_filters()
    assert not filters.flags.writeable
    assert np.all(filters >= 0)
    assert np.all(filters.max(axis=1) > 0)  # no empty filter
    assert np.all(filters[:, 200] == 0)  # nothing reaches 8 kHz exactly: the last edge


@pytest.mark.parametrize(("frames", "n_chunks"), [(1, 1), (99, 1), (100, 1), (101, 2), (250, 3)])
def test_pad_to_chunks_splits_and_zero_pads(frames, n_chunks):
    rng = np.random.default_rng(frames)
    mel = rng.normal(size=(N_MELS, frames)).astype(np.float32)
    chunks = pad_to_chunks(mel)
    assert chunks.shape == (n_chunks, N_MELS, CHUNK)
    assert chunks.dtype == np.float32
    assert chunks.flags.c_contiguous
    rebuilt = np.concatenate(list(chunks), axis=1)
    np.testing.assert_array_equal(rebuilt[:, :frames], mel)
    assert np.all(rebuilt[:, frames:] == 0.0)


def test_pad_to_chunks_of_nothing_and_other_chunk_sizes():
    assert pad_to_chunks(np.zeros((N_MELS, 0), np.float32)).shape == (0, N_MELS, CHUNK)
    assert pad_to_chunks(np.ones((N_MELS, 7), np.float32), frames_per_chunk=3).shape == (
        3,
        N_MELS,
        3,
    )
