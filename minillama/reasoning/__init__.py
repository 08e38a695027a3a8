"""Reasoning at inference time: chain of thought, self-consistency, and search over thoughts.

The survey's ladder, one file each:

    sampling.py  greedy chain of thought, batched sampling, majority vote, self-consistency
                 (Wei et al., arXiv 2201.11903; Wang et al., arXiv 2203.11171)
    search.py    tree-of-thoughts BFS (Yao et al., arXiv 2305.10601) and the graph-of-thoughts
                 operations generate / score / keep_best / aggregate / improve
                 (Besta et al., arXiv 2308.09687)
    game24.py    the Game of 24: the 1,362 solvable sets, a solver, legal moves, checkers
    sorting.py   GoT sorting: split -> sort -> merge -> refine, scored by the GoT error count

Answers are read with ``extract_answer`` (the text after the last "####").

    from minillama import reasoning as R
    R.self_consistency(model, tok, "Q: 3 +4 *7 -2=\\nS: ", n=10, temperature=1.0)
    R.tot_bfs(R.game24.start((4, 9, 10, 13)), R.game24.propose, value, breadth=5, depth=3)
"""

from ..data.arithmetic import extract_answer
from . import game24, sorting
from .sampling import greedy_cot, majority_vote, sample, self_consistency
from .search import (
    Thought,
    aggregate,
    ancestors,
    generate,
    improve,
    keep_best,
    score,
    thoughts,
    tot_bfs,
)

__all__ = ["extract_answer", "sample", "greedy_cot", "majority_vote", "self_consistency",
           "tot_bfs", "Thought", "thoughts", "generate", "score", "keep_best", "aggregate",
           "improve", "ancestors", "game24", "sorting"]
