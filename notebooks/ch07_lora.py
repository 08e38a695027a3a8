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
# | the instruction data (Alpaca format) | `minillama/data/instructions.py` |
# | response-only fine-tuning, greedy answers | `minillama/finetune.py` |
#
# We fine-tune the `mixed` reference model (about 2.5M parameters) to follow
# instructions, three ways: LoRA on `wq, wv` (the paper's choice), LoRA on all seven
# linears of each block, and full fine-tuning. `mixed` is chapter 5's `stories` model
# with its pretraining continued on stories mixed with task text written *plainly*
# (`Which number is the highest?\n38, 79, 45\nAnswer:\n79`), never in an
# instruction template (recipe in `minillama/recipes.py`, figures in
# `minillama/reference/mixed/card.json`). That is the situation the survey describes for
# LLaMA: the base model meets the skills in its pretraining text, and instruction tuning
# (Alpaca's 52K records) mostly teaches it to answer in the format of a prompt template.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains on six of the
# task families in `mixed`'s pretraining text for a few dozen steps, so the chapter runs
# in about a minute on two cores; `full` (the default on CUDA) trains on all of them for
# longer and sweeps the rank.

# %%
import copy
import os
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import torch

import minillama
from minillama import CONFIGS, Llama, course
from minillama import peft as P
from minillama.data import format_prompt, instruction_data
from minillama.finetune import finetune, generate_answers, greedy_score
from minillama.peft.lora import TARGETS, LoRALinear, lora_scale
from minillama.reference import load_reference
from minillama.tasks import MIXED_FAMILIES, task_prompt, task_text

PROFILE, DEVICE = course.setup()
BASE = "mixed"
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
print("B == 0 at init, so the outputs are identical:", torch.equal(layer(x), frozen(x)))

# %% [markdown]
# The first gradient step can only move $B$: the gradient of $A$ is $s B^\top(\partial
# L/\partial h) x^\top$, which is zero while $B$ is. $B$'s gradient
# $s (\partial L/\partial h)(A x)^\top$ is not, because $A$ is random.

# %%
layer(x).square().sum().backward()
print(f"|grad A| = {layer.lora_A.grad.abs().max():.1e}   "
      f"|grad B| = {layer.lora_B.grad.abs().max():.3f}")


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
for r, targets in [(8, ["wq", "wv"]), (8, ["wq", "wk", "wv", "wo"]), (8, TARGETS),
                   (64, TARGETS)]:
    with torch.device("meta"):
        n = P.trainable_parameters(P.apply(Llama(cfg7b), "lora", r=r, targets=targets))
    assert n == lora_formula(cfg7b, r, targets)
    print(f"  r={r:<3d} on {','.join(targets):22s} {n:>12,d} trainable = {n / total_7b:.3%}")

# %% [markdown]
# $r=8$ on $W_q, W_v$ is 4,194,304 values, 0.06% of the model: the adapter for a task
# is 8 MB in bf16 next to a 13 GB base. Optimiser memory shrinks the same way, since
# AdamW only keeps moments for trainable parameters.
#
# ## 3. The base model and the task
#
# The base is the `mixed` reference. It has read thousands of tasks in the plain form
# above, but never an instruction template. The data are Alpaca-style records written by
# code (`minillama/data/instructions.py`), so every answer can be checked exactly; the
# families are the ones in `mixed`'s pretraining text (`MIXED_FAMILIES`).

# %%
base, tok, card = load_reference(BASE, device=DEVICE)
n_base = sum(p.numel() for p in base.parameters())
print(f"base: {card['recipe']} ({card['init_from']} + {card['steps']} steps of continued "
      f"pretraining), {n_base:,} parameters, {base.cfg.n_layers} blocks of dim "
      f"{base.cfg.dim}, vocabulary {tok.vocab_size}")
print(f"its card: task accuracy {card['task_accuracy_plain']:.1%} asked plainly, "
      f"{card['task_accuracy_alpaca']:.1%} in the Alpaca template")

if PROFILE == "cpu":
    TASKS = ["refusal", "lookup_colour", "count_words", "reverse_word", "max_list", "min_list"]
    N_TEST, STEPS, BATCH = 120, 40, 8
    N_TRAIN = STEPS * BATCH                       # every training record seen once
else:
    TASKS = MIXED_FAMILIES
    N_TRAIN, N_TEST, STEPS, BATCH = 40000, 1000, 1500, 32
train_set = instruction_data(N_TRAIN, seed=0, families=TASKS)
seen = {(r["instruction"], r["input"]) for r in train_set}
test_set = [r for r in instruction_data(3 * N_TEST, seed=1, families=TASKS)
            if (r["instruction"], r["input"]) not in seen][:N_TEST]   # prompts never trained on
print(f"{len(TASKS)} task families, {len(train_set)} training records, "
      f"{len(test_set)} test records with unseen prompts")
example = next(r for r in test_set if r["input"])
print("\n--- the plain form of pretraining ---\n" + task_text(example))
print("\n--- the Alpaca form we fine-tune on ---\n" + format_prompt(example) + example["output"])

# %% [markdown]
# The test keeps only prompts that never occur in training. A family whose every prompt
# is in the training set (reversing one of 36 words, say, in the full profile's large
# set) has nothing left to test and drops out of the tables.
#
# Training uses `minillama.finetune`: prompt and response are one sequence, but only
# the response tokens (and the closing EOS) are in the loss,
# $\mathcal{L} = -\frac{1}{|R|}\sum_{t\in R}\log p(x_t\mid x_{<t})$; the prompt positions
# get the target $-100$, which the model's cross-entropy ignores.
#
# Accuracy is *exact match under greedy decoding*. Greedy decoding writes the reference
# answer exactly when the reference token is the arg-max at every answer position, so
# `greedy_score` checks a whole batch with one forward pass instead of generating. Its
# `template` argument renders the prompt; `task_prompt` asks the same test records the
# way the pretraining text did. Before any training the base model scores:

# %%
before = greedy_score(base, tok, test_set, device=DEVICE)
plain = greedy_score(base, tok, test_set, device=DEVICE, template=task_prompt)
print(f"base, Alpaca template: exact match {before['exact_match']:6.1%}, "
      f"response loss {before['loss']:.2f} nats/token")
print(f"base, plain form:      exact match {plain['exact_match']:6.1%}, "
      f"response loss {plain['loss']:.2f} nats/token")

# %% [markdown]
# Same records, same answers; only the wrapping differs. What the base can do in the
# plain form is what it learned in pretraining; the gap down to the Alpaca line is what
# instruction tuning has to close, and it is mostly a matter of format.

# %% [markdown]
# ## 4. LoRA on `wq, wv` vs LoRA on every linear vs full fine-tuning
#
# Same data, same steps, same batches; each method at a learning rate that suits it.
# LoRA's update starts at zero and is multiplied by $\alpha/r$, so it takes a larger
# learning rate than full fine-tuning, which moves weights that are already tuned.

# %%
METHODS = {  # name: (PEFT options or None for full fine-tuning, learning rate)
    "LoRA wq,wv": (dict(r=8, alpha=16, targets=["wq", "wv"]), 2e-2),
    "LoRA all 7": (dict(r=8, alpha=16, targets=TARGETS), 1e-2),
    "full FT": (None, 1e-3),
}
models, logs, results = {}, {}, {"base": before}
for name, (options, lr) in METHODS.items():
    model, _, _ = load_reference(BASE, device=DEVICE)
    if options is not None:
        P.apply(model, "lora", **options)
    logs[name] = finetune(model, tok, train_set, steps=STEPS, lr=lr, batch_size=BATCH,
                          warmup=STEPS // 10, device=DEVICE)
    results[name] = greedy_score(model, tok, test_set, device=DEVICE)
    models[name] = model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name:11s} {trainable:>9,d} trainable ({trainable / n_base:6.2%})  "
          f"{logs[name][-1]['time']:5.1f} s  test loss {results[name]['loss']:.2f}  "
          f"exact match {results[name]['exact_match']:.1%}")


# %%
def smooth(values, k=10):
    """Running mean over the last k values (the raw curves are noisy at small batch)."""
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
            for i in range(len(values))]


fig, ax = plt.subplots(figsize=(7, 3.5))
for name, log in logs.items():
    line, = ax.plot([r["step"] for r in log], smooth([r["loss"] for r in log]), label=name)
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], alpha=0.2, color=line.get_color())
ax.set_xlabel("step")
ax.set_ylabel("response loss (nats/token)")
ax.set_yscale("log")
ax.legend()
plt.tight_layout()
plt.show()

columns = {**results, "base, plain": plain}    # the last column: asked the pretraining way
print("exact match on the test prompts, Alpaca template (last column: the plain form)")
print(f"{'family':16s}" + "".join(f"{name:>12s}" for name in columns))
for fam in sorted(before["per_family"]):
    print(f"{fam:16s}" + "".join(f"{r['per_family'][fam]:12.0%}" for r in columns.values()))
print(f"{'all':16s}" + "".join(f"{r['exact_match']:12.1%}" for r in columns.values()))
print(f"{'± 1 std. error':16s}" + "".join(
    f"{(r['exact_match'] * (1 - r['exact_match']) / r['n']) ** 0.5:12.1%}"
    for r in columns.values()))
tuned = [results[name]["exact_match"] for name in METHODS]
print(f"\nAlpaca template: base {before['exact_match']:.1%}, after tuning "
      f"{min(tuned):.1%} to {max(tuned):.1%}; the base asked plainly: {plain['exact_match']:.1%}")

# %% [markdown]
# The numbers above are the experiment. All three methods start from the base's score
# in the Alpaca template and have the same few dozen steps to learn the template; the
# last column says how much of each family the base could already do when asked the way
# its pretraining text asked. It is a guide, not a ceiling: fine-tuning can also teach a
# little of the task itself, and a family the base rarely solves plainly has more than a
# format to learn.
#
# The LoRA paper found LoRA on par with full fine-tuning on RoBERTa, DeBERTa, GPT-2 and
# GPT-3, bases that already handle the kind of text their tasks use; ours is such a base
# for these tasks. LoRA on `wq, wv` trains a small fraction of what LoRA on all seven
# linears trains, which is itself a small fraction of full fine-tuning. With a short run
# and this many test records, differences of a few points between the methods are
# within the noise (the last row is one binomial standard error); the full profile trains
# long enough to compare where they end up.
#
# A few answers, generated greedily (token by token, stopping at EOS) by the LoRA model
# on all linears:

# %%
sample = [next(r for r in test_set if r["family"] == f)
          for f in sorted({r["family"] for r in test_set})][:6]
for record, answer in zip(sample, generate_answers(models["LoRA all 7"], tok, sample,
                                                   max_new_tokens=24, device=DEVICE)):
    mark = "ok " if answer.strip() == record["output"] else "   "
    print(f"{mark}{record['family']:14s} {record['instruction'][:40]!r:44s} -> {answer!r}")

# %% [markdown]
# ## 5. Merging: zero added latency
#
# After training, $W = W_0 + \frac{\alpha}{r}BA$ is one matrix of the original shape.
# `P.merge` writes it into the frozen weight; the merged model computes the same
# function with the base model's cost. `P.unmerge` subtracts the update again (float
# rounding aside), so one base can serve several adapters in turn.

# %%
lora_model = models["LoRA all 7"]
prompts = [tok.encode(format_prompt(r), bos=True) for r in test_set[:8]]
probe = torch.tensor([p[:min(map(len, prompts))] for p in prompts], device=DEVICE)
w0 = lora_model.layers[0].attention.wq.base.weight.detach().clone()
with torch.no_grad():
    unmerged = lora_model(probe)
    P.merge(lora_model)
    merged = lora_model(probe)
print(f"merged vs unmerged logits: max |diff| = {(merged - unmerged).abs().max().item():.2e}")


def forward_ms(models, tokens, repeats=10):
    """The fastest of ``repeats`` timed forward passes of each model, in milliseconds.

    The models take turns, so a change in the machine's load hits them all alike.
    """
    times = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(repeats):
            for name, model in models.items():
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model(tokens)
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t)
    return {name: 1000 * min(t) for name, t in times.items()}


merged_copy = copy.deepcopy(lora_model)          # keep one merged copy for the timing
P.unmerge(lora_model)
batch = probe if PROFILE == "cpu" else probe.repeat(16, 1)
timings = forward_ms({"base": base, "LoRA unmerged": lora_model, "LoRA merged": merged_copy},
                     batch)
for name, ms in timings.items():
    print(f"{name:14s} {ms:7.2f} ms per forward of {tuple(batch.shape)} tokens "
          f"({ms / timings['base']:.2f} x base)")
del merged_copy
w_back = lora_model.layers[0].attention.wq.base.weight
print(f"after unmerge, max |W - W0| = {(w_back - w0).abs().max().item():.1e}")


# %% [markdown]
# The unmerged model pays for 14 extra thin matrix products per block (two per adapted
# linear) and their launches; merged, the forward pass is the base model's own.
#
# ## 6. How low-rank is the change full fine-tuning makes?
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


full = models["full FT"]
fig, ax = plt.subplots(figsize=(7, 3.5))
for name in ["wq", "wv", "w2"]:
    curves = []
    for i in range(base.cfg.n_layers):
        s = torch.linalg.svdvals(weight(full, i, name) - weight(base, i, name))
        curves.append((s.square().cumsum(0) / s.square().sum()).tolist())
    mean = [sum(c[k] for c in curves) / len(curves) for k in range(len(curves[0]))]
    ax.plot(range(1, len(mean) + 1), mean, label=name)
    print(f"{name}: top 8 of {len(mean)} singular directions carry {mean[7]:.0%} of the update")
ax.set_xscale("log")
ax.set_xlabel("rank r")
ax.set_ylabel("fraction of ||ΔW||² in the top r")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. The rank, and rsLoRA's scale
#
# With the usual scale $\alpha/r$, doubling $r$ halves the factor in front of $BA$;
# rsLoRA's $\alpha/\sqrt{r}$ shrinks it more slowly, which the rsLoRA paper shows keeps
# the learning from stalling at large ranks:

# %%
for r in [1, 4, 16, 64, 256]:
    print(f"r={r:<4d} alpha/r = {lora_scale(r, 16):7.3f}   alpha/sqrt(r) = "
          f"{lora_scale(r, 16, rslora=True):6.3f}")

# %% [markdown]
# The full profile trains LoRA on `wq, wv` at several ranks with both scales (the CPU
# profile skips this: it would multiply the training time).

# %%
if PROFILE != "cpu":
    sweep = {}
    for rslora in (False, True):
        for r in [1, 2, 4, 8, 16, 32]:
            model, _, _ = load_reference(BASE, device=DEVICE)
            P.apply(model, "lora", r=r, alpha=16, targets=["wq", "wv"], rslora=rslora)
            log = finetune(model, tok, train_set, steps=STEPS, lr=METHODS["LoRA wq,wv"][1],
                           batch_size=BATCH, warmup=STEPS // 10, device=DEVICE)
            result = greedy_score(model, tok, test_set, device=DEVICE)
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
# ## 8. Saving the adapter, and loading it with Hugging Face peft
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

adapted = models["LoRA wq,wv"].cpu()
work = tempfile.TemporaryDirectory()
hf_dir, adapter_dir = os.path.join(work.name, "base-hf"), os.path.join(work.name, "lora")
minillama.save(load_reference(BASE)[0], hf_dir, format="hf")
P.save(adapted, adapter_dir, format="peft", base_model_name_or_path=hf_dir)
print(sorted(os.listdir(adapter_dir)),
      f"{os.path.getsize(os.path.join(adapter_dir, 'adapter_model.safetensors')):,} bytes")

hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
theirs = peft.PeftModel.from_pretrained(hf, adapter_dir).eval()
with torch.no_grad():
    ours_logits, their_logits = adapted(probe.cpu()), theirs(probe.cpu()).logits
print(f"minillama + LoRA vs transformers + peft: max |logit diff| = "
      f"{(ours_logits - their_logits).abs().max().item():.2e}")

# the minillama format round-trips onto a fresh base, and refuses a different one
P.save(adapted, adapter_dir)
reloaded = P.load(load_reference(BASE)[0], adapter_dir)
with torch.no_grad():
    print("reloaded == trained:", torch.equal(reloaded(probe.cpu()), ours_logits))
try:
    P.load(Llama(base.cfg), adapter_dir)                  # same shapes, other weights
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
