"""LoRA: a frozen linear layer plus a trainable low-rank update.

LoRA (Hu et al., arXiv 2106.09685) keeps a pretrained weight W0 (d_out x d_in) frozen
and learns the change to it as a product of two thin matrices:

    h = W0 x + s * B A dropout(x),     A: (r, d_in),  B: (d_out, r),  s = alpha / r

A starts like an ``nn.Linear`` weight (Kaiming-uniform, a = sqrt(5)) and B starts at
zero, so the model begins exactly where the base model is and the first gradient step
moves only B. rsLoRA (Kalajdzievski, arXiv 2312.03732) uses ``s = alpha / sqrt(r)``,
which keeps the update's size steady as r grows. Dropout touches the LoRA input only;
the frozen path always sees the clean x.

Each adapted matrix costs ``r * (d_in + d_out)`` parameters: r = 8 on wq and wv of
LLaMA-7B is 32 * 2 * 8 * (4096 + 4096) = 4,194,304, about 0.06% of the model.

Because the update is linear, it can be folded into the weight for inference,
``W0 <- W0 + s B A`` (merge), and taken out again, ``W0 <- W0 - s B A`` (unmerge):
a merged model is as fast as the base model.

Switching the low-rank path off (``lora_disabled``) gives back the base model, h = W0 x,
without a second copy of it in memory: DPO uses that as its frozen reference.

QLoRA (``qlora.py``) is this file's LoRA around 4-bit base layers.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .spec import MethodSpec

TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def lora_scale(r: int, alpha: float, rslora: bool = False) -> float:
    """s = alpha / r, or alpha / sqrt(r) for rsLoRA."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def lora_forward(x: torch.Tensor, W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """h = x W0^T + s (x A^T) B^T: the frozen path plus the low-rank path (no dropout)."""
    return F.linear(x, W0) + scale * F.linear(F.linear(x, A), B)


def lora_merge(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """W0 + s B A: the one matrix that computes what ``lora_forward`` computes."""
    return W0 + scale * (B @ A)


class LoRALinear(nn.Module):
    """Wraps a frozen linear map x W0^T (``self.base``) with a trainable update ``s * B A``.

    The base is an ``nn.Linear`` or any module with ``in_features``, ``out_features``,
    ``device``, ``dtype`` and ``to_linear()``, such as QLoRA's 4-bit
    ``minillama.quant.Linear4bit`` (whose update cannot be merged in place: ``to_linear``).
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0,
                 rslora: bool = False):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.r, self.scale = r, lora_scale(r, alpha, rslora)
        if isinstance(base, nn.Linear):
            device, dtype = base.weight.device, base.weight.dtype
        else:                             # a quantised base: where and in what it computes
            device, dtype = base.device, base.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # a no-op on the meta device
        self.dropout = nn.Dropout(dropout)
        self.merged = False
        self.enabled = True               # False: the low-rank path is skipped (lora_disabled)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self.enabled:   # merged: the update lives in base.weight
            return self.base(x)                                         # h = W0 x
        # h = W0 x + s * B A dropout(x)   (A x first: r-wide, never a d_out x d_in matrix)
        return self.base(x) + self.scale * F.linear(F.linear(self.dropout(x), self.lora_A),
                                                    self.lora_B)

    def _check_mergeable(self):
        if not isinstance(self.base, nn.Linear):
            raise ValueError(f"cannot fold the update into a {type(self.base).__name__} in "
                             f"place; to_linear() gives a full-precision nn.Linear with it")

    @torch.no_grad()
    def merge(self):
        """W0 <- W0 + s B A (once; merging twice would add the update twice)."""
        self._check_mergeable()
        if not self.merged:
            w = self.base.weight
            w.copy_(lora_merge(w.float(), self.lora_A.float(), self.lora_B.float(),
                               self.scale).to(w.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """W0 <- W0 - s B A, undoing ``merge`` (exactly up to float rounding)."""
        self._check_mergeable()
        if self.merged:
            w = self.base.weight
            w.copy_(lora_merge(w.float(), self.lora_A.float(), self.lora_B.float(),
                               -self.scale).to(w.dtype))
            self.merged = False

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A new frozen ``nn.Linear`` with W0 + s B A (a quantised W0 dequantised first)."""
        if isinstance(self.base, nn.Linear):
            linear = copy.deepcopy(self.base)
        else:
            linear = self.base.to_linear()
        if not self.merged:
            w = linear.weight
            w.copy_(lora_merge(w.float(), self.lora_A.float(), self.lora_B.float(),
                               self.scale).to(w.dtype))
        return linear.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"r={self.r}, scale={self.scale:g}, merged={self.merged}"


def block_linears(model, names=TARGETS):
    """(parent module, attribute name, full name) for each linear called ``names`` in the blocks.

    Attention always has wq/wk/wv/wo; w1/w2/w3 are found in dense feed-forward blocks
    (a Llama 4 mixture-of-experts block keeps its batched experts as they are).
    """
    for i, layer in enumerate(model.layers):
        for part_name in ("attention", "feed_forward"):
            part = getattr(layer, part_name)
            for name in names:
                if isinstance(getattr(part, name, None), nn.Module):
                    yield part, name, f"layers.{i}.{part_name}.{name}"


def check_lora(model, method: str, o: dict) -> dict:
    """alpha > 0, dropout in [0, 1), known targets (put in the order of ``TARGETS``)."""
    if not isinstance(o["alpha"], numbers.Real) or not o["alpha"] > 0:
        raise ValueError(f"{method}: alpha must be a number > 0, got {o['alpha']!r}")
    if not isinstance(o["dropout"], numbers.Real) or not 0 <= o["dropout"] < 1:
        raise ValueError(f"{method}: dropout must be in [0, 1), got {o['dropout']!r}")
    targets = (o["targets"],) if isinstance(o["targets"], str) else tuple(o["targets"])
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"{method}: unknown target(s) {bad or '(none given)'}; valid: "
                         f"{', '.join(TARGETS)}")
    o["targets"] = [t for t in TARGETS if t in targets]        # canonical order
    o["alpha"], o["dropout"], o["rslora"] = float(o["alpha"]), float(o["dropout"]), \
        bool(o["rslora"])
    return o


def warn_full_rank(model, method: str, o: dict) -> dict:
    """A warning when r exceeds the rank B A can have on the smallest targeted matrix."""
    full_rank = min(min(getattr(parent, name).weight.shape)
                    for parent, name, _ in block_linears(model, o["targets"]))
    if o["r"] > full_rank:                  # stacklevel: the caller of peft.apply
        warnings.warn(f"{method}: r={o['r']} exceeds the smallest targeted layer's full "
                      f"rank min(in, out) = {full_rank}: B A cannot have rank above "
                      f"{full_rank}, so the extra parameters add nothing", stacklevel=4)
    return o


def apply_lora(model, r: int, alpha: float, dropout: float, targets, rslora: bool):
    """Replace every targeted linear of every block with a ``LoRALinear`` around it."""
    for parent, name, _ in block_linears(model, targets):
        setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha, dropout, rslora))
    return model


def lora_modules(model) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """W0 <- W0 + s B A in every LoRA module (exact; ``unmerge_lora`` undoes it)."""
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model):
    for m in lora_modules(model):
        m.unmerge()


@contextmanager
def lora_disabled(model):
    """Inside the block every LoRA path is off, so ``model`` computes the base model's W0 x.

    Nothing is copied or changed: each ``LoRALinear`` skips its ``s * B A`` term until the
    block ends (also when it ends with an exception). A merged update lives inside W0 and
    cannot be skipped, so a merged model is refused.
    """
    modules = lora_modules(model)
    if any(m.merged for m in modules):
        raise ValueError("the LoRA update is merged into the weights; call "
                         "minillama.peft.unmerge(model) before disabling it")
    before = [m.enabled for m in modules]
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m, flag in zip(modules, before):
            m.enabled = flag


SPEC = MethodSpec(
    "lora", dict(r=8, alpha=16.0, dropout=0.0, targets=("wq", "wv"), rslora=False),
    apply_lora, checks=(check_lora, warn_full_rank), merge=merge_lora, unmerge=unmerge_lora,
    disable=lora_disabled)
