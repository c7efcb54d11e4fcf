"""Conditional mixup keeps its own rule for every strength option.

A mixed row is a perturbation exactly when its partner weight ``1 - lam``
is below ``1 - tau``; its labels, pseudo-labels and contrastive target are
then those of its dominant clip. These tests draw thousands of rows with
every strength option and check each row against a computation written
here, row by row, from ``lam``, ``tau`` and the partner.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import numpy as np
import pytest
import torch
from scipy import stats

from speechbrain_sed_condmix.augment.mixup import (
    ConditionalMixup,
    MixStatistics,
    mixup_statistics,
)
from speechbrain_sed_condmix.losses import EmbeddingContrastiveLoss

ROWS = 1500
OPTIONS = [
    {"perturbation": "beta"},
    {"perturbation": "beta", "perturbation_alpha": 1.0},
    {"perturbation": "beta", "perturbation_alpha": 0.05},
    {"perturbation": "uniform"},
    {"perturbation": "uniform", "max_partner_weight": 0.1},
]
TAUS = [0.5, 0.6, 0.7, 0.75, 0.9, 1.0]


def _draw(option, tau, label_mode="soft", seed=0):
    torch.manual_seed(seed)
    mix = ConditionalMixup(prob=0.8, tau=tau, label_mode=label_mode, **option)
    x = torch.randn(ROWS, 3)
    groups = [torch.arange(0, 500), torch.arange(500, ROWS)]
    (mixed_x,), info = mix([x], groups)
    return mix, x, mixed_x, info


def _expected_rows(values, info, tau, hard=False):
    """Row by row: the dominant clip's value unless a composition, i.e. a
    mixed row whose partner weight is at least 1 - tau."""
    lam = info.lam.double().numpy()
    w = 1.0 - lam  # the partner's weight
    comp = info.mixed.numpy() & (w >= 1.0 - tau)
    v = values.double().numpy()
    other = v[info.partner.numpy()]
    shape = (-1,) + (1,) * (v.ndim - 1)
    if hard:
        mixed = np.maximum(v, other)
    else:
        mixed = lam.reshape(shape) * v + w.reshape(shape) * other
    return torch.from_numpy(np.where(comp.reshape(shape), mixed, v))


@pytest.mark.parametrize("option", OPTIONS, ids=str)
@pytest.mark.parametrize("tau", TAUS)
def test_perturbation_rows_keep_the_rule(option, tau):
    _, x, mixed_x, info = _draw(option, tau)
    w = 1.0 - info.lam.double()
    assert int(info.mixed.sum()) > 1000  # enough rows to see a violation
    # A perturbation is exactly a mixed row with partner weight < 1 - tau.
    assert torch.equal(info.perturbation, info.mixed & (w < 1.0 - tau))
    assert torch.equal(info.composition, info.mixed & (w >= 1.0 - tau))
    assert not bool((info.composition & info.perturbation).any())
    assert bool((w[info.perturbation] >= 0).all())
    if tau == 1.0:
        assert not bool(info.perturbation.any())
    elif tau > 0.5:
        assert bool(info.composition.any()) and bool(info.perturbation.any())
    if option["perturbation"] == "uniform" and tau < 1.0:
        cap = min(option.get("max_partner_weight", 0.4), 1.0 - tau)
        assert float(w[info.perturbation].max()) < cap
    # The input follows the coefficients; unmixed rows are untouched.
    lam = info.lam.view(-1, 1)
    expected = torch.where(
        info.mixed.view(-1, 1), lam * x + (1 - lam) * x[info.partner], x
    )
    torch.testing.assert_close(mixed_x, expected)
    assert torch.equal(mixed_x[~info.mixed], x[~info.mixed])


@pytest.mark.parametrize("option", OPTIONS, ids=str)
@pytest.mark.parametrize("tau", [0.5, 0.75, 1.0])
def test_every_target_follows_its_mode(option, tau):
    _, _, _, info = _draw(option, tau, seed=1)
    labels = (torch.rand(ROWS, 4, 6) < 0.3).float()
    torch.testing.assert_close(
        info.mix_targets(labels).double(),
        _expected_rows(labels, info, tau),
    )
    teacher = torch.rand(ROWS, 4, 6)
    torch.testing.assert_close(
        info.mix_pseudo_labels(teacher).double(),
        _expected_rows(teacher, info, tau),
    )
    info.label_mode = "hard"
    torch.testing.assert_close(
        info.mix_targets(labels).double(),
        _expected_rows(labels, info, tau, hard=True),
    )


@pytest.mark.parametrize("option", OPTIONS[::2], ids=str)
def test_contrastive_target_follows_its_mode(option):
    tau = 0.75
    _, _, _, info = _draw(option, tau, seed=2)
    torch.manual_seed(0)
    loss = EmbeddingContrastiveLoss(5, hidden_size=8, projection_size=4)
    emb = torch.randn(ROWS, 2, 5)
    with torch.no_grad():
        q = loss.teacher_projector(emb)
    torch.testing.assert_close(
        loss.target(emb, info).double(),
        _expected_rows(q, info, tau),
        rtol=1e-5,
        atol=1e-6,
    )


def test_beta_strength_with_its_own_alpha_is_the_conditioned_beta():
    torch.manual_seed(0)
    tau, a = 0.7, 1.0
    mix = ConditionalMixup(prob=1.0, tau=tau, perturbation_alpha=a)
    _, info = mix([torch.zeros(20000, 1)], [torch.arange(20000)])
    lam = info.lam[info.perturbation].double().numpy()
    # Beta(1, 1) conditioned on lam > 0.7: U(0.7, 1).
    assert stats.kstest(lam, stats.uniform(tau, 1 - tau).cdf).pvalue > 1e-3
    # The compositions keep the mode draw's Beta(0.2, 0.2) coefficients.
    comp = info.lam[info.composition].double().numpy()
    ref = stats.beta(0.2, 0.2)
    folded_cdf = (ref.cdf(comp) - ref.cdf(1 - comp)) / (
        ref.cdf(tau) - ref.cdf(1 - tau)
    )
    assert stats.kstest(folded_cdf, "uniform").pvalue > 1e-3


def test_strength_option_does_not_change_modes_or_compositions():
    infos = []
    for option in OPTIONS:
        _, _, _, info = _draw(option, 0.75, seed=5)
        infos.append(info)
    for info in infos[1:]:
        for key in ("mixed", "composition", "perturbation", "partner"):
            assert torch.equal(getattr(info, key), getattr(infos[0], key))
        assert torch.equal(
            info.lam[info.composition], infos[0].lam[infos[0].composition]
        )


def test_uniform_strength_median_follows_its_cap():
    _, _, _, info = _draw({"perturbation": "uniform"}, 0.75, seed=3)
    w = 1 - info.lam[info.perturbation].double()
    # U(0, min(0.4, 0.25)): median 0.125.
    assert 0.11 < float(w.median()) < 0.14


def test_bad_perturbation_alpha():
    with pytest.raises(ValueError, match="perturbation_alpha"):
        ConditionalMixup(perturbation_alpha=0.0)


def test_mix_statistics_against_the_rows():
    option = {"perturbation": "uniform"}
    _, _, _, info = _draw(option, 0.75, seed=4)
    stats_ = MixStatistics()
    stats_.update(info)
    s = stats_.summary()
    w = (1 - info.lam.double()).numpy()
    comp, pert = info.composition.numpy(), info.perturbation.numpy()
    assert s["rows"] == ROWS and s["mixed"] == int(info.mixed.sum())
    assert s["composition_share"] == pytest.approx(comp.sum() / s["mixed"])
    assert s["perturbation"]["q50"] == pytest.approx(np.median(w[pert]))
    assert s["composition"]["q95"] == pytest.approx(np.quantile(w[comp], 0.95))
    assert s["perturbation"]["max"] < 0.25


def test_mixup_statistics_of_a_configuration():
    mix = ConditionalMixup(prob=0.5, tau=0.75, perturbation="uniform")
    state = torch.get_rng_state()
    s = mixup_statistics(mix, [2, 2, 4], calls=150)
    assert torch.equal(torch.get_rng_state(), state)
    assert s["rows"] == 1200
    assert 0.4 < s["mixed_share"] < 0.6
    # Folded Beta(0.2, 0.2) <= 0.75: P = 2 * (I(0.75) - 0.5).
    p = 2 * (stats.beta(0.2, 0.2).cdf(0.75) - 0.5)
    assert abs(s["composition_share"] - p) < 0.08
    assert s["perturbation"]["max"] < 0.25
    assert s == mixup_statistics(mix, [2, 2, 4], calls=150)
