"""Training throughput of a recipe and its model-FLOP utilisation (MFU) on this machine.

    python benchmarks/bench_train.py [--recipe stories] [--steps 20] [--threads N]
                                     [--device cuda] [--dim 768 --n-layers 12] [--batch-size 32]
                                     [--compile]

``--dim``/``--n-layers`` grow the recipe's model (heads of 64 dimensions) to measure at a
GPU-sized scale, e.g. ``--dim 768 --n-layers 12`` (~90M parameters); ``--batch-size``
overrides the recipe's batch. Each step is the trainer's (``minillama.devices``): batches
through pinned memory, the forward pass under the recipe's precision (auto: bf16 autocast
on CUDA, fp32 on the CPU), TF32 on CUDA, fused AdamW on CUDA; ``--compile`` runs the model
through ``torch.compile`` (compiled during the untimed first step).

A transformer's training step costs about 6 * N FLOPs per token (2 forward, 4 backward;
Kaplan et al., arXiv 2001.08361), plus attention's 12 * L * T * D per token (PaLM's
accounting, arXiv 2204.02311). MFU = achieved model FLOP/s / peak FLOP/s, with the peak
*measured* here as the best of several large float32 (CPU) or bf16 (CUDA) matmuls.
"""

import argparse
import dataclasses
import time

import torch

from minillama import Llama
from minillama.devices import autocast, resolve_precision, tf32, to_device
from minillama.recipes import build_data, get_recipe
from minillama.train import get_batch, make_optimizer


def matmul_peak(device, dtype, n=2048, repeats=10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="stories")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default=None,
                    help="cpu or cuda (default: cuda when available, else cpu)")
    ap.add_argument("--dim", type=int, default=None, help="model width (default: the recipe's)")
    ap.add_argument("--n-layers", type=int, default=None,
                    help="number of blocks (default: the recipe's)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="sequences per step (default: the recipe's)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {device}: CUDA is not available")
    device = torch.device(device).type          # the timing code below compares with "cuda"
    recipe = get_recipe(args.recipe)
    _, data, _ = build_data(recipe)
    c, t = recipe.model, recipe.train
    if args.dim or args.n_layers:
        dim = args.dim or c.dim
        c = c.replace(dim=dim, n_layers=args.n_layers or c.n_layers, n_heads=dim // 64,
                      n_kv_heads=dim // 64)
    if args.batch_size:
        t = dataclasses.replace(t, batch_size=args.batch_size)
    torch.manual_seed(0)
    model = Llama(c).to(device)
    opt = make_optimizer(model, t)
    n = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n + 12 * c.n_layers * t.seq_len * c.dim
    net = torch.compile(model) if args.compile else model

    def step(i):
        x, y = to_device(device, *get_batch(data, t.batch_size, t.seq_len, 0, i))
        with autocast(device, t.precision):
            _, loss = net(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with tf32(device, t.precision):
        step(0)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(1, args.steps + 1):
            step(i)
        if device == "cuda":
            torch.cuda.synchronize()
        tok_s = args.steps * t.batch_size * t.seq_len / (time.perf_counter() - t0)
    peak = (matmul_peak(device, torch.bfloat16, n=8192) if device == "cuda" else
            matmul_peak(device, torch.float32))        # a GPU needs big matmuls to peak
    achieved = tok_s * flops_per_token
    print(f"recipe {recipe.name} (dim {c.dim}, {c.n_layers} layers): {n:,} parameters, "
          f"batch {t.batch_size} x {t.seq_len}, {device}, "
          f"{resolve_precision(t.precision, device)}{', compiled' if args.compile else ''}, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"training: {tok_s:,.0f} tokens/s = {achieved / 1e9:.2f} GFLOP/s of model FLOPs")
    print(f"measured matmul peak: {peak / 1e9:.1f} GFLOP/s -> MFU {achieved / peak:.1%}")


if __name__ == "__main__":
    main()
