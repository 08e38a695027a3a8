"""QLoRA: LoRA on top of a frozen base quantised to 4 bits.

QLoRA (Dettmers et al., arXiv 2305.14314) stores every linear layer of the blocks in
NF4 (``minillama.quant``: 4-bit codes plus one scale per block of ``blocksize`` weights,
the scales themselves quantised to 8 bits with ``double_quant``) and trains LoRA
(``lora.py``) on top, in full precision:

    h = dequant(W0) x + s * B A dropout(x)

The memory of the frozen base drops about fourfold; the gradients still flow through
dequant(W0) to the LoRA matrices. The defaults are the paper's: r = 64, alpha = 16,
dropout 0.1, LoRA on all seven linears of each block.

The update cannot be folded into 4-bit weights, so ``merge`` goes one way: each LoRA
layer becomes a full-precision ``nn.Linear`` holding dequant(W0) + s B A, every other
4-bit layer a dequantised ``nn.Linear``.
"""

from __future__ import annotations

from ..quant.linear4bit import dequantize_model, quantize_model
from ..quant.nf4 import BLOCKSIZES
from .lora import (
    TARGETS,
    LoRALinear,
    apply_lora,
    block_linears,
    check_lora,
    lora_disabled,
    warn_full_rank,
)
from .spec import MethodSpec, method_of


def check_quant(model, method: str, o: dict) -> dict:
    """A block size NF4 supports, and double_quant a bool."""
    if o["blocksize"] not in BLOCKSIZES or isinstance(o["blocksize"], bool):
        raise ValueError(f"qlora: blocksize must be one of {BLOCKSIZES}, "
                         f"got {o['blocksize']!r}")
    if not isinstance(o["double_quant"], bool):
        raise ValueError(f"qlora: double_quant must be True or False, "
                         f"got {o['double_quant']!r}")
    o["blocksize"] = int(o["blocksize"])
    return o


def apply_qlora(model, r: int, alpha: float, dropout: float, targets, rslora: bool,
                blocksize: int, double_quant: bool):
    """Every linear of the blocks frozen in NF4 (double quantisation by default), then LoRA
    on ``targets``."""
    quantize_model(model, blocksize, double_quant)
    return apply_lora(model, r, alpha, dropout, targets, rslora)


def merge_qlora(model):
    """One way to full precision: each LoRA module becomes an ``nn.Linear`` holding
    dequant(W0) + s B A, every other 4-bit layer a dequantised ``nn.Linear``."""
    for parent, name, _ in block_linears(model):
        module = getattr(parent, name)
        if isinstance(module, LoRALinear):
            setattr(parent, name, module.to_linear())
    return dequantize_model(model)


def qlora_disabled(model):
    """LoRA off: the 4-bit base model (nothing is left to switch off once merged)."""
    if method_of(model)["merged"]:
        raise ValueError("qlora was merged into full-precision weights: nothing to disable")
    return lora_disabled(model)


SPEC = MethodSpec(
    "qlora", dict(r=64, alpha=16.0, dropout=0.1, targets=TARGETS, rslora=False, blocksize=64,
                  double_quant=True),
    apply_qlora, checks=(check_lora, check_quant, warn_full_rank), merge=merge_qlora,
    disable=qlora_disabled)
