"""Channel gates of the DCASE CRNN: the baseline's GLU and context gating.

Both mix the channels of a [batch, channels, time, freq] map with a linear
layer and gate with a sigmoid. ``forward_inplace`` computes the same gate
without autograd in the memory of its input, for the EMA teacher and
evaluation (see :class:`~speechbrain_sed_condmix.lobes.crnn.CNN`).

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import torch
from torch import nn
from torch.nn import functional as F


class _GLUFunction(torch.autograd.Function):
    """``linear(x) * sigmoid(x)`` over channels with a leaner backward.

    Autograd of the plain formula keeps ``sigmoid(x)`` and allocates five
    full-size maps in the backward pass; this keeps ``x`` and ``linear(x)``
    only (the sigmoid is recomputed) and writes the backward's element-wise
    terms into buffers it already holds.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        """Gate ``x``; keep ``x``, the linear map and the weight."""
        lin = F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)
        ctx.save_for_backward(x, lin, weight)
        return torch.sigmoid(x).mul_(lin)

    @staticmethod
    def backward(ctx, grad):
        """Gradients for ``x``, the weight and the bias."""
        x, lin, weight = ctx.saved_tensors
        sig = torch.sigmoid(x)
        grad_lin = grad * sig
        # d/dx of the gate: grad * lin * sig * (1 - sig)
        grad_x = (grad * lin).mul_(sig)
        grad_x.mul_(sig.neg_().add_(1.0))
        channels = weight.shape[1]
        grad_lin_last = grad_lin.movedim(1, -1)
        flat_grad = grad_lin_last.reshape(-1, channels)
        grad_weight = flat_grad.t() @ x.movedim(1, -1).reshape(-1, channels)
        grad_bias = flat_grad.sum(0)
        grad_x.add_((grad_lin_last @ weight).movedim(-1, 1))
        return grad_x, grad_weight, grad_bias


class GLU(nn.Module):
    """Gated linear unit over channels: ``Linear(x) * sigmoid(x)``.

    This is the gate of the DCASE baseline, not :class:`torch.nn.GLU`: the
    channel count is kept and the linear map (a 1x1 convolution with bias)
    is gated by the sigmoid of the input itself.

    Arguments
    ---------
    channels : int
        Number of channels (dim 1 of the [B, C, T, F] input).

    Example
    -------
    >>> glu = GLU(4)
    >>> glu(torch.randn(2, 4, 3, 5)).shape
    torch.Size([2, 4, 3, 5])
    """

    def __init__(self, channels, fused_backward=True):
        super().__init__()
        self.linear = nn.Linear(channels, channels)
        # True: with autograd (and no autocast), one autograd function
        # with a leaner backward (see _GLUFunction); False: plain autograd.
        self.fused_backward = fused_backward

    def forward(self, x):
        """Apply the gate.

        Arguments
        ---------
        x : torch.Tensor
            Feature map, [batch, channels, time, freq].

        Returns
        -------
        torch.Tensor
            Gated feature map of the same shape.
        """
        if (
            self.fused_backward
            and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type)
            and x.dim() == 4
        ):
            return _GLUFunction.apply(x, self.linear.weight, self.linear.bias)
        lin = self.linear(x.movedim(1, -1)).movedim(-1, 1)
        return lin * torch.sigmoid(x)

    def forward_inplace(self, x):
        """The gate without autograd, overwriting ``x`` (no new full map).

        Arguments
        ---------
        x : torch.Tensor
            Feature map that nothing else reads afterwards.

        Returns
        -------
        torch.Tensor
            Gated feature map (``x``'s memory is reused for the sigmoid).
        """
        lin = self.linear(x.movedim(1, -1)).movedim(-1, 1)
        return lin.mul_(x.sigmoid_())


class ContextGating(nn.Module):
    """Context gating over channels: ``x * sigmoid(Linear(x))``.

    Arguments
    ---------
    channels : int
        Number of channels (dim 1 of the [B, C, T, F] input).

    Example
    -------
    >>> cg = ContextGating(4)
    >>> cg(torch.randn(2, 4, 3, 5)).shape
    torch.Size([2, 4, 3, 5])
    """

    def __init__(self, channels):
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def forward(self, x):
        """Apply the gate.

        Arguments
        ---------
        x : torch.Tensor
            Feature map, [batch, channels, time, freq].

        Returns
        -------
        torch.Tensor
            Gated feature map of the same shape.
        """
        lin = self.linear(x.movedim(1, -1)).movedim(-1, 1)
        return x * torch.sigmoid(lin)

    def forward_inplace(self, x):
        """The gate without autograd, overwriting ``x`` (no new full map).

        Arguments
        ---------
        x : torch.Tensor
            Feature map that nothing else reads afterwards.

        Returns
        -------
        torch.Tensor
            Gated feature map, in ``x``'s memory.
        """
        lin = self.linear(x.movedim(1, -1)).movedim(-1, 1)
        return x.mul_(lin.sigmoid_())
