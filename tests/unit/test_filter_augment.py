"""FilterAugment: band-wise gains along frequency, a second view.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import pytest
import torch

from speechbrain_sed_condmix.augment.spec import FilterAugment


def test_step_filters_are_constant_bands_within_range():
    torch.manual_seed(0)
    aug = FilterAugment(min_bands=3, max_bands=5, min_band_width=4)
    gains = aug.filters(300, 64)
    for g in gains:
        assert float(g.abs().max()) <= 0.12
        # Bands: runs of equal values, 3-5 of them, each >= 4 bins wide.
        change = torch.nonzero(g[1:] != g[:-1]).flatten() + 1
        edges = [0, *change.tolist(), 64]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        assert 1 <= len(widths) <= 5 and min(widths) >= 4


def test_linear_filters_interpolate_between_edges():
    torch.manual_seed(1)
    g = FilterAugment(kind="linear", min_bands=1, max_bands=1).filters(1, 9)
    # One band: a straight line from the first to the last bin.
    line = g[0, 0] + (g[0, -1] - g[0, 0]) * torch.linspace(0, 1, 9)
    torch.testing.assert_close(g[0], line)


def test_two_calls_give_two_views_and_keep_time():
    torch.manual_seed(2)
    aug = FilterAugment().train()
    x = torch.randn(4, 1, 32, 10)
    a, b = aug(x), aug(x)
    assert a.shape == x.shape and not torch.allclose(a, b)
    diff = a - x
    assert torch.allclose(diff, diff[..., :1].expand_as(diff), atol=1e-6)


def test_off_draws_nothing_and_eval_is_identity():
    x = torch.randn(2, 16, 3)
    state = torch.get_rng_state()
    assert FilterAugment(prob=0.0)(x) is x
    assert torch.equal(torch.get_rng_state(), state)
    assert FilterAugment().eval()(x) is x
    with pytest.raises(ValueError, match="kind"):
        FilterAugment(kind="peak")
