"""Graders for chapter 1 (one block: RMSNorm, rotary embeddings, repeat_kv, causal mask).

    python -m pytest tests/test_exercises_ch01.py                    # the reference answers
    python -m pytest tests/test_exercises_ch01.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch01_anatomy.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""


import pytest
import torch

from minillama.attention import causal_mask, repeat_kv
from minillama.norm import rms_norm
from minillama.rope import apply_rotary_emb, precompute_freqs_cis

CH01 = "ch01_anatomy"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape, scale", [((3, 8), 1.0), ((2, 5, 16), 4.0),
                                          ((1, 2, 7, 64), 1.0), ((4, 32), 1e-3)])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_ch01_rms_norm(impl, shape, scale, eps):
    # scale 1e-3 makes mean(x^2) ~ eps, so where eps goes in the formula matters
    x = randn(*shape, seed=len(shape), scale=scale)
    got = impl(CH01).rms_norm(x, eps)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, rms_norm(x, eps))


def test_ch01_rms_norm_keeps_bfloat16(impl):
    x = randn(2, 3, 32, seed=1).to(torch.bfloat16)
    got = impl(CH01).rms_norm(x, 1e-5)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, rms_norm(x, 1e-5))


@pytest.mark.parametrize("b, h, t, d, start, theta", [
    (1, 1, 1, 2, 0, 1e4),
    (2, 4, 7, 16, 0, 1e4),
    (1, 2, 5, 64, 11, 5e5),      # positions 11..15, Llama 3's theta
    (3, 1, 9, 8, 3, 10.0),       # a small theta turns fast: every pair visibly rotates
])
def test_ch01_apply_rotary_emb(impl, b, h, t, d, start, theta):
    x = randn(b, h, t, d, seed=d + t)
    freqs_cis = precompute_freqs_cis(d, start + t, theta)[start:]
    got = impl(CH01).apply_rotary_emb(x, freqs_cis)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, apply_rotary_emb(x, freqs_cis, "interleaved"))


def test_ch01_apply_rotary_emb_keeps_bfloat16(impl):
    x = randn(1, 2, 6, 16, seed=3).to(torch.bfloat16)
    freqs_cis = precompute_freqs_cis(16, 6)
    got = impl(CH01).apply_rotary_emb(x, freqs_cis)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, apply_rotary_emb(x, freqs_cis, "interleaved"))


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 2, 5, 8), (1, 4, 3, 16)])
@pytest.mark.parametrize("n_rep", [1, 2, 3, 4])
def test_ch01_repeat_kv(impl, shape, n_rep):
    x = randn(*shape, seed=n_rep)
    got = impl(CH01).repeat_kv(x, n_rep)
    assert got.shape == (shape[0], shape[1] * n_rep, *shape[2:])
    assert torch.equal(got, repeat_kv(x, n_rep))


@pytest.mark.parametrize("t, s, start_pos", [
    (1, 1, 0), (5, 5, 0), (2, 3, 0),   # a prompt
    (1, 8, 7),                          # one decoding step with 7 cached tokens
    (3, 10, 7), (4, 6, 2),              # a chunk appended to a cache
])
def test_ch01_causal_mask(impl, t, s, start_pos):
    got = impl(CH01).causal_mask(t, s, start_pos)
    assert got.dtype == torch.bool and got.shape == (t, s)
    assert torch.equal(got, causal_mask(t, s, start_pos))
