"""Run a benchmark: prepare the model files, measure each configuration in its own process,
compare, and write the JSON and markdown report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qwenscribe.bench.machine import machine_info
from qwenscribe.bench.models import aligner_size, ensure_checkpoint, ensure_converted
from qwenscribe.bench.plan import DEFAULT_ALIGNER_QUANT, PlanOptions, RunConfig, plan_runs
from qwenscribe.bench.report import analyse, markdown_report
from qwenscribe.errors import QwenScribeError

Say = Callable[[str], None]
WORKER_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class BenchOptions:
    plan: PlanOptions
    work_dir: Path  # checkpoints and converted files, kept for the next run
    out_json: Path
    out_markdown: Path
    audio: Path | None = None  # a media file to use instead of the repository's speech


# Disk the random checkpoints and their conversions (every precision and quantization) take,
# in GB, as measured: checkpoint + converted folder.
DISK_GB = {"0.6b": 1.8 + 3.5, "1.7b": 4.4 + 8.7, "aligner-0.6b": 1.8 + 1.1}
DISK_MARGIN_GB = 1.0


def check_disk(runs: list[RunConfig], work_dir: Path) -> None:
    """Refuse to start when the files still to write would not fit."""
    needed = 0.0
    for size in {run.size for run in runs}:
        if not (work_dir / f"asr-{size}" / "config.json").is_file():
            needed += DISK_GB.get(size, 0.0)
    aligners = {aligner_size(run.size) for run in runs if run.align}
    for size in aligners:
        if not (work_dir / f"aligner-{size}" / "config.json").is_file():
            needed += DISK_GB.get(f"aligner-{size}", 0.0)
    free = shutil.disk_usage(work_dir).free / 1e9
    if needed and free < needed + DISK_MARGIN_GB:
        raise QwenScribeError(
            f"The benchmark needs about {needed:.0f} GB in {work_dir} for its model files; "
            f"{free:.0f} GB are free.",
            "Free some space, pass --work-dir on a larger disk, or measure fewer sizes "
            "(--sizes 0.6b).",
        )


def prepare_files(runs: list[RunConfig], work_dir: Path, say: Say) -> dict[str, dict]:
    """Checkpoints and conversions for every size the runs use; paths by size."""
    check_disk(runs, work_dir)
    files: dict[str, dict] = {}
    for size in dict.fromkeys(run.size for run in runs):
        of_size = [run for run in runs if run.size == size]
        quants = sorted({run.decoder_quant for run in of_size if run.decoder_quant})
        precisions = sorted({run.encoder_precision for run in of_size if run.encoder_precision})
        asr, seconds = ensure_checkpoint(work_dir / f"asr-{size}", size, kind="asr")
        if seconds:
            say(f"wrote a random {size} checkpoint in {seconds:.0f} s")
        converted, seconds, skipped = ensure_converted(
            asr, work_dir / f"asr-{size}-hybrid", precisions, quants
        )
        if not skipped:
            say(f"converted it ({', '.join(precisions)} + {', '.join(quants)}) in {seconds:.0f} s")
        entry = {"asr_checkpoint": str(asr), "asr_converted": str(converted)}
        if any(run.align for run in of_size):
            aligner_of = aligner_size(size)
            aligner, seconds = ensure_checkpoint(
                work_dir / f"aligner-{aligner_of}", aligner_of, kind="aligner"
            )
            if seconds:
                say(f"wrote a random {aligner_of} aligner checkpoint in {seconds:.0f} s")
            aligner_quants = sorted(
                {run.aligner_quant or DEFAULT_ALIGNER_QUANT for run in of_size if run.align}
            )
            aligner_converted, _, _ = ensure_converted(
                aligner, work_dir / f"aligner-{aligner_of}-hybrid", ["int8"], aligner_quants
            )
            entry |= {
                "aligner_checkpoint": str(aligner),
                "aligner_converted": str(aligner_converted),
            }
        files[size] = entry
    return files


def run_worker(config: RunConfig, files: dict, audio: Path | None) -> dict:
    """Measure one configuration in a fresh process; its error, if it failed."""
    request = {"config": config.to_dict(), "files": files, "audio": str(audio) if audio else None}
    env = dict(os.environ)
    # The transformers runtime's torch and numpy's BLAS get the same thread count as the rest.
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(config.threads)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "qwenscribe.bench.worker"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"config": config.to_dict(), "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
        return {
            "config": config.to_dict(),
            "error": f"exit status {process.returncode}: " + " | ".join(tail),
        }
    return json.loads(lines[-1])


def measure_limits(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    process = subprocess.run(
        [sys.executable, "-m", "qwenscribe.bench.limits", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if process.returncode != 0:
        return {"error": process.stderr.strip().splitlines()[-1:]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_benchmark(options: BenchOptions, say: Say = print) -> dict:
    runs = plan_runs(options.plan)
    if options.plan.transformers and not _has_torch():
        say("torch is not installed: the transformers runtime is left out")
        runs = [run for run in runs if run.runtime != "transformers"]
    if not runs:
        raise QwenScribeError("The benchmark plan is empty.", "Choose at least one part.")
    options.work_dir.mkdir(parents=True, exist_ok=True)
    files = prepare_files(runs, options.work_dir, say)
    say(f"measuring this machine's limits with {options.plan.threads} threads")
    limits = measure_limits(options.plan.threads)
    results = []
    started = time.perf_counter()
    for number, run in enumerate(runs, start=1):
        say(
            f"[{number}/{len(runs)}] {run.part}: {run.size} {run.label}, {run.audio_s:g} s of "
            f"audio, {run.parallel_sequences} parallel sequences"
        )
        result = run_worker(run, files[run.size], options.audio)
        if "error" in result:
            say(f"    failed: {result['error']}")
        else:
            say(
                f"    real-time factor {result['real_time_factor']:.3f}, "
                f"peak RSS {result['rss_mb']['peak'] or 0:.0f} MB"
            )
        results.append(result)
    report = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "limits": limits,
        "plan": asdict(options.plan),
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    report["analysis"] = analyse(report)
    _write_atomically(options.out_json, json.dumps(report, indent=2) + "\n")
    _write_atomically(options.out_markdown, markdown_report(report))
    return report


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None and (
        importlib.util.find_spec("transformers") is not None
    )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, "utf-8")
    temporary.replace(path)
