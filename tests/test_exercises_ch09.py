"""Graders for chapter 9 (LLaMA-Adapter V2: bias and scale on a frozen linear, and the merge).

    python -m pytest tests/test_exercises_ch09.py                    # the reference answers
    python -m pytest tests/test_exercises_ch09.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch09_adapter_v2.py`` against the library's
``BiasScaleLinear`` on random inputs (``--impl``: see ``conftest.py``).
"""

import pytest
import torch

CH09 = "ch09_adapter_v2"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _trained_layer(d_in, d_out, seed):
    """A ``BiasScaleLinear`` whose scale and bias have moved away from 1 and 0."""
    from minillama.peft.adapter_v2 import BiasScaleLinear

    torch.manual_seed(seed)
    layer = BiasScaleLinear(torch.nn.Linear(d_in, d_out, bias=False))
    with torch.no_grad():
        layer.scale.copy_(1 + randn(d_in, seed=seed + 1, scale=0.5))
        layer.bias.copy_(randn(d_out, seed=seed + 2, scale=0.5))
    return layer


@pytest.mark.parametrize("shape, d_out", [((3, 8), 8), ((2, 5, 16), 24), ((1, 7, 32), 12)])
def test_ch09_bias_scale_forward(impl, shape, d_out):
    layer = _trained_layer(shape[-1], d_out, seed=d_out)
    x = randn(*shape, seed=3)
    with torch.no_grad():
        got = impl(CH09).bias_scale_forward(x, layer.base.weight, layer.scale, layer.bias)
        assert got.shape == (*shape[:-1], d_out)
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)


def test_ch09_bias_scale_forward_at_init_is_the_frozen_layer(impl):
    from minillama.peft.adapter_v2 import BiasScaleLinear

    torch.manual_seed(0)
    layer = BiasScaleLinear(torch.nn.Linear(16, 8, bias=False))
    x = randn(4, 16, seed=1)
    with torch.no_grad():
        got = impl(CH09).bias_scale_forward(x, layer.base.weight, layer.scale, layer.bias)
        torch.testing.assert_close(got, layer.base(x))


def test_ch09_bias_scale_forward_gradients(impl):
    layer = _trained_layer(16, 8, seed=5)
    x = randn(6, 16, seed=6)
    params = [layer.scale, layer.bias]
    got = impl(CH09).bias_scale_forward(x, layer.base.weight, *params)
    grads = torch.autograd.grad(got.square().sum(), params)
    expected = torch.autograd.grad(layer(x).square().sum(), params)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_in, d_out", [(8, 8), (16, 24), (32, 12)])
def test_ch09_bias_scale_merge(impl, d_in, d_out):
    layer = _trained_layer(d_in, d_out, seed=d_in)
    W, s, b = layer.base.weight.detach(), layer.scale.detach(), layer.bias.detach()
    weight, bias = impl(CH09).bias_scale_merge(W, s, b)
    assert weight.shape == (d_out, d_in) and bias.shape == (d_out,)
    reference = layer.merged()
    torch.testing.assert_close(weight, reference.weight)
    torch.testing.assert_close(bias, reference.bias)
    x = randn(5, d_in, seed=d_out)
    with torch.no_grad():
        torch.testing.assert_close(x @ weight.T + bias, layer(x), atol=1e-5, rtol=1e-5)
