"""The example script in examples/ keeps working against the API it shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "transcribe.py"


def test_the_transcribe_example_prints_text_and_stage_statistics(checkpoints, data_dir, tmp_path):
    env = dict(os.environ, QWENSCRIBE_HOME=str(tmp_path))
    command = [
        sys.executable, str(EXAMPLE), str(data_dir / "en_speech.wav"),
        "--model", str(checkpoints[("asr", "hf")]), "--threads", "1", "--language", "en",
        "--tokens_per_second", "2", "--vad", "false",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "5.8 s of audio" in result.stdout
    for stage in ("decode", "mel", "encoder", "prefill", "generation", "wall"):
        assert f"{stage} " in result.stdout
    assert "real-time factor" in result.stdout
    assert "model loaded in" in result.stderr
