# GENERATED from solutions/ch05_pretraining.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch05.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 5 exercises: the pieces of a pre-training loop, written by hand.

LLaMA (arXiv 2302.13971, section 2.2) trains with AdamW, a learning rate that warms
up and then follows a cosine, and gradient clipping at 1.0; the course samples text
with nucleus (top-p) sampling (Holtzman et al., arXiv 1904.09751). Each function below
has a twin in the library (``minillama.train.lr_at``, ``minillama.generate.filter_top_p``
and the inner loop of ``minillama.train.train``); the grader ``tests/test_exercises_ch05.py``
compares them on the same inputs.
"""

import math

import torch


def cosine_lr(step: int, warmup: int, total: int, peak: float, min_ratio: float) -> float:
    """The learning rate at optimiser step ``step`` (counting from 0).

    A run of ``total`` steps (0 .. total - 1): linear warmup over the first ``warmup``
    steps, reaching ``peak`` at step warmup - 1, then a cosine from ``peak`` down to
    ``lo = min_ratio * peak`` at the last step, total - 1, staying at ``lo`` after it:

        lr = peak * (step + 1) / warmup                              step < warmup
        progress = min(1, (step - warmup) / max(1, total - 1 - warmup))
        lr = lo + (peak - lo) * (1 + cos(pi * progress)) / 2         otherwise
    """
    raise NotImplementedError("exercise: cosine_lr")


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering over the last dimension: keep the fewest most likely tokens
    whose probabilities add up to at least ``p``; set every other logit to -inf.

    Rank the tokens of each row by probability (softmax of the logits, in float32). A
    token is kept when the probability mass of the tokens ranked above it is still
    below ``p``, so the most likely token is always kept and ``p = 1`` keeps them all.
    ``logits`` may have any leading shape and need not be sorted; return a tensor of
    its shape and dtype with the kept logits unchanged.
    """
    raise NotImplementedError("exercise: top_p_filter")


def accumulated_step(model, optimizer, micro_batches, clip: float) -> float:
    """One optimiser step with gradient accumulation; returns the mean loss (a float).

    ``micro_batches`` is a list of ``(x, y)`` token tensors; ``model(x, y)`` returns
    ``(logits, loss)`` with the loss averaged over the micro-batch. With n micro-batches
    of equal size the step must equal one step on all of them concatenated:

        for each (x, y):  backward of loss / n          (gradients add up in .grad)
        clip the global gradient norm to ``clip``      (torch.nn.utils.clip_grad_norm_)
        optimizer.step(), then clear the gradients for the next step
    """
    raise NotImplementedError("exercise: accumulated_step")
