"""This process's memory, as the system reports it (for statistics and benchmarks)."""

from __future__ import annotations

import sys


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB; None where the system does not say.

    Linux's VmHWM first: ru_maxrss also counts the parent's memory carried across fork + exec.
    """
    peak = _status_mb("VmHWM:")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """This process's resident memory now, in MB (Linux); None elsewhere."""
    return _status_mb("VmRSS:")


def reset_peak_rss() -> bool:
    """Start the peak (VmHWM) over from the current resident memory (Linux); False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> bool:
    """Hand the free pages of the C heap back to the system (glibc's `malloc_trim`); False where
    the C library has none (macOS, Windows, musl).

    glibc keeps the blocks a closed model freed for this process's later allocations, and the
    next model's do not reuse them all: measured, a closed 0.6B recognizer (ONNX decoder) left
    ~600-850 MB resident, 125 MB after trimming, so the low-memory mode's aligner was loaded on
    top of it."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # TypeError: Windows has no CDLL(None)
        return False
    trim(0)
    return True
