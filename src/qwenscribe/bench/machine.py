"""The machine a benchmark ran on: CPU and its vector instructions, memory, library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from qwenscribe.runtimes import cpu

INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
PACKAGES = ("qwenscribe", "llama_cpp_python", "onnxruntime", "numpy", "torch", "transformers")


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    flags = cpu.cpu_flags()
    try:
        build = cpu.llama_build_features()
    except Exception as error:  # an unusable llama.cpp is reported, not fatal, here
        build = {"error": str(error)}
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu.cpu_name(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "cpu_flags": [flag for flag in INTERESTING_FLAGS if flag in flags],
        "llama_cpp_build": [name for name, on in build.items() if on is True],
        "llama_cpp_extra_buffers": cpu.use_extra_buffers(build) if "error" not in build else None,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "load_average_1m": round(load[0], 2) if load else None,
    }
