"""Mixture of experts, the Llama 4 way: a router, E routed experts and one shared expert.

A sparse mixture-of-experts layer (Shazeer et al., arXiv 1701.06538; GShard, Lepikhin
et al., arXiv 2006.16668; Switch Transformer, Fedus et al., arXiv 2101.03961) replaces
the one feed-forward network of a block by E of them ("experts") and lets a small
linear *router* pick, for every token, which ones run. The parameters grow E-fold while
the compute per token grows only by the experts it is sent to.

Llama 4 (Meta's model card and blog post, April 2025: Scout has 16 experts, Maverick 128,
both 17B *active* parameters) routes each token x (a row of the layer input) like this:

    l = x W_r                                  router logits, one per expert   (E,)
    S = the k largest entries of l             k = 1 in Scout and Maverick
    s_e = sigmoid(l_e) if e in S else 0        no softmax, no renormalisation
    out = FFN_shared(x) + sum_{e in S} FFN_e(s_e * x)

Three details differ from Switch: the router score goes through a sigmoid of the raw
logit rather than a softmax over experts; it scales the expert's *input*, not its
output (the two differ because SwiGLU is not linear); and an always-on *shared* expert
(as in DeepSeekMoE, arXiv 2401.06066) sees every token, so a token's routed expert only
adds to a dense path. Every expert, shared or routed, is a SwiGLU of width ``expert_dim``.

**Dispatch without a loop over tokens.** The experts are stored as batched weights
``w1, w3: (E, D, F)`` and ``w2: (E, F, D)``. The n*k (token, expert) assignments are
queued per expert: an assignment's slot is the number of earlier assignments to the same
expert (a cumulative sum over a one-hot matrix, as in GShard). The queues form one
``(E, C, D)`` tensor, C = the longest queue, so all experts run in three batched matmuls;
a gather brings each result back to its token. No token is dropped (C grows to fit).

**Load balancing.** Left alone, a router tends to send most tokens to a few experts.
Switch Transformer's auxiliary loss (arXiv 2101.03961, eq. 4) is minimal (= 1) when the
load is uniform:

    aux = E * sum_e f_e * P_e      f_e = share of assignments that went to expert e,
                                   P_e = mean softmax(l)_e over the tokens

Meta does not describe Llama 4's balancing recipe, so this is the textbook version; it
is added to the training loss with weight ``LlamaConfig.router_aux_coef`` (0 = off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce, repeat
from torch import nn

from .feedforward import FeedForward


def route(logits: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of the raw logits (n, E): their sigmoids (n, k) and the chosen experts (n, k)."""
    if logits.dim() != 2 or not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"route needs logits of shape (tokens, experts) and 1 <= k <= experts, "
                         f"got shape {tuple(logits.shape)} and k={k}")
    top, expert_index = torch.topk(logits, k, dim=-1)
    return torch.sigmoid(top.float()).type_as(logits), expert_index


def dispatch(x: torch.Tensor, scores: torch.Tensor, expert_index: torch.Tensor,
             w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """sum_j FFN_{e_j}(s_j * x) for every token: x (n, D), scores and expert_index (n, k).

    ``w1``/``w3`` (E, D, F) are the experts' gate/up weights, ``w2`` (E, F, D) the down ones.
    """
    n, d = x.shape
    n_experts = w1.shape[0]
    if scores.shape != expert_index.shape or expert_index.shape[0] != n:
        raise ValueError(f"dispatch: x {tuple(x.shape)}, scores {tuple(scores.shape)} and "
                         f"expert_index {tuple(expert_index.shape)} must agree on (tokens, k)")
    k = expert_index.shape[1]
    expert = expert_index.flatten()                            # (n k,) token-major
    one_hot = F.one_hot(expert, n_experts)                     # (n k, E)
    slot = (one_hot.cumsum(0) * one_hot).sum(-1) - 1           # place in its expert's queue
    capacity = int(one_hot.sum(0).max()) if n else 0           # the longest queue

    inputs = repeat(x, "n d -> (n k) d", k=k) * rearrange(scores, "n k -> (n k) 1")
    queues = x.new_zeros(n_experts, capacity, d).index_put((expert, slot), inputs)
    hidden = F.silu(einsum(queues, w1, "e c d, e d f -> e c f")) * einsum(
        queues, w3, "e c d, e d f -> e c f")
    outputs = einsum(hidden, w2, "e c f, e f d -> e c d")
    return reduce(outputs[expert, slot], "(n k) d -> n d", "sum", k=k)


def load_balancing_loss(logits: torch.Tensor, expert_index: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss E * sum_e f_e P_e (1 when perfectly balanced)."""
    n_experts = logits.shape[-1]
    f = torch.bincount(expert_index.flatten(), minlength=n_experts).float() / expert_index.numel()
    p = torch.softmax(logits.float(), dim=-1).mean(0)
    return n_experts * (f * p).sum()


class Experts(nn.Module):
    """E SwiGLU experts stored as batched weights (Meta's w1 gate, w3 up, w2 down)."""

    def __init__(self, n_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, hidden_dim))    # gate
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden_dim, dim))    # down
        self.w3 = nn.Parameter(torch.empty(n_experts, dim, hidden_dim))    # up
        for w in (self.w1, self.w2, self.w3):
            nn.init.normal_(w, 0.0, 0.02)


class MoE(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, n_experts: int, k: int = 1):
        super().__init__()
        self.n_experts, self.k = n_experts, k
        self.router = nn.Linear(dim, n_experts, bias=False)               # W_r as (E, D)
        self.experts = Experts(n_experts, dim, hidden_dim)
        self.shared_expert = FeedForward(dim, hidden_dim)
        self.aux_loss: torch.Tensor | None = None          # set by every training forward
        self.tokens_per_expert: torch.Tensor | None = None  # (E,) counts, for plots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tokens = rearrange(x, "b t d -> (b t) d")
        logits = self.router(tokens)                                      # (n, E)
        scores, expert_index = route(logits, self.k)
        routed = dispatch(tokens, scores, expert_index,
                          self.experts.w1, self.experts.w2, self.experts.w3)
        out = self.shared_expert(tokens) + routed
        if self.training:
            self.aux_loss = load_balancing_loss(logits, expert_index)
        self.tokens_per_expert = torch.bincount(expert_index.flatten(),
                                                minlength=self.n_experts).detach()
        return rearrange(out, "(b t) d -> b t d", b=b)

