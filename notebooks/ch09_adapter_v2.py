# %% [markdown]
# # Chapter 9 — LLaMA-Adapter V2: more unlocked, images fused early
#
# LLaMA-Adapter V1 (chapter 8) tunes 1.2M prompt values and gates of a frozen LLaMA-7B.
# LLaMA-Adapter V2 (Gao et al., arXiv 2304.15010) keeps the zero-gated prompts and adds
# four things:
#
# 1. **Unfrozen norms**: every RMSNorm gain (two per block and the final one) is trained.
# 2. **Bias and scale on every linear layer**. The paper writes $y = s\odot(Wx + b)$; the
#    official code (its 65B chat model) computes
#    $$y = W\,(x \odot s) + b,\qquad s = \mathbf 1,\ b = \mathbf 0 \text{ at the start},$$
#    with one scale per *input* feature and one bias per *output* feature. It folds into
#    the weights exactly: $W' = W\,\mathrm{diag}(s)$ with bias $b$.
# 3. **Early fusion of visual knowledge**: image features from a frozen encoder, through a
#    trainable projection, are added to the prompts of the *first* block(s) only, while
#    the static prompts live in the late blocks.
# 4. **Joint training with disjoint parameter groups**: image-text batches train only the
#    visual projection and the early prompts and gates; text (instruction) batches train
#    the late prompts and gates, the norms and the biases and scales. The two kinds of
#    data never pull on the same parameter.
#
# | piece | file |
# |---|---|
# | `BiasScaleLinear`, `VisualPromptAttention`, `joint_parameter_groups` | `minillama/peft/adapter_v2.py` |
# | the V1 prompts it reuses | `minillama/peft/adapter_v1.py` |
# | `apply`, `merge`, `trainable_parameters` | `minillama/peft/__init__.py` |
# | the PEFT benchmark, shipped adapters and their cards | `minillama/tasks/bench.py`, `minillama/adapters/` |
# | toy images with captions and questions | `minillama/data/vision.py` |
# | response-only batches | `minillama/finetune.py` |
#
# The text half of V2 is measured on the course's PEFT benchmark (`minillama/tasks/bench.py`,
# shared by chapters 7 to 15): a base that has mastered seven task families in its plain
# pretraining form but not in the Alpaca template, one training set, one step budget, a
# 500-problem test set. Section 3 takes V2 apart there, one ingredient at a time.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) loads the four shipped
# benchmark adapters (every file checked against its card's sha256), re-measures two of
# them live on the test set (V2 and V2 without bias/scale) and reads the other two from
# their cards, and trains the toy multimodal model live for a hundred and fifty small
# steps; the notebook prints its wall time at the end. `full` (the
# default on CUDA) trains the four benchmark variants live on its own base, 12.5 times the
# size (`bench.base`), and trains the multimodal model on more images for ten times
# longer (`minillama/profiles.py`). The figures the text quotes are the CPU profile's; the
# cells assert them there, and in the full profile what the text claims in general.

# %%
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minillama import CONFIGS, Llama, course, profiles
from minillama import peft as P
from minillama.data import caption_accuracy, toy_images, vision, vqa_accuracy
from minillama.finetune import IGNORE, greedy_score, sft_batch, sft_tokens
from minillama.metrics import wilson_interval
from minillama.peft.adapter_v1 import PromptAttention
from minillama.peft.adapter_v2 import BiasScaleLinear, joint_parameter_groups, visual_modules
from minillama.tasks import bench

PROFILE, DEVICE = course.setup()
bench.base(PROFILE, DEVICE)          # this profile's benchmark (full: its base, trained once)
SIZES = profiles.settings("ch09", PROFILE)
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. Bias and scale around a frozen linear
#
# `BiasScaleLinear` wraps a frozen `nn.Linear` and computes $W(x\odot s) + b$. At
# initialisation it is the wrapped layer exactly; after training, `merged()` returns one
# ordinary `nn.Linear` (with a bias) that computes the same thing, so inference costs
# nothing extra.

# %%
lin = nn.Linear(6, 4, bias=False)
wrapped = BiasScaleLinear(lin)
x = torch.randn(3, 6)
print("at init, equal to the frozen layer:", torch.equal(wrapped(x), lin(x)))
with torch.no_grad():
    wrapped.scale.uniform_(0.5, 1.5)
    wrapped.bias.normal_()
merged = wrapped.merged()
merge_gap = (merged(x) - wrapped(x)).abs().max().item()
print(f"after a change: merged layer vs wrapper, max |diff| = {merge_gap:.1e}; "
      f"merged has a bias: {merged.bias is not None}")
assert torch.equal(BiasScaleLinear(lin)(x), lin(x)) and merge_gap < 1e-5
assert merged.bias is not None and lin.bias is None

# %% [markdown]
# ## 2. What it costs on LLaMA-7B and 65B
#
# `apply(model, "adapter_v2")` wraps the seven linears of every block (wq, wk, wv, wo,
# w1, w2, w3; not the embedding or the output head), opens the norms and puts V1's
# prompts into the top 30 blocks. Per 7B block the bias and scale cost
# $4(4096+4096) + 3(4096+11008)$ and the two norms $2\cdot 4096$. Counted on the `meta`
# device:

# %%
def v2_counts(name):
    """(total trainable, prompt + gate part, bias + scale + norm part) of V2 on a config."""
    with torch.device("meta"):
        model = P.apply(Llama(CONFIGS[name]), "adapter_v2")
    prompts = sum(p.numel() for m in model.modules() if isinstance(m, PromptAttention)
                  for p in m.parameters())
    total = P.trainable_parameters(model)
    return total, prompts, total - prompts


counts = {}
for name, n_params in [("llama1-7b", 6.7e9), ("llama1-65b", 65.2e9)]:
    counts[name] = total, prompts, rest = v2_counts(name)
    print(f"{name:11s}: {total:>10,d} trainable = {prompts:>9,d} prompts and gates (V1) "
          f"+ {rest:>10,d} bias, scale and norms ({rest / n_params:.3%} of the model)")
assert counts["llama1-7b"] == (3_994_560, 1_229_760, 2_764_800)
assert round(counts["llama1-65b"][2] / 1e6) == 14

# %% [markdown]
# The 7B total is V1's 1,229,760 plus 2,764,800 (the paper's 0.04%). The "14M" that
# surveys quote for V2 is the bias, scale and norm part of the *65B* model, the one the
# official code ships.
#
# ## 3. Taking V2 apart on the benchmark
#
# Which of V2's text ingredients does the work? The benchmark ships V2 and three
# ablations, each trained by the same recipe (same data, steps and learning rate) with
# one ingredient held at its identity initialisation, so that it is still in the model
# but computes nothing (`bench._parts` names the parameters):
#
# * `adapter-v2-no-bias-scale`: every scale stays 1 and every bias 0;
# * `adapter-v2-no-norms`: the RMSNorm gains keep the base's values;
# * `adapter-v2-no-prompts`: the prompt gates stay 0, so the prompts are never seen.
#
# Prompts sit in the top six blocks (`layers=6`, the analogue of the paper's top 30 of
# 32): all of the CPU profile's base, six of the full profile's ten. The CPU profile
# loads the shipped adapters (every file checked against its card's sha256) and
# re-measures exact match on the 500 test problems for two of them (V2 and the ablation
# that matters; the assert checks the live figure is the card's), the other two figures
# coming from their cards; the full profile trains the four live. Forgetting is the drop
# in plain-form exact match from the base, on the same 500 problems (taken from the card
# in the CPU profile); the plain-form exact match carries its own 95% interval, so
# forgetting can be compared the same way.

# %%
VARIANTS = {"adapter-v2": "V2: bias/scale + norms + prompts",
            "adapter-v2-no-bias-scale": "without bias/scale",
            "adapter-v2-no-norms": "without trainable norms",
            "adapter-v2-no-prompts": "without prompts"}
test = bench.test_records()
n_base = sum(p.numel() for p in bench.load_base()[0].parameters())
LIVE = ("adapter-v2", "adapter-v2-no-bias-scale")    # CPU profile: re-measured from the files
rows, losses, source = {}, {}, {}
for name in VARIANTS:
    m = bench.method(name)
    trainable = P.trainable_parameters(bench.fresh(m)[0])   # frozen ingredient not counted
    if PROFILE == "cpu":
        card = bench.adapter_card(name)                      # sha256 of every file checked
        assert card["trainable_parameters"] == trainable, (name, card["trainable_parameters"])
        if name in LIVE:
            model, tok, row = bench.load_adapter(name, device=DEVICE)
            live = greedy_score(model, tok, test, device=DEVICE)["exact_match"]
            assert round(live, 4) == card["test_exact_match"], (name, live, card["test_exact_match"])
            source[name] = f"live {live:.1%} = card"
        else:
            row, source[name] = card, "card"
        losses[name] = card["train_loss"]
    else:
        model, tok, log, _ = bench.run(m, device=DEVICE)
        row = bench.card_figures(bench.measure(model, tok, device=DEVICE))
        losses[name], source[name] = [r["loss"] for r in log], "trained live"
    plain_hits = round(row["plain_exact_match"] * row["test_records"])
    rows[name] = dict(row, trainable=trainable,
                      plain_ci95=wilson_interval(plain_hits, row["test_records"]))
    if name == "adapter-v2":
        v2 = model
    elif name in LIVE or PROFILE != "cpu":
        del model
print(f"{'':26s}{'trainable':>10s}{'exact match [95% CI]':>26s}{'held-out fam.':>14s}"
      f"{'forgetting':>11s}{'plain EM [95% CI]':>24s}   figure from")
for name, label in VARIANTS.items():
    r = rows[name]
    (lo, hi), (plo, phi) = r["ci95"], r["plain_ci95"]
    print(f"{label:26s}{r['trainable']:>10,d}{r['test_exact_match']:>12.1%} "
          f"[{lo:.1%}, {hi:.1%}]{r['heldout_families_exact_match']:>14.1%}"
          f"{r['forgetting']:>+11.1%}{r['plain_exact_match']:>10.1%} [{plo:.1%}, {phi:.1%}]"
          f"   {source[name]}")
print(f"{len(test)} test problems; base model: {n_base:,} parameters")

# %% [markdown]
# What each ingredient contributes, as far as the 95% intervals can tell: removing it
# *costs* (or *gains*) exact match only when the two intervals do not overlap; when they
# overlap, this test set cannot tell the two apart.

# %%
full = rows["adapter-v2"]
verdicts = {}
for name in list(VARIANTS)[1:]:
    r = rows[name]
    delta = r["test_exact_match"] - full["test_exact_match"]
    apart = r["ci95"][1] < full["ci95"][0] or r["ci95"][0] > full["ci95"][1]
    verdicts[name] = ("costs" if delta < 0 else "gains") if apart else "cannot tell"
    print(f"{VARIANTS[name]:26s} {100 * delta:+6.1f} points exact match, "
          f"{100 * (r['forgetting'] - full['forgetting']):+6.1f} points forgetting: "
          f"removing it {verdicts[name]}")

fig, ax = plt.subplots(figsize=(7, 3.2))
for name, label in VARIANTS.items():
    ax.plot(range(1, len(losses[name]) + 1), losses[name], label=label, lw=1)
ax.set_xlabel("training step")
ax.set_ylabel("training loss (logged)")
ax.set_yscale("log")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# In the CPU profile one ingredient does the work at this budget: **bias/scale**. Without it exact match falls
# from V2's 70.8% to 41.6% (the two intervals are far apart), and on the two held-out
# families from 42.7% to 23.3%. The other two removals cannot be told from the full V2 on
# this test set: with the norms frozen the ablation scores 72.4%, *above* V2's 70.8%, and
# without prompts 68.8%; both intervals overlap V2's. So we do not claim that training the
# norms or the prompts helps here, on this base and at this budget (150 steps of 16
# records). The bias/scale is also where the forgetting comes from: without it the
# plain-form skill stays at 92.4% (forgetting 3.0 points) against V2's 77.2% (18.2
# points), intervals apart. Of the four, it learned the format least and kept the most.

# %%
print("verdicts:", verdicts)
nobs = rows["adapter-v2-no-bias-scale"]
print(f"plain-form exact match: V2 {full['plain_exact_match']:.1%} "
      f"[{full['plain_ci95'][0]:.1%}, {full['plain_ci95'][1]:.1%}], without bias/scale "
      f"{nobs['plain_exact_match']:.1%} [{nobs['plain_ci95'][0]:.1%}, {nobs['plain_ci95'][1]:.1%}]")
if PROFILE == "cpu":                                         # the shipped cards' figures
    assert verdicts == {"adapter-v2-no-bias-scale": "costs",
                        "adapter-v2-no-norms": "cannot tell",
                        "adapter-v2-no-prompts": "cannot tell"}
    assert nobs["heldout_families_exact_match"] < full["heldout_families_exact_match"]
    assert nobs["plain_ci95"][0] > full["plain_ci95"][1]      # forgets less, intervals apart
    assert min(VARIANTS, key=lambda n: rows[n]["test_exact_match"]) == "adapter-v2-no-bias-scale"
    assert max(VARIANTS, key=lambda n: rows[n]["plain_exact_match"]) == "adapter-v2-no-bias-scale"
    assert [round(100 * rows[n]["test_exact_match"], 1) for n in VARIANTS] == [70.8, 41.6, 72.4, 68.8]
    assert (round(100 * full["plain_exact_match"], 1), round(100 * nobs["plain_exact_match"], 1)) == (77.2, 92.4)
    assert (round(100 * full["forgetting"], 1), round(100 * nobs["forgetting"], 1)) == (18.2, 3.0)
    assert (round(100 * full["heldout_families_exact_match"], 1),
            round(100 * nobs["heldout_families_exact_match"], 1)) == (42.7, 23.3)

# %% [markdown]
# Where the trained V2 moved (the shipped `adapter-v2`): the scales away from 1, the
# biases away from 0, the norm gains away from the base's, the gates away from 0.

# %%
base_model = bench.load_base(DEVICE)[0]
wrappers = [m for m in v2.modules() if isinstance(m, BiasScaleLinear)]
scale_move = max((m.scale - 1).abs().max().item() for m in wrappers)
bias_move = max(m.bias.abs().max().item() for m in wrappers)
norm_move = max((a.weight - b.weight).abs().max().item()
                for a, b in zip(bench._parts(v2, "norms"), bench._parts(base_model, "norms")))
prompted = [i for i, layer in enumerate(v2.layers) if layer.attention.prompt is not None]
gates = [v2.layers[i].attention.prompt.gate_value() for i in prompted]    # the top 6 blocks
print(f"{len(wrappers)} bias/scale wrappers: max |s - 1| = {scale_move:.3f}, "
      f"max |b| = {bias_move:.3f}; max norm-gain change {norm_move:.3f}")
print("tanh(gate) per head, block by block:")
for i, g in zip(prompted, gates):
    print(f"  block {i}: {[round(v, 2) for v in g.tolist()]}")
assert min(scale_move, bias_move, norm_move) > 0.01
assert max(g.abs().max().item() for g in gates) > 0.01

# %% [markdown]
# ## 4. Early fusion on a toy multimodal task
#
# V2's image path is tested on its own small task. The base is the benchmark's: with
# `visual_dim`, the first `visual_layers` blocks get a `VisualPromptAttention` (prompts
# plus projected image features) and the top `layers` blocks ordinary prompts; the two
# sets of blocks must not overlap. The image goes into the first three blocks, the static
# prompts into the others (the last three of the CPU profile's six).

# %%
base, tok, card = bench.load_base(DEVICE)
print(f"base: {card['recipe']}, {n_base:,} parameters, {base.cfg.n_layers} blocks")
PATCHES, VISUAL_DIM, VISUAL_LAYERS = 16, 64, 3    # prompt_len = one prompt per image patch
LATE = base.cfg.n_layers - VISUAL_LAYERS

torch.manual_seed(0)           # this section's draws, whatever ran before
model, _, _ = bench.load_base(DEVICE)
P.apply(model, "adapter_v2", prompt_len=PATCHES, layers=LATE, visual_dim=VISUAL_DIM,
        visual_layers=VISUAL_LAYERS)
for i, layer in enumerate(model.layers):
    kind = type(layer.attention.prompt).__name__
    print(f"block {i}: {kind:22s} wq is {type(layer.attention.wq).__name__}")
groups = joint_parameter_groups(model)
disjoint = not {id(p) for p in groups["image_text"]} & {id(p) for p in groups["text"]}
print({k: f"{sum(p.numel() for p in v):,}" for k, v in groups.items()}, "disjoint:", disjoint,
      f"total {P.trainable_parameters(model):,} ({P.trainable_parameters(model) / n_base:.1%})")
assert disjoint

# %% [markdown]
# All gates are zero and every bias zero and scale one, so at initialisation the adapted
# model *is* the base model, with or without an image:

# %%
ids = torch.tensor([tok.encode("Find the biggest number.\n4, 9, 1\nAnswer:\n", bos=True)],
                   device=DEVICE)
with torch.no_grad():
    reference = base(ids)
    P.set_visual(model, None)
    text_only = (model(ids) - reference).abs().max().item()
    P.set_visual(model, torch.randn(1, PATCHES, VISUAL_DIM, device=DEVICE))
    with_image = (model(ids) - reference).abs().max().item()
print(f"max |logits - base logits|: text only {text_only:.1e}, with an image {with_image:.1e}")
assert text_only == 0 and with_image == 0

# %% [markdown]
# `toy_images` draws one coloured shape per 32x32 image and describes it with a caption
# and four question/answer pairs. The "visual encoder" is part of the experiment, not of
# the library: a frozen, randomly initialised convolution with one 64-dimensional
# feature per 8x8 patch (ReLU after it), a stand-in for V2's frozen CLIP. The 16 patch
# features become the 16 visual prompts of each of the first three blocks. Each feature
# channel is standardised with the mean and standard deviation of the training images'
# patches. A *blank* image is all zeros, through the same encoder and standardisation.

# %%
N_TRAIN, N_TEST, STEPS = SIZES.n_train, SIZES.n_test, SIZES.steps
images, records = toy_images(N_TRAIN, seed=0)
test_images, test_records = toy_images(N_TEST, seed=1)
encoder = nn.Conv2d(3, VISUAL_DIM, kernel_size=8, stride=8).requires_grad_(False).to(DEVICE)


@torch.no_grad()
def encode(imgs):
    """(n, 3, 32, 32) -> (n, 16, VISUAL_DIM): one feature per patch."""
    return torch.relu(rearrange(encoder(imgs.to(DEVICE)), "b c h w -> b (h w) c"))


feats = encode(images)
mean, std = feats.mean((0, 1)), feats.std((0, 1)) + 1e-6    # per channel, training images
standardise = lambda f: (f - mean) / std
feats, test_feats = standardise(feats), standardise(encode(test_images))
blank_feats = standardise(encode(torch.zeros_like(test_images)))
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
for ax, img, rec in zip(axes, images, records):
    ax.imshow(img.permute(1, 2, 0))
    ax.set_title(rec["caption"], fontsize=7)
    ax.axis("off")
plt.show()
print(records[0]["qa"])

# %% [markdown]
# **Start the image path small.** The library draws every prompt like the official code,
# from N(0, 1): about the size of the normed hidden states that wk and wv see. In a visual
# block the prompt tokens are P + proj(features); with that P the image-independent part
# is the larger one, and opening a gate mostly adds the same vectors to every token. In our
# runs with that start the visual gates stayed much nearer zero than they do below, and the
# image helped clearly less (to compare, skip this cell). So we start the visual prompts
# near zero (std 0.01) and the projection without a bias, and shrink the standardised
# features so that the projected image tokens start at about the size of the token
# embeddings. Training grows all of them; what matters is that the image, not a constant,
# is what the gates first let through. The gates are still zero, so the model is still the
# base model:

# %%
FEATURE_SCALE = 0.15
feats, test_feats, blank_feats = (FEATURE_SCALE * f for f in (feats, test_feats, blank_feats))
with torch.no_grad():
    for m in visual_modules(model):
        nn.init.normal_(m.prompt, std=0.01)
        nn.init.zeros_(m.proj.bias)
    rms = lambda t: t.pow(2).mean().sqrt().item()
    m = visual_modules(model)[0]
    print(f"rms of: visual prompts {rms(m.prompt):.3f}, projected image tokens "
          f"{rms(m.proj(feats[:100])):.3f}, token embeddings "
          f"{rms(model.tok_embeddings.weight):.3f}, static prompts "
          f"{rms(model.layers[-1].attention.prompt.prompt):.3f}")
    P.set_visual(model, test_feats[:1])
    still_base = (model(ids) - base(ids)).abs().max().item()
print(f"max |logits - base logits| with an image: {still_base:.1e}")
assert still_base == 0

# %% [markdown]
# Two kinds of batches, as in the paper:
#
# * **image-text**: the image features and "Describe the image." or one of the questions,
#   with the caption or the answer as the response;
# * **text only**: instruction data with no image. Ours teaches the answer format: the
#   caption is given *as text* and the model answers the question about it (or repeats
#   the description). It never sees an image.
#
# The prompts are short ("question\n" followed by the response), and only the response
# is trained on, as in `minillama/finetune.py`.

# %%
ASK = "Describe the image."
QUESTIONS = [q for q, _ in records[0]["qa"]]


def example(question, answer, context=""):
    """(inputs, targets) for one exchange; the prompt's targets are ignored."""
    prompt = tok.encode(f"{context}\n{question}\n" if context else f"{question}\n", bos=True)
    response = tok.encode(answer) + [tok.eos_id]
    ids = prompt + response
    return ids[:-1], ([IGNORE] * len(prompt) + response)[1:]


image_text, text_only = [], []
for i, r in enumerate(records):
    for question, answer in [(ASK, r["caption"])] + r["qa"]:
        image_text.append((example(question, answer), i))
        text_only.append(example(question, answer, context=r["caption"]))
print(f"{len(image_text)} image-text and {len(text_only)} text examples")

# %% [markdown]
# Scoring. A caption counts when greedy decoding writes it exactly
# (`vision.caption_accuracy`). A question is answered by picking the most likely of its
# allowed answers (the colours, shapes, positions or sizes of `minillama.data.vision`),
# then scored with `vision.vqa_accuracy`. A model that cannot see the image can at best
# always give the most common training answer: that is the majority-guess baseline.

# %%
CHOICES = {QUESTIONS[0]: list(vision.COLOURS), QUESTIONS[1]: vision.SHAPES,
           QUESTIONS[2]: list(vision.POSITIONS), QUESTIONS[3]: list(vision.SIZES)}


@torch.no_grad()
def answer_questions(model, features, n):
    """For each question, the most likely allowed answer for each of n images."""
    P.set_visual(model, features)
    picks = {}
    for question in QUESTIONS:
        nll = []
        for choice in CHOICES[question]:
            x, y = sft_batch([example(question, choice)] * n, tok.pad_id)
            logits = model(x.to(DEVICE))
            nll.append(F.cross_entropy(rearrange(logits, "b t v -> b v t"), y.to(DEVICE),
                                       ignore_index=IGNORE, reduction="none").sum(1))
        best = torch.stack(nll, 1).argmin(1).tolist()
        picks[question] = [CHOICES[question][k] for k in best]
    return picks


@torch.no_grad()
def describe(model, features, n, max_new_tokens=20):
    """Greedy descriptions of n images (features None: no image)."""
    P.set_visual(model, features)
    prompt = torch.tensor([tok.encode(f"{ASK}\n", bos=True)] * n, device=DEVICE)
    out = model.generate(prompt, max_new_tokens, stop_tokens=[tok.eos_id])
    texts = []
    for row in out.tolist():
        row = row[:row.index(tok.eos_id)] if tok.eos_id in row else row
        texts.append(tok.decode(row, skip_special=True))
    return texts


def scores(model, features):
    """Question accuracies, their mean ("all"), and caption exact match on the test images."""
    n = len(test_records)
    picks = answer_questions(model, features, n)
    row = {q: vqa_accuracy(picks[q], [r["qa"][j][1] for r in test_records])
           for j, q in enumerate(QUESTIONS)}
    row["all"] = sum(row[q] for q in QUESTIONS) / len(QUESTIONS)
    row["caption"] = caption_accuracy(describe(model, features, n),
                                      [r["caption"] for r in test_records])
    return row


majority = {}
for j, q in enumerate(QUESTIONS):
    guess = Counter(r["qa"][j][1] for r in records).most_common(1)[0][0]
    majority[q] = vqa_accuracy([guess] * len(test_records), [r["qa"][j][1] for r in test_records])
majority["all"] = sum(majority[q] for q in QUESTIONS) / len(QUESTIONS)
majority["caption"] = caption_accuracy(
    [Counter(r["caption"] for r in records).most_common(1)[0][0]] * len(test_records),
    [r["caption"] for r in test_records])
results = {"majority guess (no image)": majority}

# %% [markdown]
# ## 5. Joint training with disjoint groups
#
# One AdamW per group. A text batch (no image: `set_visual(model, None)`) updates only
# the `text` group, an image-text batch only the `image_text` group. The first
# `TEXT_FIRST` steps are text batches, so that the answer format is in place before the
# image path starts to learn (otherwise its first updates go into the format rather than
# the image); after that one step in `TEXT_EVERY` takes a text batch and the others
# image-text batches, since the image path is the slow part (and gets the larger
# learning rate). The loop is written out because each batch needs its own images.

# %%
TEXT_FIRST, TEXT_EVERY = 20, 8
LR = {"image_text": 3e-2, "text": 2e-2}
optimizers = {kind: torch.optim.AdamW(params, lr=LR[kind], weight_decay=0.0)
              for kind, params in groups.items()}
g, log = torch.Generator().manual_seed(0), {"image_text": [], "text": []}
model.train()
t_train = time.perf_counter()
for step in range(STEPS):
    kind = "text" if step < TEXT_FIRST or step % TEXT_EVERY == 0 else "image_text"
    pool = image_text if kind == "image_text" else text_only
    batch = torch.randint(len(pool), (16,), generator=g).tolist()
    if kind == "image_text":
        x, y = sft_batch([pool[i][0] for i in batch], tok.pad_id)
        P.set_visual(model, feats[[pool[i][1] for i in batch]])
    else:
        x, y = sft_batch([pool[i] for i in batch], tok.pad_id)
        P.set_visual(model, None)
    _, loss = model(x.to(DEVICE), y.to(DEVICE))
    loss.backward()
    optimizers[kind].step()
    model.zero_grad(set_to_none=True)
    log[kind].append(loss.item())
model.eval()
print(f"{STEPS} steps ({len(log['image_text'])} image-text, {len(log['text'])} text) "
      f"in {time.perf_counter() - t_train:.1f} s")
for i, m in enumerate(visual_modules(model)):
    print(f"block {i}: tanh(gate) per head", [round(v, 2) for v in m.gate_value().tolist()])

fig, ax = plt.subplots(figsize=(7, 3.2))
for kind, losses in log.items():
    ax.plot(range(len(losses)), losses, label=f"{kind} batches")
ax.set_xlabel("step of that kind")
ax.set_ylabel("response loss")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# After training, the same model with the test image, with a blank image (all zeros
# through the encoder), and with no image at all (`set_visual(model, None)`: the static
# prompts alone, the way the text batches ran):

# %%
results["after training"] = scores(model, test_feats)
results["after training, blank image"] = scores(model, blank_feats)
results["after training, no image"] = scores(model, None)
COLUMNS = {"colour": QUESTIONS[0], "shape": QUESTIONS[1], "where": QUESTIONS[2],
           "size": QUESTIONS[3], "all four": "all", "caption": "caption"}
print(f"{'':30s}" + "".join(f"{c:>10s}" for c in COLUMNS))
for name, row in results.items():
    print(f"{name:30s}" + "".join(f"{row[k]:10.0%}" for k in COLUMNS.values()))
seen = results["after training"]
gaps = {blind: {c: seen[k] - results[f"after training, {blind}"][k] for c, k in COLUMNS.items()}
        for blind in ("blank image", "no image")}
for blind, gap in gaps.items():
    print(f"{'image minus ' + blind:30s}" + "".join(f"{100 * v:+9.0f}p" for v in gap.values()))
n_answers = len(QUESTIONS) * N_TEST
hits = round(seen["all"] * n_answers)
print(f"all four questions with the image: {seen['all']:.1%} of {n_answers} answers, "
      f"95% CI [{wilson_interval(hits, n_answers)[0]:.1%}, "
      f"{wilson_interval(hits, n_answers)[1]:.1%}]")
for text, rec in list(zip(describe(model, test_feats, len(test_records)), test_records))[:3]:
    print(f"  {rec['caption']!r:40s} -> {text!r}")

# %% [markdown]
# Read the rows against each other. The majority guess is what a model that cannot see
# gets. Blank or absent, without its image the trained model scores about that (the
# first check below): it falls back on the answers' base rates rather than breaking, so
# the gap between the image row and the blindfolded rows is what the image contributes.
# Over all four questions that gap is at least 20 points against both blindfolded rows.
# It is not spread evenly: on the questions named by the second line below the image adds
# 20 points or more; on the others it helps (every gap is positive) but by less, so the
# 20-point claim is not made for them. Which questions clear the mark moves with the
# random draws of the prompts and the encoder; the four-question gap is the figure to
# read, one training run with the 95% interval printed above. The path is narrow (a
# projection and three blocks' prompts under a frozen model, trained on the number of
# image-text batches printed above). Captions are where the image does *not* help here (CPU profile):
# a caption needs every word right, and with the image the model writes no more exact
# captions than the majority guess does (the caption column above; the greedy captions
# show how far they get), so we claim nothing for the image on captions.

# %%
blind_rows = [results[f"after training, {b}"]["all"] for b in ("blank image", "no image")]
print(f"all four questions: majority {majority['all']:.1%}, blindfolded "
      f"{', '.join(f'{v:.1%}' for v in blind_rows)}, with the image {seen['all']:.1%}")
strong = {c for c in ("colour", "shape", "where", "size")
          if min(gaps[b][c] for b in gaps) >= 0.20}
print("questions with the image >= 20 points above both blindfolded rows:", sorted(strong))
assert all(abs(v - majority["all"]) < 0.05 for v in blind_rows)
assert min(gaps[b]["all four"] for b in gaps) >= 0.20
if PROFILE == "cpu":                  # which questions clear 20 points: this run's draws
    assert 0 < len(strong) < 4
assert all(gaps[b][c] > 0 for b in gaps for c in ("colour", "shape", "where", "size"))
print(f"caption exact match: with the image {seen['caption']:.0%}, majority guess "
      f"{majority['caption']:.0%}")
if PROFILE == "cpu":                  # 150 steps: no caption learnt (the full profile may)
    assert seen["caption"] <= majority["caption"] + 0.02

# %% [markdown]
# ## 6. Merging
#
# Merging folds the adapter into the base's weights so that inference runs the base's
# own code. For V2 it is only partial, and it is one way (the scales multiply into $W$):
#
# * **bias and scale** fold exactly: each `BiasScaleLinear` becomes an `nn.Linear` with
#   weight $W\,\mathrm{diag}(s)$ and bias $b$. LLaMA's linears have no bias, so the merged
#   model needs a bias slot in all seven linears of every block; it is not a plain LLaMA
#   checkpoint any more.
# * **norm gains** are the base's own parameters, trained in place: nothing to fold.
# * **prompts and gates** do not fold: they add $K$ extra keys and values per block,
#   attended with their own softmax and scaled by $\tanh(g)$, which no change to
#   $W_q, W_k, W_v, W_o$ can express. They stay as modules (and so does the visual
#   projection of the multimodal model).
#
# `P.merge` on the shipped benchmark V2:

# %%
prompt_batch, _ = sft_batch([sft_tokens(r, tok) for r in test[:8]], tok.pad_id)
prompt_batch = prompt_batch.to(DEVICE)
with torch.no_grad():
    before = v2(prompt_batch)
    prompt_values = sum(p.numel() for i in prompted for p in v2.layers[i].attention.prompt.parameters())
    biases = sum(m.bias.numel() for m in v2.modules() if isinstance(m, BiasScaleLinear))
    P.merge(v2)
    after = v2(prompt_batch)
left = [type(m).__name__ for m in v2.modules() if isinstance(m, (BiasScaleLinear, PromptAttention))]
merged_biases = sum(m.bias.numel() for m in v2.modules()
                    if isinstance(m, nn.Linear) and m.bias is not None)
merge_diff = (after - before).abs().max().item()
print("wq of block 0 is now", type(v2.layers[0].attention.wq).__name__,
      "with bias:", v2.layers[0].attention.wq.bias is not None)
print(f"max |logits after merge - before| = {merge_diff:.1e}; greedy tokens the same: "
      f"{torch.equal(after.argmax(-1), before.argmax(-1))}")
print(f"left as modules: {Counter(left)} ({prompt_values:,} prompt and gate values); "
      f"bias values now in the linears: {merged_biases:,}")
assert merge_diff < 1e-3 and merged_biases == biases
assert Counter(left) == Counter({"PromptAttention": len(prompted)})
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch09_adapter_v2.py`: the bias/scale layer $y = W(x \odot s) + b$ and its merge
# into one linear layer with a bias ($W' = W\,\mathrm{diag}(s)$, $b' = b$), checked against
# `BiasScaleLinear` (outputs, gradients and `merged()`). Grade your work with the cell below
# (set `IMPL = "exercises"`); as shipped it grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch09", impl=IMPL)
