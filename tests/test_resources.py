"""This process's memory (core/resources.py): what the statistics and the benchmark read, and
handing freed memory back to the system between models."""

from __future__ import annotations

import ctypes
import platform

import pytest

from qwenscribe.core.resources import current_rss_mb, release_freed_memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's; elsewhere release_freed_memory does nothing",
)


@glibc
def test_freed_heap_goes_back_to_the_system():
    """256 MB in 64 KB blocks (below glibc's mmap threshold, so on the heap), all freed but the
    last, which pins the heap's top: glibc keeps the rest resident until trimmed."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(4096):
        block = libc.malloc(64 << 10)
        ctypes.memset(block, 1, 64 << 10)  # touched: resident
        blocks.append(block)
    for block in blocks[:-1]:
        libc.free(block)
    held = current_rss_mb()
    assert release_freed_memory()
    released = current_rss_mb()
    libc.free(blocks[-1])
    assert held - released > 200, (held, released)


def test_memory_figures_are_plausible():
    rss = current_rss_mb()
    if platform.system() == "Linux":
        assert rss is not None
        assert 10 < rss < 100_000
