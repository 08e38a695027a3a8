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
    # BEGIN SOLUTION
    top, expert_index = logits.max(dim=-1)
    return torch.sigmoid(top.float()).to(logits.dtype), expert_index
    # END SOLUTION


def dispatch_top1(x: torch.Tensor, scores: torch.Tensor, expert_index: torch.Tensor,
                  w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """The routed part of the layer: row i of the result is FFN_e(s * x_i), e = expert_index[i].

    ``x`` (n, D) holds the tokens, ``scores`` and ``expert_index`` (n,) come from the
    router, ``w1``/``w3`` (E, D, F) and ``w2`` (E, F, D) are the experts' weights.
    Do not loop over tokens in Python: gather the tokens of one expert at a time
    (a loop over the E experts is fine), run them through that expert in one matrix
    product, and put the results back in their rows. An expert may get no token.
    """
    # BEGIN SOLUTION
    out = torch.zeros_like(x)
    for e in range(w1.shape[0]):
        rows = torch.nonzero(expert_index == e, as_tuple=True)[0]     # this expert's tokens
        h = scores[rows, None] * x[rows]
        y = (F.silu(h @ w1[e]) * (h @ w3[e])) @ w2[e]
        out = out.index_add(0, rows, y)
    return out
    # END SOLUTION
