"""Tests of mixup, the losses and the ramp-up schedule."""

import math

import numpy as np
import pytest
import torch

from speechbrain_sed_condmix import losses
from speechbrain_sed_condmix.augment.mixup import Mixup
from speechbrain_sed_condmix.metrics import clip_macro_f1
from speechbrain_sed_condmix.schedulers import (
    exponential_rampup,
)


def test_mixup_same_partners_for_every_tensor_and_groups_kept():
    torch.manual_seed(1)
    mix = Mixup(alpha=0.2, prob=1.0)
    n = 8
    # Row i of x is one-hot i: a mixed row reveals its partner and lambda.
    x = torch.eye(n)
    feats = torch.arange(n, dtype=torch.float).view(n, 1) * 10
    y = torch.eye(n)[:, :4].clone()
    groups = [torch.arange(0, 3), torch.arange(3, 6)]
    (mx, mf), info = mix([x, feats], groups)
    my = info.mix_targets(y)
    for row in range(n):
        weights = mx[row]
        if row >= 6:  # outside every group: untouched
            assert torch.equal(weights, x[row])
            assert torch.equal(my[row], y[row])
            continue
        group = groups[0] if row < 3 else groups[1]
        support = torch.nonzero(weights).flatten().tolist()
        assert set(support) <= set(group.tolist())
        # the second tensor and the labels follow the very same weights
        assert torch.allclose(mf[row], weights @ feats)
        assert torch.allclose(my[row], (weights @ y).clamp(0, 1))
    assert not torch.equal(mx[:6], x[:6])
    # baseline special case: one lambda per group, composition only
    assert info.lam[:3].unique().numel() == 1
    assert info.lam[3:6].unique().numel() == 1
    assert torch.equal(info.composition, info.mixed)
    assert not bool(info.perturbation.any())


def test_mixup_prob_zero_and_hard_labels():
    x = torch.randn(4, 3)
    y = torch.eye(4)
    (mx,), info = Mixup(prob=0.0)([x], [torch.arange(4)])
    assert torch.equal(mx, x) and torch.equal(info.mix_targets(y), y)
    torch.manual_seed(0)
    (mx,), info = Mixup(prob=1.0, label_mode="hard")(
        [torch.eye(4)], [torch.arange(4)]
    )
    my = info.mix_targets(y)
    for row in range(4):
        partner = torch.nonzero(mx[row]).flatten().tolist()
        expected = torch.zeros(4)
        expected[partner] = 1.0
        expected[row] = 1.0
        assert torch.equal(my[row], expected)
        assert int(info.partner[row]) in partner + [row]
    with pytest.raises(ValueError):
        Mixup(label_mode="other")


def test_masked_bce_matches_manual_and_empty_mask():
    p = torch.tensor([[0.9, 0.3], [0.2, 0.6], [0.5, 0.5]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([True, False, True])
    manual = -np.mean(
        [
            math.log(0.9),
            math.log(0.7),
            math.log(0.5),
            math.log(0.5),
        ]
    )
    assert losses.masked_bce(p, y, mask).item() == pytest.approx(manual)
    empty = losses.masked_bce(p, y, torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()  # still part of the graph
    assert torch.equal(p.grad, torch.zeros_like(p))


def test_rowwise_mse_detaches_teacher():
    s = torch.tensor([[0.2, 0.8], [1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0], [0.0, 0.0]], requires_grad=True)
    rows = losses.rowwise_mse(s, t)
    assert rows.tolist() == pytest.approx([(0.04 + 0.04) / 2, 0.5])
    losses.masked_mean(rows, torch.tensor([True, False])).backward()
    assert t.grad is None
    assert s.grad[1].abs().sum().item() == 0.0  # masked-out row
    assert s.grad[0].tolist() == pytest.approx([0.2, -0.2])


def test_exponential_rampup_values():
    assert exponential_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert exponential_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert exponential_rampup(10, 10) == 1.0
    assert exponential_rampup(99, 10) == 1.0
    assert exponential_rampup(3, 0) == 1.0


def test_clip_macro_f1_against_manual():
    scores = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.0], [0.1, 0.9, 0.0]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: tp 1 fp 1 -> 2/3; class 2: 0
    assert clip_macro_f1(scores, targets) == pytest.approx((2 / 3 * 2) / 3)
