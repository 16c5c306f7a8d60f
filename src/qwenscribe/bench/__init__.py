"""The speed benchmark: every runtime and model file variant on the same audio, side by side.

`qwenscribe bench` and `benchmarks/speed.py` run it. Each configuration runs in a process of its
own (so load time and peak memory are its own), on random-weight checkpoints of the true
architecture, with end-of-sequence suppressed so every runtime decodes the same number of tokens.
"""
