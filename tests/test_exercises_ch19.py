"""Graders for chapter 19 (evaluation: AUROC with ties, and AUROC under noise).

    python -m pytest tests/test_exercises_ch19.py                    # the reference answers
    python -m pytest tests/test_exercises_ch19.py --impl=exercises   # your work

``auroc`` is compared with ``minillama.metrics.auroc`` and with the count over all
(positive, negative) pairs. ``auroc_under_noise`` is an experiment: its measurements must
fall as the noise grows, lie near the large-sample value Phi(1 / (sigma sqrt 2)), and be
the AUROC of the sample its docstring names (measured again here).
"""

import math
import random

import pytest
import torch

from minillama.metrics import auroc as library_auroc

CH19 = "ch19_evaluation"


def pairwise(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_ch19_auroc_hand_cases(impl):
    f = impl(CH19).auroc
    assert f([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert f([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert f([0.5, 0.5, 0.5], [1, 0, 1]) == pytest.approx(0.5)       # all tied
    assert f([3, 1, 2, 2], [1, 0, 1, 0]) == pytest.approx(0.875)     # one tied pair: 3.5/4


@pytest.mark.parametrize("n, levels, seed", [(10, None, 0), (50, 3, 1), (200, 10, 2),
                                             (31, 2, 3), (500, None, 4)])
def test_ch19_auroc_random_with_ties(impl, n, levels, seed):
    rng = random.Random(seed)
    labels = [rng.random() < 0.3 for _ in range(n)]
    labels[0], labels[1] = True, False                          # both classes present
    labels = [int(y) for y in labels]
    if levels is None:
        scores = [rng.gauss(y, 1.0) for y in labels]
    else:                                                       # a coarse score: many ties
        scores = [float(rng.randrange(levels) + y * rng.randrange(2)) for y in labels]
    got = impl(CH19).auroc(scores, labels)
    assert got == pytest.approx(library_auroc(scores, labels), abs=1e-12)
    assert got == pytest.approx(pairwise(scores, labels), abs=1e-12)


SIGMAS = [0.25, 0.5, 1.0, 2.0, 4.0]


def test_ch19_auroc_under_noise(impl):
    n, seed = 600, 5
    got = impl(CH19).auroc_under_noise(SIGMAS, n, seed)
    assert len(got) == len(SIGMAS) and all(0.0 <= a <= 1.0 for a in got)
    # the trend: more noise, worse ranking, towards chance (the sample is shared, so a
    # pair once misordered stays misordered: the fall is monotone, not just on average)
    assert all(a >= b for a, b in zip(got, got[1:])), got
    assert got[0] > 0.95 and got[-1] < 0.65
    # near the large-sample value (a few standard errors: SE <= 1 / sqrt(4 min(P, N)))
    for sigma, a in zip(SIGMAS, got):
        expected = 0.5 * (1 + math.erf(1 / (2 * sigma)))          # Phi(1 / (sigma sqrt 2))
        assert abs(a - expected) < 0.07, (sigma, a, expected)
    # measured on the named sample: every point again, with the library's AUROC
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.5).long()
    noise = torch.randn(n, generator=g)
    for sigma, a in zip(SIGMAS, got):
        again = library_auroc((labels + sigma * noise).tolist(), labels.tolist())
        assert a == pytest.approx(again, abs=1e-12)
