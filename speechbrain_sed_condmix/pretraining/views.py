"""The two views and the block mask of ATST-Frame pretraining.

Both views come from one crop of a clip, as normalised ATST mel
(:class:`~speechbrain_sed_condmix.lobes.features.ATSTMelFrontEnd`): the
first is the clean crop, the second is mixed with an earlier clip from a
memory bank (:class:`MemoryBankMixup`) and warped in frequency
(:class:`FrequencyResizeCrop`). The student's input is masked in blocks of
tokens (:func:`block_mask`), the same mask for both views; the teacher's is
not.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import collections

import torch
import torch.nn.functional as F
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)


def block_mask(
    batch,
    n_tokens,
    mask_prob=0.65,
    mask_length=5,
    min_masks=2,
    generator=None,
    device=None,
):
    """Static-span block mask of ATST-Frame (fairseq's "static" type).

    For each clip ``k = max(min_masks, int(mask_prob * n_tokens /
    mask_length + u))`` span starts, ``u ~ U(0, 1)``, are drawn without
    replacement from ``[0, n_tokens - mask_length)``; each masks
    ``mask_length`` tokens from its start. Spans may overlap, so about half
    of the tokens are masked with the defaults (250 tokens: 32 or 33
    spans). ``k`` is reduced when ``k * mask_length`` exceeds the tokens.

    Arguments
    ---------
    batch : int
        Number of clips.
    n_tokens : int
        Tokens per clip.
    mask_prob : float
        Share of tokens that the spans would cover without overlap.
    mask_length : int
        Tokens per span.
    min_masks : int
        Fewest spans per clip.
    generator : torch.Generator, optional
        Source of randomness (CPU); default: torch's global generator.
    device : torch.device, optional
        Device of the returned mask.

    Returns
    -------
    torch.Tensor
        Boolean ``[batch, n_tokens]``, True where a token is masked.

    Example
    -------
    >>> mask = block_mask(3, 250, generator=torch.Generator().manual_seed(0))
    >>> mask.shape, mask.dtype
    (torch.Size([3, 250]), torch.bool)
    >>> bool((mask.sum(1) >= 5).all())
    True
    """
    if n_tokens <= mask_length:
        raise ValueError(
            f"block_mask needs more tokens ({n_tokens}) than the span "
            f"length ({mask_length})"
        )
    mask = torch.zeros(batch, n_tokens, dtype=torch.bool)
    offsets = torch.arange(mask_length)
    n_starts = n_tokens - mask_length
    for row in range(batch):
        u = float(torch.rand((), generator=generator))
        k = max(int(min_masks), int(mask_prob * n_tokens / mask_length + u))
        k = min(k, n_tokens // mask_length, n_starts)
        starts = torch.randperm(n_starts, generator=generator)[:k]
        mask[row, (starts[:, None] + offsets).reshape(-1)] = True
    return mask.to(device) if device is not None else mask


@register_checkpoint_hooks
class MemoryBankMixup:
    """Mix each input with an earlier one from a FIFO memory bank.

    ATST-Frame's mixup on the normalised (log-scale) mel: for each clip in
    turn, a partner ``z`` is drawn uniformly from the bank of past
    *unmixed* inputs and ``a ~ U(0, ratio)``; the output is the log of
    the mixed energies,
    ``log((1 - a) * exp(x) + a * exp(z) + eps)`` with ``eps`` the float32
    machine epsilon. The clip itself then enters the bank (the oldest
    leaves once ``bank_size`` are held). The very first clip, with an
    empty bank, is returned unmixed. Clips of one batch are processed in
    order, so a clip can be mixed with an earlier clip of its own batch,
    as in the reference, which mixes clip by clip.

    The bank is saved with each checkpoint (``bank_size`` clips of
    ``n_mels x frames`` fp32 values), so a resumed run draws from the same
    partners. ``last_ratio`` and ``last_partner`` hold the draws of the
    latest call (``nan`` and -1 for an unmixed clip).

    Arguments
    ---------
    ratio : float
        Upper bound of the partner weight ``a``.
    bank_size : int
        Clips kept in the bank.
    generator : torch.Generator, optional
        Source of randomness (CPU); default: torch's global generator.

    Example
    -------
    >>> import math
    >>> mix = MemoryBankMixup(ratio=0.4, bank_size=2)
    >>> first = mix(torch.zeros(1, 2, 3))
    >>> torch.equal(first, torch.zeros(1, 2, 3)), len(mix.bank)
    (True, 1)
    >>> out = mix(torch.ones(1, 2, 3))
    >>> a = mix.last_ratio[0]
    >>> expected = math.log((1 - a) * math.e + a + torch.finfo().eps)
    >>> torch.allclose(out, torch.full((1, 2, 3), expected))
    True
    """

    def __init__(self, ratio=0.4, bank_size=2000, generator=None):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if bank_size < 1:
            raise ValueError(f"bank_size must be positive, got {bank_size}")
        self.ratio = float(ratio)
        self.bank_size = int(bank_size)
        self.generator = generator
        self.bank = collections.deque(maxlen=self.bank_size)
        self.last_ratio = []
        self.last_partner = []

    def __call__(self, x):
        """Mix every clip of ``x`` ([batch, ...]) with a bank partner.

        Arguments
        ---------
        x : torch.Tensor
            Normalised mel, ``[batch, n_mels, frames]``.

        Returns
        -------
        torch.Tensor
            The mixed inputs, same shape.
        """
        eps = torch.finfo(torch.float32).eps
        out = []
        self.last_ratio, self.last_partner = [], []
        for clip in x:
            if self.bank:
                partner = int(
                    torch.randint(len(self.bank), (), generator=self.generator)
                )
                a = self.ratio * float(torch.rand((), generator=self.generator))
                z = self.bank[partner].to(clip.device, clip.dtype)
                mixed = torch.log(
                    (1.0 - a) * torch.exp(clip) + a * torch.exp(z) + eps
                )
            else:
                partner, a, mixed = -1, float("nan"), clip
            self.last_partner.append(partner)
            self.last_ratio.append(a)
            self.bank.append(clip.detach().clone())
            out.append(mixed)
        return torch.stack(out)

    @mark_as_saver
    def save(self, path):
        """Save the bank (checkpoint hook)."""
        bank = torch.stack(list(self.bank)).cpu() if self.bank else None
        torch.save({"bank": bank}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Load the bank (checkpoint hook)."""
        from speechbrain_sed_condmix.safe_load import load_checkpoint

        saved = load_checkpoint(path)
        self.bank.clear()
        if saved["bank"] is not None:
            self.bank.extend(saved["bank"].unbind(0))


class FrequencyResizeCrop(torch.nn.Module):
    """Random crop of the mel bands, resized back: frequency warping.

    ATST-Frame's ``RandomResizeCrop`` with time unchanged: for each clip,
    ``h = clip(int(s * n_mels), 1, n_mels)`` with ``s ~ U(*freq_scale)``
    and an offset ``i`` uniform in ``[0, n_mels - h]``; bands ``i`` to
    ``i + h`` of every frame are resized back to ``n_mels`` bands (bicubic,
    corners aligned). With the default scales about 56 % of the draws keep
    all bands (``h = n_mels``) and return the clip unchanged.

    Arguments
    ---------
    freq_scale : tuple of float
        Range of the crop height relative to ``n_mels``.
    generator : torch.Generator, optional
        Source of randomness (CPU); default: torch's global generator.

    Example
    -------
    >>> crop = FrequencyResizeCrop(freq_scale=(1.0, 1.0))
    >>> x = torch.randn(2, 8, 5)
    >>> torch.equal(crop(x), x)
    True
    >>> FrequencyResizeCrop()(x).shape
    torch.Size([2, 8, 5])
    """

    def __init__(self, freq_scale=(0.6, 1.5), generator=None):
        super().__init__()
        self.low, self.high = (float(v) for v in freq_scale)
        self.generator = generator

    def forward(self, x):
        """Warp each clip of ``x`` ([batch, n_mels, frames]) in frequency.

        Arguments
        ---------
        x : torch.Tensor
            Normalised mel, ``[batch, n_mels, frames]``.

        Returns
        -------
        torch.Tensor
            Same shape.
        """
        n_mels, frames = x.shape[-2:]
        out = []
        for clip in x:
            s = self.low + (self.high - self.low) * float(
                torch.rand((), generator=self.generator)
            )
            h = min(max(int(s * n_mels), 1), n_mels)
            i = int(torch.randint(n_mels - h + 1, (), generator=self.generator))
            if h == n_mels:
                out.append(clip)
                continue
            band = clip[i : i + h][None, None]
            out.append(
                F.interpolate(
                    band,
                    size=(n_mels, frames),
                    mode="bicubic",
                    align_corners=True,
                )[0, 0]
            )
        return torch.stack(out)
