"""The benchmark scripts run: each in its --quick mode, in a child process, as a person runs them.

They print figures and are not tests of speed; what is checked is that they finish, and that the
JSON they write holds what they promise with values that make sense (shares in [0, 1], the
reference's second run agreeing with the first exactly, memory mode prefilling more).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


def run_quick(script: str, out: Path) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text("utf-8")), done.stdout


@pytest.fixture(scope="module")
def quantization(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return run_quick("quantization_agreement.py", tmp_path_factory.mktemp("q") / "q.json")


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return run_quick("memory_mode.py", tmp_path_factory.mktemp("m") / "m.json")


def test_quantization_agreement_writes_shares_and_errors(quantization) -> None:
    result, stdout = quantization
    assert result["quick"] is True
    reference = result["reference"]
    chunks = len(reference["chunks"])
    assert chunks >= 2
    assert len(reference["tokens_per_chunk"]) == chunks
    assert all(std > 0 for std in reference["first_position_logit_std"])
    # Teacher forcing feeds the right tokens at the right positions: the reference's own
    # greedy tokens are the argmax of its forced logits (near-ties aside).
    assert reference["forced_argmax_equals_own_tokens"] >= 0.95
    variants = result["variants"]
    assert len(variants) == 2
    for row in variants:
        for share in (
            row["tokens"]["identical_chunks"],
            row["tokens"]["mean_common_prefix"],
            row["tokens"]["positionwise"],
            row["first_position_logits"]["top1_agreement"],
            row["teacher_forced_generated_positions"]["top1_agreement"],
            row["teacher_forced_audio_positions"]["top1_agreement"],
        ):
            assert 0.0 <= share <= 1.0
        logits = row["first_position_logits"]
        assert 0.0 <= logits["mean_max_abs"] <= logits["max_abs"]
        assert 0.0 <= logits["mean_relative"] <= logits["relative"]
        generated = row["teacher_forced_generated_positions"]
        assert generated["positions"] == sum(reference["tokens_per_chunk"])
        audio = row["teacher_forced_audio_positions"]
        # 13 audio tokens per second of speech, give or take a chunk's partial last second.
        assert abs(audio["positions"] - 13 * result["audio"]["seconds"]) <= 2 * chunks
        for stats in (generated, audio):
            assert 0.0 <= stats["mean_max_abs"] <= stats["max_abs"]
            assert 0.0 <= stats["mean_relative"] <= stats["relative"]
        assert row["decoder_mb"] > 0
        assert row["encoder_mb"] > 0
        assert row["name"] in stdout  # the table names every variant
    again = next(row for row in variants if row["group"] == "reference")
    assert (again["encoder_precision"], again["decoder_quant"]) == ("fp32", "f32")
    assert again["tokens"] == {
        "identical_chunks": 1.0,
        "mean_common_prefix": 1.0,
        "positionwise": 1.0,
    }
    assert again["first_position_logits"]["max_abs"] == 0.0
    assert again["first_position_logits"]["top1_agreement"] == 1.0
    assert again["teacher_forced_generated_positions"]["max_abs"] == 0.0
    assert again["teacher_forced_audio_positions"]["max_abs"] == 0.0
    assert again["encoder_output"] == {"relative_rms": 0.0, "max_relative": 0.0}
    quantized = next(row for row in variants if row["group"] != "reference")
    assert quantized["first_position_logits"]["max_abs"] > 0.0  # q8_0 + int8 is not f32
    assert quantized["teacher_forced_audio_positions"]["max_abs"] > 0.0
    assert 0.0 < quantized["encoder_output"]["relative_rms"] < 1.0  # int8, not noise
    assert quantized["decoder_mb"] < again["decoder_mb"]
    assert quantized["decoder_matrix_types"] == {
        "Q8_0": sum(again["decoder_matrix_types"].values())
    }


def test_memory_mode_writes_costs_of_each_mode(memory) -> None:
    result, stdout = memory
    assert result["quick"] is True
    assert "Random weights cannot show" in result["note"]
    assert result["note"] in stdout
    runs = {row["mode"]: row for row in result["runs"]}
    assert set(runs) == {"memory", "parallel 4", "parallel 1"}
    for row in runs.values():
        assert row["chunks"] >= 2
        assert row["audio_s"] == pytest.approx(result["audio"]["seconds"])
        assert 0 < row["generated_tokens"] <= row["token_budget"]
        for seconds in ("wall_s", "encoder_s", "prefill_s", "generation_s"):
            assert row[seconds] > 0
        assert row["real_time_factor"] == pytest.approx(row["wall_s"] / row["audio_s"])
        assert row["engine_peak_rss_mb"] > 0
        if row["peak_rss_transcribing_mb"] is not None:  # Linux
            assert row["peak_rss_loading_mb"] >= row["rss_after_load_mb"] > 0
            assert row["peak_rss_transcribing_mb"] >= row["rss_after_load_mb"] * 0.9
    # Without memory the prompts do not depend on how many sequences run at once...
    assert runs["parallel 4"]["prefill_tokens"] == runs["parallel 1"]["prefill_tokens"]
    # ...with it, every chunk after the first also carries the previous chunk's audio and text.
    memory_run = runs["memory"]
    assert memory_run["carried_audio_tokens"] > 0
    assert memory_run["carried_text_tokens"] > 0
    assert memory_run["prefill_tokens"] == (
        runs["parallel 1"]["prefill_tokens"]
        + memory_run["carried_audio_tokens"]
        + memory_run["carried_text_tokens"]
    )
    assert memory_run["carried_answers_generated_tokens"] < memory_run["generated_tokens"]
    assert memory_run["prefill_tokens_if_real_text"] == (
        memory_run["prefill_tokens"]
        - memory_run["carried_text_tokens"]
        + memory_run["carried_text_tokens_if_real_text"]
    )
    fewer = memory_run["carried_text_tokens_if_real_text"] <= memory_run["carried_text_tokens"]
    estimate = memory_run["estimated_wall_s_if_real_text"]
    assert 0 < estimate <= memory_run["wall_s"] if fewer else estimate > memory_run["wall_s"]
    for name in ("parallel 4", "parallel 1"):
        assert runs[name]["carried_audio_tokens"] == runs[name]["carried_text_tokens"] == 0
    assert runs["parallel 4"]["wall_vs_parallel_4"] == 1.0


def test_decoder_settings_measures_each_setting(tmp_path: Path) -> None:
    from qwenscribe.convert.convert import ConvertOptions, convert
    from qwenscribe.testing import write_checkpoint

    checkpoint = write_checkpoint(tmp_path / "asr")
    folder = convert(checkpoint, tmp_path / "hybrid", ConvertOptions(("fp32",), ("q8_0",))).folder
    out = tmp_path / "settings.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "decoder_settings.py"), "--quick", "--threads", "1",
         "--out", str(out), str(folder / "decoder.q8_0.gguf")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text("utf-8"))["results"]
    settings = {(r["extra_buffers"], r["flash_attention"]) for r in results}
    assert settings == {(False, False), (False, True), (True, False), (True, True)}
    for row in results:
        assert row["prefill_tokens_per_s"] > 0
        assert row["generation_tokens_per_s"]["1"] > 0
    assert "| decoder.q8_0.gguf |" in done.stdout
