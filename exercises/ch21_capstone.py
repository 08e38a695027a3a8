# GENERATED from solutions/ch21_capstone.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch21.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 21 exercises: the two pieces of a real Llama 3 tokenizer you can write in a
few lines, checked against the libraries that define them.

1. ``bpe_by_rank``: Llama 3's ``tokenizer.model`` is a tiktoken file, ``{token bytes:
   rank}``. One pre-tokenized chunk is encoded by starting from its single bytes and
   merging, again and again, the adjacent pair whose concatenation has the lowest rank
   (the leftmost on ties), until no adjacent pair is a token:

       i* = argmin_i rank(p_i + p_{i+1}),     p_i*, p_i*+1  ->  p_i* + p_i*+1

   (a chunk that is itself a token is that token). The grader compares your ids with the
   ``tiktoken`` library on the same ranks and with ``minillama.tokenizer_tiktoken``.

2. ``llama3_prompt``: the text of Llama 3's chat format (Meta's Llama 3 model card):
   ``<|begin_of_text|>`` once, then per message
   ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content, stripped}<|eot_id|>``, and,
   to ask the model for its turn, an open assistant header. The grader renders the
   published Jinja chat template (Meta-Llama-3-8B-Instruct's) on the same messages.
"""


def bpe_by_rank(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one chunk ``piece`` under the tiktoken ``ranks``."""
    raise NotImplementedError("exercise: bpe_by_rank")


def llama3_prompt(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The Llama 3 chat text of ``messages`` (dicts with ``role`` and ``content``)."""
    raise NotImplementedError("exercise: llama3_prompt")
