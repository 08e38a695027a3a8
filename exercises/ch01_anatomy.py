# GENERATED from solutions/ch01_anatomy.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch01.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
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
    raise NotImplementedError("exercise: rms_norm")


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
    raise NotImplementedError("exercise: apply_rotary_emb")


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: share each key/value head among ``n_rep`` query heads.

    (b, kv_heads, t, d) -> (b, kv_heads * n_rep, t, d), where output head
    ``k * n_rep + r`` is a copy of input head ``k`` (GQA, arXiv 2305.13245): query heads
    0 .. n_rep-1 use KV head 0, the next n_rep use KV head 1, and so on.
    """
    raise NotImplementedError("exercise: repeat_kv")


def causal_mask(t: int, s: int, start_pos: int = 0) -> torch.Tensor:
    """Boolean (t, s) mask: True where query i may attend to key j.

    The t queries sit at positions start_pos, ..., start_pos + t - 1 and the s keys at
    positions 0, ..., s - 1 (with a KV cache, s = start_pos + t). A query may see every
    key at its own position or earlier:

        mask[i, j] = (j <= start_pos + i)
    """
    raise NotImplementedError("exercise: causal_mask")
