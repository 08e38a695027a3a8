"""Two other 4-bit formats to compare NF4 with: int4 absmax and FP4.

All three share the blockwise recipe of ``nf4.py`` (blocks of 64, scale by the block's
absmax M, pick the nearest of 16 levels in [-1, 1], multiply back by M); only the levels
differ (Dettmers et al., QLoRA, arXiv 2305.14314, §3 compares them):

    int4 absmax   k / 7 for k = -7..7                evenly spaced: wastes levels in the
                                                     tails, where few weights live
    FP4 (E2M1)    sign, 2 exponent bits, 1 mantissa bit, bitsandbytes' bias:
                  ±{0, 0.0625, 2, 3, 4, 6, 8, 12} / 12   dense near 0, sparse near ±1
    NF4           normal quantiles (``nf4_code_table``) equal mass per level

The functions here quantise and dequantise in one go (a "fake quantisation"), which is
all a comparison of errors or of perplexity needs; they are written for clarity (a
``bucketize`` over the midpoints), not speed.
"""

from __future__ import annotations

import torch

from .nf4 import BLOCKSIZES, FLOATS, blockwise_scale, nf4_code_table

INT4_LEVELS = torch.arange(-7, 8, dtype=torch.float32) / 7
# bitsandbytes' FP4 values in bit order 0b0000..0b1111 (sign bit first), divided by 12
FP4_BY_BITS = torch.tensor([0, 0.0625, 8, 12, 4, 6, 2, 3,
                            -0.0, -0.0625, -8, -12, -4, -6, -2, -3]) / 12
FP4_LEVELS = FP4_BY_BITS[FP4_BY_BITS.argsort()].unique_consecutive()    # 15: +0 == -0


def blockwise_roundtrip(x: torch.Tensor, levels: torch.Tensor, blocksize: int = 64):
    """Scale each block of ``x`` by its absmax, round to the nearest level (ties to the
    lower one), scale back; fp32 arithmetic, the result in ``x``'s shape and dtype."""
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOATS:
        raise TypeError(f"expected an fp32/bf16/fp16 tensor, got {getattr(x, 'dtype', x)!r}")
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize={blocksize!r} is not supported; choose one of {BLOCKSIZES}")
    s, absmax = blockwise_scale(x, blocksize)
    levels = levels.to(s.device)
    q = torch.bucketize(s, (levels[:-1] + levels[1:]) / 2)
    scale = absmax.repeat_interleave(blocksize)[: s.numel()]
    return (levels[q] * scale).to(x.dtype).view(x.shape)


def int4_absmax(x: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """Symmetric int4: round(x / M * 7) / 7 * M per block (15 levels; halves round down)."""
    return blockwise_roundtrip(x, INT4_LEVELS, blocksize)


def fp4(x: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """FP4 as bitsandbytes defines it (E2M1, values ±{0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1})."""
    return blockwise_roundtrip(x, FP4_LEVELS, blocksize)


def nf4(x: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """NF4 the same way, for a like-for-like table (``nf4.quantize`` is the real thing)."""
    return blockwise_roundtrip(x, nf4_code_table(), blocksize)
