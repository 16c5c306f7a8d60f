"""From media to subtitle files: word timing on the file's timeline, the timing invariants of
words and cues across chunk boundaries, and valid empty subtitles for inputs without speech.

The recogniser is scripted (a random model's text would not be words), so the transcripts are
the fixtures' real sentences; the forced aligner is the real hybrid one on the tiny random
aligner checkpoint, so its times are arbitrary but go through every real step (encoder, scoring,
the official repair, offsets onto the timeline).
"""

from __future__ import annotations

import itertools
import json
import threading

import pysubs2
import pytest
import srt
import webvtt

from qwenscribe.audio.decode import decode_audio
from qwenscribe.core.align import AlignerConfig, ForcedAligner
from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
from qwenscribe.errors import ModelError
from qwenscribe.model.tokenizer import load_tokenizer
from qwenscribe.pipeline import SubtitleOptions, transcribe_to_files
from qwenscribe.subtitles.shaping import shape_cues
from qwenscribe.subtitles.transcript_json import read_json
from qwenscribe.subtitles.writers import FORMATS
from scripted_runtime import ScriptedRuntime

RATE = 16000
EOS = 151645


@pytest.fixture(scope="module")
def aligner(checkpoints, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWENSCRIBE_HOME", str(home))
        config = AlignerConfig(
            model=str(checkpoints[("aligner", "hf")]), quant="f16", encoder_precision="fp32"
        )
        loaded = ForcedAligner.load(config)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def tokenizer(checkpoints):
    return load_tokenizer(checkpoints[("asr", "hf")])


def sentences_engine(tokenizer, aligner, sentences: list[str], **options) -> QwenASREngine:
    """An engine whose recogniser answers chunk i with sentences[i % n] in English."""

    def script(chunk: int, temperature: float) -> list[int]:
        answer = f"language English<asr_text>{sentences[chunk % len(sentences)]}"
        return [*tokenizer.encode(answer, add_special_tokens=False).ids, EOS]

    config = ASREngineConfig(**{"vad": False, "threads": 1, **options})
    return QwenASREngine.from_runtime(ScriptedRuntime(script), tokenizer, config, aligner)


def test_words_and_cues_keep_the_timing_invariants(tokenizer, aligner, data_dir, fixture_facts):
    """Words in order, inside their chunk and the file, none overlapping another (also across
    chunk boundaries); cues in order with positive durations and gaps between them."""
    facts = fixture_facts["en_long.flac"]
    sentences = [piece["text"] for piece in facts["speech"]]
    engine = sentences_engine(tokenizer, aligner, sentences, max_chunk_s=4.0)
    transcript = engine.transcribe(data_dir / "en_long.flac")
    assert len(transcript.segments) >= 3  # several chunks, so there are boundaries to cross
    words = [word for segment in transcript.segments for word in segment.words]
    assert len(words) >= 20
    for segment in transcript.segments:
        assert segment.words, "every English segment is aligned"
        for word in segment.words:
            assert segment.start - 1e-6 <= word.start <= word.end <= segment.end + 1e-6
    for before, after in itertools.pairwise(words):
        assert before.start <= after.start
        assert before.end <= after.start + 1e-6, "words overlap"
    assert words[0].start >= 0.0
    assert words[-1].end <= facts["duration_s"] + 1e-6
    # Punctuation is put back: the sentences' full stops end words.
    assert sum(word.text.endswith(".") for word in words) >= len(transcript.segments)

    cues = shape_cues(transcript)
    assert cues
    for cue in cues:
        assert cue.end > cue.start
        assert cue.start >= 0.0
        assert cue.end <= facts["duration_s"] + 1e-6
    for before, after in itertools.pairwise(cues):
        assert before.end <= after.start
    cue_words = [word for cue in cues for word in cue.words]
    assert [w.text for w in cue_words] == [w.text for w in words]


def test_a_file_becomes_every_subtitle_format(tokenizer, aligner, data_dir, tmp_path):
    sentences = ["Speech recognition turns spoken words into written text."]
    engine = sentences_engine(tokenizer, aligner, sentences)
    outputs = {fmt: tmp_path / f"en_speech.{fmt}" for fmt in FORMATS}
    transcript, written = transcribe_to_files(
        engine, data_dir / "en_speech.wav", outputs, SubtitleOptions(karaoke=True)
    )
    assert sorted(written) == sorted(outputs.values())
    parsed = pysubs2.load(str(outputs["srt"]))
    assert " ".join(event.plaintext.replace("\n", " ") for event in parsed) == sentences[0]
    assert len(list(srt.parse(outputs["srt"].read_text("utf-8")))) == len(parsed)
    assert len(webvtt.read(str(outputs["vtt"]))) == len(parsed)
    assert "\\k" in outputs["ass"].read_text("utf-8")
    assert read_json(outputs["json"]) == transcript
    assert outputs["txt"].read_text("utf-8").strip() == sentences[0]


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("silence.wav", "unused: VAD finds no speech"),
        ("video_no_audio.mp4", "unused: no audio track"),
        ("en_speech.wav", "language None<asr_text>"),  # the model hears no speech
    ],
)
def test_no_speech_gives_valid_empty_subtitles(
    name, answer, tokenizer, aligner, data_dir, tmp_path
):
    engine = sentences_engine(tokenizer, aligner, [], vad=name == "silence.wav")

    def script(chunk: int, temperature: float) -> list[int]:
        return [*tokenizer.encode(answer, add_special_tokens=False).ids, EOS]

    engine.runtime = ScriptedRuntime(script)
    outputs = {fmt: tmp_path / f"out.{fmt}" for fmt in FORMATS}
    transcript, _ = transcribe_to_files(engine, data_dir / name, outputs)
    assert transcript.segments == []
    assert transcript.language is None
    assert outputs["srt"].read_text("utf-8") == ""
    assert list(srt.parse("")) == []
    assert len(pysubs2.load(str(outputs["srt"]), format_="srt")) == 0
    assert len(webvtt.read(str(outputs["vtt"]))) == 0
    assert len(pysubs2.load(str(outputs["ass"]), format_="ass")) == 0
    assert json.loads(outputs["json"].read_text("utf-8"))["segments"] == []
    assert outputs["txt"].read_text("utf-8").strip() == ""
    assert all(line.startswith("[") for line in outputs["lrc"].read_text("utf-8").splitlines())


def test_a_language_the_aligner_lacks_is_timed_from_chunks(tokenizer, aligner, data_dir, caplog):
    """Arabic is recognised but not aligned: no words, a warning once, cues still written."""

    def script(chunk: int, temperature: float) -> list[int]:
        answer = "language Arabic<asr_text>مرحبا بالعالم"
        return [*tokenizer.encode(answer, add_special_tokens=False).ids, EOS]

    config = ASREngineConfig(vad=False, threads=1, max_chunk_s=4.0)
    engine = QwenASREngine.from_runtime(ScriptedRuntime(script), tokenizer, config, aligner)
    with caplog.at_level("WARNING"):
        transcript = engine.transcribe(data_dir / "en_long.flac")
    assert len(transcript.segments) >= 2
    assert all(segment.words == [] for segment in transcript.segments)
    assert sum("does not support Arabic" in r.message for r in caplog.records) == 1
    cues = shape_cues(transcript)
    assert cues
    assert all(cue.end > cue.start for cue in cues)


def aligning_config(checkpoints, **overrides) -> ASREngineConfig:
    """The tiny hybrid recognizer and aligner, greedy and unguarded, one thread."""
    return ASREngineConfig(
        model=str(checkpoints[("asr", "hf")]),
        align=True,
        aligner_model=str(checkpoints[("aligner", "original")]),
        vad=False,
        threads=1,
        repetition_guard=False,
        tokens_per_second=2.0,
        **overrides,
    )


def test_the_engine_aligns_with_the_real_runtimes(checkpoints, data_dir, tmp_path, monkeypatch):
    """End to end with models on both sides (random weights: only the structure is checked)."""
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path))
    with QwenASREngine(aligning_config(checkpoints)) as engine:
        transcript = engine.transcribe(
            (decode_audio(data_dir / "en_speech.wav"), RATE), language="en"
        )
    assert transcript.options["align"] is True
    for segment in transcript.segments:
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end
    assert transcript.stats.align_s >= 0.0


def test_low_memory_returns_the_recognizers_memory_before_the_aligner_loads(
    checkpoints, data_dir, tmp_path, monkeypatch
):
    """glibc keeps what a closed model freed unless asked to hand it back (core.resources):
    the swap asks between releasing the recognizer and loading the aligner, and again after."""
    from qwenscribe.core import engine as engine_module

    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path))
    steps: list[str] = []
    monkeypatch.setattr(engine_module, "release_freed_memory", lambda: steps.append("trim"))
    load = ForcedAligner.load

    def logged_load(config):
        steps.append("load aligner")
        return load(config)

    monkeypatch.setattr(ForcedAligner, "load", staticmethod(logged_load))
    with QwenASREngine(aligning_config(checkpoints, max_chunk_s=4.0), low_memory=True) as engine:
        close = engine.runtime.close

        def logged_close():
            steps.append("close recognizer")
            close()

        engine.runtime.close = logged_close
        engine.transcribe((decode_audio(data_dir / "en_speech.wav"), RATE), language="en")
        assert steps == ["close recognizer", "trim", "load aligner", "trim"]


def test_low_memory_closes_the_encoder_while_the_decoder_runs(
    checkpoints, data_dir, tmp_path, monkeypatch
):
    """Its weights and arenas leave the decoder's peak; it opens again for each batch, and the
    text is the one an engine that keeps it open gives."""
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path))
    config = aligning_config(checkpoints, max_chunk_s=4.0, parallel_sequences=1)
    clip = (decode_audio(data_dir / "en_long.flac"), RATE)
    with QwenASREngine(config, align=False) as engine:
        kept_open = engine.transcribe(clip, language="en")
    with QwenASREngine(config, align=False, low_memory=True) as engine:
        runtime = engine.runtime
        sessions_at_prefill = []
        start = runtime.decoder.start

        def logged_start(requests):
            sessions_at_prefill.append(len(runtime.encoder.sessions))
            return start(requests)

        runtime.decoder.start = logged_start
        released = engine.transcribe(clip, language="en")
    assert [s.text for s in released.segments] == [s.text for s in kept_open.segments]
    assert len(sessions_at_prefill) == len(released.segments) > 1
    assert set(sessions_at_prefill) == {0}


def test_the_aligner_loads_beside_the_recognizer_after_both_are_converted(
    checkpoints, tmp_path, monkeypatch
):
    """Files are found (converted: memory-hungry) one model at a time in the caller's thread;
    only the opening overlaps, and an error while opening the aligner reaches the caller."""
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path))
    threads: list[tuple[str, str]] = []
    files, load = ForcedAligner.files, ForcedAligner.load

    def logged_files(config):
        threads.append(("files", threading.current_thread().name))
        return files(config)

    def logged_load(config, found=None):
        threads.append(("load", threading.current_thread().name))
        return load(config, found)

    monkeypatch.setattr(ForcedAligner, "files", staticmethod(logged_files))
    monkeypatch.setattr(ForcedAligner, "load", staticmethod(logged_load))
    with QwenASREngine(aligning_config(checkpoints)) as engine:
        assert engine.aligner is not None
    assert threads[0] == ("files", "MainThread")
    assert threads[1][0] == "load"
    assert threads[1][1].startswith("qwenscribe-load")

    def broken(config, found=None):
        raise ModelError("The aligner file is damaged.", "Convert it again.")

    monkeypatch.setattr(ForcedAligner, "load", staticmethod(broken))
    with pytest.raises(ModelError, match="damaged"):
        QwenASREngine(aligning_config(checkpoints))


def test_chunks_longer_than_the_aligner_reaches_are_refused():
    with pytest.raises(Exception, match="at most 400 s"):
        ASREngineConfig(align=True, max_chunk_s=600).validate()


def test_low_memory_aligns_after_recognition_with_the_same_result(
    checkpoints, data_dir, tmp_path, monkeypatch
):
    """One model at a time: the recognizer is released before the aligner loads, and the
    transcripts (text, words, times) are the ones the two-model engine gives."""
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path))
    config = aligning_config(checkpoints, max_chunk_s=4.0)
    clips = [(decode_audio(data_dir / name), RATE) for name in ("en_speech.wav", "en_long.flac")]

    def timed_words(transcripts):
        return [[(s.text, [(w.text, w.start, w.end) for w in s.words]) for s in t.segments]
                for t in transcripts]  # fmt: skip

    with QwenASREngine(config) as engine:
        both = engine.transcribe_many(clips, language="en")
    with QwenASREngine(config, low_memory=True) as engine:
        assert engine.aligner is None  # not loaded next to the recognizer
        one = engine.transcribe_many(clips, language="en")
        assert engine.runtime is None
        assert engine.aligner is None
        events = list(engine.stream_many(clips, language="en"))  # loads the recognizer again
    assert timed_words(one) == timed_words(both)
    assert sum(len(s.words) for t in one for s in t.segments) > 0
    assert one[0].options["low_memory"] is True
    kinds = [type(event).__name__ for event in events]
    # Recognition first (text as it is decoded), then each input's segments and transcript.
    assert kinds.index("SegmentReady") > max(i for i, k in enumerate(kinds) if k == "TextDelta")
    finished = [e.transcript for e in events if type(e).__name__ == "TranscriptReady"]
    assert timed_words(finished) == timed_words(both)
