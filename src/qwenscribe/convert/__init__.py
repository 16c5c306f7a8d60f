"""Conversion of Qwen3-ASR checkpoints (either layout) into the hybrid format. No torch."""
