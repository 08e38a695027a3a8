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
    qlora       lora.py        r=64, alpha=16, dropout=0.1, targets=all seven, rslora=False,
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
"""

from __future__ import annotations

import numbers
import warnings

from ..model import Llama
from ..quant.nf4 import BLOCKSIZES
from .adapter_v1 import GATES, apply_adapter_v1
from .adapter_v2 import apply_adapter_v2, merge_adapter_v2
from .adapter_v2 import set_visual as _set_visual_v2
from .excitor import apply_excitor
from .excitor import set_visual as _set_visual_excitor
from .lora import (
    TARGETS,
    apply_lora,
    apply_qlora,
    block_linears,
    lora_disabled,
    lora_modules,
    merge_qlora,
)

DEFAULTS = {
    "lora": dict(r=8, alpha=16.0, dropout=0.0, targets=("wq", "wv"), rslora=False),
    "adapter_v1": dict(prompt_len=10, layers=30, gate="tanh"),
    "adapter_v2": dict(prompt_len=10, layers=30, visual_dim=None, visual_layers=1),
    "excitor": dict(prompt_len=30, layers=30, rank=16, visual_dim=None),
    "qlora": dict(r=64, alpha=16.0, dropout=0.1, targets=TARGETS, rslora=False, blocksize=64,
                  double_quant=True),
}
APPLY = {"lora": apply_lora, "adapter_v1": apply_adapter_v1, "adapter_v2": apply_adapter_v2,
         "excitor": apply_excitor, "qlora": apply_qlora}
NOT_MERGEABLE = {
    "adapter_v1": "its prompts add a second, gated softmax over extra keys and values that "
                  "depends on every query, which no change of the weights can express",
    "excitor": "its extra scores come from a softmax over the prompts for every token, "
               "which no change of the weights can express",
}
METHODS = tuple(DEFAULTS)


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
    if method not in DEFAULTS:
        raise ValueError(f"unknown PEFT method {method!r}; valid: {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(DEFAULTS[method]))
    if unknown:
        raise ValueError(f"{method}: unknown option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(DEFAULTS[method])}")
    o = {**DEFAULTS[method], **options}
    for name in ("r", "prompt_len", "layers", "rank", "visual_layers"):
        if name in o:
            o[name] = _positive_int(method, name, o[name])
    if "visual_dim" in o:
        o["visual_dim"] = _positive_int(method, "visual_dim", o["visual_dim"], allow_none=True)
    n = len(model.layers)
    if "layers" in o and o["layers"] > n:
        raise ValueError(f"{method}: layers={o['layers']} but the model has {n} blocks; "
                         f"choose 1..{n}")
    if method in ("lora", "qlora"):
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
    if method == "qlora":
        if o["blocksize"] not in BLOCKSIZES or isinstance(o["blocksize"], bool):
            raise ValueError(f"qlora: blocksize must be one of {BLOCKSIZES}, "
                             f"got {o['blocksize']!r}")
        if not isinstance(o["double_quant"], bool):
            raise ValueError(f"qlora: double_quant must be True or False, "
                             f"got {o['double_quant']!r}")
        o["blocksize"] = int(o["blocksize"])
    if method == "adapter_v1" and o["gate"] not in GATES:
        raise ValueError(f"adapter_v1: unknown gate {o['gate']!r}; valid: {', '.join(GATES)}")
    if method == "adapter_v2" and o["visual_dim"] is not None \
            and o["visual_layers"] + o["layers"] > n:
        raise ValueError(f"adapter_v2: visual_layers={o['visual_layers']} early blocks and "
                         f"layers={o['layers']} late blocks overlap in a model of {n} blocks")
    if method in ("lora", "qlora"):
        full_rank = min(min(getattr(parent, name).weight.shape)
                        for parent, name, _ in block_linears(model, o["targets"]))
        if o["r"] > full_rank:
            warnings.warn(f"{method}: r={o['r']} exceeds the smallest targeted layer's full "
                          f"rank min(in, out) = {full_rank}: B A cannot have rank above "
                          f"{full_rank}, so the extra parameters add nothing", stacklevel=3)
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
    APPLY[method](model, **options)
    model.peft_config = {"method": method, "options": options, "merged": False}
    return model


def method_of(model) -> dict:
    config = getattr(model, "peft_config", None)
    if config is None:
        raise ValueError("the model has no PEFT method applied; use minillama.peft.apply first")
    return config


def trainable_parameters(model) -> int:
    """How many parameter values will be trained (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge(model) -> Llama:
    """Fold the method into the weights: LoRA exactly (``unmerge`` undoes it), V2's bias
    and scale into linears with a bias (one way), QLoRA into dequantised full-precision
    linears (one way). V1 and Excitor cannot be merged."""
    config = method_of(model)
    method = config["method"]
    if method in NOT_MERGEABLE:
        raise ValueError(f"{method} cannot be merged into the weights: {NOT_MERGEABLE[method]}")
    if method == "lora":
        for m in lora_modules(model):
            m.merge()
    elif method == "qlora":
        merge_qlora(model)                # dequantises: the model is full precision after
    elif not config["merged"]:
        merge_adapter_v2(model)
    config["merged"] = True
    return model


def unmerge(model) -> Llama:
    """Take a merged LoRA update back out of the weights."""
    config = method_of(model)
    method = config["method"]
    if method != "lora":
        why = "merges one way" if method in ("adapter_v2", "qlora") else "never merges"
        raise ValueError(f"only lora can be unmerged; {method} {why}")
    for m in lora_modules(model):
        m.unmerge()
    config["merged"] = False
    return model


def can_disable(model) -> bool:
    """Whether ``disabled(model)`` switches an adapter off: an unmerged LoRA or QLoRA."""
    config = getattr(model, "peft_config", None)
    return bool(config) and config["method"] in ("lora", "qlora") and not config["merged"]


def disabled(model):
    """A context manager inside which a LoRA model computes exactly its base model.

        with minillama.peft.disabled(model):
            reference_logits = model(tokens)     # adapter off, same weights, no copy

    Only LoRA (and QLoRA, whose base is then the 4-bit model) has a path that can simply
    be skipped; a merged LoRA must be unmerged first.
    """
    config = method_of(model)
    method = config["method"]
    if method not in ("lora", "qlora"):
        raise ValueError(f"only lora can be disabled in place; {method} changes the "
                         f"attention itself (use a separate reference model)")
    if method == "qlora" and config["merged"]:
        raise ValueError("qlora was merged into full-precision weights: nothing to disable")
    return lora_disabled(model)


def set_visual(model, features):
    """Image features for the next batches (adapter_v2 / excitor with visual_dim); None: text."""
    method = method_of(model)["method"]
    if method == "adapter_v2":
        return _set_visual_v2(model, features)
    if method == "excitor":
        return _set_visual_excitor(model, features)
    raise ValueError(f"{method} takes no visual features; adapter_v2 and excitor do")


def save(model, path, format: str = "minillama", **kwargs):
    """Save the trained tensors: ``minillama`` (any method) or ``peft`` (LoRA, for peft)."""
    from .io import save_adapter
    return save_adapter(model, path, format=format, **kwargs)


def load(model, path) -> Llama:
    """Apply the saved method to ``model`` (unless it already is) and load its tensors."""
    from .io import load_adapter
    return load_adapter(model, path)


__all__ = ["apply", "trainable_parameters", "merge", "unmerge", "can_disable", "disabled",
           "save", "load", "set_visual", "METHODS", "DEFAULTS"]
