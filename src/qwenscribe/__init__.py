"""qwenscribe: local, offline speech recognition and subtitles with Qwen3-ASR."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["ASREngineConfig", "QwenASREngine", "Segment", "Stats", "Transcript", "__version__"]

if TYPE_CHECKING:
    from qwenscribe.core.engine import ASREngineConfig, QwenASREngine
    from qwenscribe.core.transcript import Segment, Stats, Transcript


def __getattr__(name: str) -> object:
    """The engine is imported on first use, so `import qwenscribe` (and the CLI) starts fast."""
    if name in ("ASREngineConfig", "QwenASREngine"):
        from qwenscribe.core import engine

        return getattr(engine, name)
    if name in ("Segment", "Stats", "Transcript"):
        from qwenscribe.core import transcript

        return getattr(transcript, name)
    raise AttributeError(f"module 'qwenscribe' has no attribute {name!r}")
