# GENERATED from solutions/ch03_checkpoints.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch03.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 3 exercises: the two conversions every LLaMA checkpoint loader needs.

1. ``meta_to_hf_permute`` / ``hf_to_meta_permute``: Meta rotates adjacent pairs
   (x0, x1), (x2, x3), ... of each head; Hugging Face rotates (x_i, x_{i + d/2}).
   Reordering the *rows* of wq and wk inside each head turns one layout into the other
   so that both give the same attention scores.
2. ``read_llama2c_header``: the seven little-endian int32 at the start of llama2.c's
   legacy ``.bin`` file.
"""

import struct

import torch
from einops import rearrange


def meta_to_hf_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a (n_heads * head_dim, in) matrix: interleaved -> rotate-half order.

    Within each head, row 2i (first member of pair i) goes to position i and row 2i+1
    (second member) to position i + head_dim/2.
    """
    raise NotImplementedError("exercise: meta_to_hf_permute")


def hf_to_meta_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of ``meta_to_hf_permute``."""
    raise NotImplementedError("exercise: hf_to_meta_permute")


def read_llama2c_header(raw: bytes) -> dict:
    """Decode the 28-byte header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    vocab_size, seq_len (int32, little-endian). Return a dict with those keys, with
    ``vocab_size`` made positive and ``tied = vocab_size > 0`` added.
    Raise ValueError if fewer than 28 bytes are given.
    """
    raise NotImplementedError("exercise: read_llama2c_header")
