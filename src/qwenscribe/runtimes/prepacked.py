"""Weights laid out for this machine's kernels once, kept on disk, and mapped at every load.

ONNX Runtime copies the weights of a MatMulNBits product into its kernels' layout when a session
opens ("pre-packing"): for the 0.6B recognizer's int8 decoder 1.4 s and a heap copy of ~700 MB,
every time. Recent releases can write the packed weights into an optimized copy of the graph,
which later sessions map from disk instead: 0.6 s to open, and pages the system can share and
drop rather than heap. The packed layout follows the CPU's instruction sets and ONNX Runtime's
version, so the copy is made on the machine that uses it, on a graph's first load (a few seconds
once), and its name carries both; it lives under `prepacked_dir()` (about twice the graph's size
on disk: the copy keeps the original weights beside the packed ones) and can be deleted at any
time. A copy is used only if ONNX Runtime wrote every packed weight on a page boundary: one
placed elsewhere is read shifted and gives NaN (`packed_weights_problem`). Where no copy can be
used (onnxruntime before 1.28 writes no packed weights: 1.22.0, 1.25.1 and 1.27.0 checked;
misaligned ones; no room; a folder that cannot be written), the graph is loaded and packed in
memory as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qwenscribe.convert.onnx_graph import weights_file_name
from qwenscribe.paths import prepacked_dir
from qwenscribe.runtimes.cpu import cpu_flags, cpu_name
from qwenscribe.runtimes.devices import ONNX_PROVIDERS

log = logging.getLogger(__name__)

GRAPH = "model.onnx"
WEIGHTS = "model.onnx.data"
UNSUPPORTED = "unsupported"  # left, with the reason, in place of a copy that must not be used
SOURCE = "source.json"  # the graph a copy was made from
WRITING_PREFIX = ".writing-"  # a copy being written
ABANDONED_AFTER_S = 24 * 3600
LAYOUT_REVISION = 1  # bump when the way copies are written changes
SPACE_FACTOR = 2.5  # free space wanted before writing, as a multiple of the graph's own files
PACKED_KEY_PREFIX = "prepacked_"  # ONNX Runtime's tag on a weight whose packed form follows it
PACKED_ALIGNMENT = 4096  # where every packed weight must start in the data file (see below)


def prepacked_graph(path: Path, configure: Callable[[Any], None]) -> Path | None:
    """This machine's packed copy of the graph at `path`, written now if there is none yet; None
    where there cannot be one, and the caller loads `path` itself.

    `configure(options)` sets the session options the copy is loaded with (threads, logging), so
    that the session which writes it is built the way it will be used."""
    try:
        sources = _graph_files(path)
        root = prepacked_dir()
        folder = root / _folder_name(path, sources)
        if (folder / GRAPH).is_file():
            return folder / GRAPH
        if (folder / UNSUPPORTED).is_file():
            return None
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.info("no packed copy of %s (%s): packing its weights in memory", path, error)
        return None
    needed = SPACE_FACTOR * sum(source.stat().st_size for source in sources)
    if shutil.disk_usage(root).free < needed:
        log.warning(
            "Not enough free space in %s for a packed copy of %s (%.0f MB wanted); its weights "
            "are packed in memory at each load instead (slower to load).",
            root,
            path.name,
            needed / 1e6,
        )
        return None
    remove_outdated_copies(keep=folder.name)
    return _write_copy(path, folder, configure)


def _graph_files(path: Path) -> list[Path]:
    """The graph and its external weights, if it has them."""
    data = path.with_name(weights_file_name(path.name))
    return [path, data] if data.is_file() else [path]


def _folder_name(path: Path, sources: list[Path]) -> str:
    """`<graph>-<where>-<what>`: `where` names the source graph (its resolved path), `what`
    everything the packed layout depends on (the source's files, the CPU, ONNX Runtime)."""
    import onnxruntime

    where = _digest(str(path.resolve()))[:8]
    stats = [(file.name, file.stat()) for file in sources]
    facts = {
        "files": [[name, stat.st_size, stat.st_mtime_ns] for name, stat in stats],
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "flags": sorted(cpu_flags()),
        "revision": LAYOUT_REVISION,
    }
    what = _digest(json.dumps(facts, sort_keys=True))[:12]
    return f"{path.stem}-{where}-{what}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def remove_outdated_copies(keep: str | None = None) -> list[Path]:
    """Remove the copies no load will use again: those of a graph that no longer exists, those
    of the same graph as `keep` (a folder name) made before it, the CPU or ONNX Runtime
    changed, and folders a crashed writer left (a day old). The folders removed."""
    root = prepacked_dir()
    removed = []
    same_graph = keep.rsplit("-", 1)[0] + "-" if keep else None
    for folder in root.iterdir() if root.is_dir() else ():
        if not folder.is_dir() or folder.name == keep:
            continue
        if folder.name.startswith(WRITING_PREFIX):
            outdated = time.time() - folder.stat().st_mtime > ABANDONED_AFTER_S
        else:
            source = _recorded_source(folder)
            outdated = source is None or not source.is_file()
            outdated = outdated or (same_graph is not None and folder.name.startswith(same_graph))
        if outdated:
            log.info("removing the outdated packed copy %s", folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def discard_copy(graph: Path) -> None:
    """Remove the copy holding `graph` (one that failed to load)."""
    if graph.parent.parent == prepacked_dir():
        shutil.rmtree(graph.parent, ignore_errors=True)


def _recorded_source(folder: Path) -> Path | None:
    try:
        return Path(json.loads((folder / SOURCE).read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stored_copies() -> tuple[int, int]:
    """How many packed copies are kept, and their bytes on disk."""
    root = prepacked_dir()
    folders = [f for f in root.iterdir() if f.is_dir()] if root.is_dir() else []
    size = sum(
        file.stat().st_size for folder in folders for file in folder.rglob("*") if file.is_file()
    )
    return len(folders), size


def _write_copy(path: Path, folder: Path, configure: Callable[[Any], None]) -> Path | None:
    """Let ONNX Runtime write the optimized graph with its packed weights into a folder of its
    own, moved into place whole once complete: a crash or a second process writing the same
    copy never leaves a half-written one where a load would find it."""
    import onnxruntime

    log.info("writing a packed copy of %s for this machine (once)", path)
    building = Path(tempfile.mkdtemp(prefix=WRITING_PREFIX, dir=folder.parent))
    try:
        options = onnxruntime.SessionOptions()
        configure(options)
        options.optimized_model_filepath = str(building / GRAPH)
        for key, value in (
            ("session.optimized_model_external_initializers_file_name", WEIGHTS),
            ("session.optimized_model_external_initializers_min_size_in_bytes", "1024"),
            ("session.save_external_prepacked_constant_initializers", "1"),
        ):
            options.add_session_config_entry(key, value)
        _open_and_save(path, options)
        problem = packed_weights_problem(building / GRAPH)
        if problem is not None:
            log.info("no packed copy of %s (%s): packed in memory at load", path.name, problem)
            for written in building.iterdir():
                written.unlink()
            (building / UNSUPPORTED).write_text(problem + "\n", encoding="utf-8")
        source = json.dumps({"source": str(path.resolve())})
        (building / SOURCE).write_text(source, encoding="utf-8")
        for written in building.iterdir():  # on disk before the copy can be found
            with open(written, "rb") as handle:
                os.fsync(handle.fileno())
        building.chmod(0o755)  # mkdtemp's 0700 would hide the copy from other users
        try:
            building.rename(folder)
        except OSError:  # another process finished the same copy first: use its
            shutil.rmtree(building, ignore_errors=True)
    except Exception as error:  # OSError, or ONNX Runtime's own failure types
        shutil.rmtree(building, ignore_errors=True)
        log.warning(
            "Could not write a packed copy of %s (%s); its weights are packed in memory at each "
            "load instead.",
            path.name,
            error,
        )
        return None
    return folder / GRAPH if (folder / GRAPH).is_file() else None


def _open_and_save(path: Path, options: Any) -> None:
    """Open `path` once with `options`, which make ONNX Runtime save what it loaded."""
    import onnxruntime

    onnxruntime.InferenceSession(str(path), options, providers=[ONNX_PROVIDERS["cpu"]])


def packed_weights_problem(graph: Path) -> str | None:
    """Why the graph ONNX Runtime wrote at `graph` must not be used; None when it may.

    Its packed weights are the initializers' external data entries tagged `prepacked_<n>`,
    valued `<kernel>|<offset>;<length>;<n>`. ONNX Runtime's writer aligns only tensors over 1 MB
    in the data file (to 4096 bytes) and the smaller packed ones land anywhere; but MLAS aligns
    the data inside a packed buffer relative to the buffer's address when it packs, so a buffer
    mapped back at another alignment is read shifted: measured with onnxruntime 1.31.1, the
    suite's tiny int8 decoder and the 0.6B int4 encoder's back end (7 of 110 weights off a
    64-byte boundary) computed NaN from such copies. Only copies whose packed weights all sit on
    4096-byte boundaries are used; the weights themselves are not read here."""
    import onnx
    import onnxruntime

    model = onnx.load(str(graph), load_external_data=False)
    offsets = [
        _packed_offset(entry.value)
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key.startswith(PACKED_KEY_PREFIX)
    ]
    if not offsets:
        return f"ONNX Runtime {onnxruntime.__version__} writes no packed weights"
    unaligned = sum(1 for offset in offsets if offset is None or offset % PACKED_ALIGNMENT)
    if unaligned:
        return (
            f"{unaligned} of its {len(offsets)} packed weights are not {PACKED_ALIGNMENT}-byte "
            "aligned in the written file, which ONNX Runtime's kernels would read shifted"
        )
    return None


def _packed_offset(value: str) -> int | None:
    try:
        return int(value.split("|", 1)[1].split(";", 1)[0])
    except (IndexError, ValueError):
        return None
