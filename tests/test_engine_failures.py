"""What a user meets when something is wrong: bad media, broken model files, missing devices.

Each failure must be a project error (`QwenScribeError`, the right subclass) with one clear
sentence that names what was wrong, raised before any heavy work where possible; nothing may
crash the process (a damaged model file is loaded in a child process, whose return code must be
the error's exit code, not a signal). The engines run the real hybrid runtime on the tiny
converted checkpoint (fp32 ONNX, f16 GGUF).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

from qwenscribe.convert.convert import ConvertOptions, convert
from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
from qwenscribe.errors import (
    AudioDecodeError,
    DeviceError,
    InputError,
    ModelError,
    ModelUnavailableError,
    NoAudioError,
    QwenScribeError,
)
from torchless import run_without_torch

RATE = 16000
DECODER = "decoder.f16.gguf"
# A few tokens per chunk keep every transcription here well under a second.
FAST = {"tokens_per_second": 1.0, "min_new_tokens": 4, "threads": 1}


def hybrid_config(folder: Path | str, **overrides) -> ASREngineConfig:
    options = {
        "model": str(folder),
        "decoder_quant": "f16",
        "encoder_precision": "fp32",
        "vad": False,
        **FAST,
        **overrides,
    }
    return ASREngineConfig(**options)


def assert_clear(error: QwenScribeError, *names: str) -> None:
    """One sentence (ending in a full stop) that names every one of `names`."""
    message = error.message
    for name in names:
        assert name in message, f"{name!r} is not named in: {message}"
    rest = message
    for name in names:
        rest = rest.replace(name, "NAME")
    assert rest.rstrip().endswith("."), message
    assert len(re.findall(r"[.!?](?:\s|$)", rest)) == 1, f"more than one sentence: {message}"


@pytest.fixture(scope="module")
def converted(checkpoints, tmp_path_factory) -> Path:
    """The tiny ASR checkpoint converted for the hybrid runtime (fp32 encoder, f16 decoder)."""
    root = tmp_path_factory.mktemp("converted")
    options = ConvertOptions(encoder_precisions=("fp32",), decoder_quants=("f16",))
    return convert(checkpoints[("asr", "hf")], root / "asr", options).folder


@pytest.fixture(scope="module")
def engine(converted):
    with QwenASREngine(hybrid_config(converted)) as engine:
        yield engine


@pytest.fixture
def model_copy(converted, tmp_path) -> Path:
    """A copy of the converted folder that a test may damage."""
    return Path(shutil.copytree(converted, tmp_path / "model"))


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Model caches under the test's folder, and the Hugging Face Hub unreachable (offline)."""
    home = tmp_path / "home"
    monkeypatch.setenv("QWENSCRIBE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return home


# -- bad media ------------


def test_corrupt_media_is_an_audio_decode_error(engine, data_dir) -> None:
    path = str(data_dir / "corrupt.mp3")
    with pytest.raises(AudioDecodeError) as caught:
        engine.transcribe(path)
    assert_clear(caught.value, path)


def test_a_video_without_audio_is_a_no_audio_error(engine, data_dir) -> None:
    path = str(data_dir / "video_no_audio.mp4")
    with pytest.raises(NoAudioError) as caught:
        engine.transcribe(path)
    assert_clear(caught.value, path)
    assert "audio" in caught.value.message


def test_zero_samples_are_a_no_audio_error(engine) -> None:
    with pytest.raises(NoAudioError) as caught:
        engine.transcribe((np.zeros(0, np.float32), RATE))
    assert_clear(caught.value, "sample array")


def test_an_empty_wav_file_is_a_no_audio_error(engine, tmp_path) -> None:
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(b"")
    with pytest.raises(NoAudioError) as caught:
        engine.transcribe(path)
    assert_clear(caught.value, str(path))


def test_a_missing_file_is_an_audio_decode_error(engine, tmp_path) -> None:
    path = str(tmp_path / "nowhere" / "talk.mp3")
    with pytest.raises(AudioDecodeError) as caught:
        engine.transcribe(path)
    assert_clear(caught.value, path)


def test_an_unsupported_language_is_an_input_error(engine, data_dir) -> None:
    with pytest.raises(InputError) as caught:
        engine.transcribe(data_dir / "en_speech.wav", language="klingon")
    assert_clear(caught.value, "klingon")


def test_a_bad_input_in_a_batch_names_itself(engine, data_dir) -> None:
    """transcribe_many stops at the input that fails and says which one it was."""
    bad = str(data_dir / "corrupt.mp3")
    with pytest.raises(AudioDecodeError, match=re.escape(bad)):
        engine.transcribe_many([data_dir / "en_speech.wav", bad])


def test_the_engine_still_works_after_input_errors(engine, data_dir) -> None:
    """Errors leave no state behind: the same engine transcribes a good file afterwards."""
    for bad in (data_dir / "corrupt.mp3", (np.zeros(0, np.float32), RATE)):
        with pytest.raises(InputError):
            engine.transcribe(bad)
    transcript = engine.transcribe(data_dir / "en_speech.wav")
    assert transcript.chunks
    assert transcript.duration == pytest.approx(5.81, abs=1e-3)
    assert transcript.chunks[0].max_new_tokens >= FAST["min_new_tokens"]


# -- broken or wrong model files ------------


def test_a_deleted_decoder_file_is_a_model_error(model_copy) -> None:
    (model_copy / DECODER).unlink()
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(model_copy))
    assert_clear(caught.value, str(model_copy / DECODER))


def test_a_truncated_decoder_file_is_a_model_error(model_copy) -> None:
    """Its size no longer matches manifest.json: refused before llama.cpp opens it."""
    path = model_copy / DECODER
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(model_copy))
    assert_clear(caught.value, str(path))
    assert "size" in caught.value.message


LOAD_AND_TRANSCRIBE = """
import sys
from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
from qwenscribe.errors import QwenScribeError
try:
    config = ASREngineConfig(
        model=sys.argv[1], decoder_quant="f16", encoder_precision="fp32", vad=False,
        tokens_per_second=1.0, min_new_tokens=4, threads=1,
    )
    with QwenASREngine(config) as engine:
        engine.transcribe(sys.argv[2])
except QwenScribeError as error:
    print(type(error).__name__, error)
    sys.exit(error.exit_code)
print("no error")
"""


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param(0, id="all-garbage"),
        pytest.param(24, id="header-kept,metadata-garbage"),
        pytest.param(-(1 << 20), id="tensor-data-garbage"),
    ],
)
def test_garbage_of_the_right_size_never_crashes(kept, model_copy, data_dir) -> None:
    """A decoder file with the right size but garbage bytes (from `kept` on) passes the size
    check; llama.cpp must then fail cleanly (no signal) and the engine report a ModelError
    naming the file, whether loading fails or the weights only turn out to be garbage."""
    path = model_copy / DECODER
    data = bytearray(path.read_bytes())
    start = kept % len(data)
    data[start:] = np.random.default_rng(0).integers(0, 256, len(data) - start, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_TRANSCRIBE,
            str(model_copy),
            str(data_dir / "en_speech.wav"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {done.stderr[-2000:]}"
    assert done.returncode == ModelError.exit_code, done.stdout + done.stderr[-2000:]
    assert done.stdout.startswith("ModelError")
    assert str(path) in done.stdout


def test_a_quantization_the_folder_lacks_lists_what_it_has(converted) -> None:
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(converted, decoder_quant="q8_0"))
    assert_clear(caught.value, str(converted), "q8_0", "f16")
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(converted, encoder_precision="int8"))
    assert "int8" in caught.value.message
    assert "fp32" in caught.value.message


def test_an_unknown_quantization_is_refused_by_name(converted) -> None:
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(converted, decoder_quant="q3_xx"))
    assert "q3_xx" in caught.value.message
    assert "q8_0" in str(caught.value)


@pytest.mark.parametrize("runtime", ["hybrid", "transformers"])
def test_an_aligner_is_not_a_speech_recognizer(runtime, checkpoints, isolated_home) -> None:
    folder = str(checkpoints[("aligner", "hf")])
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(folder, runtime=runtime))
    assert_clear(caught.value, folder)
    assert "aligner" in caught.value.message
    assert not (isolated_home / "models").exists() or not any((isolated_home / "models").iterdir())


def test_a_converted_folder_is_refused_by_the_transformers_runtime(converted) -> None:
    """The transformers runtime needs the checkpoint; the error says where it came from."""
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(converted, runtime="transformers"))
    assert_clear(caught.value, str(converted))
    assert "converted" in caught.value.message
    assert caught.value.hint
    assert "checkpoint" in caught.value.hint


def test_a_missing_model_folder_is_a_model_error(tmp_path, isolated_home) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelError) as caught:
        QwenASREngine(hybrid_config(missing))
    assert type(caught.value) is ModelError  # a local path: not a download problem
    assert_clear(caught.value, missing)
    assert caught.value.hint  # says what to pass instead


@pytest.mark.parametrize("runtime", ["hybrid", "transformers"])
def test_an_uncached_hub_id_offline_is_model_unavailable(runtime, isolated_home) -> None:
    hub_id = "nobody-here/Qwen3-ASR-missing"
    with pytest.raises(ModelUnavailableError) as caught:
        QwenASREngine(hybrid_config(hub_id, runtime=runtime))
    assert_clear(caught.value, hub_id)
    assert caught.value.hint
    assert "--model" in caught.value.hint


# -- devices ------------


def test_cuda_with_a_cpu_only_onnxruntime_is_a_device_error(converted) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime can use CUDA")
    with pytest.raises(DeviceError) as caught:
        QwenASREngine(hybrid_config(converted, device="cuda"))
    message = caught.value.message
    assert "onnxruntime" in message
    assert "cuda" in message
    assert "CPUExecutionProvider" in message  # what it does offer
    assert caught.value.hint
    assert "cpu" in caught.value.hint


@pytest.mark.parametrize(
    "runtime", ["hybrid", pytest.param("transformers", marks=pytest.mark.reference)]
)
def test_an_unknown_device_is_a_device_error(runtime, converted, checkpoints) -> None:
    if runtime == "transformers":
        pytest.importorskip("torch")
    model = converted if runtime == "hybrid" else checkpoints[("asr", "hf")]
    with pytest.raises(DeviceError) as caught:
        QwenASREngine(hybrid_config(model, runtime=runtime, device="nonsense"))
    assert_clear(caught.value, "'nonsense'")


@pytest.mark.reference
def test_cuda_without_a_gpu_is_a_device_error_on_transformers(checkpoints) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    model = checkpoints[("asr", "hf")]
    with pytest.raises(DeviceError) as caught:
        QwenASREngine(hybrid_config(model, runtime="transformers", device="cuda"))
    assert "'cuda'" in caught.value.message


# -- the hybrid runtime without torch ------------


def test_the_hybrid_engine_never_imports_torch(converted, data_dir) -> None:
    """A whole transcription (decode, VAD, mel, ONNX encoder, llama.cpp decoder) in a process
    where importing torch or transformers fails."""
    code = textwrap.dedent(
        f"""
        from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
        config = ASREngineConfig(
            model={str(converted)!r}, decoder_quant="f16", encoder_precision="fp32", vad=True,
            tokens_per_second=1.0, min_new_tokens=4, threads=1,
        )
        with QwenASREngine(config) as engine:
            transcript = engine.transcribe({str(data_dir / "en_speech.wav")!r})
        assert transcript.chunks, "VAD found no speech"
        print("TEXT", repr(transcript.text))
        print("TORCH", "torch" in sys.modules, "transformers" in sys.modules)
        """
    )
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TEXT " in done.stdout
    assert "TORCH False False" in done.stdout


# -- configuration ------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("parallel_sequences", 0),
        ("max_chunk_s", 0.5),
        ("runtime", "vllm"),
        ("threads", 0),
        ("tokens_per_second", 0.0),
    ],
)
def test_invalid_settings_are_input_errors_naming_them(option, value) -> None:
    """Refused when the engine is made, before any model is looked for."""
    config = ASREngineConfig(model="/nowhere/at/all", **{option: value})
    with pytest.raises(InputError) as caught:
        QwenASREngine(config)
    assert option in str(caught.value) or repr(value) in str(caught.value)
