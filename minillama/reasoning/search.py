"""Searching over thoughts: tree-of-thoughts BFS and the graph-of-thoughts operations.

Tree of Thoughts (Yao et al., arXiv 2305.10601) treats each intermediate step ("thought")
as a node of a search tree. Breadth-first search keeps a frontier S_t of at most b states:

    candidates = { s + z : s in S_t, z in propose(s) }          generate thoughts
    S_{t+1}    = the b candidates with the highest value(s')     evaluate, keep best b

for ``depth`` steps. The proposer says what may be tried; the value function says what is
promising. With a perfect value function one path suffices; with a useless one BFS is only
a wider random search. ``tot_bfs`` is generic: states can be anything, ``propose`` and
``value`` are plain functions (a language model, a solver, a learned scorer, a heuristic).

Graph of Thoughts (Besta et al., arXiv 2308.09687) lets thoughts also *merge*: the
reasoning is a graph of operations over thoughts, among them

    generate(k)   new thoughts from each thought (k samples or a split into parts)
    score         attach a score to each thought
    keep_best(n)  keep the n best-scored thoughts
    aggregate     combine several thoughts into one (e.g. merge two sorted lists)
    improve       rewrite a thought into a better one (refine)

Each is a small function over a list of ``Thought``s, so a GoT "graph of operations" is
just these calls composed in a program; ``parents`` records the edges of the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


def _best(items: list, keys: list[float], n: int, lower_is_better: bool = False) -> list:
    """The ``n`` items with the best keys; equal keys keep their original order."""
    sign = 1 if lower_is_better else -1
    order = sorted(range(len(items)), key=lambda i: (sign * keys[i], i))
    return [items[i] for i in order[:n]]


def tot_bfs(state, propose, value, breadth: int, depth: int, is_solution=None) -> dict:
    """Breadth-first tree-of-thoughts search from ``state``.

    ``propose(s)`` lists the next states of s; ``value(s)`` scores one (higher is better).
    Each of ``depth`` steps expands the whole frontier and keeps the best ``breadth``
    candidates (ties: the earlier proposal). The search stops early when the frontier is
    empty (every branch was a dead end) or, given ``is_solution``, holds a solution.
    Returns {"best": the best final state or None, "frontier": final states best first,
    "values": their values, "levels": [(states, values)] per step, "evaluated": how many
    times ``value`` was called}. The root itself is never scored (its value is None).
    """
    if not isinstance(breadth, int) or breadth < 1:
        raise ValueError(f"breadth must be a positive int, got {breadth!r}")
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    frontier, values, levels, evaluated = [state], [None], [], 0     # the root: not scored
    for _ in range(depth):
        if not frontier or (is_solution is not None and any(map(is_solution, frontier))):
            break
        candidates = [child for s in frontier for child in propose(s)]
        scores = [value(c) for c in candidates]
        evaluated += len(candidates)
        kept = _best(list(range(len(candidates))), scores, breadth)
        frontier, values = [candidates[i] for i in kept], [scores[i] for i in kept]
        levels.append((frontier, values))
    if is_solution is not None:          # a solution in the frontier comes first
        ranked = sorted(range(len(frontier)), key=lambda i: not is_solution(frontier[i]))
        frontier, values = [frontier[i] for i in ranked], [values[i] for i in ranked]
    return {"best": frontier[0] if frontier else None, "frontier": frontier,
            "values": values, "levels": levels, "evaluated": evaluated}


# ----------------------------------------------------------------------------- GoT
@dataclass(frozen=True)
class Thought:
    """One node of a graph of thoughts: a state, an optional score, and where it came from."""

    state: object
    score: float | None = None
    parents: tuple = field(default=(), repr=False)


def thoughts(*states) -> list[Thought]:
    """Root thoughts for the given states."""
    return [Thought(s) for s in states]


def generate(items: list[Thought], fn, k: int = 1) -> list[Thought]:
    """For each thought, call ``fn(state)`` k times; every state it returns is a new thought.

    ``fn`` returns a list: one sample (k samples in all), or the parts of a split.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return [Thought(s, parents=(t,)) for t in items for _ in range(k) for s in fn(t.state)]


def score(items: list[Thought], fn) -> list[Thought]:
    """The same thoughts with ``score = fn(state)``."""
    return [replace(t, score=float(fn(t.state))) for t in items]


def keep_best(items: list[Thought], n: int = 1, lower_is_better: bool = False) -> list[Thought]:
    """The ``n`` best-scored thoughts (an error count: ``lower_is_better=True``); ties keep
    the earlier thought."""
    if any(t.score is None for t in items):
        raise ValueError("keep_best needs scored thoughts; call score(...) first")
    return _best(items, [t.score for t in items], n, lower_is_better)


def aggregate(items: list[Thought], fn) -> Thought:
    """One thought ``fn([states])`` with all of ``items`` as parents."""
    if not items:
        raise ValueError("aggregate needs at least one thought")
    return Thought(fn([t.state for t in items]), parents=tuple(items))


def improve(items: list[Thought], fn) -> list[Thought]:
    """Each thought rewritten by ``fn(state)`` (GoT's refine), its parent recorded."""
    return [Thought(fn(t.state), parents=(t,)) for t in items]


def ancestors(thought: Thought) -> list[Thought]:
    """Every thought the given one was built from (each once, depth first)."""
    seen, out, stack = set(), [], list(thought.parents)
    while stack:
        t = stack.pop()
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
            stack.extend(t.parents)
    return out
