"""Guards against runaway repetition, the usual failure of autoregressive speech recognition.

Two tools for two moments:

* `repeating_tail` runs after every generated token and tells the decoding loop that a sequence
  has fallen into a loop, so it can stop spending compute on it.
* `collapse_repetitions` cleans the final text exactly as the official Qwen3-ASR post-processing
  does (transformers' `_detect_and_fix_repetitions`), so our transcripts match the reference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

REPEAT_THRESHOLD = 20
"""Official: a character repeated more than this, or a pattern repeated this often, is a loop."""
MAX_PATTERN_CHARS = 20
"""Official: the longest pattern (in characters) the collapse looks for."""


def collapse_repetitions(
    text: str, *, threshold: int = REPEAT_THRESHOLD, max_pattern_len: int = MAX_PATTERN_CHARS
) -> str:
    """Collapse runaway repetitions in a transcript, as the official implementation does.

    Two passes, in order:

    1. A run of one character longer than `threshold` is kept once ("aaaa…a" -> "a").
    2. Scanning left to right, at the first position where a pattern of 1..`max_pattern_len`
       characters (the shortest that matches) repeats at least `threshold` times back to back,
       the whole run is kept once and the scan resumes after it.

    Quirks kept for parity with the reference: the second pass only starts a pattern at a
    position with at least `2 * threshold` characters left, whatever the pattern's length, so a
    run lying wholly in the last `2 * threshold - 1` characters (or in a text shorter than
    `2 * threshold`) survives; and a single character repeated exactly `threshold` times is left
    by the first pass but collapsed by the second when the position rule allows.
    """
    if threshold < 2 or max_pattern_len < 1:
        raise ValueError("threshold must be >= 2 and max_pattern_len >= 1")
    return _collapse_patterns(_collapse_char_runs(text, threshold), threshold, max_pattern_len)


def _collapse_char_runs(text: str, threshold: int) -> str:
    """Replace each run of one character longer than `threshold` by a single character."""
    # A character followed by `threshold` or more copies of itself; DOTALL so newlines count.
    longer_run = re.compile(rf"(.)\1{{{threshold},}}", re.DOTALL)
    return longer_run.sub(r"\1", text)


def _collapse_patterns(text: str, threshold: int, max_pattern_len: int) -> str:
    """Keep one copy of each run of a short pattern repeated `threshold` or more times."""
    # The lazy group tries pattern lengths 1, 2, ... in turn, so the shortest pattern that has
    # threshold - 1 more copies right after it wins, and the greedy repeat takes the whole run:
    # the official left-to-right scan, done by the regex engine.
    repeated = re.compile(rf"(.{{1,{max_pattern_len}}}?)\1{{{threshold - 1},}}", re.DOTALL)
    last_start = len(text) - 2 * threshold  # the official scan's reach
    pieces = []
    copied_from = 0  # text before this is already in pieces
    while (run := repeated.search(text, copied_from)) and run.start() <= last_start:
        pieces += [text[copied_from : run.start()], run.group(1)]
        copied_from = run.end()
    pieces.append(text[copied_from:])
    return "".join(pieces)


MAX_LOOP_PERIOD = 8
"""Longest token loop `repeating_tail` looks for by default."""
MIN_LOOP_REPEATS = 8
"""Default: a loop repeats its pattern at least this often, whatever the period."""
MIN_LOOP_TOKENS = 48
"""Default: a loop spans at least this many tokens, so short periods need many repeats."""


def repeating_tail(
    tokens: Sequence[int],
    *,
    max_period: int = MAX_LOOP_PERIOD,
    min_repeats: int = MIN_LOOP_REPEATS,
    min_tokens: int = MIN_LOOP_TOKENS,
) -> int | None:
    """The period of a loop at the end of `tokens`, or None when the tail is not a loop.

    A tail is a loop of period `p` (1 <= p <= `max_period`) when its last
    `r * p` tokens are one pattern of `p` tokens repeated `r` times back to back, with
    `r = max(min_repeats, ceil(min_tokens / p))`. The smallest such period is returned.

    Why the defaults (8 repeats, 48 tokens) do not fire on real speech, at roughly one token per
    word or per CJK character:

    * period 1 needs 48 repeats: "no no no", "ha ha ha ha", "对对对" or laughter run to a dozen
      words at most; 48 identical tokens in a row do not happen in a transcript;
    * period 2 needs 24 ("no, no, ..."), period 4 needs 12 (a short chanted phrase), periods 6
      to 8 need 8 back-to-back copies of a whole phrase, more than songs and chants repeat;
    * the official text clean-up treats 20 repeats of a pattern as a loop anyway, so stopping a
      short-period loop after 24 to 48 repeats loses nothing that would have been kept.

    Detection is still early enough to matter: at most 64 tokens of loop are generated, against
    hundreds to thousands for a loop that runs to the token limit.

    Cost: at most `max_period` comparisons of tails up to `max_period * min_repeats` or
    `min_tokens + max_period` tokens long, so it is cheap enough to call after every token.
    """
    if max_period < 1 or min_repeats < 2 or min_tokens < 1:
        raise ValueError("max_period and min_tokens must be >= 1 and min_repeats >= 2")
    for period in range(1, max_period + 1):
        span = period * max(min_repeats, math.ceil(min_tokens / period))
        if span > len(tokens):
            continue
        tail = list(tokens[len(tokens) - span :])
        if tail[period:] == tail[:-period]:  # shifting by one period changes nothing
            return period
    return None
