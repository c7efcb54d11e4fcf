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
