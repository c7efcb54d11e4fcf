"""Ramp-up schedules for the learning rate and the unsupervised weights.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import math


def exponential_rampup(step, length):
    """The sigmoid-shaped ramp ``exp(-5 (1 - t/T)^2)`` of Mean Teacher.

    Arguments
    ---------
    step : int
        Current optimiser step ``t``.
    length : int
        Ramp length ``T`` in steps; ``0`` means no ramp (factor 1).

    Returns
    -------
    float
        The factor in ``(0, 1]``; 1 from ``t >= T`` on.

    Example
    -------
    >>> round(exponential_rampup(0, 100), 6)
    0.006738
    >>> exponential_rampup(50, 100) == math.exp(-5 * 0.25)
    True
    >>> exponential_rampup(200, 100)
    1.0
    """
    if length <= 0:
        return 1.0
    progress = min(max(step, 0), length) / length
    return math.exp(-5.0 * (1.0 - progress) ** 2)


def warmup_cosine_factor(step, warmup, total, floor=None):
    """Learning-rate factor: exponential warm-up, then optional cosine.

    During warm-up the factor is :func:`exponential_rampup`. Afterwards it is
    1 when ``floor`` is None (ATST-SED stage 1, the DCASE baseline), or it
    decays along a half cosine from 1 at the end of warm-up to ``floor`` at
    ``total`` (ATST-SED stage 2 uses ``floor=0.1``):
    ``floor + (1 - floor) * (1 + cos(pi * (t - T_w) / (T - T_w))) / 2``.

    Arguments
    ---------
    step : int
        Current optimiser step ``t``.
    warmup : int
        Warm-up length ``T_w`` in steps.
    total : int
        Total number of steps ``T``.
    floor : float, optional
        Final factor of the cosine decay; None keeps 1 after warm-up.

    Returns
    -------
    float
        The factor.

    Example
    -------
    >>> warmup_cosine_factor(10, 10, 110, floor=0.1)
    1.0
    >>> round(warmup_cosine_factor(60, 10, 110, floor=0.1), 6)
    0.55
    >>> warmup_cosine_factor(500, 10, 110, floor=0.1)
    0.1
    >>> warmup_cosine_factor(500, 10, 110)
    1.0
    """
    if step < warmup or floor is None:
        return exponential_rampup(step, warmup)
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0), span) / span
    return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * progress)) / 2


class WarmupCosineLR:
    """Per-step learning rates: exponential warm-up, then optional cosine.

    Each parameter group's rate is its peak rate (``group["peak_lr"]``, set
    by ``SEDBrain.init_optimizers`` from the group's ``lr``) times
    :func:`warmup_cosine_factor`. SEDBrain calls it before every optimiser
    step; the step count is the Brain's checkpointed ``optimizer_step``, so
    the schedule has no state of its own.

    Arguments
    ---------
    warmup_epochs : float
        Warm-up length in epochs.
    floor : float, optional
        Final factor of the cosine decay at the last epoch; None keeps the
        peak rate after the warm-up.

    Example
    -------
    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    >>> opt.param_groups[0]["peak_lr"] = 0.1
    >>> schedule = WarmupCosineLR(warmup_epochs=1, floor=0.1)
    >>> schedule(opt, step=10, steps_per_epoch=10, epochs=11)
    1.0
    >>> round(schedule(opt, step=60, steps_per_epoch=10, epochs=11), 6)
    0.55
    >>> round(opt.param_groups[0]["lr"], 6)
    0.055
    """

    def __init__(self, warmup_epochs, floor=None):
        self.warmup_epochs = float(warmup_epochs)
        self.floor = floor

    def __call__(self, optimizer, step, steps_per_epoch, epochs):
        """Set every group's rate for optimiser step ``step``; the factor."""
        steps_per_epoch = steps_per_epoch or 0
        factor = warmup_cosine_factor(
            step,
            int(self.warmup_epochs * steps_per_epoch),
            epochs * steps_per_epoch,
            floor=self.floor,
        )
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        return factor
