"""Model configuration: one dataclass that fixes every shape of a LLaMA.

LLaMA 1 (arXiv 2302.13971), Llama 2 (arXiv 2307.09288) and Llama 3 (arXiv 2407.21783)
share one architecture; the differences between the published models are just the
numbers in this file. The feed-forward width follows Meta's reference code:

    h = int(2 * 4 * dim / 3)                      # SwiGLU keeps the FLOPs of a 4*dim MLP
    h = int(ffn_dim_multiplier * h)               # Llama 2 70B and Llama 3 only
    F = multiple_of * ceil(h / multiple_of)       # round up for hardware-friendly shapes

Llama 4 (Meta's model card and blog post, April 2025) adds a second group of fields,
all off by default so that every dense config above keeps its meaning:

* a mixture of experts (``moe.py``): ``n_experts`` routed experts of width
  ``expert_dim`` plus one shared expert, in the layers where
  ``(layer + 1) % interleave_moe_layer_step == 0``; the other layers keep a dense FFN of
  width ``ffn_dim``;
* interleaved RoPE / NoPE layers ("iRoPE", ``attention.py``): every
  ``nope_layer_interval``-th layer has no position encoding and attends to the whole
  causal past; the RoPE layers attend only inside chunks of ``attention_chunk_size``
  tokens and normalise q and k (``use_qk_norm``); NoPE layers sharpen their queries at
  long range (``attn_temperature_tuning`` with ``floor_scale`` and ``attn_scale``).

The Llama 4 fields carry the names of Meta's reference ``ModelArgs`` (llama-models).
The RoPE variant is stated once: ``rope_scaling=None`` is plain RoPE, a ``RopeScaling``
is Llama 3.1's "llama3" scaling (Hugging Face's ``rope_type``).

A config that cannot describe a working model (dim not divisible by heads, heads not
divisible by KV heads, an unknown RoPE layout...) raises ``ValueError`` naming the field;
an old field name raises ``TypeError`` naming its replacement.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

ROPE_LAYOUTS = ("interleaved", "half")


_NO_OFF = object()


def positive_int(name: str, value, off=_NO_OFF):
    """``value`` if it is a whole number >= 1 (not a bool); else a ValueError naming it.

    ``off`` (0 or None) is one more accepted value, the one that switches a feature off.
    """
    if off is not _NO_OFF and type(value) is type(off) and value == off:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        alt = "" if off is _NO_OFF else f" or {off!r}"
        raise ValueError(f"{name} must be a positive integer{alt}, got {value!r}")
    return value


def finite_positive(name: str, value) -> float:
    """``value`` if it is a finite number > 0; else a ValueError naming it."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_token_ids(tokens: torch.Tensor, vocab_size: int, what: str = "token ids"):
    """Token ids must be integers in [0, vocab_size): a clear error names the offenders."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{what} must be a tensor of integers, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"{what} must be integers (torch.long), got dtype {tokens.dtype}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{what} must lie in [0, vocab_size={vocab_size}), found ids from "
                         f"{int(tokens.min())} to {int(tokens.max())}")


@dataclass
class RopeScaling:
    """Llama 3.1's frequency scaling ("llama3" rope type); see ``rope.py``."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 8192

    def __post_init__(self):
        for f in ("factor", "low_freq_factor", "high_freq_factor"):
            finite_positive(f"RopeScaling.{f}", getattr(self, f))
        if self.high_freq_factor < self.low_freq_factor:
            raise ValueError(f"RopeScaling.high_freq_factor ({self.high_freq_factor}) must be "
                             f">= low_freq_factor ({self.low_freq_factor})")
        positive_int("RopeScaling.original_max_seq_len", self.original_max_seq_len)


# Fields this library used to call otherwise: old name -> what to pass instead.
RENAMED = {
    "nope_interval": "nope_layer_interval",
    "moe_interleave": "interleave_moe_layer_step",
    "attention_chunk": "attention_chunk_size",
    "qk_norm": "use_qk_norm",
}
REMOVED = {"rope_type": "rope_type was removed: pass rope_scaling=RopeScaling(...) for Llama "
                        "3.1's 'llama3' scaling, or rope_scaling=None for plain RoPE"}


def _retired_field(name: str) -> str | None:
    """Why ``name`` is no longer a LlamaConfig field, or None if it never was one."""
    if name in RENAMED:
        return f"{name} was renamed {RENAMED[name]} (Meta's name)"
    return REMOVED.get(name)


@dataclass
class LlamaConfig:
    dim: int = 64                      # model width D
    n_layers: int = 2                  # number of decoder blocks L
    n_heads: int = 4                   # query heads H
    n_kv_heads: int | None = None      # key/value heads (None = n_heads, i.e. MHA)
    vocab_size: int = 256              # V
    hidden_dim: int | None = None      # FFN width F; None = derive from multiple_of
    multiple_of: int = 32
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None  # None: plain RoPE; else Llama 3.1's "llama3"
    rope_layout: str = "interleaved"   # which dims form a rotating pair (see rope.py)
    max_seq_len: int = 256             # context window the RoPE table is built for
    tie_embeddings: bool = False       # share tok_embeddings and output weights
    # Llama 4: mixture of experts (moe.py)
    n_experts: int = 0                 # routed experts per MoE layer E (0 = dense model)
    n_experts_per_tok: int = 1         # k: experts each token is sent to
    interleave_moe_layer_step: int = 1  # MoE in layers with (layer + 1) % this == 0
    expert_dim: int | None = None      # width of each expert and the shared one (None = ffn_dim)
    router_aux_coef: float = 0.0       # weight of the load-balancing loss while training
    # Llama 4: long-context attention (attention.py)
    nope_layer_interval: int = 0       # layers with (layer + 1) % this == 0 skip RoPE
    attention_chunk_size: int | None = None  # RoPE layers attend within chunks of this size
    use_qk_norm: bool = False          # weightless RMSNorm of q and k after RoPE (RoPE layers)
    attn_temperature_tuning: bool = False  # NoPE layers scale q up with the position
    floor_scale: float = 8192.0
    attn_scale: float = 0.1
    name: str = ""

    def __new__(cls, *args, **kwargs):
        # Runs before the generated __init__ sees the keywords: an old name gets a clear error.
        for name in kwargs:
            if (why := _retired_field(name)) is not None:
                raise TypeError(f"LlamaConfig: {why}")
        return super().__new__(cls)

    def __post_init__(self):
        if isinstance(self.rope_scaling, dict):
            fields = {f.name for f in dataclasses.fields(RopeScaling)}
            unknown = sorted(set(self.rope_scaling) - fields)
            if unknown:
                raise ValueError(f"LlamaConfig.rope_scaling: unknown field(s) {unknown}; "
                                 f"valid: {', '.join(sorted(fields))}")
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise TypeError(f"LlamaConfig.rope_scaling must be a RopeScaling, a dict or None, "
                            f"got {type(self.rope_scaling).__name__}")
        for f in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                  "max_seq_len"):
            positive_int(f"LlamaConfig.{f}", getattr(self, f))
        positive_int("LlamaConfig.hidden_dim", self.hidden_dim, off=None)
        if self.dim % self.n_heads:
            raise ValueError(f"LlamaConfig.dim ({self.dim}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"LlamaConfig.n_heads ({self.n_heads}) must be divisible by "
                             f"n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig.dim / n_heads = {self.head_dim} must be even for RoPE")
        finite_positive("LlamaConfig.norm_eps", self.norm_eps)
        finite_positive("LlamaConfig.rope_theta", self.rope_theta)
        if self.ffn_dim_multiplier is not None:
            finite_positive("LlamaConfig.ffn_dim_multiplier", self.ffn_dim_multiplier)
        if self.rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"LlamaConfig.rope_layout must be one of {ROPE_LAYOUTS}, "
                             f"got {self.rope_layout!r}")
        self._check_llama4()

    def _check_llama4(self):
        for f, off in (("n_experts", 0), ("n_experts_per_tok", _NO_OFF),
                       ("interleave_moe_layer_step", _NO_OFF), ("nope_layer_interval", 0),
                       ("expert_dim", None), ("attention_chunk_size", None)):
            positive_int(f"LlamaConfig.{f}", getattr(self, f), off)
        if self.n_experts and self.n_experts_per_tok > self.n_experts:
            raise ValueError(f"LlamaConfig.n_experts_per_tok ({self.n_experts_per_tok}) cannot "
                             f"exceed n_experts ({self.n_experts})")
        for f in ("use_qk_norm", "attn_temperature_tuning"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"LlamaConfig.{f} must be True or False, "
                                 f"got {getattr(self, f)!r}")
        if not self.floor_scale > 0:
            raise ValueError(f"LlamaConfig.floor_scale must be > 0, got {self.floor_scale!r}")
        for f in ("attn_scale", "router_aux_coef"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"LlamaConfig.{f} must be >= 0, got {getattr(self, f)!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """The SwiGLU width F (see the module docstring)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        h = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            h = int(self.ffn_dim_multiplier * h)
        return self.multiple_of * math.ceil(h / self.multiple_of)

    @property
    def moe_dim(self) -> int:
        """The width of each routed expert and of the shared expert."""
        return self.expert_dim if self.expert_dim is not None else self.ffn_dim

    def is_moe_layer(self, layer: int) -> bool:
        """Does block ``layer`` (0-based) hold a mixture of experts instead of a dense FFN?"""
        return self.n_experts > 0 and (layer + 1) % self.interleave_moe_layer_step == 0

    def uses_rope(self, layer: int) -> bool:
        """False for the NoPE layers of Llama 4's interleaved RoPE/NoPE stack."""
        return not (self.nope_layer_interval and (layer + 1) % self.nope_layer_interval == 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LlamaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        for name in d:
            if (why := _retired_field(name)) is not None:
                raise ValueError(f"LlamaConfig: {why}")
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LlamaConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> LlamaConfig:
        return dataclasses.replace(self, **changes)


# The published models (SPEC: Meta's params.json files and the papers' tables).
_L3 = dict(vocab_size=128256, norm_eps=1e-5, rope_theta=500000.0)
_L31 = dict(_L3, max_seq_len=131072,
            rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192))
_L32 = dict(_L3, max_seq_len=131072, tie_embeddings=True,
            rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192))


_L4 = dict(dim=5120, n_layers=48, n_heads=40, n_kv_heads=8, vocab_size=202048, norm_eps=1e-5,
           rope_theta=500000.0, hidden_dim=16384, expert_dim=8192,
           nope_layer_interval=4, attention_chunk_size=8192, attn_temperature_tuning=True)


def _cfg(name, **kw) -> LlamaConfig:
    return LlamaConfig(name=name, **kw)


class ModelConfigs(dict):
    """``CONFIGS[name]``; an unknown name is a KeyError that lists the known ones."""

    def __missing__(self, name):
        raise KeyError(f"unknown model {name!r}; known: {', '.join(self)}")


CONFIGS: dict[str, LlamaConfig] = ModelConfigs({c.name: c for c in [
    _cfg("llama1-7b", dim=4096, n_layers=32, n_heads=32, vocab_size=32000, multiple_of=256,
         norm_eps=1e-6, max_seq_len=2048),
    _cfg("llama1-13b", dim=5120, n_layers=40, n_heads=40, vocab_size=32000, multiple_of=256,
         norm_eps=1e-6, max_seq_len=2048),
    _cfg("llama1-33b", dim=6656, n_layers=60, n_heads=52, vocab_size=32000, multiple_of=256,
         norm_eps=1e-6, max_seq_len=2048),
    _cfg("llama1-65b", dim=8192, n_layers=80, n_heads=64, vocab_size=32000, multiple_of=256,
         norm_eps=1e-5, max_seq_len=2048),
    _cfg("llama2-7b", dim=4096, n_layers=32, n_heads=32, vocab_size=32000, multiple_of=256,
         max_seq_len=4096),
    _cfg("llama2-13b", dim=5120, n_layers=40, n_heads=40, vocab_size=32000, multiple_of=256,
         max_seq_len=4096),
    _cfg("llama2-70b", dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, vocab_size=32000,
         multiple_of=4096, ffn_dim_multiplier=1.3, max_seq_len=4096),
    _cfg("llama3-8b", dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024,
         ffn_dim_multiplier=1.3, max_seq_len=8192, **_L3),
    _cfg("llama3-70b", dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
         ffn_dim_multiplier=1.3, max_seq_len=8192, **_L3),
    _cfg("llama3.1-8b", dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024,
         ffn_dim_multiplier=1.3, **_L31),
    _cfg("llama3.1-70b", dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
         ffn_dim_multiplier=1.3, **_L31),
    _cfg("llama3.1-405b", dim=16384, n_layers=126, n_heads=128, n_kv_heads=8,
         multiple_of=4096, ffn_dim_multiplier=1.2, **_L31),
    _cfg("llama3.2-1b", dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, multiple_of=256,
         ffn_dim_multiplier=1.5, **_L32),
    _cfg("llama3.2-3b", dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, multiple_of=256,
         ffn_dim_multiplier=1.0, **_L32),
    _cfg("llama4-scout", n_experts=16, interleave_moe_layer_step=1, use_qk_norm=True,
         rope_scaling=RopeScaling(16.0, 1.0, 1.0, 8192), max_seq_len=10 * 2**20, **_L4),
    _cfg("llama4-maverick", n_experts=128, interleave_moe_layer_step=2, max_seq_len=2**20, **_L4),
    # Course sizes: small enough to train on a laptop CPU.
    _cfg("tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32,
         max_seq_len=256),
    _cfg("small", dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=512,
         multiple_of=32, max_seq_len=256),
    _cfg("base", dim=256, n_layers=6, n_heads=8, n_kv_heads=4, vocab_size=512,
         multiple_of=64, max_seq_len=512),
    # The full profile's size (minillama/profiles.py): 32.0M parameters, 12.5x the 2.56M
    # `stories` reference, on the course's 512-token BPE vocabulary.
    _cfg("full", dim=512, n_layers=10, n_heads=8, n_kv_heads=4, vocab_size=512,
         multiple_of=256, max_seq_len=256),
]})

# The dense LLaMA 1-3 models (chapter 2's table) and the Llama 4 mixtures of experts.
PUBLISHED = [n for n in CONFIGS if n.startswith("llama") and not CONFIGS[n].n_experts]
PUBLISHED_MOE = [n for n in CONFIGS if CONFIGS[n].n_experts]

__all__ = ["LlamaConfig", "RopeScaling", "CONFIGS", "PUBLISHED", "PUBLISHED_MOE"]
