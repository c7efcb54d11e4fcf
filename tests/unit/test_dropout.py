"""Bit-mask dropout and the fused dropout + pooling of the CNN blocks."""

import pytest
import torch
from torch.nn import functional as F

from speechbrain_sed_condmix.lobes.crnn import CNN, CRNN
from speechbrain_sed_condmix.lobes.dropout import (
    BitMaskDropout,
    dropout_avg_pool,
    keep_mask,
)


@pytest.mark.parametrize("p", [0.5, 0.25, 0.3])
def test_keep_mask_is_bernoulli(p):
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask(torch.zeros(n), p).float()
    # Mean within 5 standard errors of 1 - p.
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(mask.mean().item() - (1 - p)) < 5 * sigma
    # Neighbours are independent: P(both kept) = (1 - p)^2 (bits of one
    # random byte must not be correlated).
    both = (mask[:-1] * mask[1:]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * (((1 - p) ** 2) / n) ** 0.5
    # Every bit position of the p = 0.5 bytes is used.
    by_position = mask[: n // 8 * 8].view(-1, 8).mean(0)
    assert torch.all((by_position - (1 - p)).abs() < 6 * sigma * 8**0.5)


def test_keep_mask_layout_and_seed():
    x = torch.zeros(2, 3, 5, 7).to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    a = keep_mask(x, 0.5)
    torch.manual_seed(1)
    b = keep_mask(x, 0.5)
    assert torch.equal(a, b)
    assert a.shape == x.shape
    assert a.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)  # the same values in the default layout
    assert torch.equal(keep_mask(x.contiguous(), 0.5), a)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        keep_mask(x, 1.0)


def test_dropout_avg_pool_matches_reference_with_same_mask():
    """Forward and gradient equal dropout-then-pool with the same mask."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 9, 11).to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad_out = torch.randn(3, 4, 4, 5)
    torch.manual_seed(5)
    out = dropout_avg_pool(x, 0.5, (2, 2))
    out.backward(grad_out)
    torch.manual_seed(5)
    mask = keep_mask(x, 0.5)
    x_ref = x.detach().clone().requires_grad_(True)
    # The reference computation: torch's dropout formula, then pooling.
    ref = F.avg_pool2d(x_ref * mask.float() / (1 - 0.5), (2, 2))
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    # The odd last row/column are dropped by the pooling: no gradient.
    assert torch.all(x.grad[:, :, 8] == 0) and torch.all(x.grad[..., 10] == 0)


def test_bit_mask_dropout_matches_reference_with_same_mask():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8, requires_grad=True)
    drop = BitMaskDropout(0.25)
    torch.manual_seed(3)
    out = drop(x)
    out.sum().backward()
    torch.manual_seed(3)
    mask = keep_mask(x, 0.25).float()
    torch.testing.assert_close(out, x.detach() * mask / 0.75)
    torch.testing.assert_close(x.grad, mask / 0.75)


def test_fast_and_reference_cnn_agree_without_dropout_and_in_eval():
    """Same weights: identical outputs where no mask is drawn."""
    torch.manual_seed(0)
    fast = CRNN(
        n_filters=[4, 8], pooling=[(2, 4), (2, 4)], rnn_hidden=6, n_freq=16
    )
    ref = CRNN(
        n_filters=[4, 8],
        pooling=[(2, 4), (2, 4)],
        rnn_hidden=6,
        n_freq=16,
        fast_dropout=False,
    )
    ref.load_state_dict(fast.state_dict())
    assert isinstance(ref.cnn.cnn.dropout0, torch.nn.Dropout)
    assert type(ref.cnn.cnn.dropout0) is torch.nn.Dropout
    x = torch.randn(3, 16, 20)
    fast.eval()
    ref.eval()
    torch.testing.assert_close(fast(x).strong, ref(x).strong)
    cnn_fast = CNN(n_filters=[4], pooling=[(2, 2)], dropout=0.0)
    cnn_ref = CNN(
        n_filters=[4], pooling=[(2, 2)], dropout=0.0, fast_dropout=False
    )
    cnn_ref.load_state_dict(cnn_fast.state_dict())
    y = torch.randn(2, 1, 8, 6)
    torch.testing.assert_close(cnn_fast(y), cnn_ref(y))


def test_fast_cnn_training_equals_reference_blocks_with_its_masks():
    """A training forward/backward of the fused CNN equals the unfused
    block sequence (conv, BN, GLU, x * mask / (1 - p), pooling) run with the
    masks the fused path drew."""
    torch.manual_seed(0)
    cnn = CNN(n_filters=[4, 8], pooling=[(2, 2), (2, 2)], dropout=0.5)
    ref = CNN(
        n_filters=[4, 8],
        pooling=[(2, 2), (2, 2)],
        dropout=0.5,
        fast_dropout=False,
    )
    ref.load_state_dict(cnn.state_dict())
    x = torch.randn(3, 1, 12, 10)
    masks = []
    original = keep_mask

    def recording(like, p):
        masks.append(original(like, p))
        return masks[-1]

    import speechbrain_sed_condmix.lobes.dropout as dropout_module

    dropout_module.keep_mask = recording
    try:
        out = cnn(x)
    finally:
        dropout_module.keep_mask = original
    out.square().sum().backward()
    h = x
    for i in range(2):
        blocks = ref.cnn
        h = getattr(blocks, f"glu{i}")(
            getattr(blocks, f"batchnorm{i}")(getattr(blocks, f"conv{i}")(h))
        )
        h = getattr(blocks, f"pooling{i}")(h * masks[i].float() / 0.5)
    h.square().sum().backward()
    torch.testing.assert_close(out, h)
    for (name, p), p_ref in zip(cnn.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)
