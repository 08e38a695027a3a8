"""Graders for chapter 7 (LoRA: the forward pass and the merge).

    python -m pytest tests/test_exercises_ch07.py                    # the reference answers
    python -m pytest tests/test_exercises_ch07.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch07_lora.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""


import pytest
import torch

CH07 = "ch07_lora"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _lora_layer(d_in, d_out, r, seed, alpha=16.0, rslora=False):
    from minillama.peft.lora import LoRALinear

    torch.manual_seed(seed)
    layer = LoRALinear(torch.nn.Linear(d_in, d_out, bias=False), r, alpha, rslora=rslora)
    with torch.no_grad():
        layer.lora_B.copy_(randn(d_out, r, seed=seed + 1, scale=0.5))   # trained: B != 0
    return layer


@pytest.mark.parametrize("shape, d_out, r, rslora", [((3, 8), 8, 1, False),
                                                     ((2, 5, 16), 24, 4, False),
                                                     ((1, 7, 32), 12, 8, True)])
def test_ch07_lora_forward(impl, shape, d_out, r, rslora):
    layer = _lora_layer(shape[-1], d_out, r, seed=r, rslora=rslora)
    x = randn(*shape, seed=r + 2)
    with torch.no_grad():
        got = impl(CH07).lora_forward(x, layer.base.weight, layer.lora_A, layer.lora_B,
                                      layer.scale)
        assert got.shape == (*shape[:-1], d_out)
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)


def test_ch07_lora_forward_gradients(impl):
    layer = _lora_layer(16, 8, 4, seed=5)
    x = randn(6, 16, seed=6)
    params = [layer.lora_A, layer.lora_B]
    got = impl(CH07).lora_forward(x, layer.base.weight, *params, layer.scale)
    grads = torch.autograd.grad(got.square().sum(), params)
    expected = torch.autograd.grad(layer(x).square().sum(), params)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_in, d_out, r", [(8, 8, 2), (16, 24, 4), (32, 12, 8)])
def test_ch07_lora_merge(impl, d_in, d_out, r):
    from minillama.peft.lora import lora_merge

    layer = _lora_layer(d_in, d_out, r, seed=d_in)
    W0, A, B = layer.base.weight.detach(), layer.lora_A.detach(), layer.lora_B.detach()
    merged = impl(CH07).lora_merge(W0, A, B, layer.scale)
    assert merged.shape == W0.shape
    torch.testing.assert_close(merged, lora_merge(W0, A, B, layer.scale))
    x = randn(5, d_in, seed=r)
    with torch.no_grad():
        torch.testing.assert_close(x @ merged.T, layer(x), atol=1e-5, rtol=1e-5)
