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
    # BEGIN SOLUTION
    return rearrange(w, "(h d two) i -> (h two d) i", h=n_heads, two=2)
    # END SOLUTION


def hf_to_meta_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of ``meta_to_hf_permute``."""
    # BEGIN SOLUTION
    return rearrange(w, "(h two d) i -> (h d two) i", h=n_heads, two=2)
    # END SOLUTION


def read_llama2c_header(raw: bytes) -> dict:
    """Decode the 28-byte header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    vocab_size, seq_len (int32, little-endian). Return a dict with those keys, with
    ``vocab_size`` made positive and ``tied = vocab_size > 0`` added.
    Raise ValueError if fewer than 28 bytes are given.
    """
    # BEGIN SOLUTION
    if len(raw) < 28:
        raise ValueError(f"need 28 header bytes, got {len(raw)}")
    names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
    values = dict(zip(names, struct.unpack("<7i", raw[:28])))
    values["tied"] = values["vocab_size"] > 0
    values["vocab_size"] = abs(values["vocab_size"])
    return values
    # END SOLUTION
