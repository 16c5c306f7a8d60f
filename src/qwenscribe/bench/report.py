"""From measurements to conclusions: ratios against the best transformers configuration and
against the machine's limits, the targets, and the markdown tables."""

from __future__ import annotations

from qwenscribe.bench import costs
from qwenscribe.bench.models import aligner_size, size_architecture
from qwenscribe.bench.plan import (
    DEFAULT_ALIGNER_QUANT,
    DEFAULT_PRECISION,
    DEFAULT_QUANT,
    TOKENS_PER_SECOND,
)
from qwenscribe.model.architecture import audio_token_count

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The targets of the benchmark issue, per size: end-to-end RTF with alignment, peak RSS (MB).
TARGETS = {"0.6b": {"rtf": 0.15, "rss_mb": 1536}, "1.7b": {"rtf": 0.35, "rss_mb": 2560}}
LOAD_TARGET_S = 2.0
SPEEDUP_AIM = 3.0
BANDWIDTH_AIM = 1.5  # generation within 1.5x of the bandwidth bound at one sequence


def _ok(result: dict) -> bool:
    return "error" not in result


def derived(result: dict, limits: dict) -> dict:
    """Per-run figures against the machine's limits."""
    config = result["config"]
    arch = size_architecture(config["size"])
    stages = result["stages_s"]
    out: dict = {}
    audio_tokens = audio_token_count(round(result["audio_s"] * 100))
    if stages["encoder"]:
        out["encoder_gflops"] = (
            costs.encoder_flops(arch, result["audio_s"]) / stages["encoder"] / 1e9
        )
    if stages["prefill"]:
        out["prefill_gflops"] = (
            costs.prefill_flops(arch, result["prefill_tokens"]) / stages["prefill"] / 1e9
        )
    peak = limits.get("torch_bf16_matmul_gflops") or limits.get("fp32_matmul_gflops")
    fp32 = limits.get("fp32_matmul_gflops")
    if fp32 and "prefill_gflops" in out:
        out["prefill_vs_fp32_matmul"] = out["prefill_gflops"] / fp32
        out["encoder_vs_fp32_matmul"] = out.get("encoder_gflops", 0) / fp32
    if peak and "prefill_gflops" in out:
        out["prefill_vs_best_matmul"] = out["prefill_gflops"] / peak
    if config["runtime"] == "hybrid":
        step_bytes = result.get("decoder_file_bytes")
    else:
        step_bytes = costs.generation_step_params(arch) * DTYPE_BYTES.get(config["dtype"], 4)
    bandwidth = limits.get("read_bandwidth_gbs")
    probe = result.get("one_sequence_generation")
    if step_bytes and bandwidth:
        out["bound_step_ms"] = step_bytes / (bandwidth * 1e9) * 1e3
        if probe and probe.get("tokens_per_s"):
            out["one_sequence_step_ms"] = 1e3 / probe["tokens_per_s"]
            out["generation_vs_bandwidth_bound"] = (
                out["one_sequence_step_ms"] / out["bound_step_ms"]
            )
    recognition = result["recognition_s"]
    if stages["alignment"] and recognition:
        out["alignment_share_of_recognition"] = stages["alignment"] / recognition
    out["audio_tokens"] = audio_tokens
    aligner_work = _aligner_work(result)
    out |= _aligner_rates(result, aligner_work)
    if int8 := limits.get("int8_gemm_gops"):
        rates = ("encoder_gflops", "prefill_gflops", "aligner_encoder_gops", "aligner_prefill_gops")
        out |= {f"{name}_vs_int8_gemm": out[name] / int8 for name in rates if name in out}
    out |= _bound(result, limits, out.get("bound_step_ms"), sum(aligner_work))
    return out


def best_gemm_gops(limits: dict) -> float | None:
    """The fastest matrix product measured on this machine, in any number format."""
    rates = [
        limits.get(name)
        for name in ("int8_gemm_gops", "torch_bf16_matmul_gflops", "fp32_matmul_gflops")
    ]
    return max((rate for rate in rates if rate), default=None)


def _aligner_work(result: dict) -> tuple[float, float]:
    """FLOPs of the aligner's encoder and of its prefill in this run (0 without alignment)."""
    detail = result.get("alignment_detail_s") or {}
    if not result["stages_s"]["alignment"]:
        return 0.0, 0.0
    arch = size_architecture(aligner_size(result["config"]["size"]), "aligner")
    return (
        costs.encoder_flops(arch, result["audio_s"]),
        costs.prefill_flops(arch, detail.get("prefill_tokens", 0)),
    )


def _aligner_rates(result: dict, work: tuple[float, float]) -> dict:
    """The aligner's encoder and prefill (`work`: their FLOPs) in GOP/s."""
    detail = result.get("alignment_detail_s") or {}
    out = {}
    for stage, flops in zip(("encoder", "prefill"), work, strict=True):
        seconds = detail.get(f"{stage}_s")
        if flops and seconds:
            out[f"aligner_{stage}_gops"] = flops / seconds / 1e9
    return out


def _bound(result: dict, limits: dict, step_ms: float | None, aligner_flops: float) -> dict:
    """The least time this run's work could take here: every matrix product at the fastest
    GEMM measured, every generation step at the time to read the weights once. What is left
    between it and the measured time is overhead: kernels below peak, attention, norms, cache."""
    gemm = best_gemm_gops(limits)
    if not gemm or step_ms is None:
        return {}
    arch = size_architecture(result["config"]["size"])
    recognizer_flops = costs.encoder_flops(arch, result["audio_s"]) + costs.prefill_flops(
        arch, result["prefill_tokens"]
    )
    # Chunks decode side by side in waves of parallel_sequences; a wave steps as often as its
    # longest chunk generates, each step reading the weights once whatever the batch.
    side_by_side = max(1, min(result["chunks"], result["config"]["parallel_sequences"]))
    steps = -(-result["generated_tokens"] // side_by_side)
    generation_s = steps * step_ms / 1e3
    recognizer_s, aligner_s = recognizer_flops / (gemm * 1e9), aligner_flops / (gemm * 1e9)
    compute_s = recognizer_s + aligner_s
    bound_rtf = (compute_s + generation_s) / result["audio_s"]
    out = {
        "bound_compute_s": compute_s,
        "bound_generation_s": generation_s,
        "bound_real_time_factor": bound_rtf,
        "real_time_factor_vs_bound": result["real_time_factor"] / bound_rtf,
    }
    if aligner_flops:
        # The aligner's share when both models run at the bound: what the target of a third
        # can be at all with this audio and text (its products against recognition's products
        # and steps), whatever the kernels.
        out["bound_alignment_share"] = aligner_s / (recognizer_s + generation_s)
    return out


def analyse(report: dict) -> dict:
    limits = report.get("limits", {})
    results = report["results"]
    per_run = [derived(r, limits) if _ok(r) else None for r in results]
    sizes: dict[str, dict] = {}
    matrix = [
        (r, d)
        for r, d in zip(results, per_run, strict=True)
        if _ok(r) and r["config"]["part"] == "matrix"
    ]
    for size in dict.fromkeys(r["config"]["size"] for r, _ in matrix):
        runs = [(r, d) for r, d in matrix if r["config"]["size"] == size]
        transformers = [r for r, _ in runs if r["config"]["runtime"] == "transformers"]
        hybrid = [r for r, _ in runs if r["config"]["runtime"] == "hybrid"]
        best_tf = min(transformers, key=lambda r: r["total_s"]) if transformers else None
        best_hy = min(hybrid, key=lambda r: r["total_s"]) if hybrid else None
        default = next(
            (
                r
                for r in hybrid
                if r["config"]["decoder_quant"] == DEFAULT_QUANT
                and r["config"]["encoder_precision"] == DEFAULT_PRECISION
                and r["config"].get("aligner_quant") in (None, DEFAULT_ALIGNER_QUANT)
                and not r["config"].get("low_memory")
            ),
            best_hy,
        )
        low_memory = next((r for r in hybrid if r["config"].get("low_memory")), None)
        sizes[size] = {
            "best_transformers": best_tf["config"]["label"] if best_tf else None,
            "best_hybrid": best_hy["config"]["label"] if best_hy else None,
            "default_hybrid": default["config"]["label"] if default else None,
            "speedup_of_each_over_best_transformers": {
                r["config"]["label"]: best_tf["total_s"] / r["total_s"] for r, _ in runs
            }
            if best_tf
            else {},
            "targets": _targets(size, default, best_tf, per_run[results.index(default)], low_memory)
            if default
            else {},
        }
    return {"per_run": per_run, "sizes": sizes}


def load_s(result: dict) -> float:
    """Seconds to load the run's models: both, side by side where they load together (results
    before that kept the aligner's apart, as `aligner_load_s`)."""
    return result["load_s"] + result.get("aligner_load_s", 0.0)


def _targets(
    size: str, default: dict, best_tf: dict | None, figures: dict, low_memory: dict | None = None
) -> dict:
    target = TARGETS.get(size, {})
    checks = {}
    bound_rtf = figures.get("bound_real_time_factor")
    if "rtf" in target:
        checks["real_time_factor"] = {
            "value": default["real_time_factor"],
            "target": target["rtf"],
            "at_bound": bound_rtf,
        }
    if "rss_mb" in target:
        checks["peak_rss_mb"] = {"value": default["rss_mb"]["peak"], "target": target["rss_mb"]}
        if low_memory is not None:
            checks["peak_rss_mb_low_memory"] = {
                "value": low_memory["rss_mb"]["peak"],
                "target": target["rss_mb"],
            }
            checks["real_time_factor_low_memory"] = {
                "value": low_memory["real_time_factor"],
                "target": target["rtf"],
                "at_bound": bound_rtf,  # the same work as the default's
            }
    checks["load_s"] = {
        "value": load_s(default),
        "target": LOAD_TARGET_S,
    }
    if best_tf:
        checks["speedup_over_best_transformers"] = {
            "value": best_tf["total_s"] / default["total_s"],
            "target": SPEEDUP_AIM,
            "higher": True,
        }
    if "alignment_share_of_recognition" in figures:
        checks["alignment_share_of_recognition"] = {
            "value": figures["alignment_share_of_recognition"],
            "target": 1 / 3,
            "at_bound": figures.get("bound_alignment_share"),
        }
    if "generation_vs_bandwidth_bound" in figures:
        checks["generation_vs_bandwidth_bound"] = {
            "value": figures["generation_vs_bandwidth_bound"],
            "target": BANDWIDTH_AIM,
        }
    for check in checks.values():
        value = check["value"]
        check["met"] = value is not None and (
            value >= check["target"] if check.get("higher") else value <= check["target"]
        )
    return checks


# -- markdown ------------


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


LIMIT_HEADERS = [
    "configuration",
    "encoder GOP/s",
    "prefill GOP/s",
    "aligner encoder GOP/s",
    "aligner prefill GOP/s",
    "products at peak s",
    "steps at bandwidth s",
    "bound RTF",
    "RTF",
    "RTF / bound",
]


def markdown_report(report: dict) -> str:
    machine, limits = report["machine"], report.get("limits", {})
    analysis = report["analysis"]
    results = report["results"]
    out = [
        f"# qwenscribe speed benchmark ({report['created']})",
        "",
        f"**Machine:** {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
        f"CPU features {', '.join(machine['cpu_flags']) or 'unknown'}; llama.cpp built with "
        f"{', '.join(machine['llama_cpp_build'])}; extra buffers "
        f"{'on' if machine['llama_cpp_extra_buffers'] else 'off'}. "
        f"Threads: {report['plan']['threads']}.",
        "",
        f"**Limits measured:** memory read {_cell(limits.get('read_bandwidth_gbs'))} GB/s, "
        f"fp32 matmul {_cell(limits.get('fp32_matmul_gflops'))} GFLOP/s, bf16 matmul (torch) "
        f"{_cell(limits.get('torch_bf16_matmul_gflops'))} GFLOP/s, int8 GEMM (ONNX Runtime) "
        f"{_cell(limits.get('int8_gemm_gops'))} GOP/s.",
        "",
        "Random-weight checkpoints of the real dimensions; every runtime decodes "
        f"{TOKENS_PER_SECOND:g} tokens per second of audio "
        f"(end-of-sequence suppressed), {report['plan'].get('chunk_s', 30):g}-s chunks, no VAD; "
        "alignment of an English passage at 2.5 words/s per chunk. "
        "RTF = (recognition + alignment) / audio.",
    ]
    matrix_rows: dict[str, list] = {}
    limit_rows: dict[str, list] = {}
    for result, figures in zip(results, analysis["per_run"], strict=True):
        config = result["config"]
        if config["part"] != "matrix":
            continue
        size = config["size"]
        speedups = analysis["sizes"].get(size, {}).get("speedup_of_each_over_best_transformers", {})
        if figures is None:
            matrix_rows.setdefault(size, []).append([config["label"], "failed"] + [None] * 12)
            continue
        stages = result["stages_s"]
        probe = result.get("one_sequence_generation") or {}
        matrix_rows.setdefault(size, []).append(
            [
                config["label"],
                load_s(result),
                stages["mel"],
                stages["encoder"],
                stages["prefill"],
                stages["generation"],
                stages["alignment"],
                result["prefill_tokens_per_s"],
                result["generation_tokens_per_s"],
                probe.get("tokens_per_s"),
                result["real_time_factor"],
                speedups.get(config["label"]),
                result["rss_mb"]["peak"],
                figures.get("generation_vs_bandwidth_bound"),
            ]
        )
        limit_rows.setdefault(size, []).append(
            [
                config["label"],
                figures.get("encoder_gflops"),
                figures.get("prefill_gflops"),
                figures.get("aligner_encoder_gops"),
                figures.get("aligner_prefill_gops"),
                figures.get("bound_compute_s"),
                figures.get("bound_generation_s"),
                figures.get("bound_real_time_factor"),
                result["real_time_factor"],
                figures.get("real_time_factor_vs_bound"),
            ]
        )
    headers = [
        "configuration",
        "load s",
        "mel s",
        "encoder s",
        "prefill s",
        "generation s",
        "alignment s",
        "prefill tok/s",
        "gen tok/s",
        "gen tok/s 1 seq",
        "RTF",
        "x best transformers",
        "peak RSS MB",
        "1-seq step / bandwidth bound",
    ]
    for size, rows in matrix_rows.items():
        audio = next(r["audio_s"] for r in results if _ok(r) and r["config"]["size"] == size)
        out += ["", f"## {size}: {audio:g} s of audio", "", table(headers, rows)]
        out += [
            "",
            "Against this machine's limits: each stage's matrix work in GOP/s (2 per "
            f"multiply-add; the fastest product measured here: {_cell(best_gemm_gops(limits))}), "
            "and the least time the run could take: every product at that rate, every "
            "generation step at the time to read the decoder's weights once.",
            "",
            table(LIMIT_HEADERS, limit_rows[size]),
        ]
        targets = analysis["sizes"][size]["targets"]
        if targets:
            out += [
                "",
                f"Targets ({analysis['sizes'][size]['default_hybrid']}):",
                "",
                table(
                    ["check", "value", "target", "met", "at the bound"],
                    [
                        [name, t["value"], t["target"], t["met"], t.get("at_bound")]
                        for name, t in targets.items()
                    ],
                ),
                "",
                "At the bound: the same check if every product ran at the fastest GEMM and every "
                "generation step at the bandwidth bound; a target missed there is out of reach "
                "for this work on this machine, whatever the kernels.",
            ]
    for part, title in (
        ("scaling", "Scaling with audio length"),
        ("parallel", "Parallel sequences in the decoder"),
    ):
        rows = []
        for result in results:
            config = result["config"]
            if config["part"] != part:
                continue
            if not _ok(result):
                rows.append([config["audio_s"], config["parallel_sequences"], "failed"])
                continue
            stages = result["stages_s"]
            rows.append(
                [
                    config["audio_s"] / 60,
                    config["parallel_sequences"],
                    result["chunks"],
                    stages["encoder"],
                    stages["prefill"],
                    stages["generation"],
                    result["generation_tokens_per_s"],
                    result["real_time_factor"],
                    result["rss_mb"]["before_load"],
                    result["rss_mb"]["after_load"],
                    result["rss_mb"]["peak"],
                ]
            )
        if rows:
            label = next(r["config"] for r in results if r["config"]["part"] == part)
            out += [
                "",
                f"## {title} ({label['size']}, {label['label']}, recognition only)",
                "",
                table(
                    [
                        "audio min",
                        "parallel",
                        "chunks",
                        "encoder s",
                        "prefill s",
                        "generation s",
                        "gen tok/s",
                        "RTF",
                        "RSS before load MB (the audio)",
                        "RSS after load MB",
                        "peak RSS MB",
                    ],
                    rows,
                ),
            ]
    return "\n".join(out) + "\n"
