"""Optimiser groups and per-step schedules of ATST-Frame pretraining.

AdamW over the student, in two groups: weights with more than one
dimension that are not biases are decayed (positional and mask embeddings
included), the rest (biases, LayerNorm and BatchNorm) are not. Every step
sets the learning rate (linear warm-up, then a half cosine to a floor),
the weight decay of the decayed group (a half cosine *rising* from its
start to its end value) and the teacher's EMA momentum
(:func:`~speechbrain_sed_condmix.pretraining.model.cosine_momentum`).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import math

from speechbrain_sed_condmix.pretraining.model import cosine_momentum
from speechbrain_sed_condmix.teacher import unwrap_module


def pretrain_param_groups(model, weight_decay=0.04):
    """Decayed (``ndim > 1``, not ``.bias``) and undecayed parameters.

    Arguments
    ---------
    model : torch.nn.Module
        The student (wrappers are unwrapped).
    weight_decay : float
        Initial decay of the first group (the schedule sets it per step).

    Returns
    -------
    list of dict
        ``[{"params": decayed, "weight_decay": weight_decay, "decayed":
        True}, {"params": others, "weight_decay": 0.0, "decayed":
        False}]``.

    Example
    -------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    >>> [len(g["params"]) for g in pretrain_param_groups(net)]
    [1, 3]
    """
    decayed, others = [], []
    for name, param in unwrap_module(model).named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim > 1 and not name.endswith(".bias"):
            decayed.append(param)
        else:
            others.append(param)
    return [
        {"params": decayed, "weight_decay": weight_decay, "decayed": True},
        {"params": others, "weight_decay": 0.0, "decayed": False},
    ]


def warmup_cosine_lr(step, peak, warmup_steps, total_steps, floor=1e-6):
    """Linear warm-up from 0 to ``peak``, then a half cosine to ``floor``.

    ``peak * t / W`` for ``t < W``; then
    ``floor + (peak - floor) * (1 + cos(pi * (t - W) / (T - W))) / 2``,
    held at ``floor`` after ``T``.

    Arguments
    ---------
    step : int
        Optimiser steps done, ``t``.
    peak : float
        Rate at the end of the warm-up.
    warmup_steps : int
        ``W``.
    total_steps : int
        ``T``.
    floor : float
        Rate at ``T``.

    Returns
    -------
    float
        The learning rate.

    Example
    -------
    >>> warmup_cosine_lr(5, 1.0, 10, 110, floor=0.0)
    0.5
    >>> round(warmup_cosine_lr(60, 1.0, 10, 110, floor=0.0), 6)
    0.5
    >>> warmup_cosine_lr(200, 1.0, 10, 110, floor=0.1)
    0.1
    """
    if step < warmup_steps:
        return peak * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(step - warmup_steps, span) / span
    return floor + (peak - floor) * (1.0 + math.cos(math.pi * progress)) / 2


def cosine_weight_decay(step, total_steps, start=0.04, end=0.4):
    """Weight decay along a half cosine from ``start`` to ``end``.

    ``end + (start - end) * (1 + cos(pi * t / T)) / 2``, held at ``end``
    after ``T`` (ATST-Frame: 0.04 rising to 0.4, no warm-up).

    Arguments
    ---------
    step : int
        Optimiser steps done, ``t``.
    total_steps : int
        ``T``.
    start : float
        Decay at step 0.
    end : float
        Decay at ``T``.

    Returns
    -------
    float
        The weight decay.

    Example
    -------
    >>> [round(cosine_weight_decay(t, 10), 6) for t in (0, 10, 20)]
    [0.04, 0.4, 0.4]
    >>> round(cosine_weight_decay(5, 10), 6)
    0.22
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2


class PretrainSchedule:
    """Learning rate, weight decay and EMA momentum of each step.

    The peak learning rate scales with the global batch, as ATST-Frame's:
    ``peak = base_lr * batch_size * world_size / 256``.

    Arguments
    ---------
    base_lr : float
        Rate per 256 clips of global batch.
    warmup_epochs : float
        Warm-up length in epochs.
    min_lr : float
        Rate at the last step.
    weight_decay_start : float
        Decay of the decayed group at step 0.
    weight_decay_end : float
        Its decay at the last step.
    ema_base : float
        Teacher momentum at step 0 (it rises to 1).

    Example
    -------
    >>> import torch
    >>> opt = torch.optim.AdamW(pretrain_param_groups(torch.nn.Linear(2, 2)))
    >>> s = PretrainSchedule(base_lr=2.56, warmup_epochs=1, min_lr=0.0)
    >>> m = s(opt, step=5, steps_per_epoch=10, epochs=3, batch_size=10)
    >>> m == cosine_momentum(6, 30, 0.997)
    True
    >>> round(opt.param_groups[0]["lr"], 6), opt.param_groups[1]["weight_decay"]
    (0.05, 0.0)
    """

    def __init__(
        self,
        base_lr=4e-4,
        warmup_epochs=10,
        min_lr=1e-6,
        weight_decay_start=0.04,
        weight_decay_end=0.4,
        ema_base=0.997,
    ):
        self.base_lr = float(base_lr)
        self.warmup_epochs = float(warmup_epochs)
        self.min_lr = float(min_lr)
        self.weight_decay_start = float(weight_decay_start)
        self.weight_decay_end = float(weight_decay_end)
        self.ema_base = float(ema_base)

    def peak_lr(self, batch_size, world_size=1):
        """``base_lr * batch_size * world_size / 256``.

        Arguments
        ---------
        batch_size : int
            Clips per process and step.
        world_size : int
            Processes.

        Returns
        -------
        float
            The peak rate.
        """
        return self.base_lr * batch_size * world_size / 256.0

    def momentum(self, step, total_steps):
        """Teacher momentum after ``step`` optimiser steps.

        Arguments
        ---------
        step : int
            Optimiser steps done.
        total_steps : int
            The run's optimiser steps.

        Returns
        -------
        float
            See :func:`cosine_momentum`.
        """
        return cosine_momentum(step, total_steps, self.ema_base)

    def __call__(
        self, optimizer, step, steps_per_epoch, epochs, batch_size, world=1
    ):
        """Set the rates and decays for step ``step``; return the momentum.

        Arguments
        ---------
        optimizer : torch.optim.Optimizer
            Groups from :func:`pretrain_param_groups`.
        step : int
            Optimiser steps done before this one.
        steps_per_epoch : int
            Optimiser steps per epoch.
        epochs : int
            Epochs of the run.
        batch_size : int
            Clips per process and step.
        world : int
            Processes.

        Returns
        -------
        float
            The teacher momentum for the update after this step.
        """
        total = max(int(steps_per_epoch * epochs), 1)
        warmup = int(self.warmup_epochs * steps_per_epoch)
        lr = warmup_cosine_lr(
            step,
            self.peak_lr(batch_size, world),
            warmup,
            total,
            floor=self.min_lr,
        )
        decay = cosine_weight_decay(
            step, total, self.weight_decay_start, self.weight_decay_end
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = decay if group.get("decayed") else 0.0
        return self.momentum(step + 1, total)
