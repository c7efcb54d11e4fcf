"""The objective component keeps the loss of the code before it.

``tests/data/condmix_terms_3steps.json`` holds crnn_condmix's loss terms and
effective weights over 3 training steps, recorded from the code before the
objective became a YAML component (command in
``tests/data/record_condmix_terms.py``). With the per-row normalisation the
refactored objective must give the same values; with the default whole-batch
normalisation the unsupervised terms are their row sums over the batch.
"""

import json
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(DATA))

import record_condmix_terms as record  # noqa: E402

FIXTURE = json.loads((DATA / "condmix_terms_3steps.json").read_text())


def current_weights(brain):
    """Each term's weight x ramp-up at the coming step."""
    objective = brain.hparams.objective
    return {
        name: term.effective_weight(brain.optimizer_step, brain.steps_per_epoch)
        for name, term in objective.terms.items()
    }


def run(normalisation):
    overrides = {**FIXTURE["overrides"], "loss_normalisation": normalisation}
    import torch

    torch.manual_seed(record.SEED)
    brain = record.make_brain(record.load_hparams(overrides))
    return brain, record.run_steps(brain, current_weights)


def test_per_row_normalisation_gives_the_recorded_terms_and_weights():
    _, steps = run("rows")
    assert len(steps) == len(FIXTURE["steps"]) == 3
    for got, want in zip(steps, FIXTURE["steps"]):
        assert got["terms"].keys() == want["terms"].keys()
        for name, value in want["terms"].items():
            assert got["terms"][name] == pytest.approx(value, rel=1e-4), name
        assert got["weights"] == pytest.approx(want["weights"], rel=1e-9)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    # The ramp-up is under way: weights grow from step to step.
    ramps = [s["weights"]["consistency"] for s in steps]
    assert ramps[0] < ramps[1] < ramps[2] < 2.0


def test_batch_normalisation_scales_terms_by_their_share_of_rows():
    brain, steps = run("batch")
    rows_steps = FIXTURE["steps"]
    # Step 0 runs the same weights from the same seed: the supervised terms
    # agree, and each unsupervised term is its per-row mean times the share
    # of the batch that it acts on.
    got, want = steps[0], rows_steps[0]
    for name in ("strong", "weak"):
        assert got["terms"][name] == pytest.approx(want["terms"][name], 1e-5)
    import torch

    torch.manual_seed(record.SEED)
    fresh = record.make_brain(record.load_hparams({**FIXTURE["overrides"]}))
    torch.manual_seed(record.SEED)
    import speechbrain as sb

    fresh.on_stage_start(sb.Stage.TRAIN)
    batch = record.make_batch(0)
    predictions = fresh.compute_forward(batch, sb.Stage.TRAIN)
    mixed = predictions["mix"].mixed
    share_mixed = float(mixed.float().mean())
    assert 0 < share_mixed < 1
    assert got["terms"]["pseudo_label"] == pytest.approx(
        want["terms"]["pseudo_label"] * share_mixed, rel=1e-4
    )
    assert got["terms"]["contrastive"] == pytest.approx(
        want["terms"]["contrastive"] * share_mixed, rel=1e-4
    )
    assert got["terms"]["consistency"] == pytest.approx(
        want["terms"]["consistency"] * (1 - share_mixed), rel=1e-4
    )
