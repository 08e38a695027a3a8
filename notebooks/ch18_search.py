# %% [markdown]
# # Chapter 18 — Searching over thoughts: ToT and GoT
#
# Chapter 17 let a model write one chain of thought, or sample several and vote. Each
# chain is still a single left-to-right pass: a wrong step early on is never taken back.
# **Tree of Thoughts** (Yao et al., arXiv 2305.10601) turns reasoning into search. A
# *thought* is one intermediate step; a *state* is the problem plus the thoughts so far.
# Three pieces make a search:
#
# * a **proposer** that lists the thoughts that may come next from a state,
# * a **value function** that says how promising a state is,
# * a **search algorithm**. Breadth-first search keeps a frontier $S_t$ of at most $b$
#   states and, at each step, expands all of them and keeps the $b$ best children:
#
# $$C_t = \{\, s' : s' \in \mathrm{propose}(s),\ s \in S_t \,\}, \qquad
#   S_{t+1} = \operatorname*{top-}b_{\,s' \in C_t}\; V(s').$$
#
# In the paper a language model plays both proposer and value function; on the Game of
# 24 (use four numbers and $+,-,\times,\div$ to make 24) GPT-4 solved 4% of the problems
# with a chain of thought and 74% with ToT at $b=5$. **Here no language model plays the
# Game of 24.** The proposer is code, not a model: `game24.propose` lists every legal
# move from a state, exhaustively, so it never misses a good move nor invents an illegal
# one. The value functions we swap in are code too: a hand-written rule, a small MLP
# trained on the solver's labels, and the solver itself. With the proposer exact, what
# is left to study is the search and the value function. **The value function is the
# lesson.**
#
# **Graph of Thoughts** (Besta et al., arXiv 2308.09687) lets thoughts also *merge*.
# Its sorting task is merge sort run by a model: *split* a list into parts, *sort* each
# part (k tries, keep the best), *merge* (aggregate) sorted parts, *refine* the result.
# Every thought is scored by the paper's error count of an output $b$ for an input $a$:
#
# $$\mathrm{errors}(a, b) = \sum_{i=1}^{m-1} [\,b_i > b_{i+1}\,]
#   + \sum_{v} \big|\, \#\{p : b_p = v\} - \#\{p : a_p = v\}\,\big| .$$
#
# Descents count once each; every digit too many or too few counts once. Here a model
# does take part: a small LLaMA that learned to sort lists of up to 8 digits sorts the
# parts, and we ask the whole graph to sort 16 to 32. Splitting and merging are code.
#
# | piece | file |
# |---|---|
# | `tot_bfs`, ToT's breadth-first search | `reasoning/search.py` |
# | GoT's `generate`, `score`, `keep_best`, `aggregate`, `improve`, `ancestors` | same file |
# | solvable sets, `solvable`, `propose`, `random_rollout`, checkers | `reasoning/game24.py` |
# | `error_count`, `split`, `merge`, `got_sort` | `reasoning/sorting.py` |
# | the `sort` reference and `model_sort` | `recipes.py`, `tasks/`, `reference/sort/` |
# | AUROC by the rank statistic | `metrics.py` |
#
# (all under `minillama/`)
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains the value
# model briefly and runs fewer rollouts and fewer lists, in at most a few minutes on two
# cores (the last cell prints the wall time); `full` (the default on CUDA) trains a wider
# value model for longer, runs more rollouts, sorts more lists, and sorts them with its
# own model, 13x the size of the shipped `sort` (the recipe's `sort-full` twin, trained
# live by `minillama/live.py`). The figures the prose quotes are the CPU profile's; in
# the full profile section 6 asserts the direction of each claim, not the shipped
# model's figures.

# %%
import random
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minillama import course, live, profiles
from minillama.metrics import auroc
from minillama.reasoning import ancestors, tot_bfs
from minillama.reasoning import game24 as G
from minillama.reasoning import sorting as S
from minillama.tasks import model_sort, sort_lists, sort_prompt

PROFILE, DEVICE = course.setup()
ROW = profiles.settings("ch18", PROFILE)            # this chapter's row of minillama/profiles.py
N_ROLLOUTS, VALUE_STEPS, N_LISTS, BREADTHS = (ROW.n_rollouts, ROW.value_steps, ROW.n_lists,
                                             ROW.breadths)
WIDTH = ROW.value_width                             # the value MLP's hidden width
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE}")

# %% [markdown]
# ## 1. The Game of 24 as a search problem
#
# A state is the multiset of numbers still left; a move replaces two of them, $a$ and
# $b$, by $a+b$, $a-b$, $b-a$, $ab$, $a/b$ or $b/a$. Three moves leave one number, and
# the problem is solved if it is 24. Arithmetic is exact (fractions, not floats), since
# some problems need them: $5\times(5-1/5)=24$.

# %%
t = time.perf_counter()
problems = G.solvable_multisets()
print(f"{len(problems)} of the 1820 multisets of four numbers from 1..13 can make 24 "
      f"(found by the solver in {time.perf_counter() - t:.1f} s)")
example = (4, 9, 10, 13)
first = G.propose(G.start(example))
print(f"{example}: {len(first)} distinct first moves, e.g. {first[0].steps[0]!r} -> "
      f"{G.format_numbers(first[0].numbers)}")
print("one solution:", G.solve(example), "=", 24)
print("a problem that needs a fraction:", G.solve((1, 5, 5, 5)), "=", 24)
assert "/" in G.solve((1, 5, 5, 5))


def count_leaves(state):
    """(leaves, solved leaves) of the whole tree below ``state``, moves as propose lists them."""
    if len(state.numbers) == 1:
        return 1, int(G.is_solved(state))
    pairs = [count_leaves(child) for child in G.propose(state)]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


leaves, good = count_leaves(G.start(example))
print(f"the tree below {example}: {leaves} ways to play three moves, {good} end at 24 "
      f"({good / leaves:.1%})")
assert good > 0 and G.solvable(example)      # the exhaustive proposer reaches the solutions

# %% [markdown]
# The proposer is a few lines of code that enumerate the moves (36 distinct first moves
# for the example above, 3644 three-move games), so every failure below is the search's
# or the value function's, never a missed or illegal move. We hold out a fifth of the
# problems: the learned value model of section 4 trains on states reached from the other
# four fifths, and every method is scored on the held-out problems.

# %%
order = problems[:]
random.Random(0).shuffle(order)
test, train = order[:len(order) // 5], order[len(order) // 5:]
print(f"{len(train)} training problems, {len(test)} held-out problems")
results = {}          # method -> (share solved, states looked at per problem)

# %% [markdown]
# ## 2. No value function: random rollouts, and best-of-N with a checker
#
# A rollout plays random legal moves to the end. Best-of-N plays up to N rollouts and
# stops at the first one the checker (`is_solved`) accepts; the checker sees only
# finished games, so it can say "this one worked" but never "this way looks good". We
# count the states each method looks at: three per rollout.

# %%
t = time.perf_counter()
first_success = []                    # per problem: rollouts until the first 24, or None
for i, numbers in enumerate(test):
    rng = random.Random(i)
    first_success.append(next((k + 1 for k in range(N_ROLLOUTS) if G.is_solved(
        G.random_rollout(G.start(numbers), rng))), None))


def best_of(n):
    solved = sum(f is not None and f <= n for f in first_success) / len(test)
    states = sum(3 * min(f or n, n) for f in first_success) / len(test)
    return solved, states


for n in sorted({1, 10, N_ROLLOUTS}):
    results[f"best-of-{n} rollouts"] = best_of(n)
    print(f"best-of-{n:<3d} solved {best_of(n)[0]:6.1%}, {best_of(n)[1]:5.1f} states per problem")
print(f"({len(test)} problems x up to {N_ROLLOUTS} rollouts in {time.perf_counter() - t:.1f} s)")


# %% [markdown]
# ## 3. BFS with a hand-written value
#
# A first guess at "promising": whole numbers that divide 24 are good (1, 2, 3, 4, 6, 8,
# 12, 24), fractions and big numbers are bad. The value of a state is the share of its
# numbers that divide 24. A finished state (one number left) needs no guess: the checker
# scores it 1 or 0, for this value function and for the learned one alike.

# %%
def finished_or(value):
    """The checker on finished states, ``value`` on the others."""
    return lambda s: float(G.is_solved(s)) if len(s.numbers) == 1 else value(s)


def divides_24(state):
    return sum(type(x) is int and x > 0 and 24 % x == 0 for x in state.numbers) / len(
        state.numbers)


def run_bfs(value, breadth, problems=test):
    """(share solved, mean value calls) of ToT BFS over ``problems``."""
    solved = evaluated = 0
    for numbers in problems:
        out = tot_bfs(G.start(numbers), G.propose, value, breadth, depth=3,
                      is_solution=G.is_solved)
        solved += out["best"] is not None and G.is_solved(out["best"])
        evaluated += out["evaluated"]
    return solved / len(problems), evaluated / len(problems)


crude = finished_or(divides_24)
for b in BREADTHS:
    results[f"BFS b={b}, divides-24 value"] = run_bfs(crude, b)
    print(f"b={b}: solved {results[f'BFS b={b}, divides-24 value'][0]:6.1%}, "
          f"{results[f'BFS b={b}, divides-24 value'][1]:5.1f} value calls per problem")


# %% [markdown]
# ## 4. A learned value: a tiny MLP trained on solver labels
#
# The paper's value function is the language model asked whether the numbers left can
# still reach 24 ("sure / likely / impossible"). Ours learns that judgement from
# examples. We list every state one or two moves into the *training* problems and label
# each by the solver: can it still make 24? Each number is a token with a learned
# embedding (numbers never seen in training share one "unknown" token); a state is its
# numbers in sorted order, padded to three slots; an MLP reads the three embeddings
# side by side and outputs a logit. Few states can still make 24, so the loss weighs
# them up (`pos_weight`).

# %%
def reachable(problems, depth=2):
    """Every distinct multiset one to ``depth`` moves into ``problems``."""
    out, level = set(), {tuple(p) for p in problems}
    for _ in range(depth):
        level = {s.numbers for numbers in level for s in G.propose(G.State(numbers))}
        out |= level
    return sorted(out, key=str)


t = time.perf_counter()
train_states, test_states = reachable(train), reachable(test)
y_train = torch.tensor([float(G.solvable(s)) for s in train_states])
y_test = torch.tensor([float(G.solvable(s)) for s in test_states])
counts = Counter(x for s in train_states for x in s)
vocab = {x: i + 2 for i, x in enumerate(sorted(counts, key=lambda x: (-counts[x], str(x))))}
seen = set(train_states)
unseen = [s not in seen for s in test_states]
print(f"{len(train_states):,} training states ({y_train.mean():.1%} can still make 24), "
      f"{len(test_states):,} held-out states, {sum(unseen):,} of them never seen in training; "
      f"{len(vocab):,} distinct numbers ({time.perf_counter() - t:.1f} s)")


def encode(states):
    """Token ids, (len(states), 3): 0 pads, 1 is an unknown number."""
    ids = torch.zeros(len(states), 3, dtype=torch.long)
    for row, numbers in enumerate(states):
        for col, x in enumerate(numbers):
            ids[row, col] = vocab.get(x, 1)
    return ids


torch.manual_seed(0)
value_net = torch.nn.Sequential(
    torch.nn.Embedding(len(vocab) + 2, 32, padding_idx=0), torch.nn.Flatten(),
    torch.nn.Linear(3 * 32, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH),
    torch.nn.ReLU(), torch.nn.Linear(WIDTH, 1)).to(DEVICE)
opt = torch.optim.AdamW(value_net.parameters(), lr=3e-3, weight_decay=0.0)
x_train, y_dev = encode(train_states).to(DEVICE), y_train.to(DEVICE)
g = torch.Generator().manual_seed(0)
t = time.perf_counter()
for _ in range(VALUE_STEPS):
    idx = torch.randint(0, len(train_states), (512,), generator=g).to(DEVICE)
    loss = F.binary_cross_entropy_with_logits(value_net(x_train[idx]).squeeze(-1), y_dev[idx],
                                              pos_weight=torch.tensor(5.0, device=DEVICE))
    opt.zero_grad()
    loss.backward()
    opt.step()
value_net.eval()
with torch.no_grad():
    test_logits = value_net(encode(test_states).to(DEVICE)).squeeze(-1).cpu().tolist()
print(f"{sum(p.numel() for p in value_net.parameters()):,} parameters, {VALUE_STEPS} steps "
      f"of 512 states in {time.perf_counter() - t:.1f} s, last loss {loss.item():.3f}")

# %% [markdown]
# Before searching with it, how well does each value function *rank* held-out states?
# AUROC is the chance that a random state that can still make 24 scores above a random
# one that cannot (0.5: no better than a coin).

# %%
table = dict(zip(test_states, test_logits))
labels = y_test.tolist()
crude_scores = [divides_24(G.State(s)) for s in test_states]
for name, scores in [("divides-24", crude_scores), ("learned", test_logits)]:
    new = [(sc, y) for sc, y, u in zip(scores, labels, unseen) if u]
    print(f"{name:10s} AUROC on held-out states {auroc(scores, labels):.3f}, on the ones "
          f"never seen in training {auroc([a for a, _ in new], [b for _, b in new]):.3f}")
never = [(sc, y) for sc, y, u in zip(test_logits, labels, unseen) if u]
area = {"crude": auroc(crude_scores, labels), "learned": auroc(test_logits, labels),
        "learned, never seen": auroc([a for a, _ in never], [b for _, b in never])}
print(f"{1 - sum(unseen) / len(unseen):.0%} of the held-out states were met in training")
assert area["learned"] > area["crude"] + 0.2
assert area["crude"] < area["learned, never seen"] < area["learned"]


def learned(state):
    if state.numbers not in table:                      # not met above: score it now
        with torch.no_grad():
            table[state.numbers] = value_net(encode([state.numbers]).to(DEVICE)).item()
    return table[state.numbers]


learned_value = finished_or(learned)
oracle = finished_or(lambda s: float(G.solvable(s.numbers)))      # the solver itself
t = time.perf_counter()
for name, value in [("learned value", learned_value), ("solver as value", oracle)]:
    for b in BREADTHS:
        results[f"BFS b={b}, {name}"] = run_bfs(value, b)
print(f"BFS runs in {time.perf_counter() - t:.1f} s")

# %% [markdown]
# ## 5. The results, side by side
#
# Every method on the same held-out problems. "States" is what a method looked at per
# problem: states visited by rollouts, or value calls for BFS. The solver as value
# function is the ceiling: with it, one path ($b=1$) is enough.

# %%
print(f"{'method':34s} {'solved':>8s} {'states':>8s}")
for name, (solved, states) in results.items():
    print(f"{name:34s} {solved:8.1%} {states:8.1f}")

solved = {name: r[0] for name, r in results.items()}
calls = {name: r[1] for name, r in results.items()}
b_max = max(BREADTHS)
assert solved[f"best-of-{N_ROLLOUTS} rollouts"] < 0.25
assert solved["BFS b=1, divides-24 value"] > solved[f"best-of-{N_ROLLOUTS} rollouts"]
assert calls["BFS b=1, divides-24 value"] < calls[f"best-of-{N_ROLLOUTS} rollouts"]
assert solved[f"BFS b={b_max}, divides-24 value"] > solved["BFS b=1, divides-24 value"]
assert solved["BFS b=1, learned value"] > solved[f"BFS b={b_max}, divides-24 value"]
assert solved[f"BFS b={b_max}, learned value"] >= 0.95
assert solved["BFS b=1, solver as value"] == 1.0

fig, ax = plt.subplots(figsize=(7, 3.8))
ns = list(range(1, N_ROLLOUTS + 1))
ax.plot([best_of(n)[1] for n in ns], [best_of(n)[0] for n in ns], label="best-of-N rollouts")
for label, key in [("BFS, divides-24", "divides-24 value"), ("BFS, learned", "learned value"),
                   ("BFS, solver", "solver as value")]:
    points = [results[f"BFS b={b}, {key}"] for b in BREADTHS]
    ax.plot([p[1] for p in points], [p[0] for p in points], "o-", label=label)
ax.set_xscale("log")
ax.set_xlabel("states looked at per problem")
ax.set_ylabel("held-out problems solved")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the table from the top. Random play almost never makes 24 (0% with one rollout),
# and best-of-N only climbs slowly (13.6% after 30): the checker recognises a win but
# cannot steer towards one. BFS with the hand-written value looks at fewer states than
# best-of-30 and solves more (23.2% at $b=1$), because it throws away unpromising
# branches early; but "divides 24" is a weak guess, and widening the beam is its only
# remedy (56.2% at $b=5$). The learned value reads the same states, ranks them far
# better (AUROC 0.971 against 0.668), and BFS with it comes close to the solver's
# ceiling (87.9% at $b=1$, 98.9% at $b=5$). The search algorithm is the same in every BFS
# row, and so is the proposer (code); only $V$ changes.
#
# In the paper the language model's own judgement ("sure / likely / impossible") was
# the value function, pruning the frontier the same way. The learned value is good
# here partly because the game is small: 76% of the held-out states were met during
# training. On the ones never seen its AUROC falls to 0.802, still above the
# hand-written rule's 0.678: that is the honest generalisation figure.
#
# One held-out problem that the divides-24 value misses at $b=5$, searched with the
# learned value at $b=5$: the frontier after each move, best first, with the value
# model's logits (after the last move, the checker's 1 or 0).

# %%
pick = next((n for n in test if run_bfs(crude, 5, [n])[0] == 0
             and run_bfs(learned_value, 5, [n])[0] == 1), test[0])
out = tot_bfs(G.start(pick), G.propose, learned_value, 5, depth=3, is_solution=G.is_solved)
print("problem:", G.format_numbers(pick))
for depth, (states, values) in enumerate(out["levels"], start=1):
    print(f"after move {depth}: " + "  ".join(
        f"[{G.format_numbers(s.numbers)}] {v:+.1f}" for s, v in zip(states, values)))
print("solution:", "; ".join(out["best"].steps), f"({out['evaluated']} value calls)")

# %% [markdown]
# ## 6. Graph of thoughts: sorting longer lists than the model saw
#
# The `sort` reference is a small LLaMA trained (recipe in `minillama/recipes.py`)
# on `Q: sort [3, 1, 4]\nA: [1, 3, 4]` with lists of 1 to 8 digits. Its card records how
# well it does on lists it never saw.

# %%
model, tok, card = live.reference("sort", PROFILE, DEVICE)      # shipped (cpu) or trained live
print(f"sort reference: {card['parameters']:,} parameters ({model.cfg.n_layers} blocks of "
      f"dim {model.cfg.dim}), {card['steps']} steps, {card['wall_time_s']:.0f} s on "
      f"{card['hardware']}")
print(f"card: exact match {card['accuracy_sort']:.1%} on unseen lists of 1-8 digits, "
      f"{card['accuracy_sort_len8']:.1%} on 8 digits")
print(repr(sort_prompt([5, 0, 7, 5])), "->", model_sort(model, tok, [[5, 0, 7, 5]])[0][0])


# %% [markdown]
# **Direct sorting** asks for the whole list at once. **GoT** runs `got_sort`: split the
# list into parts of at most 8 digits, let the model sort each part (keep the best of k
# tries by the error count against the part), merge the sorted parts pairwise
# (aggregation), then optionally refine. The model never learned to merge two lists, so
# the merge here is exact code, like the split; in the paper the language model merges
# too, with k tries. The model's only job is to sort parts. The error count needs no
# answer key: it compares the output with the input.
#
# `got_sort` calls `sort_fn` one part at a time. To keep that fast we let the model
# write all the answers for all the parts in one batched call first, and `sort_fn` hands
# them out.

# %%
def batched_sorter(lists, part_size, k=1, temperature=0.0, seed=0):
    """A ``sort_fn`` for got_sort, with every part's k answers written in one batch.

    Returns the function and a counter of the answers it has handed out (model calls)."""
    parts = [p for xs in lists for p in S.split(xs, max(1, len(xs) // part_size))]
    answers = model_sort(model, tok, parts, n=k, temperature=temperature, seed=seed)
    queue, used = {}, Counter()
    for part, outs in zip(parts, answers):
        queue.setdefault(tuple(part), []).extend(outs)

    def sort_fn(part):
        used["answers"] += 1
        return queue[tuple(part)].pop(0)
    return sort_fn, used


def run_got(lists, part_size, k=1, temperature=0.0, refine_size=None):
    """(mean error count, model answers used per list) of got_sort over ``lists``."""
    sort_fn, used = batched_sorter(lists, part_size, k, temperature)
    refine_fn, fine_used = None, Counter()
    if refine_size is not None:          # refine: redo with smaller parts; kept if better
        fine_fn, fine_used = batched_sorter(lists, refine_size)
        refine_fn = lambda original, current: S.got_sort(
            original, fine_fn, S.merge, parts=max(1, len(original) // refine_size)).state[1]
    errors = [S.got_sort(xs, sort_fn, S.merge, parts=max(1, len(xs) // part_size), k=k,
                         refine_fn=refine_fn).score for xs in lists]
    return sum(errors) / len(lists), (used["answers"] + fine_used["answers"]) / len(lists)


t = time.perf_counter()
LENGTHS = (4, 8, 16, 24, 32)
METHODS = {"direct": None, "GoT parts of 8": (8, 1, 0.0, None),
           "GoT parts of 8, k=5 at T=1": (8, 5, 1.0, None),
           "GoT parts of 8 + refine (4)": (8, 1, 0.0, 4)}
table_sort = {}                         # (method, length) -> (mean errors, answers per list)
exact_direct, written = {}, {}
for length in LENGTHS:
    lists = sort_lists(N_LISTS, length, length, seed=100 + length)
    direct = [a[0] for a in model_sort(model, tok, lists)]
    errors = [S.error_count(xs, out) for xs, out in zip(lists, direct)]
    table_sort["direct", length] = (sum(errors) / len(lists), 1.0)
    exact_direct[length] = sum(e == 0 for e in errors) / len(lists)
    written[length] = sum(map(len, direct)) / len(lists)
    for name, spec in METHODS.items():
        if spec is not None:
            part, k, temperature, refine = spec
            table_sort[name, length] = run_got(lists, part, k, temperature, refine)
print(f"mean GoT error count over {N_LISTS} lists per length "
      f"(model answers used per list in brackets)")
print(f"{'method':28s}" + "".join(f"{f'{n} digits':>14s}" for n in LENGTHS))
for name in METHODS:
    print(f"{name:28s}" + "".join(
        f" {table_sort[name, n][0]:6.2f} ({table_sort[name, n][1]:4.1f})" for n in LENGTHS))
print(f"{'direct, exactly right':28s}" + "".join(f"{exact_direct[n]:14.0%}" for n in LENGTHS))
print(f"{'direct, digits written':28s}" + "".join(f"{written[n]:14.1f}" for n in LENGTHS))
print(f"({time.perf_counter() - t:.1f} s)")
err = {key: v[0] for key, v in table_sort.items()}
used = {key: v[1] for key, v in table_sort.items()}
long = [n for n in LENGTHS if n > 8]
assert [err["direct", n] for n in (8, *long)] == sorted(err["direct", n] for n in (8, *long))
assert all(err["GoT parts of 8", n] < err["direct", n] for n in long)
if PROFILE == "cpu":                                # the shipped model's figures
    assert all(written[n] < 8.5 for n in long) and exact_direct[4] == 1.0
    assert all(err["GoT parts of 8", n] <= 2 < err["direct", n] for n in long)
    assert all(err["GoT parts of 8, k=5 at T=1", n] < err["GoT parts of 8", n] for n in long)
    assert all(err["GoT parts of 8 + refine (4)", n] == 0 for n in LENGTHS)
    assert used["GoT parts of 8 + refine (4)", 4] == 1.0   # nothing to refine: no extra calls

fig, ax = plt.subplots(figsize=(7, 3.5))
for name in METHODS:
    ax.plot(LENGTHS, [table_sort[name, n][0] for n in LENGTHS], "o-", label=name)
ax.axvline(8, color="grey", ls=":", lw=1)
ax.set_xlabel("list length (trained on 1-8)")
ax.set_ylabel("mean error count")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Up to 8 digits direct sorting is what the model learned (all lists of 4 right, 80% of
# those of 8); beyond that its error count grows with the length, from 8.4 at 16 digits
# to 24.5 at 32. The "digits written" row says how: it has never written a longer list,
# and it stops after about 8 digits and leaves the rest out. GoT never asks it for more
# than 8 digits, so the error count stays at or below 1.6 at every length, at the price
# of more model calls (one per part per try).
# The k tries cost k times as many answers and keep the best part by the error count,
# which needs no answer key; they lower the error at every length above 8. The refine
# step here redoes a list with parts of 4 digits; `got_sort` runs it only on lists that
# still have errors and keeps it only if it lowers them, so it costs nothing where the
# first pass was right (4 digits: one answer per list) and here leaves no error at any
# length. The GoT paper made the same trade with GPT-3.5 on 32 to 128 digits: more
# calls, far fewer errors than sorting directly.
#
# The whole graph of one GoT run is in the result's ancestry: every thought records
# the thoughts it came from.

# %%
xs = sort_lists(1, 32, 32, seed=7)[0]
sort_fn, _ = batched_sorter([xs], 8)
result = S.got_sort(xs, sort_fn, S.merge, parts=4)
graph = [result] + ancestors(result)
root = next(t for t in graph if not t.parents)
kinds = Counter("root" if not t.parents else "merges" if len(t.parents) == 2
                else "parts" if t.parents[0] is root else "sorted parts" for t in graph)
print("input: ", S.format_list(xs))
print("output:", S.format_list(result.state[1]), f"(errors {result.score:.0f})")
print(f"{len(graph)} thoughts:", ", ".join(
    f"{kinds[kind]} {kind}" for kind in ("root", "parts", "sorted parts", "merges")))
assert [kinds[k] for k in ("root", "parts", "sorted parts", "merges")] == [1, 4, 4, 3]
print(f"notebook wall time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch18_search.py`: one breadth-first step of ToT (expand the frontier, score
# every candidate once, keep the best $b$ with ties going to the earlier candidate),
# checked against every level of the library's `tot_bfs` on Game-of-24 problems and on
# a toy tree.

# %%
IMPL = "solutions"
result = course.grade("ch18", impl=IMPL)
