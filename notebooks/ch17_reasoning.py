# %% [markdown]
# # Chapter 17 — Chain of thought and self-consistency
#
# A transformer answering at once has a fixed number of layers to think with. Writing
# intermediate results first lets each new token build on the ones before it. Two lines
# of work got a model to do that, in two different ways:
#
# * **Trained scratchpads** (Nye et al., arXiv 2112.00114): the model is *fine-tuned* on
#   examples that show the intermediate steps before the answer, and learns to write
#   them itself.
# * **Chain-of-thought prompting** (Wei et al., arXiv 2201.11903): a large pretrained
#   model, not trained on the task's steps, is *prompted* with a few exemplars whose
#   answers reason step by step, and imitates them. The paper found that this helps only
#   large models (around 100B parameters); smaller ones write fluent but wrong chains.
#
# The models of this chapter, under a million parameters each, do the first: they are
# trained on worked steps, and a marker after the question asks for a form (`S:` for
# steps, `A:` for the answer at once); no exemplar is ever put in the prompt. "Chain of
# thought" below means such a written-out chain, however the model learned it. For
# problems that are *sequential* by nature, writing steps is more than a format: a
# bounded-depth transformer cannot track a long chain of operations in one forward pass,
# but one that writes a step per token group can (Feng et al., arXiv 2305.15408).
#
# Self-consistency (Wang et al., arXiv 2203.11171) spends more tokens still: sample $N$
# reasoning paths $y_1..y_N$ at temperature $T$ and let their final answers vote,
#
# $$a^\star = \arg\max_a \sum_{i=1}^{N} \big[\,\mathrm{answer}(y_i) = a\,\big],
#   \qquad \text{confidence} = \frac{1}{N}\sum_{i=1}^{N} \big[\,\mathrm{answer}(y_i) = a^\star\big].$$
#
# The vote share is a confidence score for free. How well it separates right answers from
# wrong ones is measured by the AUROC, the chance that a random right answer gets a
# higher share than a random wrong one (ties count one half; Hanley & McNeil 1982):
#
# $$\mathrm{AUROC} = \frac{1}{PN}\sum_{i\in\text{right}}\sum_{j\in\text{wrong}}
#   \Big([s_i > s_j] + \tfrac12 [s_i = s_j]\Big).$$
#
# | piece | file |
# |---|---|
# | `mod10_chain` (the task), `extract_answer` (the text after `####`) | `minillama/data/arithmetic.py` |
# | `sample`, `greedy_cot`, `majority_vote`, `self_consistency` | `minillama/reasoning/sampling.py` |
# | `auroc` (rank statistic with ties) | `minillama/metrics.py` |
# | `qa_prompt`, `mod10_heldout` (the chains as prompts; problems never trained on) | `minillama/tasks/` |
# | the `mod10` and `mod10-paths` recipes | `minillama/recipes.py` |
# | `addition_problems(..., little_endian=True)` (section 6's digit order) | `minillama/data/arithmetic.py` |
# | `addition_heldout`, `addition_scores`; the `add5` / `add5-lsb` recipes | `minillama/tasks/`, `minillama/recipes.py` |
# | the trained models, with their cards | `minillama/reference/mod10*/`, `minillama/reference/add5*/` |
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) evaluates the
# shipped reference models on a few hundred unseen problems each, in under two minutes
# on two cores (the last cell prints the wall time); `full` (the default on CUDA) trains
# its own models, 12x the size (the recipes' `-full` twins, trained live by
# `minillama/live.py` and kept under `build/full/` for the next chapter), uses more
# problems and also retrains the two-style model for longer and longer, to see what
# happens to the vote's gain as the model improves. The figures the prose quotes are the
# CPU profile's; in the full profile the cells assert the direction of each claim, not
# the shipped models' figures.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import course, live, profiles
from minillama.data import mod10_chain
from minillama.metrics import auroc
from minillama.reasoning import extract_answer, greedy_cot, majority_vote, sample
from minillama.recipes import get_recipe
from minillama.tasks import mod10_heldout, qa_prompt

PROFILE, DEVICE = course.setup()
ROW = profiles.settings("ch17", PROFILE)            # this chapter's row of minillama/profiles.py
N_TEST, N_MAX = ROW.n_test, ROW.n_max
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The task: a chain of operations mod 10
#
# A start digit, then eight operations `+d`, `-d` or `*d`, each applied to the running
# value and reduced mod 10. The answer depends on every operation in order, so there is
# no shortcut through the middle of the chain. The same problem can be answered three
# ways: directly, with one operation per step, or with two operations per step.

# %%
one, two = mod10_chain(1, seed=7)[0], mod10_chain(1, seed=7, cot_style="two")[0]
print("question      ", one["question"])
print("direct        ", one["answer"])
print("one op a step ", one["cot"])
print("two ops a step", two["cot"])
print("what extract_answer reads:", extract_answer(one["cot"]), extract_answer(two["cot"]))
assert extract_answer(one["cot"]) == extract_answer(two["cot"]) == one["answer"]
print(f"distinct problems: 10 x 27^8 = {10 * 27**8:,}")

# %% [markdown]
# ## 2. Direct answers against written-out steps
#
# The `mod10` reference model (recipe in `minillama/recipes.py`, figures in its
# `card.json`) was trained on both forms, and the marker after the question asks for one:
# `A:` for the answer at once, `S:` for the steps. Both are decoded greedily on problems it
# never saw.

# %%
model, tok, card = live.reference("mod10", PROFILE, DEVICE)     # shipped (cpu) or trained live
print(f"mod10: {card['parameters']:,} parameters, {card['steps']} steps, "
      f"{card['examples_seen']:,} examples")
problems = mod10_heldout(get_recipe("mod10"), N_TEST)
gold = [p["answer"] for p in problems]


def accuracy(answers) -> float:
    return sum(a == g for a, g in zip(answers, gold)) / len(gold)


t = time.perf_counter()
direct = greedy_cot(model, tok, [qa_prompt(p, "A") for p in problems], max_new_tokens=4)
steps = greedy_cot(model, tok, [qa_prompt(p, "S") for p in problems], max_new_tokens=96)
acc_direct = accuracy([d["answer"] for d in direct])
acc_steps = accuracy([s["answer"] for s in steps])
print(f"{N_TEST} unseen problems, greedy ({time.perf_counter() - t:.1f} s)")
print(f"  direct answer      {acc_direct:6.1%}")
print(f"  steps, then answer {acc_steps:6.1%}")
assert acc_steps > acc_direct
if PROFILE == "cpu":                                # the shipped model's figures
    assert acc_direct < 0.2 and acc_steps >= 0.99

# %% [markdown]
# Guessing would score 10%. The direct answers are close to that (12.5%): lacking a way
# to follow the chain in one pass, the model falls back on a few favourite digits. The
# counts of its direct answers next to the true answers' counts:

# %%
from collections import Counter  # noqa: E402

said, truth = Counter(d["answer"] for d in direct), Counter(gold)
print("digit          " + "".join(f"{d:>5s}" for d in "0123456789"))
print("direct answers " + "".join(f"{said.get(d, 0):5d}" for d in "0123456789"))
print("true answers   " + "".join(f"{truth.get(d, 0):5d}" for d in "0123456789"))
top3 = sum(n for _, n in said.most_common(3)) / len(direct)
print(f"its three favourite digits: {', '.join(str(d) for d, _ in said.most_common(3))}, "
      f"{top3:.0%} of its direct answers")
if PROFILE == "cpu":                                # the shipped model's figure
    assert top3 > 0.8

# %% [markdown]
# ## 3. Two ways to reason, and a vote
#
# The `mod10-paths` model continues `mod10`'s training on steps written in two styles
# with nothing to say which: one operation per step, or two. It saw two-op solutions
# twice as often as one-op ones (the first line below counts its training forms), and
# they are harder (each step composes two operations in one go), so after its short
# training it *prefers* the style it is worse at.
#
# We decode greedily once, then sample `N_MAX` paths per problem at $T = 1$; the vote over
# the first $N$ samples gives the accuracy-vs-$N$ curve.

# %%
from minillama.tasks import mod10_records  # noqa: E402

forms = Counter(r["form"] for r in mod10_records("mod10-paths", 3000))
print(f"mod10-paths training forms: {forms['two']} two-op, {forms['one']} one-op per 3000")
assert forms["two"] == 2 * forms["one"]
paths, _, paths_card = live.reference("mod10-paths", PROFILE, DEVICE)
prompts = [qa_prompt(p, "S") for p in problems]
t = time.perf_counter()
greedy = greedy_cot(paths, tok, prompts, max_new_tokens=96)
samples = sample(paths, tok, prompts, n=N_MAX, temperature=1.0, max_new_tokens=96, seed=0)
print(f"greedy + {N_MAX} samples x {N_TEST} problems: {time.perf_counter() - t:.1f} s")
answers = [[extract_answer(s) for s in row] for row in samples]
acc_greedy = accuracy([g["answer"] for g in greedy])


def style(text: str) -> str:
    """'one' or 'two' ops per step, from the number of steps written; 'other' if neither."""
    n_steps = text.split("####")[0].count("=")
    return {8: "one", 4: "two"}.get(n_steps, "other")


greedy_styles = [style(g["text"]) for g in greedy]
print(f"greedy writes two-op steps for {greedy_styles.count('two') / N_TEST:.0%} of the "
      f"problems, one-op steps for {greedy_styles.count('one') / N_TEST:.0%}")
by_style = {}
for name in ("one", "two", "other"):
    flat = [(a == g) for row, srow, g in zip(answers, samples, gold)
            for a, s in zip(row, srow) if style(s) == name]
    if flat:
        by_style[name] = (len(flat) / (N_TEST * N_MAX), sum(flat) / len(flat))
        print(f"  samples in style {name:5s}: {by_style[name][0]:5.1%} of all, "
              f"{by_style[name][1]:6.1%} right")
assert by_style["one"][1] > by_style["two"][1]
if PROFILE == "cpu":                                # the shipped model's figures
    assert greedy_styles.count("two") / N_TEST > 0.9
    assert by_style["one"][1] > by_style["two"][1] + 0.3 and by_style["one"][0] > 0.2

# %%
NS = [n for n in (1, 5, 10, 20, 40) if n <= N_MAX]
votes = {n: [majority_vote(row[:n]) for row in answers] for n in NS}
acc_vote = {n: accuracy([a for a, _ in votes[n]]) for n in NS}
acc_sample = sum(a == g for row, g in zip(answers, gold) for a in row) / (N_TEST * N_MAX)
print(f"{'':28s}accuracy")
print(f"{'greedy':28s}{acc_greedy:8.1%}")
print(f"{'one sample at T=1':28s}{acc_sample:8.1%}")
for n in NS:
    print(f"{f'majority vote, N={n}':28s}{acc_vote[n]:8.1%}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(NS, [acc_vote[n] for n in NS], "o-", label="majority vote of N samples (T=1)")
ax.axhline(acc_greedy, color="gray", ls="--", label="greedy")
ax.axhline(acc_sample, color="gray", ls=":", label="one sample (T=1)")
ax.set_xscale("log")
ax.set_xticks(NS, [str(n) for n in NS])
ax.set_xlabel("samples N")
ax.set_ylabel("accuracy")
ax.set_title("mod10-paths: self-consistency")
ax.legend()
plt.tight_layout()
plt.show()
assert acc_vote[5] > max(acc_sample, acc_greedy)
if PROFILE == "cpu":                                # the shipped model's figure
    assert acc_sample > acc_greedy

# %% [markdown]
# Greedy decoding follows the model's favourite, two-op style every time and inherits its
# error rate (36.5%). Samples at $T=1$ take the one-op style 41% of the time (the style
# counts above), so even a single sample beats greedy on average (57.4%), and the vote of
# five already beats both (76.0%): the wrong paths scatter over nine wrong digits while
# the right ones agree, so the right answer can win with fewer than half of the votes
# (section 4 counts how often).
#
# ## 4. The vote share as a confidence score
#
# How often is the vote right when it is unanimous, and when it is split? With
# $N = 10$, the share takes the values 0.1, ..., 1.0:

# %%
N_CONF = 10 if N_MAX >= 10 else N_MAX
shares = [s for _, s in votes[N_CONF]]
right = [int(a == g) for (a, _), g in zip(votes[N_CONF], gold)]
area = auroc(shares, right) if 0 < sum(right) < len(right) else float("nan")  # nan: all alike
print(f"N={N_CONF}: AUROC of the vote share for 'the vote is right' = {area:.3f}")
bins = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)]
for lo, hi in bins:
    inside = [r for s, r in zip(shares, right) if lo <= s < hi]
    if inside:
        print(f"  share in [{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'}: "
              f"{len(inside):4d} problems, {sum(inside) / len(inside):6.1%} right, "
              f"{len(inside) - sum(inside):3d} wrong")
agreed = [r for s, r in zip(shares, right) if s >= 0.7]
split_wrong = sum(1 - r for s, r in zip(shares, right) if s < 0.5)
print(f"share >= 0.7: {len(agreed)} problems, {sum(agreed) / max(1, len(agreed)):.1%} right; "
      f"share < 0.5 holds {split_wrong} of the {len(right) - sum(right)} wrong votes")
assert area > 0.5                                   # a higher share is more often right
if PROFILE == "cpu":                                # the shipped model's figures
    assert sum(agreed) / len(agreed) >= 0.95 and split_wrong > (len(right) - sum(right)) / 2
    assert any(r and s < 0.5 for s, r in zip(shares, right))   # right with under half the votes
    assert area > 0.7

order = sorted(range(N_TEST), key=lambda i: -shares[i])
coverage = [(k + 1) / N_TEST for k in range(N_TEST)]
kept_acc = [sum(right[i] for i in order[:k + 1]) / (k + 1) for k in range(N_TEST)]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(coverage, kept_acc)
ax.set_xlabel("share of problems answered (most confident first)")
ax.set_ylabel("accuracy on those")
ax.set_title(f"answering only when the vote agrees (AUROC {area:.2f})")
plt.tight_layout()
plt.show()


# %% [markdown]
# When at least 7 of the 10 samples agree, the vote was right on every one of those
# problems here, and the votes with fewer than half the samples behind them hold most of
# its errors (the last line above); yet many of those split votes are right too, which
# is why the AUROC is 0.82, not 1. A system that answers only when its samples agree,
# and abstains (or asks for more samples) otherwise, trades coverage for accuracy along
# the curve above, at no cost beyond the samples it has already drawn.

# %% [markdown]
# ## 5. One way to reason: voting adds nothing
#
# Self-consistency needs wrong paths that disagree with each other and *different* right
# paths that agree. What if the model has one way to reason? We can hold `mod10-paths` to
# its two-op style: start its answer with the first step's two operations, copied from the
# question (`Q: 5 +7 *3 ...=` → `S: 5 +7 *3=`). The prefix computes nothing, but no chain
# in training ever switches style, so the model goes on with two operations per step.
# Same model, same problems, one style:

# %%
def two_op_prompt(p: dict) -> str:
    (op1, d1), (op2, d2) = p["ops"][:2]
    return qa_prompt(p, "S") + f"{p['start']} {op1}{d1} {op2}{d2}="


t = time.perf_counter()
held = [two_op_prompt(p) for p in problems]
held_greedy_answers = [g["answer"] for g in greedy_cot(paths, tok, held, max_new_tokens=96)]
held_greedy = accuracy(held_greedy_answers)
held_samples = sample(paths, tok, held, n=10, temperature=1.0, max_new_tokens=96, seed=0)
held_answers = [[extract_answer(s) for s in row] for row in held_samples]
held_vote = accuracy([majority_vote(row)[0] for row in held_answers])
held_sample = sum(a == g for row, g in zip(held_answers, gold) for a in row) / (10 * N_TEST)
print(f"held to two-op steps ({time.perf_counter() - t:.1f} s)")
print(f"{'':24s}{'both styles':>12s}{'two-op only':>12s}")
print(f"{'greedy':24s}{acc_greedy:12.1%}{held_greedy:12.1%}")
print(f"{'one sample at T=1':24s}{acc_sample:12.1%}{held_sample:12.1%}")
print(f"{'majority vote, N=10':24s}{acc_vote[10]:12.1%}{held_vote:12.1%}")
wrong = [i for i, gr in enumerate(held_greedy_answers) if gr != gold[i]]
agree = sum(a == held_greedy_answers[i] for i in wrong for a in held_answers[i])
right_there = sum(a == gold[i] for i in wrong for a in held_answers[i])
n_wrong = max(1, len(wrong))                        # (greedy right everywhere: none)
print(f"where greedy is wrong ({len(wrong)} problems): {agree / (10 * n_wrong):.0%} of the "
      f"samples repeat greedy's wrong answer, {right_there / (10 * n_wrong):.0%} find the "
      f"right one")
vote_still_wrong = sum(majority_vote(held_answers[i])[0] != gold[i] for i in wrong) / n_wrong
print(f"  and the vote of the 10 is wrong again on {vote_still_wrong:.0%} of them")
print(f"the vote's gain over greedy: {acc_vote[10] - acc_greedy:+.1%} with both styles, "
      f"{held_vote - held_greedy:+.1%} with one")
print(f"(mod10, whose one style is fully learned, scored {acc_steps:.1%} greedily in section 2: "
      f"nothing is left for a vote to add)")
assert held_vote - held_greedy < acc_vote[10] - acc_greedy    # one style: the vote gains less
if PROFILE == "cpu":                                # the shipped model's figures
    assert held_vote <= held_greedy + 0.02 and held_sample < held_greedy
    assert agree > right_there and vote_still_wrong > 0.5
    assert acc_vote[10] - acc_greedy > 0.3

# %% [markdown]
# Held to one style, the vote is no better than greedy decoding (35.5% against 36.5%). A
# sample is right less often than greedy (30.4%: sampling at $T=1$ adds slips to a style
# the model has not mastered), and its mistakes are partly *systematic*: where greedy is
# wrong, more of the samples repeat greedy's wrong answer (26%) than find the right one
# (19%), so the majority usually lands on a wrong answer again (the line after them
# says how often). In section 3 the vote gained because the other
# style's paths were mostly right and agreed with each other.
#
# The lesson, as the paper states it: self-consistency marginalises over *reasoning
# paths*. Where a model has only one path, there is nothing to marginalise, and the extra
# samples cost tokens for nothing. Where it has several (as language models do for real
# word problems), the vote recovers the answer that most paths reach.

# %% [markdown]
# ## 6. The format decides: digit order
#
# Chain of thought changes *what the model writes before the answer*. The order in which
# it writes the answer itself matters as much. Lee et al. (arXiv 2307.03381) trained small
# transformers on addition and found that writing the sum least significant digit first
# learns far faster than the usual order: we compute sums from the right, carrying as we
# go, so the usual order asks first for the digit that needs *every* carry.
#
# Our models use RoPE, which sees only the distance between two tokens. Reversing the
# answer alone would leave each answer digit at a different distance from the operand
# digits it needs, so we reverse the operands too (`74190+47504=` becomes
# `09147+40574=`, answer `496121`): every answer digit then sits at the same distance
# from its two operand digits, and the carry it needs can be read off the column just
# written. Two shipped models, `add5` (usual order) and `add5-lsb` (least significant
# first), have the same size, data, schedule and seed; only the digit order differs. Both
# answer at once, greedily, on the same unseen additions:

# %%
from minillama.plots import read_metrics  # noqa: E402
from minillama.tasks import addition_heldout, addition_scores  # noqa: E402

t = time.perf_counter()
orders = {"add5": "usual order", "add5-lsb": "least significant first"}
scores, curves = {}, {}
for name in orders:
    m, tok_add, card_add = live.reference(name, PROFILE, DEVICE)
    sums = addition_heldout(get_recipe(name), N_TEST)
    scores[name] = addition_scores(m, tok_add, sums)
    curves[name] = read_metrics(live.directory(name, PROFILE) / "metrics.jsonl")
print(f"{card_add['parameters']:,} parameters each, {card_add['steps']} steps of "
      f"{live.recipe(name, PROFILE).train.batch_size} additions; evaluated in {time.perf_counter() - t:.1f} s")
print(f"e.g. {sums[0]['question']} {sums[0]['answer']}   ({sums[0]['a']} + {sums[0]['b']})")
places = sorted(k for k in scores["add5"] if k.startswith("digit_accuracy"))
print(f"{'':34s}{'exact':>6s}   right digits by place value")
print(f"{'':34s}{'':6s}   " + " ".join(f"{'1e' + k[-1]:>5s}" for k in places))
for name, label in orders.items():
    sc = scores[name]
    print(f"{name + ' (' + label + ')':34s}{sc['accuracy_greedy']:6.1%}   "
          + " ".join(f"{sc[k]:5.2f}" for k in places))

late = {name: sum(r["loss"] for r in c[-len(c) // 10:]) / len(c[-len(c) // 10:])
        for name, c in curves.items()}
print("training loss, mean over the last tenth of training: "
      + ", ".join(f"{name} {loss:.2f}" for name, loss in late.items()))
usual, lsb = scores["add5"], scores["add5-lsb"]
assert lsb["accuracy_greedy"] > usual["accuracy_greedy"] and late["add5"] > late["add5-lsb"]
if PROFILE == "cpu":                                # the shipped models' figures
    assert lsb["accuracy_greedy"] > 0.5 > 0.1 > usual["accuracy_greedy"]
    assert round(min(lsb[k] for k in places), 2) >= 0.86
    assert all(usual[f"digit_accuracy_1e{i}"] > 0.9 for i in (0, 2, 4, 5))
    assert all(usual[f"digit_accuracy_1e{i}"] < 0.25 for i in (1, 3))
    assert late["add5"] > 3 * late["add5-lsb"]

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, label in orders.items():
    ax.plot([r["step"] for r in curves[name]], [r["loss"] for r in curves[name]], label=label)
ax.set_xlabel("training step")
ax.set_ylabel("loss on the answer (nats/token)")
ax.set_title("5-digit addition: same model, two digit orders")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Same model, same additions, same number of steps. Written least significant digit
# first, 74.0% of the sums come out exactly right and every place is right at least 86%
# of the time; in the usual order only 3.0% do. The usual-order model is not uniformly
# bad: it gets the units, the hundreds and the two leading places right almost always,
# but its tens (0.13) and thousands (0.19) are close to guessing one digit in ten (0.1),
# and one wrong digit is enough to miss the sum. Its training loss levels off well above
# the other's (0.68 against 0.09 over the last tenth of training).
#
# It is the scratchpad lesson again, in another form: a model of fixed depth does a
# bounded amount of work per token it writes, so a good format puts each token's work
# within reach of what is already written. Lee et al. saw the effect with absolute
# position embeddings by reversing the answer alone; we reversed the operands too, for
# the RoPE reason above, and did not test the answer-only reversal here.

# %% [markdown]
# ## 7. Full profile: two more questions
#
# *Is the direct answer just short of training?* `mod10` saw one direct example for every
# three with steps. On CUDA we train a model of the same size on direct answers only, for
# as many steps as `mod10` took in all. *Does the vote's gain last as the model gets
# better?* We continue `mod10` on the two styles for longer and longer, measuring greedy
# decoding and the vote of 10 each time. The CPU profile skips both.

# %%
if PROFILE != "cpu":
    from minillama import Llama
    from minillama.finetune import finetune
    from minillama.tasks import mod10_records

    base = live.recipe("mod10", PROFILE)             # the full twin's size and schedule
    direct_only = [r for r in mod10_records("mod10", 4 * base.data_size["n_train"])
                   if r["form"] == "direct"]
    torch.manual_seed(0)
    m = Llama(base.model).to(DEVICE)
    finetune(m, tok, direct_only, base.train.steps, base.train.lr,
             batch_size=base.train.batch_size, warmup=base.train.warmup,
             weight_decay=base.train.weight_decay, device=DEVICE, template=qa_prompt)
    d = greedy_cot(m, tok, [qa_prompt(p, "A") for p in problems], max_new_tokens=4)
    print(f"direct answers only, {base.train.steps} steps: {accuracy([x['answer'] for x in d]):.1%}")

    recipe = live.recipe("mod10-paths", PROFILE)
    records = mod10_records("mod10-paths", recipe.data_size["n_train"])
    curve = {}
    for train_steps in ROW.curve:
        m, _, _ = live.reference("mod10", PROFILE, DEVICE)
        m.float()
        finetune(m, tok, records, train_steps, recipe.train.lr,
                 batch_size=recipe.train.batch_size, warmup=recipe.train.warmup,
                 weight_decay=recipe.train.weight_decay, device=DEVICE, template=qa_prompt)
        g = accuracy([x["answer"] for x in greedy_cot(m, tok, prompts, max_new_tokens=96)])
        s = sample(m, tok, prompts, n=10, temperature=1.0, max_new_tokens=96, seed=0)
        v = accuracy([majority_vote([extract_answer(x) for x in row])[0] for row in s])
        curve[train_steps] = (g, v)
        print(f"{train_steps:5d} steps on two styles: greedy {g:6.1%}  vote of 10 {v:6.1%}")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(curve), [g for g, _ in curve.values()], "o-", label="greedy")
    ax.plot(list(curve), [v for _, v in curve.values()], "o-", label="vote of 10 (T=1)")
    ax.set_xscale("log")
    ax.set_xlabel("training steps on the two styles")
    ax.set_ylabel("accuracy")
    ax.legend()
    plt.tight_layout()
    plt.show()
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch17_reasoning.py`: read the answer after the last `####` and take the
# majority vote, ties to the answer sampled first, unreadable samples counted in $N$.

# %%
IMPL = "solutions"
result = course.grade("ch17", impl=IMPL)
