"""Losses of semi-supervised SED.

All predictions are probabilities (the models end with a sigmoid), as in the
DCASE baseline, so the supervised terms are ``BCELoss`` on probabilities.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch.nn.functional as F


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
    """
    mask = mask.bool()
    if not bool(mask.any()):
        return predictions.sum() * 0.0
    return F.binary_cross_entropy(
        predictions[mask].float().clamp(1e-7, 1 - 1e-7),
        targets[mask].float(),
    )


def consistency_mse(student, teacher, mask=None):
    """Mean squared error between student and (detached) teacher outputs.

    Arguments
    ---------
    student : torch.Tensor
        Student probabilities, batch first.
    teacher : torch.Tensor
        Teacher probabilities, same shape; no gradient flows into it.
    mask : torch.Tensor, optional
        Boolean ``[B]`` rows to use (default: the whole batch, as in the
        reference baseline).

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> import torch
    >>> consistency_mse(torch.tensor([[0.5, 1.0]]), torch.tensor([[0.0, 1.0]]))
    tensor(0.1250)
    """
    teacher = teacher.detach()
    if mask is not None:
        mask = mask.bool()
        if not bool(mask.any()):
            return student.sum() * 0.0
        student, teacher = student[mask], teacher[mask]
    return F.mse_loss(student.float(), teacher.float())
