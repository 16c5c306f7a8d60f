"""The speed benchmark's parts: CPU feature decisions, the plan, the cost model, the analysis,
and the whole harness in its quick mode (`qwenscribe bench --quick`, as a person runs it).

Nothing here asserts a wall time: the quick run checks that every configuration finishes, does
the same work, and that the report holds what it promises.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from qwenscribe.bench import costs
from qwenscribe.bench.limits import onnxruntime_int8_gops
from qwenscribe.bench.plan import PlanOptions, plan_runs
from qwenscribe.bench.report import analyse, derived, load_s, markdown_report
from qwenscribe.errors import DeviceError
from qwenscribe.model.architecture import architecture
from qwenscribe.runtimes import cpu

SYSTEM_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
SAPPHIRE_RAPIDS = frozenset(
    [
        "pni",
        "ssse3",
        "avx",
        "avx2",
        "f16c",
        "fma",
        "bmi2",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
    ]
)
ZEN3 = frozenset(["pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2"])


# -- CPU features and the llama.cpp build ------------


def test_the_build_features_are_read_from_llama_system_info() -> None:
    features = cpu.llama_build_features(SYSTEM_INFO)
    assert features["AVX512"]
    assert features["AMX_INT8"]
    assert features["REPACK"]
    assert "AVX512_BF16" not in features


def test_instructions_the_cpu_lacks_are_named() -> None:
    features = cpu.llama_build_features(SYSTEM_INFO)
    assert cpu.missing_instructions(features, SAPPHIRE_RAPIDS) == []
    assert cpu.missing_instructions(features, ZEN3) == ["AVX512", "AVX512_VNNI", "AMX_INT8"]
    assert cpu.missing_instructions(features, frozenset()) == []  # unknown CPU: no guess


def test_a_build_for_another_cpu_is_refused_with_a_sentence(monkeypatch) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: ZEN3)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    with pytest.raises(DeviceError) as caught:
        cpu.check_llama_build(cpu.llama_build_features(SYSTEM_INFO))
    assert "AVX512" in caught.value.message
    assert "setup.sh" in caught.value.hint


def test_the_installed_build_runs_on_this_cpu() -> None:
    cpu.check_llama_build()  # setup.sh compiled it for this machine


def test_the_amx_path_stays_off_unless_asked_for(monkeypatch) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    amx_build = cpu.llama_build_features(SYSTEM_INFO)
    assert cpu.use_extra_buffers(amx_build, env={}) is False
    assert cpu.use_extra_buffers(amx_build, env={cpu.AMX_OPT_IN: "1"}) is True
    no_amx_build = {**amx_build, "AMX_INT8": False}
    assert cpu.use_extra_buffers(no_amx_build, env={}) is True
    monkeypatch.setattr(cpu, "cpu_flags", lambda: ZEN3)  # AMX compiled in, but no AMX here
    assert cpu.use_extra_buffers(amx_build, env={}) is True


# -- the plan and the cost model ------------


def test_the_full_plan_covers_every_variant_once() -> None:
    runs = plan_runs(PlanOptions())
    matrix = [run for run in runs if run.part == "matrix"]
    for size in ("0.6b", "1.7b"):
        labels = [run.label for run in matrix if run.size == size]
        assert len(labels) == len(set(labels)) == 11
        for decoder in ("int8 ONNX", "f16", "q8_0", "q4_k", "q4_0"):
            assert f"hybrid int8 + {decoder}" in labels
        # The whole pipeline on llama.cpp beside the default (both decoders on ONNX Runtime).
        assert "hybrid int8 + q8_0, aligner q8_0" in labels
        for precision in ("fp32", "int8", "int4"):
            assert f"hybrid {precision} + int8 ONNX" in labels
        assert {"transformers float32", "transformers bfloat16"} <= set(labels)
        assert "hybrid int8 + int8 ONNX, low memory" in labels
    assert all(run.align for run in matrix)
    assert [run.audio_s for run in runs if run.part == "scaling"] == [60, 600, 3600]
    assert [run.parallel_sequences for run in runs if run.part == "parallel"] == [1, 2, 4, 8]
    assert len({run.tokens_per_second for run in runs}) == 1
    assert len({run.chunk_s for run in runs}) == 1


def test_prefill_flops_count_the_layer_matrices_of_qwen3_0_6b() -> None:
    # Hidden 1024, 16 query and 8 key/value heads of 128, MLP 3072, 28 layers (REFERENCE.md).
    per_layer = 1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024 + 3 * 1024 * 3072
    assert costs.decoder_matrix_params(architecture("asr", "0.6b")) == 28 * per_layer
    assert costs.prefill_flops(architecture("asr", "0.6b"), 10) == 2 * 10 * 28 * per_layer
    step = costs.generation_step_params(architecture("asr", "0.6b"))
    assert step == 28 * per_layer + 151936 * 1024  # the tied head is read every step


def test_encoder_flops_grow_with_the_audio() -> None:
    arch = architecture("asr", "0.6b")
    one, ten = costs.encoder_flops(arch, 1.0), costs.encoder_flops(arch, 10.0)
    assert ten == pytest.approx(10 * one, rel=1e-9)
    # 18 layers of d 896, FFN 3584: their matrices alone, 13 tokens a second.
    layers = 18 * (4 * 896 * 896 + 2 * 896 * 3584)
    assert one > 2 * 13 * layers


# -- the analysis ------------


def _result(label_parts: dict, total_s: float, **extra) -> dict:
    config = {
        "part": "matrix",
        "size": "0.6b",
        "parallel_sequences": 4,
        "audio_s": 60.0,
        "decoder_quant": None,
        "encoder_precision": None,
        "dtype": None,
    } | label_parts
    runtime = config["runtime"]
    config["label"] = (
        f"hybrid {config['encoder_precision']} + {config['decoder_quant']}"
        if runtime == "hybrid"
        else f"transformers {config['dtype']}"
    )
    return {
        "config": config,
        "load_s": 1.0,  # both models
        "audio_s": 60.0,
        "chunks": 2,
        "stages_s": {
            "mel": 0.1,
            "encoder": 1.0,
            "prefill": 2.0,
            "generation": 3.0,
            "alignment": extra.pop("alignment", 1.0),
        },
        "prefill_tokens": 800,
        "generated_tokens": 242,
        "prefill_tokens_per_s": 400.0,
        "generation_tokens_per_s": 80.0,
        "recognition_s": total_s - 1.0,
        "total_s": total_s,
        "real_time_factor": total_s / 60.0,
        "rss_mb": {"after_load": 900, "peak": 1200},
        "one_sequence_generation": {"tokens_per_s": 50.0},
        "decoder_file_bytes": 600e6,
    } | extra


def test_ratios_against_transformers_and_the_machines_limits() -> None:
    report = {
        "limits": {"read_bandwidth_gbs": 30.0, "fp32_matmul_gflops": 200.0},
        "results": [
            _result(
                {"runtime": "hybrid", "decoder_quant": "q8_0", "encoder_precision": "int8"}, 6.0
            ),
            _result({"runtime": "transformers", "dtype": "float32"}, 30.0),
            _result({"runtime": "transformers", "dtype": "bfloat16"}, 24.0),
            {
                "config": {
                    "part": "matrix",
                    "size": "0.6b",
                    "label": "hybrid int4 + q4_0",
                    "runtime": "hybrid",
                },
                "error": "exit status 1",
            },
        ],
    }
    analysis = analyse(report)
    size = analysis["sizes"]["0.6b"]
    assert size["best_transformers"] == "transformers bfloat16"
    assert size["speedup_of_each_over_best_transformers"]["hybrid int8 + q8_0"] == 4.0
    hybrid = analysis["per_run"][0]
    assert hybrid["bound_step_ms"] == pytest.approx(20.0)  # 600 MB at 30 GB/s
    assert hybrid["one_sequence_step_ms"] == pytest.approx(20.0)  # 50 tokens/s
    assert hybrid["generation_vs_bandwidth_bound"] == pytest.approx(1.0)
    assert hybrid["alignment_share_of_recognition"] == pytest.approx(1.0 / 5.0)
    assert analysis["per_run"][3] is None
    targets = size["targets"]
    assert targets["real_time_factor"]["value"] == pytest.approx(0.1)
    assert targets["real_time_factor"]["met"] is True
    assert targets["peak_rss_mb"]["met"] is True  # 1200 <= 1536
    assert targets["speedup_over_best_transformers"]["met"] is True  # 4x >= 3x
    assert targets["load_s"]["value"] == 1.0
    # Each target that has one says its value at the bound, the run's own.
    assert targets["real_time_factor"]["at_bound"] == hybrid["bound_real_time_factor"]
    assert targets["alignment_share_of_recognition"]["at_bound"] == pytest.approx(
        hybrid["bound_alignment_share"]
    )
    assert "at_bound" not in targets["load_s"]
    # Results from before the models loaded side by side kept the aligner's load apart.
    assert load_s({"load_s": 0.25, "aligner_load_s": 0.5}) == 0.75
    report |= {
        "analysis": analysis,
        "created": "now",
        "plan": {"threads": 2, "chunk_s": 30},
        "machine": {
            "cpu": "x",
            "cores": 2,
            "memory_gb": 8,
            "cpu_flags": [],
            "llama_cpp_build": ["AVX2"],
            "llama_cpp_extra_buffers": True,
        },
    }
    markdown = markdown_report(report)
    assert "| hybrid int8 + q8_0 |" in markdown
    assert "| hybrid int4 + q4_0 | failed |" in markdown
    assert "4.00" in markdown  # the speedup column
    assert "| check | value | target | met | at the bound |" in markdown


def test_the_bound_puts_every_product_at_the_fastest_gemm_and_every_step_at_the_bandwidth() -> None:
    result = _result(
        {"runtime": "hybrid", "decoder_quant": "int8", "encoder_precision": "int8"},
        6.0,
        alignment_detail_s={"encoder_s": 0.5, "prefill_s": 0.5, "prefill_tokens": 1400},
    )
    limits = {"read_bandwidth_gbs": 30.0, "fp32_matmul_gflops": 200.0, "int8_gemm_gops": 700.0}
    figures = derived(result, limits)
    # 242 tokens from 2 chunks side by side: 121 steps of 20 ms (600 MB at 30 GB/s).
    assert figures["bound_generation_s"] == pytest.approx(121 * 0.020)
    faster = derived(result, limits | {"int8_gemm_gops": 1400.0})
    assert faster["bound_compute_s"] == pytest.approx(figures["bound_compute_s"] / 2)
    assert faster["bound_generation_s"] == figures["bound_generation_s"]
    # The aligner's work counts: without alignment the products take less time.
    unaligned = derived(result | {"stages_s": result["stages_s"] | {"alignment": 0.0}}, limits)
    assert unaligned["bound_compute_s"] < figures["bound_compute_s"]
    assert "aligner_prefill_gops" not in unaligned
    # Its prefill: 1400 rows through the aligner's 28 layers of 0.6B-size matrices in 0.5 s.
    aligner_layers = 28 * (1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024 + 3 * 1024 * 3072)
    assert figures["aligner_prefill_gops"] == pytest.approx(2 * aligner_layers * 1400 / 0.5 / 1e9)
    assert figures["aligner_prefill_gops_vs_int8_gemm"] == pytest.approx(
        figures["aligner_prefill_gops"] / 700.0
    )
    total = figures["bound_compute_s"] + figures["bound_generation_s"]
    assert figures["bound_real_time_factor"] == pytest.approx(total / 60.0)
    assert figures["real_time_factor_vs_bound"] == pytest.approx(0.1 / (total / 60.0))
    # Without an int8 GEMM measured, the fastest product is the fp32 one.
    assert derived(result, limits | {"int8_gemm_gops": None})["bound_compute_s"] == pytest.approx(
        figures["bound_compute_s"] * 700.0 / 200.0
    )
    # The aligner's share at the bound: its products (what alignment adds to the products)
    # against recognition's products and steps (the run without alignment).
    aligner_s = figures["bound_compute_s"] - unaligned["bound_compute_s"]
    recognition_s = unaligned["bound_compute_s"] + unaligned["bound_generation_s"]
    assert figures["bound_alignment_share"] == pytest.approx(aligner_s / recognition_s)
    assert "bound_alignment_share" not in unaligned
    # Faster products shrink the aligner's time but not the steps: its share falls.
    assert faster["bound_alignment_share"] < figures["bound_alignment_share"]


def test_the_int8_gemm_limit_is_measured_on_onnxruntime() -> None:
    rate = onnxruntime_int8_gops(threads=1, repeats=1)
    assert rate is not None
    assert rate > 1.0  # GOP/s: any machine that runs the tests does more than this


# -- the harness, quick ------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> tuple[dict, str, str]:
    folder = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwenscribe",
            "bench",
            "--quick",
            "--work-dir",
            str(folder / "work"),
            "--out",
            str(folder / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((folder / "report.json").read_text("utf-8"))
    return report, (folder / "report.md").read_text("utf-8"), done.stdout


@pytest.mark.slow
def test_the_quick_benchmark_measures_every_configuration(quick_report) -> None:
    report, markdown, stdout = quick_report
    results = report["results"]
    assert all("error" not in result for result in results), [r.get("error") for r in results]
    matrix = [r for r in results if r["config"]["part"] == "matrix"]
    runtimes = {r["config"]["runtime"] for r in matrix}
    assert runtimes == {"hybrid", "transformers"}
    hybrid = [r for r in matrix if r["config"]["runtime"] == "hybrid"]
    assert {r["config"]["aligner_quant"] for r in hybrid} == {"int8", "q8_0"}
    for result in matrix:
        stages = result["stages_s"]
        assert all(
            stages[name] > 0 for name in ("mel", "encoder", "prefill", "generation", "alignment")
        )
        assert result["aligned_words"] > 0
        assert result["alignment_detail_s"]["prefill_tokens"] > result["aligned_words"]
        assert result["rss_mb"]["peak"] >= result["rss_mb"]["after_load"] > 0
        assert result["real_time_factor"] > 0
        assert result["total_s"] == pytest.approx(
            result["recognition_s"] + result["model_swap_s"] + stages["alignment"]
        )
        assert (result["model_swap_s"] > 0) == result["config"]["low_memory"]
    # The same work everywhere: every chunk decodes its whole budget (1 + 4 per second).
    chunks = matrix[0]["chunk_seconds"]
    assert len(chunks) >= 4  # 20 s in chunks of at most 5 s
    assert all(r["chunk_seconds"] == chunks for r in matrix)
    expected = sum(math.ceil(1 + 4.0 * seconds) for seconds in chunks)
    assert {r["generated_tokens"] for r in matrix} == {expected}
    assert len({r["prefill_tokens"] for r in matrix}) == 1
    parallel = [r for r in results if r["config"]["part"] == "parallel"]
    assert [r["config"]["parallel_sequences"] for r in parallel] == [1, 2]
    assert report["limits"]["read_bandwidth_gbs"] > 0
    assert report["limits"]["fp32_matmul_gflops"] > 0
    assert report["limits"]["int8_gemm_gops"] > 0
    assert "Against this machine's limits" in markdown
    for figures in report["analysis"]["per_run"]:
        if figures is not None and "aligner_prefill_gops" in figures:
            assert figures["bound_real_time_factor"] > 0
    assert any("aligner_prefill_gops" in figures for figures in report["analysis"]["per_run"])
    assert report["analysis"]["sizes"]["tiny"]["best_transformers"].startswith("transformers")
    assert "## tiny: 20 s of audio" in markdown
    assert "## Scaling with audio length" in markdown
    assert markdown.strip() in stdout


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--sizes", "3b"], "Unknown size: 3b."),
        (["--quants", "q3_k"], "Unknown decoder quantization: q3_k."),
        (["--aligner-quants", "int3"], "Unknown aligner decoder: int3."),
        (["--precisions", "int2"], "Unknown encoder precision: int2."),
        (["--parts", "matrix,speed"], "Unknown part: speed."),
        (["--parallel", "1,x"], "--scaling and --parallel take comma-separated numbers"),
    ],
)
def test_wrong_bench_options_get_a_sentence_before_any_work(arguments, named, tmp_path) -> None:
    from typer.testing import CliRunner

    from qwenscribe.cli import app

    result = CliRunner().invoke(app, ["bench", "--work-dir", str(tmp_path), *arguments])
    assert result.exit_code == 4
    assert named in " ".join(result.output.split())
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_benchmark_refuses_to_start_without_the_disk_it_needs(monkeypatch, tmp_path) -> None:
    import shutil

    from qwenscribe.bench import harness
    from qwenscribe.errors import QwenScribeError

    runs = plan_runs(PlanOptions(sizes=("1.7b",), parts=("matrix",)))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=5 * 10**9))
    with pytest.raises(QwenScribeError) as caught:
        harness.prepare_files(runs, tmp_path, print)
    assert "16 GB" in caught.value.message  # 1.7B 13.1 + aligner 2.9
    assert "--work-dir" in caught.value.hint
    assert list(tmp_path.iterdir()) == []


def test_report_paths_keep_the_dots_of_a_name() -> None:
    from pathlib import Path

    from qwenscribe.cli_bench import report_paths

    assert report_paths(Path("r/speed_0.6b")) == (
        Path("r/speed_0.6b.json"),
        Path("r/speed_0.6b.md"),
    )
    assert report_paths(Path("r/speed.json")) == (Path("r/speed.json"), Path("r/speed.md"))
    assert report_paths(Path("speed")) == (Path("speed.json"), Path("speed.md"))


def test_bench_help_names_the_plans_defaults() -> None:
    """The command cannot import the plan at start-up, so its help repeats the defaults."""
    from typer.testing import CliRunner

    from qwenscribe.bench.plan import ALIGNER_QUANTS, DECODER_QUANTS, ENCODER_PRECISIONS
    from qwenscribe.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "300"})
    text = "".join(result.output.split())
    for defaults in (DECODER_QUANTS, ENCODER_PRECISIONS, ALIGNER_QUANTS):
        assert f"(default:{','.join(defaults)})" in text
