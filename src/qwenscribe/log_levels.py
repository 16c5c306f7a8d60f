"""A logger's level raised for the length of a block.

For chatter that is expected and not the user's business: llama.cpp's per-tensor quantization
log and its warnings about the aligner's placeholder vocabulary, transformers' advice during the
doctor's reference check, a random test model's token-budget warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    """Logger `name` at `level` while the block runs; its own level again afterwards."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
