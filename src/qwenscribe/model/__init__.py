"""What a Qwen3-ASR model is: dimensions, tokens, languages, and the two on-disk layouts."""
