"""Our MoE layer vs transformers' Llama4TextMoe: same weights, same tiny config, same CPU.

    python benchmarks/bench_moe.py [--dim 128] [--expert-dim 256] [--experts 8] [--k 1]
                                   [--tokens 2048] [--steps 10]

One run, forward + backward of one MoE layer on random activations, the two sides
interleaved step by step so both see the same machine state. transformers runs every
token through every expert (the unselected ones with input 0); ours queues each token
for its k experts only (``minillama.moe.dispatch``). Prints tokens/s and the ratio
ours / transformers, after checking that both layers compute the same output.
"""

import argparse
import time

import torch
from transformers import Llama4TextConfig
from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

from minillama.moe import MoE


def copy_weights(ours: MoE, theirs: Llama4TextMoe):
    """Ours -> transformers' layout (router as is, experts' gate and up fused)."""
    e = ours.experts
    with torch.no_grad():
        theirs.router.weight.copy_(ours.router.weight)
        theirs.experts.gate_up_proj.copy_(torch.cat([e.w1, e.w3], dim=-1))
        theirs.experts.down_proj.copy_(e.w2)
        for mine, name in ((ours.shared_expert.w1, "gate_proj"), (ours.shared_expert.w3, "up_proj"),
                           (ours.shared_expert.w2, "down_proj")):
            getattr(theirs.shared_expert, name).weight.copy_(mine.weight)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--expert-dim", type=int, default=256)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=2048, help="batch 4 x tokens/4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = MoE(args.dim, args.expert_dim, args.experts, args.k)
    theirs = Llama4TextMoe(Llama4TextConfig(
        hidden_size=args.dim, intermediate_size=args.expert_dim, num_local_experts=args.experts,
        num_experts_per_tok=args.k, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=4, head_dim=args.dim // 4, vocab_size=32))
    copy_weights(ours, theirs)
    x = torch.randn(4, args.tokens // 4, args.dim)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)[0].view_as(x)).abs().max().item()
    print(f"MoE layer: D={args.dim}, expert width {args.expert_dim}, {args.experts} experts, "
          f"top-{args.k}, {x.shape[0] * x.shape[1]} tokens, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"max |output difference| before timing: {diff:.2e}")

    def step_ours():
        ours(x).square().mean().backward()

    def step_theirs():
        theirs(x)[0].square().mean().backward()

    times = {"ours": 0.0, "transformers": 0.0}
    step_ours(), step_theirs()                       # warm-up
    for _ in range(args.steps):
        for name, step in (("ours", step_ours), ("transformers", step_theirs)):
            t0 = time.perf_counter()
            step()
            times[name] += time.perf_counter() - t0
    rate = {k: x.shape[0] * x.shape[1] * args.steps / t for k, t in times.items()}
    for name, r in rate.items():
        print(f"{name:13s} forward+backward {r:10,.0f} tokens/s")
    print(f"ratio ours / transformers: {rate['ours'] / rate['transformers']:.2f}x")


if __name__ == "__main__":
    main()
