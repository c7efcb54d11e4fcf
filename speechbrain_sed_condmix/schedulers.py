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


class ExponentialRampUp:
    """Scale a base value by :func:`exponential_rampup`.

    The state is the step alone, which the caller keeps (SpeechBrain's Brain
    checkpoints ``optimizer_step``), so nothing extra needs saving.

    Arguments
    ---------
    base : float
        Value reached at the end of the ramp.
    length : int
        Ramp length in steps.

    Example
    -------
    >>> ramp = ExponentialRampUp(2.0, 10)
    >>> ramp(10), round(ramp(0), 4)
    (2.0, 0.0135)
    """

    def __init__(self, base, length):
        self.base = float(base)
        self.length = int(length)

    def __call__(self, step):
        """Return the ramped value at ``step``."""
        return self.base * exponential_rampup(step, self.length)
