"""LLaMA-Adapter V1: learnable prompts with their own zero-initialised, gated attention.

LLaMA-Adapter (Zhang et al., arXiv 2303.16199) freezes LLaMA and gives each of the top
L layers K learnable prompt vectors P (K x D). The prompts are not normed and not
rotated: they pass through the layer's frozen wk and wv and become K extra keys and
values that every token may look at (no causal mask: they sit "before" the text).
Each head attends to them with a softmax of its own, and a gate g, initialised to
zero, decides how much of the result enters the layer:

    out = softmax(Q K^T / sqrt(d) + M) V  +  tanh(g) * softmax(Q Kp^T / sqrt(d)) Vp
    Kp = P Wk^T,  Vp = P Wv^T             (split into heads like K and V)

With g = 0 the model starts as the base model, and the prompts are learned without
disturbing what it already knows (the paper: 84.04 vs 40.77 on ScienceQA for zero vs
random gate init). The official code uses one gate per head with tanh (the default
here, ``gate="tanh"``); Hugging Face peft's ``AdaptionPrompt`` uses one scalar gate
without tanh (``gate="scalar"``, for parity with it).

LLaMA-7B with K = 10 prompts in the top 30 layers: 30 * 10 * 4096 prompt values plus
30 * 32 gates = 1,229,760 parameters.

The module plugs into ``Attention.prompt`` (see ``minillama/attention.py``): the
attention calls ``prompt(attn, x, q, start_pos, cache)`` with its rotated queries q and
adds the result to its output before ``wo``. The prompts never enter the KV cache; every
decoding step recomputes their keys from the frozen weights, so generation with a cache is
unchanged.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ..attention import repeat_kv
from .spec import MethodSpec

GATES = ("tanh", "scalar")


def gated_prompt_attention(q: torch.Tensor, k_prompt: torch.Tensor, v_prompt: torch.Tensor,
                           gate: torch.Tensor) -> torch.Tensor:
    """gate * softmax(q k_prompt^T / sqrt(d)) v_prompt, every query seeing every prompt.

    q: (b, h, t, d); k_prompt, v_prompt: (b or 1, h, K, d); gate: one factor per head (h,)
    or a single one (1,), already activated (tanh applied where the mode asks for it).
    The softmax is taken in float32. Returns (b, h, t, d).
    """
    scores = q @ k_prompt.transpose(-2, -1) / math.sqrt(q.shape[-1])      # (b, h, t, K)
    weights = torch.softmax(scores.float(), dim=-1).type_as(q)
    return rearrange(gate, "h -> h 1 1").type_as(q) * (weights @ v_prompt)


class PromptAttention(nn.Module):
    """K learnable prompts of one layer and their gate; plugs into ``attn.prompt``."""

    def __init__(self, dim: int, n_heads: int, prompt_len: int, gate: str = "tanh",
                 device=None, dtype=None):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; valid: {', '.join(GATES)}")
        self.gate_mode = gate
        # N(0, 1), like the official nn.Embedding; on the meta device only the shape exists
        self.prompt = nn.Parameter(torch.empty(prompt_len, dim, device=device,
                                               dtype=dtype).normal_())
        self.gate = nn.Parameter(torch.zeros(n_heads if gate == "tanh" else 1,
                                             device=device, dtype=dtype))

    def gate_value(self) -> torch.Tensor:
        return torch.tanh(self.gate) if self.gate_mode == "tanh" else self.gate

    def prompt_tokens(self) -> torch.Tensor:
        """The prompt vectors as a batch: (1, K, D) here; V2's visual prompts vary by batch."""
        return self.prompt[None]

    def forward(self, attn, x: torch.Tensor, q: torch.Tensor, start_pos: int = 0,
                cache=None) -> torch.Tensor:
        p = self.prompt_tokens().to(x.dtype)
        k = rearrange(attn.wk(p), "b k (h d) -> b h k d", h=attn.n_kv_heads)   # no RoPE
        v = rearrange(attn.wv(p), "b k (h d) -> b h k d", h=attn.n_kv_heads)
        k, v = repeat_kv(k, attn.n_rep), repeat_kv(v, attn.n_rep)
        return gated_prompt_attention(q, k, v, self.gate_value())

    def extra_repr(self) -> str:
        return f"prompt_len={self.prompt.shape[0]}, gate={self.gate_mode!r}"


def top_layers(model, layers: int) -> range:
    """The indices of the top ``layers`` blocks (the last ones, nearest the output)."""
    n = len(model.layers)
    return range(n - layers, n)


def check_gate(model, method: str, o: dict) -> dict:
    if o["gate"] not in GATES:
        raise ValueError(f"{method}: unknown gate {o['gate']!r}; valid: {', '.join(GATES)}")
    return o


def apply_adapter_v1(model, prompt_len: int, layers: int, gate: str):
    """Put a ``PromptAttention`` into the attention of each of the top ``layers`` blocks."""
    w = model.tok_embeddings.weight
    for i in top_layers(model, layers):
        model.layers[i].attention.prompt = PromptAttention(
            model.cfg.dim, model.cfg.n_heads, prompt_len, gate, w.device, w.dtype)
    return model


SPEC = MethodSpec(
    "adapter_v1", dict(prompt_len=10, layers=30, gate="tanh"), apply_adapter_v1,
    checks=(check_gate,),
    cannot_merge="its prompts add a second, gated softmax over extra keys and values that "
                 "depends on every query, which no change of the weights can express")
