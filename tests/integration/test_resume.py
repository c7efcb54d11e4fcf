"""Resume: a stopped or killed tiny crnn_mt run, run again with the same
command, ends exactly where an uninterrupted run ends.

Every run trains 2 epochs of 7 batches on tiny mini-DESED (generated audio,
not DESED) on CPU. The checkpoints carry the student, the teacher, the
optimiser, the step counters behind the LR and ramp-up schedules, the
epoch (which seeds the sampler), the random-generator states and the
best-metric metadata, so the resumed runs match the uninterrupted one bit
for bit.
"""

import json
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml
from tiny_runs import (
    ENV,
    REPO,
    STEPS_PER_EPOCH,
    latest_checkpoint,
    recipe_command,
    run,
)

from speechbrain_sed_condmix.distributed import state_fingerprint
from speechbrain_sed_condmix.preemption import PREEMPTED_EXIT_STATUS

# Interrupted and resumed recipe runs: slow.
pytestmark = pytest.mark.slow

EPOCHS = "--number_of_epochs=2"


def final_state(out):
    """Fingerprints of the last checkpoint, its counters, the metrics."""
    ckpt = latest_checkpoint(out / "save")
    state = {
        name: state_fingerprint(
            torch.load(ckpt / f"{name}.ckpt", weights_only=True)
        )
        for name in ("student", "teacher")
    }
    optimizer = torch.load(ckpt / "optimizer.ckpt", weights_only=True)
    state["optimizer"] = state_fingerprint(
        {
            f"{k}.{name}": v
            for k, slot in optimizer["state"].items()
            for name, v in slot.items()
        }
    )
    state["brain"] = yaml.safe_load((ckpt / "brain.ckpt").read_text())
    state["metrics"] = json.loads((out / "metrics.json").read_text())
    return state


def epoch_lines(out):
    log = (out / "train_log.txt").read_text().splitlines()
    return [line for line in log if line.startswith("epoch:")]


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    """One data preparation for the module's runs (the metrics name it)."""
    return tmp_path_factory.mktemp("prep")


@pytest.fixture(scope="module")
def uninterrupted(mini_desed_tiny, prep, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    run(recipe_command("crnn_mt.yaml", mini_desed_tiny, prep, out, EPOCHS))
    return out


def test_stop_after_epoch_1_and_resume(
    uninterrupted, mini_desed_tiny, prep, tmp_path
):
    out = tmp_path / "out"
    cmd = recipe_command("crnn_mt.yaml", mini_desed_tiny, prep, out, EPOCHS)
    # SpeechBrain's optimizer_step_limit stops the run after epoch 1.
    run([*cmd, f"--optimizer_step_limit={STEPS_PER_EPOCH}"])
    assert len(epoch_lines(out)) == 1
    run(cmd)
    log = (out / "log.txt").read_text()
    assert re.search(r"Loading a checkpoint from .*CKPT\+", log)
    resumed, reference = final_state(out), final_state(uninterrupted)
    assert resumed["brain"]["optimizer_step"] == 2 * STEPS_PER_EPOCH
    assert resumed == reference
    assert epoch_lines(out) == epoch_lines(uninterrupted)


def test_killed_mid_epoch_resumes_from_its_checkpoint(
    uninterrupted, mini_desed_tiny, prep, tmp_path
):
    out = tmp_path / "out"
    cmd = recipe_command(
        "crnn_mt.yaml",
        mini_desed_tiny,
        prep,
        out,
        EPOCHS,
        "--ckpt_interval_minutes=0",
        "--ckpt_interval_steps=2",
    )
    cmd = [part for part in cmd if part]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = out / "log.txt"
    try:
        # Logged once every file of the checkpoint is written.
        deadline = time.monotonic() + 300
        while not (log.is_file() and "Saved an intra-epoch" in log.read_text()):
            assert proc.poll() is None, "the run ended before a checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = log.read_text()
    assert "Saved an end-of-epoch" not in before  # killed inside epoch 1
    run(cmd)
    after = log.read_text()[len(before) :]
    resumed = re.search(r"Resuming epoch 1 after batch (\d+)", after)
    assert resumed, after[-3000:]
    assert 2 <= int(resumed.group(1)) < STEPS_PER_EPOCH
    # It went on from that batch rather than redoing the epoch: the step
    # count, the weights and the metrics are the uninterrupted run's.
    state, reference = final_state(out), final_state(uninterrupted)
    assert state["brain"]["optimizer_step"] == 2 * STEPS_PER_EPOCH
    assert state == reference


# ---------------------------------------------------------------------------
# Pre-emption (SIGTERM) and a damaged newest checkpoint


def start_and_signal(cmd, log, when, sig=signal.SIGTERM):
    """Start ``cmd``; send ``sig`` once ``when`` is in ``log``; wait.

    Returns the finished process (``returncode``, ``stderr`` text).
    """
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and when in log.read_text()):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.stderr_text = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
        proc.wait()
    return proc


def retarget(cmd, source, out):
    """``cmd`` with its output folder moved from ``source`` to ``out``."""
    old = f"--output_folder={source}"
    return [f"--output_folder={out}" if part == old else part for part in cmd]


@pytest.fixture(scope="module")
def preempted(mini_desed_tiny, prep, tmp_path_factory):
    """A run sent SIGTERM in epoch 2 (an intra-epoch checkpoint after
    every batch lets the test see where it is)."""
    out = tmp_path_factory.mktemp("preempted") / "out"
    flags = ("--ckpt_interval_minutes=0", "--ckpt_interval_steps=1")
    cmd = recipe_command(
        "crnn_mt.yaml", mini_desed_tiny, prep, out, EPOCHS, *flags
    )
    proc = start_and_signal(
        [part for part in cmd if part],
        out / "log.txt",
        "Saved an intra-epoch checkpoint: epoch 2, batch 1",
    )
    return out, cmd, proc


def test_sigterm_checkpoints_exits_75_and_resumes_exactly(
    preempted, uninterrupted, tmp_path
):
    source, cmd, proc = preempted
    assert proc.returncode == PREEMPTED_EXIT_STATUS, proc.stderr_text[-3000:]
    log = (source / "log.txt").read_text()
    stopped = re.search(
        r"Pre-empted \(SIGTERM\): stopped after optimiser step (\d+) "
        r"\(epoch 2, batch (\d+)\), with an intra-epoch checkpoint",
        log,
    )
    assert stopped, log[-3000:]
    step, batch = int(stopped.group(1)), int(stopped.group(2))
    assert 2 <= batch < STEPS_PER_EPOCH
    assert step == STEPS_PER_EPOCH + batch
    ckpt = latest_checkpoint(source / "save")
    meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text())
    assert meta["end-of-epoch"] is False
    assert yaml.safe_load((ckpt / "brain.ckpt").read_text())["step"] == batch
    # The same command resumes from it and ends as the uninterrupted run.
    out = tmp_path / "out"
    shutil.copytree(source, out)
    run(retarget(cmd, source, out))
    after = (out / "log.txt").read_text()[len(log) :]
    assert f"Resuming epoch 2 after batch {batch}" in after
    assert final_state(out) == final_state(uninterrupted)


def test_truncated_newest_checkpoint_falls_back_and_ends_identical(
    preempted, uninterrupted, tmp_path
):
    source, cmd, proc = preempted
    assert proc.returncode == PREEMPTED_EXIT_STATUS
    out = tmp_path / "out"
    shutil.copytree(source, out)
    before = (out / "log.txt").read_text()
    # What a kill during a plain save leaves: the newest checkpoint's
    # student.ckpt cut short.
    newest = latest_checkpoint(out / "save")
    student = newest / "student.ckpt"
    size = student.stat().st_size
    stopped_at = yaml.safe_load((newest / "brain.ckpt").read_text())["step"]
    student.write_bytes(student.read_bytes()[: size // 2])
    run(retarget(cmd, source, out))
    after = (out / "log.txt").read_text()[len(before) :]
    assert (
        f"Skipping damaged checkpoint {newest}: student.ckpt: "
        f"{size // 2} bytes, {size} expected"
    ) in after
    # It went back to the checkpoint before (the two newest are kept).
    loaded = re.search(r"Loading a checkpoint from (\S+)", after).group(1)
    assert loaded != str(newest)
    resumed = re.search(r"Resuming epoch 2 after batch (\d+)", after)
    assert resumed is None or int(resumed.group(1)) < stopped_at
    assert final_state(out) == final_state(uninterrupted)
