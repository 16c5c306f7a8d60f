"""Open an ONNX Runtime session the way every qwenscribe model wants it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qwenscribe.errors import ModelError
from qwenscribe.runtimes.devices import ONNX_PROVIDERS
from qwenscribe.runtimes.prepacked import discard_copy, prepacked_graph

log = logging.getLogger(__name__)

# Attention (GroupQueryAttention in the decoder graphs) holds the [heads, rows, width] float32
# probabilities of a call, `width` being the cache's length; a long input is fed in blocks of
# rows that keep them under this. 256 MB lets one call take ~2000 rows (80 s of speech and its
# words) at the 0.6B aligner's 16 heads.
ATTENTION_BUDGET_BYTES = 256 << 20
MIN_BLOCK_ROWS = 64  # below this the products run too few rows to be efficient


def block_rows(rows: int, heads: int, width: int | None = None, budget: int | None = None) -> int:
    """Rows per call for an input of `rows` whose attention spans `width` positions at most
    (None: the rows themselves): all of them when their probabilities fit in `budget` (None:
    ATTENTION_BUDGET_BYTES), otherwise as many as fit beside the widest cache (the last
    block's)."""
    budget = ATTENTION_BUDGET_BYTES if budget is None else budget
    per_row = heads * 4 * max(width if width is not None else rows, 1)
    return max(MIN_BLOCK_ROWS, min(rows, budget // per_row))


def _configure(options: Any, threads: int, spinning: bool = False) -> None:
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # A session's idle worker threads spin-wait for its next call by default, taking a core
    # from whichever session runs next. With the six sessions of a recognizer and an aligner on
    # 2 cores, the aligner's encoder then took 2.8-3.3 s a minute instead of 1.9-2.0 (alignment
    # 7.2-7.8 s against 5.5-5.6; 0.6B, two runs each). Only the recognizer's decoder spins, its
    # generation steps being calls of tiny products (32-36 ms a step at 2 sequences against
    # 39.5 without), and it stops spinning at the end of each call (no cost measured: 36.2
    # against 36.4 ms a step), so that the aligner running after it has both cores.
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    else:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")


def packed_graph(path: Path, threads: int) -> Path:
    """The graph a CPU session with pre-packing opens for `path`: this machine's packed copy
    (written now on a first load), or `path` itself where there can be none."""
    return prepacked_graph(path, lambda options: _configure(options, threads)) or path


def graph_facts(session: Any, path: Path, names: tuple[str, ...], what: str) -> list[int]:
    """The integers `qwenscribe.<name>` a graph's writer stored in its metadata, in order, or a
    ModelError saying the file is not `what` ("an aligner decoder") written by qwenscribe."""
    meta = session.get_modelmeta().custom_metadata_map
    try:
        return [int(meta[f"qwenscribe.{name}"]) for name in names]
    except (KeyError, ValueError) as error:
        raise ModelError(
            f"{path} is not {what} written by qwenscribe ({error}).", "Convert the model again."
        ) from error


def open_session(
    path: Path,
    precision: str,
    provider: str,
    threads: int,
    prepack: bool | None = None,
    spinning: bool = False,
) -> Any:
    """An `onnxruntime.InferenceSession` of `path`, or a ModelError that says what to do.

    One thread pool of `threads` (the graphs are a single chain: nothing to run side by side),
    and only ONNX Runtime's errors in the log: its warnings are not the user's business.
    `prepack`: copy the weights into the kernels' layout at load; None: for int4 only (below).
    `spinning`: idle threads wait for the next call spinning (see `_configure`).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    _configure(options, threads, spinning)
    # Pre-packing copies weights into the kernels' layout, which MatMulNBits needs (int4 40 %
    # slower without; the decoders' 8-bit blocks 1.7x): the decoders ask for it. Elsewhere it
    # cost more than it gave, measured with 2 threads: the 0.6B int8 encoder 9 % faster but
    # +0.17 s of loading per graph and ~240 MB more at the benchmark's peak; fp32 5 % faster for
    # +370 MB. On a CPU the packed weights are kept on disk once (runtimes/prepacked.py).
    if not (precision == "int4" if prepack is None else prepack):
        options.add_session_config_entry("session.disable_prepacking", "1")
    elif provider == ONNX_PROVIDERS["cpu"] and (packed := packed_graph(path, threads)) != path:
        try:
            return onnxruntime.InferenceSession(str(packed), options, providers=[provider])
        except Exception as error:  # a damaged copy: made again at the next load
            log.warning("The packed copy %s cannot be loaded (%s); removed.", packed, error)
            discard_copy(packed)
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=[provider])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(
            f"ONNX Runtime cannot load {path} ({error}).", "Convert the model again."
        ) from error
