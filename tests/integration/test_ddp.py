"""DDP: the tiny crnn_mt recipe under ``torchrun`` with 2 CPU processes.

Two processes with the gloo backend train one epoch on tiny mini-DESED
(generated audio, not DESED). ``batch_sizes`` is per process, so each rank
takes ``batch_sizes[i]`` clips of subset ``i`` per batch from its own shard.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import recipe_rows
from tiny_runs import latest_checkpoint

from speechbrain_sed_condmix.distributed import state_fingerprint
from speechbrain_sed_condmix.metrics import compute_sed_metrics
from speechbrain_sed_condmix.preemption import PREEMPTED_EXIT_STATUS

# torchrun with two processes: slow.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BATCH_SIZES = [2, 2, 4]  # per rank


def ddp_command(data, out, prep, *extra):
    """The tiny crnn_mt recipe under ``torchrun``, 2 gloo CPU processes."""
    row = next(
        r for r in recipe_rows() if r["Hparam_file"].endswith("/crnn_mt.yaml")
    )
    flags = (
        row["test_debug_flags"]
        .replace("tests/tmp/mini_desed_tiny_prep", str(prep))
        .replace("tests/tmp/mini_desed_tiny", str(data))
        .replace("--batch_sizes=[4,4,8]", "")
        .split()
    )
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        row["Script_file"],
        row["Hparam_file"],
        *flags,
        f"--batch_sizes=[{','.join(map(str, BATCH_SIZES))}]",
        f"--output_folder={out}",
        "--device=cpu",
        "--distributed_backend=gloo",
        *extra,
    ]


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ddp_run(mini_desed_tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp")
    out, prep = work / "out", work / "p"
    cmd = ddp_command(mini_desed_tiny, out, prep, "--dashboard=tensorboard")
    result = subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, prep


def test_ranks_train_on_disjoint_shards(ddp_run):
    out, prep = ddp_run
    check = json.loads((out / "ddp_train_check.json").read_text())
    assert check["world_size"] == 2
    rank0, rank1 = (set(c) for c in check["train_clips"])
    assert not rank0 & rank1
    # Per-rank batch counts: each rank holds len(subset) // 2 clips of each
    # subset, and the subset that runs out first ends the epoch.
    sizes = [
        len(json.loads((prep / f"{name}.json").read_text()))
        for name in ("synth_train", "weak_train", "unlabeled")
    ]
    batches = min((n // 2) // b for n, b in zip(sizes, BATCH_SIZES))
    for clips in check["train_clips"]:
        assert len(clips) == len(set(clips)) == batches * sum(BATCH_SIZES)


def test_only_rank_0_logs(ddp_run):
    out, _ = ddp_run
    # One TensorBoard writer, one line per epoch and one test line.
    assert len(list((out / "dashboard").glob("events.out.tfevents.*"))) == 1
    lines = (out / "train_log.txt").read_text().splitlines()
    assert [line.split(" - ")[0] for line in lines] == [
        lines[0].split(" - ")[0],
        "Epoch loaded: 1",
    ]
    assert lines[0].startswith("epoch: 1, ")


def test_teachers_are_identical_and_saved(ddp_run):
    out, _ = ddp_run
    check = json.loads((out / "ddp_train_check.json").read_text())
    first, second = check["teacher_fingerprint"]
    assert first == second
    saved = torch.load(
        latest_checkpoint(out / "save") / "teacher.ckpt",
        map_location="cpu",
        weights_only=True,
    )
    assert state_fingerprint(saved) == first


def test_one_metrics_file_from_the_gathered_scores(ddp_run):
    out, prep = ddp_run
    assert sorted(out.rglob("metrics.json")) == [out / "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    gt = (prep / "validation_gt.tsv").read_text().splitlines()[1:]
    clips = {line.split("\t")[0][: -len(".wav")] for line in gt}
    for model in ("student", "teacher"):
        folder = out / "test_scores" / model / "postprocessed"
        # Each rank scored half of the test set: all clips, once, here.
        assert {p.stem for p in folder.glob("*.tsv")} == clips
        again = compute_sed_metrics(
            folder,
            prep / "validation_gt.tsv",
            prep / "validation_durations.tsv",
        )
        for key in ("psds1", "psds2", "intersection_f1", "collar_f1"):
            assert metrics[model][key] == pytest.approx(again[key], abs=1e-6)


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_step(
    ddp_run, mini_desed_tiny, tmp_path
):
    reference, prep = ddp_run
    out = tmp_path / "out"
    # An intra-epoch checkpoint after every batch (it changes nothing in
    # the training) shows in the log where the run is.
    cmd = ddp_command(
        mini_desed_tiny,
        out,
        prep,
        "--ckpt_interval_minutes=0",
        "--ckpt_interval_steps=1",
    )
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "log.txt"
    try:
        deadline = time.monotonic() + 300
        # Inside fit, before the first of the epoch's optimiser steps ends.
        while not (log.is_file() and "Going into epoch 1" in log.read_text()):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # torchrun forwards SIGTERM to both workers.
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0  # torchrun reports its own signal
    # The main process logs to log.txt, the other one to stderr.
    stops = re.findall(
        r"Pre-empted \((SIGTERM)\): stopped after optimiser step (\d+) "
        r"\(epoch 1, batch (\d+)\), with an intra-epoch checkpoint"
        r"[^;]*; exiting with status (\d+)",
        log.read_text() + stderr,
    )
    assert len(stops) == 2, stderr[-4000:]  # one line per rank
    assert stops[0][1:] == stops[1][1:]  # the same step on both ranks
    assert stops[0][3] == str(PREEMPTED_EXIT_STATUS)
    # One checkpoint, by the main process, inside epoch 1.
    ckpt = latest_checkpoint(out / "save")
    assert not list((out / "save").glob(".partial*"))
    meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text())
    brain = yaml.safe_load((ckpt / "brain.ckpt").read_text())
    assert meta["end-of-epoch"] is False
    assert brain["step"] == int(stops[0][2])
    # The same command resumes and ends as the uninterrupted run.
    result = subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Resuming epoch 1 after batch {brain['step']}" in log.read_text()
    for name in ("student", "teacher"):
        state = [
            state_fingerprint(
                torch.load(
                    latest_checkpoint(folder / "save") / f"{name}.ckpt",
                    weights_only=True,
                )
            )
            for folder in (out, reference)
        ]
        assert state[0] == state[1], name
    assert json.loads((out / "metrics.json").read_text()) == json.loads(
        (reference / "metrics.json").read_text()
    )
