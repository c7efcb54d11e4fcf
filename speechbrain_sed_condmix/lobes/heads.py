"""Projection heads for embedding-level self-supervised losses.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging

import torch

logger = logging.getLogger(__name__)

#: Heads of an ATST-Frame pretraining checkpoint: name -> key prefix.
ATST_HEAD_PREFIXES = {
    "student_projector": "model.student.projector.",
    "student_predictor": "model.student.predictor.",
    "teacher_projector": "model.teacher.projector.",
}

# Loading errors list at most this many keys of each kind.
_MAX_KEYS_SHOWN = 12


def _show_keys(keys):
    """Sorted key list for error messages, cut after a few entries."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    if len(keys) > _MAX_KEYS_SHOWN:
        shown += f", ... ({len(keys) - _MAX_KEYS_SHOWN} more)"
    return f"{len(keys)} [{shown}]"


class MLPHead(torch.nn.Sequential):
    """BYOL-style two-layer MLP applied to every frame.

    ``Linear(bias=False) -> BatchNorm1d -> ReLU -> Linear(bias=False)``,
    with no BatchNorm on the output: the layout of ATST-Frame's projector
    and predictor. The module is an ``nn.Sequential``, so its state-dict
    keys are ``0.weight``, ``1.{weight, bias, running_mean, running_var,
    num_batches_tracked}`` and ``3.weight``, those of the heads in an
    ATST-Frame pretraining checkpoint (``model.student.projector.*``,
    ``model.student.predictor.*``, ``model.teacher.projector.*``). State
    dicts of the earlier layout (keys under ``net.``) still load.

    The defaults (hidden 512, output 128) suit the 256-d BiGRU embedding of
    the CRNN; :class:`ATSTFrameHead` has ATST-Frame's sizes.

    Frames are flattened to ``[N, D]`` before the BatchNorm, so its
    statistics are taken over every frame of the batch (as in ATST-Frame).

    Arguments
    ---------
    input_size : int
        Size ``D`` of the input embeddings.
    hidden_size : int
        Width of the hidden layer.
    output_size : int
        Size of the output embeddings.

    Example
    -------
    >>> head = MLPHead(256, hidden_size=32, output_size=16)
    >>> head(torch.randn(2, 10, 256)).shape
    torch.Size([2, 10, 16])
    >>> head(torch.randn(5, 256)).shape
    torch.Size([5, 16])
    >>> sorted(head.state_dict())[:3]
    ['0.weight', '1.bias', '1.num_batches_tracked']
    """

    def __init__(self, input_size, hidden_size=512, output_size=128):
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.output_size = int(output_size)
        super().__init__(
            torch.nn.Linear(self.input_size, self.hidden_size, bias=False),
            torch.nn.BatchNorm1d(self.hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden_size, self.output_size, bias=False),
        )

    @property
    def net(self):
        """The layers (the module itself; kept for the earlier layout)."""
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Earlier checkpoints kept the layers under ``net.``.
        legacy = prefix + "net."
        for key in [k for k in state_dict if k.startswith(legacy)]:
            state_dict[prefix + key[len(legacy) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        """Project each frame.

        Arguments
        ---------
        x : torch.Tensor
            Embeddings ``[B, T, D]`` or ``[N, D]``.

        Returns
        -------
        torch.Tensor
            ``[B, T, output_size]`` or ``[N, output_size]``.
        """
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"Expected embeddings of size {self.input_size}, "
                f"got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        out = super().forward(x.reshape(-1, self.input_size))
        return out.reshape(*lead, self.output_size)


class ATSTFrameHead(MLPHead):
    """An :class:`MLPHead` with ATST-Frame's sizes as defaults.

    ATST-Frame's projector is ``D -> 4096 -> 256`` (``D`` = 768 for the
    base encoder, 384 for the small one) and its predictor
    ``256 -> 4096 -> 256``. Weights of an ATST-Frame pretraining
    checkpoint load into it without renaming
    (:func:`~speechbrain_sed_condmix.lobes.atst.load_atst_heads`).

    Arguments
    ---------
    input_size : int
        Size ``D`` of the input embeddings (256 for the predictor).
    hidden_size : int
        Width of the hidden layer.
    output_size : int
        Size of the output embeddings.

    Example
    -------
    >>> projector = ATSTFrameHead(768)
    >>> predictor = ATSTFrameHead(256)
    >>> projector[0].weight.shape, predictor[3].weight.shape
    (torch.Size([4096, 768]), torch.Size([256, 4096]))
    """

    def __init__(self, input_size, hidden_size=4096, output_size=256):
        super().__init__(input_size, hidden_size, output_size)


def load_heads_into(heads, state_dicts, source):
    """Load head weights into modules and log where each one comes from.

    Arguments
    ---------
    heads : Mapping
        Head name -> module (an
        :class:`~speechbrain_sed_condmix.lobes.heads.MLPHead`).
    state_dicts : Mapping
        Head name -> state dict, as returned by
        :func:`~speechbrain_sed_condmix.lobes.atst.load_atst_heads`.
    source : str
        The file, for the log line and the error messages.

    Returns
    -------
    dict
        Head name -> ``"loaded from <source>"`` or ``"random"``.

    Raises
    ------
    ValueError
        If a head name is unknown, or the weights do not fit the module
        (the message names the file, the head and the keys or shapes).

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.heads import MLPHead
    >>> src = MLPHead(8, hidden_size=16, output_size=4)
    >>> dst = MLPHead(8, hidden_size=16, output_size=4)
    >>> load_heads_into({"student_projector": dst,
    ...                  "student_predictor": MLPHead(4, 16, 4)},
    ...                 {"student_projector": src.state_dict()}, "x.ckpt")
    {'student_projector': 'loaded from x.ckpt', 'student_predictor': 'random'}
    >>> torch.equal(dst[0].weight, src[0].weight)
    True
    """
    unknown = sorted(set(heads) - set(ATST_HEAD_PREFIXES))
    if unknown:
        raise ValueError(
            f"Unknown ATST-Frame head name(s) {unknown}; known: "
            f"{sorted(ATST_HEAD_PREFIXES)}"
        )
    status = {}
    for name, module in heads.items():
        weights = state_dicts.get(name)
        if not weights:
            status[name] = "random"
            continue
        own = module.state_dict()
        missing = [k for k in own if k not in weights]
        unexpected = [k for k in weights if k not in own]
        bad = [
            f"{k}: checkpoint {tuple(weights[k].shape)} vs model "
            f"{tuple(v.shape)}"
            for k, v in own.items()
            if k in weights and tuple(weights[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or bad:
            raise ValueError(
                f"The {name} of {source} ({ATST_HEAD_PREFIXES[name]}*) does "
                f"not fit its head module. Missing keys: "
                f"{_show_keys(missing)}. Unexpected keys: "
                f"{_show_keys(unexpected)}. Shapes: {'; '.join(bad) or 'ok'}"
            )
        module.load_state_dict(weights, strict=True)
        status[name] = f"loaded from {source}"
    logger.info(
        "ATST-Frame heads: %s",
        ", ".join(f"{name} {how}" for name, how in status.items()),
    )
    return status
