# GENERATED from solutions/ch09_adapter_v2.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch09.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 9 exercise: LLaMA-Adapter V2's bias and scale around a frozen linear, and its merge.

LLaMA-Adapter V2 (Gao et al., arXiv 2304.15010) wraps every frozen linear W (out x in) of
a block with a trainable scale s (one per *input* feature, 1 at the start) and bias b
(one per *output* feature, 0 at the start). Like the official code we compute

    y = W (x * s) + b

which at the start is the frozen layer exactly. After training it folds into one
ordinary linear layer with a bias:

    W' = W diag(s)   (column j of W times s_j),      b' = b

The graders compare your forward with ``minillama.peft.adapter_v2.BiasScaleLinear`` and
your merge with ``BiasScaleLinear.merged``, and check that the merged layer computes
what the wrapper computes.
"""

import torch


def bias_scale_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                      bias: torch.Tensor) -> torch.Tensor:
    """W (x * s) + b for x of shape (..., in); weight (out, in), scale (in,), bias (out,).

    Returns (..., out) in the dtype of x.
    """
    raise NotImplementedError("exercise: bias_scale_linear")


def merge_bias_scale(weight: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b'): the weight and bias of the one linear layer that computes the same.

    W' = W diag(s) has W's shape (out, in); b' = b. Return new tensors (do not change
    the inputs).
    """
    raise NotImplementedError("exercise: merge_bias_scale")
