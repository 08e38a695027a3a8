"""A linear layer whose frozen weight lives in 4 bits (NF4), and the model-wide swap.

QLoRA (Dettmers et al., arXiv 2305.14314, eq. 5) computes every frozen layer as

    Y = X doubleDequant(c1, c2, W_NF4) + X L1 L2

in the compute dtype (bf16 in the paper): the 4-bit weight is only a storage format,
each forward dequantises it (``nf4.dequantize``), multiplies, and drops the result.
The backward pass needs W once more for dL/dX = dL/dY W; we dequantise again instead of
keeping the full-precision W alive between the two passes, as bitsandbytes' MatMul4Bit
does, so a quantised model never holds more than one layer's W in full precision.

On CUDA with bitsandbytes and its CUDA library installed (``bitsandbytes_cuda``),
``backend="auto"`` hands the matmul to ``bitsandbytes.matmul_4bit`` with the same bytes
(our packing and state are its own format), so the two paths compute the same product up
to summation order. On the CPU, ``backend="bitsandbytes"`` is refused when a row of W
does not hold whole blocks (``in_features % blocksize != 0``): bitsandbytes' vectorised
CPU dequantize reads one absmax per row and gets such weights wrong (seen on AVX-512 CPUs;
see tests/test_nf4.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nf4 import QuantState, dequantize, dynamic_map, nf4_code_table, quantize

BACKENDS = ("auto", "torch", "bitsandbytes")


def bitsandbytes_cuda() -> bool:
    """Whether bitsandbytes is installed with its CUDA library and a GPU is present."""
    if not torch.cuda.is_available():
        return False
    try:
        from bitsandbytes.cextension import lib  # optional dependency
    except Exception:                              # not installed, or fails to load
        return False
    return bool(getattr(lib, "compiled_with_cuda", False))


class _DequantLinear(torch.autograd.Function):
    """y = x W^T + b, W dequantised in forward and again in backward (never saved)."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return F.linear(x, layer.dequantized_weight(x.dtype), layer.bias_as(x.dtype))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        return grad_out @ ctx.layer.dequantized_weight(grad_out.dtype), None


class Linear4bit(nn.Module):
    """A frozen ``nn.Linear`` stored as NF4: packed codes and the quantisation state as buffers."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 blocksize: int = 64, double_quant: bool = True,
                 compute_dtype: torch.dtype | None = None, backend: str = "auto"):
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"Linear4bit needs a 2-D weight (out, in), got {tuple(weight.shape)}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; valid: {', '.join(BACKENDS)}")
        packed, state = quantize(weight.detach(), blocksize, double_quant)
        self.out_features, self.in_features = weight.shape
        self.weight_dtype, self.blocksize, self.backend = weight.dtype, blocksize, backend
        self.compute_dtype = compute_dtype or weight.dtype
        self.register_buffer("packed", packed)
        self.register_buffer("absmax", state.absmax)
        self.register_buffer("nested_absmax", state.nested_absmax)
        self.register_buffer("offset", state.offset)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(),
                                                           requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: torch.dtype | None = None, backend: str = "auto"):
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, blocksize, double_quant, compute_dtype, backend)

    # -------------------------------------------------------------------------- state
    @property
    def state(self) -> QuantState:
        return QuantState(torch.Size((self.out_features, self.in_features)), self.weight_dtype,
                          self.blocksize, self.absmax, self.nested_absmax, self.offset)

    @property
    def device(self) -> torch.device:
        return self.packed.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the layer computes in (what a LoRA beside it should use)."""
        return self.compute_dtype

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize(self.packed, self.state).to(dtype or self.weight_dtype)

    def bias_as(self, dtype):
        return None if self.bias is None else self.bias.to(dtype)

    def bits_per_parameter(self) -> float:
        """Storage of the weight: 4 bits + the state's share (4.5, or ~4.127 with double quant)."""
        n = self.in_features * self.out_features
        return 8 * (self.packed.numel() + self.state.nbytes()) / n

    def _apply(self, fn, recurse=True):
        """Moves follow the model; dtype casts change the compute dtype but never the
        fp32 scales (``model.to(torch.bfloat16)`` must not round them)."""
        kept = {k: getattr(self, k) for k in ("absmax", "nested_absmax", "offset")}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = getattr(self, name)
            if old is not None and new.dtype != old.dtype:
                setattr(self, name, old.to(new.device))
        probe = torch.empty(0, dtype=self.compute_dtype, device=self.packed.device)
        self.compute_dtype = fn(probe).dtype
        return self

    # -------------------------------------------------------------------------- compute
    def uses_bitsandbytes(self, x: torch.Tensor) -> bool:
        """``auto``: bitsandbytes' kernels for CUDA inputs when its CUDA library is there;
        ``bitsandbytes``: always (an error if it is missing); ``torch``: never."""
        if self.backend == "torch" or (self.backend == "auto" and x.device.type != "cuda"):
            return False
        if self.backend == "auto":
            return bitsandbytes_cuda()
        try:
            # bitsandbytes is optional: imported only where it is used
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            if self.backend == "bitsandbytes":
                raise ImportError("backend='bitsandbytes' needs bitsandbytes installed") from e
            return False
        if x.device.type == "cpu" and self.in_features % self.blocksize:
            raise ValueError(
                f"backend='bitsandbytes' on the CPU needs in_features ({self.in_features}) to "
                f"be a multiple of blocksize ({self.blocksize}): bitsandbytes' vectorised CPU "
                f"dequantize takes one absmax per row and is wrong otherwise (AVX-512); "
                f"use backend='torch' or 'auto'")
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.compute_dtype)
        if self.uses_bitsandbytes(x):
            import bitsandbytes as bnb  # optional, found by uses_bitsandbytes
            out = bnb.matmul_4bit(h, self.packed.view(-1, 1).t(), quant_state=self.bnb_state(),
                                  bias=self.bias_as(h.dtype))
        else:
            out = _DequantLinear.apply(h, self)
        return out.to(x.dtype)

    def bnb_state(self):
        """The same state as a ``bitsandbytes.functional.QuantState`` (its CUDA kernels read it)."""
        from bitsandbytes.functional import QuantState as BnbState  # optional
        device = self.packed.device
        nested = None
        if self.nested_absmax is not None:
            nested = BnbState(absmax=self.nested_absmax, code=dynamic_map().to(device),
                              blocksize=256, dtype=torch.float32)
        return BnbState(absmax=self.absmax, shape=self.state.shape, blocksize=self.blocksize,
                        code=nf4_code_table().to(device), quant_type="nf4",
                        dtype=self.weight_dtype, offset=self.offset, state2=nested)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain, frozen ``nn.Linear`` holding the dequantised weight (in the original dtype)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.device, dtype=self.weight_dtype)
        linear.weight.copy_(self.dequantized_weight())
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear.requires_grad_(False)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"blocksize={self.blocksize}, double_quant={self.nested_absmax is not None}, "
                f"compute_dtype={self.compute_dtype}")


# ----------------------------------------------------------------------------- whole models
def _block_linears(model, kind):
    for parent in model.layers.modules():
        for name, child in parent.named_children():
            if isinstance(child, kind):
                yield parent, name, child


def quantize_model(model, blocksize: int = 64, double_quant: bool = True,
                   compute_dtype: torch.dtype | None = None, backend: str = "auto"):
    """Replace every ``nn.Linear`` inside ``model.layers`` by a ``Linear4bit`` (in place).

    The embeddings, the final norm and the head stay as they are, as in QLoRA.
    """
    if not hasattr(model, "layers"):
        raise TypeError(f"quantize_model expects a model with .layers, got {type(model).__name__}")
    for parent, name, child in list(_block_linears(model, nn.Linear)):
        setattr(parent, name, Linear4bit.from_linear(child, blocksize, double_quant,
                                                     compute_dtype, backend))
    return model


def dequantize_model(model):
    """Replace every ``Linear4bit`` inside ``model.layers`` by a plain ``nn.Linear`` (in place)."""
    for parent, name, child in list(_block_linears(model, Linear4bit)):
        setattr(parent, name, child.to_linear())
    return model


def storage_bits(model) -> dict:
    """Bytes held by the 4-bit layers and by everything else, and bits per quantised weight."""
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    n = sum(m.in_features * m.out_features for m in layers)
    nbytes = sum(m.packed.numel() + m.state.nbytes() for m in layers)
    ids = {id(m.bias) for m in layers if m.bias is not None}
    others = {id(p): p for p in model.parameters() if id(p) not in ids}.values()
    other_bytes = sum(p.numel() * p.element_size() for p in others)
    return {"quantized_parameters": n, "quantized_bytes": nbytes,
            "bits_per_parameter": 8 * nbytes / n if n else float("nan"),
            "other_parameters": sum(p.numel() for p in others), "other_bytes": other_bytes,
            "total_bytes": nbytes + other_bytes}
