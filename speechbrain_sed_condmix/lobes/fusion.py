"""Inference-only rewrites of a trained model that keep its outputs.

Profiling the CRNN at batch 32 on CPU shows that its CNN takes about 70 %
of a forward pass, and most of that is memory traffic over the first
blocks' large feature maps, not arithmetic: the batch norm and the gate
each read and write the whole map. Three rewrites remove part of it without
changing what the model computes:

* **batch-norm folding**: in eval mode a ``BatchNorm2d`` after a
  ``Conv2d`` is an affine map per channel, so it is folded into the
  convolution's weights and bias (``torch.nn.utils.fusion``) and one pass
  over the map disappears;
* **channels-last layout**: the convolution weights are stored as NHWC, so
  the convolutions produce NHWC maps and the gates' channel-mixing linear
  layers read them without a transpose copy;
* **in-place gates**: the gated linear unit and context gating write the
  sigmoid and the product into buffers they already hold instead of two
  new maps (a fresh large tensor costs its page faults on every call).

All are exact up to float rounding (about 1e-7 on the probabilities).
``torch.compile`` on top (opt-in: it needs a C++ compiler and about 20 s
per input shape) fuses the gates' element-wise work into single passes.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from speechbrain_sed_condmix.lobes.crnn import GLU, ContextGating


def _adjacent_pairs(module):
    """``(sequential, name, next_name)`` for each pair of neighbouring
    children of every ``nn.Sequential`` in ``module``.

    The names are listed before the pairs are yielded, so a caller may
    replace the children it is given.
    """
    for seq in list(module.modules()):
        if isinstance(seq, nn.Sequential):
            names = list(seq._modules)
            for name, next_name in zip(names, names[1:]):
                yield seq, name, next_name


class InplaceGate(nn.Module):
    """Inference form of :class:`GLU` and :class:`ContextGating`.

    The same ``Linear(x) * sigmoid(x)`` (GLU) or ``x * sigmoid(Linear(x))``
    (context gating), computed in place: it **overwrites its input**, so it
    only replaces a gate whose input is an intermediate map (the output of
    a convolution or batch norm), and it must run without autograd.

    Arguments
    ---------
    gate : GLU or ContextGating
        The trained gate; its linear layer is shared, not copied.

    Example
    -------
    >>> glu = GLU(4).eval()
    >>> x = torch.randn(2, 4, 3, 5)
    >>> with torch.no_grad():
    ...     expected = glu(x)
    ...     out = InplaceGate(glu)(x.clone())
    >>> torch.equal(out, expected)
    True
    """

    def __init__(self, gate):
        super().__init__()
        if not isinstance(gate, (GLU, ContextGating)):
            raise TypeError(f"not a GLU or ContextGating: {type(gate)}")
        self.linear = gate.linear
        self.glu = isinstance(gate, GLU)

    def forward(self, x):
        """Gate ``x`` ([batch, channels, time, freq]) in place."""
        lin = self.linear(x.movedim(1, -1)).movedim(-1, 1)
        if self.glu:
            return lin.mul_(x.sigmoid_())
        return x.mul_(lin.sigmoid_())


def use_inplace_gates(module):
    """Swap the gates that follow a convolution or batch norm for
    :class:`InplaceGate`, in ``nn.Sequential`` containers, in place.

    Arguments
    ---------
    module : torch.nn.Module
        The model (for inference only). Modified in place.

    Returns
    -------
    int
        The number of gates swapped.

    Example
    -------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), GLU(4))
    >>> use_inplace_gates(net)
    1
    >>> type(net[1]).__name__
    'InplaceGate'
    """
    producers = (nn.Conv2d, nn.BatchNorm2d, nn.Identity)
    swapped = 0
    for seq, prev, name in _adjacent_pairs(module):
        gate = seq._modules[name]
        if isinstance(gate, (GLU, ContextGating)) and isinstance(
            seq._modules[prev], producers
        ):
            setattr(seq, name, InplaceGate(gate))
            swapped += 1
    return swapped


def fold_batchnorm(module):
    """Fold every ``BatchNorm2d`` that follows a ``Conv2d`` into it.

    The pairs are found inside ``nn.Sequential`` containers (where the CNN
    blocks keep them), in place: the convolution is replaced by the folded
    one and the batch norm by ``nn.Identity``, so the module names stay.
    Only valid in eval mode (running statistics), which is checked.

    Arguments
    ---------
    module : torch.nn.Module
        The model, in eval mode. Modified in place.

    Returns
    -------
    int
        The number of folded pairs.

    Example
    -------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> net[1].running_mean.fill_(0.5)
    tensor([0.5000, 0.5000, 0.5000, 0.5000])
    >>> x = torch.randn(2, 1, 8, 8)
    >>> before = net(x)
    >>> fold_batchnorm(net)
    1
    >>> net[1]
    Identity()
    >>> torch.allclose(net(x), before, atol=1e-6)
    True
    """
    folded = 0
    for seq, name, next_name in _adjacent_pairs(module):
        conv, bn = seq._modules[name], seq._modules[next_name]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        if conv.training or bn.training:
            raise ValueError(
                "fold_batchnorm needs the model in eval mode: training "
                "mode batch norm uses batch statistics, which cannot be "
                "folded"
            )
        if not bn.track_running_stats:
            continue
        setattr(seq, name, fuse_conv_bn_eval(conv, bn))
        setattr(seq, next_name, nn.Identity())
        folded += 1
    return folded


def optimize_for_inference(
    model, fold_bn=True, channels_last=True, inplace_gates=True, compile=False
):
    """A copy of ``model`` rewritten for fast inference.

    The copy is in eval mode, without gradients; ``model`` is untouched.
    Its state dict differs from the original (folded batch norms), so save
    the original, not the copy.

    Arguments
    ---------
    model : torch.nn.Module
        A trained model (CRNN, ATST-SED, ...).
    fold_bn : bool
        Fold batch norms into the preceding convolutions.
    channels_last : bool
        Store 4-D weights as NHWC (faster convolutions and gates on CPU).
    inplace_gates : bool
        Compute the CNN gates in place (:class:`InplaceGate`); the copy
        then only runs without autograd (``torch.no_grad`` or
        ``torch.inference_mode``).
    compile : bool
        Wrap the copy in ``torch.compile`` (needs a C++ compiler on CPU;
        compiles on the first call of each input shape).

    Returns
    -------
    torch.nn.Module
        The rewritten copy.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.crnn import CRNN
    >>> model = CRNN(n_filters=[4, 8], pooling=[(2, 4), (2, 4)],
    ...              rnn_hidden=6, n_freq=16).eval()
    >>> fast = optimize_for_inference(model)
    >>> x = torch.randn(2, 16, 20)
    >>> with torch.no_grad():
    ...     same = torch.allclose(fast(x).strong, model(x).strong,
    ...                           atol=1e-6)
    >>> same, model.training, fast.training
    (True, False, False)
    """
    fast = copy.deepcopy(model).eval()
    for param in fast.parameters():
        param.requires_grad_(False)
    if fold_bn:
        fold_batchnorm(fast)
    if inplace_gates:
        use_inplace_gates(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if compile:
        fast = torch.compile(fast)
    return fast
