"""Causal self-attention with grouped-query heads, a KV cache, and PEFT plug-in points.

Scaled dot-product attention (Vaswani et al., arXiv 1706.03762), per head:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V,    M[i, j] = -inf for j > i

Grouped-query attention (GQA, Ainslie et al., arXiv 2305.13245) lets groups of
``n_heads / n_kv_heads`` query heads share one key/value head. It shrinks the KV cache
by that factor (Llama 2 70B and every Llama 3 use 8 KV heads). ``n_kv_heads == n_heads``
is ordinary multi-head attention (MHA), ``n_kv_heads == 1`` is multi-query (MQA).

During generation the keys and values of past tokens never change, so they are kept in
a ``KVCache`` and each step only computes the new token's q, k, v.

The two places parameter-efficient methods plug in (see ``minillama/peft``). Both are
called the same way, ``plugin(attn, x, q, start_pos, cache)``: the attention itself,
its normed input, its (rotated) queries, the position of ``x``'s first token and the
layer's ``KVCache`` (None without one).

* ``self.prompt``: a module returning extra keys/values with their own gated softmax
  (LLaMA-Adapter V1/V2, arXiv 2303.16199):
  ``out = softmax(S) V + gate * softmax(Q Kp^T / sqrt(d)) Vp``.
* ``self.score_bias``: a module returning an additive term for the scores before the
  softmax (LLaMA-Excitor, arXiv 2404.00913): ``S = Q K^T / sqrt(d) + extra``. Whatever
  it must remember about the tokens already seen belongs to that sequence's cache
  (``cache.extra``), not to the module, so several sequences with their own caches can
  be decoded in turn.

Both are None in the base model, which then takes the fused ``F.scaled_dot_product_attention``
fast path; ``attend_explicit`` is the same arithmetic written out, for teaching and for
the methods that need the scores.

Llama 4's long-context changes ("iRoPE", Meta's Llama 4 model card) are per-layer
switches, all off in the dense models (see ``config.py``):

* **NoPE layers** (every ``nope_layer_interval``-th layer) skip RoPE (Kazemnejad et al.,
  arXiv 2305.19466: causal attention can infer position without it) and see the whole
  causal past. Their queries are scaled up slowly with the absolute position p,
  ``q <- q * (1 + attn_scale * log(floor((p + 1) / floor_scale) + 1))``, which keeps the
  softmax from flattening over millions of keys (Nakanishi, arXiv 2501.19399).
* **RoPE layers** attend only inside chunks: query i sees key j iff
  ``i // chunk == j // chunk and j <= i`` (``chunk = attention_chunk_size``), and with
  ``use_qk_norm`` their q and k are
  RMS-normalised (no gain) after the rotation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .config import LlamaConfig
from .norm import rms_norm
from .rope import apply_rotary_emb


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(b, kv_heads, t, d) -> (b, kv_heads * n_rep, t, d): each KV head serves n_rep queries."""
    if n_rep == 1:
        return x
    return repeat(x, "b h t d -> b (h r) t d", r=n_rep)


def causal_mask(t: int, s: int, start_pos: int = 0, device=None,
                chunk: int | None = None) -> torch.Tensor:
    """Boolean (t, s) mask, True where query i (at position start_pos + i) may see key j.

    With ``chunk`` (Llama 4's RoPE layers) a query also needs its key in the same chunk.
    """
    i = torch.arange(t, device=device)[:, None] + start_pos
    j = torch.arange(s, device=device)[None, :]
    if chunk is None:
        return j <= i
    return (j <= i) & (i // chunk == j // chunk)


def attention_temperature(positions: torch.Tensor, floor_scale: float,
                          attn_scale: float) -> torch.Tensor:
    """Llama 4's query scale on NoPE layers: 1 + attn_scale * log(floor((p+1)/floor_scale) + 1)."""
    return torch.log1p(torch.floor((positions.float() + 1.0) / floor_scale)) * attn_scale + 1.0


def attend_explicit(q, k, v, mask=None, score_bias=None):
    """softmax(q k^T / sqrt(d) + bias, masked) v, written out. Shapes (b, h, t|s, d)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])     # S = Q K^T / sqrt(d)
    if score_bias is not None:
        scores = scores + score_bias                               # S + extra (Excitor)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))          # S + M, M = -inf off the mask
    return torch.softmax(scores.float(), dim=-1).type_as(q) @ v   # softmax(S) V


class KVCache(nn.Module):
    """
    Keys and values of one attention layer for the positions seen so far.

    Args:
        batch (int): Number of sequences decoded together.
        n_kv_heads (int): Key/value heads of the layer.
        max_seq_len (int): Positions the cache can hold.
        head_dim (int): Width of one head.
        dtype (torch.dtype, optional): Dtype of the stored keys and values.
        device (torch.device, optional): Where they live.

    Attributes:
        k (torch.Tensor): Keys, (batch, n_kv_heads, max_seq_len, head_dim), pre-allocated.
        v (torch.Tensor): Values, same shape.
        extra (dict[str, torch.Tensor]): What a PEFT plug-in needs to continue this
            sequence (the Excitor's extra keys of the cached tokens), keyed by its name.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int,
                 dtype=torch.float32, device=None):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device),
                             persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device),
                             persistent=False)
        self.extra: dict[str, torch.Tensor] = {}

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new keys/values at ``start_pos`` and return all of them so far."""
        end = start_pos + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; "
                             f"cannot write up to position {end}")
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(f"KV cache was made for batch {self.k.shape[0]}, got {k.shape[0]}")
        self.k.narrow(2, start_pos, k.shape[2]).copy_(k)       # k[:, :, start_pos:end] = k
        self.v.narrow(2, start_pos, v.shape[2]).copy_(v)
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)


class Attention(nn.Module):
    """
    Causal grouped-query self-attention of one block, with Llama 4's per-layer switches.

    Args:
        cfg (LlamaConfig): Model configuration.
        layer_id (int): Index of the block (0-based); decides RoPE or NoPE in Llama 4.

    Attributes:
        n_heads (int): Query heads.
        n_kv_heads (int): Key/value heads.
        head_dim (int): Width of one head.
        n_rep (int): Query heads sharing each key/value head.
        use_rope (bool): False in Llama 4's NoPE layers.
        chunk (int | None): Chunked-attention length (Llama 4 RoPE layers), else None.
        qk_norm_eps (float | None): Epsilon of the QK-norm, None when it is off.
        temperature (tuple | None): (floor_scale, attn_scale) of the NoPE query scaling.
        wq, wk, wv, wo (nn.Linear): Query, key, value and output projections.
        use_sdpa (bool): Take the fused kernel when no plug-in needs the scores.
        prompt, score_bias (nn.Module | None): The PEFT plug-in points (module docstring).
    """

    def __init__(self, cfg: LlamaConfig, layer_id: int = 0):
        super().__init__()
        self.layer_id = layer_id
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.n_rep = cfg.n_heads // cfg.n_kv_heads
        self.rope_layout = cfg.rope_layout
        # Llama 4 switches (all off in LLaMA 1-3): RoPE or NoPE, chunks, QK-norm, temperature
        self.use_rope = cfg.uses_rope(layer_id)
        self.chunk = cfg.attention_chunk_size if self.use_rope else None
        self.qk_norm_eps = cfg.norm_eps if cfg.use_qk_norm and self.use_rope else None
        self.temperature = None
        if cfg.attn_temperature_tuning and not self.use_rope:
            self.temperature = (cfg.floor_scale, cfg.attn_scale)
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.use_sdpa = True          # False: always take the explicit path
        self.prompt: nn.Module | None = None       # plug-in point 1 (Adapter V1/V2)
        self.score_bias: nn.Module | None = None   # plug-in point 2 (Excitor)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, start_pos: int = 0,
                cache: KVCache | None = None) -> torch.Tensor:
        t = x.shape[1]
        q = rearrange(self.wq(x), "b t (h d) -> b h t d", h=self.n_heads)     # Q = x Wq^T
        k = rearrange(self.wk(x), "b t (h d) -> b h t d", h=self.n_kv_heads)  # K = x Wk^T
        v = rearrange(self.wv(x), "b t (h d) -> b h t d", h=self.n_kv_heads)  # V = x Wv^T
        if self.use_rope:
            q = apply_rotary_emb(q, freqs_cis, self.rope_layout)               # q <- R(p) q
            k = apply_rotary_emb(k, freqs_cis, self.rope_layout)               # k <- R(p) k
        if self.qk_norm_eps is not None:
            # q <- q / rms(q), k <- k / rms(k)  (no gain)
            q, k = rms_norm(q, self.qk_norm_eps), rms_norm(k, self.qk_norm_eps)
        if self.temperature is not None:
            positions = torch.arange(start_pos, start_pos + t, device=x.device)
            # q <- q * (1 + attn_scale * log(floor((p + 1) / floor_scale) + 1))
            q = (q * attention_temperature(positions, *self.temperature)[:, None]).type_as(q)
        if cache is not None:
            k, v = cache.update(start_pos, k, v)          # K, V of positions 0 .. start_pos + t
        s = k.shape[2]

        bias = None
        if self.score_bias is not None:
            bias = self.score_bias(self, x, q, start_pos, cache)                # extra
        mask = lambda: causal_mask(t, s, start_pos, x.device, self.chunk)
        if self.use_sdpa and bias is None:
            # The fused kernel shares each KV head with its query group itself
            # (enable_gqa), so the repeated keys and values are never materialised.
            gqa = self.n_rep > 1
            # softmax(Q K^T / sqrt(d) + M) V
            if self.chunk is None and start_pos == 0 and t == s:     # plain causal prefix
                out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=gqa)
            elif self.chunk is None and t == 1:   # one new token sees every cached key
                out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            else:                                 # a chunk of new tokens, or chunked layers
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask(), enable_gqa=gqa)
        else:
            k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
            out = attend_explicit(q, k, v, mask(), bias)  # softmax(Q K^T / sqrt(d) + extra + M) V
        if self.prompt is not None:
            # out + gate * softmax(Q Kp^T / sqrt(d)) Vp  (Adapter V1/V2)
            out = out + self.prompt(self, x, q, start_pos, cache)
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))            # concat heads, Wo
