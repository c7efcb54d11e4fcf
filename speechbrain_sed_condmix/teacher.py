"""Mean Teacher: an exponential moving average (EMA) copy of the student.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import copy

import torch
from torch import nn


def unwrap_module(module):
    """Return the plain module inside DDP/DataParallel or torch.compile.

    The student seen by the Brain may be wrapped (``DistributedDataParallel``
    or ``DataParallel`` keep it in ``.module``, ``torch.compile`` in
    ``._orig_mod``), possibly several times. Code that copies, inspects or
    groups its parameters needs the plain module: its state-dict keys and
    attributes carry no wrapper prefix.

    Arguments
    ---------
    module : torch.nn.Module
        A module, wrapped or not.

    Returns
    -------
    torch.nn.Module
        The innermost module (``module`` itself when it is not wrapped).

    Example
    -------
    >>> net = nn.Linear(2, 2)
    >>> unwrap_module(nn.DataParallel(nn.DataParallel(net))) is net
    True
    >>> unwrap_module(net) is net
    True
    """
    while True:
        if isinstance(getattr(module, "module", None), nn.Module):
            module = module.module  # DDP / DataParallel
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod  # torch.compile
        else:
            return module


def _ema_(targets, sources, alpha):
    """``t <- alpha * t + (1 - alpha) * s`` for each pair, in place.

    Sources of another dtype are cast to the target's first.
    """
    sources = [s.to(t.dtype) for t, s in zip(targets, sources)]
    torch._foreach_mul_(targets, alpha)
    torch._foreach_add_(targets, sources, alpha=1.0 - alpha)


class EMATeacher(nn.Module):
    """Mean Teacher model whose parameters track the student by EMA.

    ``self.model`` is a deep copy of the student with every parameter
    frozen (``requires_grad=False``), so optimisers built from trainable
    parameters skip it and SpeechBrain's ``Brain`` does not wrap it in DDP.
    After each optimiser step call :meth:`update`, which sets, for every
    parameter,
    ``theta_t <- alpha * theta_t + (1 - alpha) * theta_s`` with
    ``alpha = min(1 - 1 / (step + 1), decay)`` (DCASE Task 4 baseline).
    Buffers (BatchNorm running statistics) follow ``buffers``: ``"keep"``
    leaves them alone, as in the reference (whose teacher runs in train mode
    and so normalises with batch statistics); ``"ema"`` averages them like
    the parameters; ``"copy"`` copies the student's.

    Train/eval mode:

    * ``eval_mode=True`` (default): the teacher always runs in eval mode
      (dropout off, BatchNorm normalising with its running statistics and
      not updating them); :meth:`train` keeps ``self.model`` in eval mode,
      so ``Brain``'s ``modules.train()`` cannot switch it back. This is the
      better-founded choice for producing targets. Its running statistics
      are then averaged like its weights (``buffers="ema"``): statistics
      frozen at construction would be meaningless, and the student's current
      statistics do not match the averaged weights (measured: a teacher with
      copied statistics gave maximum frame probabilities of 0.46 where the
      same weights with their own statistics gave 0.82).
    * ``eval_mode=False``: the teacher follows the parent's mode, as in the
      reference (Lightning calls ``.train()`` on everything): during
      training its dropout is active and its BatchNorm uses batch
      statistics and updates its own running statistics from its forwards.

    The teacher is an ``nn.Module``, so SpeechBrain's ``Checkpointer`` saves
    and recovers it with ``add_recoverable("teacher", teacher)``.

    Arguments
    ---------
    student : torch.nn.Module
        The student model (possibly DDP-wrapped) to copy.
    decay : float
        Upper bound of the EMA factor alpha.
    eval_mode : bool
        Keep the teacher in eval mode whatever the parent's mode.
    buffers : str or None
        ``"ema"``, ``"copy"`` or ``"keep"`` (see above); ``None`` means
        ``"ema"`` in eval mode and ``"keep"`` otherwise.
    decay_warmup : bool
        True: ``alpha = min(1 - 1/(step + 1), decay)``, so a new teacher
        follows the student closely at first (DCASE baseline, ATST-SED
        stage 1). False: the constant ``decay`` (ATST-SED stage 2, whose
        teacher starts from a trained stage-1 teacher).

    Example
    -------
    >>> student = torch.nn.Linear(2, 1)
    >>> teacher = EMATeacher(student)
    >>> with torch.no_grad():
    ...     _ = student.weight.add_(1.0)
    >>> teacher.update(student, step=1)  # alpha = 1/2
    >>> torch.allclose(teacher.model.weight, student.weight - 0.5)
    True
    >>> teacher(torch.zeros(1, 2)).requires_grad
    False
    """

    def __init__(
        self,
        student,
        decay=0.999,
        eval_mode=True,
        buffers=None,
        decay_warmup=True,
    ):
        super().__init__()
        self.decay = float(decay)
        self.decay_warmup = bool(decay_warmup)
        self.eval_mode = bool(eval_mode)
        if buffers is None:
            buffers = "ema" if eval_mode else "keep"
        if buffers not in ("ema", "copy", "keep"):
            raise ValueError(f"buffers must be ema, copy or keep: {buffers}")
        self.buffers = buffers
        self.model = copy.deepcopy(unwrap_module(student))
        self.model.requires_grad_(False)
        if self.eval_mode:
            self.model.eval()

    def train(self, mode=True):
        """Set the training mode, keeping the teacher in eval if asked.

        Arguments
        ---------
        mode : bool
            Training mode requested by the caller.

        Returns
        -------
        EMATeacher
            ``self``.

        Example
        -------
        >>> t = EMATeacher(torch.nn.Dropout(0.5)).train()
        >>> t.training, t.model.training
        (True, False)
        """
        super().train(mode)
        if self.eval_mode:
            self.model.eval()
        return self

    def alpha(self, step):
        """EMA factor ``min(1 - 1 / (step + 1), decay)`` (or ``decay``).

        Arguments
        ---------
        step : int
            Optimiser step count (0 for the first update).

        Returns
        -------
        float
            The EMA factor.

        Example
        -------
        >>> EMATeacher(torch.nn.Linear(1, 1)).alpha(2)
        0.6666666666666667
        >>> EMATeacher(torch.nn.Linear(1, 1), decay_warmup=False).alpha(2)
        0.999
        """
        if not self.decay_warmup:
            return self.decay
        return min(1.0 - 1.0 / (step + 1), self.decay)

    @torch.no_grad()
    def update(self, student, step):
        """Move the teacher's parameters towards the student's.

        Arguments
        ---------
        student : torch.nn.Module
            The student (DDP or torch.compile wrappers are unwrapped).
        step : int
            Optimiser step count, used for the EMA ramp.

        Example
        -------
        >>> s = torch.nn.Linear(1, 1)
        >>> t = EMATeacher(s)
        >>> t.update(s, step=10)
        """
        student = unwrap_module(student)
        alpha = self.alpha(step)
        t_params = list(self.model.parameters())
        s_params = list(student.parameters())
        if len(t_params) != len(s_params):
            raise ValueError(
                f"Teacher has {len(t_params)} parameters, student "
                f"{len(s_params)}: not the same architecture"
            )
        # One multi-tensor (foreach) call per operation instead of a Python
        # loop over parameters: the same element-wise arithmetic
        # (t = t * alpha, then t += (1 - alpha) * s), fewer kernel launches.
        _ema_(t_params, [p.detach() for p in s_params], alpha)
        if self.buffers == "keep":
            _broadcast_buffers(self.model)
            return
        t_bufs = list(self.model.buffers())
        s_bufs = list(student.buffers())
        if len(t_bufs) != len(s_bufs):
            raise ValueError("Teacher and student buffers differ")
        averaged = [
            (b_t, b_s)
            for b_t, b_s in zip(t_bufs, s_bufs)
            if self.buffers == "ema" and b_t.is_floating_point()
        ]
        if averaged:
            _ema_(*map(list, zip(*averaged)), alpha)
        for b_t, b_s in zip(t_bufs, s_bufs):
            if not (self.buffers == "ema" and b_t.is_floating_point()):
                # copies, and integer counters such as num_batches_tracked
                b_t.copy_(b_s)

    def forward(self, *args, **kwargs):
        """Run the teacher model without building a graph.

        Arguments
        ---------
        *args : tuple
            Positional inputs of the wrapped model.
        **kwargs : dict
            Keyword inputs of the wrapped model.

        Returns
        -------
        object
            Whatever the wrapped model returns.

        Example
        -------
        >>> EMATeacher(torch.nn.Linear(2, 3))(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
        """
        with torch.no_grad():
            return self.model(*args, **kwargs)


def _broadcast_buffers(model):
    """Give every rank rank 0's buffers (no-op outside DDP).

    A teacher that keeps its own BatchNorm statistics (``buffers="keep"``,
    a train-mode teacher) updates them from each rank's own batches, so
    without this the ranks' teachers drift apart. The references put their
    teacher inside the DDP-wrapped module, whose ``broadcast_buffers``
    hands rank 0's buffers to every rank at each step; this does the same
    for the unwrapped teacher, once per update.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() < 2:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
