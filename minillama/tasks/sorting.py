"""Sorting short digit lists: the ``sort_fn`` of chapter 18's graph-of-thoughts sorting."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..reasoning import sample
from ..reasoning.sorting import error_count, format_list, parse_list
from ..tokenizer import ByteTokenizer
from .base import Task, encode_stream

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
