"""A recipe run with SpeechBrain's ``--debug`` run option: a few batches of
a few epochs, then the evaluation and its report (tiny mini-DESED, generated
audio, not DESED)."""

import json
import math
import re

import pytest
from conftest import recipe_rows, run_recipe

# A recipe subprocess: slow.
pytestmark = pytest.mark.slow


def test_debug_run_trains_a_few_batches_then_evaluates(
    mini_desed_tiny, tmp_path
):
    row = next(
        r for r in recipe_rows() if r["Hparam_file"].endswith("/crnn_mt.yaml")
    )
    # The row's flags without --number_of_epochs: --debug sets the epochs.
    flags = re.sub(r"--number_of_epochs=\S+", "", row["test_debug_flags"])
    out, _ = run_recipe(row, mini_desed_tiny, tmp_path, f"{flags} --debug")
    log = (out / "train_log.txt").read_text()
    # SpeechBrain's debug defaults: 2 epochs of 2 batches each.
    epochs = re.findall(r"^epoch: (\d+)", log, flags=re.MULTILINE)
    assert epochs == ["1", "2"]
    assert "Epoch loaded: 2" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["loss"])
    for model in ("student", "teacher"):
        assert 0.0 <= metrics[model]["psds1"] <= 1.0
        scored = list((out / "test_scores" / model / "raw").glob("*.tsv"))
        # At most 2 test batches of eval_batch_size 8 clips.
        assert 0 < len(scored) <= 16
