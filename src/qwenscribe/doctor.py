"""`qwenscribe doctor`: check that this machine can run qwenscribe, and say what to fix.

Each check is a small function returning a `Check` (name, status, detail, advice). Required
checks decide the exit status; the others inform. The llama.cpp check decodes a quantized
model with a multi-token batch in a child process, because the failure it looks for (the AMX
kernels of a native llama.cpp build, shared/ENVIRONMENT.md) is a segfault, not an exception.
The self-test runs the whole product on tiny random-weight checkpoints it writes itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qwenscribe.errors import QwenScribeError
from qwenscribe.log_levels import logger_level
from qwenscribe.runtimes import cpu

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_PYTHON = (3, 10)
LOW_DISK_BYTES = 5 * 1024**3
PROBE_BATCH = 16
RATE = 16000
_PROBE_TIMEOUT_S = 120

AMX_ADVICE = (
    "llama.cpp crashed decoding a quantized model with a multi-token batch: a build with AMX "
    "kernels does this on some CPUs. Rebuild it without AMX with scripts/setup.sh (unset "
    "QWENSCRIBE_LLAMA_AMX), or as a portable build: "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    '-DGGML_BMI2=ON" pip install --force-reinstall --no-cache-dir llama-cpp-python, '
    "or use --decoder-quant f16."
)


@dataclass
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str
    advice: str = ""
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.status != FAIL


# -- environment ------------------------------------------------------------------------------


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", FAIL, version, "qwenscribe needs Python 3.10 or newer.")
    return Check("python", OK, f"{version} ({sys.executable})")


# (module, distribution, required, what it is for)
PACKAGES = (
    ("numpy", "numpy", True, "arrays"),
    ("onnxruntime", "onnxruntime", True, "the audio encoder"),
    ("llama_cpp", "llama-cpp-python", True, "the text decoder"),
    ("av", "av", True, "audio and video decoding"),
    ("tokenizers", "tokenizers", True, "the tokenizer"),
    ("gguf", "gguf", True, "converting checkpoints"),
    ("onnx", "onnx", True, "converting checkpoints"),
    ("torch", "torch", False, "the transformers runtime"),
    ("transformers", "transformers", False, "the transformers runtime"),
)


def check_package(module: str, distribution: str, required: bool = True, what: str = "") -> Check:
    name = f"package {module}"
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        importlib.import_module(module)
    except Exception as error:  # ImportError, or a native library that fails to load
        found = f"installed ({version}) but" if version else "not installed:"
        return Check(
            name,
            FAIL if required else WARN,
            f"{found} import failed ({type(error).__name__}: {error})"[:200],
            f"pip install {distribution} (needed for {what})." if what else "",
            required,
        )
    return Check(name, OK, f"{version or '?'} - {what}", required=required)


def check_vad_model() -> Check:
    from qwenscribe.audio.vad import default_model_path
    from qwenscribe.errors import QwenScribeError

    try:
        path = default_model_path()
    except QwenScribeError as error:
        return Check("silero VAD model", FAIL, error.message, error.hint or "")
    return Check("silero VAD model", OK, str(path))


def check_cpu() -> Check:
    flags = cpu.read_cpu_flags()
    model = cpu.cpu_name()
    if flags is None:
        return Check("cpu features", OK, f"{model}; no /proc/cpuinfo", required=False)
    wanted = {
        "avx2": "avx2",
        "avx512f": "avx512f",
        "avx512_vnni": "avx512_vnni",
        "avx512_bf16": "avx512_bf16",
        "amx": "amx_tile",
    }
    shown = ", ".join(
        f"{label} {'yes' if flag in flags else 'no'}" for label, flag in wanted.items()
    )
    cores = os.cpu_count()
    return Check("cpu features", OK, f"{model}, {cores} cores: {shown}", required=False)


def check_llama_system_info() -> Check:
    """The instruction sets llama.cpp was compiled for: all on this CPU, and which kernels run."""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info()
    except Exception as error:
        return Check("llama.cpp build", WARN, f"unavailable ({error})", required=False)
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    version = getattr(llama_cpp, "__version__", "?")
    features = cpu.llama_build_features(text)
    built = ", ".join(name for name, on in features.items() if on)
    try:
        cpu.check_llama_build(features)
    except QwenScribeError as error:
        return Check(
            "llama.cpp build", FAIL, f"{version}: {built}", error.message + " " + error.hint
        )
    buffers = "on" if cpu.use_extra_buffers(features) else "off (AMX build on an AMX CPU)"
    return Check(
        "llama.cpp build",
        OK,
        f"{version}: {built}; repacked-weight kernels {buffers}",
        required=False,
    )


def check_onnxruntime_providers() -> Check:
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except Exception as error:
        return Check("onnxruntime providers", FAIL, str(error), "pip install onnxruntime.")
    if "CPUExecutionProvider" not in providers:
        return Check("onnxruntime providers", FAIL, ", ".join(providers), "Reinstall onnxruntime.")
    return Check("onnxruntime providers", OK, ", ".join(providers))


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(pcm.tobytes())


def tone_clip(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A tone with a little noise: audio for the checks (random weights hear no words anyway)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    return (tone + 0.03 * rng.standard_normal(len(t))).astype(np.float32)


def _write_mp4(path: Path, samples: np.ndarray) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        frame_size = 1024
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        for start in range(0, len(pcm), frame_size):
            block = pcm[start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def check_audio_decoding() -> Check:
    from qwenscribe.audio.decode import decode_audio

    try:
        import av

        ffmpeg = ".".join(map(str, av.library_versions.get("libavcodec", ())))
        ffmpeg = f"PyAV {av.__version__}, libavcodec {ffmpeg}"
    except Exception as error:
        return Check("audio decoding", FAIL, f"PyAV unavailable ({error})", "pip install av.")
    samples = tone_clip(2.0)
    done = []
    with tempfile.TemporaryDirectory(prefix="qwenscribe-doctor-") as folder:
        wav = Path(folder) / "clip.wav"
        _write_wav(wav, samples)
        try:
            decoded = decode_audio(wav)
        except Exception as error:
            return Check("audio decoding", FAIL, f"WAV: {error}", "Reinstall av (PyAV).")
        if abs(len(decoded) - len(samples)) > RATE // 100:
            return Check(
                "audio decoding",
                FAIL,
                f"WAV gave {len(decoded)} samples, not {len(samples)}",
                "Reinstall av (PyAV).",
            )
        done.append("wav")
        mp4 = Path(folder) / "clip.mp4"
        try:
            _write_mp4(mp4, samples)
        except Exception:  # no AAC encoder in this FFmpeg: decoding is what matters
            pass
        else:
            try:
                decoded = decode_audio(mp4)
            except Exception as error:
                return Check("audio decoding", FAIL, f"mp4/aac: {error}", "Reinstall av (PyAV).")
            if abs(len(decoded) - len(samples)) > RATE // 10:
                return Check(
                    "audio decoding", FAIL, f"mp4 gave {len(decoded)} samples", "Reinstall av."
                )
            done.append("mp4/aac")
    return Check("audio decoding", OK, f"{', '.join(done)} decoded ({ffmpeg})")


def check_ffmpeg() -> Check:
    path = shutil.which("ffmpeg")
    detail = path or "not on PATH (not needed: PyAV bundles FFmpeg)"
    return Check("ffmpeg on PATH", OK, detail, required=False)


def check_cache_writable() -> Check:
    from qwenscribe.paths import qwenscribe_home

    home = qwenscribe_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
            pass
    except OSError as error:
        return Check(
            "cache folder",
            FAIL,
            f"{home} is not writable ({error.strerror or error})",
            "Set QWENSCRIBE_HOME to a writable folder.",
        )
    return Check("cache folder", OK, f"{home} (writable)")


def check_disk_space(minimum: int = LOW_DISK_BYTES) -> Check:
    from qwenscribe.paths import nearest_existing, qwenscribe_home

    place = nearest_existing(qwenscribe_home())
    free = shutil.disk_usage(place).free
    detail = f"{free / 1024**3:.1f} GiB free in {place}"
    if free < minimum:
        return Check(
            "disk space",
            WARN,
            detail,
            "Models need several GB (the 1.7B one about 5 GB with its conversions): free "
            "some space or set QWENSCRIBE_HOME to a larger disk.",
            required=False,
        )
    return Check("disk space", OK, detail, required=False)


# -- llama.cpp: quantized model, multi-token batch, in a child process -------------------------


def _probe(path: str, extra_bufts: bool) -> None:
    """Child process: load `path`, decode a PROBE_BATCH-token batch, print the top token."""
    from qwenscribe.runtimes.llama_decoder import ContextSettings, LlamaModel, llama_api

    if extra_bufts:  # llama.cpp's defaults (the AMX buffers on), as other programs use it
        llama_cpp = llama_api()
        params = llama_cpp.llama_model_default_params()
        model_ptr = llama_cpp.llama_model_load_from_file(path.encode(), params)
        model = LlamaModel.__new__(LlamaModel)
        model.path, model.model = Path(path), model_ptr
        model.n_embd = llama_cpp.llama_model_n_embd(model_ptr)
        model.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model_ptr))
    else:
        model = LlamaModel(Path(path))
    context = model.context(ContextSettings(n_ctx=256, n_seq=1, threads=2))
    logits = context.decode(
        [0] * PROBE_BATCH,
        list(range(PROBE_BATCH)),
        [True] * PROBE_BATCH,
        token_ids=[(17 * i + 5) % 1000 for i in range(PROBE_BATCH)],
    )
    print("top", int(np.argmax(logits[PROBE_BATCH - 1])), flush=True)


def probe_gguf(path: Path, extra_bufts: bool = False) -> tuple[bool, str]:
    """Run `_probe` in a child process; (survived, what happened)."""
    command = [sys.executable, "-m", "qwenscribe.doctor", "probe", str(path)]
    if extra_bufts:
        command.append("--extra-bufts")
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {_PROBE_TIMEOUT_S} s"
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return False, f"crashed ({name})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"failed (exit {done.returncode}: {last[:160]})"
    return True, "ok"


def _tiny_checkpoint(folder: Path, kind: str = "asr", layout: str = "original") -> Path:
    from qwenscribe.testing import write_checkpoint

    return write_checkpoint(folder, kind=kind, layout=layout)  # type: ignore[arg-type]


def check_llama_quantized_batch(workdir: Path | None = None) -> Check:
    """llama.cpp decodes q8_0 and q4_0 models with a 16-token batch without crashing."""
    from qwenscribe.convert.convert import ConvertOptions, convert

    name = "llama.cpp quantized batch"
    with tempfile.TemporaryDirectory(prefix="qwenscribe-doctor-", dir=workdir) as root:
        try:
            checkpoint = _tiny_checkpoint(Path(root) / "asr")
            out = convert(
                checkpoint, Path(root) / "converted", ConvertOptions(("fp32",), ("q8_0", "q4_0"))
            ).folder
        except Exception as error:
            return Check(name, FAIL, f"could not write the test model ({error})"[:200], "")
        results, failed = [], []
        for quant in ("q8_0", "q4_0"):
            survived, what = probe_gguf(out / f"decoder.{quant}.gguf")
            results.append(f"{quant} {what}")
            if not survived:
                failed.append(quant)
        # Informational: what llama.cpp's own defaults (AMX buffers on) do on this machine.
        survived, what = probe_gguf(out / "decoder.q8_0.gguf", extra_bufts=True)
    detail = f"{PROBE_BATCH}-token batch: " + ", ".join(results)
    detail += f"; with llama.cpp's default buffers: {what}"
    if failed:
        return Check(name, FAIL, detail, AMX_ADVICE)
    return Check(name, OK, detail)


# -- self-test -----------------------------------------------------------------------------------


def _parse_back(paths: dict[str, Path]) -> str:
    from qwenscribe.subtitles.transcript_json import read_json

    srt = paths["srt"].read_text("utf-8")
    vtt = paths["vtt"].read_text("utf-8")
    transcript = read_json(paths["json"])
    if not vtt.startswith("WEBVTT"):
        raise ValueError("the VTT file does not start with WEBVTT")
    cues_srt, cues_vtt = srt.count(" --> "), vtt.count(" --> ")
    if cues_srt != cues_vtt:
        raise ValueError(f"SRT has {cues_srt} cues, VTT {cues_vtt}")
    return f"{_count(cues_srt, 'cue')}, {_count(len(transcript.segments), 'segment')}"


def check_self_test(workdir: Path | None = None, parity: bool = True) -> list[Check]:
    """Tiny ASR + aligner: convert, transcribe + align a clip, write and read back subtitles;
    with torch + transformers, the hybrid's tokens (fp32 ONNX decoder) against transformers'
    generate."""
    from qwenscribe.convert.convert import ConvertOptions, convert
    from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
    from qwenscribe.pipeline import write_outputs

    checks = []
    started = time.perf_counter()
    samples = tone_clip(3.0)
    with tempfile.TemporaryDirectory(prefix="qwenscribe-selftest-", dir=workdir) as name:
        root = Path(name)
        try:
            asr = _tiny_checkpoint(root / "asr", "asr", "hf")
            aligner = _tiny_checkpoint(root / "aligner", "aligner")
            # Both decoders on ONNX Runtime, as by default on a CPU (unquantized here, so the
            # tokens can be compared with transformers'); llama.cpp has its own check above.
            exact = ConvertOptions(("fp32",), ("fp32",))
            asr_out = convert(asr, root / "asr-hybrid", exact).folder
            aligner_out = convert(aligner, root / "aligner-hybrid", exact).folder
            config = ASREngineConfig(
                model=str(asr_out),
                decoder_quant="fp32",
                encoder_precision="fp32",
                vad=False,
                repetition_guard=False,
                align=True,
                aligner_model=str(aligner_out),
                aligner_quant="fp32",
                aligner_encoder_precision="fp32",
                threads=min(2, os.cpu_count() or 1),
            )
            # A random tiny model runs to its token budget: the engine says so, expectedly.
            with QwenASREngine(config) as engine, logger_level("qwenscribe", logging.ERROR):
                transcript = engine.transcribe((samples, RATE))
            words = sum(len(segment.words) for segment in transcript.segments)
            targets = {fmt: root / f"clip.{fmt}" for fmt in ("srt", "vtt", "json")}
            write_outputs(transcript, targets)
            parsed = _parse_back(targets)
        except Exception as error:
            checks.append(
                Check(
                    "self-test",
                    FAIL,
                    f"{type(error).__name__}: {error}"[:300],
                    "Run with -v for details and report it with `qwenscribe doctor --json`.",
                )
            )
            return checks
        seconds = time.perf_counter() - started
        checks.append(
            Check(
                "self-test",
                OK,
                f"tiny model: {_count(len(transcript.segments), 'segment')}, "
                f"{_count(words, 'aligned word')}, "
                f"SRT/VTT/JSON read back ({parsed}) in {seconds:.1f} s",
            )
        )
        if parity:
            checks.append(_parity_check(asr, samples, transcript))
    return checks


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No loading bars or advice from transformers inside the doctor's table."""
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        with logger_level("transformers", logging.ERROR):
            yield
    finally:
        if bars:
            transformers_logging.enable_progress_bar()


def _parity_check(checkpoint: Path, samples: np.ndarray, transcript) -> Check:
    name = "parity with transformers"
    try:  # whether the reference can run here at all
        import torch  # noqa: F401
        from transformers import Qwen3ASRForConditionalGeneration  # noqa: F401
    except Exception:
        return Check(name, OK, "skipped (torch + transformers not installed)", required=False)
    with _quiet_transformers():
        return _compare_tokens(name, checkpoint, samples, transcript)


def _compare_tokens(name: str, checkpoint: Path, samples: np.ndarray, transcript) -> Check:
    """The hybrid's tokens of each chunk against transformers' greedy `generate`."""
    import torch
    from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration

    try:
        model = Qwen3ASRForConditionalGeneration.from_pretrained(
            checkpoint, dtype=torch.float32
        ).eval()
        processor = AutoProcessor.from_pretrained(checkpoint)
        equal, total = 0, 0
        for record in transcript.chunks:
            piece = samples[round(record.start * RATE) : round(record.end * RATE)]
            inputs = processor.apply_transcription_request(audio=piece)  # 16 kHz: its rate
            with torch.inference_mode():
                output = model.generate(
                    **inputs, max_new_tokens=record.max_new_tokens, do_sample=False
                )
            expected = output[0, inputs["input_ids"].shape[1] :].tolist()
            if expected and expected[-1] in (151645, 151643):  # end of turn / text
                expected = expected[:-1]
            total += 1
            equal += record.tokens == expected
    except Exception as error:
        return Check(name, WARN, f"could not run ({error})"[:200], required=False)
    if equal != total:
        return Check(
            name,
            WARN,
            f"tokens differ in {total - equal} of {total} chunks",
            "The hybrid runtime's tokens should equal transformers'; report it.",
            required=False,
        )
    return Check(name, OK, f"tokens equal in {total} of {total} chunks", required=False)


# -- all together --------------------------------------------------------------------------------


def quick_checks() -> list[Callable[[], Check]]:
    packages = [(lambda spec=spec: check_package(*spec)) for spec in PACKAGES]
    return [
        check_python,
        *packages,
        check_vad_model,
        check_cpu,
        check_llama_system_info,
        check_onnxruntime_providers,
        check_audio_decoding,
        check_ffmpeg,
        check_cache_writable,
        check_disk_space,
    ]


def run_checks(self_test: bool = True, parity: bool = True) -> list[Check]:
    checks = []
    for function in quick_checks():
        try:
            checks.append(function())
        except Exception as error:  # a check must never take the doctor down
            name = getattr(function, "__name__", "check").removeprefix("check_")
            checks.append(Check(name, FAIL, f"{type(error).__name__}: {error}"[:200]))
    needed = {"llama_cpp", "gguf", "onnx", "onnxruntime", "tokenizers"}
    missing = any(
        check.status == FAIL and check.name.removeprefix("package ") in needed for check in checks
    )
    if missing:
        checks.append(Check("llama.cpp quantized batch", FAIL, "skipped: packages missing"))
        return checks
    checks.append(check_llama_quantized_batch())
    if self_test:
        checks.extend(check_self_test(parity=parity))
    return checks


def all_required_pass(checks: list[Check]) -> bool:
    return all(check.ok or not check.required for check in checks)


def as_json(checks: list[Check]) -> dict:
    return {"ok": all_required_pass(checks), "checks": [asdict(check) for check in checks]}


if __name__ == "__main__":  # the llama.cpp probe's child process
    if len(sys.argv) >= 3 and sys.argv[1] == "probe":
        _probe(sys.argv[2], extra_bufts="--extra-bufts" in sys.argv[3:])
    else:
        sys.exit("usage: python -m qwenscribe.doctor probe GGUF [--extra-bufts]")
