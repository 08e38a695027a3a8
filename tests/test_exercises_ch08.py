"""Graders for chapter 8 (LLaMA-Adapter: gated prompt attention).

    python -m pytest tests/test_exercises_ch08.py                    # the reference answers
    python -m pytest tests/test_exercises_ch08.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch08_adapter_v1.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""


import pytest
import torch

from minillama import LlamaConfig
from minillama.attention import repeat_kv

CH08 = "ch08_adapter_v1"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("b, h, t, K, d, shared, per_head", [
    (1, 1, 1, 1, 4, False, True), (2, 4, 7, 3, 8, True, True),
    (3, 2, 5, 10, 16, False, False), (2, 8, 1, 4, 8, True, False)])
def test_ch08_gated_prompt_attention(impl, b, h, t, K, d, shared, per_head):
    from minillama.peft.adapter_v1 import gated_prompt_attention

    q = randn(b, h, t, d, seed=t)
    k, v = (randn(1 if shared else b, h, K, d, seed=s) for s in (K, K + 1))
    gate = randn(h if per_head else 1, seed=d)
    got = impl(CH08).gated_prompt_attention(q, k, v, gate)
    assert got.shape == q.shape
    torch.testing.assert_close(got, gated_prompt_attention(q, k, v, gate), atol=1e-6, rtol=1e-5)
    zero = impl(CH08).gated_prompt_attention(q, k, v, torch.zeros_like(gate))
    assert torch.equal(zero, torch.zeros_like(q))          # zero-init: nothing comes back


def test_ch08_gated_prompt_attention_keeps_bfloat16(impl):
    from minillama.peft.adapter_v1 import gated_prompt_attention

    q, k, v = (randn(2, 4, 3, 8, seed=s).to(torch.bfloat16) for s in (1, 2, 3))
    gate = randn(4, seed=4).to(torch.bfloat16)
    got = impl(CH08).gated_prompt_attention(q, k, v, gate)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, gated_prompt_attention(q, k, v, gate))


def test_ch08_your_prompt_attention_makes_the_adapter_layer(impl):
    from einops import rearrange

    from minillama.attention import Attention
    from minillama.peft.adapter_v1 import PromptAttention

    torch.manual_seed(0)
    cfg = LlamaConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=16)
    attn, module = Attention(cfg), PromptAttention(32, 4, prompt_len=5)
    with torch.no_grad():
        module.gate.copy_(randn(4, seed=1))
    x, q = randn(2, 6, 32, seed=2), randn(2, 4, 6, 8, seed=3)
    with torch.no_grad():
        k, v = (rearrange(w(module.prompt[None]), "b k (h d) -> b h k d", h=2)
                for w in (attn.wk, attn.wv))
        got = impl(CH08).gated_prompt_attention(q, repeat_kv(k, 2), repeat_kv(v, 2),
                                                torch.tanh(module.gate))
        torch.testing.assert_close(got, module(attn, x, q), atol=1e-6, rtol=1e-5)
