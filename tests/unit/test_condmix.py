"""Tests of conditional mixup, the contrastive loss, its heads and FW.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import math

import pytest
import torch
from scipy import stats

from speechbrain_sed_condmix.augment.mixup import (
    ConditionalMixup,
    MixInfo,
    Mixup,
)
from speechbrain_sed_condmix.augment.spec import FrequencyWarp
from speechbrain_sed_condmix.lobes.heads import MLPHead
from speechbrain_sed_condmix.losses import (
    EmbeddingContrastiveLoss,
    embedding_contrastive,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _draw(mix, batch, groups=None):
    groups = [torch.arange(batch)] if groups is None else groups
    return mix([torch.zeros(batch, 1)], groups)[1]


# --------------------------------------------------------------- lam draws
def test_folded_lam_in_upper_half_and_matches_beta():
    info = _draw(ConditionalMixup(alpha=0.2, tau=1.0, prob=1.0), 20000)
    lam = info.lam
    assert bool(info.mixed.all())
    assert float(lam.min()) >= 0.5 and float(lam.max()) <= 1.0
    # Folded Beta(0.2, 0.2): P(lam > 0.9) = 2 * P(X < 0.1).
    expected = 2 * stats.beta.cdf(0.1, 0.2, 0.2)
    assert float((lam > 0.9).float().mean()) == pytest.approx(
        expected, abs=0.02
    )
    # per_sample: every row has its own coefficient
    assert lam.unique().numel() > 15000  # (float32 ties near 1)


def test_unfolded_lam_covers_both_halves():
    mix = ConditionalMixup(alpha=0.2, tau=1.0, prob=1.0, fold=False)
    lam = _draw(mix, 2000).lam
    assert float((lam < 0.5).float().mean()) == pytest.approx(0.5, abs=0.05)
    assert bool((lam > 0).all()) and bool((lam < 1).all())


def test_per_call_mode_one_lam_per_group_and_one_coin():
    groups = [torch.arange(0, 5), torch.arange(5, 12)]
    mix = ConditionalMixup(prob=1.0, per_sample=False, tau=1.0)
    info = mix([torch.zeros(12, 2)], groups)[1]
    lam_a, lam_b = info.lam[:5].unique(), info.lam[5:].unique()
    assert lam_a.numel() == 1 and lam_b.numel() == 1 and lam_a != lam_b
    # prob 0.5: per call, all the rows or none are mixed, about half the time
    mix = ConditionalMixup(prob=0.5, per_sample=False)
    fired = []
    for _ in range(400):
        mixed = mix([torch.zeros(12, 2)], groups)[1].mixed
        assert bool(mixed.all()) or not bool(mixed.any())
        fired.append(bool(mixed.any()))
    assert sum(fired) / len(fired) == pytest.approx(0.5, abs=0.1)


def test_per_sample_coin_probability():
    info = _draw(ConditionalMixup(prob=0.3), 4000)
    assert float(info.mixed.float().mean()) == pytest.approx(0.3, abs=0.03)
    assert bool((info.lam[~info.mixed] == 1).all())
    unmixed = torch.nonzero(~info.mixed).flatten()
    assert torch.equal(info.partner[unmixed], unmixed)


# ------------------------------------------------------------------ modes
@pytest.mark.parametrize("tau", [0.5, 0.6, 0.8, 1.0])
def test_mode_masks_follow_tau(tau):
    info = _draw(ConditionalMixup(tau=tau, prob=0.7), 3000)
    assert torch.equal(info.composition, info.mixed & (info.lam <= tau))
    assert torch.equal(info.perturbation, info.mixed & (info.lam > tau))
    assert not bool((info.composition & info.perturbation).any())
    assert torch.equal(info.composition | info.perturbation, info.mixed)
    if tau == 1.0:
        assert not bool(info.perturbation.any())
    elif tau == 0.5:
        assert not bool(info.composition.any())
    else:  # both modes occur
        assert bool(info.composition.any()) and bool(info.perturbation.any())


def test_prob_zero_and_one():
    x = torch.randn(6, 3)
    groups = [torch.arange(0, 3), torch.arange(3, 5), torch.tensor([5])]
    (mx,), info = ConditionalMixup(prob=0.0)([x], groups)
    assert torch.equal(mx, x) and not info.any_mixed
    for _ in range(20):
        (mx,), info = ConditionalMixup(prob=1.0)([x], groups)
        # every row of a group of size >= 2; the lone row cannot be mixed
        assert info.mixed.tolist() == [True] * 5 + [False]
        assert bool((info.partner[:5] != torch.arange(5)).all())
        assert info.partner[5] == 5 and info.lam[5] == 1.0
        assert torch.equal(mx[5], x[5])


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ConditionalMixup(tau=0.4)
    with pytest.raises(ValueError):
        ConditionalMixup(label_mode="other")
    with pytest.raises(ValueError):  # overlapping groups
        ConditionalMixup()([torch.zeros(4, 1)], [torch.arange(3)] * 2)
    with pytest.raises(ValueError):
        ConditionalMixup()([torch.zeros(4, 1), torch.zeros(3, 1)], [])


# ------------------------------------------ same mix for every input tensor
def test_same_lam_and_partner_for_every_input():
    cnn = torch.rand(8, 4, 6)
    atst = torch.rand(8, 3, 9) * 100
    originals = (cnn.clone(), atst.clone())
    mix = ConditionalMixup(prob=0.8, tau=0.6)
    (m_cnn, m_atst), info = mix([cnn, atst], [torch.arange(8)])
    assert torch.equal(cnn, originals[0]) and torch.equal(atst, originals[1])
    assert info.any_mixed
    for b, mb in ((cnn, m_cnn), (atst, m_atst)):
        for i in range(8):
            lam, j = float(info.lam[i]), int(info.partner[i])
            expected = lam * b[i] + (1 - lam) * b[j]
            torch.testing.assert_close(mb[i], expected)


def test_one_hot_rows_reveal_the_same_weights_for_both_inputs():
    n = 10
    eye = torch.eye(n)  # a mixed row of the identity shows its weights
    feats = torch.randn(n, 2, 3)
    for mix in (ConditionalMixup(prob=1.0), Mixup(prob=1.0)):
        (m_eye, m_feats), info = mix([eye, feats], [torch.arange(n)])
        for i in range(n):
            w = m_eye[i]
            lam, j = float(info.lam[i]), int(info.partner[i])
            assert j != i and w[i].item() == pytest.approx(lam)
            # (1 - lam) may round to 0 for an extreme folded draw
            assert w[j].item() == pytest.approx(1 - lam, abs=1e-7)
            assert set(torch.nonzero(w).flatten().tolist()) <= {i, j}
            torch.testing.assert_close(
                m_feats[i], torch.einsum("n,nij->ij", w, feats)
            )


def test_partners_stay_within_groups_and_outside_rows_untouched():
    groups = [torch.arange(0, 4), torch.tensor([4, 6, 8]), torch.tensor([9])]
    outside = [5, 7, 10]
    x = torch.randn(11, 5)
    for seed in range(10):
        torch.manual_seed(seed)
        (mx,), info = ConditionalMixup(prob=0.9)([x], groups)
        for g in groups:
            members = set(g.tolist())
            for i in g.tolist():
                assert int(info.partner[i]) in members
        for i in outside + [9]:
            assert not info.mixed[i] and int(info.partner[i]) == i
            assert torch.equal(mx[i], x[i])
    # boolean masks are accepted as groups
    mask = torch.tensor([True, True, False, True])
    info = ConditionalMixup(prob=1.0)([torch.zeros(4, 1)], [mask])[1]
    assert info.mixed.tolist() == [True, True, False, True]


# ------------------------------------------------- label and pseudo-labels
def _hand_info(label_mode="soft"):
    # row 0: composition with row 2 (lam 0.7); row 1: perturbation by row 3
    # (lam 0.9); row 2: unmixed; row 3: composition with row 0 (lam 0.5)
    return MixInfo(
        lam=torch.tensor([0.7, 0.9, 1.0, 0.5]),
        partner=torch.tensor([2, 3, 2, 0]),
        mixed=torch.tensor([True, True, False, True]),
        composition=torch.tensor([True, False, False, True]),
        perturbation=torch.tensor([False, True, False, False]),
        label_mode=label_mode,
    )


Y = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
)


def test_soft_label_targets_by_hand():
    expected = torch.tensor(
        [
            [0.7, 0.0, 0.3],  # 0.7 * y0 + 0.3 * y2
            [0.0, 1.0, 0.0],  # perturbation keeps its own label
            [0.0, 0.0, 1.0],  # unmixed
            [1.0, 0.5, 0.0],  # 0.5 * y3 + 0.5 * y0
        ]
    )
    torch.testing.assert_close(_hand_info().mix_targets(Y), expected)
    # frame-level targets [B, C, T]: the same per frame
    y_t = torch.stack([Y, 1 - Y], dim=-1)
    out = _hand_info().mix_targets(y_t)
    assert out.shape == (4, 3, 2)
    torch.testing.assert_close(out[..., 0], expected)
    torch.testing.assert_close(
        out[..., 1],
        torch.tensor(
            [
                [0.3, 1.0, 0.7],
                [1.0, 0.0, 1.0],
                [1.0, 1.0, 0.0],
                [0.0, 0.5, 1.0],
            ]
        ),
    )


def test_hard_label_targets_are_the_union():
    expected = torch.tensor(
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    )
    torch.testing.assert_close(_hand_info("hard").mix_targets(Y), expected)


def test_pseudo_labels_by_hand_and_detached():
    t = torch.tensor([[0.2], [0.4], [0.8], [0.6]], requires_grad=True)
    out = _hand_info("hard").mix_pseudo_labels(t)  # always soft
    expected = torch.tensor([[0.7 * 0.2 + 0.3 * 0.8], [0.4], [0.8], [0.4]])
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad
    z = torch.arange(8.0).view(4, 2, 1)
    torch.testing.assert_close(
        _hand_info().interpolate(z)[0], 0.7 * z[0] + 0.3 * z[2]
    )


def test_identity_info_changes_nothing():
    info = MixInfo.identity(4)
    assert torch.equal(info.mix_targets(Y), Y)
    assert torch.equal(info.mix_pseudo_labels(Y), Y)
    with pytest.raises(ValueError):
        info.mix_targets(Y[:3])


# ------------------------------------------------------- contrastive loss
def test_contrastive_known_values():
    a = torch.tensor([[[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]]])
    zero = embedding_contrastive(a, 3 * a)
    assert zero.shape == (1, 2)
    assert torch.allclose(zero, torch.zeros(1, 2), atol=1e-6)
    assert torch.allclose(embedding_contrastive(a, -a), torch.full((1, 2), 4.0))
    p = torch.tensor([[[1.0, 0.0]]])
    q = torch.tensor([[[0.0, 5.0]]])
    assert embedding_contrastive(p, q).item() == pytest.approx(2.0)
    # 45 degrees: 2 - 2 / sqrt(2)
    q = torch.tensor([[[1.0, 1.0]]])
    assert embedding_contrastive(p, q).item() == pytest.approx(2 - math.sqrt(2))
    with pytest.raises(ValueError, match="Shapes differ"):
        embedding_contrastive(p, q[..., :1])


def test_contrastive_per_frame_gradient_reaches_only_the_prediction():
    pred = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]]], requires_grad=True)
    frames = embedding_contrastive(pred, target)
    assert frames.tolist() == [[0.0], [4.0]]
    frames.sum().backward()
    assert target.grad is None and pred.grad is not None


def test_contrastive_module_averages_the_per_frame_function():
    loss_fn, info = _loss_and_info()
    loss_fn.eval()  # the same projector output twice (no BatchNorm update)
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 6, generator=gen)
    teacher = torch.randn(3, 4, 6, generator=gen)
    rows = loss_fn(student, teacher, info, reduction="none")
    with torch.no_grad():
        prediction = loss_fn.predictor(loss_fn.projector(student))
        target = info.interpolate(loss_fn.teacher_projector(teacher))
    manual = embedding_contrastive(prediction, target).mean(dim=1)
    assert torch.allclose(rows, manual, atol=1e-6)


def _loss_and_info():
    loss_fn = EmbeddingContrastiveLoss(6, hidden_size=16, projection_size=5)
    info = MixInfo(
        lam=torch.tensor([0.55, 0.8, 1.0]),
        partner=torch.tensor([1, 2, 2]),
        mixed=torch.tensor([True, True, False]),
        composition=torch.tensor([True, False, False]),
        perturbation=torch.tensor([False, True, False]),
    )
    return loss_fn, info


def test_contrastive_row_losses_give_the_masked_means():
    loss_fn, info = _loss_and_info()
    loss_fn.eval()  # the heads' BatchNorm must not move between the calls
    student = torch.randn(3, 7, 6)
    teacher = torch.randn(3, 7, 6)
    rows = loss_fn(student, teacher, info, reduction="none")
    assert rows.shape == (3,)
    for mask in (info.mixed, info.composition, info.perturbation):
        scalar = loss_fn(student, teacher, info, mask)
        assert rows[mask].mean().item() == pytest.approx(scalar.item())
    with pytest.raises(ValueError, match="reduction"):
        loss_fn(student, teacher, info, reduction="sum")


def test_contrastive_module_matches_hand_computation():
    loss_fn, info = _loss_and_info()
    student = torch.randn(3, 7, 6)
    teacher = torch.randn(3, 7, 6)
    loss = loss_fn(student, teacher, info)
    with torch.no_grad():
        pred = loss_fn.predictor(loss_fn.projector(student))
        q = loss_fn.teacher_projector.model(teacher)
        targets = [0.55 * q[0] + 0.45 * q[1], q[1]]  # composition, perturb.
        cos = [
            torch.nn.functional.cosine_similarity(pred[i], targets[i], dim=-1)
            for i in range(2)
        ]
        expected = (2 - 2 * torch.cat(cos)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # an explicit mask overrides info.mixed
    only_last = loss_fn(student, teacher, info, torch.tensor([0, 0, 1.0]))
    with torch.no_grad():
        c = torch.nn.functional.cosine_similarity(pred[2], q[2], dim=-1)
    assert only_last.item() == pytest.approx((2 - 2 * c).mean().item(), 1e-5)
    with pytest.raises(ValueError):
        loss_fn(student, teacher[:, :5], info)


def test_gradients_reach_only_the_student_side():
    loss_fn, info = _loss_and_info()
    student = torch.randn(3, 7, 6, requires_grad=True)
    teacher = torch.randn(3, 7, 6, requires_grad=True)
    loss_fn(student, teacher, info).backward()
    for head in (loss_fn.projector, loss_fn.predictor):
        for p in head.parameters():
            assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    for p in loss_fn.teacher_projector.parameters():
        assert not p.requires_grad and p.grad is None
    assert teacher.grad is None and student.grad is not None
    trainable = [p for p in loss_fn.parameters() if p.requires_grad]
    n_heads = len(list(loss_fn.projector.parameters())) * 2
    assert len(trainable) == n_heads


def test_update_teacher_moves_towards_projector():
    loss_fn, _ = _loss_and_info()
    teacher_params = list(loss_fn.teacher_projector.model.parameters())
    before = [p.clone() for p in teacher_params]
    with torch.no_grad():
        for p in loss_fn.projector.parameters():
            p.add_(1.0)
    loss_fn.update_teacher(step=1)  # EMA factor 1/2
    for b, t, s in zip(before, teacher_params, loss_fn.projector.parameters()):
        torch.testing.assert_close(t, b + 0.5)
        assert (s - t).abs().max() < (s - b).abs().max()


def test_mlp_head_shapes_and_frame_wise():
    head = MLPHead(4, hidden_size=8, output_size=3).eval()
    x = torch.randn(2, 5, 4)
    out = head(x)
    assert out.shape == (2, 5, 3)
    # eval mode: each frame is projected independently
    torch.testing.assert_close(out[1, 2], head(x[1, 2].view(1, 4))[0])
    layers = list(head.net)
    assert layers[0].bias is None and layers[-1].bias is None
    with pytest.raises(ValueError):
        head(torch.randn(2, 5, 3))


# ------------------------------------------------------- frequency warp
def test_frequency_warp_shapes_dtypes_and_identities():
    warp = FrequencyWarp(prob=1.0, min_scale=0.6, max_scale=0.6)
    for shape in ((2, 64, 30), (2, 1, 64, 30)):
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            x = torch.rand(shape).to(dtype)
            y = warp(x)
            assert y.shape == x.shape and y.dtype == x.dtype
            assert not torch.equal(y, x)
    x = torch.rand(2, 64, 30)
    assert torch.equal(FrequencyWarp(prob=0.0)(x), x)
    assert torch.equal(FrequencyWarp(min_scale=1.0, prob=1.0)(x), x)
    assert torch.equal(warp.eval()(x), x)


def test_frequency_warp_coin_rate():
    warp = FrequencyWarp(prob=0.5, max_scale=0.9)
    x = torch.rand(1, 16, 4)
    changed = [not torch.equal(warp(x), x) for _ in range(400)]
    assert sum(changed) / 400 == pytest.approx(0.5, abs=0.1)


def test_frequency_warp_stretches_content_along_frequency_only():
    n_freq, h = 64, 32
    warp = FrequencyWarp(min_scale=0.5, max_scale=0.5, prob=1.0)
    ramp = torch.arange(n_freq, dtype=torch.float)
    band = ((ramp >= 24) & (ramp < 34)).float()  # 10 active bins
    x = torch.stack([ramp, band]).unsqueeze(-1).expand(2, n_freq, 3)
    seen_inside = False
    for seed in range(12):
        torch.manual_seed(seed)
        y = warp(x)
        # one crop for the whole call, constant over time as the input
        assert torch.equal(y[..., 0], y[..., 2])
        # the ramp's end points give the crop: [offset, offset + h - 1]
        offset = int(y[0, 0, 0].round())
        assert y[0, 0, 0].item() == pytest.approx(offset, abs=1e-4)
        assert y[0, -1, 0].item() == pytest.approx(offset + h - 1, abs=1e-4)
        # output bin k reads the input at offset + k (h - 1) / (F - 1):
        # exactly 1 where its 4 bicubic taps are in the band, 0 where none
        for k in range(n_freq):
            pos = offset + k * (h - 1) / (n_freq - 1)
            taps = [math.floor(pos) + d for d in (-1, 0, 1, 2)]
            taps = [min(max(t, offset), offset + h - 1) for t in taps]
            if all(24 <= t < 34 for t in taps):
                assert y[1, k, 0].item() == pytest.approx(1.0, abs=1e-5)
            elif not any(24 <= t < 34 for t in taps):
                assert y[1, k, 0].item() == pytest.approx(0.0, abs=1e-5)
        if 2 <= offset <= 24:  # the band lies inside the crop: it doubles
            seen_inside = True
            assert int((y[1, :, 0] > 0.5).sum()) in range(19, 22)
            centre = (28.5 - offset) * (n_freq - 1) / (h - 1)
            above = (y[1, :, 0] > 0.5).nonzero().float().mean()
            assert above.item() == pytest.approx(centre, abs=1.0)
    assert seen_inside


def test_frequency_warp_of_lower_band_moves_energy_up():
    # a crop that starts at bin 0 stretches the low band upwards
    warp = FrequencyWarp(min_scale=0.6, max_scale=0.6, prob=1.0)
    x = torch.zeros(1, 40, 2)
    x[:, :8] = 1.0
    x_ramp = torch.arange(40.0).view(1, 40, 1).expand(1, 40, 2)
    for seed in range(200):
        torch.manual_seed(seed)
        if warp(x_ramp)[0, 0, 0].item() == 0.0:  # this seed crops at 0
            torch.manual_seed(seed)
            y = warp(x)
            break
    else:  # pragma: no cover
        pytest.fail("no crop at offset 0")
    h = int(0.6 * 40)
    assert int((y[0, :, 0] > 0.5).sum()) > 8
    top = int((y[0, :, 0] > 0.5).nonzero().max())
    assert top == pytest.approx(7.5 * 39 / (h - 1), abs=1.0)
