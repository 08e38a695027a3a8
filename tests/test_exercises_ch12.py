"""Graders for chapter 12 (QLoRA: the 4-bit layer, the memory bill, NF4 vs int4).

    python -m pytest tests/test_exercises_ch12.py                    # the reference answers
    python -m pytest tests/test_exercises_ch12.py --impl=exercises   # your work

``nf4_linear`` is checked against ``minillama.quant.Linear4bit`` on random weights,
``qlora_memory`` against the bytes and parameters of real (meta-device) QLoRA models
counted by ``minillama.quant.storage_bits`` and ``minillama.peft``, and ``format_errors``
(an experiment) on the trend it must show and on one of its points, measured again here.
"""

import math

import pytest
import torch

from minillama import CONFIGS, Llama, LlamaConfig
from minillama import peft as P
from minillama.quant import Linear4bit, nf4_code_table, storage_bits
from minillama.quant.baselines import int4_absmax, nf4

CH12 = "ch12_qlora"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- nf4_linear
@pytest.mark.parametrize("d_out, d_in, blocksize, double_quant, bias", [
    (8, 64, 64, False, False),        # one block per row
    (24, 40, 64, False, True),        # blocks span rows, a short last block
    (5, 7, 32, True, True),           # 35 values: an odd count, padded nibble
    (48, 96, 128, True, False),       # double-quantised scales, decoded
])
def test_ch12_nf4_linear(impl, d_out, d_in, blocksize, double_quant, bias):
    w = randn(d_out, d_in, seed=d_in, scale=0.05)
    b = randn(d_out, seed=d_out) if bias else None
    layer = Linear4bit(w, b, blocksize=blocksize, double_quant=double_quant, backend="torch")
    x = randn(3, 4, d_in, seed=1)
    got = impl(CH12).nf4_linear(x, layer.packed, layer.state.scales(), (d_out, d_in),
                                blocksize, nf4_code_table(), b)
    assert got.shape == (3, 4, d_out)
    with torch.no_grad():
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)
    # and it is not the unquantised layer (4-bit rounding is visible)
    assert not torch.allclose(got, x @ w.T + (0 if b is None else b), atol=1e-5)


def test_ch12_nf4_linear_gradient_reaches_the_input(impl):
    w = randn(16, 64, seed=3, scale=0.05)
    layer = Linear4bit(w, blocksize=64, backend="torch")
    x = randn(5, 64, seed=4).requires_grad_()
    got = impl(CH12).nf4_linear(x, layer.packed, layer.state.scales(), (16, 64), 64,
                                nf4_code_table())
    (grad,) = torch.autograd.grad(got.square().sum(), x)
    x2 = x.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(layer(x2).square().sum(), x2)
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- qlora_memory
TINY = LlamaConfig(dim=48, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=100,
                   hidden_dim=100)                   # odd sizes: partial blocks everywhere
TIED = LlamaConfig(dim=64, n_layers=2, n_heads=4, vocab_size=96, tie_embeddings=True)


@pytest.mark.parametrize("cfg, r, targets, blocksize, double_quant", [
    (CONFIGS["llama1-7b"], 64, P.lora.TARGETS, 64, True),      # the QLoRA paper's setting
    (CONFIGS["llama1-65b"], 64, P.lora.TARGETS, 64, True),
    (CONFIGS["llama2-70b"], 16, ("wq", "wv"), 64, False),      # GQA: small wk, wv
    (CONFIGS["llama3-8b"], 8, ("wk", "w2"), 256, True),
    (TINY, 4, ("wq", "wk", "w1"), 64, True),
    (TINY, 2, P.lora.TARGETS, 32, False),
    (TIED, 3, ("wo",), 128, True),
], ids=["7b", "65b", "70b-gqa", "llama3-8b", "tiny-dq", "tiny", "tied"])
def test_ch12_qlora_memory(impl, cfg, r, targets, blocksize, double_quant):
    with torch.device("meta"):
        model = P.apply(Llama(cfg), "qlora", r=r, targets=targets, blocksize=blocksize,
                        double_quant=double_quant, dropout=0.0)
    bits = storage_bits(model)
    lora = P.trainable_parameters(model)
    kept = bits["other_parameters"] - lora            # storage_bits counts LoRA as "other"
    got = impl(CH12).qlora_memory(cfg, r, targets, blocksize, double_quant)
    assert got["quantized_bytes"] == bits["quantized_bytes"]
    assert got["lora_parameters"] == lora
    assert got["kept_parameters"] == kept
    assert got["training_bytes"] == bits["quantized_bytes"] + 2 * kept + 12 * lora


def test_ch12_qlora_memory_65b_fits_48gb(impl):
    """The QLoRA paper's headline: the 65B states (no activations) fit a 48 GB GPU."""
    got = impl(CH12).qlora_memory(CONFIGS["llama1-65b"], 64)
    assert 35e9 < got["training_bytes"] < 48e9


# ----------------------------------------------------------------------------- format_errors
BLOCKSIZES = (32, 64, 256, 1024)


def test_ch12_format_errors_trend_and_measurement(impl):
    n, seed = 2**15, 7
    got = impl(CH12).format_errors(n, seed, BLOCKSIZES)
    assert set(got) == {"normal", "uniform"}
    for data in got.values():
        assert set(data) == {"int4", "nf4"}
        for errors in data.values():
            assert len(errors) == len(BLOCKSIZES)
            assert all(math.isfinite(e) and e > 0 for e in errors)
    normal, uniform = got["normal"], got["uniform"]
    # the trend: on normal weights NF4 beats int4 at every block size, and both get worse
    # as blocks grow (a larger block has a larger absmax, so coarser steps for most values)
    assert all(a < b for a, b in zip(normal["nf4"], normal["int4"]))
    for errors in normal.values():
        assert all(a < b for a, b in zip(errors, errors[1:])), errors
    # the gap widens with the block size: int4 wastes its levels on ever rarer tails
    ratios = [b / a for a, b in zip(normal["nf4"], normal["int4"])]
    assert ratios[-1] > ratios[0]
    # on uniform data the evenly spaced levels win: NF4 is tuned for normal weights
    assert all(a < b for a, b in zip(uniform["int4"], uniform["nf4"]))
    # the numbers are measured: two points, measured again on the data the docstring names
    g = torch.Generator().manual_seed(seed)
    x_normal = torch.randn(n, generator=g)
    x_uniform = torch.rand(n, generator=g) * 2 - 1
    again = ((int4_absmax(x_normal, 1024) - x_normal) ** 2).mean().item()
    assert normal["int4"][3] == pytest.approx(again, rel=1e-5)
    again = ((nf4(x_uniform, 64) - x_uniform) ** 2).mean().item()
    assert uniform["nf4"][1] == pytest.approx(again, rel=1e-5)


def test_ch12_format_errors_follow_the_seed(impl):
    a = impl(CH12).format_errors(2**12, 0, (64,))
    b = impl(CH12).format_errors(2**12, 1, (64,))
    assert a["normal"]["nf4"] != b["normal"]["nf4"]
