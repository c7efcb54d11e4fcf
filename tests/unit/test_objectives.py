"""SEDObjective's arithmetic on hand-made predictions."""

from types import SimpleNamespace

import pytest
import torch

from speechbrain_sed_condmix.augment.mixup import MixInfo
from speechbrain_sed_condmix.objectives import (
    EmbeddingContrastiveTerm,
    EpochRampUp,
    MeanTeacherConsistency,
    MixedPseudoLabelLoss,
    SEDObjective,
    SupervisedBCE,
)


def predictions(mixed):
    """4 rows, 2 classes, 3 frames; the teacher is 1 everywhere."""
    gen = torch.Generator().manual_seed(0)
    student = SimpleNamespace(
        strong=torch.rand(4, 2, 3, generator=gen),
        weak=torch.rand(4, 2, generator=gen),
    )
    teacher = SimpleNamespace(strong=torch.ones(4, 2, 3), weak=torch.ones(4, 2))
    mix = MixInfo.identity(4)
    mix.mixed = torch.tensor(mixed)
    mix.perturbation = mix.mixed.clone()  # lam 1: targets are T(x_i)
    return {
        "student": student,
        "teacher": teacher,
        "mix": mix,
        "teacher_input": "clean",
        "strong_targets": torch.ones(4, 2, 3),
        "weak_targets": torch.ones(4, 2),
        "is_strong": torch.tensor([True, True, False, False]),
        "is_weak": torch.tensor([False, False, True, False]),
    }


def row_mse(pred, weak_weight):
    s = ((pred["student"].strong - 1) ** 2).reshape(4, -1).mean(1)
    w = ((pred["student"].weak - 1) ** 2).mean(1)
    return (s + weak_weight * w).numpy()


@pytest.mark.parametrize("normalisation", ["batch", "rows"])
def test_unsupervised_terms_against_a_manual_computation(normalisation):
    pred = predictions([True, False, True, False])
    terms = {
        "consistency": MeanTeacherConsistency(weight=3.0, weak_weight=0.5),
        "pseudo_label": MixedPseudoLabelLoss(weight=2.0, weak_weight=0.5),
    }
    total, logged = SEDObjective(terms, normalisation)(pred, {}, train=True)
    rows = row_mse(pred, 0.5)
    unmixed, mixed = rows[[1, 3]], rows[[0, 2]]
    if normalisation == "batch":
        mt, pl = unmixed.sum() / 4, mixed.sum() / 4
    else:
        mt, pl = unmixed.mean(), mixed.mean()
    assert logged["consistency"].item() == pytest.approx(mt, rel=1e-5)
    assert logged["pseudo_label"].item() == pytest.approx(pl, rel=1e-5)
    assert total.item() == pytest.approx(3 * mt + 2 * pl, rel=1e-5)
    # The per-mode diagnostics are per-row means whatever the choice.
    assert logged["pseudo_label_perturbation"].item() == pytest.approx(
        mixed.mean(), rel=1e-5
    )
    assert logged["pseudo_label_composition"].item() == 0.0


def test_supervised_terms_are_means_over_their_labelled_rows():
    pred = predictions([False] * 4)
    terms = {
        "strong": SupervisedBCE("strong"),
        "weak": SupervisedBCE("weak", weight=0.5),
        "consistency": MeanTeacherConsistency(weight=2.0),
    }
    for normalisation in ("batch", "rows"):
        objective = SEDObjective(terms, normalisation)
        total, logged = objective(pred, {}, train=False)
        strong = -torch.log(pred["student"].strong[:2]).mean().item()
        weak = -torch.log(pred["student"].weak[2]).mean().item()
        assert logged["strong"].item() == pytest.approx(strong, rel=1e-5)
        assert logged["weak"].item() == pytest.approx(weak, rel=1e-5)
        # Outside training only the supervised terms count.
        assert "consistency" not in logged
        assert total.item() == pytest.approx(strong + 0.5 * weak, rel=1e-5)


def test_a_nan_outside_the_terms_rows_stays_out():
    pred = predictions([True, False, False, False])
    pred["student"].strong[1] = float("nan")  # an unmixed row
    objective = SEDObjective(
        {"pseudo_label": MixedPseudoLabelLoss(weight=1.0)}, "batch"
    )
    _, logged = objective(pred, {}, train=True)
    assert torch.isfinite(logged["pseudo_label"])


def test_ramp_and_zero_weight():
    ramp = EpochRampUp(epochs=1)
    term = MeanTeacherConsistency(weight=2.0, rampup=ramp)
    assert term.effective_weight(5, steps_per_epoch=10) == pytest.approx(
        2.0 * float(torch.exp(torch.tensor(-5 * 0.25)))
    )
    # A contrastive term of weight 0 does not run its module (there is
    # none here) and is logged as 0.
    objective = SEDObjective(
        {
            "consistency": term,
            "contrastive": EmbeddingContrastiveTerm(weight=0.0, rampup=ramp),
        }
    )
    assert objective.idle_modules() == {"contrastive"}
    _, logged = objective(predictions([False] * 4), {}, train=True, step=10)
    assert logged["contrastive"].item() == 0.0
    assert objective.last_weights == {"consistency": 2.0, "contrastive": 0.0}


def test_contradictions_and_unknown_settings_stop():
    with pytest.raises(ValueError, match="normalisation must be one of"):
        SEDObjective({}, "frames")
    with pytest.raises(TypeError, match="not a LossTerm"):
        SEDObjective({"x": torch.nn.MSELoss()})
    with pytest.raises(ValueError, match="strong or weak"):
        SupervisedBCE("clip")
    objective = SEDObjective({"contrastive": EmbeddingContrastiveTerm(1.0)})
    with pytest.raises(ValueError, match="not in the YAML's modules"):
        objective.check("clean", modules={})
    with pytest.raises(ValueError, match="needs teacher_input: clean"):
        objective.check("mixed", modules={"contrastive": None})
    with pytest.raises(ValueError, match="teacher_input must be one of"):
        objective.check("noisy", modules={"contrastive": None})
