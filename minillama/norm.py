"""RMSNorm: the normalisation every LLaMA uses in place of LayerNorm.

Root Mean Square Layer Normalization (Zhang & Sennrich, arXiv 1910.07467) drops
LayerNorm's mean subtraction and bias and only rescales:

    RMSNorm(x) = x / sqrt(mean(x_i^2) + eps) * g

with a learned gain ``g`` (initialised to ones). LLaMA applies it *before* attention
and before the feed-forward network (pre-norm), and once more before the output head.
As in Meta's reference code, the statistics are computed in float32 and the result is
cast back to the input dtype before the gain is applied.
"""

import torch
from torch import nn


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS normalisation over the last dimension (used by QK-norm too)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


class RMSNorm(nn.Module):
    """
    Root-mean-square layer normalisation with a learned gain.

    Args:
        dim (int): Width of the normalised (last) dimension.
        eps (float): Added to the mean square for numerical stability.

    Attributes:
        eps (float): As above.
        weight (nn.Parameter): The gain g, initialised to ones.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.eps) * self.weight         # x / sqrt(mean(x_i^2) + eps) * g

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
