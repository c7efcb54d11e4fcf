"""Every benchmark script runs on CPU and prints one consistent JSON object.

The settings are the smallest the scripts accept: these tests check that the
scripts work and that their figures hang together, not the speed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Benchmark scripts in subprocesses: slow.
pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script, *args, cwd):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout[-2000:]
    data = json.loads(lines[0])
    assert data["device"] == "cpu" and data["torch"]
    return data


def test_inference_rtf(tmp_path):
    data = run(
        "inference_rtf.py",
        *("--models", "crnn", "--optimize", "none", "fused"),
        *("--batch-sizes", "1", "--warmup", "0", "--repeats", "2"),
        cwd=tmp_path,
    )
    variants = {m["variant"]: m for m in data["models"]}
    assert set(variants) == {"none", "fused"}
    for model in variants.values():
        (row,) = model["results"]
        assert row["batch_size"] == 1 and row["output_frames"] == 156
        assert row["rtf_mean"] == pytest.approx(
            row["seconds_per_batch_mean"] / 10.0
        )
        assert row["rtf_min"] <= row["rtf_mean"]
        # the parts are inside the forward they profile
        assert set(row["parts_s_mean"]) >= {"cnn", "rnn"}
        assert 0 < sum(row["parts_s_mean"].values()) < 10
    # same model, same parameter count, folded or not
    assert (
        variants["none"]["student_parameters"]
        == variants["fused"]["student_parameters"]
    )


def test_train_step(tmp_path):
    data = run(
        "train_step.py",
        *("--systems", "atst_sed_tiny", "--atst-batch-sizes", "1", "1"),
        *("1", "1", "--warmup", "0", "--repeats", "1"),
        *("--layouts", "nchw", "channels_last"),
        cwd=tmp_path,
    )
    layouts = [s["layout"] for s in data["systems"]]
    assert layouts == ["nchw", "channels_last"]
    for system in data["systems"]:
        assert system["system"] == "atst_sed_tiny" and "error" not in system
        assert system["batch_total"] == 4
        assert system["samples_per_s"] == pytest.approx(
            system["batch_total"] / system["step_s_mean"]
        )
        assert 0 < system["last_loss"] < 100


def test_eval_time(tmp_path):
    data = run("eval_time.py", "--clips", "20", "--repeats", "1", cwd=tmp_path)
    assert data["settings"]["clips"] == 20
    assert data["figures"]["compute_sed_metrics"]["mean_s"] > 0


def test_data_loading(tmp_path):
    data = run(
        "data_loading.py",
        *("--workers", "0", "--epochs", "1", "--batch-size", "4"),
        cwd=tmp_path,
    )
    (row,) = data["results"]
    assert row["num_workers"] == 0
    assert row["clips_per_s"] == pytest.approx(
        row["clips"] / row["seconds"], rel=1e-6
    )


def test_checkpoint_save(tmp_path):
    data = run(
        "checkpoint_save.py", "--mib", "2", "--repeats", "1", cwd=tmp_path
    )
    sizes = data["checkpoint_bytes"]
    # About 2 MiB of weights each; the atomic one adds its manifest only.
    assert 1.5 * 2**20 < sizes["speechbrain"] < 2.5 * 2**20
    assert 0 < sizes["atomic"] - sizes["speechbrain"] < 4096
    for kind in ("speechbrain", "atomic"):
        for name in ("save_s", "recover_s"):
            assert data[f"{kind}_{name}"] == [data[f"{kind}_{name}_median"]]
            assert data[f"{kind}_{name}_median"] > 0


def test_compare_step_runs_each_checkout_as_its_recipe(tmp_path):
    repo = BENCHMARKS.parent
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_step.py")]
        + ["--checkouts", str(repo), "--config", "small", "--threads", "1"]
        + ["--rounds", "1", "--block", "2", "--warmup", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    (run,) = data["runs"]
    assert len(run["step_s"]) == 2 and 0 < run["last_loss"] < 100
    summary = data["summary"][str(repo)]
    assert summary["step_s_median"] == pytest.approx(sum(run["step_s"]) / 2)
    assert summary["speedup_vs_first"] == 1.0
    # The child configured the allocator as this checkout's train.py does,
    # keeping what the environment already held.
    if "THP_MEM_ALLOC_ENABLE" not in os.environ:
        assert summary["allocator_settings"]["THP_MEM_ALLOC_ENABLE"] == "1"
    assert data["settings"]["block"] == 2
