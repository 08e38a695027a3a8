"""Graders for chapter 5 (pre-training: cosine schedule, top-p, accumulated step).

    python -m pytest tests/test_exercises_ch05.py                    # the reference answers
    python -m pytest tests/test_exercises_ch05.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch05_pretraining.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""

import copy

import pytest
import torch

from minillama import Llama, LlamaConfig
from minillama.generate import filter_top_p
from minillama.train import TrainConfig, lr_at

CH05 = "ch05_pretraining"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("warmup, total, peak, min_ratio", [
    (10, 100, 3e-3, 0.1), (0, 50, 1.0, 0.0), (1, 1, 0.5, 0.1), (5, 5, 1e-3, 0.1),
    (30, 20, 2e-4, 0.5), (7, 1000, 6e-4, 0.1)])
def test_ch05_cosine_lr(impl, warmup, total, peak, min_ratio):
    cfg = TrainConfig(steps=total, warmup=warmup, lr=peak, min_lr_ratio=min_ratio)
    for step in range(total + warmup + 10):
        got = impl(CH05).cosine_lr(step, warmup, total, peak, min_ratio)
        assert got == pytest.approx(lr_at(step, cfg), rel=1e-12, abs=0), f"step {step}"


@pytest.mark.parametrize("shape", [(7,), (3, 50), (2, 4, 33)])
@pytest.mark.parametrize("p", [1e-9, 0.1, 0.5, 0.9, 0.999])
def test_ch05_top_p_filter(impl, shape, p):
    logits = randn(*shape, seed=len(shape), scale=3.0)           # unsorted rows
    got = impl(CH05).top_p_filter(logits, p)
    assert got.shape == logits.shape and got.dtype == logits.dtype
    assert torch.equal(got, filter_top_p(logits, p))


def test_ch05_top_p_filter_sorted_and_bfloat16(impl):
    ascending = torch.linspace(-4, 4, 20).repeat(2, 1)
    ascending[1] = ascending[1].flip(-1)                         # and a descending row
    for logits in (ascending, randn(4, 64, seed=5).to(torch.bfloat16)):
        got = impl(CH05).top_p_filter(logits, 0.7)
        assert got.dtype == logits.dtype
        assert torch.equal(got, filter_top_p(logits, 0.7))


@pytest.mark.parametrize("shape", [(9,), (4, 40)])
def test_ch05_top_p_filter_p_one_keeps_everything(impl, shape):
    logits = randn(*shape, seed=7)                               # no probability underflows
    got = impl(CH05).top_p_filter(logits, 1.0)
    assert torch.equal(got, logits)
    assert torch.equal(got, filter_top_p(logits, 1.0))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.75, 0.95])
def test_ch05_top_p_filter_ties(impl, p):
    # values from a small set: tied tokens straddle the cut. Which of two equal logits is
    # kept is arbitrary, so compare how many are kept and which values, row by row.
    logits = torch.randint(0, 4, (6, 24), generator=torch.Generator().manual_seed(11)).float()
    logits[0] = 1.0                                              # a row of equal logits
    got, expected = impl(CH05).top_p_filter(logits, p), filter_top_p(logits, p)
    assert got.shape == logits.shape
    kept = torch.isfinite(got)
    assert torch.equal(got[kept], logits[kept]), "kept logits must be left unchanged"
    assert torch.equal(kept.sum(-1), torch.isfinite(expected).sum(-1))
    for g, e in zip(got, expected):
        assert torch.equal(g.sort().values, e.sort().values)


TINY = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=16)


def batches(n_micro: int, step: int, rows: int = 2, t: int = 12):
    g = torch.Generator().manual_seed(100 * step + n_micro)
    seq = torch.randint(0, TINY.vocab_size, (n_micro * rows, t + 1), generator=g)
    x, y = seq[:, :-1], seq[:, 1:]
    return [(x[i * rows:(i + 1) * rows], y[i * rows:(i + 1) * rows]) for i in range(n_micro)]


def make_optimizer(kind: str, model):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    # Adam divides by sqrt(v) + eps: with the default eps a gradient of 1e-9 turns float
    # rounding (the two batchings differ by ~1e-9) into visible steps; eps=1e-4 does not
    return torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4, weight_decay=0.1)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("clip", [1e9, 0.05])                 # clipping off, and on
@pytest.mark.parametrize("n_micro", [1, 2, 4])
def test_ch05_accumulated_step(impl, optimizer, clip, n_micro):
    torch.manual_seed(0)
    ours = Llama(TINY)
    ref = copy.deepcopy(ours)
    start = copy.deepcopy(ours.state_dict())
    opt_ours, opt_ref = make_optimizer(optimizer, ours), make_optimizer(optimizer, ref)
    for step in range(2):                  # a second step sees stale grads if not cleared
        micro = batches(n_micro, step)
        loss = impl(CH05).accumulated_step(ours, opt_ours, micro, clip)
        # the reference: one step on the concatenated batch
        _, ref_loss = ref(torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro]))
        ref_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
        assert (norm > clip) == (clip < 1), "test setup: clipping should be on only for 0.05"
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
        assert isinstance(loss, float)
        assert loss == pytest.approx(ref_loss.item(), abs=1e-5)
        assert all(p.grad is None or not p.grad.any() for p in ours.parameters()), \
            "gradients must be cleared after the step"
    moved = False
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=0, msg=name)
        moved |= not torch.equal(p.detach(), start[name])
    assert moved, "the weights did not change"
