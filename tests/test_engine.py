"""Behaviour of the engine over a scripted runtime: prompts, parsing, guards, chunking, streams.

The runtime here is a fake that follows the Runtime protocol the way the real ones do (one token
per step for every unfinished sequence, `on_token` then `should_stop` after each token, EOS ends
a sequence, the budget ends it with "length"), answers with token ids the test scripts, and
records everything it was handed. The tokenizer is the real one of the tiny test checkpoint, so
prompts and answers are tokenized exactly as with a model. Expected prompts are written out here
from shared/REFERENCE.md, not taken from the code under test.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import read_wav
from qwenscribe.core.engine import (
    LONG_CONTEXT_TOKENS,
    PROMPT_TEMPLATE_TOKENS,
    ASREngineConfig,
    ChunkRetried,
    QwenASREngine,
    SegmentReady,
    TextDelta,
    TranscriptReady,
)
from qwenscribe.errors import InputError
from qwenscribe.model.prompt import asr_prompt_ids
from qwenscribe.model.tokenizer import load_tokenizer
from scripted_runtime import HIDDEN, Script, ScriptedRuntime

RATE = 16000
# shared/REFERENCE.md, "Tokens and prompt"
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643
AUDIO_START, AUDIO_END, AUDIO_PAD, ASR_TEXT = 151669, 151670, 151676, 151704
EOS = IM_END


def reference_token_count(mel_frames: int) -> int:
    """Audio tokens for L mel frames, the formula of shared/REFERENCE.md written out."""

    def g(r: int) -> int:
        return 0 if r == 0 else ((((r - 1) // 2 + 1) - 1) // 2 + 1 - 1) // 2 + 1

    return 13 * (mel_frames // 100) + g(mel_frames % 100)


def official_prompt(n_audio: int, context: str = "", language: str | None = None) -> str:
    """The ASR prompt of shared/REFERENCE.md, by hand."""
    prompt = (
        f"<|im_start|>system\n{context}<|im_end|>\n"
        "<|im_start|>user\n<|audio_start|>"
        + "<|audio_pad|>" * n_audio
        + "<|audio_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    return prompt + (f"language {language}<asr_text>" if language else "")


# -- the scripted runtime ------------

# -- helpers ------------


@pytest.fixture(scope="module")
def tokenizer(checkpoints):
    return load_tokenizer(checkpoints[("asr", "hf")])


def make_engine(runtime: ScriptedRuntime, tokenizer, **options) -> QwenASREngine:
    options = {"vad": False, "threads": 1, **options}
    return QwenASREngine.from_runtime(runtime, tokenizer, ASREngineConfig(**options))


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(round(seconds * RATE))).astype(np.float32)


def bursts(total_s: float, silences: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Noise everywhere except the given stretches, which are digital silence (zeros)."""
    samples = noise(total_s, seed)
    for start, end in silences:
        samples[round(start * RATE) : round(end * RATE)] = 0.0
    return samples


def every_4_6_s(total_s: float) -> list[tuple[float, float]]:
    """0.6-s silences after every 4 s of noise: each 10-s chunk has two or more to cut in."""
    return [(t, t + 0.6) for t in np.arange(4.0, total_s - 1.0, 4.6).round(2).tolist()]


class Scripts:
    """Token streams for the fake, built with the real tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def reply(self, text: str) -> list[int]:
        """`text` then end of sequence."""
        return [*self.ids(text), EOS]

    def looping(self, text: str, pattern: str) -> Iterator[int]:
        """`text`, then `pattern` over and over, never ending by itself."""
        return itertools.chain(self.ids(text), itertools.cycle(self.ids(pattern)))

    def endless(self, text: str) -> Iterator[int]:
        """`text`, then ever new ordinary tokens that never form a short loop."""
        return itertools.chain(self.ids(text), itertools.cycle(range(300, 2900)))


@pytest.fixture(scope="module")
def scripts(tokenizer) -> Scripts:
    return Scripts(tokenizer)


def boundaries(transcript) -> list[float]:
    """Where one chunk ends and the next begins (they touch when VAD is off)."""
    chunks = transcript.chunks
    for before, after in itertools.pairwise(chunks):
        assert before.end == pytest.approx(after.start), "without VAD, chunks tile the input"
    return [chunk.end for chunk in chunks[:-1]]


def inside_one(point: float, stretches: list[tuple[float, float]]) -> bool:
    return any(start <= point <= end for start, end in stretches)


# -- 1. the prompt ------------


@pytest.mark.parametrize(
    ("language", "context", "name"),
    [
        pytest.param("en", "Alice and Bob, ONNX", "English", id="forced-en+context"),
        pytest.param(None, "", None, id="detect,no-context"),
        pytest.param("zh", "", "Chinese", id="forced-zh"),
    ],
)
def test_the_runtime_receives_the_official_prompt(
    language, context, name, tokenizer, scripts
) -> None:
    """Prompt ids = the tokenization of REFERENCE.md's prompt with N audio pads for the chunk's
    mel frames (N by REFERENCE.md's formula); one audio row per pad."""
    samples = noise(2.37)  # 237 mel frames: two whole 1-s conv chunks and a partial one
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("language English<asr_text>hi"))
    engine = make_engine(runtime, tokenizer)
    engine.transcribe((samples, RATE), language=language, context=context)

    (mel,) = runtime.mels
    frames = len(samples) // 160  # hop 160, the last STFT frame dropped, as Whisper does
    assert mel.shape == (128, frames)
    n_audio = reference_token_count(frames)
    assert n_audio == 31  # 13 + 13 + 5: the formula itself, checked by hand once

    (request,) = runtime.requests
    ids = request.prompt_ids.tolist()
    assert ids == scripts.ids(official_prompt(n_audio, context, name))
    assert ids.count(AUDIO_PAD) == n_audio == len(request.audio)
    assert request.audio.shape == (n_audio, HIDDEN)
    # The special tokens sit at the real ids, where the model expects them.
    assert ids[0] == IM_START
    assert ids.count(AUDIO_START) == ids.count(AUDIO_END) == 1
    start = ids.index(AUDIO_START)
    assert ids[start + 1 : start + 1 + n_audio] == [AUDIO_PAD] * n_audio
    assert ids[start + 1 + n_audio] == AUDIO_END
    if name:
        assert ids[-1] == ASR_TEXT
        assert ids.count(ASR_TEXT) == 1
    else:
        assert ASR_TEXT not in ids
        assert ids[-3:] == [IM_START, *scripts.ids("assistant\n")]


# -- 2. parsing the answer ------------


def test_detected_language_and_text(tokenizer, scripts) -> None:
    """`language English<asr_text>hello world` is one segment: English, "hello world"."""
    runtime = ScriptedRuntime(
        lambda chunk, t: scripts.reply("language English<asr_text>hello world")
    )
    transcript = make_engine(runtime, tokenizer).transcribe((noise(3.0), RATE))
    (segment,) = transcript.segments
    assert (segment.text, segment.language, segment.language_code) == (
        "hello world",
        "English",
        "en",
    )
    assert (segment.start, segment.end) == (0.0, pytest.approx(3.0))
    assert segment.finish == "eos"
    assert not segment.truncated
    assert segment.temperature == 0.0
    assert transcript.text == "hello world"
    assert transcript.language == "English"
    assert transcript.language_code == "en"
    assert transcript.duration == pytest.approx(3.0)


def test_language_none_means_no_speech_not_an_error(tokenizer, scripts) -> None:
    """`language None<asr_text>`: the chunk was decoded, but there is no segment and no text."""
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("language None<asr_text>"))
    transcript = make_engine(runtime, tokenizer).transcribe((noise(3.0), RATE))
    assert transcript.segments == []
    assert transcript.text == ""
    assert transcript.language is None
    assert transcript.language_code is None
    assert len(transcript.chunks) == 1
    assert transcript.chunks[0].finish == "eos"


@pytest.mark.parametrize("given", ["en", "english", "ENGLISH", " English "])
def test_a_forced_language_by_code_or_name(given, tokenizer, scripts) -> None:
    """A forced language may be a code or a name in any case; the answer then starts after the
    prefilled `<asr_text>` and the segment carries the forced language."""
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("hello world"))
    transcript = make_engine(runtime, tokenizer).transcribe((noise(2.0), RATE), language=given)
    (request,) = runtime.requests
    assert request.prompt_ids.tolist()[-3:] == scripts.ids("language English<asr_text>")
    (segment,) = transcript.segments
    assert (segment.text, segment.language) == ("hello world", "English")


@pytest.mark.parametrize("given", [None, "", "auto", " AUTO "])
def test_no_language_or_auto_means_detect(given, tokenizer, scripts) -> None:
    """Nothing forced: the prompt ends with the assistant turn's start, and the language comes
    from the model's answer."""
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("language German<asr_text>hallo"))
    transcript = make_engine(runtime, tokenizer).transcribe((noise(2.0), RATE), language=given)
    (request,) = runtime.requests
    assert request.prompt_ids.tolist()[-3:] == scripts.ids("<|im_start|>assistant\n")
    (segment,) = transcript.segments
    assert (segment.text, segment.language) == ("hallo", "German")


def test_a_context_too_long_for_the_model_is_refused_before_any_work(tokenizer, scripts) -> None:
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("hello"))
    engine = make_engine(runtime, tokenizer)
    document = " word" * 70_000
    with pytest.raises(
        InputError, match=r"The context is 70000 tokens long; .* at most 64782\."
    ) as caught:
        engine.transcribe((noise(2.0), RATE), context=document)
    assert "names, terms" in caught.value.hint
    assert runtime.mels == []
    assert runtime.calls == []


def test_a_long_context_is_used_with_a_warning(tokenizer, scripts, caplog) -> None:
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("language English<asr_text>hi"))
    engine = make_engine(runtime, tokenizer)
    glossary = " word" * (LONG_CONTEXT_TOKENS + 1)
    transcript = engine.transcribe((noise(2.0), RATE), context=glossary)
    assert transcript.text == "hi"
    (request,) = runtime.requests
    assert len(request.prompt_ids) > LONG_CONTEXT_TOKENS  # all of it went to the model
    assert "is 1001 tokens long" in caplog.text
    caplog.clear()
    engine.transcribe((noise(2.0), RATE), context=" word" * LONG_CONTEXT_TOKENS)
    assert "tokens long" not in caplog.text


def test_the_prompt_template_fits_its_allowance(tokenizer) -> None:
    """The room left for a context counts the template's own tokens as PROMPT_TEMPLATE_TOKENS."""
    audio = 7
    ids = asr_prompt_ids(tokenizer, audio, context="", language="Portuguese")
    assert len(ids) - audio <= PROMPT_TEMPLATE_TOKENS


def test_an_unknown_language_is_refused_before_any_work(tokenizer, scripts) -> None:
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("hello"))
    engine = make_engine(runtime, tokenizer)
    with pytest.raises(InputError, match="'xx'") as caught:
        engine.transcribe((noise(2.0), RATE), language="xx")
    assert "English" in str(caught.value)  # the hint lists what is known
    assert runtime.mels == []
    assert runtime.calls == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runtime": "vllm"}, "Unknown runtime 'vllm'"),
        ({"parallel_sequences": 0}, "parallel_sequences must be 1 or more, not 0"),
        ({"max_chunk_s": 0.5}, "max_chunk_s must be at least 1 second, not 0.5"),
        ({"threads": 0}, "threads must be 1 or more, not 0"),
        ({"tokens_per_second": 0.0}, "tokens_per_second and min_new_tokens must be positive"),
        ({"align": True, "max_chunk_s": 401.0}, "at most 400 s long"),
    ],
)
def test_a_wrong_setting_is_refused_with_what_to_do(options, message) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        ASREngineConfig(**options).validate()
    assert caught.value.hint


# -- 3. the repetition guard and the token budget ------------

LOOP = " batman"


def test_a_greedy_loop_is_retried_with_sampling(tokenizer, scripts) -> None:
    """Looping at temperature 0, fine when sampled: the loop is stopped long before the budget,
    the chunk is retried at the first fallback temperature, and the retry's answer is kept."""
    assert len(scripts.ids(LOOP)) >= 2

    def script(chunk: int, temperature: float) -> Iterable[int]:
        if temperature == 0.0:
            return scripts.looping("language English<asr_text>hello", LOOP)
        return scripts.reply("language English<asr_text>hello world")

    runtime = ScriptedRuntime(script)
    config = {"min_new_tokens": 2000, "fallback_temperatures": (0.3, 0.7)}
    engine = make_engine(runtime, tokenizer, **config)
    events = list(engine.transcribe_stream((noise(4.0), RATE)))

    greedy, retry = runtime.calls
    assert greedy.sampling.temperature == 0.0
    assert retry.sampling.temperature == 0.3
    assert greedy.generations[0].finish == "stopped"
    assert len(greedy.generations[0].tokens) < 200, "the guard stopped the loop early"
    assert runtime.stop_answers.count(True) == 1

    transcript = events[-1].transcript
    (segment,) = transcript.segments
    assert segment.text == "hello world"
    assert segment.temperature == 0.3
    assert segment.finish == "eos"
    assert not segment.truncated
    assert transcript.stats.retries == 1
    retried = [e for e in events if isinstance(e, ChunkRetried)]
    assert retried == [ChunkRetried(0, 0, 0.3)]
    # Text streamed before the retry is void; what follows it is the kept answer.
    after = events[events.index(retried[0]) + 1 :]
    assert "".join(e.text for e in after if isinstance(e, TextDelta)) == "hello world"


def test_a_loop_at_every_temperature_is_collapsed_flagged_and_logged(
    tokenizer, scripts, caplog
) -> None:
    """Nothing is silently cut: a chunk that loops even when sampled keeps one copy of the
    loop, is marked truncated, and a warning names the input."""
    runtime = ScriptedRuntime(
        lambda chunk, t: scripts.looping("language English<asr_text>hello", LOOP)
    )
    temperatures = (0.2, 0.5, 0.9)
    engine = make_engine(
        runtime, tokenizer, min_new_tokens=2000, fallback_temperatures=temperatures
    )
    caplog.set_level(logging.WARNING, logger="qwenscribe")
    transcript = engine.transcribe((noise(4.0), RATE))

    assert [c.sampling.temperature for c in runtime.calls] == [0.0, *temperatures]
    assert all(c.generations[0].finish == "stopped" for c in runtime.calls)
    (segment,) = transcript.segments
    assert segment.truncated
    assert segment.finish == "stopped"
    assert segment.text.startswith("hello")
    assert segment.text.count("batman") <= 2
    assert transcript.stats.retries == len(temperatures)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "<samples>" in warnings[0].getMessage()


def test_without_the_guard_a_loop_runs_to_the_budget_untouched(tokenizer, scripts, caplog):
    """Guard off: one greedy pass, no retry, no early stop; the record keeps the raw tokens."""
    runtime = ScriptedRuntime(
        lambda chunk, t: scripts.looping("language English<asr_text>hello", LOOP)
    )
    engine = make_engine(runtime, tokenizer, repetition_guard=False)
    caplog.set_level(logging.WARNING, logger="qwenscribe")
    transcript = engine.transcribe((noise(4.0), RATE))

    (call,) = runtime.calls
    (request,) = call.requests
    expected = list(
        itertools.islice(
            scripts.looping("language English<asr_text>hello", LOOP), request.max_new_tokens
        )
    )
    (record,) = transcript.chunks
    assert record.tokens == expected
    assert record.finish == "length"
    assert True not in runtime.stop_answers
    assert transcript.stats.retries == 0
    (segment,) = transcript.segments
    assert segment.truncated
    assert segment.temperature == 0.0
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("guard", [True, False])
def test_running_out_of_budget_is_flagged_and_logged(guard, tokenizer, scripts, caplog) -> None:
    """Text that never ends (no loop, no EOS) stops at the budget: truncated, with a warning."""
    runtime = ScriptedRuntime(lambda chunk, t: scripts.endless("language English<asr_text>"))
    engine = make_engine(runtime, tokenizer, repetition_guard=guard)
    caplog.set_level(logging.WARNING, logger="qwenscribe")
    transcript = engine.transcribe((noise(3.0), RATE))

    (segment,) = transcript.segments
    assert segment.truncated
    assert segment.finish == "length"
    budget = transcript.chunks[0].max_new_tokens
    assert len(segment.tokens) == budget
    expected_calls = 1 + (len(engine.config.fallback_temperatures) if guard else 0)
    assert len(runtime.calls) == expected_calls
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "<samples>" in warnings[0].getMessage()


def test_a_chunk_cut_inside_a_character_shows_no_replacement_character(tokenizer, scripts):
    """The budget ends the answer after the first byte of a three-byte character ("通" is
    E9 80 9A): its decoded U+FFFD is dropped, the text before it kept."""
    text_ids = scripts.ids("language Chinese<asr_text>你好")
    first_byte = tokenizer.token_to_id(chr(0xE9))  # byte-level BPE: the byte 0xE9 alone
    assert tokenizer.decode([first_byte]) == "\ufffd"
    script = itertools.chain(text_ids, [first_byte], itertools.cycle(range(300, 2900)))
    runtime = ScriptedRuntime(lambda chunk, t: script)
    # A budget of exactly the scripted tokens and the lone byte: ceil(N + 3 s x 1e-9) = N + 1.
    engine = make_engine(
        runtime,
        tokenizer,
        repetition_guard=False,
        min_new_tokens=len(text_ids),
        tokens_per_second=1e-9,
    )
    transcript = engine.transcribe((noise(3.0), RATE))
    (segment,) = transcript.segments
    assert segment.tokens == [*text_ids, first_byte]
    assert segment.finish == "length"
    assert segment.text == "你好"


def test_the_token_budget_grows_with_the_chunk(tokenizer, scripts) -> None:
    """max_new_tokens = min_new_tokens + tokens_per_second * chunk seconds (rounded up)."""
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("language English<asr_text>hi"))
    config = ASREngineConfig(vad=False, min_new_tokens=20, tokens_per_second=7.5)
    engine = QwenASREngine.from_runtime(runtime, tokenizer, config)
    engine.transcribe_many([(noise(3.0), RATE), (noise(25.0, seed=1), RATE)])
    budgets = [request.max_new_tokens for request in runtime.requests]
    assert len(budgets) == 2
    for budget, seconds in zip(budgets, (3.0, 25.0), strict=True):
        wanted = config.min_new_tokens + config.tokens_per_second * seconds
        assert wanted <= budget < wanted + 1
    assert budgets[1] > budgets[0]


# -- 4. long audio ------------

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def numbered(scripts: Scripts) -> Script:
    """Chunk k answers the k-th word, so the text shows which chunks came back, in which order."""
    return lambda chunk, t: scripts.reply(f"language English<asr_text>{WORDS[chunk]} said")


def test_long_audio_is_cut_in_silences_on_the_files_timeline(tokenizer, scripts) -> None:
    """45 s without VAD, at most 10-s chunks: segments in order, inside the audio, each at
    most 10 s, tiling it, with every cut inside one of the silences the test placed."""
    silences = every_4_6_s(45.0)
    runtime = ScriptedRuntime(numbered(scripts))
    engine = make_engine(runtime, tokenizer, max_chunk_s=10.0)
    transcript = engine.transcribe((bursts(45.0, silences), RATE))

    segments = transcript.segments
    assert len(segments) >= 5  # 45 s in chunks of at most 10 s
    assert segments[0].start == 0.0
    assert segments[-1].end == pytest.approx(45.0)
    for segment in segments:
        assert 0.0 <= segment.start < segment.end <= 45.0
        assert segment.end - segment.start <= 10.0 + 1e-9
    for before, after in itertools.pairwise(segments):
        assert before.end == pytest.approx(after.start)
    for cut in boundaries(transcript):
        assert inside_one(cut, silences), f"cut at {cut:.2f} s is not in a silence"
    assert transcript.text == " ".join(f"{w} said" for w in WORDS[: len(segments)])


def test_start_and_duration_keep_times_on_the_files_timeline(tokenizer, scripts) -> None:
    """With `start`/`duration`, only that window is decoded, but segment and chunk times stay on
    the file's timeline (the window's first sample is at `start` s): the transcript covers
    [start, start + duration], its cuts fall in the file's silences, and `duration` is the
    length of the window."""
    silences = every_4_6_s(45.0)
    runtime = ScriptedRuntime(numbered(scripts))
    engine = make_engine(runtime, tokenizer, max_chunk_s=10.0)
    transcript = engine.transcribe((bursts(45.0, silences), RATE), start=10.0, duration=20.0)

    assert transcript.duration == pytest.approx(20.0)
    assert transcript.stats.audio_s == pytest.approx(20.0)
    assert sum(mel.shape[1] for mel in runtime.mels) == pytest.approx(20.0 * 100, abs=10)
    segments = transcript.segments
    assert segments[0].start == pytest.approx(10.0)
    assert segments[-1].end == pytest.approx(30.0)
    assert all(10.0 - 1e-9 <= s.start < s.end <= 30.0 + 1e-9 for s in segments)
    assert [(s.start, s.end) for s in segments] == [(c.start, c.end) for c in transcript.chunks]
    cuts = boundaries(transcript)
    assert cuts
    for cut in cuts:
        assert inside_one(cut, silences), f"cut at {cut:.2f} s is not in a silence of the file"
    assert transcript.text == " ".join(f"{w} said" for w in WORDS[: len(segments)])


def test_warnings_name_the_chunk_on_the_files_timeline(tokenizer, scripts, caplog) -> None:
    """A warning about a cut chunk gives the same times as its segment, so a person can find it
    in the file: here the window 10-18 s of a file, decoded from `start=10`."""
    runtime = ScriptedRuntime(lambda chunk, t: scripts.endless("language English<asr_text>"))
    engine = make_engine(runtime, tokenizer, repetition_guard=False)
    caplog.set_level(logging.WARNING, logger="qwenscribe")
    transcript = engine.transcribe((noise(30.0), RATE), start=10.0, duration=8.0)

    (segment,) = transcript.segments
    assert (segment.start, segment.end) == (pytest.approx(10.0), pytest.approx(18.0))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "10.0-18.0 s" in warning


def test_parallel_sequences_bound_each_batch(tokenizer, scripts) -> None:
    """parallel_sequences=3: batches of at most 3 requests, every chunk decoded once, in order."""
    runtime = ScriptedRuntime(numbered(scripts))
    engine = make_engine(runtime, tokenizer, max_chunk_s=10.0, parallel_sequences=3)
    transcript = engine.transcribe((bursts(45.0, every_4_6_s(45.0)), RATE))

    sizes = [len(call.requests) for call in runtime.calls]
    assert max(sizes) == 3
    assert sum(sizes) == len(transcript.chunks) >= 5
    assert [int(r.audio[-1, 0]) for r in runtime.requests] == list(range(sum(sizes)))


def test_memory_carries_the_previous_chunk_into_the_prompt(tokenizer, scripts) -> None:
    """memory=True: one chunk at a time; the second prompt holds the first chunk's audio and
    answer as an earlier exchange, and its audio rows are both chunks' rows, first then second."""
    silences = every_4_6_s(45.0)
    runtime = ScriptedRuntime(numbered(scripts))
    engine = make_engine(runtime, tokenizer, max_chunk_s=10.0, memory=True, parallel_sequences=4)
    transcript = engine.transcribe((bursts(45.0, silences), RATE))

    assert all(len(call.requests) == 1 for call in runtime.calls)
    assert len(runtime.calls) == len(transcript.chunks) >= 2
    first, second = runtime.requests[:2]
    ids = second.prompt_ids.tolist()
    assert ids.count(AUDIO_START) == 2
    answer = scripts.ids(f"language English<asr_text>{WORDS[0]} said")
    assert any(ids[i : i + len(answer)] == answer for i in range(len(ids))), (
        "the first chunk's answer is not in the second prompt"
    )
    n_first, n_second = (reference_token_count(mel.shape[1]) for mel in runtime.mels[:2])
    assert len(first.audio) == n_first
    assert len(second.audio) == ids.count(AUDIO_PAD) == n_first + n_second
    assert (second.audio[:n_first] == 0.0).all()
    assert (second.audio[n_first:] == 1.0).all()
    assert transcript.text.startswith(f"{WORDS[0]} said {WORDS[1]} said")


# -- 5. flat memory ------------


def test_ten_minutes_never_put_more_than_the_chunks_in_flight(tokenizer, scripts) -> None:
    """Structural bound on memory: the encoder never sees more than one chunk's mel, and one
    decode call never holds more prompt tokens than its sequences' chunks (~13 per second plus
    the prompt's fixed part), however long the input."""
    max_chunk_s, width = 10.0, 3
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply("language English<asr_text>ok"))
    engine = make_engine(runtime, tokenizer, max_chunk_s=max_chunk_s, parallel_sequences=width)
    samples = bursts(600.0, every_4_6_s(600.0))
    transcript = engine.transcribe((samples, RATE))

    assert max(mel.shape[1] for mel in runtime.mels) <= max_chunk_s * 100
    prompt_tokens = [sum(len(r.prompt_ids) for r in call.requests) for call in runtime.calls]
    assert max(prompt_tokens) <= width * (max_chunk_s * 13 + 64)
    assert len(runtime.requests) == len(transcript.chunks) == len(runtime.mels)
    covered = sum(chunk.end - chunk.start for chunk in transcript.chunks)
    assert covered == pytest.approx(600.0)  # and nothing was left out


# -- 6. streaming ------------


def test_stream_events_come_in_order_and_match_transcribe(tokenizer, scripts) -> None:
    """TextDeltas of a chunk add up to its segment's text, every SegmentReady follows its own
    deltas and comes in chunk order, and the final TranscriptReady equals `transcribe`'s."""
    audio = (bursts(45.0, every_4_6_s(45.0)), RATE)
    engine = make_engine(ScriptedRuntime(numbered(scripts)), tokenizer, max_chunk_s=10.0)
    events = list(engine.transcribe_stream(audio))
    expected = make_engine(
        ScriptedRuntime(numbered(scripts)), tokenizer, max_chunk_s=10.0
    ).transcribe(audio)

    assert isinstance(events[-1], TranscriptReady)
    assert events[-1].input_index == 0
    assert sum(isinstance(e, TranscriptReady) for e in events) == 1
    streamed = events[-1].transcript
    assert streamed.segments == expected.segments
    assert streamed.chunks == expected.chunks
    assert (streamed.text, streamed.language, streamed.source, streamed.duration) == (
        expected.text,
        expected.language,
        expected.source,
        expected.duration,
    )
    ready = [e for e in events if isinstance(e, SegmentReady)]
    assert [e.chunk_index for e in ready] == list(range(len(expected.chunks)))
    assert [e.segment for e in ready] == expected.segments
    for event in ready:
        position = events.index(event)
        deltas = [
            e for e in events if isinstance(e, TextDelta) and e.chunk_index == event.chunk_index
        ]
        assert all(events.index(d) < position for d in deltas)
        assert "".join(d.text for d in deltas) == event.segment.text
    assert not any(isinstance(e, ChunkRetried) for e in events)


def test_streamed_cjk_text_never_splits_a_character(tokenizer, scripts) -> None:
    """Characters spread over several byte tokens are only released whole."""
    text = "鳄鱼吃饭了"
    pieces = [tokenizer.decode([i]) for i in scripts.ids(text)]
    assert any("\ufffd" in piece for piece in pieces), "test premise: characters span tokens"
    runtime = ScriptedRuntime(lambda chunk, t: scripts.reply(f"language Chinese<asr_text>{text}"))
    events = list(make_engine(runtime, tokenizer).transcribe_stream((noise(2.0), RATE)))

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 2
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    (segment,) = events[-1].transcript.segments
    assert (segment.text, segment.language, segment.language_code) == (text, "Chinese", "zh")


def test_closing_the_stream_cancels_the_decoding(tokenizer, scripts) -> None:
    """Closing the iterator after the first TextDelta stops the sequence through should_stop
    (not at the budget, not after retries), and the engine works normally afterwards."""
    cap = 3000
    runtime = ScriptedRuntime(lambda chunk, t: scripts.endless("language English<asr_text>"), cap)
    engine = make_engine(runtime, tokenizer, min_new_tokens=10 * cap)
    stream = engine.transcribe_stream((noise(3.0), RATE))
    first = next(e for e in stream if isinstance(e, TextDelta))
    assert first.text
    stream.close()

    (call,) = runtime.calls  # cancelled: no retry followed
    (generation,) = call.generations
    assert generation.finish == "stopped"
    assert len(generation.tokens) < cap
    assert runtime.stop_answers[-1] is True

    runtime.script = lambda chunk, t: scripts.reply("language English<asr_text>hello again")
    assert engine.transcribe((noise(2.0), RATE)).text == "hello again"


# -- 7. several inputs in one call ------------


def test_transcribe_many_keeps_input_order_names_and_statistics(
    tokenizer, scripts, data_dir: Path, fixture_facts
) -> None:
    """A path, a silent file, the bytes of a file and a sample array in one call, with VAD:
    one transcript per input in input order, the silent one empty; per-input audio lengths,
    and per-input shares of the runtime's time that add up to the runtime's totals."""
    counter = itertools.count()
    spoken: list[str] = []

    def script(chunk: int, temperature: float) -> list[int]:
        spoken.append(f"word{next(counter)}")
        return scripts.reply(f"language English<asr_text>{spoken[-1]}")

    runtime = ScriptedRuntime(script)
    engine = make_engine(runtime, tokenizer, vad=True, max_chunk_s=4.0, parallel_sequences=2)
    path = data_dir / "en_speech.wav"
    silence = data_dir / "silence.wav"
    flac = (data_dir / "en_long.flac").read_bytes()
    zh = read_wav(data_dir / "zh_speech.wav")
    started = time.perf_counter()
    results = engine.transcribe_many([str(path), silence, flac, (zh, RATE)])
    elapsed = time.perf_counter() - started

    assert [r.source for r in results] == [str(path), str(silence), "<bytes>", "<samples>"]
    empty = results[1]
    assert empty.segments == []
    assert empty.chunks == []
    assert empty.language is None
    assert empty.text == ""
    assert empty.duration == pytest.approx(3.0)
    spoken_inputs = [results[0], results[2], results[3]]
    assert all(r.segments and r.language == "English" for r in spoken_inputs)
    assert " ".join(r.text for r in spoken_inputs) == " ".join(spoken)

    durations = [
        fixture_facts[name]["duration_s"]
        for name in ("en_speech.wav", "silence.wav", "en_long.flac", "zh_speech.wav")
    ]
    for result, seconds in zip(results, durations, strict=True):
        stats = result.stats
        assert stats.audio_s == pytest.approx(seconds, abs=1e-3)
        assert stats.wall_s > 0
        assert stats.real_time_factor == pytest.approx(stats.wall_s / stats.audio_s)
        assert stats.chunks == len(result.chunks)
    assert sum(r.stats.wall_s for r in results) <= elapsed + 1e-6

    def total(name: str) -> float:
        return sum(getattr(r.stats, name) for r in results)

    for name in ("encoder_s", "prefill_s", "generation_s"):
        assert total(name) == pytest.approx(getattr(runtime.times, name), rel=1e-9)
    generated = sum(len(g.tokens) for call in runtime.calls for g in call.generations)
    assert runtime.times.generated_tokens == generated > 0
    assert abs(total("generated_tokens") - generated) <= len(results)  # shares are rounded
    assert abs(total("prefill_tokens") - runtime.times.prefill_tokens) <= len(results)
