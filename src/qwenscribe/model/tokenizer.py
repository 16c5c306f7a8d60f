"""The text tokenizer of Qwen3-ASR, loaded with the `tokenizers` library (no transformers).

Checkpoints carry either `tokenizer.json` (the hf layout) or `vocab.json` + `merges.txt` +
`tokenizer_config.json` (the original release); both become the same byte-level BPE: Qwen2's split
pattern, NFC normalisation, and the added tokens at their ids. The engine owns the tokenizer, so
every runtime produces token ids and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from qwenscribe.errors import ModelError

# Qwen2's pre-tokenizer split pattern (llama.cpp calls it "qwen2").
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_bpe_tokenizer(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    added: Iterable[tuple[int, str, bool]],
) -> Tokenizer:
    """A Qwen2-style byte-level BPE from its parts; `added` is (id, text, special) in id order."""
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = qwen2_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    for token_id, text, special in added:
        token = AddedToken(text, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        if tokenizer.token_to_id(text) != token_id:
            raise ModelError(
                f"The tokenizer's added token {text} lands at id {tokenizer.token_to_id(text)}, "
                f"not {token_id}: the tokenizer files are inconsistent.",
                "Download or convert the model again.",
            )
    return tokenizer


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        left, _, right = line.partition(" ")
        merges.append((left, right))
    return merges


def _added_from_config(config: dict) -> list[tuple[int, str, bool]]:
    decoder = config.get("added_tokens_decoder", {})
    return sorted(
        (int(token_id), entry["content"], bool(entry.get("special", False)))
        for token_id, entry in decoder.items()
    )


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer of a checkpoint or converted folder."""
    folder = Path(folder)
    try:
        if (folder / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            config_path = folder / "tokenizer_config.json"
            config = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
            return build_bpe_tokenizer(
                vocab, _read_merges(folder / "merges.txt"), _added_from_config(config)
            )
    except (OSError, ValueError, KeyError, Exception) as error:  # tokenizers raises plain Exception
        if isinstance(error, ModelError):
            raise
        raise ModelError(
            f"The tokenizer files in {folder} cannot be read ({error}).",
            "Download or convert the model again.",
        ) from error
    raise ModelError(
        f"{folder} has no tokenizer (tokenizer.json, or vocab.json + merges.txt).",
        "Download or convert the model again.",
    )
