"""Conditional mixup for semi-supervised SED.

Mixup plays two roles in ATST-SEDv2 (arXiv 2606.29901). Pseudo-label
learning uses *composition* mixup: the mix of two clips contains the events
of both, so its target is the mix of their targets (ICT, as in ATST-SED).
Contrastive learning uses *perturbation* mixup: a faint partner only
perturbs the dominant clip, whose clean teacher embedding stays the target
(as in ATST-Frame pre-training). :class:`ConditionalMixup` draws one
coefficient per row, folds it to the weight of the dominant clip,
``lam = max(lam, 1 - lam)`` in [0.5, 1], and picks the mode with a threshold:
composition when ``lam <= tau``, perturbation when ``lam > tau``. The folding
and the threshold follow the [0.5, tau] / (tau, 1] ranges of a secondary
summary of the paper; the paper's exact formula is not public.

:class:`Mixup` is the DCASE / ATST-SED v1 special case: one coin per call,
one coefficient and permutation per group, no folding, composition only.

Every tensor passed in one call (CNN mel, ATST mel) is mixed with the *same*
partners and coefficients, and the labels are mixed afterwards from the
returned :class:`MixInfo`: drawing them separately, as one reference recipe
does, would pair labels with the wrong audio.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special


def _per_row(v, x):
    """Reshape ``v`` [B] to broadcast over x's batch dim (floats to x's)."""
    dtype = torch.bool if v.dtype == torch.bool else x.dtype
    return v.to(device=x.device, dtype=dtype).view(-1, *([1] * (x.dim() - 1)))


def subset_groups(is_strong, is_weak, names):
    """Row indices of each named subset, the groups that mixup keeps apart.

    Arguments
    ---------
    is_strong : torch.Tensor
        Boolean ``[B]``: strongly labelled rows.
    is_weak : torch.Tensor
        Boolean ``[B]``: weakly labelled rows (the rest are unlabeled).
    names : list
        Subsets to mix, among ``strong``, ``weak`` and ``unlabeled``.

    Returns
    -------
    list
        One long tensor of row indices per name.

    Example
    -------
    >>> strong = torch.tensor([True, False, False])
    >>> weak = torch.tensor([False, True, False])
    >>> subset_groups(strong, weak, ["strong", "unlabeled"])
    [tensor([0]), tensor([2])]
    """
    rows = {
        "strong": is_strong,
        "weak": is_weak,
        "unlabeled": ~(is_strong | is_weak),
    }
    unknown = set(names) - set(rows)
    if unknown:
        raise ValueError(
            f"mix_subsets: unknown subsets {sorted(unknown)}; "
            f"use {sorted(rows)}"
        )
    return [torch.nonzero(rows[n]).flatten() for n in names]


@dataclass
class MixInfo:
    """What a mixup call did to each row of the batch.

    Arguments
    ---------
    lam : torch.Tensor
        Float ``[B]``: weight of the row's own clip (1.0 if not mixed).
    partner : torch.Tensor
        Long ``[B]``: row mixed in (the row's own index if not mixed).
    mixed : torch.Tensor
        Bool ``[B]``: rows that were mixed with another row.
    composition : torch.Tensor
        Bool ``[B]``: mixed rows with ``lam <= tau``.
    perturbation : torch.Tensor
        Bool ``[B]``: mixed rows with ``lam > tau``.
    label_mode : str
        ``"soft"`` or ``"hard"``, used by :meth:`mix_targets`.

    Example
    -------
    >>> info = MixInfo(
    ...     lam=torch.tensor([0.75, 1.0]),
    ...     partner=torch.tensor([1, 1]),
    ...     mixed=torch.tensor([True, False]),
    ...     composition=torch.tensor([True, False]),
    ...     perturbation=torch.tensor([False, False]),
    ... )
    >>> info.mix_targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([[0.7500, 0.2500],
            [0.0000, 1.0000]])
    """

    lam: torch.Tensor
    partner: torch.Tensor
    mixed: torch.Tensor
    composition: torch.Tensor
    perturbation: torch.Tensor
    label_mode: str = "soft"

    @classmethod
    def identity(cls, batch_size, device=None, label_mode="soft"):
        """A :class:`MixInfo` in which no row is mixed.

        Arguments
        ---------
        batch_size : int
            Number of rows.
        device : torch.device, optional
            Device of the tensors.
        label_mode : str
            Label mode recorded in the result.

        Returns
        -------
        MixInfo
            Every row unmixed (``lam`` 1, partner itself).

        Example
        -------
        >>> info = MixInfo.identity(3)
        >>> info.partner.tolist(), info.any_mixed
        ([0, 1, 2], False)
        """
        no = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return cls(
            lam=torch.ones(batch_size, device=device),
            partner=torch.arange(batch_size, device=device),
            mixed=no,
            composition=no.clone(),
            perturbation=no.clone(),
            label_mode=label_mode,
        )

    @property
    def any_mixed(self):
        """bool: whether at least one row was mixed."""
        return bool(self.mixed.any())

    def _check(self, x):
        if x.shape[0] != self.lam.shape[0]:
            raise ValueError(
                f"Tensor has {x.shape[0]} rows, the mix {self.lam.shape[0]}"
            )

    def interpolate(self, z):
        """Interpolate composition rows with their partners, keep the rest.

        Arguments
        ---------
        z : torch.Tensor
            Batch-first tensor (e.g. teacher projections ``[B, T, D]``).

        Returns
        -------
        torch.Tensor
            ``lam * z[i] + (1 - lam) * z[partner]`` on composition rows,
            ``z[i]`` elsewhere (perturbation rows keep the dominant clip).

        Example
        -------
        >>> info = MixInfo(
        ...     lam=torch.tensor([0.6, 0.9]),
        ...     partner=torch.tensor([1, 0]),
        ...     mixed=torch.tensor([True, True]),
        ...     composition=torch.tensor([True, False]),
        ...     perturbation=torch.tensor([False, True]),
        ... )
        >>> info.interpolate(torch.tensor([[10.0], [20.0]]))
        tensor([[14.],
                [20.]])
        """
        self._check(z)
        if not z.is_floating_point():
            z = z.float()  # integer labels would truncate the mix
        lam = _per_row(self.lam, z)
        mixed = lam * z + (1 - lam) * z[self.partner.to(z.device)]
        keep = _per_row(self.composition, z)
        return torch.where(keep, mixed, z)

    def mix_targets(self, y):
        """Supervised targets of the mixed rows.

        Arguments
        ---------
        y : torch.Tensor
            Labels in [0, 1], ``[B, C]`` or ``[B, C, T]``.

        Returns
        -------
        torch.Tensor
            Composition rows: ``lam * y[i] + (1 - lam) * y[partner]``
            (``"soft"``) or the union ``clamp(y[i] + y[partner], 0, 1)``
            (``"hard"``); other rows (perturbation, unmixed): ``y[i]``.

        Example
        -------
        >>> info = MixInfo(
        ...     lam=torch.tensor([0.7, 1.0]),
        ...     partner=torch.tensor([1, 1]),
        ...     mixed=torch.tensor([True, False]),
        ...     composition=torch.tensor([True, False]),
        ...     perturbation=torch.tensor([False, False]),
        ...     label_mode="hard",
        ... )
        >>> info.mix_targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([[1., 1.],
                [0., 1.]])
        """
        if self.label_mode == "soft":
            return self.interpolate(y).clamp(0, 1)
        self._check(y)
        y = y.float() if not y.is_floating_point() else y
        union = (y + y[self.partner.to(y.device)]).clamp(0, 1)
        keep = _per_row(self.composition, y)
        return torch.where(keep, union, y)

    def mix_pseudo_labels(self, t):
        """ICT pseudo-labels from teacher outputs on the *unmixed* inputs.

        Arguments
        ---------
        t : torch.Tensor
            Teacher probabilities, batch first.

        Returns
        -------
        torch.Tensor
            Detached; composition rows ``lam * t[i] + (1 - lam) *
            t[partner]`` (always soft: a convex mix of probabilities),
            other rows ``t[i]``.

        Example
        -------
        >>> info = MixInfo(
        ...     lam=torch.tensor([0.5, 1.0]),
        ...     partner=torch.tensor([1, 1]),
        ...     mixed=torch.tensor([True, False]),
        ...     composition=torch.tensor([True, False]),
        ...     perturbation=torch.tensor([False, False]),
        ... )
        >>> info.mix_pseudo_labels(torch.tensor([[0.2], [0.6]]))
        tensor([[0.4000],
                [0.6000]])
        """
        return self.interpolate(t.detach())


class ConditionalMixup(torch.nn.Module):
    """Within-group mixup whose mode depends on the mixing coefficient.

    For each group of rows (e.g. strong, weak, unlabeled), every row is
    paired with another row of the same group (a random permutation without
    fixed points, so that no row is "mixed" with itself) and mixed as
    ``lam * x[i] + (1 - lam) * x[partner]`` from the clean inputs, with
    ``lam ~ Beta(alpha, alpha)``, folded to ``max(lam, 1 - lam)`` if
    ``fold``. A mixed row is a *composition* if ``lam <= tau`` and a
    *perturbation* otherwise: ``tau=1`` gives pure composition (ATST-SED v1
    ICT), ``tau=0.5`` with folding pure perturbation. The returned
    :class:`MixInfo` derives the matching targets.

    Arguments
    ---------
    alpha : float
        Parameter of the Beta(alpha, alpha) distribution of ``lam``.
    tau : float
        Threshold in [0.5, 1] between composition and perturbation (0.6 is
        an inferred default: ATST-Frame's perturbation mixup keeps a
        dominant weight of at least 0.6).
    prob : float
        Probability that a row (``per_sample``) or a whole call is mixed.
    per_sample : bool
        True: one ``lam`` and one coin per row. False: one coin per call
        and one ``lam`` and permutation per group (DCASE / ATST-SED v1).
    fold : bool
        Replace ``lam`` by ``max(lam, 1 - lam)``, the weight of the dominant
        clip, so that perturbation rows are always dominated by their own
        clip.
    label_mode : str
        ``"soft"`` or ``"hard"`` label mixing (see :meth:`MixInfo.mix_targets`).
    perturbation : str
        The strength of a perturbation row. Whatever the choice, a
        perturbation row keeps the rule that defines it: its partner weight
        ``1 - lam`` is below ``1 - tau``; the Beta draw with ``alpha``
        chooses the mode, so the share of compositions and their
        coefficients do not depend on this choice.

        * ``"beta"``: a folded Beta(``perturbation_alpha``,
          ``perturbation_alpha``) draw conditioned on ``lam > tau`` (by
          inverse CDF); with ``perturbation_alpha=None`` (default) the very
          draw that chose the mode, which has that distribution (with
          ``alpha = 0.2`` and ``tau = 0.75`` the median partner weight is
          about 0.02, -33 dB).
        * ``"uniform"``: ATST-Frame's perturbation mixup, a partner weight
          drawn from U(0, ``min(max_partner_weight, 1 - tau)``), strictly
          below ``1 - tau``.
    max_partner_weight : float
        Upper bound of the uniform partner weight, in (0, 0.5] (ATST-Frame:
        0.4), capped at ``1 - tau``.
    perturbation_alpha : float, optional
        The Beta parameter of the ``"beta"`` strength (None: ``alpha``).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> mix = ConditionalMixup(prob=1.0, tau=0.6)
    >>> cnn, atst = torch.rand(4, 3, 5), torch.rand(4, 2, 7)
    >>> (m_cnn, m_atst), info = mix([cnn, atst], [torch.arange(4)])
    >>> lam = info.lam.view(-1, 1, 1)
    >>> torch.allclose(m_atst, lam * atst + (1 - lam) * atst[info.partner])
    True
    >>> bool((info.lam >= 0.5).all()), info.mixed.tolist()
    (True, [True, True, True, True])
    >>> torch.equal(info.composition, info.mixed & (info.lam <= 0.6))
    True
    >>> uniform = ConditionalMixup(prob=1.0, tau=0.75, perturbation="uniform")
    >>> _, info = uniform([torch.rand(500, 1)], [torch.arange(500)])
    >>> bool((1 - info.lam[info.perturbation] < 0.25).all())
    True
    """

    def __init__(
        self,
        alpha=0.2,
        tau=0.6,
        prob=0.5,
        per_sample=True,
        fold=True,
        label_mode="soft",
        perturbation="beta",
        max_partner_weight=0.4,
        perturbation_alpha=None,
    ):
        super().__init__()
        if label_mode not in ("soft", "hard"):
            raise ValueError(f"label_mode must be soft or hard: {label_mode}")
        if perturbation not in ("beta", "uniform"):
            raise ValueError(
                f"perturbation must be beta or uniform: {perturbation!r}"
            )
        if not 0 < max_partner_weight <= 0.5:
            raise ValueError(
                f"max_partner_weight must be in (0, 0.5]: {max_partner_weight}"
            )
        if not 0.5 <= tau <= 1.0:
            # below 0.5 a "perturbation" row could be dominated by its partner
            raise ValueError(f"tau must be in [0.5, 1]: {tau}")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive: {alpha}")
        if perturbation_alpha is not None and perturbation_alpha <= 0:
            raise ValueError(
                f"perturbation_alpha must be positive: {perturbation_alpha}"
            )
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.prob = float(prob)
        self.per_sample = bool(per_sample)
        self.fold = bool(fold)
        self.label_mode = label_mode
        self.perturbation = perturbation
        self.max_partner_weight = float(max_partner_weight)
        self.perturbation_alpha = (
            None if perturbation_alpha is None else float(perturbation_alpha)
        )

    @property
    def uniform_cap(self):
        """float: the bound of the uniform partner weight,
        ``min(max_partner_weight, 1 - tau)`` (the draw is strictly below)."""
        return min(self.max_partner_weight, 1.0 - self.tau)

    def extra_repr(self):
        """Hyperparameters shown by ``repr``."""
        return (
            f"alpha={self.alpha}, tau={self.tau}, prob={self.prob}, "
            f"per_sample={self.per_sample}, fold={self.fold}, "
            f"label_mode={self.label_mode}, perturbation={self.perturbation}"
            + (
                f", perturbation_alpha={self.perturbation_alpha}"
                if self.perturbation_alpha is not None
                else ""
            )
        )

    def _lam(self, n):
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n,))
        if self.fold:
            lam = torch.maximum(lam, 1 - lam)
        return lam

    def _perturbation_lam(self, n):
        """``n`` weights of the dominant clip, all above ``tau``.

        The "beta" strength: Beta(a, a) conditioned on ``lam > tau`` by
        inverse CDF (for ``tau >= 0.5`` the same as the folded draw
        conditioned on ``lam > tau``). The "uniform" strength: ``1 - w``,
        ``w ~ U(0, uniform_cap)``.
        """
        if self.perturbation == "uniform":
            return 1 - torch.rand(n) * self.uniform_cap
        a = self.perturbation_alpha
        low = special.betainc(a, a, self.tau)
        q = low + torch.rand(n, dtype=torch.float64).numpy() * (1 - low)
        return torch.from_numpy(special.betaincinv(a, a, q)).float()

    def _above_tau(self, lam, rows):
        """Raise float rounding of ``lam`` on ``rows`` to just above tau."""
        floor = torch.nextafter(
            torch.tensor(self.tau, dtype=lam.dtype),
            torch.tensor(2.0, dtype=lam.dtype),
        )
        return torch.where(rows, torch.maximum(lam, floor), lam)

    @staticmethod
    def _derangement(n, max_tries=100):
        """Uniform random permutation of ``n >= 2`` without fixed points."""
        # Rejection sampling: about e ~ 2.7 draws on average.
        for _ in range(max_tries):
            perm = torch.randperm(n)
            if not bool((perm == torch.arange(n)).any()):
                return perm
        return torch.roll(torch.randperm(n), 1)  # pragma: no cover

    @staticmethod
    def _rows(group, batch_size):
        group = torch.as_tensor(group).cpu()
        if group.dtype == torch.bool:
            if group.numel() != batch_size:
                raise ValueError("A boolean group must have one entry per row")
            group = torch.nonzero(group).flatten()
        return group.long().flatten()

    def forward(self, inputs, groups):
        """Mix every input with the same partners and coefficients.

        Arguments
        ---------
        inputs : list of torch.Tensor
            Tensors with the batch first, possibly of different shapes (e.g.
            a CNN mel ``[B, 128, 626]`` and an ATST mel ``[B, 64, 1001]``),
            mixed in the linear (not dB) domain by the caller's choice.
        groups : list of torch.Tensor
            Row indices (or boolean row masks) of each subset; partners are
            drawn within a subset and rows outside every group are not
            mixed. Groups must not overlap.

        Returns
        -------
        inputs : list of torch.Tensor
            Mixed copies (the arguments are not modified).
        info : MixInfo
            The coefficients, partners and modes of every row.
        """
        if not inputs:
            raise ValueError("ConditionalMixup needs at least one input")
        batch = inputs[0].shape[0]
        if any(x.shape[0] != batch for x in inputs):
            raise ValueError("All inputs must have the same batch size")
        rows = [self._rows(g, batch) for g in groups]
        if rows:
            flat = torch.cat(rows)
            if flat.unique().numel() != flat.numel():
                raise ValueError("Groups must not overlap")
            if flat.numel() and (flat.min() < 0 or flat.max() >= batch):
                raise ValueError("Group index out of range")

        lam = torch.ones(batch)
        partner = torch.arange(batch)
        mixed = torch.zeros(batch, dtype=torch.bool)
        # v1 behaviour: one coin for the whole call.
        call_coin = self.per_sample or float(torch.rand(())) < self.prob
        if self.prob > 0 and call_coin:
            for idx in rows:
                n = idx.numel()
                if n < 2:  # a lone row can only be paired with itself
                    continue
                partner[idx] = idx[self._derangement(n)]
                if self.per_sample:
                    lam[idx] = self._lam(n)
                    mixed[idx] = torch.rand(n) < self.prob
                else:
                    lam[idx] = self._lam(1)
                    mixed[idx] = True
        # Unmixed rows: lam 1 and themselves as partner.
        lam = torch.where(mixed, lam, torch.ones_like(lam))
        partner = torch.where(mixed, partner, torch.arange(batch))
        composition = mixed & (lam <= self.tau)
        perturbation = mixed & (lam > self.tau)
        redraw = (
            self.perturbation == "uniform"
            or self.perturbation_alpha is not None
        )
        if redraw and bool(perturbation.any()):
            # The mode stays the Beta draw's; only the strength is redrawn,
            # within the perturbation range (tau, 1].
            lam = lam.clone()
            lam[perturbation] = self._perturbation_lam(int(perturbation.sum()))
            lam = self._above_tau(lam, perturbation)

        device = inputs[0].device
        info = MixInfo(
            lam=lam.to(device),
            partner=partner.to(device),
            mixed=mixed.to(device),
            composition=composition.to(device),
            perturbation=perturbation.to(device),
            label_mode=self.label_mode,
        )
        if not info.any_mixed:
            return [x.clone() for x in inputs], info
        outputs = []
        for x in inputs:
            # Gather the partners from the clean input, never a mixed copy.
            p = info.partner.to(x.device)
            w = _per_row(info.lam, x)
            mix = w * x + (1 - w) * x[p]
            outputs.append(torch.where(_per_row(info.mixed, x), mix, x))
        return outputs, info


class Mixup(ConditionalMixup):
    """DCASE baseline / ATST-SED v1 mixup: composition only.

    With probability ``prob`` per call, each group is mixed with a random
    permutation of itself (without fixed points here, where the baseline's
    ``randperm`` may leave a row paired with itself) and one coefficient
    ``lam ~ Beta(alpha, alpha)`` per group, not folded. Equivalent to
    ``ConditionalMixup(tau=1.0, per_sample=False, fold=False)``.

    Arguments
    ---------
    alpha : float
        Parameter of the Beta(alpha, alpha) distribution of the coefficient.
    prob : float
        Probability of mixing at a given call.
    label_mode : str
        ``"soft"``: targets mixed with the same coefficient (clamped to
        [0, 1]); ``"hard"``: the union ``clamp(y + y[partner], 0, 1)``.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> mix = Mixup(prob=1.0)
    >>> x = torch.arange(4.0).view(4, 1)
    >>> (mx,), info = mix([x], groups=[torch.arange(4)])
    >>> my = info.mix_targets(torch.eye(4))
    >>> torch.allclose(mx, my @ x)  # labels follow their inputs
    True
    >>> len(set(info.lam.tolist())), bool(info.perturbation.any())
    (1, False)
    """

    def __init__(self, alpha=0.2, prob=0.5, label_mode="soft"):
        super().__init__(
            alpha=alpha,
            tau=1.0,
            prob=prob,
            per_sample=False,
            fold=False,
            label_mode=label_mode,
        )


#: Quantiles of the partner weight reported by :class:`MixStatistics`.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class MixStatistics:
    """Statistics of the mixed rows of many :class:`MixInfo`.

    The share of mixed rows, the share of compositions among them, and the
    quantiles of the partner weight ``1 - lam`` of each mode: what an
    ablation records to show what each arm's mixup did.

    Example
    -------
    >>> stats = MixStatistics()
    >>> stats.update(MixInfo(
    ...     lam=torch.tensor([0.6, 0.9, 1.0, 0.95]),
    ...     partner=torch.tensor([1, 0, 2, 1]),
    ...     mixed=torch.tensor([True, True, False, True]),
    ...     composition=torch.tensor([True, False, False, False]),
    ...     perturbation=torch.tensor([False, True, False, True]),
    ... ))
    >>> s = stats.summary()
    >>> s["rows"], s["mixed"], round(s["composition_share"], 4)
    (4, 3, 0.3333)
    >>> round(s["perturbation"]["max"], 4), s["perturbation"]["n"]
    (0.1, 2)
    """

    def __init__(self):
        self.rows = 0
        self.weights = {"composition": [], "perturbation": []}

    def update(self, info):
        """Add the rows of one mixup call.

        Arguments
        ---------
        info : MixInfo
            The call's rows.
        """
        self.rows += int(info.lam.numel())
        weight = (1 - info.lam.detach().double()).cpu()
        for mode in self.weights:
            rows = getattr(info, mode).cpu()
            self.weights[mode].append(weight[rows].numpy())

    def summary(self):
        """The statistics as a JSON-ready dict.

        Returns
        -------
        dict
            ``rows``, ``mixed``, ``mixed_share``, ``composition_share``
            (of the mixed rows) and, per mode, ``n``, ``mean``, ``max`` and
            the partner-weight quantiles ``q05`` ... ``q95``.
        """
        out = {"rows": self.rows}
        n = {}
        for mode, chunks in self.weights.items():
            w = np.concatenate(chunks) if chunks else np.zeros(0)
            n[mode] = int(w.size)
            entry = {"n": int(w.size)}
            if w.size:
                entry["mean"] = float(w.mean())
                entry["max"] = float(w.max())
                for q in QUANTILES:
                    entry[f"q{round(q * 100):02d}"] = float(np.quantile(w, q))
            out[mode] = entry
        mixed = n["composition"] + n["perturbation"]
        out["mixed"] = mixed
        out["mixed_share"] = mixed / self.rows if self.rows else None
        out["composition_share"] = n["composition"] / mixed if mixed else None
        return out


def mixup_statistics(mixup, group_sizes, calls=200, seed=0):
    """Mixed-row statistics of a mixup configuration, by drawing from it.

    Arguments
    ---------
    mixup : ConditionalMixup
        The configuration (e.g. an arm's YAML ``mixup``).
    group_sizes : list of int
        Rows of each mixed group in a batch (e.g. ``[2, 2, 4]``).
    calls : int
        Number of batches drawn.
    seed : int
        Seed of the draws (the global RNG state is restored afterwards).

    Returns
    -------
    dict
        :meth:`MixStatistics.summary` of the draws.

    Example
    -------
    >>> s = mixup_statistics(ConditionalMixup(prob=1.0, tau=1.0), [4], 50)
    >>> s["rows"], s["composition_share"], s["perturbation"]["n"]
    (200, 1.0, 0)
    """
    stats = MixStatistics()
    batch = sum(group_sizes)
    bounds = np.cumsum([0, *group_sizes])
    groups = [torch.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    x = torch.zeros(batch, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(calls):
            stats.update(mixup([x], groups)[1])
    return stats.summary()
