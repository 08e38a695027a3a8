"""Graph-of-thoughts sorting: split, sort the parts, merge them, refine, and count errors.

The sorting task of Graph of Thoughts (Besta et al., arXiv 2308.09687) sorts lists of
digits longer than a model sorts reliably in one go. Its graph of operations is merge
sort done by the model: split the list into parts, sort each part (k tries, keep the
best), merge sorted parts pairwise (an *aggregation*, again k tries, keep the best), and
finally refine the result. Every thought is scored by the paper's error count of an
output b_1..b_m for an input a (Sec. 5.1), the number of adjacent pairs out of order plus
how far every value's count is off:

    errors = sum_{i=1}^{m-1} [ b_i > b_{i+1} ]  +  sum_v | #{p: b_p = v} - #{p: a_p = v} |

The paper sums the second term over the digits 0..9; ``error_count`` sums it over every
value in either list, which is the same for digit lists. A correct sort scores 0; a
dropped or duplicated element costs 1 each, a swapped neighbour pair 1.

``got_sort`` composes the operations of ``search.py``. It takes the model-backed steps
as plain functions (``sort_fn(list) -> list``, ``merge_fn(a, b) -> list``, optionally
``refine_fn(original, current) -> list``), so the same graph runs with a trained model, a
noisy stand-in, or exact code. Each thought's state is (original elements, current output).
"""

from __future__ import annotations

import re
from collections import Counter

from .search import aggregate, generate, keep_best, score, thoughts


def error_count(original: list, output: list) -> int:
    """The GoT sorting error: descents in ``output`` + count differences with ``original``."""
    descents = sum(a > b for a, b in zip(output, output[1:]))
    want, got = Counter(original), Counter(output)
    return descents + sum(abs(got[v] - want[v]) for v in want.keys() | got.keys())


def split(xs: list, parts: int) -> list[list]:
    """``xs`` cut into ``parts`` contiguous pieces of (nearly) equal size, in order."""
    if not isinstance(parts, int) or not 1 <= parts <= max(1, len(xs)):
        raise ValueError(f"parts must be an int in 1..{max(1, len(xs))}, got {parts!r}")
    size, extra = divmod(len(xs), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(xs[start:end]))
        start = end
    return out


def merge(a: list, b: list) -> list:
    """The merge step of merge sort: two sorted lists into one, taking the smaller head."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if b[j] < a[i]:
            out.append(b[j])
            j += 1
        else:
            out.append(a[i])
            i += 1
    return out + list(a[i:]) + list(b[j:])


def format_list(xs: list) -> str:
    return "[" + ", ".join(str(x) for x in xs) + "]"


def parse_list(text: str) -> list[int]:
    """The integers of the first "[...]" in ``text`` (or of the whole text if it has none)."""
    m = re.search(r"\[([^\]]*)\]?", text or "")
    return [int(x) for x in re.findall(r"-?\d+", m[1] if m else text or "")]


def _scored(items):
    return score(items, lambda s: error_count(s[0], s[1]))


def got_sort(xs: list, sort_fn, merge_fn, parts: int = 2, k: int = 1, refine_fn=None,
             refine_k: int = 1):
    """Sort ``xs`` by GoT's split -> sort (k tries) -> merge (k tries) -> refine graph.

    Parts are merged pairwise, left to right, until one list is left. At every stage the
    k candidates are scored by ``error_count`` against the elements they should contain
    and the best is kept (ties: the first). ``refine_fn`` is tried ``refine_k`` times on the
    final list and kept only if it lowers the error. Returns the final ``Thought``: its
    state is (xs, sorted output), its score the error count; ``search.ancestors(result)``
    lists the whole graph.
    """
    root = thoughts((list(xs), list(xs)))
    pieces = generate(root, lambda s: [(p, p) for p in split(s[0], parts)])
    level = []
    for piece in pieces:                              # sort each part, keep the best try
        tries = generate([piece], lambda s: [(s[0], list(sort_fn(s[0])))], k)
        level.append(keep_best(_scored(tries), 1, lower_is_better=True)[0])
    while len(level) > 1:                             # merge neighbours (aggregation)
        merged = []
        for i in range(0, len(level) - 1, 2):
            pair = level[i:i + 2]
            tries = [aggregate(pair, lambda ss: (ss[0][0] + ss[1][0],
                                                 list(merge_fn(ss[0][1], ss[1][1]))))
                     for _ in range(k)]
            merged.append(keep_best(_scored(tries), 1, lower_is_better=True)[0])
        if len(level) % 2:
            merged.append(level[-1])
        level = merged
    best = level[0]
    if refine_fn is not None and best.score:
        tries = generate([best], lambda s: [(s[0], list(refine_fn(s[0], s[1])))], refine_k)
        best = keep_best([best] + _scored(tries), 1, lower_is_better=True)[0]
    return best
