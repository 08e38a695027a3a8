"""Our NF4 against bitsandbytes' kernels on one device, bit for bit; Linear4bit against its.

    python scripts/gpu_nf4_check.py [--device cuda] [--out nf4.json]

1. Quantisation: ``minillama.quant.nf4.quantize`` run on the device against
   ``bitsandbytes.functional.quantize_4bit`` run on the same device (its CUDA kernel on a
   GPU), for several shapes (partial blocks, odd lengths, non-contiguous input), dtypes
   (fp32, bf16, fp16), block sizes and with/without double quantisation. Compared in raw
   bits: packed bytes, absmax (or the 8-bit absmax codes, the nested absmax and the
   offset) and the dequantised tensor (ours vs bitsandbytes' ``dequantize_4bit``).
2. ``minillama.quant.Linear4bit`` against ``bitsandbytes.nn.Linear4bit`` holding the same
   weight: the stored bytes and state bit for bit, then forward outputs and the input
   gradient (both our backends, ``torch`` and ``auto``, the latter calling bitsandbytes'
   ``matmul_4bit`` on CUDA) within a stated tolerance, in fp32 and bf16 compute.

Writes every comparison to ``--out`` (JSON) and exits 1 if any failed. ``--device cpu``
runs the same checks against bitsandbytes' CPU code, skipping its C++ dequantize where a
row of the tensor does not hold whole blocks (wrong on AVX-512 CPUs; tests/test_nf4.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

SHAPES = [(64 * 5,), (1000,), (1,), (63,), (65,), (3, 100), (7, 33), (2, 3, 64), (4, 32),
          (6, 96), (300, 257), (4096, 4096)]
BLOCKSIZES = [32, 64, 128, 256, 4096]
# forward/backward bounds, relative to the largest |value| of the reference (summation
# order differs between a dequantise-then-matmul and bitsandbytes' kernels)
REL_TOL = {"float32": 1e-4, "bfloat16": 2e-2}


def bits(t):
    import torch
    return t.contiguous().view({4: torch.int32, 2: torch.int16, 1: torch.uint8}[t.element_size()])


def differ(a, b) -> str | None:
    """None if ``a`` and ``b`` are the same bits, else what differs."""
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} vs {b.dtype}"
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    n = int((bits(a) != bits(b)).sum())
    return f"{n} of {a.numel()} values differ" if n else None


def quantisation_checks(device, dtypes, record, shapes=SHAPES):
    import bitsandbytes.functional as F
    import torch

    from minillama.quant import nf4 as N
    cases = [(s, dt, 64) for s in shapes for dt in dtypes]
    cases += [((37, 128), torch.float32, b) for b in BLOCKSIZES if b != 64]
    cases += [("t(96, 130)", dt, 64) for dt in dtypes]               # non-contiguous
    for shape, dtype, blocksize in cases:
        g = torch.Generator().manual_seed(zlib.crc32(f"{shape} {blocksize}".encode()))
        if shape == "t(96, 130)":
            x = torch.randn(96, 130, generator=g).to(dtype).to(device).t()
        else:
            x = (torch.randn(shape, generator=g) * 0.05).to(dtype).to(device)
        for dq in (False, True):
            name = f"quantize {shape} {str(dtype)[6:]} block {blocksize} " + \
                   ("double" if dq else "plain")
            fails = {}
            ref_packed, ref = F.quantize_4bit(x, blocksize=blocksize, quant_type="nf4",
                                              compress_statistics=dq)
            packed, state = N.quantize(x, blocksize, dq)
            fields = [("packed", packed, ref_packed.reshape(-1))]
            if dq:
                fields += [("absmax codes", state.absmax, ref.absmax),
                           ("nested absmax", state.nested_absmax, ref.state2.absmax),
                           ("offset", state.offset, ref.offset.reshape(state.offset.shape))]
            else:
                fields += [("absmax", state.absmax, ref.absmax)]
            whole_rows = x.dim() == 1 or x.shape[-1] % blocksize == 0
            if x.device.type == "cuda" or whole_rows:
                theirs = F.dequantize_4bit(ref_packed, ref, quant_type="nf4").reshape(x.shape)
                fields.append(("dequantised", N.dequantize(packed, state), theirs))
            for what, a, b in fields:
                d = differ(a, b)
                if d:
                    fails[what] = d
            record(name, not fails, fails or "bit-exact")


def linear_checks(device, record):
    import bitsandbytes as bnb
    import torch
    from torch import nn

    from minillama.quant import Linear4bit
    for (n_in, n_out), bias in [((256, 128), False), ((1024, 512), True), ((4096, 1024), False)]:
        for dq in (False, True):
            torch.manual_seed(n_in + dq)
            linear = nn.Linear(n_in, n_out, bias=bias).to(device)
            name = f"Linear4bit {n_in}->{n_out} bias={bias} " + ("double" if dq else "plain")
            theirs = bnb.nn.Linear4bit(n_in, n_out, bias=bias, compute_dtype=torch.float32,
                                       compress_statistics=dq, quant_type="nf4")
            if hasattr(theirs, "support_avx512bf16_for_cpu"):
                theirs.support_avx512bf16_for_cpu = False      # bnb's generic CPU path
            theirs.weight = bnb.nn.Params4bit(linear.weight.data.cpu().clone(),
                                              requires_grad=False, compress_statistics=dq,
                                              quant_type="nf4")
            if bias:
                theirs.bias = nn.Parameter(linear.bias.data.cpu().clone(), requires_grad=False)
            theirs = theirs.to(device)                          # bitsandbytes quantises here
            qs = theirs.weight.quant_state
            for backend in ("torch", "auto"):
                ours = Linear4bit.from_linear(linear, double_quant=dq, backend=backend)
                stored = [("packed", ours.packed, theirs.weight.data.reshape(-1)),
                          ("absmax", ours.absmax, qs.absmax)]
                if dq:
                    stored += [("nested absmax", ours.nested_absmax, qs.state2.absmax),
                               ("offset", ours.offset, qs.offset.reshape(ours.offset.shape))]
                fails = {what: d for what, a, b in stored if (d := differ(a, b))}
                record(f"{name} {backend}: stored state", not fails, fails or "bit-exact")
                for dtype in (torch.float32, torch.bfloat16):
                    tag = f"{name} {backend} {str(dtype)[6:]}"
                    ours.compute_dtype = dtype
                    theirs.compute_dtype = dtype
                    x = torch.randn(4, 7, n_in, device=device).to(dtype)
                    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
                    y1, y2 = ours(x1), theirs(x2)
                    g = torch.randn_like(y2)
                    y1.backward(g)
                    y2.backward(g)
                    tol = REL_TOL[str(dtype)[6:]]
                    for what, a, b in (("forward", y1, y2), ("grad input", x1.grad, x2.grad)):
                        err = (a.float() - b.float()).abs().max().item()
                        scale = max(b.float().abs().max().item(), 1.0)
                        record(f"{tag} {what}", err <= tol * scale,
                               f"max |diff| {err:.3g} (bound {tol} x {scale:.3g})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    ap.add_argument("--quick", action="store_true",
                    help="fp32 only, no Linear4bit comparison (a smoke test)")
    args = ap.parse_args(argv)
    import bitsandbytes
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_nf4_check: --device {args.device} but CUDA is not available",
              file=sys.stderr)
        return 2
    results = []

    def record(name, ok, detail):
        results.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            print(f"FAIL {name}: {detail}")

    t0 = time.perf_counter()
    dtypes = [torch.float32] if args.quick else [torch.float32, torch.bfloat16, torch.float16]
    quantisation_checks(args.device, dtypes, record,
                        [s for s in SHAPES if not args.quick or math.prod(s) < 10**6])
    if not args.quick:
        linear_checks(args.device, record)
    failed = [r for r in results if not r["ok"]]
    summary = {"device": args.device, "torch": torch.__version__,
               "bitsandbytes": bitsandbytes.__version__,
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
               "checks": len(results), "failed": len(failed),
               "seconds": round(time.perf_counter() - t0, 1), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"NF4 check on {args.device}: {len(results) - len(failed)} of {len(results)} passed "
          f"in {summary['seconds']} s (torch {torch.__version__}, bitsandbytes "
          f"{bitsandbytes.__version__})")
    return 1 if failed or not math.isfinite(summary["seconds"]) else 0


if __name__ == "__main__":
    sys.exit(main())
