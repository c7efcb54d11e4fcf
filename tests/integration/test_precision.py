"""Mixed precision: a CPU bf16 smoke run of the tiny crnn_condmix recipe.

One epoch on tiny mini-DESED (generated audio, not DESED) with
``--precision=bf16``: the networks run under bf16 autocast while the losses,
the EMA teacher and the metrics stay fp32.
"""

import json
import math
import re

import pytest
import torch
from tiny_runs import latest_checkpoint, recipe_command, run

# A recipe epoch in bf16: slow.
pytestmark = pytest.mark.slow


def test_bf16_epoch_on_cpu(mini_desed_tiny, tmp_path):
    out = tmp_path / "out"
    run(
        recipe_command(
            "crnn_condmix.yaml",
            mini_desed_tiny,
            tmp_path / "p",
            out,
            "--batch_sizes=[2,2,2]",
            "--precision=bf16",
        )
    )
    assert "Using training precision: `--precision=bf16`" in (
        (out / "log.txt").read_text()
    )
    epoch = next(
        line
        for line in (out / "train_log.txt").read_text().splitlines()
        if line.startswith("epoch: 1")
    )
    losses = dict(re.findall(r"train (\w+): ([^,\s]+)", epoch))
    assert {"loss", "strong", "consistency", "contrastive"} <= set(losses)
    assert all(math.isfinite(float(v)) for v in losses.values())
    ckpt = latest_checkpoint(out / "save")
    for name in ("student", "teacher", "contrastive"):
        state = torch.load(ckpt / f"{name}.ckpt", weights_only=True)
        floats = [v for v in state.values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float32 for v in floats)
        assert all(torch.isfinite(v).all() for v in floats)
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("student", "teacher"):
        assert 0.0 <= metrics[model]["intersection_f1"] <= 1.0
