# %% [markdown]
# # Chapter 14 — PEFT head-to-head
#
# Chapters 7 to 12 built each method on its own. Here they race on the same base, the same
# data and the same budget of steps, and we measure what the survey (arXiv 2510.12178)
# tabulates from the papers — plus two things papers rarely report side by side:
#
# | method | paper | file |
# |---|---|---|
# | full fine-tuning | — | `minillama/finetune.py` |
# | LoRA | Hu et al., arXiv 2106.09685 | `minillama/peft/lora.py` |
# | LLaMA-Adapter V1 | Zhang et al., arXiv 2303.16199 | `minillama/peft/adapter_v1.py` |
# | LLaMA-Adapter V2 | Gao et al., arXiv 2304.15010 | `minillama/peft/adapter_v2.py` |
# | LLaMA-Excitor | Zou et al., arXiv 2404.00913 | `minillama/peft/excitor.py` |
#
# For each method, trained once on clean instructions and once on instructions of which
# 30% have a wrong or sloppy answer (label noise):
#
# * **trainable parameters**;
# * **training memory**: on CUDA the peak `torch.cuda.max_memory_allocated`; on the CPU the
#   bytes of the tensors a step holds, counted from the tensors themselves (parameters,
#   gradients, AdamW's two moments) plus the activations autograd saves for the backward
#   pass (counted with `torch.autograd.graph.saved_tensors_hooks` on one batch);
# * **wall time** of the training run;
# * **held-out accuracy**: greedy exact match on prompts never seen in training, from the
#   trained task families, scored against the *correct* answer even when training was noisy;
# * **forgetting**: the base model's pretraining text was mostly children's stories; its
#   loss on unseen stories before and after fine-tuning says how much of that was lost.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains every run for a
# few dozen steps on four task families: on two CPU cores the chapter then shows the
# *shape* of the comparison in about a minute. `full` (the default on CUDA) trains on
# every family of the base's pretraining text for hundreds of steps.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import course
from minillama import peft as P
from minillama.data import generate_stories, instruction_data
from minillama.finetune import finetune, greedy_score, sft_batch, sft_loss, sft_tokens
from minillama.peft.lora import TARGETS
from minillama.reference import load_reference
from minillama.tasks import MIXED_FAMILIES
from minillama.train import TrainConfig, evaluate, make_optimizer

PROFILE, DEVICE = course.setup()
BASE = "mixed"
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. Base, data and budget
#
# The base is the `mixed` reference (`minillama/recipes.py`): the `stories` model of
# chapter 5 with its pretraining continued on stories mixed with task text. It met the
# task families written plainly (`Find the biggest number.\n3, 9\nAnswer:\n9`) but never
# the Alpaca template the instruction data uses, so, like LLaMA before Alpaca, it knows
# some of the skills and none of the format. The training set holds exactly as
# many records as the run will see (steps x batch), so every record is seen once; the
# test set keeps only prompts that are not in it. The noisy set is the same records with
# 30% of the answers replaced by a plausible wrong one or a sloppy phrasing
# (`instruction_data(..., noise=0.3)`; the clean records are identical).

# %%
base, tok, card = load_reference(BASE, device=DEVICE)
n_base = sum(p.numel() for p in base.parameters())
n_layers = base.cfg.n_layers
print(f"base: {card['recipe']}, {n_base:,} parameters, {n_layers} blocks of dim {base.cfg.dim}")

if PROFILE == "cpu":
    TASKS = ["refusal", "lookup_colour", "count_words", "reverse_word"]
    STEPS, BATCH, N_TEST = 24, 8, 48
else:
    TASKS = MIXED_FAMILIES
    STEPS, BATCH, N_TEST = 600, 32, 400
NOISE = 0.3
data = {"clean": instruction_data(STEPS * BATCH, seed=0, families=TASKS),
        "noisy": instruction_data(STEPS * BATCH, seed=0, families=TASKS, noise=NOISE)}
seen = {(r["instruction"], r["input"]) for r in data["clean"]}
test_set = [r for r in instruction_data(20 * N_TEST, seed=1, families=TASKS)
            if (r["instruction"], r["input"]) not in seen][:N_TEST]
noisy_example = next(r for r in data["noisy"] if r["noisy"])
print(f"{len(TASKS)} families, {len(data['clean'])} training records per run, "
      f"{sum(r['noisy'] for r in data['noisy'])} of them noisy in the noisy set, "
      f"{len(test_set)} test records")
print("a noisy record:", {k: noisy_example[k] for k in ("instruction", "output",
                                                         "clean_output")})

# %% [markdown]
# Forgetting is measured on stories the base never saw (a seed far from its training
# data), with `minillama.train.evaluate`: the mean next-token loss on fixed windows.

# %%
story_tokens = torch.tensor([i for s in generate_stories(200, seed=777_777)
                             for i in tok.encode(s, bos=True, eos=True)])
story_eval = TrainConfig(batch_size=8, seq_len=min(128, base.cfg.max_seq_len), eval_batches=4)
base_story_loss = evaluate(base, story_tokens, story_eval, device=DEVICE)
base_test_loss = sft_loss(base, tokenizer=tok, records=test_set, device=DEVICE)
print(f"base: stories loss {base_story_loss:.3f}, test response loss {base_test_loss:.2f}, "
      f"exact match {greedy_score(base, tokenizer=tok, records=test_set)['exact_match']:.1%}")

# %% [markdown]
# ## 2. The contestants
#
# Every PEFT method gets its prompts in *all* blocks of this small base (the papers' "top
# 30 of 32 layers" is nearly all of them too); LoRA adapts all seven linears with $r=8$,
# the QLoRA recipe, because on `wq, wv` alone it barely moves in so few steps (chapter 7).
# Each method trains at a learning rate that suits it: full fine-tuning moves weights that
# are already tuned and takes a small one; the adapters start at zero (LoRA's $B$, the
# gates) and take a large one.

# %%
METHODS = {  # name: (method or None for full fine-tuning, options, learning rate)
    "full FT": (None, {}, 1e-3),
    "LoRA": ("lora", dict(r=8, alpha=16, targets=TARGETS), 1e-2),
    "Adapter V1": ("adapter_v1", dict(layers=n_layers), 2e-2),
    "Adapter V2": ("adapter_v2", dict(layers=n_layers), 1e-2),
    "Excitor": ("excitor", dict(layers=n_layers), 1e-2),
}


def fresh(name):
    """The base model, with ``name``'s method applied (all parameters trainable for full FT)."""
    model, _, _ = load_reference(BASE, device=DEVICE)
    method, options, _ = METHODS[name]
    return P.apply(model, method, **options) if method else model


def saved_activation_bytes(model, records):
    """Bytes of the tensors autograd keeps for the backward pass of one training batch.

    Each storage counts once; the model's own parameters are not activations.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen_storage, total = set(), 0

    def pack(t):
        nonlocal total
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in params and key not in seen_storage:
            seen_storage.add(key)
            total += storage.nbytes()
        return t

    x, y = sft_batch([sft_tokens(r, tok) for r in records[:BATCH]], tok.pad_id)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(x.to(DEVICE), y.to(DEVICE))
    del loss
    model.eval()
    return total


def state_bytes(model):
    """Parameters + gradients + AdamW moments, from the model's tensors and the optimiser's."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, TrainConfig())
    for p in trainable:                       # one zero step creates AdamW's state tensors
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        saved = [p.detach().clone() for p in trainable]
        optimizer.step()
        for p, s in zip(trainable, saved):
            p.copy_(s)
    moments = sum(t.numel() * t.element_size() for st in optimizer.state.values()
                  for t in st.values() if torch.is_tensor(t) and t.dim() > 0)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable)
    for p in trainable:
        p.grad = None
    return params + grads + moments


for name in METHODS:
    model = fresh(name)
    print(f"{name:11s} {P.trainable_parameters(model) if METHODS[name][0] else n_base:>10,d} "
          f"trainable")
del model

# %% [markdown]
# `state_bytes` takes one AdamW step with zero gradients (and puts the weights back) so
# that the optimiser's moment tensors exist and can be measured rather than assumed.
#
# ## 3. The race
#
# Ten runs: five methods, clean and noisy data, same steps, same batches, same seed.

# %%
runs = {}
for dataset in ("clean", "noisy"):
    for name, (method, _, lr) in METHODS.items():
        model = fresh(name)
        trainable = P.trainable_parameters(model) if method else n_base
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            memory = None
        else:
            memory = state_bytes(model) + saved_activation_bytes(model, data[dataset])
        log = finetune(model, tokenizer=tok, records=data[dataset], steps=STEPS, lr=lr,
                       batch_size=BATCH, warmup=max(1, STEPS // 10), device=DEVICE)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            memory = torch.cuda.max_memory_allocated()
        score = greedy_score(model, tokenizer=tok, records=test_set, device=DEVICE)
        runs[name, dataset] = {          # one teacher-forced pass gives both test figures
            "trainable": trainable, "memory": memory, "time": log[-1]["time"],
            "log": log, "exact_match": score["exact_match"], "test_loss": score["loss"],
            "story_loss": evaluate(model, story_tokens, story_eval, device=DEVICE)}
        r = runs[name, dataset]
        print(f"{dataset:5s} {name:11s} {r['time']:6.1f} s  test loss {r['test_loss']:5.2f}  "
              f"exact match {r['exact_match']:6.1%}  stories loss {r['story_loss']:.3f}")
        del model

# %% [markdown]
# ## 4. The table
#
# Memory is in MB ($10^6$ bytes); "forgetting" is the rise of the stories loss over the
# base's, in nats per token.

# %%
memory_kind = "peak CUDA allocated" if DEVICE == "cuda" else \
    "tensors held (params + grads + AdamW moments + saved activations)"
print(f"memory: {memory_kind}; {STEPS} steps x {BATCH} records; base stories loss "
      f"{base_story_loss:.3f}, base test loss {base_test_loss:.2f}")
header = (f"{'method':11s}{'trainable':>11s}{'% base':>8s}{'memory MB':>11s}{'time s':>8s}"
          f"{'EM clean':>10s}{'EM noisy':>10s}{'loss clean':>12s}{'loss noisy':>12s}"
          f"{'forget':>8s}")
print(header)
for name in METHODS:
    c, n = runs[name, "clean"], runs[name, "noisy"]
    print(f"{name:11s}{c['trainable']:>11,d}{c['trainable'] / n_base:>8.2%}"
          f"{c['memory'] / 1e6:>11.2f}{c['time']:>8.1f}{c['exact_match']:>10.1%}"
          f"{n['exact_match']:>10.1%}{c['test_loss']:>12.2f}{n['test_loss']:>12.2f}"
          f"{c['story_loss'] - base_story_loss:>+8.3f}")

# %% [markdown]
# ## 5. The plot

# %%
names = list(METHODS)
fig, axes = plt.subplots(2, 2, figsize=(11, 7))
xs = list(range(len(names)))
for k, dataset in enumerate(("clean", "noisy")):
    axes[0, 0].bar([x + (k - 0.5) * 0.38 for x in xs],
                   [runs[n, dataset]["test_loss"] for n in names], width=0.38, label=dataset)
axes[0, 0].axhline(base_test_loss, color="k", ls="--", lw=1, label="base")
axes[0, 0].set_ylabel("held-out response loss")
axes[0, 0].set_yscale("log")
axes[0, 0].legend(fontsize=8)
axes[0, 1].bar(xs, [runs[n, "clean"]["story_loss"] - base_story_loss for n in names],
               color="tab:red")
axes[0, 1].set_ylabel("forgetting: Δ stories loss")
for ax in axes[0]:
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=20, fontsize=8)
for n in names:
    axes[1, 0].scatter(runs[n, "clean"]["trainable"], runs[n, "clean"]["memory"] / 1e6)
    axes[1, 0].annotate(n, (runs[n, "clean"]["trainable"], runs[n, "clean"]["memory"] / 1e6),
                        fontsize=8)
    log = runs[n, "clean"]["log"]
    axes[1, 1].plot([r["step"] for r in log], [r["loss"] for r in log], label=n)
axes[1, 0].set_xscale("log")
axes[1, 0].set_xlabel("trainable parameters")
axes[1, 0].set_ylabel("training memory (MB)")
axes[1, 1].set_xlabel("step (clean runs)")
axes[1, 1].set_ylabel("training response loss")
axes[1, 1].set_yscale("log")
axes[1, 1].legend(fontsize=8)
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 6. Reading the result
#
# The orderings the runs produced (computed from the table, not typed in):

# %%
def ranking(key, dataset="clean"):
    return " < ".join(sorted(names, key=lambda n: key(runs[n, dataset])))


print("held-out loss, clean:  ", ranking(lambda r: r["test_loss"]))
print("held-out loss, noisy:  ", ranking(lambda r: r["test_loss"], "noisy"))
print("forgetting (clean):    ", ranking(lambda r: r["story_loss"]))
print("training memory:       ", ranking(lambda r: r["memory"]))
print("trainable parameters:  ", ranking(lambda r: r["trainable"]))
print("noise cost in exact match (clean - noisy): " + ", ".join(
    f"{n} {runs[n, 'clean']['exact_match'] - runs[n, 'noisy']['exact_match']:+.1%}"
    for n in names))

# %% [markdown]
# What to compare these orderings with:
#
# * **Parameters vs memory.** Trainable parameters span orders of magnitude, training
#   memory much less: the frozen weights are still held, and activations are saved
#   whatever is frozen, because a frozen layer must still pass gradients down to the
#   adapters beneath it. On a 2.6M-parameter model at these batch sizes the activations
#   and the weights are most of it; at 7B the optimiser state of full fine-tuning is
#   what PEFT removes (chapter 13).
# * **Learning speed.** Methods that change every block's linear layers (full
#   fine-tuning, LoRA on all seven, V2's bias and scale) can lower the held-out loss in
#   few steps; V1 and the Excitor only add prompts behind a gate that starts at zero, so
#   their first steps mostly open the gate.
# * **Noise.** The noisy runs are scored against the correct answers, so whatever a
#   method learns from the 30% wrong answers can only cost it accuracy on the clean test;
#   the held-out loss shows that cost more steadily than exact match, which on a few
#   dozen test records moves by whole answers (a difference of one or two is noise).
# * **Forgetting.** The gated prompt methods start as the exact base model and leave its
#   weights untouched; the others write into the weights the stories live in. The
#   learning rate matters as much as the method here: each was set for learning speed,
#   not to spare the stories.
#
# The CPU profile's few dozen steps on a few hundred records show the ordering of these
# effects, not their size: with 48 test records one answer is 2.1 points of exact match.
# The full profile's runs are long enough for the accuracies to mean more.

# %%
print(f"chapter ran in {time.perf_counter() - T0:.1f} s")
