"""Token ids and languages fixed by the released Qwen3-ASR models.

The ids are those of the released tokenizers (shared/REFERENCE.md); the project's test
checkpoints put their special tokens at exactly these ids so that prompts tokenize the same way.
"""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
AUDIO_PAD = "<|audio_pad|>"
ASR_TEXT = "<asr_text>"
TIMESTAMP = "<timestamp>"

ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645
AUDIO_START_ID = 151669
AUDIO_END_ID = 151670
AUDIO_PAD_ID = 151676
ASR_TEXT_ID = 151704
TIMESTAMP_ID = 151705

# Greedy decoding stops at either of these (the official generation config).
EOS_IDS = (IM_END_ID, ENDOFTEXT_ID)

# The first id after the byte-level BPE vocabulary: every id from here on is an added token.
FIRST_ADDED_ID = ENDOFTEXT_ID

# Added tokens from FIRST_ADDED_ID upwards, in id order, as (text, special). Qwen3's chat and
# tool tokens come first, then the audio tokens. Ids the project has no use for (TTS and other
# model-family tokens) are held by reserved placeholders so that every named id stays exact.
_QWEN3_ADDED = [
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# Tokens the chat template writes literally but that must survive decoding as text.
_NOT_SPECIAL = {
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    ASR_TEXT,
}


def added_tokens() -> list[tuple[int, str, bool]]:
    """Every added token as (id, text, special), contiguous from FIRST_ADDED_ID to TIMESTAMP_ID."""
    named = {
        AUDIO_START_ID: AUDIO_START,
        AUDIO_END_ID: AUDIO_END,
        AUDIO_PAD_ID: AUDIO_PAD,
        ASR_TEXT_ID: ASR_TEXT,
        TIMESTAMP_ID: TIMESTAMP,
    }
    for offset, text in enumerate(_QWEN3_ADDED):
        named[FIRST_ADDED_ID + offset] = text
    tokens = []
    for token_id in range(FIRST_ADDED_ID, TIMESTAMP_ID + 1):
        text = named.get(token_id, f"<|reserved_special_token_{token_id - FIRST_ADDED_ID}|>")
        tokens.append((token_id, text, text not in _NOT_SPECIAL))
    return tokens


# The 30 languages Qwen3-ASR recognises, by the canonical English name the model was trained
# with ("language {Name}<asr_text>"), keyed by ISO 639 code.
LANGUAGES: dict[str, str] = {
    "zh": "Chinese",
    "en": "English",
    "yue": "Cantonese",
    "ar": "Arabic",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "pt": "Portuguese",
    "id": "Indonesian",
    "it": "Italian",
    "ko": "Korean",
    "ru": "Russian",
    "th": "Thai",
    "vi": "Vietnamese",
    "ja": "Japanese",
    "tr": "Turkish",
    "hi": "Hindi",
    "ms": "Malay",
    "nl": "Dutch",
    "sv": "Swedish",
    "da": "Danish",
    "fi": "Finnish",
    "pl": "Polish",
    "cs": "Czech",
    "fil": "Filipino",
    "fa": "Persian",
    "el": "Greek",
    "ro": "Romanian",
    "hu": "Hungarian",
    "mk": "Macedonian",
}

# The forced aligner supports these 11.
ALIGNER_LANGUAGES = frozenset(
    {
        "Chinese",
        "English",
        "Cantonese",
        "French",
        "German",
        "Italian",
        "Japanese",
        "Korean",
        "Portuguese",
        "Russian",
        "Spanish",
    }
)
