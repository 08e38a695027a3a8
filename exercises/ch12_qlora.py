# GENERATED from solutions/ch12_qlora.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch12.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 12 exercises: a 4-bit linear layer, QLoRA's memory bill, and why NF4.

QLoRA (Dettmers et al., arXiv 2305.14314) keeps every linear layer of the blocks in NF4:
the weight, read flat (row-major), is cut into blocks of ``blocksize`` values; each value
is a 4-bit index into the 16-entry table c (``minillama.quant.nf4_code_table()``), two
indices per byte (high nibble first), and each block has one fp32 scale M (its absmax):

    W_flat[i] = c[code_i] * M[i // blocksize],      y = x W^T + b          (eq. 5)

Double quantisation stores the block scales themselves in 8 bits: one uint8 code per
block, plus one fp32 scale per 256 of those codes and one fp32 offset (their mean).

Three exercises: the forward pass of ``minillama.quant.Linear4bit`` from its bytes, the
bytes QLoRA needs for a whole LLaMA (checked against ``minillama.quant.storage_bits``
and ``minillama.peft``), and a small experiment: why normal-quantile levels (NF4) beat
evenly spaced ones (int4) on normally distributed weights, and when they do not.
"""

import math

import torch

from minillama.config import LlamaConfig

TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def nf4_linear(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor,
               shape: tuple[int, int], blocksize: int, code: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T (+ bias) with W dequantised from its NF4 bytes.

    packed: uint8, ceil(n / 2) bytes for the n = d_out * d_in codes (byte k holds code 2k
    in its high nibble, code 2k+1 in its low one); absmax: fp32, one scale per block of
    ``blocksize`` flat values (the last block may be shorter, and a block may span two
    rows); shape: (d_out, d_in); code: the 16 fp32 NF4 levels. Dequantise in fp32, then
    multiply in x's dtype. Returns (..., d_out).
    """
    raise NotImplementedError("exercise: nf4_linear")


def _linear_shapes(cfg: LlamaConfig) -> list[tuple[int, int]]:
    """(d_out, d_in) of the seven linears of one block, in the order of TARGETS."""
    D, q, kv, F = cfg.dim, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, \
        cfg.ffn_dim
    return [(q, D), (kv, D), (kv, D), (D, q), (F, D), (D, F), (F, D)]


def qlora_memory(cfg: LlamaConfig, r: int, targets=TARGETS, blocksize: int = 64,
                 double_quant: bool = True) -> dict:
    """QLoRA's storage for a dense LLaMA, counted matrix by matrix.

    Every linear of every block (wq, wk, wv, wo, w1, w2, w3; shapes from ``cfg``:
    ``cfg.head_dim``, ``cfg.n_kv_heads``, ``cfg.ffn_dim``) is quantised *on its own*, so
    round up per matrix: n values take ceil(n / 2) bytes of codes and B = ceil(n /
    blocksize) block scales, 4 bytes each (fp32), or with ``double_quant`` 1 byte each
    plus 4 bytes per 256 of them (rounded up) plus a 4-byte offset. The embedding, the
    output head (none of its own with ``cfg.tie_embeddings``) and the norms stay as they
    are. LoRA of rank r on each ``targets`` matrix adds r (d_in + d_out) parameters.

    Returns a dict with ``quantized_bytes``, ``kept_parameters`` (not quantised),
    ``lora_parameters`` and ``training_bytes`` = quantized_bytes + 2 * kept_parameters
    (bf16) + 12 * lora_parameters (bf16 weights and gradients, two fp32 AdamW moments).
    """
    raise NotImplementedError("exercise: qlora_memory")


def format_errors(n: int, seed: int, blocksizes=(32, 64, 256, 1024)) -> dict:
    """Measure the mean squared error of a 4-bit round trip, per data, format and block size.

    The data: ``g = torch.Generator().manual_seed(seed)``, then ``normal = torch.randn(n,
    generator=g)`` and, from the same generator, ``uniform = torch.rand(n, generator=g) *
    2 - 1``. The formats: ``minillama.quant.int4_absmax`` (15 evenly spaced levels) and
    ``minillama.quant.baselines.nf4`` (the 16 NF4 levels), each called as
    ``f(x, blocksize)`` and returning the dequantised x.

    Returns ``{"normal": {"int4": [...], "nf4": [...]}, "uniform": {...}}``: for each,
    the mean of (x' - x)^2 at each block size, in the order of ``blocksizes``.
    """
    raise NotImplementedError("exercise: format_errors")
