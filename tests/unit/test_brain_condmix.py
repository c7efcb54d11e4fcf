"""SEDBrain with conditional mixup, pseudo-labels and the contrastive loss."""

import math

import pytest
import speechbrain as sb
import torch
from test_brain import make_batch
from test_brain import make_brain as base_brain

from speechbrain_sed_condmix.augment.mixup import ConditionalMixup
from speechbrain_sed_condmix.losses import EmbeddingContrastiveLoss

KINDS = ["strong"] * 4 + ["weak"] * 4 + ["unlabeled"] * 4
TERMS = ("pseudo_label", "contrastive")


def make_brain(
    tau=0.75, prob=1.0, pl=2.0, cl=0.5, teacher_input="clean", causal=False
):
    return base_brain(
        rampup_epochs=0,
        causal=causal,
        extra_modules={"contrastive": EmbeddingContrastiveLoss(16, 32, 8)},
        mixup=ConditionalMixup(alpha=0.2, tau=tau, prob=prob),
        mix_subsets=["strong", "weak", "unlabeled"],
        teacher_input=teacher_input,
        pseudo_label_weight=pl,
        contrastive_weight=cl,
        weak_loss_weight=0.5,
    )


def run_step(brain, seed=0):
    torch.manual_seed(seed)
    batch = make_batch(KINDS, seed=seed)
    brain.loss_terms = {}
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    terms = {k: v for k, v in brain.loss_terms.items() if k != "_n"}
    return loss, terms, predictions


def test_total_is_the_weighted_sum_of_the_logged_terms():
    brain = make_brain()
    loss, t, _ = run_step(brain)
    expected = (
        t["strong"]
        + 0.5 * t["weak"]
        + 2.0 * t["consistency"]
        + 2.0 * t["pseudo_label"]
        + 0.5 * t["contrastive"]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert all(math.isfinite(v) for v in t.values())
    assert t["pseudo_label"] > 0 and t["contrastive"] > 0


def test_mixed_rows_mix_supervised_targets_and_pseudo_labels():
    brain = make_brain(tau=1.0)
    brain.modules.eval()
    _, _, pred = run_step(brain)
    info = pred["mix"]
    assert bool(info.composition.all())  # prob 1, tau 1: all compositions
    # partners stay within subsets
    kinds = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    assert torch.equal(kinds[info.partner], kinds)
    batch = make_batch(KINDS)
    y = batch.strong_labels.data
    lam = info.lam.view(-1, 1, 1)
    manual = (lam * y + (1 - lam) * y[info.partner]).clamp(0, 1)
    assert torch.allclose(pred["strong_targets"], manual)
    # independent recomputation: the student saw the mixed linear mel, the
    # teacher the clean one
    frontend = brain.modules.frontend
    with torch.no_grad():
        mel = frontend.mel(batch.sig.data)
        lam = info.lam.view(-1, 1, 1)
        mixed = lam * mel + (1 - lam) * mel[info.partner]
        student = brain.modules.student(frontend.normalize(mixed))
        teacher = brain.modules.teacher(frontend.normalize(mel))
    assert torch.allclose(pred["student"].strong, student.strong, atol=1e-6)
    assert torch.allclose(pred["teacher"].strong, teacher.strong, atol=1e-6)
    assert not torch.allclose(mixed, mel)


@pytest.mark.parametrize(
    "overrides, zero, nonzero",
    [
        # composition only (v1 ICT): no perturbation rows
        (
            {"tau": 1.0},
            ["pseudo_label_perturbation", "contrastive_perturbation"],
            ["pseudo_label_composition", "contrastive_composition"],
        ),
        # perturbation only: no composition rows
        (
            {"tau": 0.5},
            ["pseudo_label_composition", "contrastive_composition"],
            ["pseudo_label_perturbation", "contrastive_perturbation"],
        ),
        # without the contrastive loss
        (
            {"cl": 0.0},
            ["contrastive", "contrastive_composition"],
            ["pseudo_label"],
        ),
        # no mixup at all: plain Mean Teacher
        (
            {"prob": 0.0},
            ["pseudo_label", "contrastive"],
            ["consistency"],
        ),
    ],
)
def test_ablation_overrides_switch_terms(overrides, zero, nonzero):
    _, terms, _ = run_step(make_brain(**overrides), seed=3)
    for name in zero:
        assert terms[name] == 0.0, name
    for name in nonzero:
        assert terms[name] > 0.0, name


def test_default_mix_has_both_modes_and_no_mt_rows():
    _, terms, pred = run_step(make_brain(tau=0.75), seed=3)
    info = pred["mix"]
    assert bool(info.composition.any()) and bool(info.perturbation.any())
    assert terms["consistency"] == 0.0  # prob 1: no row left unmixed


def test_gradients_reach_only_the_student_side():
    brain = make_brain()
    loss, _, _ = run_step(brain)
    loss.backward()
    student = brain.modules.student
    contrastive = brain.modules.contrastive
    assert all(p.grad is not None for p in student.parameters())
    for head in (contrastive.projector, contrastive.predictor):
        assert all(p.grad is not None for p in head.parameters())
    frozen = [
        *brain.modules.teacher.parameters(),
        *contrastive.teacher_projector.parameters(),
    ]
    assert frozen and all(p.grad is None for p in frozen)
    assert not any(p.requires_grad for p in frozen)


def test_fit_batch_updates_the_teacher_projector():
    brain = make_brain()
    brain.steps_per_epoch = 1
    brain.init_optimizers()
    names = [g["name"] for g in brain.optimizer.param_groups]
    assert names == ["cnn", "rnn"]
    head = brain.modules.contrastive
    ids = {id(p) for g in brain.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in head.projector.parameters()} <= ids
    before = [p.clone() for p in head.teacher_projector.parameters()]
    brain.fit_batch(make_batch(KINDS))
    after = list(head.teacher_projector.parameters())
    student = list(head.projector.parameters())
    # step 1: alpha = 1/2, halfway to the updated projector
    for b, a, s in zip(before, after, student):
        assert torch.allclose(a, 0.5 * b + 0.5 * s.detach(), atol=1e-6)


@pytest.mark.parametrize(
    "weights, term",
    [({"cl": 0.0}, "pseudo_label"), ({"pl": 0.0}, "contrastive")],
)
def test_teacher_targets_need_a_clean_teacher_input_at_start_up(weights, term):
    # Stops when the Brain is built, before any batch.
    with pytest.raises(
        ValueError, match=f"'{term}' needs teacher_input: clean"
    ):
        make_brain(teacher_input="mixed", **weights)
    # Without those terms, a teacher that sees the mixed input is fine.
    make_brain(teacher_input="mixed", pl=0.0, cl=0.0)


def test_every_term_trains_the_causal_crnn():
    """causal: True changes the network, not the method: mixup, Mean
    Teacher, pseudo-labels and the contrastive tap all reach the student."""
    brain = make_brain(causal=True)
    assert brain.modules.student.causal
    loss, t, predictions = run_step(brain)
    assert set(t) >= {"strong", "weak", "consistency", *TERMS}
    assert all(math.isfinite(v) for v in t.values())
    assert t["strong"] > 0 and t["pseudo_label"] > 0 and t["contrastive"] > 0
    brain.steps_per_epoch = 1
    brain.init_optimizers()
    gru = brain.modules.student.rnn.rnn
    assert not gru.bidirectional
    before = gru.weight_hh_l0.clone()
    brain.fit_batch(make_batch(KINDS))
    assert not torch.equal(before, gru.weight_hh_l0)
