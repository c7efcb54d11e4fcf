"""The ATST-Frame audio transformer (frame-level encoder of ATST-SED).

ATST-Frame is a ViT-Base encoder over mel patches of 64 mel bands by 4
frames. With the 16 kHz, hop-160 front end
(:class:`~speechbrain_sed_condmix.lobes.features.ATSTMelFrontEnd`) a 10 s
clip has 1001 frames, cropped to 1000, which gives 250 tokens of 40 ms. The
learned positional table has room for 250 tokens, so longer audio has to be
cut into chunks of at most 10 s.

The module tree reproduces the parameter names of the reference
``FrameAST``, so pretrained checkpoints load with
:func:`load_atst_checkpoint` after removing the Lightning prefixes. The
base configuration has 85,419,264 parameters in 138 tensors.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import os
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from speechbrain_sed_condmix.lobes.heads import (
    ATST_HEAD_PREFIXES,
    load_heads_into,
)
from speechbrain_sed_condmix.safe_load import load_checkpoint

ATST_CHECKPOINT_HELP = (
    "ATST-SED needs pretrained ATST-Frame weights. The ATST-SED README "
    "(https://github.com/Audio-WestlakeU/ATST-SED) links the checkpoint "
    "'atst_as2M.ckpt' (ATST-Frame fine-tuned on AudioSet-2M), hosted on "
    "Google Drive with file id 1_xb0_n3UNbUG_pH1vLHTviLfsaSfCzxz "
    "(https://drive.google.com/file/d/1_xb0_n3UNbUG_pH1vLHTviLfsaSfCzxz). "
    "ATST-Frame base checkpoints are also hosted by audiossl "
    "(https://github.com/Audio-WestlakeU/audiossl). Download the file and "
    "pass its path with --atst_ckpt."
)

# Loading errors list at most this many keys of each kind.
_MAX_KEYS_SHOWN = 12


def _trunc_normal_(tensor, std=0.02):
    """Truncated normal at two standard deviations, in place."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2.0 * std, b=2.0 * std)


class PatchEmbed(nn.Module):
    """Cut a mel spectrogram into frequency-major patches and embed them.

    Each token covers all ``n_mels`` bands and ``patch_frames`` frames; its
    ``n_mels * patch_frames`` values are ordered frequency-major
    (index = mel * patch_frames + frame). Frames beyond the last whole patch
    are dropped.

    Arguments
    ---------
    n_mels : int
        Number of mel bands (the patch height).
    patch_frames : int
        Number of frames per patch.
    embed_dim : int
        Token dimension.

    Example
    -------
    >>> pe = PatchEmbed(n_mels=8, patch_frames=4, embed_dim=16)
    >>> pe(torch.randn(2, 8, 13)).shape
    torch.Size([2, 3, 16])
    """

    def __init__(self, n_mels=64, patch_frames=4, embed_dim=768):
        super().__init__()
        self.n_mels = n_mels
        self.patch_frames = patch_frames
        self.patch_embed = nn.Linear(n_mels * patch_frames, embed_dim)

    def patchify(self, mel):
        """Rearrange [batch, n_mels, frames] into [batch, tokens, patch].

        Arguments
        ---------
        mel : torch.Tensor
            Mel spectrogram, [batch, n_mels, frames].

        Returns
        -------
        torch.Tensor
            Flattened patches, [batch, frames // patch_frames,
            n_mels * patch_frames].

        Example
        -------
        >>> pe = PatchEmbed(n_mels=2, patch_frames=2, embed_dim=4)
        >>> pe.patchify(torch.arange(10.0).view(1, 2, 5))
        tensor([[[0., 1., 5., 6.],
                 [2., 3., 7., 8.]]])
        """
        batch, n_mels, frames = mel.shape
        n_tokens = frames // self.patch_frames
        x = mel[..., : n_tokens * self.patch_frames]
        x = x.reshape(batch, n_mels, n_tokens, self.patch_frames)
        return x.permute(0, 2, 1, 3).reshape(batch, n_tokens, -1)

    def forward(self, mel):
        """Embed the patches.

        Arguments
        ---------
        mel : torch.Tensor
            Mel spectrogram, [batch, n_mels, frames].

        Returns
        -------
        torch.Tensor
            Token embeddings, [batch, frames // patch_frames, embed_dim].
        """
        return self.patch_embed(self.patchify(mel))


class Attention(nn.Module):
    """Multi-head self-attention with a fused, bias-free qkv projection.

    Arguments
    ---------
    dim : int
        Token dimension.
    num_heads : int
        Number of heads (``dim`` must be divisible by it).
    dropout : float
        Dropout on the output projection.

    Example
    -------
    >>> attn = Attention(16, num_heads=4)
    >>> attn(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, dim, num_heads, dropout=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"dim ({dim}) must be divisible by num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x):
        """Attend over all tokens (no mask, as in the reference).

        Arguments
        ---------
        x : torch.Tensor
            Tokens, [batch, tokens, dim].

        Returns
        -------
        torch.Tensor
            Attention output, [batch, tokens, dim].
        """
        batch, n_tokens, dim = x.shape
        # The qkv output is laid out as (3, heads, head_dim), the layout of
        # the pretrained weights.
        qkv = self.qkv(x).reshape(
            batch, n_tokens, 3, self.num_heads, dim // self.num_heads
        )
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, n_tokens, dim)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU.

    Arguments
    ---------
    dim : int
        Input and output dimension.
    hidden_dim : int
        Hidden dimension.
    dropout : float
        Dropout after the activation and after the output layer.

    Example
    -------
    >>> Mlp(8, 32)(torch.randn(3, 8)).shape
    torch.Size([3, 8])
    """

    def __init__(self, dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """Apply the network.

        Arguments
        ---------
        x : torch.Tensor
            Input, [..., dim].

        Returns
        -------
        torch.Tensor
            Output, [..., dim].
        """
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``.

    Arguments
    ---------
    dim : int
        Token dimension.
    num_heads : int
        Number of attention heads.
    mlp_ratio : float
        Hidden size of the MLP relative to ``dim``.
    dropout : float
        Dropout on the attention projection and in the MLP.

    Example
    -------
    >>> Block(16, num_heads=2)(torch.randn(1, 7, 16)).shape
    torch.Size([1, 7, 16])
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, dropout=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x):
        """Apply the block.

        Arguments
        ---------
        x : torch.Tensor
            Tokens, [batch, tokens, dim].

        Returns
        -------
        torch.Tensor
            Tokens, [batch, tokens, dim].
        """
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ATSTFrame(nn.Module):
    """ATST-Frame transformer encoder: normalised mel -> frame embeddings.

    The input is the normalised output of
    :class:`~speechbrain_sed_condmix.lobes.features.ATSTMelFrontEnd`. Time
    is cropped to a multiple of ``patch_frames``; each group of
    ``patch_frames`` frames becomes one token (all mel bands,
    frequency-major), embedded linearly, plus a learned position
    (``pos_embed[:, 1:T + 1]``; slot 0 is the unused class-token slot of
    the pretrained table). After ``depth`` pre-norm blocks the last block's
    output goes through ``norm_frame``. ``mask_embed`` replaces the patch
    embedding of the tokens that ``forward``'s ``mask`` selects (before
    the position is added), as in ATST-Frame's masked pretraining; without
    a mask it is unused. Stochastic depth is not implemented (ATST-SED
    trains with it off).

    Arguments
    ---------
    embed_dim : int
        Token dimension.
    depth : int
        Number of transformer blocks.
    num_heads : int
        Number of attention heads.
    mlp_ratio : float
        MLP hidden size relative to ``embed_dim``.
    n_mels : int
        Number of mel bands of the input (the patch height).
    patch_frames : int
        Frames per token.
    max_tokens : int
        Size of the positional table (250 tokens = 10 s at 16 kHz, hop 160).
    dropout : float
        Dropout after the positional embedding, on the attention
        projections and in the MLPs.

    Example
    -------
    >>> enc = ATSTFrame(embed_dim=32, depth=2, num_heads=4, max_tokens=50)
    >>> enc(torch.randn(2, 64, 101)).shape
    torch.Size([2, 25, 32])
    >>> [name for name, _ in enc.layer_groups()]
    ['embeddings', 'block0', 'block1', 'norm_frame']
    """

    def __init__(
        self,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        n_mels=64,
        patch_frames=4,
        max_tokens=250,
        dropout=0.0,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.n_mels = n_mels
        self.patch_frames = patch_frames
        self.max_tokens = max_tokens
        self.patch_embed = PatchEmbed(n_mels, patch_frames, embed_dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens + 1, embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, dropout)
            for _ in range(depth)
        )
        self.norm_frame = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self):
        """Initialise as ViT: truncated normal (std 0.02), zero biases."""
        _trunc_normal_(self.pos_embed)
        _trunc_normal_(self.mask_embed)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _trunc_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x, mask=None):
        """Encode a normalised mel spectrogram.

        Arguments
        ---------
        x : torch.Tensor
            Normalised ATST mel, [batch, n_mels, frames] or
            [batch, 1, n_mels, frames].
        mask : torch.Tensor, optional
            Boolean [batch, frames // patch_frames]: tokens whose patch
            embedding is replaced by ``mask_embed`` (masked pretraining).

        Returns
        -------
        torch.Tensor
            Frame embeddings after ``norm_frame``,
            [batch, frames // patch_frames, embed_dim].

        Raises
        ------
        ValueError
            If the input has the wrong shape or gives more tokens than the
            positional table holds.
        """
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.squeeze(1)
        if x.dim() != 3 or x.shape[1] != self.n_mels:
            raise ValueError(
                f"ATSTFrame expects a mel of shape [batch, {self.n_mels}, "
                f"frames] or [batch, 1, {self.n_mels}, frames], got "
                f"{tuple(x.shape)}"
            )
        n_tokens = x.shape[-1] // self.patch_frames
        if n_tokens > self.max_tokens:
            raise ValueError(
                f"ATSTFrame input of {x.shape[-1]} frames gives {n_tokens} "
                f"tokens, more than the {self.max_tokens} of its positional "
                f"table (250 tokens = 10 s at 16 kHz with hop 160). Longer "
                "audio must be cut into chunks of at most that length."
            )
        if n_tokens == 0:
            raise ValueError(
                f"ATSTFrame needs at least {self.patch_frames} frames, got "
                f"{x.shape[-1]}"
            )
        x = self.patch_embed(x)
        if mask is not None:
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise ValueError(
                    f"ATSTFrame mask of shape {tuple(mask.shape)} does not "
                    f"match the {tuple(x.shape[:2])} (batch, tokens) of "
                    "the input"
                )
            x = torch.where(mask[..., None], self.mask_embed.to(x.dtype), x)
        x = self.pos_drop(x + self.pos_embed[:, 1 : n_tokens + 1])
        for block in self.blocks:
            x = block(x)
        return self.norm_frame(x)

    def layer_groups(self):
        """Parameters grouped by depth, for layer-wise learning rates.

        Returns
        -------
        list of (str, list of torch.nn.Parameter)
            From the bottom up: ``("embeddings", patch embedding, position
            and mask embeddings)``, ``("block0", ...)``, ...,
            ``("block{depth-1}", ...)``, ``("norm_frame", ...)``.

        Example
        -------
        >>> groups = ATSTFrame(embed_dim=8, depth=1, num_heads=2).layer_groups()
        >>> [(name, len(params)) for name, params in groups]
        [('embeddings', 4), ('block0', 11), ('norm_frame', 2)]
        """
        groups = [
            (
                "embeddings",
                [
                    *self.patch_embed.parameters(),
                    self.pos_embed,
                    self.mask_embed,
                ],
            )
        ]
        for i, block in enumerate(self.blocks):
            groups.append((f"block{i}", list(block.parameters())))
        groups.append(("norm_frame", list(self.norm_frame.parameters())))
        return groups


def _show_keys(keys):
    """Sorted key list for error messages, cut after a few entries."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    if len(keys) > _MAX_KEYS_SHOWN:
        shown += f", ... ({len(keys) - _MAX_KEYS_SHOWN} more)"
    return f"{len(keys)} [{shown}]"


def _map_atst_key(key):
    """Bare FrameAST name of a checkpoint key.

    Returns
    -------
    tuple
        ``(matched, name)``: ``matched`` says whether the key has a known
        prefix; ``name`` is the bare name, or None when the key is to be
        skipped (or has no known prefix).
    """
    if "encoder.encoder.teacher_module." in key:
        return True, None
    if "model.teacher.encoder." in key:
        # ATST pretraining checkpoint (older layout: a cls token and a
        # final ``norm`` that is ``norm_frame`` here).
        name = key.split("model.teacher.encoder.", 1)[1]
        if name.startswith("cls_token"):
            return True, None
        if name.startswith("norm."):
            name = "norm_frame." + name[len("norm.") :]
        return True, name
    # C2F distilled model first, as its prefix contains the next one.
    for prefix in ("encoder.encoder.frame_encoder.", "encoder.encoder."):
        if prefix in key:
            return True, key.split(prefix, 1)[1]
    # ATST-SED: Lightning checkpoint (student weights) or a model dict.
    for prefix in ("sed_student.atst_frame.atst.", "atst_frame.atst."):
        if key.startswith(prefix):
            name = key[len(prefix) :]
            # Profiler counters saved by some ATST-SED checkpoints.
            if name.endswith(("total_ops", "total_params")):
                return True, None
            return True, name
    return False, None


def _read_atst_file(path, trust_checkpoint, hint=""):
    """Read an ATST-Frame file (or take a loaded dict): ``(ckpt, source,
    state_dict)``, stopping with the source's name if it is not a dict;
    ``hint`` is appended to that message."""
    if isinstance(path, Mapping):
        ckpt, source = path, "<state dict>"
    else:
        ckpt = load_checkpoint(path, trust_checkpoint=trust_checkpoint)
        source = os.fspath(path)
    if not isinstance(ckpt, Mapping):
        raise ValueError(
            f"{source} is not an ATST-Frame checkpoint: expected a dict, "
            f"got {type(ckpt).__name__}{hint}"
        )
    state_dict = ckpt.get("state_dict", ckpt)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"The 'state_dict' entry of {source} is not a dict")
    return ckpt, source, state_dict


def load_atst_checkpoint(model, path, *, trust_checkpoint=False, heads=None):
    """Load pretrained ATST-Frame weights into an :class:`ATSTFrame`.

    The file is a Lightning checkpoint (weights under ``"state_dict"``) or
    a plain state dict. Its keys are mapped onto the bare ``FrameAST``
    names of :class:`ATSTFrame`:

    * ``...model.teacher.encoder.<key>`` (ATST pretraining): ``cls_token``
      is dropped and a leading ``norm.`` becomes ``norm_frame.``;
    * ``...encoder.encoder.frame_encoder.<key>`` (C2F distilled model);
    * ``...encoder.encoder.teacher_module.*`` is skipped;
    * ``...encoder.encoder.<key>`` (ATST-Frame after fine-tuning, e.g.
      ``atst_as2M.ckpt``);
    * ``sed_student.atst_frame.atst.<key>`` or ``atst_frame.atst.<key>``
      (ATST-SED checkpoints; teacher weights are not used).

    Other keys (student encoders, projectors, classification heads) are
    ignored, unless ``heads`` asks for the projector and predictor (see
    :func:`load_atst_heads`). A dict without any of these prefixes is taken
    as a bare ``FrameAST`` state dict. Loading is strict.

    A file is read with
    :func:`~speechbrain_sed_condmix.safe_load.load_checkpoint`, which runs
    no code from it.

    Arguments
    ---------
    model : ATSTFrame
        Encoder to load into.
    path : str, os.PathLike or Mapping
        Checkpoint path, or an already loaded checkpoint or state dict.
    trust_checkpoint : bool
        Unpickle the file in full, which can run code stored in it (only
        for files from a trusted source); see
        :func:`~speechbrain_sed_condmix.safe_load.load_checkpoint`.
    heads : Mapping, optional
        Head name (a key of :data:`ATST_HEAD_PREFIXES`) -> module, e.g.
        ``{"student_projector": loss.projector}``. Each head that the file
        holds is loaded into its module (strict); the others keep their
        weights. A log line says which were loaded and which are random;
        :func:`load_heads_into` gives the same as a dict.

    Returns
    -------
    int
        Number of encoder tensors loaded (138 for the base configuration).

    Raises
    ------
    ValueError
        If the keys do not match the model (the message names the file and
        lists the missing and unexpected keys), if two keys map onto the
        same name, or if shapes differ.

    Example
    -------
    >>> src = ATSTFrame(embed_dim=8, depth=1, num_heads=2, max_tokens=4)
    >>> dst = ATSTFrame(embed_dim=8, depth=1, num_heads=2, max_tokens=4)
    >>> ckpt = {"state_dict": {
    ...     "encoder.encoder." + k: v for k, v in src.state_dict().items()}}
    >>> ckpt["state_dict"]["head.linear.weight"] = torch.zeros(527, 8)
    >>> load_atst_checkpoint(dst, ckpt)
    17
    >>> torch.equal(dst.pos_embed, src.pos_embed)
    True
    """
    ckpt, source, state_dict = _read_atst_file(
        path, trust_checkpoint, f". {ATST_CHECKPOINT_HELP}"
    )

    mapped, origin, any_prefix = {}, {}, False
    for key, value in state_dict.items():
        matched, name = _map_atst_key(key)
        any_prefix |= matched
        if name is None:
            continue
        if name in mapped:
            raise ValueError(
                f"Ambiguous ATST-Frame checkpoint {source}: both "
                f"{origin[name]!r} and {key!r} map onto {name!r}"
            )
        mapped[name], origin[name] = value, key
    if not any_prefix:
        mapped = dict(state_dict)  # a bare FrameAST state dict

    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{source} is not an ATST-Frame checkpoint for this model "
            f"({len(own)} tensors expected, {len(own) - len(missing)} "
            f"found). Missing keys: {_show_keys(missing)}. Unexpected keys: "
            f"{_show_keys(unexpected)}. Known layouts: "
            "'model.teacher.encoder.*', 'encoder.encoder.*', "
            "'encoder.encoder.frame_encoder.*', "
            "'[sed_student.]atst_frame.atst.*' or bare FrameAST keys."
        )
    bad = [
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(mapped[k].shape) != tuple(v.shape)
    ]
    if bad:
        more = len(bad) - _MAX_KEYS_SHOWN
        raise ValueError(
            f"Shape mismatch between {source} and the ATSTFrame model (is "
            "the model configured like the checkpoint?): "
            + "; ".join(bad[:_MAX_KEYS_SHOWN])
            + (f"; ... ({more} more)" if more > 0 else "")
        )
    model.load_state_dict(mapped, strict=True)
    if heads is not None:
        load_heads_into(heads, load_atst_heads(ckpt), source)
    return len(mapped)


def load_atst_heads(path, *, trust_checkpoint=False):
    """Projector and predictor weights of an ATST-Frame pretraining file.

    A pretraining checkpoint (Lightning, attribute ``model``) holds the
    BYOL heads under ``model.student.projector.*``,
    ``model.student.predictor.*`` and ``model.teacher.projector.*``, in the
    ``nn.Sequential`` layout of
    :class:`~speechbrain_sed_condmix.lobes.heads.MLPHead` (``0.weight``,
    ``1.*`` BatchNorm, ``3.weight``). A leading prefix before ``model.``
    (e.g. a wrapper's) is allowed.

    Arguments
    ---------
    path : str, os.PathLike or Mapping
        Checkpoint path, or an already loaded checkpoint or state dict.
    trust_checkpoint : bool
        See :func:`load_atst_checkpoint`.

    Returns
    -------
    dict
        ``{"student_projector": state_dict, "student_predictor": ...,
        "teacher_projector": ...}`` with the heads the file holds; empty
        when it holds none (e.g. a fine-tuned ATST-Frame or ATST-SED
        checkpoint).

    Raises
    ------
    ValueError
        If the file is not a dict.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.heads import MLPHead
    >>> head = MLPHead(8, hidden_size=16, output_size=4)
    >>> ckpt = {"state_dict": {
    ...     "model.student.projector." + k: v
    ...     for k, v in head.state_dict().items()}}
    >>> sorted(load_atst_heads(ckpt))
    ['student_projector']
    >>> load_atst_heads({"state_dict": {"encoder.encoder.x": 0}})
    {}
    """
    _, source, state_dict = _read_atst_file(path, trust_checkpoint)
    found = {}
    for name, prefix in ATST_HEAD_PREFIXES.items():
        for key, value in state_dict.items():
            if key.startswith(prefix) or ("." + prefix) in key:
                found.setdefault(name, {})[key.split(prefix, 1)[1]] = value
    return found
