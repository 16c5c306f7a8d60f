"""Which hardware a runtime may use, checked up front: an unavailable choice is an error.

The hybrid runtime maps one `device` name to an ONNX Runtime execution provider for the encoder
and to llama.cpp GPU offload for the decoder. Nothing falls back silently: a person who asked for
a GPU and got the CPU would only notice by the speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qwenscribe.errors import DeviceError

# device name -> ONNX Runtime execution provider
ONNX_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def device_kind(device: str) -> str:
    """ "cuda" for "cuda:1": the kind of hardware, without the index."""
    return device.split(":", 1)[0].lower()


def onnx_provider(device: str) -> str:
    """The ONNX Runtime provider for `device`, if the installed onnxruntime offers it."""
    import onnxruntime

    name = device_kind(device)
    if name not in ONNX_PROVIDERS:
        raise DeviceError(
            f"Unknown device {device!r}.", f"Use one of: {', '.join(ONNX_PROVIDERS)}."
        )
    provider = ONNX_PROVIDERS[name]
    available = onnxruntime.get_available_providers()
    if provider not in available:
        raise DeviceError(
            f"The installed onnxruntime cannot run on {name!r} (it offers {', '.join(available)}).",
            "Install the onnxruntime package built for that device (e.g. onnxruntime-gpu for "
            "CUDA, onnxruntime-directml, onnxruntime on macOS for CoreML), or use device 'cpu'.",
        )
    return provider


def check_llama_gpu_offload(gpu_layers: int) -> None:
    """llama.cpp can only offload layers when it was built with a GPU backend."""
    import llama_cpp

    if gpu_layers and not llama_cpp.llama_supports_gpu_offload():
        raise DeviceError(
            "The installed llama.cpp (llama-cpp-python) was built without GPU support, so the "
            "decoder cannot run on the GPU.",
            "Rebuild llama-cpp-python with a GPU backend (e.g. CMAKE_ARGS='-DGGML_CUDA=on'), "
            "or use device 'cpu'.",
        )


@dataclass(frozen=True)
class HybridPlacement:
    """Where the hybrid runtime's two halves run: the encoder's ONNX Runtime provider, the
    decoder's llama.cpp layers on the GPU (0: all on the CPU), and the CPU threads."""

    provider: str
    gpu_layers: int
    threads: int


def hybrid_placement(device: str, threads: int | None) -> HybridPlacement:
    """Check `device` for both halves of the hybrid runtime; every layer goes where asked."""
    provider = onnx_provider(device)
    gpu_layers = 0 if device == "cpu" else 10_000  # more than any model has: every layer
    check_llama_gpu_offload(gpu_layers)
    return HybridPlacement(provider, gpu_layers, threads or max(1, os.cpu_count() or 1))
