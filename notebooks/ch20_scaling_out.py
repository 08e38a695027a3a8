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
# starts the processes and `setup_distributed()` joins them (gloo on CPU, NCCL on GPUs).

# %%
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt

from minillama import count_parameters, course

PROFILE = course.setup().profile
STEPS = 30 if PROFILE == "cpu" else 300
ROOT = Path(os.path.abspath(".."))
work = Path(tempfile.mkdtemp(prefix="ch20-"))
print(f"profile={PROFILE}, {STEPS} steps, scratch {work}")

# %% [markdown]
# ## 1. The same run, once with one process and once with two
#
# Both runs use the `tiny-stories` recipe with the same global batch (16 sequences);
# under `torchrun --nproc_per_node=2` each process computes 8 of them.

# %%
env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
common = ["-m", "minillama", "train", "--recipe", "tiny-stories", "--steps", str(STEPS),
          "--log-every", "1", "--device", "cpu"]
runs = {
    "1 process": [sys.executable, *common, "--out", str(work / "single")],
    "2 processes (DDP, gloo)": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                "--nproc_per_node=2", *common, "--out", str(work / "ddp")],
}
logs, wall = {}, {}
for name, cmd in runs.items():
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall[name] = time.perf_counter() - t0
    if done.returncode:
        print(done.stderr[-2000:])
        raise RuntimeError(f"{name} failed")
    out = cmd[cmd.index("--out") + 1]
    logs[name] = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
    print(f"{name:26s} finished in {wall[name]:5.1f} s (including start-up and data building)")

# %%
single, ddp = (logs[k] for k in runs)
fig, ax = plt.subplots(figsize=(7, 3.5))
for name, log in logs.items():
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], "o-" if "1" in name else "x--",
            label=name, ms=4)
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.legend()
plt.tight_layout()
plt.show()
gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(single, ddp))
print(f"largest loss difference between the two runs over {len(single)} logged steps: {gap:.2e}")
assert [r["step"] for r in single] == [r["step"] for r in ddp]
assert gap < 1e-4
loop = {name: log[-1]["time"] for name, log in logs.items()}
for name in runs:
    print(f"{name:26s} wall {wall[name]:5.1f} s, of which the training loop {loop[name]:5.1f} s")
assert loop["2 processes (DDP, gloo)"] < loop["1 process"]       # the loop: faster with two
assert wall["2 processes (DDP, gloo)"] > wall["1 process"]       # the whole run: slower

# %% [markdown]
# The curves lie on top of each other: data parallelism changes *where* the gradient is
# computed, not *what* it is. On two CPU cores the training loop itself was faster with two
# processes (each computes half the batch on its own core; the all-reduce costs less than
# that saves), but the whole run took longer: torchrun starts two interpreters that each
# build the data, and at this run's length that start-up outweighs the loop's saving (the
# figures above). On GPUs each process owns a
# device and the per-step time falls almost linearly until communication dominates. An
# all-reduce of $P$ gradient bytes costs each GPU $2\,\frac{N-1}{N} P$ bytes of traffic
# (ring algorithm), which stays below $2P$ however large $N$ grows.
#
# ## 2. When the model no longer fits: what FSDP adds
#
# DDP keeps a full copy of everything on every device. With mixed-precision AdamW that is
# about 16 bytes per parameter (bf16 weights 2 + bf16 grads 2 + fp32 master weights 4 +
# Adam moments 8), before activations. Fully Sharded Data Parallel (FSDP, the ZeRO-3 idea,
# arXiv 1910.02054 and arXiv 2304.11277) shards all three across the $N$ devices and
# gathers each layer's weights only while that layer runs, so the resident state is
# ~16/N bytes per parameter plus one layer's full weights.

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
# In PyTorch the change from this chapter's DDP is small: wrap each `Block` with
# `torch.distributed.fsdp.fully_shard` instead of wrapping the whole model in
# `DistributedDataParallel`; the training loop itself stays the same.
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
