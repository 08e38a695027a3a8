# %% [markdown]
# # Chapter 10 — LLaMA-Excitor: changing *where* attention looks
#
# LLaMA-Adapter V1 and V2 (chapters 8 and 9) add a second, gated attention over learned
# prompts: the prompts' *values* flow into the hidden states. LLaMA-Excitor (Zou et al.,
# arXiv 2404.00913) argues that this disturbs what the frozen model computes, and instead
# leaves the values and the hidden states alone. It only changes the attention *scores*,
# i.e. which of its own tokens a head looks at.
#
# In each of the top $L$ blocks, $K$ learnable prompts $P \in \mathbb{R}^{K\times D}$ and a
# low-rank "excitor query" $W^E_q = W_{up}W_{down}$ ($D \to r \to D$) build one extra key
# per token from the layer input $T$ ($M$ tokens):
#
# $$K_{extra} = \mathrm{softmax}\!\Big(\frac{W^E_q(T)\,P^\top}{\sqrt{D}}\Big)\,P
#   \qquad (M \times D),$$
#
# and the scores of every head become
#
# $$S = \frac{QK^\top}{\sqrt{d}} + g\cdot\frac{Q K_{extra}^\top}{\sqrt{d}},\qquad
#   \mathrm{out} = W_o\,\mathrm{softmax}(S + M_{causal})\,V,$$
#
# with $K_{extra}$ split into heads like $K$ (no RoPE) and a "cold-start" gate $g = 0$,
# so the model starts as the base model. $V$ is untouched.
#
# | piece | file |
# |---|---|
# | `reconstructed_keys`, `Excitor`, the visual variant | `minillama/peft/excitor.py` |
# | the plug-in point `attn.score_bias`, `attend_explicit` | `minillama/attention.py` |
# | `apply`, `set_visual`, `trainable_parameters` | `minillama/peft/__init__.py` |
# | the benchmark, the shipped adapters and their cards | `minillama/tasks/bench.py` |
# | toy images with captions and questions | `minillama/data/vision.py` |
#
# The base is the PEFT benchmark's (`bench.base`: the `peft-base` reference, chapter 7;
# in the full profile `peft-base-full`, trained once):
# a model that has mastered seven task families in the plain form of its pretraining
# text (`...\nAnswer:\n...`) and almost never answers them in the Alpaca template.
# Fine-tuning has to teach it the format, which for the Excitor means learning where to
# look; *forgetting* is the drop in plain-form exact match on the same problems.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains the Excitor
# live for 20 steps to show the mechanics, evaluates the *shipped* adapters
# (`minillama/adapters/`, trained by `scripts/train_adapters.py` on the benchmark's full
# budget) on the 500-record test set, and trains the visual variant briefly; `full` (the
# default on CUDA) trains the six noisy-label runs live on its own base, 12.5 times the
# size (`bench.base`), and the visual variant for longer (`minillama/profiles.py`). The
# figures the text quotes are the CPU profile's; the cells assert them there, and in the
# full profile the general claims only (the full profile prints whether the claim fixed
# in advance holds on its base). The last code cell before the exercises prints the wall
# time.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minillama import CONFIGS, Llama, course, profiles
from minillama import peft as P
from minillama.attention import attend_explicit, causal_mask, repeat_kv
from minillama.data import format_prompt, toy_images
from minillama.data.vision import COLOURS
from minillama.files import read_json
from minillama.finetune import generate_answers, sft_batch, sft_tokens
from minillama.metrics import wilson_interval
from minillama.peft.excitor import reconstructed_keys
from minillama.rope import apply_rotary_emb
from minillama.tasks import bench

PROFILE, DEVICE = course.setup()
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. Reconstructed keys
#
# `reconstructed_keys(t, P, W_down, W_up)` is the first equation. Each token asks the
# prompts a question (its excitor query) and gets back a convex mixture of the prompts:
# a key that lives in the span of $P$, whatever the token was.

# %%
b, M, D, K, r = 1, 5, 16, 4, 2
t, prompts = torch.randn(b, M, D), torch.randn(K, D)
W_down, W_up = torch.randn(r, D), torch.randn(D, r)
k_extra = reconstructed_keys(t, prompts, W_down, W_up)
weights = torch.linalg.lstsq(prompts.T, k_extra[0].T).solution.T      # k_extra = weights @ P
print("K_extra:", tuple(k_extra.shape), "  mixing weights per token (rows sum to 1):")
print(weights.round(decimals=3))
print("row sums:", weights.sum(-1).round(decimals=4).tolist())
assert torch.allclose(weights.sum(-1), torch.ones(M), atol=1e-4) and (weights > -1e-4).all()

# %% [markdown]
# `Excitor` holds one block's $P$, $W_{down}$, $W_{up}$ and one gate per head, and plugs
# into the attention's `score_bias` slot: the attention calls it with its input and its
# rotated queries and adds the returned $(b, h, t, s)$ term to the scores before the
# softmax. A block with a score bias always takes the explicit attention path
# (`attend_explicit`), since the fused kernel has no place for the extra term. The
# benchmark's Excitor (`bench.method("excitor")`) adapts all six blocks of our base with
# $K = 30$ prompts and rank $r = 16$. With $g = 0$ the extra term is zero, and the logits
# are the base model's up to float rounding (the explicit path sums in a different order
# than the fused kernel):

# %%
base, tok, card = bench.base(PROFILE, DEVICE)     # full profile: trained on first use
n_base = sum(p.numel() for p in base.parameters())
print(f"base: {card['recipe']}, {n_base:,} parameters, {base.cfg.n_layers} blocks, "
      f"{base.cfg.n_heads} heads")
EXCITOR, LORA = bench.method("excitor"), bench.method("lora-qv")
LAYERS = EXCITOR.options["layers"]
PROMPT_LEN, RANK = P.DEFAULTS["excitor"]["prompt_len"], P.DEFAULTS["excitor"]["rank"]

excited, _ = bench.fresh(EXCITOR, seed=0, device=DEVICE)
print(excited.layers[-1].attention.score_bias)
test = bench.test_records()
x = torch.tensor([tok.encode(format_prompt(test[0]), bos=True)], device=DEVICE)
with torch.no_grad():
    diff = (excited(x) - base(x)).abs().max().item()
print(f"cold start (g = 0): max |logits - base logits| = {diff:.1e}")
assert diff < 1e-4

# %% [markdown]
# The values are untouched in a stronger sense too: whatever the gate, each head's
# output is still a convex mixture of the *base model's own* value vectors. Only the
# mixing weights change: the Excitor adds nothing to the residual stream that the
# frozen $W_v$ did not produce.
#
# ## 2. What it costs
#
# Per adapted block: $K\cdot D$ prompt values, $2\,D\,r$ for $W_{down}$ and $W_{up}$, and
# one gate per head. On the `meta` device:

# %%
cfg7b = CONFIGS["llama1-7b"]
with torch.device("meta"):
    n7b = P.trainable_parameters(P.apply(Llama(cfg7b), "excitor"))
per_block = 30 * 4096 + 2 * 4096 * 16
print(f"LLaMA-7B, K=30, r=16, L=30: {n7b:,} trainable = 30 * (30*4096 + 2*4096*16) "
      f"= {30 * per_block:,} + {n7b - 30 * per_block} gates")
assert n7b == 30 * per_block + 30 * 32
ours, share = bench.trainable_share(excited, EXCITOR)
print(f"our base, K={PROMPT_LEN}, r={RANK}, L={LAYERS}: {ours:,} trainable "
      f"({share:.1%} of the model)")
assert ours == LAYERS * (PROMPT_LEN * base.cfg.dim + 2 * base.cfg.dim * RANK + base.cfg.n_heads)

# %% [markdown]
# The paper reports about 7.6M; $K = 30$ is the prompt length that reproduces it with
# $r = 16$ in the top 30 blocks. A recent survey's table lists the Excitor at ~0.5M.
# That figure does not follow from the paper's settings: one adapted block alone costs
# $30\cdot4096 + 2\cdot4096\cdot16 = 253{,}952$, so 0.5M is two blocks' worth. Even
# shrinking every knob does not land on it naturally:

# %%
for k_, r_, layers_ in [(30, 16, 30), (10, 16, 30), (30, 4, 30), (1, 1, 30), (30, 16, 2)]:
    with torch.device("meta"):
        n = P.trainable_parameters(P.apply(Llama(cfg7b), "excitor", prompt_len=k_, rank=r_,
                                           layers=layers_))
    print(f"K={k_:2d} r={r_:2d} L={layers_:2d}: {n:>10,d}")

# %% [markdown]
# ## 3. Fine-tuning on the benchmark
#
# The benchmark (`minillama/tasks/bench.py`, chapter 7) trains on Alpaca records of five
# task families for a fixed budget of steps, at a learning rate chosen per method by a
# recorded sweep, and tests on unseen problems of all seven families. The CPU profile
# trains the Excitor live for the first 20 steps with the shipped run's recipe: during
# the warmup the learning rate does not depend on the total number of steps, so the live
# losses up to the end of the warmup must be the shipped adapter's logged losses
# (`train_loss` on its card). The gates start at zero and open:

# %%
LIVE = 20
print(f"training: {bench.N_TRAIN} Alpaca records of {', '.join(bench.TRAIN_FAMILIES)}; "
      f"{bench.STEPS} steps of {bench.BATCH}; Excitor lr {EXCITOR.lr:g}, LoRA q,v lr {LORA.lr:g}")
print(f"test: {len(test)} unseen problems ({', '.join(bench.HELDOUT_FAMILIES)} never tuned on)")
if PROFILE == "cpu":
    live, _, log, wall = bench.run(EXCITOR, seed=0, steps=LIVE, device=DEVICE)
    losses, shipped = [r["loss"] for r in log], bench.adapter_card("excitor")["train_loss"]
    gap = max(abs(a - b) for a, b in zip(losses, shipped[:bench.WARMUP + 1]))
    gates = torch.stack([live.layers[i].attention.score_bias.gate.detach().abs()
                         for i in range(base.cfg.n_layers - LAYERS, base.cfg.n_layers)])
    print(f"{LIVE} live steps in {wall:.1f} s: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"max |live - shipped| over the first {min(len(shipped), bench.WARMUP + 1)} steps: "
          f"{gap:.1e}; |g| after {LIVE} steps: mean {gates.mean():.3f}, smallest {gates.min():.3f}")
    assert gap < 1e-3 and gates.min() > 0
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(shipped, color="grey", alpha=0.7, label=f"shipped run ({len(shipped)} steps)")
    ax.plot(losses, "o-", ms=3, label=f"live ({LIVE} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("response loss (nats/token)")
    ax.legend()
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## 4. Excitor vs LoRA on noisy labels: what each forgets
#
# The Excitor's claim is that by leaving the values alone it disturbs the frozen model
# less. We test it where a method is most tempted to rewrite what it knows: the noisy
# variant of the benchmark, in which 30% of the training answers are wrong. The rival
# is LoRA on $W_q, W_v$ (rank 8, chapter 7), three seeds each. Forgetting is the base's
# plain-form exact match on the test problems minus the adapter's; its 95% interval is
# the Wilson interval of the adapter's 500 plain-form answers (the base's figure is a
# fixed reference on the same problems).
#
# Fixed before looking: the claim *the Excitor forgets less* holds only if, on each of the
# three seeds, the Excitor's forgetting interval lies entirely below LoRA's. The seed-0
# adapters are evaluated here from their files and must reproduce their cards; the other
# seeds come from their cards (the full profile trains and measures all six).

# %%
RIVALS = (EXCITOR, LORA)
NAMES = {(m.name, s): bench.adapter_name(m.name, noisy=True, seed=s) for m in RIVALS
         for s in bench.SEEDS}
figures, models = {}, {}
if PROFILE == "cpu":
    cards = {adapter: bench.adapter_card(adapter) for adapter in NAMES.values()}
    for m in RIVALS:
        adapter = NAMES[m.name, 0]
        models[m.name], _, _ = bench.load_adapter(adapter, device=DEVICE)
        fig_ = bench.card_figures(bench.measure(models[m.name], tok, device=DEVICE))
        assert all(fig_[k] == cards[adapter][k] for k in ("test_exact_match", "forgetting")), m
    figures = {a: {**c, "share": c["trainable_share"]} for a, c in cards.items()}
else:
    for (name, seed), adapter in NAMES.items():
        m = bench.method(name)
        model, _, _, _ = bench.run(m, noisy=True, seed=seed, device=DEVICE)
        figures[adapter] = {**bench.card_figures(bench.measure(model, tok, device=DEVICE)),
                            "share": bench.trainable_share(model, m)[1]}
        models.setdefault(name, model)
base_plain = {round(f["plain_exact_match"] + f["forgetting"], 4) for f in figures.values()}
assert len(base_plain) == 1                        # every card measured from the same base
BASE_PLAIN = base_plain.pop()
n = figures[NAMES[EXCITOR.name, 0]]["test_records"]


def forgetting_interval(f):
    """95% interval of forgetting: base plain-form EM minus the adapter's Wilson interval."""
    lo, hi = wilson_interval(round(f["plain_exact_match"] * n), n)
    return BASE_PLAIN - hi, BASE_PLAIN - lo


print(f"base, plain form: {BASE_PLAIN:.1%} exact match on {n} test problems")
print(f"{'noisy labels':22s} {'share':>6s} {'Alpaca exact match [95%]':>25s} "
      f"{'plain':>6s} {'forgetting [95%]':>24s}")
for adapter in NAMES.values():
    f = figures[adapter]
    lo, hi = forgetting_interval(f)
    print(f"{adapter:22s} {f['share']:>6.2%} {f['test_exact_match']:>8.1%} "
          f"[{f['ci95'][0]:.1%}, {f['ci95'][1]:.1%}] {f['plain_exact_match']:>6.1%} "
          f"{f['forgetting']:>+8.1%} [{lo:+.1%}, {hi:+.1%}]")


def over_seeds(name, key):
    values = [figures[NAMES[name, s]][key] for s in bench.SEEDS]
    return sum(values) / len(values), min(values), max(values)


for key in ("forgetting", "test_exact_match"):
    for m in RIVALS:
        mean, lo, hi = over_seeds(m.name, key)
        print(f"{key:16s} {m.name:8s}: mean over 3 seeds {mean:+.1%}, range [{lo:+.1%}, {hi:+.1%}]")
below = [forgetting_interval(figures[NAMES[EXCITOR.name, s]])[1]
         < forgetting_interval(figures[NAMES[LORA.name, s]])[0] for s in bench.SEEDS]
print("Excitor's forgetting interval entirely below LoRA's, per seed:", below)
EXCITOR_FORGETS_LESS = all(below)

# %% [markdown]
# **Forgetting: the claim holds** (CPU profile). On every seed the Excitor's forgetting interval lies
# entirely below LoRA's. The Excitor trained on noisy labels loses 7.4, 8.2 and 12.0
# points of the base's plain-form skill; LoRA q,v loses 53.4, 52.6 and 61.4 points, more
# than half of it. Changing only where the frozen attention looks leaves the base's own
# answers largely intact; rewriting $W_q, W_v$ toward wrong answers does not.
#
# **Instruction accuracy: the price.** The Excitor also learns much less of the format.
# In the Alpaca template it answers 27.0, 25.8 and 23.4% of the test problems on the
# noisy data, against LoRA's 54.4, 56.8 and 58.0%, every interval apart. Even on clean
# data the shipped Excitor reaches only 33.4%, far short of the target of 50
# points above the base (4.3% in the template on 1,000 unseen problems,
# `adapters/base.json`): that target **fails** for the Excitor at this budget (150 steps,
# the swept learning rate). So the small forgetting is partly that the Excitor changed
# the model less in every respect; on this benchmark it trades most of the instruction
# accuracy for it.

# %%
print(f"the forgetting claim holds: {EXCITOR_FORGETS_LESS}")
apart = [figures[NAMES[EXCITOR.name, s]]["ci95"][1] < figures[NAMES[LORA.name, s]]["ci95"][0]
         for s in bench.SEEDS]
print("Excitor's exact-match interval entirely below LoRA's, per seed:", apart)
if PROFILE == "cpu":
    clean = bench.adapter_card("excitor")                      # sha256-checked card
    base_skill = read_json(bench.ADAPTER_DIR / "base.json")
else:                                                          # the same, live on this base
    clean = bench.card_figures(bench.measure(bench.run(EXCITOR, device=DEVICE)[0], tok,
                                             device=DEVICE))
    base_skill = bench.base_skill(DEVICE)
print(f"Excitor on clean data (card): {clean['test_exact_match']:.1%} "
      f"[{clean['ci95'][0]:.1%}, {clean['ci95'][1]:.1%}]; "
      f"base in the template {base_skill['alpaca_exact_match']:.1%} on {base_skill['n']} "
      f"problems; base + 50 points = {base_skill['alpaca_exact_match'] + 0.50:.1%}")
if PROFILE == "cpu":                         # the shipped adapters, as quoted above
    assert EXCITOR_FORGETS_LESS and all(apart)
    assert clean["test_exact_match"] < base_skill["alpaca_exact_match"] + 0.50  # target fails
    assert all(figures[NAMES[EXCITOR.name, s]]["test_exact_match"] < clean["test_exact_match"]
               for s in bench.SEEDS)

# %% [markdown]
# ## 5. Attention maps before and after
#
# To read a head's attention probabilities we do not copy the attention code: a forward
# pre-hook captures the block's attention input $x$, and we recompute $q$ and $k$ with the
# block's own `wq`, `wk`, RoPE and `score_bias`, then feed an identity matrix as the
# "values" to the library's `attend_explicit`, whose output is then
# $\mathrm{softmax}(S + M)$ itself. The tuned model is the shipped noisy-label Excitor
# (seed 0).

# %%
@torch.no_grad()
def attention_probs(model, tokens, layer):
    """Softmax attention (b, h, t, t) of block ``layer`` on ``tokens``."""
    attn, seen = model.layers[layer].attention, {}
    hook = attn.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0],
                                                                        freqs=args[1]))
    model(tokens)
    hook.remove()
    x, n = seen["x"], tokens.shape[1]
    q = rearrange(attn.wq(x), "b t (h d) -> b h t d", h=attn.n_heads)
    k = rearrange(attn.wk(x), "b t (h d) -> b h t d", h=attn.n_kv_heads)
    q = apply_rotary_emb(q, seen["freqs"], attn.rope_layout)
    k = repeat_kv(apply_rotary_emb(k, seen["freqs"], attn.rope_layout), attn.n_rep)
    bias = None if attn.score_bias is None else attn.score_bias(attn, x, q, 0)
    identity = torch.eye(n, device=x.device).expand(*q.shape[:2], n, n)
    return attend_explicit(q, k, identity, causal_mask(n, n, device=x.device), bias)


tuned = models[EXCITOR.name]
example = test[0]
ids = tok.encode(format_prompt(example) + example["output"], bos=True)[-40:]
tokens = torch.tensor([ids], device=DEVICE)
layer = base.cfg.n_layers - 1
maps = {"base": attention_probs(base, tokens, layer),
        "Excitor": attention_probs(tuned, tokens, layer)}
gate = tuned.layers[layer].attention.score_bias.gate.detach().abs()
head = int(gate.argmax())
change = (maps["Excitor"] - maps["base"]).abs().max().item()
print(f"block {layer}: |g| per head = {[round(v, 3) for v in gate.tolist()]}; "
      f"showing head {head}")
print(f"rows still sum to 1: {torch.allclose(maps['Excitor'].sum(-1), torch.ones(1))}; "
      f"max |change| of a probability: {change:.3f}")
assert torch.allclose(maps["Excitor"].sum(-1), torch.ones(1)) and change > 0

labels = [tok.decode([i]).replace("\n", "\\n") for i in ids]
fig, axes = plt.subplots(1, 3, figsize=(15, 5))
panels = [maps["base"][0, head], maps["Excitor"][0, head],
          maps["Excitor"][0, head] - maps["base"][0, head]]
for ax, panel, title in zip(axes, panels, ["base", "after Excitor tuning", "difference"]):
    lim = panel.abs().max().item()
    im = ax.imshow(panel.cpu(), cmap="coolwarm" if title == "difference" else "viridis",
                   vmin=-lim if title == "difference" else 0, vmax=lim)
    ax.set_title(f"block {layer}, head {head}: {title}")
    ax.set_yticks(range(len(labels)), labels, fontsize=5)
    ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=90)
    fig.colorbar(im, ax=ax, fraction=0.046)
plt.tight_layout()
plt.show()

# %% [markdown]
# Each row is one query token; the causal mask keeps everything above the diagonal at
# zero in both maps. The difference panel shows where the tuned head moved its
# attention, within the same tokens and the same values as the base model.
#
# ## 6. Generation and the KV cache
#
# The cache holds the base model's keys, not the extra keys, which depend on each
# token's own layer input. The Excitor therefore remembers the extra keys of the tokens
# it has seen since position 0, and decoding with the cache gives the same tokens as
# recomputing everything. Then one greedy answer per family, marked `ok` where it is
# exactly right:

# %%
prompt_ids = torch.tensor(tok.encode(format_prompt(test[0]), bos=True), device=DEVICE)
cached = tuned.generate(prompt_ids, 12, use_cache=True)
same = torch.equal(cached, tuned.generate(prompt_ids, 12, use_cache=False))
print("with cache == without cache:", same)
assert same
sample = [next(r for r in test if r["family"] == f) for f in sorted({r["family"] for r in test})]
right, oks = 0, []
for record, answer in zip(sample, generate_answers(tuned, tok, sample, max_new_tokens=24,
                                                   device=DEVICE)):
    right += answer.strip() == record["output"]
    oks += [record["family"]] if answer.strip() == record["output"] else []
    print(f"{'ok ' if answer.strip() == record['output'] else '   '}{record['family']:12s} "
          f"{record['instruction'][:38]!r:42s} -> {answer!r}")
print(f"{right} of {len(sample)} exactly right")
if PROFILE == "cpu":                         # the shipped adapter's answers
    assert oks == ["max_list"]

# %% [markdown]
# One of the seven answers is right (`max_list`); several others are well-formed
# answers to a different task, such as a number for a capitalisation. That is what
# 27.0% exact match looks like up close.
#
# ## 7. The multimodal variant
#
# For images, the paper concatenates projected visual features to the prompts, as extra
# excitor keys *and* values: with features $f$ ($n \times D_v$) and trainable
# $W^E_k, W^E_v$ ($D_v \to D$),
#
# $$K_{extra} = \mathrm{softmax}\!\Big(\frac{W^E_q(T)\,[P;\,fW^{E\top}_k]^\top}{\sqrt{D}}\Big)
#   \,[P;\,fW^{E\top}_v].$$
#
# The image still enters only through the scores. Our "visual encoder" is a frozen,
# randomly initialised convolution over the 32x32 toy images of `minillama.data.vision`
# (one 64-dimensional feature per 8x8 patch): part of the experiment, not of the library.
# We train the Excitor to answer one question about each image, *What colour is the
# shape?* (seven colours), then ask what the image contributes. (A whole caption would
# also need its wording learned, which this budget does not allow; a one-word answer puts
# all of the loss on what the image should tell.)

# %%
SIZES = profiles.settings("ch10", PROFILE)
N_IMG, IMG_STEPS, IMG_BATCH = SIZES.n_img, SIZES.img_steps, SIZES.img_batch
images, records = toy_images(N_IMG, seed=0)
test_images, test_records = toy_images(60, seed=1)
torch.manual_seed(0)
encoder = nn.Conv2d(3, 64, kernel_size=8, stride=8).requires_grad_(False).to(DEVICE)


@torch.no_grad()
def encode(imgs):
    """(n, 3, 32, 32) -> (n, 16, 64): one feature per patch."""
    return torch.relu(rearrange(encoder(imgs.to(DEVICE)), "b c h w -> b (h w) c"))


feats, test_feats = encode(images), encode(test_images)
scale = feats.std()
feats, test_feats = feats / scale, test_feats / scale
ASK = "What colour is the shape?"
questions = [{"instruction": ASK, "input": "", "output": r["attributes"]["colour"],
              "family": "colour"} for r in records]
test_questions = [{"instruction": ASK, "input": "", "output": r["attributes"]["colour"],
                   "family": "colour"} for r in test_records]
print(f"{len(questions)} training images, {len(test_questions)} test images, "
      f"{len(COLOURS)} colours: chance is {1 / len(COLOURS):.0%}")

seeing, _, _ = bench.load_base(DEVICE)
P.apply(seeing, "excitor", prompt_len=PROMPT_LEN, layers=LAYERS, rank=RANK, visual_dim=64)
print(f"visual Excitor: {P.trainable_parameters(seeing):,} trainable")

# %% [markdown]
# Training needs the features of each batch's own images, so the loop is written out
# (the same response-only batches as `finetune`, a plain AdamW at the benchmark
# Excitor's learning rate):

# %%
examples = [sft_tokens(r, tok) for r in questions]
optimizer = torch.optim.AdamW([p for p in seeing.parameters() if p.requires_grad],
                              lr=EXCITOR.lr, weight_decay=0.0)
g, img_log = torch.Generator().manual_seed(0), []
seeing.train()
for _ in range(IMG_STEPS):
    batch = torch.randint(len(examples), (IMG_BATCH,), generator=g).tolist()
    xb, yb = sft_batch([examples[i] for i in batch], tok.pad_id)
    P.set_visual(seeing, feats[batch])
    _, loss = seeing(xb.to(DEVICE), yb.to(DEVICE))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    img_log.append(loss.item())
seeing.eval()
print(f"{IMG_STEPS} steps: training loss {img_log[0]:.3f} -> {sum(img_log[-10:]) / len(img_log[-10:]):.3f} "
      f"(mean of the last 10)")

# %% [markdown]
# What does the image contribute? Removing the visual keys altogether is not a fair
# test: the model was trained with them, and without them it is a different model. The
# fair control keeps everything in place and changes only the image: the same model
# answers each test question given *another* test image's features (the test images
# rotated by one), and given a blank (all-black) image. What the model gets right with
# the right image and not with another one is what the image's content contributes.

# %%
other = torch.roll(torch.arange(len(test_records)), 1)
blank = encode(torch.zeros_like(test_images)) / scale
conditions = {"right image": test_feats, "another image": test_feats[other],
              "blank image": blank, "no visual keys": None}


@torch.no_grad()
def answer_losses(features):
    """Response loss of each test answer (nats/token) with ``features`` shown."""
    P.set_visual(seeing, features)
    xb, yb = sft_batch([sft_tokens(r, tok) for r in test_questions], tok.pad_id)
    logits = seeing(xb.to(DEVICE)).float()
    nll = F.cross_entropy(logits.transpose(1, 2), yb.to(DEVICE), ignore_index=-100,
                          reduction="none")
    return nll.sum(1) / (yb != -100).sum(1).to(DEVICE)


losses, answers = {}, {}
truth = [r["output"] for r in test_questions]
for name, features in conditions.items():
    losses[name] = answer_losses(features)
    answers[name] = [a.strip() for a in generate_answers(seeing, tok, test_questions,
                                                         max_new_tokens=6, device=DEVICE)]
    right = sum(a == t for a, t in zip(answers[name], truth)) / len(truth)
    print(f"{name:15s}: answer loss {losses[name].mean():.3f} nats/token, "
          f"the true colour {right:4.0%}")
of_shown = sum(a == truth[j] for a, j in zip(answers["another image"], other.tolist()))
print(f"another image: answers naming the colour of the image shown {of_shown / len(truth):.0%}")
d = losses["another image"] - losses["right image"]
half = 2.00 * d.std().item() / len(d) ** 0.5            # t(0.975, 59 dof) = 2.00
GAIN = (d.mean().item(), d.mean().item() - half, d.mean().item() + half)
print(f"another image - right image: {GAIN[0]:+.3f} nats/token, 95% interval "
      f"[{GAIN[1]:+.3f}, {GAIN[2]:+.3f}] over {len(d)} test images")
print(f"ln(vocabulary) = ln {base.cfg.vocab_size} = {math.log(base.cfg.vocab_size):.2f} "
      f"(a uniform guess over tokens)")
if PROFILE == "cpu":                          # the claims of the text below, for this run
    hits = {name: sum(a == t for a, t in zip(answers[name], truth)) for name in conditions}
    assert max(hits.values()) == 0 and GAIN[1] < 0 < GAIN[2]
    assert losses["no visual keys"].mean() > max(losses[k].mean() for k in
                                                  ("right image", "another image", "blank image"))
    assert sum(img_log[-10:]) / 10 < img_log[0]
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# (`generate_answers` decodes a batch of equal-length prompts together, which is why one
# `set_visual` with all test features lines up with the test questions here.)
#
# **What the image contributes here: nothing we can measure.** After this short run the
# visual Excitor names the true colour for none of the 60 test images, whatever it is
# shown (chance is 14%), although its training loss fell. The loss of the true answer is
# 3.47 nats/token with the right image, 3.65 with another image and 3.56 with a blank
# one: the right image is better than another by +0.18 nats/token, but the 95% interval
# of that gap, [-0.09, +0.45], contains zero, so at this budget the measurement does not
# show that the image's content helps, and we do not claim it. Removing the visual keys
# altogether is worse on average (5.32 nats/token, nearer the uniform guess's
# 6.24): the model was trained with those keys and breaks without them, which says
# nothing about what any image shows. One reason to expect a slow start: the image can
# only move the attention *scores* over the question's own tokens, and "What colour is
# the shape?" contains no colour for it to attend to. The full profile trains 1,500
# steps on 4,000 images; whether the gap opens there is for that run's outputs to show.
#
# ## Exercises
#
# `exercises/ch10_excitor.py`: write the reconstructed keys, checked against the library
# function and inside the whole `Excitor` layer.

# %%
IMPL = "solutions"
result = course.grade("ch10", impl=IMPL)
