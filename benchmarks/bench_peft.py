"""LoRA's two speed claims, measured: cheaper training steps and zero added inference latency.

    python benchmarks/bench_peft.py [--base stories] [--batch 8] [--seq 128] [--repeats 10]

Training: one AdamW step (forward, backward, optimiser) of full fine-tuning vs LoRA
(r = 8, on wq, wv and on all seven linears) on the same model and batch. LoRA skips the
weight gradients of the frozen matrices and their optimiser update, but still computes
the gradients with respect to every layer's input, so a step costs about 2/3 of a full
one at best (forward 1, input gradients 1, weight gradients 1: LoRA drops most of the last).

Inference: a forward pass of the base model, of the LoRA model unmerged (two extra thin
matmuls per adapted linear) and of the same model after ``minillama.peft.merge``
(W0 + s B A folded in: the base model's own cost, the "zero added latency" claim).

Each time is the fastest of ``--repeats`` runs, the variants taking turns so a change of
the machine's load hits them all alike. ``--base`` is a reference checkpoint name or
path, or a ``CONFIGS`` name for a randomly initialised model.
"""

import argparse
import copy
import time

import torch

from minillama import CONFIGS, Llama
from minillama import peft as P
from minillama.peft.lora import TARGETS
from minillama.train import TrainConfig, make_optimizer


def load_base(name: str, device: str) -> Llama:
    if name in CONFIGS:
        torch.manual_seed(0)
        return Llama(CONFIGS[name]).to(device)
    from minillama.reference import load_reference
    return load_reference(name, device=device)[0]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def fastest(fns: dict, repeats: int, device: str) -> dict:
    """Milliseconds of the fastest call of each function, calling them in turn."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: 1000 * min(t) for name, t in times.items()}


def train_step(model, x, y):
    optimizer = make_optimizer(model, TrainConfig())

    def step():
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="stories")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    if min(args.batch, args.seq, args.repeats, args.threads) < 1:
        raise ValueError("--batch, --seq, --repeats and --threads must be positive")
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_base(args.base, device)
    if args.seq > base.cfg.max_seq_len:
        raise ValueError(f"--seq {args.seq} exceeds the model's max_seq_len "
                         f"{base.cfg.max_seq_len}")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, base.cfg.vocab_size, (args.batch, args.seq + 1), generator=g)
    x, y = x[:, :-1].to(device), x[:, 1:].to(device)
    n = sum(p.numel() for p in base.parameters())
    print(f"base {args.base}: {n:,} parameters; batch {args.batch} x {args.seq} tokens; "
          f"{device}, {torch.get_num_threads()} threads; fastest of {args.repeats}")

    variants = {"full FT": copy.deepcopy(base).train(),
                "LoRA r=8 q,v": P.apply(copy.deepcopy(base), "lora", r=8,
                                        targets=("wq", "wv")).train(),
                "LoRA r=8 all 7": P.apply(copy.deepcopy(base), "lora", r=8,
                                          targets=TARGETS).train()}
    steps = {name: train_step(m, x, y) for name, m in variants.items()}
    for fn in steps.values():                        # warm up (and create AdamW state)
        fn()
    ms = fastest(steps, args.repeats, device)
    print(f"\n{'training step':22s}{'trainable':>12s}{'ms':>10s}{'vs full':>9s}")
    for name, m in variants.items():
        trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
        print(f"{name:22s}{trainable:>12,d}{ms[name]:>10.1f}{ms[name] / ms['full FT']:>9.2f}")

    lora = variants["LoRA r=8 all 7"].eval()
    with torch.no_grad():
        for p in lora.parameters():              # a trained-looking update: B != 0
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    merged = P.merge(copy.deepcopy(lora))
    base.eval()
    with torch.no_grad():
        gap = (merged(x) - lora(x)).abs().max().item()
        ms = fastest({"base": lambda: base(x), "LoRA unmerged": lambda: lora(x),
                      "LoRA merged": lambda: merged(x)}, args.repeats, device)
    print(f"\n{'inference forward':22s}{'ms':>10s}{'vs base':>9s}")
    for name, t in ms.items():
        print(f"{name:22s}{t:>10.1f}{t / ms['base']:>9.2f}")
    print(f"merged vs unmerged logits: max |diff| = {gap:.1e}")


if __name__ == "__main__":
    main()
