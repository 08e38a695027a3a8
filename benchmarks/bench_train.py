"""Training throughput of a recipe and its model-FLOP utilisation (MFU) on this machine.

    python benchmarks/bench_train.py [--recipe stories] [--steps 20] [--threads N]

A transformer's training step costs about 6 * N FLOPs per token (2 forward, 4 backward;
Kaplan et al., arXiv 2001.08361), plus attention's 12 * L * T * D per token (PaLM's
accounting, arXiv 2204.02311). MFU = achieved model FLOP/s / peak FLOP/s, with the peak
*measured* here as the best of several large float32 (CPU) or bf16 (CUDA) matmuls.
"""

import argparse
import time

import torch

from minillama import Llama
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    recipe = get_recipe(args.recipe)
    _, data, _ = build_data(recipe)
    torch.manual_seed(0)
    model = Llama(recipe.model).to(device)
    opt = make_optimizer(model, recipe.train)
    c, t = recipe.model, recipe.train
    n = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n + 12 * c.n_layers * t.seq_len * c.dim
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None

    def step(i):
        x, y = get_batch(data, t.batch_size, t.seq_len, 0, i)
        x, y = x.to(device), y.to(device)
        if amp:
            with amp:
                _, loss = model(x, y)
        else:
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(1, args.steps + 1):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    tok_s = args.steps * t.batch_size * t.seq_len / (time.perf_counter() - t0)
    peak = matmul_peak(device, torch.bfloat16 if device == "cuda" else torch.float32)
    achieved = tok_s * flops_per_token
    print(f"recipe {recipe.name}: {n:,} parameters, batch {t.batch_size} x {t.seq_len}, "
          f"{device}, {args.threads} threads, torch {torch.__version__}")
    print(f"training: {tok_s:,.0f} tokens/s = {achieved / 1e9:.2f} GFLOP/s of model FLOPs")
    print(f"measured matmul peak: {peak / 1e9:.1f} GFLOP/s -> MFU {achieved / peak:.1%}")


if __name__ == "__main__":
    main()
