"""Determinism: the same seed gives the same model and metrics on CPU.

Two runs of the tiny crnn_condmix recipe (conditional mixup, dropout,
contrastive heads: every random draw of the method) on tiny mini-DESED
(generated audio, not DESED), one epoch each, same seed.
"""

import json

import pytest
import torch
from tiny_runs import latest_checkpoint, recipe_command, run

from speechbrain_sed_condmix.distributed import state_fingerprint

# Two recipe runs: slow.
pytestmark = pytest.mark.slow


def test_same_seed_same_weights_and_metrics(mini_desed_tiny, tmp_path):
    prep = tmp_path / "p"
    results = []
    for name in ("first", "second"):
        out = tmp_path / name
        run(
            recipe_command(
                "crnn_condmix.yaml",
                mini_desed_tiny,
                prep,
                out,
                "--batch_sizes=[2,2,2]",
                "--seed=7",
            )
        )
        ckpt = latest_checkpoint(out / "save")
        weights = {
            module: state_fingerprint(
                torch.load(ckpt / f"{module}.ckpt", weights_only=True)
            )
            for module in ("student", "teacher", "contrastive")
        }
        metrics = json.loads((out / "metrics.json").read_text())
        log = (out / "train_log.txt").read_text()
        results.append((weights, metrics, log))
    assert results[0] == results[1]
