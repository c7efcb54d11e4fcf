"""The streaming benchmark runs on CPU and its figures hang together."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A benchmark subprocess: slow.
pytestmark = pytest.mark.slow

BENCHMARK = (
    Path(__file__).resolve().parents[2] / "benchmarks" / "streaming_latency.py"
)


def test_streaming_latency_benchmark(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--seconds",
            "14",
            "--models",
            "desed-crnn",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.strip().splitlines()
    data = json.loads(line)
    assert data["benchmark"] == "streaming_latency"
    assert data["device"] == "cpu" and data["settings"]["audio_s"] == 14
    (model,) = data["models"]
    assert model["model"] == "desed-crnn"
    assert [r["hop_s"] for r in model["results"]] == [1.0, 0.5, 2.0]
    for row in model["results"]:
        assert row["events"] > 0 and 0 < row["rtf"] < 5
        after_onset = row["emission_after_onset_s"]
        assert after_onset["median"] <= after_onset["max"]
        assert after_onset["median"] >= 0
