"""Regenerate the committed test media fixtures in ``tests/data/``.

Why this exists: the qwenscribe test suite needs a handful of *small*, *real* media files
(speech with known pauses, a long clip for the encoder's 8-s attention windows, videos with
and without an audio track, pure silence, and an undecodable file). Committing opaque binaries
without a recipe makes them impossible to review or update, so this script rebuilds every
fixture from fixed text with espeak-ng (speech) and sox (resampling), and assembles the
silences, containers and metadata with numpy + PyAV.

Silences are built by concatenating numpy arrays of exact zeros (never by sox effects), so
their positions are exact; every speech segment is padded to a 10 ms grid, so all recorded
boundaries are multiples of 0.01 s. The facts the tests rely on (duration, sample rate,
language, text, silence intervals, ...) are written to ``tests/data/fixtures.json``.

Usage (from the repository root)::

    python scripts/make_fixtures.py            # rewrite everything in tests/data/
    python scripts/make_fixtures.py --out DIR  # write somewhere else

Requires ``espeak-ng`` and ``sox`` on PATH (Debian: ``apt-get install espeak-ng sox``) and the
Python packages ``numpy`` and ``av``. Output is deterministic for a given set of tool versions.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "data"

ASR_RATE = 16_000  # the model's native rate; all plain audio fixtures use it
VIDEO_AUDIO_RATE = 48_000  # the mp4 carries 48 kHz stereo so loaders must resample/downmix
TRIM_LEVEL = 64  # |int16| below this at the edges of espeak output counts as silence
GRID_S = Fraction(1, 100)  # speech segments are zero-padded to a multiple of 10 ms
SEED = 20240601  # the only randomness: the bytes of corrupt.mp3

VIDEO_SIZE = (64, 48)  # width, height
VIDEO_FPS = 5

# A clip is a list of parts: a Fraction is that many seconds of exact silence, a str is speech.
Part = Fraction | str


@dataclass
class Track:
    """Mono int16 samples plus where the silences and the speech segments are."""

    rate: int
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    silences: list[tuple[Fraction, Fraction]] = field(default_factory=list)
    speech: list[tuple[Fraction, Fraction, str]] = field(default_factory=list)

    @property
    def duration(self) -> Fraction:
        return Fraction(len(self.samples), self.rate)


def require_tools(*names: str) -> None:
    """Exit with a clear message if any external command-line tool is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        sys.exit(
            f"make_fixtures: missing required tool(s): {', '.join(missing)}. "
            "Install them, e.g. `apt-get install -y espeak-ng sox libsox-fmt-all`."
        )


def synthesize(text: str, voice: str, speed: int, rate: int, workdir: Path) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return mono int16 samples at ``rate``."""
    wav = workdir / "espeak.wav"
    raw_fmt = ["-c", "1", "-r", str(rate), "-"]
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    raw = subprocess.run(
        # -D: no dither, so the int16 output is deterministic.
        ["sox", "-D", str(wav), "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", *raw_fmt],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def trim_and_pad(samples: np.ndarray, rate: int) -> np.ndarray:
    """Cut espeak's own quiet edges, then zero-pad the end up to the 10 ms grid."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= TRIM_LEVEL)
    if loud.size == 0:
        raise RuntimeError("espeak-ng produced no audible speech")
    core = samples[loud[0] : loud[-1] + 1]
    grid = int(GRID_S * rate)
    padded = -(-len(core) // grid) * grid
    return np.concatenate([core, np.zeros(padded - len(core), dtype=np.int16)])


def build_track(parts: list[Part], voice: str, speed: int, rate: int, workdir: Path) -> Track:
    """Concatenate exact silences and synthesized speech, recording every boundary."""
    track = Track(rate=rate)
    chunks: list[np.ndarray] = []
    cursor = Fraction(0)
    for part in parts:
        if isinstance(part, Fraction):
            chunk = np.zeros(int(part * rate), dtype=np.int16)
        else:
            chunk = trim_and_pad(synthesize(part, voice, speed, rate, workdir), rate)
        end = cursor + Fraction(len(chunk), rate)
        if isinstance(part, Fraction):
            track.silences.append((cursor, end))
        else:
            track.speech.append((cursor, end, part))
        chunks.append(chunk)
        cursor = end
    track.samples = np.concatenate(chunks)
    return track


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write mono 16-bit PCM WAV with the stdlib (no encoder tag, byte-for-byte stable)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())


def write_flac(path: Path, samples: np.ndarray, rate: int) -> None:
    """Encode mono int16 samples as FLAC with PyAV's bundled FFmpeg."""
    import av

    with av.open(str(path), "w", format="flac", container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("flac", rate=rate, options={"flags": "+bitexact"})
        stream.layout = "mono"
        stream.format = "s16"
        for start in range(0, len(samples), 4096):
            block = samples[start : start + 4096].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def video_frame(index: int) -> np.ndarray:
    """A deterministic moving colour gradient, as an RGB24 array of VIDEO_SIZE."""
    width, height = VIDEO_SIZE
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    red = (x * 4 + index * 16) % 256
    green = (y * 5 + index * 8) % 256
    blue = ((x + y) * 2 + index * 24) % 256
    rgb = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    return rgb.astype(np.uint8)


def write_mp4(path: Path, n_frames: int, audio: np.ndarray | None, rate: int) -> None:
    """Write an mpeg4 video of ``n_frames``; add an AAC track if ``audio`` (2, n) float32."""
    import av

    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        video = out.add_stream("mpeg4", rate=VIDEO_FPS, options={"flags": "+bitexact"})
        video.width, video.height = VIDEO_SIZE
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=rate, options={"flags": "+bitexact"})
            sound.layout = "stereo"
            sound.bit_rate = 64_000
        for index in range(n_frames):
            frame = av.VideoFrame.from_ndarray(video_frame(index), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, VIDEO_FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None and audio is not None:
            encode_audio(out, sound, audio, rate)


def encode_audio(out: Any, stream: Any, audio: np.ndarray, rate: int) -> None:
    """Feed planar float stereo to an audio stream in encoder-sized frames."""
    import av

    size = stream.codec_context.frame_size or 1024
    for start in range(0, audio.shape[1], size):
        block = np.ascontiguousarray(audio[:, start : start + size])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        frame.rate = rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def corrupt_bytes(size: int = 4096) -> bytes:
    """An ID3 magic cut short, then pseudo-random bytes that never contain 0xFF.

    Without 0xFF there is no MPEG audio frame sync word, so no demuxer can find a stream.
    """
    rng = np.random.default_rng(SEED)
    body = rng.integers(0, 255, size - 5, dtype=np.uint8)  # high bound exclusive: no 0xFF
    return b"ID3\x03\x00" + body.tobytes()


def longest_quiet_run(samples: np.ndarray) -> int:
    """Length in samples of the longest run with |x| < TRIM_LEVEL (pauses between words)."""
    quiet = np.concatenate([[False], np.abs(samples.astype(np.int32)) < TRIM_LEVEL, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return int((edges[1::2] - edges[0::2]).max(initial=0))


def max_gap_in_speech(track: Track) -> Fraction:
    """The longest quiet stretch inside any speech segment (espeak's word/phrase gaps)."""
    runs = [
        longest_quiet_run(track.samples[int(a * track.rate) : int(b * track.rate)])
        for a, b, _ in track.speech
    ]
    return Fraction(max(runs, default=0), track.rate)


def seconds(value: Fraction) -> float:
    return round(float(value), 6)


def describe(track: Track, language: str | None, fmt: str) -> dict[str, Any]:
    """The machine-readable facts about one audio track for fixtures.json."""
    return {
        "kind": "audio",
        "format": fmt,
        "duration_s": seconds(track.duration),
        "sample_rate": track.rate,
        "channels": 1,
        "language": language,
        "text": ("" if language == "zh" else " ").join(text for _, _, text in track.speech),
        "silences": [[seconds(a), seconds(b)] for a, b in track.silences],
        "max_gap_in_speech_s": seconds(max_gap_in_speech(track)),
        "speech": [
            {"start": seconds(a), "end": seconds(b), "text": text} for a, b, text in track.speech
        ],
    }


S = Fraction  # shorthand for exact silence lengths below

EN_PARTS: list[Part] = [
    S(1, 2),
    "The quick brown fox jumps over the lazy dog.",
    S(7, 10),
    "Subtitles should never cut a word in half.",
    S(1, 2),
]
ZH_PARTS: list[Part] = [S(1, 2), "今天天气很好。", S(7, 10), "我们去公园散步吧。", S(1, 2)]
EN_LONG_PARTS: list[Part] = [
    S(1, 2),
    "Speech recognition turns spoken words into written text.",
    S(4, 5),
    "Long recordings are split into shorter windows.",
    S(3, 5),
    "Each window is transcribed and then aligned with the audio.",
    S(1, 2),
]
VIDEO_PARTS: list[Part] = [S(1, 2), "The quick brown fox jumps over the lazy dog.", S(1, 2)]


def make_speech(out_dir: Path, workdir: Path) -> dict[str, Any]:
    """en_speech.wav, zh_speech.wav and en_long.flac."""
    facts: dict[str, Any] = {}
    en = build_track(EN_PARTS, "en-us", 210, ASR_RATE, workdir)
    write_wav(out_dir / "en_speech.wav", en.samples, ASR_RATE)
    facts["en_speech.wav"] = describe(en, "en", "wav")

    zh = build_track(ZH_PARTS, "cmn", 240, ASR_RATE, workdir)
    write_wav(out_dir / "zh_speech.wav", zh.samples, ASR_RATE)
    facts["zh_speech.wav"] = describe(zh, "zh", "wav")

    long = build_track(EN_LONG_PARTS, "en-us", 165, ASR_RATE, workdir)
    write_flac(out_dir / "en_long.flac", long.samples, ASR_RATE)
    facts["en_long.flac"] = describe(long, "en", "flac")
    return facts


def make_silence(out_dir: Path) -> dict[str, Any]:
    """silence.wav: exactly 3 s of digital zeros."""
    track = Track(rate=ASR_RATE, samples=np.zeros(3 * ASR_RATE, dtype=np.int16))
    track.silences.append((Fraction(0), track.duration))
    write_wav(out_dir / "silence.wav", track.samples, ASR_RATE)
    return {"silence.wav": describe(track, None, "wav")}


def video_facts(n_frames: int) -> dict[str, Any]:
    width, height = VIDEO_SIZE
    return {
        "codec": "mpeg4",
        "width": width,
        "height": height,
        "fps": VIDEO_FPS,
        "frames": n_frames,
        "duration_s": seconds(Fraction(n_frames, VIDEO_FPS)),
    }


def make_videos(out_dir: Path, workdir: Path) -> dict[str, Any]:
    """video_with_audio.mp4 (48 kHz stereo AAC speech) and video_no_audio.mp4."""
    track = build_track(VIDEO_PARTS, "en-us", 210, VIDEO_AUDIO_RATE, workdir)
    mono = track.samples.astype(np.float32) / 32768.0
    stereo = np.stack([mono, mono])
    n_frames = -(-len(mono) * VIDEO_FPS // VIDEO_AUDIO_RATE)  # cover the audio
    write_mp4(out_dir / "video_with_audio.mp4", n_frames, stereo, VIDEO_AUDIO_RATE)
    with_audio = describe(track, "en", "mp4")
    with_audio.update(kind="video", channels=2, audio_codec="aac", video=video_facts(n_frames))

    silent_frames = 3 * VIDEO_FPS
    write_mp4(out_dir / "video_no_audio.mp4", silent_frames, None, VIDEO_AUDIO_RATE)
    no_audio = {
        "kind": "video",
        "format": "mp4",
        "duration_s": seconds(Fraction(silent_frames, VIDEO_FPS)),
        "audio": False,
        "video": video_facts(silent_frames),
    }
    return {"video_with_audio.mp4": with_audio, "video_no_audio.mp4": no_audio}


def make_corrupt(out_dir: Path) -> dict[str, Any]:
    """corrupt.mp3: media by name only; every decoder must reject it."""
    data = corrupt_bytes()
    (out_dir / "corrupt.mp3").write_bytes(data)
    return {"corrupt.mp3": {"kind": "corrupt", "format": "mp3", "size_bytes": len(data)}}


def write_facts(out_dir: Path, facts: dict[str, Any]) -> None:
    text = json.dumps(facts, indent=2, ensure_ascii=False, sort_keys=True)
    text = re.sub(r"\[\s+(\S+),\s+(\S+)\s+\]", r"[\1, \2]", text)  # [start, end] on one line
    (out_dir / "fixtures.json").write_text(text + "\n", encoding="utf-8")


README_HEAD = """\
# Test media fixtures

Generated by `scripts/make_fixtures.py`; do not edit by hand (this README is generated too).
Speech is espeak-ng (fixed text, voices `en-us` / `cmn`) resampled with sox; silences are exact
digital zeros inserted with numpy, and every boundary is a multiple of 10 ms. The same facts,
machine-readable, are in `fixtures.json` (file -> duration_s, sample_rate, channels, language,
text, silences `[[start, end], ...]`, speech segments); `tests/test_fixtures.py` checks them by
decoding the files with PyAV. For `video_with_audio.mp4`, `duration_s`, `silences` and `speech`
describe the audio track (AAC decoders round its length up to whole 1024-sample frames) and
`video` the picture. `max_gap_in_speech_s` is the longest stretch below -54 dBFS inside any
speech segment (espeak's pauses between words), so a VAD needing more than 0.2 s of quiet finds
exactly the listed silences.

| file | size | duration | audio | content / text | silences (s) |
|---|---|---|---|---|---|
"""

README_TAIL = """
Regenerate (from the repository root; needs `espeak-ng`, `sox`, `numpy`, `av`):

```sh
apt-get install -y espeak-ng sox libsox-fmt-all   # once
python scripts/make_fixtures.py
python -m pytest tests/test_fixtures.py -q
```

Output is byte-for-byte deterministic for a given espeak-ng / sox / PyAV (FFmpeg) version;
other versions give slightly different audio, so re-run the tests after regenerating.
"""


def readme_row(name: str, info: dict[str, Any], size: int) -> str:
    """One markdown table row describing a fixture."""
    kind = info["kind"]
    if kind == "corrupt":
        audio, content = "-", "pseudo-random bytes behind a truncated ID3 magic; undecodable"
    elif kind == "video" and not info.get("audio", True):
        audio, content = "none", "mpeg4 64x48 gradient video, no audio stream"
    else:
        audio = f"{info['sample_rate'] // 1000} kHz, {info['channels']} ch, {info['format']}"
        if kind == "video":
            audio = f"AAC {info['sample_rate'] // 1000} kHz stereo"
        content = info["text"] or "digital silence (all zeros)"
        if info.get("language"):
            content = f"[{info['language']}] {content}"
    duration = f"{info['duration_s']:.2f} s" if "duration_s" in info else "-"
    silences = ", ".join(f"{a:.2f}-{b:.2f}" for a, b in info.get("silences", [])) or "-"
    return f"| `{name}` | {size / 1024:.1f} KiB | {duration} | {audio} | {content} | {silences} |"


def write_readme(out_dir: Path, facts: dict[str, Any]) -> None:
    rows = [readme_row(n, facts[n], (out_dir / n).stat().st_size) for n in sorted(facts)]
    text = README_HEAD + "\n".join(rows) + "\n" + README_TAIL
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools("espeak-ng", "sox")
    try:
        import av  # noqa: F401
    except ImportError:
        sys.exit("make_fixtures: the Python package `av` (PyAV) is required: pip install av")
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qwenscribe-fixtures-") as tmp:
        workdir = Path(tmp)
        facts |= make_speech(out_dir, workdir)
        facts |= make_silence(out_dir)
        facts |= make_videos(out_dir, workdir)
    facts |= make_corrupt(out_dir)
    write_facts(out_dir, facts)
    write_readme(out_dir, facts)
    for name in sorted(facts):
        print(f"{name:24} {(out_dir / name).stat().st_size:>8} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
