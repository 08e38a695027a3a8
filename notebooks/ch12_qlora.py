# %% [markdown]
# # Chapter 12 — QLoRA: LoRA on a 4-bit base
#
# LoRA (chapter 7) trains a small fraction of the parameters, but the frozen base sits in
# GPU memory in 16 bits: 131 GB for a 65B LLaMA (section 7). QLoRA (Dettmers et al., arXiv
# 2305.14314) stores that frozen base in NF4 (chapter 11) and trains LoRA on top. Every
# linear layer of the blocks computes, in the paper's notation (eq. 5),
#
# $$Y = X\,\mathrm{doubleDequant}(c_1^{\text{FP32}}, c_2^{\text{8-bit}}, W^{\text{NF4}})
#   + s\, X L_1 L_2,$$
#
# where $c_2$ are the 8-bit block scales, $c_1$ the fp32 scales of those, and
# $L_1 L_2$ LoRA's two thin matrices ($A^\top B^\top$ in chapter 7's names). The 4-bit
# weight is only a storage format: each forward (and backward) dequantises it, multiplies,
# and throws the full-precision copy away. Gradients flow *through* the frozen weight to
# the input, and *into* $L_1, L_2$ only. Three pieces made a 65B fine-tune fit on one 48 GB
# GPU: NF4, double quantisation, and **paged optimisers**, which park the optimiser state
# in CPU memory when the GPU runs short.
#
# | piece | file |
# |---|---|
# | `apply(model, "qlora", ...)`, `merge` | `minillama/peft/__init__.py`, `peft/qlora.py` |
# | `Linear4bit`: packed NF4 weight, dequantise in forward and backward | `quant/linear4bit.py` |
# | NF4 quantise / dequantise (chapter 11) | `minillama/quant/nf4.py` |
# | response-only fine-tuning, `optimizer=` for a paged AdamW | `minillama/finetune.py` |
# | the PEFT benchmark: base, data, budget, shipped adapters | `minillama/tasks/bench.py` |
#
# The base and the task are chapter 7's PEFT benchmark (`minillama/tasks/bench.py`): the
# `peft-base` reference has mastered seven task families in the plain form of its
# pretraining text and almost never answers them in the Alpaca template; instruction
# tuning teaches it the template. We compare QLoRA with 16-bit LoRA at the same rank,
# targets ($W_q, W_v$), learning rate and steps, on accuracy, trainable parameters and
# memory.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains QLoRA live
# for a few steps to show the mechanics, then loads the benchmark's shipped `qlora` and
# `lora-qv` adapters (sha256-checked) and re-measures both on the 500 test problems;
# `full` (the default on CUDA) trains both live on the same budget, on its own base,
# 12.5 times the size (`bench.base`), with bitsandbytes' 4-bit matmul, and its paged
# AdamW for the short run. The figures the text quotes are the CPU profile's, and the
# cells assert them there; the full profile prints its own.

# %%
import copy
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

from minillama import CONFIGS, Llama, course
from minillama import peft as P
from minillama.data import format_prompt
from minillama.finetune import finetune, generate_answers, greedy_score, sft_batch, sft_tokens
from minillama.peft.lora import TARGETS, LoRALinear
from minillama.quant import Linear4bit, dequantize, quantize, storage_bits
from minillama.tasks import bench

PROFILE, DEVICE = course.setup()
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. What `apply(model, "qlora")` builds
#
# It replaces every linear layer of the blocks (not the embeddings, not the head) by a
# `Linear4bit` (NF4, blocks of 64, double quantisation) and wraps LoRA around the
# targets: here the benchmark's, $r=8$ on $W_q$ and $W_v$. The packed weight and its quantisation state are *buffers*: nothing in them
# can be trained.

# %%
base, tok, card = bench.base(PROFILE, DEVICE)     # full profile: trained on first use
base = base.cpu()                                 # this section looks at it on the CPU
n_base = sum(p.numel() for p in base.parameters())
print(f"base: {card['recipe']}, {n_base:,} parameters, {base.cfg.n_layers} blocks of dim "
      f"{base.cfg.dim}")
QLORA = bench.method("qlora")
R, ALPHA, QV = QLORA.options["r"], QLORA.options["alpha"], list(QLORA.options["targets"])
qlora = P.apply(copy.deepcopy(base), "qlora", r=R, alpha=ALPHA, dropout=0.0, targets=QV)
wq = qlora.layers[0].attention.wq
print(wq)
print("buffers:", {k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
                   for k, v in wq.base.named_buffers()})
print("trainable:", [k for k, p in wq.named_parameters() if p.requires_grad])
print(f"trainable parameters: {P.trainable_parameters(qlora):,} "
      f"({P.trainable_parameters(qlora) / n_base:.2%} of the base)")
n_4bit = sum(isinstance(m, Linear4bit) for m in qlora.modules())
assert n_4bit == 7 * base.cfg.n_layers and not any(p.requires_grad for p in wq.base.parameters())

# %% [markdown]
# **QLoRA is LoRA on the dequantised weights.** A LoRA model whose frozen linears hold
# $\mathrm{dequant}(\mathrm{quant}(W))$ and the same $A, B$ computes the same logits. We
# give $A$ and $B$ random values first (at initialisation $B$ is zero, and both models
# would trivially agree with their base).

# %%
lora_on_dq = copy.deepcopy(base)
with torch.no_grad():
    for layer in lora_on_dq.layers.modules():
        if isinstance(layer, nn.Linear):
            layer.weight.copy_(dequantize(*quantize(layer.weight)))
P.apply(lora_on_dq, "lora", r=R, alpha=ALPHA, targets=QV)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in qlora.parameters():
        if p.requires_grad:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    lora_on_dq.load_state_dict({k: v for k, v in qlora.state_dict().items() if "lora" in k},
                               strict=False)
probe = torch.tensor([tok.encode("Once upon a time, a girl named", bos=True)])
with torch.no_grad():
    a, b = qlora(probe), lora_on_dq(probe)
print(f"QLoRA vs LoRA on dequantised weights: max |logit diff| = {(a - b).abs().max():.2e} "
      f"(logits up to {a.abs().max():.1f})")
assert (a - b).abs().max() < 1e-3

# %% [markdown]
# The backward pass needs $W$ once more, for $\partial L/\partial X = (\partial L /
# \partial Y) W$; `Linear4bit` dequantises again rather than keep a full-precision $W$
# alive between forward and backward, so at most one layer's weight is ever in full
# precision. The gradient reaches the input and the LoRA matrices, and nothing else:

# %%
x = torch.randn(3, base.cfg.dim, requires_grad=True)
wq(x).square().sum().backward()
print(f"|dL/dx| = {x.grad.abs().max():.3f}   |dL/dA| = {wq.lora_A.grad.abs().max():.3f}   "
      f"|dL/dB| = {wq.lora_B.grad.abs().max():.3f}   packed weight has a grad: "
      f"{getattr(wq.base.packed, 'grad', None) is not None}")
assert x.grad.abs().max() > 0 and wq.lora_A.grad.abs().max() > 0
assert getattr(wq.base.packed, "grad", None) is None
del qlora, lora_on_dq

# %% [markdown]
# ## 2. The task
#
# Chapter 7 introduced the benchmark: Alpaca records of five task families to tune on,
# two more families held out of the training data, and 500 test problems of all seven
# that occur neither in pretraining nor in training. One problem in the template:

# %%
train_set, test_set = bench.train_records(), bench.test_records()
print(f"{len(train_set):,} training records of {', '.join(bench.TRAIN_FAMILIES)}; "
      f"{len(test_set)} test problems (held-out families: {', '.join(bench.HELDOUT_FAMILIES)})")
print(f"budget: {bench.STEPS} steps of {bench.BATCH} records, lr {QLORA.lr:.0e} "
      f"(LoRA q,v's swept rate: {bench.method('lora-qv').lr:.0e})\n")
print(format_prompt(test_set[0]) + test_set[0]["output"])
assert QLORA.lr == bench.method("lora-qv").lr
assert QLORA.options == {**bench.method("lora-qv").options, "dropout": 0.0}

# %% [markdown]
# QLoRA takes LoRA q,v's learning rate rather than a sweep of its own, so that the two
# differ in one thing only: the frozen base is NF4 for QLoRA and full precision for
# LoRA (LoRA's dropout is 0 by default, so the options match too).
#
# ## 3. Paged optimisers
#
# During training, memory use is not flat: a batch of long sequences, or the backward pass
# through a checkpointed block, makes short spikes. On a GPU that is nearly full, one
# spike means an out-of-memory error and a lost run. QLoRA allocates the optimiser state
# (AdamW's two moments per trainable parameter) in NVIDIA *unified memory*
# (`cudaMallocManaged`): one address space that the driver backs with GPU or CPU pages.
# When the GPU runs out, the driver evicts pages to CPU RAM, and brings them back when the
# optimiser step touches them. Nothing about the arithmetic changes; the optimiser state is
# simply allowed to live where there is room. bitsandbytes also prefetches the pages before
# each step, so a run that never overflows pays almost nothing.
#
# On CUDA the short QLoRA run below trains with `bitsandbytes.optim.PagedAdamW`, passed
# to `finetune` as `optimizer=`; on the CPU paging means nothing (bitsandbytes falls back
# to an ordinary AdamW there), so it uses `finetune`'s own AdamW, as every benchmark run
# does. bitsandbytes pages only the state of parameters with at least 100,000 values
# (smaller ones are not worth a page): on CUDA the run counts how many of our state
# tensors that makes, and section 7 how many of LLaMA-65B's would be paged.

# %%
optimizers = []                       # the optimisers finetune builds, kept to inspect
if DEVICE == "cuda":
    import bitsandbytes as bnb

    def make_optimizer(params):
        optimizers.append(bnb.optim.PagedAdamW(params, lr=QLORA.lr, betas=(0.9, 0.95),
                                               weight_decay=0.0))
        return optimizers[-1]
else:
    make_optimizer = None             # finetune's AdamW (betas 0.9, 0.95; no weight decay)
print("optimizer:", "bitsandbytes PagedAdamW (32-bit state, paged)" if make_optimizer
      else "torch AdamW (finetune's default)")

# %% [markdown]
# ## 4. A short QLoRA run
#
# `bench.fresh` builds the benchmark's QLoRA model (the NF4 base with LoRA on `wq, wv`)
# and `finetune` trains it on the benchmark's records, here for the 15 warmup steps only.
# The learning rate during warmup does not depend on how many steps follow and the
# batches come in the same order, so on the CPU these are the first 15 steps of the
# shipped `qlora` adapter's run, and the losses retrace the ones its card logged.

# %%
LIVE = bench.WARMUP
qcard = bench.adapter_card("qlora")
live, _ = bench.fresh(QLORA, device=DEVICE)
live_log = finetune(live, tok, train_set, steps=LIVE, lr=QLORA.lr, batch_size=bench.BATCH,
                    warmup=bench.WARMUP, seed=0, device=DEVICE, optimizer=make_optimizer)
live_loss = [r["loss"] for r in live_log]
print(f"QLoRA, {LIVE} steps in {live_log[-1]['time']:.1f} s: response loss "
      f"{live_loss[0]:.3f} -> {live_loss[-1]:.3f}")
if DEVICE == "cuda":
    print("QLoRA's 4-bit matmul runs in bitsandbytes:",
          live.layers[0].attention.wq.base.uses_bitsandbytes(torch.empty(0, device=DEVICE)))
    states = [t for s in optimizers[-1].state.values() for t in s.values()
              if torch.is_tensor(t) and t.dim() > 0]
    largest = max(p.numel() for p in live.parameters() if p.requires_grad)
    print(f"PagedAdamW state: {sum(getattr(t, 'is_paged', False) for t in states)} of "
          f"{len(states)} tensors paged (largest LoRA matrix: {largest:,} values)")
elif PROFILE == "cpu":
    logged = qcard["train_loss"][:LIVE]
    gap = max(abs(a - b) for a, b in zip(live_loss, logged))
    print(f"the shipped qlora's card, same steps: {logged[0]:.3f} -> {logged[-1]:.3f}; "
          f"largest difference {gap:.4f}")
    assert gap < 0.01
assert live_loss[-1] < live_loss[0]
del live

# %% [markdown]
# ## 5. LoRA vs QLoRA on the whole budget
#
# In the CPU profile: the shipped adapters, each re-measured on the 500 test problems
# (the figure must be the one its card states). Exact match is greedy, in the Alpaca
# template, with its 95% Wilson interval; forgetting is the drop in plain-form exact
# match on the same problems, from the base's.

# %%
NAMES = {"lora-qv": "LoRA", "qlora": "QLoRA"}
models, figures, facts, losses = {}, {}, {}, {}
if PROFILE != "cpu":
    base_plain = bench.measure(base.to(DEVICE), tok, device=DEVICE)["plain_exact_match"]
for name in NAMES:
    if PROFILE == "cpu":
        model, _, stored = bench.load_adapter(name, device=DEVICE)
        fig = bench.measure(model, tok, device=DEVICE)
        assert round(fig["exact_match"], 4) == stored["test_exact_match"], name
        assert round(fig["plain_exact_match"], 4) == stored["plain_exact_match"], name
        forgetting, losses[name] = stored["forgetting"], stored["train_loss"]
        facts[name] = stored["trainable_parameters"], stored["wall_time_s"]
    else:
        model, _, log, wall = bench.run(bench.method(name), device=DEVICE)
        fig = bench.measure(model, tok, device=DEVICE)
        forgetting, losses[name] = base_plain - fig["plain_exact_match"], [r["loss"] for r in log]
        facts[name] = P.trainable_parameters(model), wall
    models[name], figures[name] = model, {**fig, "forgetting": forgetting}

print(f"{'':7s}{'trainable':>10s}{'train s':>9s}{'exact match  [95% interval]':>30s}"
      f"{'held-out fam.':>15s}{'forgetting':>12s}")
for name, f in figures.items():
    print(f"{NAMES[name]:7s}{facts[name][0]:>10,d}{facts[name][1]:>9.0f}{f['exact_match']:>13.1%}"
          f"  [{f['ci95'][0]:.1%}, {f['ci95'][1]:.1%}]{f['heldout_families_exact_match']:>15.1%}"
          f"{f['forgetting']:>+12.1%}")

# %%
def smooth(values, k=10):
    """Running mean over the last k values (faint lines: the raw, noisy batches)."""
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
            for i in range(len(values))]


fig, ax = plt.subplots(figsize=(7, 3.5))
for name, loss in losses.items():
    steps = range(1, len(loss) + 1)
    line, = ax.plot(steps, smooth(loss), label=NAMES[name] + (" (NF4 base)" if name == "qlora"
                                                             else " (fp32 base)"))
    ax.plot(steps, loss, alpha=0.25, color=line.get_color())
ax.set_xlabel("step")
ax.set_ylabel("response loss (nats/token)")
ax.set_yscale("log")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The QLoRA paper's central claim is that the 4-bit base costs no accuracy: NF4 with
# double quantisation matched 16-bit LoRA and full fine-tuning on its benchmarks. Our
# target was the same claim on this benchmark: QLoRA within 2 points of 16-bit LoRA at
# the same rank, targets, learning rate and steps. **It does not hold here** (CPU
# profile; the full profile prints its own figures). QLoRA
# ends 2.6 points below LoRA q,v (72.4% vs 75.0% exact match). The two 95% intervals
# overlap ([68.3%, 76.1%] and [71.0%, 78.6%]), so 500 problems cannot tell this gap from
# noise; but the target is missed, not met. QLoRA also forgets more of the plain form:
# its plain-form exact match drops 50.6 points from the base's, LoRA's 36.8. What was
# tried: one seed per method, and QLoRA trained at LoRA q,v's swept learning rate (by
# design, so the two differ only in the base's storage); a learning-rate sweep of its
# own, or more seeds, were not tried.

# %%
q, l = figures["qlora"], figures["lora-qv"]
gap = q["exact_match"] - l["exact_match"]
print(f"QLoRA - LoRA: {gap:+.1%} exact match ({q['exact_match']:.1%} vs {l['exact_match']:.1%})")
print(f"95% intervals: QLoRA [{q['ci95'][0]:.1%}, {q['ci95'][1]:.1%}], "
      f"LoRA [{l['ci95'][0]:.1%}, {l['ci95'][1]:.1%}]")
print(f"forgetting: QLoRA {q['forgetting']:.1%}, LoRA {l['forgetting']:.1%}")
if PROFILE == "cpu":          # the shipped adapters' figures quoted above
    assert gap < -0.02                                       # the 2-point target fails
    assert q["ci95"][1] >= l["ci95"][0] and l["ci95"][1] >= q["ci95"][0]  # intervals overlap
    assert q["forgetting"] > l["forgetting"]
    assert round(gap, 3) == -0.026
    assert round(q["forgetting"], 3) == 0.506 and round(l["forgetting"], 3) == 0.368

# %% [markdown]
# A few QLoRA answers, one problem per family:

# %%
families = bench.TRAIN_FAMILIES + bench.HELDOUT_FAMILIES
sample = [next(r for r in test_set if r["family"] == f) for f in families]
for record, answer in zip(sample, generate_answers(models["qlora"], tok, sample,
                                                   max_new_tokens=24, device=DEVICE)):
    mark = "right" if answer == record["output"] else "WRONG"
    print(f"{mark}  {record['family']:12s} {record['input'][:28]!r:32s} -> {answer!r}")


# %% [markdown]
# ## 6. Memory of a training step
#
# What one AdamW step of full fine-tuning, LoRA and QLoRA holds, on one batch of the
# training set. From here on LoRA adapts all seven linears of each block, as the QLoRA
# paper does (it found that adapting every linear layer is what lets LoRA match 16-bit
# full fine-tuning), so that section 7's count matches the paper's setting. On CUDA this is the measured peak, `torch.cuda.max_memory_allocated`.
# On the CPU there is no allocator high-water mark, so we add up the tensors the step
# holds (the method of `benchmarks/bench_nf4.py`): the model's parameters and buffers
# (QLoRA: the packed codes and their state), the gradients, AdamW's two moments, and the
# activations autograd saves for the backward pass, each storage counted once. That is
# **tensor accounting, not a measured peak**: it leaves out short-lived temporaries such
# as the one weight a 4-bit layer dequantises at a time.

# %%
def storages(tensors):
    return {(t.untyped_storage().data_ptr(), t.device): t.untyped_storage().nbytes()
            for t in tensors if t is not None}


def step_memory(model, x, y):
    """One AdamW step: bytes of weights, grads, AdamW state, saved activations (and peak)."""
    if DEVICE == "cuda":                  # count from here: other models stay resident
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    model.to(DEVICE).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _, loss = model(x, y)
    held = storages([*model.parameters(), *model.buffers()])
    acts = sum(v for k, v in storages(saved).items() if k not in held)
    saved.clear()
    loss.backward()
    opt.step()
    state = storages(v for s in opt.state.values() for v in s.values()
                     if torch.is_tensor(v) and v.dim() > 0)
    m = dict(weights=sum(held.values()), grads=sum(storages(p.grad for p in trainable).values()),
             adam=sum(state.values()), activations=acts)
    m["total"] = (torch.cuda.max_memory_allocated() - start if DEVICE == "cuda"
                  else sum(m.values()))
    return m


OPTIONS = dict(r=R, alpha=ALPHA, dropout=0.0, targets=TARGETS)
xb, yb = sft_batch([sft_tokens(r, tok) for r in train_set[:bench.BATCH]], tok.pad_id)
xb, yb = xb.to(DEVICE), yb.to(DEVICE)
how = ("total: peak torch.cuda.max_memory_allocated of the step" if DEVICE == "cuda" else
       "CPU tensor accounting: weights + grads + AdamW + saved activations")
print(f"one step, batch {tuple(xb.shape)}, {how}")
print(f"{'':8s}{'trainable':>11s}{'weights MB':>12s}{'grads MB':>10s}{'AdamW MB':>10s}"
      f"{'activ. MB':>11s}{'total MB':>10s}")
memory = {}
for name, method in [("full FT", None), ("LoRA", "lora"), ("QLoRA", "qlora")]:
    model = bench.load_base()[0]
    if method:
        P.apply(model, method, **OPTIONS)
    memory[name] = m = step_memory(model, xb, yb)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name:8s}{n_train:>11,d}" + "".join(f"{m[k] / 1e6:>{w}.2f}" for k, w in
          [("weights", 12), ("grads", 10), ("adam", 10), ("activations", 11), ("total", 10)]))
    if method == "qlora":
        small_bits = storage_bits(model)["bits_per_parameter"]
    del model
print(f"QLoRA's linears: {small_bits:.3f} bits per weight = {small_bits / 16:.3f} of 16 bits, "
      f"{small_bits / 32:.3f} of fp32")

# %% [markdown]
# LoRA removes the gradients and optimiser state of the frozen weights; QLoRA also
# shrinks the frozen weights themselves to about a quarter of their 16-bit size (an
# eighth of fp32, in which this small model computes). What it cannot shrink are the
# embeddings and the head, kept in full precision, and the activations, which depend on
# the batch, not on how the weights are stored. On a model this small (the CPU
# profile's) the activations outweigh the weights; on a 65B model the weights dominate,
# which is where the next section goes.

# %%
full_ft, lora, ql = memory["full FT"], memory["LoRA"], memory["QLoRA"]
assert lora["grads"] < 0.1 * full_ft["grads"] and lora["adam"] < 0.1 * full_ft["adam"]
assert 0.25 <= small_bits / 16 < 0.27 and ql["weights"] < lora["weights"]
assert abs(ql["activations"] - lora["activations"]) <= 0.01 * lora["activations"]
if PROFILE == "cpu":                  # the 2.56M base: activations outweigh the weights
    assert all(m["activations"] > m["weights"] for m in memory.values())

# %% [markdown]
#
# ## 7. 65B on one 48 GB GPU, from first principles
#
# The QLoRA paper's headline: LLaMA-65B fine-tuned on a single 48 GB GPU. The bill, item
# by item, with the library counting the bytes where it can: the LLaMA-65B shapes are
# built on the `meta` device (no memory), quantised there, and `storage_bits` adds up the
# packed codes and the double-quantised state of every linear of its 80 blocks.

# %%
cfg = CONFIGS["llama1-65b"]
with torch.device("meta"):
    big = Llama(cfg)
    n_total = sum(p.numel() for p in big.parameters())
    P.apply(big, "qlora", r=64, alpha=16, dropout=0.0, targets=TARGETS)   # the paper's r
n_lora = P.trainable_parameters(big)
bits = storage_bits(big)
n_q = bits["quantized_parameters"]
n_kept = n_total - n_q                            # embeddings, head, norms
blocks = n_q // 64
n_matrices = sum(isinstance(m, Linear4bit) for m in big.modules())
print(f"LLaMA-65B: {n_total:,} parameters; {n_q:,} in the {n_matrices} linears of the "
      f"blocks, {n_kept:,} in embeddings, head and norms")
print(f"NF4 by hand: {n_q:,} / 2 bytes of codes + {blocks:,} 8-bit block scales "
      f"+ ~{blocks / 256:,.0f} fp32 nested scales = "
      f"{(n_q / 2 + blocks + 4 * blocks / 256) / 1e9:.2f} GB;  storage_bits: "
      f"{bits['quantized_bytes'] / 1e9:.2f} GB ({bits['bits_per_parameter']:.4f} bits each)")
smallest = min(p.numel() for p in big.parameters() if p.requires_grad)
print(f"LoRA r=64 on all seven linears: {n_lora:,} trainable parameters; the smallest "
      f"LoRA matrix holds {smallest:,} values, so PagedAdamW pages all of their state")


# %% [markdown]
# Activations: QLoRA trains with gradient checkpointing, so only each block's input
# (tokens x dim) is kept through the forward pass, and one block at a time recomputes its
# own activations during the backward pass. How much one block saves per token we count
# by hand and check against autograd on our own model (every tensor that
# `saved_tensors_hooks` sees, block by block). Per token, a block saves its input and the
# normalised input, $q$, $k$, $v$ and the attention output, the residual and its
# normalised copy: $6d + 2d_{kv}$ values ($d_{kv} = d$ in LLaMA-65B, which has as many
# KV heads as heads). SwiGLU saves $w_1 x$, $w_3 x$, the SiLU and the gated product,
# $4\,d_\text{ffn}$; LoRA its $r$-wide intermediates, $7r$; and there are a few scalars
# (the attention's log-sum-exp per head, each norm's $1/\mathrm{rms}$).

# %%
def saved_per_block(model, x):
    """Elements autograd saves in each block (new storages only, weights excluded)."""
    model.train()
    held = storages([*model.parameters(), *model.buffers()])
    seen, per_block = set(held), []

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen and per_block:
            seen.add(key)
            per_block[-1] += t.untyped_storage().nbytes() // t.element_size()
        return t

    handles = [block.register_forward_pre_hook(lambda m, i: per_block.append(0))
               for block in model.layers]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    for h in handles:
        h.remove()
    return per_block


def by_hand(c, r):
    kv = c.n_kv_heads * c.head_dim
    return 6 * c.dim + 2 * kv + 4 * c.ffn_dim + 7 * r + c.n_heads + 2


per_block = saved_per_block(P.apply(bench.load_base()[0], "qlora", **OPTIONS), xb.cpu())
print(f"our model (dim {base.cfg.dim}, ffn {base.cfg.ffn_dim}, r={R}), per token: autograd "
      f"saves {', '.join(f'{n / xb.numel():,.0f}' for n in per_block)} values in the "
      f"{len(per_block)} blocks; by hand {by_hand(base.cfg, R):,d}")

# %% [markdown]
# The first block saves less (its input comes from the frozen embedding, so nothing
# needs a gradient there) and the last one more (the final norm is counted with it);
# on the CPU every block in between saves exactly the count by hand. Which tensors an
# attention kernel saves can differ between kernels (CPU vs CUDA).

# %%
assert per_block[0] < per_block[1] and per_block[-1] > per_block[-2]
if DEVICE == "cpu":
    assert all(n == by_hand(base.cfg, R) * xb.numel() for n in per_block[1:-1])

# %% [markdown]
# Now the whole bill for LLaMA-65B, with its assumptions printed:

# %%
ASSUME = dict(tokens=512, batch=1, compute_bytes=2, lora_bytes=2, adam_bytes=8)
print("assumptions:", ASSUME, "| bf16 compute and LoRA weights/grads, fp32 AdamW moments,"
      " gradient checkpointing at every block, 1 sequence of 512 tokens per step")
T = ASSUME["tokens"] * ASSUME["batch"]
bill = {
    "NF4 weights + double-quant state": bits["quantized_bytes"],
    "embeddings, head, norms (bf16)": n_kept * 2,
    "LoRA weights (bf16)": n_lora * ASSUME["lora_bytes"],
    "LoRA gradients (bf16)": n_lora * ASSUME["lora_bytes"],
    "AdamW moments m, v (fp32)": n_lora * ASSUME["adam_bytes"],
    "checkpointed block inputs": cfg.n_layers * T * cfg.dim * ASSUME["compute_bytes"],
    "one block recomputed": T * by_hand(cfg, 64) * ASSUME["compute_bytes"],
    "logits (fp32)": T * cfg.vocab_size * 4,
    "one dequantised weight (bf16)": cfg.dim * cfg.ffn_dim * ASSUME["compute_bytes"],
}
for item, nbytes in bill.items():
    print(f"  {item:34s}{nbytes / 1e9:>8.2f} GB")
total = sum(bill.values())
print(f"  {'total':34s}{total / 1e9:>8.2f} GB")
print(f"16-bit LoRA instead: the frozen weights alone are {n_total * 2 / 1e9:.0f} GB; "
      f"full fine-tuning with AdamW (16 bytes per parameter, mixed precision): "
      f"{n_total * 16 / 1e9:,.0f} GB")
print(f"with fp32 LoRA weights and grads instead of bf16: "
      f"{(total + 4 * n_lora) / 1e9:.2f} GB")

# %% [markdown]
# The NF4 weights are most of the bill; the adapters and their optimiser state come
# next; activations, with checkpointing, are small. The margin to 48 GB is thin (LoRA
# weights and gradients in fp32 instead of bf16 would already overflow it), and a long
# sequence in a batch can push a step over it, which is the moment paged optimisers
# exist for: the AdamW moments are the largest item that the step does not need on the
# GPU until the very end, so they are what the driver evicts.

# %%
adapters = sum(v for k, v in bill.items() if k.startswith(("LoRA", "AdamW")))
activations = sum(bill[k] for k in ("checkpointed block inputs", "one block recomputed",
                                    "logits (fp32)"))
print(f"NF4 weights {bill['NF4 weights + double-quant state'] / total:.0%} of the bill, "
      f"adapters and AdamW {adapters / total:.0%}, activations {activations / total:.1%}; "
      f"margin to 48 GB: {48 - total / 1e9:.2f} GB")
assert bill["NF4 weights + double-quant state"] > total / 2
assert adapters > max(v for k, v in bill.items() if not k.startswith(("LoRA", "AdamW", "NF4")))
assert sorted(bill.values())[-2] == bill["AdamW moments m, v (fp32)"]
assert activations < 0.05 * total and 40e9 < total < 48e9 < total + 4 * n_lora

# %% [markdown]
# ## 8. Merging back to full precision
#
# After training, `P.merge` turns every LoRA-wrapped 4-bit layer into an `nn.Linear`
# holding $\mathrm{dequant}(W^{\text{NF4}}) + s\,BA$ and every other 4-bit layer into an
# `nn.Linear` holding its dequantised weight. The merged model is an ordinary
# full-precision LLaMA that computes what the QLoRA model computed (one way: the NF4
# codes are gone): the logits agree to float rounding, the arg-max everywhere on a probe
# batch, and the exact match on the 500 test problems is the same before and after.

# %%
qmodel = models["qlora"]
prompts = [tok.encode(format_prompt(r), bos=True) for r in test_set[:16]]
probe = torch.tensor([p[:min(map(len, prompts))] for p in prompts], device=DEVICE)
with torch.no_grad():
    before_merge = qmodel(probe)
    P.merge(qmodel)
    after_merge = qmodel(probe)
kinds = {type(m).__name__ for m in qmodel.layers.modules()
         if isinstance(m, (nn.Linear, Linear4bit, LoRALinear))}
print("layer types after merge:", kinds)
print(f"merged vs QLoRA logits: max |diff| = {(after_merge - before_merge).abs().max():.2e} "
      f"(logits up to {before_merge.abs().max():.1f}); same arg-max everywhere: "
      f"{torch.equal(after_merge.argmax(-1), before_merge.argmax(-1))}")
assert torch.equal(after_merge.argmax(-1), before_merge.argmax(-1))
assert kinds == {"Linear"}
merged_score = greedy_score(qmodel, tok, test_set, device=DEVICE)
print(f"exact match before merge {figures['qlora']['exact_match']:.1%}, after "
      f"{merged_score['exact_match']:.1%}")
assert merged_score["exact_match"] == figures["qlora"]["exact_match"]
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Try it
#
# * Quantise the base with `double_quant=False`, or with `blocksize=256`, and retrain: how
#   much do the bits that double quantisation saves cost in accuracy?
# * Give LoRA the *same* 4-bit-rounded base in full precision (section 1's `lora_on_dq`)
#   and train it: the loss curve should match QLoRA's step for step, up to rounding.
# * Redo section 7 for LLaMA-2-70B (`CONFIGS["llama2-70b"]`): grouped-query attention
#   changes the $2\,d_{kv}$ term. Does it fit in 48 GB?

# %% [markdown]
# ## Exercises
#
# `exercises/ch12_qlora.py`: the forward pass of a 4-bit layer from its bytes (unpack, look
# up the NF4 levels, scale by block, multiply), checked against `Linear4bit`; QLoRA's memory
# bill for any LLaMA shape, matrix by matrix, checked against `storage_bits` and
# `peft.trainable_parameters`; and an experiment: the error of NF4 and int4 on normal and
# on uniform weights as the block size grows, graded on the trend and on points measured
# again. Grade your work with the cell below (set `IMPL = "exercises"`); as shipped it
# grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch12", impl=IMPL)
