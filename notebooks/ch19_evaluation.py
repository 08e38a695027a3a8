# %% [markdown]
# # Chapter 19 — Evaluating like the survey
#
# The survey compares LLaMA variants by a handful of benchmark numbers. Each number is a
# metric applied to a model's outputs, and each metric has conventions that change the
# number: how the final answer is read, how the options are scored, how ties count. This
# chapter computes the survey's metrics on our synthetic stand-ins, with the shipped
# reference models, and shows where each convention matters.
#
# | metric | real benchmark | our stand-in |
# |---|---|---|
# | exact match of the final answer | GSM8K | 3-digit additions, step by step |
# | multiple choice by option log-likelihood | MMLU | instruction tasks with wrong options |
# | AUROC | calibration, hallucination detection | log p of the model's own answer |
# | CIDEr-D | COCO captions | the toy shapes' captions |
#
# * **GSM8K** (Cobbe et al., arXiv 2110.14168): 8.5K grade-school word problems. A
#   worked solution ends with `#### <number>`, and only that number is compared.
# * **MMLU** (Hendrycks et al., arXiv 2009.03300): four-option questions from 57
#   subjects. Likelihood-based harnesses pick the option the model finds most probable.
# * **AUROC** (the rank form: Hanley & McNeil, 1982): does a confidence score rank the
#   right answers above the wrong ones?
# * **CIDEr** (Vedantam et al., arXiv 1411.5726), in its CIDEr-D form: tf-idf weighted
#   n-gram agreement of a caption with the human captions of its image.
#
# Our models are shipped references: the `arithmetic` reference answers additions,
# the `mixed` reference scores the options, and a captioner written by hand describes
# the toy shapes.
#
# The formulas, written out in `minillama/metrics.py`:
#
# $$\text{EM} = \frac{1}{N}\sum_i \big[\,\text{norm}(\text{ans}(\hat y_i)) =
#   \text{norm}(\text{ans}(y_i))\,\big], \qquad
#   \hat k = \arg\max_k \frac{\log p(o_k \mid q)}{|o_k|^{\lambda}},\ \lambda\in\{0,1\},$$
#
# $$\text{AUROC} = \frac{1}{PN}\sum_{i\in\text{pos}}\sum_{j\in\text{neg}}
#   \Big([s_i > s_j] + \tfrac12[s_i = s_j]\Big) = \frac{R_\text{pos} - P(P+1)/2}{PN},$$
#
# $$\text{CIDEr-D}_n(c, S) = \frac{10}{m}\sum_{j=1}^{m}
#   e^{-\frac{(l(c)-l(s_j))^2}{2\sigma^2}}
#   \frac{\min(g^n(c), g^n(s_j))\cdot g^n(s_j)}{\lVert g^n(c)\rVert\,\lVert g^n(s_j)\rVert},
#   \qquad \text{CIDEr-D} = \tfrac14\sum_{n=1}^4 \text{CIDEr-D}_n,\ \sigma = 6,$$
#
# where $g^n$ is a caption's vector of n-gram counts times their idf
# $\log(|I| / \text{df})$ over the images $I$ of the evaluated set.
#
# | piece | file |
# |---|---|
# | `exact_match`, `normalize_answer` | `metrics.py` |
# | `option_logprobs`, `predict_option`, `multiple_choice_accuracy` | `metrics.py` |
# | `auroc`, `cider_d` | `metrics.py` |
# | `extract_answer` (the `####` convention) | `data/arithmetic.py` |
# | the references; `heldout_problems`, `task_prompt` | `reference.py`, `tasks/` |
# | summed response log-probabilities `sequence_logprobs` | `finetune.py` |
# | `preference_pairs` (right and plausibly wrong answers) | `data/preferences.py` |
# | `toy_images` and their captions | `data/vision.py` |
#
# (all under `minillama/`)
#
# **Profiles.** Nothing is trained; the profiles only change how many problems,
# questions and images are scored. `cpu` runs in under a minute; `full` (the default on
# CUDA) scores several times more of each (for the additions, nearly all of the
# recipe's held-out validation problems).

# %%
import math
import random
import time

import matplotlib.pyplot as plt
import torch

from minillama import course, profiles
from minillama.data import caption_accuracy, preference_pairs, toy_images
from minillama.data.vision import COLOURS, POSITIONS, SHAPES, SIZES, WHERE
from minillama.finetune import sequence_logprobs
from minillama.metrics import (
    auroc,
    cider_d,
    exact_match,
    multiple_choice_accuracy,
    normalize_answer,
    option_logprobs,
    predict_option,
)
from minillama.recipes import get_recipe
from minillama.reference import load_reference
from minillama.tasks import heldout_problems, task_prompt

PROFILE, DEVICE = course.setup()
ROW = profiles.settings("ch19", PROFILE)            # this chapter's row of minillama/profiles.py
N_PROBLEMS, N_QUESTIONS, N_IMAGES = ROW.n_problems, ROW.n_questions, ROW.n_images
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}: {N_PROBLEMS} additions, {N_QUESTIONS} "
      f"multiple-choice questions, {N_IMAGES} images")

# %% [markdown]
# ## 1. Exact match, the GSM8K way
#
# A GSM8K reference solution is a worked argument whose last line is `#### 72`. A
# prediction counts as right when the number after its last `####` equals the
# reference's, whatever the steps before it say. `normalize_answer` reads that number
# and writes it in one canonical form, so formatting differences do not count as errors;
# without `####` the text after the last `A:` (or the whole text) is taken.

# %%
for text in ["... so she has 72 apples left. #### 72", "#### 1,234", "#### $1234.00",
             "Q: 12+34=\nA: 46", "The answer is 5", "#### 3\nand then some babble"]:
    print(f"{text!r:44s} -> {normalize_answer(text)!r}")
print("exact_match:", exact_match(["#### 1,234", "The answer is 5", "#### 46"],
                                  ["1234", "5", "#### 47"]))
assert normalize_answer("#### 1,234") == normalize_answer("#### $1234.00") == "1234"
assert normalize_answer("Q: 12+34=\nA: 46") == "46"                    # the text after 'A:'
assert normalize_answer("The answer is 5") == "The answer is 5"          # else the whole text
assert normalize_answer("#### 3\nand then some babble") == "3"          # only the number counts

# %% [markdown]
# The shipped `arithmetic` reference (recipe in `minillama/recipes.py`) was trained on 3-digit
# additions in two formats: `A:` followed by the sum, and `S:` followed by column-by-column
# steps that end in `#### <sum>`, the GSM8K convention. Problems are taken from the
# recipe's validation range and never occur in its training data. All prompts have the
# same length, so one batched greedy `generate` call answers them all.

# %%
arith, atok, acard = load_reference("arithmetic", device=DEVICE)
problems = heldout_problems(get_recipe("arithmetic"), N_PROBLEMS)
gold = [p["answer"] for p in problems]


def answer_all(marker: str, max_new_tokens: int) -> list[str]:
    """Greedy continuations of "Q: <question>\\n<marker>: ", up to the end of the line."""
    encoded = [atok.encode(f"Q: {p['question']}\n{marker}: ", bos=True) for p in problems]
    assert len({len(e) for e in encoded}) == 1          # all prompts have the same length
    prompts = torch.tensor(encoded, device=DEVICE)
    out = arith.generate(prompts, max_new_tokens, stop_tokens=[atok.eos_id, atok.encode("\n")[0]])
    return [f"{marker}: " + atok.decode(row, skip_special=True).split("\n")[0]
            for row in out.tolist()]


steps, direct = answer_all("S", 48), answer_all("A", 8)
for p, s, d in list(zip(problems, steps, direct))[:3]:
    print(f"{p['question']:9s} {s}\n{'':9s} {d}")
em_steps, em_direct = exact_match(steps, gold), exact_match(direct, gold)
print(f"\nexact match, step by step: {em_steps:.1%}   direct: {em_direct:.1%}   "
      f"(the reference's card: {acard['accuracy_steps']:.1%} and "
      f"{acard['accuracy_direct']:.1%})")

# %% [markdown]
# Evaluation settings are part of the number. A generation budget too small for the
# steps cuts the solution off. Before the `####` line, the reader falls back to the
# whole text, which is not the sum; inside the final number, it finds `####` and reads
# a wrong number. The arithmetic tokenizer has one token per byte, so a budget of $k$
# tokens keeps $k$ characters:

# %%
by_budget = {}
for budget in (24, 36, 40, 42, 44, 48):
    cut = [s[:len("S: ") + budget] for s in steps]   # one byte per token in this tokenizer
    by_budget[budget] = (exact_match(cut, gold), sum("####" in c for c in cut) / len(cut))
    print(f"budget {budget:2d} tokens: exact match {by_budget[budget][0]:6.1%}, "
          f"'####' reached in {by_budget[budget][1]:6.1%}")
cut_before = [b for b, (em, reached) in by_budget.items() if reached == 0]
cut_inside = [b for b, (em, reached) in by_budget.items() if reached == 1 and em < em_steps]
assert cut_before and all(by_budget[b][0] == 0 for b in cut_before)   # no '####': whole text
assert cut_inside                        # '####' reached, the number cut: a wrong number read
assert by_budget[48][0] == em_steps      # the full budget scores what the model wrote

# %% [markdown]
# ## 2. Multiple choice by option log-likelihood, the MMLU way
#
# MMLU asks four-option questions. Likelihood-based harnesses do not let the model
# write an answer: they score each option $o_k$ as a continuation of the question and
# pick the most probable one. With the plain sum $\log p(o_k\mid q)$ every extra token
# adds a negative term, so long options are penalised for their length; dividing by the
# number of tokens (or of bytes, lm-evaluation-harness's `acc_norm`) removes that bias
# and adds others.
#
# Our questions: records of six task families, each asked in the `mixed` base's
# pretraining form (`task_prompt`: instruction, input, `Answer:`). The options are the
# right answer, a plausible wrong one the family writes (`preference_pairs`' rejected
# answer: off by one, wrong order, the wrong fact, answering instead of refusing, ...),
# and up to two right answers to *other* records of the same family, shuffled.

# %%
model, tok, card = load_reference("mixed", device=DEVICE)
MC_FAMILIES = ["refusal", "lookup_colour", "count_words", "reverse_word", "max_list",
               "uppercase"]
rng = random.Random(0)
pairs = preference_pairs(N_QUESTIONS, seed=3, families=MC_FAMILIES)
answers_of = {}
for p in pairs:
    answers_of.setdefault(p["family"], []).append(p["chosen"])
questions = []
for p in pairs:
    others = [o for o in dict.fromkeys(answers_of[p["family"]])
              if o and o not in (p["chosen"], p["rejected"])]
    options = [p["chosen"]] + [p["rejected"]] * bool(p["rejected"]) + \
        rng.sample(others, min(2, len(others)))
    rng.shuffle(options)
    prompt = task_prompt({"instruction": p["instruction"], "input": p["input"], "output": ""})
    scored = option_logprobs(model, tok, prompt, options)
    questions.append({"family": p["family"], "prompt": prompt, "options": options,
                      "answer": options.index(p["chosen"]),
                      "logp": [s for s, _ in scored], "tokens": [n for _, n in scored],
                      "chars": [len(o) for o in options]})

lp = [q["logp"] for q in questions]
right = [q["answer"] for q in questions]
chance = sum(1 / len(q["options"]) for q in questions) / len(questions)
n_options = sum(len(q["options"]) for q in questions) / len(questions)
print(f"{len(questions)} questions, {n_options:.2f} options on average (chance {chance:.1%})")
print(f"{'family':14s} {'n':>3s} {'sum':>7s} {'per token':>10s} {'per char':>9s}")
for fam in MC_FAMILIES + [None]:
    qs = [q for q in questions if fam is None or q["family"] == fam]
    accs = [multiple_choice_accuracy([q["logp"] for q in qs], [q["answer"] for q in qs], lengths)
            for lengths in (None, [q["tokens"] for q in qs], [q["chars"] for q in qs])]
    print(f"{fam or 'all':14s} {len(qs):3d} " + f"{accs[0]:7.0%} {accs[1]:10.0%} {accs[2]:9.0%}")

# %% [markdown]
# Where does length normalisation change the answer, and is the change for the better?

# %%
plain_pick = [predict_option(q["logp"]) for q in questions]
norm_pick = [predict_option(q["logp"], q["tokens"]) for q in questions]
changed = [i for i, (a, b) in enumerate(zip(plain_pick, norm_pick)) if a != b]
fixed = sum(norm_pick[i] == right[i] for i in changed)
broken = sum(plain_pick[i] == right[i] for i in changed)
print(f"normalisation by tokens changes {len(changed)} of {len(questions)} answers: "
      f"wrong -> right {fixed}, right -> wrong {broken}, wrong -> another wrong "
      f"{len(changed) - fixed - broken}")
questions_tokens = [q["tokens"] for q in questions]
longer_right_wins = [i for i in changed if norm_pick[i] == right[i] != plain_pick[i]
                     and questions_tokens[i][right[i]] > questions_tokens[i][plain_pick[i]]]
longer_wrong_wins = [i for i in changed if norm_pick[i] != right[i]
                     and questions_tokens[i][norm_pick[i]] > questions_tokens[i][plain_pick[i]]]
print(f"a longer right option wins once normalised: {len(longer_right_wins)} questions; "
      f"a longer wrong option wins: {len(longer_wrong_wins)}")
assert longer_right_wins and longer_wrong_wins     # both effects of the next paragraph occur
for i in changed[:4]:
    q = questions[i]
    print(f"\n{q['family']}: {q['prompt'].splitlines()[0]!r}")
    for k, option in enumerate(q["options"]):
        tags = ("right " if k == q["answer"] else "      ") + \
            ("sum " if k == plain_pick[i] else "    ") + ("norm" if k == norm_pick[i] else "")
        print(f"   {option[:36]!r:40s} log p {q['logp'][k]:7.2f}  tokens {q['tokens'][k]:2d}  "
              f"per token {q['logp'][k] / q['tokens'][k]:6.2f}  {tags}")

# %% [markdown]
# A longer right answer loses under the plain sum to a short wrong one even when the
# model finds each of its tokens likely; dividing by the length can flip that. It is not
# free: it can also promote a long wrong option whose later tokens are easy to predict
# once its first token is chosen. Which normalisation a leaderboard used is part of its
# numbers.
#
# ## 3. AUROC: does the confidence rank right above wrong?
#
# A confidence score is useful when right answers tend to get higher scores than wrong
# ones. AUROC is the probability that a random right answer outscores a random wrong
# one, a tie counting one half; 0.5 is no better than chance, 1 a perfect ranking. It
# does not care about the scale of the score, only its order, which is why it suits
# log-probabilities. Here the score is the log-probability the `arithmetic` model gives
# its own direct answer, summed over its tokens (`sequence_logprobs`).

# %%
prompts = [atok.encode(f"Q: {p['question']}\nA: ", bos=True) for p in problems]
said = [d[len("A: "):].strip() for d in direct]
with torch.no_grad():
    confidence = sequence_logprobs(arith, prompts, [atok.encode(s) for s in said],
                                   atok.pad_id).tolist()
correct = [int(s == g) for s, g in zip(said, gold)]
pos = [c for c, y in zip(confidence, correct) if y]
neg = [c for c, y in zip(confidence, correct) if not y]
pairwise = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
print(f"{len(pos)} right, {len(neg)} wrong direct answers")
print(f"AUROC by ranks {auroc(confidence, correct):.4f}; over all {len(pos) * len(neg)} "
      f"(right, wrong) pairs {pairwise:.4f}")
print(f"mean confidence (log p): right {sum(pos) / len(pos):.3f}, wrong {sum(neg) / len(neg):.3f}")
as_probability = auroc([math.exp(c) for c in confidence], correct)
print(f"AUROC of p = exp(log p) instead: {as_probability:.4f} (only the order counts)")
assert abs(auroc(confidence, correct) - pairwise) < 1e-12
assert abs(as_probability - auroc(confidence, correct)) < 1e-12

# %% [markdown]
# Ties. A coarse score, such as the probability rounded to one decimal (or a vote share
# out of a few samples, chapter 17), puts many answers on the same value. The rank
# statistic gives tied values their mean rank, which is the same as counting a tied
# pair as one half. Counting ties as losses or as wins instead moves the number:

# %%
coarse = [round(math.exp(c), 1) for c in confidence]
pos_c = [c for c, y in zip(coarse, correct) if y]
neg_c = [c for c, y in zip(coarse, correct) if not y]
n_pairs = len(pos_c) * len(neg_c)
ties = sum(a == b for a in pos_c for b in neg_c)
wins = sum(a > b for a in pos_c for b in neg_c)
print(f"rounded to 0.1: {len(set(coarse))} distinct values, {ties} of {n_pairs} pairs tied")
print(f"AUROC ties = 1/2 (auroc): {auroc(coarse, correct):.4f}   ties = 0: {wins / n_pairs:.4f}"
      f"   ties = 1: {(wins + ties) / n_pairs:.4f}")
assert abs(auroc(coarse, correct) - (wins + ties / 2) / n_pairs) < 1e-12   # mean ranks = 1/2
assert ties > 0 and wins / n_pairs < auroc(coarse, correct) < (wins + ties) / n_pairs


def roc_points(scores, labels):
    """(false positive rate, true positive rate) at every threshold, highest first."""
    p, n = sum(labels), len(labels) - sum(labels)
    points, tp, fp = [(0.0, 0.0)], 0, 0
    for s in sorted(set(scores), reverse=True):
        tp += sum(y for x, y in zip(scores, labels) if x == s)
        fp += sum(1 - y for x, y in zip(scores, labels) if x == s)
        points.append((fp / n, tp / p))
    return points


fig, ax = plt.subplots(figsize=(4.2, 4))
for scores, label in [(confidence, "log p"), (coarse, "p rounded to 0.1")]:
    fpr, tpr = zip(*roc_points(scores, correct))
    ax.plot(fpr, tpr, label=f"{label}: AUROC {auroc(scores, correct):.3f}")
ax.plot([0, 1], [0, 1], ":", color="grey")
ax.set_xlabel("false positive rate (wrong answers accepted)")
ax.set_ylabel("true positive rate (right answers accepted)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# A tied group is a diagonal step of the curve; the area under that diagonal is what
# "ties count one half" computes. The same measure applies to the multiple-choice
# questions: as confidence, the softmax over the options' summed log-probabilities of
# the option picked.

# %%
mc_conf = [torch.softmax(torch.tensor(q["logp"]), 0)[k].item()
           for q, k in zip(questions, plain_pick)]
mc_right = [int(k == q["answer"]) for q, k in zip(questions, plain_pick)]
print(f"multiple choice (plain sum): {sum(mc_right)} right, {len(mc_right) - sum(mc_right)} wrong; "
      f"AUROC of the picked option's probability {auroc(mc_conf, mc_right):.3f}")

# %% [markdown]
# ## 4. CIDEr-D on the toy captions
#
# CIDEr-D compares a caption with the reference captions of its image by n-grams
# ($n = 1..4$), each weighted by tf-idf: an n-gram that occurs in the references of
# every image (here "a" and "the") has idf 0 and counts for nothing, one that picks out few images
# counts a lot. The "-D" parts guard against gaming: the candidate's counts are clipped
# at the reference's ($\min$), and a Gaussian penalty ($\sigma = 6$ words) punishes a
# length different from the reference's.
#
# First the case `tests/test_metrics.py` computes by hand: two images with the
# references "a red circle" and "a blue square". With $|I| = 2$, "a" (in both) has idf
# $\log 2 - \log 2 = 0$; every other n-gram, and any n-gram in no reference (df taken as
# 1), has idf $L = \log 2$. The candidate for image 2 is its reference: its vectors for
# $n = 1, 2, 3$ equal the reference's (cosine 1), it has no 4-grams (a term with a zero
# norm counts 0), and the lengths match, so CIDEr-D $= 10 \cdot (1+1+1+0)/4 = 7.5$. The
# candidate "a red red circle" for image 1, term by term:

# %%
L = math.log(2)
c1, s1 = {"a": 0.0, "red": 2 * L, "circle": L}, {"a": 0.0, "red": L, "circle": L}
n1 = sum(min(c1[w], s1[w]) * s1[w] for w in s1) / (
    math.sqrt(sum(v * v for v in c1.values())) * math.sqrt(sum(v * v for v in s1.values())))
c2, s2 = {"a red": L, "red red": L, "red circle": L}, {"a red": L, "red circle": L}
n2 = sum(min(c2.get(g, 0), s2[g]) * s2[g] for g in s2) / (
    math.sqrt(sum(v * v for v in c2.values())) * math.sqrt(sum(v * v for v in s2.values())))
penalty = math.exp(-(4 - 3) ** 2 / (2 * 6**2))
by_hand = 10 * penalty * (n1 + n2 + 0 + 0) / 4
print(f"n=1: {n1:.4f} (= 2/sqrt(10) = {2 / math.sqrt(10):.4f}: the clipped min ignores the "
      f"second 'red')")
print(f"n=2: {n2:.4f} (= 2/sqrt(6) = {2 / math.sqrt(6):.4f});  n=3: no shared trigram, 0;  "
      f"n=4: no reference 4-gram, 0")
print(f"length penalty exp(-(4-3)^2 / 72) = {penalty:.4f}")
print(f"CIDEr-D by hand: 10 * {penalty:.4f} * ({n1:.4f} + {n2:.4f}) / 4 = {by_hand:.7f}")
mean, per_image = cider_d(["a red red circle", "A blue square."],
                          [["a red circle"], ["a blue square"]])
print(f"cider_d: per image {[round(v, 7) for v in per_image]}, mean {mean:.7f}")
assert abs(n1 - 2 / math.sqrt(10)) < 1e-12 and abs(n2 - 2 / math.sqrt(6)) < 1e-12
assert abs(per_image[0] - by_hand) < 1e-9 and abs(per_image[1] - 7.5) < 1e-9

# %% [markdown]
# Now the toy images (chapter 9's data): one coloured shape per picture, with one
# reference caption written from its attributes. Candidate "systems": the reference
# itself; the reference with one attribute wrong; a short caption that drops size and
# position; a gamed caption that repeats its colour word; one fixed caption for every
# image; and a captioner written by hand from pixel statistics (the colour nearest to the
# shape's mean colour, the position nearest to its centroid, the size from its extent,
# the shape from how much of its bounding box it fills).

# %%
images, records = toy_images(N_IMAGES, seed=5)
refs = [[r["caption"]] for r in records]
crng = random.Random(1)


def swap(attrs, key, choices):
    """The caption with attribute ``key`` replaced by another value."""
    other = crng.choice([c for c in choices if c != attrs[key]])
    return {**attrs, key: other}


def caption_of(a):
    return f"a {a['size']} {a['colour']} {a['shape']} {WHERE[a['position']]}"


def describe(image):
    """A captioner from pixel statistics (no learning)."""
    side = image.shape[-1]
    shape_px = image.max(0).values > 0.3                 # the background is about 0.08
    ys, xs = shape_px.nonzero(as_tuple=True)
    rgb = image[:, shape_px].mean(1)
    colour = min(COLOURS, key=lambda c: float(((torch.tensor(COLOURS[c]) - rgb) ** 2).sum()))
    cx, cy = (xs.float().mean() + 0.5) / side, (ys.float().mean() + 0.5) / side
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2
                   + (POSITIONS[p][1] - cy) ** 2)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    size = "large" if max(width, height) / side > 0.28 else "small"
    fill = len(xs) / float(width * height)
    top = (ys < ys.min() + height / 2).sum() / len(ys)
    shape = ("square" if fill > 0.9 else "circle" if fill > 0.7 else
             "triangle" if top < 0.4 else "cross")
    return caption_of({"size": size, "colour": colour, "shape": shape, "position": position})


attrs = [r["attributes"] for r in records]
systems = {
    "reference itself": [r["caption"] for r in records],
    "colour wrong": [caption_of(swap(a, "colour", list(COLOURS))) for a in attrs],
    "shape wrong": [caption_of(swap(a, "shape", SHAPES)) for a in attrs],
    "position wrong": [caption_of(swap(a, "position", list(POSITIONS))) for a in attrs],
    "size wrong": [caption_of(swap(a, "size", list(SIZES))) for a in attrs],
    "short: a <colour> <shape>": [f"a {a['colour']} {a['shape']}" for a in attrs],
    "gamed: colour x3": [caption_of({**a, "colour": " ".join([a["colour"]] * 3)}) for a in attrs],
    "one fixed caption": ["a small red circle in the center"] * len(records),
    "hand-written captioner": [describe(im) for im in images],
}
print(f"{N_IMAGES} images, e.g. {records[0]['caption']!r}\n")
print(f"{'system':28s} {'CIDEr-D':>8s} {'exact':>7s}   example")
cider, exact = {}, {}
for name, captions in systems.items():
    cider[name], _ = cider_d(captions, refs)
    exact[name] = caption_accuracy(captions, [r[0] for r in refs])
    print(f"{name:28s} {cider[name]:8.3f} {exact[name]:7.1%}   {captions[0]!r}")
partly_right = ["colour wrong", "shape wrong", "position wrong", "size wrong",
                "short: a <colour> <shape>", "gamed: colour x3"]
assert all(0 < cider[k] < cider["reference itself"] and exact[k] == 0 for k in partly_right)
assert cider["colour wrong"] < cider["size wrong"]  # a rare word (idf below) costs more

# %% [markdown]
# Every partly right caption gets partial credit, and how much depends on how rare its
# words are across the set: a wrong word costs its own unigram and every n-gram that
# contains it. The gamed caption gains nothing from its repeats (the clip), breaks the
# n-grams that span its colour word, and pays the length penalty; the short one keeps
# only its colour and shape n-grams and pays for its length too. Exact caption match,
# the other column, gives no partial credit at all.
#
# The idf is computed from the evaluated set's own references, as in the COCO code, so
# the same caption scores differently in a different test set. The idf of a few words
# here:

# %%
df = {}
for r in refs:
    for w in set(r[0].split()):
        df[w] = df.get(w, 0) + 1
for w in ["a", "on", "the", "small", "red", "circle", "center"]:
    idf = math.log(len(refs) / max(1, df.get(w, 0)))
    print(f"{w!r:9s} in {df.get(w, 0):3d} of {len(refs)} images: idf {idf:.2f}")
assert df["a"] == df["the"] == len(refs)                  # in every image: idf 0

# %% [markdown]
# ## 5. Next to the real benchmarks
#
# * **GSM8K.** The same reader of `#### n`, the same canonical numbers. The real test
#   set's solutions are written by people and the models' by sampling, so extraction
#   failures (no `####`, a number in words) are part of a real score; the generation
#   budget matters as section 1 showed.
# * **MMLU.** The original paper lists the options lettered A-D and takes the letter
#   the model finds most probable; harnesses that score the option texts instead
#   report a "plain" and a "normalised" accuracy, and the two differ as in section 2.
#   A reported MMLU number needs its scoring rule next to it.
# * **AUROC.** Any score and any binary label: right vs wrong, hallucinated vs grounded.
#   It says nothing about whether the score is a calibrated probability, only whether it
#   orders the answers well.
# * **CIDEr-D.** COCO has five human references per image, which is where the consensus
#   in the name comes from; with one template-made reference per image, ours rewards
#   exactly the template's words.

# %%
wall = time.perf_counter() - T0
print(f"notebook wall time: {wall:.0f} s")
assert wall < 60                                           # the introduction: under a minute

# %% [markdown]
# ## Check
#
# The metric functions are tested against hand-computed cases in `tests/test_metrics.py`
# (including the CIDEr-D example of section 4); this runs those tests.

# %%
result = course.run_tests("tests/test_metrics.py")

# %% [markdown]
# ## Exercises
#
# `exercises/ch19_evaluation.py`: AUROC by midranks (ties count one half), checked against
# `minillama.metrics.auroc` and the count over all pairs; and an experiment, the AUROC of
# a confidence that is the truth plus Gaussian noise, measured for growing noise (it must
# fall towards 0.5 and lie near $\Phi(1/(\sigma\sqrt 2))$). Grade your work with the cell
# below (set `IMPL = "exercises"`); as shipped it grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch19", impl=IMPL)
