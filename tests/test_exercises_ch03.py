"""Graders for chapter 3 (checkpoints: the Hugging Face q/k permutation and the llama2.c header).

    python -m pytest tests/test_exercises_ch03.py                    # the reference answers
    python -m pytest tests/test_exercises_ch03.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch03_checkpoints.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""


import pytest
import torch

CH03 = "ch03_checkpoints"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_heads, head_dim, d_in", [(1, 2, 3), (4, 8, 32), (2, 16, 5)])
def test_ch03_hf_permutations(impl, n_heads, head_dim, d_in):
    from minillama.checkpoints.hf import hf_to_meta_permute, meta_to_hf_permute

    w = randn(n_heads * head_dim, d_in, seed=n_heads + head_dim)
    mod = impl(CH03)
    to_hf = mod.meta_to_hf_permute(w, n_heads)
    assert torch.equal(to_hf, meta_to_hf_permute(w, n_heads))
    assert torch.equal(mod.hf_to_meta_permute(to_hf, n_heads), w)
    assert torch.equal(mod.hf_to_meta_permute(w, n_heads), hf_to_meta_permute(w, n_heads))


@pytest.mark.parametrize("values", [(64, 172, 5, 8, 4, 512, 512), (288, 768, 6, 6, 6, -32000, 256)])
def test_ch03_read_llama2c_header(impl, values):
    import struct

    raw = struct.pack("<7i", *values) + b"\x00" * 12      # weights follow the header
    got = impl(CH03).read_llama2c_header(raw)
    names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
    expected = dict(zip(names, values), vocab_size=abs(values[5]), tied=values[5] > 0)
    assert got == expected
    with pytest.raises(ValueError):
        impl(CH03).read_llama2c_header(raw[:20])
