"""Run bookkeeping that lets training survive bad input and resume.

:class:`TrainingState` (random-number states, the training clips that failed
to decode, the loss terms of an unfinished epoch) is saved with every
checkpoint; :func:`count_bad_audio` stops a run past its bad-audio limit;
:func:`log_nonfinite_loss` names the batch of a non-finite loss.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from speechbrain_sed_condmix.safe_load import load_checkpoint

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class TrainingState:
    """Random-number states and run bookkeeping, saved with each checkpoint.

    Restoring the torch (CPU and CUDA), NumPy and Python generators makes a
    resumed run draw the same mixup partners, dropout masks and crops as an
    uninterrupted one. It also keeps the list of training clips that failed
    to decode (``bad_audio``) and, for an intra-epoch checkpoint, the loss
    terms summed so far in the epoch. Under DDP the main process saves its
    own generator states and every rank restores them (ranks start from the
    same seed anyway, see ``speechbrain.utils.seed_everything``).

    Example
    -------
    >>> state = TrainingState()
    >>> state.bad_audio.append("a.wav: cannot decode")
    >>> path = getfixture("tmp_path") / "state.ckpt"
    >>> state.save(path)
    >>> first = torch.rand(3)
    >>> back = TrainingState()
    >>> back.load(path, end_of_epoch=True)
    >>> torch.equal(torch.rand(3), first), back.bad_audio
    (True, ['a.wav: cannot decode'])
    """

    def __init__(self):
        self.bad_audio = []
        self.loss_terms = {}
        self.resumed_terms = None
        self.pending = None

    @mark_as_saver
    def save(self, path):
        """Write the generator states and the bookkeeping."""
        state = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "bad_audio": list(self.bad_audio),
            "loss_terms": dict(self.loss_terms),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore what :meth:`save` wrote.

        After an intra-epoch checkpoint the generator states are applied by
        :meth:`restore_pending` at the first batch: the uninterrupted run
        drew the loader's seed at the start of the epoch, before the state
        was saved, and the resumed run draws it again when it re-creates
        the loader's iterator.
        """
        # NumPy arrays and Python tuples: on the safe loader's allow-list.
        state = load_checkpoint(path)
        self.bad_audio = list(state["bad_audio"])
        if end_of_epoch:
            self.pending = None
            self._set_generators(state)
            self.resumed_terms = None  # that epoch is logged already
        else:
            self.pending = state
            self.resumed_terms = state["loss_terms"]

    def restore_pending(self):
        """Apply the generator states of an intra-epoch checkpoint, once."""
        if self.pending is not None:
            self._set_generators(self.pending)
            self.pending = None

    @staticmethod
    def _set_generators(state):
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            cuda = state["cuda"][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(cuda)


def count_bad_audio(batch, bad_audio, limit):
    """Count training clips that failed to decode; stop past the limit.

    The training datasets replace such a clip by the next one of its
    subset and name it in the item's ``bad_audio`` field (see
    ``speechbrain_sed_condmix.dataio.pipelines.SkipBadAudio``).

    Arguments
    ---------
    batch : PaddedBatch
        The batch (its ``bad_audio`` field, if any, lists failures).
    bad_audio : list
        The run's failures so far (``TrainingState.bad_audio``); extended.
    limit : int
        How many failures the run accepts (``max_bad_audio``).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> seen = []
    >>> count_bad_audio(SimpleNamespace(bad_audio=[["a.wav: bad"], []]),
    ...                 seen, limit=1)
    >>> seen
    ['a.wav: bad']
    >>> count_bad_audio(SimpleNamespace(bad_audio=[["b.wav: bad"]]),
    ...                 seen, limit=1)
    Traceback (most recent call last):
    ...
    RuntimeError: 2 training clips failed to decode, more than ...
    """
    failed = [
        entry for item in getattr(batch, "bad_audio", []) for entry in item
    ]
    if not failed:
        return
    for entry in failed:
        logger.warning("Skipped a training clip: %s", entry)
        bad_audio.append(entry)
    limit = int(limit)
    if len(bad_audio) > limit:
        listing = "\n  ".join(bad_audio)
        raise RuntimeError(
            f"{len(bad_audio)} training clips failed to decode, more than "
            f"max_bad_audio={limit}; fix or remove them (or re-run the "
            f"data preparation):\n  {listing}"
        )


def log_nonfinite_loss(loss, step, batch_ids):
    """Log a non-finite loss with the optimiser step and the batch's clips.

    Arguments
    ---------
    loss : torch.Tensor
        The (scaled) loss of the current batch.
    step : int
        The optimiser step.
    batch_ids : list
        The batch's clip ids.

    Returns
    -------
    bool
        Whether the loss is finite.

    Example
    -------
    >>> log_nonfinite_loss(torch.tensor(1.0), 3, ["a"])
    True
    """
    if torch.isfinite(loss):
        return True
    logger.warning(
        "Non-finite loss (%s) at optimiser step %d, batch clips: %s",
        float(loss.detach()),
        step,
        ", ".join(map(str, batch_ids)),
    )
    return False
