"""Losses of semi-supervised SED.

All predictions are probabilities (the models end with a sigmoid), as in the
DCASE baseline, so the supervised terms are ``BCELoss`` on probabilities.

The embedding-level contrastive loss of ATST-SEDv2 is reconstructed from
ATST-Frame pre-training (BYOL without negatives): the student embedding goes
through a projector and a predictor, the teacher embedding through an EMA
copy of the projector, and each frame costs ``2 - 2 cos``. Its exact form in
the paper is not public; see :class:`EmbeddingContrastiveLoss`.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_sed_condmix.lobes.atst import load_atst_heads
from speechbrain_sed_condmix.lobes.heads import MLPHead, load_heads_into
from speechbrain_sed_condmix.teacher import EMATeacher


def masked_bce(predictions, targets, mask):
    """Binary cross-entropy averaged over the rows selected by ``mask``.

    Arguments
    ---------
    predictions : torch.Tensor
        Probabilities, batch first (``[B, C]`` or ``[B, C, T]``).
    targets : torch.Tensor
        Targets in [0, 1], same shape.
    mask : torch.Tensor
        Boolean ``[B]``: the rows that carry this kind of label.

    Returns
    -------
    torch.Tensor
        Scalar loss; 0 (still connected to the graph) when no row is
        selected, so that every rank of a distributed run runs the same
        backward graph.

    Example
    -------
    >>> import torch
    >>> p = torch.tensor([[0.9], [0.2]])
    >>> y = torch.tensor([[1.0], [1.0]])
    >>> loss = masked_bce(p, y, torch.tensor([True, False]))
    >>> round(loss.item(), 4) == round(-torch.log(torch.tensor(0.9)).item(), 4)
    True
    >>> masked_bce(torch.tensor([[float("nan")]]), y[:1], torch.tensor([True]))
    tensor(nan)
    """
    mask = mask.bool()
    if not bool(mask.any()):
        return predictions.sum() * 0.0
    p = predictions[mask].float().clamp(1e-7, 1 - 1e-7)
    t = targets[mask].float()
    # The formula rather than F.binary_cross_entropy, which raises on a NaN
    # probability: here a NaN makes the loss NaN, so that SEDBrain's
    # non-finite-loss handling (nonfinite_patience) deals with it.
    return -(t * torch.log(p) + (1 - t) * torch.log1p(-p)).mean()


def rowwise_mse(student, teacher):
    """Mean squared error of each row against the (detached) teacher.

    Arguments
    ---------
    student : torch.Tensor
        Student probabilities, batch first.
    teacher : torch.Tensor
        Teacher probabilities or targets, same shape; no gradient flows
        into it.

    Returns
    -------
    torch.Tensor
        ``[B]`` fp32 row means, for losses split over row subsets without
        computing them again.

    Example
    -------
    >>> import torch
    >>> rowwise_mse(torch.tensor([[0.5, 1.0], [0.0, 0.0]]), torch.ones(2, 2))
    tensor([0.1250, 1.0000])
    """
    diff = student.float() - teacher.detach().float()
    return diff.pow(2).reshape(len(diff), -1).mean(dim=1)


def embedding_contrastive(prediction, target):
    """BYOL / ATST-Frame loss ``2 - 2 cos`` of each frame, target detached.

    The per-frame loss that :class:`EmbeddingContrastiveLoss` averages.

    Arguments
    ---------
    prediction : torch.Tensor
        Student predictions ``[B, T, D]`` (or ``[B, D]``).
    target : torch.Tensor
        Teacher targets, same shape; no gradient flows into it.

    Returns
    -------
    torch.Tensor
        ``[B, T]`` (or ``[B]``) values in [0, 4],
        ``2 - 2 <p / |p|, q / |q|>`` over the last dimension, in fp32.

    Example
    -------
    >>> p = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    >>> embedding_contrastive(p, torch.tensor([[[3.0, 0.0], [0.0, -1.0]]]))
    tensor([[0., 4.]])
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"Shapes differ: {tuple(prediction.shape)}, {tuple(target.shape)}"
        )
    p = F.normalize(prediction.float(), dim=-1)
    q = F.normalize(target.detach().float(), dim=-1)
    return 2.0 - 2.0 * (p * q).sum(dim=-1)


def masked_mean(values, mask=None):
    """Mean of ``values`` over the rows selected by ``mask``.

    Arguments
    ---------
    values : torch.Tensor
        Batch first (``[B]``, ``[B, T]``, ...).
    mask : torch.Tensor, optional
        Boolean ``[B]`` rows to use (default: all).

    Returns
    -------
    torch.Tensor
        Scalar; 0 (still connected to the graph) when no row is selected,
        so that every rank of a distributed run runs the same backward
        graph.

    Example
    -------
    >>> masked_mean(torch.tensor([1.0, 2.0, 6.0]), torch.tensor([1, 0, 1]))
    tensor(3.5000)
    """
    if mask is not None:
        mask = mask.bool().to(values.device)
        if not bool(mask.any()):
            return values.sum() * 0.0
        values = values[mask]
    return values.mean()


class EmbeddingContrastiveLoss(nn.Module):
    """Embedding-level contrastive loss under conditional mixup.

    The student's frame embeddings of the *mixed* batch go through
    ``predictor(projector(.))``; the teacher's frame embeddings of the
    *clean* batch go through an EMA copy of the projector (no gradient) and
    are then mixed like the inputs were, with :meth:`MixInfo.interpolate`:

    * composition rows (``lam <= tau``): target
      ``lam * q[i] + (1 - lam) * q[partner]``, the projection of both clips;
    * perturbation rows (``lam > tau``): target ``q[i]``, the projection of
      the clean dominant clip, as in ATST-Frame where mixup is a perturbation.

    The heads follow ATST-Frame (:class:`MLPHead`), smaller by default;
    ``hidden_size=4096, projection_size=256`` is ATST-Frame's shape, the
    one whose weights :meth:`load_heads` can take from an ATST-Frame
    pretraining checkpoint. The module holds trainable parameters
    (projector, predictor), so it must be in ``Brain.modules`` (and the
    optimiser); call :meth:`update_teacher` after each optimiser step, like
    the model's Mean Teacher.

    The target network (the EMA projector) runs in eval mode with EMA
    running statistics (``teacher_eval_mode=True``), or as ATST-Frame's in
    the parent's mode, i.e. in train mode during training: BatchNorm
    normalises with the statistics of the batch and keeps its own running
    statistics (``False``).

    Arguments
    ---------
    input_size : int
        Size of the frame embeddings.
    hidden_size : int
        Hidden width of the projector and predictor.
    projection_size : int
        Output size of the projector and predictor.
    ema_decay : float
        Upper bound of the EMA factor of the teacher projector.
    teacher_eval_mode : bool
        Run the teacher projector in eval mode (see ``EMATeacher``); False:
        train mode with batch statistics during training (ATST-Frame).

    Example
    -------
    >>> from speechbrain_sed_condmix.augment.mixup import MixInfo
    >>> _ = torch.manual_seed(0)
    >>> loss_fn = EmbeddingContrastiveLoss(8, hidden_size=16, projection_size=4)
    >>> emb = torch.randn(2, 5, 8)
    >>> info = MixInfo(
    ...     lam=torch.tensor([0.9, 1.0]),
    ...     partner=torch.tensor([1, 1]),
    ...     mixed=torch.tensor([True, False]),
    ...     composition=torch.tensor([False, False]),
    ...     perturbation=torch.tensor([True, False]),
    ... )
    >>> loss = loss_fn(emb + 0.1, emb, info)
    >>> loss.backward()
    >>> 0 <= loss.item() <= 4
    True
    >>> loss_fn.update_teacher(step=1)
    """

    def __init__(
        self,
        input_size,
        hidden_size=512,
        projection_size=128,
        ema_decay=0.999,
        teacher_eval_mode=True,
    ):
        super().__init__()
        self.projector = MLPHead(input_size, hidden_size, projection_size)
        self.predictor = MLPHead(projection_size, hidden_size, projection_size)
        # The EMA copy is frozen, so the optimiser and DDP skip it.
        self.teacher_projector = EMATeacher(
            self.projector, decay=ema_decay, eval_mode=teacher_eval_mode
        )

    def forward(
        self,
        student_embeddings,
        teacher_embeddings,
        info,
        mask=None,
        reduction="mean",
    ):
        """Contrastive loss of the student (mixed) vs teacher (clean) frames.

        Arguments
        ---------
        student_embeddings : torch.Tensor
            ``[B, T, D]`` student embeddings of the mixed inputs.
        teacher_embeddings : torch.Tensor
            ``[B, T, D]`` teacher embeddings of the unmixed inputs.
        info : MixInfo
            The mixup that produced the student inputs.
        mask : torch.Tensor, optional
            Boolean ``[B]`` rows to use (default: ``info.mixed``); ignored
            with ``reduction="none"``.
        reduction : str
            ``"mean"``: the scalar loss over the frames of the selected rows;
            ``"none"``: the loss of every row (mean over its frames), so a
            caller can split it by mode without running the heads again.

        Returns
        -------
        torch.Tensor
            Scalar loss, or ``[B]`` row losses.
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be mean or none: {reduction}")
        if student_embeddings.shape[:-1] != teacher_embeddings.shape[:-1]:
            raise ValueError(
                "Student and teacher embeddings differ in batch or frames: "
                f"{tuple(student_embeddings.shape)}, "
                f"{tuple(teacher_embeddings.shape)}"
            )
        prediction = self.predictor(self.projector(student_embeddings))
        target = self.target(teacher_embeddings, info)
        # Every row has the same number of frames, so the mean of the row
        # means over selected rows is the mean over their frames.
        rows = embedding_contrastive(prediction, target)
        rows = rows.reshape(len(rows), -1).mean(dim=1)
        if reduction == "none":
            return rows
        return masked_mean(rows, info.mixed if mask is None else mask)

    def target(self, teacher_embeddings, info):
        """The contrastive target of every row, following its mode.

        Arguments
        ---------
        teacher_embeddings : torch.Tensor
            ``[B, T, D]`` teacher embeddings of the unmixed inputs.
        info : MixInfo
            The mixup of the student inputs.

        Returns
        -------
        torch.Tensor
            Detached ``[B, T, projection_size]``: the teacher projection
            ``q`` mixed as the inputs on composition rows (``lam * q[i] +
            (1 - lam) * q[partner]``), ``q[i]`` on perturbation and unmixed
            rows.
        """
        with torch.no_grad():
            return info.interpolate(self.teacher_projector(teacher_embeddings))

    def load_heads(self, path, *, trust_checkpoint=False):
        """Projector and predictor from an ATST-Frame pretraining file.

        The student projector and predictor take the file's
        ``model.student.projector.*`` and ``model.student.predictor.*``;
        the EMA projector takes ``model.teacher.projector.*``, or the
        student projector's weights when the file has no teacher head.
        Heads the file lacks stay random. A log line says which.

        Arguments
        ---------
        path : str, os.PathLike or Mapping
            The checkpoint (pretraining layout), or None for none.
        trust_checkpoint : bool
            See :func:`~speechbrain_sed_condmix.lobes.atst.load_atst_heads`.

        Returns
        -------
        dict
            Head name -> ``"loaded from FILE"`` or ``"random"``.

        Example
        -------
        >>> loss = EmbeddingContrastiveLoss(8, hidden_size=16,
        ...                                 projection_size=4)
        >>> loss.load_heads(None)["student_projector"]
        'random'
        """
        heads = {
            "student_projector": self.projector,
            "student_predictor": self.predictor,
            "teacher_projector": self.teacher_projector.model,
        }
        found = {}
        source = "no file"
        if path is not None:
            found = load_atst_heads(path, trust_checkpoint=trust_checkpoint)
            source = str(path)
            if "teacher_projector" not in found and found.get(
                "student_projector"
            ):
                found["teacher_projector"] = found["student_projector"]
        return load_heads_into(heads, found, source)

    def update_teacher(self, step):
        """EMA update of the teacher projector from the projector.

        Arguments
        ---------
        step : int
            Optimiser step count (for the EMA ramp of ``EMATeacher``).
        """
        self.teacher_projector.update(self.projector, step)
