"""Graders for chapter 14 (head-to-head: error bars on exact match, and a LoRA rank race).

    python -m pytest tests/test_exercises_ch14.py                    # the reference answers
    python -m pytest tests/test_exercises_ch14.py --impl=exercises   # your work

``wilson_interval`` is checked against the definition it solves (the p a z-test does not
reject, found here by bisection, no closed form). ``rank_race`` is an experiment: its
curves must start at the untrained loss (computed here), never beat the Eckart-Young
floor of their rank (the best rank-r fit, from an SVD), reach it, and order by rank.
"""

import math

import pytest
import torch

CH14 = "ch14_head_to_head"


def _score_test_bounds(k, n, z):
    """Where |p^ - p| = z sqrt(p (1-p) / n), on each side of p^, by bisection."""
    phat = k / n

    def inside(p):
        return (phat - p) ** 2 <= z * z * p * (1 - p) / n

    def edge(lo, hi):          # lo inside, hi outside (or the end of [0, 1])
        if inside(hi):
            return hi
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if inside(mid) else (lo, mid)
        return lo

    return edge(phat, 0.0), edge(phat, 1.0)


@pytest.mark.parametrize("k, n", [(20, 48), (1, 48), (47, 48), (0, 10), (10, 10), (3, 7),
                                  (500, 1000), (1, 1)])
@pytest.mark.parametrize("z", [1.96, 1.0, 2.576])
def test_ch14_wilson_interval(impl, k, n, z):
    low, high = impl(CH14).wilson_interval(k, n, z)
    want_low, want_high = _score_test_bounds(k, n, z)
    assert low == pytest.approx(want_low, abs=1e-9)
    assert high == pytest.approx(want_high, abs=1e-9)
    eps = 1e-12                                  # rounding at k = 0 and k = n
    assert -eps <= low <= k / n + eps and k / n - eps <= high <= 1 + eps


def test_ch14_wilson_interval_is_wide_on_a_small_test_set(impl):
    low, high = impl(CH14).wilson_interval(20, 48)      # 41.7% on 48 records
    assert high - low > 0.25                           # more than 25 points wide
    low2, high2 = impl(CH14).wilson_interval(2000, 4800)
    assert high2 - low2 < 0.03


# ----------------------------------------------------------------------------- rank race
RANKS = (1, 2, 4, 8)


def _problem(seed):
    """The docstring's problem, rebuilt here: a tampered ``make_problem`` is caught."""
    g = torch.Generator().manual_seed(seed)
    d, n = 32, 256
    W0 = torch.randn(d, d, generator=g) / math.sqrt(d)
    U = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    V = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    delta = U @ torch.diag(0.7 ** torch.arange(d, dtype=torch.float32)) @ V.T
    return W0, delta, torch.randn(n, d, generator=g)


def test_ch14_rank_race(impl, one_thread):
    seed, steps = 3, 300
    W0, delta, X = _problem(seed)
    for got, want in zip(impl(CH14).make_problem(seed=seed), (W0, delta, X)):
        torch.testing.assert_close(got, want)
    curves = impl(CH14).rank_race(RANKS, steps=steps, lr=1e-2, seed=seed)
    assert sorted(curves) == list(RANKS)
    residual = X @ delta.T                    # what the frozen layer misses, (n, d)
    untrained = residual.square().mean().item()
    singular = torch.linalg.svdvals(residual.double())
    floors = {r: (singular[r:] ** 2).sum().item() / residual.numel() for r in RANKS}
    finals = []
    for r in RANKS:
        curve = curves[r]
        assert len(curve) == steps and all(math.isfinite(v) for v in curve)
        # measured: step 0 is the untrained layer (B = 0), whatever A's initialisation
        assert curve[0] == pytest.approx(untrained, rel=1e-4)
        # no rank-r update can fit better than the best rank-r approximation
        assert min(curve) >= floors[r] * (1 - 1e-3), (r, min(curve), floors[r])
        # ... and 300 Adam steps get there
        assert curve[-1] <= floors[r] * 1.1 + 1e-5, (r, curve[-1], floors[r])
        finals.append(curve[-1])
    # the trend: every extra rank lowers the final loss, rank 8 by more than 10x vs rank 1
    assert all(a > b for a, b in zip(finals, finals[1:])), finals
    assert finals[-1] < finals[0] / 10
