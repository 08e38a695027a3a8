# %% [markdown]
# # Chapter 7 — LoRA: a low-rank update to frozen weights
#
# Fine-tuning every weight of a 7B model means storing a 7B-sized copy per task, plus
# the optimiser's two moments for each weight. LoRA (Hu et al., arXiv 2106.09685) bets
# that the *change* a task needs is low-rank: it freezes each pretrained matrix
# $W_0 \in \mathbb{R}^{d_\text{out}\times d_\text{in}}$ and learns the change as a product
# of two thin matrices,
#
# $$h = W_0 x + \frac{\alpha}{r}\, B A x, \qquad A \in \mathbb{R}^{r\times d_\text{in}},\;
#   B \in \mathbb{R}^{d_\text{out}\times r},\; r \ll \min(d_\text{in}, d_\text{out}).$$
#
# rsLoRA (Kalajdzievski, arXiv 2312.03732) replaces $\alpha/r$ by $\alpha/\sqrt{r}$ so the
# update keeps its size when $r$ grows.
#
# | piece | file |
# |---|---|
# | `LoRALinear`, the merge, the scale | `minillama/peft/lora.py` |
# | `apply`, `merge`, `unmerge`, `save`, `load` | `minillama/peft/__init__.py`, `peft/io.py` |
# | the PEFT benchmark: base, data, budget, shipped adapters | `minillama/tasks/bench.py` |
# | response-only fine-tuning, greedy answers | `minillama/finetune.py` |
#
# The base is the `peft-base` reference (about 2.6M parameters): chapter 5's `stories`
# model, with its pretraining continued on stories mixed with task text written
# *plainly* (`What is the largest number?\n29, 84, 61\nAnswer:\n84`), never in an
# instruction template. It has mastered seven task families in that plain form and
# almost never answers them in the Alpaca template. That is LIMA's "superficial
# alignment" picture (Zhou et al., arXiv 2305.11206): the skills come from pretraining,
# and instruction tuning mostly teaches the format. Every PEFT chapter measures its
# methods on that one job, with one benchmark defined once in `minillama/tasks/bench.py`.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains LoRA live for
# a few steps to show the mechanics, then loads the adapters the benchmark ships
# (`minillama/adapters/`, each trained by `scripts/train_adapters.py` and checked by
# sha256) and re-measures them on the whole test set. `full` (the default on CUDA)
# trains its own base, 12.5 times the size (`bench.base`, cached in `build/full/` for
# the later chapters), sweeps each method's learning rate on it, trains every method
# live on 1,000 test problems and sweeps the rank. The figures quoted in the text are
# the CPU profile's; the cells assert them there, and the general claims in both.

# %%
import copy
import os
import statistics
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import torch

import minillama
from minillama import CONFIGS, Llama, course, profiles
from minillama import peft as P
from minillama.data import format_prompt
from minillama.files import read_json
from minillama.finetune import generate_answers
from minillama.peft.lora import TARGETS, LoRALinear, lora_scale
from minillama.tasks import bench, task_text

PROFILE, DEVICE = course.setup()
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The layer
#
# `LoRALinear` wraps a frozen `nn.Linear` and adds the two trainable matrices. $A$
# starts like an ordinary linear weight (Kaiming-uniform) and $B$ starts at **zero**, so
# $BA = 0$: at step 0 the wrapped layer computes exactly what the frozen one did.

# %%
torch.manual_seed(0)
frozen = torch.nn.Linear(64, 32, bias=False)
layer = LoRALinear(frozen, r=4, alpha=8)
x = torch.randn(5, 64)
print(layer)
print("A:", tuple(layer.lora_A.shape), " B:", tuple(layer.lora_B.shape),
      " scale alpha/r =", layer.scale)
print("trainable:", [n for n, p in layer.named_parameters() if p.requires_grad])
same = torch.equal(layer(x), frozen(x))
print("B == 0 at init, so the outputs are identical:", same)
assert same and layer.scale == 2.0

# %% [markdown]
# The first gradient step can only move $B$: the gradient of $A$ is $s B^\top(\partial
# L/\partial h) x^\top$, which is zero while $B$ is. $B$'s gradient
# $s (\partial L/\partial h)(A x)^\top$ is not, because $A$ is random.

# %%
layer(x).square().sum().backward()
print(f"|grad A| = {layer.lora_A.grad.abs().max():.1e}   "
      f"|grad B| = {layer.lora_B.grad.abs().max():.3f}")
assert layer.lora_A.grad.abs().max() == 0 and layer.lora_B.grad.abs().max() > 0


# %% [markdown]
# ## 2. What it costs
#
# Each adapted matrix adds $r(d_\text{in}+d_\text{out})$ parameters instead of
# $d_\text{in} d_\text{out}$. `P.apply` on the `meta` device builds LLaMA-7B's shapes
# without allocating any memory, so the library's counts can be checked against that
# formula. The LoRA paper adapted $W_q$ and $W_v$; $r=8$ on those two is the setting
# Alpaca-LoRA and many LLaMA fine-tunes after it used.

# %%
def lora_formula(cfg, r, targets):
    """r * (d_in + d_out) per adapted matrix, summed over the blocks."""
    hd = cfg.head_dim
    shapes = {"wq": (cfg.dim, cfg.n_heads * hd), "wk": (cfg.dim, cfg.n_kv_heads * hd),
              "wv": (cfg.dim, cfg.n_kv_heads * hd), "wo": (cfg.n_heads * hd, cfg.dim),
              "w1": (cfg.dim, cfg.ffn_dim), "w3": (cfg.dim, cfg.ffn_dim),
              "w2": (cfg.ffn_dim, cfg.dim)}
    return cfg.n_layers * sum(r * sum(shapes[t]) for t in targets)


cfg7b = CONFIGS["llama1-7b"]
with torch.device("meta"):
    total_7b = sum(p.numel() for p in Llama(cfg7b).parameters())
print(f"LLaMA-7B: {total_7b:,} parameters")
counts = {}
for r, targets in [(8, ["wq", "wv"]), (8, ["wq", "wk", "wv", "wo"]), (8, TARGETS),
                   (64, TARGETS)]:
    with torch.device("meta"):
        n = P.trainable_parameters(P.apply(Llama(cfg7b), "lora", r=r, targets=targets))
    assert n == lora_formula(cfg7b, r, targets)
    counts[r, len(targets)] = n
    print(f"  r={r:<3d} on {','.join(targets):22s} {n:>12,d} trainable = {n / total_7b:.3%}")

# %% [markdown]
# $r=8$ on $W_q, W_v$ is 4,194,304 values, 0.06% of the model: the adapter for a task
# is 8 MB in bf16 next to a 13 GB base. Optimiser memory shrinks the same way, since
# AdamW only keeps moments for trainable parameters.

# %%
assert counts[8, 2] == 4_194_304 and f"{counts[8, 2] / total_7b:.2%}" == "0.06%"
print(f"bf16: adapter {counts[8, 2] * 2 / 1e6:.1f} MB, base {total_7b * 2 / 1e9:.1f} GB")
assert round(counts[8, 2] * 2 / 1e6) == 8 and round(total_7b * 2 / 1e9) == 13

# %% [markdown]
# ## 3. The base and its task
#
# The benchmark's base answers seven task families written by code
# (`minillama/data/instructions.py`), so every answer can be checked exactly. Here is one
# problem in the two forms: the plain form of the base's pretraining text, and the
# Alpaca template the methods are tuned on.

# %%
base, tok, card = bench.base(PROFILE, DEVICE)     # full profile: trained on first use
n_base = sum(p.numel() for p in base.parameters())
print(f"base: {card['recipe']}, {n_base:,} parameters, {base.cfg.n_layers} blocks of dim "
      f"{base.cfg.dim}, vocabulary {tok.vocab_size}")
test_set = bench.test_records()
example = next(r for r in test_set if r["family"] == "max_list")
print("\n--- the plain form of pretraining ---\n" + task_text(example))
print("\n--- the Alpaca form we fine-tune on ---\n" + format_prompt(example) + example["output"])

# %% [markdown]
# `adapters/base.json` holds the base's skill on 1,000 problems it never saw in
# pretraining (`bench.base_skill()` measures it; `tests/test_peft_thresholds.py` checks
# the file against a fresh measurement; the full profile measures its own base here). Asked plainly, the base answers at least 85%
# of them; asked the same problems in the Alpaca template, at least 60 points fewer.

# %%
if PROFILE == "cpu":
    skill = read_json(bench.ADAPTER_DIR / "base.json")
else:
    skill = bench.base_skill(DEVICE)
print(f"base on {skill['n']:,} unseen problems (exact match, 95% interval):")
print(f"  plain form       {skill['plain_exact_match']:6.1%}  "
      f"[{skill['plain_ci95'][0]:.1%}, {skill['plain_ci95'][1]:.1%}]")
print(f"  Alpaca template  {skill['alpaca_exact_match']:6.1%}  "
      f"[{skill['alpaca_ci95'][0]:.1%}, {skill['alpaca_ci95'][1]:.1%}]")
print("  plain form per family: " + ", ".join(
    f"{f} {v:.0%}" for f, v in skill["plain_per_family"].items()))
assert skill["n"] >= 1000
assert skill["plain_exact_match"] >= 0.85
assert skill["alpaca_exact_match"] <= skill["plain_exact_match"] - 0.60

# %% [markdown]
# The benchmark tunes on five of the families (`TRAIN_FAMILIES`) and keeps two out of
# the training data (`HELDOUT_FAMILIES`): the base can do them plainly, but no Alpaca
# record of them is ever trained on, so they show whether the template transfers. The
# test set is 500 problems of all seven families that occur neither in pretraining nor
# in training. Every method gets the same budget; its learning rate is the best of a
# small sweep on a separate validation set (`adapters/sweep.json`).

# %%
print(f"train: {bench.N_TRAIN:,} Alpaca records of {', '.join(bench.TRAIN_FAMILIES)}")
print(f"held out of training: {', '.join(bench.HELDOUT_FAMILIES)}")
print(f"test: {len(test_set)} unseen problems; budget: {bench.STEPS} steps of "
      f"{bench.BATCH} records, {bench.WARMUP} warmup steps")
NAMES = ["full", "lora-qv", "lora-all"]
for name in NAMES:
    m = bench.method(name)
    print(f"  {name:9s} lr {m.lr:.0e}  {m.about}")
assert len(test_set) >= 500 and not set(bench.HELDOUT_FAMILIES) & {
    r["family"] for r in bench.train_records()}

# %% [markdown]
# Training uses `minillama.finetune`: prompt and response are one sequence, but only
# the response tokens (and the closing EOS) are in the loss,
# $\mathcal{L} = -\frac{1}{|R|}\sum_{t\in R}\log p(x_t\mid x_{<t})$; the prompt positions
# get the target $-100$, which the model's cross-entropy ignores.
#
# ## 4. A short LoRA run
#
# `bench.run` applies LoRA $r=8$ to `wq, wv` and trains on the benchmark's data. Here
# it runs only the warmup, 15 steps. The learning rate during warmup does not depend on
# how many steps follow, and the batches come in the same order, so these 15 steps are
# the first 15 of the shipped `lora-qv` adapter's run: the live losses retrace the ones
# its card logged (a different thread count can change the last digits). The full
# profile's base has no shipped run to retrace; there the loss must fall.

# %%
LIVE = bench.WARMUP
shipped_card = bench.adapter_card("lora-qv")
live, _, live_log, live_wall = bench.run(bench.method("lora-qv"), steps=LIVE, device=DEVICE)
live_loss = [r["loss"] for r in live_log]
logged = shipped_card["train_loss"][:LIVE]
B = live.layers[0].attention.wq.lora_B
print(f"{LIVE} steps in {live_wall:.1f} s; response loss {live_loss[0]:.3f} -> {live_loss[-1]:.3f}")
if PROFILE == "cpu":
    print(f"the shipped run's card, same steps: {logged[0]:.3f} -> {logged[-1]:.3f}; largest "
          f"difference {max(abs(a - b) for a, b in zip(live_loss, logged)):.4f}")
    assert max(abs(a - b) for a, b in zip(live_loss, logged)) < 0.01
print(f"B of block 0's wq left zero: |B| max = {B.abs().max():.3f}")
assert B.abs().max() > 0 and live_loss[-1] < live_loss[0]

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(range(1, len(shipped_card["train_loss"]) + 1), shipped_card["train_loss"],
        color="0.6", label=f"shipped lora-qv ({shipped_card['steps']} steps, from its card)")
ax.plot(range(1, LIVE + 1), live_loss, "o", ms=3, label=f"live run ({LIVE} steps)")
ax.set_xlabel("step")
ax.set_ylabel("response loss (nats/token)")
ax.set_yscale("log")
ax.legend()
plt.tight_layout()
plt.show()
del live

# %% [markdown]
# ## 5. LoRA on `wq, wv` vs LoRA on every linear vs full fine-tuning
#
# The three methods on the benchmark's full budget. In the CPU profile these are the
# shipped adapters, re-measured here on the 500 test problems; each must reproduce the
# exact match its card states. Exact match is greedy: `greedy_score` checks a whole batch
# with one forward pass (greedy decoding writes the reference exactly when the reference
# token is the arg-max at every answer position). Forgetting is the drop in the
# plain-form exact match on the same problems, from the base's.

# %%
def interval(f):
    return f"[{f['ci95'][0]:.1%}, {f['ci95'][1]:.1%}]"


base_fig = bench.measure(base, tok, device=DEVICE)
figures, models, facts = {"base": base_fig}, {}, {}
for name in NAMES:
    if PROFILE == "cpu":
        model, _, stored = bench.load_adapter(name, device=DEVICE)
        share = stored["trainable_parameters"], stored["trainable_share"]
    else:
        model, _, log, wall = bench.run(bench.method(name), device=DEVICE)
        share = bench.trainable_share(model, bench.method(name))
    figures[name] = bench.measure(model, tok, device=DEVICE)
    if PROFILE == "cpu":
        assert round(figures[name]["exact_match"], 4) == stored["test_exact_match"], name
    models[name], facts[name] = model, share

print(f"{'':9s}{'trainable':>11s}{'share':>8s}{'exact match  [95% interval]':>30s}"
      f"{'held-out fam.':>15s}{'plain':>8s}{'forgetting':>12s}")
for name, f in figures.items():
    n, s = facts.get(name, (0, 0.0))
    forget = base_fig["plain_exact_match"] - f["plain_exact_match"]
    print(f"{name:9s}{n:>11,d}{s:>8.2%}{f['exact_match']:>13.1%}  {interval(f):>15s}"
          f"{f['heldout_families_exact_match']:>15.1%}{f['plain_exact_match']:>8.1%}"
          f"{forget:>+12.1%}")

# %% [markdown]
# Every method ends at least 50 points above the base in the Alpaca template: the
# format is learnt whichever weights are trained.

# %%
for name in NAMES:
    gain = figures[name]["exact_match"] - base_fig["exact_match"]
    print(f"{name:9s} +{gain:.1%} over the base in the template")
    assert gain >= 0.50, name

# %% [markdown]
# LoRA on `wq, wv` with $r=8$ trains 30,720 values, 1.20% of the base's parameters, and
# reaches 75.0% exact match, 99.2% of full fine-tuning's 75.6%: the target of at least
# 95% holds.

# %%
ratio = (figures["lora-qv"]["exact_match"] / figures["full"]["exact_match"]
         if figures["full"]["exact_match"] else float("nan"))    # nan fails the assert
print(f"LoRA q,v: {facts['lora-qv'][0]:,} trainable ({facts['lora-qv'][1]:.2%} of the base), "
      f"{figures['lora-qv']['exact_match']:.1%} = {ratio:.1%} of full fine-tuning's "
      f"{figures['full']['exact_match']:.1%}")
assert ratio >= 0.95 and facts["lora-qv"][1] < 0.02
if PROFILE == "cpu":          # the shipped adapters' figures quoted above
    assert facts["lora-qv"][0] == 30_720 and f"{ratio:.1%}" == "99.2%"

# %% [markdown]
# Fewer trained values did not mean less forgetting. LoRA q,v, at its swept learning
# rate of 1e-2, loses the most plain-form skill: 36.8 points of plain exact match, against
# 19.0 for full fine-tuning and 20.6 for LoRA on all seven linears (Biderman et al.,
# arXiv 2405.09673, found LoRA forgetting less than full fine-tuning on larger models
# and tasks; here, on one seed and one learning rate each, it does not).

# %%
forget = {n: base_fig["plain_exact_match"] - figures[n]["plain_exact_match"] for n in NAMES}
print("forgetting (points of plain-form exact match):",
      {n: round(100 * v, 1) for n, v in forget.items()})
if PROFILE == "cpu":          # one seed and one rate each: the shipped adapters' run
    assert max(forget, key=forget.get) == "lora-qv"
    assert forget["lora-qv"] > forget["lora-all"] > forget["full"]
    assert [round(100 * forget[n], 1) for n in ("lora-qv", "full", "lora-all")] == [36.8, 19.0, 20.6]

# %% [markdown]
# Per family, in the template (the held-out families last), and the base asked plainly:

# %%
families = bench.TRAIN_FAMILIES + bench.HELDOUT_FAMILIES
print(f"{'family':13s}" + "".join(f"{name:>10s}" for name in figures) + f"{'base plain':>12s}")
for fam in families:
    print(f"{fam:13s}" + "".join(f"{f['per_family'][fam]:10.0%}" for f in figures.values())
          + f"{base_fig['plain_per_family'][fam]:12.0%}")

# %% [markdown]
# In the CPU profile, on the five tuned families all three reach 79% to 100% in the
# template. The two
# held-out families lag far behind what the base does with them plainly (89% and 100%):
# `min_list` 31% to 34%, `capitalize` 48% to 71%. The template transfers to skills never
# tuned on only in part (chapter 15 looks at what the misses are).

# %%
tuned_min = min(figures[n]["per_family"][f] for n in NAMES for f in bench.TRAIN_FAMILIES)
print(f"tuned families: lowest {tuned_min:.0%}; held out: " + ", ".join(
    f"{f} {min(figures[n]['per_family'][f] for n in NAMES):.0%}-"
    f"{max(figures[n]['per_family'][f] for n in NAMES):.0%}" for f in bench.HELDOUT_FAMILIES))
if PROFILE == "cpu":                    # the shipped adapters' figures quoted above
    assert tuned_min >= 0.78
    assert all(figures[n]["per_family"][f] < base_fig["plain_per_family"][f] - 0.25
               for n in NAMES for f in bench.HELDOUT_FAMILIES)

# %% [markdown]
# A few answers, generated greedily (token by token, stopping at EOS) by LoRA on
# `wq, wv`, one problem per family:

# %%
sample = [next(r for r in test_set if r["family"] == f) for f in families]
answers = generate_answers(models["lora-qv"], tok, sample, max_new_tokens=24, device=DEVICE)
for record, answer in zip(sample, answers):
    mark = "right" if answer == record["output"] else "WRONG"
    print(f"{mark}  {record['family']:12s} {record['input'][:28]!r:32s} -> {answer!r}"
          + ("" if answer == record["output"] else f"  (want {record['output']!r})"))
wrong = {r["family"] for r, a in zip(sample, answers) if a != r["output"]}

# %% [markdown]
# In the CPU profile the five tuned families are answered right; both misses are in the
# held-out families, as the table predicts: the second-smallest number for `min_list`, and `'Tiger Tiger'`
# (a word dropped, another repeated) for `capitalize`.

# %%
print("wrong:", sorted(wrong))
if PROFILE == "cpu":                    # one problem per family: the shipped adapter's answers
    assert wrong == set(bench.HELDOUT_FAMILIES)

# %% [markdown]
# ## 6. Merging: the base model's forward pass
#
# After training, $W = W_0 + \frac{\alpha}{r}BA$ is one matrix of the original shape.
# `P.merge` writes it into the frozen weight; the merged model computes the same
# function with the base model's matrix products. `P.unmerge` subtracts the update again
# (float rounding aside), so one base can serve several adapters in turn. LoRA on all
# seven linears has the most to fold in.

# %%
lora_model = models["lora-all"]
prompts = [tok.encode(format_prompt(r), bos=True) for r in test_set[:32]]
L = min(map(len, prompts))
probe = torch.tensor([p[:L] for p in prompts], device=DEVICE)
w0 = lora_model.layers[0].attention.wq.base.weight.detach().clone()
with torch.no_grad():
    unmerged = lora_model(probe)
    P.merge(lora_model)
    merged = lora_model(probe)
diff = (merged - unmerged).abs().max().item()
print(f"merged vs unmerged logits: max |diff| = {diff:.2e} (logits up to "
      f"{unmerged.abs().max():.1f})")
assert diff < 1e-3


# %% [markdown]
# Merged, each `LoRALinear` calls only its frozen `nn.Linear`: the same matrix products
# as the base, plus one Python-level call per wrapper. How that shows in time we measure:
# the three models take turns (so a change in the machine's load hits them alike), each
# forward is timed many times, and we report the median and the fastest, at several
# batch sizes.

# %%
def forward_times(models, tokens, repeats):
    """Seconds of each timed forward pass of each model, the models taking turns."""
    times = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():              # one untimed warm-up pass each
            model(tokens)
        for _ in range(repeats):
            for name, model in models.items():
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model(tokens)
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t)
    return times


if PROFILE == "cpu":                    # the shipped adapter, as trained
    unmerged_model = bench.load_adapter("lora-all", device=DEVICE, check=False)[0]
else:                                   # the live one, its update taken out again
    unmerged_model = P.unmerge(copy.deepcopy(lora_model))
contestants = {"base": base, "unmerged": unmerged_model, "merged": lora_model}
REPEATS = profiles.settings("ch07", PROFILE).timing_repeats    # batch size -> repeats
speed = {}
print(f"forward of b sequences of {L} tokens, repeats {REPEATS}; median (fastest) in ms, "
      f"and median / base's median")
for b, repeats in REPEATS.items():
    t = forward_times(contestants, probe.repeat(-(-b // len(probe)), 1)[:b], repeats)
    med = {k: statistics.median(v) for k, v in t.items()}
    speed[b] = {k: med[k] / med["base"] for k in med}
    print(f"  b={b:<3d}" + "".join(f"  {k} {1000 * med[k]:6.2f} ({1000 * min(t[k]):6.2f}) "
                                   f"{speed[b][k]:.2f}x" for k in t))

# %% [markdown]
# Merged, LoRA on all seven linears costs about what the base costs: within 10% of the
# base's median time at batches of 4 and 16. At batch 1, where a forward pass takes only
# milliseconds, the one extra Python call per wrapped layer shows more, and we only
# claim within 25% (that ratio varies most from run to run). The unmerged model, which
# computes $BAx$ beside every frozen product, is slower at every batch size, at least
# 1.25x the base: 42 LoRA branches (two thin matrix products each) per forward pass,
# whose overhead weighs most at batch 1. Unmerging restores $W_0$ to float rounding:

# %%
for b, ratios in speed.items():
    print(f"b={b:<3d} merged {ratios['merged']:.2f}x, unmerged {ratios['unmerged']:.2f}x the base")
assert speed[1]["merged"] <= 1.25 and all(r["merged"] <= 1.10 for b, r in speed.items() if b > 1)
assert all(r["unmerged"] >= 1.25 and r["merged"] < r["unmerged"] for r in speed.values())

# %%
P.unmerge(lora_model)
w_back = lora_model.layers[0].attention.wq.base.weight
print(f"after unmerge, max |W - W0| = {(w_back - w0).abs().max().item():.1e}")
assert (w_back - w0).abs().max() < 1e-5
del unmerged_model


# %% [markdown]
# ## 7. How low-rank is the change full fine-tuning makes?
#
# LoRA's premise can be checked on the full fine-tuning run: take
# $\Delta W = W_\text{ft} - W_0$ for each matrix and ask what fraction of its energy
# (squared Frobenius norm, $\sum_i \sigma_i^2$) the top $r$ singular values carry.
# A rank-$r$ LoRA can represent at most that much of the update.

# %%
def weight(model, i, name):
    part = model.layers[i].attention if name in ("wq", "wk", "wv", "wo") else \
        model.layers[i].feed_forward
    return getattr(part, name).weight.detach().float().cpu()


full = models["full"]
fig, ax = plt.subplots(figsize=(7, 3.5))
top8, n_dirs = {}, {}
for name in ["wq", "wv", "w2"]:
    curves = []
    for i in range(base.cfg.n_layers):
        s = torch.linalg.svdvals(weight(full, i, name) - weight(base, i, name))
        curves.append((s.square().cumsum(0) / s.square().sum()).tolist())
    mean = [sum(c[k] for c in curves) / len(curves) for k in range(len(curves[0]))]
    ax.plot(range(1, len(mean) + 1), mean, label=name)
    top8[name], n_dirs[name] = mean[7], len(mean)
    print(f"{name}: top 8 of {len(mean)} singular directions carry {mean[7]:.0%} of the update")
ax.set_xscale("log")
ax.set_xlabel("rank r")
ax.set_ylabel("fraction of ||ΔW||² in the top r")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The update full fine-tuning makes is far from spread evenly: in $W_q$ and $W_v$ the top
# 8 singular directions carry 70% and 75% of its energy (CPU profile), against the
# 8/192 = 4% and 8/64 = 12.5% an evenly spread update would put there. But it is not rank 8 either: a
# rank-8 LoRA could represent at most those fractions, and for the feed-forward $W_2$
# less than half (46%). LoRA q,v still reached 99% of full fine-tuning's exact match:
# the task needs only part of the change full fine-tuning happens to make.

# %%
print({k: f"{v:.0%}" for k, v in top8.items()})
assert top8["wq"] >= 0.6 and top8["wv"] >= 0.6 and top8["w2"] < 0.5
assert top8["wq"] > 8 * 8 / n_dirs["wq"] and top8["wv"] > 4 * 8 / n_dirs["wv"]
if PROFILE == "cpu":
    assert [round(100 * top8[k]) for k in ("wq", "wv", "w2")] == [70, 75, 46]

# %% [markdown]
# ## 8. The rank, and rsLoRA's scale
#
# With the usual scale $\alpha/r$, doubling $r$ halves the factor in front of $BA$;
# rsLoRA's $\alpha/\sqrt{r}$ shrinks it more slowly, which the rsLoRA paper shows keeps
# the learning from stalling at large ranks:

# %%
for r in [1, 4, 16, 64, 256]:
    print(f"r={r:<4d} alpha/r = {lora_scale(r, 16):7.3f}   alpha/sqrt(r) = "
          f"{lora_scale(r, 16, rslora=True):6.3f}")
assert lora_scale(64, 16) == 0.25 and lora_scale(64, 16, rslora=True) == 2.0

# %% [markdown]
# The full profile trains LoRA on `wq, wv` at several ranks with both scales, on the
# benchmark's budget (the CPU profile skips this: it would multiply the training time).

# %%
if PROFILE != "cpu":
    sweep = {}
    qv = bench.method("lora-qv")
    for rslora in (False, True):
        for r in [1, 2, 4, 8, 16, 32]:
            m = bench.Method(f"lora-qv-r{r}", "lora", dict(qv.options, r=r, rslora=rslora), qv.lr)
            model, _, _, _ = bench.run(m, device=DEVICE)
            result = bench.measure(model, tok, device=DEVICE)
            sweep[rslora, r] = (result["loss"], result["exact_match"])
            print(f"{'rsLoRA' if rslora else 'LoRA':6s} r={r:<3d} test loss "
                  f"{sweep[rslora, r][0]:.3f}  exact match {sweep[rslora, r][1]:.1%}")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for rslora in (False, True):
        ranks = sorted(r for s, r in sweep if s == rslora)
        for k, label in enumerate(["test response loss", "exact match"]):
            ax[k].plot(ranks, [sweep[rslora, r][k] for r in ranks], "o-",
                       label="alpha/sqrt(r)" if rslora else "alpha/r")
            ax[k].set_xscale("log", base=2)
            ax[k].set_xlabel("rank r")
            ax[k].set_ylabel(label)
            ax[k].legend()
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## 9. Saving the adapter, and loading it with Hugging Face peft
#
# `P.save(model, dir)` writes only the trained tensors (plus a fingerprint of the base,
# so loading onto the wrong base fails loudly). `format="peft"` writes the files peft
# reads: `adapter_config.json` and `adapter_model.safetensors` with peft's names. The
# base goes to Hugging Face's layout with `minillama.save(base, dir, format="hf")`,
# which reorders the rows of $W_q$ and $W_k$ for HF's RoPE convention; the export
# reorders the rows of $B$ the same way (the rows of $BA$ are the rows of $B$).

# %%
warnings.filterwarnings("ignore", message="IProgress not found")      # tqdm in a notebook
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing")  # peft vs transformers
import peft  # noqa: E402
import transformers  # noqa: E402

transformers.logging.disable_progress_bar()
transformers.logging.set_verbosity_error()

adapted = models["lora-qv"].cpu()
probe = probe[:8].cpu()
work = tempfile.TemporaryDirectory()
hf_dir, adapter_dir = os.path.join(work.name, "base-hf"), os.path.join(work.name, "lora")
minillama.save(bench.load_base()[0], hf_dir, format="hf")
P.save(adapted, adapter_dir, format="peft", base_model_name_or_path=hf_dir)
print(sorted(os.listdir(adapter_dir)),
      f"{os.path.getsize(os.path.join(adapter_dir, 'adapter_model.safetensors')):,} bytes")

hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
theirs = peft.PeftModel.from_pretrained(hf, adapter_dir).eval()
with torch.no_grad():
    ours_logits, their_logits = adapted(probe), theirs(probe).logits
gap = (ours_logits - their_logits).abs().max().item()
print(f"minillama + LoRA vs transformers + peft: max |logit diff| = {gap:.2e}")
assert gap < 1e-3

# the minillama format round-trips onto a fresh base, and refuses a different one
P.save(adapted, adapter_dir)
reloaded = P.load(bench.load_base()[0], adapter_dir)
with torch.no_grad():
    same = torch.equal(reloaded(probe), ours_logits)
print("reloaded == trained:", same)
assert same
try:
    P.load(Llama(base.cfg), adapter_dir)                  # same shapes, other weights
    raise AssertionError("loaded onto the wrong base")
except ValueError as e:
    print("ValueError:", str(e)[:110], "...")
work.cleanup()
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch07_lora.py`: the LoRA forward pass through the rank-$r$ bottleneck, and
# the merge.

# %%
IMPL = "solutions"
result = course.grade("ch07", impl=IMPL)
