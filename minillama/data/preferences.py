"""Preference pairs (prompt, chosen, rejected) for DPO, derived from the instruction tasks.

Direct Preference Optimization (Rafailov et al., arXiv 2305.18290) trains on triples where a
human preferred ``chosen`` over ``rejected`` for the same prompt. With code-written tasks the
preference is exact: ``chosen`` is the correct output and ``rejected`` one of the plausible
wrong outputs each task family writes (an off-by-one count, a wrong order, a partial edit,
the wrong fact, answering instead of refusing, ...):

    {"prompt": "Below is a task and its input. ...### Response:\\n",
     "chosen": "9, 30, 73, 86", "rejected": "9, 73, 30, 86", "family": "sort_ascending"}

The prompts are ``instruction_data(n, seed, families)`` rendered by ``format_prompt``, record
for record, so ``chosen`` equals that record's output. Size: ``n`` pairs per call; scale up
by raising ``n`` (22 families, thousands of inputs each).
"""

from __future__ import annotations

import random

from .instructions import _generate, format_prompt


def preference_pairs(n: int, seed: int = 0, families=None) -> list[dict]:
    """``n`` dicts with prompt, chosen, rejected, and the record's instruction/input/family."""
    rng = random.Random(f"preferences-{seed}")
    out = []
    for record, wrongs in _generate(n, seed, families):
        out.append({"prompt": format_prompt(record), "chosen": record["output"],
                    "rejected": rng.choice(wrongs), "family": record["family"],
                    "instruction": record["instruction"], "input": record["input"]})
    return out
