"""The engine: chunking, prompts, decoding loop and guards, shared by every runtime."""
