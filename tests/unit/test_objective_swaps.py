"""Swapping the objective's terms, the mixup and the normalisation from the
YAML or the command line (crnn_condmix, tiny model, one training step)."""

import math
import sys
from pathlib import Path

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(DATA))

import record_condmix_terms as record  # noqa: E402

TINY = [f"--{k}={v}" for k, v in record.OVERRIDES.items()]
TINY = [a.replace(" ", "") for a in TINY]


def brain_from(argv, yaml_text=None):
    """A brain built as train.py does from a command line (a later
    ``--key=value`` replaces an earlier one for the same key)."""
    argv = list({a.split("=", 1)[0]: a for a in argv}.values())
    _, run_opts, overrides = sb.parse_arguments([str(record.RECIPE), *argv])
    text = record.RECIPE.read_text() if yaml_text is None else yaml_text
    torch.manual_seed(0)
    hparams = load_hyperpyyaml(text, overrides)
    return record.make_brain(hparams)


def one_step(brain, seed=0):
    """Loss, logged terms and predictions of one training forward."""
    torch.manual_seed(seed)
    brain.on_stage_start(sb.Stage.TRAIN)
    batch = record.make_batch(seed)
    brain.modules.eval()  # no dropout: the terms are comparable
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    terms = {k: v for k, v in brain.loss_terms.items() if k != "_n"}
    return loss, terms, predictions


def weighted_sum(brain, terms):
    weights = brain.hparams.objective.last_weights
    return sum(weights[name] * terms[name] for name in weights)


def test_default_total_is_the_weighted_sum_of_every_term():
    brain = brain_from(TINY)
    loss, terms, _ = one_step(brain)
    assert set(brain.hparams.objective.terms) == {
        "strong",
        "weak",
        "consistency",
        "pseudo_label",
        "contrastive",
    }
    assert loss.item() == pytest.approx(weighted_sum(brain, terms), rel=1e-5)
    assert terms["contrastive"] > 0 and terms["pseudo_label"] > 0


def test_command_line_drops_the_mean_teacher_term():
    brain = brain_from([*TINY, "--const_max=0"])
    loss, terms, _ = one_step(brain)
    assert terms["consistency"] == 0.0
    assert brain.hparams.objective.last_weights["consistency"] == 0.0
    assert loss.item() == pytest.approx(weighted_sum(brain, terms), rel=1e-5)


def test_yaml_without_the_mean_teacher_term():
    text = record.RECIPE.read_text()
    start = text.index("        consistency: !new:")
    end = text.index("        pseudo_label: !new:")
    brain = brain_from(TINY, text[:start] + text[end:])
    loss, terms, _ = one_step(brain)
    assert "consistency" not in terms
    assert loss.item() == pytest.approx(weighted_sum(brain, terms), rel=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_command_line_drops_or_reweights_the_contrastive_term(weight):
    base = brain_from(TINY)
    base_loss, base_terms, _ = one_step(base)
    brain = brain_from([*TINY, f"--contrastive_weight={weight}"])
    loss, terms, _ = one_step(brain)
    # Same seed, same batch: only the contrastive weight differs.
    ramp = brain.hparams.objective.last_weights["consistency"] / 2.0
    assert brain.hparams.objective.last_weights["contrastive"] == (
        pytest.approx(weight * ramp)
    )
    if weight == 0.0:
        assert terms["contrastive"] == 0.0
        # Its heads are idle: DDP leaves them unwrapped.
        assert brain.hparams.objective.idle_modules() == {"contrastive"}
    else:
        assert terms["contrastive"] == pytest.approx(base_terms["contrastive"])
    old_share = 0.1 * ramp * base_terms["contrastive"]
    new_share = weight * ramp * base_terms["contrastive"]
    assert loss.item() == pytest.approx(
        base_loss.item() - old_share + new_share, rel=1e-5
    )


def test_yaml_replaces_the_mixup_with_plain_mixup():
    # HyperPyYAML overrides merge into the YAML's objects and keep their
    # class, so a different mixup class is a YAML edit: here the
    # ConditionalMixup block becomes a plain Mixup block.
    text = record.RECIPE.read_text()
    start = text.index("mixup: !new:")
    end = text.index("\n\n", start)
    plain = (
        "mixup: !new:speechbrain_sed_condmix.augment.mixup.Mixup\n"
        "    alpha: !ref <mixup_alpha>\n"
        "    prob: 1.0"
    )
    brain = brain_from(TINY, text[:start] + plain + text[end:])
    assert type(brain.hparams.mixup).__name__ == "Mixup"
    loss, terms, predictions = one_step(brain)
    info = predictions["mix"]
    # Plain Mixup (prob 1): every row mixed, compositions only, one
    # coefficient per subset.
    assert bool(info.mixed.all()) and bool(info.composition.all())
    for group in (range(0, 4), range(4, 8), range(8, 12)):
        assert len({float(info.lam[i]) for i in group}) == 1
    assert terms["pseudo_label_perturbation"] == 0.0
    assert terms["consistency"] == 0.0  # no unmixed row left for MT
    assert math.isfinite(loss.item())


def test_command_line_switches_the_normalisation():
    rows_brain = brain_from([*TINY, "--loss_normalisation=rows"])
    batch_brain = brain_from([*TINY, "--loss_normalisation=batch"])
    _, rows_terms, predictions = one_step(rows_brain)
    _, batch_terms, _ = one_step(batch_brain)
    share = float(predictions["mix"].mixed.float().mean())
    assert 0 < share < 1  # mixup_prob 0.5: both kinds of rows
    assert batch_terms["pseudo_label"] == pytest.approx(
        rows_terms["pseudo_label"] * share, rel=1e-5
    )
    assert batch_terms["consistency"] == pytest.approx(
        rows_terms["consistency"] * (1 - share), rel=1e-5
    )
    with pytest.raises(ValueError, match="normalisation must be one of"):
        brain_from([*TINY, "--loss_normalisation=frames"])


def test_contradictory_yaml_stops_at_start_up():
    with pytest.raises(ValueError, match="'pseudo_label' needs teacher_input"):
        brain_from([*TINY, "--teacher_input=mixed"])
    # Without the teacher-target terms the same switch is a valid MT setup.
    brain = brain_from(
        [
            *TINY,
            "--teacher_input=mixed",
            "--pseudo_label_weight=0",
            "--contrastive_weight=0",
        ]
    )
    assert brain.hparams.teacher_input == "mixed"
