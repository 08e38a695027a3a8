"""NF4 speed against bitsandbytes (bit-exact, same tensors), and what QLoRA saves in memory.

    python benchmarks/bench_nf4.py [--size 4096] [--repeats 3] [--threads 1]
                                   [--base stories] [--r 8] [--batch 8] [--seq 128]

Throughput: ``minillama.quant.nf4.quantize`` + ``dequantize`` against
``bitsandbytes.functional.quantize_4bit`` + ``dequantize_4bit`` (NF4, blocks of 64) on the
same size x size matrix, fp32 and bf16, with and without double quantisation. GB/s is
bytes of input over (quantise + dequantise) time, each the fastest of ``--repeats`` runs
taken in turns. The same run checks that packed bytes, state and dequantised tensor are
identical in every bit. Both libraries get the same threads (torch.set_num_threads and
OMP_NUM_THREADS, which bitsandbytes' C++ kernels read): one by default.

Memory: one AdamW training step of full fine-tuning, LoRA and QLoRA (the same rank and
targets: all seven linears) on the same model. On CUDA: torch.cuda.max_memory_allocated.
On the CPU there is no allocator high-water mark, so the script adds up the tensors the
step holds: weights (QLoRA: packed 4-bit codes and their state), gradients, AdamW state
and the activations autograd saves for backward (counted once per storage). That is
tensor accounting, not a measured peak: it leaves out short-lived temporaries such as
the one weight a 4-bit layer dequantises at a time.
"""

import argparse
import os


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base", default="stories")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    if min(args.size, args.repeats, args.threads, args.r, args.batch, args.seq) < 1:
        raise ValueError("every numeric option must be positive")
    return args


ARGS = parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)     # before torch / bitsandbytes load

import copy  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from minillama import CONFIGS, Llama  # noqa: E402
from minillama import peft as P  # noqa: E402
from minillama.peft.lora import TARGETS  # noqa: E402
from minillama.quant import nf4  # noqa: E402


def fastest(fns: dict, repeats: int) -> dict:
    """Seconds of the fastest call of each function, calling them in turn."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(t) for name, t in times.items()}


def same_bits(a, b) -> bool:
    view = {4: torch.int32, 2: torch.int16, 1: torch.uint8}[a.element_size()]
    return a.dtype == b.dtype and torch.equal(a.contiguous().view(view),
                                              b.contiguous().view(view))


def compare(x, dq: bool, repeats: int) -> tuple[dict, bool]:
    """Fastest quantise / dequantise times of both libraries on ``x``, and bit-exactness."""
    import bitsandbytes.functional as F
    ours_q = lambda: nf4.quantize(x, 64, dq)
    bnb_q = lambda: F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq)
    (p1, s1), (p2, s2) = ours_q(), bnb_q()
    ours_dq = lambda: nf4.dequantize(p1, s1)
    bnb_dq = lambda: F.dequantize_4bit(p2, s2, quant_type="nf4")
    t = fastest({"ours q": ours_q, "bnb q": bnb_q, "ours dq": ours_dq, "bnb dq": bnb_dq},
                repeats)
    exact = torch.equal(p1, p2.view(-1)) and same_bits(ours_dq(), bnb_dq())
    if dq:
        exact = exact and torch.equal(s1.absmax, s2.absmax) and same_bits(
            s1.nested_absmax, s2.state2.absmax) and same_bits(s1.offset, s2.offset)
    else:
        exact = exact and same_bits(s1.absmax, s2.absmax)
    return t, exact


def throughput(size: int, repeats: int):
    print(f"NF4 quantise + dequantise, {size} x {size}, blocks of 64, CPU, "
          f"{torch.get_num_threads()} thread(s), fastest of {repeats}")
    print(f"{'dtype':10s}{'double':>7s}{'ours q/dq ms':>16s}{'bnb q/dq ms':>16s}"
          f"{'ours GB/s':>11s}{'bnb GB/s':>10s}{'speed-up':>10s}{'bit-exact':>11s}")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(size, size, generator=g) * 0.02
    for dtype in (torch.float32, torch.bfloat16):
        x = base.to(dtype)
        for dq in (False, True):
            t, exact = compare(x, dq, repeats)
            nbytes = x.numel() * x.element_size()
            ours, bnb = t["ours q"] + t["ours dq"], t["bnb q"] + t["bnb dq"]
            print(f"{str(dtype).removeprefix('torch.'):10s}{str(dq):>7s}"
                  f"{1e3 * t['ours q']:>9.0f} /{1e3 * t['ours dq']:>5.0f}"
                  f"{1e3 * t['bnb q']:>10.0f} /{1e3 * t['bnb dq']:>5.0f}"
                  f"{nbytes / ours / 1e9:>11.3f}{nbytes / bnb / 1e9:>10.3f}"
                  f"{bnb / ours:>9.2f}x{str(exact):>11s}")


# ----------------------------------------------------------------------------- memory
def storages(tensors) -> dict:
    """Each distinct storage behind ``tensors`` once: (pointer, device) -> bytes."""
    return {(t.untyped_storage().data_ptr(), t.device): t.untyped_storage().nbytes()
            for t in tensors if t is not None}


def tensor_bytes(tensors, exclude=()) -> int:
    return sum(v for k, v in storages(tensors).items() if k not in exclude)


def step_memory(model, x, y, device) -> dict:
    """One AdamW step; bytes of weights, grads, optimiser state, saved activations, peak."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    saved = []
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _, loss = model(x, y)
    held = storages([*model.parameters(), *model.buffers()])
    activations = tensor_bytes(saved, exclude=held)      # saved weights are not activations
    saved.clear()
    loss.backward()
    opt.step()
    weights = sum(held.values())
    grads = tensor_bytes(p.grad for p in trainable)
    state = tensor_bytes(v for s in opt.state.values() for v in s.values()
                         if isinstance(v, torch.Tensor) and v.dim() > 0)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return dict(trainable=sum(p.numel() for p in trainable), weights=weights, grads=grads,
                adam=state, activations=activations, peak=peak)


def memory(base_name: str, r: int, batch: int, seq: int):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if base_name in CONFIGS:
        torch.manual_seed(0)
        base = Llama(CONFIGS[base_name])
    else:
        from minillama.reference import load_reference
        base = load_reference(base_name)[0]
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, base.cfg.vocab_size, (batch, seq + 1), generator=g).to(device)
    x, y = tok[:, :-1], tok[:, 1:]
    variants = {"full FT": lambda m: m,
                f"LoRA r={r} all 7": lambda m: P.apply(m, "lora", r=r, targets=TARGETS),
                f"QLoRA r={r} all 7": lambda m: P.apply(m, "qlora", r=r, dropout=0.0)}
    how = ("torch.cuda.max_memory_allocated" if device == "cuda"
           else "tensor accounting (CPU: weights + grads + AdamW + saved activations)")
    print(f"\nTraining-step memory, base {base_name}, batch {batch} x {seq}, {device}: {how}")
    print(f"{'variant':20s}{'trainable':>11s}{'weights MB':>12s}{'grads MB':>10s}"
          f"{'AdamW MB':>10s}{'activ. MB':>11s}{'total MB':>10s}{'vs full':>9s}")
    full = None
    for name, make in variants.items():
        model = make(copy.deepcopy(base)).to(device).train()
        m = step_memory(model, x, y, device)
        total = m["peak"] if m["peak"] is not None else (
            m["weights"] + m["grads"] + m["adam"] + m["activations"])
        full = full or total
        mb = lambda v: f"{v / 2**20:.2f}"
        print(f"{name:20s}{m['trainable']:>11,d}{mb(m['weights']):>12s}{mb(m['grads']):>10s}"
              f"{mb(m['adam']):>10s}{mb(m['activations']):>11s}{mb(total):>10s}"
              f"{total / full:>9.2f}")
        del model


def main():
    torch.set_num_threads(ARGS.threads)
    throughput(ARGS.size, ARGS.repeats)
    memory(ARGS.base, ARGS.r, ARGS.batch, ARGS.seq)


if __name__ == "__main__":
    main()
