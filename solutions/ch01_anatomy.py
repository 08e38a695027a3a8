"""Chapter 1 exercises: the pieces of one LLaMA block, written by hand.

Each function below has a twin in the library (``minillama.norm``, ``minillama.rope``,
``minillama.attention``); the grader ``tests/test_exercises_ch01.py`` feeds both the same
random inputs and compares the outputs. Shapes follow the library: queries and keys
are (batch, heads, time, head_dim), written ``(b, h, t, d)``.
"""

import torch
from einops import rearrange, repeat


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMSNorm over the last dimension (Zhang & Sennrich, arXiv 1910.07467).

        RMSNorm(x) = x / sqrt(mean_i(x_i^2) + eps)

    Compute in float32 and return a tensor of the input's dtype and shape (the learned
    gain is applied by the caller, so leave it out).
    """
    # BEGIN SOLUTION
    xf = x.float()
    rms = torch.sqrt(xf.square().mean(dim=-1, keepdim=True) + eps)
    return (xf / rms).to(x.dtype)
    # END SOLUTION


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys by their positions: RoPE, Meta's interleaved layout.

    ``x`` is (b, h, t, d); ``freqs_cis`` is the complex (t, d/2) table
    ``minillama.rope.precompute_freqs_cis(d, t)`` whose entry [p, i] is e^{i p f_i}.
    Dimensions (x_{2i}, x_{2i+1}) form pair i; at position p it turns by the angle
    theta = p f_i (RoFormer, arXiv 2104.09864):

        x_{2i}'   = x_{2i} cos(theta) - x_{2i+1} sin(theta)
        x_{2i+1}' = x_{2i} sin(theta) + x_{2i+1} cos(theta)

    Work in float32 and return the input's dtype and shape.
    """
    # BEGIN SOLUTION
    cos, sin = freqs_cis.real, freqs_cis.imag                     # (t, d/2) each
    even, odd = rearrange(x.float(), "b h t (d two) -> two b h t d", two=2)
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos])
    return rearrange(rotated, "two b h t d -> b h t (d two)").to(x.dtype)
    # END SOLUTION


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: share each key/value head among ``n_rep`` query heads.

    (b, kv_heads, t, d) -> (b, kv_heads * n_rep, t, d), where output head
    ``k * n_rep + r`` is a copy of input head ``k`` (GQA, arXiv 2305.13245): query heads
    0 .. n_rep-1 use KV head 0, the next n_rep use KV head 1, and so on.
    """
    # BEGIN SOLUTION
    return repeat(x, "b kv t d -> b (kv r) t d", r=n_rep)
    # END SOLUTION


def causal_mask(t: int, s: int, start_pos: int = 0) -> torch.Tensor:
    """Boolean (t, s) mask: True where query i may attend to key j.

    The t queries sit at positions start_pos, ..., start_pos + t - 1 and the s keys at
    positions 0, ..., s - 1 (with a KV cache, s = start_pos + t). A query may see every
    key at its own position or earlier:

        mask[i, j] = (j <= start_pos + i)
    """
    # BEGIN SOLUTION
    return torch.ones(t, s, dtype=torch.bool).tril(diagonal=start_pos)
    # END SOLUTION
