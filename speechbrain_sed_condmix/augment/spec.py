"""Spectrogram augmentations.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch
import torch.nn.functional as F


class FrequencyWarp(torch.nn.Module):
    """Random frequency crop resized back to the full number of bins.

    With probability ``prob`` per call (training only), ``h = int(U(min_scale,
    max_scale) * n_freq)`` consecutive bins at a random offset are cropped
    and stretched back to ``n_freq`` bins by bicubic interpolation
    (``align_corners=True``); time is untouched. One crop serves the whole
    call: ATST-SED stage 2 calls it separately for the student and the
    teacher inputs, so the two get different warps. This is ATST-SED's
    ``RandomResizeCrop(freq_scale=(0.6, 1.0), time_scale=(1, 1))`` applied
    to the normalised ATST mel.

    Arguments
    ---------
    min_scale : float
        Smallest fraction of the bins kept.
    max_scale : float
        Largest fraction of the bins kept (at most 1).
    prob : float
        Probability of warping at a given call.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> warp = FrequencyWarp(min_scale=0.5, max_scale=0.5, prob=1.0)
    >>> x = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 3)
    >>> y = warp(x)
    >>> y.shape == x.shape, bool((y[0, :, 0] == y[0, :, 2]).all())
    (True, True)
    >>> FrequencyWarp(prob=0.0)(x) is x
    True
    """

    def __init__(self, min_scale=0.6, max_scale=1.0, prob=0.5):
        super().__init__()
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(
                "Need 0 < min_scale <= max_scale <= 1: "
                f"{min_scale}, {max_scale}"
            )
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.prob = float(prob)

    def extra_repr(self):
        """Hyperparameters shown by ``repr``."""
        return (
            f"min_scale={self.min_scale}, max_scale={self.max_scale}, "
            f"prob={self.prob}"
        )

    def forward(self, x):
        """Warp the frequency axis of a batch of spectrograms.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, F, T]`` or ``[B, 1, F, T]``.

        Returns
        -------
        torch.Tensor
            Same shape and dtype; ``x`` itself when not warped.
        """
        if x.dim() not in (3, 4):
            raise ValueError(f"Expected [B, F, T] or [B, 1, F, T]: {x.shape}")
        if not self.training or self.prob <= 0:
            return x
        if float(torch.rand(())) >= self.prob:
            return x
        n_freq, n_time = x.shape[-2:]
        scale = float(torch.empty(()).uniform_(self.min_scale, self.max_scale))
        h = min(max(int(scale * n_freq), 1), n_freq)
        if h == n_freq:
            return x
        offset = int(torch.randint(0, n_freq - h + 1, ()))
        crop = x[..., offset : offset + h, :].reshape(-1, 1, h, n_time)
        # Bicubic on half precision is not available on every device.
        out = F.interpolate(
            crop.float(),
            size=(n_freq, n_time),
            mode="bicubic",
            align_corners=True,
        )
        return out.to(x.dtype).reshape(x.shape)
