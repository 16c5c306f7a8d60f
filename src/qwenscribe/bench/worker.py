"""One benchmark configuration, measured in this process: `python -m qwenscribe.bench.worker`.

Reads {"config": RunConfig, "files": {...}, "audio": path or null} as JSON on stdin and prints one
JSON object: load times, seconds per stage, token rates, real-time factor, memory.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from qwenscribe.bench.audio import RATE, passage, speech
from qwenscribe.bench.plan import DEFAULT_ALIGNER_QUANT, DEFAULT_QUANT, RunConfig
from qwenscribe.convert.onnx_aligner import aligner_decoder_filename
from qwenscribe.convert.onnx_decoder import onnx_decoder_filename, recognizer_decoder_files
from qwenscribe.convert.onnx_encoder import backend_filename, frontend_filename
from qwenscribe.convert.onnx_graph import PRECISIONS
from qwenscribe.core.resources import (
    current_rss_mb,
    peak_rss_mb,
    release_freed_memory,
    reset_peak_rss,
)
from qwenscribe.runtimes.onnx_session import packed_graph

PROBE_S = 10.0  # audio for the one-sequence generation probe: one chunk, one sequence


def warm_page_cache(folder: Path) -> None:
    """Read a model folder once so the timed load finds it in the page cache ("warm")."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def pack_ahead(config: RunConfig, files: dict) -> None:
    """Write the packed copies of the graphs a first load writes on a machine (runtimes/
    prepacked.py) before the timed load, so that the load measured is every later run's, and
    read them into the page cache as the models' folders are."""
    if config.runtime != "hybrid":
        return
    recognizer = Path(files["asr_converted"])
    graphs = []
    if config.encoder_precision == "int4":  # the encoders pack only in int4 (open_session)
        graphs += [recognizer / name("int4") for name in (frontend_filename, backend_filename)]
    if (quant := config.decoder_quant or DEFAULT_QUANT) in PRECISIONS:
        graphs.append(recognizer / onnx_decoder_filename(quant))
    if config.align and (quant := config.aligner_quant or DEFAULT_ALIGNER_QUANT) in PRECISIONS:
        graphs.append(Path(files["aligner_converted"]) / aligner_decoder_filename(quant))
    for graph in graphs:
        packed = packed_graph(graph, config.threads)
        if packed != graph:
            warm_page_cache(packed.parent)


def _engine_config(config: RunConfig, files: dict):
    from qwenscribe.core.engine import ASREngineConfig

    hybrid = config.runtime == "hybrid"
    return ASREngineConfig(
        model=files["asr_converted"] if hybrid else files["asr_checkpoint"],
        runtime=config.runtime,
        threads=config.threads,
        decoder_quant=config.decoder_quant or DEFAULT_QUANT,
        encoder_precision=config.encoder_precision or "int8",
        dtype=config.dtype or "float32",
        flash_attention=config.flash_attention,
        vad=False,  # the same fixed chunk plan for every configuration
        max_chunk_s=config.chunk_s,
        parallel_sequences=config.parallel_sequences,
        tokens_per_second=config.tokens_per_second,
        min_new_tokens=1,
        repetition_guard=False,
        decode_full_budget=True,
        low_memory=config.low_memory,
        align=config.align,
        aligner_model=files["aligner_converted" if hybrid else "aligner_checkpoint"],
        aligner_quant=config.aligner_quant or DEFAULT_ALIGNER_QUANT,
    )


def measure(config: RunConfig, files: dict, audio: Path | None = None) -> dict:
    from qwenscribe.core.align import ForcedAligner
    from qwenscribe.core.engine import QwenASREngine

    hybrid = config.runtime == "hybrid"
    warm_page_cache(Path(files["asr_converted" if hybrid else "asr_checkpoint"]))
    if config.align:
        warm_page_cache(Path(files["aligner_converted" if hybrid else "aligner_checkpoint"]))
    started = time.perf_counter()
    pack_ahead(config, files)
    packing_s = time.perf_counter() - started  # once per machine: ~0 when the copies exist
    # Writing copies leaves its freed heap resident and its peak in the process's: neither is
    # the run's (measured: 550 MB left resident after writing the 0.6B decoders' copies).
    release_freed_memory()
    reset_peak_rss()
    samples = speech(config.audio_s, audio)
    rss_before = current_rss_mb()

    # Loaded as the product loads them: with word timing, the recognizer and the aligner side
    # by side (one at a time in low memory, where the aligner comes after recognition).
    loaded = QwenASREngine(_engine_config(config, files))
    aligner = loaded.aligner
    # Recognition alone: the aligner times a fixed English passage below, not the random text.
    engine = QwenASREngine.from_runtime(
        loaded.runtime, loaded.tokenizer, replace(loaded.config, align=False, low_memory=False)
    )
    rss_loaded = current_rss_mb()

    started = time.perf_counter()
    transcript = engine.transcribe((samples, RATE), language="English")
    recognition_wall_s = time.perf_counter() - started
    stats = transcript.stats

    peak_recognition = peak_rss_mb()
    probe = None
    if config.part == "matrix":
        # Generation at one sequence: what the memory-bandwidth bound speaks of.
        probe_stats = engine.transcribe((samples[: round(PROBE_S * RATE)], RATE), language="en")
        probe = {
            "generated_tokens": probe_stats.stats.generated_tokens,
            "generation_s": probe_stats.stats.generation_s,
            "tokens_per_s": probe_stats.stats.generation_tokens_per_s,
        }
    # The probe is a side measurement: the peak starts over after it (where the system allows),
    # so it does not count in the run's peak.
    probe_excluded = probe is not None and reset_peak_rss()
    swap_s = 0.0
    if config.align and config.low_memory:
        # The engine's low-memory mode: release the recognizer, then load the aligner (a cost
        # every call pays, so it counts in the call's time).
        started = time.perf_counter()
        loaded.close()
        release_freed_memory()  # as the engine does before loading the aligner
        aligner = ForcedAligner.load(loaded.config.aligner_config())
        swap_s = time.perf_counter() - started

    align_s, align_words = 0.0, 0
    align_times = {"encoder_s": 0.0, "prefill_s": 0.0, "prefill_tokens": 0}
    if aligner is not None:
        times = aligner.runtime.times
        before = (times.encoder_s, times.prefill_s, times.prefill_tokens)
        for chunk in transcript.chunks:
            piece = samples[round(chunk.start * RATE) : round(chunk.end * RATE)]
            text = passage(chunk.end - chunk.start)
            started = time.perf_counter()
            words = aligner.align(piece, text, "English", offset_s=chunk.start)
            align_s += time.perf_counter() - started
            align_words += len(words)
        align_times = {
            "encoder_s": times.encoder_s - before[0],
            "prefill_s": times.prefill_s - before[1],
            "prefill_tokens": times.prefill_tokens - before[2],
        }
    peak_after_run = max(peak_recognition or 0.0, peak_rss_mb() or 0.0)
    loaded.close()  # both models (closing twice is harmless)
    if aligner is not None:
        aligner.close()

    total_s = recognition_wall_s + swap_s + align_s
    folder = Path(files["asr_converted"])
    decoder_bytes = (
        sum((folder / name).stat().st_size for name in recognizer_decoder_files(quant))
        if (quant := config.decoder_quant)
        else None
    )
    return {
        "config": config.to_dict(),
        "load_s": loaded.load_s,  # both models where they load together
        "packing_s": packing_s,
        "model_swap_s": swap_s,
        "audio_s": stats.audio_s,
        "chunks": stats.chunks,
        "chunk_seconds": [chunk.end - chunk.start for chunk in transcript.chunks],
        "stages_s": {
            "mel": stats.mel_s,
            "encoder": stats.encoder_s,
            "prefill": stats.prefill_s,
            "generation": stats.generation_s,
            "alignment": align_s,
        },
        "alignment_detail_s": align_times,
        "aligned_words": align_words,
        "prefill_tokens": stats.prefill_tokens,
        "generated_tokens": stats.generated_tokens,
        "prefill_tokens_per_s": stats.prefill_tokens_per_s,
        "generation_tokens_per_s": stats.generation_tokens_per_s,
        "one_sequence_generation": probe,
        "decoder_file_bytes": decoder_bytes if hybrid else None,
        "recognition_s": recognition_wall_s,
        "total_s": total_s,
        "real_time_factor": total_s / stats.audio_s,
        "recognition_real_time_factor": recognition_wall_s / stats.audio_s,
        "rss_mb": {
            "before_load": rss_before,
            "after_load": rss_loaded,
            "peak_run": peak_after_run,
            "peak": peak_after_run if probe_excluded else peak_rss_mb(),
            "probe_excluded": probe_excluded,
        },
    }


def main() -> int:
    request = json.load(sys.stdin)
    audio = Path(request["audio"]) if request.get("audio") else None
    result = measure(RunConfig.from_dict(request["config"]), request["files"], audio)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
