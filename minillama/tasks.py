"""The supervised tasks of chapters 16-18: written as training records, held out, scored.

Each task has a data kind (a ``Recipe.data`` value, see ``recipes.py``) and three pieces:
how a problem becomes a training record for ``finetune.finetune`` (prompt
``Q: ...\\n<marker>: ``, the loss on the answer only), which problems are held out (another
seed, minus anything seen in training), and how a model is scored on them.

* mod-10 chains (``data/arithmetic.mod10_chain``): ``MOD10_FORMS`` says which answer forms a
  kind trains on (direct, one op per step, two ops per step) and after which marker; chapters
  16 (DPO) and 17 (chain of thought, self-consistency).
* 5-digit additions in the usual digit order or least significant digit first
  (``ADDITION_FORMS``); chapter 17, after Lee et al., arXiv 2307.03381.
* sorting short digit lists, the ``sort_fn`` of graph-of-thoughts sorting
  (``reasoning/sorting.py``); chapter 18.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from .data import addition_problems, mod10_chain
from .tokenizer import ByteTokenizer

if TYPE_CHECKING:
    from .recipes import Recipe


def qa_prompt(rec: dict, marker: str | None = None) -> str:
    """"Q: <question>\\n<marker>: ", what the model continues (marker: the record's own).

    The one prompt template of every task here, in training and in scoring."""
    return f"Q: {rec['question']}\n{marker or rec['marker']}: "


# ----------------------------------------------------------------------------- mod 10

# data kind -> the (marker, answer form) of the training examples, taken in turn
MOD10_FORMS = {"mod10": (("A", "direct"), ("S", "one"), ("S", "one"), ("S", "one")),
               "mod10-paths": (("S", "one"), ("S", "two"), ("S", "two")),
               "mod10-mix": (("A", "direct"), ("A", "one"))}


def mod10_problems(n: int, k: int = 8, seed: int = 0) -> list[dict]:
    """``mod10_chain`` records with both step styles: "cot" (one op) and "cot_two"."""
    two = mod10_chain(n, k=k, seed=seed, cot_style="two")
    return [{**r, "cot_two": t["cot"]} for r, t in zip(mod10_chain(n, k=k, seed=seed), two)]


def mod10_records(kind: str, n: int, k: int = 8, seed: int = 0) -> list[dict]:
    """``n`` problems, problem i written in form i mod len(forms) of ``kind``: each record
    gets its "marker" and its "output" (the direct answer or the steps) for ``finetune``."""
    forms = MOD10_FORMS[kind]
    answer = {"direct": "answer", "one": "cot", "two": "cot_two"}
    return [{**r, "marker": forms[i % len(forms)][0], "form": forms[i % len(forms)][1],
             "output": r[answer[forms[i % len(forms)][1]]], "family": forms[i % len(forms)][1]}
            for i, r in enumerate(mod10_problems(n, k, seed))]


def mod10_data(kind: str, n_train: int = 40000, n_val: int = 500, k: int = 8, seed: int = 0):
    """(tokenizer, train records, val records): supervised examples, not a token stream."""
    return (ByteTokenizer(), mod10_records(kind, n_train, k, seed),
            mod10_records(kind, n_val, k, seed + 1))


@lru_cache(maxsize=4)
def _mod10_questions(n: int, k: int, seed: int) -> frozenset:
    return frozenset(r["question"] for r in mod10_chain(n, k=k, seed=seed))


def mod10_heldout(recipe: Recipe, n: int, seed_offset: int = 2) -> list[dict]:
    """``n`` problems of another seed than training and validation, none seen in training."""
    size = recipe.data_size
    k, seed = size.get("k", 8), size.get("seed", 0)
    seen = _mod10_questions(size["n_train"], k, seed)
    fresh = mod10_problems(2 * n, k, seed + seed_offset)
    return [r for r in fresh if r["question"] not in seen][:n]


def mod10_scores(model, tok, recipe: Recipe, problems: list[dict], n: int = 10,
                 temperature: float = 1.0, seed: int = 0) -> dict:
    """Greedy accuracy per marker; for ``A:`` / ``S:`` prompts with sampled answers, the
    one-sample accuracy, the majority-vote accuracy over ``n`` samples and the share of
    samples that wrote steps (sampled at ``temperature``, seeded)."""
    from .reasoning import greedy_cot, self_consistency
    out = {}
    for marker in sorted({m for m, _ in MOD10_FORMS[recipe.data]}):
        prompts = [qa_prompt(r, marker) for r in problems]
        gold = [r["answer"] for r in problems]
        greedy = greedy_cot(model, tok, prompts, max_new_tokens=96)
        out[f"accuracy_greedy_{marker}"] = sum(
            g["answer"] == a for g, a in zip(greedy, gold)) / len(gold)
        if recipe.data == "mod10":
            continue
        voted = self_consistency(model, tok, prompts, n=n, temperature=temperature,
                                 max_new_tokens=96, seed=seed)
        samples = [(s, x, a) for v, a in zip(voted, gold) for s, x in zip(v["samples"],
                                                                         v["answers"])]
        out[f"accuracy_sample_{marker}"] = sum(x == a for _, x, a in samples) / len(samples)
        out[f"accuracy_vote{n}_{marker}"] = sum(
            v["answer"] == a for v, a in zip(voted, gold)) / len(gold)
        out[f"steps_share_{marker}"] = sum("####" in s for s, _, _ in samples) / len(samples)
    return {k: round(v, 4) for k, v in out.items()}


# ------------------------------------------------------------ addition in two digit orders
ADDITION_FORMS = {"add5": False, "add5-lsb": True}      # data kind -> little_endian


def addition_records(kind: str, n: int, digits: int = 5, seed: int = 0) -> list[dict]:
    """``n`` additions in ``kind``'s digit order, as ``finetune`` records (marker "A")."""
    return [{**r, "marker": "A", "output": r["answer"], "family": kind}
            for r in addition_problems(n, digits, seed, little_endian=ADDITION_FORMS[kind])]


def addition_data(kind: str, n_train: int = 40000, n_val: int = 500, digits: int = 5,
                  seed: int = 0):
    """(tokenizer, train records, val records), as ``mod10_data``."""
    return (ByteTokenizer(), addition_records(kind, n_train, digits, seed),
            addition_records(kind, n_val, digits, seed + 1))


@lru_cache(maxsize=4)
def _addition_questions(kind: str, n: int, digits: int, seed: int) -> frozenset:
    return frozenset(r["question"] for r in addition_records(kind, n, digits, seed))


def addition_heldout(recipe: Recipe, n: int, seed_offset: int = 2) -> list[dict]:
    """``n`` additions of another seed than training and validation, none seen in training."""
    size = recipe.data_size
    digits, seed = size.get("digits", 5), size.get("seed", 0)
    seen = _addition_questions(recipe.data, size["n_train"], digits, seed)
    fresh = addition_records(recipe.data, 2 * n, digits, seed + seed_offset)
    return [r for r in fresh if r["question"] not in seen][:n]


def addition_scores(model, tok, problems: list[dict]) -> dict:
    """Greedy exact match, and the share of right digits per place value (units first)."""
    from .reasoning import sample
    texts = sample(model, tok, [qa_prompt(r, "A") for r in problems], n=1,
                   temperature=0.0, max_new_tokens=8)
    right, places = 0, {}
    for r, (text,) in zip(problems, texts):
        said = text.strip().split("\n")[0]
        right += said == r["answer"]
        gold, got = str(r["a"] + r["b"])[::-1], (said if r["reverse"] else said[::-1])
        for place, digit in enumerate(gold):
            hits, total = places.get(place, (0, 0))
            places[place] = (hits + (place < len(got) and got[place] == digit), total + 1)
    out = {"accuracy_greedy": right / len(problems)}
    out.update({f"digit_accuracy_1e{p}": h / t for p, (h, t) in sorted(places.items())})
    return {k: round(v, 4) for k, v in out.items()}


# data kinds trained by finetune (loss on the answer), not as a token stream
SUPERVISED = (*MOD10_FORMS, *ADDITION_FORMS)


# ----------------------------------------------------------------------------- sort
# Lists are written the way the GoT paper writes them.

def sort_lists(n: int, lo: int = 1, hi: int = 8, seed: int = 0) -> list[list[int]]:
    """``n`` lists of random digits 0..9, each of a length drawn uniformly from lo..hi."""
    rng = random.Random(seed)
    return [[rng.randint(0, 9) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def sort_prompt(xs) -> str:
    """"Q: sort [3, 1, 4]\\nA: ": what the model continues."""
    from .reasoning.sorting import format_list
    return f"Q: sort {format_list(xs)}\nA: "


def sort_text(xs) -> str:
    """One training example: the prompt, then the sorted list."""
    from .reasoning.sorting import format_list
    return sort_prompt(xs) + format_list(sorted(xs))


def sort_data(n_train: int = 60000, n_val: int = 500, max_len: int = 8, seed: int = 0):
    """(tokenizer, train tokens, val tokens): <bos> example <eos>, lists of 1..max_len."""
    tok = ByteTokenizer()
    enc = lambda lists: torch.tensor([i for xs in lists for i in tok.encode(
        sort_text(xs), bos=True, eos=True)])
    return (tok, enc(sort_lists(n_train, 1, max_len, seed)),
            enc(sort_lists(n_val, 1, max_len, seed + 1)))


def model_sort(model, tok, lists, n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[list[int]]]:
    """``n`` answers of the model per list, each read back into ints with ``parse_list``
    (greedy at ``temperature=0``; sampled and seeded otherwise)."""
    from .reasoning import sample
    from .reasoning.sorting import parse_list
    if not lists:
        return []
    room = 3 * max(len(xs) for xs in lists) + 4       # "[a, b]" is 3 bytes per digit
    texts = sample(model, tok, [sort_prompt(xs) for xs in lists], n=n,
                   temperature=temperature, max_new_tokens=room, seed=seed)
    return [[parse_list(t) for t in row] for row in texts]


def sort_heldout(recipe: Recipe, n: int, lo: int = 1, hi: int | None = None,
                 seed_offset: int = 2) -> list[list[int]]:
    """``n`` lists of another seed than training that never occur in the training data."""
    size = recipe.data_size
    hi = size.get("max_len", 8) if hi is None else hi
    seen = {tuple(xs) for xs in sort_lists(size["n_train"], 1, size.get("max_len", 8),
                                           size.get("seed", 0))}
    fresh = [xs for xs in sort_lists(4 * n, lo, hi, size.get("seed", 0) + seed_offset)
             if tuple(xs) not in seen]
    if len(fresh) < n:
        raise ValueError(f"only {len(fresh)} unseen lists of length {lo}..{hi}; asked for {n}")
    return fresh[:n]


def sort_scores(model, tok, recipe: Recipe, n: int = 200) -> dict:
    """Exact-match accuracy on unseen lists of the trained lengths (and of the longest
    one), and the mean GoT error count of direct greedy sorting of 16 and 32 digits."""
    from .reasoning.sorting import error_count
    max_len = recipe.data_size.get("max_len", 8)
    out = {}
    for key, lo in (("accuracy_sort", 1), (f"accuracy_sort_len{max_len}", max_len)):
        lists = sort_heldout(recipe, n, lo, max_len)
        answers = model_sort(model, tok, lists)
        out[key] = sum(a[0] == sorted(xs) for xs, a in zip(lists, answers)) / len(lists)
    for length in (16, 32):
        lists = sort_lists(n, length, length, recipe.data_size.get("seed", 0) + 3)
        answers = model_sort(model, tok, lists)
        out[f"errors_direct_len{length}"] = sum(
            error_count(xs, a[0]) for xs, a in zip(lists, answers)) / len(lists)
    return {k: round(v, 4) for k, v in out.items()}
