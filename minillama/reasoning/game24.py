"""The Game of 24: the tree-of-thoughts benchmark, generated and solved by code.

Given four numbers, reach 24 with +, -, *, / using each number exactly once, e.g.
4 9 10 13 -> (10 - 4) * (13 - 9) = 24. Tree of Thoughts (Yao et al., arXiv 2305.10601)
splits a solution into three thoughts, one operation each, "13 - 9 = 4 (left: 4 4 10)",
so a state is the multiset of numbers still left (plus the steps so far) and a move
replaces two of them, a and b, by one of

    a + b,   a - b,   b - a,   a * b,   a / b (b != 0),   b / a (a != 0).

Intermediate results may be fractions (1 5 5 5: 5 * (5 - 1/5) = 24), so the arithmetic is
exact: whole numbers stay Python ints, anything else is a ``fractions.Fraction``; a float
would call 3 * (8 - 8/3) = 24.000000000000004 wrong.

Of the C(13 + 4 - 1, 4) = 1820 multisets of four numbers from 1..13, exactly 1362 can make
24 (``solvable_multisets``; a test checks the count). ``solvable`` decides any multiset
by trying every pair and operation, memoised on the sorted multiset; ``solve`` returns one
expression. ``propose`` lists the legal moves (the ToT proposer, without a model),
``apply_step`` checks a step a model wrote, and ``check_expression`` checks a final answer.
"""

from __future__ import annotations

import ast
import random
import re
from fractions import Fraction
from functools import cache
from itertools import combinations_with_replacement
from typing import NamedTuple

TARGET = 24


def exact(x):
    """An int when x is whole, else a Fraction (the one representation of every value)."""
    if type(x) is int:                     # the common case, kept fast
        return x
    x = Fraction(x)
    return x.numerator if x.denominator == 1 else x


def _div(a, b):
    if type(a) is int and type(b) is int and a % b == 0:
        return a // b
    return exact(Fraction(a) / b)


def _results(a, b) -> list[tuple[str, bool, object]]:
    """(op, swapped, result) for every operation on a pair: "a op b", or "b op a" if swapped."""
    out = [("+", False, exact(a + b)), ("*", False, exact(a * b)), ("-", True, exact(b - a)),
           ("-", False, exact(a - b))]
    if a != 0:
        out.append(("/", True, _div(b, a)))
    if b != 0:
        out.append(("/", False, _div(a, b)))
    return out


@cache
def _solvable(numbers: tuple, target) -> bool:
    if len(numbers) == 1:
        return numbers[0] == target
    if len(numbers) == 2:                   # the last move, without building states
        return any(r == target for _, _, r in _results(*numbers))
    for i in range(len(numbers)):
        for j in range(i + 1, len(numbers)):
            rest = numbers[:i] + numbers[i + 1:j] + numbers[j + 1:]
            for _, _, r in _results(numbers[i], numbers[j]):
                if _solvable(tuple(sorted(rest + (r,))), target):
                    return True
    return False


def solvable(numbers, target=TARGET) -> bool:
    """Can ``numbers`` (any count, ints or Fractions) make ``target`` exactly?"""
    if not numbers:
        raise ValueError("solvable needs at least one number")
    return _solvable(tuple(sorted(exact(x) for x in numbers)), exact(target))


def solve(numbers, target=TARGET) -> str | None:
    """One fully bracketed expression using every number once that equals ``target``."""
    items = sorted((exact(x), str(exact(x))) for x in numbers)
    if not solvable([v for v, _ in items], target):
        return None
    while len(items) > 1:                      # greedy: take any move that stays solvable
        items = next(_moves_that_stay_solvable(items, target))
    expr = items[0][1]
    return expr[1:-1] if len(numbers) > 1 else expr     # drop the outermost brackets


def _moves_that_stay_solvable(items, target):
    """Every [(value, expression)] one move on from ``items`` that can still make target."""
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            rest = items[:i] + items[i + 1:j] + items[j + 1:]
            (a, text_a), (b, text_b) = items[i], items[j]
            for op, swapped, r in _results(a, b):
                if solvable([v for v, _ in rest] + [r], target):
                    left, right = (text_b, text_a) if swapped else (text_a, text_b)
                    yield sorted(rest + [(r, f"({left} {op} {right})")], key=lambda t: t[0])


def solvable_multisets(lo: int = 1, hi: int = 13, size: int = 4, target=TARGET) -> list[tuple]:
    """Every sorted ``size``-multiset of lo..hi that can make ``target`` (1362 by default)."""
    return [m for m in combinations_with_replacement(range(lo, hi + 1), size)
            if _solvable(m, exact(target))]


# ----------------------------------------------------------------------------- moves
class State(NamedTuple):
    """The numbers left (sorted) and the steps taken, e.g. ((4, 4, 10), ("13 - 9 = 4",))."""

    numbers: tuple
    steps: tuple = ()


def start(numbers) -> State:
    return State(tuple(sorted(exact(x) for x in numbers)))


def propose(state: State) -> list[State]:
    """Every legal next state: two numbers replaced by one result; equal results are kept
    once per resulting multiset (the first move found names it)."""
    nums, seen, out = state.numbers, set(), []
    for i in range(len(nums)):
        for j in range(i + 1, len(nums)):
            rest = nums[:i] + nums[i + 1:j] + nums[j + 1:]
            for op, swapped, r in _results(nums[i], nums[j]):
                left = tuple(sorted(rest + (r,)))
                if left not in seen:
                    x, y = (nums[j], nums[i]) if swapped else (nums[i], nums[j])
                    seen.add(left)
                    out.append(State(left, state.steps + (f"{x} {op} {y} = {r}",)))
    return out


def is_solved(state: State, target=TARGET) -> bool:
    return len(state.numbers) == 1 and state.numbers[0] == target


def format_numbers(numbers) -> str:
    """"4 4 10": the numbers left, as the ToT prompt writes them."""
    return " ".join(str(exact(x)) for x in numbers)


_STEP = re.compile(r"^\s*(-?\d+(?:/\d+)?)\s*([-+*/])\s*(-?\d+(?:/\d+)?)\s*=\s*(-?\d+(?:/\d+)?)")


def apply_step(numbers, step: str) -> tuple | None:
    """The numbers left after the step "a op b = c", or None if the step is illegal
    (unreadable, uses a number that is not there, divides by zero, or miscalculates)."""
    m = _STEP.match(step)
    if not m:
        return None
    a, op, b, c = exact(m[1]), m[2], exact(m[3]), exact(m[4])
    left = [exact(x) for x in numbers]
    for x in (a, b):
        if x not in left:
            return None
        left.remove(x)
    if op == "/" and b == 0:
        return None
    value = {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a) / b if b else None}[op]
    if exact(value) != c:
        return None
    return tuple(sorted(left + [c]))


def check_expression(numbers, expression: str, target=TARGET) -> bool:
    """Does ``expression`` use exactly ``numbers`` (each once) with + - * / and brackets,
    and equal ``target`` exactly? Anything else (names, powers, a missing number) is False."""
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return False
    used = []
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: Fraction(a) / b}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError("not allowed")

    try:
        result = value(tree)
    except (ValueError, ZeroDivisionError):
        return False
    return sorted(used) == sorted(exact(x) for x in numbers) and exact(result) == exact(target)


def random_rollout(state: State, rng: random.Random) -> State:
    """Random legal moves until one number is left (the no-search baseline)."""
    while len(state.numbers) > 1:
        state = rng.choice(propose(state))
    return state
