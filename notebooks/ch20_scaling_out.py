# %% [markdown]
# # Chapter 20 — Scaling out: DDP with torchrun, and what FSDP adds
#
# LLaMA 1 65B was trained on 2,048 A100s (arXiv 2302.13971); Llama 3 405B on up to
# 16K H100s (arXiv 2407.21783). Both start from the same idea this chapter runs on two
# CPU processes: **data parallelism**. Every process holds the whole model, takes its
# slice of the global batch, and before each optimiser step the processes average their
# gradients with an all-reduce, so every copy takes the same step:
#
# $$g = \frac{1}{N}\sum_{r=1}^{N} g_r, \qquad g_r = \nabla_\theta \frac{1}{B/N}\sum_{i \in \text{slice}_r} \ell_i$$
#
# With equal slices, $g$ is exactly the gradient of the global batch: a 2-process run
# must reproduce the single-process losses (up to float rounding in the sum order).
# `minillama/train.py` does this with PyTorch's `DistributedDataParallel`; `torchrun`
# starts the processes and `setup_distributed()` joins them. **FSDP** (`--parallel fsdp`)
# goes further: it also splits the weights, gradients and optimiser state between the
# processes. This chapter runs both and measures what each process holds.
#
# Processes talk through a *backend*: NCCL between GPUs, gloo between CPU processes.
# NCCL wants a GPU of its own for every process (it refuses two ranks on one device), so
# `minillama.distributed.placement(world)` picks NCCL on CUDA when the machine has at least
# `world` GPUs and gloo on the CPU otherwise: with one GPU, two processes share the CPU.
# The command line's `--device auto` makes the same choice under `torchrun`.

# %%
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minillama import count_parameters, course
from minillama.distributed import placement

PROFILE = course.setup().profile
STEPS = 20 if PROFILE == "cpu" else 150
BATCH = 64                          # the global batch: 32 sequences per process with two
STOP = STEPS // 2                   # where the interrupted FSDP run stops
WORLD = 2
BACKEND, DEVICE = placement(WORLD)
ROOT = Path(os.path.abspath(".."))
work = Path(tempfile.mkdtemp(prefix="ch20-"))
print(f"profile={PROFILE}, {STEPS} steps, scratch {work}")
print(f"{torch.cuda.device_count()} GPU(s) here: {WORLD} processes use {BACKEND} on {DEVICE}")
assert (DEVICE == "cuda") == (torch.cuda.device_count() >= WORLD)

# %% [markdown]
# ## 1. One run, three ways, and an interruption
#
# Every run uses the `tiny-stories` recipe with the same global batch of 64 sequences
# (`--batch-size 64`, four times the recipe's, so that computing dominates a step and the
# timings below measure it); under `torchrun --nproc_per_node=2` each process computes 32
# of them. One process and DDP run to the end. The FSDP run is stopped halfway
# (`--stop-after`), as if the job had been killed, leaving its sharded checkpoint (`ckpt/`,
# one file per process); then **one** process resumes it (`--resume`) to the end,
# reading both halves.

# %%
env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={WORLD}"]


def cli(out, processes=1, *extra):
    """``python -m minillama train`` (under torchrun for 2 processes): (wall time, stdout)."""
    launcher = TORCHRUN if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "minillama", "train", "--recipe", "tiny-stories",
           "--steps", str(STEPS), "--batch-size", str(BATCH), "--log-every", "1",
           "--device", DEVICE, "--out", str(work / out), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-4000:])
        raise RuntimeError(f"{out} failed")
    return time.perf_counter() - t0, done.stdout


def metrics(out):
    return [json.loads(line) for line in open(work / out / "metrics.jsonl")]


def card(out):
    return json.loads((work / out / "model" / "card.json").read_text())


ONE, DDP, FSDP, RESUMED = ("1 process", f"DDP, {WORLD} processes",
                           f"FSDP, {WORLD} processes", "FSDP, resumed by 1")
wall, logs, held = {}, {}, {}
for name, out, processes in [(ONE, "single", 1), (DDP, "ddp", WORLD)]:
    wall[name], _ = cli(out, processes)
    logs[name], held[name] = metrics(out), card(out)["held_bytes"]
wall[FSDP], printed = cli("fsdp", WORLD, "--parallel", "fsdp", "--stop-after", str(STOP))
logs[FSDP], held[FSDP] = metrics("fsdp"), json.loads(printed)["held_bytes"]
left = sorted(os.listdir(work / "fsdp" / "ckpt"))
print(f"checkpoint left at step {STOP}:", left)
assert left == sorted([".metadata", "config.json", *(f"__{r}_0.distcp" for r in range(WORLD))])
wall[RESUMED], _ = cli("fsdp", 1, "--parallel", "fsdp", "--resume")
resumed, held[RESUMED] = metrics("fsdp"), card("fsdp")["held_bytes"]   # steps 1..STEPS
for name, seconds in wall.items():
    print(f"{name:22s} finished in {seconds:5.1f} s (including start-up and data building)")

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for (name, log), style in zip(logs.items(), ["o-", "x--", "+:"]):
    label = name + (f", steps 1-{STOP}" if name == FSDP else "")
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], style, label=label, ms=5)
tail = resumed[STOP:]
ax.plot([r["step"] for r in tail], [r["loss"] for r in tail], "s", mfc="none", ms=7,
        label=f"FSDP stopped at {STOP}, resumed by 1 process")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()


def gap(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    return max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))


TOL = 1e-4
gaps = {"DDP vs 1 process": gap(logs[ONE], logs[DDP]),
        "FSDP, then resumed, vs 1 process": gap(logs[ONE], resumed)}
for name, g in gaps.items():
    print(f"largest loss difference, {name:32s} over {STEPS} steps: {g:.2e}")
assert len(logs[ONE]) == STEPS and [r["step"] for r in logs[FSDP]] == list(range(1, STOP + 1))
assert resumed[:STOP] == logs[FSDP]                  # the resumed run kept the first half
assert all(g < TOL for g in gaps.values())

# %% [markdown]
# The curves lie on top of each other: data parallelism changes *where* the gradient is
# computed, not *what* it is. DDP agrees with one process to within `TOL` = 1e-4 in the
# loss at every step (the differences printed above are far smaller: float rounding,
# because the halves of a gradient are summed in another order). So does FSDP, over its
# two halves: the steps two processes took before the interruption, and the steps one
# process took after reading the two shards back. A sharded checkpoint is not tied to the
# number of processes that wrote it.

# %%
def step_times(log):
    """How long each step took (a log line's "time" counts from the start of the loop)."""
    ends = [0.0] + [r["time"] for r in log]
    return [b - a for a, b in zip(ends, ends[1:])]


median = {name: statistics.median(step_times(log)) for name, log in logs.items()}
loop = {name: log[-1]["time"] for name, log in logs.items()}
outside = {name: wall[name] - loop[name] for name in logs}
print(f"{'run':22s} {'steps':>5s} {'median step':>12s} {'loop':>8s} {'outside the loop':>17s}")
for name, log in logs.items():
    print(f"{name:22s} {len(log):5d} {median[name] * 1000:9.0f} ms {loop[name]:6.1f} s "
          f"{outside[name]:15.1f} s")
speedup = {"the loop": loop[ONE] / loop[DDP], "the whole run": wall[ONE] / wall[DDP]}
print("DDP against one process:", ", ".join(f"{k} {v:.2f}x as fast" for k, v in speedup.items()))
if DEVICE == "cpu":                             # one core each: half the batch each
    assert median[DDP] < median[ONE]
assert speedup["the loop"] > speedup["the whole run"]   # start-up is not shared out
assert median[FSDP] > median[DDP]               # FSDP's step: slower than DDP's

# %% [markdown]
# The table compares the **median** step (FSDP's over the steps before its interruption,
# which two processes took): on a shared machine a single step can be slowed
# by anything else running, and a synchronous step waits for the slower process, so one
# slow moment in either process delays both; the median is not moved by a few such steps.
# On two CPU cores the median DDP step was faster than one process's: each process
# computes 32 sequences on its own core, and the all-reduce of the gradients costs less
# than that saves (both still run the whole AdamW update, which does not shrink). The whole
# run gained less than its loop (the last line above): the time outside the loop is not
# shared out. `torchrun` starts first, then each of the two interpreters imports PyTorch,
# builds the data and joins the group: none of that gets shorter with a second process. This is
# Amdahl's law: the part that does not run in parallel bounds the speed-up, and it weighs
# most in a short run like this one; a run of hours pays it once.
#
# On GPUs each process owns a device and the step time falls almost linearly with the
# number of processes until communication dominates, but only for a model whose step is
# arithmetic: this 164K-parameter model's step on a GPU is bound by kernel launches, so
# the notebook asserts the faster DDP step only where the processes run on CPU cores.
# FSDP's step was slower than DDP's: for every block it gathers the weights before the
# forward and again before the backward, and reduce-scatters the gradients, where DDP
# sends the gradients once; that is the price of holding only a share of the state (next
# section). An all-reduce of $P$ gradient bytes costs each GPU $2\,\frac{N-1}{N} P$ bytes
# of traffic (ring algorithm), which stays below $2P$ however large $N$ grows.
#
# ## 2. What each process holds
#
# DDP keeps a full copy of the weights, their gradients and AdamW's two moments in every
# process. FSDP (the ZeRO-3 idea, arXiv 1910.02054; PyTorch's FSDP, arXiv 2304.11277)
# cuts every tensor in $N$ pieces along its first dimension, one per process. Before a
# block runs, its pieces are put together by an all-gather and dropped again after use;
# its gradients are summed and cut up by a reduce-scatter, so each process updates only
# its own piece with its own piece of the optimiser state. The command line records, after
# the first optimiser step, the bytes each process held, counted from its tensors (local
# shards under FSDP, `minillama.distributed.held_bytes`), in the run's `card.json`:

# %%
KINDS = ("parameters", "gradients", "optimizer")
print(f"{'run':22s} {'process':>7s} " + " ".join(f"{k + ' KiB':>15s}" for k in KINDS))
for name, ranks in held.items():
    for rank, h in enumerate(ranks):
        print(f"{name:22s} {rank:7d} " + " ".join(f"{h[k] / 1024:15.1f}" for k in KINDS))
whole = held[ONE][0]
n_params = card("single")["parameters"]
print(f"{n_params:,} parameters: {whole['parameters'] / n_params:.0f} bytes each (fp32); "
      f"AdamW state {whole['optimizer'] / n_params:.2f} bytes per parameter")
share = [h["parameters"] / whole["parameters"] for h in held[FSDP]]
print("share of the weights held by each FSDP process:", [round(x, 3) for x in share])
assert all(h == whole for h in held[DDP])                       # DDP: full replicas
for h in held[FSDP]:
    assert all(0.45 < h[k] / whole[k] < 0.55 for k in KINDS)     # FSDP: about half each
assert sum(h["parameters"] for h in held[FSDP]) == whole["parameters"]
assert held[RESUMED] == [whole]                                 # one process: all of it

# %% [markdown]
# One process holds 4 bytes per parameter for the fp32 weights, 4 for their gradients and
# a little over 8 for AdamW's two moments (plus a 4-byte step count per tensor). Under DDP
# each of the two processes holds exactly that again (DDP also keeps gradient buckets for
# its all-reduce, which these counts leave out). Under FSDP each process holds about half
# of each, and the two halves of the weights add up to the whole. A one-process run that
# resumes an FSDP checkpoint holds everything again.
#
# ## 3. When the model no longer fits
#
# With mixed-precision AdamW, DDP's full copy is about 16 bytes per parameter (bf16
# weights 2 + bf16 grads 2 + fp32 master weights 4 + Adam moments 8), before activations.
# FSDP over $N$ devices leaves ~16/N bytes per parameter on each, plus one block's full
# weights while it runs:

# %%
BYTES_PER_PARAM = 2 + 2 + 4 + 8
GPU_GIB = 80
print(f"{'model':14s} {'params':>8s} {'DDP GiB/GPU':>12s} " + " ".join(
    f"{'FSDP N=' + str(n):>12s}" for n in (8, 64, 512)))
rows = {}
for name in ["llama3.2-1b", "llama2-7b", "llama3-8b", "llama2-70b", "llama3.1-405b"]:
    n = count_parameters(name)
    ddp_gib = n * BYTES_PER_PARAM / 2**30
    rows[name] = [ddp_gib / k for k in (1, 8, 64, 512)]
    print(f"{name:14s} {n / 1e9:7.1f}B {ddp_gib:12.0f} " + " ".join(
        f"{ddp_gib / k:12.1f}" for k in (8, 64, 512)))

fig, ax = plt.subplots(figsize=(7, 3.5))
ns = [1, 8, 64, 512]
for name, gib in rows.items():
    ax.loglog(ns, gib, "o-", label=name)
ax.axhline(GPU_GIB, color="red", ls=":", label=f"{GPU_GIB} GiB GPU")
ax.set_xlabel("devices N sharing the state (1 = DDP)")
ax.set_ylabel("weights + grads + Adam, GiB per device")
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
for name, gib in rows.items():
    print(f"{name:14s} needs at least {max(1, int(-(-gib[0] // GPU_GIB))):3d} devices of "
          f"{GPU_GIB} GiB for its training state alone")
assert rows["llama2-7b"][0] > GPU_GIB > rows["llama2-7b"][1]      # DDP no, FSDP over 8 yes
assert rows["llama3.1-405b"][0] / GPU_GIB > 24                     # dozens of devices

# %% [markdown]
# Reading the table: a 7B model's training state does not fit one 80 GiB GPU under DDP, but
# sharded over 8 GPUs it does. Llama 3.1 405B needs its state spread over dozens of
# devices before activations are even counted, which is why Meta combined FSDP-style
# sharding with tensor, pipeline and context parallelism ("4D parallelism", arXiv 2407.21783).
# In PyTorch the change from DDP is small, as `minillama/distributed.py` shows: wrap each
# `Block`, then the whole model, with `torch.distributed.fsdp.fully_shard` instead of
# wrapping the model in `DistributedDataParallel`; the training loop stays the same.
#
# ## Exercises
#
# `exercises/ch20_scaling_out.py`: simulate the ring all-reduce (reduce-scatter, then
# all-gather) and count the elements each rank sends, $2\,\frac{N-1}{N}$ of the tensor;
# then compute the gradient $N$ data-parallel ranks agree on, in one process. The graders
# compare them with `torch.distributed.all_reduce` and `DistributedDataParallel` on gloo,
# in forked CPU processes. Grade your work with the cell below (set `IMPL = "exercises"`);
# as shipped it grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch20", impl=IMPL)
