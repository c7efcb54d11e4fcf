"""ATST-SED: the ATST-Frame transformer fused with the DCASE CRNN.

The CNN branch is the CRNN's convolutional stack on the 128-band magnitude
log-mel (626 frames -> 156 frames of 64 ms). The ATST branch is ATST-Frame
on the 64-band ATST mel (1001 frames -> 250 tokens of 40 ms). The tokens are
average-pooled to the CNN's 156 frames, concatenated with the CNN features,
projected by ``cat_tf`` (Linear 896 -> 128, no activation) and fed to the
2-layer BiGRU and the strong / weak heads of the CRNN.

Module names follow the reference model (``cnn.cnn.conv0``, ``rnn.rnn``,
``cat_tf``, ``dense``, ``dense_softmax``, ``atst_frame.atst.<ATST-Frame
keys>``), so its state dicts map one to one.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_sed_condmix.lobes.crnn import (
    CNN,
    BidirectionalGRU,
    SEDOutput,
    classification_heads,
)


class ATSTBranch(nn.Module):
    """Holds the ATST-Frame encoder as ``self.atst`` (reference key names).

    Arguments
    ---------
    atst : torch.nn.Module
        An :class:`~speechbrain_sed_condmix.lobes.atst.ATSTFrame`.
    """

    def __init__(self, atst):
        super().__init__()
        self.atst = atst

    def forward(self, x):
        """Frame embeddings ``[batch, tokens, dim]`` of the ATST mel ``x``."""
        return self.atst(x)


class ATSTSED(nn.Module):
    """ATST-SED fusion model: CNN + ATST-Frame -> BiGRU -> heads.

    Arguments
    ---------
    atst : torch.nn.Module
        The ATST-Frame encoder (``ATSTFrame``); its ``embed_dim`` sizes the
        fusion layer.
    n_class : int
        Number of event classes.
    n_filters : list of int
        CNN output channels per block.
    pooling : list
        CNN average pooling (time, freq) per block.
    dropout : float
        Dropout in the CNN blocks and after the GRU.
    rnn_hidden : int
        GRU hidden size per direction.
    rnn_layers : int
        Number of GRU layers.
    activation : str
        CNN activation (the reference uses context gating, ``"cg"``).
    n_freq : int
        Mel bands of the CNN input.
    fusion_size : int
        Output size of ``cat_tf`` (the GRU input).
    atst_trainable : bool
        False freezes the encoder (stage 1): no gradients, always in eval
        mode, run under ``torch.no_grad``. :meth:`set_atst_trainable`
        changes it.
    attention : bool
        Attention pooling for the weak output.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.atst import ATSTFrame
    >>> atst = ATSTFrame(embed_dim=16, depth=1, num_heads=2)
    >>> model = ATSTSED(atst, n_filters=[4, 8], pooling=[(2, 8), (2, 16)],
    ...                 rnn_hidden=6, fusion_size=8)
    >>> out = model(torch.randn(2, 128, 626), torch.randn(2, 64, 1001))
    >>> out.strong.shape, out.weak.shape
    (torch.Size([2, 10, 156]), torch.Size([2, 10]))
    >>> out.embeddings.shape, out.encoder_embeddings.shape
    (torch.Size([2, 156, 12]), torch.Size([2, 250, 16]))
    >>> any(p.requires_grad for p in model.atst_frame.parameters())
    False
    """

    def __init__(
        self,
        atst,
        n_class=10,
        n_filters=(16, 32, 64, 128, 128, 128, 128),
        pooling=((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
        dropout=0.5,
        rnn_hidden=128,
        rnn_layers=2,
        activation="cg",
        n_freq=128,
        fusion_size=128,
        atst_trainable=False,
        attention=True,
    ):
        super().__init__()
        self.n_class = n_class
        self.attention = attention
        self.embedding_dim = 2 * rnn_hidden
        self.cnn = CNN(
            n_filters=list(n_filters),
            pooling=list(pooling),
            dropout=dropout,
            activation=activation,
        )
        _, f_out = self.cnn.output_size(1 << 12, n_freq)
        if f_out != 1:
            raise ValueError(
                f"The CNN must pool the {n_freq} mel bands down to 1 "
                f"(got {f_out}); check pooling"
            )
        self.atst_frame = ATSTBranch(atst)
        self.cat_tf = nn.Linear(
            self.cnn.out_channels + atst.embed_dim, fusion_size
        )
        self.rnn = BidirectionalGRU(fusion_size, rnn_hidden, rnn_layers)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(self.embedding_dim, n_class)
        if attention:
            self.dense_softmax = nn.Linear(self.embedding_dim, n_class)
        self.set_atst_trainable(atst_trainable)

    def set_atst_trainable(self, trainable):
        """Freeze (stage 1) or unfreeze (stage 2) the ATST-Frame encoder.

        Arguments
        ---------
        trainable : bool
            Whether the encoder is fine-tuned.
        """
        self.atst_trainable = bool(trainable)
        self.atst_frame.requires_grad_(self.atst_trainable)
        self.train(self.training)

    def train(self, mode=True):
        """Set the mode; a frozen encoder stays in eval mode.

        Arguments
        ---------
        mode : bool
            Training mode requested by the caller.

        Returns
        -------
        ATSTSED
            ``self``.
        """
        super().train(mode)
        if not getattr(self, "atst_trainable", True):
            self.atst_frame.eval()
        return self

    def forward(self, cnn_input, atst_input, frame_mask=None):
        """Strong and weak probabilities and the frame embeddings.

        Arguments
        ---------
        cnn_input : torch.Tensor
            Normalised CNN log-mel, [batch, n_mels, frames] (626 for 10 s).
        atst_input : torch.Tensor
            Normalised ATST mel, [batch, 64, frames] (1001 for 10 s).
        frame_mask : torch.Tensor, optional
            Bool [batch, output frames], True on valid frames (weak pooling).

        Returns
        -------
        SEDOutput
            ``strong`` [batch, classes, frames'], ``weak`` [batch, classes],
            ``embeddings`` (BiGRU output) [batch, frames', 2*rnn_hidden] and
            ``encoder_embeddings`` (ATST-Frame output) [batch, tokens, dim].
        """
        if cnn_input.dim() == 3:
            cnn_input = cnn_input.unsqueeze(1)
        x = self.cnn(cnn_input.transpose(2, 3))  # [B, C, T', 1]
        x = x.squeeze(-1).transpose(1, 2)  # [B, T', C]
        with torch.set_grad_enabled(
            self.atst_trainable and torch.is_grad_enabled()
        ):
            tokens = self.atst_frame(atst_input)  # [B, N, D]
        pooled = tokens.transpose(1, 2)
        if pooled.shape[-1] != x.shape[1]:
            # 40 ms tokens -> the CNN's 64 ms frames (250 -> 156 for 10 s)
            pooled = F.adaptive_avg_pool1d(pooled, x.shape[1])
        fused = self.cat_tf(torch.cat([x, pooled.transpose(1, 2)], dim=-1))
        emb = self.rnn(fused)
        strong, weak = classification_heads(
            self.dropout(emb),
            self.dense,
            self.dense_softmax if self.attention else None,
            frame_mask,
        )
        return SEDOutput(strong, weak, emb, tokens)
