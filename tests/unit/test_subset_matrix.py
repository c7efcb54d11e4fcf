"""SEDBrain and the sampler when a subset kind is absent from the batches.

Custom datasets may train on strong labels only, strong + unlabeled, or
weak + unlabeled. The terms of an absent kind are 0 (not NaN), the others
keep their value and gradient, and mixup still runs on the rows present.
The model here is shaped like the custom example: 3 classes, 5 s clips.
"""

import math

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from test_brain import brain_hparams

from speechbrain_sed_condmix.augment.mixup import Mixup
from speechbrain_sed_condmix.brain import SEDBrain
from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler
from speechbrain_sed_condmix.lobes.crnn import CRNN
from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
from speechbrain_sed_condmix.losses import masked_bce
from speechbrain_sed_condmix.teacher import EMATeacher

ENCODER = FrameLabelEncoder(["bark", "chime", "tap_water"], audio_duration=5.0)


def make_brain(mixup=None):
    torch.manual_seed(0)
    student = CRNN(n_class=3, n_filters=[4] * 7, rnn_hidden=8)
    brain = SEDBrain(
        modules={
            "frontend": CNNMelFrontEnd(),
            "student": student,
            "teacher": EMATeacher(student),
        },
        opt_class=lambda params: torch.optim.Adam(params, 0.001),
        hparams=brain_hparams(
            ENCODER, mixup=mixup, const_max=2.0, rampup_epochs=0
        ),
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.on_stage_start(sb.Stage.TRAIN)
    return brain


def make_batch(kinds):
    gen = torch.Generator().manual_seed(0)
    n = int(ENCODER.audio_duration * ENCODER.sample_rate)
    items = []
    for i, kind in enumerate(kinds):
        strong = torch.zeros(ENCODER.n_classes, ENCODER.n_frames)
        weak = torch.zeros(ENCODER.n_classes)
        if kind == "strong":
            strong[i % 3, 10:30] = 1.0
            weak[i % 3] = 1.0
        elif kind == "weak":
            weak[i % 3] = 1.0
        items.append(
            {
                "id": f"c{i}",
                "sig": torch.randn(n, generator=gen) * 0.1,
                "strong_labels": strong,
                "weak_labels": weak,
                "is_strong": kind == "strong",
                "is_weak": kind == "weak",
                "duration": ENCODER.audio_duration,
            }
        )
    return PaddedBatch(items)


@pytest.mark.parametrize(
    "kinds",
    [
        ["strong"] * 4,
        ["strong"] * 2 + ["unlabeled"] * 2,
        ["weak"] * 2 + ["unlabeled"] * 2,
    ],
    ids=["strong", "strong+unlabeled", "weak+unlabeled"],
)
@pytest.mark.parametrize("mixup", [None, Mixup(prob=1.0)], ids=["", "mixup"])
def test_absent_subset_kinds_give_zero_terms_not_nan(kinds, mixup):
    brain = make_brain(mixup)
    brain.modules.student.eval()  # no dropout: the check below is exact
    batch = make_batch(kinds)
    brain.loss_terms = {}
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    assert math.isfinite(float(loss.detach()))
    terms = brain.loss_terms
    has_strong, has_weak = "strong" in kinds, "weak" in kinds
    assert (terms["strong"] > 0) == has_strong
    assert (terms["weak"] > 0) == has_weak
    assert math.isfinite(terms["consistency"])
    if mixup is None:
        # the strong term is the BCE of the strong rows alone
        rows = torch.tensor([k == "strong" for k in kinds])
        expected = masked_bce(
            predictions["student"].strong.detach(),
            batch.strong_labels.data,
            rows,
        )
        assert terms["strong"] == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    grads = [p.grad for p in brain.modules.student.parameters()]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("sizes", [[6], [4, 2]])
def test_sampler_with_one_or_two_sources(sizes):
    lengths = [12] * len(sizes)
    sampler = MultiSourceBatchSampler(lengths, sizes, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12 // max(sizes)
    for batch in batches:
        assert len(batch) == sum(sizes)
        # in source order: the first sizes[0] indices come from source 0
        assert all(i < 12 for i in batch[: sizes[0]])
        assert all(i >= 12 for i in batch[sizes[0] :])
