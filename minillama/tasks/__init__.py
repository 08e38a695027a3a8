"""Tasks: what a recipe trains on, what it is tested on, and how it is scored.

A task is a small object, one class per kind of data, holding its sizes and seed:

* ``task.data()`` -> (tokenizer, train, val): token streams for next-token training, or,
  for a ``supervised`` task, records for ``finetune.finetune`` (prompt
  ``Q: ...\\n<marker>: ``, the loss on the answer only);
* ``task.heldout(n)`` -> ``n`` problems of another seed, minus anything seen in training;
* ``task.val_loss(...)`` and ``task.scores(model, tok, n)`` -> the figures of a card.

A ``Recipe`` (``recipes.py``) holds one as ``recipe.task``; the command line and the
chapters ask it rather than looking at its name. The kinds, one file each here
(``base.py`` holds what they share):

* ``Stories`` — procedural children's stories (``data/stories.py``), byte-level BPE.
* ``Mixed`` — stories and the instruction families written as plain text, one stream.
* ``Arithmetic`` — 3-digit additions in two answer formats, direct and in steps.
* ``Mod10`` — chains of single-digit operations mod 10; ``MOD10_FORMS`` says which answer
  forms a kind trains on and after which marker; chapters 16 (DPO) and 17 (reasoning).
* ``Addition`` — 5-digit additions in the usual digit order or least significant digit
  first (``ADDITION_FORMS``); chapter 17, after Lee et al., arXiv 2307.03381.
* ``Sort`` — short digit lists and their sorted order, the ``sort_fn`` of
  graph-of-thoughts sorting (``reasoning/sorting.py``); chapter 18.
"""

from __future__ import annotations

from .arithmetic import (  # noqa: F401
    ADDITION_FORMS,
    MOD10_FORMS,
    Addition,
    Arithmetic,
    Mod10,
    addition_data,
    addition_records,
    addition_scores,
    arithmetic_accuracy,
    arithmetic_data,
    arithmetic_text,
    arithmetic_texts,
    mod10_data,
    mod10_problems,
    mod10_records,
)
from .base import (  # noqa: F401
    Supervised,
    Task,
    addition_heldout,
    encode_stream,
    heldout,
    heldout_problems,
    mod10_heldout,
    qa_prompt,
    sort_heldout,
)
from .sorting import (  # noqa: F401
    Sort,
    model_sort,
    sort_data,
    sort_lists,
    sort_prompt,
    sort_text,
)
from .text import (  # noqa: F401
    MIXED_FAMILIES,
    SKILL_FAMILIES,
    Mixed,
    Stories,
    corpus_data,
    mixed_data,
    stories_data,
    task_prompt,
    task_text,
)
