# GENERATED from solutions/ch17_reasoning.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch17.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 17 exercise: self-consistency's majority vote, with answer extraction.

Self-consistency (Wang et al., arXiv 2203.11171) samples N reasoning paths and keeps the
answer that most of them reach:

    a* = argmax_a  sum_{i=1..N} [ answer(y_i) = a ]

Our models end a chain of thought with "#### <answer>" (the GSM8K convention), so the
answer of a sample is what follows its last "####": strip that text of white space
(newlines too), then keep its first line, stripped again. A sample without "####", or
with nothing after it, has no answer: it still counts in N but votes for nothing. The
vote share count(a*) / N is the confidence. The graders compare your functions with
``minillama.reasoning``.
"""


def final_answer(text: str) -> str | None:
    """The answer after the last "####" in ``text``: that text stripped, its first line.

    "x #### 12 \\n" -> "12";  "#### 3 #### 7" -> "7";  "####\\n5" -> "5".
    None when there is no "####" or nothing but white space follows it.
    """
    raise NotImplementedError("exercise: final_answer")


def majority_vote(samples: list[str]) -> tuple[str | None, float]:
    """(the most frequent answer among ``samples``, its count / len(samples)).

    Read every sample with ``final_answer``. Samples without an answer never win; a tie
    goes to the answer that occurs first in ``samples``; with no answer at all return
    (None, 0.0). ``samples`` is never empty.
    """
    raise NotImplementedError("exercise: majority_vote")
