"""Runtimes: what runs the model (hybrid: ONNX Runtime + llama.cpp; transformers)."""
