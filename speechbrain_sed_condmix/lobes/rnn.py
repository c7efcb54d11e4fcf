"""The CRNN's bidirectional GRU, run with fewer CPU threads.

A recurrent layer on CPU is a chain of small operations (for the CRNN's
GRU at the paper's batch, 624 steps of a [48, 128] x [128, 384] product and
a few gate operations per forward). Splitting each of them over threads
costs more in synchronisation than it gains, and on a machine whose cores
are shared every split waits for the slowest thread: measured on a loaded
2-core machine, the GRU's forward and backward took 1.1-1.5 s with one
thread and 7-25 s with two (``benchmarks/profile_step.py`` points there).
:func:`run_with_threads` runs a function's forward, and its backward, with
``torch.set_num_threads(n)`` and restores the previous count after each;
:class:`BidirectionalGRU` runs its GRU so, with one thread by default. The
result is the same computation: only the thread count changes. The backward
differentiates the GRU's own graph with ``torch.autograd.grad``, which
module backward hooks on the GRU (and ``FlopCounterMode``) do not support:
use ``cpu_threads=None`` (or one torch thread) with those.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def intra_op_threads(n):
    """Set ``torch.set_num_threads(n)`` inside the block, then restore it.

    Arguments
    ---------
    n : int
        Threads inside the block.

    Example
    -------
    >>> before = torch.get_num_threads()
    >>> with intra_op_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _WithThreads(torch.autograd.Function):
    """Forward and backward of ``function`` with ``n`` intra-op threads.

    The forward builds the module's own graph on a detached input; the
    backward differentiates that graph with the same thread count and hands
    the gradients of the input and of the parameters to the outer graph
    (so they are accumulated once, by the outer graph's leaves).
    """

    @staticmethod
    def forward(ctx, function, n, params, x, *trainable):
        """Run ``function(x)`` on ``n`` threads, keeping its graph."""
        with intra_op_threads(n), torch.enable_grad():
            inner_x = x.detach().requires_grad_(x.requires_grad)
            out = function(inner_x)
        ctx.n = n
        ctx.inner = (inner_x, out, params)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out):
        """Back-propagate through the kept graph on ``n`` threads."""
        inner_x, out, params = ctx.inner
        wanted = ([inner_x] if inner_x.requires_grad else []) + params
        with intra_op_threads(ctx.n):
            grads = torch.autograd.grad(
                out, wanted, grad_out, allow_unused=True
            )
        grad_x = grads[0] if inner_x.requires_grad else None
        grad_params = grads[1:] if inner_x.requires_grad else grads
        return (None, None, None, grad_x, *grad_params)


def run_with_threads(function, n, x, params):
    """``function(x)`` with ``n`` intra-op threads, forward and backward.

    Arguments
    ---------
    function : callable
        Function of one tensor giving one tensor, e.g. a module.
    n : int
        Intra-op threads for its forward and backward.
    x : torch.Tensor
        Input.
    params : iterable of torch.Tensor
        Every tensor other than ``x`` that ``function`` differentiates
        through (a module's parameters); those that require a gradient
        get it.

    Returns
    -------
    torch.Tensor
        ``function(x)``, differentiable with respect to ``x`` and
        ``params``.

    Example
    -------
    >>> lin = torch.nn.Linear(3, 2)
    >>> x = torch.randn(4, 3, requires_grad=True)
    >>> run_with_threads(lin, 1, x, lin.parameters()).sum().backward()
    >>> torch.allclose(x.grad, lin.weight.sum(0).expand(4, 3))
    True
    >>> torch.allclose(lin.bias.grad, torch.full((2,), 4.0))
    True
    """
    params = [p for p in params if p.requires_grad]
    if not torch.is_grad_enabled() or not (x.requires_grad or params):
        with intra_op_threads(n):
            return function(x)
    return _WithThreads.apply(function, n, params, x, *params)


class BidirectionalGRU(nn.Module):
    """A batch-first bidirectional GRU held in ``self.rnn``.

    Arguments
    ---------
    input_size : int
        Input feature size.
    hidden_size : int
        Hidden size per direction.
    num_layers : int
        Number of stacked layers.
    dropout : float
        Dropout between GRU layers.
    cpu_threads : int or None
        Intra-op threads for the GRU's forward and backward on CPU (see
        :mod:`speechbrain_sed_condmix.lobes.threads`): its many small
        steps run faster on one thread than split over several. None:
        torch's current setting.

    Example
    -------
    >>> rnn = BidirectionalGRU(8, 4)
    >>> rnn(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 8])
    """

    def __init__(
        self, input_size, hidden_size, num_layers=2, dropout=0.0, cpu_threads=1
    ):
        super().__init__()
        self.cpu_threads = cpu_threads
        self.rnn = nn.GRU(
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=True,
            batch_first=True,
        )

    def _run(self, x):
        out, _ = self.rnn(x)
        return out

    def forward(self, x):
        """Run the GRU.

        Arguments
        ---------
        x : torch.Tensor
            Input, [batch, time, input_size].

        Returns
        -------
        torch.Tensor
            Output, [batch, time, 2 * hidden_size].
        """
        if (
            self.cpu_threads is None
            or x.device.type != "cpu"
            or torch.get_num_threads() <= self.cpu_threads
        ):
            return self._run(x)
        return run_with_threads(
            self._run, self.cpu_threads, x, self.rnn.parameters()
        )


class UnidirectionalGRU(BidirectionalGRU):
    """A batch-first GRU in the forward direction only (causal).

    Same arguments and thread handling as :class:`BidirectionalGRU`; the
    output has ``hidden_size`` features per frame, each computed from the
    current and past frames only.

    Example
    -------
    >>> rnn = UnidirectionalGRU(8, 4)
    >>> x = torch.randn(2, 5, 8)
    >>> y = rnn(x)
    >>> y.shape
    torch.Size([2, 5, 4])
    >>> x[:, 3:] = 0.0  # the future changes, the past outputs do not
    >>> torch.equal(rnn(x)[:, :3], y[:, :3])
    True
    """

    def __init__(
        self, input_size, hidden_size, num_layers=2, dropout=0.0, cpu_threads=1
    ):
        super().__init__(
            input_size, hidden_size, num_layers, dropout, cpu_threads
        )
        self.rnn = nn.GRU(
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=False,
            batch_first=True,
        )
