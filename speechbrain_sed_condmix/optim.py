"""Optimiser parameter groups with per-part learning rates.

ATST-SED fine-tunes three parts at different speeds: the CNN, the rest of
the CRNN (fusion layer, BiGRU, heads: the "RNN" group) and the ATST-Frame
encoder with a layer-wise decay. The encoder's 14 groups (embeddings,
blocks 0-11, final norm) are counted from the top, so the final norm gets
``atst_lr``, block 11 ``atst_lr * decay``, ... and the embeddings
``atst_lr * decay**13``.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from speechbrain_sed_condmix.teacher import unwrap_module

ATST_PREFIX = "atst_frame.atst."


def sed_param_groups(
    student,
    lr,
    cnn_lr=None,
    atst_lr=None,
    atst_lr_decay=0.5,
    extra_modules=(),
    heads_weight_decay=None,
):
    """Parameter groups of an SED student (CRNN or ATST-SED).

    Frozen parameters (``requires_grad=False``) are left out, so a frozen
    ATST encoder (stage 1) gets no group. Every group carries its ``name``
    and its peak learning rate in ``lr`` (the brain scales it by the
    warm-up / decay factor at every step).

    Arguments
    ---------
    student : torch.nn.Module
        The student model (DDP / compile wrappers are unwrapped).
    lr : float
        Learning rate of the "rnn" group: every trainable parameter that is
        neither CNN nor ATST, plus ``extra_modules``.
    cnn_lr : float, optional
        Learning rate of the parameters under ``cnn.`` (default ``lr``).
    atst_lr : float, optional
        Learning rate of the top ATST group (default ``lr``).
    atst_lr_decay : float
        Factor between consecutive ATST groups, from the top down.
    extra_modules : iterable of torch.nn.Module
        Other trained modules (e.g. contrastive projection heads).
    heads_weight_decay : float, optional
        None (default): ``extra_modules`` join the "rnn" group. A value:
        they get groups of their own at ``lr``, as ATST-Frame's optimiser
        groups its heads: "heads" (weights with ``ndim > 1``, this weight
        decay) and "heads_no_decay" (biases and normalisation parameters,
        none). ATST-Frame raises the decay from 0.04 to 0.4 over its run
        with AdamW; with ``torch.optim.Adam`` the decay is an L2 term.

    Returns
    -------
    list of dict
        Groups for a ``torch.optim`` optimiser; empty groups are dropped.

    Example
    -------
    >>> import torch
    >>> from speechbrain_sed_condmix.lobes.crnn import CRNN
    >>> model = CRNN(n_filters=[4], pooling=[(2, 16)], rnn_hidden=3, n_freq=16)
    >>> groups = sed_param_groups(model, lr=1e-3, cnn_lr=2e-4)
    >>> [(g["name"], g["lr"]) for g in groups]
    [('cnn', 0.0002), ('rnn', 0.001)]
    >>> from speechbrain_sed_condmix.lobes.heads import MLPHead
    >>> groups = sed_param_groups(model, lr=1e-3, extra_modules=[
    ...     MLPHead(3, 4, 2)], heads_weight_decay=0.04)
    >>> [(g["name"], g.get("weight_decay")) for g in groups[2:]]
    [('heads', 0.04), ('heads_no_decay', 0.0)]
    >>> [len(g["params"]) for g in groups[2:]]  # 2 weights; BN weight, bias
    [2, 2]
    """
    student = unwrap_module(student)
    cnn_lr = lr if cnn_lr is None else cnn_lr
    atst_lr = lr if atst_lr is None else atst_lr
    cnn, rnn, atst_names = [], [], set()
    atst_groups = []
    atst = getattr(getattr(student, "atst_frame", None), "atst", None)
    if atst is not None:
        layers = list(atst.layer_groups())[::-1]  # top (final norm) first
        for depth, (name, params) in enumerate(layers):
            trainable = [p for p in params if p.requires_grad]
            atst_names.update(id(p) for p in params)
            atst_groups.append(
                {
                    "name": f"atst_{name}",
                    "params": trainable,
                    "lr": atst_lr * atst_lr_decay**depth,
                }
            )
    for name, param in student.named_parameters():
        if not param.requires_grad or id(param) in atst_names:
            continue
        if name.startswith(ATST_PREFIX):
            raise ValueError(f"ATST parameter {name} is in no layer group")
        (cnn if name.startswith("cnn.") else rnn).append(param)
    decay, no_decay = [], []
    for module in extra_modules:
        for p in unwrap_module(module).parameters():
            if not p.requires_grad:
                continue
            if heads_weight_decay is None:
                rnn.append(p)
            else:
                (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"name": "cnn", "params": cnn, "lr": cnn_lr},
        {"name": "rnn", "params": rnn, "lr": lr},
        *atst_groups,
    ]
    if heads_weight_decay is not None:
        groups += [
            {
                "name": "heads",
                "params": decay,
                "lr": lr,
                "weight_decay": float(heads_weight_decay),
            },
            {
                "name": "heads_no_decay",
                "params": no_decay,
                "lr": lr,
                "weight_decay": 0.0,
            },
        ]
    return [g for g in groups if g["params"]]
