"""A byte-level BPE tokenizer shaped like Qwen3-ASR's, for random-weight test checkpoints.

The real tokenizer cannot be downloaded here, so the project builds one of the same kind:
Qwen2's pre-tokenizer split pattern, byte-level BPE, NFC normalisation, a regular vocabulary
that fills ids 0..151642 exactly, and the added tokens at their real ids from 151643 on
(`model.tokens`). Merges are learned from a small built-in multilingual text, so ordinary words
become a few tokens; the rest of the regular vocabulary is filled with byte strings that no
merge produces (they decode, but encoding never emits them).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import (
    Tokenizer,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from qwenscribe.model import tokens
from qwenscribe.model.tokenizer import build_bpe_tokenizer, qwen2_pre_tokenizer

_LEARNED_VOCAB = 3000

_CORPUS = """\
system
user
assistant
language English language Chinese language None language Cantonese language Japanese
language German language French language Spanish language Korean language Russian
The quick brown fox jumps over the lazy dog. Subtitles should never cut a word in half.
Speech recognition turns spoken words into text, and forced alignment finds when each word
was said. A good subtitle is short, easy to read, and on screen while the words are spoken.
Numbers such as 1, 2, 3, 42, 100 and 2026 appear in speech too; so do names like Alice and Bob.
It's a test: don't worry, we'll see what they've said and who'd know.
今天天气很好。我们一起去公园散步吧。语音识别把说话的声音变成文字。字幕应该简短易读。
今日はいい天気ですね。音声認識は話し言葉を文字にします。
오늘 날씨가 좋네요. 음성 인식은 말을 글로 바꿉니다.
Heute ist das Wetter schön. La reconnaissance vocale transforme la parole en texte.
El reconocimiento de voz convierte el habla en texto. Распознавание речи превращает речь в текст.
"""


def _learn_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE merges learned from the built-in text (deterministic)."""
    learner = Tokenizer(models.BPE())
    learner.normalizer = normalizers.NFC()
    learner.pre_tokenizer = qwen2_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=_LEARNED_VOCAB,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    corpus = _CORPUS.splitlines()
    learner.train_from_iterator(corpus * 3, trainer=trainer)
    model = json.loads(learner.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def _filler(taken: dict[str, int], count: int) -> list[str]:
    """`count` byte-level strings not yet in the vocabulary, in a fixed order."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    filler: list[str] = []
    for length in itertools.count(2):
        for combo in itertools.product(alphabet, repeat=length):
            text = "".join(combo)
            if text not in taken:
                filler.append(text)
                if len(filler) == count:
                    return filler
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class TokenizerFiles:
    vocab: dict[str, int]  # the regular vocabulary, ids 0..FIRST_ADDED_ID-1
    merges: list[tuple[str, str]]
    tokenizer_json: str  # the `tokenizers` serialisation, added tokens included


def build_tokenizer() -> TokenizerFiles:
    learned, merges = _learn_merges()
    vocab = dict(sorted(learned.items(), key=lambda item: item[1]))
    if list(vocab.values()) != list(range(len(vocab))):
        raise AssertionError("learned vocabulary ids are not contiguous")
    for text in _filler(vocab, tokens.FIRST_ADDED_ID - len(vocab)):
        vocab[text] = len(vocab)

    tokenizer = build_bpe_tokenizer(vocab, merges, tokens.added_tokens())
    return TokenizerFiles(vocab=vocab, merges=merges, tokenizer_json=tokenizer.to_str())


def tokenizer_config() -> dict:
    """`tokenizer_config.json`: the added tokens by id and the roles transformers looks up."""
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id): {
                "content": text,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for token_id, text, special in tokens.added_tokens()
        },
        "bos_token": None,
        "eos_token": tokens.IM_END,
        "pad_token": tokens.ENDOFTEXT,
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 131072,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        # The processor finds the audio placeholders through these attributes.
        "extra_special_tokens": {
            "audio_token": tokens.AUDIO_PAD,
            "audio_bos_token": tokens.AUDIO_START,
            "audio_eos_token": tokens.AUDIO_END,
        },
    }


def write_tokenizer(folder: Path, files: TokenizerFiles, with_tokenizer_json: bool) -> None:
    """Write vocab.json, merges.txt, tokenizer_config.json (and tokenizer.json if asked)."""
    (folder / "vocab.json").write_text(json.dumps(files.vocab, ensure_ascii=False), "utf-8")
    merges = "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in files.merges)
    (folder / "merges.txt").write_text(merges, "utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), ensure_ascii=False, indent=2), "utf-8"
    )
    if with_tokenizer_json:
        (folder / "tokenizer.json").write_text(files.tokenizer_json, "utf-8")
