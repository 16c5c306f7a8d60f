"""What this machine can do at best, measured the same way each run: memory read bandwidth and
matrix-multiply throughput. The benchmark reports each stage against these limits.

Run in a process of its own (`python -m qwenscribe.bench.limits THREADS`) so the BLAS thread
count can be set before numpy loads.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import timeit

import numpy as np

BANDWIDTH_BYTES = 512 << 20  # far larger than any cache
MATMUL_SIZE = 2048
# The int8 product: 1024 rows through a 1024 -> 4096 matrix, the shape of the 0.6B decoder's
# gate/up product in a prefill (the encoders' and the larger decoders' are alike).
INT8_ROWS, INT8_IN, INT8_OUT = 1024, 1024, 4096


def _best_seconds(run, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run`, after one untimed warm-up call."""
    run()
    return min(timeit.repeat(run, number=1, repeat=repeats))


def read_bandwidth_gbs(threads: int, repeats: int = 5) -> float:
    """GB/s for reading a large array once, split over `threads` threads (numpy's reductions
    release the GIL, so the threads run at once)."""
    data = np.ones(BANDWIDTH_BYTES // 8, dtype=np.float64)
    parts = np.array_split(data, threads)

    def read_once() -> None:
        workers = [threading.Thread(target=np.add.reduce, args=(part,)) for part in parts]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return data.nbytes / _best_seconds(read_once, repeats) / 1e9


def numpy_matmul_gflops(repeats: int = 5) -> float:
    """fp32 GFLOP/s of numpy's BLAS (its threads set by the environment of this process)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
    b = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
    return 2 * MATMUL_SIZE**3 / _best_seconds(lambda: a @ b, repeats) / 1e9


def torch_matmul_gflops(threads: int, dtype: str, repeats: int = 5) -> float | None:
    """GFLOP/s of torch's matmul in `dtype` (bf16 uses AMX or AVX512-BF16 where present)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(getattr(torch, dtype))
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(getattr(torch, dtype))
    return 2 * MATMUL_SIZE**3 / _best_seconds(lambda: a @ b, repeats) / 1e9


def onnxruntime_int8_gops(threads: int, repeats: int = 5) -> float | None:
    """Giga-operations/s (2 per multiply-add) of ONNX Runtime's int8 GEMM (MatMulInteger,
    unsigned 8-bit rows x signed 8-bit weights): the kernel of the int8 encoders' and the
    aligner's products, and the fastest this machine has for them."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper

        from qwenscribe.convert.onnx_graph import IR_VERSION, OPSET
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, (INT8_IN, INT8_OUT), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["rows", "weight", "zero_point"], ["products"])],
        "int8_gemm",
        [helper.make_tensor_value_info("rows", TensorProto.UINT8, ["rows", INT8_IN])],
        [helper.make_tensor_value_info("products", TensorProto.INT32, ["rows", INT8_OUT])],
        [
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.array(128, np.uint8), "zero_point"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION  # what older onnxruntime versions read
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rows = rng.integers(0, 256, (INT8_ROWS, INT8_IN), dtype=np.uint8)
    seconds = _best_seconds(lambda: session.run(None, {"rows": rows}), repeats)
    return 2 * INT8_ROWS * INT8_IN * INT8_OUT / seconds / 1e9


def measure(threads: int) -> dict:
    return {
        "threads": threads,
        "read_bandwidth_gbs": read_bandwidth_gbs(threads),
        "read_bandwidth_1thread_gbs": read_bandwidth_gbs(1),
        "fp32_matmul_gflops": numpy_matmul_gflops(),
        "torch_fp32_matmul_gflops": torch_matmul_gflops(threads, "float32"),
        "torch_bf16_matmul_gflops": torch_matmul_gflops(threads, "bfloat16"),
        "int8_gemm_gops": onnxruntime_int8_gops(threads),
    }


def main() -> int:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    sys.stdout.write(json.dumps(measure(threads)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
