"""qwenscribe: local, offline speech recognition and subtitles with Qwen3-ASR."""

__version__ = "0.1.0"
