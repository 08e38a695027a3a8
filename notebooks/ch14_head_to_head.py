# %% [markdown]
# # Chapter 14 — PEFT head-to-head
#
# Chapters 7 to 12 built each method on its own. Here they meet on the course's PEFT
# benchmark (`minillama/tasks/bench.py`): the same base, the same training data, the same
# budget of steps, each method at the learning rate a recorded sweep chose for it, and one
# 500-problem test set. We measure what the survey (arXiv 2510.12178) tabulates from the
# papers, plus what papers rarely report side by side:
#
# | method | paper | file |
# |---|---|---|
# | full fine-tuning | — | `minillama/finetune.py` |
# | LoRA ($r=8$ on wq, wv; and on all seven linears) | Hu et al., arXiv 2106.09685 | `minillama/peft/lora.py` |
# | QLoRA (LoRA on wq, wv over an NF4 base) | Dettmers et al., arXiv 2305.14314 | `minillama/peft/qlora.py` |
# | LLaMA-Adapter V1 | Zhang et al., arXiv 2303.16199 | `minillama/peft/adapter_v1.py` |
# | LLaMA-Adapter V2 | Gao et al., arXiv 2304.15010 | `minillama/peft/adapter_v2.py` |
# | LLaMA-Excitor | Zou et al., arXiv 2404.00913 | `minillama/peft/excitor.py` |
#
# Per method:
#
# * **trainable parameters** and their share of the base;
# * **training memory**: on CUDA the peak `torch.cuda.max_memory_allocated` over a few
#   steps; on the CPU the bytes of the tensors a step holds, measured from the tensors
#   themselves: the model's parameters and buffers, the gradients, AdamW's moments, and
#   the activations autograd saves for the backward pass (caught with
#   `torch.autograd.graph.saved_tensors_hooks` on one benchmark batch);
# * **step time**: the mean of a few live training steps on benchmark batches;
# * **exact match** in the Alpaca template on the 500 test problems, with its 95%
#   (Wilson) interval;
# * **forgetting**: the drop in *plain-form* exact match (the form the base learned its
#   skills in) on the same problems, from the base's.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) times a few live steps
# per method, then loads the shipped adapters (`minillama/adapters/`, each file checked
# against its card's sha256) and re-measures their exact match on the test set; the
# notebook prints its wall time at the end. `full` (the default on CUDA) trains every
# method live for the benchmark's full budget, clean and noisy.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import course
from minillama.files import read_json
from minillama.finetune import greedy_score, sft_batch, sft_tokens
from minillama.reference import load_reference
from minillama.tasks import bench
from minillama.train import TrainConfig, make_optimizer

PROFILE, DEVICE = course.setup()
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The benchmark
#
# The base (`peft-base`) has mastered seven task families asked in the plain form of its
# pretraining text and almost never answers them in the Alpaca template: instruction
# tuning has one job here, teaching the format (LIMA's "superficial alignment", Zhou et
# al., arXiv 2305.11206). `adapters/base.json` holds the base's skill on 1,000 unseen
# problems.

# %%
skill = read_json(bench.ADAPTER_DIR / "base.json")
base, tok, _ = load_reference(bench.BASE, device=DEVICE)
n_base = sum(p.numel() for p in base.parameters())
print(f"base {bench.BASE}: {n_base:,} parameters; on {skill['n']:,} unseen problems "
      f"plain form {skill['plain_exact_match']:.1%}, Alpaca template "
      f"{skill['alpaca_exact_match']:.1%}")
print(f"training: {bench.N_TRAIN} Alpaca records of {', '.join(bench.TRAIN_FAMILIES)} "
      f"(noisy variant: {bench.NOISE:.0%} wrong); {bench.STEPS} steps x {bench.BATCH}, "
      f"warmup {bench.WARMUP}")
print(f"test: {bench.N_TEST} unseen problems of all seven families "
      f"({', '.join(bench.HELDOUT_FAMILIES)} never in the Alpaca training data)")
NAMES = ["full", "lora-qv", "lora-all", "qlora", "adapter-v1", "adapter-v2", "excitor"]
for name in NAMES:
    m = bench.method(name)
    print(f"  {name:11s} lr {m.lr:.0e}  {m.about}")

# %% [markdown]
# ## 2. What a training step costs
#
# For each method, three live steps on benchmark batches: the first runs under the
# saved-tensor hook (each storage counted once, the model's own parameters excluded) and
# creates AdamW's moments; the other two are timed. On the CPU the memory is the sum of
# what was measured: parameters and buffers (QLoRA's NF4 weights are buffers of packed
# 4-bit codes and their scales), gradients, AdamW moments and saved activations.

# %%
train = bench.train_records()
examples = [sft_tokens(r, tok) for r in train[:3 * bench.BATCH]]
batches = [sft_batch(examples[i:i + bench.BATCH], tok.pad_id)
           for i in range(0, len(examples), bench.BATCH)]


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def step_costs(name):
    """(trainable values, memory bytes by kind, mean seconds of a timed step) for one method."""
    m = bench.method(name)
    model, _ = bench.fresh(m, device=DEVICE)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, TrainConfig(lr=m.lr))
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, saved = set(), 0

    def pack(t):
        nonlocal saved
        key = t.untyped_storage().data_ptr()
        if key not in own and key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    model.train()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i, (x, y) in enumerate(batches):
        t = time.perf_counter()
        if i == 0:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                _, loss = model(x.to(DEVICE), y.to(DEVICE))
        else:
            _, loss = model(x.to(DEVICE), y.to(DEVICE))
        loss.backward()
        optimizer.step()
        if i == 0:
            grads = tensor_bytes(p.grad for p in trainable)
        optimizer.zero_grad(set_to_none=True)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t)
    memory = {"weights": tensor_bytes([*model.parameters(), *model.buffers()]),
              "grads": grads,
              "adam": tensor_bytes(v for st in optimizer.state.values() for v in st.values()
                                   if torch.is_tensor(v) and v.dim() > 0),
              "activations": saved}
    if DEVICE == "cuda":
        memory = {"peak": torch.cuda.max_memory_allocated()}
    return sum(p.numel() for p in trainable), memory, sum(times) / len(times)


costs = {}
for name in NAMES:
    n, memory, step = step_costs(name)
    costs[name] = {"trainable": n, "share": n / n_base, "memory": sum(memory.values()),
                   "parts": memory, "step_s": step}
    print(f"{name:11s} {n:>10,d} trainable ({n / n_base:7.3%})  "
          + "  ".join(f"{k} {v / 1e6:6.2f}" for k, v in memory.items())
          + f"  = {sum(memory.values()) / 1e6:6.2f} MB   step {step:.2f} s")

# %% [markdown]
# ## 3. Exact match and forgetting
#
# In the CPU profile each shipped adapter is loaded and its exact match re-measured live
# on the 500 test problems; the assert checks that the live figure is the card's (the
# files vouch for the figure). Forgetting comes from the card, which measured the plain
# form from the same files. In the full profile each method is trained live and measured.

# %%
test = bench.test_records()
runs = {}
for name in NAMES:
    if PROFILE == "cpu":
        model, _, card = bench.load_adapter(name, device=DEVICE)
        live = greedy_score(model, tok, test, device=DEVICE)["exact_match"]
        assert round(live, 4) == card["test_exact_match"], (name, live, card["test_exact_match"])
        runs[name] = card
    else:
        model, _, log, wall = bench.run(bench.method(name), device=DEVICE)
        runs[name] = bench.card_figures(bench.measure(model, tok, device=DEVICE))
    del model
    r = runs[name]
    print(f"{name:11s} exact match {r['test_exact_match']:6.1%} [{r['ci95'][0]:.1%}, "
          f"{r['ci95'][1]:.1%}]  forgetting {r['forgetting']:+6.1%}")

# %% [markdown]
# ## 4. The table

# %%
memory_kind = ("peak CUDA allocated" if DEVICE == "cuda" else
               "measured: weights and buffers + grads + AdamW moments + saved activations")
print(f"memory: {memory_kind}, one batch of {bench.BATCH}; step: mean of 2 timed steps; "
      f"exact match on {bench.N_TEST} test problems")
print(f"{'method':11s}{'trainable':>11s}{'share':>9s}{'memory MB':>11s}{'step s':>8s}"
      f"{'exact match [95% CI]':>25s}{'forgetting':>12s}")
for name in NAMES:
    c, r = costs[name], runs[name]
    print(f"{name:11s}{c['trainable']:>11,d}{c['share']:>9.2%}{c['memory'] / 1e6:>11.2f}"
          f"{c['step_s']:>8.2f}{r['test_exact_match']:>10.1%} [{r['ci95'][0]:5.1%}, "
          f"{r['ci95'][1]:5.1%}]{r['forgetting']:>+12.1%}")

# %% [markdown]
# ## 5. The plot

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name in NAMES:
    x, r = costs[name]["trainable"], runs[name]
    em, (lo, hi) = r["test_exact_match"], r["ci95"]
    axes[0].errorbar(x, 100 * em, yerr=[[100 * (em - lo)], [100 * (hi - em)]], fmt="o",
                     capsize=3)
    axes[0].annotate(name, (x, 100 * em), textcoords="offset points", xytext=(5, -12),
                     fontsize=8)
    axes[1].scatter(x, 100 * r["forgetting"])
    axes[1].annotate(name, (x, 100 * r["forgetting"]), textcoords="offset points",
                     xytext=(5, 3), fontsize=8)
axes[0].set_ylabel("exact match, Alpaca template (%), 95% CI")
axes[1].set_ylabel("forgetting: drop in plain-form exact match (points)")
axes[1].axhline(0, color="k", lw=0.8)
for ax in axes:
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 6. Reading the result
#
# Which differences the test set can resolve: two methods are told apart in exact match
# only when their 95% intervals do not overlap.

# %%
def apart(a, b):
    (lo_a, hi_a), (lo_b, hi_b) = runs[a]["ci95"], runs[b]["ci95"]
    return hi_a < lo_b or hi_b < lo_a


by_em = sorted(NAMES, key=lambda n: -runs[n]["test_exact_match"])
print("exact match, best first:", " > ".join(by_em))
groups = []                 # methods the intervals cannot tell from the best of the group
for n in by_em:
    if groups and not apart(groups[-1][0], n):
        groups[-1].append(n)
    else:
        groups.append([n])
print("tied with the best of their group:", " | ".join(", ".join(g) for g in groups))
print("forgetting, least first:", " < ".join(sorted(NAMES, key=lambda n: runs[n]["forgetting"])))
print("memory, least first:    ", " < ".join(sorted(NAMES, key=lambda n: costs[n]["memory"])))
print("step time, least first: ", " < ".join(sorted(NAMES, key=lambda n: costs[n]["step_s"])))
ratio = lambda key: costs["full"][key] / min(costs[n][key] for n in NAMES)
print(f"full fine-tuning vs the leanest: {ratio('trainable'):,.0f}x the trainable "
      f"parameters, {ratio('memory'):.1f}x the memory")
lora_share = runs["lora-qv"]["test_exact_match"] / runs["full"]["test_exact_match"]
print(f"LoRA q,v (share {costs['lora-qv']['share']:.2%}) reaches {lora_share:.1%} of full "
      f"fine-tuning's exact match; QLoRA - LoRA q,v = "
      f"{100 * (runs['qlora']['test_exact_match'] - runs['lora-qv']['test_exact_match']):+.1f} "
      f"points")

# %% [markdown]
# TODO(prose after the real adapters).
#
# ## 7. Noisy labels
#
# The benchmark's noisy variant gives 30% of the training records a wrong or sloppy
# answer; the test set is scored against the *correct* answers. LoRA q,v and the Excitor
# were trained on it with three seeds each (`lora-qv-noisy*`, `excitor-noisy*`); their
# cards (every file checked against its sha256) against the clean runs:

# %%
NOISY = {"lora-qv": "lora-qv", "excitor": "excitor"}
noisy = {}
for name in NOISY:
    if PROFILE == "cpu":
        noisy[name] = [bench.adapter_card(bench.adapter_name(name, True, s)) for s in bench.SEEDS]
    else:
        noisy[name] = []
        for s in bench.SEEDS:
            model, _, _, _ = bench.run(bench.method(name), noisy=True, seed=s, device=DEVICE)
            noisy[name].append(bench.card_figures(bench.measure(model, tok, device=DEVICE)))
            del model
print(f"{'':22s}{'exact match [95% CI]':>24s}{'forgetting':>12s}")
for name, cards in noisy.items():
    c = runs[name]
    print(f"{name + ' clean, seed 0':22s}{c['test_exact_match']:>9.1%} [{c['ci95'][0]:.1%}, "
          f"{c['ci95'][1]:.1%}]{c['forgetting']:>+12.1%}")
    for s, card in zip(bench.SEEDS, cards):
        print(f"{name + f' noisy, seed {s}':22s}{card['test_exact_match']:>9.1%} "
              f"[{card['ci95'][0]:.1%}, {card['ci95'][1]:.1%}]{card['forgetting']:>+12.1%}")
    em = [card["test_exact_match"] for card in cards]
    fg = [card["forgetting"] for card in cards]
    print(f"{name + ' noisy, 3 seeds':22s}{sum(em) / 3:>9.1%} (range {min(em):.1%}-"
          f"{max(em):.1%}){sum(fg) / 3:>+9.1%} (range {min(fg):+.1%} to {max(fg):+.1%})")
    below = [card["ci95"][1] < c["ci95"][0] for card in cards]
    print(f"  noisy interval entirely below the clean one: {sum(below)} of 3 seeds")

# %% [markdown]
# TODO(prose after the real adapters): what noise costs.

# %%
print(f"chapter ran in {time.perf_counter() - T0:.1f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch14_head_to_head.py`: the Wilson interval behind every error bar of this
# chapter, and a rank race (LoRA ranks trained side by side on a regression problem,
# graded on the measured trend: each rank's loss floor is its best rank-r fit).

# %%
IMPL = "solutions"
result = course.grade("ch14", impl=IMPL)
