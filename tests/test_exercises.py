"""Graders: every exercise function against its twin in the library, on random inputs.

    python -m pytest tests/test_exercises.py                          # the reference answers
    python -m pytest tests/test_exercises.py --impl=exercises -k ch01  # your chapter 1 work

``--impl`` (see ``conftest.py``) chooses the folder the chapter files come from; each
grader is named ``test_chNN_<function>`` so ``-k chNN`` grades one chapter. To grade a
new chapter, put its answers in ``solutions/chNN_<name>.py`` between
``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers, run ``make exercises``, and add
``test_chNN_...`` functions below that load it with ``impl("chNN_<name>")``.
"""

import random

import pytest
import torch

from minillama import CONFIGS, LlamaConfig, count_parameters, kv_cache_bytes_per_token
from minillama.attention import causal_mask, repeat_kv
from minillama.config import PUBLISHED
from minillama.norm import rms_norm
from minillama.rope import apply_rotary_emb, precompute_freqs_cis

CH01, CH02 = "ch01_anatomy", "ch02_family"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- chapter 1: one block

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


# ---------------------------------------------------------------- chapter 2: the family

def _random_ffn_settings(n: int):
    rng = random.Random(2)
    for _ in range(n):
        yield (4 * rng.randint(1, 6000), rng.choice([1, 2, 32, 64, 100, 256, 1024, 4096]),
               rng.choice([None, 0.5, 1.0, 1.3, 1.5, round(rng.uniform(0.3, 3.0), 3)]))


def test_ch02_ffn_dim_published(impl):
    for cfg in CONFIGS.values():
        if cfg.hidden_dim is None:
            got = impl(CH02).ffn_dim(cfg.dim, cfg.multiple_of, cfg.ffn_dim_multiplier)
            assert got == cfg.ffn_dim, cfg.name


@pytest.mark.parametrize("dim, multiple_of, multiplier", list(_random_ffn_settings(40)))
def test_ch02_ffn_dim_random(impl, dim, multiple_of, multiplier):
    cfg = LlamaConfig(dim=dim, n_heads=2, multiple_of=multiple_of,
                      ffn_dim_multiplier=multiplier)
    assert impl(CH02).ffn_dim(dim, multiple_of, multiplier) == cfg.ffn_dim


@pytest.mark.parametrize("name", PUBLISHED + ["tiny", "small", "base"])
def test_ch02_llama_parameters(impl, name):
    assert impl(CH02).llama_parameters(CONFIGS[name]) == count_parameters(name)


@pytest.mark.parametrize("changes", [
    dict(dim=48, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=100),
    dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=7, tie_embeddings=True),
    dict(dim=64, n_layers=2, n_heads=4, vocab_size=50, hidden_dim=100),
    dict(dim=96, n_layers=2, n_heads=3, vocab_size=300, multiple_of=48,
         ffn_dim_multiplier=1.7),
])
def test_ch02_llama_parameters_unusual_shapes(impl, changes):
    cfg = LlamaConfig(**changes)
    assert impl(CH02).llama_parameters(cfg) == count_parameters(cfg)


@pytest.mark.parametrize("bytes_per_value", [1, 2, 4])
def test_ch02_kv_cache_bytes_per_token(impl, bytes_per_value):
    for name in PUBLISHED:
        cfg = CONFIGS[name]
        got = impl(CH02).kv_cache_bytes_per_token(cfg, bytes_per_value)
        assert got == kv_cache_bytes_per_token(cfg, bytes_per_value), name
