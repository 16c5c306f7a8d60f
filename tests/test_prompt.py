"""The prompt's token ids built piecewise equal the whole prompt string tokenized at once, and
memory mode carries an earlier answer's ids verbatim."""

from __future__ import annotations

import pytest

from qwenscribe.model.prompt import Exchange, asr_prompt, asr_prompt_ids
from qwenscribe.model.tokenizer import load_tokenizer

AUDIO_PAD = 151676  # REFERENCE.md


@pytest.fixture(scope="module")
def tokenizer(checkpoints):
    return load_tokenizer(checkpoints[("asr", "original")])


ANSWERS = [
    "language English<asr_text>Hello, world.",
    "language Chinese<asr_text>你好，世界。",
    "language None<asr_text>",
    "language English<asr_text> leading space\nand a newline",
]


@pytest.mark.parametrize("context", ["", "Qwen3-ASR, llama.cpp", "热词：语音识别\n第二行", " x "])
@pytest.mark.parametrize("language", [None, "English", "Chinese"])
@pytest.mark.parametrize("answers", [(), ANSWERS[:1], ANSWERS[1:3], ANSWERS[3:]])
def test_pieces_encode_like_the_whole_prompt(tokenizer, context, language, answers) -> None:
    history = tuple(Exchange(7 + i, answer) for i, answer in enumerate(answers))
    whole = asr_prompt(13, context=context, language=language, history=history)
    expected = tokenizer.encode(whole, add_special_tokens=False).ids
    ids = asr_prompt_ids(tokenizer, 13, context=context, language=language, history=history)
    assert ids == expected
    assert ids.count(AUDIO_PAD) == 13 + sum(7 + i for i in range(len(answers)))


def test_an_earlier_answer_goes_in_as_the_models_ids(tokenizer) -> None:
    """Ids the tokenizer would never produce from the text (a cut multi-byte character) stay."""
    answer_ids = (*tokenizer.encode("language Chinese<asr_text>", add_special_tokens=False).ids,)
    odd = (*answer_ids, 1000, 1001, 1002)
    ids = asr_prompt_ids(tokenizer, 5, history=(Exchange(4, "ignored", odd),))
    start = next(i for i in range(len(ids)) if tuple(ids[i : i + len(odd)]) == odd)
    assert start > 0
    assert ids.count(AUDIO_PAD) == 9
