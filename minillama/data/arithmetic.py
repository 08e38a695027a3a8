"""Arithmetic with a direct answer and with written-out steps (chain of thought).

Chain-of-thought prompting (Wei et al., arXiv 2201.11903) lets a model spend tokens on
intermediate results instead of producing the answer in one forward pass. Every task here
comes in both forms, so a chapter can train on either and compare:

    addition   question "385+247="   answer "632"
               cot "5+7+0=2 c1, 8+4+1=3 c1, 3+2+1=6 c0 #### 632"
               (one step per column from the right: digit + digit + carry-in = digit, carry-out)
    reverse    reverse=True writes the answer least significant digit first ("236"), the
               order in which the digits are computed (Lee et al., arXiv 2307.03381);
               little_endian=True writes the operands that way too ("583+742=" -> "236"),
               so each answer digit sits at a fixed distance from the digits it needs
    expression question "(3+4)*2-5="   answer "9"   cot "3+4=7, 7*2=14, 14-5=9 #### 9"
    mod10      question "3 +4 *7 -2="  answer "7"   every op is applied to the running value
               and reduced mod 10; cot_style "one": "3 +4=7, 7 *7=9, 9 -2=7 #### 7",
               cot_style "two" (two ops per step): "3 +4 *7=9, 9 -2=7 #### 7"

The text after the last ``####`` is the final answer (the GSM8K convention), which is what
``extract_answer`` reads. Records are dicts with ``question``, ``answer`` and ``cot``;
``format_example`` turns one into training text "Q: ...\\nA: ...".

Size: every function makes ``n`` fresh problems from its seed; there are 9e2 x 9e2 three-digit
additions and 10 x 27^8 eight-step mod-10 chains, so scaling up is just a larger ``n`` (or
more ``digits`` / ``n_ops`` / ``k`` for harder problems).
"""

from __future__ import annotations

import random

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
PRECEDENCE = {"+": 1, "-": 1, "*": 2, None: 3}  # None: a bare number never needs brackets


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")


def addition_cot(a: int, b: int, reverse: bool = False) -> str:
    """Column addition from the right: "x+y+carry_in=digit c{carry_out}" per column."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    steps, carry, digits = [], 0, []
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total % 10} c{total // 10}")
        digits.append(str(total % 10))
        carry = total // 10
    if carry:
        digits.append("1")
    answer = "".join(digits) if reverse else "".join(digits[::-1])
    return ", ".join(steps) + f" #### {answer}"


def addition_problems(n: int, digits: int = 3, seed: int = 0, reverse: bool = False,
                      little_endian: bool = False) -> list[dict]:
    """``n`` additions of two ``digits``-digit numbers (no leading zeros).

    ``little_endian`` writes operands and answer least significant digit first (it implies
    ``reverse``); the same seed gives the same numbers ``a``, ``b`` in every format.
    """
    _check_n(n)
    if not isinstance(digits, int) or not 1 <= digits <= 40:
        raise ValueError(f"digits must be an int in 1..40, got {digits!r}")
    rng = random.Random(f"addition-{digits}-{seed}")
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    out = []
    for _ in range(n):
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        rev = reverse or little_endian
        answer = str(a + b)[::-1] if rev else str(a + b)
        question = f"{str(a)[::-1]}+{str(b)[::-1]}=" if little_endian else f"{a}+{b}="
        out.append({"question": question, "answer": answer,
                    "cot": addition_cot(a, b, rev), "a": a, "b": b, "reverse": rev})
    return out


def _expression(rng: random.Random, n_ops: int, max_operand: int) -> dict:
    """Grow an expression one op at a time; the steps are the order Python evaluates it in."""
    value = rng.randint(1, max_operand)
    text, top, steps = str(value), None, []
    for _ in range(n_ops):
        op, x = rng.choice("+-*"), rng.randint(1, max_operand)
        if op == "-" and value != x:
            left = value > x  # "bigger - smaller", so every result stays >= 0
        else:
            left = rng.random() < 0.5  # the new number goes on the right or on the left
        # brackets where precedence would change the order: (a+b)*x, x-(a+b), x-(a-b)
        wrap = PRECEDENCE[top] < PRECEDENCE[op] or (not left and op == "-" and top in ("+", "-"))
        inner = f"({text})" if wrap else text
        a, b = (value, x) if left else (x, value)
        text = f"{inner}{op}{x}" if left else f"{x}{op}{inner}"
        new = OPS[op](a, b)
        steps.append(f"{a}{op}{b}={new}")
        value, top = new, op
    return {"question": f"{text}=", "answer": str(value),
            "cot": ", ".join(steps) + f" #### {value}", "n_ops": n_ops}


def expression_problems(n: int, n_ops: int = 3, seed: int = 0, max_operand: int = 9) -> list[dict]:
    """``n`` expressions with ``n_ops`` operations on numbers 1..max_operand (results >= 0)."""
    _check_n(n)
    if not isinstance(n_ops, int) or n_ops < 1:
        raise ValueError(f"n_ops must be an int >= 1, got {n_ops!r}")
    if max_operand < 1:
        raise ValueError(f"max_operand must be >= 1, got {max_operand}")
    rng = random.Random(f"expression-{n_ops}-{seed}")
    return [_expression(rng, n_ops, max_operand) for _ in range(n)]


def mod10_chain(n: int, k: int = 8, seed: int = 0, cot_style: str = "one") -> list[dict]:
    """Start digit 0..9, then ``k`` ops "+d" / "-d" / "*d" (d in 1..9), each reduced mod 10.

    The direct answer is the final digit; the cot lists the running value after one op
    (``cot_style="one"``) or two ops (``"two"``) per step. The questions depend only on
    (n, k, seed), so both styles of the same seed pose the same problems.
    """
    _check_n(n)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if cot_style not in ("one", "two"):
        raise ValueError(f"cot_style must be 'one' or 'two', got {cot_style!r}")
    per_step = 1 if cot_style == "one" else 2
    rng = random.Random(f"mod10-{k}-{seed}")
    out = []
    for _ in range(n):
        start = rng.randint(0, 9)
        ops = [(rng.choice("+-*"), rng.randint(1, 9)) for _ in range(k)]  # no "*0" resets
        values, value = [], start
        for op, d in ops:
            value = OPS[op](value, d) % 10
            values.append(value)
        steps, prev = [], start
        for i in range(0, k, per_step):
            chunk = "".join(f" {op}{d}" for op, d in ops[i:i + per_step])
            last = values[min(i + per_step, k) - 1]
            steps.append(f"{prev}{chunk}={last}")
            prev = last
        question = str(start) + "".join(f" {op}{d}" for op, d in ops) + "="
        out.append({"question": question, "answer": str(value),
                    "cot": ", ".join(steps) + f" #### {value}",
                    "start": start, "ops": ops, "values": values, "cot_style": cot_style})
    return out


def format_example(rec: dict, style: str = "direct") -> str:
    """Training text: "Q: <question>\\nA: <answer or cot>"."""
    if style not in ("direct", "cot"):
        raise ValueError(f"style must be 'direct' or 'cot', got {style!r}")
    missing = {"question", "answer", "cot"} - set(rec)
    if missing:
        raise ValueError(f"record is missing the fields {sorted(missing)}")
    return f"Q: {rec['question']}\nA: {rec['answer'] if style == 'direct' else rec['cot']}"


def extract_answer(text: str | None) -> str | None:
    """The final answer in a model's output, or None if there is none.

    With "####" it is what follows the last "####"; otherwise the text after the last "A:"
    (or the whole text). Only the first line counts, so whatever a model babbles on the
    next lines is ignored.
    """
    if not text:
        return None
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    elif "A:" in text:
        text = text.rsplit("A:", 1)[1]
    text = text.strip()
    answer = text.splitlines()[0].strip() if text else ""
    return answer or None


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction of predictions whose extracted answer equals the reference's."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("exact_match needs at least one reference")
    hits = sum(extract_answer(p) == extract_answer(str(r)) for p, r in zip(predictions, references))
    return hits / len(references)
