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
