"""Tasks: what a recipe trains on, what it is tested on, and how it is scored.

A task is a small object, one class per kind of data, holding its sizes and seed:

* ``task.data()`` -> (tokenizer, train, val): token streams for next-token training, or,
  for a ``supervised`` task, records for ``finetune.finetune`` (prompt
  ``Q: ...\\n<marker>: ``, the loss on the answer only);
* ``task.heldout(n)`` -> ``n`` problems of another seed, minus anything seen in training;
* ``task.val_loss(...)`` and ``task.scores(model, tok, n)`` -> the figures of a card.

A ``Recipe`` (``recipes.py``) holds one as ``recipe.task``; the command line and the
chapters ask it rather than looking at its name. The kinds:

* ``Stories`` — procedural children's stories (``data/stories.py``), byte-level BPE.
* ``Mixed`` — stories and the instruction families written as plain text, one stream.
* ``Arithmetic`` — 3-digit additions in two answer formats, direct and in steps.
* ``Mod10`` — chains of single-digit operations mod 10; ``MOD10_FORMS`` says which answer
  forms a kind trains on and after which marker; chapters 16 (DPO) and 17 (reasoning).
* ``Addition`` — 5-digit additions in the usual digit order or least significant digit
  first (``ADDITION_FORMS``); chapter 17, after Lee et al., arXiv 2307.03381.
* ``Sort`` — short digit lists and their sorted order, the ``sort_fn`` of
  graph-of-thoughts sorting (``reasoning/sorting.py``); chapter 18.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import torch

from .data import addition_problems, extract_answer, instruction_data, mod10_chain, story_splits
from .finetune import greedy_score, sft_loss
from .reasoning import greedy_cot, sample, self_consistency
from .reasoning.sorting import error_count, format_list, parse_list
from .reference import load_reference
from .tokenizer import ByteTokenizer, Tokenizer
from .train import evaluate


def encode_stream(tok, texts) -> torch.Tensor:
    """Texts as one token stream, each ``<bos> text <eos>``: what pretraining samples from."""
    return torch.tensor([i for t in texts for i in tok.encode(t, bos=True, eos=True)])


def qa_prompt(rec: dict, marker: str | None = None) -> str:
    """"Q: <question>\\n<marker>: ", what the model continues (marker: the record's own).

    The one prompt template of the supervised tasks, in training and in scoring."""
    return f"Q: {rec['question']}\n{marker or rec['marker']}: "


class Task:
    """A stream task: trained on next tokens, its loss measured on the val stream."""

    supervised = False

    def val_loss(self, model, tok, val, cfg) -> float:
        """Mean loss on the fixed validation windows of ``cfg`` (a ``TrainConfig``)."""
        return evaluate(model, val, cfg)

    def scores(self, model, tok, n: int) -> dict:
        """Figures on ``n`` held-out problems; plain text has none beyond its loss."""
        return {}


class Supervised(Task):
    """A task trained by ``finetune``: one ``qa_prompt`` record per row, loss on the answer."""

    supervised = True

    @torch.no_grad()
    def val_loss(self, model, tok, val, cfg) -> float:
        return sft_loss(model, tok, val, template=qa_prompt)


# ----------------------------------------------------------------------------- stories

def stories_data(n_train: int = 20000, n_val: int = 500, vocab_size: int = 512, seed: int = 0):
    """(tokenizer, train tokens, val tokens): each story is <bos> text <eos>."""
    train, val = story_splits(n_train, n_val, seed=seed)
    tok = Tokenizer.train(train[:4000], vocab_size)
    return tok, encode_stream(tok, train), encode_stream(tok, val)


@dataclass(frozen=True)
class Stories(Task):
    n_train: int = 20000
    n_val: int = 500
    vocab_size: int = 512
    seed: int = 0

    def data(self):
        return stories_data(self.n_train, self.n_val, self.vocab_size, self.seed)


# ------------------------------------------------------------ stories mixed with task text

# The task families in the ``mixed`` pretraining text: ones a few-million-parameter model
# learns in minutes (look-ups, extremes, letter edits, word counts, refusals).
MIXED_FAMILIES = ["lookup_colour", "lookup_age", "max_list", "min_list", "uppercase",
                  "capitalize", "reverse_word", "count_words", "refusal", "list_to_csv"]


def task_text(record: dict) -> str:
    """A task as plain text, the way pretraining text might show it (not the Alpaca form)."""
    given = f"\n{record['input']}" if record["input"] else ""
    return f"{record['instruction']}{given}\nAnswer:\n{record['output']}"


def task_prompt(record: dict) -> str:
    """``task_text`` up to the answer: the prompt of a task in its pretraining form."""
    return task_text({**record, "output": ""})


def mixed_data(tok, n_stories: int = 20000, n_tasks: int = 60000, n_val: int = 500,
               seed: int = 0, families=None):
    """(train tokens, val tokens): stories and plain task text, shuffled together.

    Validation holds out both kinds: unseen stories and task records of another seed.
    """
    stories, val_stories = story_splits(n_stories, n_val, seed=seed)
    tasks = [task_text(r) for r in instruction_data(n_tasks, seed=seed + 101, families=families)]
    val_tasks = [task_text(r) for r in instruction_data(n_val, seed=seed + 202,
                                                        families=families)]
    docs, val = stories + tasks, val_stories + val_tasks
    random.Random(seed).shuffle(docs)
    random.Random(seed + 1).shuffle(val)
    return encode_stream(tok, docs), encode_stream(tok, val)


@dataclass(frozen=True)
class Mixed(Task):
    """``mixed_data`` in the tokens of the shipped reference ``tokenizer_from``; scored on
    unseen records in the plain form it was trained on and in the Alpaca form it was not."""

    tokenizer_from: str = "stories"
    n_stories: int = 20000
    n_tasks: int = 60000
    n_val: int = 500
    seed: int = 0
    families: list | None = None

    def data(self):
        _, tok, _ = load_reference(self.tokenizer_from)
        return (tok, *mixed_data(tok, self.n_stories, self.n_tasks, self.n_val, self.seed,
                                 self.families))

    def scores(self, model, tok, n: int) -> dict:
        records = instruction_data(n, seed=self.seed + 303, families=self.families)
        plain = greedy_score(model, tok, records, template=task_prompt)["exact_match"]
        alpaca = greedy_score(model, tok, records)["exact_match"]
        return {"task_accuracy_plain": round(plain, 4), "task_accuracy_alpaca": round(alpaca, 4)}


# ------------------------------------------------------------ 3-digit addition, two formats

def arithmetic_text(rec: dict, style: str) -> str:
    """One example in an answer format: ``Q: 12+34=\\nA: 46`` or ``...\\nS: <steps> #### 46``."""
    if style == "direct":
        return f"Q: {rec['question']}\nA: {rec['answer']}\n"
    if style == "steps":
        return f"Q: {rec['question']}\nS: {rec['cot']}\n"
    raise ValueError(f"style must be 'direct' or 'steps', got {style!r}")


def arithmetic_texts(problems: list[dict]) -> list[str]:
    """The problems as examples, the two formats in turn (direct first)."""
    return [arithmetic_text(r, ("direct", "steps")[k % 2]) for k, r in enumerate(problems)]


def arithmetic_data(n_train: int = 40000, n_val: int = 500, digits: int = 3, seed: int = 0):
    """(tokenizer, train tokens, val tokens) of additions in both formats, val unseen."""
    tok = ByteTokenizer()
    problems = addition_problems(n_train + n_val, digits=digits, seed=seed)
    return (tok, encode_stream(tok, arithmetic_texts(problems[:n_train])),
            encode_stream(tok, arithmetic_texts(problems[n_train:])))


@torch.no_grad()
def arithmetic_accuracy(model, tok, problems: list[dict], style: str, device="cpu") -> float:
    """Exact-match accuracy of greedy answers to unseen problems, in one format."""
    correct = 0
    marker = {"direct": "A: ", "steps": "S: "}[style]
    for rec in problems:
        prompt = tok.encode(f"Q: {rec['question']}\n{marker}", bos=True)
        out = model.generate(torch.tensor(prompt, device=device), 48 if style == "steps" else 8,
                             stop_tokens=[tok.eos_id, tok.encode("\n")[0]])
        text = marker + tok.decode(out.tolist(), skip_special=True).strip()
        answer = extract_answer(text) if style == "steps" else text[len(marker):].strip()
        correct += answer == rec["answer"]
    return correct / len(problems)


@dataclass(frozen=True)
class Arithmetic(Task):
    n_train: int = 40000
    n_val: int = 500
    digits: int = 3
    seed: int = 0

    def data(self):
        return arithmetic_data(self.n_train, self.n_val, self.digits, self.seed)

    def heldout(self, n: int) -> list[dict]:
        """``n`` problems from the validation range that never occur in training."""
        problems = addition_problems(self.n_train + self.n_val, self.digits, self.seed)
        seen = {r["question"] for r in problems[:self.n_train]}
        unseen = [r for r in problems[self.n_train:] if r["question"] not in seen]
        if len(unseen) < n:
            raise ValueError(f"only {len(unseen)} held-out problems; asked for {n}")
        return unseen[:n]

    def scores(self, model, tok, n: int) -> dict:
        unseen = self.heldout(n)
        return {f"accuracy_{style}": arithmetic_accuracy(model, tok, unseen, style)
                for style in ("direct", "steps")}


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


@dataclass(frozen=True)
class Mod10(Supervised):
    kind: str = "mod10"                 # a MOD10_FORMS key
    n_train: int = 40000
    n_val: int = 500
    k: int = 8
    seed: int = 0

    def data(self):
        return mod10_data(self.kind, self.n_train, self.n_val, self.k, self.seed)

    def heldout(self, n: int, seed_offset: int = 2) -> list[dict]:
        """``n`` problems of another seed than training and validation, none seen in training."""
        seen = _mod10_questions(self.n_train, self.k, self.seed)
        fresh = mod10_problems(2 * n, self.k, self.seed + seed_offset)
        return [r for r in fresh if r["question"] not in seen][:n]

    def scores(self, model, tok, n: int, votes: int = 10, temperature: float = 1.0,
               seed: int = 0) -> dict:
        """Greedy accuracy per marker. Where a marker stands for more than one answer form,
        also the one-sample accuracy, the majority-vote accuracy over ``votes`` samples and
        the share of samples that wrote steps (sampled at ``temperature``, seeded)."""
        problems, out = self.heldout(n), {}
        gold = [r["answer"] for r in problems]
        for marker in sorted({m for m, _ in MOD10_FORMS[self.kind]}):
            prompts = [qa_prompt(r, marker) for r in problems]
            greedy = greedy_cot(model, tok, prompts, max_new_tokens=96)
            out[f"accuracy_greedy_{marker}"] = sum(
                g["answer"] == a for g, a in zip(greedy, gold)) / len(gold)
            if len({f for m, f in MOD10_FORMS[self.kind] if m == marker}) == 1:
                continue                # the marker says the form: nothing to vote on
            voted = self_consistency(model, tok, prompts, n=votes, temperature=temperature,
                                     max_new_tokens=96, seed=seed)
            samples = [(s, x, a) for v, a in zip(voted, gold)
                       for s, x in zip(v["samples"], v["answers"])]
            out[f"accuracy_sample_{marker}"] = sum(x == a for _, x, a in samples) / len(samples)
            out[f"accuracy_vote{votes}_{marker}"] = sum(
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


def addition_scores(model, tok, problems: list[dict]) -> dict:
    """Greedy exact match, and the share of right digits per place value (units first)."""
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


@dataclass(frozen=True)
class Addition(Supervised):
    kind: str = "add5"                  # an ADDITION_FORMS key
    n_train: int = 40000
    n_val: int = 500
    digits: int = 5
    seed: int = 0

    def data(self):
        return addition_data(self.kind, self.n_train, self.n_val, self.digits, self.seed)

    def heldout(self, n: int, seed_offset: int = 2) -> list[dict]:
        """``n`` additions of another seed than training and validation, none seen in training."""
        seen = _addition_questions(self.kind, self.n_train, self.digits, self.seed)
        fresh = addition_records(self.kind, 2 * n, self.digits, self.seed + seed_offset)
        return [r for r in fresh if r["question"] not in seen][:n]

    def scores(self, model, tok, n: int) -> dict:
        return addition_scores(model, tok, self.heldout(n))


# ----------------------------------------------------------------------------- sort
# Lists are written the way the GoT paper writes them.

def sort_lists(n: int, lo: int = 1, hi: int = 8, seed: int = 0) -> list[list[int]]:
    """``n`` lists of random digits 0..9, each of a length drawn uniformly from lo..hi."""
    rng = random.Random(seed)
    return [[rng.randint(0, 9) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def sort_prompt(xs) -> str:
    """"Q: sort [3, 1, 4]\\nA: ": what the model continues."""
    return f"Q: sort {format_list(xs)}\nA: "


def sort_text(xs) -> str:
    """One training example: the prompt, then the sorted list."""
    return sort_prompt(xs) + format_list(sorted(xs))


def sort_data(n_train: int = 60000, n_val: int = 500, max_len: int = 8, seed: int = 0):
    """(tokenizer, train tokens, val tokens): <bos> example <eos>, lists of 1..max_len."""
    tok = ByteTokenizer()
    return (tok, encode_stream(tok, map(sort_text, sort_lists(n_train, 1, max_len, seed))),
            encode_stream(tok, map(sort_text, sort_lists(n_val, 1, max_len, seed + 1))))


def model_sort(model, tok, lists, n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[list[int]]]:
    """``n`` answers of the model per list, each read back into ints with ``parse_list``
    (greedy at ``temperature=0``; sampled and seeded otherwise)."""
    if not lists:
        return []
    room = 3 * max(len(xs) for xs in lists) + 4       # "[a, b]" is 3 bytes per digit
    texts = sample(model, tok, [sort_prompt(xs) for xs in lists], n=n,
                   temperature=temperature, max_new_tokens=room, seed=seed)
    return [[parse_list(t) for t in row] for row in texts]


@dataclass(frozen=True)
class Sort(Task):
    n_train: int = 60000
    n_val: int = 500
    max_len: int = 8
    seed: int = 0

    def data(self):
        return sort_data(self.n_train, self.n_val, self.max_len, self.seed)

    def heldout(self, n: int, lo: int = 1, hi: int | None = None,
                seed_offset: int = 2) -> list[list[int]]:
        """``n`` lists of lo..hi digits (default: the trained lengths) of another seed than
        training that never occur in the training data."""
        hi = self.max_len if hi is None else hi
        seen = {tuple(xs) for xs in sort_lists(self.n_train, 1, self.max_len, self.seed)}
        fresh = [xs for xs in sort_lists(4 * n, lo, hi, self.seed + seed_offset)
                 if tuple(xs) not in seen]
        if len(fresh) < n:
            raise ValueError(f"only {len(fresh)} unseen lists of length {lo}..{hi}; "
                             f"asked for {n}")
        return fresh[:n]

    def scores(self, model, tok, n: int) -> dict:
        """Exact-match accuracy on unseen lists of the trained lengths (and of the longest
        one), and the mean GoT error count of direct greedy sorting of 16 and 32 digits."""
        out = {}
        for key, lo in (("accuracy_sort", 1), (f"accuracy_sort_len{self.max_len}", self.max_len)):
            lists = self.heldout(n, lo, self.max_len)
            answers = model_sort(model, tok, lists)
            out[key] = sum(a[0] == sorted(xs) for xs, a in zip(lists, answers)) / len(lists)
        for length in (16, 32):
            lists = sort_lists(n, length, length, self.seed + 3)
            answers = model_sort(model, tok, lists)
            out[f"errors_direct_len{length}"] = sum(
                error_count(xs, a[0]) for xs, a in zip(lists, answers)) / len(lists)
        return {k: round(v, 4) for k, v in out.items()}


# ----------------------------------------------------------------------------- held out

def heldout(task, n: int, *args) -> list:
    """``task.heldout(n, *args)``. A recipe passes the call on to its task, so the chapters
    write ``mod10_heldout(get_recipe("mod10"), 64)``."""
    return task.heldout(n, *args)


mod10_heldout = addition_heldout = sort_heldout = heldout_problems = heldout
