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
    top, expert_index = torch.topk(logits, k, dim=-1)                  # S = top-k of l
    return torch.sigmoid(top.float()).type_as(logits), expert_index    # s_e = sigmoid(l_e)


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
    capacity = int(one_hot.sum(0).max()) if n else 0           # the longest queue C

    inputs = repeat(x, "n d -> (n k) d", k=k) * rearrange(scores, "n k -> (n k) 1")  # s_e * x
    queues = x.new_zeros(n_experts, capacity, d).index_put((expert, slot), inputs)  # (E, C, D)
    hidden = F.silu(einsum(queues, w1, "e c d, e d f -> e c f")) * einsum(
        queues, w3, "e c d, e d f -> e c f")                   # SiLU(W1_e h) * (W3_e h)
    outputs = einsum(hidden, w2, "e c f, e f d -> e c d")      # FFN_e(s_e * x)
    return reduce(outputs[expert, slot], "(n k) d -> n d", "sum", k=k)  # sum over e in S


def load_balancing_loss(logits: torch.Tensor, expert_index: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss E * sum_e f_e P_e (1 when perfectly balanced)."""
    n_experts = logits.shape[-1]
    f = torch.bincount(expert_index.flatten(), minlength=n_experts).float() / expert_index.numel()
    p = torch.softmax(logits.float(), dim=-1).mean(0)                   # P_e
    return n_experts * (f * p).sum()                                    # E * sum_e f_e P_e


class Experts(nn.Module):
    """
    E routed SwiGLU experts stored as batched weights (run by ``dispatch``).

    Args:
        n_experts (int): Number of experts E.
        dim (int): Model width D.
        hidden_dim (int): Width F of each expert.

    Attributes:
        w1 (nn.Parameter): Gate weights, (E, D, F).
        w2 (nn.Parameter): Down weights, (E, F, D).
        w3 (nn.Parameter): Up weights, (E, D, F).
    """

    def __init__(self, n_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, hidden_dim))    # gate
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden_dim, dim))    # down
        self.w3 = nn.Parameter(torch.empty(n_experts, dim, hidden_dim))    # up
        for w in (self.w1, self.w2, self.w3):
            nn.init.normal_(w, 0.0, 0.02)


class MoE(nn.Module):
    """
    Llama 4's mixture of experts: a sigmoid top-k router, E routed experts, one shared.

    Args:
        dim (int): Model width D.
        hidden_dim (int): Width F of every expert, shared or routed.
        n_experts (int): Number of routed experts E.
        k (int): Experts each token is sent to.
        count_tokens (bool): Record ``tokens_per_expert`` at every forward (for plots).

    Attributes:
        router (nn.Linear): The router W_r, D -> E, no bias.
        experts (Experts): The routed experts.
        shared_expert (FeedForward): The expert every token goes through.
        aux_loss (torch.Tensor | None): Load-balancing loss of the last training forward.
        count_tokens (bool): As above; may be switched on after construction.
        tokens_per_expert (torch.Tensor | None): (E,) assignments per expert in the last
            forward, kept only while ``count_tokens`` is on.
    """

    def __init__(self, dim: int, hidden_dim: int, n_experts: int, k: int = 1,
                 count_tokens: bool = False):
        super().__init__()
        self.n_experts, self.k = n_experts, k
        self.router = nn.Linear(dim, n_experts, bias=False)               # W_r as (E, D)
        self.experts = Experts(n_experts, dim, hidden_dim)
        self.shared_expert = FeedForward(dim, hidden_dim)
        self.aux_loss: torch.Tensor | None = None          # set by every training forward
        self.count_tokens = count_tokens
        self.tokens_per_expert: torch.Tensor | None = None  # (E,) counts, for plots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tokens = rearrange(x, "b t d -> (b t) d")
        logits = self.router(tokens)                                      # l = x W_r  (n, E)
        scores, expert_index = route(logits, self.k)                      # s_e for e in S
        routed = dispatch(tokens, scores, expert_index,                   # sum FFN_e(s_e * x)
                          self.experts.w1, self.experts.w2, self.experts.w3)
        out = self.shared_expert(tokens) + routed                         # + FFN_shared(x)
        if self.training:
            self.aux_loss = load_balancing_loss(logits, expert_index)     # E * sum_e f_e P_e
        if self.count_tokens:
            self.tokens_per_expert = torch.bincount(expert_index.flatten(),
                                                    minlength=self.n_experts).detach()
        return rearrange(out, "(b t) d -> b t d", b=b)

