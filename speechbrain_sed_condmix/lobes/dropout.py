"""Dropout whose keep mask is drawn from random bits (CPU training speed).

On CPU, ``torch.nn.Dropout`` draws one double-precision Bernoulli sample
per element, on one thread when the CPU is not an Intel one: for the
CRNN's first block ([48, 16, 626, 128] at the paper's batch) that took
about a fifth of the whole training step (``benchmarks/profile_step.py``).
Here the keep mask is unpacked from random bytes: one byte gives eight
mask elements for ``p = 0.5`` (one bit each) or one element for any
``p = k / 256``; other ``p`` fall back to a uniform draw. The mask has the
same Bernoulli(1 - p) distribution as torch's, from a different random
stream (still seeded by :func:`torch.manual_seed`), and is kept as one byte
per element instead of a float.

:func:`dropout_avg_pool` fuses the dropout with the average pooling that
follows it in every CNN block: the dropped-out full-resolution map is not
kept for the backward pass, only the byte mask is.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import torch
from torch import nn
from torch.nn import functional as F

_BIT_WEIGHTS = {}


def _bit_weights(device):
    """The byte values 1, 2, 4, ..., 128 on ``device`` (cached)."""
    if device not in _BIT_WEIGHTS:
        _BIT_WEIGHTS[device] = torch.tensor(
            [1 << i for i in range(8)], dtype=torch.uint8, device=device
        )
    return _BIT_WEIGHTS[device]


def keep_mask(like, p):
    """A boolean Bernoulli(1 - p) mask with the shape and layout of ``like``.

    Arguments
    ---------
    like : torch.Tensor
        The tensor to drop out; the mask gets its shape, device and memory
        layout (contiguous or channels-last), so that the product with it
        runs in one pass. The values do not depend on the layout.
    p : float
        Drop probability, in [0, 1).

    Returns
    -------
    torch.Tensor
        Bool tensor, True where an element is kept.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> mask = keep_mask(torch.zeros(1000, 100), 0.5)
    >>> mask.dtype, mask.shape
    (torch.bool, torch.Size([1000, 100]))
    >>> abs(mask.float().mean().item() - 0.5) < 0.01
    True
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1): {p}")
    shape = like.shape
    channels_last = (
        like.dim() == 4
        and not like.is_contiguous()
        and like.is_contiguous(memory_format=torch.channels_last)
    )
    n = like.numel()
    if p == 0.5:
        # One random byte gives 8 mask elements, one bit each.
        raw = torch.empty((n + 7) // 8, dtype=torch.uint8, device=like.device)
        bits = raw.random_().unsqueeze(-1) & _bit_weights(like.device)
        mask = bits.view(-1)[:n].ne(0).view(shape)
    elif float(p * 256).is_integer():
        # P(byte >= 256 p) = 1 - p exactly for p = k / 256.
        raw = torch.empty(shape, dtype=torch.uint8, device=like.device)
        mask = raw.random_().ge(int(p * 256))
    else:
        mask = torch.rand(shape, device=like.device).ge(p)
    if channels_last:
        # Drawn in logical order, so that a seed gives the same mask in
        # either layout; stored like ``like`` for a one-pass product.
        return mask.contiguous(memory_format=torch.channels_last)
    return mask


class _MaskedAvgPool(torch.autograd.Function):
    """``avg_pool2d(x * mask) * scale``, keeping only the mask for backward."""

    @staticmethod
    def forward(ctx, x, mask, scale, kernel):
        """Pool the masked, rescaled input; keep only the mask."""
        ctx.save_for_backward(mask)
        ctx.scale = scale
        ctx.kernel = kernel
        return F.avg_pool2d(x * mask, kernel).mul_(scale)

    @staticmethod
    def backward(ctx, grad_out):
        """Spread the gradient over each window, masked and rescaled."""
        (mask,) = ctx.saved_tensors
        # avg_pool2d_backward reads only the sizes and layout of its input
        # argument; an unwritten tensor of the right shape costs no pages.
        like = torch.empty_like(mask, dtype=grad_out.dtype)
        kernel = list(ctx.kernel)
        grad = torch.ops.aten.avg_pool2d_backward(
            grad_out * ctx.scale,
            like,
            kernel,
            kernel,
            [0, 0],
            False,
            True,
            None,
        )
        return grad.mul_(mask), None, None, None


def dropout_avg_pool(x, p, kernel, training=True):
    """Dropout followed by non-overlapping average pooling, fused.

    Equal to ``avg_pool2d(dropout(x, p), kernel)`` for the same keep mask;
    the mask comes from :func:`keep_mask`.

    Arguments
    ---------
    x : torch.Tensor
        Feature map, [batch, channels, time, freq].
    p : float
        Drop probability (no dropout when 0 or not ``training``).
    kernel : tuple of int
        Pooling (time, freq); the stride equals the kernel.
    training : bool
        Apply the dropout.

    Returns
    -------
    torch.Tensor
        The pooled map.

    Example
    -------
    >>> x = torch.ones(1, 2, 4, 4, requires_grad=True)
    >>> y = dropout_avg_pool(x, 0.5, (2, 2))
    >>> y.shape
    torch.Size([1, 2, 2, 2])
    >>> bool(((y * 2) % 1 == 0).all())  # mean of 4 values, each 0 or 2
    True
    >>> torch.equal(dropout_avg_pool(x, 0.5, (2, 2), training=False),
    ...             torch.ones(1, 2, 2, 2))
    True
    """
    kernel = tuple(kernel)
    if not training or p == 0.0:
        return F.avg_pool2d(x, kernel)
    mask = keep_mask(x, p)
    return _MaskedAvgPool.apply(x, mask, 1.0 / (1.0 - p), kernel)


class _Masked(torch.autograd.Function):
    """``x * mask * scale``, keeping only the byte mask for backward."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        """``x * mask * scale``; keep only the mask."""
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return (x * mask).mul_(scale)

    @staticmethod
    def backward(ctx, grad_out):
        """The output gradient times the mask and the scale."""
        (mask,) = ctx.saved_tensors
        return (grad_out * mask).mul_(ctx.scale), None, None


class BitMaskDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with the mask of :func:`keep_mask`.

    Arguments
    ---------
    p : float
        Drop probability.

    Example
    -------
    >>> drop = BitMaskDropout(0.5)
    >>> y = drop(torch.ones(4, 1000))
    >>> sorted(torch.unique(y).tolist())
    [0.0, 2.0]
    >>> torch.equal(drop.eval()(torch.ones(3)), torch.ones(3))
    True
    """

    def __init__(self, p=0.5):
        super().__init__(p)

    def forward(self, x):
        """Drop elements with probability ``p`` and rescale the others.

        Arguments
        ---------
        x : torch.Tensor
            Any tensor.

        Returns
        -------
        torch.Tensor
            ``x * mask / (1 - p)`` in training, ``x`` in eval mode.
        """
        if not self.training or self.p == 0.0:
            return x
        return _Masked.apply(x, keep_mask(x, self.p), 1.0 / (1.0 - self.p))
