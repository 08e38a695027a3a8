# %% [markdown]
# # Chapter 16 — Preference tuning with DPO
#
# After instruction tuning, the survey's pipeline tunes the model on *preferences*: for a
# prompt $x$, a response $y_w$ that people preferred and one $y_l$ they did not. RLHF
# (InstructGPT, Ouyang et al., arXiv 2203.02155) fits a reward model $r(x, y)$ to such
# pairs and then maximises it with PPO, held near a frozen reference $\pi_\text{ref}$:
#
# $$\max_\pi\; \mathbb{E}_{y\sim\pi}\,[r(x, y)] - \beta\,\mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_\text{ref}(\cdot|x)\big).$$
#
# Direct Preference Optimization (Rafailov et al., arXiv 2305.18290) notices that this
# objective's optimum is $\pi^\star(y|x) \propto \pi_\text{ref}(y|x)\,e^{r(x,y)/\beta}$, so every
# policy comes with an *implicit reward* $\hat r(x, y) = \beta \log \frac{\pi(y|x)}{\pi_\text{ref}(y|x)}$.
# Put into the Bradley–Terry model $p(y_w \succ y_l) = \sigma(r_w - r_l)$, the likelihood of
# the preferences becomes a loss on the policy alone, no reward model and no sampling:
#
# $$\mathcal{L}_\text{DPO} = -\log\sigma\Big(\beta\big[\underbrace{\log\pi(y_w|x) - \log\pi_\text{ref}(y_w|x)}_{\hat r_w/\beta}
#   - \underbrace{(\log\pi(y_l|x) - \log\pi_\text{ref}(y_l|x))}_{\hat r_l/\beta}\big]\Big),$$
#
# with $\log\pi(y|x)$ the *sum* of the response tokens' log-probabilities. Its gradient is
# $-\beta\,\sigma(-\beta m)\,(\nabla\log\pi(y_w|x) - \nabla\log\pi(y_l|x))$, $m$ the bracket: push
# $y_w$ up and $y_l$ down, weighted by how wrong the model still is. Only the *difference*
# matters, so both log-probabilities may fall together; adding the chosen response's
# negative log-likelihood (as RPO does, Pang et al., arXiv 2404.19733) keeps $y_w$ likely:
#
# $$\mathcal{L} = \mathcal{L}_\text{DPO} + \lambda\,\Big(-\tfrac{1}{|y_w|}\log\pi(y_w|x)\Big).$$
#
# | piece | file |
# |---|---|
# | `dpo_loss`, `reference_logprobs`, `dpo_train`; `sequence_logprobs` | `minillama/dpo.py`; `minillama/finetune.py` |
# | `sample`, `extract_answer` | `minillama/reasoning/sampling.py`, `minillama/data/arithmetic.py` |
# | the mod-10 chains as training records (`mod10_problems`, `qa_prompt`, `mod10_heldout`) | `minillama/tasks/` |
# | the `mod10-mix` recipe (the SFT model we start from) | `minillama/recipes.py` |
# | the trained models, with their cards | `minillama/reference/mod10*/` |
#
# **The experiment.** Chapter 17's chains of eight operations mod 10 can be answered
# directly (a model this small gets that mostly wrong) or by writing one step per
# operation (it gets that right). The `mod10-mix` model was fine-tuned on both forms after
# the same marker `A:`, so it picks one at random. We prefer the steps: pairs with
# chosen = the steps, rejected = the direct answer, *both correct*, so the preference is
# about the form, not about the answer. Does DPO move the model to the better form, and
# does accuracy follow?
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) runs a few dozen DPO
# steps from the shipped models, in under two minutes on two cores (the last cell
# prints the wall time); `full` (the default on CUDA) trains its own models, 12x the
# size (the recipes' `-full` twins, trained live by `minillama/live.py` and kept under
# `build/full/`), uses more pairs and longer runs, and sweeps $\beta$. The figures the
# prose quotes are the CPU profile's; in the full profile the cells assert the
# direction of each claim, not the shipped models' figures.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import course, live, profiles
from minillama.dpo import dpo_loss, dpo_train, reference_logprobs
from minillama.reasoning import extract_answer, sample
from minillama.recipes import get_recipe
from minillama.tasks import mod10_heldout, mod10_problems, qa_prompt

PROFILE, DEVICE = course.setup()
ROW = profiles.settings("ch16", PROFILE)            # this chapter's row of minillama/profiles.py
N_PAIRS, N_TEST, N_SAMPLES, STEPS, BATCH = (ROW.n_pairs, ROW.n_test, ROW.n_samples, ROW.steps,
                                          ROW.batch)
BETA, LR = 0.1, ROW.lr
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The loss, on numbers
#
# At the start of training the policy *is* the reference, every implicit reward is 0 and
# the loss is $\log 2$ for every pair. As the margin $\beta m$ grows the loss falls, and so
# does the weight $\sigma(-\beta m)$ on the pair's gradient: pairs the model already ranks
# right stop mattering.

# %%
pi_w, pi_l = torch.tensor([-12.0, -30.0]), torch.tensor([-3.0, -8.0])
loss, stats = dpo_loss(pi_w, pi_l, pi_w.clone(), pi_l.clone(), beta=BETA)
print(f"policy = reference: loss {loss.item():.4f} (log 2 = {torch.log(torch.tensor(2.0)):.4f}), "
      f"margins {stats['margin'].tolist()}, preference accuracy {stats['accuracy'].item():.0%}")
assert abs(loss.item() - torch.log(torch.tensor(2.0)).item()) < 1e-6
loss, stats = dpo_loss(pi_w + 5, pi_l - 5, pi_w, pi_l, beta=BETA)
print(f"y_w up 5 nats, y_l down 5: rewards {stats['chosen_reward'].tolist()} / "
      f"{stats['rejected_reward'].tolist()}, loss {loss.item():.4f}")
# beta * margin = 0.1 * 10 = 1: loss -log sigma(1), below log 2
assert abs(loss.item() + torch.nn.functional.logsigmoid(torch.tensor(1.0)).item()) < 1e-6

margin = torch.linspace(-60, 60, 241)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(margin, -torch.nn.functional.logsigmoid(BETA * margin), label=r"loss $-\log\sigma(\beta m)$")
ax.plot(margin, torch.sigmoid(-BETA * margin), label=r"gradient weight $\sigma(-\beta m)$")
ax.set_xlabel(r"log-ratio margin $m$ (nats), $\beta$ = " + f"{BETA}")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The starting point: a model that answers either way
#
# We sample the `mod10-mix` model at $T = 1$ on unseen problems and sort its answers by
# form: an answer with `####` wrote the steps.

# %%
sft, tok, card = live.reference("mod10-mix", PROFILE, DEVICE)   # shipped (cpu) or trained live
print(f"mod10-mix: {card['parameters']:,} parameters, continued from {card['init_from']} "
      f"for {card['steps']} steps")
recipe = get_recipe("mod10-mix")
problems = mod10_heldout(recipe, N_TEST)


def behaviour(model, seed=0) -> dict:
    """Sampled at T=1: share of answers that write steps, accuracy overall and per form."""
    texts = sample(model, tok, [qa_prompt(p, "A") for p in problems], n=N_SAMPLES,
                   temperature=1.0, max_new_tokens=96, seed=seed)
    rows = [("####" in t, extract_answer(t) == p["answer"])
            for p, row in zip(problems, texts) for t in row]
    steps = [ok for is_steps, ok in rows if is_steps]
    direct = [ok for is_steps, ok in rows if not is_steps]
    return {"steps_share": len(steps) / len(rows), "accuracy": sum(ok for _, ok in rows) / len(rows),
            "acc_steps": sum(steps) / max(1, len(steps)), "acc_direct": sum(direct) / max(1, len(direct))}


def show(name, b):
    print(f"{name:34s} steps share {b['steps_share']:6.1%}   accuracy {b['accuracy']:6.1%}   "
          f"(steps {b['acc_steps']:6.1%}, direct {b['acc_direct']:6.1%})")


before = behaviour(sft)
show("mod10-mix (SFT)", before)
greedy = [row[0] for row in sample(sft, tok, [qa_prompt(p, "A") for p in problems], n=1,
                                   temperature=0.0, max_new_tokens=96)]
greedy_steps = sum("####" in t for t in greedy) / N_TEST
print(f"greedy decoding: writes steps for {greedy_steps:.0%} of "
      f"the problems, accuracy {sum(extract_answer(t) == p['answer'] for t, p in zip(greedy, problems)) / N_TEST:.1%}")
assert 0.2 < before["steps_share"] < 0.9          # it answers either way: the setting of section 3
if PROFILE == "cpu":                                # the shipped model's figures
    assert before["acc_direct"] < 0.2 and greedy_steps == 1.0

# %% [markdown]
# Sampled, the model writes steps for part of the problems (62% of the samples) and
# answers directly for the rest, and its direct answers (8.5% right) are about as good as
# guessing one digit in ten. Greedy
# decoding, on the other hand, always picks the steps: the start digit that opens a chain
# is one sure token, while the direct answer's probability is spread over ten digits. The
# two forms compete only when we sample, so that is where we measure.

# %% [markdown]
# ## 3. DPO: chosen = the steps, rejected = the direct answer
#
# Pairs come from training problems (another seed than the test set). The reference is
# the SFT model itself: `dpo_train` scores every pair under it once, before the first
# step, so no second copy of the model is needed.

# %%
train_problems = mod10_problems(N_PAIRS, seed=recipe.data_size.get("seed", 0) + 5)
pairs = [{"prompt": qa_prompt(r, "A"), "chosen": r["cot"], "rejected": r["answer"]}
         for r in train_problems]
print("one pair:", pairs[0])


def run_dpo(start: str, pairs, nll_weight=0.0, beta=BETA, steps=STEPS):
    model, _, _ = live.reference(start, PROFILE, DEVICE)
    model.float()
    t = time.perf_counter()
    log = dpo_train(model, tok, pairs, steps=steps, lr=LR, beta=beta, batch_size=BATCH,
                    nll_weight=nll_weight, seed=0)
    return model, log, time.perf_counter() - t


dpo_model, log, seconds = run_dpo("mod10-mix", pairs)
print(f"{STEPS} DPO steps of {BATCH} pairs: {seconds:.1f} s")
after = behaviour(dpo_model)
show("mod10-mix (SFT)", before)
show("after DPO", after)


def curves(logs: dict, title: str):
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for name, lg in logs.items():
        steps = [r["step"] for r in lg]
        axes[0].plot(steps, [r["loss"] for r in lg], label=name)
        axes[1].plot(steps, [r["chosen_reward"] for r in lg], label=f"{name}: chosen")
        axes[1].plot(steps, [r["rejected_reward"] for r in lg], ls="--", label=f"{name}: rejected")
        axes[2].plot(steps, [r["margin"] for r in lg], label=name)
        axes[3].plot(steps, [r["accuracy"] for r in lg], label=name)
    axes[0].set_title("loss")
    axes[1].set_title(r"implicit rewards $\beta\,\log\pi/\pi_{ref}$")
    axes[2].set_title("reward margin")
    axes[3].set_title("preference accuracy (margin > 0)")
    for ax in axes:
        ax.set_xlabel("DPO step")
    axes[1].legend(fontsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


curves({"DPO": log}, "chosen = steps, rejected = direct")
for r in log[::8] + log[-1:]:
    print(f"step {r['step']:3d}: reward margin {r['margin']:5.2f}, chosen reward "
          f"{r['chosen_reward']:+.2f}, rejected reward {r['rejected_reward']:+.2f}")
assert log[-1]["rejected_reward"] < log[-1]["chosen_reward"]
assert after["steps_share"] > before["steps_share"] and after["accuracy"] > before["accuracy"]
if PROFILE == "cpu":                                # the shipped model's figures
    assert abs(log[-1]["chosen_reward"]) < 0.5 and log[-1]["rejected_reward"] < -1
    assert after["steps_share"] > 0.95 and abs(after["accuracy"] - after["acc_steps"]) < 0.02
    assert after["acc_steps"] > before["acc_steps"] and after["accuracy"] > before["accuracy"] + 0.2

# %% [markdown]
# The rejected reward falls over training (to -2.73 at the last step) while the chosen
# one stays near zero (+0.08): DPO gets its margin by making the direct answer unlikely,
# which is all it takes here, since the steps were likely already. Almost every sample
# now writes the steps (99.2%), and the accuracy of one sample (93.0%) becomes that of
# the steps (93.7%). The steps themselves also come out right more often than before
# DPO (93.7% against 78.9%): raising $\log\pi(y_w|x)$ a little sharpens the tokens of
# the chain, so there are fewer slips at $T=1$ (section 5 measures how much
# $\log\pi(y_w|x)$ moved).

# %% [markdown]
# ## 4. When DPO hurts: right against wrong, from an undertrained model
#
# A tempting recipe for reasoning: sample the model's own solutions, pair a right one
# (chosen) with a wrong one (rejected), and run DPO. We try it on chapter 17's
# `mod10-paths` model, which writes its steps in two styles and is still unreliable at
# one of them (two operations per step). Same $\beta$, same learning rate, same number of
# steps as above.

# %%
paths, _, _ = live.reference("mod10-paths", PROFILE, DEVICE)
path_problems = mod10_problems(N_PAIRS, seed=recipe.data_size.get("seed", 0) + 6)
path_prompts = [qa_prompt(r, "S") for r in path_problems]
own = sample(paths, tok, path_prompts, n=4, temperature=1.0, max_new_tokens=96, seed=1)


def style(text: str) -> str:
    """Steps with one op each (8 of them) or two (4 of them), from the '=' signs."""
    return {8: "one op/step", 4: "two ops/step"}.get(text.split("####")[0].count("="), "other")


own_pairs, kinds = [], {}
for prompt, r, row in zip(path_prompts, path_problems, own):
    good = [t for t in row if extract_answer(t) == r["answer"]]
    bad = [t for t in row if extract_answer(t) != r["answer"]]
    if good and bad:
        own_pairs.append({"prompt": prompt, "chosen": good[0], "rejected": bad[0]})
        kind = f"{style(good[0])} (right) vs {style(bad[0])} (wrong)"
        kinds[kind] = kinds.get(kind, 0) + 1
if not own_pairs:       # never both right and wrong (a smoke run): the steps vs a wrong last digit
    print("no problem gave a right and a wrong sample: pairing the right steps with a wrong end")
    own_pairs = [{"prompt": pr, "chosen": r["cot"],
                  "rejected": r["cot"][:-1] + str((int(r["answer"]) + 1) % 10)}
                 for pr, r in zip(path_prompts, path_problems)]
print(f"{len(own_pairs)} of {N_PAIRS} problems gave a right and a wrong sample; e.g.")
print("  chosen  ", own_pairs[0]["chosen"])
print("  rejected", own_pairs[0]["rejected"])
for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
    print(f"  {count:4d} pairs: {kind}")


def paths_accuracy(model, seed=0) -> dict:
    """Greedy accuracy, one-sample accuracy at T=1, and the share of samples with no answer."""
    prompts = [qa_prompt(p, "S") for p in problems]
    greedy = sample(model, tok, prompts, n=1, temperature=0.0, max_new_tokens=96)
    texts = sample(model, tok, prompts, n=N_SAMPLES, temperature=1.0, max_new_tokens=96,
                   seed=seed)
    flat = [(t, p["answer"]) for p, row in zip(problems, texts) for t in row]
    return {"greedy": sum(extract_answer(row[0]) == p["answer"]
                          for p, row in zip(problems, greedy)) / len(problems),
            "sample": sum(extract_answer(t) == a for t, a in flat) / len(flat),
            "no_answer": sum("####" not in t for t, _ in flat) / len(flat)}


base_acc = paths_accuracy(paths)
bad_model, bad_log, _ = run_dpo("mod10-paths", own_pairs)
bad_acc = paths_accuracy(bad_model)
nll_model, nll_log, _ = run_dpo("mod10-paths", own_pairs, nll_weight=1.0)
nll_acc = paths_accuracy(nll_model)
for name, acc in [("mod10-paths", base_acc), ("+ DPO on own right/wrong", bad_acc),
                  ("+ DPO + NLL on chosen", nll_acc)]:
    print(f"{name:26s} greedy {acc['greedy']:6.1%}   one sample at T=1 {acc['sample']:6.1%}"
          f"   samples with no answer {acc['no_answer']:6.1%}")
curves({"DPO": bad_log, "DPO + NLL": nll_log}, "own samples: chosen = right, rejected = wrong")
assert bad_acc["sample"] < base_acc["sample"] < nll_acc["sample"]
if PROFILE == "cpu":                                # the shipped model's figures
    assert kinds["one op/step (right) vs two ops/step (wrong)"] > len(own_pairs) / 2
    assert bad_acc["sample"] < base_acc["sample"] - 0.1 and bad_acc["no_answer"] > 0.05
    assert nll_acc["greedy"] > base_acc["greedy"] + 0.1

# %% [markdown]
# Most pairs (128 of 182) again oppose a one-op solution to a two-op one, so the
# preference points at the more reliable style, much as in section 3. Yet plain DPO
# leaves one sampled solution *less* often right than before (32.8% against 57.5%), and
# 12.5% of the samples no longer reach an answer at all. With the NLL term, the same
# pairs help, in greedy decoding (78.0% against 39.0%) and in sampling (70.2%).
#
# ## 5. What the NLL term does
#
# The implicit rewards in the middle panel tell the story. Plain DPO drives the chosen
# reward well below zero: the policy makes its own right solutions *less* likely than the
# reference did, which the loss allows as long as the wrong ones fall further. In section
# 3 the rejected answer was a single digit, and lowering it touched nothing else. Here
# the rejected responses are long chains the model wrote itself, made of the same digits,
# operations and format as the right ones; pushing them down by tens of nats drags the
# right ones down too. The NLL term on $y_w$ pushes back: the right solution has to stay
# likely, so more of the margin must come from what actually differs (the chosen
# solutions still lose some likelihood, but far less). Per pair, in nats (section 3's
# run, for comparison, raised its chosen steps slightly):

# %%
ref = reference_logprobs(paths, tok, own_pairs[:64])
moved = {}
for name, model in [("DPO", bad_model), ("DPO + NLL", nll_model)]:
    change = moved[name] = (reference_logprobs(model, tok, own_pairs[:64]) - ref).mean(0)
    print(f"{name:10s} log pi - log pi_ref, mean over 64 pairs: chosen {change[0]:+7.2f}   "
          f"rejected {change[1]:+7.2f}")
ref = reference_logprobs(sft, tok, pairs[:64])
change = moved["section 3"] = (reference_logprobs(dpo_model, tok, pairs[:64]) - ref).mean(0)
print(f"section 3's run (steps vs direct):             chosen {change[0]:+7.2f}   "
      f"rejected {change[1]:+7.2f}")
assert moved["DPO"][0] < moved["DPO + NLL"][0] and moved["DPO"][0] < 0
assert moved["section 3"][0] > moved["section 3"][1]
if PROFILE == "cpu":                                # the shipped models' figures
    assert moved["DPO"][0] < -10 and moved["DPO"][1] < moved["DPO"][0]
    assert moved["DPO"][0] < 2 * moved["DPO + NLL"][0] < 0
    assert moved["section 3"][0] > 0 > moved["section 3"][1]

# %% [markdown]
# Same loss, same $\beta$, same learning rate: what the pairs look like decides whether DPO
# helps. A preference between *forms* that share little is easy to learn safely; pairs
# of on-policy samples that share most of their content need the anchor that RPO adds.

# %% [markdown]
# ## 6. Full profile: how strongly to hold on to the reference
#
# $\beta$ sets the scale of the implicit reward: a small $\beta$ lets the policy move far
# from the reference for a given margin. The CPU profile skips the sweep.

# %%
if PROFILE != "cpu":
    for beta in (0.03, 0.1, 0.3, 1.0):
        m, lg, _ = run_dpo("mod10-mix", pairs, beta=beta)
        show(f"beta = {beta}", behaviour(m))
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch16_dpo.py`: the DPO loss from the four summed log-probabilities, stable for
# large margins.

# %%
IMPL = "solutions"
result = course.grade("ch16", impl=IMPL)
