"""ATST-Frame's student, momentum teacher, loss and checkpoint layout.

The student is an :class:`~speechbrain_sed_condmix.lobes.atst.ATSTFrame`
encoder, a projector and a predictor (BatchNorm MLPs); the teacher is an
EMA copy of the encoder and the projector. Both see the two views of a
batch as one concatenated batch and return the embeddings of the masked
frames only; the loss is the symmetric per-frame ``2 - 2 cos`` between the
student's prediction of one view and the teacher's projection of the
other (:func:`symmetric_frame_loss`).

:func:`pretrain_state_dict` lays the weights out as ATST-Frame's
pretraining checkpoints do (``model.student.encoder.*``,
``model.teacher.encoder.*``, ``model.{student,teacher}.projector.*``,
``model.student.predictor.*``), so that
:func:`~speechbrain_sed_condmix.lobes.atst.load_atst_checkpoint` and the
ATST-SED recipes read the file as they read audiossl's.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import copy
import math

import torch
from torch import nn

from speechbrain_sed_condmix.losses import embedding_contrastive
from speechbrain_sed_condmix.teacher import unwrap_module


class ATSTFrameBYOL(nn.Module):
    """Encoder + projector (+ predictor) applied to the masked frames.

    Arguments
    ---------
    encoder : ATSTFrame
        The frame encoder.
    projector : torch.nn.Module
        Head on ``[N, D]`` frame embeddings.
    predictor : torch.nn.Module, optional
        Head on the projections (the student's; the teacher has none).

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.atst import ATSTFrame
    >>> from speechbrain_sed_condmix.lobes.heads import MLPHead
    >>> enc = ATSTFrame(embed_dim=16, depth=1, num_heads=2, max_tokens=8)
    >>> net = ATSTFrameBYOL(enc, MLPHead(16, 32, 8), MLPHead(8, 32, 8))
    >>> mask = torch.zeros(2, 8, dtype=torch.bool)
    >>> mask[:, :3] = True
    >>> net(torch.randn(2, 64, 33), mask).shape
    torch.Size([6, 8])
    """

    def __init__(self, encoder, projector, predictor=None):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor

    def forward(self, x, mask, mask_input=True):
        """Embeddings of the masked frames.

        Arguments
        ---------
        x : torch.Tensor
            Normalised mel, ``[batch, n_mels, frames]``.
        mask : torch.Tensor
            Boolean ``[batch, tokens]``: the frames to return.
        mask_input : bool
            Replace the masked tokens by the mask embedding (the
            student's input) or not (the teacher's).

        Returns
        -------
        torch.Tensor
            ``[mask.sum(), output size]``, row-major over ``mask``.
        """
        frames = self.encoder(x, mask=mask if mask_input else None)
        out = self.projector(frames[mask])
        if self.predictor is not None:
            out = self.predictor(out)
        return out


def cosine_momentum(step, total_steps, base):
    """EMA momentum rising along a half cosine from ``base`` to 1.

    ``m(t) = 1 - (1 - base) * (1 + cos(pi * t / T)) / 2``, held at 1 after
    ``T`` (ATST-Frame, no warm-up).

    Arguments
    ---------
    step : int
        Optimiser steps done.
    total_steps : int
        ``T``, the run's number of optimiser steps.
    base : float
        Momentum at step 0.

    Returns
    -------
    float
        The momentum.

    Example
    -------
    >>> cosine_momentum(0, 100, 0.99), cosine_momentum(100, 100, 0.99)
    (0.99, 1.0)
    >>> round(cosine_momentum(50, 100, 0.99), 6)
    0.995
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * progress)) / 2.0


class MomentumTeacher(nn.Module):
    """EMA copy of the student's encoder and projector (no predictor).

    Every parameter is frozen, so SpeechBrain's ``Brain`` neither trains
    nor wraps it in DDP. :meth:`update` moves the parameters (not the
    buffers: the teacher's BatchNorm keeps the running statistics of its
    own forwards) towards the student's:
    ``theta_t <- m * theta_t + (1 - m) * theta_s``. The teacher runs in the
    parent's mode, train mode during training, as in ATST-Frame.

    Arguments
    ---------
    student : ATSTFrameBYOL
        The student (possibly DDP-wrapped) to copy.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.atst import ATSTFrame
    >>> from speechbrain_sed_condmix.lobes.heads import MLPHead
    >>> enc = ATSTFrame(embed_dim=8, depth=1, num_heads=2, max_tokens=4)
    >>> student = ATSTFrameBYOL(enc, MLPHead(8, 16, 4), MLPHead(4, 16, 4))
    >>> teacher = MomentumTeacher(student)
    >>> teacher.model.predictor is None
    True
    >>> with torch.no_grad():
    ...     _ = enc.pos_embed.add_(1.0)
    >>> teacher.update(student, momentum=0.75)
    >>> torch.allclose(teacher.model.encoder.pos_embed, enc.pos_embed - 0.75)
    True
    """

    def __init__(self, student):
        super().__init__()
        student = unwrap_module(student)
        self.model = ATSTFrameBYOL(
            copy.deepcopy(student.encoder), copy.deepcopy(student.projector)
        )
        self.model.requires_grad_(False)

    @staticmethod
    def _tracked(module):
        return [
            *module.encoder.parameters(),
            *module.projector.parameters(),
        ]

    @torch.no_grad()
    def update(self, student, momentum):
        """``theta_t <- m * theta_t + (1 - m) * theta_s`` (parameters).

        Arguments
        ---------
        student : ATSTFrameBYOL
            The student (DDP or torch.compile wrappers are unwrapped).
        momentum : float
            ``m``.
        """
        targets = self._tracked(self.model)
        sources = self._tracked(unwrap_module(student))
        if len(targets) != len(sources):
            raise ValueError(
                f"Teacher has {len(targets)} parameters, student "
                f"{len(sources)}: not the same encoder and projector"
            )
        sources = [s.detach().to(t.dtype) for t, s in zip(targets, sources)]
        torch._foreach_mul_(targets, momentum)
        torch._foreach_add_(targets, sources, alpha=1.0 - momentum)

    def forward(self, x, mask):
        """Projections of the masked frames of the unmasked input.

        Arguments
        ---------
        x : torch.Tensor
            Normalised mel, ``[batch, n_mels, frames]``.
        mask : torch.Tensor
            Boolean ``[batch, tokens]``.

        Returns
        -------
        torch.Tensor
            ``[mask.sum(), output size]``, without a graph.
        """
        with torch.no_grad():
            return self.model(x, mask, mask_input=False)


def symmetric_frame_loss(student_out, teacher_out):
    """Symmetric ``2 - 2 cos`` over the masked frames of both views.

    Both tensors hold the frames of view 1 then those of view 2 (the two
    halves of a concatenated batch with one shared mask, so frame ``i`` of
    one half is frame ``i`` of the other). The loss is
    ``(mean l(p_2, z_1) + mean l(p_1, z_2)) / 2`` with ``l``
    :func:`~speechbrain_sed_condmix.losses.embedding_contrastive`, means
    over all frames of the batch.

    Arguments
    ---------
    student_out : torch.Tensor
        Student predictions ``[2N, d]``.
    teacher_out : torch.Tensor
        Teacher projections ``[2N, d]`` (no gradient flows into them).

    Returns
    -------
    torch.Tensor
        Scalar loss in [0, 4].

    Example
    -------
    >>> p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> symmetric_frame_loss(p, z)  # (l(p2, z1) + l(p1, z2)) / 2 = (2 + 0) / 2
    tensor(1.)
    """
    if student_out.shape != teacher_out.shape or len(student_out) % 2:
        raise ValueError(
            "Expected student and teacher outputs of one even shape [2N, d], "
            f"got {tuple(student_out.shape)} and {tuple(teacher_out.shape)}"
        )
    p1, p2 = student_out.chunk(2)
    z1, z2 = teacher_out.chunk(2)
    return 0.5 * (
        embedding_contrastive(p2, z1).mean()
        + embedding_contrastive(p1, z2).mean()
    )


def pretrain_state_dict(student, teacher):
    """Student and teacher weights in ATST-Frame's pretraining layout.

    Arguments
    ---------
    student : ATSTFrameBYOL
        The student (wrappers are unwrapped).
    teacher : MomentumTeacher
        Its teacher.

    Returns
    -------
    dict
        ``model.student.encoder.*``, ``model.student.projector.*``,
        ``model.student.predictor.*``, ``model.teacher.encoder.*`` and
        ``model.teacher.projector.*`` tensors (CPU copies).

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.atst import ATSTFrame
    >>> from speechbrain_sed_condmix.lobes.heads import MLPHead
    >>> enc = ATSTFrame(embed_dim=8, depth=1, num_heads=2, max_tokens=4)
    >>> student = ATSTFrameBYOL(enc, MLPHead(8, 16, 4), MLPHead(4, 16, 4))
    >>> keys = pretrain_state_dict(student, MomentumTeacher(student))
    >>> sorted(k for k in keys if "projector" in k and "teacher" in k)[:3]
    ['model.teacher.projector.0.weight', 'model.teacher.projector.1.bias', \
'model.teacher.projector.1.num_batches_tracked']
    """
    student = unwrap_module(student)
    parts = {
        "student.encoder": student.encoder.state_dict(),
        "student.projector": student.projector.state_dict(),
        "student.predictor": student.predictor.state_dict(),
        "teacher.encoder": teacher.model.encoder.state_dict(),
        "teacher.projector": teacher.model.projector.state_dict(),
    }
    return {
        f"model.{part}.{key}": value.detach().cpu().clone()
        for part, state in parts.items()
        for key, value in state.items()
    }


def save_pretrain_checkpoint(path, student, teacher, hyper_parameters):
    """Write a checkpoint that ATST-Frame's loaders read.

    ``{"state_dict": pretrain_state_dict(...), "hyper_parameters": ...}``,
    the keys of a Lightning checkpoint, written to a temporary file and
    renamed, so that a reader never sees a partial file.

    Arguments
    ---------
    path : str or Path
        Output file.
    student : ATSTFrameBYOL
        The student.
    teacher : MomentumTeacher
        Its teacher.
    hyper_parameters : dict
        Plain values describing the run (architecture, steps, ...).
    """
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(
        {
            "state_dict": pretrain_state_dict(student, teacher),
            "hyper_parameters": dict(hyper_parameters),
        },
        tmp,
    )
    os.replace(tmp, path)
