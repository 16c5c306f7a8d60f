"""Helpers for tests, benchmarks and the self-check: random checkpoints of the true architecture."""

from qwenscribe.testing.checkpoint import write_checkpoint

__all__ = ["write_checkpoint"]
