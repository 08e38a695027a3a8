"""SwiGLU feed-forward network.

GLU Variants Improve Transformer (Shazeer, arXiv 2002.05202) replaces the MLP's single
activation with a gated product; LLaMA uses the Swish (SiLU) gate:

    FFN(x) = W2 ( SiLU(W1 x) * (W3 x) )         SiLU(z) = z * sigmoid(z)

W1 (the gate) and W3 (the up projection) map D -> F, W2 maps F -> D. With three
matrices instead of two, F is about (2/3) * 4D, which keeps the parameter count and
FLOPs of the classic 4D MLP (see ``config.py`` for the exact rounding).
"""

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """
    The SwiGLU feed-forward network of a block (also each expert of ``moe.py``).

    Args:
        dim (int): Model width D (input and output).
        hidden_dim (int): Hidden width F.

    Attributes:
        w1 (nn.Linear): Gate projection, D -> F.
        w2 (nn.Linear): Down projection, F -> D.
        w3 (nn.Linear): Up projection, D -> F.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)   # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)   # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)   # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))     # W2 (SiLU(W1 x) * (W3 x))
