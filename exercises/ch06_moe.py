# GENERATED from solutions/ch06_moe.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch06.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 6 exercises: the Llama 4 router and the expert dispatch.

A Llama 4 mixture-of-experts layer (see ``minillama/moe.py``) sends every token x to
one of E experts, chosen by a linear router, and adds an always-on shared expert:

    l = x W_r                       router logits (E,)
    e = argmax_j l_j                the token's expert (top-1)
    s = sigmoid(l_e)                its score: a sigmoid of the raw logit, no softmax
    out = FFN_shared(x) + FFN_e(s * x)        the score scales the expert's *input*

with FFN(h) = (SiLU(h W1) * (h W3)) W2. The routed experts are stored as batched
weights ``w1, w3: (E, D, F)`` and ``w2: (E, F, D)``. The graders compare your functions
with ``minillama.moe.route`` and ``minillama.moe.dispatch`` on random inputs.
"""

import torch
import torch.nn.functional as F


def route_top1_sigmoid(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 routing: for router logits (n, E) return ``(scores, expert_index)``, both (n,).

    ``expert_index[i]`` is the expert with the largest logit for token i, and
    ``scores[i] = sigmoid(logits[i, expert_index[i]])``, computed in float32 and returned
    in the dtype of ``logits``. The other experts get nothing (score 0), so no softmax
    over experts is needed.
    """
    raise NotImplementedError("exercise: route_top1_sigmoid")


def dispatch_top1(x: torch.Tensor, scores: torch.Tensor, expert_index: torch.Tensor,
                  w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """The routed part of the layer: row i of the result is FFN_e(s * x_i), e = expert_index[i].

    ``x`` (n, D) holds the tokens, ``scores`` and ``expert_index`` (n,) come from the
    router, ``w1``/``w3`` (E, D, F) and ``w2`` (E, F, D) are the experts' weights.
    Do not loop over tokens in Python: gather the tokens of one expert at a time
    (a loop over the E experts is fine), run them through that expert in one matrix
    product, and put the results back in their rows. An expert may get no token.
    """
    raise NotImplementedError("exercise: dispatch_top1")
