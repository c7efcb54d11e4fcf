"""Projection heads for embedding-level self-supervised losses.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch


class MLPHead(torch.nn.Module):
    """BYOL-style two-layer MLP applied to every frame.

    ``Linear(bias=False) -> BatchNorm1d -> ReLU -> Linear(bias=False)``, the
    layout of ATST-Frame's projector and predictor. ATST-Frame uses
    768 -> 4096 -> 256 on transformer frames; the defaults here
    (hidden 512, output 128) are smaller because the heads sit on the
    256-d BiGRU embedding of the SED model, and a 4096-wide hidden layer
    would be larger than the whole CRNN.

    Frames are flattened before the BatchNorm, so its statistics are taken
    over every frame of the batch (as in ATST-Frame).

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
    """

    def __init__(self, input_size, hidden_size=512, output_size=128):
        super().__init__()
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(self.input_size, hidden_size, bias=False),
            torch.nn.BatchNorm1d(hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_size, self.output_size, bias=False),
        )

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
        out = self.net(x.reshape(-1, self.input_size))
        return out.reshape(*lead, self.output_size)
