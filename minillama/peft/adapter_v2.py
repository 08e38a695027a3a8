"""LLaMA-Adapter V2: bias and scale on every linear, open norms, prompts, early visual fusion.

LLaMA-Adapter V2 (Gao et al., arXiv 2304.15010) unlocks more of the frozen model than
V1 while staying tiny:

* **Bias and scale on every linear layer.** The paper writes ``y = s * (W x + b)``; the
  official code (its 65B chat model) uses ``y = W (x * s) + b``, which we follow: the
  scale s has one entry per *input* feature, the bias b one per *output* feature, and
  b = 0, s = 1 at the start, so the model starts as the base model. Both fold into the
  weight exactly, ``W' = W diag(s)`` with bias b (``merge``).
* **All norms trainable** (the two RMSNorm gains of each block and the final one).
* **Adaption prompts** as in V1 (``adapter_v1.PromptAttention``: K prompts, tanh of a
  zero-initialised per-head gate) in the top ``layers`` blocks.
* **Early fusion of visual knowledge.** Image features from a frozen encoder go through
  a trainable projection and are added to the prompts of the *first* ``visual_layers``
  blocks only, while the static prompts live in the late blocks, so the image and the
  instruction knowledge do not fight over the same parameters.
* **Joint training with disjoint parameter groups.** Image-text batches train only the
  visual projection and the early prompts and gates; text-only (instruction) batches
  train the late prompts and gates, the norms and the biases and scales
  (``joint_parameter_groups``).

Which linears and norms: the seven of every block (wq, wk, wv, wo, w1, w2, w3), not the
embedding or the output head; the norms are the block's two plus the final one. For
LLaMA-7B (D = 4096, F = 11008, 32 layers) that is per block
4 * (4096 + 4096) + 3 * (4096 + 11008) + 2 * 4096 = 86,272, times 32, plus the final
norm's 4096: 2,764,800 (0.041% of 6.7B, the paper's figure). With the V1 prompts and
gates (1,229,760) the total is 3,994,560.

Feeding images: ``set_visual(model, features)`` stores the features of the next batch,
shape (b, prompt_len, visual_dim) (pool or select the encoder's tokens down to
prompt_len; the official model gets them from learned queries), and
``set_visual(model, None)`` switches back to text-only batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapter_v1 import PromptAttention, top_layers
from .lora import TARGETS, block_linears
from .spec import MethodSpec


class BiasScaleLinear(nn.Module):
    """A frozen ``nn.Linear`` W (``self.base``) computing ``W (x * scale) + bias``."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base.requires_grad_(False)
        w = base.weight
        self.scale = nn.Parameter(torch.ones(base.in_features, device=w.device, dtype=w.dtype))
        self.bias = nn.Parameter(torch.zeros(base.out_features, device=w.device, dtype=w.dtype))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.scale, self.base.weight) + self.bias

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """One ``nn.Linear`` with a bias that computes the same: weight W diag(s), bias b."""
        w = self.base.weight
        out = nn.Linear(self.in_features, self.out_features, bias=True,
                        device=w.device, dtype=w.dtype)
        out.weight.copy_(w * self.scale[None, :])
        out.bias.copy_(self.bias)
        return out.requires_grad_(False)


class VisualPromptAttention(PromptAttention):
    """An early block's prompts plus projected visual features: P + proj(features)."""

    def __init__(self, dim: int, n_heads: int, prompt_len: int, visual_dim: int,
                 device=None, dtype=None):
        super().__init__(dim, n_heads, prompt_len, "tanh", device, dtype)
        self.proj = nn.Linear(visual_dim, dim, device=device, dtype=dtype)
        self.visual: torch.Tensor | None = None       # this batch's features, or None

    def prompt_tokens(self) -> torch.Tensor:
        if self.visual is None:                       # a text-only batch
            return self.prompt[None]
        return self.prompt[None] + self.proj(self.visual.to(self.prompt.dtype))


def check_visual_layers(model, method: str, o: dict) -> dict:
    """The early visual blocks and the late prompt blocks must not overlap."""
    n = len(model.layers)
    if o["visual_dim"] is not None and o["visual_layers"] + o["layers"] > n:
        raise ValueError(f"{method}: visual_layers={o['visual_layers']} early blocks and "
                         f"layers={o['layers']} late blocks overlap in a model of {n} blocks")
    return o


def apply_adapter_v2(model, prompt_len: int, layers: int, visual_dim: int | None,
                     visual_layers: int):
    """Bias/scale wrappers, open norms, late prompts, and (with visual_dim) early fusion."""
    for parent, name, _ in block_linears(model, TARGETS):
        setattr(parent, name, BiasScaleLinear(getattr(parent, name)))
    for layer in model.layers:
        layer.attention_norm.requires_grad_(True)
        layer.ffn_norm.requires_grad_(True)
    model.norm.requires_grad_(True)
    cfg, w = model.cfg, model.tok_embeddings.weight
    for i in top_layers(model, layers):
        model.layers[i].attention.prompt = PromptAttention(
            cfg.dim, cfg.n_heads, prompt_len, "tanh", w.device, w.dtype)
    if visual_dim is not None:
        for i in range(visual_layers):
            model.layers[i].attention.prompt = VisualPromptAttention(
                cfg.dim, cfg.n_heads, prompt_len, visual_dim, w.device, w.dtype)
    return model


def visual_modules(model) -> list[VisualPromptAttention]:
    return [m for m in model.modules() if isinstance(m, VisualPromptAttention)]


def set_visual(model, features: torch.Tensor | None):
    """Use ``features`` (b, prompt_len, visual_dim) for the next forward passes; None: text only."""
    modules = visual_modules(model)
    if not modules:
        raise ValueError("the model has no visual prompts; apply adapter_v2 with visual_dim=...")
    if features is not None:
        m = modules[0]
        expected = (m.prompt.shape[0], m.proj.in_features)
        if features.dim() != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"visual features must have shape (batch, {expected[0]}, "
                             f"{expected[1]}) = (batch, prompt_len, visual_dim), "
                             f"got {tuple(features.shape)}")
    for m in modules:
        m.visual = features


def joint_parameter_groups(model) -> dict[str, list[nn.Parameter]]:
    """Disjoint trainable groups: ``image_text`` (visual projection, early prompts and gates)
    for image-caption batches and ``text`` (everything else) for instruction batches."""
    early = {id(p) for m in visual_modules(model) for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"image_text": [p for p in trainable if id(p) in early],
            "text": [p for p in trainable if id(p) not in early]}


def merge_adapter_v2(model):
    """Replace every bias/scale wrapper by the equivalent ``nn.Linear`` with a bias (one way)."""
    for parent, name, _ in block_linears(model, TARGETS):
        module = getattr(parent, name)
        if isinstance(module, BiasScaleLinear):
            setattr(parent, name, module.merged())
    return model


SPEC = MethodSpec(
    "adapter_v2", dict(prompt_len=10, layers=30, visual_dim=None, visual_layers=1),
    apply_adapter_v2, checks=(check_visual_layers,), merge=merge_adapter_v2,
    set_visual=set_visual)
