"""What the engine returns: a transcript of one input, in timed segments, with statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

from qwenscribe.model.prompt import language_code


@dataclass
class Word:
    """One aligned word on the input's timeline (seconds), punctuation attached as spoken text
    shows it ("Hello," / "world.")."""

    start: float
    end: float
    text: str


@dataclass
class Segment:
    """The text of one chunk, on the input's timeline (seconds)."""

    start: float
    end: float
    text: str
    language: str | None  # canonical name the model printed ("English"); None: no speech
    tokens: list[int] = field(default_factory=list)  # generated ids, language header included
    finish: str = "eos"  # eos, length (token budget reached) or stopped (loop guard)
    temperature: float = 0.0  # 0: greedy; > 0: the fallback that produced it
    truncated: bool = False  # ran out of budget or looped even after every fallback
    words: list[Word] = field(default_factory=list)  # empty until the aligner has run

    @property
    def language_code(self) -> str | None:
        return language_code(self.language)


@dataclass
class ChunkRecord:
    """How one chunk was decoded, kept for diagnosis and reproduction (with or without text)."""

    start: float
    end: float
    tokens: list[int]  # generated ids of the answer that was kept
    finish: str
    temperature: float
    max_new_tokens: int


@dataclass
class Stats:
    """Seconds per stage, token counts, and what they mean per second of audio."""

    audio_s: float = 0.0  # length of the audio transcribed
    decode_s: float = 0.0  # media decoding and resampling
    vad_s: float = 0.0
    mel_s: float = 0.0
    encoder_s: float = 0.0
    prefill_s: float = 0.0
    generation_s: float = 0.0
    align_s: float = 0.0  # the forced aligner (its encoder and scoring), when it ran
    wall_s: float = 0.0
    chunks: int = 0
    retries: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    peak_rss_mb: float | None = None

    @property
    def real_time_factor(self) -> float | None:
        return self.wall_s / self.audio_s if self.audio_s else None

    @property
    def prefill_tokens_per_s(self) -> float | None:
        return self.prefill_tokens / self.prefill_s if self.prefill_s else None

    @property
    def generation_tokens_per_s(self) -> float | None:
        return self.generated_tokens / self.generation_s if self.generation_s else None

    def as_dict(self) -> dict[str, float | int | None]:
        values = dict(self.__dict__)
        values["real_time_factor"] = self.real_time_factor
        values["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        values["generation_tokens_per_s"] = self.generation_tokens_per_s
        return values


@dataclass
class Transcript:
    segments: list[Segment]
    duration: float  # seconds of audio that were considered (after start/duration)
    language: str | None  # the language of most of the speech; None when there was none
    source: str  # the input's name (a path, or "<bytes>", "<samples>")
    stats: Stats = field(default_factory=Stats)
    chunks: list[ChunkRecord] = field(default_factory=list)
    model: str = ""  # what produced it (the model name or folder given)
    options: dict = field(default_factory=dict)  # the settings that shaped it, for the record

    @property
    def text(self) -> str:
        """The segments' texts; CJK text joins without spaces, other scripts with one."""
        text = ""
        for segment in self.segments:
            if not segment.text:
                continue
            if text and not (_is_cjk(text[-1]) and _is_cjk(segment.text[0])):
                text += " "
            text += segment.text
        return text

    @property
    def language_code(self) -> str | None:
        return language_code(self.language)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x9FFF  # CJK ideographs (A and unified)
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x3000 <= code <= 0x303F  # CJK punctuation
    )


def main_language(segments: list[Segment]) -> str | None:
    """The language spoken longest across the segments."""
    totals: dict[str, float] = {}
    for segment in segments:
        if segment.language:
            totals[segment.language] = (
                totals.get(segment.language, 0.0) + segment.end - segment.start
            )
    return max(totals, key=totals.__getitem__) if totals else None
