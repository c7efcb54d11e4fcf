"""Graceful pre-emption: checkpoint and exit on SIGTERM or SIGUSR1.

Cluster schedulers warn a job before they kill it: SLURM and Kubernetes
send SIGTERM (SLURM sends SIGUSR1, or another signal, with ``--signal``).
:class:`GracefulPreemption`, a ``Brain`` mixin, turns that warning into a
resumable stop:

* during training the signal only sets a flag; the current optimiser step
  finishes, an intra-epoch checkpoint is written (SpeechBrain's, the one
  that resumes exactly), and the process exits with
  :data:`PREEMPTED_EXIT_STATUS` (75, ``EX_TEMPFAIL``: "try again"). The
  same command resumes from that checkpoint;
* a signal during validation is honoured once the epoch's checkpoint is
  written; outside ``fit`` (e.g. the test stage) the process exits with
  the same status at once, as the checkpoints are already complete;
* under DDP (``torchrun``), the ranks agree after every optimiser step
  (an all-reduce of the flag), so that every rank stops at the same step
  even when the signal reaches them at different times; the main process
  alone writes the checkpoint.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
import signal

import torch
from speechbrain.utils.distributed import if_main_process

logger = logging.getLogger(__name__)

#: Exit status of a pre-empted run (``EX_TEMPFAIL`` of ``sysexits.h``).
PREEMPTED_EXIT_STATUS = 75
#: The signals that request a graceful stop.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Raised to end a pre-empted run with :data:`PREEMPTED_EXIT_STATUS`.

    A ``SystemExit``: uncaught, the interpreter exits with that status and
    no traceback.
    """

    def __init__(self):
        super().__init__(PREEMPTED_EXIT_STATUS)


class PreemptionHandler:
    """Records SIGTERM/SIGUSR1; exits at once unless deferring.

    Arguments
    ---------
    signals : sequence of signal.Signals
        The signals to handle (default: SIGTERM and SIGUSR1).

    Example
    -------
    >>> import os
    >>> handler = PreemptionHandler()
    >>> handler.install()
    >>> handler.deferring = True
    >>> os.kill(os.getpid(), signal.SIGUSR1)
    >>> handler.received
    'SIGUSR1'
    >>> handler.restore()
    """

    def __init__(self, signals=PREEMPTION_SIGNALS):
        self.signals = tuple(signals)
        self.received = None
        self.deferring = False
        self._previous = {}

    def install(self):
        """Handle the signals from now on (call from the main thread)."""
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self):
        """Put back the handlers found by :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _on_signal(self, signum, frame):
        self.received = signal.Signals(signum).name
        if not self.deferring:
            logger.warning(
                "Received %s outside training: exiting with status %d "
                "(the checkpoints are complete; run the same command again)",
                self.received,
                PREEMPTED_EXIT_STATUS,
            )
            raise Preempted()
        logger.warning(
            "Received %s: stopping after the current optimiser step, with "
            "a checkpoint (exit status %d)",
            self.received,
            PREEMPTED_EXIT_STATUS,
        )

    def agreed(self, device="cpu"):
        """Whether any process received a signal (a collective under DDP).

        Arguments
        ---------
        device : str or torch.device
            Where the flag's tensor lives for the all-reduce (the CUDA
            device with NCCL).

        Returns
        -------
        bool
            True on every rank when at least one rank was signalled.
        """
        local = self.received is not None
        if not _distributed():
            return local
        if torch.distributed.get_backend() != "nccl":
            device = "cpu"
        flag = torch.tensor([int(local)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


class GracefulPreemption:
    """``Brain`` mixin: a pre-empted run checkpoints and exits (module doc).

    Put it before ``speechbrain.Brain`` in the bases. It hooks
    ``fit``, ``_fit_train``, ``_should_save_intra_epoch_ckpt`` and
    ``_save_intra_epoch_ckpt``.
    """

    preemption = None
    _preempting = False
    _training_epoch = None

    def fit(self, *args, **kwargs):
        """``Brain.fit`` with SIGTERM/SIGUSR1 turned into a checkpoint."""
        if self.preemption is None:
            self.preemption = PreemptionHandler()
            self.preemption.install()
        self.preemption.deferring = True
        try:
            super().fit(*args, **kwargs)
            # Signalled during the last validation: its checkpoint is
            # written; the same command goes on with the test stage.
            if self._preemption_agreed():
                self._exit_preempted("after the last epoch")
        finally:
            self.preemption.deferring = False

    def _preemption_agreed(self):
        return self.preemption is not None and self.preemption.agreed(
            self.device
        )

    def _fit_train(self, train_set, epoch, enable):
        # Signalled during the previous validation: the end-of-epoch
        # checkpoint is written, so stop before the next epoch starts.
        if self._preemption_agreed():
            self._exit_preempted(f"before epoch {epoch}")
        self._training_epoch = epoch
        return super()._fit_train(train_set, epoch, enable)

    def _should_save_intra_epoch_ckpt(self, last_ckpt_time, steps_since_ckpt):
        # Every rank takes part in the agreement after every batch; a
        # stop waits for the batch that completes an optimiser step.
        agreed = self._preemption_agreed()
        if agreed and self.step % self.grad_accumulation_factor == 0:
            if self.checkpointer is None:
                self._exit_preempted("without a checkpointer")
            self._preempting = True
            return True
        return super()._should_save_intra_epoch_ckpt(
            last_ckpt_time, steps_since_ckpt
        )

    def _save_intra_epoch_ckpt(self):
        super()._save_intra_epoch_ckpt()
        if self._preempting:
            self._exit_preempted(
                f"after optimiser step {self.optimizer_step} "
                f"(epoch {self._training_epoch}, "
                f"batch {self.step}), with an intra-epoch checkpoint"
            )

    def _exit_preempted(self, where):
        where_saved = ""
        if self.checkpointer is not None:
            where_saved = f" in {self.checkpointer.checkpoints_dir}"
        logger.warning(
            "Pre-empted (%s): stopped %s%s; exiting with status %d. Run the "
            "same command to resume.",
            self.preemption.received or "signal on another process",
            where,
            where_saved if if_main_process() else "",
            PREEMPTED_EXIT_STATUS,
        )
        if _distributed():
            # Every rank gets here at the same step: leave the group
            # cleanly (gloo aborts the process otherwise).
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        raise Preempted()


def _distributed():
    return (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
