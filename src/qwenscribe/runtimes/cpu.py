"""What this CPU offers and what the installed llama.cpp was built for, and the choices that
follow from the two: fail with a sentence (not SIGILL) when the build uses instructions the CPU
lacks, and keep llama.cpp's AMX path off unless asked for.

llama.cpp's AMX path (the AMX "extra buffer type") crashed with a segmentation fault in
llama_decode on Q8_0/Q4_0 models with multi-token batches on a Sapphire Rapids machine of ours
(shared/ENVIRONMENT.md); upstream reports the same crash in ggml_backend_amx_mul_mat without a
fix (ggml-org/llama.cpp#20824). Only batches of more than one row take ggml's AMX tile path (one
row takes a VNNI path), and ggml loads its tile configuration once per thread behind a
thread-local flag, so another AMX user on the same thread (ONNX Runtime's int8 kernels, oneDNN in
torch) would leave it loading tiles under a foreign configuration: a likely cause, not yet
confirmed on an AMX machine. scripts/setup.sh therefore builds llama.cpp with AVX-512,
VNNI and BF16 where the CPU has them but without AMX, unless QWENSCRIBE_LLAMA_AMX=1; a build
with AMX uses it only when QWENSCRIBE_LLAMA_AMX=1 is also set when running. ONNX Runtime picks
its own int8 kernels (VNNI, AMX) from the CPU at run time.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
from pathlib import Path

from qwenscribe.errors import DeviceError

log = logging.getLogger(__name__)

# llama.cpp's name of an instruction set (llama_print_system_info) -> /proc/cpuinfo's flag.
LLAMA_FEATURE_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
AMX_OPT_IN = "QWENSCRIBE_LLAMA_AMX"


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The feature flags in a cpuinfo file (x86 "flags", Arm "Features"); None without one."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags; empty where the system does not say."""
    return read_cpu_flags() or frozenset()


@functools.cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llama_build_features(system_info: str | None = None) -> dict[str, bool]:
    """The instruction sets a llama.cpp system-info line names; the installed one's without."""
    if system_info is None:
        return dict(_installed_build_features())
    return {name: value == "1" for name, value in re.findall(r"(\w+) = (\d)", system_info)}


@functools.cache
def _installed_build_features() -> dict[str, bool]:
    """Asked of llama.cpp once per process (every model load checks it)."""
    from qwenscribe.runtimes.llama_decoder import llama_api

    return llama_build_features(llama_api().llama_print_system_info().decode(errors="replace"))


def missing_instructions(features: dict[str, bool], flags: frozenset[str]) -> list[str]:
    """Instruction sets the build uses that the CPU does not report (none when unknown)."""
    if not flags:
        return []
    return [
        name
        for name, flag in LLAMA_FEATURE_FLAGS.items()
        if features.get(name) and flag not in flags
    ]


def check_llama_build(features: dict[str, bool] | None = None) -> None:
    """Refuse a llama.cpp compiled for instructions this CPU lacks (it would die of SIGILL)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    features = llama_build_features() if features is None else features
    missing = missing_instructions(features, cpu_flags())
    if missing:
        raise DeviceError(
            f"The installed llama.cpp was built for instructions this CPU lacks "
            f"({', '.join(missing)}): it was compiled on another machine.",
            "Run scripts/setup.sh again on this machine (it builds llama.cpp for this CPU).",
        )


def use_extra_buffers(features: dict[str, bool] | None = None, env=os.environ) -> bool:
    """Whether llama.cpp may repack weights into its extra buffer types.

    They hold the fastest kernels (the repacked Q4_0/Q4_K/Q8_0 layouts; AMX where compiled in),
    but the AMX one crashes (module docstring): with an AMX build on an AMX CPU they stay off
    unless QWENSCRIBE_LLAMA_AMX=1."""
    features = llama_build_features() if features is None else features
    if features.get("AMX_INT8") and "amx_int8" in cpu_flags() and env.get(AMX_OPT_IN) != "1":
        log.info(
            "llama.cpp's AMX path is off (it crashes on some CPUs); %s=1 enables it", AMX_OPT_IN
        )
        return False
    return True
