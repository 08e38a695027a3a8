"""Chapter 19 exercises: AUROC with ties, and how noise in a confidence score erodes it.

AUROC (Hanley & McNeil 1982) is the chance that a random positive scores above a random
negative, a tie counting one half. With P positives and N negatives it is the
Mann-Whitney statistic, computable in O(n log n) from ranks:

    AUROC = (R_pos - P (P + 1) / 2) / (P N),    R_pos = sum of the positives' ranks,

where the ranks are 1..n in increasing score and tied scores share the mean of their
ranks (midranks). The graders compare your function with ``minillama.metrics.auroc`` and
with the O(P N) count over all pairs.

The experiment: a confidence that is the truth plus Gaussian noise, score = y + sigma e,
has AUROC = Phi(1 / (sigma sqrt 2)) in the limit of many samples (the difference of a
positive's and a negative's score is N(1, 2 sigma^2)). You measure it on samples for a
range of sigma and the grader checks the trend and the numbers.
"""

import torch


def auroc(scores, labels) -> float:
    """AUROC of ``scores`` (numbers, higher = more likely positive) for ``labels`` (0/1),
    by midranks. Needs at least one positive and one negative."""
    # BEGIN SOLUTION
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).long()
    values, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()               # last rank of each tied group
    midranks = ends - (counts.double() - 1) / 2
    ranks = midranks[inverse]
    pos = int(y.sum())
    neg = y.numel() - pos
    return ((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)).item()
    # END SOLUTION


def auroc_under_noise(sigmas, n: int = 400, seed: int = 0) -> list[float]:
    """Measured AUROC of score = label + sigma * noise, for each sigma in ``sigmas``.

    The sample, drawn once and shared by every sigma: ``g = torch.Generator().
    manual_seed(seed)``, ``labels = (torch.rand(n, generator=g) < 0.5).long()``, then
    ``noise = torch.randn(n, generator=g)``. Score with your ``auroc``.
    """
    # BEGIN SOLUTION
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.5).long()
    noise = torch.randn(n, generator=g)
    return [auroc((labels + sigma * noise).tolist(), labels.tolist()) for sigma in sigmas]
    # END SOLUTION
