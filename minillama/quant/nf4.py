"""NF4: 4-bit NormalFloat quantisation, bit for bit as bitsandbytes does it on the CPU.

QLoRA (Dettmers et al., arXiv 2305.14314) stores each frozen weight in 4 bits. The weights
of a trained network are roughly normal, so the 16 levels are quantiles of N(0, 1), not
evenly spaced numbers: each level then covers about the same share of the weights.

    1. blocks of 64 values (flat, row-major); per block M = max |x|    (absmax, fp32)
    2. s = x / M in [-1, 1]; code = the nearest of the 16 NF4 values, ties to the lower
    3. two 4-bit codes per byte, the first one in the high nibble
    4. dequantise:  x' = c[code] * M      (in fp32, then rounded to x's dtype)

Storage is 4 bits plus 32/64 for the fp32 absmax: 4.5 bits per weight. Double
quantisation stores the absmax values themselves in 8 bits (bitsandbytes' signed dynamic
map, Dettmers 2015, arXiv 1511.04561) in blocks of 256 after subtracting their mean:
4 + 8/64 + 32/(64*256) = 4.127 bits per weight.

Bitsandbytes 0.50 details kept here so the bytes match (``SPEC.md`` §6): a full block
multiplies by fl(1/max(M, 1e-38)), the partial last block divides by M' = max(M, 1e-38)
and stores M'; an odd tail is padded with the code of 0 (7); the 8-bit absmax codes come
from a 65,536-point grid over [-1, 1] (each grid point knows its nearest code).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from einops import rearrange

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)   # those bitsandbytes accepts
FLOATS = (torch.float32, torch.bfloat16, torch.float16)
NF4_OFFSET = 0.9677083        # the outermost quantile's probability (QLoRA's choice)
ZERO_CODE = 7                 # nf4_code_table()[7] == 0.0
NESTED_BLOCKSIZE = 256        # double quantisation: absmax values per 8-bit block
GRID = 65536                  # bitsandbytes' CPU grid for 8-bit codes


# ----------------------------------------------------------------------------- the codes
def nf4_code_table(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 values, built from normal quantiles exactly as bitsandbytes built its table."""
    # Probabilities: 9 evenly spaced from `offset` to 1/2 for the positive side and 8 for the
    # negative side, dropping 1/2 itself (its quantile is 0): 8 positive, 7 negative levels.
    positive = torch.linspace(offset, 0.5, 9)[:-1]                 # fp32, like bitsandbytes
    negative = torch.linspace(offset, 0.5, 8)[:-1]
    quantiles = torch.special.ndtri(torch.cat([positive, negative]).double())   # Phi^-1
    values = torch.cat([quantiles[:8], -quantiles[8:], torch.zeros(1, dtype=torch.float64)])
    values = values.float().sort().values       # 0 is a level of its own: zeros stay zeros
    return values / values.max()                # the largest quantile becomes 1.0


def nf4_midpoints() -> torch.Tensor:
    """The 15 decision boundaries (c_j + c_{j+1}) / 2 in fp32: code = how many lie below s."""
    c = nf4_code_table()
    return (c[:-1] + c[1:]) / 2


def dynamic_map() -> torch.Tensor:
    """Bitsandbytes' signed 8-bit dynamic map (256 sorted fp32 values in [-0.993, 1]).

    For i = 0..6 it places 2^i magnitudes, the midpoints of ``linspace(0.1, 1, 2^i + 1)``,
    in the decade 10^(i-6), with both signs; plus 0 and 1. Small numbers get their own
    decades, so relative precision stays roughly constant over six orders of magnitude.
    """
    values = [torch.zeros(1), torch.ones(1)]
    for i in range(7):
        edges = torch.linspace(0.1, 1.0, 2 ** i + 1)
        magnitudes = 10.0 ** (i - 6) * ((edges[:-1] + edges[1:]) / 2)
        values += [magnitudes, -magnitudes]
    return torch.cat(values).sort().values


@functools.cache
def _dynamic_grid(device: torch.device) -> torch.Tensor:
    """Code for each of the 65,536 grid points g_i = -1 + 2i/65535: how many midpoints < g_i."""
    code = dynamic_map()
    points = -1.0 + torch.arange(GRID, dtype=torch.float32) * 2.0 / torch.tensor(GRID - 1.0)
    return torch.searchsorted((code[:-1] + code[1:]) * 0.5, points).to(torch.uint8).to(device)


@functools.cache
def _dynamic_map_on(device: torch.device) -> torch.Tensor:
    return dynamic_map().to(device)


@functools.cache
def _nf4_lookup(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NF4 code of s from the top 16 bits of its fp32 pattern (a 65,536-entry table).

    All floats sharing their top 16 bits form an interval. Only the 15 intervals that hold
    a midpoint (``split``) need one comparison more: code = base[key] + (s > threshold[key]).
    This gives exactly ``bucketize(s, midpoints)``, several times faster.
    """
    key = torch.arange(GRID, dtype=torch.int32)
    ends = torch.stack([key << 16, (key << 16) | 0xFFFF]).view(torch.float32)
    low, high = ends.nan_to_num().aminmax(dim=0)          # NaN buckets: never reached
    mids = nf4_midpoints()
    base, top = torch.bucketize(low, mids), torch.bucketize(high, mids)
    split = top > base                                    # never more than one midpoint
    threshold = torch.full((GRID,), float("inf"))
    threshold[split] = mids[base[split]]
    return base.to(torch.uint8).to(device), split.to(device), threshold.to(device)


def nf4_codes(s: torch.Tensor) -> torch.Tensor:
    """NF4 code (uint8, 0..15) of each fp32 value s in [-1, 1]: the nearest level, ties low."""
    if s.dtype != torch.float32:
        raise TypeError(f"nf4_codes reads fp32 bit patterns, got {s.dtype}")
    base, split, threshold = _nf4_lookup(s.device)
    shape, s = s.shape, s.reshape(-1)
    key = (s.view(torch.int32) >> 16).bitwise_and_(0xFFFF)     # top 16 bits, 0..65535
    codes = base.index_select(0, key)
    near = split.index_select(0, key).nonzero().squeeze(1)     # ~1% of normal weights
    codes[near] += s[near] > threshold[key[near]]
    return codes.view(shape)


# ----------------------------------------------------------------------------- nibbles
def pack_nibbles(codes: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the high nibble; an odd tail is padded with `pad`."""
    codes = codes.reshape(-1).to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_full((1,), pad)])
    pairs = rearrange(codes, "(n two) -> two n", two=2)
    return (pairs[0] << 4) | pairs[1]


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first n codes held by ``packed`` (high nibble first)."""
    pairs = torch.stack([packed.reshape(-1) >> 4, packed.reshape(-1) & 0xF])
    return rearrange(pairs, "two n -> (n two)")[:n]


# ----------------------------------------------------------------------------- the state
@dataclass
class QuantState:
    """What ``dequantize`` needs besides the packed codes.

    ``absmax``: fp32, one per block; or with double quantisation the uint8 codes of
    ``absmax - offset`` in the dynamic map, with ``nested_absmax`` (fp32, one per 256
    blocks) and ``offset`` (fp32 scalar, the mean absmax).
    """
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int
    absmax: torch.Tensor
    nested_absmax: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    @property
    def double_quant(self) -> bool:
        return self.nested_absmax is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def scales(self) -> torch.Tensor:
        """The fp32 absmax of every block (decoded from 8 bits under double quantisation)."""
        if not self.double_quant:
            return self.absmax
        nested = self.nested_absmax.repeat_interleave(NESTED_BLOCKSIZE)[:self.absmax.numel()]
        return _dynamic_map_on(nested.device)[self.absmax.int()] * nested + self.offset

    def nbytes(self) -> int:
        """Bytes of the state (absmax or its codes, nested absmax, offset)."""
        extra = (self.nested_absmax, self.offset) if self.double_quant else ()
        return sum(t.numel() * t.element_size() for t in (self.absmax, *extra))


def check_state(packed: torch.Tensor, state: QuantState):
    """A ValueError/TypeError naming what in ``state`` does not fit ``packed``."""
    if not isinstance(state, QuantState):
        raise TypeError(f"state must be a QuantState, got {type(state).__name__}")
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {getattr(packed, 'dtype', packed)}")
    if state.blocksize not in BLOCKSIZES or state.dtype not in FLOATS:
        raise ValueError(f"state.blocksize={state.blocksize} / state.dtype={state.dtype}: "
                         f"supported {BLOCKSIZES} / {FLOATS}")
    n, want = state.numel, torch.uint8 if state.double_quant else torch.float32
    blocks = -(-n // state.blocksize)
    nested = -(-blocks // NESTED_BLOCKSIZE)
    if packed.numel() != (n + 1) // 2:
        raise ValueError(f"packed holds {packed.numel()} bytes but state.shape="
                         f"{tuple(state.shape)} needs {(n + 1) // 2}")
    if state.absmax.numel() != blocks or state.absmax.dtype != want:
        raise ValueError(f"state.absmax is {state.absmax.dtype} {tuple(state.absmax.shape)}; "
                         f"{blocks} blocks of {state.blocksize} need {want} ({blocks},)")
    if state.double_quant and (state.offset is None or state.nested_absmax.numel() != nested):
        raise ValueError(f"state.nested_absmax has {state.nested_absmax.numel()} values; "
                         f"{blocks} blocks need {nested} and an offset")


# ----------------------------------------------------------------------------- quantise
def blockwise_scale(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """s = x / M per block (flat fp32) and the absmax M to store, in bitsandbytes' arithmetic.

    Full blocks store M = max|x| and multiply by fl(1 / max(M, 1e-38)); the partial last
    block stores M' = max(M, 1e-38) and divides by it. |s| may exceed 1 by an ulp: its
    code is the same as for 1.
    """
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    full = n - n % blocksize
    blocks = rearrange(flat[:full], "(b k) -> b k", k=blocksize)
    low, high = torch.aminmax(blocks, dim=1)
    absmax = torch.maximum(-low, high).abs()              # .abs(): -0.0 -> 0.0
    if full < n:
        absmax = torch.cat([absmax, flat[full:].abs().max().clamp(min=1e-38)[None]])
    if not torch.isfinite(absmax).all():
        raise ValueError("x holds inf or nan values; 4-bit codes can only store finite numbers")
    s = torch.empty_like(flat)
    torch.mul(blocks, absmax[: full // blocksize].clamp(min=1e-38).reciprocal()[:, None],
              out=rearrange(s[:full], "(b k) -> b k", k=blocksize))
    s[full:] = flat[full:] / absmax[-1]
    return s, absmax


def _quantize_8bit(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit dynamic-map codes of fp32 ``values`` in blocks of 256, as bitsandbytes' CPU kernel:
    s = v * fl(1/M) goes to the nearest of 65,536 grid points on [-1, 1], and takes that
    point's code (so nearly, not always, the code nearest to s itself)."""
    n = values.numel()
    blocks = torch.nn.functional.pad(values, (0, -n % NESTED_BLOCKSIZE))
    blocks = rearrange(blocks, "(b k) -> b k", k=NESTED_BLOCKSIZE)
    absmax = blocks.abs().amax(dim=1)
    s = (blocks * (1.0 / absmax)[:, None]).clamp(-1, 1)        # 0/0 rows are zeroed below
    grid_index = ((s + 1.0) * 0.5 * (GRID - 1) + 0.5).to(torch.int32)   # truncation
    codes = _dynamic_grid(values.device)[grid_index.clamp(0, GRID - 1)]
    codes[absmax == 0] = 0
    return codes.view(-1)[:n], absmax


def quantize(x: torch.Tensor, blocksize: int = 64,
             double_quant: bool = True) -> tuple[torch.Tensor, QuantState]:
    """NF4-quantise ``x`` (fp32/bf16/fp16, any shape) in blocks of ``blocksize`` values.

    Returns the packed codes (uint8, ceil(numel/2) bytes) and the ``QuantState``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a tensor, got {type(x).__name__}")
    if x.dtype not in FLOATS:
        raise TypeError(f"quantize expects fp32, bf16 or fp16, got {x.dtype}")
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize={blocksize!r} is not supported; choose one of {BLOCKSIZES}")
    if x.numel() == 0:
        raise ValueError("quantize got an empty tensor")
    if x.is_meta:                                         # shapes only (counting parameters)
        return _meta_quantize(x, blocksize, double_quant)
    s, absmax = blockwise_scale(x, blocksize)
    packed = pack_nibbles(nf4_codes(s), pad=ZERO_CODE)
    if not double_quant:
        return packed, QuantState(x.shape, x.dtype, blocksize, absmax)
    offset = absmax.mean()
    codes, nested = _quantize_8bit(absmax - offset)
    return packed, QuantState(x.shape, x.dtype, blocksize, codes, nested, offset)


def _meta_quantize(x, blocksize, double_quant):
    blocks = -(-x.numel() // blocksize)
    e = lambda *size, dtype=torch.float32: torch.empty(size, dtype=dtype, device="meta")
    absmax = e(blocks, dtype=torch.uint8 if double_quant else torch.float32)
    nested = (e(-(-blocks // NESTED_BLOCKSIZE)), e()) if double_quant else ()
    return (e((x.numel() + 1) // 2, dtype=torch.uint8),
            QuantState(x.shape, x.dtype, blocksize, absmax, *nested))


@functools.cache
def _pair_table(device: torch.device) -> torch.Tensor:
    """For each byte, its two NF4 values as one 8-byte word (one gather per byte)."""
    c = nf4_code_table()
    pairs = torch.stack([c.repeat_interleave(16), c.repeat(16)], dim=1)     # (256, 2)
    return pairs.contiguous().view(torch.int64).view(256).to(device)


def dequantize(packed: torch.Tensor, state: QuantState) -> torch.Tensor:
    """x' = c[code] * absmax (fp32), rounded to ``state.dtype``, in ``state.shape``."""
    check_state(packed, state)
    n, bs = state.numel, state.blocksize
    if packed.is_meta:
        return torch.empty(state.shape, dtype=state.dtype, device="meta")
    pairs = _pair_table(packed.device).index_select(0, packed.reshape(-1).to(torch.int32))
    values = pairs.view(torch.float32)
    scales, full = state.scales(), n - n % bs
    out = torch.empty(n, dtype=state.dtype, device=packed.device)
    torch.mul(rearrange(values[:full], "(b k) -> b k", k=bs), scales[: full // bs, None],
              out=rearrange(out[:full], "(b k) -> b k", k=bs))
    if full < n:
        torch.mul(values[full:n], scales[-1], out=out[full:])
    return out.view(state.shape)
