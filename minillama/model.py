"""The LLaMA decoder: embeddings, a stack of pre-norm blocks, a final norm and a head.

LLaMA (Touvron et al., arXiv 2302.13971) is a GPT-style decoder-only transformer with
three changes, all kept by Llama 2 and 3: pre-normalisation with RMSNorm, the SwiGLU
feed-forward network, and rotary position embeddings. Each block computes

    h   = x + Attention(RMSNorm(x))
    out = h + FFN(RMSNorm(h))

and the model maps token ids -> embeddings -> L blocks -> RMSNorm -> logits over the
vocabulary. Llama 3.2 1B/3B share the embedding matrix with the output head ("tied").
Llama 4 swaps the FFN of some blocks for a mixture of experts (``moe.py``) and switches
attention per layer (``attention.py``); the block itself does not change.

Names follow Meta's reference ``model.py`` so that its checkpoints load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, KVCache
from .config import CONFIGS, LlamaConfig, check_token_ids
from .feedforward import FeedForward
from .generate import generate
from .moe import MoE
from .norm import RMSNorm
from .rope import precompute_freqs_cis


class Block(nn.Module):
    """
    One pre-norm decoder block: attention then a feed-forward network, each residual.

    Args:
        cfg (LlamaConfig): Model configuration.
        layer_id (int): Index of the block (0-based).

    Attributes:
        layer_id (int): As above.
        attention_norm (RMSNorm): Normalises the attention input.
        attention (Attention): Causal self-attention.
        ffn_norm (RMSNorm): Normalises the feed-forward input.
        is_moe (bool): Whether ``feed_forward`` is a mixture of experts (Llama 4).
        feed_forward (FeedForward | MoE): Dense SwiGLU or mixture of experts.
    """

    def __init__(self, cfg: LlamaConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.is_moe = cfg.is_moe_layer(layer_id)
        if self.is_moe:
            self.feed_forward = MoE(cfg.dim, cfg.moe_dim, cfg.n_experts, cfg.n_experts_per_tok)
        else:
            self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x, freqs_cis, start_pos=0, cache=None):
        # h = x + Attention(RMSNorm(x));  out = h + FFN(RMSNorm(h))
        h = x + self.attention(self.attention_norm(x), freqs_cis, start_pos, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    """
    The LLaMA decoder: token embeddings, ``n_layers`` blocks, a final norm, the head.

    Args:
        cfg (LlamaConfig): Model configuration.

    Attributes:
        cfg (LlamaConfig): As above.
        tok_embeddings (nn.Embedding): Token embeddings, (vocab_size, dim).
        layers (nn.ModuleList): The ``Block``s.
        norm (RMSNorm): Final normalisation.
        output (nn.Linear): Output head, dim -> vocab_size (shares the embedding
            weight when ``cfg.tie_embeddings``).
        freqs_cis (torch.Tensor): The RoPE table (``rope_table``); a plain attribute.
    """

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # A plain attribute, not a buffer: .to(bfloat16) must never touch complex numbers.
        self.freqs_cis = self.rope_table()
        if self.tok_embeddings.weight.device.type != "meta":
            self.init_weights()

    def rope_table(self) -> torch.Tensor:
        """The RoPE table e^{i p f_i} for p < max_seq_len (``rope.py``): complex (T, d/2).

        Built on the current default device (a ``meta`` model gets a ``meta`` table, which
        ``checkpoints.io.build_model`` replaces by calling this again on the CPU).
        """
        c = self.cfg
        return precompute_freqs_cis(c.head_dim, c.max_seq_len, c.rope_theta, c.rope_scaling)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02):
        """GPT-2 style init: N(0, 0.02), residual outputs scaled by 1/sqrt(2L)."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight", "experts.w2")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def make_cache(self, batch: int, max_seq_len: int | None = None) -> list[KVCache]:
        """One empty KV cache per layer, on the model's device and dtype."""
        c, w = self.cfg, self.tok_embeddings.weight
        return [KVCache(batch, c.n_kv_heads, max_seq_len or c.max_seq_len, c.head_dim,
                        w.dtype, w.device) for _ in range(c.n_layers)]

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None,
                start_pos: int = 0, cache: list[KVCache] | None = None,
                last_only: bool = False):
        """Logits (b, t, V); with ``targets`` (b, t) returns ``(logits, loss)``.

        Targets equal to -100 are ignored by the loss (used for prompt masking).
        ``start_pos``/``cache`` continue a sequence whose earlier keys are cached;
        ``last_only`` computes the head for the final position only (generation).
        """
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens)
            raise ValueError(f"tokens must be a tensor of shape (batch, seq), got {shape}")
        if tokens.is_floating_point():
            raise TypeError(f"tokens must be integer ids (torch.long), got dtype {tokens.dtype}")
        t = tokens.shape[1]
        if start_pos + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start_pos + t} positions exceeds "
                             f"max_seq_len={self.cfg.max_seq_len}")
        if self.freqs_cis.device != tokens.device:
            self.freqs_cis = self.freqs_cis.to(tokens.device)
        freqs_cis = self.freqs_cis[start_pos:start_pos + t]

        try:
            x = self.tok_embeddings(tokens)
        except IndexError:      # checked only on failure: no cost on the hot path
            check_token_ids(tokens, self.cfg.vocab_size, "tokens")
            raise
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs_cis, start_pos, None if cache is None else cache[i])
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        logits = self.output(x)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        if self.training and self.cfg.router_aux_coef:     # MoE load balancing (moe.py)
            loss = loss + self.cfg.router_aux_coef * sum(
                layer.feed_forward.aux_loss for layer in self.layers if layer.is_moe)
        return logits, loss

    def generate(self, tokens, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, **kwargs):
        """New tokens only, as a LongTensor; see ``minillama.generate.generate``."""
        return generate(self, tokens, max_new_tokens, temperature=temperature,
                        top_k=top_k, top_p=top_p, **kwargs)


def _as_config(name_or_config) -> LlamaConfig:
    if isinstance(name_or_config, LlamaConfig):
        return name_or_config
    if name_or_config not in CONFIGS:
        raise ValueError(f"unknown model {name_or_config!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name_or_config]


def count_parameters(name_or_config, active: bool = False) -> int:
    """Exact parameter count, from a model built on the ``meta`` device (no memory).

    Shared tensors (a tied head) count once. ``active`` asks for the parameters one token
    uses: all of them in a dense model; in a mixture of experts, only k of the E routed
    experts of each MoE layer (the router and the shared expert always run).
    """
    cfg = _as_config(name_or_config)
    with torch.device("meta"):
        model = Llama(cfg)
    total = sum(p.numel() for p in model.parameters())
    if active:
        for layer in model.layers:
            if layer.is_moe:
                routed = sum(p.numel() for p in layer.feed_forward.experts.parameters())
                total -= routed // cfg.n_experts * (cfg.n_experts - cfg.n_experts_per_tok)
    return total


def kv_cache_bytes_per_token(name_or_config, bytes_per_value: int = 2) -> int:
    """Bytes of KV cache one token occupies: 2 (k and v) * L * kv_heads * head_dim * bytes."""
    c = _as_config(name_or_config)
    return 2 * c.n_layers * c.n_kv_heads * c.head_dim * bytes_per_value
