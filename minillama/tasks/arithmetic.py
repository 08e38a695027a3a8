"""Arithmetic tasks: 3-digit additions in two answer formats, mod-10 chains, and 5-digit
additions in two digit orders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..data import addition_problems, extract_answer, mod10_chain
from ..reasoning import greedy_cot, sample, self_consistency
from ..tokenizer import ByteTokenizer
from .base import Supervised, Task, encode_stream, qa_prompt

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
