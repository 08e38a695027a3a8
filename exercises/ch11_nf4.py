# GENERATED from solutions/ch11_nf4.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch11.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 11 exercise: NF4's storage format, by hand.

QLoRA (Dettmers et al., arXiv 2305.14314) stores a weight tensor in blocks of 64 values.
Each block keeps its absmax M = max |x| in fp32, and each value the 4-bit index of the
NF4 level c_j nearest to x / M:

    code_i = argmin_j | x_i / M - c_j |          (ties: the lower j)
    x'_i   = c[code_i] * M

Two codes share one byte, the first in the high nibble: byte = (a << 4) | b. You write
the nibble packing and the blockwise code search; the graders check them against
``minillama.quant.nf4`` (which is bit-exact with bitsandbytes) on random inputs.
"""

import torch


def pack_nibbles(codes: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Pack 4-bit codes (values 0..15, any shape, read flat) two per uint8 byte.

    Byte k holds code 2k in its high nibble and code 2k+1 in its low nibble. An odd
    number of codes gets one extra code ``pad`` at the end (NF4 pads with 7, the code
    of 0.0). Returns a 1-D uint8 tensor of ceil(n / 2) bytes.
    """
    raise NotImplementedError("exercise: pack_nibbles")


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` codes of ``packed`` (uint8 bytes, high nibble first), as a 1-D
    uint8 tensor: the inverse of ``pack_nibbles`` (a padded tail is dropped)."""
    raise NotImplementedError("exercise: unpack_nibbles")


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor,
                       blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantisation of ``x`` to the nearest entry of the sorted table ``code``.

    Read ``x`` flat (row-major) in fp32 and cut it into blocks of ``blocksize`` values;
    the last block may be shorter. For each block M = max |x| over the block, and each
    value's scaled s = x / M (a block of zeros has s = 0). The code of s is the index of
    the nearest table entry; at an exact tie take the lower index. Equivalently: the
    number of midpoints (c_j + c_{j+1}) / 2, computed in fp32, that lie strictly below s.

    Returns (codes, absmax): codes as a 1-D uint8 tensor of x.numel() values, absmax as
    a 1-D fp32 tensor with one M per block.
    """
    raise NotImplementedError("exercise: quantize_blockwise")
