"""The ATST-Frame pretraining recipe end to end, on the unlabeled clips of
the tiny mini-DESED (generated audio, not DESED): its ``--debug`` run, the
checkpoint it writes, and an exact resume."""

import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import recipe_rows, run_recipe
from tiny_runs import REPO, latest_checkpoint

from speechbrain_sed_condmix.distributed import state_fingerprint
from speechbrain_sed_condmix.lobes.atst import ATSTFrame, load_atst_checkpoint
from speechbrain_sed_condmix.lobes.heads import ATSTFrameHead

# Recipe subprocesses: slow.
pytestmark = pytest.mark.slow

ROW = next(r for r in recipe_rows() if "/SSL/" in r["Script_file"])
#: 24 unlabeled clips in batches of 4 (drop_last).
STEPS_PER_EPOCH = 6


def flags(*extra):
    """The row's flags, ``extra`` replacing those of the same name."""
    given = {flag.split("=")[0] for flag in extra}
    kept = [
        f
        for f in shlex.split(ROW["test_debug_flags"])
        if f.split("=")[0] not in given
    ]
    return " ".join([*kept, *extra])


def test_debug_run_writes_a_checkpoint_that_stage1_reads(
    mini_desed_tiny, tmp_path
):
    out, _ = run_recipe(
        ROW,
        mini_desed_tiny,
        tmp_path,
        re.sub(r"--number_of_epochs=\S+", "", flags()) + " --debug",
    )
    files = re.search(r"file_exists=\[(.*?)\]", ROW["test_debug_checks"])
    for name in files.group(1).split(","):
        assert (out / name).is_file(), name
    log = (out / "train_log.txt").read_text()
    # SpeechBrain's debug defaults: 2 epochs of 2 batches each.
    assert re.findall(r"^epoch: (\d+), steps: (\d+)", log, re.M) == [
        ("1", "2"),
        ("2", "4"),
    ]
    losses = [float(v) for v in re.findall(r"train loss: ([0-9.e+-]+)", log)]
    assert all(0.0 < v < 4.0 for v in losses)
    encoder = ATSTFrame(embed_dim=64, depth=2, num_heads=4)
    heads = {
        "student_projector": ATSTFrameHead(64, 32, 16),  # the row's sizes
        "student_predictor": ATSTFrameHead(16, 32, 16),
        "teacher_projector": ATSTFrameHead(64, 32, 16),
    }
    path = out / "atst_frame_pretrain.ckpt"
    load_atst_checkpoint(encoder, path, heads=heads)
    saved = torch.load(path, weights_only=True)
    assert saved["hyper_parameters"]["optimizer_steps"] == 4
    weights = saved["state_dict"]
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, weights[f"model.teacher.encoder.{name}"])
    for name, value in heads["student_predictor"].state_dict().items():
        assert torch.equal(value, weights[f"model.student.predictor.{name}"])
    # The student moved away from the teacher it started as.
    assert not torch.equal(
        weights["model.student.encoder.pos_embed"],
        weights["model.teacher.encoder.pos_embed"],
    )
    # The stage-1 recipe (its row: the same encoder size) reads the file
    # with --atst_ckpt as it is; its frozen ATST is the pretrained teacher.
    stage1 = next(
        r for r in recipe_rows() if r["Hparam_file"].endswith("stage1.yaml")
    )
    stage1_flags = stage1["test_debug_flags"].replace(
        "--atst_random_init=True", f"--atst_ckpt={path}"
    )
    # One epoch (the row's), as --debug writes no checkpoint to compare.
    stage1_out, _ = run_recipe(
        stage1,
        mini_desed_tiny,
        tmp_path / "stage1",
        stage1_flags + " --csebbs_tuning=False --n_event_rolls=0",
    )
    log = (stage1_out / "log.txt").read_text()
    assert f"Loaded {len(encoder.state_dict())} ATST-Frame tensors from" in log
    student = torch.load(
        latest_checkpoint(stage1_out / "save") / "student.ckpt",
        weights_only=True,
    )
    for name, value in encoder.state_dict().items():
        assert torch.equal(student[f"atst_frame.atst.{name}"], value), name


def final_state(out):
    ckpt = latest_checkpoint(out / "save")
    state = {
        name: state_fingerprint(
            torch.load(ckpt / f"{name}.ckpt", weights_only=True)
        )
        for name in ("student", "teacher")
    }
    state["bank"] = float(
        torch.load(ckpt / "mixup_bank.ckpt", weights_only=True)["bank"].sum()
    )
    state["brain"] = yaml.safe_load((ckpt / "brain.ckpt").read_text())
    log = (out / "train_log.txt").read_text().splitlines()
    state["log"] = [line for line in log if line.startswith("epoch:")]
    return state


def test_stopped_after_epoch_1_and_resumed_ends_identical(
    mini_desed_tiny, tmp_path
):
    whole, _ = run_recipe(ROW, mini_desed_tiny, tmp_path / "whole")
    stopped = tmp_path / "stopped"
    run_recipe(
        ROW,
        mini_desed_tiny,
        stopped,
        flags(f"--optimizer_step_limit={STEPS_PER_EPOCH}"),
    )
    out = stopped / "out"
    assert len(final_state(out)["log"]) == 1
    run_recipe(ROW, mini_desed_tiny, stopped)
    assert "Loading a checkpoint from" in (out / "log.txt").read_text()
    resumed, reference = final_state(out), final_state(whole)
    assert resumed["brain"]["optimizer_step"] == 2 * STEPS_PER_EPOCH
    assert resumed == reference


def test_two_processes_under_torchrun(mini_desed_tiny, tmp_path):
    """DDP on 2 gloo CPU processes: the 24 clips are sharded (3 steps of
    4 clips per rank), the peak LR scales with the 2 processes."""
    out = tmp_path / "out"
    data = str(mini_desed_tiny)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        ROW["Script_file"],
        ROW["Hparam_file"],
        *flags("--number_of_epochs=1")
        .replace("tests/tmp/mini_desed_tiny", data)
        .split(),
        f"--output_folder={out}",
        "--device=cpu",
        "--distributed_backend=gloo",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    assert re.findall(r"^epoch: 1, steps: (\d+)", log, re.M) == ["3"]
    saved = torch.load(out / "atst_frame_pretrain.ckpt", weights_only=True)
    teacher = torch.load(
        latest_checkpoint(out / "save") / "teacher.ckpt", weights_only=True
    )
    for name, value in teacher.items():
        if name.startswith("model.encoder."):
            key = "model.teacher.encoder." + name[len("model.encoder.") :]
            assert torch.equal(saved["state_dict"][key], value), name
