# GENERATED from solutions/ch18_search.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch18.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 18 exercise: one breadth-first step of tree-of-thoughts search.

Tree of Thoughts (Yao et al., arXiv 2305.10601) keeps a frontier S_t of at most b states
and grows it one thought at a time:

    candidates = [ s' for s in S_t for s' in propose(s) ]      frontier order, then the
                                                                order propose lists them
    S_{t+1}    = the b candidates with the highest value(s')

Call ``value`` exactly once per candidate. Equal values keep the earlier candidate (its
place in ``candidates``), so the step never depends on how a sort treats ties. The
graders compare your step with every level of ``minillama.reasoning.tot_bfs``.
"""


def bfs_step(frontier: list, propose, value, breadth: int) -> tuple[list, list, int]:
    """One BFS step: (the kept states best first, their values, how many candidates
    were scored).

    ``propose(state)`` returns a list of next states (possibly empty); ``value(state)``
    returns a number, higher is better; ``breadth`` >= 1. A frontier whose states have no
    children gives ([], [], 0).
    """
    raise NotImplementedError("exercise: bfs_step")
