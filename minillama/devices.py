"""What the trainers do differently on a GPU, in one place: bf16 autocast, TF32 matmuls,
fused or paged AdamW, pinned batches. On the CPU every default leaves fp32 training as it was.

* **Precision** (``TrainConfig.precision``). ``"fp32"`` computes in float32. ``"bf16"``
  runs the forward pass under ``torch.autocast(dtype=torch.bfloat16)``: matmuls read bf16
  inputs while the weights, their gradients and AdamW's moments stay fp32, and autocast
  keeps reductions such as softmax and the cross-entropy in fp32 (mixed precision,
  Micikevicius et al., arXiv 1710.03740). bf16 has fp32's 8 exponent bits, so unlike fp16
  it needs no loss scaling (Kalamkar et al., arXiv 1905.12322); its 8-bit mantissa
  rounds each input to a relative 2^-9. ``"auto"`` is bf16 on a CUDA GPU that computes
  bf16 natively and fp32 anywhere else; ``"bf16"`` on the CPU uses ``torch.autocast("cpu")``.
* **TF32**. Ampere and later GPUs can run fp32 matmuls as TensorFloat-32 (fp32's range,
  a 10-bit mantissa). A CUDA run switches that on (``torch.set_float32_matmul_precision
  ("high")``) while it trains and restores the setting after, unless precision is
  ``"fp32"``, which asks for IEEE fp32 throughout.
* **AdamW**. ``torch.optim.AdamW(fused=True)`` updates all parameters in a few CUDA
  kernels instead of a loop of small ones; it is used when every trained parameter is on
  CUDA. QLoRA's paged AdamW (Dettmers et al., arXiv 2305.14314, section 3) keeps the two
  moments in CUDA unified memory, which the driver evicts to CPU RAM when the GPU runs
  short; ``paged=True`` asks for it, and gets it when the parameters are on CUDA and
  bitsandbytes has its CUDA library (``adamw_kind`` decides), the ordinary AdamW otherwise.
* **Batches**. A host-to-GPU copy from pinned (page-locked) memory can run asynchronously
  (``non_blocking=True``), so on CUDA ``to_device`` pins the CPU batch first; on the CPU it
  is a plain ``.to``.
"""

from __future__ import annotations

import contextlib

import torch

from .quant.linear4bit import bitsandbytes_cuda

PRECISIONS = ("auto", "fp32", "bf16")
ADAMW_KINDS = ("plain", "fused", "paged")


def check_precision(precision, what: str = "precision") -> str:
    """``precision`` itself if it is one of ``PRECISIONS``; a ValueError naming it if not."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _bf16_on_gpu() -> bool:
    """Whether the current CUDA GPU computes bf16 natively (Ampere, compute capability 8, on)."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, device) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` means on ``device`` (see the module doc)."""
    check_precision(precision)
    kind = torch.device(device).type
    if precision == "auto":
        return "bf16" if kind == "cuda" and _bf16_on_gpu() else "fp32"
    if precision == "bf16" and kind == "cuda" and not _bf16_on_gpu():
        raise ValueError(f"precision='bf16': the GPU {torch.cuda.get_device_name()} has no "
                         f"native bfloat16; use precision='fp32' (or 'auto')")
    if precision == "bf16" and kind not in ("cuda", "cpu"):
        raise ValueError(f"precision='bf16' is supported on cuda and cpu, not {kind}")
    return precision


def autocast(device, precision: str = "auto"):
    """The context a forward pass runs in: bf16 autocast on ``device``'s type, or none (fp32)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_tf32(device, precision: str = "auto") -> bool:
    """TF32 for the fp32 matmuls: on CUDA, unless precision is ``"fp32"``."""
    return torch.device(device).type == "cuda" and check_precision(precision) != "fp32"


@contextlib.contextmanager
def tf32(device, precision: str = "auto"):
    """TF32 matmuls while the block runs (when ``uses_tf32``); the old setting restored after."""
    if not uses_tf32(device, precision):
        yield False
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield True
    finally:
        torch.set_float32_matmul_precision(before)


def pins(device) -> bool:
    """Whether batches for ``device`` go through pinned memory (CUDA only)."""
    return torch.device(device).type == "cuda"


def to_device(device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device``; CPU tensors bound for CUDA are pinned, then copied
    asynchronously (the caching host allocator keeps the pinned copy alive until then)."""
    if not pins(device):
        return tuple(t.to(device) for t in tensors)
    return tuple(t.pin_memory().to(device, non_blocking=True) if t.device.type == "cpu"
                 else t.to(device) for t in tensors)


def _params(groups) -> list[torch.Tensor]:
    return [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]


def adamw_kind(params, paged: bool = False) -> str:
    """Which AdamW trains ``params``: ``"paged"`` (bitsandbytes' PagedAdamW, if ``paged``,
    every parameter on CUDA and bitsandbytes' CUDA library present), ``"fused"`` (torch's,
    one CUDA kernel, when every parameter is on CUDA) or ``"plain"`` (torch's, on the CPU)."""
    params = _params(params)
    on_cuda = bool(params) and all(p.is_cuda for p in params)
    if paged and on_cuda and bitsandbytes_cuda():
        return "paged"
    return "fused" if on_cuda else "plain"


def build_adamw(kind: str, groups, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.0):
    """The AdamW of ``kind`` (one of ``ADAMW_KINDS``) over ``groups`` (parameters, or dicts
    of param groups with their own ``weight_decay``)."""
    if kind not in ADAMW_KINDS:
        raise ValueError(f"AdamW kind must be one of {', '.join(ADAMW_KINDS)}, got {kind!r}")
    groups = list(groups)
    if kind == "paged":
        import bitsandbytes as bnb  # optional, checked by adamw_kind
        return bnb.optim.PagedAdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=kind == "fused")


def adamw(groups, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.0,
          paged: bool = False):
    """AdamW over ``groups`` as ``adamw_kind`` picks it: paged (QLoRA on CUDA), fused
    (CUDA) or plain (CPU). ``paged`` is a request that the CPU quietly cannot honour."""
    groups = list(groups)
    return build_adamw(adamw_kind(groups, paged), groups, lr, betas, weight_decay)
