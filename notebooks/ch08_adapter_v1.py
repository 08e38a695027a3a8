# %% [markdown]
# # Chapter 8 — LLaMA-Adapter V1: zero-initialised, gated prompts
#
# LoRA (chapter 7) changes the weights. LLaMA-Adapter (Zhang et al., arXiv 2303.16199)
# leaves every weight alone and adds *inputs* instead: in each of the top $L$ blocks, $K$
# learnable prompt vectors $P \in \mathbb{R}^{K\times D}$ that every token can attend to.
# The prompts go through the block's frozen $W_k, W_v$ (no norm, no RoPE), and each head
# attends to them with a softmax of its own, scaled by a gate $g$ that starts at zero:
#
# $$\mathrm{out} = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt{d}} + M\Big)V
#   \;+\; \tanh(g)\cdot \mathrm{softmax}\!\Big(\frac{QK_p^\top}{\sqrt{d}}\Big)V_p,
#   \qquad K_p = PW_k^\top,\; V_p = PW_v^\top .$$
#
# With $g = 0$ the model *is* the base model at step 0, and the prompts are learned
# without first scrambling what it knows. On LLaMA-7B, with $K=10$ prompts in the top
# $L=30$ of 32 blocks, that is 1.2M trainable parameters.
#
# | piece | file |
# |---|---|
# | `PromptAttention`, `gated_prompt_attention` | `minillama/peft/adapter_v1.py` |
# | the plug-in point `attn.prompt` | `minillama/attention.py` |
# | `apply`, `trainable_parameters` | `minillama/peft/__init__.py` |
# | the benchmark, the shipped adapters and their cards | `minillama/tasks/bench.py` |
#
# The base is the PEFT benchmark's (`bench.BASE`, the `peft-base` reference, chapter 7):
# a model that has mastered seven task families in the plain form of its pretraining
# text (`...\nAnswer:\n...`) and almost never answers them in the Alpaca template.
# Fine-tuning has one job, teaching the format; we also watch what it costs the base's
# own skill (*forgetting*: the drop in plain-form exact match on the same problems).
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains each gate
# variant live for the first 20 steps to show the mechanics, then evaluates the
# *shipped* adapters (`minillama/adapters/`, trained by `scripts/train_adapters.py` on the
# benchmark's full budget, three seeds per variant) on the 500-record test set. `full`
# (the default on CUDA) trains all six runs live with the same recipe on its own base,
# 12.5 times the size (`bench.base`), with V1's rate swept on that base, and also varies
# the number of adapted blocks. The figures the text quotes are the CPU profile's, and
# the cells assert them there; the full profile prints its own and asserts what the text
# claims in general (seed-by-seed patterns are not such claims). The last code cell
# before the exercises prints the wall time.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import CONFIGS, Llama, course
from minillama import peft as P
from minillama.data import format_prompt
from minillama.finetune import generate_answers, greedy_score
from minillama.metrics import wilson_interval
from minillama.peft.adapter_v1 import PromptAttention, gated_prompt_attention, top_layers
from minillama.tasks import bench, task_prompt, task_text

PROFILE, DEVICE = course.setup()
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The gated prompt attention
#
# `gated_prompt_attention(q, k_prompt, v_prompt, gate)` is the second term of the
# equation. There is no causal mask: the prompts sit "before" the text, so every query
# sees all $K$ of them. The softmax is taken over the prompts alone, separately from the
# ordinary attention, which is why the gate can switch the term off completely:

# %%
b, h, t, K, d = 1, 2, 4, 3, 8
q, k_p, v_p = torch.randn(b, h, t, d), torch.randn(1, h, K, d), torch.randn(1, h, K, d)
terms = {}
for g in [0.0, 0.5, 3.0]:
    terms[g] = gated_prompt_attention(q, k_p, v_p, torch.tanh(torch.full((h,), g)))
    print(f"g = {g}: tanh(g) = {torch.tanh(torch.tensor(g)):.3f}, |term| = {terms[g].norm():.3f}")
assert torch.count_nonzero(terms[0.0]) == 0 and terms[3.0].norm() > terms[0.5].norm() > 0

# %% [markdown]
# `PromptAttention` holds one block's prompts and its gate (one per head, as in the
# official code) and plugs into the attention's `prompt` slot; the attention adds its
# output before $W_o$. The benchmark's V1 (`bench.method("adapter-v1")`) puts $K = 10$
# prompts into the top six blocks of our base (all of them in the CPU profile). Put into the real model, the zero gate leaves
# the logits exactly as they were:

# %%
base, tok, card = bench.base(PROFILE, DEVICE)     # full profile: trained on first use
n_base = sum(p.numel() for p in base.parameters())
print(f"base: {card['recipe']}, {n_base:,} parameters, {base.cfg.n_layers} blocks, "
      f"{base.cfg.n_heads} heads")
ZERO, RANDOM = bench.method("adapter-v1"), bench.method("adapter-v1-random")
LAYERS = ZERO.options["layers"]
print(f"{ZERO.name}: {ZERO.about}; lr {ZERO.lr:g}\n{RANDOM.name}: {RANDOM.about}; "
      f"lr {RANDOM.lr:g}")

zero0, _ = bench.fresh(ZERO, seed=0, device=DEVICE)
print("blocks with prompts:", [i for i, layer in enumerate(zero0.layers)
                               if isinstance(layer.attention.prompt, PromptAttention)],
      "=", list(top_layers(zero0, LAYERS)))
print(zero0.layers[-1].attention.prompt)
test = bench.test_records()
x = torch.tensor([tok.encode(format_prompt(test[0]), bos=True)], device=DEVICE)
with torch.no_grad():
    same = torch.equal(zero0(x), base(x))
print("zero gates: logits identical to the base model:", same)
assert same

# %% [markdown]
# The zero gate also orders the learning. The prompts' gradient passes through
# $\tanh(g)$, so at step 0 it is exactly zero; the gates' gradient is not. The first
# step opens the gates, and only then do the prompts start to move (as $B = 0$ let only
# $B$ move first in LoRA).

# %%
_, loss = zero0(x[:, :-1], x[:, 1:])
loss.backward()
top = zero0.layers[-1].attention.prompt
print(f"step 0: |grad prompt| = {top.prompt.grad.abs().max():.1e}   "
      f"|grad gate| = {top.gate.grad.abs().max():.1e}")
assert top.prompt.grad.abs().max() == 0 and top.gate.grad.abs().max() > 0
zero0.zero_grad(set_to_none=True)

# %% [markdown]
# ## 2. What it costs
#
# Each adapted block adds $K \cdot D$ prompt values and one gate per head. Built on the
# `meta` device, LLaMA-7B's counts come out without allocating anything:

# %%
cfg7b = CONFIGS["llama1-7b"]
counts = {}
for gate in ["tanh", "scalar"]:
    with torch.device("meta"):
        counts[gate] = P.trainable_parameters(P.apply(Llama(cfg7b), "adapter_v1", gate=gate))
    print(f"LLaMA-7B, K=10, L=30, gate={gate!r:8s}: {counts[gate]:>9,d} trainable "
          f"(30*10*4096 = {30 * 10 * 4096:,} prompt values + {counts[gate] - 30 * 10 * 4096} gates)")
assert counts == {"tanh": 30 * 10 * 4096 + 30 * 32, "scalar": 30 * 10 * 4096 + 30}
ours, share = bench.trainable_share(zero0, ZERO)
print(f"our base, K=10, L={LAYERS}: {ours:,} trainable = {LAYERS}*10*{base.cfg.dim} + "
      f"{LAYERS}*{base.cfg.n_heads} gates ({share:.2%} of the model)")
assert ours == LAYERS * (10 * base.cfg.dim + base.cfg.n_heads)

# %% [markdown]
# `gate="scalar"` is the variant Hugging Face peft implements (`AdaptionPrompt`): one gate
# per block, used as it is, without the tanh. It starts at zero too, so it shares the
# zero-init property; `tests/test_peft.py` checks that our scalar mode gives peft's
# logits. The rest of the chapter uses the per-head tanh gates of the official code.
#
# ## 3. The benchmark
#
# Every PEFT chapter uses the same benchmark (`minillama/tasks/bench.py`): Alpaca records
# of five task families to train on, a fixed budget of steps and batch, a learning rate
# chosen per method by a recorded sweep, and a test set of unseen problems of all seven
# families, two of which are never in the training data. The base's figures on that test
# set are the starting line:

# %%
print(f"training: {bench.N_TRAIN} Alpaca records of {', '.join(bench.TRAIN_FAMILIES)}")
print(f"test: {len(test)} unseen problems of all seven families "
      f"({', '.join(bench.HELDOUT_FAMILIES)} never tuned on)")
print(f"budget: {bench.STEPS} steps of {bench.BATCH} records, {bench.WARMUP} warmup steps, "
      f"the same learning rate {ZERO.lr:g} for both gate variants")
BASE_FIG = bench.base_figures()
BASE_PLAIN = BASE_FIG["plain_exact_match"]
print(f"base: Alpaca template {BASE_FIG['exact_match']:.1%} {BASE_FIG['ci95']}, "
      f"plain form {BASE_PLAIN:.1%} exact match")

# %% [markdown]
# ## 4. Zero-init vs random-init gates, at step 0
#
# The paper's ablation (arXiv 2303.16199): on ScienceQA, zero-initialised gating reached
# 84.04% and random initialisation 40.77%. Its argument is about the start: with random
# gates, the untrained prompts pour noise into every adapted block from the first step,
# disturbing what the frozen model computes before the prompts have learned anything.
#
# `adapter-v1-random` draws each gate from $\mathcal{N}(0, 1)$ before training, so that
# $\tanh(g)$ spreads over most of $(-1, 1)$; everything else (prompts, batches, learning
# rate) is the zero-gate run's. First the step-0 damage, for the three seeds the shipped
# adapters were trained with: how far each untrained adapter moves the base model's
# next-token distributions on text it knows (test problems written in the plain form:
# mean KL divergence from the base, and the largest change of a logit), and, for seed 0,
# how many test problems it still answers in the plain form.

# %%
@torch.no_grad()
def drift(model, tokens):
    """(mean KL(base || model) per token in nats, max |logit change|) on ``tokens``."""
    ours, theirs = model(tokens).float(), base(tokens).float()
    kl = torch.nn.functional.kl_div(ours.log_softmax(-1), theirs.log_softmax(-1),
                                    log_target=True, reduction="none").sum(-1)
    return kl.mean().item(), (ours - theirs).abs().max().item()


plain_text = torch.tensor([i for r in test[:100] for i in tok.encode(task_text(r), bos=True,
                                                                      eos=True)])
windows = plain_text[:8 * 128].view(8, 128).to(DEVICE)
step0, random0 = {}, None
for seed in bench.SEEDS:
    for m in (ZERO, RANDOM):
        model = zero0 if (m, seed) == (ZERO, 0) else bench.fresh(m, seed, DEVICE)[0]
        random0 = model if (m, seed) == (RANDOM, 0) else random0
        step0[m.name, seed] = drift(model, windows)
        print(f"step 0, {m.name:18s} seed {seed}: KL from the base {step0[m.name, seed][0]:.4f} "
              f"nats/token, max |logit change| {step0[m.name, seed][1]:.2f}")
plain0 = greedy_score(random0, tok, test, device=DEVICE, template=task_prompt)["exact_match"]
print(f"step 0, random gates (seed 0): plain-form exact match {plain0:.1%} vs the base's "
      f"{BASE_PLAIN:.1%}")
assert all(step0[ZERO.name, s] == (0.0, 0.0) for s in bench.SEEDS)
assert all(step0[RANDOM.name, s][0] > 0 for s in bench.SEEDS)
assert plain0 < BASE_PLAIN

# %% [markdown]
# The zero-gated adapter is the base model exactly: zero KL, every logit unchanged, on
# every seed. The random gates are not: before a single step of training they move the
# base's next-token distributions by 0.013, 0.345 and 0.024 nats/token of KL on the three
# seeds (single logits by up to 9.7, 18.6 and 12.5), and the random gates of seed 0
# answer 85.2% of the base's own problems in the plain form instead of 95.4%.
#
# ## 5. Training: the first steps, live
#
# The claim to test is about the start, so we fix before looking at any curve which
# start: **the first 20 steps** (the 15 warmup steps and 5 at the full learning rate;
# the window `tests/test_peft_thresholds.py` also uses). The CPU profile trains both
# seed-0 runs live for exactly those steps, with the shipped runs' recipe: during warmup
# the learning rate does not depend on the total number of steps, so the live losses up
# to step 15 must be the shipped adapters' logged losses (`train_loss` on their cards).
# The full profile trains all six runs for the whole budget.

# %%
FIRST = 20
NAMES = {(m.name, s): bench.adapter_name(m.name, seed=s) for m in (ZERO, RANDOM)
         for s in bench.SEEDS}
curves, live, models, opened = {}, {}, {}, {}
if PROFILE == "cpu":
    cards = {name: bench.adapter_card(name) for name in NAMES.values()}
    curves = {name: c["train_loss"] for name, c in cards.items()}
    for m in (ZERO, RANDOM):
        model, _, log, wall = bench.run(m, seed=0, steps=FIRST, device=DEVICE)
        live[m.name] = [r["loss"] for r in log]
        shipped = curves[m.name][:bench.WARMUP + 1]
        gap = max(abs(a - b) for a, b in zip(live[m.name], shipped))
        print(f"{m.name:18s}: {FIRST} live steps in {wall:.1f} s, loss {live[m.name][0]:.3f} -> "
              f"{live[m.name][-1]:.3f}; max |live - shipped| over the first {len(shipped)} "
              f"steps: {gap:.1e}")
        assert gap < 1e-3
        gates = torch.stack([model.layers[i].attention.prompt.gate_value().detach()
                             for i in top_layers(model, LAYERS)]).abs()
        opened[m.name] = gates.mean().item()
        print(f"{'':18s}  after {FIRST} steps: mean |tanh(g)| {gates.mean():.3f}, "
              f"smallest {gates.min():.3f}")
        if m is ZERO:
            assert gates.min() > 0  # every gate has left zero
else:
    cards = {}
    for (name, seed), adapter in NAMES.items():
        model, _, log, wall = bench.run(bench.method(name), seed=seed, device=DEVICE)
        curves[adapter], models[adapter] = [r["loss"] for r in log], model
        print(f"{adapter}: {bench.STEPS} steps in {wall:.1f} s")
    live = {m.name: curves[m.name][:FIRST] for m in (ZERO, RANDOM)}

# %% [markdown]
# Now the whole curves, three seeds each (shipped cards in the CPU profile), and the mean
# loss over the first 20 steps:

# %%
first = {name: sum(c[:FIRST]) / len(c[:FIRST]) for name, c in curves.items()}
print(f"training loss: at step 0, and the mean over the first {FIRST} steps")
print(f"{'seed':>4s} {'step 0: zero':>13s} {'random':>7s} {'first 20: zero':>15s} "
      f"{'random':>7s} {'random - zero':>14s}")
diffs, start = [], []
for s in bench.SEEDS:
    z, r = first[NAMES[ZERO.name, s]], first[NAMES[RANDOM.name, s]]
    z0, r0 = curves[NAMES[ZERO.name, s]][0], curves[NAMES[RANDOM.name, s]][0]
    diffs.append(r - z)
    start.append(r0 - z0)
    print(f"{s:>4d} {z0:>13.3f} {r0:>7.3f} {z:>15.3f} {r:>7.3f} {r - z:>+14.3f}")
mean_diff = sum(diffs) / len(diffs)
sd = (sum((d_ - mean_diff) ** 2 for d_ in diffs) / (len(diffs) - 1)) ** 0.5
print(f"first {FIRST} steps, random - zero over {len(diffs)} seeds: mean {mean_diff:+.3f}, "
      f"standard deviation {sd:.3f} (|mean| = {abs(mean_diff) / sd:.2f} standard deviations), "
      f"range [{min(diffs):+.3f}, {max(diffs):+.3f}]")
assert all(d_ > 0 for d_ in start)      # the random gates start from a higher loss ...
if PROFILE == "cpu":                    # the shipped runs, seed by seed
    assert sum(d_ < 0 for d_ in diffs) == 2 and mean_diff < 0  # ... yet lower on 2 seeds
    assert diffs[1] > 0                 # seed 1: the zero gates lower
    assert abs(mean_diff) < sd          # the mean gap is smaller than its spread
    assert abs(opened[ZERO.name] - opened[RANDOM.name]) < 0.05   # gates similarly open


def smooth(values, k=10):
    """Running mean over the last k values (the raw curves are noisy at small batch)."""
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
            for i in range(len(values))]


fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for ax, upto in zip(axes, [None, FIRST]):
    for (name, s), adapter in NAMES.items():
        c = curves[adapter][:upto]
        ax.plot(range(len(c)), c if upto else smooth(c), color="C0" if name == ZERO.name else "C3",
                alpha=0.8, label=f"{'zero' if name == ZERO.name else 'random'} gates"
                if s == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("response loss (nats/token)")
    ax.set_title("all steps (running mean of 10)" if upto is None else f"first {FIRST} steps")
axes[0].axvspan(0, FIRST, color="grey", alpha=0.15)
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The paper's argument holds for step 0 and not beyond it. On each of the three seeds
# the random-gated run starts from a higher loss (the damaged model of section 4). But
# over the first 20 steps, the window fixed in advance, the advantage is gone: the
# random-gated run's mean loss is *lower* on seeds 0 and 2 (by 0.022 and 0.023
# nats/token) and higher only on seed 1 (by 0.004). Over the three seeds the random
# gates are ahead by 0.014 on average, with a standard deviation of 0.015: a gap
# smaller than its own spread, so no consistent difference either way. The target "the
# mean training loss over the first 20 steps is lower with the zero gate" **fails** on
# our benchmark (on the mean, and on two seeds of three). At this learning rate (0.3)
# the zero gates open fast: after the 20 live steps both sets of gates are about
# equally open (mean |tanh(g)| 0.318 zero, 0.352 random, printed above), and
# whatever the random gates cost at step 0 is made up early. The right panel shows the
# curves meeting.
#
# ## 6. Where they end: accuracy and forgetting
#
# After the full budget, exact match on the test set in the Alpaca template (with its
# 95% Wilson interval), exact match on the same problems asked in the plain form, and
# forgetting (the base's plain-form exact match minus the adapter's). The seed-0 adapters
# are evaluated here from their files, and must reproduce their cards; the other seeds'
# figures are read from their cards (the full profile measures all six).

# %%
figures = {}
if PROFILE == "cpu":
    for m in (ZERO, RANDOM):
        models[m.name], _, _ = bench.load_adapter(m.name, device=DEVICE)
        figures[m.name] = bench.card_figures(bench.measure(models[m.name], tok, device=DEVICE))
        assert figures[m.name]["test_exact_match"] == cards[m.name]["test_exact_match"]
        assert figures[m.name]["forgetting"] == cards[m.name]["forgetting"]
    for adapter, c in cards.items():
        figures.setdefault(adapter, {k: c[k] for k in ("test_exact_match", "ci95",
                                                        "plain_exact_match", "forgetting",
                                                        "heldout_families_exact_match",
                                                        "per_family")})
else:
    for adapter, model in models.items():
        figures[adapter] = bench.card_figures(bench.measure(model, tok, device=DEVICE))
print(f"{'adapter':22s} {'Alpaca exact match [95%]':>26s} {'plain':>7s} {'forgetting':>11s} "
      f"{'held-out families':>18s}")
for adapter in NAMES.values():
    f = figures[adapter]
    print(f"{adapter:22s} {f['test_exact_match']:>8.1%} [{f['ci95'][0]:.1%}, {f['ci95'][1]:.1%}]"
          f" {f['plain_exact_match']:>7.1%} {f['forgetting']:>+11.1%} "
          f"{f['heldout_families_exact_match']:>18.1%}")
print(f"{'base':22s} {BASE_FIG['exact_match']:>8.1%} [{BASE_FIG['ci95'][0]:.1%}, "
      f"{BASE_FIG['ci95'][1]:.1%}] {BASE_PLAIN:>7.1%}")


def over_seeds(name, key):
    values = [figures[NAMES[name, s]][key] for s in bench.SEEDS]
    return sum(values) / len(values), min(values), max(values)


for key in ("test_exact_match", "forgetting"):
    for m in (ZERO, RANDOM):
        mean, lo, hi = over_seeds(m.name, key)
        print(f"{key:16s} {m.name:18s}: mean over seeds {mean:.1%}, range [{lo:.1%}, {hi:.1%}]")
ZERO_EM, RANDOM_EM = over_seeds(ZERO.name, "test_exact_match"), over_seeds(RANDOM.name,
                                                                           "test_exact_match")
ZERO_F, RANDOM_F = over_seeds(ZERO.name, "forgetting"), over_seeds(RANDOM.name, "forgetting")
print("the paper, LLaMA-7B on ScienceQA: zero gates 84.04%, random gates 40.77%")

# %% [markdown]
# **Accuracy.** Both gate variants end close together. The zero gates reach 52.4, 49.4
# and 47.2% exact match on the three seeds, the random gates 50.6, 47.2 and 46.0%: the
# zero gates are ahead on every seed, but by only 1.8, 2.2 and 1.2 points, and on every
# seed the two 95% intervals overlap. The means over seeds (49.7 vs 47.9%) differ by
# 1.7 points. Nothing here reproduces the paper's 84.04 vs 40.77%: at our scale and
# budget the gate's initial value does not decide where training ends.
#
# Nor does V1 do the benchmark's job as well as LoRA. It lifts the base from 5.4% to
# 47-52% in the Alpaca template, but the target, at least 50 points above the
# base (55.4%), **fails** for both variants on every seed at this budget (150 steps at
# the swept learning rate, 0.3); the best seed, 52.4%, is 47.0 points above the base.
# LoRA q,v reaches 75.0% on the same benchmark (chapter 7). Per family (seed 0), V1
# answers `max_list` and `refusal` mostly right (87-100%), `count_words` and
# `list_to_csv` about half the time (53-60%), and `uppercase`, `capitalize` and
# `min_list` at most a third of the time (10-33%).

# %%
best = max(ZERO_EM[2], RANDOM_EM[2])
gaps = [figures[NAMES[ZERO.name, s]]["test_exact_match"]
        - figures[NAMES[RANDOM.name, s]]["test_exact_match"] for s in bench.SEEDS]
print(f"mean over seeds: zero {ZERO_EM[0]:.1%}, random {RANDOM_EM[0]:.1%}, "
      f"difference {ZERO_EM[0] - RANDOM_EM[0]:+.1%}; per seed, zero - random: "
      + ", ".join(f"{g_:+.1%}" for g_ in gaps))
print(f"best V1 seed {best:.1%} ({best - BASE_FIG['exact_match']:+.1%} over the base) vs "
      f"base + 50 points = {BASE_FIG['exact_match'] + 0.50:.1%}")
if PROFILE == "cpu":
    LORA = bench.adapter_card("lora-qv")                      # sha256-checked card
else:                                                         # LoRA q,v on this base, live
    lora_qv, _, _, _ = bench.run(bench.method("lora-qv"), device=DEVICE)
    LORA = bench.card_figures(bench.measure(lora_qv, tok, device=DEVICE))
print(f"LoRA q,v on the same benchmark (card): {LORA['test_exact_match']:.1%}, "
      f"forgetting {LORA['forgetting']:+.1%}")
for m in (ZERO, RANDOM):
    print(f"{m.name} (seed 0) per family:", ", ".join(
        f"{k} {v:.0%}" for k, v in sorted(figures[m.name]["per_family"].items())))
BANDS = {("max_list", "refusal"): (0.87, 1.0), ("count_words", "list_to_csv"): (0.5, 0.6),
         ("uppercase", "capitalize", "min_list"): (0.1, 0.34)}
if PROFILE == "cpu":                                          # the shipped adapters' figures
    for m in (ZERO, RANDOM):
        pf = figures[m.name]["per_family"]
        assert all(lo <= round(pf[f], 2) <= hi for fams, (lo, hi) in BANDS.items() for f in fams)
    assert LORA["test_exact_match"] > best
    assert best < BASE_FIG["exact_match"] + 0.50              # the >= 50-point target fails
    assert 0 < ZERO_EM[0] - RANDOM_EM[0] < 0.02
    for s in bench.SEEDS:
        z, r = figures[NAMES[ZERO.name, s]], figures[NAMES[RANDOM.name, s]]
        assert z["test_exact_match"] > r["test_exact_match"], s    # zero ahead on every seed
        assert z["ci95"][0] < r["ci95"][1] and r["ci95"][0] < z["ci95"][1], s  # overlapping

# %% [markdown]
# **Forgetting.** What each adapter costs the base's own, plain-form skill (95.4% on
# these problems) is where the gates differ most, and here the zero gates come off worse.
# The interval of forgetting below is the base's figure minus the Wilson interval of the
# adapter's 500 plain-form answers:

# %%
n = cards[ZERO.name]["test_records"] if cards else len(test)


def forgetting_interval(f):
    """95% interval of forgetting: base plain-form EM minus the adapter's Wilson interval."""
    lo, hi = wilson_interval(round(f["plain_exact_match"] * n), n)
    return BASE_PLAIN - hi, BASE_PLAIN - lo


apart = {}
for s in bench.SEEDS:
    fz, fr = figures[NAMES[ZERO.name, s]], figures[NAMES[RANDOM.name, s]]
    (zlo, zhi), (rlo, rhi) = forgetting_interval(fz), forgetting_interval(fr)
    apart[s] = "zero less" if zhi < rlo else "random less" if rhi < zlo else "overlap"
    print(f"seed {s}: forgetting zero {fz['forgetting']:+.1%} [{zlo:+.1%}, {zhi:+.1%}], "
          f"random {fr['forgetting']:+.1%} [{rlo:+.1%}, {rhi:+.1%}] -> {apart[s]}")
more_than_lora = [a for a in NAMES.values() if figures[a]["forgetting"] > LORA["forgetting"]]
print(f"mean forgetting over seeds: zero {ZERO_F[0]:.1%}, random {RANDOM_F[0]:.1%}; "
      f"LoRA q,v (card) {LORA['forgetting']:.1%}, exceeded by {len(more_than_lora)} of the "
      f"{len(NAMES)} V1 runs: {', '.join(more_than_lora)}")
if PROFILE == "cpu":                          # the shipped adapters, seed by seed
    assert all(figures[NAMES[ZERO.name, s]]["forgetting"]
               > figures[NAMES[RANDOM.name, s]]["forgetting"]
               for s in bench.SEEDS)          # the zero gates forget more on every seed
    assert apart == {0: "random less", 1: "random less", 2: "overlap"}
    assert ZERO_F[0] > RANDOM_F[0] + 0.15
    assert len(more_than_lora) == 5 and NAMES[RANDOM.name, 1] not in more_than_lora
    assert LORA["test_exact_match"] - max(ZERO_EM[2], RANDOM_EM[2]) > 0.20

# %% [markdown]
# The zero gates forget more on every seed: 68.8 vs 42.2 points on seed 0 and 58.2 vs
# 28.4 on seed 1 (intervals apart both times), 51.4 vs 48.4 on seed 2 (intervals
# overlapping). Across the three seeds the zero gates' mean forgetting is 59.5 points,
# the random gates' 39.7. So the zero gate does not protect the base's own skill here;
# if anything it loses more of it, though with three seeds and one overlap that is a
# tendency, not a law. And V1 is not the gentle method it looks like on paper (0.45% of
# the parameters, base model exact at step 0): five of the six runs forget more than
# LoRA q,v (36.8 points, chapter 7), the random-gate seed 1 (28.4) being the one that
# forgets less, while all six are over 20 points less accurate.
#
# **The learning-rate trade.** The benchmark picks each method's learning rate by one
# rule: the best exact match in the Alpaca template on 300 validation problems (not the
# test set). The sweep recorded for V1 (the random-gate variant uses V1's rate; the full
# profile's sweep, on its own base, is cached beside it in `build/full/`):

# %%
SWEEP = bench.sweep_record()
rows = SWEEP["results"][ZERO.name]
print(f"rule: {SWEEP['rule']}; {SWEEP['val_records']} validation problems, "
      f"{SWEEP['steps']} steps of {SWEEP['batch']}")
for row in rows:
    print(f"lr {row['lr']:<6g} validation exact match {row['val_exact_match']:6.1%}, "
          f"validation loss {row['val_loss']:.3f}" + ("   <- chosen" if row["lr"] == ZERO.lr else ""))
chosen = max(rows, key=lambda r: (r["val_exact_match"], -r["val_loss"]))
grid = [row["lr"] for row in rows]
for m in (ZERO, RANDOM):
    print(f"shipped {m.name} at lr {m.lr:g}, forgetting per seed: " + ", ".join(
        f"{figures[NAMES[m.name, s]]['forgetting']:.1%}" for s in bench.SEEDS))
print("forgetting recorded by the sweep:", any("forgetting" in row for row in rows))
assert chosen["lr"] == ZERO.lr == RANDOM.lr == SWEEP["chosen"][ZERO.name]
assert not any("forgetting" in row for row in rows)
if PROFILE == "cpu":                                         # the shipped sweep
    assert min(grid) < ZERO.lr < max(grid)                   # inside the grid, not on its edge
    assert sorted(rows, key=lambda r: r["val_exact_match"])[-2]["lr"] == 0.1  # the runner-up

# %% [markdown]
# Validation exact match climbs from 23.0% at 0.003 to 48.7% at 0.3 and falls to 34.3%
# at 1.0, so the chosen rate lies inside the grid, with 0.1 (46.7%) close behind. The
# rule looks only at answers in the Alpaca template, and the sweep records no
# forgetting, so this chapter cannot say how forgetting changes along the grid. What it
# can say is what the choice ships: at 0.3 the zero-gate adapters forget 68.8, 58.2 and
# 51.4 points of the base's plain-form skill, the random-gate ones 42.2, 28.4 and 48.4.
# A rule that also weighed the plain-form skill could choose a different rate; finding
# out would mean measuring forgetting at every rate of the grid.

# %% [markdown]
# ## 7. What the gates learned
#
# $\tanh(g)$ per block and head of the two seed-0 adapters after training: how much each
# head listens to its prompts. For the random gates, the right panel also shows where
# each gate was drawn at step 0.

# %%
init_gates = torch.stack([random0.layers[i].attention.prompt.gate_value().detach().float().cpu()
                          for i in top_layers(random0, LAYERS)])
grids = {}
for m in (ZERO, RANDOM):
    grids[m.name] = torch.stack([models[m.name].layers[i].attention.prompt.gate_value()
                                 .detach().float().cpu() for i in top_layers(models[m.name],
                                                                              LAYERS)])
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
panels = [(grids[ZERO.name], "zero-init: tanh(g) trained"),
          (init_gates, "random-init: tanh(g) at step 0"),
          (grids[RANDOM.name], "random-init: tanh(g) trained")]
for ax, (grid, title) in zip(axes, panels):
    im = ax.imshow(grid, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto", origin="lower")
    ax.set_title(title)
    ax.set_xlabel("head")
axes[0].set_ylabel("adapted block")
fig.colorbar(im, ax=axes)
plt.show()
for name, grid in [("zero, trained", grids[ZERO.name]), ("random, step 0", init_gates),
                   ("random, trained", grids[RANDOM.name])]:
    print(f"{name:16s} mean |tanh(g)| per block (bottom to top):",
          " ".join(f"{v:.2f}" for v in grid.abs().mean(-1).tolist()))
moved = (grids[RANDOM.name] - init_gates).abs()
corr = torch.corrcoef(torch.stack([grids[RANDOM.name].flatten(), init_gates.flatten()]))[0, 1]
print(f"random gates: mean |change of tanh(g)| in training {moved.mean():.3f}; correlation of "
      f"trained with initial tanh(g) {corr:.2f}")
print(f"mean |tanh(g)| over all blocks and heads: zero, trained {grids[ZERO.name].abs().mean():.3f}; "
      f"random, trained {grids[RANDOM.name].abs().mean():.3f}")
per_block = grids[ZERO.name].abs().mean(-1)
assert grids[ZERO.name].abs().min() > 0                      # every zero gate has opened
if PROFILE == "cpu":                                         # the shipped seed-0 adapters
    assert 0.12 < per_block.min() < per_block.max() < 0.30
    assert 0.45 < corr < 0.55 and 0.45 < moved.mean() < 0.5
    assert abs(grids[RANDOM.name].abs().mean() - grids[ZERO.name].abs().mean()) < 0.005

# %% [markdown]
# Every zero gate has opened, to a mean |tanh(g)| between 0.13 and 0.29 per block. The
# random gates were largely re-drawn by training: each moved by 0.469 on average, and the
# trained values keep only a correlation of 0.50 with where they were drawn. Both end
# equally open on average (mean |tanh(g)| 0.231 zero, 0.230 random), from very different
# starts, with accuracies within 2 points of each other (section 6) but different
# forgetting.
#
# ## 8. Generation: prompts are not in the KV cache
#
# Each decoding step recomputes the prompt keys and values from the frozen $W_k, W_v$,
# so the cache holds only the text's keys and values and generation with the cache
# gives the same tokens as without it. Then one greedy answer per family from the
# shipped zero-gate adapter, marked `ok` where it is exactly right:

# %%
model = models[ZERO.name]
ids = torch.tensor(tok.encode(format_prompt(test[0]), bos=True), device=DEVICE)
cached, uncached = model.generate(ids, 12, use_cache=True), model.generate(ids, 12, use_cache=False)
print("with cache == without cache:", torch.equal(cached, uncached))
assert torch.equal(cached, uncached)
sample = [next(r for r in test if r["family"] == f) for f in sorted({r["family"] for r in test})]
right, oks = 0, []
for record, answer in zip(sample, generate_answers(model, tok, sample, max_new_tokens=24,
                                                   device=DEVICE)):
    ok = answer.strip() == record["output"]
    right += ok
    oks += [record["family"]] if ok else []
    print(f"{'ok ' if ok else '   '}{record['family']:12s} {record['instruction'][:38]!r:42s} "
          f"-> {answer!r}")
print(f"{right} of {len(sample)} exactly right")
if PROFILE == "cpu":                                         # the shipped adapter's answers
    assert oks == ["count_words", "max_list", "uppercase"]

# %% [markdown]
# Three of the seven are right: `count_words`, `max_list` and `uppercase`. One problem
# per family is not the per-family rate of section 6: this `uppercase` problem is right
# although the adapter gets only 10% of them, and the `refusal` problem is wrong (a
# number) although it gets 93% of them. The other wrong answers are in the template's
# place, and the capitalisation gets an answer meant for another task (the refusal
# sentence).
#
# ## 9. How many blocks get prompts?
#
# The paper varies $L$ on ScienceQA: 10, 20 and 30 adapted blocks reach 55.95, 73.36 and
# 83.85% accuracy. The full profile repeats the sweep on its base, every block count, with the
# benchmark's recipe and the top $L$ blocks adapted; the CPU profile skips it.

# %%
if PROFILE != "cpu":
    sweep = {}
    for layers in range(1, base.cfg.n_layers + 1):
        m = bench.Method(f"adapter-v1-L{layers}", "adapter_v1", dict(layers=layers), ZERO.lr)
        model, _, _, _ = bench.run(m, device=DEVICE)
        result = bench.measure(model, tok, device=DEVICE)
        sweep[layers] = (result["loss"], result["exact_match"])
        print(f"L={layers}: {P.trainable_parameters(model):,} trainable, test loss "
              f"{sweep[layers][0]:.3f}, exact match {sweep[layers][1]:.1%} {result['ci95']}")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for k, label in enumerate(["test response loss", "exact match"]):
        ax[k].plot(list(sweep), [v[k] for v in sweep.values()], "o-")
        ax[k].set_xlabel("adapted blocks L (the top ones)")
        ax[k].set_ylabel(label)
    plt.tight_layout()
    plt.show()
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch08_adapter_v1.py`: the gated prompt attention, checked against the
# library function and against the whole `PromptAttention` module.

# %%
IMPL = "solutions"
result = course.grade("ch08", impl=IMPL)
