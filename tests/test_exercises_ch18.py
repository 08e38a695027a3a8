"""Graders for chapter 18 (searching over thoughts): one breadth-first step of ToT.

    python -m pytest tests/test_exercises_ch18.py --impl=exercises
"""

import random

import pytest

from minillama.reasoning import game24 as G
from minillama.reasoning import tot_bfs

# a toy tree: "A" looks best but leads nowhere good; "B" and "C" tie
TREE = {"root": ["A", "B", "C"], "A": ["A1"], "B": ["B1", "B2"], "C": ["C1"],
        "A1": [], "B1": [], "B2": [], "C1": []}
VALUE = {"A": 0.9, "B": 0.5, "C": 0.5, "A1": 0.1, "B1": 0.7, "B2": 0.7, "C1": 0.8}


def test_ch18_bfs_step_on_a_toy_tree(impl):
    step = impl("ch18_search").bfs_step
    assert step(["root"], TREE.get, VALUE.get, 1) == (["A"], [0.9], 3)
    # B and C tie at 0.5: the earlier proposal, B, is kept
    assert step(["root"], TREE.get, VALUE.get, 2) == (["A", "B"], [0.9, 0.5], 3)
    assert step(["root"], TREE.get, VALUE.get, 5) == (["A", "B", "C"], [0.9, 0.5, 0.5], 3)
    # the children of the whole frontier compete; B1 and B2 tie, B1 came first
    assert step(["A", "B", "C"], TREE.get, VALUE.get, 2) == (["C1", "B1"], [0.8, 0.7], 4)
    assert step(["A", "B"], TREE.get, VALUE.get, 3) == (["B1", "B2", "A1"], [0.7, 0.7, 0.1], 3)
    assert step(["A1", "B1"], TREE.get, VALUE.get, 3) == ([], [], 0)          # dead ends
    assert step([], TREE.get, VALUE.get, 3) == ([], [], 0)


def test_ch18_bfs_step_scores_each_candidate_once(impl):
    calls = []

    def value(state):
        calls.append(state)
        return VALUE[state]

    impl("ch18_search").bfs_step(["A", "B", "C"], TREE.get, value, 1)
    assert calls == ["A1", "B1", "B2", "C1"]


def crude(state):
    """A value with many ties: the share of numbers that are whole divisors of 24."""
    return sum(type(x) is int and x > 0 and 24 % x == 0 for x in state.numbers) / len(
        state.numbers)


# solvable ones (two need fractions), unsolvable ones, repeats, and four random draws
PROBLEMS = [(4, 9, 10, 13), (1, 5, 5, 5), (3, 3, 8, 8), (1, 2, 3, 4), (1, 1, 1, 1),
            (6, 6, 6, 6), (2, 7, 11, 13)] + [tuple(random.Random(i).choices(range(1, 14), k=4))
                                              for i in range(4)]


@pytest.mark.parametrize("value_name", ["crude", "solver", "distance"])
def test_ch18_bfs_step_matches_tot_bfs_on_game24(impl, value_name):
    value = {"crude": crude,
             "solver": lambda s: float(G.solvable(s.numbers)),
             "distance": lambda s: -min(abs(x - 24) for x in s.numbers)}[value_name]
    step = impl("ch18_search").bfs_step
    for numbers in PROBLEMS:
        for breadth in (1, 3, 5):
            want = tot_bfs(G.start(numbers), G.propose, value, breadth, depth=3)
            frontier, evaluated = [G.start(numbers)], 0
            for states, values in want["levels"]:
                frontier, got_values, n = step(frontier, G.propose, value, breadth)
                assert (frontier, got_values) == (states, values), (numbers, breadth)
                evaluated += n
            assert evaluated == want["evaluated"]
