"""Graders for chapter 10 (LLaMA-Excitor: the reconstructed keys).

    python -m pytest tests/test_exercises_ch10.py                    # the reference answers
    python -m pytest tests/test_exercises_ch10.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch10_excitor.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""


import pytest
import torch

CH10 = "ch10_excitor"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("b, M, D, K, r", [(1, 1, 8, 1, 1), (2, 7, 16, 5, 4), (3, 4, 64, 30, 16)])
def test_ch10_reconstructed_keys(impl, b, M, D, K, r):
    from minillama.peft.excitor import reconstructed_keys

    t, P = randn(b, M, D, seed=M), randn(K, D, seed=K)
    W_down, W_up = randn(r, D, seed=r, scale=0.5), randn(D, r, seed=r + 1, scale=0.5)
    got = impl(CH10).reconstructed_keys(t, P, W_down, W_up)
    assert got.shape == (b, M, D)
    torch.testing.assert_close(got, reconstructed_keys(t, P, W_down, W_up), atol=1e-5,
                               rtol=1e-5)
    if K == 1:                                # one prompt: every token gets exactly P
        torch.testing.assert_close(got, P.expand(b, M, D))


def test_ch10_your_keys_make_the_excitor_layer(impl):
    from minillama.peft.excitor import Excitor

    torch.manual_seed(0)
    module = Excitor(32, 4, prompt_len=6, rank=4)
    x = randn(2, 5, 32, seed=1)
    with torch.no_grad():
        got = impl(CH10).reconstructed_keys(x, module.prompt, module.down, module.up)
        torch.testing.assert_close(got, module.extra_keys(x), atol=1e-5, rtol=1e-5)
