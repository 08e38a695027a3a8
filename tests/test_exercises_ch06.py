"""Graders for chapter 6 (mixture of experts: the top-1 sigmoid router and the expert dispatch).

    python -m pytest tests/test_exercises_ch06.py                    # the reference answers
    python -m pytest tests/test_exercises_ch06.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch06_moe.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""


import pytest
import torch

from minillama.moe import MoE, dispatch, route

CH06 = "ch06_moe"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n, n_experts", [(1, 1), (7, 4), (64, 16), (300, 128)])
def test_ch06_route_top1_sigmoid(impl, n, n_experts):
    logits = randn(n, n_experts, seed=n, scale=3.0)
    scores, expert_index = impl(CH06).route_top1_sigmoid(logits)
    ref_scores, ref_index = route(logits, 1)
    assert scores.shape == expert_index.shape == (n,)
    assert torch.equal(expert_index, ref_index[:, 0])
    torch.testing.assert_close(scores, ref_scores[:, 0])


def test_ch06_route_top1_sigmoid_keeps_bfloat16(impl):
    logits = randn(10, 8, seed=4).to(torch.bfloat16)
    scores, expert_index = impl(CH06).route_top1_sigmoid(logits)
    ref_scores, ref_index = route(logits, 1)
    assert scores.dtype == torch.bfloat16
    assert torch.equal(scores, ref_scores[:, 0]) and torch.equal(expert_index, ref_index[:, 0])


def _experts(n_experts, d, f, seed):
    return (randn(n_experts, d, f, seed=seed, scale=0.3), randn(n_experts, f, d, seed=seed + 1,
            scale=0.3), randn(n_experts, d, f, seed=seed + 2, scale=0.3))


@pytest.mark.parametrize("n, n_experts, d, f, load", [
    (1, 1, 4, 6, "random"), (12, 4, 8, 16, "random"), (50, 8, 16, 12, "random"),
    (9, 4, 8, 8, "skewed"),            # experts 1 and 3 get no token, expert 2 almost all
])
def test_ch06_dispatch_top1(impl, n, n_experts, d, f, load):
    w1, w2, w3 = _experts(n_experts, d, f, seed=n)
    x, scores = randn(n, d, seed=n + 10), torch.rand(n, generator=torch.Generator().manual_seed(n))
    if load == "skewed":
        expert_index = torch.tensor([2, 2, 0, 2, 2, 2, 0, 2, 2])
    else:
        expert_index = torch.randint(0, n_experts, (n,), generator=torch.Generator().manual_seed(n))
    got = impl(CH06).dispatch_top1(x, scores, expert_index, w1, w2, w3)
    assert got.shape == x.shape
    expected = dispatch(x, scores[:, None], expert_index[:, None], w1, w2, w3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_ch06_dispatch_top1_gradients(impl):
    w = [t.requires_grad_() for t in _experts(4, 8, 12, seed=3)]
    x, scores = randn(20, 8, seed=5).requires_grad_(), torch.rand(20).requires_grad_()
    expert_index = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(6))
    inputs = [x, scores, *w]
    got = impl(CH06).dispatch_top1(x, scores, expert_index, *w)
    grads = torch.autograd.grad(got.square().sum(), inputs)
    expected = dispatch(x, scores[:, None], expert_index[:, None], *w)
    for g, e in zip(grads, torch.autograd.grad(expected.square().sum(), inputs)):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_ch06_your_router_and_dispatch_make_the_moe_layer(impl):
    torch.manual_seed(0)
    layer = MoE(16, 24, n_experts=6, k=1)
    x = randn(3, 10, 16, seed=9)
    tokens = x.reshape(-1, 16)
    with torch.no_grad():
        scores, expert_index = impl(CH06).route_top1_sigmoid(layer.router(tokens))
        e = layer.experts
        routed = impl(CH06).dispatch_top1(tokens, scores, expert_index, e.w1, e.w2, e.w3)
        got = layer.shared_expert(tokens) + routed
        torch.testing.assert_close(got.view_as(x), layer(x), atol=1e-5, rtol=1e-5)
