# %% [markdown]
# # Chapter 15 — Instruction tuning
#
# A pretrained LLaMA continues text; it does not answer requests. The survey's pipeline
# adds two stages after pretraining: *instruction tuning* (supervised fine-tuning, SFT,
# on pairs of a request and a good response) and preference optimisation (chapter 16).
# This chapter is the first stage.
#
# * **InstructGPT** (Ouyang et al., arXiv 2203.02155) made SFT on human-written
#   demonstrations step one of its pipeline, before a reward model and RL; labelers
#   preferred the outputs of its 1.3B model to those of the 175B GPT-3 it started from.
# * **Self-Instruct** (Wang et al., arXiv 2212.10560) replaced the humans: starting from
#   175 seed tasks, GPT-3 itself writes new instructions, inputs and outputs, which are
#   filtered and used to tune GPT-3.
# * **Alpaca** (Taori et al., 2023) ran a Self-Instruct-style pipeline with
#   `text-davinci-003` to write 52K records `{instruction, input, output}`, and
#   fine-tuned LLaMA-7B on them, each record rendered with a fixed prompt template.
# * **FLAN** (Wei et al., arXiv 2109.01652) tuned a 137B model on more than 60 NLP
#   datasets phrased as instructions and tested it on *whole task clusters held out of
#   tuning*: zero-shot accuracy on unseen tasks went up. Its scaling study adds a
#   caveat that matters for a model of our size: the gain on held-out tasks appeared only
#   at the largest scales, and instruction tuning hurt the small models (8B and below).
#
# The training signal is the ordinary next-token loss, restricted to the response. With
# the prompt $x_{1..P}$ and the response $x_{P+1..P+R}$ followed by an end-of-sequence
# token, the set of trained positions is $\mathcal{R} = \{P+1, \dots, P+R+1\}$ and
#
# $$\mathcal{L}_\text{SFT} = -\frac{1}{|\mathcal{R}|}\sum_{t\in\mathcal{R}}
#   \log p_\theta(x_t \mid x_{<t}).$$
#
# The prompt positions get the target $-100$, which the cross-entropy skips; the EOS
# target teaches the model where to stop.
#
# | piece | file |
# |---|---|
# | the template `format_prompt`, `instruction_data`, `heldout_split` | `data/instructions.py` |
# | `sft_tokens` (mask, EOS), `sft_batch`, `finetune`, `greedy_score` | `finetune.py` |
# | LoRA: `P.apply(model, "lora", ...)` | `peft/` |
# | the `mixed` base, `MIXED_FAMILIES`, the plain form `task_prompt` | `recipes.py`, `tasks/` |
# | loading it: `load_reference` | `reference.py` |
# | the stories loss for forgetting: `evaluate` | `train.py` |
#
# (all under `minillama/`)
#
# The base is the `mixed` reference: the `stories` model of chapter 5, pretraining
# continued on stories mixed with task text written *plainly* (instruction, input,
# `Answer:`, output), never in the template. Like LLaMA before Alpaca, it has met some of
# the skills and none of the format.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) tunes on six task
# families for a few dozen steps so the chapter runs in a minute or two on two cores;
# `full` (the default on CUDA) tunes on all the `mixed` families except the held-out
# ones, for far longer, and tests on many more records.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import course
from minillama import peft as P
from minillama.data import format_prompt, generate_stories, heldout_split, instruction_data
from minillama.finetune import (
    IGNORE,
    finetune,
    generate_answers,
    greedy_score,
    sft_batch,
    sft_tokens,
)
from minillama.peft.lora import TARGETS
from minillama.reference import load_reference
from minillama.tasks import MIXED_FAMILIES, task_prompt, task_text
from minillama.train import TrainConfig, evaluate

PROFILE, DEVICE = course.setup()
BASE = "mixed"
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The template
#
# `format_prompt` renders a record in a shortened Alpaca template: a one-line preamble,
# then `### Instruction:`, `### Input:` when the record has one, and `### Response:`.
# Alpaca itself used two preambles in the same way, one for records with an input and
# one for records without. The response follows the last line.

# %%
records = instruction_data(200, seed=0, families=MIXED_FAMILIES)
with_input = next(r for r in records if r["input"] and r["family"] == "max_list")
without_input = next(r for r in records if not r["input"])
for title, record in [("with input", with_input), ("without input", without_input)]:
    print(f"--- {title} ({record['family']}) ---")
    print(format_prompt(record) + record["output"] + "\n")
print("--- the same task in the base's pretraining form (task_text) ---")
print(task_text(with_input))

# %% [markdown]
# ## 2. Response-only loss, on a batch
#
# `sft_tokens` encodes the prompt (with BOS) and the response, appends EOS, and shifts by
# one: position $t$ of `inputs` predicts `targets[t]`, the token at $t+1$. Every target
# that is still part of the prompt becomes $-100$. `sft_batch` pads rows on the right with
# the pad token and pads their targets with $-100$ too. Below, the two records above
# as one batch; `·` marks a target of $-100$.

# %%
base, tok, card = load_reference(BASE, device=DEVICE)
pair = [sft_tokens(r, tok) for r in (with_input, without_input)]
x, y = sft_batch(pair, tok.pad_id)
print(f"batch: inputs {tuple(x.shape)}, targets {tuple(y.shape)}")
for row, (ids, labels) in enumerate(pair):
    n_prompt = sum(t == IGNORE for t in labels)
    n_resp = len(labels) - n_prompt
    n_pad = x.shape[1] - len(ids)
    last = y[row][y[row] != IGNORE][-1].item()
    print(f"row {row}: {len(ids)} real positions = {n_prompt} masked prompt + {n_resp} trained "
          f"(response + EOS), then {n_pad} padding; last trained target is EOS: "
          f"{last == tok.eos_id}")

show = lambda i: "·" if i == IGNORE else repr(tok.decode([i]))
for row, (ids, _) in enumerate(pair):
    first = (y[row] != IGNORE).nonzero()[0].item()     # the first trained position
    start = sorted(set(range(first - 2, first + 3)))
    end = [t for t in range(len(ids) - 2, len(ids) + 2) if t < x.shape[1] and t > first + 2]
    print(f"\nrow {row}: {'pos':>4s}  {'input':>10s}  {'target':>10s}")
    for t in start + (["..."] if end and end[0] > first + 3 else []) + end:
        if t == "...":
            print(f"{'...':>11s}")
            continue
        token = repr(tok.decode([x[row, t].item()]))
        print(f"{t:11d}  {token:>10s}  {show(y[row, t].item()):>10s}")

# %% [markdown]
# What goes into the loss: only the trained positions. The model's own loss (its
# cross-entropy ignores $-100$) equals the mean negative log-probability over exactly
# those positions; training on every real position instead would spend most of the
# gradient on the template, which is the same in every record.

# %%
with torch.no_grad():
    logits, loss = base(x.to(DEVICE), y.to(DEVICE))
    logp = torch.log_softmax(logits.float().cpu(), dim=-1)
keep = y != IGNORE
by_hand = -logp[keep].gather(-1, y[keep][:, None]).mean()
everything = torch.full_like(y, IGNORE)               # the next token at every real position
for row, (ids, labels) in enumerate(pair):
    everything[row, :len(ids)] = torch.tensor(ids[1:] + labels[-1:])
all_positions = -logp[everything != IGNORE].gather(
    -1, everything[everything != IGNORE][:, None]).mean()
print(f"trained positions: {int(keep.sum())} of {int((everything != IGNORE).sum())} real ones")
print(f"model loss {loss.item():.4f} = by hand over the trained positions {by_hand.item():.4f}")
print(f"the same base, loss over every real position: {all_positions.item():.4f} nats/token")

# %% [markdown]
# ## 3. The data, and a FLAN-style held-out split
#
# The records come from the task families in `mixed`'s pretraining text
# (`MIXED_FAMILIES`). `heldout_split` removes whole families from the training set, as
# FLAN held out whole task clusters. Two held-out families are ones the base met in its
# pretraining text; a third, `sort_ascending`, it met nowhere. The test records are of
# another seed, and any prompt that also occurs in training is dropped.

# %%
HELD_KNOWN = ["reverse_word", "count_words"]          # in the pretraining text, not tuned on
HELD_NEW = ["sort_ascending"]                         # in neither
if PROFILE == "cpu":
    TRAIN_FAMILIES = ["refusal", "lookup_colour", "lookup_age", "max_list", "min_list",
                      "uppercase"]
    STEPS, BATCH, PER_FAMILY = 24, 8, 6
    STORY_EVAL = TrainConfig(batch_size=8, seq_len=128, eval_batches=2)
else:
    TRAIN_FAMILIES = [f for f in MIXED_FAMILIES if f not in HELD_KNOWN]
    STEPS, BATCH, PER_FAMILY = 1500, 32, 100
    STORY_EVAL = TrainConfig(batch_size=32, seq_len=256, eval_batches=20)
FAMILIES = TRAIN_FAMILIES + HELD_KNOWN + HELD_NEW
HELD = HELD_KNOWN + HELD_NEW

pool = instruction_data(2 * STEPS * BATCH, seed=0, families=FAMILIES)
train_set, held_pool = heldout_split(pool, HELD)
train_set = train_set[:STEPS * BATCH]                 # every training record seen once
seen = {(r["instruction"], r["input"]) for r in train_set}
fresh = [r for r in instruction_data(40 * PER_FAMILY * len(FAMILIES), seed=1, families=FAMILIES)
         if (r["instruction"], r["input"]) not in seen]
test_set = [r for f in FAMILIES for r in [q for q in fresh if q["family"] == f][:PER_FAMILY]]
print(f"tuned on {len(TRAIN_FAMILIES)} families ({len(train_set)} records); "
      f"held out {HELD} ({len(held_pool)} records dropped)")
print(f"test: {len(test_set)} records, "
      f"{min(sum(r['family'] == f for r in test_set) for f in FAMILIES)} to "
      f"{max(sum(r['family'] == f for r in test_set) for f in FAMILIES)} per family")
assert not {r["family"] for r in train_set} & set(HELD)


# %% [markdown]
# ## 4. What the base can do before tuning
#
# Exact match under greedy decoding, checked by `greedy_score` with one teacher-forced
# pass per batch (greedy decoding writes the reference exactly when the reference token
# is the arg-max at every response position, EOS included). Its `template` argument
# renders the prompt: the Alpaca template, or `task_prompt`, the plain form of the
# pretraining text. The response loss of the same pass comes along.

# %%
def by_family(model, template=format_prompt):
    """greedy_score per family of the test set: {family: result}, plus "seen" and "held"."""
    out = {f: greedy_score(model, tok, [r for r in test_set if r["family"] == f],
                           device=DEVICE, template=template) for f in FAMILIES}
    for group, fams in [("seen", TRAIN_FAMILIES), ("held: known", HELD_KNOWN),
                        ("held: new", HELD_NEW)]:
        n = sum(out[f]["n"] for f in fams)
        out[group] = {"exact_match": sum(out[f]["exact_match"] * out[f]["n"] for f in fams) / n,
                      "loss": sum(out[f]["loss"] * out[f]["n"] for f in fams) / n, "n": n}
    return out


story_tokens = torch.tensor([i for s in generate_stories(200, seed=777_777)
                             for i in tok.encode(s, bos=True, eos=True)])
scores = {"base, plain": by_family(base, task_prompt), "base, Alpaca": by_family(base)}
story_loss = {"base": evaluate(base, story_tokens, STORY_EVAL, device=DEVICE)}
for name, s in scores.items():
    print(f"{name:13s} exact match: tuned-on families {s['seen']['exact_match']:6.1%}, "
          f"held-out known {s['held: known']['exact_match']:6.1%}, "
          f"held-out new {s['held: new']['exact_match']:6.1%}")
print(f"base stories loss (unseen stories): {story_loss['base']:.3f}")

# %% [markdown]
# Same records, same answers, only the wrapping differs. The plain line is what the
# base learned in pretraining; the Alpaca line is what it does with a format it never
# saw. Whatever SFT adds on top of the plain line would be a skill learned from the
# instruction data itself.
#
# ## 5. SFT: full fine-tuning vs LoRA
#
# Both start from the base, see the same batches in the same order, and train with
# `finetune` (AdamW, warmup then cosine decay). Full fine-tuning updates all weights at a
# small learning rate; LoRA ($r=8$, $\alpha=16$, all seven linears of each block, chapter
# 7) starts its update at zero and takes a larger one. Forgetting is the change of the
# next-token loss on stories the base never saw.

# %%
METHODS = {  # name: (LoRA options or None for full fine-tuning, learning rate)
    "full FT": (None, 1e-3),
    "LoRA": (dict(r=8, alpha=16, targets=TARGETS), 1e-2),
}
models, logs, facts = {}, {}, {}
for name, (options, lr) in METHODS.items():
    model, _, _ = load_reference(BASE, device=DEVICE)
    if options is not None:
        P.apply(model, "lora", **options)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logs[name] = finetune(model, tok, train_set, steps=STEPS, lr=lr, batch_size=BATCH,
                          warmup=max(1, STEPS // 10), device=DEVICE)
    scores[name] = by_family(model)
    story_loss[name] = evaluate(model, story_tokens, STORY_EVAL, device=DEVICE)
    models[name] = model
    facts[name] = (trainable, logs[name][-1]["time"])

n_base = sum(p.numel() for p in base.parameters())
print(f"{'method':8s} {'trainable':>10s} {'share':>7s} {'time s':>7s} {'EM tuned':>9s} "
      f"{'EM held':>8s} {'stories loss':>13s} {'forgetting':>11s}")
for name, (trainable, seconds) in facts.items():
    s = scores[name]
    print(f"{name:8s} {trainable:>10,d} {trainable / n_base:7.2%} {seconds:7.1f} "
          f"{s['seen']['exact_match']:9.1%} {s['held: known']['exact_match']:8.1%} "
          f"{story_loss[name]:13.3f} {story_loss[name] - story_loss['base']:+11.3f}")


# %%
def smooth(values, k=5):
    """Running mean over the last k values."""
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
            for i in range(len(values))]


fig, ax = plt.subplots(figsize=(7, 3.2))
for name, log in logs.items():
    line, = ax.plot([r["step"] for r in log], smooth([r["loss"] for r in log]), label=name)
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], alpha=0.2, color=line.get_color())
ax.set_xlabel("step")
ax.set_ylabel("response loss (nats/token)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Per family, before and after
#
# Exact match on the test records of every family; the last rows pool the families of
# each group. The first column asks the base in its pretraining form, every other column
# uses the Alpaca template. Then the response loss per group, which moves long before
# exact match does (one wrong token makes a whole answer wrong).

# %%
GROUP = {**{f: "tuned" for f in TRAIN_FAMILIES}, **{f: "held, known" for f in HELD_KNOWN},
         **{f: "held, new" for f in HELD_NEW}}
print(f"{'family':16s}{'group':>12s}" + "".join(f"{name:>14s}" for name in scores))
for fam in FAMILIES:
    print(f"{fam:16s}{GROUP[fam]:>12s}" +
          "".join(f"{s[fam]['exact_match']:14.0%}" for s in scores.values()))
for group in ("seen", "held: known", "held: new"):
    print(f"{'all ' + group:28s}" + "".join(f"{s[group]['exact_match']:14.1%}"
                                           for s in scores.values()))
print("\nresponse loss (nats/token)")
for group in ("seen", "held: known", "held: new"):
    print(f"{'all ' + group:28s}" + "".join(f"{s[group]['loss']:14.2f}"
                                           for s in scores.values()))
n = scores["full FT"]["seen"]["n"]
em = scores["full FT"]["seen"]["exact_match"]
print(f"\n(one binomial standard error on {n} tuned-on test records at {em:.0%}: "
      f"{(em * (1 - em) / n) ** 0.5:.1%})")

# %%
alpaca, plain = scores["base, Alpaca"], scores["base, plain"]
for name in METHODS:
    s = scores[name]
    print(f"{name}: tuned-on families {alpaca['seen']['exact_match']:.1%} -> "
          f"{s['seen']['exact_match']:.1%} (plain form: {plain['seen']['exact_match']:.1%}); "
          f"held-out known {alpaca['held: known']['exact_match']:.1%} -> "
          f"{s['held: known']['exact_match']:.1%} "
          f"(plain: {plain['held: known']['exact_match']:.1%}); "
          f"response loss on held-out known {alpaca['held: known']['loss']:.2f} -> "
          f"{s['held: known']['loss']:.2f}")

# %% [markdown]
# What do the tuned models write for an instruction they were never tuned on? The
# `refusal` family is in the tuning mix, and some of its records use the very
# instructions of held-out families with an empty input ("Reverse the word." with
# nothing to reverse). Greedy answers to the held-out test records, counted by kind:

# %%
REFUSALS = ("I cannot do that: the input is empty.", "I cannot do that: the input has no numbers.",
            "I cannot do that: the answer is not in the input.")
held_records = [r for r in test_set if r["family"] in HELD]
for name, model in models.items():
    answers = generate_answers(model, tok, held_records, max_new_tokens=20, device=DEVICE)
    refused = sum(a in REFUSALS for a in answers)
    right = sum(a == r["output"] for a, r in zip(answers, held_records))
    print(f"{name:8s} on {len(held_records)} held-out records: {right} right, {refused} refusals, "
          f"{len(held_records) - right - refused} other answers")

# %% [markdown]
# How to read all this:
#
# * **Tuned-on families.** The distance from the base's Alpaca column to the plain column
#   is what the format alone costs, and SFT's first job is to close it. A short CPU run
#   leaves most of it open; the full profile's run is long enough to tell how close SFT
#   gets to the plain line, and whether it passes it by learning a family better than
#   pretraining did.
# * **Held-out families the base knows.** This is FLAN's question at toy scale: having
#   learned the template on other families, does the model apply it to an instruction it
#   was never tuned on? The response loss is the more sensitive measure: see whether it
#   falls below the base's Alpaca value at all before looking for exact matches. FLAN's
#   own caution applies: it saw held-out gains only for its largest models, and ours has
#   a few million parameters, so a small or absent transfer here is a plausible result,
#   not a failure of the code. The count of refusals shows one way a tuned model can fail
#   on unseen instructions: it applies a behaviour from the tuning mix (refusing) where
#   pretraining had a skill.
# * **The held-out family the base never met.** It is the control: instruction tuning on
#   other tasks is not expected to supply a skill that neither pretraining nor tuning
#   contained.
# * **LoRA vs full fine-tuning.** Compare the trainable share, the time, the two exact
#   match columns and the forgetting column of the table in section 5; differences of a
#   few points are within the standard error printed above.
#
# Answers generated greedily (token by token until EOS), one test record per family,
# by the full fine-tuning model:

# %%
sample = [next(r for r in test_set if r["family"] == f) for f in FAMILIES]
answers = generate_answers(models["full FT"], tok, sample, max_new_tokens=20, device=DEVICE)
for record, answer in zip(sample, answers):
    mark = "ok " if answer == record["output"] else "   "
    print(f"{mark}{record['family']:15s} {GROUP[record['family']]:12s} "
          f"{record['instruction'][:34]!r:38s} -> {answer[:30]!r}")
print(f"\nnotebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch15_instruction_tuning.py`: build the inputs and targets of one record
# from its prompt and response ids (the masking and EOS of `sft_tokens`), and the
# response-only loss from logits and targets.

# %%
IMPL = "solutions"
result = course.grade("ch15", impl=IMPL)
