"""Record crnn_condmix's loss terms and weights over 3 training steps.

The fixture ``condmix_terms_3steps.json`` beside this script was written
from the code before the objective became a YAML component (commit
3aa5cce), with::

    .venv/bin/python tests/data/record_condmix_terms.py \
        tests/data/condmix_terms_3steps.json

``tests/unit/test_objectives_behaviour.py`` runs the same 3 steps on the
current code (per-row normalisation) and compares them with the fixture.
The batch, the seed and the steps are defined here once, for both.
"""

import json
import sys
from pathlib import Path

import torch
from speechbrain.dataio.batch import PaddedBatch

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "DESED" / "SED" / "hparams" / "crnn_condmix.yaml"
SEED = 7
STEPS = 3
STEPS_PER_EPOCH = 10  # with rampup_epochs=1: a ramp over 10 optimiser steps
KINDS = ["strong"] * 4 + ["weak"] * 4 + ["unlabeled"] * 4

#: Small model, half the rows mixed: both MT rows and mixed rows exist, so
#: the per-row and whole-batch normalisations differ.
OVERRIDES = {
    "data_folder": "unused",
    "cnn_filters": [4, 8, 8, 8, 8, 8, 8],
    "rnn_hidden": 8,
    "projector_hidden": 16,
    "projection_size": 8,
    "rampup_epochs": 1,
    "mixup_prob": 0.5,
    "channels_last": False,
    # Off: the dropout masks changed with the fast dropout (bits, not
    # uniform draws), which is not what this fixture checks.
    "dropout": 0.0,
    # The recipe's defaults when the fixture was recorded; the recipe's
    # defaults changed later (the label-scarce ablation).
    "mixup_tau": 0.75,
    "contrastive_weight": 0.1,
    "mixup_perturbation": "beta",
}


def make_batch(step):
    """A deterministic batch of 12 rows (4 strong, 4 weak, 4 unlabeled)."""
    gen = torch.Generator().manual_seed(1000 + step)
    items = []
    for i, kind in enumerate(KINDS):
        items.append(
            {
                "id": f"s{step}c{i}",
                "sig": torch.randn(16000 * 10, generator=gen) * 0.1,
                "strong_labels": (
                    torch.rand(10, 156, generator=gen) > 0.8
                ).float(),
                "weak_labels": (torch.rand(10, generator=gen) > 0.7).float(),
                "is_strong": kind == "strong",
                "is_weak": kind == "weak",
                "duration": 10.0,
            }
        )
    return PaddedBatch(items)


def load_hparams(overrides):
    """The recipe's hparams with ``overrides`` (dict)."""
    from hyperpyyaml import load_hyperpyyaml

    with open(RECIPE, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def make_brain(hparams):
    """An SEDBrain on CPU from the loaded hparams (seeded)."""
    from speechbrain_sed_condmix.brain import SEDBrain

    brain = SEDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.steps_per_epoch = STEPS_PER_EPOCH
    brain.init_optimizers()
    return brain


def run_steps(brain, weights_of):
    """``STEPS`` fit_batch calls; per step the loss, terms and weights.

    ``weights_of(brain)`` reads each term's effective weight (weight times
    ramp-up) before the step, the way the code under test exposes them.
    """
    import speechbrain as sb

    torch.manual_seed(SEED)
    records = []
    for step in range(STEPS):
        brain.on_stage_start(sb.Stage.TRAIN)
        weights = weights_of(brain)
        loss = brain.fit_batch(make_batch(step))
        terms = {k: float(v) for k, v in brain.loss_terms.items() if k != "_n"}
        records.append(
            {"loss": float(loss), "terms": terms, "weights": weights}
        )
    return records


def old_weights(brain):
    """Effective weights of the code before the objective component."""
    h = brain.hparams
    ramp = brain.rampup_factor()
    return {
        "strong": 1.0,
        "weak": float(h.weak_loss_weight)
        if hasattr(h, "weak_loss_weight")
        else 1.0,
        "consistency": h.const_max * ramp,
        "pseudo_label": h.pseudo_label_weight * ramp,
        "contrastive": h.contrastive_weight * ramp,
    }


def main(out):
    """Record from the code of this checkout into ``out`` (JSON)."""
    torch.manual_seed(SEED)
    brain = make_brain(load_hparams(OVERRIDES))
    records = run_steps(brain, old_weights)
    Path(out).write_text(
        json.dumps(
            {
                "recipe": "recipes/DESED/SED/hparams/crnn_condmix.yaml",
                "overrides": OVERRIDES,
                "seed": SEED,
                "steps_per_epoch": STEPS_PER_EPOCH,
                "normalisation": "per-row (the code of commit 3aa5cce)",
                "steps": records,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
