"""Mixup for semi-supervised SED.

:class:`Mixup` is the DCASE baseline's mixup: with probability ``prob`` per
step, each group of rows (e.g. the strong part and the weak part of a batch) is
mixed with a random permutation of itself and one coefficient drawn from
Beta(alpha, alpha). Every tensor passed in one call (features, embeddings,
labels) is mixed with the *same* partners and coefficient: mixing inputs and
their targets with different partners, as one reference recipe does, would
pair labels with the wrong audio.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch


class Mixup(torch.nn.Module):
    """Within-group mixup of inputs and targets.

    Arguments
    ---------
    alpha : float
        Parameter of the Beta(alpha, alpha) distribution of the coefficient.
    prob : float
        Probability of mixing at a given step (one draw per call).
    label_mode : str
        ``"soft"``: targets mixed with the same coefficient (clamped to
        [0, 1]); ``"hard"``: the union ``clamp(y + y[perm], 0, 1)``.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> mix = Mixup(prob=1.0)
    >>> x = torch.arange(4.0).view(4, 1)
    >>> y = torch.eye(4)
    >>> (mx,), (my,) = mix([x], [y], groups=[torch.arange(4)])
    >>> torch.allclose(mx, my @ x)  # labels follow their inputs
    True
    """

    def __init__(self, alpha=0.2, prob=0.5, label_mode="soft"):
        super().__init__()
        if label_mode not in ("soft", "hard"):
            raise ValueError(f"label_mode must be soft or hard: {label_mode}")
        self.alpha = float(alpha)
        self.prob = float(prob)
        self.label_mode = label_mode

    def draw(self, n, device=None):
        """Draw one coefficient and a permutation of ``n`` rows.

        Arguments
        ---------
        n : int
            Number of rows in the group.
        device : torch.device, optional
            Device of the permutation.

        Returns
        -------
        lam : float
            Mixing coefficient of the original rows.
        perm : torch.Tensor
            Partner of each row.
        """
        beta = torch.distributions.Beta(self.alpha, self.alpha)
        lam = float(beta.sample())
        perm = torch.randperm(n).to(device)
        return lam, perm

    def forward(self, inputs, targets, groups):
        """Mix ``inputs`` and ``targets`` within each group of rows.

        Arguments
        ---------
        inputs : list of torch.Tensor
            Tensors with the batch first, mixed linearly.
        targets : list of torch.Tensor
            Label tensors with the batch first, mixed by ``label_mode``.
        groups : list of torch.Tensor
            Row indices of each group; rows outside every group are kept.

        Returns
        -------
        inputs : list of torch.Tensor
            Mixed copies of the inputs.
        targets : list of torch.Tensor
            Mixed copies of the targets.
        """
        inputs = [x.clone() for x in inputs]
        targets = [y.clone() for y in targets]
        if self.prob <= 0 or float(torch.rand(())) >= self.prob:
            return inputs, targets
        for rows in groups:
            if len(rows) < 2:
                continue
            lam, perm = self.draw(len(rows), rows.device)
            partners = rows[perm]
            for x in inputs:
                x[rows] = lam * x[rows] + (1 - lam) * x[partners]
            for y in targets:
                if self.label_mode == "soft":
                    mixed = lam * y[rows] + (1 - lam) * y[partners]
                else:
                    mixed = y[rows] + y[partners]
                y[rows] = mixed.clamp(0, 1)
        return inputs, targets
