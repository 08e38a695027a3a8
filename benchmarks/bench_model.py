"""Our LLaMA vs transformers' LlamaForCausalLM: same weights, same config, same CPU.

    python benchmarks/bench_model.py [--config base] [--steps 10] [--new-tokens 200]
                                     [--device cuda]

``--device cuda`` runs both sides on the GPU (float32 weights; timings synchronise).

Measures (one run; the two sides alternate for --rounds rounds and each keeps its best
round, so a busy moment on the machine does not decide the ratio):
  * training tokens/s: forward + backward + AdamW step on random tokens;
  * batch-1 decode tokens/s: greedy generation with the KV cache.
Prints a table and the two speed ratios (ours / transformers).

With --profile it also measures, with torch.profiler, what share of transformers' time goes
to kernels both sides run on the same shapes (matmuls, fused attention, SiLU, the loss, the
optimizer). Ours spends about as long in those same kernels, so 1 / share bounds the ratio
any rewrite on PyTorch's kernels could reach. Profiling inflates small operations, so the
bound leans in our favour.
"""

import argparse
import tempfile
import time

import torch
from torch.profiler import profile

import minillama
from minillama import CONFIGS, Llama


def sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def train_tokens_per_s(step, batch, seq, steps):
    step()                                     # warm-up (allocations, lazy init)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * seq * steps / (time.perf_counter() - t0)


# Kernels that do the same arithmetic on the same shapes in both implementations.
SHARED = ("aten::mm", "aten::addmm", "aten::bmm", "aten::silu", "aten::silu_backward",
          "aten::_scaled_dot_product_flash_attention_for_cpu",
          "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
          "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
          "aten::nll_loss_backward", "aten::embedding_dense_backward")


def shared_share(fn, repeats=3):
    """Fraction of fn's profiled CPU time spent in SHARED kernels or the optimizer's foreach ops."""
    fn()
    with profile() as prof:
        for _ in range(repeats):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shared = sum(e.self_cpu_time_total for e in events
                 if e.key in SHARED or e.key.startswith("aten::_foreach_"))
    return shared / total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="base", choices=[n for n in CONFIGS
                                                         if not n.startswith("llama")])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds per side; the best round of each is reported")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--profile", action="store_true",
                    help="also bound the reachable ratios by the share of shared kernels")
    args = ap.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available")
    torch.set_num_threads(args.threads)
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = CONFIGS[args.config].replace(max_seq_len=max(args.seq, args.new_tokens + 16))
    ours = Llama(cfg)
    with tempfile.TemporaryDirectory() as d:
        minillama.save(ours, d, format="hf")
        theirs = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
    ours, theirs = ours.to(args.device), theirs.to(args.device)
    n_params = sum(p.numel() for p in ours.parameters())
    print(f"config {args.config}: {n_params:,} parameters, batch {args.batch} x seq {args.seq}, "
          f"{args.device}, {args.threads} threads, torch {torch.__version__}")

    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=args.device)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=args.device)
    with torch.no_grad():
        diff = (ours.eval()(x[:1]) - theirs.eval()(x[:1]).logits).abs().max().item()
    print(f"max |logit difference| before timing: {diff:.2e}")
    # training changes the two copies by different float round-off; decoding starts again
    # from these identical weights, so the greedy tokens can be compared
    start_o = {k: v.clone() for k, v in ours.state_dict().items()}
    start_t = {k: v.clone() for k, v in theirs.state_dict().items()}
    ours.train()
    theirs.train()
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-4)

    def step_ours():
        _, loss = ours(x, y)
        loss.backward()
        opt_o.step()
        opt_o.zero_grad(set_to_none=True)

    def step_theirs():
        loss = theirs(input_ids=x, labels=y).loss   # HF shifts labels inside; cost is the same
        loss.backward()
        opt_t.step()
        opt_t.zero_grad(set_to_none=True)

    train = {"minillama": 0.0, "transformers": 0.0}
    for _ in range(args.rounds):            # alternate, keep each side's best round
        for name, step in (("minillama", step_ours), ("transformers", step_theirs)):
            speed = train_tokens_per_s(step, args.batch, args.seq, args.steps)
            train[name] = max(train[name], speed)

    ours.load_state_dict(start_o)
    theirs.load_state_dict(start_t)
    ours.eval()
    theirs.eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16), device=args.device)
    n = args.new_tokens

    def decode_ours():
        return ours.generate(prompt, n)

    def decode_theirs():
        out = theirs.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              use_cache=True, pad_token_id=0)
        return out[:, prompt.shape[1]:]

    decode = {"minillama": 0.0, "transformers": 0.0}
    for _ in range(args.rounds):
        for name, fn in (("minillama", decode_ours), ("transformers", decode_theirs)):
            fn()
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            decode[name] = max(decode[name], out.shape[-1] / (time.perf_counter() - t0))
    same = torch.equal(decode_ours()[0], decode_theirs()[0])
    print(f"\n{'':14s} {'train tok/s':>12s} {'decode tok/s':>13s}")
    for name in train:
        print(f"{name:14s} {train[name]:12,.0f} {decode[name]:13,.0f}")
    ratio_train = train["minillama"] / train["transformers"]
    ratio_decode = decode["minillama"] / decode["transformers"]
    print(f"\nratio (minillama / transformers): training {ratio_train:.2f}x, "
          f"batch-1 decode {ratio_decode:.2f}x; greedy tokens identical: {same}")
    if args.profile:
        theirs.train()
        s_train = shared_share(step_theirs)
        theirs.eval()
        s_decode = shared_share(decode_theirs, repeats=1)
        print(f"\ntransformers' time in kernels both sides share: training {s_train:.1%}, "
              f"decode {s_decode:.1%}")
        print(f"upper bound on the ratio if everything else of ours were free: "
              f"training {1 / s_train:.2f}x, decode {1 / s_decode:.2f}x")


if __name__ == "__main__":
    main()
