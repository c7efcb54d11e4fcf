"""Unit tests of SEDBrain's losses, masks, schedules and EMA update."""

import functools
import math

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.epoch_loop import EpochCounter

from speechbrain_sed_condmix import objectives
from speechbrain_sed_condmix.brain import SEDBrain
from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
from speechbrain_sed_condmix.lobes.crnn import CRNN
from speechbrain_sed_condmix.lobes.feature_cache import FeatureCache
from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
from speechbrain_sed_condmix.optim import sed_param_groups
from speechbrain_sed_condmix.schedulers import WarmupCosineLR
from speechbrain_sed_condmix.teacher import EMATeacher

OBJECTIVE_KEYS = (
    "const_max",
    "rampup_epochs",
    "pseudo_label_weight",
    "contrastive_weight",
    "weak_loss_weight",
    "weak_consistency_weight",
    "embedding_tap",
    "normalisation",
)


def make_objective(
    const_max=2.0,
    rampup_epochs=2,
    pseudo_label_weight=0.0,
    contrastive_weight=0.0,
    weak_loss_weight=1.0,
    weak_consistency_weight=1.0,
    embedding_tap="embeddings",
    normalisation="batch",
):
    """The recipes' objective, with every term (unused ones weigh 0)."""
    ramp = objectives.EpochRampUp(rampup_epochs)
    return objectives.SEDObjective(
        {
            "strong": objectives.SupervisedBCE("strong"),
            "weak": objectives.SupervisedBCE("weak", weak_loss_weight),
            "consistency": objectives.MeanTeacherConsistency(
                const_max, ramp, weak_consistency_weight
            ),
            "pseudo_label": objectives.MixedPseudoLabelLoss(
                pseudo_label_weight, ramp, weak_consistency_weight
            ),
            "contrastive": objectives.EmbeddingContrastiveTerm(
                contrastive_weight, ramp, embedding_tap
            ),
        },
        normalisation=normalisation,
    )


def brain_hparams(encoder, **extra):
    """Every hparam SEDBrain reads; objective keys build ``objective``."""
    objective_kwargs = {k: extra.pop(k) for k in OBJECTIVE_KEYS if k in extra}
    hparams = {
        "encoder": encoder,
        "objective": make_objective(**objective_kwargs),
        "lr_schedule": WarmupCosineLR(objective_kwargs.get("rampup_epochs", 2)),
        "param_groups": functools.partial(sed_param_groups, lr=0.001),
        "teacher_input": "mixed",
        "mixup": None,
        "mix_subsets": ["strong", "weak"],
        "mix_inputs": None,
        "input_augment": None,
        "feature_cache": FeatureCache(None),
        "channels_last": False,
        "max_bad_audio": 0,
        "valid_every_n_epochs": 1,
        "selection_key": "student_obj",
        "median_filter": 7,
        "score_padded_tail": False,
        "csebbs_tuning": False,
        "n_event_rolls": 0,
        "valid_ground_truth": None,
        "valid_durations": None,
        "test_ground_truth": None,
        "test_durations": None,
        "output_folder": None,
        "train_logger": None,
        "epoch_counter": EpochCounter(1),
    }
    hparams.update(extra)
    return hparams


def make_brain(
    tmp_path=None,
    const_max=2.0,
    rampup_epochs=2,
    extra_modules=None,
    causal=False,
    **extra,
):
    """A tiny CRNN SEDBrain; ``extra`` hparams and modules are added."""
    torch.manual_seed(0)
    student = CRNN(n_filters=[4, 4, 4, 4, 4, 4, 4], rnn_hidden=8, causal=causal)
    modules = {
        "frontend": CNNMelFrontEnd(scaling="fixed" if causal else "clip"),
        "student": student,
        "teacher": EMATeacher(student),
        **(extra_modules or {}),
    }
    hparams = brain_hparams(
        FrameLabelEncoder(DESED_CLASSES),
        const_max=const_max,
        rampup_epochs=rampup_epochs,
        **extra,
    )
    brain = SEDBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.Adam(params, 0.001),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.on_stage_start(sb.Stage.TRAIN)
    return brain


def make_batch(kinds, seed=0):
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i, kind in enumerate(kinds):
        items.append(
            {
                "id": f"c{i}",
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


def losses_for(brain, batch):
    brain.loss_terms = {}
    with torch.no_grad():
        predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
        brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    return dict(brain.loss_terms)


def test_supervised_losses_are_masked_by_subset(tmp_path):
    brain = make_brain(tmp_path)
    brain.modules.eval()  # deterministic forward (no dropout)
    kinds = ["strong", "strong", "weak", "weak", "unlabeled"]
    base = losses_for(brain, make_batch(kinds))
    # labels of rows of another kind must not matter...
    batch = make_batch(kinds)
    batch.strong_labels.data[2:] = 1 - batch.strong_labels.data[2:]
    batch.weak_labels.data[[0, 1, 4]] = 1 - batch.weak_labels.data[[0, 1, 4]]
    assert losses_for(brain, batch) == pytest.approx(base)
    # ...while those of the right kind do
    batch = make_batch(kinds)
    batch.strong_labels.data[0] = 1 - batch.strong_labels.data[0]
    changed = losses_for(brain, batch)
    assert changed["strong"] != pytest.approx(base["strong"])
    assert changed["weak"] == pytest.approx(base["weak"])
    batch = make_batch(kinds)
    batch.weak_labels.data[3] = 1 - batch.weak_labels.data[3]
    changed = losses_for(brain, batch)
    assert changed["weak"] != pytest.approx(base["weak"])
    assert changed["strong"] == pytest.approx(base["strong"])


def test_strong_loss_equals_bce_on_strong_rows(tmp_path):
    brain = make_brain(tmp_path)
    brain.modules.eval()
    batch = make_batch(["strong", "weak", "strong"])
    with torch.no_grad():
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
        brain.loss_terms = {}
        brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    p = out["student"].strong[[0, 2]].clamp(1e-7, 1 - 1e-7)
    y = batch.strong_labels.data[[0, 2]]
    manual = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert brain.loss_terms["strong"] == pytest.approx(manual.item(), 1e-5)


def test_rampup_of_weight_and_lr(tmp_path):
    brain = make_brain(tmp_path, const_max=2.0, rampup_epochs=2)
    brain.steps_per_epoch = 5  # ramp over 10 optimiser steps
    brain.init_optimizers()
    term = brain.hparams.objective.terms["consistency"]
    assert term.effective_weight(0, 5) == pytest.approx(2 * math.exp(-5))
    assert term.effective_weight(5, 5) == pytest.approx(2 * math.exp(-1.25))
    assert term.effective_weight(10, 5) == 2.0
    brain.optimizer_step = 4  # the coming step is the 5th
    brain.on_fit_batch_start(None, True)
    lr = brain.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(0.001 * math.exp(-5 * (1 - 0.5) ** 2))
    # The Brain's loss uses the ramped weight of the current step.
    brain.optimizer_step = 5
    batch = make_batch(["strong", "weak", "unlabeled"])
    brain.modules.eval()
    with torch.no_grad():
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
        brain.loss_terms = {}
        loss = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    t = brain.loss_terms
    expected = t["strong"] + t["weak"] + 2 * math.exp(-1.25) * t["consistency"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_fit_batch_updates_teacher_by_ema(tmp_path):
    brain = make_brain(tmp_path)
    brain.steps_per_epoch = 1
    brain.init_optimizers()
    teacher = brain.modules.teacher.model
    before = [p.detach().clone() for p in teacher.parameters()]
    brain.fit_batch(make_batch(["strong", "weak", "unlabeled"]))
    assert brain.optimizer_step == 1
    student = list(brain.modules.student.parameters())
    # alpha = 1 - 1/2 at step 1: the teacher lands halfway to the student
    for t, b, s in zip(teacher.parameters(), before, student):
        assert torch.allclose(t, 0.5 * b + 0.5 * s.detach(), atol=1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_channels_last_training_matches_the_default_layout():
    """``channels_last: True`` changes the layout, not the computation."""
    losses, weights = {}, {}
    for layout in (False, True):
        brain = make_brain(channels_last=layout)
        brain.steps_per_epoch = 1
        brain.init_optimizers()
        conv = brain.modules.student.cnn.cnn.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) is layout
        losses[layout] = float(
            brain.fit_batch(make_batch(["strong", "weak", "unlabeled"]))
        )
        teacher = brain.modules.teacher.model.cnn.cnn.conv1.weight
        weights[layout] = teacher.detach().contiguous()
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    torch.testing.assert_close(weights[True], weights[False], atol=1e-6, rtol=0)
