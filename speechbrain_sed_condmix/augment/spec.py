"""Spectrogram augmentations.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import numpy as np
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


class FilterAugment(torch.nn.Module):
    """Random band-wise gains along the frequency axis (FilterAugment).

    Each clip of a call gets its own random filter: the ``F`` bins are cut
    into ``n`` bands (``n`` uniform in ``[min_bands, max_bands]``, band
    edges at random bins, every band at least ``min_band_width`` bins),
    and each band gets a gain uniform in ``gain_range``, added to the input
    (a log-domain input: a gain in dB scaled to the input's units). With
    ``kind="step"`` the gain is constant over a band; with ``"linear"``
    the gains sit on the band edges and are interpolated in between. Time
    is untouched, so frame labels stay valid. Called separately for the
    student and the teacher inputs, it gives the two networks different
    views of a clip (FDY-SED's two FilterAugment views for Mean Teacher).

    The inputs here are min-max scaled dB values in [-1, 1] (e.g.
    :class:`~speechbrain_sed_condmix.lobes.features.CNNMelFrontEnd`), so the
    default gains of +-0.12 are about +-6 dB for a clip spanning 100 dB.

    Arguments
    ---------
    min_bands : int
        Smallest number of bands.
    max_bands : int
        Largest number of bands.
    gain_range : tuple of float
        Range of the gains, in the input's units.
    min_band_width : int
        Smallest band width, in bins.
    kind : str
        ``"step"`` or ``"linear"``.
    prob : float
        Probability that a clip is filtered (0: the layer is the identity
        and draws no random numbers).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> aug = FilterAugment(prob=1.0)
    >>> x = torch.zeros(2, 16, 5)
    >>> y = aug(x)
    >>> y.shape, bool((y[:, :, 0:1] == y).all())  # the same at every frame
    (torch.Size([2, 16, 5]), True)
    >>> bool(y.abs().max() <= 0.12), torch.equal(aug.eval()(x), x)
    (True, True)
    """

    def __init__(
        self,
        min_bands=3,
        max_bands=6,
        gain_range=(-0.12, 0.12),
        min_band_width=4,
        kind="step",
        prob=1.0,
    ):
        super().__init__()
        if not 1 <= min_bands <= max_bands:
            raise ValueError(
                f"Need 1 <= min_bands <= max_bands: {min_bands}, {max_bands}"
            )
        if kind not in ("step", "linear"):
            raise ValueError(f"kind must be step or linear: {kind!r}")
        low, high = (float(g) for g in gain_range)
        if low > high:
            raise ValueError(f"gain_range must be (low, high): {gain_range}")
        self.min_bands = int(min_bands)
        self.max_bands = int(max_bands)
        self.gain_range = (low, high)
        self.min_band_width = int(min_band_width)
        self.kind = kind
        self.prob = float(prob)

    def extra_repr(self):
        """Hyperparameters shown by ``repr``."""
        return (
            f"bands=[{self.min_bands}, {self.max_bands}], "
            f"gain_range={self.gain_range}, kind={self.kind}, "
            f"prob={self.prob}"
        )

    def _edges(self, n_freq):
        """Sorted band edges from 0 to ``n_freq``."""
        n = int(torch.randint(self.min_bands, self.max_bands + 1, ()))
        n = max(1, min(n, n_freq // max(self.min_band_width, 1)))
        # Spread the bins left over after the minimum widths at random.
        spare = n_freq - n * self.min_band_width
        cuts = torch.sort(torch.randint(0, spare + 1, (n - 1,))).values
        inner = cuts + self.min_band_width * torch.arange(1, n)
        return torch.cat([torch.tensor([0]), inner, torch.tensor([n_freq])])

    def filters(self, batch, n_freq):
        """One random gain curve per clip.

        Arguments
        ---------
        batch : int
            Number of clips.
        n_freq : int
            Number of frequency bins.

        Returns
        -------
        torch.Tensor
            ``[batch, n_freq]`` gains (zeros for the clips not filtered).
        """
        low, high = self.gain_range
        out = torch.zeros(batch, n_freq)
        for b in range(batch):
            if float(torch.rand(())) >= self.prob:
                continue
            edges = self._edges(n_freq)
            n = len(edges) - 1
            if self.kind == "step":
                gains = torch.empty(n).uniform_(low, high)
                widths = edges[1:] - edges[:-1]
                out[b] = torch.repeat_interleave(gains, widths)
            else:
                gains = torch.empty(n + 1).uniform_(low, high)
                # The gains sit on the edge bins (the last on the last bin).
                at = edges.double().clamp(max=n_freq - 1).numpy()
                out[b] = torch.from_numpy(
                    np.interp(np.arange(n_freq), at, gains.double().numpy())
                ).float()
        return out

    def forward(self, x):
        """Add a random filter to each clip (training only).

        Arguments
        ---------
        x : torch.Tensor
            ``[B, F, T]`` or ``[B, 1, F, T]``.

        Returns
        -------
        torch.Tensor
            Same shape and dtype; ``x`` itself in eval mode or when
            ``prob`` is 0.
        """
        if x.dim() not in (3, 4):
            raise ValueError(f"Expected [B, F, T] or [B, 1, F, T]: {x.shape}")
        if not self.training or self.prob <= 0:
            return x
        gains = self.filters(x.shape[0], x.shape[-2]).to(x.device, x.dtype)
        shape = (x.shape[0],) + (1,) * (x.dim() - 3) + (x.shape[-2], 1)
        return x + gains.view(shape)
