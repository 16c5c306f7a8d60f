"""Open an ONNX Runtime session the way every qwenscribe model wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwenscribe.errors import ModelError


def open_session(path: Path, precision: str, provider: str, threads: int) -> Any:
    """An `onnxruntime.InferenceSession` of `path`, or a ModelError that says what to do.

    One thread pool of `threads` (the graphs are a single chain: nothing to run side by side),
    and only ONNX Runtime's errors in the log: its warnings are not the user's business.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Pre-packing copies weights into the kernels' layout. Quantized graphs get it: measured
    # with 2 threads, the int8 aligner decoder runs 1.6x as fast (760 rows: 2.6 -> 1.6 s, +130
    # MB), the int8 encoders 9-10 % faster (0.6B: 0.66 -> 0.60 s for 30 s, +20-50 MB; the
    # aligner's: 0.85 -> 0.77 s, +80 MB), int4's MatMulNBits 40 % faster. Float graphs do not:
    # 370 MB more for the 0.6B fp32 encoder, for 5 %.
    if precision not in ("int8", "int4"):
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=[provider])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(
            f"ONNX Runtime cannot load {path} ({error}).", "Convert the model again."
        ) from error
