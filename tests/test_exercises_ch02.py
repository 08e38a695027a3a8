"""Graders for chapter 2 (the family: the feed-forward width, parameter counts and KV-cache bytes).

    python -m pytest tests/test_exercises_ch02.py                    # the reference answers
    python -m pytest tests/test_exercises_ch02.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch02_family.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""

import random

import pytest

from minillama import CONFIGS, LlamaConfig, count_parameters, kv_cache_bytes_per_token
from minillama.config import PUBLISHED

CH02 = "ch02_family"


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
