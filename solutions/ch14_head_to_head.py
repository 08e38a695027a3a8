"""Chapter 14 exercises: how sure a head-to-head can be, and what a LoRA rank buys.

**Exact match with an error bar.** A method that gets k of n held-out answers right has
an accuracy p^ = k / n, but with n = 48 one answer is two points. The Wilson score
interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over p^ +- z sqrt(p^(1-p^)/n))
is the set of true accuracies p that a z-test would not reject:

    |p^ - p| <= z sqrt(p (1 - p) / n)
    <=>  p in [c - h, c + h],   c = (p^ + z^2 / 2n) / (1 + z^2 / n),
                                h = z / (1 + z^2 / n) * sqrt(p^ (1 - p^) / n + z^2 / 4n^2)

It never leaves [0, 1] and is not empty at k = 0 or k = n.

**A rank race (an experiment).** LoRA (Hu et al., arXiv 2106.09685) of rank r can only
add a rank-r matrix to W0. On a regression problem whose best update ``delta`` has a
decaying spectrum, the loss LoRA reaches is bounded below by the best rank-r fit
(Eckart-Young): the smaller r, the higher the floor. You train ranks side by side and
return the loss curves; the grader checks they respect (and reach) those floors.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (low, high) for k successes out of n trials (n >= 1)."""
    # BEGIN SOLUTION
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
    # END SOLUTION


def make_problem(d: int = 32, n: int = 256, seed: int = 0):
    """(W0, delta, X): a frozen d x d weight, the update to learn and n inputs (n, d).

    delta = U diag(0.7^0, 0.7^1, ...) V^T with random orthogonal U, V: every rank adds a
    bit less. The targets are Y = X (W0 + delta)^T.
    """
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(d, d, generator=g) / math.sqrt(d)
    U = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    V = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    delta = U @ torch.diag(0.7 ** torch.arange(d, dtype=torch.float32)) @ V.T
    X = torch.randn(n, d, generator=g)
    return W0, delta, X


def rank_race(ranks=(1, 2, 4, 8), steps: int = 300, lr: float = 1e-2,
              seed: int = 0) -> dict[int, list[float]]:
    """Train one LoRA per rank on ``make_problem(seed=seed)``; return each loss curve.

    For each r: a frozen ``nn.Linear`` (no bias) holding W0, wrapped in LoRA of rank r
    with scale 1 (``minillama.peft.lora.LoRALinear(base, r, alpha=r)``, or your own:
    A like an nn.Linear weight, B = 0); full batch, loss ``F.mse_loss(layer(X), Y)``
    with Y = X (W0 + delta)^T; Adam on A and B with learning rate ``lr``; ``steps``
    steps. ``curves[r][t]`` is the loss computed in step t, *before* that step's update
    (so ``curves[r][0]`` is the loss of the untrained layer).
    """
    # BEGIN SOLUTION
    from minillama.peft.lora import LoRALinear

    W0, delta, X = make_problem(seed=seed)
    Y = X @ (W0 + delta).T
    curves = {}
    for r in ranks:
        torch.manual_seed(seed + r)
        base = nn.Linear(W0.shape[1], W0.shape[0], bias=False)
        with torch.no_grad():
            base.weight.copy_(W0)
        layer = LoRALinear(base, r, alpha=r)
        optimizer = torch.optim.Adam([layer.lora_A, layer.lora_B], lr=lr)
        curve = []
        for _ in range(steps):
            loss = F.mse_loss(layer(X), Y)
            curve.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        curves[r] = curve
    return curves
    # END SOLUTION
