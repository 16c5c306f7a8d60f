"""Decoding media to 16 kHz mono: fixtures, in-memory inputs, windows and every user error.

Expected values come from outside the decoder: the `wave` module, the durations recorded in
fixtures.json, and band-limited (FFT) resampling in numpy.
"""

from __future__ import annotations

import tracemalloc
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from conftest import read_wav
from qwenscribe.audio import decode as decode_module
from qwenscribe.audio.decode import SAMPLE_RATE, audio_duration, decode_audio
from qwenscribe.errors import AudioDecodeError, InputError, NoAudioError, StartPastEndError

LOSSLESS = ["en_speech.wav", "zh_speech.wav", "en_long.flac", "silence.wav"]
WITH_AUDIO = [*LOSSLESS, "video_with_audio.mp4"]
WAVS = ["en_speech.wav", "zh_speech.wav", "silence.wav"]
AAC_FRAME = 1024  # samples per AAC frame: a decoder may round the length up to whole frames
WINDOWS = [(0.0, 0.7), (0.3, 1.0), (0.51, 0.77), (1.2345, 2.5), (2.0, None), (3.0, 30.0)]


def fft_resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Ideal band-limited resampling (zero-padded spectrum): independent of FFmpeg."""
    length = len(samples) * new_rate // rate
    spectrum = np.fft.rfft(samples.astype(np.float64))
    resized = np.zeros(length // 2 + 1, complex)
    kept = min(len(spectrum), len(resized))
    resized[:kept] = spectrum[:kept]
    return np.fft.irfft(resized, length) * (length / len(samples))


def write_flac(path: Path, samples: np.ndarray, rate: int, channels: int) -> Path:
    """Write float samples in [-1, 1] as 16-bit FLAC with identical channels."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=rate, layout=layout)
        for offset in range(0, len(pcm), 4096):
            block = np.repeat(pcm[None, offset : offset + 4096], channels, axis=0)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block.T.reshape(1, -1)), format="s16", layout=layout
            )
            frame.sample_rate, frame.pts = rate, offset
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def window_of(full: np.ndarray, start: float, duration: float | None) -> np.ndarray:
    first = round(start * SAMPLE_RATE)
    return full[first : None if duration is None else first + round(duration * SAMPLE_RATE)]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


# --- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_AUDIO)
def test_fixture_decodes_to_its_recorded_duration(name, data_dir, fixture_facts):
    facts: dict[str, Any] = fixture_facts[name]
    samples = decode_audio(data_dir / name)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert np.abs(samples).max() <= 1.0
    expected = round(facts["duration_s"] * SAMPLE_RATE)
    if name in LOSSLESS:
        assert len(samples) == expected
    else:  # AAC: up to one codec frame more, at the source rate
        slack = AAC_FRAME * SAMPLE_RATE / facts["sample_rate"]
        assert expected <= len(samples) <= expected + slack


@pytest.mark.parametrize("name", WAVS)
def test_wav_decodes_bit_for_bit_like_the_wave_module(name, data_dir):
    samples = decode_audio(data_dir / name)
    np.testing.assert_array_equal(samples, read_wav(data_dir / name))


def test_flac_decodes_to_exact_16_bit_values(data_dir):
    samples = decode_audio(data_dir / "en_long.flac")
    scaled = samples.astype(np.float64) * 32768
    np.testing.assert_array_equal(scaled, np.round(scaled))
    assert rms(samples) > 0.02


def test_video_audio_track_is_16k_mono_speech(data_dir, fixture_facts, en_speech):
    """The mp4's AAC 48-kHz stereo track holds en_speech's first sentence; compare with it."""
    facts = fixture_facts["video_with_audio.mp4"]
    samples = decode_audio(data_dir / "video_with_audio.mp4")
    seconds = len(samples) / SAMPLE_RATE
    assert facts["duration_s"] <= seconds <= facts["duration_s"] + AAC_FRAME / 48000
    speech = facts["speech"][0]
    voiced = samples[round(speech["start"] * SAMPLE_RATE) : round(speech["end"] * SAMPLE_RATE)]
    assert rms(voiced) > 0.02
    assert rms(samples[: round(0.4 * SAMPLE_RATE)]) < 1e-3  # the leading silence stays quiet
    # Same signal as the 16-kHz original, at the same level: channels are averaged, not
    # summed at -3 dB each (which would make the gain sqrt(2)).
    n = round(facts["duration_s"] * SAMPLE_RATE)
    original, decoded = en_speech[:n].astype(np.float64), samples[:n].astype(np.float64)
    gain = decoded @ original / (original @ original)
    assert 0.85 < gain < 1.1
    assert np.corrcoef(decoded, original)[0, 1] > 0.85


@pytest.mark.parametrize("name", ["en_speech.wav", "en_long.flac", "video_with_audio.mp4"])
def test_bytes_decode_like_the_path(name, data_dir):
    path = data_dir / name
    np.testing.assert_array_equal(decode_audio(path.read_bytes()), decode_audio(path))


def test_str_path_and_awkward_file_name(data_dir, tmp_path):
    """A colon would make FFmpeg read "take:2" as a protocol name; it must stay a file."""
    awkward = tmp_path / "take:2 (final).wav"
    awkward.write_bytes((data_dir / "en_speech.wav").read_bytes())
    expected = decode_audio(data_dir / "en_speech.wav")
    np.testing.assert_array_equal(decode_audio(str(awkward)), expected)


# --- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["en_speech.wav", "en_long.flac"])
@pytest.mark.parametrize(("start", "duration"), WINDOWS)
def test_window_is_sample_exact_slice_of_full_decode(name, start, duration, data_dir):
    full = decode_audio(data_dir / name)
    part = decode_audio(data_dir / name, start=start, duration=duration)
    np.testing.assert_array_equal(part, window_of(full, start, duration))


@pytest.mark.parametrize("rate", [48000, 44100])
def test_window_is_exact_for_lossless_audio_at_other_rates(rate, tmp_path, en_speech):
    """After a seek, resampling restarts on the 16-kHz grid, so no fractional-sample shift."""
    path = write_flac(tmp_path / "x.flac", fft_resample(en_speech, SAMPLE_RATE, rate), rate, 2)
    full = decode_audio(path)
    for start, duration in [(1.2345, 2.5), (2.0, 0.5), (0.77, None)]:
        part = decode_audio(path, start=start, duration=duration)
        np.testing.assert_array_equal(part, window_of(full, start, duration))


def test_window_of_lossy_audio_has_the_right_length_and_content(data_dir):
    """AAC decodes a little differently after a seek (likely its noise substitution): close."""
    path = data_dir / "video_with_audio.mp4"
    full = decode_audio(path)
    part = decode_audio(path, start=1.2345, duration=1.5)
    expected = window_of(full, 1.2345, 1.5)
    assert len(part) == len(expected) == 1.5 * SAMPLE_RATE
    assert np.corrcoef(part, expected)[0, 1] > 0.99


def test_window_past_the_end_is_shortened(data_dir):
    part = decode_audio(data_dir / "en_speech.wav", start=5.0, duration=10.0)
    assert len(part) == round((5.81 - 5.0) * SAMPLE_RATE)


# --- in-memory arrays ---------------------------------------------------------------------------


def test_16k_mono_float_array_comes_back_unchanged(en_speech):
    samples = decode_audio((en_speech, SAMPLE_RATE))
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, en_speech)
    as_column = decode_audio((en_speech[:, None], SAMPLE_RATE))
    np.testing.assert_array_equal(as_column, en_speech)


def test_16k_int16_array_decodes_like_the_wav(data_dir, en_speech):
    pcm = np.round(en_speech * 32768).astype(np.int16)
    np.testing.assert_array_equal(decode_audio((pcm, SAMPLE_RATE)), en_speech)
    window = decode_audio((pcm, SAMPLE_RATE), start=1.2345, duration=0.5)
    np.testing.assert_array_equal(window, window_of(en_speech, 1.2345, 0.5))


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_48k_stereo_array_resamples_to_the_16k_original(dtype, en_speech):
    """48-kHz stereo made from the 16-kHz clip by ideal (FFT) upsampling comes back close.

    Tolerance: FFmpeg's resampler is not ideal. Its anti-alias filter rolls off in the top
    ~1 kHz below 8 kHz, where espeak's clip still has energy, so there the error is large
    (measured: 16 % of that band's energy) and sets the overall figures (measured max 0.0099,
    RMS 0.00064 against a signal RMS of 0.075). Below 7 kHz, where speech lives, the error
    energy is 1e-6 of the signal's (-60 dB). int16 adds 1/65536 of quantisation, nothing more.
    """
    upsampled = fft_resample(en_speech, SAMPLE_RATE, 48000)
    stereo = np.stack([upsampled, upsampled], axis=1)
    if dtype == np.int16:
        stereo = np.clip(np.round(stereo * 32768), -32768, 32767)
    samples = decode_audio((stereo.astype(dtype), 48000))
    assert samples.dtype == np.float32
    assert len(samples) == len(en_speech)
    error = samples.astype(np.float64) - en_speech
    assert np.abs(error).max() < 0.02
    assert rms(error) < 0.02 * rms(en_speech)
    frequencies = np.fft.rfftfreq(len(error), 1 / SAMPLE_RATE)
    speech_band = frequencies < 7000
    error_energy = np.sum(np.abs(np.fft.rfft(error)[speech_band]) ** 2)
    signal_energy = np.sum(np.abs(np.fft.rfft(en_speech)[speech_band]) ** 2)
    assert error_energy < 1e-5 * signal_energy


def test_stereo_array_is_mixed_by_the_mean_of_its_channels(en_speech):
    left, right = en_speech, -0.5 * en_speech
    samples = decode_audio((np.stack([left, right], axis=1), SAMPLE_RATE))
    np.testing.assert_allclose(samples, 0.25 * en_speech, atol=1e-7)


@pytest.mark.parametrize(
    "source",
    [
        (np.zeros((2, 16000), np.float32), 16000),  # channels first
        (np.zeros((4, 4, 4), np.float32), 16000),
        (np.zeros(100, np.uint8), 16000),
        (np.zeros(100, np.float32), 0),
        (np.zeros(100, np.float32), 44.1),
        (np.full(100, np.nan, np.float32), 16000),
    ],
    ids=["channels-first", "3-D", "uint8", "rate-0", "rate-float", "nan"],
)
def test_bad_arrays_are_input_errors(source):
    with pytest.raises(InputError) as caught:
        decode_audio(source)
    assert caught.value.hint


def test_empty_array_has_no_audio():
    with pytest.raises(NoAudioError, match="sample array"):
        decode_audio((np.zeros(0, np.float32), 48000))


# --- memory: the samples are held once -------------------------------------------------------


def _noise_wav(path: Path, seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    samples = (np.random.default_rng(1).standard_normal(round(seconds * rate)) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return samples


@pytest.mark.parametrize("rate", [16000, 44100])
def test_a_long_file_is_decoded_without_a_second_copy(rate, tmp_path):
    """Numpy reports its buffers to tracemalloc: the peak is the result, not result + blocks."""
    path = tmp_path / "ten_minutes.wav"
    _noise_wav(path, 600.0, rate)
    tracemalloc.start()
    try:
        samples = decode_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 600 * SAMPLE_RATE
    assert peak < 1.1 * samples.nbytes, (peak, samples.nbytes)  # joined blocks: 2x


@pytest.mark.parametrize("stated", [None, 0.5, 3600.0])
def test_a_wrong_or_missing_stated_length_changes_nothing(stated, data_dir, monkeypatch):
    """The buffer is sized from the container's claim; a claim too short (it grows), absent or
    far too long (it shrinks) gives the same samples."""
    path = data_dir / "en_long.flac"
    expected = decode_audio(path)
    window = decode_audio(path, start=2.0, duration=3.0)
    monkeypatch.setattr(decode_module, "_stated_seconds", lambda container, stream: stated)
    again = decode_audio(path)
    assert again.dtype == np.float32
    assert again.flags.c_contiguous
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(decode_audio(path, start=2.0, duration=3.0), window)


# --- errors -------------------------------------------------------------------------------------


def assert_project_error(caught: pytest.ExceptionInfo, cls: type, name: str) -> None:
    """The exact project class, the file named, a hint, and no raw PyAV error as the type."""
    assert type(caught.value) is cls
    assert name in str(caught.value)
    assert caught.value.hint
    assert not isinstance(caught.value, av.error.FFmpegError)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(path)
    assert_project_error(caught, AudioDecodeError, str(path))
    assert "does not exist" in caught.value.message


def test_folder_is_not_a_media_file(tmp_path):
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(tmp_path)
    assert_project_error(caught, AudioDecodeError, str(tmp_path))


def test_corrupt_mp3(data_dir):
    path = data_dir / "corrupt.mp3"
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(path)
    assert_project_error(caught, AudioDecodeError, str(path))


def test_corrupt_bytes(data_dir):
    data = (data_dir / "corrupt.mp3").read_bytes()
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(data)
    assert_project_error(caught, AudioDecodeError, f"{len(data)} bytes")


def test_an_empty_file_is_called_empty(tmp_path):
    path = tmp_path / "download.m4a"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(path)
    assert_project_error(caught, AudioDecodeError, str(path))
    assert "is empty (0 bytes)" in caught.value.message
    with pytest.raises(AudioDecodeError, match="is empty"):
        decode_audio(b"")


def test_text_file_named_mp3(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("These are meeting notes, not a recording.\n" * 50, encoding="utf-8")
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(path)
    assert_project_error(caught, AudioDecodeError, str(path))


def test_video_without_audio_track(data_dir):
    path = data_dir / "video_no_audio.mp4"
    with pytest.raises(NoAudioError) as caught:
        decode_audio(path)
    assert_project_error(caught, NoAudioError, str(path))


def test_zero_length_wav(tmp_path):
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(b"")
    with pytest.raises(NoAudioError) as caught:
        decode_audio(path)
    assert_project_error(caught, NoAudioError, str(path))


@pytest.mark.parametrize("name", ["en_speech.wav", "en_long.flac", "video_with_audio.mp4"])
def test_start_beyond_the_end(name, data_dir):
    path = data_dir / name
    with pytest.raises(StartPastEndError) as caught:
        decode_audio(path, start=60.0)
    assert_project_error(caught, StartPastEndError, str(path))
    assert not isinstance(caught.value, NoAudioError)  # reported, not written as empty


@pytest.mark.parametrize(
    ("start", "duration"),
    [(-1.0, None), (0.0, -2.0), (0.0, 0.0), (float("nan"), None), (0.0, float("inf"))],
)
def test_bad_window_is_an_input_error(start, duration, data_dir):
    with pytest.raises(InputError) as caught:
        decode_audio(data_dir / "en_speech.wav", start=start, duration=duration)
    assert type(caught.value) is InputError
    assert caught.value.hint


# --- duration from metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_AUDIO)
def test_audio_duration_from_metadata(name, data_dir, fixture_facts):
    seconds = audio_duration(data_dir / name)
    assert seconds == pytest.approx(fixture_facts[name]["duration_s"], abs=AAC_FRAME / 48000)


def test_audio_duration_of_an_array_and_of_bad_inputs(data_dir, tmp_path):
    assert audio_duration((np.zeros((48000, 2), np.int16), 48000)) == 1.0
    with pytest.raises(NoAudioError):
        audio_duration(data_dir / "video_no_audio.mp4")
    with pytest.raises(AudioDecodeError, match="does not exist"):
        audio_duration(tmp_path / "missing.flac")
    with pytest.raises(AudioDecodeError, match=r"corrupt\.mp3"):
        audio_duration(data_dir / "corrupt.mp3")
