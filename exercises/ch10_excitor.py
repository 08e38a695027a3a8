# GENERATED from solutions/ch10_excitor.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch10.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 10 exercise: LLaMA-Excitor's reconstructed keys.

LLaMA-Excitor (Zou et al., arXiv 2404.00913) adds to a layer's attention scores without
touching its values. From the layer input T (M tokens x D), learnable prompts P (K x D)
and a low-rank excitor query Wq_E = W_up W_down (D -> r -> D), it builds one extra key
per token as an attention over the prompts:

    K_extra = softmax(Wq_E(T) P^T / sqrt(D)) P                      (M x D)

and then adds ``g * Q K_extra^T / sqrt(d)`` (split into heads like K) to the scores,
with a zero-initialised gate g. You write K_extra. The graders compare your function
with ``minillama.peft.excitor.reconstructed_keys`` and with the whole module.
"""

import math

import torch


def reconstructed_keys(t: torch.Tensor, P: torch.Tensor, W_down: torch.Tensor,
                       W_up: torch.Tensor) -> torch.Tensor:
    """K_extra for tokens t (b, M, D), prompts P (K, D), W_down (r, D), W_up (D, r).

    The excitor query of a token x is W_up (W_down x) (shape (D,)); its scores against
    the K prompts are divided by sqrt(D); the softmax over the prompts is taken in float32.
    Returns (b, M, D) in the dtype of t.
    """
    raise NotImplementedError("exercise: reconstructed_keys")
