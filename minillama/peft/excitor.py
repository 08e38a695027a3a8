"""LLaMA-Excitor: learnable prompts that change *which* tokens attention looks at.

LLaMA-Excitor (Zou et al., arXiv 2404.00913) leaves the values and the hidden states
alone and only adds to the attention scores. Each of the top L layers gets K learnable
prompts P (K x D), a low-rank "excitor query" Wq_E = W_up W_down (D -> r -> D) and a
gate g, zero at the start ("cold start"). From the layer input T (M tokens x D) it
reconstructs one extra key per token, as an attention over the prompts:

    K_extra = softmax(Wq_E(T) P^T / sqrt(D)) P                  (M x D)

and adds the similarity of the queries with these keys to the usual scores, split into
heads like K (no RoPE on the extra keys):

    S   = Q K^T / sqrt(d) + g * Q K_extra^T / sqrt(d)
    out = Wo softmax(S + M) V                                   (M: causal mask)

With g = 0 the scores, hence the model, are exactly the base model's. The gate here is
one value per head; the paper does not say whether its gate is per head or a scalar, nor
the inner softmax's scale (sqrt(D) here).

The multimodal variant appends image features f (n x D_v), projected by trainable
``Wk_E`` and ``Wv_E``, to the prompts as extra keys and values:
``K_extra = softmax(Wq_E(T) [P; f Wk_E^T]^T / sqrt(D)) [P; f Wv_E^T]``; the features of
a batch are given with ``set_visual(model, features)``.

LLaMA-7B, K = 30, r = 16, top 30 layers, per-head gates:
30 * (2 * 4096 * 16 + 30 * 4096) + 30 * 32 = 7,619,520 parameters.

The module plugs into ``Attention.score_bias`` (see ``minillama/attention.py``), which
calls it as ``score_bias(attn, x, q, start_pos, cache)`` and adds the returned
(b, h, t, s) term before the softmax. When decoding with a KV cache, the extra keys of
the tokens already seen are kept beside the model's keys, in ``cache.extra["excitor"]``:
they belong to that sequence, so two sequences with two caches decode independently.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .adapter_v1 import top_layers
from .spec import MethodSpec


def reconstructed_keys(t: torch.Tensor, P: torch.Tensor, W_down: torch.Tensor,
                       W_up: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """K_extra = softmax(W_up W_down t / sqrt(D) . P) P: one extra key per token.

    t: (b, M, D) tokens; P: (K, D) or (b, K, D) prompts used as keys (and as values unless
    ``values`` of the same shape is given); W_down: (r, D); W_up: (D, r). The softmax over
    the K prompts is taken in float32. Returns (b, M, D).
    """
    query = F.linear(F.linear(t, W_down), W_up)                    # (b, M, D)
    scores = query @ P.transpose(-2, -1) / math.sqrt(t.shape[-1])  # (b, M, K)
    weights = torch.softmax(scores.float(), dim=-1).type_as(t)
    return weights @ (P if values is None else values)


class Excitor(nn.Module):
    """One layer's prompts, excitor query and gate; plugs into ``attn.score_bias``."""

    def __init__(self, dim: int, n_heads: int, prompt_len: int, rank: int,
                 visual_dim: int | None = None, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.prompt = nn.Parameter(torch.empty(prompt_len, dim, **kw).normal_())
        self.down = nn.Parameter(torch.empty(rank, dim, **kw))          # W_down: D -> r
        self.up = nn.Parameter(torch.empty(dim, rank, **kw))            # W_up:   r -> D
        for w in (self.down, self.up):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))                 # as nn.Linear
        self.gate = nn.Parameter(torch.zeros(n_heads, **kw))
        self.wk_visual = self.wv_visual = None
        if visual_dim is not None:
            self.wk_visual = nn.Linear(visual_dim, dim, bias=False, **kw)   # Wk_E
            self.wv_visual = nn.Linear(visual_dim, dim, bias=False, **kw)   # Wv_E
        self.visual: torch.Tensor | None = None     # this batch's image features, or None

    def extra_keys(self, x: torch.Tensor) -> torch.Tensor:
        """K_extra (b, t, D) for the layer input x (b, t, D)."""
        if self.visual is None or self.wk_visual is None:
            return reconstructed_keys(x, self.prompt.to(x.dtype), self.down, self.up)
        f = self.visual.to(x.dtype)
        p = self.prompt.to(x.dtype).expand(f.shape[0], -1, -1)
        keys = torch.cat([p, self.wk_visual(f)], dim=1)                 # (b, K + n, D)
        values = torch.cat([p, self.wv_visual(f)], dim=1)
        return reconstructed_keys(x, keys, self.down, self.up, values)

    def forward(self, attn, x: torch.Tensor, q: torch.Tensor, start_pos: int,
                cache=None) -> torch.Tensor:
        keys = self.extra_keys(x)                                       # (b, t, D)
        if start_pos > 0:               # continuing a cached sequence: prepend earlier keys
            past = None if cache is None else cache.extra.get("excitor")
            if past is None or past.shape[1] < start_pos or past.shape[0] != x.shape[0]:
                raise ValueError(f"Excitor needs the extra keys of positions 0..{start_pos - 1}"
                                 f" (batch {x.shape[0]}) in the layer's KV cache; run the "
                                 f"sequence from start_pos=0 with the same cache first")
            keys = torch.cat([past[:, :start_pos].to(keys.dtype), keys], dim=1)
        if cache is not None:           # this sequence's extra keys (b, s, D), for later steps
            cache.extra["excitor"] = keys.detach()
        k = rearrange(keys, "b s (h d) -> b h s d", h=attn.n_heads)      # split like K
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])      # (b, h, t, s)
        return rearrange(self.gate, "h -> h 1 1").type_as(q) * scores

    def extra_repr(self) -> str:
        return f"prompt_len={self.prompt.shape[0]}, rank={self.down.shape[0]}"


def apply_excitor(model, prompt_len: int, layers: int, rank: int, visual_dim: int | None):
    """Put an ``Excitor`` into the attention scores of each of the top ``layers`` blocks."""
    cfg, w = model.cfg, model.tok_embeddings.weight
    for i in top_layers(model, layers):
        model.layers[i].attention.score_bias = Excitor(
            cfg.dim, cfg.n_heads, prompt_len, rank, visual_dim, w.device, w.dtype)
    return model


def set_visual(model, features: torch.Tensor | None):
    """Use ``features`` (b, n, visual_dim) as extra excitor keys/values; None: text only."""
    modules = [m for m in model.modules() if isinstance(m, Excitor) and m.wk_visual is not None]
    if not modules:
        raise ValueError("the model has no visual excitor; apply excitor with visual_dim=...")
    visual_dim = modules[0].wk_visual.in_features
    if features is not None and (features.dim() != 3 or features.shape[-1] != visual_dim):
        raise ValueError(f"visual features must have shape (batch, n, {visual_dim}), "
                         f"got {tuple(features.shape)}")
    for m in modules:
        m.visual = features


SPEC = MethodSpec(
    "excitor", dict(prompt_len=30, layers=30, rank=16, visual_dim=None), apply_excitor,
    cannot_merge="its extra scores come from a softmax over the prompts for every token, "
                 "which no change of the weights can express",
    set_visual=set_visual)
