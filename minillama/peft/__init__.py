"""Parameter-efficient fine-tuning: freeze the model, train a few added parameters.

One entry point applies a method to a ``Llama`` and returns it with only the method's
parameters trainable:

    model = minillama.peft.apply(model, "lora", r=8, targets=("wq", "wv"))
    minillama.peft.trainable_parameters(model)      # 4,194,304 on LLaMA-7B
    minillama.peft.merge(model)                     # fold into the weights (where possible)
    with minillama.peft.disabled(model): ...        # LoRA off: the base model, no copy
    minillama.peft.can_disable(model)               # True for an unmerged LoRA / QLoRA
    minillama.peft.save(model, "adapter/")          # the trained tensors only
    minillama.peft.load(fresh_model, "adapter/")    # applies the method, then loads

The methods, one file each (the defaults are the papers' LLaMA-7B settings):

    lora        lora.py        r=8, alpha=16, dropout=0.0, targets=("wq", "wv"), rslora=False
    qlora       qlora.py       r=64, alpha=16, dropout=0.1, targets=all seven, rslora=False,
                + ../quant/    blocksize=64, double_quant=True (NF4 base, LoRA on top)
    adapter_v1  adapter_v1.py  prompt_len=10, layers=30, gate="tanh" | "scalar" (peft's)
    adapter_v2  adapter_v2.py  prompt_len=10, layers=30, visual_dim=None, visual_layers=1
    excitor     excitor.py     prompt_len=30, layers=30, rank=16, visual_dim=None

``layers`` is how many of the top blocks get prompts. LoRA and V2's bias/scale wrap
``nn.Linear`` modules around the frozen ones; V1/V2 prompts and the Excitor plug into
the two places ``minillama/attention.py`` leaves for them (``attn.prompt`` and
``attn.score_bias``). QLoRA first turns every linear of the blocks into a 4-bit
``quant.Linear4bit`` and wraps LoRA around those; its merge dequantises, giving back a
full-precision model. Methods do not stack: one method per model.

Each file ends with its method's ``SPEC`` (``spec.py``): defaults, option checks, apply,
merge or why it cannot merge, and what else it can do. The functions below look the
method up in ``SPECS`` and do the rest the same way for all.
"""

from __future__ import annotations

import numbers

import torch

from ..model import Llama
from . import adapter_v1, adapter_v2, excitor, lora, qlora
from .io import read_adapter_config, read_adapter_tensors, save_adapter
from .lora import lora_modules
from .spec import method_of

SPECS = {spec.name: spec for spec in (lora.SPEC, adapter_v1.SPEC, adapter_v2.SPEC,
                                      excitor.SPEC, qlora.SPEC)}
METHODS = tuple(SPECS)
DEFAULTS = {name: spec.defaults for name, spec in SPECS.items()}


# ----------------------------------------------------------------------------- options
def _positive_int(method, name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{method}: {name} must be a positive integer"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def check_options(model, method: str, options: dict) -> dict:
    """The method's full, checked options (defaults filled in); a clear error otherwise."""
    if method not in SPECS:
        raise ValueError(f"unknown PEFT method {method!r}; valid: {', '.join(METHODS)}")
    spec = SPECS[method]
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{method}: unknown option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(spec.defaults)}")
    o = {**spec.defaults, **options}
    for name in ("r", "prompt_len", "layers", "rank", "visual_layers"):
        if name in o:
            o[name] = _positive_int(method, name, o[name])
    if "visual_dim" in o:
        o["visual_dim"] = _positive_int(method, "visual_dim", o["visual_dim"], allow_none=True)
    n = len(model.layers)
    if "layers" in o and o["layers"] > n:
        raise ValueError(f"{method}: layers={o['layers']} but the model has {n} blocks; "
                         f"choose 1..{n}")
    for check in spec.checks:                  # the method's own checks, in its file
        o = check(model, method, o)
    return o


# ----------------------------------------------------------------------------- the API
def apply(model: Llama, method: str, **options) -> Llama:
    """Freeze ``model`` and add ``method``'s trainable parameters; returns the model.

    Works on the ``meta`` device too (shapes only), for counting parameters.
    """
    if not isinstance(model, Llama):
        raise TypeError(f"apply expects a minillama Llama, got {type(model).__name__}")
    if getattr(model, "peft_config", None) is not None:
        raise ValueError(f"the model already has {model.peft_config['method']} applied; "
                         f"methods do not stack (start from a fresh model)")
    options = check_options(model, method, options)
    model.requires_grad_(False)
    SPECS[method].apply(model, **options)
    model.peft_config = {"method": method, "options": options, "merged": False}
    return model


def trainable_parameters(model) -> int:
    """How many parameter values will be trained (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge(model) -> Llama:
    """Fold the method into the weights: LoRA exactly (``unmerge`` undoes it), V2's bias
    and scale into linears with a bias (one way), QLoRA into dequantised full-precision
    linears (one way). V1 and Excitor cannot be merged."""
    config = method_of(model)
    spec = SPECS[config["method"]]
    if spec.merge is None:
        raise ValueError(f"{spec.name} cannot be merged into the weights: {spec.cannot_merge}")
    spec.merge(model)
    config["merged"] = True
    return model


def unmerge(model) -> Llama:
    """Take a merged LoRA update back out of the weights."""
    config = method_of(model)
    spec = SPECS[config["method"]]
    if spec.unmerge is None:
        why = "merges one way" if spec.merge else "never merges"
        raise ValueError(f"only lora can be unmerged; {spec.name} {why}")
    spec.unmerge(model)
    config["merged"] = False
    return model


def can_disable(model) -> bool:
    """Whether ``disabled(model)`` switches an adapter off: an unmerged LoRA or QLoRA."""
    config = getattr(model, "peft_config", None)
    return (bool(config) and SPECS[config["method"]].disable is not None
            and not config["merged"])


def disabled(model):
    """A context manager inside which a LoRA model computes exactly its base model.

        with minillama.peft.disabled(model):
            reference_logits = model(tokens)     # adapter off, same weights, no copy

    Only LoRA (and QLoRA, whose base is then the 4-bit model) has a path that can simply
    be skipped; a merged LoRA must be unmerged first.
    """
    spec = SPECS[method_of(model)["method"]]
    if spec.disable is None:
        raise ValueError(f"only lora can be disabled in place; {spec.name} changes the "
                         f"attention itself (use a separate reference model)")
    return spec.disable(model)


def set_visual(model, features):
    """Image features for the next batches (adapter_v2 / excitor with visual_dim); None: text."""
    spec = SPECS[method_of(model)["method"]]
    if spec.set_visual is None:
        able = " and ".join(name for name, s in SPECS.items() if s.set_visual)
        raise ValueError(f"{spec.name} takes no visual features; {able} do")
    return spec.set_visual(model, features)


def save(model, path, format: str = "minillama", **kwargs):
    """Save the trained tensors: ``minillama`` (any method) or ``peft`` (LoRA, for peft)."""
    return save_adapter(model, path, format=format, **kwargs)


def load(model, path) -> Llama:
    """Apply the saved method to ``model`` (unless it already is) and load its tensors."""
    path, method, options = read_adapter_config(model, path)    # made for this base?
    with torch.device("meta"):            # the tensors the method adds (checks the options)
        shapes = apply(Llama(model.cfg), method, **options)
    expected = {k: tuple(p.shape) for k, p in shapes.named_parameters() if p.requires_grad}
    tensors = read_adapter_tensors(path, expected)
    current = getattr(model, "peft_config", None)
    if current is None:
        apply(model, method, **options)
    elif (current["method"], current["options"]) != (method, options) or current["merged"]:
        raise ValueError(f"the model already has {current['method']} applied with "
                         f"{current['options']}{' (merged)' if current['merged'] else ''}; "
                         f"{path} holds {method} with {options}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in tensors.items():
            params[k].copy_(v.to(params[k].dtype))
    return model


__all__ = ["apply", "trainable_parameters", "merge", "unmerge", "can_disable", "disabled",
           "save", "load", "set_visual", "check_options", "lora_modules", "METHODS", "DEFAULTS"]
