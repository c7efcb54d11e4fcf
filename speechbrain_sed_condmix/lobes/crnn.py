"""The DCASE Task 4 CRNN baseline (2023 default configuration).

A 7-block CNN (conv, batch norm, gated linear unit, dropout, average pooling)
turns a normalised log-mel (batch, 128 mels, 626 frames) into 156 frames of
128 channels; a 2-layer bidirectional GRU gives 256-dim frame embeddings; a
strong head gives frame probabilities and an attention head pools them into
clip probabilities. With the defaults the model has 1,112,420 trainable
parameters and its state dict uses the key layout of the DESED_task
reference, so released checkpoints load with
:func:`load_desed_task_state_dict`.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from speechbrain_sed_condmix.lobes.dropout import (
    BitMaskDropout,
    dropout_avg_pool,
)
from speechbrain_sed_condmix.lobes.gates import GLU, ContextGating
from speechbrain_sed_condmix.lobes.rnn import (
    BidirectionalGRU,
    UnidirectionalGRU,
)
from speechbrain_sed_condmix.safe_load import load_checkpoint


class SEDOutput(NamedTuple):
    """Outputs of a sound event detection model.

    Arguments
    ---------
    strong : torch.Tensor
        Frame-level probabilities, [batch, classes, frames].
    weak : torch.Tensor
        Clip-level probabilities, [batch, classes].
    embeddings : torch.Tensor
        Frame embeddings before the output dropout,
        [batch, frames, embedding_dim].
    encoder_embeddings : torch.Tensor, optional
        Frame embeddings of a pretrained encoder branch (ATST-SED's
        ATST-Frame output, [batch, tokens, dim]); None for the CRNN.
    cnn_embeddings : torch.Tensor, optional
        The CRNN's CNN output as frame embeddings, the GRU's input
        [batch, frames, channels * freq]; None where not given.

    Example
    -------
    >>> out = SEDOutput(torch.zeros(1, 10, 4), torch.zeros(1, 10), None)
    >>> out.weak.shape
    torch.Size([1, 10])
    """

    strong: torch.Tensor
    weak: torch.Tensor
    embeddings: torch.Tensor
    encoder_embeddings: torch.Tensor = None
    cnn_embeddings: torch.Tensor = None


def _per_block(value, n_blocks, name):
    """Broadcast an int (or one (time, freq) pair) to one value per block.

    A sequence of ``n_blocks`` entries is taken as per-block values.
    """
    if isinstance(value, int):
        return [value] * n_blocks
    value = list(value)
    if len(value) == n_blocks:
        return value
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return [tuple(value)] * n_blocks
    raise ValueError(f"{name} must be an int, a pair or {n_blocks} values")


def _foldable(module):
    """Whether ``module`` is a batch norm in eval mode with running stats."""
    return (
        isinstance(module, nn.BatchNorm2d)
        and not module.training
        and module.running_mean is not None
    )


def _pair(value):
    """Return ``value`` as a (time, freq) pair of ints."""
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


class CNN(nn.Module):
    """The convolutional stack of the DCASE CRNN.

    Each block is Conv2d -> BatchNorm2d(eps=1e-3, momentum=0.99) ->
    activation -> Dropout -> AvgPool2d, held in ``self.cnn`` (an
    :class:`torch.nn.Sequential` whose children are named ``conv{i}``,
    ``batchnorm{i}``, ``glu{i}``/``cg{i}``/``relu{i}``, ``dropout{i}``,
    ``pooling{i}``) so that state dict keys match the reference.

    Arguments
    ---------
    n_in_channel : int
        Input channels.
    n_filters : list of int
        Output channels of each block.
    kernel_size : int or list
        Convolution kernel per block (int or (time, freq)).
    padding : int or list
        Convolution padding per block.
    stride : int or list
        Convolution stride per block.
    pooling : list
        Average pooling (time, freq) per block.
    dropout : float
        Dropout after each block's activation (0 or None disables it).
    activation : str
        ``"glu"`` (the baseline's gate), ``"cg"`` (context gating),
        ``"relu"`` or ``"leakyrelu"``.
    fast_dropout : bool
        True: the dropout masks come from random bits
        (:class:`~speechbrain_sed_condmix.lobes.dropout.BitMaskDropout`) and
        each block's dropout and pooling run fused, keeping only a byte
        mask for the backward pass; same distribution as torch's dropout,
        another random stream, several times faster on CPU. False:
        :class:`torch.nn.Dropout` then the pooling, as in the reference.
    lean_inference : bool
        Without autograd and in eval mode (the EMA teacher, validation),
        fold each batch norm into its convolution on the fly and gate in
        place: two new full-size maps per block instead of five, the same
        result up to float rounding. False: module by module.

    Example
    -------
    >>> cnn = CNN(n_filters=[4, 8], pooling=[(2, 2), (1, 2)])
    >>> cnn(torch.randn(2, 1, 16, 8)).shape
    torch.Size([2, 8, 8, 2])
    """

    def __init__(
        self,
        n_in_channel=1,
        n_filters=(16, 32, 64, 128, 128, 128, 128),
        kernel_size=3,
        padding=1,
        stride=1,
        pooling=((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
        dropout=0.5,
        activation="glu",
        fast_dropout=True,
        lean_inference=True,
    ):
        super().__init__()
        self.fast_dropout = bool(fast_dropout)
        self.lean_inference = bool(lean_inference)
        n_blocks = len(n_filters)
        if len(pooling) != n_blocks:
            raise ValueError(
                f"pooling has {len(pooling)} entries for {n_blocks} blocks"
            )
        self.kernel_size = [
            _pair(k) for k in _per_block(kernel_size, n_blocks, "kernel_size")
        ]
        self.padding = [
            _pair(p) for p in _per_block(padding, n_blocks, "padding")
        ]
        self.stride = [_pair(s) for s in _per_block(stride, n_blocks, "stride")]
        self.pooling = [_pair(p) for p in pooling]
        self.out_channels = n_filters[-1]

        cnn = nn.Sequential()
        c_in = n_in_channel
        for i, c_out in enumerate(n_filters):
            cnn.add_module(
                f"conv{i}",
                nn.Conv2d(
                    c_in,
                    c_out,
                    self.kernel_size[i],
                    self.stride[i],
                    self.padding[i],
                ),
            )
            # momentum=0.99 in PyTorch's meaning (the reference's value):
            # running stats follow the current batch almost entirely.
            cnn.add_module(
                f"batchnorm{i}", nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.99)
            )
            if activation == "glu":
                cnn.add_module(f"glu{i}", GLU(c_out))
            elif activation == "cg":
                cnn.add_module(f"cg{i}", ContextGating(c_out))
            elif activation == "relu":
                cnn.add_module(f"relu{i}", nn.ReLU())
            elif activation == "leakyrelu":
                cnn.add_module(f"leakyrelu{i}", nn.LeakyReLU(0.2))
            else:
                raise ValueError(f"Unknown activation {activation!r}")
            if dropout:
                drop = BitMaskDropout if fast_dropout else nn.Dropout
                cnn.add_module(f"dropout{i}", drop(dropout))
            cnn.add_module(f"pooling{i}", nn.AvgPool2d(self.pooling[i]))
            c_in = c_out
        self.cnn = cnn

    def output_size(self, time, freq):
        """Shape (time, freq) of the output for an input of (time, freq).

        Arguments
        ---------
        time : int
            Input frames.
        freq : int
            Input frequency bins.

        Returns
        -------
        tuple of int
            Output (frames, frequency bins).

        Example
        -------
        >>> CNN().output_size(626, 128)
        (156, 1)
        """
        sizes = [time, freq]
        for k, p, s, pool in zip(
            self.kernel_size, self.padding, self.stride, self.pooling
        ):
            for d in range(2):
                sizes[d] = (sizes[d] + 2 * p[d] - k[d]) // s[d] + 1
                sizes[d] = sizes[d] // pool[d]
        return tuple(sizes)

    def forward(self, x):
        """Run the convolutional stack.

        Arguments
        ---------
        x : torch.Tensor
            Input, [batch, channels, time, freq].

        Returns
        -------
        torch.Tensor
            Feature map, [batch, n_filters[-1], time', freq'].
        """
        lean = self.lean_inference and not torch.is_grad_enabled()
        if not (self.fast_dropout or lean):
            return self.cnn(x)
        layers = list(self.cnn)
        i = 0
        while i < len(layers):
            layer = layers[i]
            after = layers[i + 1] if i + 1 < len(layers) else None
            if lean and isinstance(layer, nn.Conv2d) and _foldable(after):
                weight, bias = fuse_conv_bn_weights(
                    layer.weight,
                    layer.bias,
                    after.running_mean,
                    after.running_var,
                    after.eps,
                    after.weight,
                    after.bias,
                )
                x = layer._conv_forward(x, weight, bias)
                i += 2
                gate = layers[i] if i < len(layers) else None
                if isinstance(gate, (GLU, ContextGating)):
                    # x is the map just computed: nothing else reads it.
                    x = gate.forward_inplace(x)
                    i += 1
            elif isinstance(layer, BitMaskDropout) and isinstance(
                after, nn.AvgPool2d
            ):
                x = dropout_avg_pool(
                    x, layer.p, _pair(after.kernel_size), layer.training
                )
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class CRNN(nn.Module):
    """The DCASE Task 4 CRNN with attention pooling.

    The defaults are the DCASE 2023 baseline: 7 blocks with filters
    [16, 32, 64, 128, 128, 128, 128] and average pooling
    [(2, 2), (2, 2), (1, 2) x 5] over (time, freq), the baseline's GLU,
    dropout 0.5, a 2-layer BiGRU of 128 cells, dropout 0.5, a strong head
    ``sigmoid(Linear(256 -> C))`` and an attention head whose softmax runs
    over the classes: ``a = clamp(softmax_c(Linear(x)), 1e-7, 1)`` and
    ``weak_c = sum_t strong_tc * a_tc / sum_t a_tc``.

    Arguments
    ---------
    n_in_channel : int
        Input channels of the CNN.
    n_class : int
        Number of event classes.
    n_filters : list of int
        CNN output channels per block.
    pooling : list
        CNN average pooling (time, freq) per block.
    kernel_size : int or list
        CNN kernel per block.
    padding : int or list
        CNN padding per block.
    stride : int or list
        CNN stride per block.
    dropout : float
        Dropout in the CNN blocks and after the GRU.
    rnn_hidden : int
        GRU hidden size per direction.
    rnn_layers : int
        Number of GRU layers.
    dropout_recurrent : float
        Dropout between GRU layers.
    attention : bool
        Attention pooling for the weak output; if False, mean over time.
    activation : str
        CNN activation: ``"glu"``, ``"cg"``, ``"relu"`` or ``"leakyrelu"``.
    n_freq : int
        Mel bands of the input; only used to size the GRU input when the
        CNN does not pool the frequency axis down to 1.
    fast_dropout : bool
        Dropout masks from random bits, fused with the CNN pooling (see
        :class:`CNN`); False: :class:`torch.nn.Dropout` as in the reference.
    causal : bool
        True: the causal CRNN of :mod:`speechbrain_sed_condmix.lobes.causal`
        (past-only convolution padding, a unidirectional GRU of
        ``2 * rnn_hidden`` cells); an output frame then reads no later mel
        frame than its own 4. Its front end needs fixed scaling
        (``CNNMelFrontEnd(scaling="fixed")``) to be causal as a whole.

    Example
    -------
    >>> model = CRNN(n_filters=[4, 8], pooling=[(2, 4), (2, 4)],
    ...              rnn_hidden=6, n_freq=16)
    >>> out = model(torch.randn(2, 16, 20))
    >>> out.strong.shape, out.weak.shape, out.embeddings.shape
    (torch.Size([2, 10, 5]), torch.Size([2, 10]), torch.Size([2, 5, 12]))
    """

    def __init__(
        self,
        n_in_channel=1,
        n_class=10,
        n_filters=(16, 32, 64, 128, 128, 128, 128),
        pooling=((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
        kernel_size=3,
        padding=1,
        stride=1,
        dropout=0.5,
        rnn_hidden=128,
        rnn_layers=2,
        dropout_recurrent=0.0,
        attention=True,
        activation="glu",
        n_freq=128,
        fast_dropout=True,
        causal=False,
    ):
        super().__init__()
        self.causal = bool(causal)
        self.n_class = n_class
        self.attention = attention
        self.n_freq = n_freq
        self.embedding_dim = 2 * rnn_hidden
        self.cnn = CNN(
            n_in_channel=n_in_channel,
            n_filters=list(n_filters),
            kernel_size=kernel_size,
            padding=padding,
            stride=stride,
            pooling=list(pooling),
            dropout=dropout,
            activation=activation,
            fast_dropout=fast_dropout,
        )
        if self.causal:
            from speechbrain_sed_condmix.lobes.causal import make_cnn_causal

            make_cnn_causal(self.cnn)
        # The GRU sees channels x remaining frequency bins per frame (the
        # reference pools frequency down to 1, so this is n_filters[-1]).
        # The time size does not matter here; any value > pooling works.
        _, f_out = self.cnn.output_size(1 << 12, n_freq)
        if f_out < 1:
            raise ValueError(f"The CNN pools n_freq={n_freq} down to 0 bins")
        rnn_class = UnidirectionalGRU if self.causal else BidirectionalGRU
        self.rnn = rnn_class(
            self.cnn.out_channels * f_out,
            # The causal GRU keeps the BiGRU's output width.
            self.embedding_dim if self.causal else rnn_hidden,
            num_layers=rnn_layers,
            dropout=dropout_recurrent,
        )
        self.dropout = (BitMaskDropout if fast_dropout else nn.Dropout)(dropout)
        self.dense = nn.Linear(self.embedding_dim, n_class)
        if attention:
            self.dense_softmax = nn.Linear(self.embedding_dim, n_class)

    def forward(self, x, frame_mask=None):
        """Compute strong and weak probabilities and frame embeddings.

        Arguments
        ---------
        x : torch.Tensor
            Normalised log-mel, [batch, n_mels, frames] (or
            [batch, channels, n_mels, frames]).
        frame_mask : torch.Tensor, optional
            Bool [batch, output frames], True on valid frames; invalid
            frames get no weight in the weak pooling. None = all valid.

        Returns
        -------
        SEDOutput
            ``strong`` [batch, classes, frames'], ``weak``
            [batch, classes], ``embeddings`` [batch, frames', 2*hidden]
            (the GRU output before dropout), ``cnn_embeddings``
            [batch, frames', channels * freq] (the CNN output, the GRU's
            input).

        Example
        -------
        >>> model = CRNN(n_filters=[4], pooling=[(2, 16)], rnn_hidden=3,
        ...              n_freq=16, n_class=2).eval()
        >>> out = model(torch.randn(1, 16, 8))
        >>> out.strong.shape, out.cnn_embeddings.shape
        (torch.Size([1, 2, 4]), torch.Size([1, 4, 4]))
        """
        if x.dim() == 3:
            x = x.unsqueeze(1)
        # [B, C, mels, frames] -> [B, C, frames, mels]: conv over (time, freq)
        x = self.cnn(x.transpose(2, 3))
        bs, chan, frames, freq = x.shape
        if freq != 1 and chan * freq != self.rnn.rnn.input_size:
            raise ValueError(
                f"CNN output has {chan}x{freq} features per frame, the GRU "
                f"expects {self.rnn.rnn.input_size}; check n_freq"
            )
        x = x.permute(0, 2, 1, 3).reshape(bs, frames, chan * freq)
        emb = self.rnn(x)
        strong, weak = classification_heads(
            self.dropout(emb),
            self.dense,
            self.dense_softmax if self.attention else None,
            frame_mask,
        )
        return SEDOutput(strong, weak, emb, cnn_embeddings=x)


def classification_heads(h, dense, dense_softmax=None, frame_mask=None):
    """Strong (frame) and weak (clip) outputs of the DCASE CRNN heads.

    ``strong = sigmoid(dense(h))``; with ``dense_softmax`` the weak output is
    attention-pooled, with the softmax over the classes as in the reference:
    ``a = clamp(softmax_c(dense_softmax(h)), 1e-7, 1)`` and
    ``weak_c = sum_t strong_tc a_tc / sum_t a_tc``; without it, the mean
    over (valid) frames.

    Arguments
    ---------
    h : torch.Tensor
        Frame features, [batch, frames, features].
    dense : torch.nn.Linear
        Strong head.
    dense_softmax : torch.nn.Linear, optional
        Attention head.
    frame_mask : torch.Tensor, optional
        Bool [batch, frames], True on valid frames.

    Returns
    -------
    strong : torch.Tensor
        [batch, classes, frames].
    weak : torch.Tensor
        [batch, classes].

    Example
    -------
    >>> dense = torch.nn.Linear(4, 3)
    >>> strong, weak = classification_heads(torch.randn(2, 5, 4), dense)
    >>> torch.allclose(weak, strong.mean(-1))
    True
    """
    strong = torch.sigmoid(dense(h))  # [B, T, C]
    if dense_softmax is not None:
        # Softmax over the classes (as in the reference), so a frame
        # spreads one unit of attention over the classes; the weak
        # output then normalises each class over time.
        att = torch.softmax(dense_softmax(h), dim=-1)
        att = torch.clamp(att, min=1e-7, max=1.0)
        if frame_mask is not None:
            att = att * frame_mask.unsqueeze(-1).to(att.dtype)
        weak = (strong * att).sum(1) / att.sum(1)
    elif frame_mask is not None:
        m = frame_mask.unsqueeze(-1).to(strong.dtype)
        weak = (strong * m).sum(1) / m.sum(1).clamp(min=1.0)
    else:
        weak = strong.mean(1)
    return strong.transpose(1, 2), weak


_DESED_PREFIXES = {"student": "sed_student.", "teacher": "sed_teacher."}


def load_desed_task_state_dict(
    model, state_dict_or_path, which="student", *, trust_checkpoint=False
):
    """Load DESED_task (DCASE Task 4 baseline) CRNN weights into a CRNN.

    The parameter names of :class:`CRNN` are those of the reference model,
    so no key mapping is needed beyond removing the Lightning prefix:

    * ``cnn.cnn.conv{i}.weight|bias``,
      ``cnn.cnn.batchnorm{i}.weight|bias|running_mean|running_var|
      num_batches_tracked``, ``cnn.cnn.glu{i}.linear.weight|bias``
      for i = 0..6;
    * ``rnn.rnn.weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
      ``bias_hh_l{k}`` and the same with ``_reverse``, k = 0, 1;
    * ``dense.weight|bias``, ``dense_softmax.weight|bias``.

    Accepted inputs: a Lightning checkpoint ``{"state_dict": {...}}`` whose
    keys carry the prefixes ``sed_student.`` / ``sed_teacher.`` (other
    entries such as the mel front end buffers are ignored), the prefixed
    dict itself, or an already bare state dict. ``which`` picks the
    student or teacher weights when prefixes are present. Loading is
    strict.

    Arguments
    ---------
    model : CRNN
        Model to load into (any module with the reference layout).
    state_dict_or_path : str, os.PathLike or Mapping
        Checkpoint path or an already loaded checkpoint / state dict.
    which : str
        ``"student"`` or ``"teacher"``.
    trust_checkpoint : bool
        For a path: unpickle the file in full, which can run code stored in
        it (only for files from a trusted source). By default it is read
        with :func:`~speechbrain_sed_condmix.safe_load.load_checkpoint`,
        which runs no code from it.

    Returns
    -------
    torch.nn.Module
        ``model``, with the weights loaded.

    Raises
    ------
    ValueError
        If keys are missing or unexpected (the message names them and the
        prefixes found), if shapes differ, or if ``which`` is invalid.

    Example
    -------
    >>> src = CRNN(n_filters=[4], pooling=[(2, 16)], rnn_hidden=3, n_freq=16)
    >>> dst = CRNN(n_filters=[4], pooling=[(2, 16)], rnn_hidden=3, n_freq=16)
    >>> ckpt = {"state_dict": {
    ...     f"sed_{w}.{k}": v for w in ("student", "teacher")
    ...     for k, v in src.state_dict().items()}}
    >>> _ = load_desed_task_state_dict(dst, ckpt, which="teacher")
    >>> torch.equal(dst.dense.weight, src.dense.weight)
    True
    """
    if which not in _DESED_PREFIXES:
        raise ValueError(f"which must be 'student' or 'teacher', not {which!r}")
    if isinstance(state_dict_or_path, Mapping):
        ckpt = state_dict_or_path
    else:
        ckpt = load_checkpoint(
            state_dict_or_path, trust_checkpoint=trust_checkpoint
        )
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"Expected a dict checkpoint, got {type(ckpt)}")
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, Mapping):
        raise ValueError("The checkpoint's 'state_dict' entry is not a dict")

    found = sorted({k.split(".", 1)[0] + "." for k in sd if "." in k})
    present = [p for p in _DESED_PREFIXES.values() if p in found]
    prefix = _DESED_PREFIXES[which]
    if present:
        if prefix not in present:
            raise ValueError(
                f"No '{prefix}' weights in the checkpoint; prefixes found: "
                f"{found}"
            )
        n = len(prefix)
        sd = {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}

    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"State dict does not match the model (which={which!r}). "
            f"Missing keys: {missing}. Unexpected keys: {unexpected}. "
            f"Top-level prefixes found in the checkpoint: {found}."
        )
    bad = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(sd[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ValueError("Shape mismatch: " + "; ".join(bad))
    model.load_state_dict(sd, strict=True)
    return model
