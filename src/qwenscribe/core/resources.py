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
