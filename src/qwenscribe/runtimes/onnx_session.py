"""Open an ONNX Runtime session the way every qwenscribe model wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwenscribe.errors import ModelError


def open_session(path: Path, provider: str, threads: int, prepack: bool) -> Any:
    """An `onnxruntime.InferenceSession` of `path`, or a ModelError that says what to do.

    One thread pool of `threads` (the graphs are a single chain: nothing to run side by side),
    and only ONNX Runtime's errors in the log: its warnings are not the user's business.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Pre-packing copies weights into the kernels' layout: faster products, more memory and
    # load time. Each caller says whether its graphs are worth it.
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=[provider])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(
            f"ONNX Runtime cannot load {path} ({error}).", "Convert the model again."
        ) from error
