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
    # BEGIN SOLUTION
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    lo = peak * min_ratio
    return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * progress))
    # END SOLUTION


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering over the last dimension: keep the fewest most likely tokens
    whose probabilities add up to at least ``p``; set every other logit to -inf.

    Rank the tokens of each row by probability (softmax of the logits, in float32). A
    token is kept when the probability mass of the tokens ranked above it is still
    below ``p``, so the most likely token is always kept and ``p = 1`` keeps them all.
    ``logits`` may have any leading shape and need not be sorted; return a tensor of
    its shape and dtype with the kept logits unchanged.
    """
    # BEGIN SOLUTION
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = probs.cumsum(-1) - probs
    drop_sorted = mass_before >= p
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
    # END SOLUTION


def accumulated_step(model, optimizer, micro_batches, clip: float) -> float:
    """One optimiser step with gradient accumulation; returns the mean loss (a float).

    ``micro_batches`` is a list of ``(x, y)`` token tensors; ``model(x, y)`` returns
    ``(logits, loss)`` with the loss averaged over the micro-batch. With n micro-batches
    of equal size the step must equal one step on all of them concatenated:

        for each (x, y):  backward of loss / n          (gradients add up in .grad)
        clip the global gradient norm to ``clip``      (torch.nn.utils.clip_grad_norm_)
        optimizer.step(), then clear the gradients for the next step
    """
    # BEGIN SOLUTION
    n = len(micro_batches)
    total = 0.0
    for x, y in micro_batches:
        _, loss = model(x, y)
        (loss / n).backward()
        total += loss.item() / n
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total
    # END SOLUTION
