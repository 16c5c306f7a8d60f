"""The ASR prompt exactly as the official model expects it, and the parsing of its answer.

Prompt (shared/REFERENCE.md): a system turn that always exists and holds the context (hotwords),
a user turn with the audio placeholders, then the assistant turn; a forced language is prefilled
as `language {Name}<asr_text>`. The model answers `language {Name}<asr_text>{text}`, or
`language None<asr_text>` when it hears no speech.

Memory mode adds the previous chunk as an earlier exchange (its audio as a user turn, its text as
the assistant's answer), the usual Qwen multi-turn chat format.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from qwenscribe.core.repetition import collapse_repetitions
from qwenscribe.errors import InputError
from qwenscribe.model.tokens import ASR_TEXT, AUDIO_END, AUDIO_PAD, AUDIO_START, LANGUAGES

_NAMES_BY_KEY = {name.lower(): name for name in LANGUAGES.values()}
_CODES_BY_NAME = {name: code for code, name in LANGUAGES.items()}


def language_name(language: str) -> str:
    """A canonical language name from a name or ISO code, any case ("en", "english")."""
    key = language.strip().lower()
    if key in _NAMES_BY_KEY:
        return _NAMES_BY_KEY[key]
    if key in LANGUAGES:
        return LANGUAGES[key]
    raise InputError(
        f"Qwen3-ASR does not know the language {language!r}.",
        "Use a name or code from: "
        + ", ".join(f"{code} ({name})" for code, name in LANGUAGES.items())
        + ".",
    )


def forced_language(language: str | None) -> str | None:
    """The canonical name to force, or None to let the model detect it (None, "" or "auto",
    the word other speech tools use for detection)."""
    if language is None or language.strip().lower() in ("", "auto"):
        return None
    return language_name(language)


def language_code(name: str | None) -> str | None:
    """The ISO code of a canonical name the model printed; None for no or an unknown name."""
    return _CODES_BY_NAME.get(name) if name else None


def _audio(n_audio_tokens: int) -> str:
    return AUDIO_START + AUDIO_PAD * n_audio_tokens + AUDIO_END


def answer_prefix(language: str | None) -> str:
    """What the assistant turn starts with: the forced language, or nothing (detect)."""
    return f"language {language}{ASR_TEXT}" if language else ""


@dataclass(frozen=True)
class Exchange:
    """An earlier chunk carried into the prompt (memory mode): its audio and the raw answer."""

    n_audio_tokens: int
    answer: str  # "language English<asr_text>the text" as the model gave it
    answer_ids: tuple[int, ...] = ()  # the same as the ids the model produced, when known


def asr_prompt(
    n_audio_tokens: int,
    *,
    context: str = "",
    language: str | None = None,
    history: tuple[Exchange, ...] = (),
) -> str:
    """The prompt text, with one `<|audio_pad|>` per audio token (canonical language name)."""
    parts = [f"<|im_start|>system\n{context}<|im_end|>\n"]
    for exchange in history:
        parts.append(f"<|im_start|>user\n{_audio(exchange.n_audio_tokens)}<|im_end|>\n")
        parts.append(f"<|im_start|>assistant\n{exchange.answer}<|im_end|>\n")
    parts.append(f"<|im_start|>user\n{_audio(n_audio_tokens)}<|im_end|>\n")
    parts.append(f"<|im_start|>assistant\n{answer_prefix(language)}")
    return "".join(parts)


def asr_prompt_ids(
    tokenizer: Tokenizer,
    n_audio_tokens: int,
    *,
    context: str = "",
    language: str | None = None,
    history: tuple[Exchange, ...] = (),
) -> list[int]:
    """The ids of `asr_prompt`, with earlier answers as the ids the model produced.

    Re-tokenizing an answer's text could give other ids than the model's (a multi-byte
    character cut at the budget, another split). The template pieces are cut where the prompt
    has special tokens or a newline, where the tokenizer splits anyway, so the pieces encode
    exactly as the whole string does.
    """

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    ids = encode(f"<|im_start|>system\n{context}<|im_end|>\n")
    for exchange in history:
        ids += encode(
            f"<|im_start|>user\n{_audio(exchange.n_audio_tokens)}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        ids += list(exchange.answer_ids) or encode(exchange.answer)
        ids += encode("<|im_end|>\n")
    ids += encode(
        f"<|im_start|>user\n{_audio(n_audio_tokens)}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer_prefix(language)}"
    )
    return ids


@dataclass(frozen=True)
class ParsedAnswer:
    language: str | None  # canonical name; None when the model heard no speech
    text: str


def parse_answer(decoded: str) -> ParsedAnswer:
    """Language and text from the decoded answer (special tokens skipped, prefix included).

    Follows the official parser: repetitions are collapsed first, `language None` means no
    speech, and a missing `<asr_text>` marker leaves the whole string as text.
    """
    text = decoded.strip()
    if not text:
        return ParsedAnswer(None, "")
    text = collapse_repetitions(text)
    if ASR_TEXT not in text:
        return ParsedAnswer(None, text.strip())
    prefix, transcription = text.split(ASR_TEXT, 1)
    prefix = prefix.strip()
    if prefix.lower() == "language none":
        return ParsedAnswer(None, transcription.strip())
    language = None
    for line in prefix.splitlines():
        line = line.strip()
        if not line:
            continue
        has_label = line.lower().startswith("language ")
        language = line[len("language ") :].strip() if has_label else line
        break
    return ParsedAnswer(language or None, transcription.strip())
