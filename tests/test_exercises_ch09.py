"""Graders for chapter 9 (LLaMA-Adapter V2: bias and scale around a frozen linear, merged).

    python -m pytest tests/test_exercises_ch09.py                    # the reference answers
    python -m pytest tests/test_exercises_ch09.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch09_adapter_v2.py`` against
``minillama.peft.adapter_v2.BiasScaleLinear`` on random layers (``--impl``: see
``conftest.py``).
"""

import pytest
import torch
from torch import nn

from minillama.peft.adapter_v2 import BiasScaleLinear

CH09 = "ch09_adapter_v2"


def trained_wrapper(d_in: int, d_out: int, seed: int) -> BiasScaleLinear:
    """A BiasScaleLinear whose scale and bias have moved away from their init."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d_in, d_out, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(d_out, d_in, generator=g))
        wrapped = BiasScaleLinear(lin)
        wrapped.scale.copy_(torch.rand(d_in, generator=g) + 0.5)
        wrapped.bias.copy_(torch.randn(d_out, generator=g))
    return wrapped


@pytest.mark.parametrize("shape, d_out, seed", [((3, 6), 4, 0), ((2, 5, 16), 8, 1),
                                                ((1, 1, 7), 3, 2), ((4, 32), 32, 3)])
def test_ch09_bias_scale_forward(impl, shape, d_out, seed):
    m = trained_wrapper(shape[-1], d_out, seed)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 10))
    with torch.no_grad():
        got = impl(CH09).bias_scale_linear(x, m.base.weight, m.scale, m.bias)
        torch.testing.assert_close(got, m(x), atol=1e-5, rtol=1e-5)
        fresh = BiasScaleLinear(m.base)          # s = 1, b = 0: the frozen layer itself
        at_init = impl(CH09).bias_scale_linear(x, m.base.weight, fresh.scale, fresh.bias)
        torch.testing.assert_close(at_init, m.base(x), atol=1e-6, rtol=1e-6)


def test_ch09_bias_scale_is_scale_per_input_not_output(impl):
    """A scale on the input features is not the paper's s * (W x + b) on the outputs."""
    m = trained_wrapper(6, 4, 5)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        got = impl(CH09).bias_scale_linear(x, m.base.weight, m.scale, m.bias)
        wrong = (x @ m.base.weight.T) * m.scale[:4] + m.bias
    assert not torch.allclose(got, wrong, atol=1e-3)


@pytest.mark.parametrize("d_in, d_out, seed", [(6, 4, 0), (16, 8, 1), (32, 96, 2)])
def test_ch09_merge_bias_scale(impl, d_in, d_out, seed):
    m = trained_wrapper(d_in, d_out, seed)
    before = [t.detach().clone() for t in (m.base.weight, m.scale, m.bias)]
    with torch.no_grad():
        weight, bias = impl(CH09).merge_bias_scale(m.base.weight, m.scale, m.bias)
        reference = m.merged()
        for t, b in zip((m.base.weight, m.scale, m.bias), before):
            assert torch.equal(t, b), "merge_bias_scale changed its inputs"
        assert weight.shape == (d_out, d_in) and bias.shape == (d_out,)
        torch.testing.assert_close(weight, reference.weight)
        torch.testing.assert_close(bias, reference.bias)
        x = torch.randn(5, d_in, generator=torch.Generator().manual_seed(seed + 20))
        torch.testing.assert_close(x @ weight.T + bias, m(x), atol=1e-4, rtol=1e-4)
