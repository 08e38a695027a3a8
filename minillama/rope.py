"""Rotary position embeddings (RoPE), with Llama 3.1's frequency scaling.

RoFormer (Su et al., arXiv 2104.09864) encodes the position ``p`` of a query or key by
rotating each pair of its dimensions by an angle proportional to ``p``:

    f_i = theta^(-2i / d),   i = 0 .. d/2 - 1          (d = head_dim)
    (x_a, x_b) at position p  ->  rotation of the pair by the angle p * f_i

Writing a pair as a complex number z = x_a + i x_b, the rotation is z * e^{i p f_i}.
Because <R(p) q, R(s) k> depends only on p - s, attention scores see *relative*
positions although each vector is rotated by its own absolute position.

Which two dimensions form a pair is a convention, and both are in use:

* ``"interleaved"`` (Meta's reference code, llama2.c, Llama 4 everywhere): pairs are
  (x_0, x_1), (x_2, x_3), ...
* ``"half"`` (Hugging Face's ``rotate_half``): pairs are (x_i, x_{i + d/2}).

They give identical attention scores once the rows of wq and wk are permuted within
each head (see ``checkpoints/hf.py``), which is why HF's conversion script permutes.

Llama 3.1 (arXiv 2407.21783) stretches the context from 8K to 128K by slowing down the
low-frequency pairs only. With wavelength lam_i = 2 pi / f_i:

    lam_i < orig / high_ff            -> f_i               (high frequencies: unchanged)
    lam_i > orig / low_ff             -> f_i / factor      (low frequencies: slowed down)
    otherwise, s = (orig / lam_i - low_ff) / (high_ff - low_ff)
                                      -> (1 - s) f_i / factor + s f_i   (blend)
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from .config import RopeScaling


def rope_frequencies(head_dim: int, theta: float = 10000.0,
                     scaling: RopeScaling | None = None) -> torch.Tensor:
    """The d/2 rotation frequencies f_i (float32), scaled the llama3 way if asked."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling is None:
        return freqs
    s = scaling
    wavelen = 2 * math.pi / freqs
    low_wavelen = s.original_max_seq_len / s.low_freq_factor     # longer than this: slow down
    high_wavelen = s.original_max_seq_len / s.high_freq_factor   # shorter than this: keep
    scaled = torch.where(wavelen > low_wavelen, freqs / s.factor, freqs)
    if s.high_freq_factor != s.low_freq_factor:                  # Scout has no blend band
        smooth = (s.original_max_seq_len / wavelen - s.low_freq_factor) / (
            s.high_freq_factor - s.low_freq_factor)
        blended = (1 - smooth) * freqs / s.factor + smooth * freqs
        in_band = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        scaled = torch.where(in_band, blended, scaled)
    return scaled


def precompute_freqs_cis(head_dim: int, end: int, theta: float = 10000.0,
                         scaling: RopeScaling | None = None) -> torch.Tensor:
    """e^{i p f_i} for every position p < end: a complex64 table of shape (end, d/2)."""
    freqs = rope_frequencies(head_dim, theta, scaling)
    angles = torch.outer(torch.arange(end, dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)


_PAIRS = {  # how the last dimension splits into (d/2 pairs) x (2 members of a pair)
    "interleaved": "... (d two) -> ... d two",
    "half": "... (two d) -> ... d two",
}


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor,
                     layout: str = "interleaved") -> torch.Tensor:
    """Rotate queries or keys ``x`` of shape (b, h, t, d) by ``freqs_cis`` (t, d/2).

    Each pair becomes a complex number, is multiplied by e^{i p f_i}, and is written
    back in the same layout. The arithmetic is done in float32. In the interleaved
    layout the pairs are neighbours in memory, so viewing them as complex numbers
    costs no copy (``view_as_complex`` needs the two members of a pair adjacent).
    """
    if x.shape[-2] != freqs_cis.shape[0] or x.shape[-1] != 2 * freqs_cis.shape[1]:
        raise ValueError(f"apply_rotary_emb: x has (t, d) = {tuple(x.shape[-2:])} but "
                         f"freqs_cis has (t, d/2) = {tuple(freqs_cis.shape)}")
    if layout == "interleaved":                    # pairs are neighbours: a free view
        pairs = x.float().unflatten(-1, (-1, 2))   # (..., d) -> (..., d/2, 2)
        if pairs.storage_offset() % 2 or any(st % 2 for st in pairs.stride()[:-1]):
            pairs = pairs.contiguous()             # a view that cannot be read as complex
    else:
        pairs = rearrange(x.float(), _PAIRS[layout], two=2).contiguous()
    rotated = torch.view_as_real(torch.view_as_complex(pairs) * freqs_cis)
    if layout == "interleaved":
        return rotated.flatten(-2).type_as(x)      # (..., d/2, 2) -> (..., d)
    inverse = " -> ".join(reversed(_PAIRS[layout].split(" -> ")))
    return rearrange(rotated, inverse, two=2).type_as(x)
