"""Graders for chapter 17 (chain of thought and self-consistency): the majority vote.

    python -m pytest tests/test_exercises_ch17.py --impl=exercises
"""

import random

import pytest

from minillama.data import extract_answer
from minillama.reasoning import majority_vote


@pytest.mark.parametrize("text, answer", [
    ("3 +4=7, 7 *7=9 #### 9", "9"), ("x #### 12 \n", "12"), ("#### 3 #### 7", "7"),
    ("####\n5", "5"), ("steps #### 4\nQ: 1 +2= #### 6", "6"), ("a ####   ", None),
    ("no answer here", None), ("", None), ("7", None), ("2 #### 1 0", "1 0")])
def test_ch17_final_answer_on_hand_cases(impl, text, answer):
    assert impl("ch17_reasoning").final_answer(text) == answer


def test_ch17_majority_vote_on_hand_cases(impl):
    vote = impl("ch17_reasoning").majority_vote
    assert vote(["s #### 3", "s #### 5", "t #### 3"]) == ("3", 2 / 3)
    # "5" and "3" tie with two votes each; "5" was sampled first; the unreadable one counts in N
    assert vote(["#### 5", "#### 3", "babble", "#### 3", "#### 5"]) == ("5", 2 / 5)
    assert vote(["no", "answers", "####"]) == (None, 0.0)
    assert vote(["only #### 8"]) == ("8", 1.0)


def random_sample(rng: random.Random) -> str:
    """A sampled chain of thought: usually "... #### d", sometimes cut off or with junk."""
    steps = ", ".join(f"{rng.randint(0, 9)} +{rng.randint(1, 9)}={rng.randint(0, 9)}"
                      for _ in range(rng.randint(0, 3)))
    kind = rng.random()
    if kind < 0.1:
        return steps                                       # cut off: no answer
    if kind < 0.15:
        return steps + " #### "                            # empty answer
    tail = "\nQ: 1 +1=" if rng.random() < 0.2 else ""
    return f"{steps} #### {rng.choice('0123456789'[:rng.randint(2, 10)])}{tail}"


@pytest.mark.parametrize("seed", range(8))
def test_ch17_majority_vote_matches_the_library(impl, seed):
    rng = random.Random(seed)
    for _ in range(50):
        samples = [random_sample(rng) for _ in range(rng.randint(1, 20))]
        answers = [extract_answer(s) if "####" in s else None for s in samples]
        want = majority_vote(answers)
        got = impl("ch17_reasoning").majority_vote(samples)
        assert got[0] == want[0] and got[1] == pytest.approx(want[1]), samples
        for s, a in zip(samples, answers):
            assert impl("ch17_reasoning").final_answer(s) == a, s
